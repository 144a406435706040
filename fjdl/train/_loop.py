"""The one compiled training loop, in small pure pieces.

A run is a :class:`Loop` carry advanced epoch by epoch:

- :func:`train_step`: one optimizer step on one mini-batch;
- :func:`run_epoch`: one pass over the data (``lax.scan`` over the full mini-batches, one more
  step on the remainder batch, its own static shape);
- :func:`evaluation`: eval-mode train accuracy, dev cost and dev accuracy;
- :func:`early_stopping`: the best-so-far and the patience (Keras's ``EarlyStopping`` with
  ``restore_best_weights``);
- :func:`advance`: ``n`` epochs as one ``lax.scan``, then the NaN guard, the evaluation, early
  stopping and the history write once;
- :func:`run_epochs`: the compiled program: whole chunks of epochs through :func:`advance` while
  they stay finite (the fast path), then one epoch at a time (the epochs left, or the chunk that
  diverged, rerun to find the epoch and keep the last finite state).

Everything is a function of ``(spec, hp, data, loop)``: :class:`~fjdl.train.RunSpec` static, the
rest arrays. ``jax.vmap`` of :func:`run_epochs` over ``hp`` and ``loop`` trains many models at
once.

Keys: the run's key lives in :class:`TrainState`. Epoch ``e`` shuffles with
``fold_in(fold_in(key, 0), e)``; step ``t`` drops out with ``fold_in(fold_in(key, 1), t)``. The same
key gives the same run, bit for bit.
"""

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import losses, optim
from fjdl import model as model_lib
from fjdl._types import Params, PRNGKey, State
from fjdl.model import MLP, Model

from . import _rates
from ._spec import Data, Hyperparams, RunSpec, default_loss


class TrainState(NamedTuple):
    """Everything a run needs to continue: a checkpoint saves exactly this."""

    params: Params
    model_state: State
    opt_state: Any
    step: jax.Array  # int32: optimizer steps taken
    epoch: jax.Array  # int32: epochs completed (the count of per-epoch schedules)
    key: PRNGKey


class History(NamedTuple):
    """Per-epoch records of a run (arrays of length ``epochs``, one row per epoch run).

    :func:`fjdl.train.fit` returns NumPy arrays (copied to the host, cut to the epochs run); the
    compiled loop fills ``jax.Array`` buffers of length ``epochs``, NaN where not run.
    """

    cost: jax.Array | np.ndarray  # the training objective averaged over the epoch's examples
    train_accuracy: jax.Array | np.ndarray
    dev_cost: jax.Array | np.ndarray  # NaN without a dev set
    dev_accuracy: jax.Array | np.ndarray
    learning_rate: jax.Array | np.ndarray  # the rate used during the epoch


FINAL_METRICS = {
    "train_cost": "cost",
    "train_accuracy": "train_accuracy",
    "dev_cost": "dev_cost",
    "dev_accuracy": "dev_accuracy",
}
"""The final metrics of a run's records (searches, tables), each the last finite value of a
:class:`History` field."""


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
    i: jax.Array  # epochs run in this run
    fast: jax.Array  # bool: still running whole chunks of epochs (see run_epochs)
    history: History  # (epochs,) buffers, NaN where not run


def select(pred, new, old):
    """``new`` where ``pred`` else ``old``, leaf by leaf; ``pred`` a scalar or one per model (a
    leading axis). PRNG keys, which never change, are kept."""

    def pick(n, o):
        if jax.dtypes.issubdtype(o.dtype, jax.dtypes.prng_key):
            return o
        p = jnp.reshape(pred, jnp.shape(pred) + (1,) * (jnp.ndim(o) - jnp.ndim(pred)))
        return jnp.where(p, n, o)

    return jax.tree.map(pick, new, old)


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


def start(optimizer, rate: _rates.Rate, hp: Hyperparams, key: PRNGKey, init) -> TrainState:
    """A fresh :class:`TrainState`: the one initialization path. ``key`` is split in two: one half
    goes to ``init`` (``key -> (params, model_state)``, the model's own or a padded MLP's), the
    other becomes the run's key; the optimizer's state is built as the loop builds the optimizer
    (optax's states differ between a number and a schedule, fjdl's do not)."""
    init_key, run_key = jax.random.split(key)
    params, model_state = init(init_key)
    model_state = {} if model_state is None else model_state
    opt = _rates.build(optimizer, _rates.step_schedule(rate, hp, 1), hp)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(params, model_state, opt.init(params), zero, zero, run_key)


def forward(model: Model, params, model_state, hp: Hyperparams, x, *, key=None, train=False):
    """The model's ``apply``; an MLP's keep_probs and unit masks come from ``hp`` (arrays)."""
    if isinstance(model, MLP):
        keep = hp.keep_probs if train and model.keep_probs is not None else None
        return model_lib.apply(
            model, params, model_state, x, key=key, train=train, keep_probs=keep,
            unit_masks=hp.unit_masks,
        )  # fmt: skip
    return model.apply(params, model_state, x, key=key, train=train)


def _objective(model, loss, is_weight, params, model_state, hp, x, y, key):
    out, new_state = forward(model, params, model_state, hp, x, key=key, train=True)
    j = losses.cost(out, y, params, output=loss, lambd=hp.lambd, l1=hp.l1, is_weight=is_weight)
    return j, new_state


def train_step(
    config: Model, opt, state: TrainState, hp: Hyperparams, x, y, *, loss=None,
    is_weight=losses.is_weight,
) -> tuple[TrainState, jax.Array]:  # fmt: skip
    """One optimizer step on one mini-batch: forward, cost, backprop, update.

    Args:
      config: the model (any model of the protocol, e.g. a :class:`fjdl.model.MLP`).
      opt: a ``GradientTransformation`` (fjdl's or optax's).
      state: the :class:`TrainState`.
      hp: :class:`~fjdl.train.Hyperparams` (``lambd``, ``l1`` and ``keep_probs`` are read here;
        the learning rate is the optimizer's).
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


def run_epoch(spec: RunSpec, opt, hp: Hyperparams, X, Y, full_X, state: TrainState):
    """One epoch: shuffled mini-batches of ``spec.batch_size`` (the remainder last), or the whole
    set in order (``full_X()``) for full-batch training. Returns ``(state, mean cost)``."""
    m = X.shape[0]
    n_full, remainder = divmod(m, spec.batch_size)

    def step(s, x, y):
        return train_step(spec.model, opt, s, hp, x, y, loss=spec.loss, is_weight=spec.is_weight)

    if n_full == 1 and not remainder:  # full batch: no gather (shuffling changes only rounding)
        new_state, cost = step(state, full_X(), Y)
        return new_state._replace(epoch=state.epoch + 1), cost
    shuffle_key = jax.random.fold_in(jax.random.fold_in(state.key, 0), state.epoch)
    perm = jax.random.permutation(shuffle_key, m)
    full = perm[: n_full * spec.batch_size].reshape(n_full, spec.batch_size)
    new_state, costs = jax.lax.scan(lambda s, idx: step(s, X[idx], Y[idx]), state, full)
    cost = jnp.sum(costs) * spec.batch_size  # each batch weighted by its size
    if remainder:
        idx = perm[n_full * spec.batch_size :]
        new_state, j = step(new_state, X[idx], Y[idx])
        cost = cost + j * remainder
    return new_state._replace(epoch=state.epoch + 1), cost / m


def accuracy_of(loss: losses.Loss, out, Y) -> jax.Array:
    """The loss's metric (accuracy for the cross-entropies) in float32; NaN when it has none."""
    if loss.metric is None:
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.asarray(loss.metric(out, Y), jnp.float32)


def cost_and_accuracy(spec: RunSpec, hp: Hyperparams, params, model_state, X, Y):
    """Eval-mode cost (with the penalties) and accuracy over a whole set."""
    out, _ = forward(spec.model, params, model_state, hp, X)
    j = losses.cost(
        out, Y, params, output=spec.loss, lambd=hp.lambd, l1=hp.l1, is_weight=spec.is_weight
    )
    return j, accuracy_of(spec.loss, out, Y)


def evaluation(spec: RunSpec, hp: Hyperparams, data: Data, state: TrainState, dtype):
    """``[train accuracy, dev cost, dev accuracy]`` in eval mode (NaN without a dev set)."""
    _, train_acc = cost_and_accuracy(spec, hp, state.params, state.model_state, data.X, data.Y)
    if data.X_dev is None:
        nan = jnp.asarray(jnp.nan, dtype)
        return jnp.stack([train_acc.astype(dtype), nan, nan])
    dev = cost_and_accuracy(spec, hp, state.params, state.model_state, data.X_dev, data.Y_dev)
    return jnp.stack([train_acc.astype(dtype), dev[0].astype(dtype), dev[1].astype(dtype)])


def early_stopping(loop: Loop, new_state, epoch, finite, evaluated, dev_cost, hp, patience):
    """``loop`` with its best-so-far and patience updated after an epoch (unchanged without
    patience): the dev cost must beat the best by more than ``hp.min_delta``."""
    if patience is None:
        return loop
    improved = finite & evaluated & (dev_cost < loop.best_cost - hp.min_delta)
    bad = jnp.where(improved, 0, jnp.where(evaluated, loop.bad_epochs + 1, loop.bad_epochs))
    return loop._replace(
        best_params=select(improved, new_state.params, loop.best_params),
        best_model_state=select(improved, new_state.model_state, loop.best_model_state),
        best_cost=jnp.where(improved, dev_cost, loop.best_cost),
        best_epoch=jnp.where(improved, epoch, loop.best_epoch),
        bad_epochs=bad,
        stopped_epoch=jnp.where(finite & (bad >= patience), epoch, loop.stopped_epoch),
    )


def all_finite(tree) -> jax.Array:
    """The NaN guard's test: every leaf of ``tree`` finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def optimizer_of(spec: RunSpec, hp: Hyperparams, m: int):
    """The run's ``GradientTransformation`` on ``m`` examples, and the learning rate of each
    epoch (its first step's; NaN for a ready transformation, whose rate fjdl does not know)."""
    steps_per_epoch = -(-m // spec.batch_size)
    rate = _rates.step_schedule(spec.rate, hp, steps_per_epoch)
    opt = _rates.build(spec.optimizer, rate, hp)
    if _rates.is_transformation(spec.optimizer):
        return opt, lambda epoch: jnp.asarray(jnp.nan, jnp.float32)
    return opt, lambda epoch: rate(epoch * steps_per_epoch)


def advance(spec: RunSpec, hp: Hyperparams, data: Data, loop: Loop, n: int, epoch_fn, lr_of_epoch):
    """``n`` epochs from ``loop.state`` as one ``lax.scan``, then the bookkeeping once: the NaN
    guard (``loop.diverged_epoch``), the evaluation (when ``n`` epochs reach a multiple of
    ``spec.eval_every``), early stopping and the history's rows (NaN where not finite)."""
    state = loop.state

    def one(s, _):
        new_s, cost = epoch_fn(s)
        return new_s, (cost, lr_of_epoch(s.epoch))

    if n == 1:
        new_state, (cost, lr) = one(state, None)
        costs, lrs = cost[None], jnp.asarray(lr)[None]
    else:
        new_state, (costs, lrs) = jax.lax.scan(one, state, None, length=n)
    finite = jnp.all(jnp.isfinite(costs)) & all_finite(new_state.params)
    epoch = new_state.epoch - 1
    evaluated = (loop.i + n) % spec.eval_every == 0
    nan3 = jnp.full((3,), jnp.nan, costs.dtype)
    if n == spec.eval_every:  # every call evaluates: no branch
        metrics = evaluation(spec, hp, data, new_state, costs.dtype)
    else:
        evaluate = partial(evaluation, spec, hp, data, dtype=costs.dtype)
        metrics = jax.lax.cond(evaluated, evaluate, lambda s: nan3, new_state)
    kept = early_stopping(loop, new_state, epoch, finite, evaluated, metrics[1], hp, spec.patience)
    blank = jnp.full((n - 1,), jnp.nan, jnp.float32)
    rows = (costs, *(jnp.append(blank, v.astype(jnp.float32)) for v in metrics), lrs)
    history = History(
        *(
            jax.lax.dynamic_update_slice(h, jnp.where(finite, v, jnp.nan).astype(h.dtype), (loop.i,))
            for h, v in zip(loop.history, rows)
        )
    )
    diverged = jnp.where(finite, loop.diverged_epoch, epoch)
    return kept._replace(
        state=new_state, previous=state, i=loop.i + n, history=history, diverged_epoch=diverged
    )


CHUNK_MAX = 100
"""The longest chunk of epochs that :func:`run_epochs` runs without per-epoch bookkeeping."""


def chunk_size(eval_every: int, epochs: int) -> int:
    """The largest divisor of ``eval_every`` that is at most :data:`CHUNK_MAX` and ``epochs``."""
    return max(d for d in range(1, min(eval_every, epochs, CHUNK_MAX) + 1) if eval_every % d == 0)


def _full_batch_inputs(spec: RunSpec, X):
    """``() -> X`` for a full-batch epoch. A narrow MLP runs with examples along the last axis
    (:func:`fjdl.model.apply` transposes its input): transposed once here, outside the loop, the
    transpose in ``apply`` cancels against this one and no step transposes the data again (1.2x
    for the course's full-batch runs, ``bench/`` case B). The barrier keeps XLA from cancelling
    the two before the loop."""
    model = spec.model
    narrow = isinstance(model, MLP) and max(model.sizes) <= model_lib.NARROW_WIDTH
    if narrow and spec.batch_size == X.shape[0]:
        X_T = jax.lax.optimization_barrier(X.T)
        return lambda: X_T.T
    return lambda: X


def last_finite_state(loop: Loop) -> TrainState:
    """The state a run ends with: after a NaN (the loop stops at once) the state before that
    epoch, the last finite one; else the loop's."""
    return select(loop.diverged_epoch >= 0, loop.previous, loop.state)


def final_state(loop: Loop, patience: int | None) -> TrainState:
    """The state a run returns: with early stopping, the best epoch's parameters and model state
    restored (where there was a best epoch; ``loop`` may hold one run or many, stacked)."""
    state = loop.state
    if patience is None:
        return state
    restore = loop.best_epoch >= 0
    return state._replace(
        params=select(restore, loop.best_params, state.params),
        model_state=select(restore, loop.best_model_state, state.model_state),
    )


@partial(jax.jit, static_argnames=("spec",))
def run_epochs(spec: RunSpec, hp: Hyperparams, data: Data, loop: Loop, until=None) -> Loop:
    """The compiled run: from ``loop`` (:func:`start_loop`, or the carry of an earlier call) until
    ``until`` epochs of the run are done (an int32 array, not static; ``None``: ``spec.epochs``).

    Only ``spec`` is static: new hyperparameters, data of the same shapes or a later carry reuse
    the compiled program, and a long run cut into segments (to report progress from the host in
    between) is one program called several times. Under ``jax.vmap`` over ``hp`` and ``loop``
    (the data and ``until`` shared) it trains many models at once (:func:`fjdl.tune.train_many`).

    The epochs run in ``lax.while_loop``\\ s that end early when the cost or the parameters stop
    being finite, or when early stopping's patience runs out. When ``spec.eval_every > 1``, whole
    chunks of epochs (the largest divisor of ``eval_every`` up to :data:`CHUNK_MAX`) run first,
    each one ``advance``; a chunk that produced a NaN or an Inf is discarded and rerun one
    epoch at a time, which also runs the epochs after the last whole chunk. The results are those
    of the per-epoch loop (to float rounding; bit for bit run to run). Returns the final carry,
    whose ``state`` is the last finite state.
    """
    opt, lr_of_epoch = optimizer_of(spec, hp, data.X.shape[0])
    epoch_fn = partial(run_epoch, spec, opt, hp, data.X, data.Y, _full_batch_inputs(spec, data.X))
    step = partial(advance, spec, hp, data, epoch_fn=epoch_fn, lr_of_epoch=lr_of_epoch)
    chunk = chunk_size(spec.eval_every, spec.epochs)
    end = jnp.asarray(spec.epochs if until is None else until, jnp.int32)

    def running(loop: Loop, n: int = 1):
        return (loop.i + n <= end) & (loop.stopped_epoch < 0) & (loop.diverged_epoch < 0)

    def chunk_step(loop: Loop) -> Loop:  # not finite: hand the chunk to the per-epoch loop
        advanced = step(loop, chunk)
        finite = advanced.diverged_epoch < 0
        return select(finite, advanced, loop._replace(fast=jnp.zeros((), bool)))

    if chunk > 1:
        loop = jax.lax.while_loop(lambda lp: lp.fast & running(lp, chunk), chunk_step, loop)
    loop = jax.lax.while_loop(running, lambda lp: step(lp, 1), loop)
    return loop._replace(state=last_finite_state(loop))
