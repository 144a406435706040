r"""Hyperparameter search: sampling on the right scale, many models trained at once, random and
coarse-to-fine search, and babysitting one model.

The course's advice (week 3, "Hyperparameter tuning"), as functions:

- **Sample at random, not on a grid**: with a grid of 5 x 5 only 5 distinct learning rates are tried;
  25 random points try 25. :func:`grid` exists to show the difference.
- **On the right scale**: a learning rate in [1e-4, 1] is sampled uniformly in its exponent
  (:func:`log_uniform`), so each decade gets as many trials; a momentum ``beta`` in [0.9, 0.999]
  is sampled through ``1 - beta`` on a log scale (:func:`beta_log_scale`), because the average
  spans about ``1 / (1 - beta)`` steps and that is what matters.
- **Coarse to fine**: after a first round, zoom into the region where the best trials are and
  sample again (:func:`coarse_to_fine`).
- **Caviar or panda**: train many models in parallel when the hardware allows
  (:func:`train_many`), or babysit one model and change its hyperparameters as it trains
  (:class:`Panda`).

A search space is a plain dict from hyperparameter names to samplers (:class:`LogUniform`,
:class:`BetaLogScale`, :class:`Uniform`, :class:`UniformInt`, :class:`Choice`) or constants::

  space = {
      "learning_rate": tune.LogUniform(1e-4, 1.0),
      "beta1": tune.BetaLogScale(0.9, 0.999),
      "n_units": tune.UniformInt(5, 50),
  }
  result = tune.random_search(space, X, Y, dev=(X_dev, Y_dev), key=key, n_trials=64,
                              config=MLP((2, 20, 1)), epochs=200)
  result.best        # the best trial's record

**Many models at once.** :func:`train_many` trains ``N`` models that differ in hyperparameters and
seeds as one compiled program, and gives the same results as ``N`` calls of
:func:`fjdl.train.fit` with the same keys. Inside, the weights are kept in the course's orientation
(``W`` of shape ``(n_out, n_in)``) with the examples along the last axis, stacked over models: the
first layer of every model is one wide product on the shared inputs, and each later layer is one
batched product ``(N, n_out, n_in) @ (N, n_in, m)``. Of the layouts tried on a 2-core CPU (batched
products, broadcast-and-sum, unrolled sums, block-diagonal packing of 2 to 8 models, models in the
SIMD lanes, chunks of models in a ``lax.map``) this was the fastest, yet for course-size networks
on one core it is only about as fast as training the models one after another: the per-model
products are too small for any layout to reach the speed of a large matrix product. So on a CPU,
which JAX shows as one device, the models are split into one part per core and the parts run from
as many threads (64 course-size models, 2,000 steps: 1.1 s against 2.5 s for 64 sequential
``fit`` calls on 2 cores). On several devices (GPUs, TPU cores, or simulated CPU devices) the
models are sharded over all of them (:func:`fjdl.parallel.model_sharding`).

References:
  Bergstra & Bengio, 2012, *Random Search for Hyper-Parameter Optimization*.
  Andrew Ng, *Improving Deep Neural Networks*, week 3.
"""

import concurrent.futures
import dataclasses
import itertools
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, batchnorm, losses, nn, optim, parallel, schedules, train
from fjdl import model as fjdl_model
from fjdl._types import PRNGKey
from fjdl.model import MLP

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
        t = np.linspace(*self.to_scale([self.low, self.high]), n)
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
        t = np.linspace(*self.to_scale([self.low, self.high]), n)
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
SAMPLERS = (LogUniform, BetaLogScale, Uniform, UniformInt, Choice)


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


# --------------------------------------------------------------------------------------------------
# Many models at once


class OptHyperparams(NamedTuple):
    """Per-model optimizer hyperparameters (arrays, one value per model under ``vmap``)."""

    learning_rate: jax.Array
    decay_rate: jax.Array
    beta: jax.Array  # momentum / RMSprop
    beta1: jax.Array  # Adam
    beta2: jax.Array  # Adam
    epsilon: jax.Array  # RMSprop / Adam


OPTIMIZER_NAMES = ("gd", "momentum", "rmsprop", "adam")


class ModelGroup(NamedTuple):
    """Models of one shape, trained together: their config, their indices among all the models,
    and their final :class:`fjdl.train.TrainState`, stacked (a leading axis of size
    ``len(indices)`` on every leaf)."""

    config: MLP
    indices: np.ndarray
    state: train.TrainState


@dataclasses.dataclass(frozen=True)
class ManyResult:
    """What :func:`train_many` returns.

    Attributes:
      history: a :class:`fjdl.train.History` whose fields have shape ``(N, epochs)``; after a
        model diverges (NaN or Inf), its entries are NaN.
      groups: one :class:`ModelGroup` per distinct config, in order of first appearance.
      configs: the config of each model.
      diverged_epoch: ``(N,)`` ints, the epoch at which each model diverged, -1 if it did not.
        A diverged model's state is its last finite one (as ``fit(on_divergence="stop")``).
    """

    history: train.History
    groups: tuple[ModelGroup, ...]
    configs: tuple[MLP, ...]
    diverged_epoch: np.ndarray

    @property
    def n_models(self) -> int:
        return len(self.configs)

    @property
    def params(self):
        """The stacked parameters (leading axis: the models), when all models share one config."""
        return self._single_group().state.params

    @property
    def model_state(self):
        """The stacked batch-norm state, when all models share one config."""
        return self._single_group().state.model_state

    def _single_group(self) -> ModelGroup:
        if len(self.groups) != 1:
            raise ValueError(
                f"the models have {len(self.groups)} different configs: use .groups or .state(i)"
            )
        return self.groups[0]

    def state(self, i: int) -> train.TrainState:
        """The final :class:`fjdl.train.TrainState` of model ``i``, unstacked."""
        if not 0 <= i < self.n_models:
            raise IndexError(f"model index must be in [0, {self.n_models}), got {i}")
        for g in self.groups:
            where = np.nonzero(g.indices == i)[0]
            if where.size:
                return jax.tree.map(lambda a, j=int(where[0]): a[j], g.state)
        raise AssertionError("unreachable")  # pragma: no cover

    def final(self, field: str = "dev_accuracy") -> np.ndarray:
        """The last finite value of a history field for each model (NaN where there is none)."""
        values = np.asarray(getattr(self.history, field), np.float64)
        return _last_finite(values)


def _last_finite(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    out = np.full(values.shape[0], np.nan)
    for i in range(values.shape[0]):
        idx = np.nonzero(finite[i])[0]
        if idx.size:
            out[i] = values[i, idx[-1]]
    return out


def _is_weight(path) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and last.key == "W"


def _flip_weights(tree):
    """Swap the last two axes of every ``"W"`` leaf: fjdl's ``(n_in, n_out)`` <-> the course's
    ``(n_out, n_in)``. Optimizer states hold parameter-shaped trees, flipped alike."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.swapaxes(x, -1, -2) if _is_weight(p) else x, tree
    )


def _dense(W, h):
    """Each model's layer: ``W`` ``(N, n_out, n_in)`` times ``h`` ``(N, n_in, m)``, batched."""
    return jnp.einsum("noi,nim->nom", W, h)


def _dense_shared(W, xT):
    """Every model's first layer on the same inputs ``xT`` ``(n_x, m)``: one wide product
    ``(N * n_out, n_x) @ (n_x, m)``."""
    n, o, i = W.shape
    return (W.reshape(n * o, i) @ xT).reshape(n, o, xT.shape[1])


def _forward_many(config: MLP, params, model_state, x, *, keys=None, keep_probs=None, train_mode):
    """:func:`fjdl.model.apply` for ``N`` stacked models at once, in the internal layout.

    ``params`` hold ``W`` as ``(N, n_out, n_in)``; ``x`` is ``(m, n_x)`` shared by all the models or
    ``(N, m, n_x)``, one batch per model. Dropout masks and batch-norm statistics are computed per
    model on its ``(m, n)`` view, exactly as :func:`fjdl.model.apply` computes them for one model.
    Returns ``(logits, new_model_state)``, logits ``(N, m)`` or ``(N, m, C)``.
    """
    L = config.n_layers
    g = nn.ACTIVATIONS[config.activation]
    dropping = train_mode and config.keep_probs is not None
    if dropping:
        layer_keys = jax.vmap(lambda k: jax.random.split(k, max(L - 1, 1)))(keys)
    new_state = []
    h = None
    for l, layer in enumerate(params):
        if l == 0:
            if x.ndim == 2:
                h = _dense_shared(layer["W"], x.T)
            else:
                h = _dense(layer["W"], jnp.swapaxes(x, 1, 2))
        else:
            h = _dense(layer["W"], h)
        if config.is_bn_layer(l):
            gamma, beta, eps = layer["gamma"], layer["beta"], config.bn_eps
            if train_mode:

                def bn_train(z, gm, bt, running, eps=eps):
                    z, stats = batchnorm.normalize_train(z.T, gm, bt, eps)
                    return z.T, batchnorm.update_running(running, stats, config.bn_momentum)

                h, running = jax.vmap(bn_train)(h, gamma, beta, model_state[l])
                new_state.append(running)
            else:
                h = jax.vmap(
                    lambda z, gm, bt, r, eps=eps: batchnorm.normalize_eval(z.T, gm, bt, r, eps).T
                )(h, gamma, beta, model_state[l])
                new_state.append(model_state[l])
        else:
            h = h + layer["b"][:, :, None]
            new_state.append(model_state[l])
        if l < L - 1:
            h = g(h)
            if dropping:
                h = jax.vmap(lambda k, a, p: nn.dropout(k, a.T, p).T)(
                    layer_keys[:, l], h, keep_probs[:, l]
                )
    if config.output != "softmax" and config.sizes[-1] == 1:
        logits = h[:, 0, :]
    else:
        logits = jnp.swapaxes(h, 1, 2)
    return logits, tuple(new_state)


def _costs(config, logits, Y, params, hp):
    """Each model's cost (data loss plus penalties), ``(N,)``; ``Y`` shared ``(m,)`` or ``(N, m)``."""
    y_axis = None if Y.ndim == logits.ndim - (config.output == "softmax") - 1 else 0

    def one(z, y, p, lambd, l1):
        return losses.cost(z, y, p, output=config.output, lambd=lambd, l1=l1)

    return jax.vmap(one, in_axes=(0, y_axis, 0, 0, 0))(logits, Y, params, hp.lambd, hp.l1)


def _accuracies(config, logits, Y):
    y_axis = None if Y.ndim == logits.ndim - (config.output == "softmax") - 1 else 0
    return jax.vmap(lambda z, y: train._accuracy(config, z, y), in_axes=(0, y_axis))(logits, Y)


def _metrics_many(config, params, model_state, hp, X, Y):
    """Eval-mode costs and accuracies of every model on the shared set ``(X, Y)``."""
    logits, _ = _forward_many(config, params, model_state, X, train_mode=False)
    return _costs(config, logits, Y, params, hp), _accuracies(config, logits, Y)


def _lr_of_epoch(ohp: OptHyperparams, epoch, decayed: bool, decay_interval: int):
    if not decayed:
        return ohp.learning_rate
    return schedules.inverse_time_decay(ohp.learning_rate, ohp.decay_rate, decay_interval)(epoch)


def _build_optimizer(optimizer, ohp: OptHyperparams, learning_rate):
    """One model's optimizer, built (inside ``vmap``) from its own hyperparameter arrays."""
    if isinstance(optimizer, str):  # the same construction as fit's, from ohp's betas and epsilon
        return train._Named(optimizer)(learning_rate, ohp)
    return optimizer(learning_rate)  # a factory learning_rate -> GradientTransformation


def _per_model(pred, new, old):
    """``new`` where ``pred[i]`` else ``old``, model by model (PRNG keys kept)."""

    def pick(n, o):
        if jax.dtypes.issubdtype(o.dtype, jax.dtypes.prng_key):
            return o
        return jnp.where(pred.reshape(pred.shape + (1,) * (o.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def _finite_per_model(tree, n):
    flags = [
        jnp.all(jnp.isfinite(leaf.reshape(n, -1)), axis=1)
        for leaf in jax.tree.leaves(tree)
        if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
    ]
    return jnp.all(jnp.stack(flags), axis=0)


@partial(
    jax.jit,
    static_argnames=(
        "config",
        "optimizer",
        "batch_size",
        "epochs",
        "decay_interval",
        "decayed",
        "eval_every",
        "progress_every",
    ),
)
def _run_group(
    states: train.TrainState,
    hp: train.Hyperparams,
    ohp: OptHyperparams,
    X,
    Y,
    X_dev,
    Y_dev,
    *,
    config: MLP,
    optimizer,
    batch_size: int,
    epochs: int,
    decay_interval: int,
    decayed: bool,
    eval_every: int,
    progress_every: int | None,
):
    """The compiled run of ``N`` models of one config: :func:`fjdl.train.run_epochs`, model by
    model, with every model's arithmetic stacked. ``states`` in fjdl's layout; returns
    ``(states, history (epochs, N) per field, diverged_epoch (N,))``."""
    n = hp.learning_rate.shape[0]
    m = X.shape[0]
    n_full, remainder = divmod(m, batch_size)
    steps_per_epoch = n_full + (remainder > 0)
    full_batch = n_full == 1 and not remainder
    has_dev = X_dev is not None
    # In full-batch training without dropout or batch norm, the training forward pass of epoch e+1
    # is the eval-mode pass over the training set after epoch e: its logits give that accuracy.
    reuse = full_batch and eval_every == 1 and config.keep_probs is None and not config.batchnorm
    dtype = X.dtype

    def opt_of(o):
        lr = lambda count: _lr_of_epoch(o, count // steps_per_epoch, decayed, decay_interval)  # noqa: E731
        return _build_optimizer(optimizer, o, lr)

    def step(s: train.TrainState, x, y):
        dropout_keys = jax.vmap(lambda k, t: jax.random.fold_in(jax.random.fold_in(k, 1), t))(
            s.key, s.step
        )

        def total(params):
            logits, new_ms = _forward_many(
                config,
                params,
                s.model_state,
                x,
                keys=dropout_keys,
                keep_probs=hp.keep_probs,
                train_mode=True,
            )
            costs = _costs(config, logits, y, params, hp)
            return jnp.sum(costs), (costs, new_ms, logits)

        (_, (costs, new_ms, logits)), grads = jax.value_and_grad(total, has_aux=True)(s.params)

        def update(g, opt_state, params, o):
            updates, opt_state = opt_of(o).update(g, opt_state, params)
            return optim.apply_updates(params, updates), opt_state

        params, opt_state = jax.vmap(update)(grads, s.opt_state, s.params, ohp)
        new = s._replace(params=params, model_state=new_ms, opt_state=opt_state, step=s.step + 1)
        return new, costs, logits

    def one_epoch(carry, epoch):
        s, diverged = carry
        if full_batch:
            new, cost, logits = step(s, X, Y)
        else:
            shuffle = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 0), epoch))(s.key)
            perm = jax.vmap(lambda k: jax.random.permutation(k, m))(shuffle)
            full = perm[:, : n_full * batch_size].reshape(n, n_full, batch_size)

            def batch_step(s, idx):
                new, costs, _ = step(s, X[idx], Y[idx])
                return new, costs

            new, costs = jax.lax.scan(batch_step, s, jnp.swapaxes(full, 0, 1))
            cost = jnp.sum(costs, axis=0) * batch_size
            if remainder:
                idx = perm[:, n_full * batch_size :]
                new, j, _ = step(new, X[idx], Y[idx])
                cost = cost + j * remainder
            cost = cost / m
            logits = None
        new = new._replace(epoch=new.epoch + 1)
        nan = jnp.full((n,), jnp.nan, dtype)
        evaluate_now = (epoch + 1) % eval_every == 0

        def metrics(_):
            if reuse:
                train_acc = nan  # filled in from the next epoch's logits
            else:
                _, train_acc = _metrics_many(config, new.params, new.model_state, hp, X, Y)
            if has_dev:
                dev_cost, dev_acc = _metrics_many(
                    config, new.params, new.model_state, hp, X_dev, Y_dev
                )
            else:
                dev_cost = dev_acc = nan
            return jnp.stack(
                [train_acc.astype(dtype), dev_cost.astype(dtype), dev_acc.astype(dtype)]
            )

        if eval_every == 1:
            train_acc, dev_cost, dev_acc = metrics(None)
        else:
            train_acc, dev_cost, dev_acc = jax.lax.cond(
                evaluate_now, metrics, lambda _: jnp.full((3, n), jnp.nan, dtype), None
            )
        finite = jnp.isfinite(cost) & _finite_per_model(new.params, n)
        running = diverged < 0
        accept = running & finite
        diverged = jnp.where(running & ~finite, epoch, diverged)
        kept = _per_model(accept, new, s)
        if progress_every:
            _report_progress(epoch, progress_every)
        f32 = jnp.float32

        def masked(v):
            return jnp.where(accept, v, jnp.nan).astype(f32)

        lr = _lr_of_epoch(ohp, epoch, decayed, decay_interval)
        record = train.History(
            cost=masked(cost),
            train_accuracy=masked(train_acc),
            dev_cost=masked(dev_cost),
            dev_accuracy=masked(dev_acc),
            learning_rate=masked(jnp.broadcast_to(lr, (n,))),
        )
        before = _accuracies(config, logits, Y).astype(f32) if reuse else jnp.zeros((n,), f32)
        return (kept, diverged), (record, accept, before)

    states = _flip_weights(states)
    start = states.epoch[0]
    diverged = jnp.full((n,), -1, jnp.int32)
    (states, diverged), (history, accepted, acc_before) = jax.lax.scan(
        one_epoch, (states, diverged), start + jnp.arange(epochs, dtype=jnp.int32)
    )
    if reuse:
        _, last = _metrics_many(config, states.params, states.model_state, hp, X, Y)
        train_acc = jnp.concatenate([acc_before[1:], last.astype(jnp.float32)[None]], axis=0)
        history = history._replace(train_accuracy=jnp.where(accepted, train_acc, jnp.nan))
    return _flip_weights(states), history, diverged


_PROGRESS: dict[str, Any] = {}


def _report_progress(epoch, every):
    def callback(epoch):
        fn = _PROGRESS.get("callback")
        if fn is not None:
            fn(int(epoch) + 1)

    jax.lax.cond(
        (epoch + 1) % every == 0, lambda: jax.debug.callback(callback, epoch), lambda: None
    )


def _per_model_values(name, value, n, dtype):
    """``value`` as an ``(n,)`` array: a scalar is repeated; a sequence must have ``n`` entries."""
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        arr = np.full((n,), float(arr))
    if arr.shape != (n,):
        raise ValueError(
            f"{name} must be a number or have one value per model ({n}), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def _check_keys(keys):
    if keys is None:
        raise TypeError("train_many needs one PRNG key per model: keys=jax.random.split(key, n)")
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if typed and keys.ndim != 1:
        raise ValueError(
            f"keys must be a 1-D array of keys (one per model), got shape {keys.shape}"
        )
    if not typed and (keys.ndim != 2 or keys.dtype != jnp.uint32):
        raise ValueError(
            "keys must be jax.random.split(key, n): a 1-D array of typed keys or (n, 2) uint32 "
            f"raw keys, got dtype {keys.dtype} and shape {keys.shape}"
        )
    if keys.shape[0] == 0:
        raise ValueError("keys is empty: train_many needs at least one model")
    return keys


def train_many(
    config: MLP | Sequence[MLP],
    X,
    Y,
    *,
    keys,
    optimizer="adam",
    learning_rate=0.001,
    epochs: int = 100,
    batch_size: int | None = None,
    lambd=0.0,
    l1=0.0,
    keep_probs=None,
    beta=0.9,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    decay_rate=0.0,
    decay_interval: int = 1,
    dev=None,
    scheme="he",
    eval_every: int = 1,
    chunk_size: int | None = None,
    devices=None,
    progress: bool | Callable[[int], None] = False,
) -> ManyResult:
    """Train ``N`` models that differ in hyperparameters and seeds, all in one compiled program.

    Model ``i`` is trained exactly as ``fjdl.train.fit(config_i, X, Y, key=keys[i],
    optimizer=..., learning_rate=learning_rate[i], ...)`` would train it, to float rounding: the
    same initialization, mini-batch order, dropout masks and batch-norm statistics (each from its
    own key), the same optimizer and schedule. Every hyperparameter below marked "per model" is a
    number (shared) or a sequence of ``N`` values.

    Args:
      config: one :class:`fjdl.model.MLP` for every model, or a sequence of ``N`` configs; models
        of the same config are trained together, one compiled program per distinct config.
      X, Y: the training set, shared by all the models.
      keys: ``N`` PRNG keys, e.g. ``jax.random.split(key, N)``; ``N`` is the number of models.
      optimizer: ``"gd"``, ``"momentum"``, ``"rmsprop"`` or ``"adam"``; or a factory
        ``learning_rate -> GradientTransformation`` (its other hyperparameters then shared).
      learning_rate: per model, the initial learning rate ``alpha``.
      epochs: epochs for every model.
      batch_size: mini-batch size (``None``: full batch), shared.
      lambd, l1: per model, the L2 and L1 strengths.
      keep_probs: per model, the dropout keep_prob of every hidden layer (a number or ``N``
        numbers), or an ``(N, n_hidden)`` array; ``None`` takes the config's. As in ``fit``,
        dropout is on only when the config has ``keep_probs``.
      beta: per model, the ``beta`` of momentum and RMSprop.
      beta1, beta2: per model, Adam's betas.
      epsilon: per model, RMSprop's and Adam's ``epsilon``.
      decay_rate: per model, learning-rate decay once per epoch,
        ``alpha = alpha0 / (1 + decay_rate * floor(epoch / decay_interval))``
        (:func:`fjdl.schedules.inverse_time_decay`); 0 is no decay.
      decay_interval: epochs per decay step, shared.
      dev: optional ``(X_dev, Y_dev)``, evaluated every ``eval_every`` epochs.
      scheme: weight initialization (see :mod:`fjdl.initializers`).
      eval_every: compute the accuracies and the dev cost every this many epochs (NaN between).
      chunk_size: train at most this many models per compiled call (to bound memory); the chunks
        have equal sizes, so they share one program.
      devices: the devices to shard the models over (default: all of ``jax.devices()``).
      progress: show a progress bar over epochs (tqdm), or a function called with the number of
        epochs done.

    Returns:
      A :class:`ManyResult`: the stacked final states by config group, and the per-model history,
      each field of shape ``(N, epochs)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from fjdl import data
      >>> X, Y = data.make_moons(jax.random.key(0), 100)
      >>> result = train_many(MLP((2, 8, 1)), X, Y, keys=jax.random.split(jax.random.key(1), 4),
      ...                     learning_rate=[1e-3, 1e-2, 1e-1, 1.0], epochs=5)
      >>> result.history.cost.shape, result.params[0]["W"].shape
      ((4, 5), (4, 2, 8))
    """
    keys = _check_keys(keys)
    n = keys.shape[0]
    configs = _configs_per_model(config, n)
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jnp.result_type(float))
    dtype = X.dtype
    _checks.check_positive_int("epochs", epochs)
    _checks.check_positive_int("decay_interval", decay_interval)
    _checks.check_positive_int("eval_every", eval_every)
    if chunk_size is not None:
        _checks.check_positive_int("chunk_size", chunk_size)
    if batch_size is not None:
        _checks.check_positive_int("batch_size", batch_size)
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"optimizer must be one of {OPTIMIZER_NAMES}, got {optimizer!r}")
    elif not callable(optimizer):
        raise TypeError(
            "optimizer must be a name or a factory learning_rate -> GradientTransformation, got "
            f"{type(optimizer).__name__}"
        )
    lr = _per_model_values("learning_rate", learning_rate, n, dtype)
    values = {
        "lambd": _per_model_values("lambd", lambd, n, dtype),
        "l1": _per_model_values("l1", l1, n, dtype),
        "decay_rate": _per_model_values("decay_rate", decay_rate, n, dtype),
        "epsilon": _per_model_values("epsilon", epsilon, n, dtype),
    }
    for name in ("learning_rate", "lambd", "l1", "decay_rate", "epsilon"):
        arr = lr if name == "learning_rate" else values[name]
        if np.any(arr < 0):
            raise ValueError(f"{name} must be >= 0, got {arr[arr < 0][0]!r}")
    betas = {}
    for name, v in (("beta", beta), ("beta1", beta1), ("beta2", beta2)):
        arr = _per_model_values(name, v, n, dtype)
        if np.any((arr < 0) | (arr >= 1)):
            raise ValueError(f"{name} must be in [0, 1), got {arr[(arr < 0) | (arr >= 1)][0]!r}")
        betas[name] = arr
    decayed = bool(np.any(values["decay_rate"] != 0))
    if dev is not None:
        dev = tuple(dev)
        if len(dev) != 2:
            raise ValueError("dev must be a pair (X_dev, Y_dev)")

    # Inputs checked once per distinct config (the labels depend on the output layer).
    groups: dict[MLP, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(c, []).append(i)
    epochs_done = np.zeros(1, np.int64)
    histories = [None] * n
    diverged_all = np.full(n, -1, np.int64)
    out_groups = []
    callback, bar = _progress_callback(progress, epochs * _n_chunks(groups, chunk_size))
    try:
        for cfg, idx in groups.items():
            Xc, Yc = train._check_data(cfg, "training", X, Y)
            dev_c = train._check_data(cfg, "dev", *dev) if dev is not None else (None, None)
            kp = _keep_probs_per_model(cfg, keep_probs, n, dtype)
            idx = np.asarray(idx)
            states, hist, div = _train_group(
                cfg,
                Xc,
                Yc,
                dev_c,
                keys[idx],
                optimizer,
                lr[idx],
                {k: v[idx] for k, v in values.items()},
                {k: v[idx] for k, v in betas.items()},
                kp[idx],
                epochs=epochs,
                batch_size=Xc.shape[0] if batch_size is None else min(batch_size, Xc.shape[0]),
                decay_interval=decay_interval,
                decayed=decayed,
                eval_every=eval_every,
                scheme=scheme,
                chunk_size=chunk_size,
                devices=devices,
                callback=callback,
                epochs_done=epochs_done,
            )
            for j, i in enumerate(idx):
                histories[i] = jax.tree.map(lambda h, j=j: h[j], hist)
            diverged_all[idx] = div
            out_groups.append(ModelGroup(cfg, idx, states))
    finally:
        if bar is not None:
            bar.close()
        _PROGRESS.pop("callback", None)
    history = train.History(
        *(np.stack([getattr(h, f) for h in histories]) for f in train.History._fields)
    )
    return ManyResult(history, tuple(out_groups), tuple(configs), diverged_all)


def _n_chunks(groups, chunk_size):
    if chunk_size is None:
        return len(groups)
    return sum(math.ceil(len(idx) / chunk_size) for idx in groups.values())


def _progress_callback(progress, total):
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is optional: pip install tqdm
        return None, None
    bar = tqdm(total=total, unit="epoch", leave=False, mininterval=0.2)

    def update(done):
        if done > bar.n:
            bar.update(done - bar.n)

    return update, bar


def _configs_per_model(config, n) -> list[MLP]:
    if isinstance(config, MLP):
        return [config] * n
    if isinstance(config, Sequence) and not isinstance(config, str):
        configs = list(config)
        if len(configs) != n:
            raise ValueError(f"config must be one MLP or one per model ({n}), got {len(configs)}")
        for c in configs:
            if not isinstance(c, MLP):
                raise TypeError(f"config must hold fjdl.model.MLP objects, got {type(c).__name__}")
        return configs
    raise TypeError(
        f"config must be an fjdl.model.MLP or a sequence of them, got {type(config).__name__}"
    )


def _keep_probs_per_model(config: MLP, keep_probs, n, dtype) -> np.ndarray:
    n_hidden = config.n_layers - 1
    if keep_probs is None:
        base = config.keep_probs if config.keep_probs is not None else (1.0,) * n_hidden
        return np.broadcast_to(np.asarray(base, np.float64), (n, n_hidden)).copy()
    arr = np.asarray(keep_probs, np.float64)
    if arr.ndim == 0:
        arr = np.full((n, n_hidden), float(arr))
    elif arr.ndim == 1:
        if arr.shape[0] != n:
            raise ValueError(f"keep_probs must have one value per model ({n}), got {arr.shape[0]}")
        arr = np.repeat(arr[:, None], n_hidden, axis=1)
    if arr.shape != (n, n_hidden):
        raise ValueError(f"keep_probs must have shape ({n}, {n_hidden}), got {arr.shape}")
    if np.any((arr <= 0) | (arr > 1)) or not np.all(np.isfinite(arr)):
        bad = arr[(arr <= 0) | (arr > 1) | ~np.isfinite(arr)]
        raise ValueError(
            f"keep_probs must be in (0, 1], got {float(bad[0])} (and {bad.size - 1} more bad value(s))"
        )
    return arr


def _gather_from_hosts(tree):
    """The full arrays on every host, from arrays sharded over the devices of several hosts
    (``jax.distributed``)."""
    from jax.experimental import multihost_utils

    def gather(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return a
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(gather(jax.random.key_data(a)))
        return jnp.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(gather, tree)


def _cpu_threads(devices, n_models: int) -> int:
    """Threads to run one device's models from: one per core on a single CPU device, else 1."""
    if len(devices) != 1 or devices[0].platform != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, n_models))


def _train_group(
    config,
    X,
    Y,
    dev,
    keys,
    optimizer,
    lr,
    values,
    betas,
    keep_probs,
    *,
    epochs,
    batch_size,
    decay_interval,
    decayed,
    eval_every,
    scheme,
    chunk_size,
    devices,
    callback,
    epochs_done,
):
    """Train one config's models, in equal chunks, sharded over the devices."""
    n = keys.shape[0]
    dtype = X.dtype
    devices = list(jax.devices()) if devices is None else list(devices)
    n_dev = len(devices)
    size = n if chunk_size is None else min(chunk_size, n)
    size = -(-size // n_dev) * n_dev  # a multiple of the number of devices
    n_chunks = -(-n // size)
    init_opt = (
        _build_optimizer(
            optimizer, OptHyperparams(*(jnp.zeros((), dtype),) * 6), jnp.zeros((), dtype)
        )
        if isinstance(optimizer, str)
        else optimizer(jnp.zeros((), dtype))
    )

    def run(idx):
        """``_run_group`` on the models ``idx`` (an index array into this group's models)."""
        states = jax.vmap(
            lambda k: train.init_state(
                k, config, lambda _lr: init_opt, 0.0, scheme=scheme, dtype=dtype
            )
        )(keys[idx])
        hp = train.Hyperparams(
            jnp.asarray(lr[idx], dtype),
            jnp.asarray(values["lambd"][idx], dtype),
            jnp.asarray(values["l1"][idx], dtype),
            jnp.asarray(keep_probs[idx], dtype),
        )
        ohp = OptHyperparams(
            jnp.asarray(lr[idx], dtype),
            jnp.asarray(values["decay_rate"][idx], dtype),
            jnp.asarray(betas["beta"][idx], dtype),
            jnp.asarray(betas["beta1"][idx], dtype),
            jnp.asarray(betas["beta2"][idx], dtype),
            jnp.asarray(values["epsilon"][idx], dtype),
        )
        args = (states, hp, ohp, X, Y, *dev)
        if n_dev > 1:
            args = parallel.shard_models(args[:3], devices) + parallel.replicate(args[3:], devices)
        return jax.block_until_ready(
            _run_group(
                *args,
                config=config,
                optimizer=optimizer,
                batch_size=batch_size,
                epochs=epochs,
                decay_interval=decay_interval,
                decayed=decayed,
                eval_every=eval_every,
                progress_every=max(1, epochs // 100) if callback is not None else None,
            )
        )

    # JAX shows a CPU as one device, and small products run on one of its cores: on a CPU with
    # several cores, a chunk is split into one equal part per core, run from as many threads (one
    # compiled program; the parts run concurrently). 64 course-size models: 2.6 s -> 1.1 s on 2 cores.
    n_threads = _cpu_threads(devices, size)
    states_out, hist_out, div_out = [], [], []
    for c in range(n_chunks):
        sel = np.arange(c * size, min((c + 1) * size, n))
        part = -(-size // n_threads)
        pad = np.concatenate([sel, np.full(part * n_threads - sel.size, sel[0])])
        offset = int(epochs_done[0])
        if callback is not None:
            _PROGRESS["callback"] = lambda done, offset=offset: callback(offset + done)
        parts = np.split(pad, n_threads)
        if n_threads == 1:
            results = [run(parts[0])]
        else:
            with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
                results = list(pool.map(run, parts))
        states = jax.tree.map(lambda *a: jnp.concatenate(a), *(r[0] for r in results))
        hist = jax.tree.map(lambda *h: np.concatenate(h, axis=1), *(r[1] for r in results))
        div = np.concatenate([np.asarray(r[2]) for r in results])
        if jax.process_count() > 1:  # several hosts: every host gets every model's results
            states, hist, div = _gather_from_hosts((states, hist, div))
        if callback is not None:
            jax.effects_barrier()
            callback(offset + epochs)
        epochs_done[0] += epochs
        n_kept = sel.size  # the padding models are dropped
        states_out.append(jax.tree.map(lambda a, k=n_kept: a[:k], states))
        hist_out.append(jax.tree.map(lambda h, k=n_kept: np.asarray(h).T[:k], hist))
        div_out.append(np.asarray(div)[:n_kept])
    states = jax.tree.map(lambda *a: jnp.concatenate(a), *states_out)
    hist = jax.tree.map(lambda *a: np.concatenate(a), *hist_out)
    return states, hist, np.concatenate(div_out)


# --------------------------------------------------------------------------------------------------
# Random search and coarse to fine

PER_MODEL_NAMES = (
    "learning_rate",
    "lambd",
    "l1",
    "keep_prob",
    "beta",
    "beta1",
    "beta2",
    "epsilon",
    "decay_rate",
)
"""Search-space names passed to :func:`train_many` as one value per model."""

SHAPE_NAMES = ("n_units", "n_layers", "hidden", "activation")
"""Search-space names that change the config: ``n_units`` (the width of every hidden layer),
``n_layers`` (the number of hidden layers), ``hidden`` (a tuple of hidden widths, e.g. from a
:class:`Choice`) and ``activation``. Trials of the same shape are trained together."""

METRICS = ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy")


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What :func:`random_search` and :func:`coarse_to_fine` return.

    Attributes:
      trials: one dict per trial, in the order they were trained: every hyperparameter of the space
        (with the value used), ``hidden`` (the hidden widths), the final ``train_cost``,
        ``train_accuracy``, ``dev_cost`` and ``dev_accuracy``, ``diverged`` (bool), ``round``
        (counted from 1, as in :meth:`table` and the CLI's output), ``index`` (the model's index within its round) and ``rank`` (1 = best, over all
        rounds).
      spaces: the space sampled in each round (one for :func:`random_search`).
      runs: the :class:`ManyResult` of each round (trained parameters, full histories).
    """

    trials: list
    spaces: tuple
    runs: tuple

    @property
    def best(self) -> dict:
        """The record of the best trial (rank 1)."""
        return min(self.trials, key=lambda t: t["rank"])

    @property
    def space(self) -> dict:
        """The space of the last round (the narrowest, for :func:`coarse_to_fine`)."""
        return self.spaces[-1]

    def ranked(self) -> list:
        """The trials from best to worst."""
        return sorted(self.trials, key=lambda t: t["rank"])

    def state(self, trial: Mapping) -> train.TrainState:
        """The trained :class:`fjdl.train.TrainState` of a trial record (e.g. ``result.best``)."""
        return self.runs[trial["round"] - 1].state(trial["index"])

    def table(self, top: int | None = 10) -> str:
        """The ranked trials as a text table (the best ``top`` ones; ``None`` for all), rounds
        counted from 1."""
        rows = self.ranked()[: len(self.trials) if top is None else top]
        names = [n for n in self.spaces[0] if isinstance(self.spaces[0][n], SAMPLERS)]
        header = ["rank", "round", *names, *METRICS]
        body = [[_fmt(r[h]) for h in header] for r in rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
        return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.4g}"
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    return str(v)


def _check_space_names(space, fixed) -> None:
    for name in space:
        if name not in PER_MODEL_NAMES and name not in SHAPE_NAMES:
            raise ValueError(
                f"space name {name!r} is not a hyperparameter train_many varies per model; use one "
                f"of {PER_MODEL_NAMES + SHAPE_NAMES}, or pass it as a fixed keyword argument"
            )
        if name in fixed or (name == "keep_prob" and "keep_probs" in fixed):
            raise ValueError(f"{name!r} is both in the space and a fixed argument: give it once")
    for name in ("keys", "learning_rate_schedule", "config"):
        if name in fixed:
            raise TypeError(f"{name!r} cannot be a fixed argument of a search")


def _trial_config(base: MLP, trial: Mapping) -> MLP:
    """``base`` with the layer sizes and activation a trial names (every other field kept)."""
    hidden = list(base.sizes[1:-1])
    if "hidden" in trial:
        hidden = [int(n) for n in np.atleast_1d(trial["hidden"])]
    if "n_layers" in trial:
        k = int(trial["n_layers"])
        if k < 1:
            raise ValueError(f"n_layers must be >= 1, got {k}")
        last = hidden[-1] if hidden else 1
        hidden = (hidden + [last] * k)[:k]
    if "n_units" in trial:
        hidden = [int(trial["n_units"])] * len(hidden)
    n_hidden = len(hidden)
    keep = base.keep_probs
    if "keep_prob" in trial:
        keep = (1.0,) * n_hidden  # dropout on; each model's keep_prob comes from train_many
    elif keep is not None and len(keep) != n_hidden:
        keep = (keep[0],) * n_hidden
    return dataclasses.replace(
        base,
        sizes=(base.sizes[0], *hidden, base.sizes[-1]),
        activation=trial.get("activation", base.activation),
        keep_probs=keep,
    )


def _rank_key(record, has_dev):
    acc = record["dev_accuracy" if has_dev else "train_accuracy"]
    cost = record["dev_cost" if has_dev else "train_cost"]
    acc = -acc if math.isfinite(acc) else math.inf
    cost = cost if math.isfinite(cost) else math.inf
    return (acc, cost)


def _run_round(space, X, Y, *, dev, key, n_trials, config, epochs, chunk_size, round_, fixed):
    sample_key, train_key = jax.random.split(key)
    trials = sample(space, sample_key, n_trials)
    configs = [_trial_config(config, t) for t in trials]
    kwargs = dict(fixed)
    for name in PER_MODEL_NAMES:
        if name in space:
            values = [float(t[name]) for t in trials]
            kwargs["keep_probs" if name == "keep_prob" else name] = values
    kwargs.setdefault("eval_every", epochs)
    many = train_many(
        configs,
        X,
        Y,
        keys=jax.random.split(train_key, n_trials),
        epochs=epochs,
        dev=dev,
        chunk_size=chunk_size,
        **kwargs,
    )
    finals = {
        "train_cost": many.final("cost"),
        "train_accuracy": many.final("train_accuracy"),
        "dev_cost": many.final("dev_cost"),
        "dev_accuracy": many.final("dev_accuracy"),
    }
    records = []
    for i, (t, c) in enumerate(zip(trials, configs)):
        record = {name: _plain(v) for name, v in t.items()}
        record["hidden"] = tuple(c.sizes[1:-1])
        for metric, values in finals.items():
            record[metric] = float(values[i])
        record["diverged"] = bool(many.diverged_epoch[i] >= 0)
        record["round"] = round_ + 1  # rounds count from 1 everywhere
        record["index"] = i
        records.append(record)
    return records, many


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def _ranked(records, has_dev):
    order = sorted(range(len(records)), key=lambda i: _rank_key(records[i], has_dev))
    for r, i in enumerate(order):
        records[i]["rank"] = r + 1
    return records


def _check_search_args(space, X, Y, dev, n_trials, config, epochs, chunk_size, fixed):
    _check_space(space)
    _checks.check_positive_int("n_trials", n_trials)
    _checks.check_positive_int("epochs", epochs)
    if chunk_size is not None:
        _checks.check_positive_int("chunk_size", chunk_size)
    if not isinstance(config, MLP):
        raise TypeError(f"config must be an fjdl.model.MLP, got {type(config).__name__}")
    _check_space_names(space, fixed)
    if dev is not None and (not isinstance(dev, Sequence) or len(dev) != 2):
        raise ValueError("dev must be a pair (X_dev, Y_dev) or None")


def random_search(
    space: Mapping[str, Any],
    X,
    Y,
    *,
    dev,
    key: PRNGKey,
    n_trials: int,
    config: MLP,
    epochs: int,
    chunk_size: int | None = None,
    **fixed,
) -> SearchResult:
    r"""Random search: sample ``n_trials`` points of ``space``, train them all, rank them.

    The trials are trained with :func:`train_many` (one compiled program per distinct shape, in
    chunks of ``chunk_size`` models) and ranked by their final dev accuracy, ties broken by the
    lower dev cost (without a dev set: by the training accuracy and cost). A diverged trial ranks
    below every finite one.

    .. math::
      \theta_k \sim \text{space}, \quad k = 1 \dots n, \qquad
      \text{best} = \arg\max_k \text{dev accuracy}(\theta_k)

    Args:
      space: a dict of hyperparameter name -> sampler (see :func:`sample`) or constant. Names are
        those of :data:`PER_MODEL_NAMES` (``learning_rate``, ``beta1``, ``lambd``, ``keep_prob``,
        ...) and :data:`SHAPE_NAMES` (``n_units``, ``n_layers``, ``hidden``, ``activation``).
      X, Y: the training set.
      dev: ``(X_dev, Y_dev)`` to rank on, or ``None`` (rank on the training set).
      key: a PRNG key: split into the sampling key and the models' keys.
      n_trials: how many points to sample.
      config: the base :class:`fjdl.model.MLP`; shape names in the space replace its hidden layers.
      epochs: epochs per trial.
      chunk_size: train at most this many models at once (bounds the memory).
      **fixed: any other argument of :func:`train_many`, the same for every trial (``optimizer``,
        ``batch_size``, a fixed ``lambd``, ``eval_every`` (default: only after the last epoch),
        ``progress``, ``devices``, ...).

    Returns:
      A :class:`SearchResult` (``.trials``, ``.best``, ``.table()``).

    Example:
      >>> import jax
      >>> from fjdl import data
      >>> X, Y = data.make_moons(jax.random.key(0), 200)
      >>> result = random_search({"learning_rate": LogUniform(1e-3, 1.0)}, X[:150], Y[:150],
      ...                        dev=(X[150:], Y[150:]), key=jax.random.key(1), n_trials=8,
      ...                        config=MLP((2, 8, 1)), epochs=20)
      >>> len(result.trials), result.best["rank"], sorted(result.best)[:3]
      (8, 1, ['dev_accuracy', 'dev_cost', 'diverged'])

    References:
      Bergstra & Bengio, 2012, *Random Search for Hyper-Parameter Optimization*.
    """
    _check_search_args(space, X, Y, dev, n_trials, config, epochs, chunk_size, fixed)
    records, many = _run_round(
        space,
        X,
        Y,
        dev=dev,
        key=key,
        n_trials=n_trials,
        config=config,
        epochs=epochs,
        chunk_size=chunk_size,
        round_=0,
        fixed=fixed,
    )
    return SearchResult(_ranked(records, dev is not None), (dict(space),), (many,))


def coarse_to_fine(
    space: Mapping[str, Any],
    X,
    Y,
    *,
    dev,
    key: PRNGKey,
    n_trials: int,
    rounds: int = 2,
    keep_top: int | None = None,
    margin: float = 0.1,
    config: MLP,
    epochs: int,
    chunk_size: int | None = None,
    **fixed,
) -> SearchResult:
    r"""Coarse-to-fine search: random search, then zoom onto the best trials and search again.

    Round ``r + 1`` samples the space :func:`narrow`\ ed onto the ``keep_top`` best trials so far:
    each range becomes the span of their values on its own scale (log for :class:`LogUniform`,
    ``log(1 - beta)`` for :class:`BetaLogScale`), padded by ``margin`` times the old width and
    clipped to the old range. So every round's space lies inside the one before, and holds the best
    trials so far.

    Args:
      space, X, Y, dev, config, epochs, chunk_size, **fixed: as for :func:`random_search`.
      key: a PRNG key; round ``r`` uses ``fold_in(key, r)``.
      n_trials: trials per round.
      rounds: how many rounds (>= 1; 1 is :func:`random_search`).
      keep_top: how many of the best trials so far define the next round's region (default: a
        quarter of ``n_trials``, at least 2).
      margin: padding of the narrowed ranges, as a fraction of the old width (>= 0).

    Returns:
      A :class:`SearchResult` with ``rounds * n_trials`` trials (``round`` says which), ranked over
      all rounds, and ``.spaces``, the space of each round.

    Example:
      >>> import jax
      >>> from fjdl import data
      >>> X, Y = data.make_moons(jax.random.key(0), 200)
      >>> space = {"learning_rate": LogUniform(1e-4, 1.0)}
      >>> result = coarse_to_fine(space, X[:150], Y[:150], dev=(X[150:], Y[150:]),
      ...                         key=jax.random.key(1), n_trials=8, config=MLP((2, 8, 1)),
      ...                         epochs=20)
      >>> lr = result.spaces[1]["learning_rate"]
      >>> bool(1e-4 <= lr.low <= result.best["learning_rate"] <= lr.high <= 1.0)
      True
    """
    _check_search_args(space, X, Y, dev, n_trials, config, epochs, chunk_size, fixed)
    _checks.check_positive_int("rounds", rounds)
    if keep_top is None:
        keep_top = max(2, n_trials // 4)
    _checks.check_positive_int("keep_top", keep_top)
    _checks.check_nonnegative("margin", margin)
    has_dev = dev is not None
    spaces, runs, records = [dict(space)], [], []
    for r in range(rounds):
        if r > 0:
            top = sorted(records, key=lambda t: _rank_key(t, has_dev))[:keep_top]
            spaces.append(narrow(spaces[-1], top, margin))
        new, many = _run_round(
            spaces[-1],
            X,
            Y,
            dev=dev,
            key=jax.random.fold_in(key, r),
            n_trials=n_trials,
            config=config,
            epochs=epochs,
            chunk_size=chunk_size,
            round_=r,
            fixed=fixed,
        )
        records.extend(new)
        runs.append(many)
    return SearchResult(_ranked(records, has_dev), tuple(spaces), tuple(runs))


# --------------------------------------------------------------------------------------------------
# Panda: babysit one model


class Panda:
    r"""Babysit one model: train it a chunk of epochs at a time and change its hyperparameters in
    between, without recompiling.

    The learning rate, ``lambd``, ``l1`` and the keep_probs are arrays in the run's
    :class:`fjdl.train.Hyperparams`, not compile-time constants: :meth:`set` replaces them, and
    the next :meth:`run` of the same number of epochs reuses the compiled
    :func:`fjdl.train.run_epochs`. The optimizer state, step and epoch counts carry over, so
    ``run(10); set(learning_rate=a); run(10)`` equals ``fit(10 epochs)`` then ``fit(state=...,
    learning_rate=a, 10 epochs)``.

    Args:
      model: any model of the protocol (:mod:`fjdl.model`). To change an MLP's keep_probs later,
        give its config ``keep_probs`` (dropout is compiled in only then).
      X, Y: the training set.
      key: the run's PRNG key (as for :func:`fjdl.train.fit`).
      loss: what the output means (see :func:`fjdl.train.fit`); default: the model's.
      optimizer: a name or a factory ``learning_rate -> GradientTransformation``.
      learning_rate, lambd, l1, keep_probs: the starting hyperparameters.
      batch_size: mini-batch size (``None``: full batch).
      schedule: per-epoch decay (see :func:`fjdl.train.fit`), applied to the current rate.
      dev: optional ``(X_dev, Y_dev)``.
      scheme: an MLP's weight initialization (default ``"he"``).
      eval_every: evaluate every this many epochs.
      is_weight: which parameters L2 and L1 act on (see :func:`fjdl.train.fit`).

    Example:
      >>> import jax
      >>> from fjdl import data
      >>> X, Y = data.make_moons(jax.random.key(0), 100)
      >>> panda = Panda(MLP((2, 8, 1)), X, Y, key=jax.random.key(1), learning_rate=0.01)
      >>> _ = panda.run(epochs=5)
      >>> panda.set(learning_rate=0.001)
      >>> _ = panda.run(epochs=5)
      >>> panda.epoch, [round(float(lr), 4) for lr in panda.history.learning_rate[4:6]]
      (10, [0.01, 0.001])
    """

    def __init__(
        self,
        model,
        X,
        Y,
        *,
        key: PRNGKey,
        loss=None,
        optimizer="adam",
        learning_rate=0.001,
        lambd=0.0,
        l1=0.0,
        keep_probs=None,
        batch_size: int | None = None,
        schedule=None,
        dev=None,
        scheme=None,
        eval_every: int = 1,
        is_weight=losses.is_weight,
    ):
        fjdl_model.check_model(model)
        config = model
        self.config = config
        self.loss = train.default_loss(config, loss)
        self.is_weight = is_weight
        X = train._as_inputs("training", X)
        m = X.shape[0]
        if batch_size is not None:
            _checks.check_positive_int("batch_size", batch_size)
        self.batch_size = m if batch_size is None else min(batch_size, m)
        _checks.check_positive_int("eval_every", eval_every)
        self.eval_every = eval_every
        self.optimizer = train._resolve_optimizer(optimizer)
        if isinstance(self.optimizer, train._Fixed):
            raise TypeError("Panda needs an optimizer fjdl builds (a name or a factory)")
        self.schedule = schedule
        dtype = X.dtype
        self.hyperparams = train.make_hyperparams(
            config, learning_rate, lambd, l1, keep_probs, dtype
        )
        self.state = train.init_state(
            key, config, self.optimizer, learning_rate, scheme=scheme, dtype=dtype
        )
        where = dict(loss=self.loss, params=self.state.params, model_state=self.state.model_state)
        self.X, self.Y = train._check_data(config, "training", X, Y, **where)
        self.dev = (
            train._check_data(config, "dev", *dev, **where) if dev is not None else (None, None)
        )
        self._histories: list[train.History] = []
        self.diverged_epoch: int | None = None

    @property
    def epoch(self) -> int:
        """Epochs trained so far."""
        return int(self.state.epoch)

    @property
    def params(self):
        return self.state.params

    @property
    def history(self) -> train.History:
        """Every epoch run so far, all chunks joined (NumPy arrays)."""
        if not self._histories:
            return train.History(*(np.zeros((0,), np.float32) for _ in train.History._fields))
        return train.History(*(np.concatenate(f) for f in zip(*self._histories)))

    def set(self, *, learning_rate=None, lambd=None, l1=None, keep_probs=None) -> None:
        """Change hyperparameters for the next :meth:`run` (``None`` keeps the current value)."""
        is_mlp = isinstance(self.config, MLP)
        hp = self.hyperparams
        dtype = hp.learning_rate.dtype
        if keep_probs is not None and getattr(self.config, "keep_probs", None) is None:
            raise ValueError(
                "keep_probs can change only when the config has dropout: build the MLP with "
                "keep_probs=... (1.0 for none yet)"
            )
        self.hyperparams = train.make_hyperparams(
            self.config,
            hp.learning_rate if learning_rate is None else learning_rate,
            hp.lambd if lambd is None else lambd,
            hp.l1 if l1 is None else l1,
            keep_probs if keep_probs is not None else (hp.keep_probs if is_mlp else None),
            dtype,
        )

    def run(self, epochs: int) -> train.History:
        """Train ``epochs`` more epochs; returns their history (also appended to :attr:`history`).

        When the run diverges it stops there, keeps the last finite state and sets
        :attr:`diverged_epoch`: lower the learning rate with :meth:`set` and run again.
        """
        _checks.check_positive_int("epochs", epochs)
        X_dev, Y_dev = self.dev
        loop, history = train.run_epochs(
            self.state,
            self.hyperparams,
            self.X,
            self.Y,
            X_dev,
            Y_dev,
            jnp.zeros((), self.X.dtype),
            config=self.config,
            loss=self.loss,
            is_weight=self.is_weight,
            optimizer=self.optimizer,
            schedule=self.schedule,
            batch_size=self.batch_size,
            epochs=epochs,
            patience=None,
            progress_every=None,
            eval_every=self.eval_every,
        )
        diverged = int(loop.diverged_epoch)
        n_run = int(loop.i) - (diverged >= 0)
        history = train.History(*(np.asarray(h)[:n_run] for h in history))
        self.state = loop.state
        self.diverged_epoch = diverged if diverged >= 0 else None
        self._histories.append(history)
        return history

    def evaluate(self, X, Y) -> dict:
        """Eval-mode cost and accuracy of the current parameters on ``(X, Y)``."""
        hp = self.hyperparams
        return train.evaluate(
            self.config,
            self.state.params,
            self.state.model_state,
            X,
            Y,
            loss=self.loss,
            is_weight=self.is_weight,
            lambd=hp.lambd,
            l1=hp.l1,
        )
