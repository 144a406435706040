import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fjdl import model
from fjdl.model import MLP


def _np_forward(params, x, activation=lambda z: np.maximum(z, 0)):
    a = np.asarray(x, np.float64)
    for l, p in enumerate(params):
        z = a @ np.asarray(p["W"], np.float64) + np.asarray(p["b"], np.float64)
        a = z if l == len(params) - 1 else activation(z)
    return a


class ApplyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy_forward(self):
        cfg = MLP((3, 6, 4, 1))
        params, state = model.init(jax.random.key(0), cfg)
        x = jax.random.normal(jax.random.key(1), (7, 3))
        logits, new_state = self.variant(lambda p, s, x: model.apply(cfg, p, s, x))(
            params, state, x
        )
        chex.assert_shape(logits, (7,))
        chex.assert_trees_all_close(logits, _np_forward(params, x)[:, 0], rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_equal(new_state, state)

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_output_shape_and_tanh(self):
        cfg = MLP((3, 5, 4), activation="tanh", output="softmax")
        params, state = model.init(jax.random.key(0), cfg, scheme="xavier")
        x = jax.random.normal(jax.random.key(2), (6, 3))
        logits, _ = self.variant(lambda p, s, x: model.apply(cfg, p, s, x))(params, state, x)
        chex.assert_shape(logits, (6, 4))
        chex.assert_trees_all_close(logits, _np_forward(params, x, np.tanh), rtol=1e-5, atol=1e-6)


def test_config_is_hashable_and_normalized():
    a = MLP([2, 3, 1], keep_probs=0.8)
    b = MLP((2, 3, 1), keep_probs=(0.8,))
    assert a == b and hash(a) == hash(b)
    assert a.sizes == (2, 3, 1) and a.keep_probs == (0.8,)


def test_dropout_only_in_training():
    cfg = MLP((4, 50, 1), keep_probs=0.5)
    params, state = model.init(jax.random.key(0), cfg)
    x = jnp.ones((3, 4))
    eval_a, _ = model.apply(cfg, params, state, x)
    eval_b, _ = model.apply(cfg, params, state, x, key=jax.random.key(9))
    chex.assert_trees_all_equal(eval_a, eval_b)
    train_a, _ = model.apply(cfg, params, state, x, key=jax.random.key(1), train=True)
    train_b, _ = model.apply(cfg, params, state, x, key=jax.random.key(1), train=True)
    train_c, _ = model.apply(cfg, params, state, x, key=jax.random.key(2), train=True)
    chex.assert_trees_all_equal(train_a, train_b)
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_c)


def test_dropout_matches_manual_masks():
    cfg = MLP((3, 8, 6, 1), keep_probs=(0.7, 0.9))
    params, state = model.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    key = jax.random.key(5)
    logits, _ = model.apply(cfg, params, state, x, key=key, train=True)
    k1, k2 = jax.random.split(key, 2)  # one key per hidden layer
    from fjdl import nn

    a1 = nn.dropout(k1, nn.relu(x @ params[0]["W"] + params[0]["b"]), 0.7)
    a2 = nn.dropout(k2, nn.relu(a1 @ params[1]["W"] + params[1]["b"]), 0.9)
    chex.assert_trees_all_close(logits, (a2 @ params[2]["W"] + params[2]["b"])[:, 0], rtol=1e-6)


def test_batchnorm_layers_and_state():
    cfg = MLP((3, 5, 4, 1), batchnorm=True, bn_momentum=0.9)
    params, state = model.init(jax.random.key(0), cfg)
    assert set(params[0]) == {"W", "gamma", "beta"} and set(params[2]) == {"W", "b"}
    assert state[2] == {}
    x = jax.random.normal(jax.random.key(1), (16, 3)) * 3 + 1
    logits, new_state = model.apply(cfg, params, state, x, train=True)
    z1 = x @ params[0]["W"]
    chex.assert_trees_all_close(new_state[0]["mean"], 0.1 * z1.mean(0), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new_state[0]["var"], 0.9 + 0.1 * z1.var(0), rtol=1e-5)
    # Eval mode uses the running statistics and leaves the state alone.
    eval_logits, same = model.apply(cfg, params, new_state, x)
    chex.assert_trees_all_equal(same, new_state)
    assert not np.allclose(eval_logits, logits)


def test_batchnorm_eval_with_batch_stats_equals_train():
    cfg = MLP((2, 4, 1), batchnorm=True)
    params, state = model.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (32, 2))
    train_logits, _ = model.apply(cfg, params, state, x, train=True)
    z1 = x @ params[0]["W"]
    stats = ({"mean": z1.mean(0), "var": z1.var(0)}, {})
    eval_logits, _ = model.apply(cfg, params, stats, x)
    chex.assert_trees_all_close(eval_logits, train_logits, rtol=1e-5, atol=1e-6)


def test_vmap_over_models():
    cfg = MLP((2, 4, 1), batchnorm=True)
    keys = jax.random.split(jax.random.key(0), 3)
    params, state = jax.vmap(lambda k: model.init(k, cfg))(keys)
    x = jax.random.normal(jax.random.key(1), (8, 2))
    logits, new_state = jax.vmap(lambda p, s: model.apply(cfg, p, s, x, train=True))(params, state)
    chex.assert_shape(logits, (3, 8))
    for i in range(3):
        p_i, s_i = jax.tree.map(lambda a, i=i: a[i], (params, state))
        l_i, ns_i = model.apply(cfg, p_i, s_i, x, train=True)
        chex.assert_trees_all_close(logits[i], l_i, rtol=1e-6)
        chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], new_state), ns_i, rtol=1e-6)


def test_float64():
    with jax.enable_x64(True):
        cfg = MLP((2, 3, 1), batchnorm=True)
        params, state = model.init(jax.random.key(0), cfg, dtype=jnp.float64)
        logits, new_state = model.apply(
            cfg, params, state, jnp.ones((4, 2), jnp.float64), train=True
        )
        assert logits.dtype == jnp.float64
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(new_state))


def test_predict():
    cfg = MLP((2, 3))
    cfg_sm = MLP((2, 3), output="softmax")
    params, state = model.init(jax.random.key(0), cfg_sm)
    x = jax.random.normal(jax.random.key(1), (5, 2))
    logits, _ = model.apply(cfg_sm, params, state, x)
    np.testing.assert_array_equal(model.predict(cfg_sm, params, state, x), np.argmax(logits, -1))
    cfg = MLP((2, 1))
    params, state = model.init(jax.random.key(0), cfg)
    logits, _ = model.apply(cfg, params, state, x)
    np.testing.assert_array_equal(
        model.predict(cfg, params, state, x), (logits > 0).astype(np.int32)
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MLP((2,)), "sizes"),
        (lambda: MLP((2, 0, 1)), r"sizes\[1\]"),
        (lambda: MLP((2, 3, 1), activation="swish"), "activation"),
        (lambda: MLP((2, 3, 1), output="tanh"), "output"),
        (lambda: MLP((2, 3, 1), output="softmax"), "softmax"),
        (lambda: MLP((2, 3, 1), keep_probs=(0.5, 0.5)), "keep_probs"),
        (lambda: MLP((2, 3, 1), keep_probs=0.0), "keep_probs"),
        (lambda: MLP((2, 3, 1), keep_probs=1.2), "keep_probs"),
        (lambda: MLP((2, 3, 1), bn_momentum=1.0), "bn_momentum"),
    ],
)
def test_bad_config(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_inputs_name_the_layer():
    cfg = MLP((3, 4, 1), keep_probs=0.5)
    params, state = model.init(jax.random.key(0), cfg)
    with pytest.raises(ValueError, match=r"layer 1 expects x of shape \(m, 3\)"):
        model.apply(cfg, params, state, jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="layer 1 expects"):
        model.apply(cfg, params, state, jnp.ones(3))
    bad = (params[0], {"W": jnp.ones((5, 1)), "b": jnp.zeros(1)})
    with pytest.raises(ValueError, match=r"layer 2 W must have shape \(4, 1\)"):
        model.apply(cfg, bad, state, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="key"):
        model.apply(cfg, params, state, jnp.ones((5, 3)), train=True)
    with pytest.raises(TypeError, match="MLP"):
        model.init(jax.random.key(0), (3, 4, 1))


@pytest.mark.parametrize("hidden", [8, model.NARROW_WIDTH + 1])
def test_both_internal_layouts_agree_with_numpy(hidden):
    cfg = MLP((3, hidden, 4), output="softmax", keep_probs=0.5, batchnorm=True)
    params, state = model.init(jax.random.key(0), cfg)
    x = jax.random.normal(jax.random.key(1), (9, 3))
    key = jax.random.key(2)
    logits, new_state = model.apply(cfg, params, state, x, key=key, train=True)
    from fjdl import batchnorm, nn

    z, stats = batchnorm.normalize_train(x @ params[0]["W"], params[0]["gamma"], params[0]["beta"])
    a = nn.dropout(jax.random.split(key, 1)[0], nn.relu(z), 0.5)
    chex.assert_trees_all_close(logits, a @ params[1]["W"] + params[1]["b"], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        new_state[0], batchnorm.update_running(state[0], stats), rtol=1e-5, atol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# The protocol


def _lin_init(key):
    return {"W": jax.random.normal(key, (3, 2))}, None


def _lin_apply(params, state, x, *, key=None, train=False):
    return x @ params["W"], state


def test_mlp_follows_the_protocol():
    cfg = MLP((3, 4, 1), batchnorm=True)
    assert isinstance(cfg, model.Model)
    model.check_model(cfg)
    key, x = jax.random.key(0), jax.random.normal(jax.random.key(1), (5, 3))
    chex.assert_trees_all_equal(cfg.init(key), model.init(key, cfg))
    params, state = cfg.init(key)
    chex.assert_trees_all_equal(
        cfg.apply(params, state, x, train=True), model.apply(cfg, params, state, x, train=True)
    )
    assert MLP((2, 1)).loss == "binary" and MLP((2, 3), output="softmax").loss == "softmax"
    assert MLP((2, 1), output="linear").loss == "mse"


def test_from_functions_is_a_hashable_model_equal_for_the_same_functions():
    net = model.from_functions(_lin_init, _lin_apply, name="lin")
    model.check_model(net)
    assert net == model.from_functions(_lin_init, _lin_apply, name="lin")
    assert hash(net) == hash(model.from_functions(_lin_init, _lin_apply, name="lin"))
    assert net != model.from_functions(_lin_init, _lin_apply, name="other")
    params, state = net.init(jax.random.key(0))
    assert state == {}  # None means "no state"
    out, _ = net.apply(params, state, jnp.ones((4, 3)), train=True)
    assert out.shape == (4, 2)


def test_check_model_names_what_is_missing():
    with pytest.raises(TypeError, match="model must follow the model protocol.*no init or apply"):
        model.check_model(lambda x: x)

    class Unhashable:
        __hash__ = None

        def init(self, key):
            return {}, {}

        def apply(self, params, state, x, *, key=None, train=False):
            return x, state

    with pytest.raises(TypeError, match="model must be hashable"):
        model.check_model(Unhashable())
    with pytest.raises(TypeError, match="apply must be a function"):
        model.from_functions(_lin_init, 3)
