r"""Optimizer trajectories on 2-D test functions: where each optimizer goes, step by step.

Two functions of a point ``p = (x, y)`` show what the course says about the optimizers:

- :func:`elongated_quadratic`, a narrow valley: gradient descent zig-zags across the narrow axis;
  momentum averages the zig-zag away (and stays stable at learning rates where gradient descent
  diverges).
- :func:`saddle_plateau`, a saddle point and a plateau: on the plateau the gradient is tiny and
  gradient descent (with or without momentum) barely moves; RMSprop and Adam divide by the
  gradient's own size and leave it in a few steps.

:func:`trajectories` runs several optimizers from the same start, each run one ``lax.scan``, and
returns the paths as ``(n_steps + 1, 2)`` arrays for plotting (the plots live in the notebooks).

Example:
  >>> from fjdl import optim
  >>> paths = trajectories({"gd": optim.gd(0.1), "adam": optim.adam(0.1)}, (0.5, 4.0), 50)
  >>> paths["adam"].shape
  (51, 2)
  >>> first_exit(paths["gd"], on_plateau), first_exit(paths["adam"], on_plateau)
  (None, 12)
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, optim
from fjdl._types import Hyperparameter

PLATEAU_Y = 3.0
"""Where :func:`saddle_plateau`'s plateau begins: for ``|y| > 3`` the slope is below 0.02."""


def saddle_plateau(p: jax.typing.ArrayLike) -> jax.Array:
    r"""A function with two minima, a saddle point between them, and a plateau around them.

    .. math::
      f(x, y) = x^2 - y^2 e^{1 - y^2}

    - minima at :math:`(0, \pm 1)`, where :math:`f = -1`;
    - a saddle point at :math:`(0, 0)`, :math:`f = 0`: a minimum along :math:`x`, a maximum along
      :math:`y` (:math:`f \approx x^2 - e\,y^2` nearby);
    - a plateau for :math:`|y| > 3` (:data:`PLATEAU_Y`): there :math:`f \approx x^2` and the slope
      along :math:`y`, :math:`2 y e^{1 - y^2} (y^2 - 1)`, is below 0.02 and falls like
      :math:`e^{-y^2}` (0.016 at :math:`y = 3`, 3.7e-5 at :math:`y = 4`).

    Started on the plateau, gradient descent takes steps of size ``lr * slope`` and stays there;
    Adam's steps are about ``lr`` whatever the slope, so it walks off and down into a minimum.

    Args:
      p: the point ``(x, y)``, shape ``(2,)``.

    Returns:
      :math:`f(x, y)`, a scalar.

    Example:
      >>> print(saddle_plateau((0.0, 1.0)), saddle_plateau((0.0, 0.0)))
      -1.0 0.0
    """
    x, y = jnp.asarray(p)[0], jnp.asarray(p)[1]
    return x**2 - y**2 * jnp.exp(1 - y**2)


def elongated_quadratic(p: jax.typing.ArrayLike, condition: Hyperparameter = 20.0) -> jax.Array:
    r"""A narrow valley: :math:`f(x, y) = \tfrac{1}{2} (x^2 + \kappa\, y^2)`, with ``condition``.

    The minimum is at the origin. The valley is long along :math:`x` and narrow (steep) along
    :math:`y`. Gradient descent with learning rate :math:`\alpha` multiplies :math:`y` by
    :math:`1 - \alpha\kappa` each step: for :math:`1/\kappa < \alpha < 2/\kappa` it overshoots and
    zig-zags across the valley, for :math:`\alpha > 2/\kappa` it diverges, while along :math:`x` it
    creeps with factor :math:`1 - \alpha`. Momentum averages the alternating :math:`y` gradients
    and stays stable up to :math:`\alpha < 2 (1 + \beta) / ((1 - \beta) \kappa)`.

    Args:
      p: the point ``(x, y)``, shape ``(2,)``.
      condition: :math:`\kappa` > 0, the ratio of the curvatures (the condition number).

    Example:
      >>> print(elongated_quadratic((2.0, 1.0), condition=10.0))  # (4 + 10) / 2
      7.0
    """
    _checks.check_positive("condition", condition)
    x, y = jnp.asarray(p)[0], jnp.asarray(p)[1]
    return 0.5 * (x**2 + condition * y**2)


def on_plateau(p: jax.typing.ArrayLike) -> jax.Array:
    """True where ``p`` (shape ``(..., 2)``) lies on :func:`saddle_plateau`'s plateau."""
    return jnp.abs(jnp.asarray(p)[..., 1]) > PLATEAU_Y


def trajectory(
    optimizer: optim.GradientTransformation,
    start: jax.typing.ArrayLike,
    n_steps: int,
    loss: Callable[[jax.Array], jax.Array] = saddle_plateau,
) -> jax.Array:
    """The path of ``optimizer`` minimizing ``loss`` from ``start``: an ``(n_steps + 1, 2)`` array.

    Row 0 is ``start``; row ``t`` the point after ``t`` updates. The steps run in one ``lax.scan``.

    Args:
      optimizer: a GradientTransformation (fjdl's or optax's).
      start: the starting point, shape ``(2,)``; its float dtype is kept (ints become float32).
      n_steps: number of updates (a positive int).
      loss: a function of the point returning a scalar.
    """
    _checks.check_positive_int("n_steps", n_steps)
    start = jnp.asarray(start)
    _checks.check_shape("start", start, (2,))
    if not jnp.issubdtype(start.dtype, jnp.floating):
        start = start.astype(jnp.float32)
    grad = jax.grad(loss)

    def step(carry, _):
        p, state = carry
        updates, state = optimizer.update(grad(p), state, p)
        p = optim.apply_updates(p, updates)
        return (p, state), p

    _, path = jax.lax.scan(step, (start, optimizer.init(start)), length=n_steps)
    return jnp.concatenate([start[None], path])


def trajectories(
    optimizers: Mapping[str, optim.GradientTransformation],
    start: jax.typing.ArrayLike,
    n_steps: int,
    loss: Callable[[jax.Array], jax.Array] = saddle_plateau,
) -> dict[str, jax.Array]:
    """Each optimizer's path from the same ``start``: ``{name: (n_steps + 1, 2) array}``.

    Args:
      optimizers: ``{name: GradientTransformation}``, e.g. ``{"gd": optim.gd(0.1), ...}``.
      start: the starting point, shape ``(2,)``.
      n_steps: number of updates for each (a positive int).
      loss: the function to minimize (default :func:`saddle_plateau`).

    Returns:
      A dict with the same keys, in the same order, holding the paths (see :func:`trajectory`).
    """
    if not isinstance(optimizers, Mapping):
        raise TypeError(
            f"optimizers must be a dict name -> optimizer, got {type(optimizers).__name__}"
        )
    for name, opt in optimizers.items():
        if not (hasattr(opt, "init") and hasattr(opt, "update")):
            raise TypeError(f"optimizers[{name!r}] must have init and update, got {opt!r}")
    return {name: trajectory(opt, start, n_steps, loss) for name, opt in optimizers.items()}


def first_exit(path: jax.typing.ArrayLike, inside: Callable) -> int | None:
    """The first step where ``path`` is no longer ``inside`` a region; None if it never leaves.

    Args:
      path: an ``(n + 1, 2)`` path from :func:`trajectory`.
      inside: a function of points ``(..., 2)`` returning bools, e.g. :func:`on_plateau`.
    """
    outside = ~np.asarray(inside(jnp.asarray(path)))
    return int(np.argmax(outside)) if outside.any() else None


def reversals(path: jax.typing.ArrayLike, axis: int = 1) -> int:
    """How many times the path turns back along ``axis`` (0: x, 1: y): a count of zig-zags.

    Counts the sign changes between consecutive steps ``p[t+1] - p[t]`` along that axis (steps of
    exactly zero are skipped).
    """
    steps = np.diff(np.asarray(path)[:, axis])
    signs = np.sign(steps[steps != 0])
    return int(np.sum(signs[1:] != signs[:-1]))
