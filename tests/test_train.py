import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fjdl import data, losses, model, optim, schedules, train
from fjdl.model import MLP


@pytest.fixture(scope="module")
def moons():
    X, Y = data.make_moons(jax.random.key(0), 148, noise=0.2)
    return np.asarray(X), np.asarray(Y)


def _manual_run(config, X, Y, key, opt, epochs, batch_size, lambd=0.0):
    """The same run written step by step in Python, from fjdl's documented key scheme."""
    state = train.init_state(key, config, lambda lr: opt, 0.0)
    hp = train.make_hyperparams(config, 0.0, lambd)
    m = X.shape[0]
    costs = []
    for epoch in range(epochs):
        perm = jax.random.permutation(
            jax.random.fold_in(jax.random.fold_in(state.key, 0), epoch), m
        )
        if batch_size >= m:
            perm = jnp.arange(m)
        total = 0.0
        for start in range(0, m, batch_size):
            idx = perm[start : start + batch_size]
            state, j = train.train_step(config, opt, state, hp, X[idx], Y[idx])
            total += float(j) * len(idx)
        costs.append(total / m)
        state = state._replace(epoch=state.epoch + 1)
    return state, np.array(costs)


def test_fit_equals_the_step_by_step_loop(moons):
    X, Y = moons
    config = MLP((2, 5, 3, 1), keep_probs=0.9)
    opt = optim.adam(0.01)
    key = jax.random.key(4)
    result = train.fit(config, X, Y, key=key, optimizer=opt, epochs=3, batch_size=64, lambd=0.1)
    state, costs = _manual_run(config, X, Y, key, opt, 3, 64, lambd=0.1)
    chex.assert_trees_all_close(result.state.params, state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.history.cost, costs, rtol=1e-5)
    assert int(result.state.step) == 3 * 3 and int(result.state.epoch) == 3


def test_same_key_same_history_bit_for_bit(moons):
    X, Y = moons
    config = MLP((2, 8, 1), keep_probs=0.8)
    kwargs = dict(key=jax.random.key(1), learning_rate=0.01, epochs=20, batch_size=32)
    a = train.fit(config, X, Y, **kwargs)
    b = train.fit(config, X, Y, **kwargs)
    chex.assert_trees_all_equal(a.history, b.history)
    chex.assert_trees_all_equal(a.state, b.state)
    c = train.fit(config, X, Y, **{**kwargs, "key": jax.random.key(2)})
    assert not np.array_equal(a.history.cost, c.history.cost)


def test_fit_compiles_once(moons):
    X, Y = moons
    config = MLP((2, 4, 1))
    run = train.run_epochs
    before = run._cache_size()
    for lr in (0.01, 0.02, 0.05):  # new hyperparameters, same program
        train.fit(
            config, X, Y, key=jax.random.key(0), learning_rate=lr, lambd=lr, epochs=5, batch_size=50
        )
    assert run._cache_size() == before + 1


def test_fit_with_optax_optimizer_matches_fjdl(moons):
    X, Y = moons
    config = MLP((2, 6, 1))
    # float64, so that the comparison sees the update rules and not float32 rounding.
    with (
        jax.enable_x64(True),
        jax.numpy_dtype_promotion("standard"),
    ):  # optax mixes int32 and floats
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        kw = dict(key=jax.random.key(3), epochs=10, batch_size=64)
        ours = train.fit(config, X64, Y64, optimizer="adam", learning_rate=0.01, **kw)
        theirs = train.fit(config, X64, Y64, optimizer=optax.adam(0.01), **kw)
        assert ours.state.params[0]["W"].dtype == jnp.float64
    chex.assert_trees_all_close(ours.state.params, theirs.state.params, rtol=1e-10, atol=1e-12)


def test_schedule_is_stepped_per_epoch(moons):
    X, Y = moons
    config = MLP((2, 4, 1))
    result = train.fit(
        config,
        X,
        Y,
        key=jax.random.key(0),
        optimizer="gd",
        learning_rate=0.5,
        epochs=6,
        batch_size=64,
        schedule=lambda lr0: schedules.inverse_time_decay(lr0, 1.0, time_interval=2),
    )
    np.testing.assert_allclose(
        result.history.learning_rate, 0.5 / (1 + np.array([0, 0, 1, 1, 2, 2]))
    )


def test_full_batch_gd_is_the_course_update(moons):
    X, Y = moons
    config = MLP((2, 3, 1))
    params, state = model.init(jax.random.key(9), config)
    result = train.fit(
        config,
        X,
        Y,
        key=jax.random.key(0),
        optimizer="gd",
        learning_rate=0.1,
        epochs=4,
        params=params,
    )
    p = params
    for _ in range(4):
        g = jax.grad(lambda p: losses.binary_cross_entropy(model.apply(config, p, state, X)[0], Y))(
            p
        )
        p = jax.tree.map(lambda w, d: w - 0.1 * d, p, g)
    chex.assert_trees_all_close(result.state.params, p, rtol=1e-5, atol=1e-6)


def test_remainder_batch_counts_once(moons):
    X, Y = moons  # 148 examples: batches of 64, 64 and 20
    config = MLP((2, 3, 1))
    result = train.fit(
        config,
        X,
        Y,
        key=jax.random.key(0),
        optimizer="gd",
        learning_rate=0.0,
        epochs=1,
        batch_size=64,
    )
    assert int(result.state.step) == 3
    # With a zero learning rate every batch sees the initial parameters: the epoch cost is the mean.
    params, state = model.init(jax.random.split(jax.random.key(0))[0], config)
    full = losses.binary_cross_entropy(model.apply(config, params, state, X)[0], jnp.asarray(Y))
    np.testing.assert_allclose(result.history.cost[0], full, rtol=1e-6)


def test_early_stopping_restores_best_dev_cost(moons):
    X, Y = moons
    X_dev, Y_dev = data.make_moons(jax.random.key(7), 60, noise=0.4)
    config = MLP((2, 64, 64, 1))
    result = train.fit(
        config,
        X,
        Y,
        key=jax.random.key(0),
        learning_rate=0.05,
        epochs=300,
        batch_size=32,
        dev=(X_dev, Y_dev),
        patience=10,
    )
    assert result.stopped_epoch is not None and result.stopped_epoch < 299
    h = result.history
    assert len(h.cost) == result.stopped_epoch + 1
    best = int(np.argmin(h.dev_cost))
    assert result.best_epoch == best
    assert result.stopped_epoch - best == 10
    restored = train.evaluate(config, result.state.params, result.state.model_state, X_dev, Y_dev)
    np.testing.assert_allclose(restored["cost"], h.dev_cost[best], rtol=1e-5)


def test_divergence_stops_with_the_last_finite_state(moons):
    X, Y = moons
    config = MLP((2, 16, 1))
    with pytest.raises(train.TrainingDiverged, match="diverged at epoch") as info:
        train.fit(
            config, X * 1e3, Y, key=jax.random.key(0), optimizer="gd", learning_rate=1e30, epochs=50
        )
    err = info.value
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(err.state.params))
    assert len(err.history.cost) == err.epoch
    assert int(err.state.epoch) == err.epoch
    stopped = train.fit(
        config,
        X * 1e3,
        Y,
        key=jax.random.key(0),
        optimizer="gd",
        learning_rate=1e30,
        epochs=50,
        on_divergence="stop",
    )
    chex.assert_trees_all_equal(stopped.state.params, err.state.params)


def test_batchnorm_and_softmax_train():
    X, Y = data.make_spirals(jax.random.key(0), 300, n_classes=3, noise=0.1)
    config = MLP((2, 32, 32, 3), output="softmax", batchnorm=True)
    result = train.fit(
        config, X, Y, key=jax.random.key(1), learning_rate=0.01, epochs=100, batch_size=64
    )
    assert result.history.train_accuracy[-1] > result.history.train_accuracy[0]
    assert result.history.train_accuracy[-1] > 0.8
    assert not np.allclose(result.state.model_state[0]["mean"], 0.0)


def test_continue_from_state_equals_one_run(moons):
    X, Y = moons
    config = MLP((2, 5, 1))
    kw = dict(learning_rate=0.01, batch_size=50)
    whole = train.fit(config, X, Y, key=jax.random.key(0), epochs=6, **kw)
    half = train.fit(config, X, Y, key=jax.random.key(0), epochs=3, **kw)
    rest = train.fit(config, X, Y, key=jax.random.key(0), epochs=3, state=half.state, **kw)
    chex.assert_trees_all_equal(rest.state, whole.state)


def test_vmap_over_learning_rates_equals_separate_runs(moons):
    X, Y = moons
    config = MLP((2, 4, 1))
    key = jax.random.key(0)
    lrs = jnp.array([0.001, 0.01, 0.1])
    run = train.prepare(config, X, Y, learning_rate=0.01, batch_size=64, epochs=4)
    state0 = train.start(run.spec.optimizer, run.spec.rate, run.hp, key, run.init)

    def one(lr):
        hp = run.hp._replace(learning_rate=lr)
        loop = train.run_epochs(run.spec, hp, run.data, train.start_loop(state0, 4))
        return loop.state.params, loop.history.cost

    params, costs = jax.vmap(one)(lrs)
    for i, lr in enumerate([0.001, 0.01, 0.1]):
        r = train.fit(config, X, Y, key=key, learning_rate=lr, epochs=4, batch_size=64)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], params), r.state.params, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(costs[i], r.history.cost, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=0), "epochs"),
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(keep_probs=1.5), "keep_probs"),
        (dict(patience=3), "dev"),
        (dict(optimizer="sgdx"), "optimizer"),
        (dict(lambd=-1.0), "lambd"),
    ],
)
def test_bad_arguments(moons, kwargs, match):
    X, Y = moons
    with pytest.raises((ValueError, TypeError), match=match):
        train.fit(MLP((2, 3, 1)), X, Y, key=jax.random.key(0), **{"epochs": 2, **kwargs})


def test_bad_data():
    config = MLP((2, 3, 1))
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="empty"):
        train.fit(config, np.zeros((0, 2), np.float32), np.zeros(0, np.float32), key=k)
    with pytest.raises(ValueError, match=r"shape \(m, 2\)"):
        train.fit(config, np.zeros((5, 3), np.float32), np.zeros(5, np.float32), key=k)
    with pytest.raises(ValueError, match="binary labels"):
        train.fit(config, np.zeros((2, 2), np.float32), np.array([0.0, 2.0], np.float32), key=k)
    with pytest.raises(ValueError, match="labels"):
        train.fit(config, np.zeros((3, 2), np.float32), np.zeros(2, np.float32), key=k)
    sm = MLP((2, 3, 3), output="softmax")
    with pytest.raises(ValueError, match=r"class labels in \[0, 3\)"):
        train.fit(sm, np.zeros((2, 2), np.float32), np.array([0, 3]), key=k)


def test_progress_is_reported_between_segments_and_changes_nothing(moons):
    """A progress function is called from the host between segments of one compiled program:
    about 100 calls, increasing to ``epochs``, the same results, and nothing new compiled."""
    X, Y = moons
    kw = dict(key=jax.random.key(0), epochs=250, batch_size=32)
    quiet = train.fit(MLP((2, 3, 1)), X, Y, progress=False, **kw)
    compiled = train.run_epochs._cache_size()
    seen = []
    shown = train.fit(MLP((2, 3, 1)), X, Y, progress=seen.append, **kw)
    assert train.run_epochs._cache_size() == compiled
    assert seen == sorted(seen) and seen[-1] == 250 and 50 <= len(seen) <= 100
    chex.assert_trees_all_equal(shown.state, quiet.state)
    np.testing.assert_array_equal(shown.history.cost, quiet.history.cost)


def test_progress_stops_with_early_stopping(moons):
    X, Y = moons
    seen = []
    r = train.fit(
        MLP((2, 3, 1)), X[:100], Y[:100], key=jax.random.key(0), epochs=400, learning_rate=0.05,
        dev=(X[100:], Y[100:]), patience=2, progress=seen.append,
    )
    assert r.stopped_epoch is not None and seen[-1] < 400


# ---- epochs run in chunks between evaluations keep fit's behaviour ------------------------------


@pytest.fixture(scope="module")
def moons120():
    X, Y = data.make_moons(jax.random.key(0), 120, noise=0.2)
    return np.asarray(X), np.asarray(Y)


@pytest.mark.parametrize("eval_every, chunk", [(1, 1), (7, 7), (50, 50), (200, 100), (97, 97)])
def test_chunk_size_divides_eval_every(eval_every, chunk):
    assert train.chunk_size(eval_every, 1000) == chunk
    assert eval_every % train.chunk_size(eval_every, 1000) == 0
    assert train.chunk_size(50, 20) == 10  # never longer than the run


def _per_epoch_fit(monkeypatch, *args, **kwargs):
    """fit with chunks switched off: the reference per-epoch loop."""
    with monkeypatch.context() as mp:
        mp.setattr(train._loop, "chunk_size", lambda eval_every, epochs: 1)
        train.run_epochs.clear_cache()
        try:
            return train.fit(*args, **kwargs)
        finally:
            train.run_epochs.clear_cache()


def test_chunked_run_equals_the_per_epoch_loop(moons120, monkeypatch):
    X, Y = moons120
    config = MLP((2, 6, 3, 1))
    kw = dict(key=jax.random.key(5), optimizer="gd", learning_rate=0.2, lambd=0.3, epochs=130)
    fast = train.fit(config, X, Y, eval_every=25, dev=(X[:40], Y[:40]), **kw)
    slow = _per_epoch_fit(monkeypatch, config, X, Y, eval_every=25, dev=(X[:40], Y[:40]), **kw)
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-5, atol=1e-6)
    assert int(fast.state.step) == int(slow.state.step) == 130
    assert int(fast.state.epoch) == 130
    for a, b in zip(fast.history, slow.history):
        assert a.shape == (130,)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))  # same epochs evaluated
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    evaluated = np.flatnonzero(~np.isnan(fast.history.dev_cost))
    np.testing.assert_array_equal(evaluated, [24, 49, 74, 99, 124])
    # Same key, same run, bit for bit.
    again = train.fit(config, X, Y, eval_every=25, dev=(X[:40], Y[:40]), **kw)
    chex.assert_trees_all_equal(again.state, fast.state)
    chex.assert_trees_all_equal(again.history, fast.history)


def test_chunked_run_with_minibatches_and_dropout(moons120, monkeypatch):
    X, Y = moons120
    config = MLP((2, 8, 1), keep_probs=0.8)
    kw = dict(key=jax.random.key(6), optimizer="adam", learning_rate=0.01, epochs=12, batch_size=32)
    fast = train.fit(config, X, Y, eval_every=4, **kw)
    slow = _per_epoch_fit(monkeypatch, config, X, Y, eval_every=4, **kw)
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.history.cost, slow.history.cost, rtol=1e-5)
    np.testing.assert_allclose(fast.history.learning_rate, 0.01)


@pytest.mark.parametrize("eval_every", [4, 100])
def test_divergence_inside_a_chunk_keeps_the_last_finite_state(moons120, monkeypatch, eval_every):
    X, _ = moons120
    # Large inputs and a large step: gradient descent blows up at epoch 6, in the middle of the
    # second chunk of 4 epochs (eval_every=4) or inside the first one (eval_every=100).
    config = MLP((2, 4, 1), activation="leaky_relu", output="linear")
    args = (config, 10 * X, X[:, 0] + X[:, 1])
    kw = dict(key=jax.random.key(7), optimizer="gd", learning_rate=0.018, epochs=400)
    with pytest.raises(train.TrainingDiverged) as fast:
        train.fit(*args, eval_every=eval_every, **kw)
    with pytest.raises(train.TrainingDiverged) as slow:
        _per_epoch_fit(monkeypatch, *args, eval_every=eval_every, **kw)
    fast, slow = fast.value, slow.value
    assert fast.epoch == slow.epoch < 400
    assert len(fast.history.cost) == fast.epoch
    assert np.all(np.isfinite(fast.history.cost))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(fast.state.params))
    assert int(fast.state.epoch) == fast.epoch  # the state before the epoch that diverged
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-4, atol=1e-5)


def test_early_stopping_on_chunk_ends(moons120, monkeypatch):
    X, Y = moons120
    config = MLP((2, 12, 1))
    kw = dict(
        key=jax.random.key(8),
        optimizer="adam",
        learning_rate=0.05,
        epochs=300,
        eval_every=10,
        dev=(X[:30], Y[:30]),
        patience=3,
    )
    fast = train.fit(config, X[30:], Y[30:], **kw)
    slow = _per_epoch_fit(monkeypatch, config, X[30:], Y[30:], **kw)
    assert fast.best_epoch == slow.best_epoch
    assert fast.stopped_epoch == slow.stopped_epoch
    assert fast.best_epoch is not None and (fast.best_epoch + 1) % 10 == 0
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-5, atol=1e-6)


# ---- optax in fit: factories, schedules, ready transformations ---------------------------------


FIT = dict(epochs=4, batch_size=50, progress=False)


def test_optax_factories_train_as_fjdl_optimizers_do(moons):
    X, Y = moons
    key = jax.random.key(3)
    fit = functools.partial(train.fit, MLP((2, 5, 1)), X, Y, key=key, learning_rate=0.01, **FIT)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 and floats
        with_optax = fit(optimizer=optax.adam)
        sgd = fit(optimizer=functools.partial(optax.sgd, momentum=0.9))
    with_fjdl = fit(optimizer=optim.adam)
    chex.assert_trees_all_close(
        with_optax.state.params, with_fjdl.state.params, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(with_optax.history.learning_rate, np.float32([0.01] * 4))
    ours = fit(optimizer=functools.partial(optim.momentum, heavy_ball=True))
    chex.assert_trees_all_close(sgd.state.params, ours.state.params, rtol=1e-5, atol=1e-6)


def test_a_schedule_of_the_step_as_learning_rate(moons):
    X, Y = moons
    steps = 3  # 148 examples in batches of 50
    for schedule in (
        optax.exponential_decay(0.02, 2, 0.5),
        schedules.inverse_time_decay(0.02, 0.3),
    ):
        r = train.fit(MLP((2, 5, 1)), X, Y, key=jax.random.key(0), learning_rate=schedule, **FIT)
        want = [float(schedule(e * steps)) for e in range(4)]
        np.testing.assert_allclose(r.history.learning_rate, want, rtol=1e-6)
        # the optimizer ran the schedule step by step: the same as building it with the schedule
        opt = optim.adam(schedule)
        ready = train.fit(MLP((2, 5, 1)), X, Y, key=jax.random.key(0), optimizer=opt, **FIT)
        chex.assert_trees_all_close(r.state.params, ready.state.params, rtol=1e-6)
    with pytest.raises(ValueError, match="learning_rate is already a schedule"):
        train.fit(
            MLP((2, 5, 1)),
            X,
            Y,
            key=jax.random.key(0),
            learning_rate=schedule,
            schedule=lambda lr0: schedules.exponential_decay(lr0),
            **FIT,
        )


def test_a_schedule_of_the_epoch_as_schedule(moons):
    X, Y = moons
    epoch_schedule = optax.exponential_decay(0.02, 1, 0.5)  # epoch -> lr, replaces learning_rate
    r = train.fit(MLP((2, 5, 1)), X, Y, key=jax.random.key(0), schedule=epoch_schedule, **FIT)
    np.testing.assert_allclose(r.history.learning_rate, [0.02, 0.01, 0.005, 0.0025], rtol=1e-6)
    factory = lambda lr0: schedules.exponential_decay(lr0, base=0.5)  # noqa: E731
    f = train.fit(
        MLP((2, 5, 1)), X, Y, key=jax.random.key(0), learning_rate=0.02, schedule=factory, **FIT
    )
    np.testing.assert_allclose(f.history.learning_rate, r.history.learning_rate, rtol=1e-6)
    chex.assert_trees_all_close(f.state.params, r.state.params, rtol=1e-6)


def test_a_ready_transformation_records_nan_as_its_rate(moons):
    X, Y = moons
    opt = optax.adam(optax.linear_schedule(0.01, 0.0, 12))
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 and floats
        r = train.fit(MLP((2, 5, 1)), X, Y, key=jax.random.key(0), optimizer=opt, **FIT)
    assert r.history.learning_rate.shape == (4,) and np.all(np.isnan(r.history.learning_rate))
    assert np.all(np.isfinite(r.history.cost))


def test_fjdl_optimizers_are_optax_transformations():
    from flax.training import train_state

    params = {"w": jnp.ones(3)}
    for opt in (optim.gd(0.1), optim.momentum(0.1), optim.rmsprop(0.1), optim.adam(0.1)):
        assert isinstance(opt, optax.GradientTransformation)
        chained = optax.chain(optax.clip_by_global_norm(1.0), opt)
        updates, _ = chained.update(params, chained.init(params), params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
    injected = optax.inject_hyperparams(optim.adam)(learning_rate=0.1)
    state = injected.init(params)
    updates, state = jax.jit(injected.update)(params, state, params)
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-5)
    ts = train_state.TrainState.create(apply_fn=None, params=params, tx=optim.momentum(0.1))
    np.testing.assert_allclose(ts.apply_gradients(grads=params).params["w"], 0.99, rtol=1e-6)


# ---- one compilation per shape: every numeric hyperparameter is an array --------------------------


@pytest.mark.parametrize("optimizer", ["momentum", "rmsprop", "adam"])
def test_new_hyperparameter_values_key_and_data_compile_nothing(optimizer):
    X, Y = data.make_moons(jax.random.key(0), 150, noise=0.2)
    X2, Y2 = data.make_moons(jax.random.key(9), 150, noise=0.3)
    common = dict(optimizer=optimizer, epochs=3, batch_size=40, patience=2, progress=False)
    first = dict(
        key=jax.random.key(1),
        learning_rate=0.01,
        beta=0.9,
        beta1=0.9,
        beta2=0.999,
        epsilon=1e-8,
        decay_rate=0.5,
        lambd=0.1,
        l1=0.0,
        min_delta=0.0,
        dev=(X2, Y2),
    )
    second = dict(
        key=jax.random.key(2),
        learning_rate=0.02,
        beta=0.8,
        beta1=0.8,
        beta2=0.99,
        epsilon=1e-6,
        decay_rate=0.1,
        lambd=0.3,
        l1=0.01,
        min_delta=0.01,
        dev=(X, Y),
    )
    if optimizer != "adam":
        for d in (first, second):
            del d["beta1"], d["beta2"]
    if optimizer != "rmsprop" and optimizer != "adam":
        for d in (first, second):
            del d["epsilon"]
    if optimizer == "adam":
        for d in (first, second):
            del d["beta"]
    train.fit(MLP((2, 4, 1)), X, Y, **common, **first)
    before = train.run_epochs._cache_size()
    r = train.fit(MLP((2, 4, 1)), X2, Y2, **common, **second)
    # Decay off (no decay_rate) is the decay at rate 0: the same program.
    train.fit(MLP((2, 4, 1)), X2, Y2, **common, **{**second, "decay_rate": None})
    assert train.run_epochs._cache_size() == before
    np.testing.assert_allclose(r.history.learning_rate[:2], [0.02, 0.02 / 1.1], rtol=1e-6)


def test_optimizer_keywords_equal_the_factory_with_those_values(moons):
    X, Y = moons
    fit = functools.partial(
        train.fit, MLP((2, 5, 1)), X, Y, key=jax.random.key(3), learning_rate=0.01, **FIT
    )
    by_name = fit(optimizer="adam", beta1=0.8, beta2=0.99, epsilon=1e-6)
    factory = fit(optimizer=functools.partial(optim.adam, beta1=0.8, beta2=0.99, epsilon=1e-6))
    chex.assert_trees_all_close(by_name.state.params, factory.state.params, rtol=1e-6, atol=1e-7)
    rms = fit(optimizer="rmsprop", beta=0.7, epsilon=1e-5)
    rms_f = fit(optimizer=functools.partial(optim.rmsprop, beta=0.7, epsilon=1e-5))
    chex.assert_trees_all_close(rms.state.params, rms_f.state.params, rtol=1e-6, atol=1e-7)
    decayed = fit(decay_rate=0.5, decay_interval=2)
    scheduled = fit(schedule=lambda lr0: schedules.inverse_time_decay(lr0, 0.5, 2))
    np.testing.assert_allclose(
        decayed.history.learning_rate, [0.01, 0.01, 0.01 / 1.5, 0.01 / 1.5], rtol=1e-6
    )
    chex.assert_trees_all_close(decayed.state.params, scheduled.state.params, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (
            dict(optimizer=optim.adam, beta1=0.8),
            ValueError,
            "beta1 apply to an optimizer given by name",
        ),
        (
            dict(decay_rate=0.1, schedule=lambda lr0: schedules.exponential_decay(lr0)),
            ValueError,
            "give one",
        ),
        (dict(beta2=1.0), ValueError, r"beta2 must be in \[0, 1\)"),
        (dict(epsilon=0.0), ValueError, "epsilon must be > 0"),
        (dict(decay_rate=-1.0), ValueError, "decay_rate must be >= 0"),
        (dict(decay_rate=0.1, decay_interval=0), ValueError, "decay_interval"),
    ],
)
def test_optimizer_keywords_are_checked(moons, kwargs, exc, match):
    X, Y = moons
    with pytest.raises(exc, match=match):
        train.fit(MLP((2, 5, 1)), X, Y, key=jax.random.key(0), **{**FIT, **kwargs})


def test_bfloat16_hyperparameters_are_numbers():
    from fjdl import losses, nn

    half = jnp.bfloat16(0.5)
    assert nn.dropout(jax.random.key(0), jnp.ones(8, jnp.bfloat16), half).dtype == jnp.bfloat16
    opt = optim.adam(jnp.bfloat16(1e-3))
    updates, _ = opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))
    assert np.all(np.isfinite(updates["w"]))
    params = ({"W": jnp.ones((2, 2))},)
    j = losses.cost(jnp.zeros(2), jnp.ones(2), params, lambd=jnp.bfloat16(0.1))
    assert np.isfinite(float(j))
    with pytest.raises(TypeError, match="lambd must be real"):
        losses.cost(jnp.zeros(2), jnp.ones(2), params, lambd=jnp.complex64(0.1))


def test_a_schedule_of_fjdl_schedules_is_refused_with_a_decay_or_a_ready_transformation(moons):
    X, Y = moons
    schedule = schedules.exponential_decay(0.1, 0.9)
    with pytest.raises(ValueError, match="decay_rate and a schedule"):
        train.fit(MLP((2, 3, 1)), X, Y, key=0, epochs=1, schedule=schedule, decay_rate=0.1)
    with pytest.raises(ValueError, match="needs an optimizer fjdl builds"):
        train.fit(
            MLP((2, 3, 1)), X, Y, key=0, epochs=1, schedule=schedule, optimizer=optax.adam(1e-3)
        )


def test_make_hyperparams_accepts_traced_values():
    config = MLP((2, 3, 1))
    lambds = jnp.array([0.0, 0.5])
    hp = jax.vmap(lambda lambd: train.make_hyperparams(config, 0.01, lambd))(lambds)
    np.testing.assert_array_equal(hp.lambd, lambds)
    assert hp.keep_probs.shape == (2, 1)
