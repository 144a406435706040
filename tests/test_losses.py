import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fjdl import losses


def _np_bce(z, y):
    a = 1 / (1 + np.exp(-z))
    return np.mean(-y * np.log(a) - (1 - y) * np.log(1 - a))


class CrossEntropyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_binary_closed_form(self):
        z = np.array([-3.0, -0.5, 0.0, 0.7, 4.0], np.float32)
        y = np.array([0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
        chex.assert_trees_all_close(
            self.variant(losses.binary_cross_entropy)(z, y), _np_bce(z, y), rtol=1e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_closed_form(self):
        z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
        y = np.array([2, 0], np.int32)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        expected = -np.mean(np.log(p[np.arange(2), y]))
        chex.assert_trees_all_close(
            self.variant(losses.softmax_cross_entropy)(z, y), expected, rtol=1e-6
        )
        one_hot = np.eye(3, dtype=np.float32)[y]
        chex.assert_trees_all_close(
            self.variant(losses.softmax_cross_entropy)(z, one_hot), expected, rtol=1e-6
        )


def test_binary_stable_for_huge_logits():
    z = jnp.array([1000.0, -1000.0, 1000.0, -1000.0])
    y = jnp.array([1.0, 0.0, 0.0, 1.0])
    value = losses.binary_cross_entropy(z, y)
    np.testing.assert_allclose(value, (0 + 0 + 1000 + 1000) / 4)
    g = jax.grad(losses.binary_cross_entropy)(z, y)
    np.testing.assert_allclose(g, np.array([0.0, 0.0, 1.0, -1.0]) / 4)


@pytest.mark.parametrize("y", [0.0, 1.0])
def test_binary_gradient_is_sigmoid_minus_y_at_zero(y):
    g = jax.grad(losses.binary_cross_entropy)(jnp.zeros(1), jnp.array([y]))
    np.testing.assert_allclose(g, [0.5 - y])


@given(
    hnp.arrays(np.float32, st.integers(1, 20), elements=st.floats(-30, 30, width=32)),
    st.integers(0, 2**20),
)
def test_binary_gradient_everywhere(z, seed):
    y = (np.random.default_rng(seed).random(z.shape) < 0.5).astype(np.float32)
    g = jax.grad(losses.binary_cross_entropy)(z, y)
    np.testing.assert_allclose(g, (1 / (1 + np.exp(-z.astype(np.float64))) - y) / z.size, atol=1e-7)


def test_softmax_stable_and_gradient():
    z = jnp.array([[1000.0, 0.0, -1000.0]])
    assert float(losses.softmax_cross_entropy(z, jnp.array([0]))) == 0.0
    np.testing.assert_allclose(losses.softmax_cross_entropy(z, jnp.array([1])), 1000.0)
    g = jax.grad(losses.softmax_cross_entropy)(jnp.array([[0.0, 0.0]]), jnp.array([1]))
    np.testing.assert_allclose(g, [[0.5, -0.5]])


def _params():
    return (
        {"W": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "b": jnp.array([100.0, 100.0])},
        {"W": jnp.array([[2.0], [-1.0]]), "b": jnp.array([7.0])},
    )


def test_l2_penalty_closed_form():
    # ||W1||^2 = 1 + 4 + 9 + 0.25 = 14.25, ||W2||^2 = 5; biases are not penalized.
    np.testing.assert_allclose(losses.l2_penalty(_params(), 0.7, 10), 0.7 / 20 * 19.25, rtol=1e-6)


def test_l1_penalty_closed_form():
    # |W1| = 6.5, |W2| = 3.
    np.testing.assert_allclose(losses.l1_penalty(_params(), 0.7, 10), 0.7 / 20 * 9.5, rtol=1e-6)


@given(st.floats(0.01, 100.0), st.floats(0.0, 10.0))
def test_l2_scales_with_square_of_weights(c, lambd):
    p = _params()
    scaled = jax.tree.map(lambda x: x * np.float32(c), p)
    np.testing.assert_allclose(
        losses.l2_penalty(scaled, lambd, 7),
        c**2 * losses.l2_penalty(p, lambd, 7),
        rtol=2e-5,
        atol=1e-30,
    )


def test_cost_adds_penalties():
    p = _params()
    z = jnp.array([0.3, -0.2])
    y = jnp.array([1.0, 0.0])
    expected = (
        losses.binary_cross_entropy(z, y)
        + losses.l2_penalty(p, 0.5, 2)
        + losses.l1_penalty(p, 0.1, 2)
    )
    np.testing.assert_allclose(losses.cost(z, y, p, lambd=0.5, l1=0.1), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.cost(z, y), losses.binary_cross_entropy(z, y))


def test_mean_squared_error():
    np.testing.assert_allclose(
        losses.mean_squared_error(jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0])), 2.5
    )


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: losses.binary_cross_entropy(jnp.zeros(3), jnp.zeros(4)), ValueError, "same shape"),
        (
            lambda: losses.binary_cross_entropy(jnp.zeros(2), jnp.array([0.0, 2.0])),
            ValueError,
            "labels",
        ),
        (lambda: losses.binary_cross_entropy(jnp.zeros(0), jnp.zeros(0)), ValueError, "empty"),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 3])),
            ValueError,
            "labels",
        ),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, -1])),
            ValueError,
            "labels",
        ),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros(5, jnp.int32)),
            ValueError,
            "shape",
        ),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros(2)),
            TypeError,
            "integers",
        ),
        (lambda: losses.l2_penalty(_params(), -1.0, 3), ValueError, "lambd"),
        (lambda: losses.l2_penalty(_params(), 1.0, 0), ValueError, "m"),
        (lambda: losses.cost(jnp.zeros(2), jnp.zeros(2), lambd=1.0), ValueError, "params"),
        (lambda: losses.cost(jnp.zeros(2), jnp.zeros(2), output="tanh"), ValueError, "output"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# The weights of any pytree, and the Loss objects


def _conv_tree():
    return {
        "conv1": {"W": jnp.ones((3, 3, 1, 4)), "gamma": jnp.ones(4), "beta": jnp.zeros(4)},
        "dense": {"W": jnp.full((4, 2), 2.0), "b": jnp.ones(2)},
    }


def test_is_weight_selects_kernels_not_biases_or_scales():
    from fjdl import optim
    from fjdl.model import MLP, init

    params, _ = init(jax.random.key(0), MLP((2, 3, 1), batchnorm=True))
    assert optim.weights_only(params) == (
        {"W": True, "gamma": False, "beta": False},
        {"W": True, "b": False},
    )
    mask = optim.weights_only(_conv_tree())
    assert mask == {
        "conv1": {"W": True, "gamma": False, "beta": False},
        "dense": {"W": True, "b": False},
    }
    # equinox keeps a convolution's bias as (C, 1, 1): excluded by its name
    eqx_like = {"weight": jnp.ones((4, 1, 3, 3)), "bias": jnp.ones((4, 1, 1))}
    assert optim.weights_only(eqx_like) == {"weight": True, "bias": False}


def test_penalties_over_any_pytree_match_the_formula():
    tree = _conv_tree()
    # sum W^2 = 36 + 8 * 4 = 68; sum |W| = 36 + 8 * 2 = 52
    np.testing.assert_allclose(losses.l2_penalty(tree, 0.5, 10), 0.5 / 20 * 68, rtol=1e-6)
    np.testing.assert_allclose(losses.l1_penalty(tree, 0.5, 10), 0.5 / 20 * 52, rtol=1e-6)
    only_dense = lambda path, leaf: "dense" in jax.tree_util.keystr(path) and leaf.ndim >= 2  # noqa: E731
    np.testing.assert_allclose(
        losses.l2_penalty(tree, 0.5, 10, is_weight=only_dense), 0.5 / 20 * 32, rtol=1e-6
    )
    z, y = jnp.zeros(3), jnp.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(
        losses.cost(z, y, tree, output="binary", lambd=0.5, is_weight=only_dense),
        np.log(2) + 0.5 / 6 * 32,
        rtol=1e-6,
    )


def test_get_builds_losses_from_names_functions_and_losses():
    out = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    y = jnp.array([0, 1, 1])
    soft = losses.get("softmax")
    np.testing.assert_allclose(soft.value(out, y), losses.softmax_cross_entropy(out, y))
    np.testing.assert_allclose(soft.metric(out, y), 2 / 3, rtol=1e-6)
    np.testing.assert_array_equal(soft.predict(out), [0, 1, 0])
    assert losses.get("sigmoid") is losses.get("binary")
    assert losses.get("linear") is losses.get("mse") and losses.get("mse").metric is None
    # a binary output of shape (m, 1), as flax's Dense(1) gives
    logits = jnp.array([[1.0], [-2.0]])
    np.testing.assert_allclose(
        losses.get("binary").value(logits, jnp.array([1.0, 0.0])),
        losses.binary_cross_entropy(logits[:, 0], jnp.array([1.0, 0.0])),
    )

    def hinge(out, y):
        return jnp.mean(jnp.maximum(0.0, 1.0 - out * y))

    custom = losses.get(hinge, metric=lambda out, y: jnp.mean(jnp.sign(out) == y))
    assert custom.name == "hinge" and custom.labels == "any"
    assert custom == losses.get(hinge, metric=custom.metric)  # hashable, equal: one compilation
    assert hash(custom) == hash(losses.get(custom))


@pytest.mark.parametrize(
    "loss, exc, match",
    [("hinge", ValueError, "loss must be one of"), (3, TypeError, "loss must be a name")],
)
def test_get_refuses_unknown_losses(loss, exc, match):
    with pytest.raises(exc, match=match):
        losses.get(loss)
