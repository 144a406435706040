"""Checkpoints: save a pytree (a :class:`fjdl.train.TrainState`) to one ``.npz`` file, restore it.

A checkpoint is one file in numpy's ``.npz`` format (a zip of ``.npy`` arrays): one array per leaf
of the pytree, named ``leaf_00000``, ``leaf_00001``, ... in the order of
``jax.tree_util.tree_flatten_with_path``, plus one array ``__fjdl_structure__`` holding, as UTF-8
bytes of JSON, the description of the tree: each leaf's key path (``jax.tree_util.keystr``, e.g.
``.params[1]['W']`` or ``.opt_state.mu[0]['b']``), shape and dtype, the format version, and the
caller's metadata.

- **Exact.** Every leaf is stored with its own dtype, bit for bit: restoring a state and training on
  gives the same run as never stopping. New-style typed keys (``jax.random.key``) are stored as
  ``jax.random.key_data`` with the name of their implementation and come back through
  ``jax.random.wrap_key_data``; old-style ``uint32`` keys (``jax.random.PRNGKey``) are plain arrays.
  Non-numpy floats such as ``bfloat16`` are stored as their raw bits.
- **Atomic.** :func:`save` writes a temporary file in the destination's directory, flushes it to
  disk (``fsync``) and renames it over the destination (``os.replace``). A crash or an error while
  writing leaves the previous checkpoint intact, never a half-written one.
- **Safe.** Loading never executes code from the file: arrays are read with
  ``np.load(..., allow_pickle=False)``, the description is JSON. A truncated, corrupted or foreign
  file is refused with a ``ValueError`` that names it.
- **Checked.** :func:`restore` takes a template pytree (a freshly initialized state, or
  ``jax.eval_shape`` of one) and refuses a file whose key paths, shapes or dtypes differ from it,
  naming each difference: a checkpoint of an Adam run (``.opt_state.mu``, ``.opt_state.nu``) does
  not load into a momentum state (``.opt_state.v``), and a layer of a different width is named with
  both shapes.

Example:
  >>> import os, tempfile
  >>> state = {"W": jnp.ones((2, 3)), "step": jnp.zeros((), jnp.int32), "key": jax.random.key(0)}
  >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
  >>> save(path, state, metadata={"epoch": 3})
  >>> restored = restore(path, like=state)
  >>> bool(jnp.all(restored["W"] == state["W"])), restored["step"].dtype, read_metadata(path)
  (True, dtype('int32'), {'epoch': 3})
"""

import contextlib
import dataclasses
import json
import os
import secrets
import struct
import zipfile
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks

FORMAT = "fjdl.checkpoint"
"""The ``format`` field of the stored description."""

VERSION = 1
"""The version of the file layout this module writes; it reads versions up to this one."""

_STRUCTURE = "__fjdl_structure__"
_MAX_LISTED = 8  # differences named in one error message before "and N more"

# Everything reading a damaged or foreign file can raise (OSError covers zipfile's own I/O errors).
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    KeyError,
    ValueError,
    TypeError,
    struct.error,
    NotImplementedError,
    RuntimeError,
)


def _leaf_name(i: int) -> str:
    return f"leaf_{i:05d}"


def _is_key_dtype(dtype) -> bool:
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _dtype_name(dtype) -> str:
    """``float32``, ``bfloat16``, ``key<fry>``: byte order does not count."""
    if _is_key_dtype(dtype):
        return str(dtype)
    return np.dtype(dtype).newbyteorder("=").name


def _list(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def _shape_str(shape) -> str:
    return str(tuple(int(s) for s in shape))


# --------------------------------------------------------------------------------------------------
# Saving


def _encode(path: str, leaf) -> tuple[np.ndarray, dict]:
    """The array to store for one leaf, and its record in the description."""
    if not _checks.is_concrete(leaf):
        raise TypeError(
            f"cannot save leaf {path}: it is a tracer (save outside jit, vmap and grad)"
        )
    if isinstance(leaf, jax.Array) and _is_key_dtype(leaf.dtype):
        data = np.asarray(jax.random.key_data(leaf))
        impl = str(jax.random.key_impl(leaf))
        record: dict[str, Any] = {
            "shape": list(leaf.shape),
            "dtype": str(leaf.dtype),
            "key_impl": impl,
        }
        return data, record | {"path": path, "stored": data.dtype.name}
    arr = np.asarray(leaf)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    kind = arr.dtype.kind
    if kind in "biufc":
        stored = arr
    elif kind == "V" and arr.dtype.fields is None and arr.dtype.itemsize in (1, 2, 4, 8):
        # ml_dtypes (bfloat16, float8_*, int4): the .npy format does not know them; keep the bits.
        stored = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    else:
        raise TypeError(
            f"cannot save leaf {path}: dtype {arr.dtype} is not a numeric array dtype "
            f"(got a {type(leaf).__name__})"
        )
    record = {"shape": list(arr.shape), "dtype": arr.dtype.name, "key_impl": None}
    return stored, record | {"path": path, "stored": stored.dtype.name}


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: str | os.PathLike, tree: Any, *, metadata: dict | None = None) -> None:
    """Write ``tree`` to the single file ``path``, atomically.

    The file is written under a temporary name in the same directory (``.<name>.<random>.tmp``,
    ``<random>`` being 16 hex digits), flushed to disk, then renamed over ``path`` with
    ``os.replace``: readers see the old checkpoint or the new one, never a partial file, and a
    failure leaves an existing checkpoint untouched.

    A save that is killed outright (``SIGKILL``, a power cut) cannot remove its temporary, which
    may be as large as the checkpoint. So each save first removes the stale temporaries of the same
    target: the files of the directory named exactly ``.<name>.<16 hex digits>.tmp``, except any
    written to in the last 60 seconds, which may belong to a concurrent save of the same target
    that is still writing (removing it would make that save fail). Other files are never touched;
    a temporary that cannot be removed is left, and the save goes on.

    Args:
      path: the file to write, used exactly as given (unlike ``np.savez``, no ``.npz`` suffix is
        added). Its directory must exist.
      tree: any pytree of arrays: jax or numpy arrays, Python or numpy scalars, typed or ``uint32``
        PRNG keys. ``None`` and empty containers are part of the structure and hold no data.
      metadata: a JSON-serializable dict stored beside the arrays (an epoch, a configuration, a
        score); read it back with :func:`read_metadata`.

    Raises:
      TypeError: a leaf is not a numeric array (a string, an object), a leaf is a tracer, or the
        metadata is not a JSON-serializable dict.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "params.npz")
      >>> save(path, ({"W": jnp.zeros((2, 1)), "b": jnp.zeros(1)},))
      >>> sorted(os.listdir(os.path.dirname(path)))
      ['params.npz']
    """
    path = os.fspath(path)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays, records = {}, []
    for i, (key_path, leaf) in enumerate(leaves):
        stored, record = _encode(jax.tree_util.keystr(key_path), leaf)
        arrays[_leaf_name(i)] = stored
        records.append(record)
    description = {
        "format": FORMAT,
        "version": VERSION,
        "treedef": str(treedef),
        "leaves": records,
        "metadata": metadata,
    }
    try:
        text = json.dumps(description, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serializable: {e}") from e
    arrays[_STRUCTURE] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp_name = f".{name}.{secrets.token_hex(8)}.tmp"
    tmp = os.path.join(directory, tmp_name)
    try:
        with open(tmp, "xb") as f:
            # Remove the stale temporaries of this target (see above). "Now" is the time of our
            # own new file: the file system's clock, which may differ from this machine's.
            now, stale_after_s = os.fstat(f.fileno()).st_mtime, 60.0
            with contextlib.suppress(OSError), os.scandir(directory) as entries:
                for entry in entries:
                    token = entry.name[len(name) + 2 : -len(".tmp")]
                    if (
                        entry.name != f".{name}.{token}.tmp"
                        or len(token) != 16
                        or any(c not in "0123456789abcdef" for c in token)
                        or entry.name == tmp_name
                    ):
                        continue
                    with contextlib.suppress(OSError):  # gone already, or not ours to remove
                        age = now - entry.stat(follow_symlinks=False).st_mtime
                        if entry.is_file(follow_symlinks=False) and age > stale_after_s:
                            os.unlink(entry.path)
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


# --------------------------------------------------------------------------------------------------
# Reading


class CheckpointError(ValueError):
    """A file that is not a readable fjdl checkpoint: truncated, corrupted, foreign or too new."""


def _refuse(path: str, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a valid fjdl checkpoint: {why}")


def _parse_description(path: str, raw: np.ndarray) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _refuse(path, f"{_STRUCTURE} has dtype {raw.dtype} and shape {raw.shape}")
    description = json.loads(raw.tobytes().decode("utf-8"))
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise _refuse(path, f"its description does not declare format {FORMAT!r}")
    version = description.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _refuse(path, f"format version {version!r} is not a positive int")
    if version > VERSION:
        raise CheckpointError(
            f"{path} was written in checkpoint format version {version}; this fjdl reads versions "
            f"up to {VERSION}: upgrade fjdl"
        )
    records = description.get("leaves")
    if not isinstance(records, list) or not isinstance(description.get("metadata"), dict):
        raise _refuse(path, "its description lacks the list of leaves or the metadata")
    for i, r in enumerate(records):
        ok = (
            isinstance(r, dict)
            and isinstance(r.get("path"), str)
            and isinstance(r.get("dtype"), str)
            and isinstance(r.get("stored"), str)
            and isinstance(r.get("shape"), list)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in r["shape"])
            and (r.get("key_impl") is None or isinstance(r.get("key_impl"), str))
        )
        if not ok:
            raise _refuse(path, f"the description of leaf {i} is malformed: {r!r}")
    return description


def _read(path, *, with_arrays: bool = True) -> tuple[dict, list[np.ndarray]]:
    """The description and the stored arrays (in leaf order), fully validated against each other."""
    path = os.fspath(path)
    with open(path, "rb") as f:  # a missing file raises FileNotFoundError, as open() does
        try:
            magic = f.read(6)
            f.seek(0)
            if not magic:
                raise _refuse(path, "the file is empty")
            if magic.startswith(b"\x93NUMPY"):
                raise _refuse(path, "it is a single .npy array, not an .npz archive")
            if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                raise _refuse(path, f"it is not an .npz (zip) archive: it starts with {magic!r}")
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise _refuse(path, "it is not an .npz archive")
            with loaded as npz:
                names = set(npz.files)
                if _STRUCTURE not in names:
                    raise _refuse(path, f"it has no {_STRUCTURE} entry (not written by fjdl?)")
                description = _parse_description(path, npz[_STRUCTURE])
                records = description["leaves"]
                expected = {_STRUCTURE} | {_leaf_name(i) for i in range(len(records))}
                if names != expected:
                    extra, missing = sorted(names - expected), sorted(expected - names)
                    raise _refuse(path, f"entries missing {missing}, unexpected {extra}")
                if not with_arrays:
                    return description, []
                arrays = [npz[_leaf_name(i)] for i in range(len(records))]
        except CheckpointError:
            raise
        except ValueError as e:
            if "allow_pickle" in str(e):  # numpy refused an object array: nothing was unpickled
                raise _refuse(path, f"it holds pickled Python objects, never loaded ({e})") from e
            raise _refuse(path, f"{type(e).__name__}: {e}") from e
        except _READ_ERRORS as e:
            raise _refuse(path, f"{type(e).__name__}: {e}") from e
    for r, stored in zip(records, arrays):
        shape = tuple(r["shape"])
        if r["key_impl"] is not None:
            shape_ok = stored.shape[: len(shape)] == shape and stored.ndim == len(shape) + 1
        else:
            shape_ok = stored.shape == shape
        if not shape_ok or stored.dtype.name != r["stored"]:
            raise _refuse(
                path,
                f"leaf {r['path']} is stored as {stored.dtype.name} {_shape_str(stored.shape)}, "
                f"its description says {r['stored']} {_shape_str(shape)}",
            )
    return description, arrays


def _decode(path: str, record: dict, stored: np.ndarray, dtype=None):
    """The leaf's value: a key array for keys, else a numpy array of the recorded dtype."""
    try:
        if record["key_impl"] is not None:
            value = jax.random.wrap_key_data(jnp.asarray(stored), impl=record["key_impl"])
            if str(value.dtype) != record["dtype"]:
                raise ValueError(f"key implementation gives {value.dtype}")
            return value
        if stored.dtype.name == record["dtype"]:
            return stored
        target = np.dtype(dtype) if dtype is not None else jnp.dtype(record["dtype"])
        if target.itemsize != stored.dtype.itemsize:
            raise ValueError(f"{record['dtype']} cannot be read from {stored.dtype.name}")
        return stored.view(target)
    except (ValueError, TypeError, KeyError) as e:
        raise _refuse(path, f"leaf {record['path']} cannot be decoded: {e}") from e


def _template_spec(path: str, leaf) -> tuple[tuple, str]:
    if not _checks.is_concrete(leaf):
        raise TypeError(f"the template's leaf {path} is a tracer: restore outside jit")
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):  # arrays and jax.ShapeDtypeStruct
        return tuple(leaf.shape), _dtype_name(leaf.dtype)
    arr = np.asarray(leaf)
    return arr.shape, _dtype_name(arr.dtype)


def _place(value, leaf):
    """Put a restored value where the template's leaf lives: same device(s) and sharding."""
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
        sharding = getattr(leaf, "sharding", None)
        out = jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)
        if out.dtype != leaf.dtype:
            raise ValueError(
                f"restored dtype {out.dtype} differs from the template's {leaf.dtype} "
                "(is jax_enable_x64 the same as when the template was made?)"
            )
        return out
    return value if isinstance(value, jax.Array) else np.asarray(value)


def restore(path: str | os.PathLike, like: Any) -> Any:
    """Read the checkpoint at ``path`` into a pytree shaped like the template ``like``.

    ``like`` fixes what is expected: its key paths (``jax.tree_util.tree_flatten_with_path``), and
    every leaf's shape and dtype. Any difference is refused before anything is returned, with a
    ``ValueError`` naming the leaves that differ. The result has ``like``'s tree structure; a leaf
    is a ``jax.Array`` placed with the template leaf's sharding where the template holds a
    ``jax.Array`` or a ``jax.ShapeDtypeStruct``, and a numpy array where it holds a numpy array or a
    Python scalar. Typed PRNG keys come back as typed keys of the implementation they were saved
    with.

    Args:
      path: a file written by :func:`save`.
      like: a pytree with the structure, shapes and dtypes of the saved one: typically a freshly
        initialized state (``fjdl.train.init_state(...)``), or ``jax.eval_shape`` of one, which
        allocates nothing.

    Returns:
      The restored pytree.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      CheckpointError: (a ``ValueError``) the file is truncated, corrupted, not an fjdl checkpoint,
        holds a pickled object, or was written by a newer format version.
      ValueError: the checkpoint differs from ``like``: its key paths, a shape or a dtype.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "c.npz")
      >>> save(path, {"W": jnp.ones((20, 7))})
      >>> restore(path, like={"W": jnp.ones((20, 8))})
      Traceback (most recent call last):
      ...
      ValueError: ...: leaf ['W']: shape (20, 7) in file, (20, 8) expected
    """
    path = os.fspath(path)
    description, arrays = _read(path)
    records = description["leaves"]
    template, treedef = jax.tree_util.tree_flatten_with_path(like)
    expected_paths = [jax.tree_util.keystr(p) for p, _ in template]
    file_paths = [r["path"] for r in records]
    if file_paths != expected_paths:
        in_file = [p for p in file_paths if p not in set(expected_paths)]
        in_template = [p for p in expected_paths if p not in set(file_paths)]
        if in_file or in_template:
            why = []
            if in_file:
                why.append(f"in the file but not expected: {_list(in_file)}")
            if in_template:
                why.append(f"expected but not in the file: {_list(in_template)}")
        else:
            why = ["the same leaves in another order"]
        raise ValueError(
            f"{path}: the checkpoint's tree structure differs from the template "
            f"({len(file_paths)} leaves in file, {len(expected_paths)} expected): " + "; ".join(why)
        )
    problems = []
    for r, (key_path, leaf) in zip(records, template):
        shape, dtype = _template_spec(jax.tree_util.keystr(key_path), leaf)
        if tuple(r["shape"]) != shape:
            problems.append(
                f"leaf {r['path']}: shape {_shape_str(r['shape'])} in file, "
                f"{_shape_str(shape)} expected"
            )
        if r["dtype"] != dtype:
            problems.append(f"leaf {r['path']}: dtype {r['dtype']} in file, {dtype} expected")
    if problems:
        raise ValueError(f"{path} does not match the template: " + "; ".join(problems))
    leaves = []
    for r, stored, (_, leaf) in zip(records, arrays, template):
        value = _decode(path, r, stored, None if r["key_impl"] else _template_dtype(leaf))
        leaves.append(_place(value, leaf))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _template_dtype(leaf):
    return leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def load_flat(path: str | os.PathLike) -> tuple[dict[str, Any], dict]:
    """Inspect a checkpoint without a template: ``({key path: array}, metadata)``.

    Keys are the leaves' key paths as :func:`save` recorded them (``jax.tree_util.keystr``), in
    order; values are numpy arrays with the saved dtype, or typed PRNG key arrays.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "c.npz")
      >>> save(path, ({"W": jnp.ones((2, 3))},), metadata={"epoch": 1})
      >>> flat, meta = load_flat(path)
      >>> {k: v.shape for k, v in flat.items()}, meta
      ({"[0]['W']": (2, 3)}, {'epoch': 1})
    """
    path = os.fspath(path)
    description, arrays = _read(path)
    flat = {r["path"]: _decode(path, r, a) for r, a in zip(description["leaves"], arrays)}
    return flat, description["metadata"]


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` dict that :func:`save` stored at ``path`` (the arrays are not read).

    JSON rules apply: tuples come back as lists, dict keys as strings.
    """
    return _read(path, with_arrays=False)[0]["metadata"]


# --------------------------------------------------------------------------------------------------
# A trained model, for prediction

_MODEL_KEY = "fjdl_model"
"""The metadata field in which :func:`save_model` describes the model."""


def _describe_model(model) -> dict:
    from fjdl.model import MLP  # checkpoint sits below the models; imported when used

    if isinstance(model, MLP):
        config = dataclasses.asdict(model)
        return {"kind": "MLP", "config": config}
    return {"kind": type(model).__name__}


def save_model(
    path: str | os.PathLike, model, params: Any, model_state: Any, *, metadata: dict | None = None
) -> None:
    """Save a trained model's ``params`` and ``model_state`` (atomically, as :func:`save`).

    For an :class:`fjdl.model.MLP` the config is recorded too, so :func:`load_model` rebuilds the
    model with no template. For any other model the file holds the arrays, and
    ``load_model(path, model)`` takes the model to build its template from.

    Args:
      path: the file to write.
      model: the model the parameters belong to (any model of the protocol).
      params, model_state: its parameters and state (e.g. ``fit(...).state.params`` and
        ``.model_state``).
      metadata: more JSON-serializable fields to store (a dataset name, a score, standardization
        statistics as lists).

    Example:
      >>> import os, tempfile
      >>> from fjdl.model import MLP, init
      >>> config = MLP((2, 3, 1), batchnorm=True)
      >>> params, state = init(jax.random.key(0), config)
      >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
      >>> save_model(path, config, params, state)
      >>> loaded, p, s = load_model(path)
      >>> loaded == config, bool(jnp.all(p[0]["W"] == params[0]["W"]))
      (True, True)
    """
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    if _MODEL_KEY in metadata:
        raise ValueError(f"metadata must not hold the key {_MODEL_KEY!r}: save_model writes it")
    metadata = {**metadata, _MODEL_KEY: _describe_model(model)}
    save(path, {"params": params, "model_state": model_state}, metadata=metadata)


def load_model(path: str | os.PathLike, model=None) -> tuple[Any, Any, Any]:
    """Read a file written by :func:`save_model`: ``(model, params, model_state)``.

    Args:
      path: the file.
      model: ``None`` for a saved :class:`fjdl.model.MLP`, rebuilt from its recorded config; for
        any other model, the model itself (its ``init`` gives the template, through
        ``jax.eval_shape``: nothing is computed).

    Raises:
      CheckpointError: the file is not a model saved by :func:`save_model`, or holds a model of
        another kind than ``model``.
      ValueError: the saved arrays do not fit the model (names and shapes of the leaves that
        differ).
    """
    from fjdl import model as model_lib

    path = os.fspath(path)
    description = read_metadata(path).get(_MODEL_KEY)
    if not isinstance(description, dict) or "kind" not in description:
        raise _refuse(path, "it holds no model (write it with fjdl.checkpoint.save_model)")
    key = jax.random.key(0)
    if model is None:
        if description["kind"] != "MLP":
            raise _refuse(
                path,
                f"it holds a {description['kind']}, which is restored with its model: "
                "load_model(path, model)",
            )
        config = description.get("config", {})
        try:
            fields: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in config.items()
            }
            model = model_lib.MLP(**fields)
        except (TypeError, ValueError) as e:
            raise _refuse(path, f"its MLP config {config!r} is not valid: {e}") from None
        flat, _ = load_flat(path)
        dtype = next(iter(flat.values())).dtype if flat else jnp.float32
        template = jax.eval_shape(lambda k: model_lib.init(k, model, dtype=dtype), key)
    else:
        model_lib.check_model(model)
        if description["kind"] != type(model).__name__:
            raise _refuse(path, f"it holds a {description['kind']}, not a {type(model).__name__}")
        template = jax.eval_shape(model.init, key)
    params, model_state = template
    if model_state is None:
        model_state = {}
    tree = restore(path, like={"params": params, "model_state": model_state})
    return model, tree["params"], tree["model_state"]
