"""Eager argument checks shared by fjdl's public functions.

Each check runs on Python values and concrete arrays. Under ``jit``/``vmap`` a hyperparameter may be a
tracer; it cannot be inspected then, so the checks let tracers through (the factory that built the
traced program already checked what it could).
"""

import numbers

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds a value that can be inspected now (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _concrete_values(x):
    if not is_concrete(x):
        return None
    if isinstance(x, numbers.Number):
        return np.asarray(x)
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        return None


def check_real(name: str, value) -> None:
    """Raise ``TypeError`` unless ``value`` is a real number or a numeric array."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, numbers.Real):
        return
    if hasattr(value, "dtype") and np.issubdtype(np.dtype(value.dtype), np.number):
        return
    raise TypeError(f"{name} must be a real number or numeric array, got {type(value).__name__}")


def check_finite(name: str, value) -> None:
    check_real(name, value)
    v = _concrete_values(value)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_nonnegative(name: str, value) -> None:
    """``value >= 0`` (a learning rate, lambd, a decay rate)."""
    check_finite(name, value)
    v = _concrete_values(value)
    if v is not None and np.any(v < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_positive(name: str, value) -> None:
    check_finite(name, value)
    v = _concrete_values(value)
    if v is not None and np.any(v <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_unit_interval(name: str, value, *, low_open=False, high_open=True) -> None:
    """``value`` in [0, 1) by default (a beta); the bounds' openness is selectable."""
    check_finite(name, value)
    v = _concrete_values(value)
    if v is None:
        return
    low_bad = np.any(v <= 0) if low_open else np.any(v < 0)
    high_bad = np.any(v >= 1) if high_open else np.any(v > 1)
    if low_bad or high_bad:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_keep_prob(name: str, value) -> None:
    """A dropout keep probability: in (0, 1]."""
    check_unit_interval(name, value, low_open=True, high_open=False)


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_shape(name: str, value, shape: tuple) -> None:
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
