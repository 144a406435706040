"""Case E: gradient checking, two-sided, float64, every coordinate.

Networks: the course's 3-layer network (4-5-3-1, ReLU, sigmoid output, 3 examples) and a
784-64-10 softmax network (50,890 parameters, 100 examples). Implementations: ``fjdl.gradcheck``
(``numerical_gradient_mlp``, and the whole ``check_mlp`` with its report); the course-style numpy
loop over parameters (in a subprocess; timed once); a straightforward ``vmap`` over coordinates of a
full forward pass. The gradients must agree with each other and with ``jax.grad``.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import _common as C

EPSILON = 1e-7


def networks(quick: bool):
    big = (784, 64, 10) if not quick else (32, 8, 10)
    return [
        ("course 4-5-3-1, m=3", (4, 5, 3, 1), "sigmoid", 3),
        (f"{big}, m=100", big, "softmax", 100),
    ]


def _setup(sizes, output, m):
    from fjdl import model

    config = model.MLP(sizes, activation="relu", output=output)
    with jax.enable_x64(True):
        params, state = model.init(jax.random.key(20), config, dtype=jnp.float64)
        X = jax.random.normal(jax.random.key(21), (m, sizes[0]), jnp.float64)
        if output == "sigmoid":
            Y = (jax.random.uniform(jax.random.key(22), (m,)) > 0.5).astype(jnp.float64)
        else:
            Y = jax.random.randint(jax.random.key(22), (m,), 0, sizes[-1])
    return config, params, state, X, Y


def _cost_fn(config, state, X, Y):
    from fjdl import losses, model

    def f(params):
        logits, _ = model.apply(config, params, state, X)
        return losses.cost(logits, Y, params, output=config.output)

    return f


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(tree)])


def run_fjdl(config, params, state, X, Y, reps):
    try:
        from fjdl import gradcheck
    except ImportError as e:
        return C.pending("fjdl.gradcheck.numerical_gradient_mlp", str(e)), None, None
    if not hasattr(gradcheck, "numerical_gradient_mlp"):
        return C.pending("fjdl.gradcheck.numerical_gradient_mlp", "not written yet"), None, None
    with jax.enable_x64(True):
        timing, g = C.timeit(
            lambda: gradcheck.numerical_gradient_mlp(
                config, params, state, X, Y, lambd=0.0, epsilon=EPSILON
            ),
            reps=reps,
        )
        g = _flat(g)
        row = C.row("fjdl.gradcheck.numerical_gradient_mlp", timing)
        check_row = None
        if hasattr(gradcheck, "check_mlp"):
            t_check, result = C.timeit(
                lambda: gradcheck.check_mlp(
                    config, params, state, X, Y, lambd=0.0, epsilon=EPSILON, dtype=jnp.float64
                ),
                reps=reps,
            )
            check_row = C.row(
                "fjdl.gradcheck.check_mlp (whole check)",
                t_check,
                difference_vs_jax_grad=float(result.difference),
                verdict=result.verdict,
            )
    return row, g, check_row


def run_vmap(config, params, state, X, Y):
    """A straightforward vmap over coordinates: each perturbed vector runs the full forward pass."""
    with jax.enable_x64(True):
        f = _cost_fn(config, state, X, Y)
        theta, unravel = jax.flatten_util.ravel_pytree(params)
        n = theta.size

        def coordinate(i):
            e = jnp.zeros_like(theta).at[i].set(EPSILON)
            return (f(unravel(theta + e)) - f(unravel(theta - e))) / (2 * EPSILON)

        fn = jax.jit(lambda: jax.lax.map(coordinate, jnp.arange(n), batch_size=256))
        t0 = time.perf_counter()
        compiled = fn.lower().compile()
        compile_s = time.perf_counter() - t0
        timing, g = C.timeit(compiled, reps=1, warmup=0)
        timing["compile_s"] = compile_s
        return C.row("jax: vmap over coordinates, full forward", timing), np.asarray(g)


def run_numpy(config, params, X, Y):
    shapes, theta = [], []
    for layer in params:
        W, b = np.asarray(layer["W"]), np.asarray(layer["b"])
        shapes.append(W.T.shape)  # the course's W: (n_out, n_in)
        theta += [W.T.ravel(), b]
    arrays = {
        "X": np.asarray(X),
        "Y": np.asarray(Y),
        "shapes": np.array(shapes),
        "theta": np.concatenate(theta),
        "epsilon": EPSILON,
        "output": config.output,
    }
    out = C.run_numpy("e", arrays, 1)
    timing = {k: out[k] for k in ("median_s", "min_s", "max_s", "reps")}
    timing.update(compile_s=None, first_s=None)
    # Back to fjdl's order: W (n_in, n_out) then b, layer by layer.
    g, offset, flat = np.asarray(out["grad"]), 0, []
    for n_out, n_in in shapes:
        flat.append(g[offset : offset + n_out * n_in].reshape(n_out, n_in).T.ravel())
        offset += n_out * n_in
        flat.append(g[offset : offset + n_out])
        offset += n_out
    return C.row("numpy loop over parameters (course style)", timing), np.concatenate(flat)


def run(quick: bool) -> dict:
    import jax.flatten_util  # noqa: F401 (ravel_pytree)

    results = []
    for label, sizes, output, m in networks(quick):
        config, params, state, X, Y = _setup(sizes, output, m)
        with jax.enable_x64(True):
            exact = _flat(jax.grad(_cost_fn(config, state, X, Y))(params))
        rows = []
        row, g_fjdl, check_row = run_fjdl(config, params, state, X, Y, reps=1 if quick else 3)
        peers = [(row, g_fjdl)]
        peers.append(run_vmap(config, params, state, X, Y))
        peers.append(run_numpy(config, params, X, Y))
        for row, g in peers:
            if g is not None:
                row["rel_diff_vs_jax_grad"] = C.rel_diff([g], [exact])
                ref = next((g2 for _, g2 in peers if g2 is not None), None)
                row["rel_diff_vs_first"] = C.rel_diff([g], [ref])
            rows.append(row)
        if check_row is not None:
            rows.insert(1, check_row)
        n_params = int(exact.size)
        results.append(
            {"network": label, "sizes": sizes, "m": m, "n_params": n_params, "rows": rows}
        )
    return {"case": "E", "epsilon": EPSILON, "dtype": "float64", "networks": results}
