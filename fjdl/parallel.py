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
lists the devices of all hosts and the same code runs on each (see the README).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fjdl import train

MODELS = "models"
DATA = "data"


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


def _put(tree, sharding):
    return jax.tree.map(lambda a: None if a is None else jax.device_put(a, sharding), tree)


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

    Returns:
      The :class:`fjdl.train.FitResult`, its arrays replicated over the devices.

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
    X, Y = shard_data((train._as_inputs("training", X), jnp.asarray(Y)), devices)
    if dev is not None:
        if not isinstance(dev, tuple | list) or len(dev) != 2:
            raise ValueError(f"dev must be a pair (X_dev, Y_dev), got {type(dev).__name__}")
        X_dev, Y_dev = train._as_inputs("dev", dev[0]), jnp.asarray(dev[1])
        if X_dev.shape[0] % len(devices) == 0:
            dev = shard_data((X_dev, Y_dev), devices)
        else:
            dev = replicate((X_dev, Y_dev), devices, DATA)
    return train.fit(model, X, Y, key=key, dev=dev, **fit_kwargs)
