"""What a gradient check found: the verdict on the scale of its dtype, the leaves and coordinates
that disagree most, and the warnings, as a :class:`GradCheckResult`."""

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from fjdl._types import Params
from fjdl.gradcheck._numerical import DEFAULT_EPSILON, narrowest_dtype

# The interface of this module to the rest of fjdl.gradcheck (and its public names).
__all__ = [
    "Coordinate",
    "Direction",
    "GradCheckResult",
    "LeafDifference",
    "SCALES",
    "VERDICTS",
    "build_result",
    "precision_of",
    "scale_for",
    "to_host",
    "verdict_for",
    "with_noise_measured",
    "working_dtype",
]

VERDICTS = (
    (1e-7, "great", "great: the gradient is correct"),
    (1e-5, "fine", "fine, but look closer: most likely correct"),
    (1e-3, "suspicious", "suspicious: look for a bug"),
    (math.inf, "bug", "bug: backprop is wrong"),
)
"""The course's scale, for float64: ``(bound, verdict, message)``; see :data:`SCALES`."""


SCALES = {"float64": (1e-7, 1e-5, 1e-3), "float32": (1e-4, 1e-3, 1e-2)}
"""Upper bounds of "great", "fine" and "suspicious" by dtype (above the last: "bug"). float64 has
the course's; float32's is derived in :mod:`fjdl.gradcheck`. 16-bit floats have none: a check
refuses them."""


def scale_for(dtype) -> tuple[float, float, float]:
    """The verdict's scale in ``dtype``: the upper bounds of "great", "fine" and "suspicious".

    float64: the course's ``(1e-7, 1e-5, 1e-3)``; float32: ``(1e-4, 1e-3, 1e-2)`` (derived in
    :mod:`fjdl.gradcheck`). A 16-bit float is refused: rounding alone gives its differences the
    size a doubled gradient on a small leaf shows.

    Example:
      >>> scale_for(jnp.float64), scale_for(jnp.float32)
      ((1e-07, 1e-05, 0.001), (0.0001, 0.001, 0.01))
    """
    dt = np.dtype(dtype)
    if dt.name in SCALES:
        return SCALES[dt.name]
    if dt.name in DEFAULT_EPSILON:
        u, eps = float(jnp.finfo(dt).eps), DEFAULT_EPSILON[dt.name]
        least = u / (2 * eps) + eps**2 / 6
        raise ValueError(
            f"dtype must be float32 or float64 for a gradient check, got {dt.name}: rounding alone "
            f"gives its two-sided differences a relative error near {least:.0e}"
            " at the best epsilon, what a doubled gradient on a small leaf shows. Pass "
            "dtype=jnp.float32 or dtype=jnp.float64 (params, and the arrays f closes over, cast)."
        )
    raise TypeError(f"dtype must be a float dtype like jnp.float64, got {dtype!r}")


@dataclasses.dataclass(frozen=True)
class LeafDifference:
    """The relative difference of one leaf, with the norms of its two gradients (over the
    coordinates checked: all of them, or the sampled ones), and the relative difference rounding
    alone gives it (see :mod:`fjdl.gradcheck`)."""

    leaf: str
    difference: float
    analytic_norm: float
    numerical_norm: float
    n_checked: int | None = None
    rounding: float = 0.0


@dataclasses.dataclass(frozen=True)
class Coordinate:
    """One coordinate's analytic and numerical derivatives and their absolute difference."""

    leaf: str
    index: tuple[int, ...]
    analytic: float
    numerical: float
    abs_difference: float


@dataclasses.dataclass(frozen=True)
class Direction:
    """One random unit direction ``u`` of a sampled check: the analytic directional derivative
    ``<g, u>`` and the numerical ``(J(theta + eps u) - J(theta - eps u)) / (2 eps)`` (the nearer
    one-sided difference when ``kink``)."""

    index: int
    analytic: float
    numerical: float
    abs_difference: float
    kink: bool


def verdict_for(difference: float, dtype=jnp.float64) -> str:
    """The verdict for a relative difference on ``dtype``'s scale (:func:`scale_for`): in float64
    the course's, ``"great"`` (< 1e-7), ``"fine"`` (< 1e-5, look closer), ``"suspicious"``
    (< 1e-3) or ``"bug"``; in float32, < 1e-4, < 1e-3, < 1e-2 or above.

    Example:
      >>> verdict_for(3e-9), verdict_for(2e-6), verdict_for(1e-4), verdict_for(0.3)
      ('great', 'fine', 'suspicious', 'bug')
      >>> verdict_for(1e-4, jnp.float32), verdict_for(2e-3, jnp.float32)
      ('fine', 'suspicious')
    """
    for bound, (_, name, _) in zip((*scale_for(dtype), math.inf), VERDICTS):
        if difference < bound:
            return name
    return "bug"  # NaN


def _verdict(difference: float, rounding: float, dtype) -> str:
    """:func:`verdict_for`, but never ``"bug"`` where rounding alone explains the difference (it
    gives at least half of it): ``"suspicious"`` there."""
    verdict = verdict_for(difference, dtype)
    return "suspicious" if verdict == "bug" and _explains(rounding, difference) else verdict


def _explains(rounding: float, difference: float) -> bool:
    return bool(rounding * 2 >= difference)


def _describe_scale(dtype) -> str:
    great, fine, suspicious = (f"{b:.0e}".replace("e-0", "e-") for b in scale_for(dtype))
    return (
        f"scale ({np.dtype(dtype).name}): < {great} great, < {fine} fine (look closer), "
        f"< {suspicious} suspicious, above: bug"
    )


@dataclasses.dataclass(frozen=True)
class GradCheckResult:
    """What :func:`check` found. ``print(result)`` gives a readable report.

    Attributes:
      difference: the relative difference over all parameters (see :func:`relative_difference`).
        In a sampled check, the larger of the two estimates of it: over the sampled coordinates
        (each leaf's sums weighted by its size over its sample), and over the random directions.
      verdict: on ``dtype``'s scale (:func:`scale_for`), in float64 the course's: ``"great"``
        (< 1e-7), ``"fine"`` (< 1e-5, look closer), ``"suspicious"`` (< 1e-3) or ``"bug"``
        (>= 1e-3; also for NaN); in float32 < 1e-4, < 1e-3, < 1e-2 or above. Never ``"bug"``
        where rounding alone explains the difference (see :mod:`fjdl.gradcheck`): then
        ``"suspicious"``, with a warning that says so.
      leaves: one :class:`LeafDifference` per leaf, in the order of ``params`` (none when only
        directions were checked).
      worst_coordinates: the ``top_k`` :class:`Coordinate` s with the largest absolute difference.
      kinks: coordinates ``(leaf, index)`` whose two-sided difference straddles a kink (a ReLU at 0),
        where the numerical gradient is not to be trusted.
      warnings: sentences about kinks, float32 and anything else that weakens the check.
      epsilon, dtype, n_params: how the check ran.
      analytic, numerical: the two gradients, as pytrees of numpy float64 arrays. On a kink,
        ``numerical`` holds the nearest to ``analytic`` of the two one-sided differences and
        their mean, the two-sided one (see :func:`check`); NaN where a sampled check did not
        look.
      n_checked: coordinates compared (``n_params`` unless sampled).
      directions: the :class:`Direction` s of a sampled check.
      direction_difference: the relative difference over the directional derivatives (``None``
        without directions).
    """

    difference: float
    verdict: str
    leaves: tuple[LeafDifference, ...]
    worst_coordinates: tuple[Coordinate, ...]
    kinks: tuple[tuple[str, tuple[int, ...]], ...]
    warnings: tuple[str, ...]
    epsilon: float
    dtype: str
    n_params: int
    analytic: Params = dataclasses.field(repr=False, compare=False)
    numerical: Params = dataclasses.field(repr=False, compare=False)
    n_checked: int | None = None
    directions: tuple[Direction, ...] = ()
    direction_difference: float | None = None

    @property
    def sampled(self) -> bool:
        """Whether only some coordinates, or random directions, were checked."""
        partial = self.n_checked is not None and self.n_checked != self.n_params
        return partial or bool(self.directions)

    @property
    def worst_leaves(self) -> tuple[LeafDifference, ...]:
        """The leaves sorted by relative difference, worst first."""
        return tuple(sorted(self.leaves, key=lambda d: -_nan_last(d.difference)))

    @property
    def passed(self) -> bool:
        """Great or fine on ``dtype``'s scale: ``difference < 1e-5`` in float64, ``< 1e-3`` in
        float32 (the ``fjdl gradcheck`` exit status)."""
        return self.verdict in ("great", "fine")

    def __str__(self) -> str:
        message = next(m for _, name, m in VERDICTS if name == self.verdict)
        lines = [
            f"gradient check: {message}",
            f"  relative difference {self.difference:.3e}  ({self.dtype}, epsilon {self.epsilon:g},"
            f" {self.n_params} parameters in {len(jax.tree.leaves(self.analytic))} leaves)",
            f"  {_describe_scale(self.dtype)}",
        ]
        if self.sampled:
            lines.append(
                f"  sampled: {self.n_checked} of {self.n_params} coordinates and "
                f"{len(self.directions)} random directions; coordinates not sampled were not checked"
            )
        if self.leaves:
            lines.append("worst leaves (relative difference):")
            width = max(len(d.leaf) for d in self.leaves)
            for d in self.worst_leaves[:5]:
                lines.append(
                    f"  {d.leaf:<{width}}  {d.difference:.3e}"
                    f"  ({_verdict(d.difference, d.rounding, self.dtype)})"
                )
        if self.worst_coordinates:
            width = max(len(c.leaf) for c in self.worst_coordinates)
            lines.append("worst coordinates:")
            lines.append(
                f"  {'leaf':<{width}}  {'index':<10} {'analytic':>13} {'numerical':>13}"
                f" {'|diff|':>10}"
            )
            for c in self.worst_coordinates:
                idx = ",".join(str(i) for i in c.index)
                lines.append(
                    f"  {c.leaf:<{width}}  ({idx + ')':<9} {c.analytic:>13.6e}"
                    f" {c.numerical:>13.6e} {c.abs_difference:>10.3e}"
                )
        if self.directions and self.direction_difference is not None:
            lines.append(
                f"random directions: relative difference {self.direction_difference:.3e} "
                f"({verdict_for(self.direction_difference, self.dtype)}) over"
                f" {len(self.directions)}"
            )
        if self.warnings:
            lines.append("warnings:")
            lines.extend(f"  - {w}" for w in self.warnings)
        return "\n".join(lines)


def _nan_last(x):
    return math.inf if math.isnan(x) else x


def _np_relative_difference(a, b, weights=None) -> float:
    """:func:`relative_difference` on the host in float64, whatever the x64 mode, over lists of
    arrays; ``weights`` scale each pair's sums of squares."""
    weights = [1.0] * len(a) if weights is None else weights
    num = _weighted_norm([x - y for x, y in zip(a, b)], weights)
    den = _weighted_norm(a, weights) + _weighted_norm(b, weights)
    return num / den if den > 0 else (0.0 if num == 0 else math.nan)


def to_host(x):
    return np.asarray(jax.device_get(x), dtype=np.float64)


def _describe_kinks(kinks, limit=5):
    shown = ", ".join(f"{leaf} ({','.join(map(str, idx))})" for leaf, idx in kinks[:limit])
    more = f" and {len(kinks) - limit} more" if len(kinks) > limit else ""
    return (
        f"{len(kinks)} coordinate(s) sit on a kink (a ReLU pre-activation, or a weight under L1,"
        " within epsilon of 0), "
        f"where the two-sided difference straddles the kink and is not a derivative: {shown}{more}."
        " They are compared with the nearest of the two one-sided differences and their mean; to"
        " check them for sure, move the point or use smooth activations."
    )


def build_result(
    names, treedef, analytic, numerical, kink_masks, epsilon, dtype, top_k,
    checked=None, directions=(), rounding=None, direction_rounding=None, noise=None,
):  # fmt: skip
    """``GradCheckResult`` from per-leaf host arrays of the two gradients; ``checked`` (one flat
    index array per leaf, ``None``: every coordinate) and ``directions`` for a sampled check;
    ``rounding``: per leaf, the rounding error of each checked coordinate's difference (see
    :func:`_rounding`), ``direction_rounding`` the same per direction; ``noise``: the rounding
    error of ``J`` measured by :func:`measure_noise`, when it was."""
    analytic = [to_host(a) for a in analytic]
    numerical = [to_host(n) for n in numerical]
    n_params = int(sum(a.size for a in analytic))
    if checked is None:
        checked = [np.arange(a.size) for a in analytic]
    n_vanished = 0
    if rounding is not None:  # a step that vanished checked nothing: leave those coordinates out
        vanished = [np.isposinf(r) for r in rounding]
        n_vanished = int(sum(v.sum() for v in vanished))
        checked = [c[~v] for c, v in zip(checked, vanished)]
        rounding = [r[~v] for r, v in zip(rounding, vanished)]
    a_seen = [a.ravel()[c] for a, c in zip(analytic, checked)]
    n_seen = [n.ravel()[c] for n, c in zip(numerical, checked)]
    n_checked = int(sum(c.size for c in checked))
    # Each leaf's sample stands for the whole leaf: its sums of squares count size / sampled.
    weights = [a.size / max(c.size, 1) for a, c in zip(analytic, checked)]
    leaves, coords, estimates = [], [], []
    if n_checked:
        leaves = _leaf_differences(names, a_seen, n_seen, checked, rounding)
        coords = _worst_coordinates(names, analytic, a_seen, n_seen, checked, top_k)
        estimates.append(_np_relative_difference(a_seen, n_seen, weights))
    kinks = [
        (name, tuple(int(v) for v in np.unravel_index(i, a.shape)))
        for name, mask, a in zip(names, kink_masks, analytic)
        for i in np.flatnonzero(np.asarray(mask).ravel())
    ]
    direction_difference = None
    if len(directions):
        a_dir = np.array([d.analytic for d in directions])
        n_dir = np.array([d.numerical for d in directions])
        direction_difference = _np_relative_difference([a_dir], [n_dir])
        estimates.append(direction_difference)
    difference = max(estimates, key=_nan_last) if estimates else math.nan  # nothing checked
    warnings = _warnings_of(kinks, directions, dtype, epsilon, n_vanished, difference)
    floors = [0.0]
    if rounding is not None and n_checked:
        floors.append(_floor(rounding, a_seen, n_seen, weights))
    if direction_rounding is not None and len(directions):
        floors.append(_floor([direction_rounding], [a_dir], [n_dir]))
    warnings += _rounding_note(max(floors), difference, n_params, epsilon, dtype, noise)
    verdict = _verdict(difference, max(floors), dtype)
    return GradCheckResult(
        difference=difference,
        verdict=verdict,
        leaves=tuple(leaves),
        worst_coordinates=tuple(coords[:top_k]),
        kinks=tuple(kinks),
        warnings=tuple(warnings),
        epsilon=float(epsilon),
        dtype=np.dtype(dtype).name,
        n_params=n_params,
        analytic=jax.tree_util.tree_unflatten(treedef, analytic),
        numerical=jax.tree_util.tree_unflatten(treedef, numerical),
        n_checked=n_checked,
        directions=tuple(directions),
        direction_difference=direction_difference,
    )


def _leaf_differences(names, a_seen, n_seen, checked, rounding) -> list:
    """One :class:`LeafDifference` per leaf, from its checked coordinates."""
    leaves = []
    for i, (name, a, n, c) in enumerate(zip(names, a_seen, n_seen, checked)):
        floor = 0.0 if rounding is None else _floor([rounding[i]], [a], [n])
        leaves.append(
            LeafDifference(
                name, _np_relative_difference([a], [n]), float(np.linalg.norm(a)),
                float(np.linalg.norm(n)), int(c.size), floor,
            )
        )  # fmt: skip
    return leaves


def _warnings_of(kinks, directions, dtype, epsilon, n_vanished: int, difference) -> list[str]:
    """What a check's result warns about: kinks, directions across a kink, a low precision,
    coordinates whose step vanished, a difference that is not finite."""
    warnings = []
    if kinks:
        warnings.append(_describe_kinks(kinks))
    n_kinked = sum(d.kink for d in directions)
    if n_kinked:
        warnings.append(
            f"{n_kinked} of {len(directions)} random direction(s) cross a kink within epsilon;"
            " they are compared with the nearest of the one-sided differences and their mean."
        )
    if np.dtype(dtype).itemsize < 8:
        warnings.append(
            f"checked in {np.dtype(dtype).name} (epsilon {epsilon:g}), on its own scale: a"
            " gradient doubled on a leaf or coordinate holding a fraction f of the gradient's norm"
            " shows about f / 2, so a doubling below f = 2% can pass here; use dtype=jnp.float64"
            " for the course's 1e-7 threshold."
        )
    if n_vanished:
        warnings.append(
            f"{n_vanished} coordinate(s) were not checked: at epsilon {epsilon:g}, theta + epsilon"
            f" and theta - epsilon round to theta in {np.dtype(dtype).name} (epsilon is below half"
            " a unit in the last place of theta); a larger epsilon, or epsilon=None, checks them."
        )
    if not np.isfinite(difference):
        warnings.append("the difference is not finite: a gradient or the cost holds NaN or inf.")
    return warnings


def _floor(rounding, a, b, weights=None) -> float:
    """The relative difference rounding alone gives: the norm of the rounding errors (lists of
    arrays, one per leaf) over the norms of the two gradients, as :func:`_np_relative_difference`
    weighs them."""
    weights = [1.0] * len(a) if weights is None else weights
    norms = [_weighted_norm(vs, weights) for vs in (rounding, a, b)]
    return norms[0] / max(norms[1] + norms[2], math.ulp(0.0))


def _weighted_norm(vectors, weights) -> float:
    """``sqrt(sum_l w_l ||v_l||^2)``: a norm over all leaves, each sample standing for its leaf."""
    return math.sqrt(sum(w * float(np.sum(np.square(v))) for w, v in zip(weights, vectors)))


def _worst_coordinates(names, analytic, a_seen, n_seen, checked, top_k):
    """The ``top_k`` coordinates of each leaf with the largest ``|analytic - numerical|``, merged
    and sorted, worst first (NaN counts as worst)."""
    coords = []
    for name, full, a, n, c in zip(names, analytic, a_seen, n_seen, checked):
        abs_diff = np.abs(a - n)
        abs_diff = np.where(np.isnan(abs_diff), np.inf, abs_diff)
        for i in np.argsort(-abs_diff, kind="stable")[:top_k]:
            idx = tuple(int(v) for v in np.unravel_index(c[i], full.shape))
            coords.append(Coordinate(name, idx, float(a[i]), float(n[i]), float(abs_diff[i])))
    return sorted(coords, key=lambda c: -c.abs_difference)


def _rounding_note(floor, difference, n_params, epsilon, dtype, noise=None):
    """A sentence when rounding alone explains a verdict short of "great": ``difference`` at most
    twice ``floor``, the relative difference rounding alone gives (:func:`_rounding` over the
    norms of the two gradients). A "bug" verdict is then lowered to "suspicious"."""
    if verdict_for(difference, dtype) == "great" or not _explains(floor, difference):
        return []
    error = "one unit in the last place of J per evaluation"
    if noise:
        error += f", or the {noise:.1e} measured when larger"
    return [
        f"rounding alone ({error}, over the step 2 epsilon) gives a relative difference of about"
        f" {floor:.1e} here, over {n_params} parameters: a difference of this size is what a"
        f" correct gradient shows at epsilon {epsilon:g} (a larger epsilon lowers it, and brings"
        " more kinks within reach). The check cannot tell a bug of this size from rounding."
    ]


def precision_of(dtype):
    """``(context, dtype)``: float64 runs inside ``jax.enable_x64(True)``."""
    if dtype is None:
        return contextlib.nullcontext(), None
    dt = np.dtype(dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"dtype must be a float dtype like jnp.float64, got {dtype!r}")
    return (jax.enable_x64(True) if dt.itemsize == 8 else contextlib.nullcontext()), dt


def with_noise_measured(result, measure, dtype):
    """``result(noise)`` with ``J``'s rounding error measured (:func:`measure_noise`) where it can matter:
    always below float64 (it sets the kinks' rounding allowance and the floor of the verdict), in
    float64 only for a check short of "fine" (a pass of evaluations saved otherwise)."""
    if np.dtype(dtype).itemsize < 8:
        return result(measure())
    first = result(None)
    return first if first.passed else result(measure())


def working_dtype(leaves, dtype):
    """The dtype whose scale the verdict takes: the narrowest leaf's, refused when it has none
    (naming ``dtype``, the argument that changes it)."""
    work = narrowest_dtype(leaves)
    try:
        scale_for(work)
    except ValueError as err:
        if dtype is None:
            raise ValueError(f"{err} (params are {work.name}; dtype=None keeps them)") from None
        raise
    return work
