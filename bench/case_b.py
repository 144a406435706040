"""Case B: course-size full-batch training, 2-20-7-5-1 (ReLU, sigmoid output, L2), 300 examples,
10,000 gradient-descent steps; every implementation starts from the same parameters."""

import jax
import jax.numpy as jnp
import numpy as np

from bench import _common as C

SIZES = (2, 20, 7, 5, 1)
LEARNING_RATE = 0.1
LAMBD = 0.7
WARMUP_STEPS = 20  # warm-up length of the peers that loop in Python


def setup(quick: bool) -> dict:
    from fjdl import data, model

    m = 300
    X, Y = data.make_moons(jax.random.key(0), m, noise=0.2)
    config = model.MLP(SIZES, activation="relu", output="sigmoid")
    params, _ = model.init(jax.random.key(1), config)
    steps = 100 if quick else 10_000
    return {
        "config": config,
        "X": np.asarray(X),
        "Y": np.asarray(Y).astype(np.float32),
        "params": [(np.asarray(p["W"]), np.asarray(p["b"])) for p in params],
        "steps": steps,
        "m": m,
    }


def final_cost(flat, X, Y, lambd=LAMBD) -> float:
    """The L2-regularized cross-entropy of flat params ``[W1, b1, ...]``, in float64 numpy."""
    a = X.astype(np.float64)
    L = len(flat) // 2
    penalty = 0.0
    for l in range(L):
        W, b = np.asarray(flat[2 * l], np.float64), np.asarray(flat[2 * l + 1], np.float64)
        z = a @ W + b
        a = np.maximum(z, 0) if l < L - 1 else z
        penalty += np.sum(W**2)
    z = a[:, 0]
    ce = np.mean(np.logaddexp(0, z) - Y * z)
    return float(ce + lambd / (2 * len(Y)) * penalty)


# ---- fjdl ----------------------------------------------------------------------------------------


def run_fjdl(s, reps):
    from fjdl import train

    params = tuple({"W": jnp.asarray(W), "b": jnp.asarray(b)} for W, b in s["params"])
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"].astype(np.int32))

    def go():
        r = train.fit(
            s["config"],
            X,
            Y,
            key=jax.random.key(2),
            optimizer="gd",
            learning_rate=LEARNING_RATE,
            lambd=LAMBD,
            epochs=s["steps"],
            batch_size=None,
            params=params,
            eval_every=s["steps"],
            progress=False,
        )
        return r.state.params

    timing, out = C.timeit(go, reps=reps)
    return timing, C.flat_params(out)


# ---- plain JAX, written the obvious way ------------------------------------------------------------


def _loss_batch_first(params, X, Y, lambd):
    a = X
    for W, b in params[:-1]:
        a = jax.nn.relu(a @ W + b)
    W, b = params[-1]
    z = (a @ W + b)[:, 0]
    m = X.shape[0]
    ce = jnp.mean(jax.nn.softplus(z) - Y * z)
    return ce + lambd / (2 * m) * sum(jnp.sum(W**2) for W, _ in params)


def _loss_examples_last(params, XT, Y, lambd):
    a = XT  # (n_x, m), the course's layout; W is (n_out, n_in)
    for W, b in params[:-1]:
        a = jax.nn.relu(W @ a + b[:, None])
    W, b = params[-1]
    z = (W @ a + b[:, None])[0]
    m = XT.shape[1]
    ce = jnp.mean(jax.nn.softplus(z) - Y * z)
    return ce + lambd / (2 * m) * sum(jnp.sum(W**2) for W, _ in params)


def _gd(loss):
    def step(params, X, Y):
        grads = jax.grad(loss)(params, X, Y, LAMBD)
        return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)

    return step


def run_jax_loop(s, reps):
    step = jax.jit(_gd(_loss_batch_first))
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"])
    p0 = [(jnp.asarray(W), jnp.asarray(b)) for W, b in s["params"]]

    def go(steps=s["steps"]):
        p = p0
        for _ in range(steps):
            p = step(p, X, Y)
        return p

    timing, out = C.timeit(
        go, reps=reps, warmup_fn=lambda: go(WARMUP_STEPS), warmup_fraction=WARMUP_STEPS / s["steps"]
    )
    return timing, [np.asarray(a) for layer in out for a in layer]


def _scan_runner(loss, steps):
    step = _gd(loss)

    @jax.jit
    def run(params, X, Y):
        return jax.lax.scan(lambda p, _: (step(p, X, Y), None), params, None, length=steps)[0]

    return run


def run_jax_scan(s, reps):
    run = _scan_runner(_loss_batch_first, s["steps"])
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"])
    p0 = [(jnp.asarray(W), jnp.asarray(b)) for W, b in s["params"]]
    timing, out = C.timeit(lambda: run(p0, X, Y), reps=reps)
    return timing, [np.asarray(a) for layer in out for a in layer]


def run_jax_scan_examples_last(s, reps):
    run = _scan_runner(_loss_examples_last, s["steps"])
    XT, Y = jnp.asarray(s["X"].T), jnp.asarray(s["Y"])
    p0 = [(jnp.asarray(W.T), jnp.asarray(b)) for W, b in s["params"]]
    timing, out = C.timeit(lambda: run(p0, XT, Y), reps=reps)
    return timing, [np.asarray(a) for W, b in out for a in (W.T, b)]


# ---- optax + flax ----------------------------------------------------------------------------------


def run_linen(s, reps):
    import flax.linen as nn
    import optax

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            for n in SIZES[1:-1]:
                x = nn.relu(nn.Dense(n)(x))
            return nn.Dense(SIZES[-1])(x)[:, 0]

    net = Net()
    variables = {
        "params": {
            f"Dense_{l}": {"kernel": jnp.asarray(W), "bias": jnp.asarray(b)}
            for l, (W, b) in enumerate(s["params"])
        }
    }
    tx = optax.sgd(LEARNING_RATE)
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"])
    m = X.shape[0]

    def loss_fn(params):
        z = net.apply({"params": params}, X)
        l2 = sum(jnp.sum(layer["kernel"] ** 2) for layer in params.values())
        return optax.sigmoid_binary_cross_entropy(z, Y).mean() + LAMBD / (2 * m) * l2

    @jax.jit
    def run(params):
        def step(carry, _):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, tx.init(params)), None, length=s["steps"])[0][0]

    timing, out = C.timeit(lambda: run(variables["params"]), reps=reps)
    flat = []
    for l in range(len(s["params"])):
        flat += [np.asarray(out[f"Dense_{l}"]["kernel"]), np.asarray(out[f"Dense_{l}"]["bias"])]
    return timing, flat


def run_nnx(s, reps):
    import optax
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [nnx.Linear(a, b, rngs=rngs) for a, b in zip(SIZES[:-1], SIZES[1:])]
            )

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = nnx.relu(layer(x))
            return self.layers[-1](x)[:, 0]

    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"])
    m = X.shape[0]

    def fresh():
        net = Net(nnx.Rngs(0))
        for layer, (W, b) in zip(net.layers, s["params"]):
            layer.kernel.value = jnp.asarray(W)
            layer.bias.value = jnp.asarray(b)
        return net, nnx.Optimizer(net, optax.sgd(LEARNING_RATE), wrt=nnx.Param)

    @nnx.jit
    def train_step(net, optimizer, X, Y):
        def loss_fn(net):
            z = net(X)
            l2 = sum(jnp.sum(layer.kernel.value**2) for layer in net.layers)
            return optax.sigmoid_binary_cross_entropy(z, Y).mean() + LAMBD / (2 * m) * l2

        grads = nnx.grad(loss_fn)(net)
        optimizer.update(net, grads)

    def go(steps=s["steps"]):
        net, optimizer = fresh()
        for _ in range(steps):
            train_step(net, optimizer, X, Y)
        return [a for layer in net.layers for a in (layer.kernel.value, layer.bias.value)]

    timing, out = C.timeit(
        go, reps=reps, warmup_fn=lambda: go(WARMUP_STEPS), warmup_fraction=WARMUP_STEPS / s["steps"]
    )
    return timing, [np.asarray(a) for a in out]


# ---- PyTorch -------------------------------------------------------------------------------------


def _torch_setup(s):
    import torch

    layers = []
    for l, (W, b) in enumerate(s["params"]):
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(lin)
        if l < len(s["params"]) - 1:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    return net, torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)


def _torch_loss(net, X, Y, m):
    import torch

    z = net(X)[:, 0]
    l2 = sum((p**2).sum() for name, p in net.named_parameters() if name.endswith("weight"))
    return torch.nn.functional.binary_cross_entropy_with_logits(z, Y) + LAMBD / (2 * m) * l2


def torch_worker(s, reps, compiled=False):
    """The PyTorch peer; runs in a subprocess of its own (see ``_common.run_subprocess``)."""
    import torch

    # One thread: intra-op parallelism cannot help 300 x 20 products, and on 2 shared cores two
    # spinning PyTorch threads ran up to 30x slower than one.
    torch.set_num_threads(1)
    X, Y = torch.from_numpy(s["X"].copy()), torch.from_numpy(s["Y"].copy())
    m = X.shape[0]
    loss_fn = torch.compile(_torch_loss) if compiled else _torch_loss

    net, _ = _torch_setup(s)  # one module, so that torch.compile compiles once (in the warm-up)

    def go(steps=s["steps"]):
        fresh, _ = _torch_setup(s)
        net.load_state_dict(fresh.state_dict())
        opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(net, X, Y, m).backward()
            opt.step()
        return [p.detach().numpy().copy() for p in net.parameters()]

    timing, out = C.timeit(
        go,
        reps=reps,
        warmup_fn=lambda: go(WARMUP_STEPS),
        warmup_fraction=WARMUP_STEPS / s["steps"],
    )
    timing["threads"] = torch.get_num_threads()
    return timing, [a.T if a.ndim == 2 else a for a in out]


def run_torch(s, reps, compiled=False):
    s = {k: v for k, v in s.items() if k != "config"}
    return C.run_subprocess(
        "bench.case_b", "torch_worker", {"s": s, "reps": reps, "compiled": compiled}
    )


def run_numpy(s, reps):
    arrays = {"X": s["X"], "Y": s["Y"], "L": len(s["params"]), "lr": LEARNING_RATE}
    arrays.update(lambd=LAMBD, steps=s["steps"])
    for l, (W, b) in enumerate(s["params"], start=1):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    out = C.run_numpy("b", arrays, reps)
    timing = {k: out[k] for k in ("median_s", "min_s", "max_s", "reps")}
    timing.update(compile_s=None, first_s=None)
    flat = [np.asarray(a, np.float32) for a in out["params"]]
    return timing, flat, {"blas": out["blas"], "dropped_env": out["dropped_env"]}


def run(quick: bool) -> dict:
    s = setup(quick)
    reps = 1 if quick else 3
    peers = [
        ("fjdl", lambda: run_fjdl(s, 5 if not quick else 1)),
        ("numpy (course style, subprocess)", lambda: run_numpy(s, 2 if not quick else 1)),
        ("jax: jit step, Python loop", lambda: run_jax_loop(s, 1 if not quick else reps)),
        ("jax: scan, batch first", lambda: run_jax_scan(s, reps)),
        ("jax: scan, examples last", lambda: run_jax_scan_examples_last(s, reps)),
        ("optax + flax linen (scan)", lambda: run_linen(s, reps)),
        ("optax + flax nnx (nnx.jit loop)", lambda: run_nnx(s, 1 if not quick else reps)),
        ("torch eager", lambda: run_torch(s, 1)),
        ("torch.compile", lambda: run_torch(s, 1, compiled=True)),
    ]
    if quick:  # torch.compile takes ~30 s to compile on 2 cores: full runs only
        peers = peers[:-1]
    rows, ref = [], None
    for name, fn in peers:
        if name.startswith("torch") and not C.has_torch():
            rows.append(C.not_installed(name, "pip install torch"))
            continue
        try:
            got = fn()
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            rows.append(C.error(name, e))
            continue
        timing, flat = got[0], got[1]
        extra = got[2] if len(got) > 2 else {}
        if ref is None:
            ref = flat
        cost = final_cost(flat, s["X"], s["Y"])
        rows.append(
            C.row(
                name,
                timing,
                steps_per_s=s["steps"] / timing["median_s"],
                final_cost=cost,
                param_rel_diff_vs_fjdl=C.rel_diff(flat, ref),
                **extra,
            )
        )
    return {"case": "B", "steps": s["steps"], "m": s["m"], "sizes": SIZES, "rows": rows}
