"""Batch normalization: normalize each unit's pre-activation over the mini-batch, then scale and shift.

.. math::
  \\mu = \\frac{1}{m} \\sum_i z^{(i)}, \\quad
  \\sigma^2 = \\frac{1}{m} \\sum_i (z^{(i)} - \\mu)^2, \\quad
  z_{norm} = \\frac{z - \\mu}{\\sqrt{\\sigma^2 + \\varepsilon}}, \\quad
  \\tilde z = \\gamma z_{norm} + \\beta

Channels last: ``z`` has shape ``(m, ..., C)`` and the sums run over **every axis but the last**. For a
dense layer, ``(m, n_units)``, that is the ``m`` examples; for a convolution's output,
``(m, H, W, C)``, it is the ``m * H * W`` positions of every example, so each channel has one
``mu``, ``sigma^2``, ``gamma`` and ``beta``, all of shape ``(C,)`` (Ioffe & Szegedy, section 3.2).

At test time there is no batch to average over, so an exponentially weighted average of the training
batches' ``mu`` and ``sigma^2`` stands in (the running statistics). They are non-trainable state and
live in their own pytree, ``{"mean", "var"}`` per layer, beside the parameters, never inside them.

References:
  Ioffe & Szegedy, 2015, *Batch Normalization: Accelerating Deep Network Training by Reducing
  Internal Covariate Shift*.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from fjdl import _checks
from fjdl._types import AxisName, DTypeLike, Hyperparameter


def _stats_dtype(dtype: jnp.dtype) -> jnp.dtype:
    # Statistics in at least float32 (flax nnx does the same): float16 sums lose too much.
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def _batch_axes(z: jax.Array) -> tuple[int, ...]:
    """Every axis but the last (channels): ``(0,)`` for ``(m, n_units)``, ``(0, 1, 2)`` for images."""
    return tuple(range(z.ndim - 1))


def _check_z(z: jax.typing.ArrayLike) -> jax.Array:
    z = jnp.asarray(z)
    if z.ndim < 2:
        raise ValueError(
            "z must have at least 2 dimensions, (m, n_units) or (m, ..., C) with channels last, "
            f"got shape {z.shape}"
        )
    return z


def _check_affine(
    z: jax.typing.ArrayLike, gamma: jax.typing.ArrayLike, beta: jax.typing.ArrayLike
) -> jax.Array:
    z = _check_z(z)
    C = z.shape[-1]
    _checks.check_shape("gamma", gamma, (C,))
    _checks.check_shape("beta", beta, (C,))
    return z


def _check_running(running: object, C: int) -> None:
    if not isinstance(running, Mapping) or not {"mean", "var"} <= set(running):
        raise TypeError(
            "running must be a dict with keys 'mean' and 'var' (see init_running), "
            f"got {type(running).__name__}"
        )
    _checks.check_shape("running['mean']", running["mean"], (C,))
    _checks.check_shape("running['var']", running["var"], (C,))


def init_running(n_units: int, dtype: DTypeLike = jnp.float32) -> dict[str, jax.Array]:
    """Running statistics before any batch: mean 0, variance 1 (so eval mode starts as identity).

    Args:
      n_units: the number of units or channels ``C`` (``z.shape[-1]``).
      dtype: the statistics' dtype.

    Returns:
      ``{"mean": zeros (C,), "var": ones (C,)}``.
    """
    _checks.check_positive_int("n_units", n_units)
    return {"mean": jnp.zeros((n_units,), dtype), "var": jnp.ones((n_units,), dtype)}


def batch_stats(
    z: jax.typing.ArrayLike, axis_name: AxisName | None = None
) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance of ``z`` over every axis but the last.

    Args:
      z: pre-activations of shape ``(m, n_units)``, or ``(m, ..., C)`` with channels last.
      axis_name: a mapped axis name (from ``vmap``/``shard_map``/``pmap``). When given, the statistics
        are over the batch of every device on that axis (the global batch), assuming equal shards.

    Returns:
      ``(mean, var)``, each of shape ``(C,)``, in at least float32.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.arange(8.0).reshape(2, 2, 2)  # (m, W, C): channel 0 holds 0, 2, 4, 6
      >>> mean, var = batch_stats(z)
      >>> mean.tolist(), var.tolist()
      ([3.0, 4.0], [5.0, 5.0])
    """
    z = _check_z(z)
    axes = _batch_axes(z)
    zf = z.astype(_stats_dtype(z.dtype))
    mean = jnp.mean(zf, axis=axes)
    if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
    var = jnp.mean(jnp.square(zf - mean), axis=axes)
    if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
    return mean, var


def _normalize(
    z: jax.Array,
    gamma: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    mean: jax.Array,
    var: jax.Array,
    eps: float,
) -> jax.Array:
    dt = _stats_dtype(z.dtype)
    z_norm = (z.astype(dt) - mean.astype(dt)) / jnp.sqrt(var.astype(dt) + eps)
    gamma, beta = jnp.asarray(gamma), jnp.asarray(beta)
    return (gamma.astype(dt) * z_norm + beta.astype(dt)).astype(z.dtype)


def normalize_train(
    z: jax.typing.ArrayLike,
    gamma: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    eps: float = 1e-5,
    *,
    axis_name: AxisName | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Batch norm in training mode: normalize with this batch's own statistics.

    Args:
      z: pre-activations, shape ``(m, n_units)``, or ``(m, ..., C)`` with channels last (a
        convolution's ``(m, H, W, C)``); the statistics are over every axis but the last.
      gamma: scale ``gamma``, shape ``(C,)`` with ``C = z.shape[-1]``.
      beta: shift ``beta``, shape ``(C,)``.
      eps: ``epsilon`` added to the variance (>= 0).
      axis_name: optional mapped axis for statistics over a batch spread across devices.

    Returns:
      ``(z_tilde, (mean, var))``: the normalized, scaled and shifted ``z`` (same shape and dtype),
      and the batch statistics, each ``(C,)`` (biased variance), for :func:`update_running`.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0], [3.0]])
      >>> z_tilde, (mean, var) = normalize_train(z, jnp.ones(1), jnp.zeros(1), eps=0.0)
      >>> z_tilde.ravel().tolist(), mean.tolist(), var.tolist()
      ([-1.0, 1.0], [2.0], [1.0])
    """
    z = _check_affine(z, gamma, beta)
    _checks.check_nonnegative("eps", eps)
    if z.size == 0:
        raise ValueError(f"normalize_train needs a non-empty batch: z has shape {z.shape}")
    mean, var = batch_stats(z, axis_name)
    return _normalize(z, gamma, beta, mean, var, eps), (mean, var)


def update_running(
    running: Mapping[str, jax.Array],
    batch_stats: tuple[jax.Array, jax.Array],
    momentum: Hyperparameter = 0.9,
) -> dict[str, jax.Array]:
    """Exponentially weighted average of the batch statistics, for use at test time.

    .. math::
      \\mu_{run} \\leftarrow \\beta \\mu_{run} + (1 - \\beta) \\mu, \\qquad
      \\sigma^2_{run} \\leftarrow \\beta \\sigma^2_{run} + (1 - \\beta) \\sigma^2

    with :math:`\\beta` = ``momentum``.

    .. warning::
      PyTorch's ``BatchNorm1d(momentum=0.1)`` weights the *new* batch by its momentum: it equals
      ``momentum=0.9`` here (see :func:`from_torch_momentum`). PyTorch also stores the unbiased
      variance ``m / (m - 1) * sigma^2`` in its running average; Keras and flax store the biased one,
      as we do. flax's and Keras' ``momentum`` means what ours does, with defaults 0.99.

    Args:
      running: ``{"mean": (C,), "var": (C,)}``.
      batch_stats: ``(mean, var)`` from :func:`normalize_train`.
      momentum: weight of the old average, in [0, 1).

    Returns:
      The new ``{"mean", "var"}``, in the running statistics' dtype.
    """
    _checks.check_unit_interval("momentum", momentum)
    mean, var = batch_stats
    new_mean = momentum * running["mean"] + (1 - momentum) * mean
    new_var = momentum * running["var"] + (1 - momentum) * var
    return {
        "mean": new_mean.astype(running["mean"].dtype),
        "var": new_var.astype(running["var"].dtype),
    }


def normalize_eval(
    z: jax.typing.ArrayLike,
    gamma: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    running: Mapping[str, jax.Array],
    eps: float = 1e-5,
) -> jax.Array:
    """Batch norm in evaluation mode: normalize with the running statistics.

    .. math::
      \\tilde z = \\gamma \\frac{z - \\mu_{run}}{\\sqrt{\\sigma^2_{run} + \\varepsilon}} + \\beta

    Args:
      z: pre-activations, shape ``(m, n_units)`` or ``(m, ..., C)`` with channels last.
      gamma: scale, shape ``(C,)``. ``beta``: shift, shape ``(C,)``.
      running: ``{"mean": (C,), "var": (C,)}`` (:math:`\\mu_{run}`, :math:`\\sigma^2_{run}`), from
        :func:`init_running` and :func:`update_running`.
      eps: ``epsilon`` added to the variance (>= 0).

    Returns:
      ``z_tilde``, of ``z``'s shape and dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> running = {"mean": jnp.array([1.0]), "var": jnp.array([4.0])}
      >>> z = jnp.full((2, 3, 3, 1), 5.0)  # (m, H, W, C)
      >>> normalize_eval(z, jnp.ones(1), jnp.zeros(1), running, eps=0.0)[0, 0, 0].tolist()
      [2.0]
    """
    z = _check_affine(z, gamma, beta)
    _check_running(running, z.shape[-1])
    _checks.check_nonnegative("eps", eps)
    return _normalize(z, gamma, beta, running["mean"], running["var"], eps)


def from_torch_momentum(torch_momentum: float) -> float:
    """Convert PyTorch's batch-norm momentum (the new batch's weight) to ours: ``1 - m``."""
    _checks.check_unit_interval("torch_momentum", torch_momentum, low_open=True, high_open=False)
    return 1.0 - torch_momentum
