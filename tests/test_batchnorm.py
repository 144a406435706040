import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fjdl import batchnorm as bn


class NormalizeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_train_closed_form(self):
        rng = np.random.default_rng(0)
        z = rng.normal(3.0, 2.0, (16, 4)).astype(np.float32)
        gamma = np.array([1.0, 2.0, 0.5, -1.0], np.float32)
        beta = np.array([0.0, 1.0, -1.0, 3.0], np.float32)
        out, (mean, var) = self.variant(bn.normalize_train)(z, gamma, beta)
        mu = z.mean(0)
        sigma2 = ((z - mu) ** 2).mean(0)  # biased
        chex.assert_trees_all_close(mean, mu, rtol=1e-6)
        chex.assert_trees_all_close(var, sigma2, rtol=1e-5)
        chex.assert_trees_all_close(
            out, gamma * (z - mu) / np.sqrt(sigma2 + 1e-5) + beta, rtol=1e-5, atol=1e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_eval_uses_running(self):
        z = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        running = {"mean": jnp.array([1.0, -1.0]), "var": jnp.array([4.0, 1.0])}
        out = self.variant(bn.normalize_eval)(z, jnp.ones(2), jnp.zeros(2), running, 0.0)
        chex.assert_trees_all_close(out, np.array([[0.0, 3.0], [1.0, 5.0]]), rtol=1e-6)


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(2, 30), st.integers(1, 5)),
        elements=st.floats(-100, 100, width=32),
    )
)
def test_output_has_zero_mean_unit_variance(z):
    # A spread of at least ~1 per unit, so float32 rounding of z does not dominate its variance.
    z = z + np.arange(z.shape[0], dtype=np.float32)[:, None]
    n = z.shape[1]
    out, (_, var) = bn.normalize_train(z, jnp.ones(n), jnp.zeros(n), eps=0.0)
    np.testing.assert_allclose(np.mean(out, 0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.var(out, 0), 1.0, rtol=2e-3)


def test_update_running_is_ewa():
    running = bn.init_running(2)
    np.testing.assert_array_equal(running["mean"], [0.0, 0.0])
    np.testing.assert_array_equal(running["var"], [1.0, 1.0])
    new = bn.update_running(running, (jnp.array([1.0, 2.0]), jnp.array([3.0, 5.0])), momentum=0.9)
    chex.assert_trees_all_close(new["mean"], np.array([0.1, 0.2]), rtol=1e-6)
    chex.assert_trees_all_close(new["var"], np.array([0.9 + 0.3, 0.9 + 0.5]), rtol=1e-6)


def test_from_torch_momentum():
    assert bn.from_torch_momentum(0.1) == pytest.approx(0.9)


def test_statistics_in_float32_for_half_inputs():
    z = (1000.0 + jnp.arange(4096.0)[:, None] % 8).astype(jnp.float16)  # exact in float16
    _, (mean, var) = bn.normalize_train(z, jnp.ones(1, jnp.float16), jnp.zeros(1, jnp.float16))
    assert mean.dtype == jnp.float32
    np.testing.assert_allclose(mean, 1003.5, rtol=1e-6)
    np.testing.assert_allclose(var, 5.25, rtol=1e-5)


def test_vmap_keeps_per_model_statistics():
    z = jax.random.normal(jax.random.key(0), (3, 8, 2)) * jnp.array([1.0, 2.0, 3.0])[:, None, None]
    outs, (means, vars_) = jax.vmap(lambda zz: bn.normalize_train(zz, jnp.ones(2), jnp.zeros(2)))(z)
    for i in range(3):
        o, (m, v) = bn.normalize_train(z[i], jnp.ones(2), jnp.zeros(2))
        chex.assert_trees_all_close((outs[i], means[i], vars_[i]), (o, m, v), rtol=1e-6)


def test_named_axis_gives_global_statistics():
    z = jax.random.normal(jax.random.key(1), (4, 5, 3))  # 4 shards of 5 examples
    f = jax.vmap(
        lambda zz: bn.normalize_train(zz, jnp.ones(3), jnp.zeros(3), axis_name="d"), axis_name="d"
    )
    outs, (means, vars_) = f(z)
    full, (m, v) = bn.normalize_train(z.reshape(20, 3), jnp.ones(3), jnp.zeros(3))
    chex.assert_trees_all_close(outs.reshape(20, 3), full, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(means[0], m, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(vars_[2], v, rtol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bn.normalize_train(jnp.ones((4, 3)), jnp.ones(2), jnp.zeros(3)), "gamma"),
        (lambda: bn.normalize_train(jnp.ones((4, 3)), jnp.ones(3), jnp.zeros(4)), "beta"),
        (lambda: bn.normalize_train(jnp.ones(3), jnp.ones(3), jnp.zeros(3)), "z"),
        (lambda: bn.normalize_train(jnp.ones((0, 3)), jnp.ones(3), jnp.zeros(3)), "non-empty"),
        (
            lambda: bn.update_running(bn.init_running(1), (jnp.ones(1), jnp.ones(1)), 1.0),
            "momentum",
        ),
        (
            lambda: bn.normalize_eval(
                jnp.ones((4, 3)), jnp.ones(3), jnp.zeros(3), bn.init_running(3), -1.0
            ),
            "eps",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
