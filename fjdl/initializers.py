"""Weight initialization: the scale of the first weights decides whether signals vanish or explode.

A dense layer computes ``z = x @ W + b`` with ``W`` of shape ``(n_in, n_out)``. If each weight has
variance ``s**2``, each unit of ``z`` has variance ``n_in * s**2 * Var(x)``; choosing ``s**2`` about
``1 / n_in`` keeps that variance from growing or shrinking layer after layer. The schemes here differ
only in the constant:

=========================  ==================================  ==============================
scheme                     standard deviation                  made for
=========================  ==================================  ==============================
``zeros``                  0 (every unit identical: no use)    biases
``random_normal(scale)``   ``scale`` (0.01 by default)         the course's first attempt
``he``                     ``sqrt(2 / n_in)``                  ReLU (He et al., 2015)
``xavier``                 ``sqrt(1 / n_in)``                  tanh (the course's "Xavier")
``glorot``                 ``sqrt(2 / (n_in + n_out))``        tanh, sigmoid (Glorot & Bengio, 2010)
=========================  ==================================  ==============================

Every initializer takes an explicit key and a shape ``(n_in, n_out)``; biases always start at zero.

References:
  Glorot & Bengio, 2010, *Understanding the difficulty of training deep feedforward neural
  networks*. He et al., 2015, *Delving Deep into Rectifiers*.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from fjdl import _checks
from fjdl._types import Params, PRNGKey

Initializer = Callable[[PRNGKey, tuple[int, int]], jax.Array]


def _fan(shape) -> tuple[int, int]:
    if not isinstance(shape, tuple | list) or len(shape) != 2:
        raise ValueError(f"shape must be (n_in, n_out), got {shape!r}")
    for name, n in zip(("n_in", "n_out"), shape):
        _checks.check_positive_int(f"shape's {name}", n)
    return int(shape[0]), int(shape[1])


def zeros(key: PRNGKey | None, shape, dtype=jnp.float32) -> jax.Array:
    """All zeros. Fine for biases; for weights every unit of a layer stays identical forever.

    Args:
      key: unused (accepted so that every initializer has the same signature); may be ``None``.
      shape: ``(n_in, n_out)``.
      dtype: the array's dtype.

    Returns:
      A zero array of shape ``shape``.
    """
    del key
    return jnp.zeros(_fan(shape), dtype)


def random_normal(key: PRNGKey, shape, scale: float = 0.01, dtype=jnp.float32) -> jax.Array:
    """Gaussian weights with a fixed standard deviation: ``W = scale * N(0, 1)``.

    Args:
      key: a PRNG key.
      shape: ``(n_in, n_out)``.
      scale: the standard deviation (the course's ``* 0.01``; ``* 10`` shows exploding values).
      dtype: the array's dtype.
    """
    _checks.check_nonnegative("scale", scale)
    return scale * jax.random.normal(key, _fan(shape), dtype)


def _scaled(key, shape, variance_numerator, dtype):
    n_in, n_out = _fan(shape)
    return jnp.sqrt(variance_numerator(n_in, n_out)).astype(dtype) * jax.random.normal(
        key, (n_in, n_out), dtype
    )


def he(key: PRNGKey, shape, dtype=jnp.float32) -> jax.Array:
    """He initialization: ``W = N(0, 1) * sqrt(2 / n_in)``, made for ReLU layers.

    Example:
      >>> import jax
      >>> W = he(jax.random.key(0), (2, 10))
      >>> W.shape
      (2, 10)
    """
    return _scaled(key, shape, lambda n_in, n_out: 2.0 / n_in, dtype)


def xavier(key: PRNGKey, shape, dtype=jnp.float32) -> jax.Array:
    """The course's "Xavier" initialization: ``W = N(0, 1) * sqrt(1 / n_in)``, for tanh layers.

    .. warning::
      Keras' ``GlorotNormal`` and PyTorch's ``xavier_normal_`` use ``sqrt(2 / (n_in + n_out))``:
      that is :func:`glorot` here.
    """
    return _scaled(key, shape, lambda n_in, n_out: 1.0 / n_in, dtype)


def glorot(key: PRNGKey, shape, dtype=jnp.float32) -> jax.Array:
    """Glorot (Glorot & Bengio, 2010) normal: ``W = N(0, 1) * sqrt(2 / (n_in + n_out))``."""
    return _scaled(key, shape, lambda n_in, n_out: 2.0 / (n_in + n_out), dtype)


SCHEMES: dict[str, Initializer] = {
    "zeros": zeros,
    "random_normal": random_normal,
    "he": he,
    "xavier": xavier,
    "glorot": glorot,
}


def get(scheme: str | Initializer) -> Initializer:
    """An initializer by name (one of ``SCHEMES``) or the callable itself."""
    if callable(scheme):
        return scheme
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)} or a callable, got {scheme!r}")
    return SCHEMES[scheme]


def init_mlp(
    key: PRNGKey, sizes: Sequence[int], scheme: str | Initializer = "he", dtype=jnp.float32
) -> Params:
    """Parameters of a dense network: one ``{"W", "b"}`` dict per layer, one key per layer.

    Args:
      key: a PRNG key; split into one key per layer (``jax.random.split(key, len(sizes) - 1)``).
      sizes: layer widths ``[n_x, n_1, ..., n_L]``.
      scheme: an initializer name from ``SCHEMES`` or a callable ``(key, (n_in, n_out)) -> W``.
      dtype: dtype of every array.

    Returns:
      A tuple of ``len(sizes) - 1`` dicts with ``W`` of shape ``(sizes[l], sizes[l + 1])`` and ``b``
      of shape ``(sizes[l + 1],)`` at zero.

    Example:
      >>> import jax
      >>> params = init_mlp(jax.random.key(0), [2, 10, 5, 1])
      >>> [p["W"].shape for p in params]
      [(2, 10), (10, 5), (5, 1)]
    """
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least the input and output widths, got {sizes!r}")
    for i, n in enumerate(sizes):
        _checks.check_positive_int(f"sizes[{i}]", n)
    initializer = get(scheme)
    keys = jax.random.split(key, len(sizes) - 1)
    return tuple(
        {
            "W": jnp.asarray(initializer(k, (n_in, n_out)), dtype),
            "b": jnp.zeros((n_out,), dtype),
        }
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
    )
