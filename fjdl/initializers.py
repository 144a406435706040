"""Weight initialization: the scale of the first weights decides whether signals vanish or explode.

A dense layer computes ``z = x @ W + b`` with ``W`` of shape ``(n_in, n_out)``. If each weight has
variance ``s**2``, each unit of ``z`` has variance ``n_in * s**2 * Var(x)``; choosing ``s**2`` about
``1 / n_in`` keeps that variance from growing or shrinking layer after layer.

Any kernel works the same way. A kernel has its input and output features last,
``(*receptive_field, n_in, n_out)`` (a 3x3 convolution from 8 to 16 channels: ``(3, 3, 8, 16)``), and
each output sums over its receptive field times ``n_in`` inputs, so

.. math::
  \\text{fan\\_in} = \\prod \\text{receptive\\_field} \\cdot n_{in}, \\qquad
  \\text{fan\\_out} = \\prod \\text{receptive\\_field} \\cdot n_{out}

(jax's ``variance_scaling`` with ``in_axis=-2, out_axis=-1``). A dense ``W`` has an empty receptive
field: ``fan_in = n_in``, ``fan_out = n_out``. The schemes differ only in the constant:

=========================  ==================================  ==============================
scheme                     standard deviation                  made for
=========================  ==================================  ==============================
``zeros``                  0 (every unit identical: no use)    biases
``random_normal(scale)``   ``scale`` (0.01 by default)         the course's first attempt
``he``                     ``sqrt(2 / fan_in)``                ReLU (He et al., 2015)
``xavier``                 ``sqrt(1 / fan_in)``                tanh (the course's "Xavier")
``glorot``                 ``sqrt(2 / (fan_in + fan_out))``    tanh, sigmoid (Glorot & Bengio, 2010)
=========================  ==================================  ==============================

Every initializer takes an explicit key and a shape with at least two dimensions, ``(n_in, n_out)``
or ``(*receptive_field, n_in, n_out)``; biases always start at zero (:func:`zeros` takes any shape).

.. warning::
  PyTorch stores a convolution kernel as ``(n_out, n_in, *receptive_field)``; its fans are the same
  numbers, read from other axes. Transpose such a kernel before comparing it with one made here.

References:
  Glorot & Bengio, 2010, *Understanding the difficulty of training deep feedforward neural
  networks*. He et al., 2015, *Delving Deep into Rectifiers*.
"""

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from fjdl import _checks
from fjdl._types import DTypeLike, Params, PRNGKey, Shape

Initializer = Callable[[PRNGKey, tuple[int, ...]], jax.Array]
"""``(key, shape) -> W``: every scheme below (extra arguments such as ``scale`` have defaults)."""


def _dims(shape: Shape) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints (any number of dimensions)."""
    if not isinstance(shape, tuple | list):
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}")
    last = {len(shape) - 2: "n_in", len(shape) - 1: "n_out"}
    for i, n in enumerate(shape):
        _checks.check_positive_int(f"shape's {last.get(i, f'receptive_field[{i}]')}", n)
    return tuple(int(n) for n in shape)


def _kernel_dims(shape: Shape) -> tuple[int, ...]:
    """``shape`` as a tuple of at least two positive ints ``(*receptive_field, n_in, n_out)``."""
    if not isinstance(shape, tuple | list) or len(shape) < 2:
        raise ValueError(
            "shape must have at least 2 dimensions, (n_in, n_out) for a dense layer or "
            f"(*receptive_field, n_in, n_out) for a kernel, got {shape!r}"
        )
    return _dims(shape)


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """Fan-in and fan-out of a kernel of shape ``(*receptive_field, n_in, n_out)``.

    .. math::
      \\text{fan\\_in} = \\prod \\text{receptive\\_field} \\cdot n_{in}, \\qquad
      \\text{fan\\_out} = \\prod \\text{receptive\\_field} \\cdot n_{out}

    The numbers ``jax.nn.initializers.variance_scaling`` uses (``in_axis=-2, out_axis=-1``), as ints.

    Args:
      shape: at least two positive ints; the last two are ``n_in`` and ``n_out``.

    Returns:
      ``(fan_in, fan_out)``.

    Raises:
      ValueError: when ``shape`` has fewer than 2 dimensions or a size that is not positive.

    Example:
      >>> fans((10, 5)), fans((3, 3, 8, 16))
      ((10, 5), (72, 144))
    """
    dims = _kernel_dims(shape)
    receptive_field = math.prod(dims[:-2])
    return receptive_field * dims[-2], receptive_field * dims[-1]


def zeros(key: PRNGKey | None, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """All zeros. Fine for biases; for weights every unit of a layer stays identical forever.

    Args:
      key: unused (accepted so that every initializer has the same signature); may be ``None``.
      shape: any shape: ``(n_out,)`` for a bias, ``(*receptive_field, n_in, n_out)`` for a kernel.
      dtype: the array's dtype.

    Returns:
      A zero array of shape ``shape``.

    Example:
      >>> zeros(None, (3,)).tolist()
      [0.0, 0.0, 0.0]
    """
    del key
    return jnp.zeros(_dims(shape), dtype)


def random_normal(
    key: PRNGKey, shape: Shape, scale: float = 0.01, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """Gaussian weights with a fixed standard deviation: ``W = scale * N(0, 1)``.

    Args:
      key: a PRNG key.
      shape: ``(n_in, n_out)`` or ``(*receptive_field, n_in, n_out)``.
      scale: the standard deviation (the course's ``* 0.01``; ``* 10`` shows exploding values).
      dtype: the array's dtype.

    Returns:
      An array of shape ``shape``.

    Example:
      >>> import jax
      >>> random_normal(jax.random.key(0), (3, 3, 1, 16)).shape
      (3, 3, 1, 16)
    """
    _checks.check_nonnegative("scale", scale)
    return scale * jax.random.normal(key, _kernel_dims(shape), dtype)


_VARIANCES: dict[str, Callable[[int, int], float]] = {
    "he": lambda fan_in, fan_out: 2.0 / fan_in,
    "xavier": lambda fan_in, fan_out: 1.0 / fan_in,
    "glorot": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),
}


def normal_scale(scheme: str, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array | None:
    """The standard deviation ``sigma`` of a named scheme's weights of ``shape``: each draws
    ``W = sigma * N(0, 1)`` (``random_normal`` with its default scale 0.01); ``None`` for
    ``"zeros"``, which draws nothing.

    :func:`fjdl.tune.train_many` uses it to initialize MLPs of several widths in one program
    (the draw of a narrow layer is the start of a wider one's, and only ``sigma`` depends on the
    shape).

    Example:
      >>> float(normal_scale("he", (8, 3))) == float(jnp.sqrt(2.0 / 8))
      True
    """
    if scheme == "zeros":
        return None
    if scheme == "random_normal":
        return jnp.asarray(0.01, dtype)
    if scheme not in _VARIANCES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    fan_in, fan_out = fans(_kernel_dims(shape))
    return jnp.sqrt(_VARIANCES[scheme](fan_in, fan_out)).astype(dtype)


def _scaled(key: PRNGKey, shape: Shape, scheme: str, dtype: DTypeLike) -> jax.Array:
    """``W = N(0, 1) * sqrt(variance(fan_in, fan_out))``: every scaled scheme."""
    dims = _kernel_dims(shape)
    sigma = normal_scale(scheme, dims, dtype)
    assert sigma is not None  # every scaled scheme has one
    return sigma * jax.random.normal(key, dims, dtype)


def he(key: PRNGKey, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """He initialization: ``W = N(0, 1) * sqrt(2 / fan_in)``, made for ReLU layers.

    .. math::
      W \\sim \\mathcal{N}\\left(0, \\frac{2}{\\text{fan\\_in}}\\right)

    Args:
      key: a PRNG key.
      shape: ``(n_in, n_out)`` (``fan_in = n_in``) or ``(*receptive_field, n_in, n_out)``
        (``fan_in = prod(receptive_field) * n_in``, see :func:`fans`).
      dtype: the array's dtype.

    Returns:
      An array of shape ``shape``.

    Example:
      >>> import jax
      >>> W = he(jax.random.key(0), (2, 10))
      >>> W.shape
      (2, 10)
      >>> he(jax.random.key(0), (3, 3, 8, 16)).shape  # a 3x3 convolution, std sqrt(2 / 72)
      (3, 3, 8, 16)

    .. warning::
      This is the *normal* He initialization with an untruncated Gaussian, as the course writes it;
      ``jax.nn.initializers.he_normal`` and Keras' ``HeNormal`` draw from a truncated normal
      rescaled to the same standard deviation.
    """
    return _scaled(key, shape, "he", dtype)


def xavier(key: PRNGKey, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """The course's "Xavier" initialization: ``W = N(0, 1) * sqrt(1 / fan_in)``, for tanh layers.

    Args:
      key: a PRNG key.
      shape: ``(n_in, n_out)`` or ``(*receptive_field, n_in, n_out)`` (see :func:`fans`).
      dtype: the array's dtype.

    Returns:
      An array of shape ``shape``.

    Example:
      >>> import jax
      >>> xavier(jax.random.key(0), (5, 5, 8, 4)).shape  # std sqrt(1 / 200)
      (5, 5, 8, 4)

    .. warning::
      Keras' ``GlorotNormal`` and PyTorch's ``xavier_normal_`` use ``sqrt(2 / (fan_in + fan_out))``:
      that is :func:`glorot` here.
    """
    return _scaled(key, shape, "xavier", dtype)


def glorot(key: PRNGKey, shape: Shape, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """Glorot (Glorot & Bengio, 2010) normal: ``W = N(0, 1) * sqrt(2 / (fan_in + fan_out))``.

    Args:
      key: a PRNG key.
      shape: ``(n_in, n_out)`` or ``(*receptive_field, n_in, n_out)`` (see :func:`fans`).
      dtype: the array's dtype.

    Returns:
      An array of shape ``shape``.

    Example:
      >>> import jax
      >>> glorot(jax.random.key(0), (3, 3, 1, 16)).shape  # std sqrt(2 / (9 + 144))
      (3, 3, 1, 16)
    """
    return _scaled(key, shape, "glorot", dtype)


SCHEMES: dict[str, Initializer] = {
    "zeros": zeros,
    "random_normal": random_normal,
    "he": he,
    "xavier": xavier,
    "glorot": glorot,
}
"""The initializers by name, as ``fjdl.model.init(key, config, scheme=...)`` takes them."""


def get(scheme: str | Initializer) -> Initializer:
    """An initializer by name (one of ``SCHEMES``) or the callable itself."""
    if callable(scheme):
        return scheme
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)} or a callable, got {scheme!r}")
    return SCHEMES[scheme]


def init_mlp(
    key: PRNGKey,
    sizes: Sequence[int],
    scheme: str | Initializer = "he",
    dtype: DTypeLike = jnp.float32,
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
