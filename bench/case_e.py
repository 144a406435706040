"""Case E: gradient checking, two-sided, float64, every coordinate.

Networks: the course's 3-layer network (4-5-3-1, ReLU, sigmoid output, 3 examples) and a
784-64-10 softmax network (50,890 parameters, 100 examples). Implementations: ``fjdl.gradcheck``
(``numerical_gradient_mlp``, and the whole ``check_mlp`` with its report); the course-style numpy
loop over parameters (in a subprocess; timed once); a straightforward ``vmap`` over coordinates of a
full forward pass. The gradients must agree with each other and with ``jax.grad``.

And a model that is not an MLP: :class:`fjdl.testing.ConvNet` (two 3x3 convolutions with batch
norm, global average pooling, dense output; 5,178 parameters) on 64 of scikit-learn's 8x8 digits
(random blank-background images without scikit-learn), after 20 SGD steps, checked by
``gradcheck.check_model`` against ``jax.grad``: every coordinate in eval and train mode (batch norm
with running or batch statistics), a sampled check (8 coordinates per leaf and 16 random directions),
and a planted bug (one output channel of the second kernel's gradient scaled by 1.01). Each call
traces and compiles anew (the cost is a new function), so a call's time includes its compilation:
it is what a user waits.
"""

import functools
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


def _digits(m):
    """``m`` 8x8 digit images ``(m, 8, 8, 1)`` and labels (synthetic ones without scikit-learn)."""
    try:
        from fjdl import data

        X, Y = data.load_digits()
        X, Y = np.asarray(X)[:m].reshape(m, 8, 8, 1), np.asarray(Y)[:m]
    except ImportError:
        rng = np.random.default_rng(23)
        X = np.where(rng.random((m, 8, 8, 1)) < 0.4, rng.integers(1, 17, (m, 8, 8, 1)) / 16, 0.0)
        Y = np.arange(m) % 10
    return X, Y


def _trained_convnet(net, X, Y, steps=20):
    """Parameters and running statistics after ``steps`` full-batch SGD steps in train mode."""
    from fjdl import losses

    params, state = net.init(jax.random.key(24), dtype=jnp.float64)

    @jax.jit
    def step(params, state):
        def J(p):
            out, new_state = net.apply(p, state, X, train=True)
            return losses.softmax_cross_entropy(out, Y), new_state

        grads, new_state = jax.grad(J, has_aux=True)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), new_state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def run_convnet(quick: bool) -> dict:
    """``gradcheck.check_model`` on a convnet: every coordinate (eval, train), sampled, a bug."""
    try:
        from fjdl import gradcheck, losses, testing
    except ImportError as e:
        rows = [C.pending("fjdl.gradcheck.check_model", str(e))]
        return {"network": "ConvNet", "n_params": 0, "rows": rows}
    if not hasattr(gradcheck, "check_model") or not hasattr(testing, "ConvNet"):
        rows = [C.pending("fjdl.gradcheck.check_model", "not written yet")]
        return {"network": "ConvNet", "n_params": 0, "rows": rows}
    channels, m = ((2, 4), 8) if quick else ((16, 32), 64)
    net = testing.ConvNet(channels=channels)
    X, Y = _digits(m)
    # Every call compiles anew, so a warm-up call measures nothing more; quick: one call each.
    reps, warmup = (1, 0) if quick else (2, 1)
    rows = []
    with jax.enable_x64(True):
        X, Y = jnp.asarray(X, jnp.float64), jnp.asarray(Y, jnp.int32)
        params, state = _trained_convnet(net, X, Y)
        sampled = dict(coordinates=8, directions=16, key=jax.random.key(25))
        cases = [
            ("every coordinate, eval", False, {}),
            ("every coordinate, train", True, {}),
            ("sampled: 8 per leaf + 16 directions, eval", False, sampled),
            ("sampled: 8 per leaf + 16 directions, train", True, sampled),
        ]
        if quick:  # each call compiles: one sampled row is enough for a smoke test
            del cases[2]
        for what, train, kw in cases:
            check = functools.partial(
                gradcheck.check_model, net, params, state, X, Y, train=train, **kw
            )
            timing, result = C.timeit(check, reps=reps, warmup=warmup)
            rows.append(
                C.row(
                    f"fjdl.gradcheck.check_model, {what}: {result.verdict}",
                    timing,
                    rel_diff_vs_jax_grad=result.difference,
                    verdict=result.verdict,
                    n_checked=result.n_checked,
                    n_directions=len(result.directions),
                    n_kinks=len(result.kinks),
                )
            )
        # A planted bug: one output channel of conv2's kernel gradient 1% too large.
        grads = jax.grad(
            lambda p: losses.softmax_cross_entropy(net.apply(p, state, X, train=True)[0], Y)
        )(params)
        last = f"conv{len(channels)}"
        buggy = {**grads, last: {**grads[last], "W": grads[last]["W"].at[..., 3].multiply(1.01)}}
        check = functools.partial(
            gradcheck.check_model, net, params, state, X, Y, grads=buggy, train=True
        )
        timing, result = C.timeit(check, reps=reps, warmup=warmup)
        rows.append(
            C.row(
                f"fjdl.gradcheck.check_model, planted bug, train: {result.verdict} in "
                f"{result.worst_leaves[0].leaf}",
                timing,
                difference_with_bug=result.difference,
                verdict=result.verdict,
                worst_leaf=result.worst_leaves[0].leaf,
            )
        )
    n_params = int(sum(p.size for p in jax.tree.leaves(params)))
    label = f"ConvNet{channels}, 8x8x1 digits, m={m}, after 20 SGD steps"
    return {"network": label, "m": m, "n_params": n_params, "rows": rows}


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
    # The convnet before the last network: the speed target reads the last one's rows.
    results.insert(len(results) - 1, run_convnet(quick))
    return {"case": "E", "epsilon": EPSILON, "dtype": "float64", "networks": results}
