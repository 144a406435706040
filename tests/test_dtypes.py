"""Every float dtype through fit and train_many: bfloat16, float16, float32, float64 and integer
inputs; optimizer moments and batch-norm statistics kept in at least float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fjdl import batchnorm, data, model, optim, train, tune
from fjdl.model import MLP


@pytest.fixture(scope="module")
def moons():
    return data.make_moons(jax.random.key(0), 400, noise=0.2)


FIT = dict(key=jax.random.key(1), epochs=100, batch_size=64, progress=False)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_adam_trains_on_moons(moons, dtype):
    """epsilon = 1e-8 is 0 in float16; in the float32 moments it is not, so Adam trains."""
    X, Y = moons
    r = train.fit(MLP((2, 16, 8, 1)), X.astype(dtype), Y, optimizer="adam", learning_rate=0.01, **FIT)
    assert r.state.params[0]["W"].dtype == dtype
    assert np.all(np.isfinite(r.history.cost))
    assert r.history.train_accuracy[-1] >= 0.9
    assert r.state.opt_state.v[0]["W"].dtype == jnp.float32  # moment_dtype: at least float32


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop"])
def test_half_precision_other_optimizers_give_finite_costs(moons, optimizer):
    X, Y = moons
    r = train.fit(
        MLP((2, 16, 1)), X.astype(jnp.float16), Y, optimizer=optimizer, learning_rate=0.05,
        **dict(FIT, epochs=20),
    )  # fmt: skip
    assert np.all(np.isfinite(r.history.cost)) and r.history.cost[-1] < r.history.cost[0]


def test_half_precision_batch_norm_keeps_float32_statistics(moons):
    X, Y = moons
    r = train.fit(MLP((2, 16, 1), batchnorm=True), X.astype(jnp.float16), Y, **dict(FIT, epochs=20))
    assert r.state.model_state[0]["mean"].dtype == jnp.float32
    assert r.state.model_state[0]["var"].dtype == jnp.float32
    assert np.all(np.isfinite(r.history.cost))


def test_integer_inputs_become_the_default_float(moons):
    X, Y = moons
    r = train.fit(MLP((2, 8, 1)), (X * 10).astype(jnp.int32), Y, **dict(FIT, epochs=5))
    assert r.state.params[0]["W"].dtype == jnp.float32 and np.all(np.isfinite(r.history.cost))
    keys = jax.random.split(FIT["key"], 2)
    many = tune.train_many(
        MLP((2, 8, 1)), (X * 10).astype(jnp.int32), Y, keys=keys, epochs=5, batch_size=64,
        progress=False,
    )  # fmt: skip
    X_int = (X * 10).astype(jnp.int32)
    ref = train.fit(MLP((2, 8, 1)), X_int.astype(jnp.float32), Y, **dict(FIT, key=keys[1], epochs=5))
    np.testing.assert_allclose(many.history.cost[1], ref.history.cost, rtol=1e-5)
    assert many.params[0]["W"].dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.bfloat16, "float64"])
def test_train_many_equals_fit_in_other_dtypes(moons, dtype):
    """Widths padded or not, in bfloat16 and float64: each model is its own fit."""
    X, Y = moons
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        Xd = np.asarray(X, np.float64) if dtype == "float64" else X.astype(dt)
        keys = jax.random.split(jax.random.key(4), 2)
        configs = [MLP((2, 5, 1)), MLP((2, 9, 1))]
        many = tune.train_many(
            configs, Xd, Y, keys=keys, learning_rate=0.01, epochs=3, batch_size=64, progress=False
        )
        for i, c in enumerate(configs):
            ref = train.fit(c, Xd, Y, **dict(FIT, key=keys[i], epochs=3, learning_rate=0.01))
            assert many.state(i).params[0]["W"].dtype == dt
            tol = dict(rtol=2e-2, atol=1e-2) if dt == jnp.bfloat16 else dict(rtol=1e-10, atol=1e-12)
            for got, want in zip(jax.tree.leaves(many.state(i).params), jax.tree.leaves(ref.state.params)):
                np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), **tol)


def test_float64_inputs_train_in_float64(moons):
    X, Y = moons
    with jax.enable_x64(True):
        r = train.fit(MLP((2, 8, 1)), np.asarray(X, np.float64), Y, **dict(FIT, epochs=5))
        assert r.state.params[0]["W"].dtype == jnp.float64
        assert r.state.opt_state.v[0]["W"].dtype == jnp.float64
    assert np.all(np.isfinite(r.history.cost))


def test_complex_inputs_are_refused_by_name(moons):
    X, Y = moons
    with pytest.raises(TypeError, match="training X must be real, got dtype complex64"):
        train.fit(MLP((2, 8, 1)), X.astype(jnp.complex64), Y, **FIT)


@pytest.mark.parametrize("make", [optim.momentum, optim.rmsprop, optim.adam])
def test_moments_are_float32_for_half_parameters(make):
    params = {"W": jnp.full((3, 2), 0.5, jnp.bfloat16)}
    opt = make(jnp.bfloat16(0.01))
    state = opt.init(params)
    moments = [leaf for leaf in jax.tree.leaves(state) if leaf.ndim == 2]
    assert moments and all(m.dtype == jnp.float32 for m in moments)
    grads = {"W": jnp.full((3, 2), 1e-4, jnp.bfloat16)}  # its square, 1e-8, is 0 in float16
    updates, state = opt.update(grads, state, params)
    assert updates["W"].dtype == jnp.bfloat16 and np.all(np.isfinite(updates["W"]))
    assert np.all(np.asarray(updates["W"], np.float32) < 0)


def test_moment_dtype_policy():
    assert optim.moment_dtype(jnp.float16) == jnp.float32
    assert optim.moment_dtype(jnp.bfloat16) == jnp.float32
    assert optim.moment_dtype(jnp.float32) == jnp.float32
    with jax.enable_x64(True):
        assert optim.moment_dtype(jnp.float64) == jnp.float64


def test_half_model_init_keeps_running_statistics_in_float32():
    params, state = model.init(jax.random.key(0), MLP((2, 4, 1), batchnorm=True), dtype=jnp.bfloat16)
    assert params[0]["W"].dtype == jnp.bfloat16 and state[0]["var"].dtype == jnp.float32
    z = jnp.ones((8, 4), jnp.bfloat16)
    out, stats = batchnorm.normalize_train(z, params[0]["gamma"], params[0]["beta"])
    assert out.dtype == jnp.bfloat16 and stats[0].dtype == jnp.float32
