import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fjdl import initializers as init

KERNELS = [(3, 3, 1, 16), (5, 5, 8, 4), (2, 3, 4, 5, 6), (7, 10, 5)]


def _jax_fans(shape):
    """jax's ``_compute_fans`` with ``in_axis=-2, out_axis=-1`` (the formula, for any version)."""
    receptive_field = np.prod(shape) / shape[-2] / shape[-1]
    return shape[-2] * receptive_field, shape[-1] * receptive_field


STDS = {
    "he": lambda n_in, n_out: np.sqrt(2.0 / n_in),
    "xavier": lambda n_in, n_out: np.sqrt(1.0 / n_in),
    "glorot": lambda n_in, n_out: np.sqrt(2.0 / (n_in + n_out)),
    "random_normal": lambda n_in, n_out: 0.01,
}


@pytest.mark.parametrize("scheme", sorted(STDS))
def test_scheme_standard_deviation(scheme, getkey):
    n_in, n_out = 400, 300
    W = init.SCHEMES[scheme](getkey(), (n_in, n_out))
    chex.assert_shape(W, (n_in, n_out))
    assert W.dtype == jnp.float32
    # 120,000 draws: the sample std is within 1% of its target with overwhelming probability.
    np.testing.assert_allclose(np.std(W), STDS[scheme](n_in, n_out), rtol=0.01)
    assert abs(float(np.mean(W))) < 0.01 * STDS[scheme](n_in, n_out) * 10


@pytest.mark.parametrize("scheme", sorted(STDS))
def test_scheme_is_scaled_standard_normal(scheme):
    key = jax.random.key(7)
    shape = (5, 3)
    expected = STDS[scheme](*shape) * jax.random.normal(key, shape)
    chex.assert_trees_all_close(init.SCHEMES[scheme](key, shape), expected, rtol=1e-6)


def test_random_normal_scale():
    key = jax.random.key(1)
    chex.assert_trees_all_close(
        init.random_normal(key, (4, 4), scale=10.0),
        10.0 * jax.random.normal(key, (4, 4)),
        rtol=1e-6,
    )


def test_zeros_needs_no_key():
    np.testing.assert_array_equal(init.zeros(None, (3, 2)), np.zeros((3, 2)))


def test_float64(getkey):
    with jax.enable_x64(True):
        assert init.he(getkey(), (3, 4), dtype=jnp.float64).dtype == jnp.float64


def test_init_mlp_shapes_biases_and_keys():
    key = jax.random.key(3)
    params = init.init_mlp(key, [2, 10, 5, 1], "he")
    assert isinstance(params, tuple) and len(params) == 3
    for p, (n_in, n_out) in zip(params, [(2, 10), (10, 5), (5, 1)]):
        chex.assert_shape(p["W"], (n_in, n_out))
        np.testing.assert_array_equal(p["b"], np.zeros(n_out))
    # One key split per layer, in order.
    keys = jax.random.split(key, 3)
    chex.assert_trees_all_close(params[1]["W"], init.he(keys[1], (10, 5)))


def test_init_mlp_same_key_same_params():
    a = init.init_mlp(jax.random.key(5), [3, 4, 2], "glorot")
    b = init.init_mlp(jax.random.key(5), [3, 4, 2], "glorot")
    chex.assert_trees_all_equal(a, b)


def test_init_mlp_callable_scheme():
    params = init.init_mlp(jax.random.key(0), [2, 3], lambda k, s: jnp.full(s, 2.0))
    np.testing.assert_array_equal(params[0]["W"], np.full((2, 3), 2.0))


@given(st.integers(1, 50), st.integers(1, 50), st.sampled_from(sorted(STDS)))
def test_every_scheme_any_shape(n_in, n_out, scheme):
    W = init.SCHEMES[scheme](jax.random.key(n_in * 100 + n_out), (n_in, n_out))
    chex.assert_shape(W, (n_in, n_out))
    assert np.all(np.isfinite(W))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: init.he(jax.random.key(0), (0, 3)), "n_in"),
        (lambda: init.he(jax.random.key(0), (3,)), "shape"),
        (lambda: init.glorot(jax.random.key(0), (3,)), r"shape must have at least 2 dimensions"),
        (lambda: init.xavier(jax.random.key(0), ()), r"\(\*receptive_field, n_in, n_out\)"),
        (lambda: init.random_normal(jax.random.key(0), (4,)), "shape must have at least 2"),
        (lambda: init.fans((16,)), "shape must have at least 2 dimensions"),
        (lambda: init.he(jax.random.key(0), 5), "shape must have at least 2 dimensions"),
        (lambda: init.he(jax.random.key(0), (3, 0, 8, 4)), r"receptive_field\[1\]"),
        (lambda: init.he(jax.random.key(0), (3, 3, 8, 0)), "n_out"),
        (lambda: init.he(jax.random.key(0), (3, 3.0, 8, 4)), "receptive_field"),
        (lambda: init.zeros(None, 3), "shape must be a tuple"),
        (lambda: init.random_normal(jax.random.key(0), (2, 2), scale=-1.0), "scale"),
        (lambda: init.init_mlp(jax.random.key(0), [2], "he"), "sizes"),
        (lambda: init.init_mlp(jax.random.key(0), [2, 3], "nope"), "scheme"),
        (lambda: init.init_mlp(jax.random.key(0), [2, 2.5], "he"), r"sizes\[1\]"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# --------------------------------------------------------------------------------------------------
# Kernels of any shape (*receptive_field, n_in, n_out)


@pytest.mark.parametrize("shape", KERNELS + [(10, 5), (1, 1)])
def test_fans_match_jax_compute_fans(shape):
    fan_in, fan_out = init.fans(shape)
    assert isinstance(fan_in, int) and isinstance(fan_out, int)
    assert (fan_in, fan_out) == _jax_fans(shape)
    try:  # the private function itself, where this jax still has it
        from jax._src.nn.initializers import _compute_fans
    except ImportError:
        return
    assert (fan_in, fan_out) == _compute_fans(shape, in_axis=-2, out_axis=-1)


def test_fans_of_the_brief_kernels():
    assert init.fans((3, 3, 1, 16)) == (9, 144)
    assert init.fans((5, 5, 8, 4)) == (200, 100)
    assert init.fans((400, 300)) == (400, 300)  # dense: fan_in = n_in, fan_out = n_out


# The same schemes in jax's vocabulary: variance = scale / denominator, untruncated normal.
JAX_EQUIVALENT = {
    "he": (2.0, "fan_in"),
    "xavier": (1.0, "fan_in"),
    "glorot": (1.0, "fan_avg"),  # 1 / ((fan_in + fan_out) / 2) = 2 / (fan_in + fan_out)
}


@pytest.mark.parametrize("shape", KERNELS + [(10, 5)])
@pytest.mark.parametrize("scheme", sorted(JAX_EQUIVALENT))
def test_scheme_equals_jax_variance_scaling(scheme, shape):
    key = jax.random.key(3)
    scale, mode = JAX_EQUIVALENT[scheme]
    expected = jax.nn.initializers.variance_scaling(scale, mode, "normal")(key, shape)
    W = init.SCHEMES[scheme](key, shape)
    chex.assert_shape(W, shape)
    chex.assert_trees_all_close(W, expected, rtol=1e-6)


@pytest.mark.parametrize("scheme", sorted(STDS))
@pytest.mark.parametrize("shape", [(3, 3, 100, 50), (5, 5, 8, 300)])
def test_kernel_standard_deviation(scheme, shape, getkey):
    W = np.asarray(init.SCHEMES[scheme](getkey(), shape))
    chex.assert_shape(W, shape)
    fan_in, fan_out = _jax_fans(shape)
    # 45,000 and 60,000 draws: the sample std's relative error is about 1 / sqrt(2 n) < 0.4%.
    np.testing.assert_allclose(np.std(W), STDS[scheme](fan_in, fan_out), rtol=0.02)
    assert abs(float(np.mean(W))) < 0.05 * STDS[scheme](fan_in, fan_out)


def test_kernel_scale_counts_the_receptive_field():
    key = jax.random.key(0)
    # The same normal draws, scaled by sqrt(2 / (9 * 8)), not by the dense sqrt(2 / 8).
    chex.assert_trees_all_close(
        init.he(key, (3, 3, 8, 16)),
        np.sqrt(2.0 / 72) * jax.random.normal(key, (3, 3, 8, 16)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("shape", [(), (4,), (3, 2), (3, 3, 1, 16)])
def test_zeros_any_shape(shape):
    np.testing.assert_array_equal(init.zeros(None, shape), np.zeros(shape, np.float32))


def test_list_shape_and_jit():
    key = jax.random.key(0)
    chex.assert_trees_all_equal(init.he(key, [3, 3, 2, 4]), init.he(key, (3, 3, 2, 4)))
    jitted = jax.jit(init.glorot, static_argnums=1)
    chex.assert_trees_all_close(jitted(key, (3, 3, 2, 4)), init.glorot(key, (3, 3, 2, 4)))


# Every new shape compiles a normal draw: a third of the examples.
@settings(max_examples=max(5, settings.default.max_examples // 3))
@given(
    st.lists(st.integers(1, 6), min_size=2, max_size=5).map(tuple),
    st.sampled_from(sorted(STDS)),
)
def test_every_scheme_any_kernel_shape(shape, scheme):
    W = init.SCHEMES[scheme](jax.random.key(sum(shape)), shape)
    chex.assert_shape(W, shape)
    assert W.dtype == jnp.float32 and np.all(np.isfinite(W))
