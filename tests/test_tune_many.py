"""train_many is jax.vmap of fit's own loop: widths in one program, optimizers, optax, early
stopping, no recompilation, records (fjdl.tune.many)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fjdl import data, model, schedules, train, tune
from fjdl.model import MLP


@pytest.fixture(scope="module")
def moons():
    X, Y = data.make_moons(jax.random.key(0), 60, noise=0.25)
    return X[:48], Y[:48], X[48:], Y[48:]


def max_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_model_is_fit(many, i, ref, rtol=1e-5, atol=1e-6):
    """Model ``i`` of ``many`` has ``ref``'s history, parameters, state and counts."""
    for name in train.History._fields:
        got, want = getattr(many.history, name)[i], getattr(ref.history, name)
        np.testing.assert_allclose(got[: want.shape[0]], want, rtol=rtol, atol=atol, err_msg=name)
        assert np.all(np.isnan(got[want.shape[0] :])), name  # epochs not run are NaN
    state = many.state(i)
    chex.assert_trees_all_close(state.params, ref.state.params, rtol=rtol, atol=atol)
    chex.assert_trees_all_close(state.model_state, ref.state.model_state, rtol=rtol, atol=atol)
    assert int(state.step) == int(ref.state.step) and int(state.epoch) == int(ref.state.epoch)


# ---- shape search: several widths, one program ----------------------------------------------


def test_widths_train_as_one_padded_model_equal_to_each_narrow_fit(moons):
    """Batch norm and L2, three widths in each of two layers: one group, one compiled program,
    and each model equals fit of its own narrow config."""
    X, Y, Xd, Yd = moons
    configs = [MLP((2, w1, w2, 1), batchnorm=True) for w1, w2 in ((4, 3), (7, 2), (5, 5))]
    keys = jax.random.split(jax.random.key(3), 3)
    lrs = [0.01, 0.02, 0.03]
    kw = dict(lambd=0.5, epochs=5, batch_size=16, dev=(Xd, Yd))
    compiled = tune.run_many._cache_size()
    many = tune.train_many(configs, X, Y, keys=keys, learning_rate=lrs, **kw)
    assert tune.run_many._cache_size() == compiled + 1
    assert len(many.groups) == 1 and many.groups[0].config.sizes == (2, 7, 5, 1)
    for i, c in enumerate(configs):
        ref = train.fit(c, X, Y, key=keys[i], learning_rate=lrs[i], progress=False, **kw)
        assert_model_is_fit(many, i, ref)
        assert many.state(i).params[0]["W"].shape == (2, c.sizes[1])
    # Another mix of widths up to the same widest: nothing new to compile.
    again = [MLP((2, w1, w2, 1), batchnorm=True) for w1, w2 in ((7, 1), (6, 5), (2, 4))]
    tune.train_many(again, X, Y, keys=keys, learning_rate=lrs, **kw)
    assert tune.run_many._cache_size() == compiled + 1
    with pytest.raises(ValueError, match="use .state"):
        _ = many.params


def test_padded_units_get_zero_gradients_and_stay_zero(moons):
    """The proof's premise, checked directly: after training, the padding is still exactly zero
    (so it never influenced the real units), with Adam, L1 and L2."""
    X, Y, _, _ = moons
    configs = [MLP((2, 3, 1)), MLP((2, 6, 1))]
    many = tune.train_many(
        configs, X, Y, keys=jax.random.split(jax.random.key(1), 2), learning_rate=0.05,
        lambd=0.3, l1=0.1, epochs=4, batch_size=16,
    )  # fmt: skip
    W1, b1 = many.groups[0].state.params[0]["W"][0], many.groups[0].state.params[0]["b"][0]
    W2 = many.groups[0].state.params[1]["W"][0]
    assert np.all(W1[:, 3:] == 0) and np.all(b1[3:] == 0) and np.all(W2[3:] == 0)
    assert np.all(W1[:, :3] != 0)


def test_masks_equal_the_narrow_forward_pass(moons):
    X, _, _, _ = moons
    narrow, wide = MLP((2, 3, 4, 1)), MLP((2, 6, 4, 1))
    params, state = model.init(jax.random.key(0), narrow)
    wide_params, wide_state = model.init(jax.random.key(1), wide)
    padded = model.pad(params, wide_params)
    out, _ = model.apply(narrow, params, state, X)
    wide_out, _ = model.apply(
        wide, padded, model.pad_model_state(state, wide_state), X,
        unit_masks=model.unit_masks(narrow, wide),
    )  # fmt: skip
    np.testing.assert_allclose(wide_out, out, rtol=1e-6, atol=1e-6)


def test_dropout_of_padded_models_keeps_each_real_unit_at_its_rate():
    """With dropout, the wide model draws its own masks (not the narrow model's draws): each real
    unit is kept with probability keep_prob, and the padded units stay off. A probe network
    whose output is its hidden layer (all ones before dropout) shows which units were kept."""
    masks = model.unit_masks(MLP((2, 40, 1)), MLP((2, 90, 1)))
    probe = MLP((2, 90, 90), output="linear", keep_probs=0.7)
    _, state = model.init(jax.random.key(0), probe)
    params = (
        {"W": jnp.zeros((2, 90)), "b": jnp.ones((90,))},
        {"W": jnp.eye(90), "b": jnp.zeros((90,))},
    )
    x = jnp.zeros((2000, 2))
    kept = []
    for k in range(3):
        out, _ = model.apply(probe, params, state, x, key=jax.random.key(k), train=True,
                             unit_masks=masks)  # fmt: skip
        kept.append(np.asarray(out != 0))
    kept = np.concatenate(kept)  # (6000, 90)
    rate = kept[:, :40].mean(axis=0)
    assert np.all(np.abs(rate - 0.7) < 0.03), rate  # 6000 draws: one sigma is 0.006
    assert not kept[:, 40:].any()


# ---- any optimizer, optax, schedules, early stopping ----------------------------------------


def test_optimizers_per_model_form_groups_and_equal_fit(moons):
    X, Y, _, _ = moons
    names = ["adam", "momentum", "adam", "gd"]
    keys = jax.random.split(jax.random.key(5), 4)
    many = tune.train_many(
        MLP((2, 5, 1)), X, Y, keys=keys, optimizer=names, learning_rate=0.05, beta=0.8,
        epochs=3, batch_size=20,
    )  # fmt: skip
    assert [g.indices.tolist() for g in many.groups] == [[0, 2], [1], [3]]
    for i, name in enumerate(names):
        ref = train.fit(
            MLP((2, 5, 1)), X, Y, key=keys[i], optimizer=name, learning_rate=0.05,
            beta=0.8 if name == "momentum" else None, epochs=3, batch_size=20, progress=False,
        )  # fmt: skip
        assert_model_is_fit(many, i, ref)
    assert [r["optimizer"] for r in many.records()] == names


@pytest.mark.parametrize(
    "optimizer",
    [optax.adam, functools.partial(optax.sgd, momentum=0.9), optax.adam(0.01)],
    ids=["optax.adam", "partial(optax.sgd, momentum=0.9)", "optax.adam(0.01)"],
)
def test_optax_optimizers_equal_fit(optimizer, moons):
    X, Y, _, _ = moons
    keys = jax.random.split(jax.random.key(6), 2)
    lrs = [0.01, 0.03]
    with jax.numpy_dtype_promotion("standard"):
        many = tune.train_many(
            MLP((2, 5, 1)), X, Y, keys=keys, optimizer=optimizer, learning_rate=lrs, epochs=3,
            batch_size=16,
        )  # fmt: skip
        for i in range(2):
            ref = train.fit(
                MLP((2, 5, 1)), X, Y, key=keys[i], optimizer=optimizer, learning_rate=lrs[i],
                epochs=3, batch_size=16, progress=False,
            )  # fmt: skip
            assert_model_is_fit(many, i, ref)
    if isinstance(optimizer, optax.GradientTransformation):  # its own rate, unknown to fjdl
        assert np.all(np.isnan(many.history.learning_rate))
    else:
        np.testing.assert_allclose(many.history.learning_rate[:, 0], lrs)


def test_schedules_of_the_step_and_of_the_epoch_equal_fit(moons):
    X, Y, _, _ = moons
    keys = jax.random.split(jax.random.key(8), 2)
    per_step = optax.exponential_decay(0.05, transition_steps=2, decay_rate=0.5)
    per_epoch = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.7)
    for kw in (dict(learning_rate=per_step), dict(schedule=per_epoch)):
        with jax.numpy_dtype_promotion("standard"):
            many = tune.train_many(
                MLP((2, 4, 1)), X, Y, keys=keys, epochs=3, batch_size=16, **kw
            )
            for i in range(2):
                ref = train.fit(
                    MLP((2, 4, 1)), X, Y, key=keys[i], epochs=3, batch_size=16, progress=False,
                    **kw,
                )  # fmt: skip
                assert_model_is_fit(many, i, ref)
                np.testing.assert_allclose(many.history.learning_rate[i], ref.history.learning_rate)
    # The rate of each epoch's first step (3 steps per epoch: 48 / 16).
    np.testing.assert_allclose(
        ref.history.learning_rate, [float(per_epoch(e)) for e in range(3)], rtol=1e-6
    )


def test_early_stopping_per_model_equals_fit(moons):
    X, Y, Xd, Yd = moons
    keys = jax.random.split(jax.random.key(2), 3)
    lrs, deltas = [0.3, 0.01, 0.1], [0.0, 0.0, 0.05]
    kw = dict(epochs=40, batch_size=16, dev=(Xd, Yd), patience=3)
    many = tune.train_many(
        MLP((2, 8, 1)), X, Y, keys=keys, learning_rate=lrs, min_delta=deltas, **kw
    )
    for i in range(3):
        ref = train.fit(
            MLP((2, 8, 1)), X, Y, key=keys[i], learning_rate=lrs[i], min_delta=deltas[i],
            progress=False, **kw,
        )  # fmt: skip
        assert (many.stopped_epoch[i] if many.stopped_epoch[i] >= 0 else None) == ref.stopped_epoch
        assert (many.best_epoch[i] if many.best_epoch[i] >= 0 else None) == ref.best_epoch
        assert_model_is_fit(many, i, ref)
    assert (many.stopped_epoch >= 0).any()


def test_decay_on_and_off_and_new_values_compile_nothing(moons):
    X, Y, Xd, Yd = moons
    keys = jax.random.split(jax.random.key(0), 4)
    kw = dict(epochs=3, batch_size=16, dev=(Xd, Yd))
    tune.train_many(MLP((2, 5, 1)), X, Y, keys=keys, **kw)
    compiled = tune.run_many._cache_size()
    tune.train_many(
        MLP((2, 5, 1)), X, Y, keys=jax.random.split(jax.random.key(1), 4), **kw,
        decay_rate=[0.0, 0.1, 0.5, 1.0], learning_rate=[0.1, 0.01, 0.2, 0.02],
        beta1=[0.8, 0.9, 0.95, 0.99], beta2=0.99, epsilon=1e-6, lambd=[0.0, 0.1, 0.2, 0.3],
        min_delta=0.01,
    )  # fmt: skip
    tune.train_many(MLP((2, 5, 1)), X + 1.0, Y, keys=keys, decay_rate=0.3, **kw)
    assert tune.run_many._cache_size() == compiled


def test_a_model_of_the_protocol_equals_fit(moons):
    X, Y, _, _ = moons

    def init(key):
        return {"w": jax.random.normal(key, (2, 4)) * 0.5, "v": jnp.zeros((4,))}, None

    def apply(params, state, x, *, key=None, train=False):
        return jnp.tanh(x @ params["w"]) @ params["v"], state

    net = model.from_functions(init, apply)
    keys = jax.random.split(jax.random.key(4), 2)
    many = tune.train_many(
        net, X, Y, keys=keys, loss="binary", learning_rate=[0.1, 0.02], epochs=3, batch_size=16
    )
    for i, lr in enumerate([0.1, 0.02]):
        ref = train.fit(
            net, X, Y, key=keys[i], loss="binary", learning_rate=lr, epochs=3, batch_size=16,
            progress=False,
        )  # fmt: skip
        assert_model_is_fit(many, i, ref)


# ---- progress, records ------------------------------------------------------------------------


def test_progress_is_a_function_called_from_the_host(moons):
    X, Y, _, _ = moons
    seen = []
    tune.train_many(
        MLP((2, 3, 1)), X, Y, keys=jax.random.split(jax.random.key(0), 4), epochs=300,
        chunk_size=2, progress=seen.append,
    )  # fmt: skip
    assert seen == sorted(seen) and seen[-1] == 600 and len(seen) > 100  # two chunks


def test_records_and_table(moons):
    X, Y, Xd, Yd = moons
    many = tune.train_many(
        [MLP((2, 3, 1)), MLP((2, 5, 1))], X, Y, keys=jax.random.split(jax.random.key(0), 2),
        learning_rate=[0.01, 0.1], epochs=2, dev=(Xd, Yd),
    )  # fmt: skip
    records = many.records()
    assert [r["hidden"] for r in records] == [(3,), (5,)]
    assert [r["learning_rate"] for r in records] == [0.01, 0.1]
    np.testing.assert_allclose([r["dev_accuracy"] for r in records], many.history.dev_accuracy[:, -1])
    assert "learning_rate" in many.table() and len(many.table().splitlines()) == 3
    pandas = pytest.importorskip("pandas")
    frame = many.to_pandas()
    assert isinstance(frame, pandas.DataFrame) and list(frame["hidden"]) == [(3,), (5,)]


def test_bad_arguments_are_refused_before_anything_compiles(moons):
    X, Y, _, _ = moons
    keys = jax.random.split(jax.random.key(0), 2)
    before = tune.run_many._cache_size()
    cases = [
        (dict(optimizer=["adam"]), ValueError, "optimizer must be one value or one per model"),
        (dict(optimizer=["adam", "sgdx"]), ValueError, "optimizer must be one of"),
        (dict(min_delta=-1.0), ValueError, "min_delta must be >= 0"),
        (dict(epsilon=[1e-8, 0.0]), ValueError, "epsilon"),
        (dict(patience=2), ValueError, "needs a dev set"),
        (dict(decay_rate=0.1, schedule=optax.constant_schedule(0.1)), ValueError, "decay_rate"),
        (dict(keep_probs=[0.5, 1.5]), ValueError, r"keep_probs must be in \(0, 1\], got 1.5"),
        (dict(learning_rate=[0.1, -0.1]), ValueError, r"learning_rate must be >= 0, got -0.1 \(model 1\)"),
        (dict(chunk_size=0), ValueError, "chunk_size must be a positive int"),
        # a schedule of fjdl.schedules as schedule= is a schedule all the same
        (dict(decay_rate=0.1, schedule=schedules.exponential_decay(0.1)), ValueError, "decay_rate"),
        (dict(learning_rate=[0.1, 0.2], schedule=schedules.exponential_decay(0.1)), ValueError,
         "replaces the learning rate"),
        (dict(optimizer=optax.adam(1e-3), schedule=schedules.exponential_decay(0.1)), ValueError,
         "needs an optimizer fjdl builds"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            tune.train_many(MLP((2, 3, 1)), X, Y, keys=keys, epochs=1, **kwargs)
    with pytest.raises(ValueError, match=r"training X must have shape \(m, 3\)"):
        tune.train_many([MLP((2, 3, 1)), MLP((3, 3, 1))], X, Y, keys=keys, epochs=1)
    # One value per model means all the models, whatever groups they fall into.
    keys4 = jax.random.split(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"learning_rate must .* one value per model \(4\)"):
        tune.train_many(
            MLP((2, 3, 1)), X, Y, keys=keys4, epochs=1, learning_rate=[0.1, 0.2],
            optimizer=["adam", "adam", "gd", "gd"],
        )  # fmt: skip
    assert tune.run_many._cache_size() == before


def test_keep_probs_switch_dropout_on_for_every_model_as_fit_does(moons):
    X, Y, _, _ = moons
    keys = jax.random.split(jax.random.key(3), 2)
    kw = dict(epochs=3, batch_size=32, learning_rate=0.01)
    many = tune.train_many(MLP((2, 6, 1)), X, Y, keys=keys, keep_probs=[0.7, 0.9], **kw)
    assert len(many.groups) == 1 and many.params[0]["W"].shape == (2, 2, 6)  # one stacked tree
    for i, kp in enumerate((0.7, 0.9)):
        ref = train.fit(MLP((2, 6, 1)), X, Y, key=keys[i], keep_probs=kp, **kw)
        np.testing.assert_allclose(many.history.cost[i], ref.history.cost, rtol=1e-5)


@pytest.mark.parametrize(
    "scheme, dtype",
    [("he", jnp.float32), ("xavier", jnp.float32), ("glorot", jnp.float32),
     ("random_normal", jnp.float32), ("zeros", jnp.float32), ("he", jnp.bfloat16),
     ("glorot", jnp.float16), ("he", "float64")],
)  # fmt: skip
def test_one_program_initializes_every_width_as_model_init(scheme, dtype):
    """init_padded (widths as arrays) gives each narrow model's own init, padded: exactly, in
    every dtype (drawn in float32 and cast, as fjdl.initializers.init_mlp does)."""
    with jax.enable_x64(dtype == "float64"):
        _check_init_padded(scheme, jnp.dtype(dtype))


def _check_init_padded(scheme, dtype):
    wide = MLP((3, 9, 6, 2), batchnorm=True, output="softmax")
    for hidden in ((9, 6), (4, 6), (2, 1)):
        narrow = MLP((3, *hidden, 2), batchnorm=True, output="softmax")
        key = jax.random.key(11)
        scales = model.init_scales(narrow, scheme)
        init_key = jax.random.split(key)[0]  # as fjdl.train.start splits the run's key
        params, state = jax.jit(
            lambda k, n, s: model.init_padded(k, n, s, wide=wide, dtype=dtype)
        )(init_key, jnp.asarray(narrow.sizes), None if scales is None else jnp.asarray(scales))
        want_params, want_state = model.init(init_key, narrow, scheme, dtype)
        wide_params, wide_state = model.init(init_key, wide, scheme, dtype)
        chex.assert_trees_all_equal(params, model.pad(want_params, wide_params))
        chex.assert_trees_all_equal(state, model.pad_model_state(want_state, wide_state))


def test_coarse_to_fine_over_widths_and_optimizers_compiles_once_per_optimizer(moons):
    """Two rounds, widths in [3, 12] and two optimizers: one training program per optimizer,
    whatever widths each round samples (every round pads to the space's widest)."""
    X, Y, Xd, Yd = moons
    space = {
        "learning_rate": tune.LogUniform(1e-3, 0.3),
        "n_units": tune.UniformInt(3, 12),
        "optimizer": tune.Choice(("adam", "momentum")),
    }
    before = tune.run_many._cache_size()
    result = tune.coarse_to_fine(
        space, X, Y, dev=(Xd, Yd), key=jax.random.key(0), n_trials=8, rounds=2,
        config=MLP((2, 5, 1)), epochs=3, batch_size=16, progress=False,
    )  # fmt: skip
    assert tune.run_many._cache_size() - before == 2
    assert {t["optimizer"] for t in result.trials} == {"adam", "momentum"}
    assert all(3 <= t["n_units"] <= 12 and t["hidden"] == (t["n_units"],) for t in result.trials)
    frame = result.to_pandas()
    assert list(frame["rank"]) == list(range(1, 17))
    best = result.best
    ref = train.fit(
        MLP((2, best["n_units"], 1)), X, Y, key=_trial_key(result, best),
        optimizer=best["optimizer"], learning_rate=best["learning_rate"], epochs=3,
        batch_size=16, eval_every=3, dev=(Xd, Yd), progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(best["dev_accuracy"], ref.history.dev_accuracy[-1], rtol=1e-6)
    chex.assert_trees_all_close(result.state(best).params, ref.state.params, rtol=1e-5, atol=1e-6)


def _trial_key(result, trial):
    """The key a trial trained with: round r's key split like random_search splits it."""
    round_key = jax.random.fold_in(jax.random.key(0), trial["round"] - 1)
    _, train_key = jax.random.split(round_key)
    return jax.random.split(train_key, 8)[trial["index"]]


def test_random_search_over_models_of_any_kind(moons):
    X, Y, Xd, Yd = moons

    def init(key):
        return {"w": jax.random.normal(key, (2, 4)) * 0.5, "v": jnp.zeros((4,))}, None

    def apply(params, state, x, *, key=None, train=False):
        return jnp.tanh(x @ params["w"]) @ params["v"], state

    net = model.from_functions(init, apply)
    space = {"model": tune.Choice((net, MLP((2, 6, 1)))), "lambd": tune.Uniform(0.0, 1.0)}
    result = tune.random_search(
        space, X, Y, dev=(Xd, Yd), key=jax.random.key(0), n_trials=6, epochs=2, loss="binary",
        batch_size=16, progress=False,
    )  # fmt: skip
    kinds = {type(t["model"]).__name__ for t in result.trials}
    assert kinds == {"FunctionModel", "MLP"} and len(result.runs[0].groups) == 2
    with pytest.raises(ValueError, match="change an fjdl.MLP's layers"):
        tune.random_search(
            {"n_units": tune.UniformInt(2, 4)}, X, Y, dev=None, key=jax.random.key(1),
            n_trials=2, config=net, epochs=1, loss="binary",
        )  # fmt: skip
