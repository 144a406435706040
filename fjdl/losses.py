"""Costs: cross-entropy from logits, and the L2 / L1 weight penalties.

The cost the course minimizes is the mean loss over the batch plus a penalty on the weights:

.. math::
  J = \\frac{1}{m} \\sum_{i=1}^{m} \\mathcal{L}(\\hat y^{(i)}, y^{(i)})
      + \\frac{\\lambda}{2m} \\sum_l \\lVert W^{[l]} \\rVert_F^2

Losses take **logits** (the pre-activation ``z`` of the output layer), not probabilities: computing
``log(sigmoid(z))`` from ``z`` directly is exact where ``sigmoid(z)`` rounds to 0 or 1.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks
from fjdl._types import Params


@jax.custom_jvp
def _softplus(z):
    # log(1 + e^z) = max(z, 0) + log1p(e^{-|z|}): no overflow for z = +-1000.
    return jnp.maximum(z, 0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


@_softplus.defjvp
def _softplus_jvp(primals, tangents):
    # d/dz log(1 + e^z) = sigmoid(z) at every z. Autodiff through max and abs would give
    # 0.5 * 1 + 0 ... = 0.5 - 0.5 = 0 at exactly z = 0; the true derivative there is 1/2.
    (z,), (dz,) = primals, tangents
    return _softplus(z), jax.nn.sigmoid(z) * dz


def _check_labels_concrete(name, labels, low, high):
    if _checks.is_concrete(labels):
        values = np.asarray(labels)
        if values.size and (values.min() < low or values.max() > high):
            raise ValueError(
                f"{name} must lie in [{low}, {high}], got values from {values.min()} to {values.max()}"
            )


def binary_cross_entropy(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """Mean binary cross-entropy of sigmoid outputs, from logits.

    .. math::
      \\mathcal{L}(z, y) = -y \\log \\sigma(z) - (1 - y) \\log(1 - \\sigma(z))
                         = \\log(1 + e^{z}) - y z

    The second form never overflows, and its gradient is exactly ``sigmoid(z) - y`` at every ``z``,
    including ``z = 0``.

    Args:
      logits: ``z``, shape ``(m,)`` (or any shape equal to ``labels``').
      labels: ``y`` in [0, 1], same shape as ``logits``.

    Returns:
      A scalar: the mean over all elements.

    Example:
      >>> round(float(binary_cross_entropy(jnp.array([0.0]), jnp.array([1.0]))), 6)
      0.693147
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(
            f"logits and labels must have the same shape, got logits {logits.shape} and labels "
            f"{labels.shape}"
        )
    if logits.size == 0:
        raise ValueError("binary_cross_entropy of an empty batch: logits has no elements")
    _check_labels_concrete("labels", labels, 0, 1)
    labels = labels.astype(logits.dtype)
    return jnp.mean(_softplus(logits) - labels * logits)


def softmax_cross_entropy(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """Mean cross-entropy of softmax outputs, from logits.

    .. math::
      \\mathcal{L}(z, y) = -\\sum_j y_j \\log \\mathrm{softmax}(z)_j
                         = \\log \\sum_j e^{z_j} - z_y

    Args:
      logits: ``z``, shape ``(m, C)``.
      labels: class indices of shape ``(m,)`` in [0, C), or one-hot / probability rows of shape
        ``(m, C)``.

    Returns:
      A scalar: the mean over the batch.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (m, C), got {logits.shape}")
    m, n_classes = logits.shape
    if m == 0:
        raise ValueError("softmax_cross_entropy of an empty batch: logits has no rows")
    log_norm = jax.nn.logsumexp(logits, axis=-1)
    if labels.shape == logits.shape:
        return jnp.mean(log_norm - jnp.sum(labels.astype(logits.dtype) * logits, axis=-1))
    if labels.shape != (m,):
        raise ValueError(
            f"labels must have shape ({m},) (class indices) or {logits.shape} (one-hot), got "
            f"{labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"class labels of shape (m,) must be integers, got dtype {labels.dtype}")
    _check_labels_concrete("labels", labels, 0, n_classes - 1)
    picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return jnp.mean(log_norm - picked)


def mean_squared_error(
    predictions: jax.typing.ArrayLike, targets: jax.typing.ArrayLike
) -> jax.Array:
    """Half the mean squared error, ``1/(2m) * sum (yhat - y)^2``, for a linear output."""
    predictions = jnp.asarray(predictions)
    targets = jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions and targets must have the same shape, got {predictions.shape} and "
            f"{targets.shape}"
        )
    if predictions.shape[0] == 0:
        raise ValueError("mean_squared_error of an empty batch")
    diff = predictions - targets.astype(predictions.dtype)
    return 0.5 * jnp.sum(diff**2) / predictions.shape[0]


def _weights(params: Params):
    if not isinstance(params, tuple | list) or not all(
        isinstance(p, dict) and "W" in p for p in params
    ):
        raise TypeError("params must be a tuple of per-layer dicts holding 'W'")
    return [p["W"] for p in params]


def l2_penalty(params: Params, lambd, m) -> jax.Array:
    """The L2 (weight-decay) term of the cost: ``lambd / (2 m) * sum_l ||W_l||_F^2``.

    Only weights are penalized, never biases or batch-norm's ``gamma``/``beta``.

    Args:
      params: a tuple of per-layer dicts, each with ``W``.
      lambd: the regularization strength ``lambda`` (>= 0).
      m: the number of examples the data term averages over (> 0).
    """
    _checks.check_nonnegative("lambd", lambd)
    _checks.check_positive("m", m)
    return lambd / (2 * m) * sum(jnp.sum(jnp.square(W)) for W in _weights(params))


def l1_penalty(params: Params, lambd, m) -> jax.Array:
    """The L1 term: ``lambd / (2 m) * sum_l sum |W_l|``, which pushes weights to exactly zero.

    Scaled by ``1 / (2 m)`` like the L2 term, as the course writes it.
    """
    _checks.check_nonnegative("lambd", lambd)
    _checks.check_positive("m", m)
    return lambd / (2 * m) * sum(jnp.sum(jnp.abs(W)) for W in _weights(params))


DATA_LOSSES = {
    "sigmoid": binary_cross_entropy,
    "softmax": softmax_cross_entropy,
    "linear": mean_squared_error,
}


def cost(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    params: Params | None = None,
    *,
    output: str = "sigmoid",
    lambd=0.0,
    l1=0.0,
    m=None,
) -> jax.Array:
    """The data loss for the output layer plus the L2 and L1 penalties.

    Args:
      logits: the network's output pre-activations.
      labels: targets, as the loss for ``output`` expects.
      params: the parameters to penalize; needed when ``lambd`` or ``l1`` is non-zero.
      output: ``"sigmoid"`` (binary cross-entropy), ``"softmax"`` (softmax cross-entropy) or
        ``"linear"`` (half mean squared error).
      lambd: L2 strength; ``l1``: L1 strength.
      m: the ``m`` of the penalties; defaults to the batch size ``labels.shape[0]``.
    """
    if output not in DATA_LOSSES:
        raise ValueError(f"output must be one of {sorted(DATA_LOSSES)}, got {output!r}")
    total = DATA_LOSSES[output](logits, labels)
    m = jnp.shape(labels)[0] if m is None else m
    l2_on = not _checks.is_concrete(lambd) or np.any(np.asarray(lambd) != 0)
    l1_on = not _checks.is_concrete(l1) or np.any(np.asarray(l1) != 0)
    if (l2_on or l1_on) and params is None:
        raise ValueError("cost needs params when lambd or l1 is non-zero")
    if l2_on:
        total = total + l2_penalty(params, lambd, m)
    if l1_on:
        total = total + l1_penalty(params, lambd=l1, m=m)
    return total
