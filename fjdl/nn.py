"""Activations, softmax and inverted dropout: the elementwise pieces of a network.

Each function takes and returns arrays of any shape; batch first, features last.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks
from fjdl._types import Hyperparameter, PRNGKey


def sigmoid(x: jax.typing.ArrayLike) -> jax.Array:
    """Logistic sigmoid, ``1 / (1 + exp(-x))``, computed without overflow."""
    return jax.nn.sigmoid(x)


def tanh(x: jax.typing.ArrayLike) -> jax.Array:
    """Hyperbolic tangent."""
    return jnp.tanh(x)


def relu(x: jax.typing.ArrayLike) -> jax.Array:
    """Rectified linear unit, ``max(x, 0)``.

    The derivative at exactly ``x = 0`` is taken as 0, as the course's backprop mask ``A > 0`` does
    (``jnp.maximum(x, 0)`` would give 0.5 there under autodiff). A NaN stays NaN, as in
    ``max(x, 0)``: written ``where(x <= 0, 0, x)``, the comparison is False for NaN and keeps it, so
    a non-finite input is never hidden behind a finite output.

    Example:
      >>> relu(jnp.array([-1.0, 0.0, 2.0, jnp.nan]))
      Array([ 0.,  0.,  2., nan], dtype=float32)
    """
    x = jnp.asarray(x)
    return jnp.where(x <= 0, jnp.zeros_like(x), x)


def leaky_relu(x: jax.typing.ArrayLike, negative_slope: float = 0.01) -> jax.Array:
    """Leaky ReLU, ``max(negative_slope * x, x)`` for ``0 <= negative_slope < 1``.

    As for :func:`relu`, the derivative at exactly 0 is the left one, ``negative_slope``, and a
    NaN stays NaN.
    """
    x = jnp.asarray(x)
    return jnp.where(x <= 0, negative_slope * x, x)


def softmax(x: jax.typing.ArrayLike, axis: int = -1) -> jax.Array:
    """Softmax along ``axis``: ``exp(x_i) / sum_j exp(x_j)``.

    The maximum is subtracted first (it cancels in the ratio), so large logits do not overflow.
    """
    x = jnp.asarray(x)
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=axis, keepdims=True)


ACTIVATIONS = {"relu": relu, "tanh": tanh, "sigmoid": sigmoid, "leaky_relu": leaky_relu}
"""The activations by name, as ``MLP(activation=...)`` takes them."""


def dropout(
    key: PRNGKey | None, x: jax.typing.ArrayLike, keep_prob: Hyperparameter
) -> jax.Array:
    """Inverted dropout: keep each unit with probability ``keep_prob``, scale kept units up.

    .. math::
      d \\sim \\mathrm{Bernoulli}(p), \\qquad a \\leftarrow a \\odot d / p

    where :math:`p` is ``keep_prob``. Dividing by ``keep_prob`` keeps the expected value of every unit
    unchanged, so nothing needs rescaling at test time, when dropout is simply off.

    Args:
      key: a PRNG key; required unless ``keep_prob == 1``. The same key gives the same mask.
      x: activations of any shape.
      keep_prob: probability of keeping a unit, in (0, 1]. A Python float or a (traced) scalar.

    Returns:
      An array shaped like ``x``: zero where dropped, ``x / keep_prob`` where kept.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = dropout(jax.random.key(0), jnp.ones((2, 4)), keep_prob=0.5)
      >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
      True

    References:
      Srivastava et al., 2014, *Dropout: A Simple Way to Prevent Neural Networks from Overfitting*.
    """
    _checks.check_keep_prob("keep_prob", keep_prob)
    x = jnp.asarray(x)
    if _checks.is_concrete(keep_prob) and float(np.min(np.asarray(keep_prob))) == 1.0:
        return x
    if key is None:
        raise ValueError(
            "dropout with keep_prob < 1 needs a PRNG key: pass key=jax.random.key(...)"
        )
    keep_prob = jnp.asarray(keep_prob, x.dtype)
    keep = jax.random.bernoulli(key, keep_prob, x.shape)
    return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))
