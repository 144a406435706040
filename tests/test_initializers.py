import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fjdl import initializers as init

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
        (lambda: init.random_normal(jax.random.key(0), (2, 2), scale=-1.0), "scale"),
        (lambda: init.init_mlp(jax.random.key(0), [2], "he"), "sizes"),
        (lambda: init.init_mlp(jax.random.key(0), [2, 3], "nope"), "scheme"),
        (lambda: init.init_mlp(jax.random.key(0), [2, 2.5], "he"), r"sizes\[1\]"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
