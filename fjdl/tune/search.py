r"""Random and coarse-to-fine search over any model and any numeric hyperparameter of ``fit``.

A trial is a point of the search space; all trials of a round train at once with
:func:`fjdl.tune.train_many` (one compiled program per optimizer and model family: widths of an
MLP share one, see :mod:`fjdl.tune.many`), and are ranked by their final dev accuracy.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from fjdl import _checks, train
from fjdl import model as fjdl_model
from fjdl._types import PRNGKey
from fjdl.model import MLP
from fjdl.tune.many import METRICS, _format_table, _to_pandas, train_many
from fjdl.tune.samplers import SAMPLERS, Choice, UniformInt, _check_space, narrow, sample

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
    "min_delta",
    "optimizer",
)
"""Search-space names passed to :func:`fjdl.tune.train_many` as one value per model: every numeric
hyperparameter of :func:`fjdl.train.fit`, and the optimizer by name (e.g.
``Choice(("adam", "momentum"))``; trials of one optimizer train together)."""

SHAPE_NAMES = ("n_units", "n_layers", "hidden", "activation", "model")
"""Search-space names that change the model: for an :class:`fjdl.model.MLP`, ``n_units`` (the
width of every hidden layer), ``n_layers`` (the number of hidden layers), ``hidden`` (a tuple of
hidden widths, e.g. from a :class:`Choice`) and ``activation``; for any model, ``model`` (a
:class:`Choice` of models). Widths cost no compilation (see :mod:`fjdl.tune.many`); each depth,
activation or model is its own program."""

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
        return _format_table(rows, ["rank", "round", *names, *METRICS])

    def to_pandas(self):
        """The trials, ranked, as a ``pandas.DataFrame`` (needs pandas: ``pip install pandas``)."""
        return _to_pandas(self.ranked())


def _check_space_names(space, fixed) -> None:
    for name in space:
        if name not in PER_MODEL_NAMES and name not in SHAPE_NAMES:
            raise ValueError(
                f"space name {name!r} is not a hyperparameter train_many varies per model; use one "
                f"of {PER_MODEL_NAMES + SHAPE_NAMES}, or pass it as a fixed keyword argument"
            )
        if name in fixed or (name == "keep_prob" and "keep_probs" in fixed):
            raise ValueError(f"{name!r} is both in the space and a fixed argument: give it once")
    for name in ("keys", "model"):
        if name in fixed:
            raise TypeError(f"{name!r} cannot be a fixed argument of a search")


def _trial_config(base, trial: Mapping):
    """``base`` (or the trial's ``model``) with the layer sizes and activation a trial names
    (every other field kept)."""
    base = trial.get("model", base)
    fjdl_model.check_model(base, "the space's model" if "model" in trial else "config")
    shaped = [n for n in SHAPE_NAMES[:-1] if n in trial]
    if not isinstance(base, MLP):
        if shaped:
            raise ValueError(
                f"space names {shaped} change an fjdl.MLP's layers; the model is a "
                f"{type(base).__name__}: search over models with 'model': Choice((...))"
            )
        return base
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


def _widest_in(space) -> int | None:
    """The largest hidden width that the space's ``n_units`` or ``hidden`` can take (``None``
    when it sets no width): every round pads to it, so all rounds share one compiled program."""
    widths = []
    for name in ("n_units", "hidden"):
        s = space.get(name)
        if s is None:
            continue
        if isinstance(s, UniformInt):
            widths.append(s.high)
        elif isinstance(s, Choice):
            widths.extend(int(np.max(o)) for o in s.options)
        else:
            widths.append(int(np.max(s)))
    return max(widths) if widths else None


def _run_round(
    space, X, Y, *, dev, key, n_trials, config, epochs, chunk_size, round_, fixed, pad_to=None
):
    sample_key, train_key = jax.random.split(key)
    trials = sample(space, sample_key, n_trials)
    configs = [_trial_config(config, t) for t in trials]
    kwargs = dict(fixed)
    for name in PER_MODEL_NAMES:
        if name in space:
            values = [t[name] if name == "optimizer" else float(t[name]) for t in trials]
            kwargs["keep_probs" if name == "keep_prob" else name] = values
    kwargs.setdefault("eval_every", epochs)
    if chunk_size is None and ("optimizer" in space or "model" in space):
        # Groups (one per optimizer or model) of sizes that change from round to round: each
        # padded to n_trials, so every round reuses the first round's programs.
        chunk_size = n_trials
    if pad_to is not None and all(isinstance(c, MLP) for c in configs):
        kwargs["pad_to"] = pad_to
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
    finals = {name: many.final(field) for name, field in train.FINAL_METRICS.items()}
    records = []
    for i, (t, c) in enumerate(zip(trials, configs)):
        record = {name: _plain(v) for name, v in t.items()}
        record["hidden"] = tuple(c.sizes[1:-1]) if isinstance(c, MLP) else None
        for metric, final in finals.items():
            record[metric] = float(final[i])
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


def _check_search_args(space, n_trials, config, fixed):
    """What a search takes beside train_many's arguments (which train_many checks)."""
    _check_space(space)
    _checks.check_positive_int("n_trials", n_trials)
    if "model" not in space:
        fjdl_model.check_model(config, "config")
    _check_space_names(space, fixed)


def random_search(
    space: Mapping[str, Any],
    X,
    Y,
    *,
    dev,
    key: PRNGKey,
    n_trials: int,
    config: Any = None,
    epochs: int,
    chunk_size: int | None = None,
    **fixed,
) -> SearchResult:
    r"""Random search: sample ``n_trials`` points of ``space``, train them all, rank them.

    The trials are trained with :func:`train_many` (one compiled program per optimizer, depth,
    activation or model, whatever the widths, in
    chunks of ``chunk_size`` models) and ranked by their final dev accuracy, ties broken by the
    lower dev cost (without a dev set: by the training accuracy and cost). A diverged trial ranks
    below every finite one.

    .. math::
      \theta_k \sim \text{space}, \quad k = 1 \dots n, \qquad
      \text{best} = \arg\max_k \text{dev accuracy}(\theta_k)

    Args:
      space: a dict of hyperparameter name -> sampler (see :func:`sample`) or constant. Names are
        those of :data:`PER_MODEL_NAMES` (``learning_rate``, ``beta1``, ``lambd``, ``keep_prob``,
        ``decay_rate``, ``min_delta``, ..., and ``optimizer``) and :data:`SHAPE_NAMES`
        (``n_units``, ``n_layers``, ``hidden``, ``activation``, ``model``).
      X, Y: the training set.
      dev: ``(X_dev, Y_dev)`` to rank on, or ``None`` (rank on the training set).
      key: a PRNG key: split into the sampling key and the models' keys.
      n_trials: how many points to sample.
      config: the model (any model of :mod:`fjdl.model`; ``None`` when the space has
        ``model``); for an :class:`fjdl.model.MLP`, shape names in the space replace its hidden
        layers.
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
      >>> from fjdl.tune import LogUniform
      >>> result = random_search({"learning_rate": LogUniform(1e-3, 1.0)}, X[:150], Y[:150],
      ...                        dev=(X[150:], Y[150:]), key=jax.random.key(1), n_trials=8,
      ...                        config=MLP((2, 8, 1)), epochs=20)
      >>> len(result.trials), result.best["rank"], sorted(result.best)[:3]
      (8, 1, ['dev_accuracy', 'dev_cost', 'diverged'])

    References:
      Bergstra & Bengio, 2012, *Random Search for Hyper-Parameter Optimization*.
    """
    _check_search_args(space, n_trials, config, fixed)
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
        pad_to=_widest_in(space),
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
    config: Any = None,
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
      space, X, Y, dev, config, epochs, chunk_size, \\*\\*fixed: as for :func:`random_search`.
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
      >>> from fjdl.tune import LogUniform
      >>> space = {"learning_rate": LogUniform(1e-4, 1.0)}
      >>> result = coarse_to_fine(space, X[:150], Y[:150], dev=(X[150:], Y[150:]),
      ...                         key=jax.random.key(1), n_trials=8, config=MLP((2, 8, 1)),
      ...                         epochs=20)
      >>> lr = result.spaces[1]["learning_rate"]
      >>> bool(1e-4 <= lr.low <= result.best["learning_rate"] <= lr.high <= 1.0)
      True
    """
    _check_search_args(space, n_trials, config, fixed)
    _checks.check_positive_int("rounds", rounds)
    if keep_top is None:
        keep_top = max(2, n_trials // 4)
    _checks.check_positive_int("keep_top", keep_top)
    _checks.check_nonnegative("margin", margin)
    has_dev = dev is not None
    spaces, runs = [dict(space)], []
    records: list[dict[str, Any]] = []
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
            pad_to=_widest_in(space),
        )
        records.extend(new)
        runs.append(many)
    return SearchResult(_ranked(records, has_dev), tuple(spaces), tuple(runs))


