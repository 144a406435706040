r"""Search spaces: samplers that draw hyperparameters on the right scale, grids, narrowing.

- **Sample at random, not on a grid**: with a grid of 5 x 5 only 5 distinct learning rates are tried;
  25 random points try 25. :func:`grid` exists to show the difference.
- **On the right scale**: a learning rate in [1e-4, 1] is sampled uniformly in its exponent
  (:func:`log_uniform`), so each decade gets as many trials; a momentum ``beta`` in [0.9, 0.999]
  is sampled through ``1 - beta`` on a log scale (:func:`beta_log_scale`), because the average
  spans about ``1 / (1 - beta)`` steps and that is what matters.
- **Coarse to fine**: :func:`narrow` shrinks a space onto the best trials so far.

A search space is a plain dict from hyperparameter names to samplers (:class:`LogUniform`,
:class:`BetaLogScale`, :class:`Uniform`, :class:`UniformInt`, :class:`Choice`) or constants.
"""

import dataclasses
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks
from fjdl._types import PRNGKey

# --------------------------------------------------------------------------------------------------
# Sampling


def _check_n(n) -> None:
    _checks.check_positive_int("n", n)


def _check_low_high(low, high, *, positive=False) -> None:
    _checks.check_finite("low", low)
    _checks.check_finite("high", high)
    if positive and low <= 0:
        raise ValueError(f"low must be > 0 on a log scale, got {low!r}")
    if not low < high:
        raise ValueError(f"low must be < high, got low={low!r}, high={high!r}")


def _check_beta_range(low, high) -> None:
    _checks.check_finite("low", low)
    _checks.check_finite("high", high)
    if not 0 <= low < high < 1:
        raise ValueError(
            f"beta_log_scale needs 0 <= low < high < 1, got low={low!r}, high={high!r}"
        )


def log_uniform(key: PRNGKey, low: float, high: float, n: int) -> jax.Array:
    r"""``n`` values spread uniformly on a log scale between ``low`` and ``high``.

    .. math::
      r \sim U(\log_{10} a, \log_{10} b), \qquad x = 10^{r}

    with :math:`a` = ``low`` and :math:`b` = ``high``. Each decade gets the same share of the
    samples: in [1e-4, 1], a quarter of them fall in [1e-4, 1e-3], where a uniform draw would put
    0.09 %.

    Args:
      key: a PRNG key.
      low: the smallest value, > 0 (e.g. ``1e-4`` for a learning rate).
      high: the largest value, > ``low``.
      n: how many values.

    Returns:
      A float array of shape ``(n,)``, each value in ``[low, high]``.

    Example:
      >>> import jax
      >>> lr = log_uniform(jax.random.key(0), 1e-4, 1.0, 1000)
      >>> bool(((lr >= 1e-4) & (lr <= 1.0)).all()), bool((lr < 1e-3).mean() > 0.2)
      (True, True)
    """
    _check_low_high(low, high, positive=True)
    _check_n(n)
    r = jax.random.uniform(key, (n,), minval=math.log10(low), maxval=math.log10(high))
    return jnp.clip(10.0**r, low, high)


def beta_log_scale(key: PRNGKey, low: float, high: float, n: int) -> jax.Array:
    r"""``n`` values of an averaging ``beta`` in ``[low, high]``, with ``1 - beta`` on a log scale.

    .. math::
      r \sim U(\log_{10}(1 - b), \log_{10}(1 - a)), \qquad \beta = 1 - 10^{r}

    with :math:`a` = ``low`` and :math:`b` = ``high``. An exponentially weighted average with
    :math:`\beta` averages over about :math:`1 / (1 - \beta)` values: from 0.9 to 0.9005 it hardly
    changes (10 values), from 0.999 to 0.9995 it doubles (1000 to 2000). Sampling ``1 - beta`` on a
    log scale spends as many trials on [0.9, 0.99] as on [0.99, 0.999].

    Args:
      key: a PRNG key.
      low, high: the range of ``beta``, ``0 <= low < high < 1`` (e.g. 0.9 and 0.999).
      n: how many values.

    Returns:
      A float array of shape ``(n,)``, each value in ``[low, high]``.

    Example:
      >>> import jax
      >>> beta = beta_log_scale(jax.random.key(0), 0.9, 0.999, 1000)
      >>> bool(((beta >= 0.9) & (beta <= 0.999)).all()), round(float((beta < 0.99).mean()), 1)
      (True, 0.5)
    """
    _check_beta_range(low, high)
    _check_n(n)
    r = jax.random.uniform(key, (n,), minval=math.log10(1 - high), maxval=math.log10(1 - low))
    return jnp.clip(1.0 - 10.0**r, low, high)


def uniform(key: PRNGKey, low: float, high: float, n: int) -> jax.Array:
    """``n`` values drawn uniformly from ``[low, high)`` (for a keep_prob, say).

    Example:
      >>> import jax
      >>> x = uniform(jax.random.key(0), 0.5, 1.0, 100)
      >>> bool(((x >= 0.5) & (x < 1.0)).all())
      True
    """
    _check_low_high(low, high)
    _check_n(n)
    return jax.random.uniform(key, (n,), minval=low, maxval=high)


def uniform_int(key: PRNGKey, low: int, high: int, n: int) -> jax.Array:
    """``n`` integers drawn uniformly from ``low`` to ``high``, both included (layer widths, depths).

    Example:
      >>> import jax
      >>> sorted(set(uniform_int(jax.random.key(0), 2, 4, 100).tolist()))
      [2, 3, 4]
    """
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if low > high:
        raise ValueError(f"low must be <= high, got low={low!r}, high={high!r}")
    _check_n(n)
    return jax.random.randint(key, (n,), low, high + 1, dtype=jnp.int32)


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A hyperparameter sampled with :func:`log_uniform` (learning rate, ``lambd``, ``epsilon``)."""

    low: float
    high: float

    def __post_init__(self):
        _check_low_high(self.low, self.high, positive=True)

    def sample(self, key: PRNGKey, n: int) -> list[float]:
        return [float(v) for v in np.asarray(log_uniform(key, self.low, self.high, n))]

    def to_scale(self, x):
        return np.log10(np.asarray(x, np.float64))

    def from_scale(self, t):
        return 10.0 ** np.asarray(t, np.float64)

    def grid(self, n: int) -> list[float]:
        """``n`` values evenly spaced on the log scale, both ends included."""
        _check_n(n)
        start, stop = self.to_scale([self.low, self.high])
        t = np.linspace(start, stop, n)
        return [float(np.clip(v, self.low, self.high)) for v in self.from_scale(t)]

    def narrow(self, values, margin: float = 0.1) -> "LogUniform":
        low, high = _narrowed(self, values, margin)
        return LogUniform(low, high)


@dataclasses.dataclass(frozen=True)
class BetaLogScale:
    """A ``beta`` sampled with :func:`beta_log_scale` (momentum, RMSprop, Adam's beta1/beta2)."""

    low: float
    high: float

    def __post_init__(self):
        _check_beta_range(self.low, self.high)

    def sample(self, key: PRNGKey, n: int) -> list[float]:
        return [float(v) for v in np.asarray(beta_log_scale(key, self.low, self.high, n))]

    def to_scale(self, x):
        return np.log10(1.0 - np.asarray(x, np.float64))

    def from_scale(self, t):
        return 1.0 - 10.0 ** np.asarray(t, np.float64)

    def grid(self, n: int) -> list[float]:
        _check_n(n)
        start, stop = self.to_scale([self.low, self.high])
        t = np.linspace(start, stop, n)
        return [float(np.clip(v, self.low, self.high)) for v in self.from_scale(t)]

    def narrow(self, values, margin: float = 0.1) -> "BetaLogScale":
        low, high = _narrowed(self, values, margin)
        return BetaLogScale(low, high)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A hyperparameter sampled with :func:`uniform` (a keep_prob)."""

    low: float
    high: float

    def __post_init__(self):
        _check_low_high(self.low, self.high)

    def sample(self, key: PRNGKey, n: int) -> list[float]:
        return [float(v) for v in np.asarray(uniform(key, self.low, self.high, n))]

    def to_scale(self, x):
        return np.asarray(x, np.float64)

    def from_scale(self, t):
        return np.asarray(t, np.float64)

    def grid(self, n: int) -> list[float]:
        _check_n(n)
        return [float(v) for v in np.linspace(self.low, self.high, n)]

    def narrow(self, values, margin: float = 0.1) -> "Uniform":
        low, high = _narrowed(self, values, margin)
        return Uniform(low, high)


@dataclasses.dataclass(frozen=True)
class UniformInt:
    """An integer sampled with :func:`uniform_int` (a layer width, a depth, both ends included)."""

    low: int
    high: int

    def __post_init__(self):
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {v!r}")
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low!r}, high={self.high!r}")

    def sample(self, key: PRNGKey, n: int) -> list[int]:
        return [int(v) for v in np.asarray(uniform_int(key, self.low, self.high, n))]

    def to_scale(self, x):
        return np.asarray(x, np.float64)

    def from_scale(self, t):
        return np.asarray(t, np.float64)

    def grid(self, n: int) -> list[int]:
        _check_n(n)
        return sorted({int(round(v)) for v in np.linspace(self.low, self.high, n)})

    def narrow(self, values, margin: float = 0.1) -> "UniformInt":
        low, high = _narrowed(self, values, margin)
        return UniformInt(int(math.floor(low + 1e-9)), int(math.ceil(high - 1e-9)))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few options, each equally likely (an activation, a mini-batch size)."""

    options: tuple

    def __post_init__(self):
        options = tuple(self.options)
        if not options:
            raise ValueError("Choice needs at least one option")
        object.__setattr__(self, "options", options)

    def sample(self, key: PRNGKey, n: int) -> list:
        _check_n(n)
        idx = np.asarray(jax.random.randint(key, (n,), 0, len(self.options)))
        return [self.options[i] for i in idx]

    def grid(self, n: int) -> list:
        del n
        return list(self.options)

    def narrow(self, values, margin: float = 0.1) -> "Choice":
        del margin
        kept = tuple(o for o in self.options if o in list(values))
        return Choice(kept or self.options)


Sampler = LogUniform | BetaLogScale | Uniform | UniformInt | Choice
"""Any of the samplers: the type of a search space's values that are not constants."""
SAMPLERS = (LogUniform, BetaLogScale, Uniform, UniformInt, Choice)
"""The sampler classes, for ``isinstance`` tests."""


def _narrowed(sampler, values, margin):
    """The range, on the sampler's own scale, spanned by ``values`` and padded by ``margin`` times
    the old width, clipped to the old range; returned as ``(low, high)`` in values."""
    _checks.check_nonnegative("margin", margin)
    values = np.asarray(list(values), np.float64)
    if values.size == 0:
        raise ValueError("narrow needs at least one value")
    ends = sampler.to_scale([sampler.low, sampler.high])
    t_min, t_max = float(ends.min()), float(ends.max())
    t = sampler.to_scale(values)
    pad = margin * (t_max - t_min)
    lo, hi = max(t.min() - pad, t_min), min(t.max() + pad, t_max)
    if hi - lo < 1e-6 * (t_max - t_min):  # a single value: keep a sliver around it
        half = max(margin, 1e-3) * (t_max - t_min) / 2
        lo, hi = max(lo - half, t_min), min(hi + half, t_max)
    a, b = sorted(float(v) for v in sampler.from_scale([lo, hi]))
    return max(a, float(sampler.low)), min(b, float(sampler.high))


def _check_space(space) -> None:
    if not isinstance(space, Mapping) or not space:
        raise TypeError(
            f"space must be a non-empty dict of name -> sampler or constant, got {space!r}"
        )
    for name in space:
        if not isinstance(name, str):
            raise TypeError(f"space names must be strings, got {name!r}")


def sample(space: Mapping[str, Any], key: PRNGKey, n: int) -> list[dict]:
    """``n`` random trials from ``space``: a list of dicts, one value per name.

    Each sampler draws with its own key (split from ``key`` in the order of the dict); a constant
    (any value that is not a sampler) is the same in every trial.

    Example:
      >>> import jax
      >>> trials = sample({"learning_rate": LogUniform(1e-4, 1.0), "epochs": 10},
      ...                 jax.random.key(0), 3)
      >>> len(trials), sorted(trials[0]), trials[0]["epochs"]
      (3, ['epochs', 'learning_rate'], 10)
    """
    _check_space(space)
    _check_n(n)
    keys = jax.random.split(key, len(space))
    columns = {}
    for k, (name, s) in zip(keys, space.items()):
        columns[name] = s.sample(k, n) if isinstance(s, SAMPLERS) else [s] * n
    return [{name: columns[name][i] for name in space} for i in range(n)]


def grid(space: Mapping[str, Any], points_per_axis: int) -> list[dict]:
    """Every combination of ``points_per_axis`` values per sampler, each axis on its own scale.

    For comparison with random search: a grid of ``k`` points per axis over ``d`` axes costs
    ``k ** d`` trials yet tries only ``k`` values of each hyperparameter.

    Example:
      >>> g = grid({"learning_rate": LogUniform(1e-3, 1e-1), "beta": BetaLogScale(0.9, 0.99)}, 3)
      >>> len(g), sorted({round(t["learning_rate"], 6) for t in g})
      (9, [0.001, 0.01, 0.1])
    """
    _check_space(space)
    axes = {
        name: (s.grid(points_per_axis) if isinstance(s, SAMPLERS) else [s])
        for name, s in space.items()
    }
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def narrow(space: Mapping[str, Any], trials: Sequence[Mapping], margin: float = 0.1) -> dict:
    """The space zoomed onto ``trials`` (typically the best few): each sampler's range becomes the
    span of their values on its own scale, padded by ``margin`` times the old width and clipped to
    the old range. Constants stay as they are; a :class:`Choice` keeps the options seen.

    Example:
      >>> space = {"learning_rate": LogUniform(1e-4, 1.0)}
      >>> narrow(space, [{"learning_rate": 1e-3}, {"learning_rate": 1e-2}], margin=0.0)
      {'learning_rate': LogUniform(low=0.001, high=0.01)}
    """
    _check_space(space)
    if not trials:
        raise ValueError("narrow needs at least one trial")
    return {
        name: (s.narrow([t[name] for t in trials], margin) if isinstance(s, SAMPLERS) else s)
        for name, s in space.items()
    }
