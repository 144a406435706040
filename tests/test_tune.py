"""Tests of fjdl.tune: samplers, train_many against fit, searches, and Panda."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fjdl import data, schedules, train, tune
from fjdl.model import MLP

N_KS = 2000
KS_LIMIT = 1.95 / math.sqrt(N_KS)  # the Kolmogorov-Smirnov critical value at about 0.1 %


def ks_uniform(samples, low, high):
    """The Kolmogorov-Smirnov statistic of ``samples`` against U(low, high)."""
    u = np.sort((np.asarray(samples, np.float64) - low) / (high - low))
    i = np.arange(1, u.size + 1)
    return max(np.max(i / u.size - u), np.max(u - (i - 1) / u.size))


# --------------------------------------------------------------------------------------------------
# Sampling


@given(
    low_exp=st.floats(-6, 1),
    decades=st.floats(0.5, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_log_uniform_is_uniform_in_the_exponent(low_exp, decades, seed):
    low, high = 10.0**low_exp, 10.0 ** (low_exp + decades)
    x = np.asarray(tune.log_uniform(jax.random.key(seed), low, high, N_KS))
    assert x.shape == (N_KS,) and np.all((x >= low) & (x <= high))
    assert ks_uniform(np.log10(x), math.log10(low), math.log10(high)) < KS_LIMIT
    # ...and far from uniform in the value itself, when the range spans decades
    if decades >= 2:
        assert ks_uniform(x, low, high) > 0.3


@given(
    low=st.floats(0.0, 0.95),
    width=st.floats(0.5, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_beta_log_scale_is_uniform_in_log_one_minus_beta(low, width, seed):
    # high such that 1 - high is `width` decades below 1 - low
    high = 1 - (1 - low) * 10.0**-width
    beta = np.asarray(tune.beta_log_scale(jax.random.key(seed), low, high, N_KS), np.float64)
    assert np.all((beta >= low) & (beta <= np.float32(high)))
    t = np.log10(1 - beta)
    lo, hi = math.log10(1 - high), math.log10(1 - low)
    # float32 rounding of beta near 1 blurs the smallest 1 - beta a little
    assert ks_uniform(np.clip(t, lo, hi), lo, hi) < KS_LIMIT + 0.01


def test_beta_log_scale_course_range_splits_decades_evenly(getkey):
    beta = np.asarray(tune.beta_log_scale(getkey(), 0.9, 0.999, 20_000))
    # [0.9, 0.99] and [0.99, 0.999] are one decade each of 1 - beta: half the samples each
    assert abs(np.mean(beta < 0.99) - 0.5) < 0.02


def test_uniform_and_uniform_int_ranges(getkey):
    x = np.asarray(tune.uniform(getkey(), 0.5, 1.0, N_KS))
    assert np.all((x >= 0.5) & (x < 1.0)) and ks_uniform(x, 0.5, 1.0) < KS_LIMIT
    k = np.asarray(tune.uniform_int(getkey(), 3, 7, 5000))
    assert k.dtype == np.int32 and set(k.tolist()) == {3, 4, 5, 6, 7}
    counts = np.bincount(k - 3) / k.size
    assert np.all(np.abs(counts - 0.2) < 0.03)


def test_same_key_same_samples_other_key_other_samples():
    k1, k2 = jax.random.key(5), jax.random.key(6)
    for f, lo, hi in ((tune.log_uniform, 1e-4, 1.0), (tune.beta_log_scale, 0.9, 0.999)):
        np.testing.assert_array_equal(f(k1, lo, hi, 10), f(k1, lo, hi, 10))
        assert not np.array_equal(f(k1, lo, hi, 10), f(k2, lo, hi, 10))
    space = {"learning_rate": tune.LogUniform(1e-4, 1.0), "n_units": tune.UniformInt(2, 9)}
    assert tune.sample(space, k1, 4) == tune.sample(space, k1, 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k: tune.log_uniform(k, 0.0, 1.0, 5), "low must be > 0"),
        (lambda k: tune.log_uniform(k, -1.0, 1.0, 5), "low must be > 0"),
        (lambda k: tune.log_uniform(k, 1.0, 0.1, 5), "low must be < high"),
        (lambda k: tune.log_uniform(k, 1e-3, math.inf, 5), "high must be finite"),
        (lambda k: tune.log_uniform(k, 1e-3, 1.0, 0), "n must be a positive int"),
        (lambda k: tune.beta_log_scale(k, 0.9, 1.0, 5), "0 <= low < high < 1"),
        (lambda k: tune.beta_log_scale(k, 0.99, 0.9, 5), "0 <= low < high < 1"),
        (lambda k: tune.uniform_int(k, 5, 2, 5), "low must be <= high"),
        (lambda k: tune.LogUniform(1.0, 1.0), "low must be < high"),
        (lambda k: tune.BetaLogScale(-0.1, 0.9), "0 <= low < high < 1"),
    ],
)
def test_bad_ranges_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(jax.random.key(0))


def test_uniform_int_needs_ints():
    with pytest.raises(TypeError, match="low must be an int"):
        tune.uniform_int(jax.random.key(0), 1.5, 4, 3)


def test_sample_grid_and_constants(getkey):
    space = {"learning_rate": tune.LogUniform(1e-3, 1e-1), "beta": tune.BetaLogScale(0.9, 0.99)}
    g = tune.grid({**space, "epochs": 5}, 3)
    assert len(g) == 9 and all(t["epochs"] == 5 for t in g)
    np.testing.assert_allclose(sorted({t["learning_rate"] for t in g}), [1e-3, 1e-2, 1e-1])
    np.testing.assert_allclose(sorted({t["beta"] for t in g}), [0.9, 1 - 10**-1.5, 0.99])
    trials = tune.sample(space, getkey(), 25)
    # random search tries as many distinct values as trials; the 5 x 5 grid only 5
    assert len({t["learning_rate"] for t in trials}) == 25
    assert len({t["learning_rate"] for t in tune.grid(space, 5)}) == 5


def test_narrow_on_each_scale():
    space = {
        "learning_rate": tune.LogUniform(1e-4, 1.0),
        "beta": tune.BetaLogScale(0.9, 0.999),
        "n_units": tune.UniformInt(1, 100),
        "act": tune.Choice(("relu", "tanh")),
        "epochs": 3,
    }
    best = [
        {"learning_rate": 1e-3, "beta": 0.99, "n_units": 10, "act": "relu"},
        {"learning_rate": 1e-2, "beta": 0.9, "n_units": 20, "act": "relu"},
    ]
    new = tune.narrow(space, best, margin=0.25)
    # log10 span [-3, -2] padded by a quarter of the old 4 decades: [-4, -1]
    np.testing.assert_allclose([new["learning_rate"].low, new["learning_rate"].high], [1e-4, 0.1])
    # log10(1 - beta) span [-2, -1] padded by 0.5 decade, clipped to [-3, -1]: beta in [0.9, 0.99684]
    np.testing.assert_allclose([new["beta"].low, new["beta"].high], [0.9, 1 - 10**-2.5])
    assert (new["n_units"].low, new["n_units"].high) == (1, 45)
    assert new["act"].options == ("relu",) and new["epochs"] == 3


# --------------------------------------------------------------------------------------------------
# train_many equals fit


@pytest.fixture(scope="module")
def moons():
    X, Y = data.make_moons(jax.random.key(0), 60, noise=0.25)
    return X[:48], Y[:48], X[48:], Y[48:]


def assert_matches_fit(many, i, config, X, Y, dev, fit_kwargs):
    ref = train.fit(config, X, Y, key=fit_kwargs.pop("key"), dev=dev, progress=False, **fit_kwargs)
    hist = jax.tree.map(lambda h: h[i], many.history)
    for name in train.History._fields:
        np.testing.assert_allclose(
            getattr(hist, name), getattr(ref.history, name), rtol=1e-5, atol=1e-6, err_msg=name
        )
    state = many.state(i)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.state.params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(
        jax.tree.leaves(state.model_state), jax.tree.leaves(ref.state.model_state)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(state.step) == int(ref.state.step) and int(state.epoch) == int(ref.state.epoch)


def _factory(name, v):
    """The optimizer factory with model ``i``'s betas and epsilon, as fit takes it."""
    if name == "gd":
        return tune.optim.gd
    if name == "momentum":
        return lambda lr: tune.optim.momentum(lr, beta=v.get("beta", 0.9))
    if name == "rmsprop":
        return lambda lr: tune.optim.rmsprop(
            lr, beta=v.get("beta", 0.9), epsilon=v.get("epsilon", 1e-8)
        )
    return lambda lr: tune.optim.adam(lr, beta1=v.get("beta1", 0.9), beta2=v.get("beta2", 0.999))


CASES = {
    "momentum_minibatch_dropout_l2_decay": (
        MLP((2, 6, 4, 1), keep_probs=(0.8, 0.9)),
        dict(optimizer="momentum", batch_size=16),
        dict(lambd=[0.3, 1.0], beta=[0.8, 0.95], decay_rate=[0.5, 1.0]),
    ),
    "rmsprop_batchnorm_remainder": (
        MLP((2, 6, 4, 1), batchnorm=True),
        dict(optimizer="rmsprop", batch_size=20),
        dict(beta=[0.99, 0.5], epsilon=[1e-6, 1e-4]),
    ),
    "adam_softmax_l1_keep_probs": (
        MLP((2, 5, 3), output="softmax", keep_probs=1.0),
        dict(optimizer="adam", batch_size=16),
        dict(
            l1=[0.1, 0.2],
            keep_probs=[0.7, 0.9],
            beta1=[0.8, 0.95],
            beta2=[0.99, 0.9],
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_many_equals_separate_fits(case, moons):
    config, shared, per_model = CASES[case]
    X, Y, X_dev, Y_dev = moons
    if config.output == "softmax":  # three classes from the moons' labels and a sign
        Y = Y.astype(jnp.int32) + (X[:, 1] > 0.25).astype(jnp.int32)
        Y_dev = Y_dev.astype(jnp.int32) + (X_dev[:, 1] > 0.25).astype(jnp.int32)
    keys = jax.random.split(jax.random.key(3), 2)
    lrs = [0.01, 0.05]
    many = tune.train_many(
        config,
        X,
        Y,
        keys=keys,
        learning_rate=lrs,
        epochs=4,
        dev=(X_dev, Y_dev),
        **shared,
        **per_model,
    )
    assert many.history.cost.shape == (2, 4) and many.params[0]["W"].shape[0] == 2
    for i in range(2):
        v = {k: vals[i] for k, vals in per_model.items()}
        opt = _factory(shared["optimizer"], v)
        decay = v.get("decay_rate", 0.0)
        schedule = (lambda lr0, d=decay: schedules.inverse_time_decay(lr0, d)) if decay else None
        kp = v.get("keep_probs")
        fit_kwargs = dict(
            key=keys[i],
            optimizer=opt,
            learning_rate=lrs[i],
            epochs=4,
            batch_size=shared["batch_size"],
            lambd=v.get("lambd", 0.0),
            l1=v.get("l1", 0.0),
            keep_probs=None if kp is None else (kp,) * (config.n_layers - 1),
            schedule=schedule,
        )
        assert_matches_fit(many, i, config, X, Y, (X_dev, Y_dev), fit_kwargs)


def test_mixed_sizes_are_grouped_and_match_fit(moons):
    X, Y, X_dev, Y_dev = moons
    configs = [MLP((2, 4, 1)), MLP((2, 7, 3, 1)), MLP((2, 4, 1))]
    keys = jax.random.split(jax.random.key(9), 3)
    lrs = [0.01, 0.02, 0.03]
    many = tune.train_many(
        configs, X, Y, keys=keys, optimizer="adam", learning_rate=lrs, epochs=3, batch_size=16
    )
    assert [g.config for g in many.groups] == [configs[0], configs[1]]
    assert [g.indices.tolist() for g in many.groups] == [[0, 2], [1]]
    with pytest.raises(ValueError, match="2 distinct model"):
        _ = many.params
    for i in range(3):
        kw = dict(key=keys[i], optimizer="adam", learning_rate=lrs[i], epochs=3, batch_size=16)
        assert_matches_fit(many, i, configs[i], X, Y, None, kw)


def test_a_diverging_model_does_not_spoil_the_others(moons):
    X, Y, _, _ = moons
    X = X * 100.0  # badly scaled inputs: a huge rate overflows within a few steps
    keys = jax.random.split(jax.random.key(4), 3)
    lrs = [0.001, 1e30, 0.002]
    many = tune.train_many(
        MLP((2, 6, 1)), X, Y, keys=keys, optimizer="gd", learning_rate=lrs, epochs=6
    )
    assert many.diverged_epoch[1] >= 0 and many.diverged_epoch[0] == many.diverged_epoch[2] == -1
    d = int(many.diverged_epoch[1])
    assert np.all(np.isnan(many.history.cost[1, d:])) and np.all(
        np.isfinite(many.history.cost[[0, 2]])
    )
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(many.state(1).params))
    for i in (0, 2):
        kw = dict(key=keys[i], optimizer="gd", learning_rate=lrs[i], epochs=6)
        assert_matches_fit(many, i, MLP((2, 6, 1)), X, Y, None, kw)


def test_chunks_and_eval_every_give_the_same_models(moons):
    X, Y, X_dev, Y_dev = moons
    keys = jax.random.split(jax.random.key(2), 5)
    kw = dict(keys=keys, optimizer="adam", learning_rate=np.geomspace(1e-3, 1e-1, 5), epochs=4)
    whole = tune.train_many(MLP((2, 5, 1)), X, Y, dev=(X_dev, Y_dev), **kw)
    chunked = tune.train_many(
        MLP((2, 5, 1)), X, Y, dev=(X_dev, Y_dev), chunk_size=2, eval_every=2, **kw
    )
    np.testing.assert_allclose(chunked.params[0]["W"], whole.params[0]["W"], rtol=1e-6)
    np.testing.assert_allclose(chunked.history.cost, whole.history.cost, rtol=1e-6)
    assert np.all(np.isnan(chunked.history.dev_accuracy[:, 0::2]))
    np.testing.assert_allclose(
        chunked.history.dev_accuracy[:, 1::2], whole.history.dev_accuracy[:, 1::2]
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(keys=None), TypeError, "one PRNG key per model"),
        (dict(learning_rate=[0.1, 0.2]), ValueError, "one value per model"),
        (dict(learning_rate=-1.0), ValueError, "learning_rate must be >= 0"),
        (dict(beta1=1.0), ValueError, "beta1 must be in"),
        (dict(optimizer="sgd"), ValueError, "optimizer must be one of"),
        (dict(config=[MLP((2, 3, 1))]), ValueError, "one per model"),
        (dict(keep_probs=[0.5, 1.2, 1.0]), ValueError, "keep_probs"),
        (dict(epochs=0), ValueError, "epochs"),
    ],
)
def test_train_many_validates_arguments(kwargs, error, match, moons):
    X, Y, _, _ = moons
    args = dict(config=MLP((2, 3, 1)), keys=jax.random.split(jax.random.key(0), 3), epochs=1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        tune.train_many(args.pop("config"), X, Y, **args)


# --------------------------------------------------------------------------------------------------
# Searches


def test_random_search_records_and_ranking(moons):
    X, Y, X_dev, Y_dev = moons
    space = {
        "learning_rate": tune.LogUniform(1e-3, 1.0),
        "n_units": tune.UniformInt(3, 4),
        "beta1": 0.9,
    }
    result = tune.random_search(
        space,
        X,
        Y,
        dev=(X_dev, Y_dev),
        key=jax.random.key(1),
        n_trials=6,
        config=MLP((2, 8, 1)),
        epochs=5,
        batch_size=16,
    )
    assert len(result.trials) == 6 and sorted(t["rank"] for t in result.trials) == list(range(1, 7))
    for t in result.trials:
        assert set(t) >= {"learning_rate", "n_units", "beta1", "hidden", "rank", "round"}
        assert t["hidden"] == (t["n_units"],) and 1e-3 <= t["learning_rate"] <= 1.0
    # the search sampled with its key and trained with train_many: redo one trial with fit
    keys = jax.random.split(jax.random.split(jax.random.key(1))[1], 6)
    t = result.trials[3]
    ref = train.fit(
        MLP((2, t["n_units"], 1)),
        X,
        Y,
        key=keys[3],
        learning_rate=t["learning_rate"],
        epochs=5,
        batch_size=16,
        dev=(X_dev, Y_dev),
        progress=False,
    )
    np.testing.assert_allclose(t["dev_accuracy"], ref.history.dev_accuracy[-1], rtol=1e-6)
    np.testing.assert_allclose(t["dev_cost"], ref.history.dev_cost[-1], rtol=1e-5)
    # ranked by dev accuracy, ties by dev cost
    ranked = result.ranked()
    pairs = [(-r["dev_accuracy"], r["dev_cost"]) for r in ranked]
    assert pairs == sorted(pairs) and result.best is ranked[0]
    assert "learning_rate" in result.table() and len(result.table(top=3).splitlines()) == 4
    state = result.state(result.best)
    assert state.params[0]["W"].shape == (2, result.best["n_units"])


def test_coarse_to_fine_narrows_around_the_best(moons):
    X, Y, X_dev, Y_dev = moons
    space = {"learning_rate": tune.LogUniform(1e-4, 1.0), "beta": tune.BetaLogScale(0.8, 0.999)}
    result = tune.coarse_to_fine(
        space,
        X,
        Y,
        dev=(X_dev, Y_dev),
        key=jax.random.key(7),
        n_trials=8,
        rounds=2,
        keep_top=2,
        margin=0.05,
        config=MLP((2, 6, 1)),
        epochs=5,
        optimizer="momentum",
    )
    assert len(result.trials) == 16 and {t["round"] for t in result.trials} == {1, 2}
    first, second = result.spaces
    best_first = min((t for t in result.trials if t["round"] == 1), key=lambda t: t["rank"])
    for name in space:
        s0, s1 = first[name], second[name]
        assert s0.low <= s1.low < s1.high <= s0.high
        assert s1.low <= best_first[name] <= s1.high
        assert s1.high - s1.low < s0.high - s0.low  # actually narrower
    for t in result.trials:
        if t["round"] == 2:
            assert all(second[n].low <= t[n] <= second[n].high for n in space)
    assert result.best["rank"] == 1 and result.space is second


def test_search_rejects_unknown_names_and_duplicates(moons):
    X, Y, X_dev, Y_dev = moons
    common = dict(dev=(X_dev, Y_dev), key=jax.random.key(0), n_trials=2, config=MLP((2, 3, 1)))
    with pytest.raises(ValueError, match="'batch' is not a hyperparameter"):
        tune.random_search({"batch": tune.UniformInt(1, 4)}, X, Y, epochs=1, **common)
    with pytest.raises(ValueError, match="both in the space and a fixed"):
        tune.random_search(
            {"lambd": tune.LogUniform(1e-3, 1.0)}, X, Y, epochs=1, lambd=0.1, **common
        )


# --------------------------------------------------------------------------------------------------
# Panda


def test_panda_changes_the_learning_rate_without_recompiling(moons):
    X, Y, X_dev, Y_dev = moons
    config = MLP((2, 6, 1), keep_probs=0.9)
    kw = dict(key=jax.random.key(8), optimizer="momentum", batch_size=16)
    panda = tune.Panda(config, X, Y, learning_rate=0.05, dev=(X_dev, Y_dev), **kw)
    panda.run(epochs=3)
    compiled = train.run_epochs._cache_size()
    panda.set(learning_rate=0.5, lambd=0.2, keep_probs=(0.7,))
    second = panda.run(epochs=3)
    assert train.run_epochs._cache_size() == compiled  # no new compilation
    np.testing.assert_allclose(second.learning_rate, 0.5)
    assert panda.epoch == 6 and panda.history.cost.shape == (6,)
    # the same as fit for 3 epochs, then fit from that state with the new values
    first = train.fit(
        config, X, Y, learning_rate=0.05, dev=(X_dev, Y_dev), epochs=3, progress=False, **kw
    )
    ref = train.fit(
        config,
        X,
        Y,
        learning_rate=0.5,
        lambd=0.2,
        keep_probs=(0.7,),
        dev=(X_dev, Y_dev),
        epochs=3,
        state=first.state,
        progress=False,
        **kw,
    )
    np.testing.assert_allclose(second.cost, ref.history.cost, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree.leaves(panda.params), jax.tree.leaves(ref.state.params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # and the new rate took effect: continuing at the old rate gives other parameters
    old = train.fit(
        config, X, Y, learning_rate=0.05, epochs=3, state=first.state, progress=False, **kw
    )
    assert not np.allclose(old.state.params[0]["W"], panda.params[0]["W"], atol=1e-4)


def test_panda_validates():
    X, Y = data.make_moons(jax.random.key(0), 20)
    panda = tune.Panda(MLP((2, 3, 1)), X, Y, key=jax.random.key(0))
    with pytest.raises(ValueError, match="keep_probs can change only"):
        panda.set(keep_probs=0.5)
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        panda.set(learning_rate=-1.0)
    with pytest.raises(TypeError, match="epochs must be an int"):
        panda.run(epochs=2.5)
