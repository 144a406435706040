"""Issue 14's API cases: every bad input gets one clear error that names the argument, raised before
anything compiles; nothing is silently wrong. (The CLI's cases are in test_cli.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fjdl import data, model, nn, optim, train, tune
from fjdl.model import MLP


@pytest.fixture(scope="module")
def moons():
    return data.make_moons(jax.random.key(0), 120, noise=0.2)


def _fit(X, Y, **kwargs):
    kwargs = {"key": jax.random.key(1), "epochs": 2, "progress": False, **kwargs}
    return train.fit(kwargs.pop("config", MLP((2, 4, 1))), X, Y, **kwargs)


def _no_compilation(call):
    """Run ``call`` (which must raise) and check that the training loop compiled nothing."""
    before = train.run_epochs._cache_size()
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert train.run_epochs._cache_size() == before
    return str(info.value)


# ---- non-finite inputs ---------------------------------------------------------------------------


def test_nan_or_inf_in_X_or_dev_X_is_refused_before_training(moons):
    X, Y = moons
    for bad in (jnp.nan, jnp.inf):
        message = _no_compilation(lambda b=bad: _fit(X.at[5, 1].set(b), Y))
        assert "training X must be finite" in message and "(5, 1)" in message
    message = _no_compilation(lambda: _fit(X, Y, dev=(X.at[0, 0].set(jnp.nan), Y)))
    assert "dev X must be finite" in message
    with pytest.raises(ValueError, match="evaluation X must be finite"):
        params, state = model.init(jax.random.key(0), MLP((2, 4, 1)))
        train.evaluate(MLP((2, 4, 1)), params, state, X.at[1, 1].set(-jnp.inf), Y)
    with pytest.raises(ValueError, match="X_train must be finite"):
        data.fit_standardizer(X.at[2, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] must be finite"):
        params, _ = model.init(jax.random.key(0), MLP((2, 4, 1)))
        params = (dict(params[0], W=params[0]["W"].at[0, 0].set(jnp.nan)), params[1])
        _fit(X, Y, params=params)


def test_relu_propagates_nan_and_keeps_its_derivative_at_zero():
    x = jnp.array([-1.0, 0.0, 2.0, jnp.nan])
    np.testing.assert_array_equal(nn.relu(x), [0.0, 0.0, 2.0, np.nan])
    np.testing.assert_allclose(nn.leaky_relu(x, 0.1), [-0.1, 0.0, 2.0, np.nan], rtol=1e-6)
    grad = jax.vmap(jax.grad(nn.relu))(jnp.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(grad, [0.0, 0.0, 1.0])  # the course's mask A > 0
    config = MLP((2, 3, 1))
    params, state = model.init(jax.random.key(0), config)
    logits, _ = model.apply(config, params, state, jnp.array([[jnp.nan, 1.0], [0.5, 1.0]]))
    assert np.isnan(logits[0]) and np.isfinite(logits[1])


def test_divergence_names_its_likely_cause(moons):
    X, Y = moons
    with pytest.raises(
        train.TrainingDiverged, match=r"learning rate \(1e\+30\) is probably too large"
    ):
        _fit(X, Y, optimizer="gd", learning_rate=1e30, epochs=5)
    r = _fit(X, Y, optimizer="gd", learning_rate=1e30, epochs=5, on_divergence="stop")
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(r.state.params))
    with pytest.raises(train.TrainingDiverged, match="float16, whose values overflow"):
        _fit(X.astype(jnp.float16), Y, optimizer="gd", learning_rate=1e4, epochs=20)


# ---- keys, state, dev, schedule, keep_probs --------------------------------------------------------


@pytest.mark.parametrize(
    "key, exc, match",
    [
        (None, TypeError, "key must be a PRNG key"),
        ("seed", TypeError, "key must be a PRNG key .* or an int seed, got str"),
        (jnp.arange(3.0), TypeError, "key must be a PRNG key .* dtype float32"),
        (jax.random.split(jax.random.key(0), 2), ValueError, "key must be a single PRNG key"),
    ],
)
def test_fit_checks_its_key(moons, key, exc, match):
    X, Y = moons
    with pytest.raises(exc, match=match):
        _fit(X, Y, key=key)


def test_an_int_key_is_a_seed(moons):
    X, Y = moons
    a = _fit(X, Y, key=7)
    b = _fit(X, Y, key=jax.random.key(7))
    np.testing.assert_array_equal(a.history.cost, b.history.cost)


def test_apply_takes_none_as_no_state_and_refuses_it_with_batch_norm():
    x = jnp.ones((3, 2))
    config = MLP((2, 4, 1))
    params, state = model.init(jax.random.key(0), config)
    np.testing.assert_array_equal(
        model.apply(config, params, None, x)[0], model.apply(config, params, state, x)[0]
    )
    bn = MLP((2, 4, 1), batchnorm=True)
    params, _ = model.init(jax.random.key(0), bn)
    with pytest.raises(ValueError, match="state is None, but this MLP has batch norm"):
        model.apply(bn, params, None, x)
    with pytest.raises(ValueError, match="state must be a tuple of 2 per-layer dicts"):
        model.apply(bn, params, ({},), x)


def test_dev_and_schedule_are_checked(moons):
    X, Y = moons
    assert "dev must be a pair" in _no_compilation(lambda: _fit(X, Y, dev=(X,)))
    assert "schedule must be a function" in _no_compilation(lambda: _fit(X, Y, schedule=0.5))


def test_keep_probs_on_an_mlp_without_dropout_is_applied(moons):
    X, Y = moons
    given = _fit(X, Y, keep_probs=0.5, batch_size=32)
    built = _fit(X, Y, config=MLP((2, 4, 1), keep_probs=0.5), batch_size=32)
    plain = _fit(X, Y, batch_size=32)
    np.testing.assert_array_equal(given.history.cost, built.history.cost)
    assert not np.array_equal(given.history.cost, plain.history.cost)


# ---- optimizers: structure and shapes ------------------------------------------------------------


def _params():
    return ({"W": jnp.ones((2, 5)), "b": jnp.zeros(5)}, {"W": jnp.ones((5, 1)), "b": jnp.zeros(1)})


OPTIMIZERS = [optim.gd(0.1), optim.momentum(0.1), optim.rmsprop(0.1), optim.adam(0.1)]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=["gd", "momentum", "rmsprop", "adam"])
def test_optimizers_refuse_grads_of_another_structure_or_shape(opt):
    params = _params()
    state = opt.init(params)
    other = (params[0],)  # one layer missing
    with pytest.raises(
        ValueError, match=r"grads must have the tree structure of params \(4 leaves\)"
    ):
        opt.update(other, state, params)
    wrong = (dict(params[0], W=jnp.ones((1, 5))), params[1])  # would broadcast
    with pytest.raises(ValueError, match=r"grads\[0\]\['W'\] has shape \(1, 5\), but params"):
        opt.update(wrong, state, params)
    with pytest.raises(ValueError, match=r"grads\[0\]\['W'\] has shape \(1, 5\)"):
        jax.jit(opt.update)(wrong, state, params)  # shapes are static: checked under jit too


@pytest.mark.parametrize("opt", OPTIMIZERS[1:], ids=["momentum", "rmsprop", "adam"])
def test_a_state_of_another_architecture_is_named(opt):
    params = _params()
    wider = ({"W": jnp.ones((2, 6)), "b": jnp.zeros(6)}, {"W": jnp.ones((6, 1)), "b": jnp.zeros(1)})
    with pytest.raises(
        ValueError, match=r"the optimizer state's (v|s)\[0\]\['W'\] has shape \(2, 6\)"
    ):
        opt.update(params, opt.init(wider))


def test_apply_updates_refuses_a_shape_that_would_broadcast():
    params = _params()
    updates = (dict(params[0], W=jnp.ones((1, 5))), params[1])
    with pytest.raises(ValueError, match=r"updates\[0\]\['W'\] has shape \(1, 5\)"):
        optim.apply_updates(params, updates)


# ---- train_many and search results --------------------------------------------------------------


def test_train_many_names_the_bad_keep_prob_and_the_bad_labels(moons):
    X, Y = moons
    keys = jax.random.split(jax.random.key(0), 2)
    config = MLP((2, 4, 1), keep_probs=0.9)
    with pytest.raises(ValueError, match=r"keep_probs must be in \(0, 1\], got 1.5"):
        tune.train_many(config, X, Y, keys=keys, keep_probs=[0.9, 1.5], epochs=1)
    with pytest.raises(
        ValueError, match=r"binary labels in \{0, 1\}, got other values such as \[2"
    ):
        tune.train_many(config, X, Y.at[3].set(2), keys=keys, epochs=1)
