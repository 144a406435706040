"""Training any model: one pure step, and a whole run compiled as one program.

The loop works for any model of the protocol of :mod:`fjdl.model` (``init(key)``, ``apply(params,
state, x, *, key, train)``): fjdl's :class:`~fjdl.model.MLP`, a network written as two functions
(:func:`fjdl.model.from_functions`), a flax or an equinox module. What the output means is a
:class:`fjdl.losses.Loss` (``loss="binary"``, ``"softmax"``, ``"mse"`` or a function); an MLP's
default comes from its config.

A run is ``lax.scan`` over epochs; inside each epoch, ``lax.scan`` over the full mini-batches and one
more step on the remainder batch (its own static shape, so it needs neither padding nor a second
compilation). Nothing returns to Python between steps: the whole of :func:`fit` is one call of one
compiled function, compiled once per configuration (or, when progress is shown, about 100 calls
of it, each continuing where the last stopped, reported from the host in between).

Hyperparameters that a person tunes (learning rate or a schedule's numbers, ``lambd``, ``l1``,
keep_probs, the optimizer's betas, epsilon and decay rate, ``min_delta``) are arrays in a
:class:`Hyperparams` or :class:`OptimizerHyperparams` tuple, not compile-time constants: changing them between calls, or batching them
with ``vmap``, reuses the compiled program.

Keys: the run's key lives in :class:`TrainState`. Epoch ``e`` shuffles with
``fold_in(fold_in(key, 0), e)``; step ``t`` drops out with ``fold_in(fold_in(key, 1), t)``. The same
key gives the same run, bit for bit.
"""

import dataclasses
import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, _progress, losses, optim, schedules
from fjdl import model as model_lib
from fjdl._types import Params, PRNGKey, State
from fjdl.model import MLP, Model

OptimizerFactory = Callable[[Any], Any]
"""``learning_rate (float, array or schedule) -> GradientTransformation``, e.g. ``fjdl.optim.adam``."""


class TrainState(NamedTuple):
    """Everything a run needs to continue: a checkpoint saves exactly this."""

    params: Params
    model_state: State
    opt_state: Any
    step: jax.Array  # int32: optimizer steps taken
    epoch: jax.Array  # int32: epochs completed (the count of per-epoch schedules)
    key: PRNGKey


class Hyperparams(NamedTuple):
    """Tunable hyperparameters, as arrays (scalars, or batched under ``vmap``)."""

    # A scalar array, or a schedule of :mod:`fjdl.schedules` (a pytree of arrays that is also a
    # function of the count): ``Any``, as no type names both.
    learning_rate: Any
    lambd: jax.Array
    l1: jax.Array
    keep_probs: jax.Array  # an MLP's (n_hidden,), ones where it has no dropout; (0,) for others
    unit_masks: Any = None  # an MLP's per-hidden-layer 0/1 masks of its units (shape search)


class History(NamedTuple):
    """Per-epoch records of a run (arrays of length ``epochs``, one row per epoch run).

    :func:`fit` returns NumPy arrays (copied to the host, cut to the epochs run); the compiled
    loop (:func:`run_epochs`) fills ``jax.Array`` buffers of length ``epochs``, NaN where not run.
    """

    cost: jax.Array | np.ndarray  # the training objective averaged over the epoch's examples
    train_accuracy: jax.Array | np.ndarray
    dev_cost: jax.Array | np.ndarray  # NaN without a dev set
    dev_accuracy: jax.Array | np.ndarray
    learning_rate: jax.Array | np.ndarray  # the rate used during the epoch


class TrainingDiverged(FloatingPointError):
    """A run produced NaN or Inf. ``state`` holds the last finite state, ``history`` the epochs run."""

    def __init__(self, message, state, history, epoch):
        super().__init__(message)
        self.state, self.history, self.epoch = state, history, epoch


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns: the final state, the history, and how the run ended."""

    state: TrainState
    history: History
    best_epoch: int | None  # with early stopping: the epoch whose parameters were restored
    stopped_epoch: int | None  # with early stopping: the epoch at which patience ran out


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "gd": optim.gd,
    "momentum": optim.momentum,
    "rmsprop": optim.rmsprop,
    "adam": optim.adam,
}
"""The optimizers :func:`fit` builds by name, each a factory of :mod:`fjdl.optim`."""


def make_hyperparams(
    config: Model, learning_rate, lambd=0.0, l1=0.0, keep_probs=None, dtype=jnp.float32
):
    """A :class:`Hyperparams` with validated values; ``keep_probs`` defaults to the config's.

    ``keep_probs`` is an MLP's (a model of another kind draws its own dropout masks, with the rates
    it was built with): for any other model it must be ``None``. ``learning_rate`` may also be a
    schedule of :mod:`fjdl.schedules` (its numbers become arrays of ``dtype``).
    """
    if schedules.is_numeric(learning_rate):
        # In at least float32, as the optimizers' numbers: a float16 step count overflows.
        rate = jax.tree.map(lambda a: jnp.asarray(a, optim.moment_dtype(dtype)), learning_rate)
    else:
        _checks.check_nonnegative("learning_rate", learning_rate)
        rate = jnp.asarray(learning_rate, dtype)
    _checks.check_nonnegative("lambd", lambd)
    _checks.check_nonnegative("l1", l1)
    if not isinstance(config, MLP):
        if keep_probs is not None:
            raise ValueError(
                "keep_probs applies to an fjdl.MLP only; a model of another kind applies its own "
                f"dropout (build it with the rate you want), got keep_probs={keep_probs!r} for "
                f"{type(config).__name__}"
            )
        return Hyperparams(
            rate,
            jnp.asarray(lambd, dtype),
            jnp.asarray(l1, dtype),
            jnp.zeros((0,), dtype),
        )
    n_hidden = config.n_layers - 1
    if keep_probs is None:
        keep_probs = config.keep_probs if config.keep_probs is not None else (1.0,) * n_hidden
    keep_probs = jnp.broadcast_to(jnp.asarray(keep_probs, dtype), (n_hidden,))
    _checks.check_keep_prob("keep_probs", keep_probs)
    return Hyperparams(
        rate,
        jnp.asarray(lambd, dtype),
        jnp.asarray(l1, dtype),
        keep_probs,
    )


class OptimizerHyperparams(NamedTuple):
    """The numeric hyperparameters of an optimizer fjdl builds by name, as arrays: a new value
    reuses the compiled program. ``decay_rate`` is that of the per-epoch inverse-time decay
    (:func:`fjdl.schedules.inverse_time_decay`), used when :func:`fit` is given one."""

    beta: jax.Array  # momentum / RMSprop
    beta1: jax.Array  # Adam
    beta2: jax.Array  # Adam
    epsilon: jax.Array  # RMSprop / Adam
    decay_rate: jax.Array


OPTIMIZER_DEFAULTS = {"beta": 0.9, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "decay_rate": 0.0}
"""The defaults of :class:`OptimizerHyperparams`: those of :mod:`fjdl.optim`'s factories."""


def make_optimizer_hyperparams(dtype=jnp.float32, **values) -> OptimizerHyperparams:
    """An :class:`OptimizerHyperparams` with validated values (``None`` or absent: the default)."""
    v = {
        k: (OPTIMIZER_DEFAULTS[k] if values.get(k) is None else values[k])
        for k in OPTIMIZER_DEFAULTS
    }
    for name in ("beta", "beta1", "beta2"):
        _checks.check_unit_interval(name, v[name])
    _checks.check_positive("epsilon", v["epsilon"])
    _checks.check_nonnegative("decay_rate", v["decay_rate"])
    return OptimizerHyperparams(**{k: jnp.asarray(x, dtype) for k, x in v.items()})


@dataclasses.dataclass(frozen=True)
class _Named:
    """An optimizer of :mod:`fjdl.optim` given by name: built inside the compiled loop from the
    arrays of an :class:`OptimizerHyperparams` (so new betas or epsilon do not recompile), or of
    any tuple with the same ``beta``, ``beta1``, ``beta2`` and ``epsilon`` fields (``train_many``'s
    per-model ones)."""

    name: str

    def __call__(self, learning_rate, opt_hp: OptimizerHyperparams | None = None):
        h = opt_hp if opt_hp is not None else make_optimizer_hyperparams()
        if self.name == "gd":
            return optim.gd(learning_rate)
        if self.name == "momentum":
            return optim.momentum(learning_rate, beta=h.beta)
        if self.name == "rmsprop":
            return optim.rmsprop(learning_rate, beta=h.beta, epsilon=h.epsilon)
        return optim.adam(learning_rate, beta1=h.beta1, beta2=h.beta2, epsilon=h.epsilon)


@dataclasses.dataclass(frozen=True)
class _InverseTimeDecay:
    """``fit(decay_rate=...)``: ``lr0 / (1 + decay_rate * floor(epoch / interval))``, with
    ``decay_rate`` an array of :class:`OptimizerHyperparams` and the interval static."""

    interval: int


def _resolve_optimizer(optimizer):
    """A factory ``learning_rate -> GradientTransformation`` from a name, a factory or an instance."""
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        return _Named(optimizer)
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        return _Fixed(optimizer)
    if callable(optimizer):
        return optimizer
    raise TypeError(
        "optimizer must be a name, a factory learning_rate -> GradientTransformation, or a "
        f"GradientTransformation; got {type(optimizer).__name__}"
    )


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A ready GradientTransformation (e.g. from optax): the learning rate is its own."""

    transformation: Any

    def __call__(self, learning_rate):
        del learning_rate
        return self.transformation


@dataclasses.dataclass(frozen=True)
class _PerStep:
    """A schedule of the optimizer's step count, ``count -> lr`` (fjdl's or optax's), given as
    ``learning_rate``: the optimizer is built with it as it is. ``None``: the schedule is one of
    :mod:`fjdl.schedules`, carried (as arrays) in :attr:`Hyperparams.learning_rate`."""

    schedule: Callable | None


@dataclasses.dataclass(frozen=True)
class _PerEpoch:
    """A schedule of the epoch, ``epoch -> lr``, given as ``schedule``: it replaces the learning
    rate rather than decaying it (the factory form ``lr0 -> (epoch -> lr)`` decays it)."""

    schedule: Callable | None

    def __call__(self, learning_rate):
        # None: the schedule is one of fjdl.schedules, carried in Hyperparams.learning_rate.
        return learning_rate if self.schedule is None else self.schedule


def _rate_plan(learning_rate, schedule):
    """``(learning_rate, schedule)`` as :func:`run_epochs` takes them: a number, and ``None``, a
    factory ``lr0 -> (epoch -> lr)``, a :class:`_PerEpoch` or a :class:`_PerStep` (static)."""
    if callable(learning_rate):
        if schedule is not None:
            raise ValueError(
                "learning_rate is already a schedule (of the step); schedule= (of the epoch) "
                "cannot decay it too: give one of them"
            )
        if schedules.is_numeric(learning_rate):  # its numbers travel as arrays: no recompiling
            return learning_rate, _PerStep(None)
        return 0.0, _PerStep(learning_rate)
    if schedule is None:
        return learning_rate, None
    if not callable(schedule):
        raise TypeError(
            f"schedule must be a function lr0 -> (epoch -> lr) or epoch -> lr, got {schedule!r}"
        )
    _checks.check_nonnegative("learning_rate", learning_rate)
    if schedules.is_numeric(schedule):  # a schedule of the epoch, its numbers as arrays
        return schedule, _PerEpoch(None)
    probe = schedule(jnp.asarray(learning_rate, jnp.float32))
    return learning_rate, (schedule if callable(probe) else _PerEpoch(schedule))


def _epoch_schedule(schedule, learning_rate):
    """The learning rate as a function of the epoch count (constant without a schedule)."""
    if schedule is None:
        return lambda epoch: learning_rate
    return schedule(learning_rate)


def init_state(
    key: PRNGKey,
    config: Model,
    optimizer="adam",
    learning_rate=0.01,
    *,
    scheme=None,
    params: Params | None = None,
    dtype=jnp.float32,
) -> TrainState:
    """A fresh :class:`TrainState`: the model's initial parameters (or the given ``params``), zero
    counts.

    ``key`` is split in two: one half initializes the parameters (``config.init``), the other
    becomes the run's key. For an :class:`~fjdl.model.MLP`, ``scheme`` chooses the initializer
    (default ``"he"``) and ``dtype`` the dtype of its arrays; any other model initializes itself,
    in its own dtypes, and takes no ``scheme``.
    """
    init_key, run_key = jax.random.split(key)
    if isinstance(config, MLP):
        fresh_params, model_state = model_lib.init(init_key, config, scheme or "he", dtype)
    else:
        if scheme is not None:
            raise ValueError(
                f"scheme applies to an fjdl.MLP only; {type(config).__name__} initializes its "
                f"parameters in its own init(key), got scheme={scheme!r}"
            )
        fresh_params, model_state = config.init(init_key)
        model_state = {} if model_state is None else model_state
    if params is not None:
        if isinstance(config, MLP):
            model_lib.check_params(config, params)
            params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
        else:
            optim.check_like("params", params, fresh_params, "the model's init")
            params = jax.tree.map(lambda a, f: jnp.asarray(a, f.dtype), params, fresh_params)
    else:
        params = fresh_params
    # Built with a schedule, as the compiled loop builds it: optax's states differ between a
    # number and a schedule (scale_by_schedule counts steps), fjdl's do not.
    if not callable(learning_rate):
        lr0 = jnp.asarray(learning_rate, dtype)
        learning_rate = lambda count: lr0  # noqa: E731
    opt = _resolve_optimizer(optimizer)(learning_rate)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(params, model_state, opt.init(params), zero, zero, run_key)


def _forward(config: Model, params, model_state, hp: Hyperparams, x, *, key=None, train=False):
    """The model's ``apply``; an MLP's keep_probs come from ``hp`` (arrays: no recompilation)."""
    if isinstance(config, MLP):
        keep = hp.keep_probs if train and config.keep_probs is not None else None
        return model_lib.apply(
            config,
            params,
            model_state,
            x,
            key=key,
            train=train,
            keep_probs=keep,
            unit_masks=hp.unit_masks,
        )
    return config.apply(params, model_state, x, key=key, train=train)


def default_loss(config: Model, loss=None) -> losses.Loss:
    """The :class:`fjdl.losses.Loss` of a run: ``loss`` if given, else the model's own ``loss``
    attribute (an MLP's comes from its ``output``)."""
    if loss is None:
        loss = getattr(config, "loss", None)
        if loss is None:
            raise TypeError(
                f"loss is needed for a {type(config).__name__}: pass loss='binary', 'softmax', "
                "'mse' or a function (out, y) -> scalar"
            )
    return losses.get(loss)


def _objective(config, loss, is_weight, params, model_state, hp, x, y, key):
    out, new_state = _forward(config, params, model_state, hp, x, key=key, train=True)
    j = losses.cost(out, y, params, output=loss, lambd=hp.lambd, l1=hp.l1, is_weight=is_weight)
    return j, new_state


def train_step(
    config: Model,
    opt,
    state: TrainState,
    hp: Hyperparams,
    x,
    y,
    *,
    loss=None,
    is_weight=losses.is_weight,
) -> tuple[TrainState, jax.Array]:
    """One optimizer step on one mini-batch: forward, cost, backprop, update.

    Args:
      config: the model (any model of the protocol, e.g. a :class:`fjdl.model.MLP`).
      opt: a ``GradientTransformation`` (fjdl's or optax's).
      state: the :class:`TrainState`.
      hp: :class:`Hyperparams` (``lambd``, ``l1`` and ``keep_probs`` are read here; the learning rate
        is the optimizer's).
      x, y: the mini-batch, ``(b, ...)`` and its labels.
      loss: the loss (see :func:`fjdl.losses.get`); default: the model's.
      is_weight: which parameters L2 and L1 act on (see :func:`fjdl.losses.is_weight`).

    Returns:
      ``(new_state, cost)``, the cost of this batch before the update.
    """
    loss = default_loss(config, loss)
    dropout_key = jax.random.fold_in(jax.random.fold_in(state.key, 1), state.step)
    (j, new_model_state), grads = jax.value_and_grad(_objective, argnums=3, has_aux=True)(
        config, loss, is_weight, state.params, state.model_state, hp, x, y, dropout_key
    )
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optim.apply_updates(state.params, updates)
    return state._replace(
        params=params, model_state=new_model_state, opt_state=opt_state, step=state.step + 1
    ), j


def _metrics(config, loss, is_weight, params, model_state, hp, X, Y):
    """Eval-mode cost (with the penalties) and metric (accuracy) over a whole set."""
    out, _ = _forward(config, params, model_state, hp, X)
    j = losses.cost(out, Y, params, output=loss, lambd=hp.lambd, l1=hp.l1, is_weight=is_weight)
    return j, _metric(loss, out, Y)


def _metric(loss: losses.Loss, out, Y):
    if loss.metric is None:
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.asarray(loss.metric(out, Y), jnp.float32)


def _accuracy(config: MLP, logits, Y):
    """An MLP's accuracy: the metric of its default loss."""
    return _metric(default_loss(config), logits, Y)


def _select(pred, new, old):
    """``new`` where ``pred`` else ``old``, leaf by leaf (PRNG keys, which never change, kept)."""

    def pick(n, o):
        if jax.dtypes.issubdtype(o.dtype, jax.dtypes.prng_key):
            return o
        return jnp.where(pred, n, o)

    return jax.tree.map(pick, new, old)


CHUNK_MAX = 100
"""The longest chunk of epochs that :func:`run_epochs` runs without per-epoch bookkeeping."""


def _chunk_size(eval_every: int, epochs: int) -> int:
    """The largest divisor of ``eval_every`` that is at most ``CHUNK_MAX`` and ``epochs``."""
    return max(d for d in range(1, min(eval_every, epochs, CHUNK_MAX) + 1) if eval_every % d == 0)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class Loop(NamedTuple):
    """The carry of the compiled loop over epochs (:func:`run_epochs`), from :func:`start_loop`:
    the state, what early stopping and the NaN guard keep, and the history so far."""

    state: TrainState
    previous: TrainState  # the state before the last epoch: the last finite one after a NaN
    best_params: Params
    best_model_state: State
    best_cost: jax.Array
    best_epoch: jax.Array
    bad_epochs: jax.Array
    stopped_epoch: jax.Array  # -1 while running
    diverged_epoch: jax.Array  # -1 while finite
    i: jax.Array  # epochs run in this call
    fast: jax.Array  # bool: still running whole chunks of epochs (see run_epochs)
    history: History  # (epochs,) buffers, NaN where not run


@partial(
    jax.jit,
    static_argnames=(
        "config",
        "loss",
        "is_weight",
        "optimizer",
        "schedule",
        "batch_size",
        "epochs",
        "patience",
        "eval_every",
    ),
)
def run_epochs(
    state: TrainState,
    hp: Hyperparams,
    X,
    Y,
    X_dev,
    Y_dev,
    min_delta,
    *,
    config: Model,
    loss: losses.Loss | None = None,
    is_weight=losses.is_weight,
    optimizer,
    schedule,
    batch_size: int,
    epochs: int,
    patience: int | None,
    eval_every: int = 1,
    opt_hp: OptimizerHyperparams | None = None,
    loop: "Loop | None" = None,
    until=None,
):
    """The compiled run: up to ``epochs`` epochs of mini-batch training from ``state``.

    ``opt_hp`` (arrays, not static) holds the betas, epsilon and decay rate of an optimizer given
    by name; ``None`` is their defaults.

    ``loop`` continues a run: the carry returned by an earlier call (or :func:`start_loop`), with
    ``until`` (an int32 array, not static) the number of epochs of this run to have done when the
    call returns. :func:`fit` runs a long run in segments this way to report progress between
    them from the host, with no callback inside the compiled program; every segment reuses one
    compiled program. ``None``: a fresh loop from ``state``, run to ``epochs``.

    Static: the model (``config``), the loss (default: the model's), the weight predicate, the
    optimizer factory, the schedule factory, the batch size, the number of epochs (the length of
    the history), the patience and the evaluation interval. Everything else is an array: calling
    again with new hyperparameters, data of the same shape or a later state reuses the compiled
    program. Under ``jax.vmap`` over ``state``, ``hp``, ``min_delta`` and ``opt_hp`` (with ``X``,
    ``Y`` and ``until`` shared), it trains many models at once: :func:`fjdl.tune.train_many`.

    The epochs run in a ``lax.while_loop`` that ends early when the cost or the parameters stop
    being finite, or when early stopping's patience runs out. Keeping the state before each epoch
    in the carry costs nothing measurable and makes the last finite state available after a NaN.
    When ``eval_every > 1``, whole chunks of epochs (the largest divisor of ``eval_every`` up to
    :data:`CHUNK_MAX`) run first as one ``lax.scan`` each, with the finiteness test, the history
    write and the evaluation once per chunk; a chunk that produced a NaN or an Inf is rerun by the
    per-epoch loop, which also runs the epochs after the last whole chunk. The results are those of
    the per-epoch loop (to float rounding; bit for bit run to run).

    Returns ``(loop, history)``: the final :class:`Loop` carry (``loop.state`` is the last finite
    state) and the per-epoch :class:`History` (NaN for epochs not run).
    """
    m = X.shape[0]
    loss = default_loss(config, loss)
    n_full, remainder = divmod(m, batch_size)
    steps_per_epoch = n_full + (remainder > 0)

    def build(learning_rate):
        return (
            optimizer(learning_rate, opt_hp)
            if isinstance(optimizer, _Named)
            else optimizer(learning_rate)
        )

    if isinstance(schedule, _PerStep):  # a schedule of the step: the optimizer runs it
        step_schedule = hp.learning_rate if schedule.schedule is None else schedule.schedule
        opt = build(step_schedule)
        lr_of_epoch = lambda epoch: step_schedule(epoch * steps_per_epoch)  # noqa: E731
    else:
        # The optimizer counts steps; the schedule counts epochs: a step count maps to its epoch.
        if isinstance(schedule, _InverseTimeDecay):
            decay_rate = (opt_hp or make_optimizer_hyperparams()).decay_rate
            lr_of_epoch = schedules.inverse_time_decay(
                hp.learning_rate, decay_rate, schedule.interval
            )
        else:
            lr_of_epoch = _epoch_schedule(schedule, hp.learning_rate)
        opt = build(lambda count: lr_of_epoch(count // steps_per_epoch))
    if isinstance(optimizer, _Fixed):  # a ready transformation keeps its own rate, unknown here
        lr_of_epoch = lambda epoch: jnp.asarray(jnp.nan, jnp.float32)  # noqa: E731
    has_dev = X_dev is not None

    narrow_mlp = isinstance(config, MLP) and max(config.sizes) <= model_lib.NARROW_WIDTH
    if n_full == 1 and not remainder and narrow_mlp:
        # model_lib.apply runs narrow networks with examples along the last axis and transposes its
        # input. Transposed once here, outside the loop, the transpose in apply cancels against
        # this one and no step transposes the data again: 1.2x for the course's full-batch runs
        # (bench/, case B). The barrier keeps XLA from cancelling the two before the loop.
        X_T = jax.lax.optimization_barrier(X.T)
        X_full = lambda: X_T.T  # noqa: E731
    else:
        X_full = lambda: X  # noqa: E731

    def step(state: TrainState, x, y):
        return train_step(config, opt, state, hp, x, y, loss=loss, is_weight=is_weight)

    def run_one_epoch(state: TrainState):
        epoch = state.epoch
        if n_full == 1 and not remainder:
            # Full batch: the data in order, no gather. (Shuffling would change only rounding.)
            new_state, cost = step(state, X_full(), Y)
        else:
            shuffle_key = jax.random.fold_in(jax.random.fold_in(state.key, 0), epoch)
            perm = jax.random.permutation(shuffle_key, m)
            full = perm[: n_full * batch_size].reshape(n_full, batch_size)

            def batch_step(s, idx):
                return step(s, X[idx], Y[idx])

            new_state, costs = jax.lax.scan(batch_step, state, full)
            # The epoch's cost: the mean over its examples (each batch weighted by its size).
            cost = jnp.sum(costs) * batch_size
            if remainder:
                idx = perm[n_full * batch_size :]
                new_state, j = step(new_state, X[idx], Y[idx])
                cost = cost + j * remainder
            cost = cost / m
        return new_state._replace(epoch=epoch + 1), cost

    def metrics(new_state, cost):
        ms = (config, loss, is_weight, new_state.params, new_state.model_state, hp)
        _, train_acc = _metrics(*ms, X, Y)
        if has_dev:
            dev_cost, dev_acc = _metrics(*ms, X_dev, Y_dev)
        else:
            dev_cost = dev_acc = jnp.asarray(jnp.nan, cost.dtype)
        return jnp.stack([train_acc.astype(cost.dtype), dev_cost, dev_acc.astype(cost.dtype)])

    def early_stopping(loop: Loop, new_state, epoch, finite, evaluate_now, dev_cost) -> Loop:
        """``loop`` with its best-so-far and patience fields updated after an epoch (unchanged
        without patience)."""
        best_params, best_ms = loop.best_params, loop.best_model_state
        best_cost, best_epoch = loop.best_cost, loop.best_epoch
        bad, stopped = loop.bad_epochs, loop.stopped_epoch
        if patience is not None:
            improved = finite & evaluate_now & (dev_cost < best_cost - min_delta)
            best_params = _select(improved, new_state.params, best_params)
            best_ms = _select(improved, new_state.model_state, best_ms)
            best_cost = jnp.where(improved, dev_cost, best_cost)
            best_epoch = jnp.where(improved, epoch, best_epoch)
            bad = jnp.where(improved, 0, jnp.where(evaluate_now, bad + 1, bad))
            stopped = jnp.where(finite & (bad >= patience), epoch, stopped)
        return loop._replace(
            best_params=best_params,
            best_model_state=best_ms,
            best_cost=best_cost,
            best_epoch=best_epoch,
            bad_epochs=bad,
            stopped_epoch=stopped,
        )

    def evaluate(new_state, cost, evaluate_now, always: bool):
        if always:
            return metrics(new_state, cost)
        nan3 = jnp.full((3,), jnp.nan, cost.dtype)
        return jax.lax.cond(evaluate_now, metrics, lambda *_: nan3, new_state, cost)

    def body(loop: Loop) -> Loop:
        state, i = loop.state, loop.i
        epoch = state.epoch
        new_state, cost = run_one_epoch(state)
        evaluate_now = (i + 1) % eval_every == 0
        train_acc, dev_cost, dev_acc = evaluate(new_state, cost, evaluate_now, eval_every == 1)
        finite = jnp.isfinite(cost) & _all_finite(new_state.params)
        diverged_epoch = jnp.where(finite, loop.diverged_epoch, epoch)
        kept = early_stopping(loop, new_state, epoch, finite, evaluate_now, dev_cost)
        row = (cost, train_acc, dev_cost, dev_acc, lr_of_epoch(epoch))
        history = History(
            *(
                jnp.asarray(h).at[i].set(jnp.where(finite, v, jnp.nan).astype(h.dtype))
                for h, v in zip(loop.history, row)  # jax arrays here (see History)
            )
        )
        return kept._replace(
            state=new_state, previous=state, diverged_epoch=diverged_epoch, i=i + 1, history=history
        )

    # Fast path: chunks of ``chunk`` epochs, each one ``lax.scan`` with no per-epoch bookkeeping
    # (no finiteness test, no history write, no metrics branch). A course-size full-batch run is
    # one tiny step per epoch, and that bookkeeping cost as much as the step itself (bench/, case
    # B). Evaluations fall on chunk ends (``chunk`` divides ``eval_every``). A chunk that produced
    # a NaN or an Inf is discarded and the per-epoch loop below reruns it from its start, exactly
    # as without chunks: it finds the epoch that diverged and keeps the last finite state.
    chunk = _chunk_size(eval_every, epochs)

    def chunk_body(loop: Loop) -> Loop:
        state, i = loop.state, loop.i

        def one_epoch(s, _):
            lr = lr_of_epoch(s.epoch)
            new_s, cost = run_one_epoch(s)
            return new_s, (cost, lr)

        new_state, (costs, lrs) = jax.lax.scan(one_epoch, state, None, length=chunk)
        cost = costs[-1]
        epoch = new_state.epoch - 1
        finite = jnp.all(jnp.isfinite(costs)) & _all_finite(new_state.params)
        evaluate_now = (i + chunk) % eval_every == 0
        train_acc, dev_cost, dev_acc = evaluate(new_state, cost, evaluate_now, chunk == eval_every)
        kept = early_stopping(loop, new_state, epoch, finite, evaluate_now, dev_cost)
        nan = jnp.full((chunk - 1,), jnp.nan, jnp.float32)
        rows = (
            costs,
            jnp.append(nan, train_acc.astype(jnp.float32)),
            jnp.append(nan, dev_cost.astype(jnp.float32)),
            jnp.append(nan, dev_acc.astype(jnp.float32)),
            lrs,
        )
        history = History(
            *(
                jax.lax.dynamic_update_slice(h, v.astype(h.dtype), (i,))
                for h, v in zip(loop.history, rows)
            )
        )
        advanced = kept._replace(state=new_state, previous=state, i=i + chunk, history=history)
        # Not finite: leave everything as it was and hand the chunk over to the per-epoch loop.
        stay = loop._replace(fast=jnp.zeros((), bool))
        return _select(finite, advanced, stay)

    end = jnp.asarray(epochs if until is None else until, jnp.int32)

    def chunk_running(loop: Loop):
        return (
            loop.fast
            & (loop.i + chunk <= end)
            & (loop.stopped_epoch < 0)
            & (loop.diverged_epoch < 0)
        )

    def running(loop: Loop):
        return (loop.i < end) & (loop.stopped_epoch < 0) & (loop.diverged_epoch < 0)

    if loop is None:
        loop = start_loop(state, epochs, X.dtype)
    else:  # continuing: the state to run from is the loop's
        loop = loop._replace(state=state)
    if chunk > 1:
        loop = jax.lax.while_loop(chunk_running, chunk_body, loop)
    # The per-epoch loop: the epochs left after the last whole chunk, or the chunk that diverged.
    loop = jax.lax.while_loop(running, body, loop)
    # After a NaN the loop ends at once: the state before that epoch is the last finite one.
    loop = loop._replace(state=last_finite_state(loop))
    return loop, loop.history


def start_loop(state: TrainState, epochs: int, dtype=jnp.float32) -> Loop:
    """The carry of :func:`run_epochs` before a run of ``epochs`` epochs from ``state``."""
    minus_one = jnp.asarray(-1, jnp.int32)
    return Loop(
        state=state,
        previous=state,
        best_params=state.params,
        best_model_state=state.model_state,
        best_cost=jnp.asarray(jnp.inf, dtype),
        best_epoch=minus_one,
        bad_epochs=jnp.zeros((), jnp.int32),
        stopped_epoch=minus_one,
        diverged_epoch=minus_one,
        i=jnp.zeros((), jnp.int32),
        fast=jnp.ones((), bool),
        history=History(*(jnp.full((epochs,), jnp.nan, jnp.float32) for _ in History._fields)),
    )


def last_finite_state(loop: Loop) -> TrainState:
    """The state a run ends with: after a NaN (the loop stops at once) the state before that
    epoch, the last finite one; else the loop's."""
    return _select(loop.diverged_epoch >= 0, loop.previous, loop.state)


def _as_inputs(name: str, X) -> jax.Array:
    """``X`` as a float array of shape ``(m, ...)``: integers and bools become the default float."""
    X = jnp.asarray(X)
    if jnp.issubdtype(X.dtype, jnp.complexfloating):
        raise TypeError(f"{name} X must be real, got dtype {X.dtype}")
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    if X.ndim == 0:
        raise ValueError(f"{name} X must have shape (m, ...) (examples first), got a scalar")
    if X.shape[0] == 0:
        raise ValueError(f"{name} set is empty: X has 0 examples")
    _checks.check_all_finite(f"{name} X", X)
    return X


def _output_shape(config: Model, name: str, X, params, model_state) -> tuple:
    """The shape of the model's output on ``X``, found without compiling (``jax.eval_shape``)."""
    if isinstance(config, MLP):
        if X.ndim != 2 or X.shape[1] != config.sizes[0]:
            raise ValueError(f"{name} X must have shape (m, {config.sizes[0]}), got {X.shape}")
        n_out = config.sizes[-1]
        single = config.output != "softmax" and n_out == 1
        return (X.shape[0],) if single else (X.shape[0], n_out)
    try:
        out, _ = jax.eval_shape(
            lambda p, s, x: config.apply(p, s, x, train=False), params, model_state, X
        )
    except Exception as e:  # the model's own error, whatever it is, told in one line
        raise ValueError(
            f"{name} X of shape {X.shape} and dtype {X.dtype} does not fit the "
            f"{type(config).__name__}: its apply raised {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return tuple(out.shape)


def _check_labels(loss: losses.Loss, name: str, X, Y, out_shape):
    """``Y`` checked against the loss (``loss.labels``) and converted for it."""
    m = X.shape[0]
    Y = jnp.asarray(Y)
    if Y.shape[:1] != (m,):
        raise ValueError(f"{name} Y must have {m} labels (one per example), got shape {Y.shape}")
    if loss.labels == "binary":
        if Y.ndim == 2 and Y.shape[1] == 1:
            Y = Y[:, 0]
        _checks.check_shape(f"{name} Y", Y, (m,))
        y = _checks.host_value(Y)
        if not np.all((y == 0) | (y == 1)):
            found = np.unique(y[(y != 0) & (y != 1)])[:5]
            raise ValueError(
                f"{name} Y must hold binary labels in {{0, 1}}, got other values such as "
                f"{found.tolist()}"
            )
        return Y.astype(X.dtype)
    if loss.labels == "classes":
        n_classes = out_shape[-1] if len(out_shape) >= 2 else None
        if Y.ndim == 2 and n_classes is not None and Y.shape[1] == n_classes:
            y = _checks.host_value(Y)
            if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
                raise ValueError(
                    f"{name} Y of shape {Y.shape} must be one-hot: one 1 per row, 0 elsewhere"
                )
            Y = jnp.argmax(Y, axis=1)
        _checks.check_shape(f"{name} Y", Y, (m,))
        y = _checks.host_value(Y)
        if not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
            raise ValueError(f"{name} Y must hold integer class labels")
        if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(
                f"{name} Y must hold class labels in [0, {n_classes}), got {y.min()} to {y.max()}"
            )
        return Y.astype(jnp.int32)
    if loss is losses.LOSSES["mse"] or not jnp.issubdtype(Y.dtype, jnp.floating):
        return Y.astype(X.dtype)
    return Y


def _check_data(config: Model, name: str, X, Y, *, loss=None, params=None, model_state=None):
    """``(X, Y)`` checked against the model and the loss, before anything compiles.

    For a model other than an MLP the output's shape comes from ``jax.eval_shape`` of its
    ``apply`` on ``(params, model_state)``, which are then needed.
    """
    loss = default_loss(config, loss)
    X = _as_inputs(name, X)
    out_shape = _output_shape(config, name, X, params, model_state)
    return X, _check_labels(loss, name, X, Y, out_shape)


def fit(
    model: Model,
    X,
    Y,
    *,
    key: PRNGKey,
    loss=None,
    optimizer="adam",
    learning_rate=0.001,
    epochs: int = 100,
    batch_size: int | None = None,
    lambd=0.0,
    l1=0.0,
    keep_probs=None,
    schedule=None,
    dev=None,
    patience: int | None = None,
    min_delta: float = 0.0,
    scheme=None,
    params: Params | None = None,
    state: TrainState | None = None,
    progress: bool | Callable[[int], None] | None = None,
    on_divergence: str = "raise",
    eval_every: int = 1,
    is_weight=losses.is_weight,
    beta=None,
    beta1=None,
    beta2=None,
    epsilon=None,
    decay_rate=None,
    decay_interval: int = 1,
) -> FitResult:
    """Train ``model`` on ``(X, Y)``: one compiled run of ``epochs`` epochs of mini-batch training.

    Args:
      model: any model of the protocol (:mod:`fjdl.model`): an :class:`fjdl.model.MLP`, or one
        from :func:`~fjdl.model.from_functions`, :func:`~fjdl.model.from_flax`,
        :func:`~fjdl.model.from_equinox`. Static: a new model compiles a new program.
      X, Y: training data, ``X`` of shape ``(m, ...)`` (``(m, n_x)`` for an MLP, ``(m, H, W, C)``
        for images; integer inputs become floats) and labels as the loss expects: 0/1 for
        ``"binary"``, class indices ``(m,)`` or one-hot ``(m, C)`` for ``"softmax"``.
      key: the PRNG key of the run: initialization, shuffling and dropout all derive from it. An
        int is taken as a seed, ``jax.random.key(key)``. (Unused when ``state`` is given: the
        state carries its run's key.)
      loss: what the output means (see :func:`fjdl.losses.get`): ``"binary"``, ``"softmax"``,
        ``"mse"``, a function ``(out, y) -> scalar`` or a :class:`fjdl.losses.Loss` (with a
        metric, recorded as the accuracy). Default: the model's ``loss`` attribute; an MLP's comes
        from its ``output``. Other models need it.
      optimizer: ``"gd"``, ``"momentum"``, ``"rmsprop"``, ``"adam"``, a factory
        ``learning_rate -> GradientTransformation`` (e.g. ``partial(fjdl.optim.momentum, beta=0.95)``),
        or a ready ``GradientTransformation`` such as ``optax.adam(1e-3)`` (which keeps its own rate).
      learning_rate: the (initial) learning rate ``alpha``, or a schedule of the optimizer's step
        count, ``count -> lr`` (fjdl's :mod:`fjdl.schedules` or optax's), which the optimizer runs
        as it is (then ``schedule`` must be ``None``). ``history.learning_rate`` records the rate
        of each epoch's first step; with a ready ``GradientTransformation``, which keeps its own
        rate unknown to fjdl, it records NaN.
      epochs: number of passes over the data (> 0).
      batch_size: mini-batch size; ``None`` for full-batch gradient descent. The last batch holds the
        remainder.
      lambd: L2 strength; l1: L1 strength (both in the cost, see :func:`fjdl.losses.cost`), on the
        leaves that ``is_weight`` selects.
      keep_probs: an MLP's dropout keep probability per hidden layer (overrides the config's
        values; an MLP built without dropout gets it). Other models apply their own dropout.
      schedule: per-epoch decay, a function ``lr0 -> (epoch -> lr)`` that decays
        ``learning_rate``, e.g.
        ``lambda lr0: fjdl.schedules.inverse_time_decay(lr0, 1.0, time_interval=1000)`` (a new
        function is a new program: for the course's decay prefer ``decay_rate=``, an array); or a
        schedule of the epoch itself, ``epoch -> lr`` (e.g. ``optax.exponential_decay(0.1, 10,
        0.5)``, counting epochs), which replaces ``learning_rate``. (Told apart by calling it once
        with ``learning_rate``: a factory returns a function.)
      dev: optional ``(X_dev, Y_dev)``: its cost and accuracy are recorded every epoch.
      patience: early stopping: stop after this many epochs without the dev cost improving by more
        than ``min_delta``, and restore the parameters of the best epoch. Needs ``dev``.
      scheme: an MLP's weight initialization scheme (see :mod:`fjdl.initializers`; default
        ``"he"``). Other models initialize themselves.
      params: start from these parameters (e.g. to reproduce a published run) instead of ``scheme``.
      state: continue from this :class:`TrainState` (its optimizer state, step, epoch and key).
      progress: ``True`` shows a progress bar (tqdm), ``False`` nothing, a function
        ``f(epochs_done)`` is called instead; default: a bar only when stderr is a terminal. The
        run is then cut into about 100 segments of one compiled program, reported from the host
        between them (nothing calls back from inside the program): the results are the same.
        Under ``jax.distributed`` the default is ``False``, and every process must pass the same
        value (the processes run the same segments).
      on_divergence: ``"raise"`` (default) raises :class:`TrainingDiverged` carrying the last finite
        state; ``"stop"`` returns it.
      eval_every: compute the eval-mode train accuracy and the dev metrics every this many epochs
        (NaN in the history in between; the training cost is recorded every epoch regardless). With
        early stopping, patience counts evaluations. Larger values also make long runs of tiny
        epochs faster: the epochs between evaluations run as one compiled chunk (2.5x for the
        course's full-batch 10,000-epoch runs, see ``bench/``). A value beyond ``epochs`` never
        evaluates.
      is_weight: which parameters L2 and L1 act on, ``(key path, leaf) -> bool``; default
        :func:`fjdl.losses.is_weight` (leaves with ``ndim >= 2``: kernels, not biases or batch
        norm's scale and shift). Static.
      beta, beta1, beta2, epsilon: the hyperparameters of an optimizer given by name (``beta`` of
        momentum and RMSprop, ``beta1``, ``beta2`` of Adam, ``epsilon`` of RMSprop and Adam);
        ``None`` keeps :mod:`fjdl.optim`'s defaults (0.9, 0.9, 0.999, 1e-8).
      decay_rate: per-epoch inverse-time decay of ``learning_rate``,
        ``lr0 / (1 + decay_rate * floor(epoch / decay_interval))`` (the course's), as an array;
        ``None`` for none. Not with ``schedule``.
      decay_interval: epochs per decay step (static).

    What is compiled in, and what is not: every numeric hyperparameter (``learning_rate``,
    ``lambd``, ``l1``, keep_probs, ``min_delta``, ``beta``, ``beta1``, ``beta2``, ``epsilon``,
    ``decay_rate``), the key and the data are arrays, so a second call with new values of the same
    shapes reuses the compiled program. Static, because they change the program's shape: the model
    and the loss, the optimizer's kind (a name, or the factory or transformation object), a
    schedule function, ``batch_size``, ``epochs``, ``patience``, ``eval_every``,
    ``decay_interval``, whether there is a dev set or a decay, and ``is_weight``.

    Returns:
      A :class:`FitResult` with the final (or best, with early stopping) state and the history.

    Raises:
      TrainingDiverged: the cost or the parameters became NaN or Inf; the error names the epoch and
        holds ``state`` (the last finite one) and ``history``.
    """
    config = model
    model_lib.check_model(config)
    if state is None:
        key = _checks.check_key("key", key)
    if isinstance(config, MLP) and keep_probs is not None and config.keep_probs is None:
        # Dropout in, its rates from keep_probs.
        config = dataclasses.replace(config, keep_probs=(1.0,) * (config.n_layers - 1))
    loss = default_loss(config, loss)
    if not callable(is_weight):
        raise TypeError(f"is_weight must be a function (key path, leaf) -> bool, got {is_weight!r}")
    if dev is not None and (not isinstance(dev, tuple | list) or len(dev) != 2):
        raise ValueError(
            f"dev must be a pair (X_dev, Y_dev), got {type(dev).__name__} of length "
            f"{len(dev) if isinstance(dev, tuple | list) else '?'}"
        )
    learning_rate_given = learning_rate
    learning_rate, schedule = _rate_plan(learning_rate, schedule)
    named = dict(beta=beta, beta1=beta1, beta2=beta2, epsilon=epsilon)
    if not isinstance(optimizer, str) and any(v is not None for v in named.values()):
        given = sorted(k for k, v in named.items() if v is not None)
        raise ValueError(
            f"{', '.join(given)} apply to an optimizer given by name ('momentum', 'rmsprop', "
            "'adam'); a factory or a transformation carries its own"
        )
    _checks.check_positive_int("decay_interval", decay_interval)
    if decay_rate is not None and schedule is not None:
        raise ValueError("decay_rate and a schedule both decay the learning rate: give one")
    X = _as_inputs("training", X)
    m = X.shape[0]
    _checks.check_positive_int("epochs", epochs)
    if batch_size is None:
        batch_size = m
    _checks.check_positive_int("batch_size", batch_size)
    batch_size = min(batch_size, m)
    if patience is not None:
        _checks.check_positive_int("patience", patience)
        if dev is None:
            raise ValueError("early stopping (patience) needs a dev set: pass dev=(X_dev, Y_dev)")
    _checks.check_nonnegative("min_delta", min_delta)
    _checks.check_positive_int("eval_every", eval_every)
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
    factory = _resolve_optimizer(optimizer)
    if isinstance(factory, _Fixed):
        if schedule is not None or decay_rate is not None:
            raise ValueError(
                "a schedule or decay_rate needs an optimizer fjdl builds (a name or a factory), "
                "not a ready GradientTransformation, which keeps its own learning rate"
            )
    elif schedule is None:
        # No schedule is the inverse-time decay at rate 0 (alpha0 / 1, exactly alpha0): decay on
        # and off, and every decay rate, share one compiled program.
        schedule = _InverseTimeDecay(decay_interval)
    hp = make_hyperparams(config, learning_rate, lambd, l1, keep_probs, X.dtype)
    # Stored in at least float32 (1e-8 is 0 in float16); the optimizer casts each to the dtype of
    # the parameter it updates.
    opt_dtype = X.dtype if jnp.finfo(X.dtype).bits >= 32 else jnp.float32
    opt_hp = make_optimizer_hyperparams(opt_dtype, decay_rate=decay_rate, **named)
    if params is not None:
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            _checks.check_all_finite(f"params{jax.tree_util.keystr(path)}", leaf)
    if state is None:
        state = init_state(
            key, config, factory, learning_rate, scheme=scheme, params=params, dtype=X.dtype
        )
    elif not isinstance(state, TrainState):
        raise TypeError(f"state must be an fjdl.train.TrainState, got {type(state).__name__}")
    where = dict(loss=loss, params=state.params, model_state=state.model_state)
    X, Y = _check_data(config, "training", X, Y, **where)
    X_dev, Y_dev = _check_data(config, "dev", *dev, **where) if dev is not None else (None, None)
    if progress is None:  # several processes must cut the run into the same segments
        progress = sys.stderr.isatty() and jax.process_count() == 1
    reporter = _progress.Reporter(progress, epochs)
    loop = start_loop(state, epochs, X.dtype)
    static = dict(
        config=config,
        loss=loss,
        is_weight=is_weight,
        optimizer=factory,
        schedule=schedule,
        batch_size=batch_size,
        epochs=epochs,
        patience=patience,
        eval_every=eval_every,
    )
    arrays = (hp, X, Y, X_dev, Y_dev, jnp.asarray(min_delta, X.dtype))
    try:
        for end in _progress.segment_ends(epochs, _chunk_size(eval_every, epochs), reporter.shown):
            loop, history = run_epochs(
                loop.state, *arrays, **static, opt_hp=opt_hp, loop=loop, until=jnp.int32(end)
            )
            if reporter.shown:
                done, cost = int(loop.i), float(history.cost[max(int(loop.i) - 1, 0)])
                reporter.update(done, cost=cost)
                if done < end:  # stopped early or diverged
                    break
        jax.block_until_ready(loop)
    finally:
        reporter.close()
    return _finish(
        loop, history, patience, on_divergence, _divergence_cause(X.dtype, learning_rate_given)
    )


def _divergence_cause(dtype, learning_rate) -> str:
    """The likely cause of a NaN or an Inf, for the message of :class:`TrainingDiverged`.

    The inputs are checked to be finite before the run, so what is left is the arithmetic: the
    range of a half-precision dtype, or a step too large for the loss.
    """
    dtype = jnp.dtype(dtype)
    if dtype.itemsize <= 2:
        big = float(jnp.finfo(dtype).max)
        return (
            f"the data is {dtype.name}, whose values overflow beyond {big:.4g}: train in float32 "
            "(X.astype(jnp.float32)) or with a smaller learning rate"
        )
    if callable(learning_rate):
        return "the learning-rate schedule is probably too large at some step: try smaller rates"
    lr = np.asarray(learning_rate, np.float64)
    shown = f"{lr.item():.3g}" if lr.size == 1 else np.array2string(lr, precision=3)
    return f"the learning rate ({shown}) is probably too large: try a smaller one"


def _finish(loop: Loop, history: History, patience, on_divergence, cause: str) -> FitResult:
    diverged = int(loop.diverged_epoch)
    stopped = int(loop.stopped_epoch)
    # Epochs run in this call; the one that produced a NaN is not counted.
    n_run = int(loop.i) - (diverged >= 0)
    history = History(*(_checks.host_value(h)[:n_run] for h in history))
    state = loop.state
    best_epoch = None
    if patience is not None and int(loop.best_epoch) >= 0:
        best_epoch = int(loop.best_epoch)
        state = state._replace(params=loop.best_params, model_state=loop.best_model_state)
    if diverged >= 0 and on_divergence == "raise":
        kept = f"that of epoch {diverged - 1}" if diverged > 0 else "the state it started from"
        raise TrainingDiverged(
            f"training diverged at epoch {diverged}: the cost or the parameters became NaN or Inf; "
            f"{cause}. The error's .state holds the last finite state, {kept}",
            state,
            history,
            diverged,
        )
    return FitResult(state, history, best_epoch, stopped if stopped >= 0 else None)


def evaluate(
    model: Model,
    params: Params,
    model_state: State,
    X,
    Y,
    *,
    loss=None,
    lambd=0.0,
    l1=0.0,
    is_weight=losses.is_weight,
) -> dict:
    """Eval-mode cost (with the given penalties) and accuracy on ``(X, Y)``, as Python floats.

    ``loss`` as for :func:`fit` (default: the model's); the accuracy is the loss's metric (NaN
    when it has none, as for ``"mse"``).
    """
    model_lib.check_model(model)
    loss = default_loss(model, loss)
    X, Y = _check_data(model, "evaluation", X, Y, loss=loss, params=params, model_state=model_state)
    hp = make_hyperparams(model, 0.0, lambd, l1, dtype=X.dtype)
    j, acc = jax.jit(_metrics, static_argnums=(0, 1, 2))(
        model, loss, is_weight, params, model_state, hp, X, Y
    )
    return {"cost": float(j), "accuracy": float(acc), "error": 1.0 - float(acc)}


def predict(model: Model, params: Params, model_state: State, X, *, loss=None) -> jax.Array:
    """Eval-mode predictions, as the loss makes them: 0/1 for ``"binary"`` (``out > 0``), the
    argmax class for ``"softmax"``, the output itself for ``"mse"``."""
    model_lib.check_model(model)
    loss = default_loss(model, loss)
    out, _ = model.apply(params, model_state, _as_inputs("prediction", X))
    return loss.predict(out)


def n_steps_per_epoch(m: int, batch_size: int | None) -> int:
    """Number of optimizer steps in one epoch: ``ceil(m / batch_size)``."""
    return 1 if batch_size is None else math.ceil(m / min(batch_size, m))
