"""fjdl.testing: the gradient assertion, the hypothesis strategies and the reference convnet."""

import functools
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


# ---------------------------------------------------------------------------------------------
# The reference convnet


def test_convnet_shapes_and_parameter_count():
    net = testing.ConvNet()
    params, state = net.init(jax.random.key(0))
    assert sum(p.size for p in jax.tree.leaves(params)) == 5178  # 144 + 32 + 4,608 + 64 + 330
    assert params["conv1"]["W"].shape == (3, 3, 1, 16) and params["conv2"]["W"].shape == (
        3,
        3,
        16,
        32,
    )
    assert params["dense"]["W"].shape == (32, 10) and params["dense"]["b"].shape == (10,)
    assert set(state) == {"conv1", "conv2"} and state["conv2"]["var"].shape == (32,)
    assert all(w.ndim >= 2 for name in net.layer_names for k, w in params[name].items() if k == "W")
    # He: std sqrt(2 / fan_in), fan_in = 3 * 3 * 16 for conv2.
    assert float(jnp.std(params["conv2"]["W"])) == pytest.approx(np.sqrt(2 / 144), rel=0.1)
    x = jax.random.normal(jax.random.key(1), (5, 8, 8, 1))
    logits, new_state = net.apply(params, state, x)
    assert logits.shape == (5, 10) and logits.dtype == jnp.float32
    assert hash(net) == hash(testing.ConvNet()) and net == testing.ConvNet()
    with jax.enable_x64(True):
        p64, s64 = net.init(jax.random.key(0), dtype=jnp.float64)
        assert net.apply(p64, s64, x.astype(jnp.float64))[0].dtype == jnp.float64


def test_convnet_train_uses_batch_statistics_and_updates_the_running_ones():
    net = testing.ConvNet(channels=(3, 4), n_classes=2, in_channels=2, bn_momentum=0.5)
    params, state = net.init(jax.random.key(0))
    x = 3.0 + jax.random.normal(jax.random.key(1), (6, 5, 7, 2))
    train_out, new_state = net.apply(params, state, x, train=True)
    eval_out, same_state = net.apply(params, state, x)
    assert not np.allclose(train_out, eval_out)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), same_state, state))
    conv = functools.partial(
        jax.lax.conv_general_dilated,
        window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    # Running mean: 0.5 * 0 + 0.5 * (mean of conv1's output over examples and positions).
    z = conv(x, params["conv1"]["W"])
    np.testing.assert_allclose(new_state["conv1"]["mean"], 0.5 * z.mean(axis=(0, 1, 2)), rtol=1e-5)
    # With running statistics equal to this batch's, eval mode gives the training output.
    stats = {"conv1": {"mean": z.mean(axis=(0, 1, 2)), "var": z.var(axis=(0, 1, 2))}}
    a1 = jax.nn.relu((z - stats["conv1"]["mean"]) / jnp.sqrt(stats["conv1"]["var"] + net.bn_eps))
    z2 = conv(a1, params["conv2"]["W"])
    stats["conv2"] = {"mean": z2.mean(axis=(0, 1, 2)), "var": z2.var(axis=(0, 1, 2))}
    np.testing.assert_allclose(net.apply(params, stats, x)[0], train_out, rtol=1e-4, atol=1e-5)


def test_convnet_dropout_is_keyed_and_only_in_training():
    net = testing.ConvNet(channels=(2,), n_classes=3, keep_prob=0.5)
    params, state = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 4, 4, 1))
    with pytest.raises(ValueError, match="key"):
        net.apply(params, state, x, train=True)
    a, _ = net.apply(params, state, x, key=jax.random.key(2), train=True)
    b, _ = net.apply(params, state, x, key=jax.random.key(2), train=True)
    c, _ = net.apply(params, state, x, key=jax.random.key(3), train=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Eval mode: no dropout, no key needed, the key ignored.
    np.testing.assert_array_equal(
        net.apply(params, state, x)[0], net.apply(params, state, x, key=jax.random.key(4))[0]
    )


def test_convnet_validates():
    with pytest.raises(TypeError, match="channels"):
        testing.ConvNet(channels=16)
    with pytest.raises(ValueError, match="channels"):
        testing.ConvNet(channels=())
    with pytest.raises(ValueError, match="keep_prob"):
        testing.ConvNet(keep_prob=0.0)
    net = testing.ConvNet()
    params, state = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(m, H, W, 1\)"):
        net.apply(params, state, jnp.ones((2, 64)))
    model.check_model(net)  # the model protocol
