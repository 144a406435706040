"""fjdl.optim against float64 numpy versions of the course's formulas, and against optax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from fjdl import optim, schedules

N_STEPS = 30

# ---------------------------------------------------------------------------------------------
# Data: a small MLP-like parameter pytree and a sequence of random gradients of mixed sizes.


def _params(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (
        {"W": rng.normal(size=(3, 4)).astype(dtype), "b": rng.normal(size=(4,)).astype(dtype)},
        {"W": rng.normal(size=(4, 2)).astype(dtype), "b": rng.normal(size=(2,)).astype(dtype)},
    )


def _grads(n=N_STEPS, dtype=np.float32, seed=1):
    """``n`` gradient pytrees; each leaf has its own scale (1e-3 to 10), some entries near zero."""
    rng = np.random.default_rng(seed)
    like = _params(dtype)
    scales = [1e-3, 1.0, 10.0, 0.05]
    out = []
    for _ in range(n):
        leaves = [
            (scale * rng.normal(size=leaf.shape)).astype(dtype)
            for scale, leaf in zip(scales, jax.tree.leaves(like))
        ]
        out.append(jax.tree.unflatten(jax.tree.structure(like), leaves))
    return out


def _run(opt, params, grads_seq, apply=optim.apply_updates, jit=True):
    """Updates of every step (a list of pytrees), the final params and the final state."""
    update = jax.jit(opt.update) if jit else opt.update
    state = opt.init(params)
    all_updates = []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = apply(params, updates)
        all_updates.append(updates)
    return all_updates, params, state


# ---------------------------------------------------------------------------------------------
# The formulas in float64 numpy, one leaf at a time; t counts updates from 1.


def _lr_at(lr, count):
    return lr(count) if callable(lr) else lr


def np_gd(lr, l2=0.0, weight_decay=0.0):
    def step(g, p, state, t):
        g = g + l2 * p
        return -_lr_at(lr, t - 1) * (g + weight_decay * p), state

    return (lambda p: None), step


def np_momentum(lr, beta=0.9, heavy_ball=False, nesterov=False, l2=0.0, weight_decay=0.0):
    damp = 1.0 if heavy_ball else 1.0 - beta

    def step(g, p, v, t):
        g = g + l2 * p
        v = beta * v + damp * g
        d = beta * v + damp * g if nesterov else v
        return -_lr_at(lr, t - 1) * (d + weight_decay * p), v

    return np.zeros_like, step


def np_rmsprop(
    lr, beta=0.9, epsilon=1e-8, eps_in_sqrt=False, initial_scale=0.0, l2=0.0, weight_decay=0.0
):
    def step(g, p, s, t):
        g = g + l2 * p
        s = beta * s + (1 - beta) * g**2
        d = g / np.sqrt(s + epsilon) if eps_in_sqrt else g / (np.sqrt(s) + epsilon)
        return -_lr_at(lr, t - 1) * (d + weight_decay * p), s

    return (lambda p: np.full_like(p, initial_scale)), step


def np_adam(lr, beta1=0.9, beta2=0.999, epsilon=1e-8, l2=0.0, weight_decay=0.0, mask=None):
    def step(g, p, state, t):
        v, s = state
        g = g + l2 * p
        v = beta1 * v + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * g**2
        v_corrected = v / (1 - beta1**t)
        s_corrected = s / (1 - beta2**t)
        d = v_corrected / (np.sqrt(s_corrected) + epsilon)
        return -_lr_at(lr, t - 1) * (d + weight_decay * p), (v, s)

    return (lambda p: (np.zeros_like(p), np.zeros_like(p))), step


def _np_run(reference, params, grads_seq):
    """The numpy formula over the leaves: (updates of every step as leaf lists, final leaves)."""
    init, step = reference
    leaves = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    states = [init(p) for p in leaves]
    all_updates = []
    for t, grads in enumerate(grads_seq, start=1):
        g_leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(grads)]
        out = [step(g, p, s, t) for g, p, s in zip(g_leaves, leaves, states)]
        updates = [u for u, _ in out]
        states = [s for _, s in out]
        leaves = [p + u for p, u in zip(leaves, updates)]
        all_updates.append(updates)
    return all_updates, leaves


def _max_rel_error(actual, expected, floor=1e-30):
    """Largest element-wise ``|a - e| / |e|`` over two pytrees (entries with ``|e| > floor``)."""
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        big = np.abs(e) > floor
        if big.any():
            worst = max(worst, float(np.max(np.abs(a - e)[big] / np.abs(e)[big])))
    return worst


def _expo(count):
    return 0.01 * 0.95**count


# name -> (fjdl factory, numpy reference factory); factories are called where the dtype is set.
FORMULAS = {
    "gd": (lambda: optim.gd(0.1), lambda: np_gd(0.1)),
    "gd_l2": (lambda: optim.gd(0.1, l2=0.05), lambda: np_gd(0.1, l2=0.05)),
    "momentum": (lambda: optim.momentum(0.1, 0.9), lambda: np_momentum(0.1, 0.9)),
    "momentum_nesterov": (
        lambda: optim.momentum(0.1, 0.8, nesterov=True),
        lambda: np_momentum(0.1, 0.8, nesterov=True),
    ),
    "momentum_heavy_ball": (
        lambda: optim.momentum(0.01, 0.9, heavy_ball=True),
        lambda: np_momentum(0.01, 0.9, heavy_ball=True),
    ),
    "momentum_heavy_ball_nesterov": (
        lambda: optim.momentum(0.01, 0.9, heavy_ball=True, nesterov=True),
        lambda: np_momentum(0.01, 0.9, heavy_ball=True, nesterov=True),
    ),
    "momentum_l2": (
        lambda: optim.momentum(0.1, 0.9, l2=0.05),
        lambda: np_momentum(0.1, 0.9, l2=0.05),
    ),
    "momentum_weight_decay": (
        lambda: optim.momentum(0.1, 0.9, weight_decay=0.05),
        lambda: np_momentum(0.1, 0.9, weight_decay=0.05),
    ),
    "rmsprop": (lambda: optim.rmsprop(0.01, 0.9, 1e-8), lambda: np_rmsprop(0.01, 0.9, 1e-8)),
    "rmsprop_eps_in_sqrt": (
        lambda: optim.rmsprop(0.01, 0.9, 1e-4, eps_in_sqrt=True),
        lambda: np_rmsprop(0.01, 0.9, 1e-4, eps_in_sqrt=True),
    ),
    "rmsprop_initial_scale": (
        lambda: optim.rmsprop(0.01, 0.99, 1e-8, initial_scale=1.0),
        lambda: np_rmsprop(0.01, 0.99, 1e-8, initial_scale=1.0),
    ),
    "rmsprop_weight_decay": (
        lambda: optim.rmsprop(0.01, weight_decay=0.1),
        lambda: np_rmsprop(0.01, weight_decay=0.1),
    ),
    "adam": (lambda: optim.adam(0.01), lambda: np_adam(0.01)),
    "adam_betas": (
        lambda: optim.adam(0.02, beta1=0.5, beta2=0.9, epsilon=1e-6),
        lambda: np_adam(0.02, beta1=0.5, beta2=0.9, epsilon=1e-6),
    ),
    "adam_l2": (lambda: optim.adam(0.01, l2=0.1), lambda: np_adam(0.01, l2=0.1)),
    "adamw": (
        lambda: optim.adam(0.01, weight_decay=0.1),
        lambda: np_adam(0.01, weight_decay=0.1),
    ),
    "adam_schedule": (
        lambda: optim.adam(schedules.exponential_decay(0.01, 0.95)),
        lambda: np_adam(_expo),
    ),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_float64_matches_the_formula(name):
    make, make_reference = FORMULAS[name]
    with jax.enable_x64(True):
        params = _params(np.float64)
        grads = _grads(dtype=np.float64)
        updates, final, _ = _run(make(), params, grads)
        expected_updates, expected_final = _np_run(make_reference(), params, grads)
        for got, want in zip(updates, expected_updates):
            assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(got))
            np.testing.assert_allclose(
                np.concatenate([np.ravel(x) for x in jax.tree.leaves(got)]),
                np.concatenate([np.ravel(x) for x in want]),
                rtol=1e-12,
                atol=1e-15,
            )
        np.testing.assert_allclose(
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(final)]),
            np.concatenate([np.ravel(x) for x in expected_final]),
            rtol=1e-12,
        )


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_float32_many_steps_match_the_float64_formula(name):
    make, make_reference = FORMULAS[name]
    params = _params()
    grads = _grads()
    updates, final, _ = _run(make(), params, grads)
    expected_updates, expected_final = _np_run(make_reference(), params, grads)
    for got, want in zip(updates, expected_updates):
        for a, e in zip(jax.tree.leaves(got), want):
            assert a.dtype == jnp.float32
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    for a, e in zip(jax.tree.leaves(final), expected_final):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


class OneStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, name) for name in sorted(FORMULAS)])
    def test_one_float32_step(self, name):
        make, make_reference = FORMULAS[name]
        params = _params()
        grads = _grads(1)[0]
        opt = make()
        updates, state = self.variant(opt.update)(grads, opt.init(params), params)
        (expected,), _ = _np_run(make_reference(), params, [grads])
        for a, e in zip(jax.tree.leaves(updates), expected):
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-9)
        assert state.count.dtype == jnp.int32 and int(state.count) == 1


# ---------------------------------------------------------------------------------------------
# Against optax (float32, 30 steps), alone and inside optax.chain.

# name -> (fjdl factory, optax factory)
OPTAX_EQUIVALENTS = {
    "gd": (lambda: optim.gd(0.1), lambda: optax.sgd(0.1)),
    "momentum": (lambda: optim.momentum(0.1, 0.9), lambda: optax.sgd(0.1 * (1 - 0.9), 0.9)),
    "momentum_nesterov": (
        lambda: optim.momentum(0.1, 0.9, nesterov=True),
        lambda: optax.sgd(0.1 * (1 - 0.9), momentum=0.9, nesterov=True),
    ),
    "momentum_heavy_ball": (
        lambda: optim.momentum(0.01, 0.9, heavy_ball=True),
        lambda: optax.sgd(0.01, momentum=0.9),
    ),
    "momentum_heavy_ball_nesterov": (
        lambda: optim.momentum(0.01, 0.9, heavy_ball=True, nesterov=True),
        lambda: optax.sgd(0.01, momentum=0.9, nesterov=True),
    ),
    "momentum_heavy_ball_weight_decay": (
        lambda: optim.momentum(0.01, 0.9, heavy_ball=True, weight_decay=0.1),
        lambda: optax.chain(
            optax.trace(decay=0.9), optax.add_decayed_weights(0.1), optax.scale(-0.01)
        ),
    ),
    "rmsprop": (
        lambda: optim.rmsprop(0.01, 0.9, 1e-8),
        lambda: optax.rmsprop(0.01, decay=0.9, eps=1e-8, eps_in_sqrt=False),
    ),
    "rmsprop_eps_in_sqrt_initial_scale": (
        lambda: optim.rmsprop(0.01, 0.9, 1e-6, eps_in_sqrt=True, initial_scale=1.0),
        lambda: optax.rmsprop(0.01, decay=0.9, eps=1e-6, initial_scale=1.0),
    ),
    "adam": (lambda: optim.adam(0.01), lambda: optax.adam(0.01)),
    "adam_betas": (
        lambda: optim.adam(0.02, 0.5, 0.9, 1e-6),
        lambda: optax.adam(0.02, b1=0.5, b2=0.9, eps=1e-6),
    ),
    "adam_l2": (
        lambda: optim.adam(0.01, l2=0.1),
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.01)),
    ),
    "adamw": (
        lambda: optim.adam(0.01, weight_decay=0.1),
        lambda: optax.adamw(0.01, weight_decay=0.1),
    ),
    "adamw_weights_only": (
        lambda: optim.adam(0.01, weight_decay=0.1, mask=optim.weights_only),
        lambda: optax.adamw(0.01, weight_decay=0.1, mask=optim.weights_only),
    ),
    "adam_schedule": (
        lambda: optim.adam(schedules.inverse_time_decay(0.02, 0.5, time_interval=4)),
        lambda: optax.adam(schedules.inverse_time_decay(0.02, 0.5, time_interval=4)),
    ),
    "ewa": (lambda: optim.ewa(0.9), lambda: optax.ema(0.9, debias=False)),
    "ewa_debias": (lambda: optim.ewa(0.8, debias=True), lambda: optax.ema(0.8, debias=True)),
}


def _assert_trees_close_all_steps(ours, theirs):
    for a, b in zip(ours, theirs):
        chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTAX_EQUIVALENTS))
def test_matches_optax(name):
    make, make_optax = OPTAX_EQUIVALENTS[name]
    params, grads = _params(), _grads()
    ours, ours_final, _ = _run(make(), params, grads)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts and floats
        theirs, theirs_final, _ = _run(
            make_optax(), params, grads, apply=optax.apply_updates, jit=False
        )
    _assert_trees_close_all_steps(ours, theirs)
    chex.assert_trees_all_close(ours_final, theirs_final, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTAX_EQUIVALENTS))
def test_works_inside_optax_chain(name):
    make, make_optax = OPTAX_EQUIVALENTS[name]
    params, grads = _params(), _grads()
    clip = optax.clip_by_global_norm(1.0)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts and floats
        ours, _, state = _run(optax.chain(clip, make()), params, grads, apply=optax.apply_updates)
        theirs, _, _ = _run(
            optax.chain(clip, make_optax()), params, grads, apply=optax.apply_updates, jit=False
        )
    _assert_trees_close_all_steps(ours, theirs)
    assert int(state[1].count) == N_STEPS


def test_gradient_transformation_has_optax_shape():
    assert optim.GradientTransformation._fields == optax.GradientTransformation._fields
    opt = optim.adam(0.1)
    assert isinstance(opt, tuple) and opt._fields == ("init", "update")
    init, update = opt  # unpacks like optax's
    assert callable(init) and callable(update)


def test_apply_updates_keeps_dtype_and_matches_optax():
    params = _params()
    updates = jax.tree.map(lambda p: 0.5 * p, params)
    ours = optim.apply_updates(params, updates)
    chex.assert_trees_all_equal(ours, optax.apply_updates(params, updates))
    chex.assert_trees_all_equal_dtypes(ours, params)


# ---------------------------------------------------------------------------------------------
# The contract every optimizer keeps.

CONTRACT = {
    "gd": lambda: optim.gd(0.1),
    "gd_weight_decay": lambda: optim.gd(0.1, weight_decay=0.01),
    "momentum": lambda: optim.momentum(0.1),
    "momentum_heavy_ball_nesterov": lambda: optim.momentum(0.1, heavy_ball=True, nesterov=True),
    "rmsprop": lambda: optim.rmsprop(0.01),
    "rmsprop_eps_in_sqrt": lambda: optim.rmsprop(0.01, eps_in_sqrt=True, initial_scale=1.0),
    "adam": lambda: optim.adam(0.01),
    "adamw_weights_only": lambda: optim.adam(0.01, weight_decay=0.1, mask=optim.weights_only),
    "adam_schedule": lambda: optim.adam(schedules.exponential_decay(0.01)),
    "ewa": lambda: optim.ewa(0.9, debias=True),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contract(name, dtype):
    with jax.enable_x64(dtype == np.float64):
        opt = CONTRACT[name]()
        params = _params(dtype)
        grads = _grads(2, dtype=dtype)
        state = jax.jit(opt.init)(params)
        chex.clear_trace_counter()  # the counter is keyed by the function: reset per case

        @jax.jit
        @chex.assert_max_traces(n=1)
        def update(grads, state, params):
            return opt.update(grads, state, params)

        for g in grads:  # the second call reuses the first trace
            updates, state = update(g, state, params)
            params = optim.apply_updates(params, updates)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
        chex.assert_tree_all_finite(updates)
        chex.assert_tree_all_finite(state)
        assert isinstance(state, tuple) and hasattr(state, "_fields")  # a NamedTuple
        assert state.count.dtype == jnp.int32 and state.count.shape == ()
        assert int(state.count) == 2
        float_leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert all(x.dtype == dtype for x in float_leaves)


def test_state_names_follow_the_course():
    params = _params()
    assert optim.momentum(0.1).init(params)._fields == ("count", "v")
    assert optim.rmsprop(0.1).init(params)._fields == ("count", "s")
    assert optim.adam(0.1).init(params)._fields == ("count", "v", "s")
    s0 = optim.rmsprop(0.1, initial_scale=2.0).init(params).s
    assert all(np.all(np.asarray(x) == 2.0) for x in jax.tree.leaves(s0))


# ---------------------------------------------------------------------------------------------
# Hyperparameters as arrays: vmap over a batch of values, no recompilation on a new value.


def _scan_run(opt, params, grads_stacked):
    def step(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        return (optim.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), grads_stacked)
    return p


def _stacked_grads(n=25):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *_grads(n))


@pytest.mark.parametrize(
    "factory",
    [
        lambda lr: optim.gd(lr),
        lambda lr: optim.momentum(lr, 0.9),
        lambda lr: optim.rmsprop(lr),
        lambda lr: optim.adam(lr),
        lambda lr: optim.adam(schedules.inverse_sqrt_decay(lr, 1.0)),
    ],
    ids=["gd", "momentum", "rmsprop", "adam", "adam_schedule"],
)
def test_vmap_over_learning_rates_equals_separate_runs(factory):
    params, grads = _params(), _stacked_grads()
    lrs = jnp.asarray(np.geomspace(1e-3, 0.3, 8), jnp.float32)
    run = jax.jit(lambda lr: _scan_run(factory(lr), params, grads))
    batched = jax.jit(jax.vmap(run))(lrs)
    for i, lr in enumerate(np.asarray(lrs)):
        separate = run(lrs[i]) if i else _scan_run(factory(float(lr)), params, grads)
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], batched), separate, rtol=1e-5, atol=1e-6
        )


def test_vmap_over_betas():
    params, grads = _params(), _stacked_grads()
    betas = jnp.linspace(0.0, 0.95, 8, dtype=jnp.float32)
    run = jax.jit(lambda b: _scan_run(optim.adam(0.01, beta1=b, beta2=b), params, grads))
    batched = jax.vmap(run)(betas)
    for i in range(len(betas)):  # beta 0.0 first, as Python floats, then as arrays
        separate = run(betas[i]) if i else _scan_run(optim.adam(0.01, 0.0, 0.0), params, grads)
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], batched), separate, rtol=1e-5, atol=1e-6
        )


def test_new_hyperparameter_values_do_not_recompile():
    params, grads = _params(), _stacked_grads(3)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(lr, beta1, beta2, epsilon):
        return _scan_run(optim.adam(lr, beta1, beta2, epsilon), params, grads)

    a = run(jnp.float32(0.01), jnp.float32(0.9), jnp.float32(0.999), jnp.float32(1e-8))
    b = run(jnp.float32(0.02), jnp.float32(0.8), jnp.float32(0.99), jnp.float32(1e-7))
    assert not np.allclose(a[0]["W"], b[0]["W"])


def test_float64_params_with_float32_array_hyperparameters_keep_float64():
    with jax.enable_x64(True):
        params = _params(np.float64)
        opt = optim.adam(jnp.float32(0.01), beta1=jnp.float32(0.9), weight_decay=jnp.float32(0.1))
        updates, state = opt.update(_grads(1, np.float64)[0], opt.init(params), params)
        assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(updates))
        assert all(x.dtype == jnp.float64 for x in jax.tree.leaves((state.v, state.s)))


# ---------------------------------------------------------------------------------------------
# Options with exact values.


def test_learning_rate_schedule_gets_the_count_of_updates_done_before():
    opt = optim.gd(lambda count: 1 / (count.astype(jnp.float32) + 1))  # count: int32
    params = jnp.zeros(2)
    state = opt.init(params)
    seen = []
    for _ in range(4):
        updates, state = opt.update(jnp.ones(2), state)
        seen.append(float(-updates[0]))
    np.testing.assert_allclose(seen, [1.0, 1 / 2, 1 / 3, 1 / 4], rtol=1e-6)


def test_course_momentum_equals_heavy_ball_with_scaled_rate():
    params, grads = _params(), _grads()
    course, _, _ = _run(optim.momentum(0.1, 0.9), params, grads)
    heavy, _, _ = _run(optim.momentum(0.1 * (1 - 0.9), 0.9, heavy_ball=True), params, grads)
    _assert_trees_close_all_steps(course, heavy)


def test_momentum_exact_values():
    g1, g2 = jnp.array([1.0]), jnp.array([3.0])
    for kwargs, expected in [
        ({}, [-0.1 * 0.5, -0.1 * (0.25 + 1.5)]),  # v = .5, then .5 * .5 + .5 * 3
        ({"heavy_ball": True}, [-0.1 * 1.0, -0.1 * (0.5 + 3.0)]),  # v = 1, then .5 + 3
        ({"nesterov": True}, [-0.1 * 0.75, -0.1 * (0.875 + 1.5)]),  # .5 v + .5 g, v = .5, 1.75
        ({"heavy_ball": True, "nesterov": True}, [-0.1 * 1.5, -0.1 * (1.75 + 3.0)]),
    ]:
        opt = optim.momentum(0.1, 0.5, **kwargs)
        state = opt.init(g1)
        u1, state = opt.update(g1, state)
        u2, state = opt.update(g2, state)
        np.testing.assert_allclose([float(u1[0]), float(u2[0])], expected, rtol=1e-6)


def test_rmsprop_exact_values():
    g = jnp.array([2.0])
    # epsilon outside: -lr * g / (sqrt(0.25 * 4) + 1) = -0.1 * 2 / 2
    u, _ = optim.rmsprop(0.1, 0.75, 1.0).update(g, optim.rmsprop(0.1).init(g))
    np.testing.assert_allclose(u, [-0.1], rtol=1e-6)
    # epsilon inside: -0.1 * 2 / sqrt(1 + 3) = -0.1
    opt = optim.rmsprop(0.1, 0.75, 3.0, eps_in_sqrt=True)
    u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(u, [-0.1], rtol=1e-6)
    # initial accumulator 4: s = 0.75 * 4 + 0.25 * 4 = 4, -0.1 * 2 / 2
    opt = optim.rmsprop(0.1, 0.75, 0.0, initial_scale=4.0)
    u, state = opt.update(g, opt.init(g))
    np.testing.assert_allclose(u, [-0.1], rtol=1e-6)
    np.testing.assert_allclose(state.s, [4.0], rtol=1e-6)


def test_adam_exact_values_and_bias_correction_from_t1():
    # A constant gradient: bias correction makes every step -lr * g / (|g| + eps).
    opt = optim.adam(0.1, epsilon=0.0)
    params = jnp.array([1.0, -1.0])
    state = opt.init(params)
    for _ in range(5):
        updates, state = opt.update(jnp.array([0.25, -4.0]), state)
        np.testing.assert_allclose(updates, [-0.1, 0.1], rtol=1e-6)
    assert int(state.count) == 5
    np.testing.assert_allclose(state.v, np.array([0.25, -4.0]) * (1 - 0.9**5), rtol=1e-6)


def test_l2_coupled_vs_weight_decay_decoupled():
    params, grads = _params(), _grads(5)
    # For gradient descent they are the same.
    a, _, _ = _run(optim.gd(0.1, l2=0.3), params, grads)
    b, _, _ = _run(optim.gd(0.1, weight_decay=0.3), params, grads)
    _assert_trees_close_all_steps(a, b)
    # For Adam they are not: coupled decay is normalized by sqrt(s), decoupled is not.
    g = jnp.zeros(1)
    p = jnp.array([2.0])
    u_l2, _ = optim.adam(0.1, l2=0.5).update(g, optim.adam(0.1).init(p), p)
    u_wd, _ = optim.adam(0.1, weight_decay=0.5).update(g, optim.adam(0.1).init(p), p)
    np.testing.assert_allclose(u_l2, [-0.1], rtol=1e-6)  # dW = 0.5 * 2 = 1, first step -lr
    np.testing.assert_allclose(u_wd, [-0.1 * 0.5 * 2.0], rtol=1e-6)  # adam step 0, then -lr wd W


def test_mask_limits_decay_to_the_weights():
    params = _params()
    zero = jax.tree.map(jnp.zeros_like, params)
    opt = optim.gd(0.1, weight_decay=0.5, mask=optim.weights_only)
    updates, _ = opt.update(zero, opt.init(params), params)
    for layer_u, layer_p in zip(updates, params):
        np.testing.assert_allclose(layer_u["W"], -0.05 * layer_p["W"], rtol=1e-6)
        np.testing.assert_array_equal(layer_u["b"], 0.0)
    assert optim.weights_only(params) == ({"W": True, "b": False}, {"W": True, "b": False})


def test_decay_needs_params():
    g = jnp.ones(2)
    for opt in (optim.adam(0.1, l2=0.1), optim.momentum(0.1, weight_decay=0.1)):
        with pytest.raises(ValueError, match="params"):
            opt.update(g, opt.init(g))


# ---------------------------------------------------------------------------------------------
# Exponentially weighted averages.


class EwaTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_ewa_update_closed_form(self):
        with jax.enable_x64(True):
            rng = np.random.default_rng(3)
            theta = rng.normal(size=(20, 3))
            beta = 0.9
            v = jnp.zeros(3, jnp.float64)
            step = self.variant(optim.ewa_update, static_argnums=2)
            for t in range(1, 21):
                v = step(v, theta[t - 1], beta)
                weights = (1 - beta) * beta ** (t - np.arange(1, t + 1))
                np.testing.assert_allclose(v, weights @ theta[:t], rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_bias_correction_of_a_constant_series_gives_the_constant(self):
        with jax.enable_x64(True):
            c = np.array([3.0, -0.5, 7.25])
            v = jnp.zeros(3, jnp.float64)
            correct = self.variant(optim.bias_correction)
            for t in range(1, 30):
                v = optim.ewa_update(v, c, 0.98)
                np.testing.assert_allclose(v, c * (1 - 0.98**t), rtol=1e-12)
                np.testing.assert_allclose(correct(v, 0.98, jnp.int32(t)), c, rtol=1e-13)
        v = optim.ewa_update(jnp.zeros(3), c.astype(np.float32), 0.999)  # float32, t = 1
        np.testing.assert_allclose(optim.bias_correction(v, 0.999, 1), c, rtol=1e-6)

    def test_ewa_on_pytrees_and_state(self):
        avg = optim.ewa(0.5)
        tree = {"a": jnp.ones(2), "b": jnp.full((3,), 2.0)}
        state = avg.init(tree)
        for _ in range(3):
            out, state = avg.update(tree, state)
        chex.assert_trees_all_close(out, jax.tree.map(lambda x: x * (1 - 0.5**3), tree))
        assert int(state.count) == 3
        debiased = optim.ewa(0.5, debias=True)
        s = debiased.init(tree)
        out, s = debiased.update(tree, s)
        chex.assert_trees_all_close(out, tree, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad inputs: errors that name the argument.


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optim.gd(-0.1), "learning_rate"),
        (lambda: optim.momentum(0.1, beta=1.0), "beta"),
        (lambda: optim.momentum(0.1, beta=-0.1), "beta"),
        (lambda: optim.rmsprop(0.1, beta=1.5), "beta"),
        (lambda: optim.rmsprop(0.1, epsilon=-1e-8), "epsilon"),
        (lambda: optim.rmsprop(0.1, initial_scale=-1.0), "initial_scale"),
        (lambda: optim.adam(0.1, beta1=1.0), "beta1"),
        (lambda: optim.adam(0.1, beta2=-0.5), "beta2"),
        (lambda: optim.adam(0.1, epsilon=-1.0), "epsilon"),
        (lambda: optim.adam(0.1, l2=-1.0), "l2"),
        (lambda: optim.adam(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: optim.adam(jnp.array([0.1, -0.1])), "learning_rate"),
        (lambda: optim.gd(float("nan")), "learning_rate"),
        (lambda: optim.ewa(1.0), "beta"),
        (lambda: optim.ewa_update(0.0, 1.0, 2.0), "beta"),
        (lambda: optim.bias_correction(1.0, 0.9, 0), "t"),
    ],
)
def test_bad_hyperparameters_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="learning_rate"):
        optim.adam("0.1")
    with pytest.raises(TypeError, match="beta"):
        optim.momentum(0.1, beta=None)
    with pytest.raises(TypeError, match="mask"):
        optim.adam(0.1, weight_decay=0.1, mask=({"W": 1},))
