"""Costs: cross-entropy from logits, and the L2 / L1 weight penalties.

The cost the course minimizes is the mean loss over the batch plus a penalty on the weights:

.. math::
  J = \\frac{1}{m} \\sum_{i=1}^{m} \\mathcal{L}(\\hat y^{(i)}, y^{(i)})
      + \\frac{\\lambda}{2m} \\sum_l \\lVert W^{[l]} \\rVert_F^2

Losses take **logits** (the pre-activation ``z`` of the output layer), not probabilities: computing
``log(sigmoid(z))`` from ``z`` directly is exact where ``sigmoid(z)`` rounds to 0 or 1.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks
from fjdl._types import Hyperparameter, Params


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


def is_weight(path: Sequence[Any], leaf: Any) -> bool:
    """The default choice of the **weights**: leaves with ``ndim >= 2`` that are not named ``bias``.

    What L2 and L1 penalize, and what an optimizer's decay ``mask`` selects by default
    (:func:`fjdl.optim.weights_only`): fjdl's dense ``W`` and convolution kernels, flax's
    ``kernel``, equinox's ``weight``; never a bias, nor batch norm's scale ``gamma`` and shift
    ``beta`` (all of shape ``(n,)``). Equinox keeps a convolution's bias as ``(C, 1, 1)``: the
    name ``bias`` (the last key of ``path``) excludes it. ``path`` is the leaf's key path (as
    ``jax.tree_util.tree_map_with_path`` gives it), so a predicate of your own can choose by name,
    e.g. ``lambda path, leaf: "kernel" in jax.tree_util.keystr(path)``.

    Example:
      >>> import jax.numpy as jnp
      >>> is_weight((), jnp.ones((3, 3, 1, 16))), is_weight((), jnp.ones((16,)))
      (True, False)
    """
    if jnp.ndim(leaf) < 2:
        return False
    last = path[-1] if path else None
    name = getattr(last, "key", None) or getattr(last, "name", None)
    return name != "bias"


WeightPredicate = Callable[[Any, Any], bool]
"""``(key path, leaf) -> bool``: which leaves are weights (see :func:`is_weight`)."""

LossFn = Callable[[Any, Any], jax.Array]
"""``(out, y) -> scalar``: a data loss or a metric, the mean over the batch."""


def weights(params: Params, predicate: WeightPredicate = is_weight) -> list[jax.Array]:
    """The leaves of ``params`` that ``predicate`` calls weights, in tree order.

    Example:
      >>> import jax.numpy as jnp
      >>> [w.shape for w in weights(({"W": jnp.ones((2, 3)), "b": jnp.zeros(3)},))]
      [(2, 3)]
    """
    if not callable(predicate):
        raise TypeError(
            f"is_weight must be a function (key path, leaf) -> bool, got {type(predicate).__name__}"
        )
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return [leaf for path, leaf in leaves if predicate(path, leaf)]


def _scaled(lambd, m, total):
    """``lambd / (2 m) * total``, with an array ``lambd`` (a bfloat16 one, say) in the dtype of
    ``total``, the weights' dtype."""
    if hasattr(lambd, "dtype") and hasattr(total, "dtype"):
        lambd = jnp.asarray(lambd).astype(total.dtype)
    return lambd / (2 * m) * total


def l2_penalty(
    params: Params,
    lambd: Hyperparameter,
    m: Hyperparameter,
    *,
    is_weight: WeightPredicate = is_weight,
) -> jax.Array:
    """The L2 (weight-decay) term of the cost: ``lambd / (2 m) * sum_l ||W_l||_F^2``.

    Only weights are penalized, never biases or batch-norm's ``gamma``/``beta``.

    Args:
      params: any pytree of parameters (fjdl's MLP, a convnet's dict, a flax or equinox tree).
      lambd: the regularization strength ``lambda`` (>= 0).
      m: the number of examples the data term averages over (> 0).
      is_weight: which leaves are weights (default :func:`is_weight`: ``ndim >= 2``).
    """
    _checks.check_nonnegative("lambd", lambd)
    _checks.check_positive("m", m)
    return _scaled(lambd, m, sum(jnp.sum(jnp.square(W)) for W in weights(params, is_weight)))


def l1_penalty(
    params: Params,
    lambd: Hyperparameter,
    m: Hyperparameter,
    *,
    is_weight: WeightPredicate = is_weight,
) -> jax.Array:
    """The L1 term: ``lambd / (2 m) * sum_l sum |W_l|``, which pushes weights to exactly zero.

    Scaled by ``1 / (2 m)`` like the L2 term, as the course writes it. ``params`` and
    ``is_weight`` as for :func:`l2_penalty`. Its gradient is ``lambd / (2 m) * sign(W)``, which
    is 0 at ``W = 0`` (as NumPy's ``np.sign`` gives; ``jax.grad(jnp.abs)`` would give 1 there):
    a weight that is exactly zero stays zero.
    """
    _checks.check_nonnegative("lambd", lambd)
    _checks.check_positive("m", m)
    return _scaled(lambd, m, sum(jnp.sum(_abs(W)) for W in weights(params, is_weight)))


def _abs(W):
    """``|W|``, computed as ``W * sign(W)`` with the sign held constant: the same value, and the
    derivative ``sign(W)`` (0 at 0)."""
    return W * jax.lax.stop_gradient(jnp.sign(W))


DATA_LOSSES = {
    "sigmoid": binary_cross_entropy,
    "softmax": softmax_cross_entropy,
    "linear": mean_squared_error,
}
"""The data term of an MLP's cost by its ``output`` (``"sigmoid"``, ``"softmax"``, ``"linear"``)."""


def _one_logit(out):
    """A binary model's logits as ``(m,)``: a ``(m, 1)`` output (flax's ``Dense(1)``) flattened."""
    out = jnp.asarray(out)
    return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out


def _binary(out, y):
    return binary_cross_entropy(_one_logit(out), y)


def _binary_accuracy(out, y):
    return jnp.mean((_one_logit(out) > 0).astype(jnp.int32) == jnp.asarray(y).astype(jnp.int32))


def _binary_predict(out):
    return (_one_logit(out) > 0).astype(jnp.int32)


def _softmax_accuracy(out, y):
    y = jnp.asarray(y)
    if y.ndim == 2:
        y = jnp.argmax(y, axis=-1)
    return jnp.mean(jnp.argmax(out, axis=-1) == y)


def _softmax_predict(out):
    return jnp.argmax(out, axis=-1)


def _mse(out, y):
    out, y = jnp.asarray(out), jnp.asarray(y)
    return mean_squared_error(out, y.reshape(out.shape) if y.size == out.size else y)


def _identity(out):
    return out


@dataclasses.dataclass(frozen=True)
class Loss:
    """What a model's output means: its data loss, an optional metric, and its predictions.

    Hashable (a static argument of the compiled training loop): two losses built from the same
    functions are equal.

    Attributes:
      name: shown in messages and tables.
      value: ``(out, y) -> scalar``, the mean loss over the batch (the data term of the cost).
      metric: ``(out, y) -> scalar`` in [0, 1] such as accuracy, or ``None`` (recorded as NaN).
      predict: ``out -> predictions``.
      labels: how :func:`fjdl.train.fit` checks the labels before compiling: ``"binary"`` (values
        in {0, 1}, one per example), ``"classes"`` (integers in [0, C) with ``C`` the output's
        last axis, or one-hot rows ``(m, C)``, turned into indices), or ``"any"``.
    """

    name: str
    value: LossFn
    metric: LossFn | None = None
    predict: Callable[[Any], jax.Array] = _identity
    labels: str = "any"


LOSSES = {
    "binary": Loss("binary", _binary, _binary_accuracy, _binary_predict, "binary"),
    "softmax": Loss(
        "softmax", softmax_cross_entropy, _softmax_accuracy, _softmax_predict, "classes"
    ),
    "mse": Loss("mse", _mse, None, _identity, "any"),
}
"""The built-in losses by name: sigmoid cross-entropy on logits, softmax cross-entropy, half MSE."""

_ALIASES = {"sigmoid": "binary", "linear": "mse"}


def get(loss: str | LossFn | Loss, metric: LossFn | None = None, *, arg: str = "loss") -> Loss:
    """A :class:`Loss` from a name, a function ``(out, y) -> scalar``, or a :class:`Loss`.

    Args:
      loss: ``"binary"`` (alias ``"sigmoid"``): :func:`binary_cross_entropy` on logits of shape
        ``(m,)`` or ``(m, 1)``, accuracy of ``out > 0``; ``"softmax"``: :func:`softmax_cross_entropy`
        on ``(m, C)`` logits, accuracy of the argmax; ``"mse"`` (alias ``"linear"``):
        :func:`mean_squared_error`, no metric; a function ``(out, y) -> scalar``; or a :class:`Loss`.
      metric: with a function ``loss``, an optional ``(out, y) -> scalar`` metric (e.g. accuracy).
      arg: the argument's name in error messages.

    Example:
      >>> import jax.numpy as jnp
      >>> get("sigmoid").name, float(get("binary").metric(jnp.array([[2.0], [-1.0]]), jnp.array([1, 1])))
      ('binary', 0.5)
    """
    if isinstance(loss, Loss):
        if metric is not None:
            return dataclasses.replace(loss, metric=metric)
        return loss
    if isinstance(loss, str):
        name = _ALIASES.get(loss, loss)
        if name not in LOSSES:
            raise ValueError(
                f"{arg} must be one of {sorted(LOSSES) + sorted(_ALIASES)}, a function "
                f"(out, y) -> scalar or an fjdl.losses.Loss, got {loss!r}"
            )
        return LOSSES[name] if metric is None else dataclasses.replace(LOSSES[name], metric=metric)
    if callable(loss):
        if metric is not None and not callable(metric):
            raise TypeError(f"metric must be a function (out, y) -> scalar, got {metric!r}")
        return Loss(getattr(loss, "__name__", "custom"), loss, metric)
    raise TypeError(
        f"{arg} must be a name ('binary', 'softmax', 'mse'), a function (out, y) -> scalar or an "
        f"fjdl.losses.Loss, got {type(loss).__name__}"
    )


def cost(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    params: Params | None = None,
    *,
    output: str | LossFn | Loss = "sigmoid",
    lambd: Hyperparameter = 0.0,
    l1: Hyperparameter = 0.0,
    m: Hyperparameter | None = None,
    is_weight: WeightPredicate = is_weight,
) -> jax.Array:
    """The data loss plus the L2 and L1 penalties on the weights.

    .. math::
      J = \\frac{1}{m} \\sum_i \\mathcal{L}(\\hat y^{(i)}, y^{(i)})
          + \\frac{\\lambda}{2m} \\sum_W \\lVert W \\rVert_F^2 + \\frac{\\lambda_1}{2m} \\sum_W |W|

    Args:
      logits: the network's output (pre-activations for the cross-entropies).
      labels: targets, as the loss expects.
      params: the parameters to penalize (any pytree); needed when ``lambd`` or ``l1`` is non-zero.
      output: the loss: ``"sigmoid"``/``"binary"`` (binary cross-entropy), ``"softmax"`` (softmax
        cross-entropy), ``"linear"``/``"mse"`` (half mean squared error), a function
        ``(out, y) -> scalar`` or a :class:`Loss` (see :func:`get`).
      lambd: L2 strength; ``l1``: L1 strength.
      m: the ``m`` of the penalties; defaults to the batch size ``labels.shape[0]``.
      is_weight: which leaves the penalties act on (default :func:`is_weight`, ``ndim >= 2``).
    """
    total = get(output, arg="output").value(logits, labels)
    m = jnp.shape(labels)[0] if m is None else m
    l2_on = not _checks.is_concrete(lambd) or np.any(np.asarray(lambd) != 0)
    l1_on = not _checks.is_concrete(l1) or np.any(np.asarray(l1) != 0)
    if (l2_on or l1_on) and params is None:
        raise ValueError("cost needs params when lambd or l1 is non-zero")
    if l2_on:
        total = total + l2_penalty(params, lambd, m, is_weight=is_weight)
    if l1_on:
        total = total + l1_penalty(params, lambd=l1, m=m, is_weight=is_weight)
    return total
