"""Tests for fjdl.checkpoint: exact round trips, atomic writes, refusing bad files."""

import io
import json
import os
import pathlib
import tempfile
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fjdl import checkpoint
from fjdl.checkpoint import CheckpointError


class AdamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


class MomentumState(NamedTuple):
    count: jax.Array
    v: Any


class TrainState(NamedTuple):
    """The shape of fjdl.train.TrainState."""

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array
    epoch: jax.Array
    key: jax.Array


def make_state(key, sizes=(4, 8, 3), dtype=jnp.float32, optimizer="adam", step=0):
    """A realistic state: a batch-norm hidden layer, a dense output layer, random values."""
    keys = jax.random.split(key, 8)
    n0, n1, n2 = sizes
    params = (
        {
            "W": jax.random.normal(keys[0], (n0, n1), dtype),
            "gamma": 1 + jax.random.normal(keys[1], (n1,), dtype),
            "beta": jax.random.normal(keys[2], (n1,), dtype),
        },
        {"W": jax.random.normal(keys[3], (n1, n2), dtype), "b": jnp.zeros((n2,), dtype)},
    )
    model_state = (
        {"mean": jax.random.normal(keys[4], (n1,), dtype), "var": jnp.ones((n1,), dtype)},
        {},
    )
    count = jnp.asarray(step, jnp.int32)
    if optimizer == "adam":
        mu = jax.tree.map(lambda p: 0.1 * p, params)
        nu = jax.tree.map(lambda p: p * p, params)
        opt_state = AdamState(count, mu, nu)
    else:
        opt_state = MomentumState(count, jax.tree.map(lambda p: -p, params))
    return TrainState(
        params,
        model_state,
        opt_state,
        jnp.asarray(step, jnp.int32),
        jnp.asarray(step // 2, jnp.int32),
        jax.random.fold_in(keys[5], 7),
    )


def assert_identical(a, b):
    """Same structure, same dtypes, same values bit for bit (keys included)."""
    chex.assert_trees_all_equal_structs(a, b)
    chex.assert_trees_all_equal_dtypes(a, b)
    chex.assert_trees_all_equal_shapes(a, b)
    chex.assert_trees_all_equal(a, b)


def rewrite(path, change):
    """Rewrite a checkpoint's description with ``change(description)`` (arrays kept)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    description = json.loads(arrays["__fjdl_structure__"].tobytes().decode())
    change(description)
    arrays["__fjdl_structure__"] = np.frombuffer(json.dumps(description).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# --------------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_realistic_state(tmp_path, getkey):
    state = make_state(getkey(), step=1234)
    path = tmp_path / "state.npz"
    checkpoint.save(path, state, metadata={"epoch": 617, "config": {"sizes": [4, 8, 3]}})
    like = make_state(getkey())  # a fresh state: other values, same structure
    restored = checkpoint.restore(path, like)
    assert isinstance(restored, TrainState)
    assert isinstance(restored.opt_state, AdamState)
    assert_identical(restored, state)
    assert restored.step.dtype == jnp.int32 and restored.opt_state.count.dtype == jnp.int32
    assert jnp.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(restored))
    # The restored key draws the same numbers as the saved one.
    np.testing.assert_array_equal(
        jax.random.uniform(restored.key, (5,)), jax.random.uniform(state.key, (5,))
    )
    assert checkpoint.read_metadata(path) == {"epoch": 617, "config": {"sizes": [4, 8, 3]}}


def test_round_trip_float64(tmp_path, getkey):
    with jax.enable_x64(True):
        state = make_state(getkey(), dtype=jnp.float64, optimizer="momentum", step=5)
        state = state._replace(params=jax.tree.map(lambda p: p / 3, state.params))  # full mantissa
        assert state.params[0]["W"].dtype == jnp.float64
        path = tmp_path / "f64.npz"
        checkpoint.save(path, state)
        restored = checkpoint.restore(path, make_state(getkey(), dtype=jnp.float64, optimizer="m"))
        assert_identical(restored, state)
        assert restored.params[1]["W"].dtype == jnp.float64
        assert restored.step.dtype == jnp.int32


def test_float64_file_refused_by_float32_template(tmp_path, getkey):
    with jax.enable_x64(True):
        state = make_state(getkey(), dtype=jnp.float64)
        checkpoint.save(tmp_path / "f64.npz", state)
    with pytest.raises(ValueError, match=r"\.params\[0\]\['W'\]: dtype float64 in file, float32"):
        checkpoint.restore(tmp_path / "f64.npz", make_state(getkey()))


def test_old_style_uint32_key(tmp_path):
    tree = {"key": jax.random.PRNGKey(42), "keys": jax.random.split(jax.random.PRNGKey(1), 3)}
    assert tree["key"].dtype == jnp.uint32
    checkpoint.save(tmp_path / "k.npz", tree)
    restored = checkpoint.restore(tmp_path / "k.npz", tree)
    assert_identical(restored, tree)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_typed_keys_of_every_impl_and_batched(tmp_path, impl):
    key = jax.random.key(3, impl=impl)
    tree = {"key": key, "keys": jax.random.split(key, 4)}
    checkpoint.save(tmp_path / "k.npz", tree)
    restored = checkpoint.restore(tmp_path / "k.npz", tree)
    assert_identical(restored, tree)
    assert str(jax.random.key_impl(restored["key"])) == impl
    assert restored["keys"].shape == (4,)


def test_key_impl_mismatch_is_refused(tmp_path):
    checkpoint.save(tmp_path / "k.npz", {"key": jax.random.key(0, impl="rbg")})
    with pytest.raises(ValueError, match=r"\['key'\]: dtype key<rbg> in file, key<fry> expected"):
        checkpoint.restore(tmp_path / "k.npz", {"key": jax.random.key(0)})


def test_typed_key_vs_uint32_key_is_refused(tmp_path):
    checkpoint.save(tmp_path / "k.npz", {"key": jax.random.PRNGKey(0)})
    with pytest.raises(ValueError, match=r"shape \(2,\) in file, \(\) expected.*dtype uint32"):
        checkpoint.restore(tmp_path / "k.npz", {"key": jax.random.key(0)})


def test_ml_dtypes_keep_their_bits(tmp_path, getkey):
    x = jax.random.normal(getkey(), (3, 5))
    tree = {"bf16": x.astype(jnp.bfloat16), "f16": x.astype(jnp.float16), "mask": x > 0}
    checkpoint.save(tmp_path / "b.npz", tree)
    restored = checkpoint.restore(tmp_path / "b.npz", tree)
    assert_identical(restored, tree)
    flat, _ = checkpoint.load_flat(tmp_path / "b.npz")
    assert flat["['bf16']"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(flat["['bf16']"], np.asarray(tree["bf16"]))


def test_numpy_and_python_leaves(tmp_path):
    tree = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "lr": 0.5, "n": 3, "none": None}
    checkpoint.save(tmp_path / "n.npz", tree)
    restored = checkpoint.restore(tmp_path / "n.npz", tree)
    assert restored["none"] is None
    assert isinstance(restored["a"], np.ndarray) and restored["a"].dtype == np.int16
    np.testing.assert_array_equal(restored["a"], tree["a"])
    assert restored["lr"] == 0.5 and restored["n"] == 3


def test_eval_shape_template(tmp_path, getkey):
    state = make_state(getkey(), step=9)
    checkpoint.save(tmp_path / "s.npz", state)
    like = jax.eval_shape(lambda k: make_state(k), getkey())
    assert isinstance(like.params[0]["W"], jax.ShapeDtypeStruct)
    restored = checkpoint.restore(tmp_path / "s.npz", like)
    assert_identical(restored, state)


def test_optax_states_round_trip_and_mismatch(tmp_path, getkey):
    params = make_state(getkey()).params
    adam = optax.adam(1e-3).init(params)
    checkpoint.save(tmp_path / "adam.npz", adam)
    assert_identical(checkpoint.restore(tmp_path / "adam.npz", adam), adam)
    sgd = optax.sgd(1e-3, momentum=0.9).init(params)
    with pytest.raises(ValueError, match=r"tree structure differs") as info:
        checkpoint.restore(tmp_path / "adam.npz", sgd)
    assert ".mu[0]['W']" in str(info.value) and ".trace[0]['W']" in str(info.value)


def test_load_flat(tmp_path, getkey):
    state = make_state(getkey())
    checkpoint.save(tmp_path / "s.npz", state, metadata={"note": "x"})
    flat, metadata = checkpoint.load_flat(tmp_path / "s.npz")
    assert metadata == {"note": "x"}
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert list(flat) == paths
    np.testing.assert_array_equal(flat[".params[1]['W']"], state.params[1]["W"])
    assert flat[".opt_state.count"].dtype == np.int32
    chex.assert_trees_all_equal(flat[".key"], state.key)


@given(
    st.lists(
        hnp.arrays(
            dtype=st.sampled_from(
                [np.float32, np.float64, np.int32, np.uint8, np.bool_, np.complex64, np.float16]
            ),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        ),
        min_size=0,
        max_size=4,
    )
)
def test_round_trip_property(arrays):
    """Any list of numpy arrays comes back bit for bit (NaNs and signed zeros included)."""
    tree = {"xs": tuple(arrays)}
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "p.npz")
        checkpoint.save(path, tree)
        restored = checkpoint.restore(path, tree)
    for a, b in zip(restored["xs"], arrays):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------------
# Atomic writes


def test_save_leaves_only_the_checkpoint(tmp_path, getkey):
    checkpoint.save(tmp_path / "a.npz", make_state(getkey()))
    checkpoint.save(tmp_path / "a.npz", make_state(getkey()))  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]


def test_path_used_as_given(tmp_path):
    checkpoint.save(str(tmp_path / "ckpt"), {"a": jnp.ones(2)})
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    chex.assert_trees_all_equal(
        checkpoint.restore(tmp_path / "ckpt", {"a": jnp.zeros(2)}), {"a": jnp.ones(2)}
    )


def test_overwrite_replaces_content(tmp_path, getkey):
    first, second = make_state(getkey(), step=1), make_state(getkey(), step=2)
    checkpoint.save(tmp_path / "a.npz", first)
    checkpoint.save(tmp_path / "a.npz", second)
    assert_identical(checkpoint.restore(tmp_path / "a.npz", first), second)


def test_failed_write_keeps_the_old_checkpoint(tmp_path, getkey, monkeypatch):
    old, new = make_state(getkey(), step=1), make_state(getkey(), step=2)
    path = tmp_path / "a.npz"
    checkpoint.save(path, old, metadata={"which": "old"})

    def failing_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half of a zip")  # something reached the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, new, metadata={"which": "new"})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]  # the temporary file is gone
    assert_identical(checkpoint.restore(path, new), old)
    assert checkpoint.read_metadata(path) == {"which": "old"}


def test_unsavable_leaf_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "a.npz"
    checkpoint.save(path, {"a": jnp.ones(2)})
    with pytest.raises(TypeError, match=r"cannot save leaf \['a'\]: dtype <U5"):
        checkpoint.save(path, {"a": np.array(["hello"])})
    with pytest.raises(TypeError, match=r"metadata must be JSON-serializable"):
        checkpoint.save(path, {"a": jnp.zeros(2)}, metadata={"f": jnp.zeros(2)})
    with pytest.raises(TypeError, match=r"metadata must be a dict"):
        checkpoint.save(path, {"a": jnp.zeros(2)}, metadata=[1])
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]
    chex.assert_trees_all_equal(checkpoint.restore(path, {"a": jnp.zeros(2)}), {"a": jnp.ones(2)})


def test_save_inside_jit_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"leaf \['a'\]: it is a tracer"):
        jax.jit(lambda x: checkpoint.save(tmp_path / "a.npz", {"a": x}))(jnp.ones(2))
    assert not os.listdir(tmp_path)


# --------------------------------------------------------------------------------------------------
# Refused files


@pytest.fixture
def saved(tmp_path, getkey):
    state = make_state(getkey())
    path = tmp_path / "state.npz"
    checkpoint.save(path, state)
    return path, state


@pytest.mark.parametrize("keep", [0, 1, 10, 0.5, -1])
def test_truncated_file_is_refused(saved, keep):
    path, state = saved
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=rf"{path} is not a valid fjdl checkpoint"):
        checkpoint.restore(path, state)


def test_flipped_byte_is_refused(tmp_path):
    pattern = np.arange(256, dtype=np.uint8)
    path = tmp_path / "a.npz"
    checkpoint.save(path, {"a": pattern})
    data = bytearray(path.read_bytes())
    at = data.find(pattern.tobytes())
    assert at > 0
    data[at + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"not a valid fjdl checkpoint.*CRC"):
        checkpoint.restore(path, {"a": pattern})


def test_random_bytes_and_empty_files_are_refused(tmp_path, saved):
    _, state = saved
    rng = np.random.default_rng(0)
    for name, content, why in [
        ("random.npz", b"\x01" + rng.bytes(4095), "not an .npz .zip. archive"),
        ("pickle.npz", b"\x80\x04K\x01.", "not an .npz .zip. archive"),
        ("fake_zip.npz", b"PK\x03\x04" + rng.bytes(500), "BadZipFile"),
        ("empty.npz", b"", "the file is empty"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(
            CheckpointError, match=rf"{path} is not a valid fjdl checkpoint: .*{why}"
        ):
            checkpoint.restore(path, state)


def test_foreign_numpy_files_are_refused(tmp_path):
    npy, npz = tmp_path / "a.npy", tmp_path / "b.npz"
    np.save(npy, np.ones(3))
    np.savez(npz, a=np.ones(3))
    with pytest.raises(CheckpointError, match=r"single \.npy array"):
        checkpoint.restore(npy, {"a": np.ones(3)})
    with pytest.raises(CheckpointError, match=r"no __fjdl_structure__ entry"):
        checkpoint.restore(npz, {"a": np.ones(3)})


_UNPICKLED = []


def _record_unpickling():
    _UNPICKLED.append(True)
    return "payload"


class _Payload:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_pickled_object_array_is_refused_without_running_it(saved):
    path, state = saved
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["leaf_00000"] = np.array([_Payload()], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=True, **arrays)
    with pytest.raises(CheckpointError, match=r"not a valid fjdl checkpoint: it holds pickled"):
        checkpoint.restore(path, state)
    with pytest.raises(CheckpointError):
        checkpoint.load_flat(path)
    assert not _UNPICKLED


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.restore(tmp_path / "nope.npz", {"a": jnp.ones(2)})


def test_newer_format_version_is_refused(saved):
    path, state = saved
    rewrite(path, lambda d: d.update(version=checkpoint.VERSION + 1))
    with pytest.raises(
        CheckpointError, match=r"format version 2; this fjdl reads versions up to 1"
    ):
        checkpoint.restore(path, state)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format="other"), "does not declare format"),
        (lambda d: d.pop("leaves"), "lacks the list of leaves"),
        (lambda d: d["leaves"][0].update(shape=[1, 2]), r"description says float32 \(1, 2\)"),
        (lambda d: d["leaves"][0].update(shape="big"), "description of leaf 0 is malformed"),
        (lambda d: d["leaves"].pop(), r"unexpected \['leaf_"),
    ],
)
def test_inconsistent_description_is_refused(saved, change, message):
    path, state = saved
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.restore(path, state)


def test_description_must_be_uint8_json(saved):
    path, state = saved
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for bad in [np.zeros(3, np.float32), np.frombuffer(b"{not json", np.uint8)]:
        buffer = io.BytesIO()
        np.savez(buffer, **(arrays | {"__fjdl_structure__": bad}))
        path.write_bytes(buffer.getvalue())
        with pytest.raises(CheckpointError, match=rf"{path} is not a valid fjdl checkpoint"):
            checkpoint.restore(path, state)


# --------------------------------------------------------------------------------------------------
# Mismatched templates


def test_mismatched_shape_names_the_leaf(tmp_path, getkey):
    checkpoint.save(tmp_path / "s.npz", make_state(getkey(), sizes=(4, 20, 7)))
    with pytest.raises(ValueError) as info:
        checkpoint.restore(tmp_path / "s.npz", make_state(getkey(), sizes=(4, 20, 8)))
    message = str(info.value)
    assert not isinstance(info.value, CheckpointError)
    assert "leaf .params[1]['W']: shape (20, 7) in file, (20, 8) expected" in message
    assert "leaf .params[1]['b']: shape (7,) in file, (8,) expected" in message
    assert "leaf .opt_state.nu[1]['W']: shape (20, 7) in file, (20, 8) expected" in message
    assert "params[0]" not in message  # the first layer matches


def test_mismatched_optimizer_names_the_paths(tmp_path, getkey):
    adam, momentum = make_state(getkey(), optimizer="adam"), make_state(getkey(), optimizer="m")
    checkpoint.save(tmp_path / "s.npz", adam)
    with pytest.raises(ValueError, match=r"tree structure differs") as info:
        checkpoint.restore(tmp_path / "s.npz", momentum)
    message = str(info.value)
    assert "in the file but not expected: .opt_state.mu[0]['W']" in message
    assert "expected but not in the file: .opt_state.v[0]['W']" in message
    n_adam, n_momentum = len(jax.tree.leaves(adam)), len(jax.tree.leaves(momentum))
    assert n_adam == n_momentum + 5  # mu and nu (5 leaves each) instead of v
    assert f"({n_adam} leaves in file, {n_momentum} expected)" in message


def test_extra_layer_is_named(tmp_path):
    params = ({"W": jnp.ones((2, 3))}, {"W": jnp.ones((3, 1))})
    checkpoint.save(tmp_path / "p.npz", params)
    with pytest.raises(ValueError, match=r"in the file but not expected: \[1\]\['W'\]$"):
        checkpoint.restore(tmp_path / "p.npz", params[:1])
    with pytest.raises(ValueError, match=r"expected but not in the file: \[2\]\['W'\]$"):
        checkpoint.restore(tmp_path / "p.npz", (*params, {"W": jnp.ones((1, 1))}))


def test_long_lists_of_differences_are_shortened(tmp_path):
    checkpoint.save(tmp_path / "p.npz", {f"x{i:02d}": jnp.ones(1) for i in range(20)})
    with pytest.raises(ValueError, match=r"\['x07'\] \(and 12 more\)"):
        checkpoint.restore(tmp_path / "p.npz", {"y": jnp.ones(1)})


def test_pathlib_and_str_paths(tmp_path):
    tree = {"a": jnp.arange(3)}
    checkpoint.save(pathlib.Path(tmp_path) / "a.npz", tree)
    assert_identical(checkpoint.restore(str(tmp_path / "a.npz"), tree), tree)


def test_undecodable_leaves_are_refused(tmp_path):
    path = tmp_path / "a.npz"
    checkpoint.save(path, {"a": jnp.ones(3, jnp.bfloat16), "k": jax.random.key(0)})
    rewrite(path, lambda d: d["leaves"][0].update(dtype="float32"))
    like = {"a": np.zeros(3, np.float32), "k": jax.random.key(1)}
    with pytest.raises(CheckpointError, match=r"leaf \['a'\] cannot be decoded: float32 cannot"):
        checkpoint.restore(path, like)
    checkpoint.save(path, {"k": jax.random.key(0)})
    rewrite(path, lambda d: d["leaves"][0].update(key_impl="rbg"))  # data of the wrong length
    with pytest.raises(CheckpointError, match=r"leaf \['k'\] cannot be decoded"):
        checkpoint.restore(path, {"k": jax.random.key(1)})
    with pytest.raises(CheckpointError, match=r"leaf \['k'\] cannot be decoded"):
        checkpoint.load_flat(path)


def test_read_metadata_reads_only_the_description(tmp_path):
    pattern = np.arange(256, dtype=np.uint8)
    path = tmp_path / "a.npz"
    checkpoint.save(path, {"a": pattern}, metadata={"epoch": 5, "lr": (0.1, 0.01)})
    data = bytearray(path.read_bytes())
    data[data.find(pattern.tobytes()) + 7] ^= 0xFF  # corrupt the array, not the description
    path.write_bytes(bytes(data))
    assert checkpoint.read_metadata(path) == {"epoch": 5, "lr": [0.1, 0.01]}  # JSON: a list
    with pytest.raises(CheckpointError, match="CRC"):
        checkpoint.restore(path, {"a": pattern})


# ---------------------------------------------------------------------------------------------
# save_model / load_model: a trained model back for prediction


def _dense_init(key):
    return {"W": jax.random.normal(key, (3, 2)), "b": jnp.zeros(2)}, {}


def _dense_apply(params, state, x, *, key=None, train=False):
    return x @ params["W"] + params["b"], state


def test_mlp_model_restores_without_a_template(tmp_path):
    from fjdl import train
    from fjdl.model import MLP

    X = jax.random.normal(jax.random.key(0), (40, 2))
    Y = (X[:, 0] > 0).astype(jnp.int32)
    config = MLP((2, 5, 1), batchnorm=True, keep_probs=0.9)
    result = train.fit(config, X, Y, key=jax.random.key(1), epochs=3, progress=False)
    path = tmp_path / "mlp.npz"
    checkpoint.save_model(
        path, config, result.state.params, result.state.model_state, metadata={"dataset": "toy"}
    )
    model, params, state = checkpoint.load_model(path)
    assert model == config
    chex.assert_trees_all_equal(params, result.state.params)
    chex.assert_trees_all_equal(state, result.state.model_state)
    np.testing.assert_array_equal(
        train.predict(model, params, state, X),
        train.predict(config, result.state.params, result.state.model_state, X),
    )
    assert checkpoint.read_metadata(path)["dataset"] == "toy"


def test_mlp_model_in_float64_restores(tmp_path):
    from fjdl.model import MLP, init

    config = MLP((2, 3, 1))
    with jax.enable_x64(True):
        params, state = init(jax.random.key(0), config, dtype=jnp.float64)
        path = tmp_path / "m64.npz"
        checkpoint.save_model(path, config, params, state)
        _, restored, _ = checkpoint.load_model(path)
        assert restored[0]["W"].dtype == jnp.float64
        chex.assert_trees_all_equal(restored, params)


def test_other_model_restores_with_itself_as_template(tmp_path):
    from fjdl.model import from_functions

    net = from_functions(_dense_init, _dense_apply, name="dense")
    params, state = net.init(jax.random.key(3))
    path = tmp_path / "net.npz"
    checkpoint.save_model(path, net, params, state)
    with pytest.raises(CheckpointError, match="load_model\\(path, model\\)"):
        checkpoint.load_model(path)
    model, restored, restored_state = checkpoint.load_model(path, net)
    assert model is net
    chex.assert_trees_all_equal(restored, params)
    assert restored_state == {}


def test_load_model_refusals(tmp_path):
    from fjdl.model import MLP, from_functions, init

    plain = tmp_path / "plain.npz"
    checkpoint.save(plain, {"W": jnp.ones((2, 2))})
    with pytest.raises(CheckpointError, match="holds no model"):
        checkpoint.load_model(plain)
    config = MLP((2, 3, 1))
    path = tmp_path / "mlp.npz"
    checkpoint.save_model(path, config, *init(jax.random.key(0), config))
    net = from_functions(_dense_init, _dense_apply)
    with pytest.raises(CheckpointError, match="holds a MLP, not a FunctionModel"):
        checkpoint.load_model(path, net)
    with pytest.raises(ValueError, match="must not hold the key"):
        checkpoint.save_model(
            path, config, *init(jax.random.key(0), config), metadata={"fjdl_model": 1}
        )


def test_save_removes_stale_temporaries_of_its_target_and_nothing_else(tmp_path):
    """A save killed by SIGKILL leaves ``.<name>.<16 hex digits>.tmp`` behind: the next save of
    the same target removes it; other files, and temporaries a concurrent save may still be
    writing (touched in the last minute), are left alone."""
    import time

    hour_ago = time.time() - 3600
    stale = [tmp_path / f".ckpt.npz.{h}.tmp" for h in ("0123456789abcdef", "ffffffffffffffff")]
    others = [
        tmp_path / ".other.npz.0123456789abcdef.tmp",  # another target's
        tmp_path / ".ckpt.npz.0123456789abcdef0.tmp",  # 17 digits
        tmp_path / ".ckpt.npz.0123456789ABCDEF.tmp",  # not what token_hex writes
        tmp_path / ".ckpt.npz.0123456789abcdeg.tmp",  # not hex
        tmp_path / ".ckpt.npz.0123456789abcdef.tmp.bak",
        tmp_path / "ckpt.npz.0123456789abcdef.tmp",  # not hidden
        tmp_path / ".ckpt.0123456789abcdef.tmp",  # the temporary of a target named "ckpt"
        tmp_path / "notes.txt",
    ]
    for p in stale + others:
        p.write_bytes(b"x" * 1000)
        os.utime(p, (hour_ago, hour_ago))
    young = tmp_path / ".ckpt.npz.aaaaaaaaaaaaaaaa.tmp"  # a concurrent save, still writing
    young.write_bytes(b"x" * 1000)
    folder = tmp_path / ".ckpt.npz.bbbbbbbbbbbbbbbb.tmp"  # named like one, but a directory
    folder.mkdir()
    os.utime(folder, (hour_ago, hour_ago))
    link = tmp_path / ".ckpt.npz.cccccccccccccccc.tmp"  # and a link to someone's file
    link.symlink_to(tmp_path / "notes.txt")
    os.utime(link, (hour_ago, hour_ago), follow_symlinks=False)

    checkpoint.save(tmp_path / "ckpt.npz", {"W": jnp.ones(3)})

    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"x" * 1000 for p in others)
    assert young.exists() and folder.is_dir() and link.is_symlink()
    expected = ["ckpt.npz", young.name, folder.name, link.name, *(p.name for p in others)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    restored = checkpoint.restore(tmp_path / "ckpt.npz", like={"W": jnp.zeros(3)})
    assert restored["W"].tolist() == [1, 1, 1]


def test_save_removes_the_temporary_a_killed_save_left(tmp_path):
    """End to end: a save killed with SIGKILL while writing leaves its temporary; the next save of
    the same target (once the temporary is a minute old) removes it."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "big.npz"
    script = (
        "import numpy as np, sys\n"
        "from fjdl import checkpoint\n"
        "np.savez = lambda f, **kw: (f.write(b'x' * 4096), f.flush(), print('writing', flush=True),"
        " __import__('time').sleep(60))\n"
        f"checkpoint.save({str(target)!r}, {{'W': np.ones(3)}})\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline() == b"writing\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".big.npz.")]
    assert left.stat().st_size == 4096 and not target.exists()
    hour_ago = time.time() - 3600
    os.utime(left, (hour_ago, hour_ago))
    checkpoint.save(target, {"W": np.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz"]
