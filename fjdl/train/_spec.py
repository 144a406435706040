"""The one description of a run: a static, hashable :class:`RunSpec` and array :class:`Hyperparams`.

Everything the compiled loop needs is in three values:

- :class:`RunSpec`: what changes the program's shape (the model, the loss, the weight predicate,
  the optimizer's kind, the kind of learning rate, the batch size, the epochs, the patience, the
  evaluation interval). Frozen and hashable: it is the loop's one static argument.
- :class:`Hyperparams`: every number a person tunes, as arrays: scalars for one model, a leading
  axis of ``N`` for ``N`` models (under ``jax.vmap``). New values never recompile.
- :class:`Data`: the training set and the optional dev set, checked against the model.

:func:`fjdl.train.prepare` builds and checks all three; :func:`~fjdl.train.fit`,
:func:`~fjdl.tune.train_many`, :class:`~fjdl.tune.Panda`, :func:`~fjdl.parallel.fit_data_parallel`
and the CLI all call it, so a check is written once, for one value or ``N``.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, losses, optim, schedules
from fjdl.model import MLP, Model

from ._rates import OPTIMIZER_DEFAULTS, Rate


class Hyperparams(NamedTuple):
    """Tunable hyperparameters, as arrays (scalars, or a leading model axis under ``vmap``)."""

    # A scalar array, or a schedule of fjdl.schedules (a pytree of arrays that is also a function
    # of the count): Any, as no type names both.
    learning_rate: Any
    lambd: jax.Array
    l1: jax.Array
    keep_probs: jax.Array  # an MLP's (n_hidden,), ones where it has no dropout; (0,) for others
    unit_masks: Any = None  # an MLP's per-hidden-layer 0/1 masks of its units (shape search)
    beta: Any = None  # momentum / RMSprop (None: the default, 0.9)
    beta1: Any = None  # Adam
    beta2: Any = None  # Adam
    epsilon: Any = None  # RMSprop / Adam
    decay_rate: Any = None  # the inverse-time decay of a plain learning rate (0: none)
    min_delta: Any = None  # early stopping: the improvement that resets the patience


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """The static part of a run: a new value is a new compiled program."""

    model: Model
    loss: losses.Loss
    is_weight: Callable
    optimizer: Any  # a name of fjdl.train.OPTIMIZERS, a factory or a ready transformation
    rate: Rate
    batch_size: int
    epochs: int
    patience: int | None = None
    eval_every: int = 1


class Data(NamedTuple):
    """A run's data, checked: ``X``, ``Y``, and ``X_dev``, ``Y_dev`` (``None`` without a dev set)."""

    X: Any
    Y: Any
    X_dev: Any = None
    Y_dev: Any = None


def default_loss(model: Model, loss=None) -> losses.Loss:
    """The :class:`fjdl.losses.Loss` of a run: ``loss`` if given, else the model's own ``loss``
    attribute (an MLP's comes from its ``output``)."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise TypeError(
                f"loss is needed for a {type(model).__name__}: pass loss='binary', 'softmax', "
                "'mse' or a function (out, y) -> scalar"
            )
    return losses.get(loss)


def per_model(name: str, value, n: int | None) -> np.ndarray:
    """``value`` as float64 numbers: a scalar when ``n`` is None, else ``(n,)`` (a number
    repeated, or a sequence of ``n``). A traced value (under ``jit`` or ``vmap``) passes as it
    is: it cannot be inspected, and the program that traces it was checked."""
    if not _checks.is_concrete(value):
        return value
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        want = "a number" if n is None else "a number or one number per model"
        raise TypeError(f"{name} must be {want}, got {value!r}") from None
    if n is None:
        if arr.ndim:
            raise ValueError(f"{name} must be a number, got shape {arr.shape}")
        return arr
    if arr.ndim == 0:
        return np.full((n,), float(arr))
    if arr.shape != (n,):
        raise ValueError(
            f"{name} must be a number or have one value per model ({n}), got shape {arr.shape}"
        )
    return arr


def _keep_probs(model, keep_probs, n: int | None) -> np.ndarray:
    """An MLP's keep_probs per hidden layer, ``(n_hidden,)`` or ``(n, n_hidden)``; empty for
    any other model (which applies its own dropout)."""
    lead = () if n is None else (n,)
    if not isinstance(model, MLP):
        if keep_probs is not None:
            raise ValueError(
                "keep_probs applies to an fjdl.MLP only; a model of another kind applies its own "
                f"dropout (build it with the rate you want), got keep_probs={keep_probs!r} for "
                f"{type(model).__name__}"
            )
        return np.zeros((*lead, 0))
    n_hidden = model.n_layers - 1
    if keep_probs is None:  # the config's, for every model
        base = model.keep_probs if model.keep_probs is not None else 1.0
        return np.broadcast_to(np.asarray(base, np.float64), (*lead, n_hidden)).copy()
    arr = np.asarray(keep_probs, np.float64)
    if n is not None and arr.ndim == 1:
        arr = arr[:, None]  # one keep_prob per model, for every hidden layer
    if arr.ndim > len(lead) + 1 or not _broadcasts(arr.shape, (*lead, n_hidden)):
        want = f"({n_hidden},)" if n is None else f"({n},) or ({n}, {n_hidden})"
        raise ValueError(f"keep_probs must be a number or have shape {want}, got {arr.shape}")
    arr = np.broadcast_to(arr, (*lead, n_hidden)).copy()
    _checks.check_keep_prob("keep_probs", arr, label="model" if n is not None else "layer")
    return arr


def _broadcasts(shape, to) -> bool:
    try:
        np.broadcast_shapes(shape, to)
    except ValueError:
        return False
    return np.broadcast_shapes(shape, to) == tuple(to)


def _rate_numbers(learning_rate, n, dtype):
    """``Hyperparams.learning_rate``: a schedule's numbers in at least float32 (a float16 step
    count overflows), copied per model; else the checked number(s) in ``dtype``."""
    if schedules.is_numeric(learning_rate):
        lead = () if n is None else (n,)
        to = optim.moment_dtype(dtype)
        return jax.tree.map(
            lambda a: jnp.broadcast_to(jnp.asarray(a, to), (*lead, *jnp.shape(a))), learning_rate
        )
    rate = per_model("learning_rate", learning_rate, n)
    _checks.check_nonnegative("learning_rate", rate, label="model")
    return jnp.asarray(rate, dtype)


def make_hyperparams(
    model: Model,
    learning_rate=0.001,
    lambd=0.0,
    l1=0.0,
    keep_probs=None,
    dtype=jnp.float32,
    *,
    n: int | None = None,
    beta=None,
    beta1=None,
    beta2=None,
    epsilon=None,
    decay_rate=None,
    min_delta=0.0,
) -> Hyperparams:
    """A checked :class:`Hyperparams`: scalars, or with ``n`` one value per model (``(n,)``; a
    number is repeated). ``None`` keeps a default: the model's keep_probs, :mod:`fjdl.optim`'s
    betas and epsilon, no decay. Every check is written here once, for one value or ``n``.

    ``keep_probs`` is an MLP's (a model of another kind draws its own dropout masks, with the rates
    it was built with). ``learning_rate`` may also be a schedule of :mod:`fjdl.schedules` (its
    numbers become arrays). The optimizer's numbers are kept in at least float32 (1e-8 is 0 in
    float16); the optimizer casts each to the dtype of the parameter it updates.
    """
    opt_dtype = dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32
    given = dict(beta=beta, beta1=beta1, beta2=beta2, epsilon=epsilon)
    opt = {k: per_model(k, OPTIMIZER_DEFAULTS[k] if v is None else v, n) for k, v in given.items()}
    for name in ("beta", "beta1", "beta2"):
        _checks.check_unit_interval(name, opt[name], label="model")
    _checks.check_positive("epsilon", opt["epsilon"], label="model")
    decay_rate = 0.0 if decay_rate is None else decay_rate
    plain = dict(lambd=lambd, l1=l1, min_delta=min_delta, decay_rate=decay_rate)
    plain = {k: per_model(k, v, n) for k, v in plain.items()}
    for name, v in plain.items():
        _checks.check_nonnegative(name, v, label="model")
    return Hyperparams(
        _rate_numbers(learning_rate, n, dtype),
        jnp.asarray(plain["lambd"], dtype),
        jnp.asarray(plain["l1"], dtype),
        jnp.asarray(_keep_probs(model, keep_probs, n), dtype),
        None,  # unit masks: set by the padded-width search (fjdl.tune.train_many)
        beta=jnp.asarray(opt["beta"], opt_dtype),
        beta1=jnp.asarray(opt["beta1"], opt_dtype),
        beta2=jnp.asarray(opt["beta2"], opt_dtype),
        epsilon=jnp.asarray(opt["epsilon"], opt_dtype),
        decay_rate=jnp.asarray(plain["decay_rate"], opt_dtype),
        min_delta=jnp.asarray(plain["min_delta"], dtype),
    )
