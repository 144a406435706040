"""Case C: one MNIST-size epoch: 784-512-256-10, ReLU, softmax, dropout keep_prob 0.8 on the hidden
layers, Adam (lr 1e-3), mini-batches of 256, 60,000 synthetic examples (fixed key).

A second table trains a **flax linen convnet** (8x8x1 images, two 3x3 convolutions with batch norm,
global average pooling, dropout, dense; Adam, batches of 256) for one epoch: ``fjdl.train.fit`` of
``fjdl.model.from_flax(net)`` against a hand-written flax + optax ``lax.scan`` over the same model,
data order and keys. fjdl's loop should cost nothing over the hand-written one (within 5%).

FLOPs per epoch (forward + backward): ``6 * m * sum(n_in * n_out)`` (2 for the forward product, 4
for the two backward products), reported against the float32 matrix-product peak of this run.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bench import _common as C

SIZES = (784, 512, 256, 10)
KEEP_PROB = 0.8
LEARNING_RATE = 1e-3
BATCH = 256
CHECK_M, CHECK_EPOCHS = 256, 3  # agreement check: full-batch Adam, no dropout, 3 steps


def flops_per_epoch(m, sizes=SIZES) -> float:
    return 6.0 * m * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def setup(quick: bool) -> dict:
    from fjdl import model

    m = 1024 if quick else 60_000
    kx, ky = jax.random.split(jax.random.key(10))
    X = jax.random.normal(kx, (m, SIZES[0]), jnp.float32)
    Y = jax.random.randint(ky, (m,), 0, SIZES[-1])
    config = model.MLP(SIZES, activation="relu", output="softmax")
    params, _ = model.init(jax.random.key(11), config)
    return {
        "X": np.asarray(X),
        "Y": np.asarray(Y).astype(np.int32),
        "params": [(np.asarray(p["W"]), np.asarray(p["b"])) for p in params],
        "m": m,
    }


def peak_matmul(quick: bool) -> dict:
    """float32 matrix-product peak: a jit'd n x n product, timed like everything else."""
    n = 1024 if quick else 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    timing, _ = C.timeit(lambda: f(a, b), reps=5 if quick else 10)
    timing["gflops"] = 2 * n**3 / timing["median_s"] / 1e9
    timing["best_gflops"] = 2 * n**3 / timing["min_s"] / 1e9
    timing["n"] = n
    return timing


# ---- fjdl ----------------------------------------------------------------------------------------


def fjdl_train(s, X, Y, batch_size, epochs, keep_prob):
    from fjdl import model, train

    kp = None if keep_prob == 1 else (keep_prob,) * (len(SIZES) - 2)
    config = model.MLP(SIZES, activation="relu", output="softmax", keep_probs=kp)
    params = tuple({"W": jnp.asarray(W), "b": jnp.asarray(b)} for W, b in s["params"])
    r = train.fit(
        config,
        X,
        Y,
        key=jax.random.key(3),
        optimizer="adam",
        learning_rate=LEARNING_RATE,
        epochs=epochs,
        batch_size=batch_size,
        params=params,
        # No evaluation pass: the peers do none either (an eval_every beyond the run's length).
        eval_every=epochs + 1,
        progress=False,
    )
    return C.flat_params(r.state.params)


def run_fjdl(s, reps):
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"])
    return C.timeit(lambda: fjdl_train(s, X, Y, BATCH, 1, KEEP_PROB), reps=reps)


# ---- plain JAX: a hand-written scan over mini-batches ---------------------------------------------


def _jax_forward(params, x, key, keep_prob):
    keys = jax.random.split(key, len(params))
    for l, (W, b) in enumerate(params[:-1]):
        x = jax.nn.relu(x @ W + b)
        if keep_prob < 1:
            x = jnp.where(jax.random.bernoulli(keys[l], keep_prob, x.shape), x / keep_prob, 0.0)
    W, b = params[-1]
    return x @ W + b


def _jax_loss(params, x, y, key, keep_prob):
    logits = _jax_forward(params, x, key, keep_prob)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def _adam_step(keep_prob):
    b1, b2, eps = 0.9, 0.999, 1e-8

    def step(carry, batch):
        params, mu, nu, t, key = carry
        x, y = batch
        g = jax.grad(_jax_loss)(params, x, y, jax.random.fold_in(key, t), keep_prob)
        t = t + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, g)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, g)
        tf = t.astype(jnp.float32)
        c1, c2 = 1 - b1**tf, 1 - b2**tf
        params = jax.tree.map(
            lambda p, m, v: p - LEARNING_RATE * (m / c1) / (jnp.sqrt(v / c2) + eps), params, mu, nu
        )
        return (params, mu, nu, t, key), None

    return step


def jax_scan_train(p0, X, Y, batch_size, epochs, keep_prob):
    return _jax_scan_runner(X.shape[0], batch_size, epochs, keep_prob)(p0, X, Y)


@functools.cache
def _jax_scan_runner(m, batch_size, epochs, keep_prob):
    step = _adam_step(keep_prob)
    n_full, rem = divmod(m, batch_size)

    @jax.jit
    def run(params, X, Y):
        zeros = jax.tree.map(jnp.zeros_like, params)
        carry = (params, zeros, zeros, jnp.zeros((), jnp.int32), jax.random.key(5))
        for e in range(epochs):
            perm = jax.random.permutation(jax.random.key(e), m)
            idx = perm[: n_full * batch_size].reshape(n_full, batch_size)
            carry, _ = jax.lax.scan(step, carry, (X[idx], Y[idx]))
            if rem:
                carry, _ = step(
                    carry, (X[perm[n_full * batch_size :]], Y[perm[n_full * batch_size :]])
                )
        return carry[0]

    return run


def run_jax_scan(s, reps):
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"])
    p0 = [(jnp.asarray(W), jnp.asarray(b)) for W, b in s["params"]]
    return C.timeit(lambda: jax_scan_train(p0, X, Y, BATCH, 1, KEEP_PROB), reps=reps)


def check_jax_scan(s, X, Y):
    p0 = [(jnp.asarray(W), jnp.asarray(b)) for W, b in s["params"]]
    out = jax_scan_train(p0, jnp.asarray(X), jnp.asarray(Y), CHECK_M, CHECK_EPOCHS, 1.0)
    return [np.asarray(a) for layer in out for a in layer]


# ---- optax + flax --------------------------------------------------------------------------------


def _batches(key, m, batch_size):
    perm = np.asarray(jax.random.permutation(key, m))
    return [perm[i : i + batch_size] for i in range(0, m, batch_size)]


def linen_train(s, X, Y, batch_size, epochs, keep_prob):
    tx, train_step = _linen_step(keep_prob)
    params = {
        f"Dense_{l}": {"kernel": jnp.asarray(W), "bias": jnp.asarray(b)}
        for l, (W, b) in enumerate(s["params"])
    }
    opt_state = tx.init(params)
    key = jax.random.key(6)
    for e in range(epochs):
        for t, idx in enumerate(_batches(jax.random.key(e), X.shape[0], batch_size)):
            params, opt_state = train_step(
                params, opt_state, X[idx], Y[idx], jax.random.fold_in(key, t)
            )
    flat = []
    for l in range(len(SIZES) - 1):
        flat += [params[f"Dense_{l}"]["kernel"], params[f"Dense_{l}"]["bias"]]
    return flat


@functools.cache
def _linen_step(keep_prob):
    import flax.linen as nn
    import optax

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            for n in SIZES[1:-1]:
                x = nn.relu(nn.Dense(n)(x))
                x = nn.Dropout(rate=1 - keep_prob, deterministic=not train)(x)
            return nn.Dense(SIZES[-1])(x)

    net = Net()
    tx = optax.adam(LEARNING_RATE)

    @jax.jit
    def train_step(params, opt_state, x, y, key):
        def loss_fn(params):
            logits = net.apply({"params": params}, x, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return tx, train_step


def nnx_train(s, X, Y, batch_size, epochs, keep_prob):
    import optax
    from flax import nnx

    Net, train_step = _nnx_parts(keep_prob)
    net = Net(nnx.Rngs(0, dropout=6))
    for layer, (W, b) in zip(net.layers, s["params"]):
        layer.kernel.value = jnp.asarray(W)
        layer.bias.value = jnp.asarray(b)
    optimizer = nnx.Optimizer(net, optax.adam(LEARNING_RATE), wrt=nnx.Param)
    for e in range(epochs):
        for idx in _batches(jax.random.key(e), X.shape[0], batch_size):
            train_step(net, optimizer, X[idx], Y[idx])
    return [a for layer in net.layers for a in (layer.kernel.value, layer.bias.value)]


@functools.cache
def _nnx_parts(keep_prob):
    import optax
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [nnx.Linear(a, b, rngs=rngs) for a, b in zip(SIZES[:-1], SIZES[1:])]
            )
            self.dropout = nnx.Dropout(rate=1 - keep_prob, rngs=rngs)

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = self.dropout(nnx.relu(layer(x)))
            return self.layers[-1](x)

    @nnx.jit
    def train_step(net, optimizer, x, y):
        def loss_fn(net):
            return optax.softmax_cross_entropy_with_integer_labels(net(x), y).mean()

        optimizer.update(net, nnx.grad(loss_fn)(net))

    return Net, train_step


def run_flax(train_fn, s, reps):
    X, Y = jnp.asarray(s["X"]), jnp.asarray(s["Y"])
    return C.timeit(lambda: train_fn(s, X, Y, BATCH, 1, KEEP_PROB), reps=reps)


# ---- a flax convnet: fit against a hand-written flax + optax scan -------------------------------

CONV_M = (512, 4096)  # (quick, full) examples of 8x8x1
CONV_BATCH = 256
CONV_KEEP = 0.9


@functools.cache
def _conv_net():
    import flax.linen as nn

    class ConvNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            for channels in (16, 32):
                x = nn.Conv(channels, (3, 3), use_bias=False)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
                x = nn.relu(x)
            x = jnp.mean(x, axis=(1, 2))
            x = nn.Dropout(rate=1 - CONV_KEEP, deterministic=not train)(x)
            return nn.Dense(10)(x)

    return ConvNet()


def conv_setup(quick: bool) -> dict:
    m = CONV_M[0] if quick else CONV_M[1]
    kx, ky = jax.random.split(jax.random.key(20))
    return {
        "X": jax.random.normal(kx, (m, 8, 8, 1), jnp.float32),
        "Y": jax.random.randint(ky, (m,), 0, 10),
        "m": m,
    }


def fjdl_conv_train(c, epochs):
    from fjdl import model, train

    net = model.from_flax(_conv_net(), c["X"][:1])
    r = train.fit(
        net,
        c["X"],
        c["Y"],
        key=jax.random.key(21),
        loss="softmax",
        optimizer="adam",
        learning_rate=LEARNING_RATE,
        epochs=epochs,
        batch_size=CONV_BATCH,
        eval_every=epochs + 1,  # no evaluation pass: the hand-written loop does none
        progress=False,
    )
    return jax.tree.leaves(r.state.params)


@functools.cache
def _conv_scan_runner(m, epochs):
    """The hand-written loop: flax's apply, optax's Adam, fjdl's data order and keys."""
    import optax

    net = _conv_net()
    tx = optax.adam(LEARNING_RATE)
    n_batches = m // CONV_BATCH

    def loss_fn(params, batch_stats, x, y, key):
        out, updated = net.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return loss, updated["batch_stats"]

    @jax.jit
    def run(key, X, Y):
        init_key, run_key = jax.random.split(key)  # as fjdl.train.init_state splits it
        variables = net.init(
            dict(zip(("params", "dropout"), jax.random.split(init_key))), X[:1], train=False
        )
        params, batch_stats = variables["params"], variables["batch_stats"]
        carry = (params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32))

        def step(carry, idx):
            params, batch_stats, opt_state, t = carry
            key = jax.random.fold_in(jax.random.fold_in(run_key, 1), t)
            grads, batch_stats = jax.grad(loss_fn, has_aux=True)(
                params, batch_stats, X[idx], Y[idx], key
            )
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), batch_stats, opt_state, t + 1), None

        def epoch(carry, e):
            perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(run_key, 0), e), m)
            carry, _ = jax.lax.scan(step, carry, perm.reshape(n_batches, CONV_BATCH))
            return carry, None

        carry, _ = jax.lax.scan(epoch, carry, jnp.arange(epochs))
        return carry[0]

    return run


def scan_conv_train(c, epochs):
    return jax.tree.leaves(_conv_scan_runner(c["m"], epochs)(jax.random.key(21), c["X"], c["Y"]))


def run_conv(quick: bool, reps: int) -> dict:
    """Time one epoch of each peer; check agreement on 4 steps (float32 drift grows with steps)."""
    c, check = conv_setup(quick), conv_setup(True)
    peers = [
        ("fjdl fit, flax convnet", fjdl_conv_train),
        ("optax + flax linen: hand-written scan", scan_conv_train),
    ]
    rows, ref = [], None
    for name, train_fn in peers:
        try:
            timing, _ = C.timeit(lambda f=train_fn: f(c, 1), reps=reps)
            flat = [np.asarray(a) for a in train_fn(check, 1)]
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            rows.append(C.error(name, e))
            continue
        ref = flat if ref is None else ref
        rows.append(
            C.row(
                name,
                timing,
                examples_per_s=c["m"] / timing["median_s"],
                check_param_rel_diff_vs_fjdl=C.rel_diff(flat, ref),
            )
        )
    return {"m": c["m"], "batch_size": CONV_BATCH, "rows": rows}


# ---- PyTorch (in a subprocess of its own) -----------------------------------------------------------


_TORCH_NETS: dict = {}


def _torch_net(keep_prob, compiled):
    """One module (and its compiled forward) per configuration, reused across calls, so that
    ``torch.compile`` compiles once (in the warm-up), as a user's training script would."""
    import torch

    if (keep_prob, compiled) not in _TORCH_NETS:
        layers = []
        for l, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
            layers.append(torch.nn.Linear(a, b))
            if l < len(SIZES) - 2:
                layers += [torch.nn.ReLU(), torch.nn.Dropout(1 - keep_prob)]
        net = torch.nn.Sequential(*layers)
        _TORCH_NETS[keep_prob, compiled] = (net, torch.compile(net) if compiled else net)
    return _TORCH_NETS[keep_prob, compiled]


def torch_train(s, X, Y, batch_size, epochs, keep_prob, compiled=False):
    import torch

    net, fwd = _torch_net(keep_prob, compiled)
    linears = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        for lin, (W, b) in zip(linears, s["params"]):
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = X.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(m, generator=g)
        for i in range(0, m, batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(fwd(X[idx]), Y[idx]).backward()
            opt.step()
    return [p.detach().numpy().copy() for p in net.parameters()]


def torch_worker(s, reps, compiled=False, check=False):
    import torch

    X, Y = torch.from_numpy(s["X"].copy()), torch.from_numpy(s["Y"].astype(np.int64))
    if check:
        out = torch_train(s, X[:CHECK_M], Y[:CHECK_M], CHECK_M, CHECK_EPOCHS, 1.0, compiled)
        return [a.T if a.ndim == 2 else a for a in out]
    timing, _ = C.timeit(lambda: torch_train(s, X, Y, BATCH, 1, KEEP_PROB, compiled), reps=reps)
    timing["threads"] = torch.get_num_threads()
    return timing


def run(quick: bool) -> dict:
    s = setup(quick)
    reps = 1 if quick else 3
    peak = peak_matmul(quick)
    Xc, Yc = s["X"][:CHECK_M], s["Y"][:CHECK_M]
    torch_kw = {"s": s, "reps": reps}
    peers = [
        (
            "fjdl",
            lambda: run_fjdl(s, reps),
            lambda: fjdl_train(s, jnp.asarray(Xc), jnp.asarray(Yc), CHECK_M, CHECK_EPOCHS, 1.0),
        ),
        (
            "jax: hand-written scan",
            lambda: run_jax_scan(s, reps),
            lambda: check_jax_scan(s, Xc, Yc),
        ),
        (
            "optax + flax linen",
            lambda: run_flax(linen_train, s, reps),
            lambda: linen_train(s, jnp.asarray(Xc), jnp.asarray(Yc), CHECK_M, CHECK_EPOCHS, 1.0),
        ),
        (
            "optax + flax nnx",
            lambda: run_flax(nnx_train, s, reps),
            lambda: nnx_train(s, jnp.asarray(Xc), jnp.asarray(Yc), CHECK_M, CHECK_EPOCHS, 1.0),
        ),
        (
            "torch eager",
            lambda: (C.run_subprocess("bench.case_c", "torch_worker", torch_kw), None),
            lambda: C.run_subprocess("bench.case_c", "torch_worker", {**torch_kw, "check": True}),
        ),
    ]
    if not quick:  # torch.compile needs ~30 s or more to compile on 2 cores: full runs only
        kw = {**torch_kw, "compiled": True}
        peers.append(
            (
                "torch.compile",
                lambda: (C.run_subprocess("bench.case_c", "torch_worker", kw), None),
                lambda: C.run_subprocess("bench.case_c", "torch_worker", {**kw, "check": True}),
            )
        )
    flops = flops_per_epoch(s["m"])
    rows, ref = [], None
    for name, timed, check in peers:
        if name.startswith("torch") and not C.has_torch():
            rows.append(C.not_installed(name, "pip install torch"))
            continue
        try:
            timing, _ = timed()
            flat = [np.asarray(a) for a in check()]
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            rows.append(C.error(name, e))
            continue
        if ref is None:
            ref = flat
        gflops = flops / timing["median_s"] / 1e9
        rows.append(
            C.row(
                name,
                timing,
                examples_per_s=s["m"] / timing["median_s"],
                gflops=gflops,
                fraction_of_peak=gflops / peak["gflops"],
                check_param_rel_diff_vs_fjdl=C.rel_diff(flat, ref),
            )
        )
    return {
        "case": "C",
        "convnet": run_conv(quick, reps),
        "m": s["m"],
        "sizes": SIZES,
        "flops_per_epoch": flops,
        "flops_formula": "6 * m * sum(n_in * n_out)",
        "peak": peak,
        "rows": rows,
    }
