"""Case D: a caviar search: 64 course-size models (2-20-7-5-1, 300 examples, full batch), learning
rates log-uniform in [1e-3, 0.3], 2,000 gradient-descent steps each.

``fjdl.tune.train_many`` against 64 sequential compiled runs (``fjdl.train.fit`` compiled once and
called 64 times) and against a naive ``jax.vmap`` of a single-model ``lax.scan``. All three start
model ``i`` from the same parameters (``fit``'s initialization from ``keys[i]``).

On a CPU, JAX shows one device however many cores there are, and these tiny products run on one
core. One more row runs ``train_many`` in a subprocess started with one simulated CPU device per
core (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), over which it shards its models:
the caviar strategy using the whole machine, as a user would run it.

``train_many`` is ``jax.vmap`` of the loop ``fit`` runs (there is no second, hand-stacked loop: it
bought nothing over the vmapped one, see ``bench/RESULTS.md``). The rows show where its speed
comes from: the vmapped loop on one thread, then split over one thread per core (the default on
one CPU device). Two more tables:

- **convnet**: ``train_many`` of small convnets (:class:`fjdl.testing.ConvNet`) against a
  hand-written ``jax.vmap`` of an optax + ``lax.scan`` loop over the same model, from the same
  parameters and data order.
- **shape search**: models of several hidden widths in one call (one compiled program, the widths
  padded and masked) against one call per distinct width (one program each, as before): the
  number of compilations and the wall time including them.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import _common as C
from bench import case_b


def setup(quick: bool) -> dict:
    from fjdl import data, model

    n, steps = (4, 100) if quick else (64, 2000)
    X, Y = data.make_moons(jax.random.key(0), 300, noise=0.2)
    config = model.MLP(case_b.SIZES, activation="relu", output="sigmoid")
    keys = jax.random.split(jax.random.key(7), n)
    u = np.asarray(jax.random.uniform(jax.random.key(8), (n,)), np.float64)
    lrs = 10.0 ** (-3 + u * (np.log10(0.3) + 3))  # log-uniform in [1e-3, 0.3]
    return {"config": config, "X": X, "Y": Y, "keys": keys, "lrs": lrs, "n": n, "steps": steps}


def _flat_of(params, i=None):
    pick = (lambda a: np.asarray(a)) if i is None else (lambda a: np.asarray(a[i]))
    return [pick(layer[k]) for layer in params for k in ("W", "b")]


def run_train_many(s, reps, threads=None):
    from fjdl import tune

    def go():
        r = tune.train_many(
            s["config"],
            s["X"],
            s["Y"],
            keys=s["keys"],
            optimizer="gd",
            learning_rate=s["lrs"],
            epochs=s["steps"],
            eval_every=s["steps"],
            threads=threads,
            progress=False,
        )
        return r.params

    timing, params = C.timeit(go, reps=reps)
    return timing, [_flat_of(params, i) for i in range(s["n"])]


def train_many_worker(quick: bool, reps: int):
    """``run_train_many`` in a process of its own (see ``run_train_many_all_cores``)."""
    s = setup(quick)
    timing, flats = run_train_many(s, reps)
    return timing, flats, len(jax.devices())


def run_train_many_one_thread(s, reps):
    return run_train_many(s, reps, threads=1)


def run_train_many_all_cores(s, quick, reps):
    n_cores = os.cpu_count() or 1
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n_cores}"
    timing, flats, n_dev = C.run_subprocess(
        "bench.case_d",
        "train_many_worker",
        {"quick": quick, "reps": reps},
        extra_env={"XLA_FLAGS": flags.strip()},
    )
    return timing, flats


def run_sequential(s, reps):
    from fjdl import train

    def go():
        out = []
        for i in range(s["n"]):
            r = train.fit(
                s["config"],
                s["X"],
                s["Y"],
                key=s["keys"][i],
                optimizer="gd",
                learning_rate=float(s["lrs"][i]),
                epochs=s["steps"],
                eval_every=s["steps"],
                on_divergence="stop",
                progress=False,
            )
            out.append(r.state.params)
        return out

    timing, out = C.timeit(go, reps=reps)
    return timing, [_flat_of(p) for p in out]


def run_naive_vmap(s, reps):
    from fjdl import model

    def init(key):
        init_key, _ = jax.random.split(key)  # as fjdl.train.init_state does
        params, _ = model.init(init_key, s["config"])
        return [(p["W"], p["b"]) for p in params]

    p0 = jax.vmap(init)(s["keys"])
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"]).astype(jnp.float32)

    def one(params, lr):
        def step(p, _):
            g = jax.grad(case_b._loss_batch_first)(p, X, Y, 0.0)
            return jax.tree.map(lambda a, b: a - lr * b, p, g), None

        return jax.lax.scan(step, params, None, length=s["steps"])[0]

    run = jax.jit(jax.vmap(one))
    lrs = jnp.asarray(s["lrs"], jnp.float32)
    timing, out = C.timeit(lambda: run(p0, lrs), reps=reps)
    return timing, [[np.asarray(a[i]) for layer in out for a in layer] for i in range(s["n"])]


def run(quick: bool) -> dict:
    s = setup(quick)
    reps = 1 if quick else 3
    X, Y = np.asarray(s["X"]), np.asarray(s["Y"]).astype(np.float64)
    peers = [
        ("fjdl.tune.train_many", lambda: run_train_many(s, reps)),
        ("fjdl.tune.train_many, vmapped loop on one thread", lambda: run_train_many_one_thread(s, reps)),
        ("fjdl.train.fit x N, sequential", lambda: run_sequential(s, 1 if not quick else reps)),
        ("jax: naive vmap of a scan", lambda: run_naive_vmap(s, reps)),
    ]
    if jax.default_backend() == "cpu" and (os.cpu_count() or 1) > 1:
        peers.insert(
            1,
            (
                "fjdl.tune.train_many, one CPU device per core",
                lambda: run_train_many_all_cores(s, quick, reps),
            ),
        )
    rows, ref = [], None
    for name, fn in peers:
        try:
            timing, flats = fn()
        except ImportError as e:
            rows.append(C.pending(name, f"{e}"))
            continue
        except Exception as e:  # reported, not fatal
            rows.append(C.error(name, e))
            continue
        costs = np.array([case_b.final_cost(f, X, Y, lambd=0.0) for f in flats])
        if ref is None:
            ref = costs
        finite = np.isfinite(costs) & np.isfinite(ref)
        rows.append(
            C.row(
                name,
                timing,
                models_per_s=s["n"] / timing["median_s"],
                model_steps_per_s=s["n"] * s["steps"] / timing["median_s"],
                mean_final_cost=float(np.mean(costs[finite])),
                # GD at rates near 0.3 drives these nets to costs ~0.01 along trajectories that
                # float32 rounding (summation order) can send apart; the bulk must agree closely.
                median_abs_cost_diff_vs_first=float(np.median(np.abs(costs - ref)[finite])),
                max_abs_cost_diff_vs_first=float(np.max(np.abs(costs - ref)[finite])),
                frac_models_off_by_1e_3=float(np.mean(np.abs(costs - ref)[finite] > 1e-3)),
                n_finite=int(finite.sum()),
            )
        )
    return {
        "case": "D",
        "n_models": s["n"],
        "steps": s["steps"],
        "rows": rows,
        "convnet": run_convnets(quick),
        "shapes": run_shape_search(quick),
    }


# ----------------------------------------------------------------------------------------------
# Convnets: train_many against a hand-written vmap of an optax scan


def run_convnets(quick: bool) -> dict:
    import optax

    from fjdl import data, testing, train, tune

    n, m, epochs, batch = (2, 128, 1, 64) if quick else (8, 512, 3, 64)
    X, Y = data.load_digits()
    X, Y = X[:m].reshape(-1, 8, 8, 1), Y[:m]
    net = testing.ConvNet(channels=(8, 16))
    keys = jax.random.split(jax.random.key(3), n)
    lrs = np.geomspace(1e-3, 3e-2, n)
    reps = 1 if quick else 3

    def go_many():
        r = tune.train_many(
            net, X, Y, keys=keys, loss="softmax", optimizer=optax.adam, learning_rate=lrs,
            epochs=epochs, batch_size=batch, eval_every=epochs,
        )  # fmt: skip
        return r.groups[0].state.params

    # The reference: fit's initialization and data order, written by hand with optax.
    states = [train.init_state(k, net, optax.adam, 0.0) for k in keys]
    p0 = jax.tree.map(lambda *a: jnp.stack(a), *(st.params for st in states))
    s0 = jax.tree.map(lambda *a: jnp.stack(a), *(st.model_state for st in states))
    run_keys = jnp.stack([st.key for st in states])
    n_full = m // batch

    def one(params, model_state, key, lr):
        opt = optax.adam(lr)

        def loss(p, ms, x, y, step):
            k = jax.random.fold_in(jax.random.fold_in(key, 1), step)
            out, ms = net.apply(p, ms, x, key=k, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), ms

        def epoch(carry, e):
            p, ms, o, step = carry
            perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 0), e), m)

            def batch_step(c, idx):
                p, ms, o, step = c
                (_, ms), g = jax.value_and_grad(loss, has_aux=True)(p, ms, X[idx], Y[idx], step)
                u, o = opt.update(g, o, p)
                return (optax.apply_updates(p, u), ms, o, step + 1), None

            c, _ = jax.lax.scan(batch_step, (p, ms, o, step), perm[: n_full * batch].reshape(n_full, batch))
            return c, None

        c0 = (params, model_state, opt.init(params), jnp.zeros((), jnp.int32))
        return jax.lax.scan(epoch, c0, jnp.arange(epochs))[0][0]

    scan = jax.jit(jax.vmap(one))
    lrs32 = jnp.asarray(lrs, jnp.float32)
    rows = []
    with jax.numpy_dtype_promotion("standard"):
        for name, fn in (
            ("fjdl.tune.train_many, ConvNet", go_many),
            ("optax: hand-written vmap of a scan, ConvNet", lambda: scan(p0, s0, run_keys, lrs32)),
        ):
            timing, params = C.timeit(fn, reps=reps)
            rows.append((name, timing, params))
    ref = rows[0][2]
    out = []
    for name, timing, params in rows:
        diff = max(
            float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref))
        )
        out.append(
            C.row(name, timing, models_per_s=n / timing["median_s"], param_rel_diff_vs_first=diff)
        )
    return {"n_models": n, "m": m, "epochs": epochs, "batch_size": batch, "rows": out}


# ----------------------------------------------------------------------------------------------
# Shape search: several widths in one program, or one program per width


def _programs() -> int:
    """Programs train_many has compiled: the training loops and the start states (inits)."""
    from fjdl.tune import many

    return sum(f._cache_size() for f in (many.run_many, many._start_widths, many._start_models))


def run_shape_search(quick: bool) -> dict:
    from fjdl import data, tune
    from fjdl.model import MLP

    n, epochs = (4, 10) if quick else (64, 200)
    X, Y = data.make_moons(jax.random.key(0), 480, noise=0.2)
    widths = np.asarray(jax.random.randint(jax.random.key(5), (n,), 5, 51))
    keys = jax.random.split(jax.random.key(6), n)
    kw = dict(learning_rate=0.01, epochs=epochs, batch_size=64, eval_every=epochs)
    configs = [MLP((2, int(w), 1)) for w in widths]

    def together():
        return tune.train_many(configs, X, Y, keys=keys, **kw)

    def per_width():
        results = {}
        for w in sorted(set(int(w) for w in widths)):
            idx = np.nonzero(widths == w)[0]
            results[w] = tune.train_many(MLP((2, w, 1)), X, Y, keys=keys[idx], **kw)
        return results

    rows = []
    for name, fn in (("one call, widths padded: one program", together),
                     ("one call per distinct width", per_width)):  # fmt: skip
        jax.clear_caches()
        before = _programs()
        t0 = time.perf_counter()
        out = fn()
        cold = time.perf_counter() - t0
        compiled = _programs() - before
        t0 = time.perf_counter()
        fn()
        warm = time.perf_counter() - t0
        rows.append({"impl": name, "status": "ok", "cold_s": cold, "warm_s": warm,
                     "compilations": compiled, "result": out})  # fmt: skip
    together_r, per = rows[0].pop("result"), rows[1].pop("result")
    costs = together_r.final("cost")
    ref = np.array([per[int(w)].final("cost")[list(np.nonzero(widths == w)[0]).index(i)]
                    for i, w in enumerate(widths)])  # fmt: skip
    rows[0]["max_abs_cost_diff_vs_per_width"] = float(np.max(np.abs(costs - ref)))
    return {"n_models": n, "distinct_widths": len(set(widths.tolist())), "epochs": epochs, "rows": rows}
