"""fjdl.schedules against closed forms, the course's published values and optax's schedules."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from fjdl import optim, schedules

COUNTS = np.arange(0, 250)


def _values(schedule, counts=COUNTS):
    return np.array([float(schedule(jnp.int32(c))) for c in counts])


class ClosedFormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        (
            "inverse_time",
            lambda: schedules.inverse_time_decay(0.5, 0.3),
            lambda c: 0.5 / (1 + 0.3 * c),
        ),
        (
            "inverse_time_interval",
            lambda: schedules.inverse_time_decay(0.5, 0.3, time_interval=100),
            lambda c: 0.5 / (1 + 0.3 * np.floor(c / 100)),
        ),
        ("exponential", lambda: schedules.exponential_decay(0.2, 0.95), lambda c: 0.2 * 0.95**c),
        (
            "inverse_sqrt",
            lambda: schedules.inverse_sqrt_decay(0.1, 2.0),
            lambda c: 0.1 * 2.0 / np.sqrt(c + 1),
        ),
        (
            "piecewise",
            lambda: schedules.piecewise_constant(0.1, {50: 0.5, 150: 0.1}),
            lambda c: 0.1 * np.where(c >= 50, 0.5, 1.0) * np.where(c >= 150, 0.1, 1.0),
        ),
        ("constant", lambda: schedules.constant(0.03), lambda c: np.full(np.shape(c), 0.03)),
    )
    def test_closed_form_on_traced_counts(self, make, closed_form):
        schedule = self.variant(make())
        got = np.array([float(schedule(jnp.int32(c))) for c in (0, 1, 2, 99, 100, 149, 150, 249)])
        want = closed_form(np.array([0, 1, 2, 99, 100, 149, 150, 249], np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-6)
        # All counts at once, as an array under jit.
        np.testing.assert_allclose(
            jax.jit(make())(jnp.asarray(COUNTS, jnp.int32)), closed_form(COUNTS * 1.0), rtol=1e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_per_epoch(self):
        epoch_schedule = schedules.inverse_time_decay(1.0, 1.0)
        step_schedule = self.variant(schedules.per_epoch(epoch_schedule, steps_per_epoch=4))
        got = [float(step_schedule(jnp.int32(s))) for s in range(12)]
        want = [1.0] * 4 + [0.5] * 4 + [1 / 3] * 4
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_course_published_values():
    # update_lr(learning_rate0=0.5, epoch_num=2, decay_rate=1) -> 0.5 / 3
    np.testing.assert_allclose(float(schedules.inverse_time_decay(0.5, 1.0)(2)), 1 / 6, rtol=1e-6)
    # schedule_lr_decay(0.5, epoch_num, decay_rate=0.3, time_interval=100)
    staircase = schedules.inverse_time_decay(0.5, 0.3, time_interval=100)
    np.testing.assert_allclose(float(staircase(10)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(staircase(100)), 0.38461538, rtol=1e-6)


def test_first_values():
    assert float(schedules.inverse_time_decay(0.4, 2.0, 7)(0)) == pytest.approx(0.4)
    assert float(schedules.exponential_decay(0.4)(0)) == pytest.approx(0.4)
    assert float(schedules.inverse_sqrt_decay(0.4, 0.5)(0)) == pytest.approx(0.2)
    assert float(schedules.piecewise_constant(0.4, {0: 0.5})(0)) == pytest.approx(0.2)
    assert float(schedules.piecewise_constant(0.4, [(3, 0.5)])(0)) == pytest.approx(0.4)


def test_match_optax_schedules():
    counts = jnp.asarray(COUNTS, jnp.int32)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts and floats
        expected_exp = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.95)(counts)
        expected_pw = optax.piecewise_constant_schedule(0.1, {50: 0.5, 150: 0.1})(counts)
    np.testing.assert_allclose(
        schedules.exponential_decay(0.2, 0.95)(counts), expected_exp, rtol=1e-5
    )
    np.testing.assert_allclose(
        schedules.piecewise_constant(0.1, {50: 0.5, 150: 0.1})(counts), expected_pw, rtol=1e-6
    )


@pytest.mark.parametrize(
    "factory",
    [
        lambda lr0: schedules.inverse_time_decay(lr0, 0.3, time_interval=10),
        lambda lr0: schedules.exponential_decay(lr0, 0.9),
        lambda lr0: schedules.inverse_sqrt_decay(lr0, 1.5),
        lambda lr0: schedules.piecewise_constant(lr0, {5: 0.1}),
        lambda lr0: schedules.constant(lr0),
        lambda lr0: schedules.per_epoch(schedules.exponential_decay(lr0, 0.5), 3),
    ],
    ids=["inverse_time", "exponential", "inverse_sqrt", "piecewise", "constant", "per_epoch"],
)
def test_vmap_over_init_lr(factory):
    lrs = jnp.linspace(0.01, 1.0, 8, dtype=jnp.float32)
    counts = jnp.arange(30, dtype=jnp.int32)
    batched = jax.jit(jax.vmap(lambda lr0: jax.vmap(factory(lr0))(counts)))(lrs)
    assert batched.shape == (8, 30) and batched.dtype == jnp.float32
    for i, lr0 in enumerate(np.asarray(lrs)):
        np.testing.assert_allclose(batched[i], _values(factory(float(lr0)), range(30)), rtol=1e-6)
    # An array of initial rates also broadcasts without vmap.
    np.testing.assert_allclose(factory(lrs)(7), batched[:, 7], rtol=1e-6)


def test_dtype_follows_the_hyperparameters():
    with jax.enable_x64(True):
        s64 = schedules.exponential_decay(np.float64(0.1), 0.5)(jnp.int32(3))
        assert s64.dtype == jnp.float64
        np.testing.assert_allclose(s64, 0.1 / 8, rtol=1e-15)
        s32 = schedules.inverse_time_decay(jnp.float32(0.1), 1.0)(jnp.int32(3))
        assert s32.dtype == jnp.float32
    assert schedules.inverse_sqrt_decay(1, 1)(0).dtype == jnp.float32  # ints give a float rate


def test_schedule_drives_an_optimizer_per_epoch():
    # 3 steps an epoch, lr0 / (1 + epoch): the gd updates of a unit gradient are -lr.
    schedule = schedules.per_epoch(schedules.inverse_time_decay(0.6, 1.0), steps_per_epoch=3)
    opt = optim.gd(schedule)
    params = jnp.zeros(1)

    def step(state, _):
        updates, state = opt.update(jnp.ones(1), state)
        return state, -updates[0]

    _, lrs = jax.lax.scan(step, opt.init(params), length=9)
    np.testing.assert_allclose(lrs, [0.6] * 3 + [0.3] * 3 + [0.2] * 3, rtol=1e-6)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: schedules.inverse_time_decay(-0.1, 1.0), ValueError, "init_lr"),
        (lambda: schedules.inverse_time_decay(0.1, -1.0), ValueError, "decay_rate"),
        (lambda: schedules.inverse_time_decay(0.1, 1.0, 0), ValueError, "time_interval"),
        (lambda: schedules.inverse_time_decay(0.1, 1.0, 2.5), TypeError, "time_interval"),
        (lambda: schedules.exponential_decay(0.1, 1.5), ValueError, "base"),
        (lambda: schedules.exponential_decay(0.1, 0.0), ValueError, "base"),
        (lambda: schedules.inverse_sqrt_decay(0.1, 0.0), ValueError, "k"),
        (lambda: schedules.constant(-1.0), ValueError, "value"),
        (lambda: schedules.piecewise_constant(0.1, {-1: 0.5}), ValueError, "boundary"),
        (lambda: schedules.piecewise_constant(0.1, {1.5: 0.5}), TypeError, "boundary"),
        (lambda: schedules.piecewise_constant(0.1, {1: -0.5}), ValueError, "boundaries_and"),
        (lambda: schedules.piecewise_constant(0.1, 3), TypeError, "boundaries_and_scales"),
        (lambda: schedules.per_epoch(0.1, 3), TypeError, "schedule"),
        (lambda: schedules.per_epoch(schedules.constant(0.1), 0), ValueError, "steps_per_epoch"),
        (lambda: schedules.exponential_decay("0.1"), TypeError, "init_lr"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_schedules_are_hashable_values():
    """Built twice from the same numbers: equal, and equal hashes (a static argument of jit)."""
    makers = [
        lambda: schedules.constant(0.1),
        lambda: schedules.inverse_time_decay(0.5, 0.3, time_interval=10),
        lambda: schedules.exponential_decay(0.2, 0.95),
        lambda: schedules.inverse_sqrt_decay(0.1, 2.0),
        lambda: schedules.piecewise_constant(0.1, {50: 0.5, 150: 0.1}),
        lambda: schedules.per_epoch(schedules.exponential_decay(0.2, 0.95), 7),
    ]
    for make in makers:
        a, b = make(), make()
        assert a == b and hash(a) == hash(b)
        assert schedules.is_numeric(a)
    assert schedules.inverse_time_decay(0.5, 0.3) != schedules.inverse_time_decay(0.5, 0.4)
    assert not schedules.is_numeric(schedules.per_epoch(lambda e: 0.1, 3))


def test_schedules_are_pytrees_of_their_numbers():
    s = schedules.piecewise_constant(0.1, {50: 0.5, 150: 0.1})
    leaves, treedef = jax.tree.flatten(s)
    assert leaves == [0.1, 0.5, 0.1]
    doubled = jax.tree.unflatten(treedef, [2 * x for x in leaves])
    np.testing.assert_allclose(doubled(200), 0.2 * 1.0 * 0.2, rtol=1e-6)
    # Traced numbers: a jitted function of the schedule compiles once for any numbers.
    f = jax.jit(lambda sched, count: sched(count))
    np.testing.assert_allclose(f(schedules.exponential_decay(1.0, 0.5), 3), 0.125, rtol=1e-6)
    np.testing.assert_allclose(f(schedules.exponential_decay(2.0, 0.25), 1), 0.5, rtol=1e-6)
    assert f._cache_size() == 1


def test_fit_with_new_schedule_numbers_compiles_nothing():
    from fjdl import data, train
    from fjdl.model import MLP

    X, Y = data.make_moons(jax.random.key(0), 100)
    kw = dict(key=jax.random.key(0), epochs=4, batch_size=25, progress=False)
    train.fit(MLP((2, 4, 1)), X, Y, learning_rate=schedules.exponential_decay(0.1, 0.9), **kw)
    train.fit(MLP((2, 4, 1)), X, Y, schedule=schedules.inverse_time_decay(0.1, 0.5), **kw)
    before = train.run_epochs._cache_size()
    r = train.fit(MLP((2, 4, 1)), X, Y, learning_rate=schedules.exponential_decay(0.05, 0.8), **kw)
    s = train.fit(MLP((2, 4, 1)), X, Y, schedule=schedules.inverse_time_decay(0.2, 1.0), **kw)
    assert train.run_epochs._cache_size() == before
    # The rate of each epoch's first step: 4 steps an epoch.
    np.testing.assert_allclose(r.history.learning_rate, 0.05 * 0.8 ** (4 * np.arange(4)), rtol=1e-5)
    np.testing.assert_allclose(s.history.learning_rate, 0.2 / (1 + np.arange(4)), rtol=1e-6)
