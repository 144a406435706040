r"""Learning-rate decay: schedules ``count -> learning rate``.

A schedule is a function of a count that starts at 0: the number of epochs completed (the course's
``epoch_num``) or, given to an optimizer, the number of updates done before this one. Each factory
below validates its hyperparameters eagerly and returns a pure function that works on Python ints
and on traced int32 counts (under ``jit``/``scan``). The hyperparameters may be arrays, also traced
ones, so ``vmap`` over a batch of initial learning rates runs many schedules in one program.

The values are in the floating dtype of the hyperparameters (Python floats give the default float:
float32, or float64 with x64 enabled).

Each schedule is a frozen dataclass (:class:`Constant`, :class:`InverseTimeDecay`, ...) that is
also a pytree: its numbers are the leaves, its integer counts (``time_interval``, boundaries) the
structure. So two schedules built from the same Python numbers are equal and hash alike, and
:func:`fjdl.train.fit` passes a schedule's numbers into its compiled loop as arrays: a schedule
with new numbers reuses the compiled program, where a new function would compile a new one.

Per epoch or per step: the course decays the rate once per epoch, while an optimizer counts steps.
:func:`per_epoch` turns an epoch schedule into a step schedule, given ``steps_per_epoch``.

References:
  Andrew Ng, *Improving Deep Neural Networks*, week 2, "Learning rate decay".
"""

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fjdl import _checks
from fjdl._types import Hyperparameter, Schedule


def _dtype(*hyperparameters: Hyperparameter) -> jnp.dtype:
    """The floating dtype shared by ``hyperparameters`` (weak Python numbers give the default)."""
    with jax.numpy_dtype_promotion("standard"):
        dtype = jnp.result_type(*hyperparameters)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _count(count: jax.typing.ArrayLike, dtype: jnp.dtype) -> jax.Array:
    """The count as a float array of ``dtype``."""
    return jnp.asarray(count).astype(dtype)


def constant(value: Hyperparameter) -> Schedule:
    """A constant learning rate: ``count -> value`` (the first value is ``value``).

    Args:
      value: the learning rate (>= 0).

    Example:
      >>> print(constant(0.1)(7))
      0.1
    """
    _checks.check_nonnegative("value", value)
    return Constant(value)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Constant:
    """The schedule of :func:`constant`."""

    value: Any

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        del count
        return jnp.asarray(self.value, _dtype(self.value))


def inverse_time_decay(
    init_lr: Hyperparameter, decay_rate: Hyperparameter, time_interval: int = 1
) -> Schedule:
    r"""The course's learning-rate decay, optionally in steps of ``time_interval``.

    .. math::
      \alpha = \frac{\alpha_0}{1 + \text{decay\_rate} \cdot
      \lfloor \text{count} / \text{time\_interval} \rfloor}

    With ``time_interval=1`` it is :math:`\alpha_0 / (1 + \text{decay\_rate} \cdot \text{epoch})`;
    with a larger interval the rate stays flat for ``time_interval`` counts, then drops (the
    "fixed interval scheduling" of the course's optimization assignment). The first value
    (count 0) is ``init_lr``.

    Args:
      init_lr: :math:`\alpha_0`, the initial learning rate (>= 0).
      decay_rate: how fast the rate falls (>= 0; 0 keeps it constant).
      time_interval: counts per decay step (a positive int).

    Returns:
      A schedule ``count -> learning rate``.

    Example:
      >>> schedule = inverse_time_decay(0.5, 1.0)
      >>> print(schedule(0), schedule(2))  # 0.5 and 0.5 / 3
      0.5 0.16666667
      >>> print(inverse_time_decay(0.5, 0.3, time_interval=100)(100))  # 0.5 / 1.3
      0.3846154

    .. warning::
      Keras' ``InverseTimeDecay(lr0, decay_steps, decay_rate)`` computes
      ``lr0 / (1 + decay_rate * step / decay_steps)``: continuous unless ``staircase=True``. Here
      the floor is always taken; with ``time_interval=1`` and integer counts it makes no difference.
    """
    _checks.check_nonnegative("init_lr", init_lr)
    _checks.check_nonnegative("decay_rate", decay_rate)
    _checks.check_positive_int("time_interval", time_interval)
    return InverseTimeDecay(init_lr, decay_rate, time_interval)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class InverseTimeDecay:
    """The schedule of :func:`inverse_time_decay`."""

    init_lr: Any
    decay_rate: Any
    time_interval: int = dataclasses.field(default=1, metadata=dict(static=True))

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        dtype = _dtype(self.init_lr, self.decay_rate)
        # Integer floor division keeps the decay step exact for any count.
        k = _count(jnp.floor_divide(jnp.asarray(count), self.time_interval), dtype)
        return jnp.asarray(self.init_lr, dtype) / (1 + jnp.asarray(self.decay_rate, dtype) * k)


def exponential_decay(init_lr: Hyperparameter, base: Hyperparameter = 0.95) -> Schedule:
    r"""Exponential decay: the rate is multiplied by ``base`` every count.

    .. math::
      \alpha = \alpha_0 \cdot \text{base}^{\,\text{count}}

    The first value (count 0) is ``init_lr``.

    Args:
      init_lr: :math:`\alpha_0` (>= 0).
      base: the factor per count, in (0, 1]; the course uses 0.95.

    Example:
      >>> schedule = exponential_decay(1.0, base=0.5)
      >>> print(schedule(0), schedule(3))
      1.0 0.125
    """
    _checks.check_nonnegative("init_lr", init_lr)
    _checks.check_unit_interval("base", base, low_open=True, high_open=False)
    # log(base) in double precision when base is a Python number: float32(0.95) ** 249 would be
    # off by 3e-6 relative from rounding the base alone.
    if type(base) in (int, float):
        return ExponentialDecay(init_lr, math.log(base))
    return ExponentialDecay(init_lr, jnp.log(jnp.asarray(base, _dtype(init_lr, base))))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ExponentialDecay:
    """The schedule of :func:`exponential_decay`, which holds ``log(base)``."""

    init_lr: Any
    log_base: Any

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        dtype = _dtype(self.init_lr, self.log_base)
        t = _count(count, dtype)
        return jnp.asarray(self.init_lr, dtype) * jnp.exp(t * self.log_base)  # lr0 * base**count


def inverse_sqrt_decay(init_lr: Hyperparameter, k: Hyperparameter = 1.0) -> Schedule:
    r"""Decay with the inverse square root of the count.

    .. math::
      \alpha = \frac{k}{\sqrt{\text{count} + 1}} \, \alpha_0

    The course writes :math:`k / \sqrt{\text{epoch\_num}}\,\alpha_0` with epochs counted from 1;
    counts here start at 0, hence the ``+ 1``. The first value (count 0) is ``k * init_lr``.

    Args:
      init_lr: :math:`\alpha_0` (>= 0).
      k: a constant factor (> 0).

    Example:
      >>> schedule = inverse_sqrt_decay(0.2, k=1.0)
      >>> print(schedule(0), schedule(3))  # 0.2 and 0.2 / 2
      0.2 0.1
    """
    _checks.check_nonnegative("init_lr", init_lr)
    _checks.check_positive("k", k)
    return InverseSqrtDecay(init_lr, k)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class InverseSqrtDecay:
    """The schedule of :func:`inverse_sqrt_decay`."""

    init_lr: Any
    k: Any

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        dtype = _dtype(self.init_lr, self.k)
        t = _count(count, dtype)
        return jnp.asarray(self.init_lr, dtype) * jnp.asarray(self.k, dtype) / jnp.sqrt(t + 1)


def piecewise_constant(
    init_lr: Hyperparameter,
    boundaries_and_scales: Mapping[int, Hyperparameter] | Iterable[tuple[int, Hyperparameter]],
) -> Schedule:
    r"""Manual decay: multiply the rate by a scale at chosen counts.

    .. math::
      \alpha = \alpha_0 \prod_{b_i \le \text{count}} s_i

    The first value (count 0) is ``init_lr`` times the scales of any boundary at 0. Same meaning
    as ``optax.piecewise_constant_schedule``: at count ``b`` the scale of ``b`` is in effect.

    Args:
      init_lr: :math:`\alpha_0` (>= 0).
      boundaries_and_scales: ``{boundary: scale}`` (or pairs ``(boundary, scale)``), boundaries
        ints >= 0, scales >= 0. ``{100: 0.1, 200: 0.1}`` divides the rate by 10 at count 100
        and again at 200.

    Example:
      >>> schedule = piecewise_constant(1.0, {2: 0.5, 4: 0.1})
      >>> print([round(float(schedule(c)), 6) for c in range(6)])
      [1.0, 1.0, 0.5, 0.5, 0.05, 0.05]
    """
    _checks.check_nonnegative("init_lr", init_lr)
    items: list[tuple[Any, ...]]  # checked below: (int boundary, scale) pairs
    if isinstance(boundaries_and_scales, Mapping):
        items = list(boundaries_and_scales.items())
    elif isinstance(boundaries_and_scales, Iterable):
        items = [tuple(pair) for pair in boundaries_and_scales]
    else:
        raise TypeError(
            "boundaries_and_scales must be a dict {boundary: scale} or pairs, got "
            f"{type(boundaries_and_scales).__name__}"
        )
    for pair in items:
        if len(pair) != 2:
            raise ValueError(
                f"boundaries_and_scales must hold (boundary, scale) pairs, got {pair!r}"
            )
        boundary, scale = pair
        if isinstance(boundary, bool) or not isinstance(boundary, numbers.Integral):
            raise TypeError(f"boundaries_and_scales: boundary must be an int, got {boundary!r}")
        if boundary < 0:
            raise ValueError(f"boundaries_and_scales: boundary must be >= 0, got {boundary!r}")
        _checks.check_nonnegative(f"boundaries_and_scales[{boundary}]", scale)
    items.sort(key=lambda pair: pair[0])
    return PiecewiseConstant(
        init_lr, tuple(scale for _, scale in items), tuple(int(b) for b, _ in items)
    )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PiecewiseConstant:
    """The schedule of :func:`piecewise_constant`: the scales (numbers) at the boundaries
    (ints, in increasing order)."""

    init_lr: Any
    scales: tuple
    boundaries: tuple = dataclasses.field(default=(), metadata=dict(static=True))

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        dtype = _dtype(self.init_lr, *self.scales)
        count = jnp.asarray(count)
        lr = jnp.asarray(self.init_lr, dtype)
        for boundary, scale in zip(self.boundaries, self.scales):
            lr = jnp.where(count >= boundary, lr * jnp.asarray(scale, dtype), lr)
        return lr


def per_epoch(schedule: Schedule, steps_per_epoch: int) -> Schedule:
    """An epoch schedule driven by a step count: ``step -> schedule(step // steps_per_epoch)``.

    Optimizers count updates; the course's schedules count epochs. With ``steps_per_epoch``
    mini-batches an epoch, the rate stays flat during an epoch and changes between epochs. The first
    value (step 0) is ``schedule(0)``.

    Args:
      schedule: a schedule of the epoch count.
      steps_per_epoch: optimizer steps in one epoch (a positive int; ``ceil(m / batch_size)``).

    Example:
      >>> steps = per_epoch(inverse_time_decay(1.0, 1.0), steps_per_epoch=3)
      >>> print([round(float(steps(s)), 4) for s in range(7)])
      [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.3333]
    """
    if not callable(schedule):
        raise TypeError(f"schedule must be callable count -> lr, got {type(schedule).__name__}")
    _checks.check_positive_int("steps_per_epoch", steps_per_epoch)
    return PerEpoch(schedule, steps_per_epoch)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PerEpoch:
    """The schedule of :func:`per_epoch`. A pytree whose leaves are those of ``schedule`` when it
    is one of this module's (a plain function is a leaf)."""

    schedule: Any
    steps_per_epoch: int = dataclasses.field(default=1, metadata=dict(static=True))

    def __call__(self, step: jax.typing.ArrayLike) -> jax.Array:
        return self.schedule(jnp.floor_divide(jnp.asarray(step), self.steps_per_epoch))


def is_numeric(schedule: Any) -> bool:
    """Whether ``schedule`` is one of this module's schedules whose leaves are all numbers or
    arrays, so that it can travel into a compiled function as data (see the module doc)."""
    if not isinstance(
        schedule,
        Constant | InverseTimeDecay | ExponentialDecay | InverseSqrtDecay | PiecewiseConstant | PerEpoch,
    ):
        return False
    return all(
        isinstance(leaf, numbers.Number | jax.Array) or hasattr(leaf, "dtype")
        for leaf in jax.tree.leaves(schedule)
    )
