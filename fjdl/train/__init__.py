"""Training any model: one description of a run, one compiled loop in small pure pieces.

The loop works for any model of the protocol of :mod:`fjdl.model` (``init(key)``, ``apply(params,
state, x, *, key, train)``): fjdl's :class:`~fjdl.model.MLP`, a network written as two functions
(:func:`fjdl.model.from_functions`), a flax or an equinox module. What the output means is a
:class:`fjdl.losses.Loss` (``loss="binary"``, ``"softmax"``, ``"mse"`` or a function); an MLP's
default comes from its config.

A run is described once (:func:`prepare`): a static, hashable :class:`RunSpec` (the model, the
loss, the optimizer's kind, the kind of learning rate, the batch size, the epochs, the patience,
the evaluation interval) and array :class:`Hyperparams` (the learning rate or a schedule's
numbers, ``lambd``, ``l1``, keep_probs, the optimizer's betas and epsilon, the decay rate,
``min_delta``): scalars for one model, a leading axis for many. :func:`fit` is prepare, start,
run (:func:`run_epochs`, the one compiled program), finish; :func:`fjdl.tune.train_many` is
prepare, ``jax.vmap`` of the same run, finish; :class:`fjdl.tune.Panda` and
:func:`fjdl.parallel.fit_data_parallel` run the same thing. New hyperparameter values, keys or
data of the same shapes never recompile.

Inside the program, a run is a ``lax.while_loop`` over chunks of epochs (each a ``lax.scan``),
then over single epochs; inside each epoch, ``lax.scan`` over the full mini-batches and one more step on the remainder batch (its own static shape, so it needs
neither padding nor a second compilation). Nothing returns to Python between steps; when progress
is shown, a run is cut into about 100 calls of the same program, each continuing where the last
stopped, reported from the host in between.

Keys: the run's key lives in :class:`TrainState`. Epoch ``e`` shuffles with
``fold_in(fold_in(key, 0), e)``; step ``t`` drops out with ``fold_in(fold_in(key, 1), t)``. The same
key gives the same run, bit for bit.
"""

import dataclasses
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, _progress, losses
from fjdl import model as model_lib
from fjdl._types import Params, PRNGKey, State
from fjdl.model import Model

from . import _inputs, _rates
from ._inputs import as_inputs
from ._loop import (
    CHUNK_MAX,
    FINAL_METRICS,
    History,
    Loop,
    TrainState,
    chunk_size,
    cost_and_accuracy,
    final_state,
    last_finite_state,
    run_epochs,
    select,
    start,
    start_loop,
    train_step,
)
from ._prepare import (
    Run,
    checked_params,
    model_init,
    per_model_items,
    prepare,
    with_dropout,
)
from ._rates import (
    OPTIMIZER_DEFAULTS,
    OPTIMIZERS,
    NamedOptimizer,
    Rate,
    is_transformation,
)
from ._spec import (
    Data,
    Hyperparams,
    RunSpec,
    default_loss,
    make_hyperparams,
    per_model,
)

__all__ = [
    "CHUNK_MAX",
    "FINAL_METRICS",
    "OPTIMIZERS",
    "OPTIMIZER_DEFAULTS",
    "Data",
    "FitResult",
    "History",
    "Hyperparams",
    "Loop",
    "NamedOptimizer",
    "Rate",
    "Run",
    "RunSpec",
    "TrainState",
    "TrainingDiverged",
    "as_inputs",
    "checked_params",
    "chunk_size",
    "default_loss",
    "evaluate",
    "final_state",
    "fit",
    "init_state",
    "is_transformation",
    "last_finite_state",
    "make_hyperparams",
    "model_init",
    "per_model",
    "per_model_items",
    "predict",
    "prepare",
    "run_epochs",
    "select",
    "start",
    "start_loop",
    "train_step",
    "with_dropout",
]


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
    """A fresh :class:`TrainState`, as :func:`fit` starts one: the model's initial parameters (or
    the given ``params``), zero counts.

    ``key`` is split in two: one half initializes the parameters, the other becomes the run's
    key. For an :class:`~fjdl.model.MLP`, ``scheme`` chooses the initializer (default ``"he"``) and
    ``dtype`` the dtype of its arrays; any other model initializes itself, in its own dtypes, and
    takes no ``scheme``.
    """
    model_lib.check_model(config)
    _rates.check_optimizer(optimizer)
    numbers, rate = _rates.plan(learning_rate, None)
    hp = make_hyperparams(config, numbers, dtype=dtype)
    init = model_init(config, scheme, dtype)
    return start(optimizer, rate, hp, key, _given_params(config, init, key, params))


def _given_params(model: Model, init: Callable, key, params) -> Callable:
    """``init``, or, when ``params`` are given, an init that returns them (checked, in the model's
    dtypes) with the model's own initial state."""
    if params is None:
        return init
    like, _ = jax.eval_shape(init, key)
    given = checked_params(model, params, like)
    return lambda k: (given, init(k)[1])


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
    ``decay_interval``, whether there is a dev set, and ``is_weight`` (decay on and off share one
    program: no decay is the inverse-time decay at rate 0).

    Returns:
      A :class:`FitResult` with the final (or best, with early stopping) state and the history.

    Raises:
      TrainingDiverged: the cost or the parameters became NaN or Inf; the error names the epoch and
        holds ``state`` (the last finite one) and ``history``.
    """
    if state is None:
        key = _checks.check_key("key", key)
    elif not isinstance(state, TrainState):
        raise TypeError(f"state must be an fjdl.train.TrainState, got {type(state).__name__}")
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
    _progress.check("progress", progress)
    run = prepare(
        model, X, Y, loss=loss, optimizer=optimizer, learning_rate=learning_rate, epochs=epochs,
        batch_size=batch_size, lambd=lambd, l1=l1, keep_probs=keep_probs, schedule=schedule,
        dev=dev, patience=patience, min_delta=min_delta, scheme=scheme, eval_every=eval_every,
        is_weight=is_weight, beta=beta, beta1=beta1, beta2=beta2, epsilon=epsilon,
        decay_rate=decay_rate, decay_interval=decay_interval,
    )  # fmt: skip
    if state is None:
        state = start(
            run.spec.optimizer, run.spec.rate, run.hp, key,
            _given_params(run.spec.model, run.init, key, params),
        )  # fmt: skip
    loop = _run_segments(run, start_loop(state, epochs, run.data.X.dtype), progress)
    return _finish(loop, patience, on_divergence, _divergence_cause(run.data.X.dtype, learning_rate))


def _run_segments(run: Run, loop: Loop, progress) -> Loop:
    """The compiled run, in segments of epochs when progress is shown (reported from the host
    between them; every segment is the same compiled program)."""
    if progress is None:  # several processes must cut the run into the same segments
        progress = sys.stderr.isatty() and jax.process_count() == 1
    spec = run.spec
    reporter = _progress.Reporter(progress, spec.epochs)
    try:
        ends = _progress.segment_ends(
            spec.epochs, chunk_size(spec.eval_every, spec.epochs), reporter.shown
        )
        for end in ends:
            loop = run_epochs(spec, run.hp, run.data, loop, jnp.int32(end))
            if reporter.shown:
                done = int(loop.i)
                reporter.update(done, cost=float(loop.history.cost[max(done - 1, 0)]))
                if done < end:  # stopped early or diverged
                    break
        return jax.block_until_ready(loop)
    finally:
        reporter.close()


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


def _finish(loop: Loop, patience, on_divergence, cause: str) -> FitResult:
    diverged = int(loop.diverged_epoch)
    stopped = int(loop.stopped_epoch)
    # Epochs run in this call; the one that produced a NaN is not counted.
    n_run = int(loop.i) - (diverged >= 0)
    history = History(*(_checks.host_value(h)[:n_run] for h in loop.history))
    state = final_state(loop, patience)
    best = int(loop.best_epoch) if patience is not None else -1
    if diverged >= 0 and on_divergence == "raise":
        kept = f"that of epoch {diverged - 1}" if diverged > 0 else "the state it started from"
        raise TrainingDiverged(
            f"training diverged at epoch {diverged}: the cost or the parameters became NaN or Inf; "
            f"{cause}. The error's .state holds the last finite state, {kept}",
            state,
            history,
            diverged,
        )
    return FitResult(state, history, best if best >= 0 else None, stopped if stopped >= 0 else None)


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
    X, Y = _inputs.check_data(
        model, "evaluation", X, Y, loss=loss, params=params, model_state=model_state
    )
    hp = make_hyperparams(model, 0.0, lambd, l1, dtype=X.dtype)
    spec = RunSpec(model, loss, is_weight, "gd", Rate(), X.shape[0], 1)
    j, acc = jax.jit(cost_and_accuracy, static_argnums=0)(spec, hp, params, model_state, X, Y)
    return {"cost": float(j), "accuracy": float(acc), "error": 1.0 - float(acc)}


def predict(model: Model, params: Params, model_state: State, X, *, loss=None) -> jax.Array:
    """Eval-mode predictions, as the loss makes them: 0/1 for ``"binary"`` (``out > 0``), the
    argmax class for ``"softmax"``, the output itself for ``"mse"``."""
    model_lib.check_model(model)
    loss = default_loss(model, loss)
    out, _ = model.apply(params, model_state, as_inputs("prediction", X))
    return loss.predict(out)

