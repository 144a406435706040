r"""Many models at once ("caviar"): ``jax.vmap`` of the compiled loop that :func:`fjdl.train.fit` runs.

:func:`train_many` trains ``N`` models that differ in hyperparameters, seeds, hidden widths and
optimizer as few compiled programs, and model ``i`` is what ``fit(model_i, X, Y, key=keys[i],
...)`` returns, to float rounding. There is one training loop in fjdl,
:func:`fjdl.train.run_epochs`; here it is mapped over a leading model axis of the loop's carry
and the :class:`fjdl.train.Hyperparams` (which hold the optimizer's numbers and the
early-stopping threshold too), with the data shared:

.. math::
  \text{run}_{\text{many}} = \text{vmap}(\text{run\_epochs})(\text{loop}_{1..N},\
  \text{hp}_{1..N};\ \text{spec}, X, Y)

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
import typing
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, _progress, parallel, train
from fjdl import model as model_lib
from fjdl.model import MLP

OPTIMIZER_NAMES = tuple(train.OPTIMIZERS)
"""The optimizers :func:`train_many` builds by name (those of :data:`fjdl.train.OPTIMIZERS`)."""


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
                return state if narrow is None else model_lib.unpad(state, narrow)
        raise AssertionError("unreachable")  # pragma: no cover

    def final(self, field: str = "dev_accuracy") -> np.ndarray:
        """The last finite value of a history field for each model (NaN where there is none)."""
        return _last_finite(np.asarray(getattr(self.history, field), np.float64))

    def records(self) -> list[dict]:
        """One dict per model: its index, model (hidden widths for an MLP), optimizer and
        hyperparameters, the final train/dev cost and accuracy, and how it ended."""
        finals = {name: self.final(field) for name, field in train.FINAL_METRICS.items()}
        out = []
        for i, model in enumerate(self.configs):
            r: dict[str, Any] = {"index": i}
            r["hidden"] = model_lib.hidden_widths(model) if isinstance(model, MLP) else None
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


METRICS = tuple(train.FINAL_METRICS)
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



# --------------------------------------------------------------------------------------------------
# The compiled programs: the start of the runs, and vmap of fit's loop


@partial(jax.jit, static_argnames=("spec",))
def run_many(spec: train.RunSpec, hp: train.Hyperparams, data: train.Data, loops, until):
    """:func:`fjdl.train.run_epochs` mapped over models: ``hp`` and ``loops`` (stacked carries,
    see :func:`fjdl.train.start_loop`) have a leading model axis; the data and ``until`` are
    shared. Returns the stacked carries."""
    return jax.vmap(lambda h, loop: train.run_epochs(spec, h, data, loop, until))(hp, loops)


def _start_loop(spec: train.RunSpec, hp, key, init, dtype) -> train.Loop:
    """One model's start carry: :func:`fjdl.train.start` (the one initialization path) with
    ``init``, then :func:`fjdl.train.start_loop`."""
    state = train.start(spec.optimizer, spec.rate, hp, key, init)
    return train.start_loop(state, spec.epochs, dtype)


@partial(jax.jit, static_argnames=("spec", "dtype"))
def _start_widths(spec: train.RunSpec, hp, keys, sizes, scales, *, dtype):
    """The stacked start carries of MLPs of any widths up to ``spec.model`` under a named scheme:
    their layer ``sizes`` and init ``scales`` are arrays, so one program serves every mix of
    widths (see :func:`fjdl.model.init_padded`)."""

    wide = typing.cast(MLP, spec.model)

    def one(h, key, n, s):
        init = partial(model_lib.init_padded, sizes=n, scales=s, wide=wide, dtype=dtype)
        return _start_loop(spec, h, key, init, dtype)

    return jax.vmap(one)(hp, keys, sizes, scales)


@partial(jax.jit, static_argnames=("spec", "models", "scheme", "dtype"))
def _start_models(spec: train.RunSpec, hps, key_groups, inverse, *, models, scheme, dtype):
    """The stacked start carries of a group, as one compiled program: the members of each
    distinct model in ``models`` initialized from their keys in ``key_groups`` (and their
    hyperparameters in ``hps``), padded to ``spec.model``, put back in the members' order
    (``inverse``). One program for any mix of widths: an init per width, compiled apart, cost 2 s
    each on 2 cores."""
    wide_init = train.model_init(spec.model, scheme, dtype)
    wide_params, wide_state = jax.eval_shape(wide_init, key_groups[0][0])

    def padded(init, key):
        params, state = init(key)
        if isinstance(spec.model, MLP):
            state = model_lib.pad_model_state(state, wide_state)
        return model_lib.pad(params, wide_params), state

    pieces = []
    for model, keys, hp in zip(models, key_groups, hps):
        init = train.model_init(model, scheme, dtype)
        init = init if model == spec.model else partial(padded, init)
        pieces.append(jax.vmap(lambda h, k, init=init: _start_loop(spec, h, k, init, dtype))(hp, keys))
    return jax.tree.map(lambda *a: jnp.concatenate(a)[inverse], *pieces)


def _start(spec: train.RunSpec, hp, models: list, keys, scheme, dtype):
    """The stacked start carries of one chunk of a group (``models``: each member's own model,
    ``keys`` and ``hp`` theirs). Returns ``(loops, narrow)``, ``narrow[j]`` the shapes of member
    ``j``'s own unpadded :class:`fjdl.train.TrainState` (``ShapeDtypeStruct`` leaves), or None."""
    by_model: dict = {}
    for j, mdl in enumerate(models):
        by_model.setdefault(mdl, []).append(j)
    if isinstance(spec.model, MLP) and model_lib.can_init_padded(scheme, keys):
        per_model = [model_lib.init_scales(m, scheme or "he") for m in models]
        sizes = jnp.asarray(np.array([m.sizes for m in models]), jnp.int32)
        drawn = [s for s in per_model if s is not None]  # "zeros" draws nothing
        scales = jnp.asarray(np.stack(drawn), jnp.float32) if len(drawn) == len(models) else None
        loops = _start_widths(spec, hp, keys, sizes, scales, dtype=dtype)
    else:
        js = [np.asarray(j) for j in by_model.values()]
        loops = _start_models(
            spec, tuple(_take(hp, j) for j in js), tuple(keys[j] for j in js),
            jnp.asarray(np.argsort(np.concatenate(js))), models=tuple(by_model), scheme=scheme,
            dtype=dtype,
        )  # fmt: skip
    hp0, templates = _take(hp, 0), {}
    for mdl in by_model:
        if mdl != spec.model:
            init = train.model_init(mdl, scheme, dtype)
            one = partial(train.start, spec.optimizer, spec.rate, hp0, init=init)
            templates[mdl] = jax.eval_shape(one, keys[0])
    return loops, [templates.get(m) for m in models]


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

_PER_MODEL = ("learning_rate", "lambd", "l1", "keep_probs", "beta", "beta1", "beta2", "epsilon",
              "decay_rate", "min_delta")  # fmt: skip
"""The arguments of :func:`train_many` that take one value per model."""


class _Plan(NamedTuple):
    """A group, prepared: its members (indices among all the models), their own models, and the
    :class:`fjdl.train.Run` they run as one program (``hp`` with a leading axis of members)."""

    members: list
    models: list
    run: train.Run


def _of_members(name: str, value, members, n: int):
    """The members' entries of a per-model argument: one value for all, or ``n`` (one per model,
    all the models, before they are grouped)."""
    if value is None or callable(value) or isinstance(value, str):
        return value
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return value  # prepare names what is wrong with it
    if arr.ndim == 0 or arr.dtype == object:
        return value
    if arr.shape[0] != n:
        raise ValueError(
            f"{name} must be a number or have one value per model ({n}), got shape {arr.shape}"
        )
    return arr[np.asarray(members)]


def _plan(members, optimizer, models, X, Y, settings: dict, n: int, pad_to) -> _Plan:
    """One group's :class:`fjdl.train.Run` from :func:`fjdl.train.prepare` (every check there),
    the members' MLPs padded to the group's widest, with masks of their own units."""
    own = [models[i] for i in members]
    is_mlp = isinstance(own[0], MLP) and own[0].n_layers > 1
    wide = model_lib.widest(own, pad_to) if is_mlp else own[0]
    given = {
        k: _of_members(k, v, members, n) if k in _PER_MODEL else v for k, v in settings.items()
    }
    run = train.prepare(wide, X, Y, n=len(members), optimizer=optimizer, **given)
    # Masks only where a model is narrower than the group's widest (they cost a multiply per unit
    # and step; a call whose models are all of the widest widths is its own program).
    if is_mlp and any(m != wide for m in own):
        dtype = run.data.X.dtype
        per = [model_lib.unit_masks(m, wide, dtype) for m in own]
        masks = tuple(jnp.stack([p[l] for p in per]) for l in range(wide.n_layers - 1))
        run = run._replace(hp=run.hp._replace(unit_masks=masks))
    return _Plan(list(members), own, run)


def _groups(models, optimizers) -> list[tuple[Any, list[int]]]:
    """``(optimizer, members)`` per compiled program: the optimizer's kind and the model, where
    MLPs that differ only in hidden widths share one (for optimizers given by name)."""
    members_of: dict = {}
    for i, (mdl, opt) in enumerate(zip(models, optimizers)):
        # Padding is exact for optimizers that act coordinate by coordinate (fjdl's, by name); a
        # transformation from elsewhere may mix coordinates (adafactor's row and column means,
        # added noise), so with one each width is its own program.
        family = model_lib.family_key(mdl) if isinstance(opt, str) else ("model", mdl)
        members_of.setdefault((family, opt), []).append(i)
    return [(opt, members) for (_, opt), members in members_of.items()]


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
    is_weight=None,
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
      schedule: one per-epoch schedule for all models, as for ``fit`` (not with a non-zero
        ``decay_rate``).
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
      is_weight: which parameters L2 and L1 act on; ``None``: :func:`fjdl.losses.is_weight`.
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
    _check_own_args(progress, threads, pad_to, chunk_size)
    models = train.per_model_items("model", model, n, lambda m: not isinstance(m, Sequence))
    for i, m in enumerate(models):
        model_lib.check_model(m, "model" if len(set(models)) == 1 else f"model[{i}]")
    # As fit: an MLP built without dropout gets it when keep_probs is given.
    models = [train.with_dropout(m, keep_probs) for m in models]
    optimizers = train.per_model_items(
        "optimizer", optimizer, n, lambda o: isinstance(o, str) or callable(o) or hasattr(o, "init")
    )
    settings = dict(
        loss=loss, learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, lambd=lambd,
        l1=l1, keep_probs=keep_probs, beta=beta, beta1=beta1, beta2=beta2, epsilon=epsilon,
        decay_rate=decay_rate, decay_interval=decay_interval, schedule=schedule, dev=dev,
        patience=patience, min_delta=min_delta, scheme=scheme, eval_every=eval_every,
        is_weight=is_weight,
    )  # fmt: skip
    # Everything is checked for every group before anything compiles.
    plans = [
        _plan(members, opt, models, X, Y, settings, n, pad_to)
        for opt, members in _groups(models, optimizers)
    ]
    devices = list(jax.devices()) if devices is None else list(devices)
    if not devices:
        raise ValueError("devices is empty: pass None for all devices, or a list of devices")
    sizes = [_chunk_len(len(p.members), n, chunk_size, len(devices)) for p in plans]
    n_chunks = sum(-(-len(p.members) // size) for p, size in zip(plans, sizes))
    if progress is None:  # several processes must cut the run into the same segments
        progress = sys.stderr.isatty() and jax.process_count() == 1
    reporter = _progress.Reporter(progress, epochs * n_chunks)
    try:
        ran = _run_groups(plans, sizes, keys, scheme, devices, threads, reporter)
    finally:
        reporter.close()
    return _result(plans, ran, models, optimizers, settings, n)


def _check_own_args(progress, threads, pad_to, chunk_size) -> None:
    """What :func:`train_many` takes beside :func:`fjdl.train.fit`'s arguments."""
    _progress.check("progress", progress)
    if chunk_size is not None:
        _checks.check_positive_int("chunk_size", chunk_size)
    if threads is not None:
        _checks.check_positive_int("threads", threads)
    if pad_to is not None:
        for w in np.atleast_1d(pad_to):
            _checks.check_positive_int("pad_to", int(w) if float(w).is_integer() else w)


def _run_groups(plans, sizes, keys, scheme, devices, threads, reporter) -> list:
    """Every group through its chunks of models; per group ``(loops, narrow)``: the final
    carries, stacked in the members' order, and each member's unpadded shapes (or None)."""
    spec0 = plans[0].run.spec
    ends = _progress.segment_ends(
        spec0.epochs, train.chunk_size(spec0.eval_every, spec0.epochs), reporter.shown
    )
    done, ran = 0, []
    for plan, size in zip(plans, sizes):
        finals, narrow = [], []
        for first in range(0, len(plan.members), size):
            # A chunk at a time, from its start (so chunk_size bounds the memory), padded to the
            # chunk size with copies of its first model, dropped after.
            sel = np.arange(first, min(first + size, len(plan.members)))
            padded = np.concatenate([sel, np.full(size - sel.size, sel[0])])
            hp = _take(plan.run.hp, padded)
            loops, chunk_narrow = _start(
                plan.run.spec, hp, [plan.models[j] for j in padded],
                keys[np.asarray(plan.members)[padded]], scheme, plan.run.data.X.dtype,
            )  # fmt: skip
            report = partial(lambda off, e: reporter.update(off + e), done)
            loops = _run_chunk(plan.run, hp, loops, ends, devices, threads, report, reporter.shown)
            done += spec0.epochs
            reporter.update(done)
            finals.append(_take(loops, np.arange(sel.size)))
            narrow.extend(chunk_narrow[: sel.size])
        ran.append((_concat(finals) if len(finals) > 1 else finals[0], narrow))
    return ran


def _result(plans, ran, models, optimizers, settings, n) -> "ManyResult":
    """The :class:`ManyResult` of the groups' final carries, in the models' order."""
    history = np.full((len(train.History._fields), n, settings["epochs"]), np.nan, np.float32)
    ended = np.full((3, n), -1, np.int64)
    narrow_all: list = [None] * n
    groups = []
    for plan, (loops, narrow) in zip(plans, ran):
        idx = np.asarray(plan.members)
        for f, h in enumerate(loops.history):
            history[f, idx] = _checks.host_value(h)
        for e, field in enumerate((loops.diverged_epoch, loops.best_epoch, loops.stopped_epoch)):
            ended[e, idx] = _checks.host_value(field)
        for j, i in enumerate(plan.members):
            narrow_all[i] = narrow[j]
        state = train.final_state(loops, plan.run.spec.patience)
        groups.append(ModelGroup(plan.run.spec.model, idx, state, optimizers[plan.members[0]]))
    diverged, best, stopped = ended
    return ManyResult(
        train.History(*history), tuple(groups), tuple(models), diverged, best, stopped,
        _records(settings, optimizers, n), tuple(narrow_all),
    )  # fmt: skip


def _records(settings: dict, optimizers, n: int) -> dict:
    """Each per-model hyperparameter's ``(n,)`` values as given (float64; the named optimizers'
    defaults where not given), and each model's optimizer's name."""
    values = {}
    for name in ("learning_rate", "lambd", "l1", "beta", "beta1", "beta2", "epsilon",
                 "decay_rate", "min_delta"):  # fmt: skip
        v = settings[name]
        if v is None:
            v = train.OPTIMIZER_DEFAULTS.get(name, 0.0)
        values[name] = train.per_model(name, 0.0 if callable(v) else v, n)
    return {"optimizer": np.array([_name(o) for o in optimizers], object), **values}


def _name(o) -> str:
    """A name for an optimizer in records: its own, a factory's or a partial's function's."""
    if isinstance(o, str):
        return o
    return getattr(o, "__name__", None) or getattr(getattr(o, "func", None), "__name__", None) or (
        type(o).__name__
    )


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


def _run_chunk(run: train.Run, hp, loops, ends, devices, threads, report, shown):
    """One chunk of models through the segments of epochs; on one CPU device, one part of the
    models per core, each run from its own thread."""
    n = loops.i.shape[0]
    n_threads = _cpu_threads(devices, n) if threads is None else min(threads, n)
    part = -(-n // n_threads)
    idx = np.arange(part * n_threads) % n  # equal parts (the last padded with repeats)
    parts = [_take((hp, loops), p) for p in np.split(idx, n_threads)]
    reached = [0] * n_threads
    lock = threading.Lock()
    settings = _settings_of_this_thread()

    def run_part(t):
        hp, loops = parts[t]
        data = run.data
        if len(devices) > 1:
            hp, loops = parallel.shard_models((hp, loops), devices)
            data = parallel.replicate(data, devices)
        for end in ends:
            loops = run_many(run.spec, hp, data, loops, jnp.int32(end))
            if shown:
                with lock:
                    reached[t] = end
                    report(min(reached))
                if _all_ended(loops):
                    break
        if jax.process_count() > 1:  # several hosts: every host gets every model's results
            loops = parallel.to_host(loops)
        return jax.block_until_ready(loops)

    def in_thread(t):
        with contextlib.ExitStack() as stack:
            settings(stack)
            return run_part(t)

    if n_threads == 1:
        results = [in_thread(0)]
    else:
        with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
            results = list(pool.map(in_thread, range(n_threads)))
    loops = _concat(results) if len(results) > 1 else results[0]
    return _take(loops, np.arange(n))
