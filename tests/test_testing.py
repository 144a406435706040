"""fjdl.testing: the gradient assertion and the hypothesis strategies."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fjdl import losses, model, testing


def test_assert_gradients_match_passes_and_returns_the_result():
    with jax.enable_x64(True):
        theta = jnp.array([0.5, -1.0, 2.0], jnp.float64)
        result = testing.assert_gradients_match(lambda t: jnp.sum(jnp.tanh(t) ** 2), theta)
        # Given grads: d/dt tanh(t)^2 = 2 tanh(t) (1 - tanh(t)^2).
        grads = 2 * jnp.tanh(theta) * (1 - jnp.tanh(theta) ** 2)
        testing.assert_gradients_match(lambda t: jnp.sum(jnp.tanh(t) ** 2), theta, grads)
    assert result.difference < 1e-7 and result.dtype == "float64"


def test_assert_gradients_match_names_difference_leaf_and_coordinate():
    params = {"w": jnp.array([1.0, 2.0]), "v": jnp.array([[0.5, -0.5]])}

    def f(p):
        return jnp.sum(p["w"] ** 3) + jnp.sum(jnp.sin(p["v"]))

    wrong = {"w": jnp.array([3.0, 13.0]), "v": jnp.cos(params["v"])}  # dw[1] should be 12
    with pytest.raises(AssertionError) as info:
        testing.assert_gradients_match(f, params, wrong)
    message = str(info.value)
    # Expected difference: |1| / (||(3, 12, cos .5, cos .5)|| + ||(3, 13, cos .5, cos .5)||).
    c = np.cos(0.5)
    expected = 1 / (np.sqrt(9 + 144 + 2 * c**2) + np.sqrt(9 + 169 + 2 * c**2))
    assert f"{expected:.2e}" in message
    assert "['w']" in message and "(1)" in message and "bug" in message


def test_assert_gradients_match_threshold_and_validation():
    theta = jnp.array([1.0, 2.0])
    f = lambda t: jnp.sum(t**2)  # noqa: E731
    off = jnp.array([2.0, 4.0 + 1e-4])  # relative difference ~1e-5
    with pytest.raises(AssertionError):
        testing.assert_gradients_match(f, theta, off)
    testing.assert_gradients_match(f, theta, off, max_difference=1e-4)
    with pytest.raises(ValueError, match="max_difference"):
        testing.assert_gradients_match(f, theta, max_difference=0.0)


def test_import_fjdl_does_not_import_testing_or_hypothesis():
    code = "import sys, fjdl; print('fjdl.testing' in sys.modules, 'hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@given(
    testing.mlp_configs(
        min_layers=2, max_layers=3, max_width=4, activations=("relu",), outputs=("softmax",),
        batchnorm=True, dropout=True,
    )
)  # fmt: skip
def test_mlp_configs_respect_their_bounds(config):
    assert 2 <= config.n_layers <= 3
    assert all(1 <= n <= 4 for n in config.sizes[:-1])
    assert 2 <= config.sizes[-1] <= 4
    assert config.activation == "relu" and config.output == "softmax" and config.batchnorm
    assert len(config.keep_probs) == config.n_layers - 1
    assert all(0.5 <= k <= 1 for k in config.keep_probs)


@given(testing.mlp_configs())
def test_mlp_configs_default_to_smooth_networks_without_dropout(config):
    assert config.activation in ("tanh", "sigmoid") and config.keep_probs is None
    assert config.output in ("sigmoid", "softmax")
    assert config.sizes[-1] == 1 or config.output == "softmax"


@settings(max_examples=10)
@given(data=st.data())
def test_params_and_datasets_fit_the_config(data):
    config = data.draw(testing.mlp_configs(outputs=("sigmoid", "softmax", "linear")))
    params = data.draw(testing.params_for(config))
    X, Y = data.draw(testing.datasets(config, min_examples=3, max_examples=6))
    model.check_params(config, params)
    assert all(a.dtype == np.float64 for a in jax.tree.leaves(params))
    m = X.shape[0]
    assert 3 <= m <= 6 and X.shape == (m, config.sizes[0]) and X.dtype == np.float64
    if config.output == "softmax":
        assert Y.shape == (m,) and Y.dtype == np.int32
        assert 0 <= Y.min() and Y.max() < config.sizes[-1]
    elif config.output == "sigmoid":
        assert Y.shape == (m,) and set(np.unique(Y)) == {0.0, 1.0}
    else:
        assert Y.shape == (m,) and np.all(np.isfinite(Y))
    # The drawn pieces fit fjdl's forward pass and cost (shapes traced abstractly; the concrete
    # labels are range-checked by the loss).
    state = tuple(
        {"mean": jnp.zeros(n), "var": jnp.ones(n)} if config.is_bn_layer(l) else {}
        for l, n in enumerate(config.sizes[1:])
    )
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    y = jnp.asarray(Y) if config.output == "softmax" else jnp.asarray(Y, jnp.float32)

    def cost(p, x):
        return losses.cost(model.apply(config, p, state, x)[0], y, output=config.output)

    out = jax.eval_shape(cost, p32, jnp.asarray(X, jnp.float32))
    assert out.shape == () and out.dtype == jnp.float32


def test_params_for_draws_nonzero_biases_and_batchnorm_parameters():
    config = model.MLP((3, 5, 1), batchnorm=True)

    @settings(max_examples=5)
    @given(testing.params_for(config, dtype=np.float32, bias_scale=0.2))
    def check(params):
        assert params[0]["gamma"].dtype == np.float32
        assert np.any(params[0]["gamma"] != 1) and np.any(params[0]["beta"] != 0)
        assert np.any(params[1]["b"] != 0)

    check()


def test_strategies_validate_their_arguments_eagerly():
    with pytest.raises(TypeError, match="MLP"):
        testing.params_for((2, 3, 1))
    with pytest.raises(TypeError, match="MLP"):
        testing.datasets((2, 3, 1))
    with pytest.raises(ValueError, match="activations"):
        testing.mlp_configs(activations=("swish",))
    with pytest.raises(ValueError, match="outputs"):
        testing.mlp_configs(outputs=("tanh",))
    with pytest.raises(ValueError, match="max_width"):
        testing.mlp_configs(max_width=0)
    with pytest.raises(ValueError, match="min_examples"):
        testing.datasets(model.MLP((2, 1)), min_examples=0)
