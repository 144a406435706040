r"""Many models at once ("caviar"): ``jax.vmap`` of the compiled loop that :func:`fjdl.train.fit` runs.

:func:`train_many` trains ``N`` models that differ in hyperparameters, seeds, hidden widths and
optimizer as few compiled programs, and model ``i`` is what ``fit(model_i, X, Y, key=keys[i],
...)`` returns, to float rounding. There is one training loop in fjdl,
:func:`fjdl.train.run_epochs`; here it is mapped over a leading model axis of the state, the
hyperparameters, the optimizer's numbers and the early-stopping threshold, with the data shared:

.. math::
  \text{run}_{\text{many}} = \text{vmap}(\text{run\_epochs})(\text{state}_{1..N},\
  \text{hp}_{1..N}, \ldots;\ X, Y)

Models are grouped by what must be static in the program: the model (MLPs that differ only in
hidden widths form one group, padded to the widest, see "Several widths in one program" below) and the
optimizer's kind. Each group is one compiled program, whatever the number of models and values.

Where the models run: on several devices (GPUs, TPU cores, simulated CPU devices, the devices of
several hosts under ``jax.distributed``) the model axis is sharded over all of them; on a CPU,
which JAX shows as one device, the models are split into one part per core, run from as many
threads (small products run on one core each, so this is what uses the others; see ``bench/``,
case D). ``chunk_size`` bounds how many models are in memory at once.

**Several widths in one program.** A search over layer widths (``"n_units": UniformInt(5, 50)``) would otherwise compile one program per
distinct width. Models whose configs differ only in their hidden widths are instead trained as one
*wide* model, each hidden layer as wide as the widest among them, with a 0/1 mask per hidden layer
that switches the extra units off (``unit_masks`` of :func:`fjdl.model.apply`):

.. math::
  a^{[l]} = g\big(z^{[l]}\big) \odot \text{mask}^{[l]}, \qquad
  W^{[l]}_{\text{wide}} = \begin{pmatrix} W^{[l]} & 0 \\ 0 & 0 \end{pmatrix}

Why the wide model computes exactly what the narrow one does, step after step:

- A masked unit's activation is 0, so it adds nothing to the next layer; its outgoing weights
  (zero rows) meet a zero input and get a zero gradient ``a^T dz``.
- A masked unit's gradient is 0 (the mask multiplies it), so its incoming weights and bias (zero
  columns), and its batch-norm ``gamma`` and ``beta`` get zero gradients. Under batch norm its
  pre-activation is the constant 0, normalized to 0 (variance 0 plus ``epsilon``): finite.
- A zero gradient gives a zero update in every optimizer of :mod:`fjdl.optim` (Adam's
  :math:`0 / (\sqrt{0} + \epsilon)` is 0), and L2 and L1 add nothing for a zero weight
  (:math:`\lambda w = 0`, :math:`\text{sign}(0) = 0`), so the padding stays zero and the costs,
  which sum over all weights, are unchanged.
- Initialization: each model is initialized as its narrow config (the same key, the same draws as
  :func:`fjdl.train.fit`), then padded with zeros (running variances with ones).

What differs is rounding: a product over a wider inner axis adds exact zeros, but XLA may group
the sums differently, so the results equal the narrow model's to float tolerance, not bit for bit.
Dropout is the exception: the wide model draws one mask of the wide shape, so a real unit's mask
is not the one the narrow model draws with the same key (JAX's random bits depend on the shape's
row length). Each real unit is still kept with probability ``keep_prob``, independently: the same
distribution, other draws.
"""

import concurrent.futures
import contextlib
import dataclasses
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, _progress, losses, optim, parallel, schedules, train
from fjdl import model as model_lib
from fjdl.model import MLP
from fjdl.tune import _shapes as shapes

OPTIMIZER_NAMES = ("gd", "momentum", "rmsprop", "adam")
"""The optimizers :func:`train_many` builds by name (those of :mod:`fjdl.optim`)."""

class ModelGroup(NamedTuple):
    """Models trained together as one program: the model they were trained as (for MLPs of
    several widths, the widest), the optimizer, their indices among all the models, and their final
    :class:`fjdl.train.TrainState`, stacked (a leading axis of size ``len(indices)``)."""

    config: Any
    indices: np.ndarray
    state: train.TrainState
    optimizer: Any = None


@dataclasses.dataclass(frozen=True)
class ManyResult:
    """What :func:`train_many` returns.

    Attributes:
      history: a :class:`fjdl.train.History` of NumPy arrays of shape ``(N, epochs)``; NaN for
        epochs not run (after early stopping, or from the epoch a model diverged).
      groups: one :class:`ModelGroup` per compiled program, in order of first appearance.
      configs: the model of each model (its own, unpadded).
      diverged_epoch: ``(N,)`` ints, the epoch at which each model diverged, -1 if it did not.
        A diverged model's state is its last finite one (as ``fit(on_divergence="stop")``).
      best_epoch, stopped_epoch: ``(N,)`` ints, with early stopping (``patience``): the epoch
        whose parameters were restored and the epoch at which patience ran out (-1: none).
      hyperparams: each per-model hyperparameter's ``(N,)`` values, and ``optimizer``.
    """

    history: train.History
    groups: tuple[ModelGroup, ...]
    configs: tuple
    diverged_epoch: np.ndarray
    best_epoch: np.ndarray
    stopped_epoch: np.ndarray
    hyperparams: dict
    _narrow: tuple = ()  # per model: its unpadded TrainState's shapes, or None

    @property
    def n_models(self) -> int:
        return len(self.configs)

    @property
    def params(self):
        """The stacked parameters (leading axis: the models), when all models are one group of
        one width."""
        return self._single_group().state.params

    @property
    def model_state(self):
        """The stacked batch-norm (model) state, when all models are one group of one width."""
        return self._single_group().state.model_state

    def _single_group(self) -> ModelGroup:
        if len(self.groups) != 1 or any(n is not None for n in self._narrow):
            raise ValueError(
                f"the models were trained in {len(self.groups)} group(s), padded to a wider "
                f"model than their own ({len(set(self.configs))} distinct model(s)): there is no "
                "one stacked tree of their parameters; use .state(i) or .groups"
            )
        return self.groups[0]

    def state(self, i: int) -> train.TrainState:
        """The final :class:`fjdl.train.TrainState` of model ``i``, unstacked (and cut back to its
        own widths when it was trained padded)."""
        if not 0 <= i < self.n_models:
            raise IndexError(f"model index must be in [0, {self.n_models}), got {i}")
        for g in self.groups:
            where = np.nonzero(g.indices == i)[0]
            if where.size:
                state = jax.tree.map(lambda a, j=int(where[0]): a[j], g.state)
                narrow = self._narrow[i] if self._narrow else None
                return state if narrow is None else shapes.unpad(state, narrow)
        raise AssertionError("unreachable")  # pragma: no cover

    def final(self, field: str = "dev_accuracy") -> np.ndarray:
        """The last finite value of a history field for each model (NaN where there is none)."""
        return _last_finite(np.asarray(getattr(self.history, field), np.float64))

    def records(self) -> list[dict]:
        """One dict per model: its index, model (hidden widths for an MLP), optimizer and
        hyperparameters, the final train/dev cost and accuracy, and how it ended."""
        finals = {
            "train_cost": self.final("cost"),
            "train_accuracy": self.final("train_accuracy"),
            "dev_cost": self.final("dev_cost"),
            "dev_accuracy": self.final("dev_accuracy"),
        }
        out = []
        for i, model in enumerate(self.configs):
            r: dict[str, Any] = {"index": i}
            r["hidden"] = shapes.hidden_widths(model) if isinstance(model, MLP) else None
            for name, values in self.hyperparams.items():
                v = values[i]
                r[name] = v.item() if isinstance(v, np.generic) else v
            for name, values in finals.items():
                r[name] = float(values[i])
            r["diverged"] = bool(self.diverged_epoch[i] >= 0)
            r["best_epoch"] = int(self.best_epoch[i]) if self.best_epoch[i] >= 0 else None
            r["stopped_epoch"] = int(self.stopped_epoch[i]) if self.stopped_epoch[i] >= 0 else None
            out.append(r)
        return out

    def table(self, top: int | None = None) -> str:
        """The records as a text table (the first ``top`` models; ``None`` for all)."""
        rows = self.records()[:top]
        names = ["index", "hidden", "optimizer", *sorted(set(self.hyperparams) - {"optimizer"})]
        return _format_table(rows, [*names, *METRICS])

    def to_pandas(self):
        """The records as a ``pandas.DataFrame`` (needs pandas: ``pip install pandas``)."""
        return _to_pandas(self.records())


METRICS = ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy")
"""The final metrics in every record (the last finite value of each history field)."""


def _format_table(rows: list[dict], names: Sequence[str]) -> str:
    """``rows`` (dicts) as a right-aligned text table of the columns ``names``."""
    body = [[_fmt(r.get(h)) for h in names] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(names)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(names, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def _to_pandas(records: list[dict]):
    """A ``pandas.DataFrame`` of ``records``, one row each."""
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas needs pandas: pip install pandas") from None
    return pandas.DataFrame.from_records(records)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    return "-" if v is None else str(v)


def _last_finite(values: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[0], np.nan)
    for i, row in enumerate(values):
        idx = np.nonzero(np.isfinite(row))[0]
        if idx.size:
            out[i] = row[idx[-1]]
    return out


# --------------------------------------------------------------------------------------------------
# Validation


def _check_keys(keys):
    if keys is None:
        raise TypeError("train_many needs one PRNG key per model: keys=jax.random.split(key, n)")
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if typed and keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of keys (one per model), got shape {keys.shape}")
    if not typed and (keys.ndim != 2 or keys.dtype != jnp.uint32):
        raise ValueError(
            "keys must be jax.random.split(key, n): a 1-D array of typed keys or (n, 2) uint32 "
            f"raw keys, got dtype {keys.dtype} and shape {keys.shape}"
        )
    if keys.shape[0] == 0:
        raise ValueError("keys is empty: train_many needs at least one model")
    return keys


def _per_model(name, value, n) -> np.ndarray:
    """``value`` as ``(n,)`` float64: a number is repeated; a sequence must have ``n`` entries."""
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or one number per model, got {value!r}") from None
    if arr.ndim == 0:
        arr = np.full((n,), float(arr))
    if arr.shape != (n,):
        raise ValueError(
            f"{name} must be a number or have one value per model ({n}), got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must be finite, got {arr[bad][0]!r} (model {np.argmax(bad)})")
    return arr


def _check_range(name, arr, low, high=None, *, high_open=True):
    bad = arr < low
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if bad.any():
        i = int(np.argmax(bad))
        want = f">= {low}" if high is None else f"in [{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {want}, got {arr[i]!r} (model {i})")


def _per_model_list(name, value, n, one) -> list:
    """A list of ``n`` items: ``value`` repeated when ``one(value)``, else a sequence of ``n``."""
    if one(value):
        return [value] * n
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != n:
            raise ValueError(f"{name} must be one value or one per model ({n}), got {len(items)}")
        return items
    raise TypeError(f"{name} must be one value or a sequence of one per model, got {value!r}")


def _is_transformation(o) -> bool:
    return hasattr(o, "init") and hasattr(o, "update")


def _optimizer_kind(o):
    """The static optimizer of a group: a name's :class:`fjdl.train._Named`, a factory, or a
    ready transformation."""
    if isinstance(o, str) and o not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_NAMES}, got {o!r}")
    return train._resolve_optimizer(o)


def _keep_probs(model, keep_probs, n) -> np.ndarray:
    """Per-model keep_probs of an MLP's hidden layers, ``(n, n_hidden)``; ``(n, 0)`` otherwise."""
    if not isinstance(model, MLP):
        if keep_probs is not None:
            raise ValueError(
                "keep_probs applies to an fjdl.MLP only; a model of another kind applies its own "
                f"dropout, got keep_probs={keep_probs!r} for {type(model).__name__}"
            )
        return np.zeros((n, 0))
    n_hidden = model.n_layers - 1
    if keep_probs is None:
        base = model.keep_probs if model.keep_probs is not None else (1.0,) * n_hidden
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
    bad = (arr <= 0) | (arr > 1) | ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"keep_probs must be in (0, 1], got {float(arr[bad][0])} (model "
            f"{int(np.argwhere(bad)[0][0])}; {int(bad.sum()) - 1} more bad value(s))"
        )
    return arr


# --------------------------------------------------------------------------------------------------
# The compiled program: vmap of fit's loop

_STATIC = (
    "config",
    "loss",
    "is_weight",
    "optimizer",
    "schedule",
    "batch_size",
    "epochs",
    "patience",
    "eval_every",
)


@partial(jax.jit, static_argnames=_STATIC)
def run_many(
    loops,
    hp,
    opt_hp,
    min_delta,
    X,
    Y,
    X_dev,
    Y_dev,
    until,
    *,
    config,
    loss,
    is_weight,
    optimizer,
    schedule,
    batch_size,
    epochs,
    patience,
    eval_every,
):
    """:func:`fjdl.train.run_epochs` mapped over models: ``loops`` (stacked carries, see
    :func:`fjdl.train.start_loop`), ``hp``, ``opt_hp`` and ``min_delta`` have a leading model
    axis; the data and ``until`` are shared. Returns the stacked carries."""

    def one(loop, hp, opt_hp, min_delta):
        loop, _ = train.run_epochs(
            loop.state,
            hp,
            X,
            Y,
            X_dev,
            Y_dev,
            min_delta,
            config=config,
            loss=loss,
            is_weight=is_weight,
            optimizer=optimizer,
            schedule=schedule,
            batch_size=batch_size,
            epochs=epochs,
            patience=patience,
            eval_every=eval_every,
            opt_hp=opt_hp,
            loop=loop,
            until=until,
        )
        return loop

    return jax.vmap(one)(loops, hp, opt_hp, min_delta)


def _init_one(key, config, scheme, dtype):
    """One key's initial parameters, model state and run key, as :func:`fjdl.train.init_state`
    makes them (its split of the key, the model's init)."""
    init_key, run_key = jax.random.split(key)
    if isinstance(config, MLP):
        params, model_state = model_lib.init(init_key, config, scheme or "he", dtype)
    else:
        params, model_state = config.init(init_key)
        model_state = {} if model_state is None else model_state
    return params, model_state, run_key


@partial(jax.jit, static_argnames=("models", "wide", "optimizer", "scheme", "dtype", "epochs"))
def _start_loops(key_groups, inverse, *, models, wide, optimizer, scheme, dtype, epochs):
    """The stacked start carries of a group, as one compiled program: the models of each
    distinct (narrow) model in ``models`` initialized from their keys in ``key_groups``, padded
    to ``wide``, put back in the members' order (``inverse``), then the optimizer's states and
    the loops' carries (:func:`fjdl.train.start_loop`). One program for any mix of widths: an
    init per width, compiled apart, cost 2 s each on 2 cores."""
    wide_params, wide_state, _ = jax.eval_shape(
        lambda k: _init_one(k, wide, scheme, dtype), key_groups[0][0]
    )
    pieces = []
    for model, keys in zip(models, key_groups):
        p, s, k = jax.vmap(lambda key, model=model: _init_one(key, model, scheme, dtype))(keys)
        if model != wide:
            n = keys.shape[0]
            p = shapes.pad(p, _stacked_shapes(wide_params, n))
            if isinstance(wide, MLP):
                s = shapes.pad_model_state(s, _stacked_shapes(wide_state, n))
        pieces.append((p, s, k))
    params, model_state, run_keys = (
        jax.tree.map(lambda *a: jnp.concatenate(a)[inverse], *(piece[i] for piece in pieces))
        for i in range(3)
    )
    return _loops_of(params, model_state, run_keys, optimizer, dtype, epochs)


@partial(jax.jit, static_argnames=("wide", "optimizer", "dtype", "epochs"))
def _start_widths(keys, sizes, scales, *, wide, optimizer, dtype, epochs):
    """:func:`_start_loops` for MLPs of any widths up to ``wide`` under a named scheme: their
    layer ``sizes`` and init ``scales`` are arrays, so one program serves every mix of widths
    (see :func:`fjdl.tune._shapes.init_padded`)."""
    (params, model_state), run_keys = jax.vmap(
        lambda k, n, s: shapes.init_padded(k, n, s, wide=wide, dtype=dtype)
    )(keys, sizes, scales)
    return _loops_of(params, model_state, run_keys, optimizer, dtype, epochs)


def _loops_of(params, model_state, run_keys, optimizer, dtype, epochs):
    """The stacked start carries from stacked parameters: the optimizer's states, built as
    :func:`fjdl.train.init_state` builds them, and :func:`fjdl.train.start_loop`."""
    leaf_dtype = jax.tree.leaves(params)[0].dtype
    opt = optimizer(lambda count: jnp.zeros((), leaf_dtype))
    opt_state = jax.vmap(opt.init)(params)
    zero = jnp.zeros((run_keys.shape[0],), jnp.int32)
    states = train.TrainState(params, model_state, opt_state, zero, zero, run_keys)
    return jax.vmap(lambda st: train.start_loop(st, epochs, dtype))(states)


def _stacked_shapes(tree, n: int):
    """``tree``'s shapes with a leading axis of ``n`` models."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((n, *a.shape), a.dtype), tree)


def _start(members, models, keys, optimizer, scheme, dtype, epochs, wide):
    """The stacked start carries of a group: each model initialized as its own model, padded to
    ``wide``. Returns ``(loops, narrow)``, ``narrow[j]`` the unpadded state's shapes (a template
    :class:`fjdl.train.TrainState` of ``ShapeDtypeStruct`` leaves) or None."""
    by_model: dict = {}
    for j, i in enumerate(members):
        by_model.setdefault(models[i], []).append(j)
    distinct = tuple(by_model)
    if isinstance(wide, MLP) and shapes.can_init_padded(scheme, keys):
        # Any widths, one program: the sizes and the init's scales are arrays.
        scales = {m: shapes.init_scales(m, scheme or "he") for m in distinct}
        per_member = [scales[models[i]] for i in members]
        loops = _start_widths(
            keys[np.asarray(members)],
            jnp.asarray(np.array([models[i].sizes for i in members]), jnp.int32),
            None  # "zeros" draws nothing
            if any(s is None for s in per_member)
            else jnp.asarray(np.stack([s for s in per_member if s is not None]), jnp.float32),
            wide=wide,
            optimizer=optimizer,
            dtype=dtype,
            epochs=epochs,
        )
    else:
        key_groups = tuple(keys[np.asarray(members)[js]] for js in by_model.values())
        order = np.concatenate([np.asarray(js) for js in by_model.values()])
        loops = _start_loops(
            key_groups,
            jnp.asarray(np.argsort(order)),
            models=distinct,
            wide=wide,
            optimizer=optimizer,
            scheme=scheme,
            dtype=dtype,
            epochs=epochs,
        )
    narrow: list = [None] * len(members)
    for model, js in by_model.items():
        if model == wide:
            continue
        one_params, one_state, _ = jax.eval_shape(
            lambda k, model=model: _init_one(k, model, scheme, dtype), keys[0]
        )
        zero_rate = jnp.zeros((), jax.tree.leaves(one_params)[0].dtype)
        opt = optimizer(lambda count, zero_rate=zero_rate: zero_rate)
        # A template of one model's shapes, not a state: ShapeDtypeStruct leaves, and None for
        # the step, the epoch and the key (``_make`` takes the fields untyped).
        templ = train.TrainState._make(
            (one_params, one_state, jax.eval_shape(opt.init, one_params), None, None, None)
        )
        for j in js:
            narrow[j] = templ
    return loops, narrow


def _cpu_threads(devices, n_models: int) -> int:
    """Threads to run one device's models from: one per core this process may use on a single
    CPU device, else 1."""
    if len(devices) != 1 or devices[0].platform != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, n_models))


def _take(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


def _concat(trees):
    return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def _all_ended(loops) -> bool:
    return bool(jnp.all((loops.stopped_epoch >= 0) | (loops.diverged_epoch >= 0)))


# --------------------------------------------------------------------------------------------------
# train_many


def train_many(
    model,
    X,
    Y,
    *,
    keys,
    loss=None,
    optimizer="adam",
    learning_rate=0.001,
    epochs: int = 100,
    batch_size: int | None = None,
    lambd=0.0,
    l1=0.0,
    keep_probs=None,
    beta=None,
    beta1=None,
    beta2=None,
    epsilon=None,
    decay_rate=0.0,
    decay_interval: int = 1,
    schedule=None,
    dev=None,
    patience: int | None = None,
    min_delta=0.0,
    scheme=None,
    eval_every: int = 1,
    chunk_size: int | None = None,
    devices=None,
    progress: bool | Callable[[int], None] | None = None,
    is_weight=losses.is_weight,
    pad_to: int | Sequence[int] | None = None,
    threads: int | None = None,
) -> ManyResult:
    """Train ``N`` models that differ in hyperparameters, seeds, widths and optimizer, at once.

    Model ``i`` is trained exactly as ``fjdl.train.fit(model_i, X, Y, key=keys[i],
    optimizer=optimizer_i, learning_rate=learning_rate[i], ...)`` would train it, to float
    rounding: the same initialization, mini-batch order, dropout masks (except for padded widths,
    see "Several widths in one program" in the module doc), batch-norm statistics, optimizer, schedule, early stopping and
    NaN guard, because it runs the same compiled loop, :func:`fjdl.train.run_epochs`, under
    ``jax.vmap``. Every argument marked "per model" is one value (shared) or a sequence of ``N``.

    Compilation: one program per group of models, a group being the models that share the
    optimizer's kind and the model, where MLPs that differ only in hidden widths share one (padded
    to the widest, extra units masked). New values, keys, data of the same shapes, or another
    mix of widths up to the same widest reuse the programs.

    Args:
      model: one model for all (any model of the protocol, :mod:`fjdl.model`), or a sequence of
        ``N`` models.
      X, Y: the training set, shared by all the models.
      keys: ``N`` PRNG keys, e.g. ``jax.random.split(key, N)``; ``N`` is the number of models.
      loss: as for :func:`fjdl.train.fit` (default: the model's), shared.
      optimizer: per model: ``"gd"``, ``"momentum"``, ``"rmsprop"``, ``"adam"``, a factory
        ``learning_rate -> GradientTransformation`` (fjdl's or optax's, e.g. ``optax.adam``), or a
        ready ``GradientTransformation`` (which keeps its own learning rate).
      learning_rate: per model, the initial learning rate ``alpha``; or one schedule of the step
        count for all (as for ``fit``).
      epochs: epochs for every model.
      batch_size: mini-batch size (``None``: full batch), shared.
      lambd, l1: per model, the L2 and L1 strengths.
      keep_probs: per model, an MLP's dropout keep_prob of every hidden layer (a number or ``N``
        numbers), or an ``(N, n_hidden)`` array; ``None`` takes the config's. As in ``fit``, an
        MLP built without dropout gets it when ``keep_probs`` is given.
      beta: per model, the ``beta`` of momentum and RMSprop (default 0.9).
      beta1, beta2: per model, Adam's betas (default 0.9, 0.999).
      epsilon: per model, RMSprop's and Adam's ``epsilon`` (default 1e-8). These four apply to
        optimizers given by name only, as in ``fit``.
      decay_rate: per model, learning-rate decay once per epoch,
        ``alpha = alpha0 / (1 + decay_rate * floor(epoch / decay_interval))``; 0 is no decay (and
        the same program).
      decay_interval: epochs per decay step, shared.
      schedule: one per-epoch schedule for all models, as for ``fit`` (not with ``decay_rate``).
      dev: optional ``(X_dev, Y_dev)``, evaluated every ``eval_every`` epochs.
      patience: early stopping, as for ``fit`` (each model stops on its own; needs ``dev``).
      min_delta: per model, the improvement that resets the patience.
      scheme: an MLP's weight initialization (see :mod:`fjdl.initializers`; default ``"he"``).
      eval_every: compute the accuracies and the dev cost every this many epochs (NaN between).
      chunk_size: train at most this many models at once (to bound memory). Every chunk of every
        group has ``min(chunk_size, N)`` models (a smaller one padded with copies, dropped after),
        so they share one program; searches over the optimizer pass ``N`` here, so that rounds
        whose groups differ in size compile nothing new.
      devices: the devices to shard the models over (default: all of ``jax.devices()``).
      progress: ``True`` shows a progress bar over epochs (tqdm) from before compiling, ``False``
        nothing, or a function called with the number of epochs done (over all groups and
        chunks); default: a bar when stderr is a terminal.
      is_weight: which parameters L2 and L1 act on (see :func:`fjdl.losses.is_weight`).
      pad_to: MLPs' hidden widths to pad to at least (one width, or one per hidden layer):
        calls whose widths stay within share one compiled program (:func:`~fjdl.tune.random_search`
        passes the space's largest widths, so every round reuses the first round's program).
      threads: on one CPU device, how many threads to split the models over (default: one per
        core this process may use); ignored on other devices.

    Returns:
      A :class:`ManyResult`: per-model history ``(N, epochs)``, final states by group
      (:meth:`ManyResult.state` unstacks one), records and a table.

    Example:
      >>> import jax
      >>> from fjdl import data
      >>> X, Y = data.make_moons(jax.random.key(0), 100)
      >>> result = train_many(MLP((2, 8, 1)), X, Y, keys=jax.random.split(jax.random.key(1), 4),
      ...                     learning_rate=[1e-3, 1e-2, 1e-1, 1.0], epochs=5)
      >>> result.history.cost.shape, result.params[0]["W"].shape
      ((4, 5), (4, 2, 8))
    """
    keys = _check_keys(keys)
    n = keys.shape[0]
    if progress is None:  # several processes must cut the run into the same segments
        progress = sys.stderr.isatty() and jax.process_count() == 1
    _progress.check("progress", progress)
    if threads is not None:
        _checks.check_positive_int("threads", threads)
    if pad_to is not None:
        for w in np.atleast_1d(pad_to):
            _checks.check_positive_int("pad_to", int(w) if float(w).is_integer() else w)
    models = _per_model_list("model", model, n, lambda m: not isinstance(m, Sequence))
    for i, m in enumerate(models):
        model_lib.check_model(m, "model" if len(set(models)) == 1 else f"model[{i}]")
    if keep_probs is not None:  # as fit: an MLP without dropout gets it, its rates from here
        models = [
            dataclasses.replace(m, keep_probs=(1.0,) * (m.n_layers - 1))
            if isinstance(m, MLP) and m.keep_probs is None
            else m
            for m in models
        ]
    opt_items = _per_model_list(
        "optimizer",
        optimizer,
        n,
        lambda o: isinstance(o, str) or _is_transformation(o) or callable(o),
    )
    kinds = [_optimizer_kind(o) for o in opt_items]
    X = train._as_inputs("training", X)
    dtype = X.dtype
    m = X.shape[0]
    for name, v in (("epochs", epochs), ("decay_interval", decay_interval)):
        _checks.check_positive_int(name, v)
    _checks.check_positive_int("eval_every", eval_every)
    if chunk_size is not None:
        _checks.check_positive_int("chunk_size", chunk_size)
    if batch_size is not None:
        _checks.check_positive_int("batch_size", batch_size)
    batch_size = m if batch_size is None else min(batch_size, m)
    if patience is not None:
        _checks.check_positive_int("patience", patience)
        if dev is None:
            raise ValueError("early stopping (patience) needs a dev set: pass dev=(X_dev, Y_dev)")
    if dev is not None and (not isinstance(dev, tuple | list) or len(dev) != 2):
        raise ValueError(f"dev must be a pair (X_dev, Y_dev), got {type(dev).__name__}")
    if not callable(is_weight):
        raise TypeError(f"is_weight must be a function (key path, leaf) -> bool, got {is_weight!r}")

    per_step = callable(learning_rate) and not isinstance(learning_rate, Sequence)
    named = dict(beta=beta, beta1=beta1, beta2=beta2, epsilon=epsilon)
    given = sorted(k for k, v in named.items() if v is not None)
    if given and not all(isinstance(k, train._Named) for k in kinds):
        raise ValueError(
            f"{', '.join(given)} apply to optimizers given by name ('momentum', 'rmsprop', "
            "'adam'); a factory or a transformation carries its own"
        )
    named = {k: train.OPTIMIZER_DEFAULTS[k] if v is None else v for k, v in named.items()}
    values = {
        name: _per_model(name, v, n)
        for name, v in (
            ("learning_rate", 0.0 if per_step else learning_rate),
            ("lambd", lambd),
            ("l1", l1),
            ("beta", named["beta"]),
            ("beta1", named["beta1"]),
            ("beta2", named["beta2"]),
            ("epsilon", named["epsilon"]),
            ("decay_rate", decay_rate),
            ("min_delta", min_delta),
        )
    }
    for name in ("learning_rate", "lambd", "l1", "decay_rate", "min_delta"):
        _check_range(name, values[name], 0)
    for name in ("beta", "beta1", "beta2"):
        _check_range(name, values[name], 0, 1)
    if np.any(values["epsilon"] <= 0):
        i = int(np.argmax(values["epsilon"] <= 0))
        raise ValueError(f"epsilon must be > 0, got {values['epsilon'][i]!r} (model {i})")
    rate, rate_schedule = train._rate_plan(
        learning_rate if per_step else float(values["learning_rate"][0]), schedule
    )
    if rate_schedule is not None and np.any(values["decay_rate"] != 0):
        raise ValueError("decay_rate and a schedule both decay the learning rate: give one")
    if rate_schedule is None:
        rate_schedule = train._InverseTimeDecay(decay_interval)  # rate 0: no decay, the same program
    if isinstance(rate_schedule, train._PerEpoch) and len(set(values["learning_rate"])) > 1:
        raise ValueError(
            "schedule is a schedule of the epoch, which replaces the learning rate: per-model "
            "learning_rate values would be ignored; give a factory lr0 -> (epoch -> lr) to decay "
            "each model's rate, or one learning_rate"
        )
    for i, (o, kind) in enumerate(zip(opt_items, kinds)):
        if isinstance(kind, train._Fixed) and values["decay_rate"][i] != 0:
            raise ValueError(
                f"decay_rate needs an optimizer fjdl builds (a name or a factory); model {i}'s is "
                f"a ready GradientTransformation ({type(o).__name__}), which keeps its own rate"
            )
        if isinstance(kind, train._Fixed) and not isinstance(rate_schedule, train._InverseTimeDecay):
            raise ValueError(
                "a schedule needs an optimizer fjdl builds (a name or a factory), not a ready "
                f"GradientTransformation ({type(o).__name__}), which keeps its own learning rate"
            )

    # Groups: one compiled program each (the optimizer's kind, the model up to hidden widths).
    # Everything is checked for every group before anything compiles.
    members_of: dict = {}
    for i, (mdl, kind) in enumerate(zip(models, kinds)):
        # Padding is exact for optimizers that act coordinate by coordinate (fjdl's, by name); a
        # transformation from elsewhere may mix coordinates (adafactor's row and column means,
        # added noise), so with one each width is its own program.
        family = shapes.family_key(mdl) if isinstance(kind, train._Named) else ("model", mdl)
        members_of.setdefault((family, kind), []).append(i)
    devices = list(jax.devices()) if devices is None else list(devices)
    if not devices:
        raise ValueError("devices is empty: pass None for all devices, or a list of devices")
    opt_dtype = optim.moment_dtype(dtype)
    # A schedule of fjdl.schedules travels as arrays (one copy per model); else the numbers.
    shared_rate = rate if schedules.is_numeric(rate) else None
    plans = [
        _plan(
            members, kind, models, X, Y, dev, loss, keep_probs, values, shared_rate, scheme, dtype,
            opt_dtype, pad_to,
        )  # fmt: skip
        for (_, kind), members in members_of.items()
    ]
    sizes = [_chunk_len(len(p.members), n, chunk_size, len(devices)) for p in plans]
    n_chunks = sum(-(-len(p.members) // size) for p, size in zip(plans, sizes))
    reporter = _progress.Reporter(progress, epochs * n_chunks)
    ends = _progress.segment_ends(epochs, train._chunk_size(eval_every, epochs), reporter.shown)

    history: list = [None] * n
    ended = {f: np.full(n, -1, np.int64) for f in ("diverged", "best", "stopped")}
    narrow_all: list = [None] * n
    out_groups = []
    done = 0
    try:
        for group, size in zip(plans, sizes):
            members, idx = group.members, np.asarray(group.members)
            static = dict(
                config=group.model,
                loss=group.loss,
                is_weight=is_weight,
                optimizer=group.kind,
                schedule=rate_schedule,
                batch_size=batch_size,
                epochs=epochs,
                patience=patience,
                eval_every=eval_every,
            )
            per_model = (group.hp, group.opt_hp, group.min_delta)
            finals, narrow = [], []
            for start in range(0, len(members), size):
                # A chunk at a time, from its start (so chunk_size bounds the memory), padded to
                # the chunk size with copies of its first model, dropped after.
                sel = np.arange(start, min(start + size, len(members)))
                padded = np.concatenate([sel, np.full(size - sel.size, sel[0])])
                loops0, chunk_narrow = _start(
                    [members[j] for j in padded], models, keys, group.kind, scheme, dtype,
                    epochs, group.model,
                )  # fmt: skip
                loops = _run_chunk(
                    (loops0, *_take(per_model, padded)),
                    group.data,
                    static,
                    ends,
                    devices,
                    threads,
                    lambda e, off=done: reporter.update(off + e),
                    reporter.shown,
                )
                done += epochs
                reporter.update(done)
                finals.append(_ends_of(_take(loops, np.arange(sel.size)), patience))
                narrow.extend(chunk_narrow[: sel.size])
            state, hist, ends_ = (
                jax.tree.map(lambda *a: np.concatenate(a) if isinstance(a[0], np.ndarray)
                             else jnp.concatenate(a), *parts)  # fmt: skip
                for parts in zip(*finals)
            )
            for j, i in enumerate(members):
                history[i] = jax.tree.map(lambda h, j=j: h[j], hist)
                narrow_all[i] = narrow[j]
            for name, field in zip(("diverged", "best", "stopped"), ends_):
                ended[name][idx] = field
            out_groups.append(ModelGroup(group.model, idx, state, opt_items[members[0]]))
    finally:
        reporter.close()
    record = {"optimizer": np.array([_name(o) for o in opt_items], object), **values}
    return ManyResult(
        train.History(*(np.stack([getattr(h, f) for h in history]) for f in train.History._fields)),
        tuple(out_groups),
        tuple(models),
        ended["diverged"],
        ended["best"],
        ended["stopped"],
        record,
        tuple(narrow_all),
    )


class _Plan(NamedTuple):
    """A group, checked and ready to run: its members, the model it runs as, its per-model
    arrays and its data."""

    members: list
    kind: Any
    model: Any
    loss: losses.Loss
    hp: train.Hyperparams
    opt_hp: train.OptimizerHyperparams
    min_delta: jax.Array
    data: tuple


def _plan(
    members, kind, models, X, Y, dev, loss, keep_probs, values, shared_rate, scheme, dtype, opt_dtype,
    pad_to,
):
    member_models = [models[i] for i in members]
    first = member_models[0]
    is_mlp = isinstance(first, MLP) and first.n_layers > 1
    wide = shapes.widest(member_models, pad_to) if is_mlp else first
    idx = np.asarray(members)
    group_loss = train.default_loss(wide, loss)
    kp = _keep_probs(wide, keep_probs, len(models))[idx]
    masks = None
    # Masks only where a model is narrower than the group's widest (they cost a multiply per unit
    # and step; a call whose models are all of the widest widths is its own program).
    if is_mlp and any(mm != wide for mm in member_models):
        per_model = [shapes.unit_masks(mm, wide, dtype) for mm in member_models]
        masks = tuple(jnp.stack([pm[l] for pm in per_model]) for l in range(wide.n_layers - 1))
    if scheme is not None and not isinstance(wide, MLP):
        raise ValueError(
            f"scheme applies to an fjdl.MLP only; {type(wide).__name__} initializes its "
            f"parameters in its own init(key), got scheme={scheme!r}"
        )
    if shared_rate is not None:  # in at least float32: a float16 step count overflows
        rate = jax.tree.map(lambda a: jnp.full((len(idx),), a, opt_dtype), shared_rate)
    else:
        rate = jnp.asarray(values["learning_rate"][idx], dtype)
    hp = train.Hyperparams(
        rate,
        jnp.asarray(values["lambd"][idx], dtype),
        jnp.asarray(values["l1"][idx], dtype),
        jnp.asarray(kp, dtype),
        masks,
    )
    opt_hp = train.OptimizerHyperparams(
        *(jnp.asarray(values[f][idx], opt_dtype) for f in train.OptimizerHyperparams._fields)
    )
    # The data checked against the model's output, found without compiling.
    params, model_state, _ = jax.eval_shape(
        lambda k: _init_one(k, wide, scheme, dtype), jax.random.key(0)
    )
    where = dict(loss=group_loss, params=params, model_state=model_state)
    data = (*train._check_data(wide, "training", X, Y, **where),)
    data += train._check_data(wide, "dev", *dev, **where) if dev is not None else (None, None)
    min_delta = jnp.asarray(values["min_delta"][idx], dtype)
    return _Plan(members, kind, wide, group_loss, hp, opt_hp, min_delta, data)


def _name(o) -> str:
    """A name for an optimizer in records: its own, a factory's or a partial's function's."""
    if isinstance(o, str):
        return o
    return getattr(o, "__name__", None) or getattr(getattr(o, "func", None), "__name__", None) or (
        type(o).__name__
    )


def _ends_of(loops, patience):
    """What is kept of a chunk's final carries: the states (the best epoch's parameters with
    early stopping, as fit restores them), the history and how each run ended, as NumPy."""
    state = loops.state
    if patience is not None:
        restore = loops.best_epoch >= 0
        state = state._replace(
            params=_where(restore, loops.best_params, state.params),
            model_state=_where(restore, loops.best_model_state, state.model_state),
        )
    history = train.History(*(np.asarray(h) for h in loops.history))
    ends = tuple(np.asarray(e) for e in (loops.diverged_epoch, loops.best_epoch, loops.stopped_epoch))
    return state, history, ends


def _where(pred, new, old):
    def one(a, b):
        p = pred.reshape(pred.shape + (1,) * (a.ndim - 1))
        return jnp.where(p, a, b)

    return jax.tree.map(one, new, old)


def _chunk_len(n_members: int, n_models: int, chunk_size: int | None, n_dev: int) -> int:
    """Models per compiled call of a group of ``n_members`` (of ``n_models`` in all): without
    ``chunk_size``, the group's size; with it, ``min(chunk_size, n_models)`` for every group (a
    smaller group padded to it), so that groups, and calls, of different sizes share one program.
    A multiple of the number of devices."""
    size = n_members if chunk_size is None else min(chunk_size, n_models)
    return -(-size // n_dev) * n_dev


def _settings_of_this_thread():
    """A function that enters, in another thread, the JAX settings that a ``with`` has set in
    this one (JAX keeps ``enable_x64``, the dtype promotion and the matmul precision per thread,
    and a worker thread would otherwise run with the global ones)."""
    # ``jax.config.values`` holds this thread's values, as the attributes ``jax.config.jax_*`` do
    # (which jax's typing does not declare).
    settings = jax.config.values
    promotion = settings["jax_numpy_dtype_promotion"]
    x64 = settings["jax_enable_x64"]
    precision = settings["jax_default_matmul_precision"]

    def enter(stack: contextlib.ExitStack) -> None:
        stack.enter_context(jax.numpy_dtype_promotion(promotion))
        stack.enter_context(jax.enable_x64(x64))
        stack.enter_context(jax.default_matmul_precision(precision))

    return enter


def _run_chunk(per_model, data, static, ends, devices, threads, report, shown):
    """One chunk of models through the segments of epochs; on one CPU device, one part of the
    models per core, each run from its own thread."""
    n = per_model[0].i.shape[0]
    n_threads = _cpu_threads(devices, n) if threads is None else min(threads, n)
    part = -(-n // n_threads)
    idx = np.arange(part * n_threads) % n  # equal parts (the last padded with repeats)
    parts = [_take(per_model, p) for p in np.split(idx, n_threads)]
    reached = [0] * n_threads
    lock = threading.Lock()

    settings = _settings_of_this_thread()

    def run(t):
        with contextlib.ExitStack() as stack:
            settings(stack)
            return run_part(t)

    def run_part(t):
        loops, hp, opt_hp, min_delta = parts[t]
        rest = data
        if len(devices) > 1:
            loops, hp, opt_hp, min_delta = parallel.shard_models((loops, hp, opt_hp, min_delta), devices)
            rest = parallel.replicate(data, devices)
        for end in ends:
            loops = run_many(loops, hp, opt_hp, min_delta, *rest, jnp.int32(end), **static)
            if shown:
                with lock:
                    reached[t] = end
                    report(min(reached))
                if _all_ended(loops):
                    break
        if jax.process_count() > 1:  # several hosts: every host gets every model's results
            loops = parallel.to_host(loops)
        return jax.block_until_ready(loops)

    if n_threads == 1:
        results = [run(0)]
    else:
        with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
            results = list(pool.map(run, range(n_threads)))
    loops = _concat(results) if len(results) > 1 else results[0]
    return _take(loops, np.arange(n))
