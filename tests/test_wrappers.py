"""Tests of fjdl.wrappers: flax linen and equinox modules as models of the protocol.

Each wrapper is compared with the library's own call (``module.apply`` for flax, ``jax.vmap`` of
the module in inference or training mode for equinox), exactly, in eval and in train mode.
"""

import functools
import sys

import chex
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fjdl import model as fjdl_model
from fjdl.wrappers import BATCH_AXIS, EquinoxModel, FlaxModel, from_equinox, from_flax

M = 16


class FlaxCNN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Dropout -> Dense, on 8x8x1 images."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class FlaxPlain(nn.Module):
    """No batch norm, no dropout, no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(5)(x)))[:, 0]


class EqxNet(eqx.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear, for one example of 4 features."""

    linear1: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    dropout: eqx.nn.Dropout
    linear2: eqx.nn.Linear

    def __init__(self, key):
        key1, key2 = jax.random.split(key)
        self.linear1 = eqx.nn.Linear(4, 8, key=key1)
        self.norm = eqx.nn.BatchNorm(8, axis_name=BATCH_AXIS, momentum=0.9, mode="batch")
        self.dropout = eqx.nn.Dropout(0.5)
        self.linear2 = eqx.nn.Linear(8, 3, key=key2)

    def __call__(self, x, state, *, key=None):
        x, state = self.norm(self.linear1(x), state)
        x = self.dropout(jax.nn.relu(x), key=key)
        return self.linear2(x), state


make_eqx_net = eqx.nn.make_with_state(EqxNet)


def images(key):
    return jax.random.normal(key, (M, 8, 8, 1))


def dense(key):
    return jax.random.normal(key, (M, 4))


def assert_trees_equal(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    chex.assert_trees_all_equal(a, b)


def batch_eqx(module, train):
    """Equinox's own batched call of a stateful module (its docs' ``vmap`` with ``axis_name``)."""
    module = eqx.nn.inference_mode(module, value=not train)
    return jax.vmap(module, axis_name=BATCH_AXIS, in_axes=(0, None), out_axes=(0, None))


def wrapped(kind, key):
    """(wrapper, inputs) for each kind of wrapped module."""
    if kind == "flax":
        return from_flax(FlaxCNN(), jnp.zeros((1, 8, 8, 1))), images(key)
    if kind == "flax-plain":
        return from_flax(FlaxPlain(), jnp.zeros((1, 4))), dense(key)
    if kind == "equinox-module":
        return from_equinox(*make_eqx_net(jax.random.key(3))), dense(key)
    if kind == "equinox-factory":
        return from_equinox(make_eqx_net), dense(key)
    if kind == "equinox-stateless":
        return from_equinox(eqx.nn.MLP(4, 3, 8, 1, key=jax.random.key(3))), dense(key)
    raise AssertionError(kind)


KINDS = ["flax", "flax-plain", "equinox-module", "equinox-factory", "equinox-stateless"]
WITH_DROPOUT = ["flax", "equinox-module", "equinox-factory"]


# --- protocol and optional imports ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_follows_the_protocol(kind, getkey):
    net, x = wrapped(kind, getkey())
    fjdl_model.check_model(net)
    assert isinstance(net, fjdl_model.Model)
    params, state = net.init(getkey())
    out, new_state = net.apply(params, state, x, key=getkey(), train=True)
    assert out.shape[0] == M and bool(jnp.all(jnp.isfinite(out)))
    # The state keeps its structure, as a lax.scan carry must.
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    out, eval_state = net.apply(params, new_state, x)
    assert eval_state is new_state


@pytest.mark.parametrize(
    ("missing", "call", "package"),
    [
        ("flax.linen", lambda: from_flax(FlaxPlain(), jnp.zeros((1, 4))), "flax"),
        ("equinox", lambda: from_equinox(make_eqx_net), "equinox"),
    ],
)
def test_missing_optional_dependency_says_what_to_install(monkeypatch, missing, call, package):
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ImportError, match=f"pip install {package}"):
        call()


def test_wrong_kinds_of_module_are_refused():
    with pytest.raises(TypeError, match="flax.linen.Module"):
        from_flax(eqx.nn.Linear(2, 2, key=jax.random.key(0)), jnp.zeros((1, 2)))
    with pytest.raises(TypeError, match="equinox Module"):
        from_equinox(FlaxPlain())
    with pytest.raises(TypeError, match="equinox Module"):
        from_equinox(3)
    with pytest.raises(ValueError, match="batch axis"):
        from_flax(FlaxPlain(), jnp.float32(1.0))
    with pytest.raises(ValueError, match="factory"):
        from_equinox(make_eqx_net, make_eqx_net(jax.random.key(0))[1])


# --- flax ---------------------------------------------------------------------------------------


def test_flax_init_is_module_init(getkey):
    net, _ = wrapped("flax", getkey())
    key = getkey()
    params, state = net.init(key)
    params_key, dropout_key = jax.random.split(key)
    variables = FlaxCNN().init(
        {"params": params_key, "dropout": dropout_key}, jnp.zeros((1, 8, 8, 1)), train=False
    )
    assert_trees_equal(params, variables["params"])
    assert set(state) == {"batch_stats"}
    assert_trees_equal(state["batch_stats"], variables["batch_stats"])
    chex.assert_trees_all_equal(state["batch_stats"]["BatchNorm_0"]["var"], jnp.ones(4))
    assert net.takes_train and net.example == jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)


def test_flax_module_without_train_or_state(getkey):
    net, x = wrapped("flax-plain", getkey())
    assert not net.takes_train
    params, state = net.init(getkey())
    assert state == {}
    out, new_state = net.apply(params, state, x, train=True)
    chex.assert_trees_all_equal(out, FlaxPlain().apply({"params": params}, x))
    assert new_state == {}


def test_flax_eval_apply_is_module_apply(getkey):
    net, x = wrapped("flax", getkey())
    params, state = net.init(getkey())
    out, new_state = net.apply(params, state, x)
    want = FlaxCNN().apply({"params": params, **state}, x, train=False)
    chex.assert_trees_all_equal(out, want)
    assert new_state is state


def test_flax_train_apply_is_module_apply(getkey):
    net, x = wrapped("flax", getkey())
    params, state = net.init(getkey())
    key = getkey()
    out, new_state = net.apply(params, state, x, key=key, train=True)
    want, updates = FlaxCNN().apply(
        {"params": params, **state}, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
    )
    chex.assert_trees_all_equal(out, want)
    assert_trees_equal(new_state, updates)
    moved = new_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(moved, state["batch_stats"]["BatchNorm_0"]["mean"])


# --- equinox ------------------------------------------------------------------------------------


def test_equinox_init_of_a_module_is_its_own_arrays(getkey):
    module, eqx_state = make_eqx_net(getkey())
    net = from_equinox(module, eqx_state)
    params, state = net.init(getkey())
    want, _ = eqx.partition(module, eqx.is_inexact_array)
    assert_trees_equal(params, want)
    assert params.linear1.weight is module.linear1.weight  # the module's arrays, key unused
    assert params.dropout.p is None  # static fields stay in the wrapper
    assert isinstance(state, eqx.nn.State)
    assert_trees_equal(state, eqx_state)
    assert net.stateful and net.takes_key and net.has_dropout


def test_equinox_factory_builds_a_fresh_module_per_key(getkey):
    net = from_equinox(make_eqx_net)
    key = getkey()
    params, state = net.init(key)
    module, eqx_state = make_eqx_net(key)
    assert_trees_equal(params, eqx.partition(module, eqx.is_inexact_array)[0])
    assert_trees_equal(state, eqx_state)
    other, _ = net.init(getkey())
    assert not np.allclose(params.linear1.weight, other.linear1.weight)
    # Many models at once: init under vmap, one module per key.
    stacked, _ = jax.vmap(net.init)(jax.random.split(getkey(), 3))
    assert stacked.linear1.weight.shape == (3, 8, 4)


def test_equinox_module_with_batch_norm_built_directly(getkey):
    module = EqxNet(getkey())  # not through make_with_state: the wrapper makes the state
    net = from_equinox(module)
    params, state = net.init(getkey())
    assert isinstance(state, eqx.nn.State)
    out, _ = net.apply(params, state, dense(getkey()), key=getkey(), train=True)
    assert out.shape == (M, 3)


def test_equinox_stateless_module(getkey):
    net, x = wrapped("equinox-stateless", getkey())
    params, state = net.init(getkey())
    assert state == {} and not net.stateful and not net.has_dropout
    out, new_state = net.apply(params, state, x, train=True)
    module = eqx.combine(params, net.static)
    chex.assert_trees_all_equal(out, jax.vmap(module)(x))
    assert new_state == {}


@pytest.mark.parametrize("kind", ["equinox-module", "equinox-factory"])
def test_equinox_eval_apply_is_vmap_in_inference_mode(kind, getkey):
    net, x = wrapped(kind, getkey())
    params, state = net.init(getkey())
    out, new_state = net.apply(params, state, x)
    want, _ = batch_eqx(eqx.combine(params, net.static), train=False)(x, state)
    chex.assert_trees_all_equal(out, want)
    assert new_state is state


@pytest.mark.parametrize("kind", ["equinox-module", "equinox-factory"])
def test_equinox_train_apply_is_vmap_in_training_mode(kind, getkey):
    net, x = wrapped(kind, getkey())
    params, state = net.init(getkey())
    key = getkey()
    out, new_state = net.apply(params, state, x, key=key, train=True)
    module = eqx.combine(params, net.static)
    want, want_state = batch_eqx(module, train=True)(x, state, key=jax.random.split(key, M))
    chex.assert_trees_all_equal(out, want)
    assert_trees_equal(new_state, want_state)
    # The batch statistics moved the running ones, and the state given is still usable.
    assert not np.allclose(jax.tree_util.tree_leaves(new_state)[0], 0.0)
    net.apply(params, state, x, key=key, train=True)


def test_equinox_batch_norm_axis_name_must_match():
    module, state = make_eqx_net(jax.random.key(0))
    with pytest.raises(ValueError, match="axis_name"):
        from_equinox(module, state, axis_name="examples")


# --- both ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WITH_DROPOUT)
def test_dropout_depends_on_the_key_only(kind, getkey):
    net, x = wrapped(kind, getkey())
    params, state = net.init(getkey())
    key = getkey()
    out1, _ = net.apply(params, state, x, key=key, train=True)
    out2, _ = net.apply(params, state, x, key=key, train=True)
    out3, _ = net.apply(params, state, x, key=getkey(), train=True)
    chex.assert_trees_all_equal(out1, out2)
    assert not np.allclose(out1, out3)


@pytest.mark.parametrize("kind", WITH_DROPOUT)
def test_training_with_dropout_needs_a_key(kind, getkey):
    net, x = wrapped(kind, getkey())
    params, state = net.init(getkey())
    with pytest.raises(ValueError, match="key="):
        net.apply(params, state, x, train=True)
    net.apply(params, state, x)  # evaluation needs none


def test_equal_wrappers_hash_alike(getkey):
    flax_net = from_flax(FlaxCNN(), jnp.zeros((1, 8, 8, 1)))
    assert flax_net == from_flax(FlaxCNN(), np.ones((1, 8, 8, 1), np.float32))
    assert hash(flax_net) == hash(from_flax(FlaxCNN(), jax.ShapeDtypeStruct((1, 8, 8, 1), "f4")))
    assert flax_net != from_flax(FlaxCNN(), jnp.zeros((2, 8, 8, 1)))
    module, state = make_eqx_net(jax.random.key(0))
    eqx_net = from_equinox(module, state)
    assert eqx_net == from_equinox(module, state) and hash(eqx_net) == hash(
        from_equinox(module, state)
    )
    same_values = make_eqx_net(jax.random.key(0))  # other arrays, the same values
    assert eqx_net == from_equinox(*same_values)
    assert eqx_net != from_equinox(*make_eqx_net(jax.random.key(1)))
    assert from_equinox(make_eqx_net) == from_equinox(make_eqx_net)
    assert hash(from_equinox(make_eqx_net)) == hash(from_equinox(make_eqx_net))
    assert from_equinox(make_eqx_net) != eqx_net
    assert isinstance(flax_net, FlaxModel) and isinstance(eqx_net, EquinoxModel)


def test_compiled_init_of_two_modules_returns_each_ones_arrays(getkey):
    """Equal wrappers share compiled programs, and init's arrays are constants of the program, so
    wrappers of modules with other arrays must not be equal."""
    init = jax.jit(lambda key, net: net.init(key), static_argnums=1)
    for seed in (0, 1):
        module, state = make_eqx_net(jax.random.key(seed))
        params, _ = init(getkey(), from_equinox(module, state))
        chex.assert_trees_all_equal(params.linear1.weight, module.linear1.weight)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_through_params(kind, getkey):
    net, x = wrapped(kind, getkey())
    params, state = net.init(getkey())
    key = getkey()

    def loss(p):
        out, _ = net.apply(p, state, x, key=key, train=True)
        return jnp.mean(out**2)

    grads = jax.grad(loss)(params)
    chex.assert_trees_all_equal_structs(grads, params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(bool(jnp.any(g != 0)) for g in leaves)


@pytest.mark.parametrize("kind", KINDS)
def test_jit_with_the_wrapper_static_compiles_once(kind, getkey):
    net, x = wrapped(kind, getkey())
    again, _ = wrapped(kind, getkey())  # a second wrapper of an equal module
    assert again is not net and again == net

    traces = []

    @functools.partial(jax.jit, static_argnums=4)
    def run(params, state, x, key, model):
        traces.append(model)
        return model.apply(params, state, x, key=key, train=True)

    params, state = net.init(getkey())
    out, _ = run(params, state, x, getkey(), net)
    out_again, _ = run(params, state, x, getkey(), again)
    assert len(traces) == 1 and out_again.shape == out.shape


def test_default_weight_predicate_selects_kernels_and_weights(getkey):
    flax_params, _ = from_flax(FlaxCNN(), jnp.zeros((1, 8, 8, 1))).init(getkey())
    eqx_params, _ = from_equinox(make_eqx_net).init(getkey())

    def weights(params):
        leaves = jax.tree_util.tree_leaves_with_path(params)
        return [jax.tree_util.keystr(path) for path, leaf in leaves if leaf.ndim >= 2]

    assert weights(flax_params) == ["['Conv_0']['kernel']", "['Dense_0']['kernel']"]
    assert weights(eqx_params) == [".linear1.weight", ".linear2.weight"]
