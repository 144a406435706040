"""The one learning-rate path, and the registry of the optimizers fjdl builds by name.

Every way of giving a learning rate becomes one function of the optimizer's step count,
``count -> lr``, which the optimizer runs (optax's convention: a transformation only ever sees a
schedule of the step):

=====================================================  ==========================================
what the user gives                                    the schedule of the step
=====================================================  ==========================================
a number ``alpha0`` (and ``decay_rate``)               ``alpha0 / (1 + decay_rate * floor(e / k))``
a schedule of the step (fjdl's or optax's)             itself
a schedule of the epoch ``epoch -> lr``                ``schedule(count // steps_per_epoch)``
a factory ``lr0 -> (epoch -> lr)``                     ``factory(alpha0)(count // steps_per_epoch)``
=====================================================  ==========================================

(``e = count // steps_per_epoch``, ``k`` the decay interval.) What is an array and what is static:
the numbers (``alpha0``, ``decay_rate``, the numbers of a schedule of :mod:`fjdl.schedules`) live
in :class:`fjdl.train.Hyperparams`, so new values compile nothing; a function that is not one of
fjdl's schedules (an optax schedule, a factory) is static, in :class:`Rate`. No decay is the
inverse-time decay at rate 0, ``alpha0 / 1``, exactly ``alpha0``: decay on and off share one
program.

The optimizers given by name are the factories of :mod:`fjdl.optim`, built inside the compiled
loop with their hyperparameters (``beta``, ``beta1``, ``beta2``, ``epsilon``) as arrays of
:class:`fjdl.train.Hyperparams`: :data:`OPTIMIZERS` says which factory takes which.
"""

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import jax.numpy as jnp

from fjdl import optim, schedules


class NamedOptimizer(NamedTuple):
    """An optimizer fjdl builds by name: its factory and the hyperparameters it takes."""

    factory: Callable[..., Any]
    hyperparams: tuple[str, ...]


OPTIMIZERS: Mapping[str, NamedOptimizer] = MappingProxyType(
    {
        "gd": NamedOptimizer(optim.gd, ()),
        "momentum": NamedOptimizer(optim.momentum, ("beta",)),
        "rmsprop": NamedOptimizer(optim.rmsprop, ("beta", "epsilon")),
        "adam": NamedOptimizer(optim.adam, ("beta1", "beta2", "epsilon")),
    }
)
"""The optimizers :func:`fjdl.train.fit`, :func:`fjdl.tune.train_many` and the CLI build by name."""

OPTIMIZER_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {"beta": 0.9, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
)
"""The defaults of the named optimizers' hyperparameters: those of :mod:`fjdl.optim`."""


def is_transformation(optimizer) -> bool:
    """Whether ``optimizer`` is a ready ``GradientTransformation`` (it has ``init`` and ``update``)."""
    return hasattr(optimizer, "init") and hasattr(optimizer, "update")


def check_optimizer(optimizer) -> None:
    """Refuse what is neither a name of :data:`OPTIMIZERS`, a factory nor a transformation."""
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    elif not (is_transformation(optimizer) or callable(optimizer)):
        raise TypeError(
            "optimizer must be a name, a factory learning_rate -> GradientTransformation, or a "
            f"GradientTransformation; got {type(optimizer).__name__}"
        )


@dataclasses.dataclass(frozen=True)
class Rate:
    """The static part of the learning rate: how ``Hyperparams.learning_rate`` (a number, or a
    schedule of :mod:`fjdl.schedules` whose numbers are arrays) becomes a schedule of the step.

    Attributes:
      fn: a function that is not one of fjdl's schedules (an optax schedule, a factory); ``None``
        when the numbers in ``Hyperparams.learning_rate`` are all there is.
      factory: ``fn`` is a factory ``lr0 -> (epoch -> lr)`` of ``Hyperparams.learning_rate``.
      per_epoch: the schedule counts epochs (the step count is divided by the steps per epoch).
      decay_interval: epochs per step of the inverse-time decay of a plain number.
    """

    fn: Callable | None = None
    factory: bool = False
    per_epoch: bool = True
    decay_interval: int = 1


def plan(learning_rate, schedule, decay_interval: int = 1) -> tuple[Any, Rate]:
    """``(numbers, Rate)`` from ``fit``'s ``learning_rate`` and ``schedule`` arguments: the numbers
    go to ``Hyperparams.learning_rate`` (``0.0`` where a static function holds them)."""
    if callable(learning_rate):
        if schedule is not None:
            raise ValueError(
                "learning_rate is already a schedule (of the step); schedule= (of the epoch) "
                "cannot decay it too: give one of them"
            )
        if schedules.is_numeric(learning_rate):  # its numbers travel as arrays: no recompiling
            return learning_rate, Rate(per_epoch=False)
        return 0.0, Rate(learning_rate, per_epoch=False)
    if schedule is None:
        return learning_rate, Rate(decay_interval=decay_interval)
    if not callable(schedule):
        raise TypeError(
            f"schedule must be a function lr0 -> (epoch -> lr) or epoch -> lr, got {schedule!r}"
        )
    if schedules.is_numeric(schedule):  # a schedule of the epoch, its numbers as arrays
        return schedule, Rate()
    probe = schedule(jnp.asarray(learning_rate if _is_number(learning_rate) else 0.0, jnp.float32))
    return learning_rate, Rate(schedule, factory=callable(probe))


def _is_number(value) -> bool:
    return not callable(value) and jnp.ndim(value) == 0


def step_schedule(rate: Rate, hp, steps_per_epoch: int) -> Callable:
    """The learning rate of step ``count``: the one path every kind of rate takes (module doc)."""
    if rate.fn is None:
        base = hp.learning_rate
    else:
        base = rate.fn(hp.learning_rate) if rate.factory else rate.fn
    if not callable(base):  # a number: the course's inverse-time decay of the epoch
        base = schedules.inverse_time_decay(base, hp.decay_rate, rate.decay_interval)
    if rate.per_epoch:
        return lambda count: base(count // steps_per_epoch)
    return base


def build(optimizer, learning_rate: Callable, hp):
    """The ``GradientTransformation`` of ``optimizer`` (a name, a factory or a ready one) with the
    schedule ``learning_rate``; a name's hyperparameters come from ``hp`` (arrays)."""
    if isinstance(optimizer, str):
        named = OPTIMIZERS[optimizer]
        return named.factory(learning_rate, **{k: getattr(hp, k) for k in named.hyperparams})
    if is_transformation(optimizer):  # it keeps its own learning rate
        return optimizer
    return optimizer(learning_rate)
