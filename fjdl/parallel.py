"""Training over several devices with ``jax.sharding``: models side by side, or one batch split.

Two ways to use more than one device (GPUs, TPU cores, or CPU devices):

- **Many models** (:func:`fjdl.tune.train_many`): each device trains its share of the models. The
  stacked model axis is sharded over a 1-D mesh named ``"models"`` (:func:`model_sharding`); the
  data is replicated. The models never talk to each other, so the devices never wait on each other.
- **One model, data parallel** (:func:`fit_data_parallel`): the examples are sharded over a 1-D mesh
  named ``"data"``, the parameters replicated, and :func:`fjdl.train.fit` runs unchanged. Under
  ``jit``, XLA's GSPMD partitioner splits every per-example computation by the batch axis and
  inserts the all-reduces that a sum over the batch needs: the gradient (a mean over the batch) and
  the batch-norm statistics are computed over the **global** batch, so the result equals the
  single-device run up to the order of the additions.

Simulated devices: on a machine with one CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(set before JAX starts) gives four CPU devices, enough to test that sharded and unsharded runs agree.

Several hosts: call ``jax.distributed.initialize()`` on every host first; ``jax.devices()`` then
lists the devices of all hosts and the same code runs on each, on the same data and keys (see the
README). The placement functions below build each host's shards from the whole value it holds
(typed PRNG keys included, which ``jax.device_put`` refuses to send to other hosts' devices), and
:func:`to_host` reads a result sharded over several hosts back on every host.
``tests/test_multihost.py`` runs two processes joined this way.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fjdl import train

MODELS = "models"
"""The name of the mesh axis that :func:`model_sharding` splits models over."""
DATA = "data"
"""The name of the mesh axis that :func:`data_sharding` splits examples over."""


def _devices(devices) -> list:
    devices = list(jax.devices()) if devices is None else list(devices)
    if not devices:
        raise ValueError("devices is empty: pass None for all devices, or a list of devices")
    return devices


def mesh(devices: Sequence | None = None, axis_name: str = DATA) -> Mesh:
    """A 1-D :class:`jax.sharding.Mesh` over ``devices`` (default: all) with one named axis.

    Example:
      >>> mesh(axis_name="models").axis_names
      ('models',)
    """
    return Mesh(np.array(_devices(devices)), (axis_name,))


def model_sharding(devices: Sequence | None = None) -> NamedSharding:
    """Sharding of a stacked array's leading (model) axis over ``devices``."""
    return NamedSharding(mesh(devices, MODELS), P(MODELS))


def data_sharding(devices: Sequence | None = None) -> NamedSharding:
    """Sharding of a data array's leading (example) axis over ``devices``."""
    return NamedSharding(mesh(devices, DATA), P(DATA))


def _is_key(a) -> bool:
    return jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key)


def _put_leaf(a, sharding):
    """One leaf placed with ``sharding``, which may span the devices of several processes."""
    if sharding.is_fully_addressable:  # this process's devices only: a plain transfer
        return jax.device_put(a, sharding)
    if _is_key(a):
        # JAX refuses to device_put a typed key array to another process's devices; its raw
        # uint32 data goes through, and the key is wrapped again where it lies.
        data = _put_leaf(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return jax.device_put(a, sharding)  # already global: a reshard over the same devices
    # Every process holds the whole value (SPMD: the same program on the same data); each builds
    # the shards of its own devices from it.
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _put(tree, sharding):
    return jax.tree.map(lambda a: None if a is None else _put_leaf(a, sharding), tree)


def to_host(tree):
    r"""Every leaf of ``tree`` as a NumPy array holding its whole value, on every process.

    .. math::

      \text{to\_host}(a) = \operatorname{concat}_{d \in \text{devices}(a)} a_d

    where :math:`a_d` is the shard of ``a`` on device :math:`d` (an array replicated over its
    devices is one shard). On one process this is ``np.asarray`` leaf by leaf. Under
    ``jax.distributed``, an array sharded over the devices of several processes cannot be read
    with ``np.asarray`` (JAX raises ``RuntimeError: Fetching value for jax.Array that spans
    non-addressable devices is not possible``): those leaves are gathered from all the processes
    with :func:`jax.experimental.multihost_utils.process_allgather`, in one collective.

    .. warning::
      Under ``jax.distributed`` this is a collective: every process must call it, with a tree of
      the same structure, shapes and shardings, or the processes wait for each other forever.

    Args:
      tree: a pytree of arrays (jax or NumPy; ``None`` leaves kept), e.g. a
        :class:`fjdl.train.History` or a stacked :class:`fjdl.train.TrainState` sharded by
        :func:`shard_models` or :func:`shard_data`.

    Returns:
      The same tree with NumPy arrays of the full global shapes. Typed PRNG key leaves (NumPy has
      no key dtype) come back as key arrays on this process's default device.

    Example:
      >>> import jax.numpy as jnp
      >>> to_host({"W": jnp.ones((2, 3))})["W"].sum()
      np.float32(6.0)
    """
    leaves, treedef = jax.tree.flatten(tree)
    impls = [jax.random.key_impl(a) if _is_key(a) else None for a in leaves]
    leaves = [jax.random.key_data(a) if impl is not None else a for a, impl in zip(leaves, impls)]
    # Decided by the sharding, the same on every process for arrays over all of them (as fjdl
    # places them), so that all take part in the gather.
    spans = [
        isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated
        for a in leaves
    ]
    gathered = iter(
        multihost_utils.process_allgather([a for a, s in zip(leaves, spans) if s], tiled=True)
        if any(spans)
        else []
    )
    host = [np.asarray(next(gathered) if s else a) for a, s in zip(leaves, spans)]
    host = [
        h if impl is None else jax.random.wrap_key_data(jnp.asarray(h), impl=impl)
        for h, impl in zip(host, impls)
    ]
    return jax.tree.unflatten(treedef, host)


def shard_models(tree, devices: Sequence | None = None):
    """Place every leaf of ``tree`` (stacked over models: a leading axis divisible by the number of
    devices) with its models split over ``devices``."""
    devices = _devices(devices)
    n_dev = len(devices)
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % n_dev:
            raise ValueError(
                f"the number of models ({leaf.shape[0]}) must be a multiple of the number of "
                f"devices ({n_dev})"
            )
    return _put(tree, model_sharding(devices))


def replicate(tree, devices: Sequence | None = None, axis_name: str = MODELS):
    """Place a full copy of every leaf of ``tree`` on each of ``devices`` (``None`` leaves kept),
    on the 1-D mesh named ``axis_name`` (arrays used together must share one mesh)."""
    return _put(tree, NamedSharding(mesh(devices, axis_name), P()))


def shard_data(tree, devices: Sequence | None = None):
    """Place every leaf of ``tree`` with its examples (leading axis) split over ``devices``.

    Raises:
      ValueError: when the number of examples is not a multiple of the number of devices.
    """
    devices = _devices(devices)
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % len(devices):
            raise ValueError(
                f"the number of examples ({leaf.shape[0]}) must be a multiple of the number of "
                f"devices ({len(devices)}) to split them evenly; drop "
                f"{leaf.shape[0] % len(devices)} examples or use fewer devices"
            )
    return _put(tree, data_sharding(devices))


def fit_data_parallel(
    model, X, Y, *, key, devices: Sequence | None = None, dev=None, **fit_kwargs
) -> train.FitResult:
    """:func:`fjdl.train.fit`, data parallel: the examples split over ``devices``, the parameters
    replicated on each.

    The training set (and the dev set, when its size divides evenly) is placed with a
    :class:`~jax.sharding.NamedSharding` over a 1-D ``"data"`` mesh and handed to ``fit``. Inside
    the compiled run, XLA partitions each step by examples and sums the gradients (and the
    batch-norm statistics) across devices, so every device applies the same update: the result is
    the single-device ``fit``, up to float rounding. A mini-batch drawn from the sharded set is
    partitioned as XLA chooses; for full batches, each device holds and processes ``m / n_devices``
    examples.

    Args:
      model, X, Y, key: as for :func:`fjdl.train.fit`: any model of the protocol.
      devices: the devices to use (default: all of ``jax.devices()``). The number of training
        examples must be a multiple of their number.
      dev: optional ``(X_dev, Y_dev)``; sharded when its size divides evenly, else replicated.
      **fit_kwargs: any other argument of :func:`fjdl.train.fit`.

    Under ``jax.distributed``, every process calls this with the same ``X``, ``Y``, ``key`` and
    arguments; ``devices`` (default: all of them) may span the processes.

    Returns:
      The :class:`fjdl.train.FitResult`: its history as NumPy arrays, its state replicated over the
      devices, so that every process holds all of it.

    Example:
      >>> import jax
      >>> from fjdl import data
      >>> from fjdl.model import MLP
      >>> X, Y = data.make_moons(jax.random.key(0), 64)
      >>> result = fit_data_parallel(MLP((2, 4, 1)), X, Y, key=jax.random.key(1), epochs=2,
      ...                            progress=False)
      >>> result.history.cost.shape
      (2,)
    """
    devices = _devices(devices)
    # Placed as they are: fit checks them (once), and its conversions keep the placement.
    X, Y = shard_data((jnp.asarray(X), jnp.asarray(Y)), devices)
    if isinstance(dev, tuple | list) and len(dev) == 2:  # anything else: fit refuses it
        X_dev, Y_dev = jnp.asarray(dev[0]), jnp.asarray(dev[1])
        if X_dev.shape[0] % len(devices) == 0:
            dev = shard_data((X_dev, Y_dev), devices)
        else:
            dev = replicate((X_dev, Y_dev), devices, DATA)
    return train.fit(model, X, Y, key=key, dev=dev, **fit_kwargs)
