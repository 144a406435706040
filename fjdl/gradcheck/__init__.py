"""Gradient checking: backprop against a two-sided numerical gradient, for any model's cost.

For every coordinate :math:`\\theta_i` of every parameter, the course's two-sided difference

.. math::
  \\frac{\\partial J}{\\partial \\theta_i} \\approx
  \\frac{J(\\theta + \\varepsilon e_i) - J(\\theta - \\varepsilon e_i)}{2 \\varepsilon}

is compared with the analytic gradient (backprop, or ``jax.grad``) by the relative difference

.. math::
  \\text{difference} = \\frac{\\lVert g - g_{approx} \\rVert_2}
                             {\\lVert g \\rVert_2 + \\lVert g_{approx} \\rVert_2}

over the whole pytree. The course's scale, for float64: below ``1e-7`` great; below ``1e-5`` fine,
but look closer; up to ``1e-3`` suspicious; above ``1e-3`` there is almost certainly a bug. (The
step actually taken is ``fl(theta + eps) - fl(theta - eps)``, the difference of the two perturbed
values as stored; it is ``2 eps`` up to rounding, which matters in float32 only.)

**The step and the scale by dtype.** With :math:`u` the machine epsilon (``2.2e-16`` in float64,
``1.2e-7`` in float32), a two-sided difference is off by truncation plus rounding,

.. math::
  \\frac{\\varepsilon^2}{6} |J'''| + \\frac{u |J|}{2 \\varepsilon},

least at :math:`\\varepsilon^* = (3 u |J| / (2 |J'''|))^{1/3}`, about :math:`u^{1/3}`.
``epsilon=None`` (every function's default) takes the step by dtype, :func:`default_epsilon`, and
the verdict takes its scale by dtype, :func:`scale_for`:

- float64: the course's ``1e-7`` (rounding ``1.1e-9 |J|``, truncation ``2e-15 |J'''|``) and its
  scale ``1e-7 / 1e-5 / 1e-3``, unchanged.
- float32: ``1e-3``, five times below :math:`u^{1/3} = 4.9e-3`. Rounding is then ``6e-5 |J|``
  and truncation ``2e-7 |J'''|``: four times the least error, but a ReLU kink is five times less
  likely within reach of a step, and curvature (``eps |J''|`` between the one-sided slopes) is
  five times less likely taken for a kink. On 36 ReLU MLPs of ``fjdl gradcheck``'s sizes (6
  seeds, with and without batch norm) the worst difference of a correct gradient was ``4e-4`` at
  ``1e-3`` and ``8e-2`` at ``4.9e-3``, where a second kink within reach mixed the slopes. (The
  course's ``1e-7`` in float32 turns one unit in the last place of ``J`` into an error of order 1
  per coordinate: ``1.8e-1`` for ``sum(sin(w))`` at ``w = (0, 1, 2)``.) Its scale is
  ``1e-4 / 1e-3 / 1e-2``: "great" starts just above the rounding floor ``6e-5`` (for
  ``|J| ~ |g|``), with a decade per verdict after it. A gradient doubled on a leaf, or a
  coordinate, that holds a fraction ``f`` of the gradient's norm shows a difference of
  ``f / (1 + sqrt(1 + 3 f^2))``, about ``f / 2``: float32 calls it a bug from ``f = 2%``, float64
  from ``f = 0.2%``.
- bfloat16 and float16: refused (naming ``dtype``). Their least error, ``3e-2`` and ``7e-3`` of
  ``|J|`` at :math:`u^{1/3}`, is what a doubled gradient on a small leaf shows; ``dtype=`` casts
  to float32 or float64. :func:`numerical_gradient` still runs in them, at :math:`u^{1/3}`.

**Rounding never makes a bug.** The report estimates what rounding alone gives the relative
difference: each coordinate's error is one unit in the last place of ``J``, or ``J``'s rounding
error as measured when larger (at 64 coordinates, from the two-sided differences at ``eps`` and
``eps / 2``; the cross-entropy of an MLP trained to 2e-3 carries 40 units of its last place),
over the step. Where that explains at least half of the difference the verdict stops at
"suspicious", with a warning that says so; a larger ``epsilon``, or float64, lowers it. Below
float64 the measured error also sets the rounding allowance of the kink tests. What the check
still cannot do in float32: a ReLU network trained to a near-zero cost crowds its
pre-activations within every step (even float64 at ``epsilon = 1e-5`` calls such a correct
gradient a bug), and a cost that float32 cannot resolve at the step (``J(theta + eps) ==
J(theta - eps)``) gives a numerical gradient of 0. Check those in float64: :func:`check` takes
``dtype=jnp.float64`` to run inside ``jax.enable_x64(True)`` without switching the whole program
to 64 bits.

What there is:

- :func:`check` on any ``f`` and any pytree, every coordinate: ``vmap`` over coordinates in small
  chunks (``lax.map`` over the chunks), compiled once; each large leaf is mapped on its own, so
  what ``f`` computes before it uses that leaf is computed once, not once per coordinate; on a CPU
  the coordinates are split in equal parts run from one thread per core. :func:`check_model`
  builds the cost of any model of the protocol (:mod:`fjdl.model`) and checks it. On the
  5,178-parameter convnet of :class:`fjdl.testing.ConvNet` (64 digits, float64, 2 cores): 5 s in
  eval mode, 8 s in train mode, against 100-250 s for one map over every coordinate.
- Honest numbers: at ``epsilon = 1e-7`` rounding alone gives each coordinate an error of about
  ``|J| * 1e-16 / 1e-7``; over ``n`` parameters that is a relative difference near
  ``sqrt(n) * |J| * 1e-9 / ||g||``, about ``2e-7`` ("fine") for the convnet once trained. The
  report says so when it explains the verdict (see above).
- A sampled check (``coordinates=k``, ``directions=n``) that answers in seconds for any size: ``k``
  random coordinates per leaf, and ``n`` random unit directions ``u`` along which the directional
  derivative ``<g, u>`` is compared with ``(J(theta + eps u) - J(theta - eps u)) / (2 eps)``, as
  ``jax.test_util.check_grads`` does. See :func:`check` for what it can and cannot prove.
- :func:`numerical_gradient_mlp` / :func:`check_mlp`: the same numbers for an
  :class:`fjdl.model.MLP`'s cost far faster, because a perturbed parameter of layer ``l`` changes
  one column of layer ``l`` only (see its docstring).

Kinks (a ReLU pre-activation, a max, an ``|w|`` under L1 within epsilon of its switching point)
make the two-sided difference the mean of two slopes, where backprop returns one of them (ReLU) or
that mean (``sign(0) = 0``); :func:`check` recognizes them from the one-sided differences and
compares the nearest of the three (see :func:`check`),
:func:`check_mlp` exactly. After batch norm with running statistics they are common: every unit
that sees a blank patch of an image sits at the same pre-activation.

Dropout must be off during a check: each evaluation of ``J`` would draw a new mask, so
``J(theta + eps) - J(theta - eps)`` would measure the change of mask, not of ``theta``; and with one
fixed key the function checked is not the one training differentiates (whose mask changes every
step). Check with ``train=False`` or with ``keep_probs`` of 1; :func:`check_model` refuses a model
whose output depends on the key.
"""

# One concept per module, imports flowing one way: _numerical (the numerical gradient) <- _report
# (the verdict, GradCheckResult) <- _errors (kinks and rounding) <- _mlp (the MLP fast path) <-
# _check (check, check_model).
from fjdl.gradcheck._check import check, check_model
from fjdl.gradcheck._mlp import check_mlp, numerical_gradient_mlp
from fjdl.gradcheck._numerical import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_EPSILON,
    default_epsilon,
    numerical_gradient,
    relative_difference,
)
from fjdl.gradcheck._report import (
    SCALES,
    VERDICTS,
    Coordinate,
    Direction,
    GradCheckResult,
    LeafDifference,
    scale_for,
    verdict_for,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_EPSILON",
    "SCALES",
    "VERDICTS",
    "Coordinate",
    "Direction",
    "GradCheckResult",
    "LeafDifference",
    "check",
    "check_mlp",
    "check_model",
    "default_epsilon",
    "numerical_gradient",
    "numerical_gradient_mlp",
    "relative_difference",
    "scale_for",
    "verdict_for",
]
