r"""Learning-rate decay: schedules ``count -> learning rate``.

A schedule is a function of a count that starts at 0: the number of epochs completed (the course's
``epoch_num``) or, given to an optimizer, the number of updates done before this one. Each factory
below validates its hyperparameters eagerly and returns a pure function that works on Python ints
and on traced int32 counts (under ``jit``/``scan``). The hyperparameters may be arrays, also traced
ones, so ``vmap`` over a batch of initial learning rates runs many schedules in one program.

The values are in the floating dtype of the hyperparameters (Python floats give the default float:
float32, or float64 with x64 enabled).

Per epoch or per step: the course decays the rate once per epoch, while an optimizer counts steps.
:func:`per_epoch` turns an epoch schedule into a step schedule, given ``steps_per_epoch``.

References:
  Andrew Ng, *Improving Deep Neural Networks*, week 2, "Learning rate decay".
"""

import math
import numbers
from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp

from fjdl import _checks
from fjdl._types import Schedule


def _dtype(*hyperparameters):
    """The floating dtype shared by ``hyperparameters`` (weak Python numbers give the default)."""
    with jax.numpy_dtype_promotion("standard"):
        dtype = jnp.result_type(*hyperparameters)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _count(count, dtype):
    """The count as a float array of ``dtype``."""
    return jnp.asarray(count).astype(dtype)


def constant(value) -> Schedule:
    """A constant learning rate: ``count -> value`` (the first value is ``value``).

    Args:
      value: the learning rate (>= 0).

    Example:
      >>> print(constant(0.1)(7))
      0.1
    """
    _checks.check_nonnegative("value", value)
    dtype = _dtype(value)

    def schedule(count):
        del count
        return jnp.asarray(value, dtype)

    return schedule


def inverse_time_decay(init_lr, decay_rate, time_interval: int = 1) -> Schedule:
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
    dtype = _dtype(init_lr, decay_rate)

    def schedule(count):
        # Integer floor division keeps the decay step exact for any count.
        k = _count(jnp.floor_divide(jnp.asarray(count), time_interval), dtype)
        return jnp.asarray(init_lr, dtype) / (1 + jnp.asarray(decay_rate, dtype) * k)

    return schedule


def exponential_decay(init_lr, base=0.95) -> Schedule:
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
    dtype = _dtype(init_lr, base)

    # log(base) in double precision when base is a Python number: float32(0.95) ** 249 would be
    # off by 3e-6 relative from rounding the base alone.
    if type(base) in (int, float):
        log_base = math.log(base)
    else:
        log_base = jnp.log(jnp.asarray(base, dtype))

    def schedule(count):
        t = _count(count, dtype)
        return jnp.asarray(init_lr, dtype) * jnp.exp(t * log_base)  # lr0 * base ** count

    return schedule


def inverse_sqrt_decay(init_lr, k=1.0) -> Schedule:
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
    dtype = _dtype(init_lr, k)

    def schedule(count):
        t = _count(count, dtype)
        return jnp.asarray(init_lr, dtype) * jnp.asarray(k, dtype) / jnp.sqrt(t + 1)

    return schedule


def piecewise_constant(init_lr, boundaries_and_scales) -> Schedule:
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
    dtype = _dtype(init_lr, *(scale for _, scale in items))

    def schedule(count):
        count = jnp.asarray(count)
        lr = jnp.asarray(init_lr, dtype)
        for boundary, scale in items:
            lr = jnp.where(count >= boundary, lr * jnp.asarray(scale, dtype), lr)
        return lr

    return schedule


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

    def step_schedule(step):
        return schedule(jnp.floor_divide(jnp.asarray(step), steps_per_epoch))

    return step_schedule
