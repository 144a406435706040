"""What a two-sided difference gets wrong besides truncation: kinks (the one-sided slopes) and
rounding (one unit in the last place of ``J``, or its rounding error, measured)."""

import math

import jax
import numpy as np

from fjdl.gradcheck._numerical import narrowest_dtype, perturbed_values
from fjdl.gradcheck._report import to_host

# The interface of this module to the rest of fjdl.gradcheck (and its public names).
__all__ = [
    "compare_coordinate",
    "coordinate_rounding",
    "measure_noise",
    "rounding_of_directions",
    "step_sizes",
]

_NOISE_SAMPLE = 64
"""Coordinates at which the rounding error of ``J`` is measured (see :func:`measure_noise`)."""


_KINK_RTOL = {"float64": 1e-3, "float32": 0.1}
"""One-sided slopes differing by more than this fraction of their size mark a kink, by dtype. It
must exceed what curvature gives a step, ``|F - B| = eps |J''|``: at float64's 1e-7, 0.1% leaves
room for ``|J''|`` up to 2e4 times ``|J'|``; at float32's 1e-3 it would take a sine near its peak
(``|J''| > 2 |J'|``) for a kink, and 10% leaves room for 200 times."""


_KINK_NOISE = {"float64": 1e3, "float32": 64.0}
"""Rounding allowance of that test by dtype, in units of ``max(machine_eps * |J|, noise) /
epsilon`` (``noise`` measured by :func:`measure_noise`). float64's step of 1e-7 makes a jump of the slope
some 1e4 units: the allowance can be generous. float32's step of 1e-3 makes a unit 1e4 times
coarser, a jump a few units: the allowance comes down to where rounding still cannot reach
(``|F - B|`` from rounding alone has an rms of about ``sqrt(6) noise / epsilon``, 0.7 units for a
``J`` rounded once)."""


_ONE_SIDED_MATCH = 0.25
"""A kink is also recognized where the analytic derivative lies within this fraction of
``|forward - backward|`` of one one-sided slope (smooth curvature puts it midway, at 1/2)."""


_ONE_SIDED_NOISE = {"float64": 64.0, "float32": 8.0}
"""Rounding allowance of that test by dtype, in the units of :data:`_KINK_NOISE`."""


def step_sizes(theta, epsilon):
    """The steps actually taken, up ``fl(theta + eps) - theta`` and down ``theta - fl(theta -
    eps)``, as host float64 arrays (the arithmetic in ``theta``'s dtype, as the check did it)."""
    theta = np.asarray(jax.device_get(theta)).ravel()
    step = np.asarray(epsilon, theta.dtype)
    t = theta.astype(np.float64)
    return (theta + step).astype(np.float64) - t, t - (theta - step).astype(np.float64)


def compare_coordinate(
    f0, plus, minus, up, down, analytic, dtype, kink=None, analytic_up=None, analytic_down=None,
    noise=None,
):  # fmt: skip
    """The numerical derivative to compare with ``analytic``, and where a kink was found.

    Given ``J(theta)``, ``J(theta + up)`` and ``J(theta - down)`` (host float64 vectors, one
    entry per coordinate or direction), the slopes are two-sided ``c = (J+ - J-) / (up + down)``,
    forward ``F = (J+ - J0) / up`` and backward ``B = (J0 - J-) / down``. A smooth ``J`` puts ``F``
    and ``B`` on either side of the derivative, at ``+-eps J'' / 2``; at a kink they differ by the
    jump of the slope, and the derivative autodiff reports is one of them (ReLU's derivative at 0
    is taken as 0 or 1 by convention) or their mean ``c`` (``sign(0) = 0``, as fjdl's L1 term
    takes it). A kink is recognized (unless ``kink`` gives the mask, found exactly) where
    ``|F - B|`` exceeds rounding and

    - exceeds ``_KINK_RTOL`` of ``|F| + |B|`` (a jump no small step explains), or
    - ``analytic`` lies within ``_ONE_SIDED_MATCH * |F - B|`` of ``F`` or of ``B``: one-sided,
      where smooth curvature puts it midway, ``|F - B| / 2`` from each.

    There the nearest of ``F``, ``B`` and ``c`` is compared; a wrong gradient disagrees with all
    three (and on a smooth coordinate that a large step's curvature made look like a kink, ``c``
    is the nearest, as if no kink had been found). The second test looks at ``analytic``, but
    what it can hide is bounded: it could take for a kink a
    bug no larger than ``(1/2 + _ONE_SIDED_MATCH) |F - B|``, which on a smooth coordinate is
    ``eps |J''|``, the error of a one-sided difference itself. ``analytic_up`` and
    ``analytic_down`` (default ``analytic``) are what ``F`` and ``B`` estimate when the two steps
    differ (a direction's rounded steps). The rounding allowances are in units of one unit in the
    last place of ``J``, or of ``noise``, ``J``'s rounding error measured by :func:`measure_noise`, when
    larger (a ``J`` that is a small difference of large terms, a cross-entropy near 0 from large
    logits, has rounding errors far above its last place); where that underestimates, a few kinks
    may be rounding, and the values compared there stay within rounding of each other.
    """
    a_up = analytic if analytic_up is None else analytic_up
    a_down = analytic if analytic_down is None else analytic_down
    with np.errstate(divide="ignore", invalid="ignore"):
        two_sided = (plus - minus) / (up + down)
        forward, backward = (plus - f0) / up, (f0 - minus) / down
    off_f, off_b = forward - a_up, backward - a_down
    if kink is None:
        spread = np.abs(forward - backward)
        scale = np.maximum(np.maximum(np.abs(plus), np.abs(minus)), abs(f0))
        with np.errstate(divide="ignore", invalid="ignore"):
            error = np.maximum(np.finfo(dtype).eps * scale, noise or 0.0)
            unit = error / np.minimum(up, down)
        size = _KINK_RTOL[np.dtype(dtype).name] * (np.abs(forward) + np.abs(backward))
        jump = spread > np.maximum(_KINK_NOISE[np.dtype(dtype).name] * unit, size)
        near = np.minimum(np.abs(off_f), np.abs(off_b))
        one_sided = (spread > _ONE_SIDED_NOISE[np.dtype(dtype).name] * unit) & (
            near <= _ONE_SIDED_MATCH * spread
        )
        kink = jump | one_sided
    nearer = analytic + np.where(np.abs(off_f) <= np.abs(off_b), off_f, off_b)
    # Their mean is a derivative there too, for autodiff that takes sign(0) = 0 (fjdl's L1).
    nearer = np.where(np.abs(two_sided - analytic) < np.abs(nearer - analytic), two_sided, nearer)
    return np.where(kink, nearer, two_sided), np.asarray(kink, bool)


def _rounding(f0, plus, minus, up, down, dtype, noise=None):
    """The error rounding alone gives a two-sided difference (host float64, one entry per
    coordinate or direction): one unit in the last place of ``J``, or ``sqrt(2) * noise`` (the
    rms of ``J(+)`` and ``J(-)``'s errors, ``noise`` each, see :func:`measure_noise`) when larger, over
    the two-sided step; ``inf`` where the step vanished (``theta +- eps`` rounded to ``theta``)."""
    scale = np.maximum(np.maximum(np.abs(plus), np.abs(minus)), abs(f0))
    error = np.maximum(np.finfo(dtype).eps * scale, math.sqrt(2) * (noise or 0.0))
    span = up + down
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, error / np.where(span > 0, span, 1.0), np.inf)


def _spread(leaves, k):
    """``k`` coordinates spread evenly over all the leaves (all of them when there are fewer), as
    one sorted index array per leaf."""
    bounds = np.cumsum([0, *(leaf.size for leaf in leaves)])
    flat = np.unique(np.linspace(0, bounds[-1] - 1, min(k, int(bounds[-1]))).round().astype(int))
    return [flat[(flat >= lo) & (flat < hi)] - lo for lo, hi in zip(bounds, bounds[1:])]


def measure_noise(f, leaves, treedef, epsilon, chunk_size, per_coordinate) -> float:
    """The rounding error of one evaluation of ``J`` (its rms, ``sigma``), measured.

    One unit in the last place of ``J`` underestimates it wherever ``J`` is computed through many
    roundings, or is a small difference of large terms, or comes out of a ``log`` of a number
    near 1 (a cross-entropy near 0). At ``_NOISE_SAMPLE`` coordinates spread over the leaves, the
    two-sided differences at the steps ``epsilon`` and ``epsilon / 2`` are compared: they differ
    by ``eps^2 J^{(3)} / 8`` from truncation (below rounding at the default steps) and, from
    rounding, by ``sigma sqrt(2 / (2 eps)^2 + 2 / eps^2)`` rms (with the steps actually taken).
    Both steps move ``J`` as far as the check does, so the four roundings are as independent as
    the check's own (a smaller step may leave ``J`` on the same rounded value, and measure 0).
    The median of the size, robust to a few kinks, over 0.6745 (the median of ``|N(0, 1)|``)
    gives ``sigma``; a sample where kinks crowd gives more, which is right: those coordinates
    cannot be checked either.
    """
    picks = _spread(leaves, _NOISE_SAMPLE)
    multiples = (1.0, -1.0, 0.5, -0.5)
    values = perturbed_values(
        f, leaves, treedef, epsilon, chunk_size, per_coordinate, picks, multiples
    )
    samples = []
    for leaf, pick, found in zip(leaves, picks, values):
        plus, minus, half_plus, half_minus = (to_host(v) for v in found)
        span = sum(s[pick] for s in step_sizes(leaf, epsilon))
        half = sum(s[pick] for s in step_sizes(leaf, epsilon / 2))
        moved = (span > 0) & (half > 0)  # a step below one unit of theta's last place is none
        span, half = span[moved], half[moved]
        gap = (plus - minus)[moved] / span - (half_plus - half_minus)[moved] / half
        samples.append(np.abs(gap) / np.sqrt(2 / span**2 + 2 / half**2))
    sizes = np.concatenate(samples)
    sizes = sizes[np.isfinite(sizes)]
    return float(np.median(sizes) / 0.6745) if sizes.size else 0.0


def coordinate_rounding(f0, leaves, values, picks, epsilon, noise=None):
    """Per leaf, flat at the checked coordinates: the rounding error of each two-sided difference
    (:func:`_rounding`); ``values`` holds ``(J(+), J(-))`` per leaf, as checked."""
    rounding = []
    for i, (leaf, (plus, minus)) in enumerate(zip(leaves, values)):
        pick = np.arange(leaf.size) if picks is None else picks[i]
        up, down = (s[pick] for s in step_sizes(leaf, epsilon))
        rounding.append(_rounding(f0, to_host(plus), to_host(minus), up, down, leaf.dtype, noise))
    return rounding


def rounding_of_directions(f0, dirs, epsilon, leaves, noise=None):
    """The rounding error of each direction's two-sided difference (:func:`_rounding`)."""
    plus, minus = to_host(dirs[0]), to_host(dirs[1])
    eps = np.full(plus.shape, float(epsilon))
    return _rounding(f0, plus, minus, eps, eps, narrowest_dtype(leaves), noise)
