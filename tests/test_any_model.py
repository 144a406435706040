"""Any model through fjdl's one training loop: a convnet written as two functions, a flax linen
module and an equinox module, trained by :func:`fjdl.train.fit` on the digits images.

The same small architecture three times: conv 3x3 (8 channels) -> batch norm -> ReLU -> conv 3x3
stride 2 (16 channels) -> batch norm -> ReLU -> flatten -> dropout (keep 0.9) -> dense 10. Each
reaches 95% dev accuracy with mini-batches, dropout, batch norm, L2 and early stopping, and each
agrees with a hand-written optax + ``lax.scan`` loop over the same model, data order and keys.

Compilation dominates the time of this file (a run of a few epochs takes under a second, its
compilation several seconds), so tests that can share a compiled :func:`fjdl.train.run_epochs` use
the same static arguments (``SHORT``, ``LONG``; numbers such as the learning rate or ``min_delta``
are arrays and may differ), and the runs themselves are shared through module-scoped fixtures.
"""

import functools
from typing import NamedTuple

import chex
import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fjdl import batchnorm, data, initializers, parallel, train, tune
from fjdl import nn as fnn
from fjdl.model import from_equinox, from_flax, from_functions

KEEP_PROB = 0.9
MOMENTUM = 0.9  # batch norm's running statistics: the weight of the old average
N_CLASSES = 10
CONVS = (("conv1", 1, 8, 1), ("conv2", 8, 16, 2))  # (name, n_in, n_out, stride); 3x3 kernels
N_FLAT = 4 * 4 * 16  # 8x8 -> 8x8 (stride 1) -> 4x4 (stride 2), 16 channels
NAMES = ("functions", "flax", "equinox")

LEARNING_RATE = 0.01
LAMBD = 0.01
BATCH_SIZE = 64  # 1438 training examples: 22 full batches and a remainder of 30
# Three epochs of the two-function convnet: the run that the NaN guard, Panda and data-parallel
# tests compare with.
SHORT = dict(
    loss="softmax", optimizer="adam", learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE,
    epochs=3, lambd=LAMBD, progress=False,
)  # fmt: skip
# Training to 95% (every model), with a dev set and early stopping.
LONG = dict(SHORT, epochs=6, patience=2)
FIT_KEY = jax.random.key(7)


# ---------------------------------------------------------------------------------------------
# Data


class Digits(NamedTuple):
    X_train: jax.Array  # (1438, 8, 8, 1)
    Y_train: jax.Array  # (1438,) int32
    X_dev: jax.Array  # (359, 8, 8, 1)
    Y_dev: jax.Array


@pytest.fixture(scope="module")
def digits() -> Digits:
    X, Y = data.load_digits()  # (1797, 64) in [0, 1], (1797,) in [0, 10)
    images = X.reshape(-1, 8, 8, 1)
    (X_train, Y_train), (X_dev, Y_dev) = data.split(jax.random.key(0), images, Y, (0.8, 0.2))
    assert X_train.shape == (1438, 8, 8, 1) and X_train.shape[0] % BATCH_SIZE
    return Digits(X_train, Y_train, X_dev, Y_dev)


# ---------------------------------------------------------------------------------------------
# The model three times: two functions, flax linen, equinox


def conv_init(key):
    """He-initialized kernels ``(3, 3, n_in, n_out)``; batch norm's gamma 1, beta 0."""
    *conv_keys, dense_key = jax.random.split(key, len(CONVS) + 1)
    params, state = {}, {}
    for k, (name, n_in, n_out, _) in zip(conv_keys, CONVS):
        params[name] = {
            "W": initializers.he(k, (3, 3, n_in, n_out)),
            "gamma": jnp.ones((n_out,)),
            "beta": jnp.zeros((n_out,)),
        }
        state[name] = batchnorm.init_running(n_out)
    params["dense"] = {
        "W": initializers.he(dense_key, (N_FLAT, N_CLASSES)),
        "b": jnp.zeros((N_CLASSES,)),
    }
    return params, state


def conv_apply(params, state, x, *, key=None, train=False):
    """``x`` of shape ``(m, 8, 8, 1)`` (NHWC) -> logits ``(m, 10)``, and the new running stats."""
    h, new_state = x, {}
    for name, _, _, stride in CONVS:
        p = params[name]
        z = jax.lax.conv_general_dilated(
            h, p["W"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        if train:
            z, stats = batchnorm.normalize_train(z, p["gamma"], p["beta"])
            new_state[name] = batchnorm.update_running(state[name], stats, MOMENTUM)
        else:
            z = batchnorm.normalize_eval(z, p["gamma"], p["beta"], state[name])
            new_state[name] = state[name]
        h = fnn.relu(z)
    h = h.reshape(h.shape[0], -1)
    if train:
        h = fnn.dropout(key, h, KEEP_PROB)
    return h @ params["dense"]["W"] + params["dense"]["b"], new_state


class FlaxConvNet(linen.Module):
    @linen.compact
    def __call__(self, x, train: bool = False):
        for _, _, n_out, stride in CONVS:
            x = linen.Conv(n_out, (3, 3), strides=stride, use_bias=False)(x)
            x = linen.BatchNorm(use_running_average=not train, momentum=MOMENTUM)(x)
            x = linen.relu(x)
        x = x.reshape((x.shape[0], -1))
        x = linen.Dropout(1 - KEEP_PROB, deterministic=not train)(x)
        return linen.Dense(N_CLASSES)(x)


class EqxConvNet(eqx.Module):
    """One example at a time: ``(8, 8, 1)`` as fjdl stores it, ``(C, H, W)`` inside."""

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.BatchNorm
    dropout: eqx.nn.Dropout
    linear: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, 8, 3, padding=1, use_bias=False, key=k1)
        self.norm1 = eqx.nn.BatchNorm(8, axis_name="batch", momentum=MOMENTUM, mode="batch")
        self.conv2 = eqx.nn.Conv2d(8, 16, 3, stride=2, padding=1, use_bias=False, key=k2)
        self.norm2 = eqx.nn.BatchNorm(16, axis_name="batch", momentum=MOMENTUM, mode="batch")
        self.dropout = eqx.nn.Dropout(1 - KEEP_PROB)
        self.linear = eqx.nn.Linear(N_FLAT, N_CLASSES, key=k3)

    def __call__(self, x, state, *, key=None):
        x = jnp.transpose(x, (2, 0, 1))  # (H, W, C) -> (C, H, W)
        x, state = self.norm1(self.conv1(x), state)
        x, state = self.norm2(self.conv2(jax.nn.relu(x)), state)
        x = self.dropout(jax.nn.relu(x).reshape(-1), key=key)
        return self.linear(x), state


make_eqx_convnet = eqx.nn.make_with_state(EqxConvNet)  # key -> (module, state)


@pytest.fixture(scope="module")
def nets(digits):
    return {
        "functions": from_functions(conv_init, conv_apply, name="convnet"),
        "flax": from_flax(FlaxConvNet(), digits.X_train[:1]),
        "equinox": from_equinox(make_eqx_convnet),
    }


# ---------------------------------------------------------------------------------------------
# The reference: each model called as its own library calls it, trained by optax and lax.scan


def native(name):
    """``(init, forward)`` of model ``name`` without fjdl's wrappers: ``init(key) -> (params,
    state)`` and ``forward(params, state, x, key) -> (logits, new_state)`` in training mode."""
    if name == "functions":
        return conv_init, lambda p, s, x, k: conv_apply(p, s, x, key=k, train=True)
    if name == "flax":
        module = FlaxConvNet()

        def flax_init(key):
            params_key, dropout_key = jax.random.split(key)
            x = jnp.zeros((1, 8, 8, 1))
            variables = module.init({"params": params_key, "dropout": dropout_key}, x)
            return variables["params"], {"batch_stats": variables["batch_stats"]}

        def flax_forward(params, state, x, key):
            out, updated = module.apply(
                {"params": params, **state},
                x,
                train=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
            return out, {"batch_stats": updated["batch_stats"]}

        return flax_init, flax_forward

    _, static = eqx.partition(make_eqx_convnet(jax.random.key(0))[0], eqx.is_inexact_array)

    def eqx_init(key):
        module, state = make_eqx_convnet(key)
        return eqx.partition(module, eqx.is_inexact_array)[0], state

    def eqx_forward(params, state, x, key):
        module = eqx.combine(params, static)  # built in training mode: inference=False
        one = lambda x_i, key_i: module(x_i, state, key=key_i)  # noqa: E731
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(one, axis_name="batch", out_axes=(0, None))(x, keys)

    return eqx_init, eqx_forward


def penalized(params):
    """The weights L2 acts on: leaves with ``ndim >= 2`` not named ``bias``."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    name = lambda entry: getattr(entry, "key", None) or getattr(entry, "name", None)  # noqa: E731
    return [w for path, w in leaves if w.ndim >= 2 and name(path[-1]) != "bias"]


def reference_fit(name, X, Y, key, *, opt, lambd, epochs, batch_size):
    """Mini-batch Adam with train.py's keys: ``init_key, run_key = split(key)``; epoch ``e``
    shuffles with ``fold_in(fold_in(run_key, 0), e)`` (full batches, then the remainder); step
    ``t`` drops out with ``fold_in(fold_in(run_key, 1), t)``. Returns ``(params, state, costs)``,
    ``costs[e]`` the mean over epoch ``e``'s examples of the batch costs."""
    init, forward = native(name)
    init_key, run_key = jax.random.split(key)
    params, state = init(init_key)
    m = X.shape[0]
    n_full, remainder = divmod(m, batch_size)

    def cost(params, state, x, y, step_key):
        out, new_state = forward(params, state, x, step_key)
        data_loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        l2 = sum(jnp.sum(w**2) for w in penalized(params))
        return data_loss + lambd / (2 * x.shape[0]) * l2, new_state

    def step(carry, idx):
        params, state, opt_state, t = carry
        step_key = jax.random.fold_in(jax.random.fold_in(run_key, 1), t)
        (j, state), grads = jax.value_and_grad(cost, has_aux=True)(
            params, state, X[idx], Y[idx], step_key
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state, t + 1), j

    def epoch(carry, e):
        perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(run_key, 0), e), m)
        full = perm[: n_full * batch_size].reshape(n_full, batch_size)
        carry, costs = jax.lax.scan(step, carry, full)
        carry, j = step(carry, perm[n_full * batch_size :])
        return carry, (jnp.sum(costs) * batch_size + j * remainder) / m

    @jax.jit
    def run(params, state):
        carry = (params, state, opt.init(params), jnp.zeros((), jnp.int32))
        (params, state, _, _), costs = jax.lax.scan(epoch, carry, jnp.arange(epochs))
        return params, state, costs

    return run(params, state)


# ---------------------------------------------------------------------------------------------
# Shared runs


@pytest.fixture(scope="module")
def short_fit(digits, nets):
    """fit's ``SHORT`` run of the two-function convnet (run once, shared by several tests)."""
    net = nets["functions"]
    return train.fit(net, digits.X_train, digits.Y_train, key=FIT_KEY, **SHORT)


@pytest.fixture(scope="module")
def long_fit(digits, nets):
    """``long_fit(name)``: fit's ``LONG`` run (dev set, early stopping) of model ``name``."""

    @functools.cache
    def get(name):
        dev = (digits.X_dev, digits.Y_dev)
        return train.fit(nets[name], digits.X_train, digits.Y_train, key=FIT_KEY, dev=dev, **LONG)

    return get


def all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------------------------
# Training to 95%, and agreement with the reference loop


@pytest.mark.parametrize("name", NAMES)
def test_fit_reaches_95_percent_on_digits(name, digits, nets, long_fit):
    result = long_fit(name)
    params, state = result.state.params, result.state.model_state
    metrics = train.evaluate(nets[name], params, state, digits.X_dev, digits.Y_dev, loss="softmax")
    assert metrics["accuracy"] >= 0.95, (metrics, result.history.dev_accuracy)
    assert result.best_epoch is not None
    # The parameters returned are the best epoch's (early stopping restores them).
    best = result.best_epoch
    np.testing.assert_allclose(metrics["accuracy"], result.history.dev_accuracy[best], atol=1e-6)
    assert np.all(np.isfinite(result.history.cost))
    assert result.history.cost[-1] < result.history.cost[0]


@pytest.mark.slow  # two compilations: fit with optax's adam, and the reference
@pytest.mark.parametrize("name", NAMES)
def test_fit_equals_optax_scan_reference(name, digits, nets):
    """Same model, data order, keys and optimizer: fit equals optax.adam + ``lax.scan``.

    fit gets the reference's own ``optax.adam(LEARNING_RATE)``, so both runs do the same
    arithmetic and any difference is the loop's: batches, remainder step, keys, loss, L2,
    batch-norm state. float32, 3 epochs of 23 steps with batch norm and dropout: the two programs
    fuse and add in different orders, hence STYLE's tolerance for many steps, ``rtol=1e-5,
    atol=1e-6`` (measured: at most 1.4e-6 apart).

    fjdl's own ``adam`` is not compared here over 69 steps: it computes the bias correction
    ``1 - beta2^t`` exactly where optax rounds ``0.999`` to float32 first, a 6e-6 relative
    difference in every step, and this training is sensitive enough that a 6e-6 relative change
    of the learning rate moves the equinox model's weights by 9e-3 after 3 epochs. test_optim
    compares the two optimizers step by step.
    """
    args = dict(lambd=LAMBD, epochs=SHORT["epochs"], batch_size=BATCH_SIZE)
    adam = optax.adam(LEARNING_RATE)
    # optax raises float betas to the int32 step count: not allowed under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        result = train.fit(
            nets[name], digits.X_train, digits.Y_train, key=FIT_KEY, loss="softmax",
            optimizer=adam, progress=False, **args,
        )  # fmt: skip
        params, state, costs = reference_fit(
            name, digits.X_train, digits.Y_train, FIT_KEY, opt=adam, **args
        )
    chex.assert_trees_all_equal_structs(result.state.params, params)
    chex.assert_trees_all_close(result.state.params, params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(result.state.model_state, state, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.history.cost, costs, rtol=1e-5, atol=1e-6)
    assert int(result.state.step) == SHORT["epochs"] * (22 + 1)


# ---------------------------------------------------------------------------------------------
# Early stopping and the NaN guard


def test_early_stopping_restores_the_best_epoch(digits, nets, long_fit):
    """With ``min_delta`` (an array: ``LONG``'s compiled program) the dev cost stops improving
    enough after epoch 1; patience 2 ends the run at epoch 3 and restores epoch 1's parameters and
    batch-norm statistics."""
    net, dev = nets["functions"], (digits.X_dev, digits.Y_dev)
    result = train.fit(
        net, digits.X_train, digits.Y_train, key=FIT_KEY, dev=dev, min_delta=0.05, **LONG
    )
    history = result.history
    assert (result.best_epoch, result.stopped_epoch) == (1, 1 + LONG["patience"])
    assert len(history.cost) == result.stopped_epoch + 1
    # min_delta changes when the run stops, not the run: the epochs run are those of LONG's run.
    chex.assert_trees_all_equal(
        history.cost, long_fit("functions").history.cost[: len(history.cost)]
    )
    # The restored parameters and statistics give the dev metrics recorded at the best epoch.
    params, state = result.state.params, result.state.model_state
    best = train.evaluate(net, params, state, *dev, loss="softmax", lambd=LAMBD)
    np.testing.assert_allclose(best["cost"], history.dev_cost[1], rtol=1e-5)
    np.testing.assert_allclose(best["accuracy"], history.dev_accuracy[1], atol=1e-6)
    assert history.dev_cost[1] - history.dev_cost[-1] > 1e-3  # and not the last epoch's


def warm_then(lr0):
    """``LEARNING_RATE`` for the first ``SHORT`` epochs, then ``lr0``."""
    return lambda epoch: jnp.where(epoch < SHORT["epochs"], LEARNING_RATE, lr0)


def test_nan_guard_keeps_the_last_finite_parameters(digits, nets, short_fit):
    """Three epochs at a sane rate, then 1e30: the fourth epoch overflows; fit stops and keeps the
    parameters after epoch 3, which are ``SHORT``'s run (another program: float tolerance)."""
    net = nets["functions"]
    args = dict(SHORT, learning_rate=1e30, schedule=warm_then, epochs=SHORT["epochs"] + 2)
    result = train.fit(
        net, digits.X_train, digits.Y_train, key=FIT_KEY, on_divergence="stop", **args
    )
    assert len(result.history.cost) == SHORT["epochs"]
    assert np.all(np.isfinite(result.history.cost))
    assert all_finite(result.state.params) and all_finite(result.state.model_state)
    assert int(result.state.epoch) == SHORT["epochs"]
    expected = short_fit.state
    chex.assert_trees_all_close(result.state.params, expected.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        result.state.model_state, expected.model_state, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(result.history.cost, short_fit.history.cost, rtol=1e-5)
    # The default raises, carrying the same last finite state (same program: no compilation).
    compiled = train.run_epochs._cache_size()
    with pytest.raises(train.TrainingDiverged, match="diverged at epoch 3") as raised:
        train.fit(net, digits.X_train, digits.Y_train, key=FIT_KEY, **args)
    assert raised.value.epoch == SHORT["epochs"]
    chex.assert_trees_all_equal(raised.value.state.params, result.state.params)
    assert train.run_epochs._cache_size() == compiled


# ---------------------------------------------------------------------------------------------
# predict, evaluate, labels, errors


@pytest.mark.parametrize("name", NAMES)
def test_predict_and_evaluate(name, digits, nets, long_fit):
    net, result = nets[name], long_fit(name)
    params, state = result.state.params, result.state.model_state
    logits, same_state = net.apply(params, state, digits.X_dev)
    chex.assert_trees_all_equal(same_state, state)  # eval mode leaves the statistics alone
    predictions = train.predict(net, params, state, digits.X_dev, loss="softmax")
    assert predictions.shape == digits.Y_dev.shape
    np.testing.assert_array_equal(predictions, jnp.argmax(logits, axis=-1))
    metrics = train.evaluate(net, params, state, digits.X_dev, digits.Y_dev, loss="softmax")
    accuracy = np.mean(np.asarray(predictions) == np.asarray(digits.Y_dev))
    np.testing.assert_allclose(metrics["accuracy"], accuracy, atol=1e-6)
    np.testing.assert_allclose(metrics["error"], 1 - accuracy, atol=1e-6)
    data_loss = optax.softmax_cross_entropy_with_integer_labels(logits, digits.Y_dev).mean()
    np.testing.assert_allclose(metrics["cost"], data_loss, rtol=1e-5)
    # With L2: lambd / (2 m) times the squared weights (kernels and dense weights only).
    l2 = sum(float(jnp.sum(w**2)) for w in penalized(params))
    penalized_cost = train.evaluate(
        net, params, state, digits.X_dev, digits.Y_dev, loss="softmax", lambd=LAMBD
    )["cost"]
    m_dev = digits.Y_dev.shape[0]
    np.testing.assert_allclose(penalized_cost, data_loss + LAMBD / (2 * m_dev) * l2, rtol=1e-5)


def test_one_hot_labels_equal_class_indices(digits, nets, long_fit):
    """One-hot ``(m, 10)`` labels become class indices before compiling: the same run (``LONG``'s
    compiled program), bit for bit."""
    net = nets["functions"]
    dev = (digits.X_dev, jax.nn.one_hot(digits.Y_dev, N_CLASSES))
    one_hot = jax.nn.one_hot(digits.Y_train, N_CLASSES)
    compiled = train.run_epochs._cache_size()
    result = train.fit(net, digits.X_train, one_hot, key=FIT_KEY, dev=dev, **LONG)
    expected = long_fit("functions")
    assert train.run_epochs._cache_size() <= compiled + 1  # + 1 when run alone
    chex.assert_trees_all_equal(result.state.params, expected.state.params)
    chex.assert_trees_all_equal(tuple(result.history), tuple(expected.history))
    params, state = result.state.params, result.state.model_state
    assert train.evaluate(net, params, state, *dev, loss="softmax") == train.evaluate(
        net, params, state, digits.X_dev, digits.Y_dev, loss="softmax"
    )


@pytest.mark.parametrize("name", NAMES)
def test_clear_errors_before_compiling(name, digits, nets):
    net, X, Y = nets[name], digits.X_train, digits.Y_train
    compiled = train.run_epochs._cache_size()
    with pytest.raises(TypeError, match="loss is needed"):
        train.fit(net, X, Y, key=FIT_KEY, epochs=1)
    with pytest.raises(TypeError, match="loss is needed"):
        train.predict(net, *net.init(FIT_KEY), digits.X_dev)
    args = dict(SHORT, epochs=1)
    flat = X.reshape(X.shape[0], -1)  # (m, 64): the MLP's layout, not an image
    with pytest.raises(ValueError, match=r"training X of shape \(1438, 64\)"):
        train.fit(net, flat, Y, key=FIT_KEY, **args)
    dev = (digits.X_dev[..., 0], digits.Y_dev)  # (m, 8, 8): no channel axis
    with pytest.raises(ValueError, match=r"dev X of shape \(359, 8, 8\)"):
        train.fit(net, X, Y, key=FIT_KEY, dev=dev, **args)
    with pytest.raises(ValueError, match="keep_probs applies to an fjdl.MLP only"):
        train.fit(net, X, Y, key=FIT_KEY, keep_probs=0.5, **args)
    with pytest.raises(ValueError, match="scheme applies to an fjdl.MLP only"):
        train.fit(net, X, Y, key=FIT_KEY, scheme="xavier", **args)
    with pytest.raises(ValueError, match=r"Y must hold class labels in \[0, 10\)"):
        train.fit(net, X, Y + 1, key=FIT_KEY, **args)
    assert train.run_epochs._cache_size() == compiled  # nothing compiled


# ---------------------------------------------------------------------------------------------
# Panda and data parallelism


def test_panda_changes_the_learning_rate_without_recompiling(digits, nets, short_fit):
    net = nets["functions"]
    panda = tune.Panda(
        net,
        digits.X_train,
        digits.Y_train,
        key=FIT_KEY,
        loss="softmax",
        learning_rate=LEARNING_RATE,
        lambd=LAMBD,
        batch_size=BATCH_SIZE,
    )
    epochs = SHORT["epochs"]
    panda.run(epochs)
    # Panda's first run is fit's (same keys, same loop).
    chex.assert_trees_all_equal(panda.params, short_fit.state.params)
    compiled = train.run_epochs._cache_size()
    panda.set(learning_rate=LEARNING_RATE / 10)
    history = panda.run(epochs)
    assert train.run_epochs._cache_size() == compiled
    assert panda.epoch == 2 * epochs
    np.testing.assert_allclose(
        panda.history.learning_rate, [LEARNING_RATE] * epochs + [LEARNING_RATE / 10] * epochs
    )
    assert np.all(np.isfinite(history.cost)) and all_finite(panda.params)


def test_fit_data_parallel_on_one_device_is_fit(digits, nets, short_fit):
    result = parallel.fit_data_parallel(
        nets["functions"],
        digits.X_train,
        digits.Y_train,
        key=FIT_KEY,
        devices=jax.devices()[:1],
        **SHORT,
    )
    expected = short_fit.state
    chex.assert_trees_all_close(result.state.params, expected.params, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(
        result.state.model_state, expected.model_state, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(result.history.cost, short_fit.history.cost, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# train_many: jax.vmap of the same loop, for convnets too


@pytest.mark.parametrize("name", ["functions", "flax"])
def test_train_many_of_convnets_equals_each_fit(name, digits, nets):
    """Two convnets (batch norm, dropout) with their own keys and learning rates in one
    train_many: each equals fit of its own, on a small part of the digits (compilation is the
    cost of this test)."""
    X, Y = digits.X_train[:96], digits.Y_train[:96]
    keys = jax.random.split(jax.random.key(5), 2)
    lrs = [0.01, 0.003]
    kw = dict(loss="softmax", epochs=2, batch_size=64, lambd=LAMBD)
    with jax.numpy_dtype_promotion("standard"):  # flax's BatchNorm promotes its statistics
        many = tune.train_many(
            nets[name], X, Y, keys=keys, learning_rate=lrs, progress=False, **kw
        )
        for i in range(2):
            ref = train.fit(nets[name], X, Y, key=keys[i], learning_rate=lrs[i], progress=False, **kw)
            np.testing.assert_allclose(many.history.cost[i], ref.history.cost, rtol=1e-5)
            # Batched convolutions add in another order; Adam's early steps divide a gradient by
            # its own size, so a rounding difference in a tiny gradient shows as ~1e-5 relative.
            chex.assert_trees_all_close(
                many.state(i).params, ref.state.params, rtol=1e-4, atol=1e-5
            )
            chex.assert_trees_all_close(
                many.state(i).model_state, ref.state.model_state, rtol=1e-4, atol=1e-5
            )
