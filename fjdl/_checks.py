"""Eager argument checks shared by fjdl's public functions.

Each check runs on Python values and concrete arrays. Under ``jit``/``vmap`` a hyperparameter may be a
tracer; it cannot be inspected then, so the checks let tracers through (the factory that built the
traced program already checked what it could).
"""

import numbers
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def is_concrete(x: object) -> bool:
    """True when ``x`` holds a value that can be inspected now (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _concrete_values(x: object) -> np.ndarray | None:
    if not is_concrete(x):
        return None
    if isinstance(x, numbers.Number):
        return np.asarray(x)
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        return None


def host_value(x: object) -> np.ndarray:
    """``np.asarray(x)``, also for an array sharded over the devices of several processes
    (``jax.distributed``), which every process then gathers whole (a collective: all call it)."""
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def check_real(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a real number or a numeric array."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, numbers.Real):
        return
    # jax's lattice knows bfloat16 (and the other ml_dtypes) as numbers; numpy's does not.
    if hasattr(value, "dtype") and jax.numpy.issubdtype(value.dtype, jax.numpy.number):
        if jax.numpy.issubdtype(value.dtype, jax.numpy.complexfloating):
            raise TypeError(f"{name} must be real, got dtype {value.dtype}")
        return
    raise TypeError(f"{name} must be a real number or numeric array, got {type(value).__name__}")


def _first_bad(value: object, v: np.ndarray, bad: np.ndarray, label: str) -> str:
    """``value`` as a message shows it: itself for a scalar, else the first bad entry and where
    it is (``label`` names the leading axis: ``"model"`` for one value per model)."""
    if v.ndim == 0:
        return repr(value)
    where = np.argwhere(bad)[0]
    first = v[tuple(where)].item()
    more = int(bad.sum()) - 1
    return f"{first!r} ({label} {int(where[0])}" + (f"; {more} more)" if more else ")")


def _check_values(name, value, bad_of, want: str, label: str) -> None:
    v = _concrete_values(value)
    if v is None or v.dtype == object:
        return
    bad = bad_of(v)
    if np.any(bad):
        raise ValueError(f"{name} must be {want}, got {_first_bad(value, v, np.asarray(bad), label)}")


def check_finite(name: str, value: object, *, label: str = "entry") -> None:
    check_real(name, value)
    _check_values(name, value, lambda v: ~np.isfinite(v), "finite", label)


def check_nonnegative(name: str, value: object, *, label: str = "entry") -> None:
    """``value >= 0`` (a learning rate, lambd, a decay rate); every entry of an array."""
    check_finite(name, value, label=label)
    _check_values(name, value, lambda v: v < 0, ">= 0", label)


def check_positive(name: str, value: object, *, label: str = "entry") -> None:
    check_finite(name, value, label=label)
    _check_values(name, value, lambda v: v <= 0, "> 0", label)


def check_unit_interval(
    name: str, value: object, *, low_open: bool = False, high_open: bool = True, label="entry"
) -> None:
    """``value`` in [0, 1) by default (a beta); the bounds' openness is selectable."""
    check_finite(name, value, label=label)
    interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")

    def bad_of(v):
        return ((v <= 0) if low_open else (v < 0)) | ((v >= 1) if high_open else (v > 1))

    _check_values(name, value, bad_of, f"in {interval}", label)


def check_keep_prob(name: str, value: object, *, label: str = "entry") -> None:
    """A dropout keep probability: in (0, 1]."""
    check_unit_interval(name, value, low_open=True, high_open=False, label=label)


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_shape(name: str, value: Any, shape: tuple[int | None, ...]) -> None:
    """Check ``value.shape`` against ``shape``; ``None`` in ``shape`` matches any size."""
    got = tuple(np.shape(value))
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        want = (
            "("
            + ", ".join("m" if s is None else str(s) for s in shape)
            + ("," if len(shape) == 1 else "")
            + ")"
        )
        raise ValueError(f"{name} must have shape {want}, got {got}")


def check_key(name: str, key: Any) -> jax.Array:
    """A single PRNG key: a typed key (``jax.random.key``), a raw ``uint32`` key of shape ``(2,)``
    (``jax.random.PRNGKey``), or a Python int, taken as the seed of ``jax.random.key(int)``.

    Returns the key (the int turned into a typed key). Raises ``TypeError`` naming ``name``.
    """
    if isinstance(key, bool) or key is None:
        raise TypeError(f"{name} must be a PRNG key, e.g. {name}=jax.random.key(0), got {key!r}")
    if isinstance(key, numbers.Integral):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if np.shape(key) != ():
            raise ValueError(
                f"{name} must be a single PRNG key, got an array of keys of shape {np.shape(key)}"
            )
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.shape(key) == (2,):
        return key
    raise TypeError(
        f"{name} must be a PRNG key (jax.random.key(seed)) or an int seed, got "
        f"{type(key).__name__}" + (f" of dtype {dtype} and shape {np.shape(key)}" if dtype else "")
    )


def check_all_finite(name: str, x: object) -> None:
    """Raise ``ValueError`` naming ``name`` and the first bad position when a concrete array
    holds NaN or Inf (traced arrays pass: they cannot be inspected)."""
    if not is_concrete(x):
        return
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # jax.distributed: test in place
        if bool(jax.numpy.all(jax.numpy.isfinite(x))):
            return
    a = host_value(x)
    if not np.issubdtype(a.dtype, np.inexact):
        try:  # bfloat16 and other ml_dtypes are not numpy inexact types
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            return
    # The common case in two reductions and no mask (np.min and np.max propagate NaN, and an Inf
    # is one of them); the position only when there is one.
    if a.size == 0 or (np.isfinite(a.min()) and np.isfinite(a.max())):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be finite, got {int(bad.sum())} NaN or Inf value(s), the first "
            f"({a[where]}) at index {where}"
        )
