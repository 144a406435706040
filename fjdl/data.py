"""Data: mini-batches, train/dev/test splits, standardization, toy datasets and image augmentation.

Conventions (batch first, as everywhere in fjdl):

- ``X`` has shape ``(m, ...)``, one example per row along axis 0: ``(m, n_features)`` for dense data,
  ``(m, H, W, C)`` for images (channels last), ``(m, T, n_features)`` for sequences. Every function
  here except :func:`augment` (made for images) treats an example as a block and never looks inside.
- ``Y`` has ``m`` rows, ``Y.shape[0] == m``: class indices ``(m,)``, one-hot ``(m, C)``, or anything
  else with a leading ``m`` axis; its rows move with ``X``'s. The datasets here give **int32** labels
  for every task:
  ``{0, 1}`` for binary problems (a sigmoid output; :func:`fjdl.losses.binary_cross_entropy` casts
  them to the logits' dtype) and ``[0, C)`` for ``C`` classes (a softmax output).
- Every random choice takes an explicit ``jax.random`` key: the same key gives the same result, bit
  for bit.

Two forms of mini-batches:

- :func:`minibatches` returns a Python list of ``(X_batch, Y_batch)``: the course's
  ``random_mini_batches``, for a Python training loop.
- :func:`fixed_minibatches` (built on :func:`minibatch_indices`) returns arrays of fixed shape
  ``(n_batches, batch_size, ...)`` with a ``mask``: the last batch is padded and its padding masked
  out, so a loop in ``lax.scan`` sees one shape and compiles once, and with :func:`masked_mean` each
  example counts exactly once per epoch.
"""

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks
from fjdl._types import Hyperparameter, PRNGKey

# --------------------------------------------------------------------------------------------------
# Validation helpers


def _check_key(name: str, key: PRNGKey | None) -> PRNGKey:
    if key is None:
        raise TypeError(f"{name} needs a PRNG key: pass key=jax.random.key(seed)")
    return key


def _check_x(X: jax.Array, name: str = "X") -> jax.Array:
    """An array of shape ``(m, ...)``: at least 2 dimensions and ``m > 0``."""
    if X.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (m, ...): (m, n_features), (m, H, W, C), ...; "
            f"got shape {X.shape}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 examples (shape {X.shape})")
    return X


def _check_xy(
    X: jax.typing.ArrayLike, Y: jax.typing.ArrayLike, x_name: str = "X", y_name: str = "Y"
) -> tuple[jax.Array, jax.Array]:
    """Arrays ``X`` of shape ``(m, ...)`` with ``m > 0`` and ``Y`` with ``m`` rows."""
    X = _check_x(jnp.asarray(X), x_name)
    Y = jnp.asarray(Y)
    if Y.ndim == 0 or Y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{y_name} must have one row per example of {x_name}: m = {X.shape[0]} rows, "
            f"(m,) class indices or (m, C) one-hot; got shape {Y.shape}"
        )
    return X, Y


def _as_float(X: jax.typing.ArrayLike) -> jax.Array:
    X = jnp.asarray(X)
    return X if jnp.issubdtype(X.dtype, jnp.inexact) else X.astype(jnp.float32)


# --------------------------------------------------------------------------------------------------
# Mini-batches


def n_batches(m: int, batch_size: int) -> int:
    """Number of mini-batches in one epoch: ``ceil(m / batch_size)``.

    Example:
      >>> n_batches(148, 64)
      3
    """
    _checks.check_positive_int("m", m)
    _checks.check_positive_int("batch_size", batch_size)
    return -(-m // batch_size)


def minibatches(
    key: PRNGKey, X: jax.typing.ArrayLike, Y: jax.typing.ArrayLike, batch_size: int
) -> list[tuple[jax.Array, jax.Array]]:
    """Shuffle the examples with ``key``, then cut them into mini-batches of ``batch_size``.

    The course's ``random_mini_batches``: one permutation of the ``m`` examples, applied to ``X``
    and ``Y`` alike, then ``floor(m / batch_size)`` complete batches and, when ``batch_size`` does
    not divide ``m``, a last batch with the remaining ``m - batch_size * floor(m / batch_size)``
    examples. Every example appears in exactly one batch.

    Args:
      key: a PRNG key; the same key gives the same batches.
      X: inputs, shape ``(m, ...)`` (``(m, n_features)``, ``(m, H, W, C)``, ...).
      Y: labels, ``m`` rows (``(m,)`` class indices, ``(m, C)`` one-hot, or ``(m, ...)``).
      batch_size: examples per batch, a positive int. ``batch_size >= m`` gives one batch holding
        all (shuffled) examples: batch gradient descent; ``batch_size = 1`` gives stochastic
        gradient descent.

    Returns:
      A list of ``ceil(m / batch_size)`` pairs ``(X_batch, Y_batch)``, shaped like ``X`` and ``Y``
      with ``batch_size`` (or the remainder) rows.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> X, Y = jnp.zeros((148, 2)), jnp.zeros((148,), jnp.int32)
      >>> [xb.shape[0] for xb, yb in minibatches(jax.random.key(0), X, Y, 64)]
      [64, 64, 20]
      >>> images, one_hot = jnp.zeros((10, 8, 8, 3)), jnp.eye(4)[jnp.arange(10) % 4]
      >>> [(xb.shape, yb.shape) for xb, yb in minibatches(jax.random.key(0), images, one_hot, 6)]
      [((6, 8, 8, 3), (6, 4)), ((4, 8, 8, 3), (4, 4))]

    .. warning::
      The course shuffles with ``np.random.permutation`` after ``np.random.seed(seed)``; the same
      seed number here gives a different (``jax.random``) permutation.

    References:
      Deep Learning Specialization, Course 2, week 2: *Optimization Methods*
      (``random_mini_batches``).
    """
    _check_key("minibatches", key)
    X, Y = _check_xy(X, Y)
    _checks.check_positive_int("batch_size", batch_size)
    m = X.shape[0]
    perm = jax.random.permutation(key, m)
    X_shuffled, Y_shuffled = X[perm], Y[perm]
    return [
        (X_shuffled[start : start + batch_size], Y_shuffled[start : start + batch_size])
        for start in range(0, m, batch_size)
    ]


def minibatch_indices(key: PRNGKey, m: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Indices of one epoch's shuffled mini-batches, in a fixed shape, with a mask for the padding.

    The permutation is the one :func:`minibatches` uses with the same key, laid out row by row in
    ``n_batches(m, batch_size)`` rows of ``batch_size``. The last row is padded to full length by
    wrapping around (slot ``p`` holds ``perm[p % m]``), so every index is a valid example, and the
    padding slots are ``False`` in ``mask``. Among the ``True`` slots every example appears exactly
    once.

    ``m`` and ``batch_size`` fix the shapes, so under ``jit`` they must be static
    (``jax.jit(minibatch_indices, static_argnums=(1, 2))``); keys are ordinary arguments and a new
    key does not recompile.

    Args:
      key: a PRNG key.
      m: number of examples, a positive int.
      batch_size: examples per batch, a positive int.

    Returns:
      ``(idx, mask)``: ``idx`` int32 of shape ``(n_batches, batch_size)`` and ``mask`` bool of the
      same shape, ``True`` for the ``m`` real slots.

    Example:
      >>> import jax
      >>> idx, mask = minibatch_indices(jax.random.key(0), 5, 2)
      >>> idx.shape, mask.sum(axis=1).tolist()
      ((3, 2), [2, 2, 1])
    """
    _check_key("minibatch_indices", key)
    nb = n_batches(m, batch_size)
    perm = jax.random.permutation(key, m).astype(jnp.int32)
    slots = jnp.arange(nb * batch_size, dtype=jnp.int32)
    idx = perm[slots % m]
    mask = slots < m
    return idx.reshape(nb, batch_size), mask.reshape(nb, batch_size)


class Batches(NamedTuple):
    """One epoch of mini-batches in a fixed shape (see :func:`fixed_minibatches`)."""

    X: jax.Array
    """Inputs, ``(n_batches, batch_size, ...)``: ``X``'s shape with ``m`` replaced by the two axes."""
    Y: jax.Array
    """Labels, ``(n_batches, batch_size, ...)``."""
    mask: jax.Array
    """bool ``(n_batches, batch_size)``: ``True`` for real examples, ``False`` for padding."""


def fixed_minibatches(
    key: PRNGKey, X: jax.typing.ArrayLike, Y: jax.typing.ArrayLike, batch_size: int
) -> Batches:
    """Shuffled mini-batches of one fixed shape, the last one padded and masked, for ``lax.scan``.

    The same batches as :func:`minibatches` with the same key, stacked into arrays: complete batches
    are identical, and the last, short batch is filled up to ``batch_size`` with examples from the
    start of the permutation (real data, so the padded rows hold no NaN or garbage) marked ``False``
    in ``mask``. Averaging a per-example loss with :func:`masked_mean` then weights every example
    exactly once per epoch:

    .. math::
      J_t = \\frac{\\sum_i \\text{mask}_i \\, \\mathcal{L}^{(i)}}{\\sum_i \\text{mask}_i}

    Every batch has one shape, so a training step scanned over the batches compiles once; under
    ``jit`` make ``batch_size`` static (``static_argnames="batch_size"``).

    Args:
      key: a PRNG key; the same key gives the same batches.
      X: inputs, shape ``(m, ...)`` (``(m, n_features)``, ``(m, H, W, C)``, ...).
      Y: labels, ``m`` rows (``(m,)`` class indices, ``(m, C)`` one-hot, or ``(m, ...)``).
      batch_size: examples per batch, a positive int.

    Returns:
      A :class:`Batches` ``(X, Y, mask)`` with leading axes ``(n_batches, batch_size)``: ``X`` of
      shape ``(n_batches, batch_size, *X.shape[1:])``, ``Y`` likewise.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> b = fixed_minibatches(jax.random.key(0), jnp.ones((148, 2)), jnp.zeros(148), 64)
      >>> b.X.shape, b.Y.shape, b.mask.sum(axis=1).tolist()
      ((3, 64, 2), (3, 64), [64, 64, 20])

    .. warning::
      The mask removes the padding from a masked loss, not from batch statistics: a network with
      batch normalization computes the last batch's mean and variance over the padded rows too.
      Use a ``batch_size`` that divides ``m`` there, or :func:`minibatches`.
    """
    _check_key("fixed_minibatches", key)
    X, Y = _check_xy(X, Y)
    idx, mask = minibatch_indices(key, X.shape[0], batch_size)
    return Batches(X[idx], Y[idx], mask)


def masked_mean(values: jax.typing.ArrayLike, mask: jax.typing.ArrayLike) -> jax.Array:
    """Mean of ``values`` over the entries where ``mask`` is ``True``.

    .. math::
      \\frac{\\sum_i \\text{mask}_i \\, v_i}{\\sum_i \\text{mask}_i}

    Masked-out entries are selected away (``where``), not multiplied by zero, so an ``inf`` or
    ``NaN`` in a padding slot does not leak into the result. An all-``False`` mask gives ``NaN``.

    Args:
      values: an array of floats (e.g. per-example losses, shape ``(batch_size,)``).
      mask: bool array broadcastable to ``values``' shape.

    Returns:
      A scalar of ``values``' dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> float(masked_mean(jnp.array([1.0, 3.0, 100.0]), jnp.array([True, True, False])))
      2.0
    """
    values = _as_float(values)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}")
    try:
        mask = jnp.broadcast_to(mask, values.shape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to values' shape {values.shape}"
        ) from None
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return total / jnp.sum(mask).astype(values.dtype)


# --------------------------------------------------------------------------------------------------
# Train / dev / test split


def split(
    key: PRNGKey,
    X: jax.typing.ArrayLike,
    Y: jax.typing.ArrayLike,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> tuple[tuple[jax.Array, jax.Array], ...]:
    """Shuffle with ``key`` and split into train / dev / test sets (or train / dev).

    Sizes: dev and test get ``floor(fraction * m)`` examples each, and train gets the rest, so no
    example is lost and the sets are disjoint.

    How to choose the fractions (the course's guidance):

    - Small data (hundreds to tens of thousands of examples): ``(0.6, 0.2, 0.2)``, or
      ``(0.7, 0.3)`` for train / dev only.
    - Big data (a million examples or more): ``(0.98, 0.01, 0.01)``; 10,000 dev examples are
      plenty to compare models, and the rest is better spent on training.
    - The dev and test sets must come from the same distribution (the one you care about doing well
      on); shuffling everything together before splitting, as done here, ensures it for one source.
    - The test set gives an unbiased estimate of the final model; without one, call the held-out set
      "dev", not "test".

    Args:
      key: a PRNG key for the shuffle.
      X: inputs, ``(m, ...)`` (``(m, n_features)``, ``(m, H, W, C)``, ...).
      Y: labels, ``m`` rows (``(m,)`` class indices, ``(m, C)`` one-hot, or ``(m, ...)``).
      fractions: two or three positive numbers summing to 1 (within 1e-6): train, dev[, test].

    Returns:
      ``((X_train, Y_train), (X_dev, Y_dev), (X_test, Y_test))``, or two pairs for two fractions;
      each part keeps ``X``'s and ``Y``'s trailing shapes, and its ``X`` and ``Y`` rows stay paired.

    Raises:
      ValueError: on bad fractions, or when a set would be empty (too few examples).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> X, Y = jnp.zeros((148, 2)), jnp.zeros((148,), jnp.int32)
      >>> [x.shape[0] for x, y in split(jax.random.key(0), X, Y)]
      [90, 29, 29]
    """
    _check_key("split", key)
    X, Y = _check_xy(X, Y)
    if isinstance(fractions, str) or not isinstance(fractions, Sequence):
        raise TypeError(f"fractions must be a sequence of 2 or 3 numbers, got {fractions!r}")
    if len(fractions) not in (2, 3):
        raise ValueError(
            f"fractions must have 2 (train, dev) or 3 (train, dev, test) entries, got {fractions!r}"
        )
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, numbers.Real):
            raise TypeError(f"fractions must hold real numbers, got {fractions!r}")
        if not math.isfinite(f) or f <= 0:
            raise ValueError(f"fractions must all be > 0, got {fractions!r}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fractions)})")
    m = X.shape[0]
    # floor(f * m), forgiving a rounding error in f (0.29 * 100 is 28.999999999999996).
    held_out = [math.floor(f * m + 1e-9) for f in fractions[1:]]
    sizes = [m - sum(held_out), *held_out]
    names = ("train", "dev", "test")
    for name, size, f in zip(names, sizes, fractions):
        if size <= 0:
            raise ValueError(
                f"the {name} set would be empty: {m} examples with fractions {fractions!r} give "
                f"sizes {dict(zip(names, sizes))}; use more examples or a larger {name} fraction "
                f"(got {f})"
            )
    perm = jax.random.permutation(key, m)
    X, Y = X[perm], Y[perm]
    bounds = np.cumsum([0, *sizes])
    return tuple((X[a:b], Y[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))


# --------------------------------------------------------------------------------------------------
# Standardization


class Standardizer(NamedTuple):
    """Per-feature statistics fitted on the training set (see :func:`fit_standardizer`)."""

    mean: jax.Array
    """``mu``, shape ``X_train.shape[1:]``: ``(n_features,)``, ``(H, W, C)`` for images."""
    std: jax.Array
    """``sigma``, same shape as ``mean``; 1 for constant features."""


def fit_standardizer(X_train: jax.typing.ArrayLike) -> Standardizer:
    """Fit the per-feature mean and standard deviation of the **training** set.

    .. math::
      \\mu = \\frac{1}{m} \\sum_{i=1}^{m} x^{(i)}, \\qquad
      \\sigma^2 = \\frac{1}{m} \\sum_{i=1}^{m} (x^{(i)} - \\mu)^2

    The sums run over the examples (axis 0) only, so every entry of an example is a feature of its
    own: for images ``(m, H, W, C)`` each pixel and channel position gets its own ``mu`` and
    ``sigma``, of shape ``(H, W, C)``. For one mean and deviation per channel instead (the usual
    image normalization), fit on ``X_train.reshape(-1, C)``: :func:`standardize` applies statistics
    of shape ``(C,)`` to every position of ``(m, H, W, C)``.

    Fit on the training set only, then apply the same ``mu`` and ``sigma`` to dev and test with
    :func:`standardize`: the network learns on inputs transformed one way and must be evaluated on
    inputs transformed the same way. (Fitting on dev or test would also leak their statistics.)

    A constant feature (``max == min`` on the training set) has ``sigma = 0``; it gets
    ``sigma = 1`` and ``mu`` equal to its value, so it standardizes to exactly 0 instead of ``NaN``.

    Args:
      X_train: training inputs, ``(m, ...)`` (``(m, n_features)``, ``(m, H, W, C)``, ...); integer
        inputs are converted to float32.

    Returns:
      A :class:`Standardizer` ``(mean, std)``, each of shape ``X_train.shape[1:]``.

    Example:
      >>> import jax.numpy as jnp
      >>> stats = fit_standardizer(jnp.array([[1.0, 5.0], [3.0, 5.0]]))
      >>> stats.mean.tolist(), stats.std.tolist()
      ([2.0, 5.0], [1.0, 1.0])
      >>> fit_standardizer(jnp.zeros((10, 8, 8, 3))).mean.shape  # one per pixel and channel
      (8, 8, 3)

    .. warning::
      The standard deviation is the biased one (divide by ``m``), as in scikit-learn's
      ``StandardScaler`` and batch norm; ``np.std(ddof=1)`` and pandas' ``std()`` divide by
      ``m - 1``.
      The lecture's slide writes ``x /= sigma**2``; dividing by ``sigma``, as here, is what gives
      unit variance.
    """
    X = _check_x(_as_float(X_train), "X_train")
    _checks.check_all_finite("X_train", X)
    mean = jnp.mean(X, axis=0)
    std = jnp.sqrt(jnp.mean(jnp.square(X - mean), axis=0))
    constant = jnp.max(X, axis=0) == jnp.min(X, axis=0)
    mean = jnp.where(constant, X[0], mean)
    std = jnp.where(constant, jnp.ones_like(std), std)
    return Standardizer(mean, std)


def standardize(X: jax.typing.ArrayLike, stats: Standardizer) -> jax.Array:
    """Apply training-set statistics: ``(X - mean) / std``.

    .. math::
      x := \\frac{x - \\mu}{\\sigma}

    The training set comes out with mean 0 and variance 1 per feature; dev and test, transformed
    with the same ``stats``, come out close to that but not exactly (their own statistics differ).
    ``stats`` broadcasts against ``X``'s trailing axes: statistics of shape ``X.shape[1:]`` act per
    feature (per pixel and channel for images), statistics of shape ``(C,)`` (fitted on
    ``X_train.reshape(-1, C)``) per channel of ``(m, ..., C)``.

    Args:
      X: inputs, ``(m, *stats.mean.shape)``, with the features ``stats`` was fitted on, or
        ``(m, ..., *stats.mean.shape)``.
      stats: a :class:`Standardizer` from :func:`fit_standardizer` on the training set.

    Returns:
      An array like ``X`` (float; integer inputs become float32).

    Example:
      >>> import jax.numpy as jnp
      >>> stats = fit_standardizer(jnp.array([[1.0], [3.0]]))
      >>> standardize(jnp.array([[1.0], [3.0], [5.0]]), stats).ravel().tolist()
      [-1.0, 1.0, 3.0]
      >>> images = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3)
      >>> per_channel = fit_standardizer(images.reshape(-1, 3))
      >>> standardize(images, per_channel).shape
      (2, 2, 2, 3)
    """
    if not isinstance(stats, Standardizer):
        raise TypeError(
            f"stats must be a Standardizer from fit_standardizer, got {type(stats).__name__}"
        )
    X = _as_float(X)
    fitted = tuple(stats.mean.shape)
    if X.ndim < len(fitted) + 1 or X.shape[X.ndim - len(fitted) :] != fitted:
        dims = ", ".join(map(str, fitted))
        raise ValueError(
            f"X must have shape (m, {dims}) (the features stats was fitted on), or "
            f"(m, ..., {dims}), got {X.shape}"
        )
    return (X - stats.mean.astype(X.dtype)) / stats.std.astype(X.dtype)


# --------------------------------------------------------------------------------------------------
# Built-in datasets


def _check_n(n: int) -> None:
    _checks.check_positive_int("n", n)


def _shuffled(key: PRNGKey, X: jax.Array, Y: jax.Array) -> tuple[jax.Array, jax.Array]:
    perm = jax.random.permutation(key, X.shape[0])
    return X[perm], Y[perm]


def _class_sizes(n: int, n_classes: int) -> list[int]:
    # As scikit-learn: n // C each, the first n % C classes one more.
    return [n // n_classes + (j < n % n_classes) for j in range(n_classes)]


def make_moons(
    key: PRNGKey, n: int, noise: Hyperparameter = 0.2
) -> tuple[jax.Array, jax.Array]:
    """Two interleaving half circles, as scikit-learn's ``make_moons``, with a JAX key.

    The outer moon (label 0) is ``(cos t, sin t)`` and the inner one (label 1) is
    ``(1 - cos t, 1/2 - sin t)`` for ``t`` evenly spaced in ``[0, pi]``; then Gaussian noise of
    standard deviation ``noise`` is added to both coordinates and the examples are shuffled.

    Args:
      key: a PRNG key; the same key gives the same data, bit for bit.
      n: number of examples, ``n // 2`` in the outer moon and the rest in the inner one.
      noise: standard deviation of the Gaussian noise, >= 0.

    Returns:
      ``(X, Y)``: float32 ``(n, 2)`` and int32 ``(n,)`` labels in {0, 1}.

    Example:
      >>> import jax
      >>> X, Y = make_moons(jax.random.key(0), 100)
      >>> X.shape, X.dtype, int(Y.sum())
      ((100, 2), dtype('float32'), 50)
    """
    _check_key("make_moons", key)
    _check_n(n)
    _checks.check_nonnegative("noise", noise)
    noise = jnp.asarray(noise, jnp.float32)
    noise_key, perm_key = jax.random.split(key)
    n_out = n // 2
    n_in = n - n_out
    t_out = jnp.linspace(0.0, np.pi, n_out, dtype=jnp.float32)
    t_in = jnp.linspace(0.0, np.pi, n_in, dtype=jnp.float32)
    outer = jnp.stack([jnp.cos(t_out), jnp.sin(t_out)], axis=1)
    inner = jnp.stack([1.0 - jnp.cos(t_in), 0.5 - jnp.sin(t_in)], axis=1)
    X = jnp.concatenate([outer, inner])
    X = X + noise * jax.random.normal(noise_key, X.shape, jnp.float32)
    Y = jnp.concatenate([jnp.zeros(n_out, jnp.int32), jnp.ones(n_in, jnp.int32)])
    return _shuffled(perm_key, X, Y)


def make_circles(
    key: PRNGKey, n: int, noise: Hyperparameter = 0.1, factor: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """A circle inside a larger one, as scikit-learn's ``make_circles``, with a JAX key.

    The outer circle (label 0) has radius 1 and the inner one (label 1) radius ``factor``; points
    are evenly spaced in angle, then Gaussian noise of standard deviation ``noise`` is added and the
    examples are shuffled. Not linearly separable: a network needs a hidden layer.

    Args:
      key: a PRNG key; the same key gives the same data, bit for bit.
      n: number of examples, ``n // 2`` on the outer circle and the rest on the inner one.
      noise: standard deviation of the Gaussian noise, >= 0.
      factor: inner radius relative to the outer one, in [0, 1).

    Returns:
      ``(X, Y)``: float32 ``(n, 2)`` and int32 ``(n,)`` labels in {0, 1}.

    Example:
      >>> import jax
      >>> X, Y = make_circles(jax.random.key(0), 10, noise=0.0)
      >>> X.shape, sorted(Y.tolist())
      ((10, 2), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    """
    _check_key("make_circles", key)
    _check_n(n)
    _checks.check_nonnegative("noise", noise)
    _checks.check_unit_interval("factor", factor)
    noise = jnp.asarray(noise, jnp.float32)
    noise_key, perm_key = jax.random.split(key)
    n_out = n // 2
    n_in = n - n_out

    def ring(count, radius):
        t = jnp.arange(count, dtype=jnp.float32) * jnp.float32(2 * np.pi / max(count, 1))
        return jnp.asarray(radius, jnp.float32) * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)

    X = jnp.concatenate([ring(n_out, 1.0), ring(n_in, factor)])
    X = X + noise * jax.random.normal(noise_key, X.shape, jnp.float32)
    Y = jnp.concatenate([jnp.zeros(n_out, jnp.int32), jnp.ones(n_in, jnp.int32)])
    return _shuffled(perm_key, X, Y)


def make_spirals(
    key: PRNGKey, n: int, n_classes: int = 3, noise: Hyperparameter = 0.2
) -> tuple[jax.Array, jax.Array]:
    """Interleaved spiral arms, one per class (after CS231n's spiral dataset), with a JAX key.

    Class ``j`` has radii ``r`` evenly spaced in ``[0, 1]`` and angles
    ``t = 2 pi j / C + 4 r + noise * N(0, 1)``; a point is ``(r sin t, r cos t)``. ``noise`` is in
    radians (along the arm's angle, as in CS231n), not in coordinates as for the moons.

    Args:
      key: a PRNG key; the same key gives the same data, bit for bit.
      n: number of examples, split as evenly as possible between the classes.
      n_classes: number of arms ``C`` (>= 2).
      noise: standard deviation of the angle noise, >= 0.

    Returns:
      ``(X, Y)``: float32 ``(n, 2)`` and int32 ``(n,)`` labels in ``[0, n_classes)``.

    Example:
      >>> import jax
      >>> X, Y = make_spirals(jax.random.key(0), 300)
      >>> X.shape, sorted(set(Y.tolist()))
      ((300, 2), [0, 1, 2])

    References:
      Karpathy, CS231n, *Putting it together: minimal neural network case study*.
    """
    _check_key("make_spirals", key)
    _check_n(n)
    _checks.check_positive_int("n_classes", n_classes)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    _checks.check_nonnegative("noise", noise)
    noise = jnp.asarray(noise, jnp.float32)
    noise_key, perm_key = jax.random.split(key)
    sizes = _class_sizes(n, n_classes)
    r = jnp.concatenate([jnp.linspace(0.0, 1.0, s, dtype=jnp.float32) for s in sizes])
    Y = jnp.concatenate([jnp.full(s, j, jnp.int32) for j, s in enumerate(sizes)])
    offset = Y.astype(jnp.float32) * jnp.float32(2 * np.pi / n_classes)
    t = offset + 4.0 * r + noise * jax.random.normal(noise_key, (n,), jnp.float32)
    X = jnp.stack([r * jnp.sin(t), r * jnp.cos(t)], axis=1)
    return _shuffled(perm_key, X, Y)


def make_blobs(
    key: PRNGKey, n: int, centers: int | jax.typing.ArrayLike = 3, std: Hyperparameter = 0.5
) -> tuple[jax.Array, jax.Array]:
    """Gaussian blobs in 2-D, one per class, with a JAX key.

    Each example is ``centers[y] + std * N(0, I)``.

    Args:
      key: a PRNG key; the same key gives the same data, bit for bit.
      n: number of examples, split as evenly as possible between the blobs.
      centers: the number ``K`` of blobs (>= 2), placed evenly on a circle of radius 2; or the
        centers themselves, an array ``(K, 2)``.
      std: standard deviation of each blob, >= 0.

    Returns:
      ``(X, Y)``: float32 ``(n, 2)`` and int32 ``(n,)`` labels in ``[0, K)``.

    Example:
      >>> import jax
      >>> X, Y = make_blobs(jax.random.key(0), 90, centers=3)
      >>> X.shape, [int((Y == k).sum()) for k in range(3)]
      ((90, 2), [30, 30, 30])

    .. warning::
      scikit-learn's ``make_blobs(centers=K)`` draws the centers at random in a box, with
      ``cluster_std=1.0``; here an integer ``centers`` gives fixed, evenly spaced centers, so the
      blobs never overlap by chance.
    """
    _check_key("make_blobs", key)
    _check_n(n)
    _checks.check_nonnegative("std", std)
    if isinstance(centers, numbers.Integral) and not isinstance(centers, bool):
        if centers < 2:
            raise ValueError(f"centers must be >= 2 (number of blobs), got {centers}")
        angle = np.pi / 2 + 2 * np.pi * np.arange(centers) / centers
        centers = jnp.asarray(2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1), jnp.float32)
    else:
        centers = jnp.asarray(centers, jnp.float32)
        if centers.ndim != 2 or centers.shape[1] != 2 or centers.shape[0] < 1:
            raise ValueError(
                f"centers must be an int or an array of shape (K, 2), got shape {centers.shape}"
            )
    std = jnp.asarray(std, jnp.float32)
    noise_key, perm_key = jax.random.split(key)
    sizes = _class_sizes(n, centers.shape[0])
    Y = jnp.concatenate([jnp.full(s, j, jnp.int32) for j, s in enumerate(sizes)])
    X = centers[Y] + std * jax.random.normal(noise_key, (n, 2), jnp.float32)
    return _shuffled(perm_key, X, Y)


def load_digits() -> tuple[jax.Array, jax.Array]:
    """scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, 10 classes.

    A real (small) dataset, read from the copy that ships with scikit-learn (no download).
    scikit-learn is an optional dependency of fjdl, needed only here.

    Returns:
      ``(X, Y)``: float32 ``(1797, 64)`` pixels scaled from 0..16 to ``[0, 1]`` (row-major 8x8
      images, 0 is background), and int32 ``(1797,)`` labels in ``[0, 10)``.

    Raises:
      ImportError: when scikit-learn is not installed.

    References:
      Alpaydin & Kaynak, 1998, *Optical Recognition of Handwritten Digits*, UCI repository.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise ImportError(
            "fjdl.data.load_digits needs scikit-learn, which fjdl does not install: "
            "pip install scikit-learn"
        ) from err
    bunch = sklearn_load_digits()
    X = jnp.asarray(np.asarray(bunch.data, np.float32) / np.float32(16.0))
    Y = jnp.asarray(np.asarray(bunch.target), jnp.int32)
    return X, Y


class Dataset(NamedTuple):
    """A dataset with what a model needs to know about it (see :func:`load_dataset`)."""

    X: jax.Array
    """Inputs, float32 ``(m, n_features)``."""
    Y: jax.Array
    """Labels, int32 ``(m,)``."""
    n_classes: int
    """Number of classes (2 for binary problems)."""
    output: str
    """``"sigmoid"`` for binary problems (one output unit), ``"softmax"`` otherwise."""
    image_shape: tuple[int, int] | None
    """``(H, W)`` when the rows of ``X`` are images, else ``None``."""
    name: str


DATASETS = ("moons", "circles", "spirals", "blobs", "digits")
"""The names of the built-in datasets, as :func:`load_dataset` takes them."""
_DEFAULT_NOISE = {"moons": 0.2, "circles": 0.1, "spirals": 0.2, "blobs": 0.5}


def load_dataset(
    name: str = "moons", key: PRNGKey | None = None, *, n: int = 600, noise: float | None = None
) -> Dataset:
    """A built-in dataset by name, with its metadata: ``"moons"``, ``"circles"``, ``"spirals"``,
    ``"blobs"`` or ``"digits"``.

    The 2-D sets (for decision-boundary plots) are generated with ``key``: moons and circles are
    binary (``output="sigmoid"``), spirals have 3 classes and blobs 3 (``output="softmax"``).
    ``"digits"`` is :func:`load_digits` (needs scikit-learn): all 1,797 examples, 10 classes,
    ``image_shape=(8, 8)``; ``key``, ``n`` and ``noise`` do not apply to it.

    The data comes whole and unstandardized: :func:`split` it, then :func:`fit_standardizer` on
    the training part.

    Args:
      name: one of :data:`DATASETS`.
      key: a PRNG key (required for the 2-D sets).
      n: number of examples of a 2-D set.
      noise: noise of a 2-D set (the ``noise`` of :func:`make_moons`, :func:`make_circles` and
        :func:`make_spirals`, the ``std`` of :func:`make_blobs`); ``None`` for each one's default.

    Returns:
      A :class:`Dataset` ``(X, Y, n_classes, output, image_shape, name)``.

    Example:
      >>> import jax
      >>> ds = load_dataset("spirals", jax.random.key(0), n=300)
      >>> ds.X.shape, ds.n_classes, ds.output
      ((300, 2), 3, 'softmax')
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if name == "digits":
        X, Y = load_digits()
        return Dataset(X, Y, 10, "softmax", (8, 8), name)
    key = _check_key(f"load_dataset({name!r})", key)
    noise = _DEFAULT_NOISE[name] if noise is None else noise
    if name == "moons":
        X, Y = make_moons(key, n, noise=noise)
    elif name == "circles":
        X, Y = make_circles(key, n, noise=noise)
    elif name == "spirals":
        X, Y = make_spirals(key, n, n_classes=3, noise=noise)
    else:
        X, Y = make_blobs(key, n, centers=3, std=noise)
    n_classes = 2 if name in ("moons", "circles") else 3
    return Dataset(X, Y, n_classes, "sigmoid" if n_classes == 2 else "softmax", None, name)


# --------------------------------------------------------------------------------------------------
# Augmentation


def _image_view(
    images: jax.Array, image_shape: Sequence[int] | None
) -> tuple[int, int, int, int]:
    """``(m, H, W, C)`` that ``images`` is viewed as (``C = 1`` without a channel axis); checks."""
    if image_shape is not None:
        if (
            not isinstance(image_shape, tuple | list)
            or len(image_shape) not in (2, 3)
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in image_shape)
            or any(s <= 0 for s in image_shape)
        ):
            raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {image_shape!r}")
        image_shape = tuple(int(s) for s in image_shape)
    if images.ndim == 2:
        if image_shape is None:
            raise ValueError(
                f"images of shape {images.shape} are flat: pass image_shape=(H, W) with "
                f"H * W == {images.shape[1]}, or (H, W, C) with H * W * C == {images.shape[1]}"
            )
        if math.prod(image_shape) != images.shape[1]:
            raise ValueError(
                f"image_shape must be (H, W) with H * W == {images.shape[1]}, or (H, W, C) with "
                f"H * W * C == {images.shape[1]}, got {image_shape!r}"
            )
        shape = (images.shape[0], *image_shape)
    elif images.ndim in (3, 4):
        if image_shape is not None and image_shape != images.shape[1:]:
            raise ValueError(
                f"image_shape {image_shape!r} does not match images of shape {images.shape}"
            )
        shape = images.shape
    else:
        raise ValueError(
            "images must have shape (m, H, W), (m, H, W, C) (channels last) or (m, H * W) with "
            f"image_shape, got {images.shape}"
        )
    m, H, W, C = (*shape, 1) if len(shape) == 3 else shape
    return m, H, W, C


def augment(
    key: PRNGKey,
    images: jax.typing.ArrayLike,
    *,
    flip: bool = True,
    max_shift: int = 1,
    image_shape: tuple[int, ...] | None = None,
) -> jax.Array:
    """Random horizontal flips and small shifts of a batch of images, one draw per image.

    Data augmentation as the course describes it for images: each image is mirrored left-right with
    probability 1/2 (when ``flip``), then shifted by whole pixels ``(dy, dx)``, each drawn uniformly
    from ``[-max_shift, max_shift]``; pixels shifted in from outside are 0:

    .. math::
      x'_{i, j, c} = x_{i - dy, \\, j - dx, \\, c} \\text{ (0 outside the image)}

    Images are ``(H, W)`` or ``(H, W, C)`` with channels last; all channels of an image share its
    flip and shift (the draws do not depend on ``C``: a grayscale batch and the same batch with a
    channel axis come out alike). Labels are not touched: output ``k`` comes from input ``k``, so
    ``Y`` stays aligned. Jit-able with ``flip``, ``max_shift`` and ``image_shape`` static.

    Args:
      key: a PRNG key; the same key gives the same images, bit for bit.
      images: ``(m, H, W)``, ``(m, H, W, C)``, or rows of a data matrix ``(m, H * W)`` or
        ``(m, H * W * C)`` with ``image_shape``.
      flip: mirror each image left-right (along ``W``) with probability 1/2.
      max_shift: largest shift in pixels along each axis, an int >= 0 and smaller than H and W.
      image_shape: ``(H, W)`` or ``(H, W, C)`` when ``images`` is 2-D (rows in row-major order,
        channels last).

    Returns:
      An array of ``images``' shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> X = jnp.arange(2 * 64, dtype=jnp.float32).reshape(2, 64)
      >>> augment(jax.random.key(0), X, image_shape=(8, 8)).shape
      (2, 64)
      >>> augment(jax.random.key(0), jnp.ones((5, 32, 32, 3)), max_shift=4).shape
      (5, 32, 32, 3)

    .. warning::
      A transformation is only an augmentation if it keeps the label. Mirroring turns some digits
      and letters into other symbols (or none): pass ``flip=False`` for them. Augment before
      :func:`standardize`, while 0 is the background: the zero fill of a shift is background then.
    """
    _check_key("augment", key)
    images = jnp.asarray(images)
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be a bool, got {flip!r}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Integral):
        raise TypeError(f"max_shift must be an int, got {max_shift!r}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    original_shape = images.shape
    m, H, W, C = _image_view(images, image_shape)
    if m == 0:
        raise ValueError(f"images is empty: it has 0 examples (shape {original_shape})")
    if max_shift >= min(H, W):
        raise ValueError(f"max_shift must be smaller than the image ({H}x{W}), got {max_shift}")
    images = images.reshape(m, H, W, C)

    flip_key, shift_key = jax.random.split(key)
    if flip:
        mirrored = jax.random.bernoulli(flip_key, 0.5, (m,))
        images = jnp.where(mirrored[:, None, None, None], images[:, :, ::-1], images)
    if max_shift > 0:
        s = max_shift
        shifts = jax.random.randint(shift_key, (m, 2), -s, s + 1)
        padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))

        def shift_one(image, d):
            # out[i, j, c] = image[i - dy, j - dx, c] = padded[i + s - dy, j + s - dx, c]
            return jax.lax.dynamic_slice(image, (s - d[0], s - d[1], 0), (H, W, C))

        images = jax.vmap(shift_one)(padded, shifts)
    return images.reshape(original_shape)


__all__ = [
    "DATASETS",
    "Batches",
    "Dataset",
    "Standardizer",
    "augment",
    "fit_standardizer",
    "fixed_minibatches",
    "load_dataset",
    "load_digits",
    "make_blobs",
    "make_circles",
    "make_moons",
    "make_spirals",
    "masked_mean",
    "minibatch_indices",
    "minibatches",
    "n_batches",
    "split",
    "standardize",
]
