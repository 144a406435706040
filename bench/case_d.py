"""Case D: a caviar search: 64 course-size models (2-20-7-5-1, 300 examples, full batch), learning
rates log-uniform in [1e-3, 0.3], 2,000 gradient-descent steps each.

``fjdl.tune.train_many`` against 64 sequential compiled runs (``fjdl.train.fit`` compiled once and
called 64 times) and against a naive ``jax.vmap`` of a single-model ``lax.scan``. All three start
model ``i`` from the same parameters (``fit``'s initialization from ``keys[i]``).

On a CPU, JAX shows one device however many cores there are, and these tiny products run on one
core. One more row runs ``train_many`` in a subprocess started with one simulated CPU device per
core (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), over which it shards its models:
the caviar strategy using the whole machine, as a user would run it.
"""

import os

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


def run_train_many(s, reps):
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
        )
        return r.params

    timing, params = C.timeit(go, reps=reps)
    return timing, [_flat_of(params, i) for i in range(s["n"])]


def train_many_worker(quick: bool, reps: int):
    """``run_train_many`` in a process of its own (see ``run_train_many_all_cores``)."""
    s = setup(quick)
    timing, flats = run_train_many(s, reps)
    return timing, flats, len(jax.devices())


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
    return {"case": "D", "n_models": s["n"], "steps": s["steps"], "rows": rows}
