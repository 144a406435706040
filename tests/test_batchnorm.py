import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
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
        # Channels last: gamma, beta and the running statistics have z.shape[-1] entries.
        (lambda: bn.normalize_train(jnp.ones((2, 4, 4, 3)), jnp.ones(4), jnp.zeros(3)), "gamma"),
        (lambda: bn.normalize_train(jnp.ones((2, 4, 4, 3)), jnp.ones((4, 4, 3)), 0.0), "gamma"),
        (lambda: bn.normalize_train(jnp.ones((2, 4, 3)), jnp.ones(3), jnp.zeros(4)), r"beta"),
        (
            lambda: bn.normalize_eval(
                jnp.ones((2, 4, 4, 3)), jnp.ones(2), jnp.zeros(2), bn.init_running(2)
            ),
            r"gamma must have shape \(3,\)",
        ),
        (
            lambda: bn.normalize_eval(
                jnp.ones((2, 4, 4, 3)), jnp.ones(3), jnp.zeros(3), bn.init_running(4)
            ),
            r"running\['mean'\] must have shape \(3,\)",
        ),
        (
            lambda: bn.normalize_train(jnp.ones((2, 0, 4, 3)), jnp.ones(3), jnp.zeros(3)),
            "non-empty",
        ),
        (lambda: bn.batch_stats(jnp.ones(3)), "z must have at least 2 dimensions"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_running_type():
    with pytest.raises(TypeError, match="running must be a dict"):
        bn.normalize_eval(jnp.ones((4, 3)), jnp.ones(3), jnp.zeros(3), (jnp.zeros(3), jnp.ones(3)))


# --------------------------------------------------------------------------------------------------
# Any rank, channels last: statistics over every axis but the last


def _reference(z, gamma, beta, eps):
    """float64 numpy: mean and biased variance over every axis but the last."""
    z = np.asarray(z, np.float64)
    axes = tuple(range(z.ndim - 1))
    mu = z.mean(axes)
    sigma2 = ((z - mu) ** 2).mean(axes)
    return gamma * (z - mu) / np.sqrt(sigma2 + eps) + beta, mu, sigma2


class ChannelsLastTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("images", (8, 5, 4, 3)), ("sequences", (6, 7, 2)))
    def test_train_matches_float64_formula(self, shape):
        rng = np.random.default_rng(1)
        z = rng.normal(3.0, 2.0, shape).astype(np.float32)
        C = shape[-1]
        gamma = rng.normal(1.0, 0.5, C).astype(np.float32)
        beta = rng.normal(0.0, 1.0, C).astype(np.float32)
        out, (mean, var) = self.variant(bn.normalize_train)(z, gamma, beta)
        expected, mu, sigma2 = _reference(z, gamma, beta, 1e-5)
        chex.assert_shape((mean, var), (C,))
        assert out.shape == z.shape and out.dtype == jnp.float32
        chex.assert_trees_all_close(mean, mu, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(var, sigma2, rtol=1e-5)
        chex.assert_trees_all_close(out, expected, rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_eval_uses_running_per_channel(self):
        rng = np.random.default_rng(2)
        z = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
        running = {"mean": jnp.array([1.0, -2.0]), "var": jnp.array([4.0, 0.25])}
        gamma, beta = jnp.array([2.0, -1.0]), jnp.array([0.5, 3.0])
        out = self.variant(bn.normalize_eval)(z, gamma, beta, running, 1e-5)
        expected = np.array([2.0, -1.0]) * (z - np.array([1.0, -2.0])) / np.sqrt(
            np.array([4.0, 0.25]) + 1e-5
        ) + np.array([0.5, 3.0])
        chex.assert_trees_all_close(out, expected, rtol=1e-5, atol=1e-6)


def test_dense_case_is_bit_for_bit_the_axis_0_formula():
    """(m, n_units) gives exactly the numbers of the former axis-0 code, which the MLP relies on."""
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(2.0, 3.0, (33, 6)), jnp.float32)
    gamma = jnp.asarray(rng.normal(1.0, 0.3, 6), jnp.float32)
    beta = jnp.asarray(rng.normal(0.0, 0.3, 6), jnp.float32)
    mean = jnp.mean(z, axis=0)
    var = jnp.mean(jnp.square(z - mean), axis=0)
    expected = gamma * ((z - mean) / jnp.sqrt(var + 1e-5)) + beta
    out, stats = bn.normalize_train(z, gamma, beta)
    chex.assert_trees_all_equal((out, stats), (expected, (mean, var)))


def test_images_statistics_in_float32_for_half_inputs():
    z = (1000.0 + jnp.arange(4096.0).reshape(16, 16, 16, 1) % 8).astype(jnp.float16)
    out, (mean, var) = bn.normalize_train(z, jnp.ones(1, jnp.float16), jnp.zeros(1, jnp.float16))
    assert out.dtype == jnp.float16 and mean.dtype == jnp.float32
    np.testing.assert_allclose(mean, 1003.5, rtol=1e-6)
    np.testing.assert_allclose(var, 5.25, rtol=1e-5)


def test_named_axis_gives_global_statistics_for_images():
    z = jax.random.normal(jax.random.key(2), (4, 2, 3, 3, 2))  # 4 shards of 2 images 3x3x2
    f = jax.vmap(
        lambda zz: bn.normalize_train(zz, jnp.ones(2), jnp.zeros(2), axis_name="d"), axis_name="d"
    )
    outs, (means, vars_) = f(z)
    full, (m, v) = bn.normalize_train(z.reshape(8, 3, 3, 2), jnp.ones(2), jnp.zeros(2))
    chex.assert_trees_all_close(outs.reshape(8, 3, 3, 2), full, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(means[0], m, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(vars_[3], v, rtol=1e-5)


@st.composite
def _channels_last(draw):
    """(m, ..., C) float32 with 3 or 4 dimensions, every channel spread over at least ~1."""
    ndim = draw(st.sampled_from([3, 4]))
    shape = draw(st.tuples(st.integers(2, 6), *[st.integers(1, 4)] * (ndim - 2), st.integers(1, 3)))
    z = draw(hnp.arrays(np.float32, shape, elements=st.floats(-100, 100, width=32)))
    positions = int(np.prod(shape[:-1]))
    ramp = np.arange(positions, dtype=np.float32).reshape(shape[:-1])[..., None]
    return z + ramp


@given(_channels_last())
def test_property_images_zero_mean_unit_variance_per_channel(z):
    C = z.shape[-1]
    axes = tuple(range(z.ndim - 1))
    out, (mean, var) = bn.normalize_train(z, jnp.ones(C), jnp.zeros(C), eps=0.0)
    chex.assert_shape((mean, var), (C,))
    np.testing.assert_allclose(np.mean(out, axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.var(out, axes), 1.0, rtol=2e-3)


# --------------------------------------------------------------------------------------------------
# flax.linen.BatchNorm: the same numbers (flax's momentum is ours; its default is 0.99)


@pytest.mark.parametrize("shape", [(8, 5, 4, 3), (16, 6)])
def test_matches_flax_linen_batchnorm(shape):
    nn = pytest.importorskip("flax.linen")
    rng = np.random.default_rng(4)
    z = jnp.asarray(rng.normal(3.0, 2.0, shape), jnp.float32)
    C = shape[-1]
    gamma = jnp.asarray(rng.normal(1.0, 0.5, C), jnp.float32)
    beta = jnp.asarray(rng.normal(0.0, 1.0, C), jnp.float32)
    layer = nn.BatchNorm(momentum=0.9, epsilon=1e-5, use_fast_variance=False)
    variables = layer.init(jax.random.key(0), z, use_running_average=False)
    variables = {"params": {"scale": gamma, "bias": beta}, "batch_stats": variables["batch_stats"]}
    running = bn.init_running(C)
    chex.assert_trees_all_equal(variables["batch_stats"], running)  # mean 0, var 1

    # Training mode: batch statistics, then the running average with momentum 0.9.
    flax_out, updates = layer.apply(
        variables, z, use_running_average=False, mutable=["batch_stats"]
    )
    out, stats = bn.normalize_train(z, gamma, beta, 1e-5)
    running = bn.update_running(running, stats, momentum=0.9)
    chex.assert_trees_all_close(out, flax_out, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(running, dict(updates["batch_stats"]), rtol=1e-6, atol=1e-7)

    # Evaluation mode: the running statistics just updated.
    variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
    z_new = z * 0.5 + 1.0
    flax_eval = layer.apply(variables, z_new, use_running_average=True)
    chex.assert_trees_all_close(
        bn.normalize_eval(z_new, gamma, beta, running, 1e-5), flax_eval, rtol=1e-5, atol=1e-5
    )
