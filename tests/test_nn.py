import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fjdl import nn

finite = st.floats(-50, 50, allow_nan=False, width=32)


class ActivationTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("sigmoid", nn.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
        ("tanh", nn.tanh, np.tanh),
        ("relu", nn.relu, lambda x: np.maximum(x, 0)),
        ("leaky_relu", nn.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x)),
    )
    def test_closed_form(self, fn, reference):
        x = np.linspace(-5, 5, 41, dtype=np.float32)
        chex.assert_trees_all_close(self.variant(fn)(x), reference(x), rtol=1e-6, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_closed_form(self):
        x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
        e = np.exp(x)
        chex.assert_trees_all_close(
            self.variant(nn.softmax)(x), e / e.sum(-1, keepdims=True), rtol=1e-6
        )


def test_relu_gradient_at_zero_is_zero():
    assert float(jax.grad(nn.relu)(0.0)) == 0.0
    assert float(jax.grad(nn.relu)(1.0)) == 1.0
    assert float(jax.grad(nn.leaky_relu)(0.0)) == pytest.approx(0.01)


def test_softmax_no_overflow():
    y = nn.softmax(jnp.array([1000.0, 0.0, -1000.0]))
    np.testing.assert_allclose(y, [1.0, 0.0, 0.0])


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 7)), elements=finite))
def test_softmax_sums_to_one(x):
    y = nn.softmax(x)
    assert np.all(y >= 0)
    np.testing.assert_allclose(np.sum(y, axis=-1), 1.0, rtol=1e-5)


@given(hnp.arrays(np.float32, st.integers(2, 6), elements=finite), st.floats(-20, 20, width=32))
def test_softmax_shift_invariant(x, c):
    np.testing.assert_allclose(nn.softmax(x), nn.softmax(x + np.float32(c)), atol=1e-5)


class DropoutTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_kept_fraction_and_inverted_scale(self):
        keep_prob = 0.8
        x = jnp.ones((400, 500))
        y = self.variant(lambda k, x: nn.dropout(k, x, keep_prob))(jax.random.key(0), x)
        kept = np.asarray(y) != 0
        # 200,000 Bernoulli(0.8) draws: std of the fraction is 0.0009.
        assert abs(kept.mean() - keep_prob) < 0.005
        np.testing.assert_allclose(np.asarray(y)[kept], 1 / keep_prob, rtol=1e-6)
        assert abs(float(y.mean()) - 1.0) < 0.01  # the mean is preserved

    @chex.variants(with_jit=True, without_jit=True)
    def test_traced_keep_prob(self):
        x = jnp.ones((100, 100))
        y = self.variant(nn.dropout)(jax.random.key(1), x, jnp.float32(0.5))
        assert set(np.unique(np.asarray(y)).tolist()) == {0.0, 2.0}


def test_same_key_same_mask():
    x = jnp.arange(1.0, 101.0)
    a = nn.dropout(jax.random.key(3), x, 0.5)
    b = nn.dropout(jax.random.key(3), x, 0.5)
    c = nn.dropout(jax.random.key(4), x, 0.5)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a, c)


def test_keep_prob_one_is_identity_without_key():
    x = jnp.arange(6.0)
    assert nn.dropout(None, x, 1.0) is x or np.array_equal(nn.dropout(None, x, 1.0), x)


@given(st.floats(0.3, 1.0), st.integers(0, 2**31 - 1))
def test_dropout_keeps_mean(keep_prob, seed):
    x = jnp.full((20000,), 3.0)
    y = nn.dropout(jax.random.key(seed), x, keep_prob)
    # Mean of 20,000 scaled Bernoulli draws: std = 3 sqrt((1-p)/(p n)) <= 0.032; allow 6 sigma.
    assert abs(float(y.mean()) - 3.0) < 0.2


@pytest.mark.parametrize("keep_prob", [0.0, -0.1, 1.5, float("nan")])
def test_dropout_rejects_bad_keep_prob(keep_prob):
    with pytest.raises(ValueError, match="keep_prob"):
        nn.dropout(jax.random.key(0), jnp.ones(3), keep_prob)


def test_dropout_needs_key():
    with pytest.raises(ValueError, match="key"):
        nn.dropout(None, jnp.ones(3), 0.5)
