"""Gradient checking: backprop against a two-sided numerical gradient.

For every coordinate :math:`\\theta_i` of every parameter, the course's two-sided difference

.. math::
  \\frac{\\partial J}{\\partial \\theta_i} \\approx
  \\frac{J(\\theta + \\varepsilon e_i) - J(\\theta - \\varepsilon e_i)}{2 \\varepsilon}

is compared with the analytic gradient (backprop, or ``jax.grad``) by the relative difference

.. math::
  \\text{difference} = \\frac{\\lVert g - g_{approx} \\rVert_2}
                             {\\lVert g \\rVert_2 + \\lVert g_{approx} \\rVert_2}

over the whole pytree. The course's scale: below ``1e-7`` great; below ``1e-5`` fine, but look
closer; up to ``1e-3`` suspicious; above ``1e-3`` there is almost certainly a bug.

.. warning::
  The ``1e-7`` threshold needs **float64**. In float32, ``J`` carries a rounding error of about
  ``1e-7 * |J|``, which the division by ``2 epsilon = 2e-7`` turns into an error of order 1 in every
  coordinate: a correct gradient then shows a difference of ``1e-3`` to ``1e-2`` from rounding
  alone. :func:`check` takes ``dtype=jnp.float64`` to run inside ``jax.enable_x64(True)`` without
  switching the whole program to 64 bits.

Two functions do the counting: :func:`numerical_gradient` works on any ``f`` and any pytree, with
``vmap`` over coordinates in chunks; :func:`numerical_gradient_mlp` computes the same numbers for an
:class:`fjdl.model.MLP`'s cost far faster, because a perturbed parameter of layer ``l`` changes one
column of layer ``l`` only (see its docstring).

Dropout must be off during a check: each evaluation of ``J`` would draw a new mask, so
``J(theta + eps) - J(theta - eps)`` would measure the change of mask, not of ``theta``; and with one
fixed key the function checked is not the one training differentiates (whose mask changes every
step). Check with ``train=False`` or with ``keep_probs`` of 1.
"""

import contextlib
import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fjdl import _checks, batchnorm, losses, model, nn
from fjdl._types import Params, State

DEFAULT_CHUNK_SIZE = 512
"""Coordinates evaluated together by one ``vmap`` in :func:`numerical_gradient_mlp`."""

_GENERIC_BUDGET = 1 << 22
"""Elements of perturbed parameter copies held at once by :func:`numerical_gradient` (32 MiB in
float64); it sets the default chunk size."""

VERDICTS = (
    (1e-7, "great", "great: the gradient is correct"),
    (1e-5, "fine", "fine, but look closer: most likely correct"),
    (1e-3, "suspicious", "suspicious: look for a bug"),
    (math.inf, "bug", "bug: backprop is wrong"),
)

_KINKED_ACTIVATIONS = ("relu", "leaky_relu")

_KINK_RTOL = 1e-3
"""One-sided slopes differing by more than this fraction of their size mark a kink."""

_KINK_NOISE = 1e3
"""Rounding allowance of the one-sided slopes, in units of ``machine_eps * |J| / epsilon``."""


# --------------------------------------------------------------------------------------------
# Validation and leaf names


def _leaf_name(path) -> str:
    """``layer 2 W`` for fjdl's tuple-of-dicts parameters, else the key path like ``['w']``."""
    if (
        len(path) == 2
        and isinstance(path[0], jax.tree_util.SequenceKey)
        and isinstance(path[1], jax.tree_util.DictKey)
    ):
        return f"layer {path[0].idx + 1} {path[1].key}"
    return jax.tree_util.keystr(path) or "params"


def _flatten(params, what="params"):
    """Leaves (as arrays), their names and the treedef, checking that every leaf is a float array."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not with_path:
        raise ValueError(f"{what} must be a non-empty pytree of float arrays, got {params!r}")
    leaves, names = [], []
    for path, leaf in with_path:
        name = _leaf_name(path)
        try:
            arr = jnp.asarray(leaf)
        except TypeError:
            raise TypeError(
                f"{what} leaf {name} must be a float array, got {type(leaf).__name__}"
            ) from None
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(f"{what} leaf {name} must be a float array, got dtype {arr.dtype}")
        leaves.append(arr)
        names.append(name)
    return leaves, names, treedef


def _check_epsilon(epsilon):
    _checks.check_positive("epsilon", epsilon)
    if np.ndim(epsilon) != 0:
        raise ValueError(f"epsilon must be a scalar, got shape {np.shape(epsilon)}")


def _check_scalar_output(f, params):
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar, got {type(f).__name__}")
    out = jax.eval_shape(f, params)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"f must return a scalar, got {shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"f must return a float scalar, got dtype {out.dtype}")


def _check_grads(grads, params):
    p_leaves, p_names, p_def = _flatten(params)
    g_with_path, g_def = jax.tree_util.tree_flatten_with_path(grads)
    g_names = [_leaf_name(path) for path, _ in g_with_path]
    if g_def != p_def:
        missing = [n for n in p_names if n not in g_names]
        extra = [n for n in g_names if n not in p_names]
        detail = "; ".join(
            s
            for s in (
                f"missing leaves {missing}" if missing else "",
                f"unexpected leaves {extra}" if extra else "",
            )
            if s
        )
        raise ValueError(
            "grads must have the structure of params"
            + (f": {detail}" if detail else f", got {g_def} instead of {p_def}")
        )
    g_leaves, _, _ = _flatten(grads, "grads")
    for name, p, g in zip(p_names, p_leaves, g_leaves):
        if g.shape != p.shape:
            raise ValueError(
                f"grads leaf {name} must have the shape of params' {name}, {p.shape}, got {g.shape}"
            )
    return g_leaves


# --------------------------------------------------------------------------------------------
# Generic numerical gradient


def _chunk(chunk_size, n, leaf_size):
    if chunk_size is None:
        chunk_size = max(1, _GENERIC_BUDGET // max(leaf_size, 1))
    else:
        _checks.check_positive_int("chunk_size", chunk_size)
    return max(1, min(chunk_size, n))


def _map_chunks(fn, n, chunk):
    """``vmap(fn)`` over ``arange(n)`` in chunks of ``chunk`` (``lax.map`` over the chunks).

    The last chunk is padded by repeating the last coordinate, so the loop body is compiled once.
    """
    if n <= chunk:
        return jax.vmap(fn)(jnp.arange(n))
    n_chunks = -(-n // chunk)
    idx = jnp.minimum(jnp.arange(n_chunks * chunk), n - 1).reshape(n_chunks, chunk)
    out = lax.map(jax.vmap(fn), idx)
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk, *o.shape[2:])[:n], out)


def _perturbed_values(f, leaves, treedef, epsilon, chunk_size):
    """``(J(theta + eps e_i), J(theta - eps e_i))`` for every coordinate, as one flat pair per leaf.

    The coordinates of all leaves are numbered as one vector and mapped over together (and both
    signs by one more ``vmap``), so the compiled program holds a single copy of ``f``.
    """
    sizes = [leaf.size for leaf in leaves]
    offsets = np.cumsum([0, *sizes])
    n = int(offsets[-1])
    if n == 0:
        return [(jnp.zeros((0,), leaf.dtype),) * 2 for leaf in leaves]
    widest = max((leaf.dtype for leaf in leaves), key=lambda d: d.itemsize)
    signs = jnp.array([1.0, -1.0], widest)

    def at(c, sign):
        moved = []
        for leaf, size, offset in zip(leaves, sizes, offsets):
            local = c - offset
            # Out of this leaf: an out-of-bounds index, which the scatter drops.
            index = jnp.where((local >= 0) & (local < size), local, size)
            step = (sign * epsilon).astype(leaf.dtype)
            moved.append(leaf.ravel().at[index].add(step, mode="drop").reshape(leaf.shape))
        return f(jax.tree_util.tree_unflatten(treedef, moved))

    def both(c):
        values = jax.vmap(at, in_axes=(None, 0))(c, signs)
        return values[0], values[1]

    plus, minus = _map_chunks(both, n, _chunk(chunk_size, n, n))
    return [(plus[lo:hi], minus[lo:hi]) for lo, hi in zip(offsets[:-1], offsets[1:])]


def numerical_gradient(
    f: Callable[[Params], jax.Array],
    params: Params,
    epsilon: float = 1e-7,
    *,
    chunk_size: int | None = None,
) -> Params:
    """Two-sided numerical gradient of a scalar function of a pytree, for every coordinate.

    .. math::
      g_{approx, i} = \\frac{J(\\theta + \\varepsilon e_i) - J(\\theta - \\varepsilon e_i)}
                             {2 \\varepsilon}

    where :math:`J` is ``f``, :math:`\\theta` every coordinate of every leaf of ``params`` and
    :math:`\\varepsilon` is ``epsilon``. The coordinates of all leaves are evaluated by ``vmap`` in
    chunks (``lax.map`` over the chunks), inside one ``jit``, not by a Python loop; ``f`` must
    therefore be traceable. Use float64 for the course's thresholds (see the module's warning).
    For an :class:`fjdl.model.MLP`, :func:`numerical_gradient_mlp` gives the same numbers far
    faster.

    Args:
      f: ``params -> scalar``, the cost :math:`J`.
      params: a pytree of float arrays, :math:`\\theta`.
      epsilon: the step :math:`\\varepsilon` (> 0); the course's 1e-7.
      chunk_size: coordinates per ``vmap``; by default as many as keep the perturbed copies of the
        parameters under about 4M elements.

    Returns:
      A pytree with the structure, shapes and dtypes of ``params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     g = numerical_gradient(lambda t: jnp.sum(t["w"] ** 2), {"w": jnp.array([1.0, -2.0])})
      >>> [round(float(v), 6) for v in g["w"]]
      [2.0, -4.0]
    """
    _check_epsilon(epsilon)
    leaves, _, treedef = _flatten(params)
    _check_scalar_output(f, params)
    # One compiled program for every leaf (op-by-op dispatch of the vmapped f is far slower).
    values = jax.jit(lambda ls: _perturbed_values(f, ls, treedef, epsilon, chunk_size))(leaves)
    grads = [
        ((plus - minus) / (2 * epsilon)).astype(leaf.dtype).reshape(leaf.shape)
        for leaf, (plus, minus) in zip(leaves, values)
    ]
    return jax.tree_util.tree_unflatten(treedef, grads)


def relative_difference(a: Params, b: Params) -> jax.Array:
    """The course's relative difference of two gradients, over whole pytrees.

    .. math::
      \\frac{\\lVert a - b \\rVert_2}{\\lVert a \\rVert_2 + \\lVert b \\rVert_2}

    with every leaf's coordinates stacked into one vector; 0 when both are zero. It is symmetric and
    lies in [0, 1].

    Args:
      a, b: pytrees of the same structure and shapes.

    Returns:
      A scalar.

    Example:
      >>> float(relative_difference({"w": jnp.array([3.0, 0.0])}, {"w": jnp.array([0.0, 4.0])}))  # doctest: +ELLIPSIS
      0.7142857...
    """
    a_leaves, b_leaves = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        raise ValueError(
            f"a and b must have the same structure, got {jax.tree.structure(a)} and "
            f"{jax.tree.structure(b)}"
        )
    sq_diff = sq_a = sq_b = 0.0
    for x, y in zip(a_leaves, b_leaves):
        x, y = jnp.asarray(x), jnp.asarray(y)
        if x.shape != y.shape:
            raise ValueError(f"a and b must have the same shapes, got {x.shape} and {y.shape}")
        dt = jnp.promote_types(x.dtype, y.dtype)
        x, y = x.astype(dt), y.astype(dt)
        sq_diff = sq_diff + jnp.sum(jnp.square(x - y))
        sq_a = sq_a + jnp.sum(jnp.square(x))
        sq_b = sq_b + jnp.sum(jnp.square(y))
    num = jnp.sqrt(sq_diff)
    den = jnp.sqrt(sq_a) + jnp.sqrt(sq_b)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.zeros_like(num))


# --------------------------------------------------------------------------------------------
# The report


@dataclasses.dataclass(frozen=True)
class LeafDifference:
    """The relative difference of one leaf, with the norms of its two gradients."""

    leaf: str
    difference: float
    analytic_norm: float
    numerical_norm: float


@dataclasses.dataclass(frozen=True)
class Coordinate:
    """One coordinate's analytic and numerical derivatives and their absolute difference."""

    leaf: str
    index: tuple[int, ...]
    analytic: float
    numerical: float
    abs_difference: float


def verdict_for(difference: float) -> str:
    """The course's verdict for a relative difference: ``"great"`` (< 1e-7), ``"fine"`` (< 1e-5,
    look closer), ``"suspicious"`` (< 1e-3) or ``"bug"``.

    Example:
      >>> verdict_for(3e-9), verdict_for(2e-6), verdict_for(1e-4), verdict_for(0.3)
      ('great', 'fine', 'suspicious', 'bug')
    """
    for bound, name, _ in VERDICTS:
        if difference < bound:
            return name
    return "bug"  # NaN


@dataclasses.dataclass(frozen=True)
class GradCheckResult:
    """What :func:`check` found. ``print(result)`` gives a readable report.

    Attributes:
      difference: the relative difference over all parameters (see :func:`relative_difference`).
      verdict: ``"great"`` (< 1e-7), ``"fine"`` (< 1e-5, look closer), ``"suspicious"``
        (< 1e-3) or ``"bug"`` (>= 1e-3; also for NaN).
      leaves: one :class:`LeafDifference` per leaf, in the order of ``params``.
      worst_coordinates: the ``top_k`` :class:`Coordinate` s with the largest absolute difference.
      kinks: coordinates ``(leaf, index)`` whose two-sided difference straddles a kink (a ReLU at 0),
        where the numerical gradient is not to be trusted.
      warnings: sentences about kinks, float32 and anything else that weakens the check.
      epsilon, dtype, n_params: how the check ran.
      analytic, numerical: the two gradients, as pytrees of numpy float64 arrays. On a kink,
        ``numerical`` holds the one-sided difference nearer to ``analytic`` (the two-sided one is
        the mean of two slopes there, which no backprop computes).
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

    @property
    def worst_leaves(self) -> tuple[LeafDifference, ...]:
        """The leaves sorted by relative difference, worst first."""
        return tuple(sorted(self.leaves, key=lambda d: -_nan_last(d.difference)))

    @property
    def passed(self) -> bool:
        """``difference < 1e-5``: great or fine (the ``fjdl gradcheck`` exit status)."""
        return self.difference < 1e-5

    def __str__(self) -> str:
        message = next(m for _, name, m in VERDICTS if name == self.verdict)
        lines = [
            f"gradient check: {message}",
            f"  relative difference {self.difference:.3e}  ({self.dtype}, epsilon {self.epsilon:g},"
            f" {self.n_params} parameters in {len(self.leaves)} leaves)",
            "  scale: < 1e-7 great, < 1e-5 fine (look closer), < 1e-3 suspicious, above: bug",
            "worst leaves (relative difference):",
        ]
        width = max(len(d.leaf) for d in self.leaves)
        for d in self.worst_leaves[:5]:
            lines.append(f"  {d.leaf:<{width}}  {d.difference:.3e}  ({verdict_for(d.difference)})")
        lines.append("worst coordinates:")
        lines.append(
            f"  {'leaf':<{width}}  {'index':<10} {'analytic':>13} {'numerical':>13} {'|diff|':>10}"
        )
        for c in self.worst_coordinates:
            idx = ",".join(str(i) for i in c.index)
            lines.append(
                f"  {c.leaf:<{width}}  ({idx + ')':<9} {c.analytic:>13.6e} {c.numerical:>13.6e}"
                f" {c.abs_difference:>10.3e}"
            )
        if self.warnings:
            lines.append("warnings:")
            lines.extend(f"  - {w}" for w in self.warnings)
        return "\n".join(lines)


def _nan_last(x):
    return math.inf if math.isnan(x) else x


def _np_relative_difference(a, b) -> float:
    """:func:`relative_difference` on the host in float64, whatever the x64 mode."""
    num = math.sqrt(sum(float(np.sum(np.square(x - y))) for x, y in zip(a, b)))
    den = math.sqrt(sum(float(np.sum(np.square(x))) for x in a)) + math.sqrt(
        sum(float(np.sum(np.square(y))) for y in b)
    )
    return num / den if den > 0 else (0.0 if num == 0 else math.nan)


def _host(x):
    return np.asarray(jax.device_get(x), dtype=np.float64)


def _describe_kinks(kinks, limit=5):
    shown = ", ".join(f"{leaf} ({','.join(map(str, idx))})" for leaf, idx in kinks[:limit])
    more = f" and {len(kinks) - limit} more" if len(kinks) > limit else ""
    return (
        f"{len(kinks)} coordinate(s) sit on a kink (a ReLU pre-activation, or a weight under L1,"
        " within epsilon of 0), "
        f"where the two-sided difference straddles the kink and is not a derivative: {shown}{more}."
        " They are compared with the nearer one-sided difference; to check them for sure, move the"
        " point or use smooth activations."
    )


def _build_result(names, treedef, analytic, numerical, kink_masks, epsilon, dtype, top_k):
    """``GradCheckResult`` from per-leaf host arrays of the two gradients."""
    analytic = [_host(a) for a in analytic]
    numerical = [_host(n) for n in numerical]
    difference = _np_relative_difference(analytic, numerical)
    leaves = []
    for name, a, n in zip(names, analytic, numerical):
        leaves.append(
            LeafDifference(
                name,
                _np_relative_difference([a], [n]),
                float(np.linalg.norm(a.ravel())),
                float(np.linalg.norm(n.ravel())),
            )
        )
    coords = []
    for name, a, n in zip(names, analytic, numerical):
        abs_diff = np.abs(a - n).ravel()
        abs_diff = np.where(np.isnan(abs_diff), np.inf, abs_diff)
        for i in np.argsort(-abs_diff, kind="stable")[:top_k]:
            idx = tuple(int(v) for v in np.unravel_index(i, a.shape))
            coords.append(Coordinate(name, idx, float(a[idx]), float(n[idx]), float(abs_diff[i])))
    coords.sort(key=lambda c: -c.abs_difference)
    kinks = []
    for name, mask, a in zip(names, kink_masks, analytic):
        if mask is None:
            continue
        for i in np.flatnonzero(np.asarray(mask).ravel()):
            kinks.append((name, tuple(int(v) for v in np.unravel_index(i, a.shape))))
    warnings = []
    if kinks:
        warnings.append(_describe_kinks(kinks))
    if np.dtype(dtype).itemsize < 8:
        warnings.append(
            f"checked in {np.dtype(dtype).name}: rounding alone gives differences of about 1e-3 to "
            "1e-2 with epsilon 1e-7; use dtype=jnp.float64 for the course's 1e-7 threshold."
        )
    if not np.isfinite(difference):
        warnings.append("the difference is not finite: a gradient or the cost holds NaN or inf.")
    return GradCheckResult(
        difference=difference,
        verdict=verdict_for(difference),
        leaves=tuple(leaves),
        worst_coordinates=tuple(coords[:top_k]),
        kinks=tuple(kinks),
        warnings=tuple(warnings),
        epsilon=float(epsilon),
        dtype=np.dtype(dtype).name,
        n_params=int(sum(a.size for a in analytic)),
        analytic=jax.tree_util.tree_unflatten(treedef, analytic),
        numerical=jax.tree_util.tree_unflatten(treedef, numerical),
    )


def _precision(dtype):
    """``(context, dtype)``: float64 runs inside ``jax.enable_x64(True)``."""
    if dtype is None:
        return contextlib.nullcontext(), None
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise TypeError(f"dtype must be a float dtype like jnp.float64, got {dtype!r}")
    return (jax.enable_x64(True) if dt.itemsize == 8 else contextlib.nullcontext()), dt


def _kinks_from_one_sided(f0, plus, minus, epsilon, dtype):
    """Coordinates where the forward and backward slopes disagree beyond smoothness and rounding."""
    forward = (plus - f0) / epsilon
    backward = (f0 - minus) / epsilon
    jump = np.abs(forward - backward)
    scale = np.maximum(np.maximum(np.abs(plus), np.abs(minus)), abs(f0))
    noise = _KINK_NOISE * np.finfo(dtype).eps * scale / epsilon
    relative = _KINK_RTOL * (np.abs(forward) + np.abs(backward))
    return jump > np.maximum(noise, relative)


def _estimate(f0, plus, minus, analytic, kink_mask, epsilon):
    """The numerical derivative to compare with: the two-sided difference, except on a kink.

    On a kink the derivative does not exist and the two-sided difference is the mean of the two
    one-sided slopes, which no backprop returns; either one-sided slope is a valid choice there
    (ReLU's derivative at 0 is taken as 0 or 1 by convention), so the nearer one to ``analytic``
    is used. A wrong gradient still disagrees with both.
    """
    plus, minus = _host(plus), _host(minus)
    analytic = _host(analytic)
    two_sided = ((plus - minus) / (2 * epsilon)).reshape(analytic.shape)
    if kink_mask is None or not np.any(kink_mask):
        return two_sided
    forward = ((plus - f0) / epsilon).reshape(analytic.shape)
    backward = ((f0 - minus) / epsilon).reshape(analytic.shape)
    nearer = np.where(np.abs(forward - analytic) <= np.abs(backward - analytic), forward, backward)
    return np.where(kink_mask, nearer, two_sided)


def check(
    f: Callable[[Params], jax.Array],
    params: Params,
    grads: Params | None = None,
    epsilon: float = 1e-7,
    *,
    dtype=None,
    top_k: int = 5,
    chunk_size: int | None = None,
) -> GradCheckResult:
    """Compare an analytic gradient with the two-sided numerical gradient, and locate disagreement.

    .. math::
      \\text{difference} = \\frac{\\lVert g - g_{approx} \\rVert_2}
                                 {\\lVert g \\rVert_2 + \\lVert g_{approx} \\rVert_2}

    with :math:`g` = ``grads`` (backprop) and :math:`g_{approx}` from :func:`numerical_gradient`.
    The verdict follows the course's scale: < 1e-7 ``"great"``; < 1e-5 ``"fine"`` (look closer);
    up to 1e-3 ``"suspicious"``; above 1e-3 ``"bug"``. The per-leaf differences and the worst
    coordinates say *where* a bug is.

    The check warns about coordinates on a kink: where a ReLU pre-activation lies within epsilon of
    0, ``theta + eps`` and ``theta - eps`` fall on different sides and the two-sided difference is
    the average of two slopes. They are found as the coordinates whose one-sided differences
    ``(J(+) - J(0)) / eps`` and ``(J(0) - J(-)) / eps`` disagree by more than 0.1% and more than
    rounding allows (in float32 rounding hides them). There the analytic value is compared with the
    nearer one-sided difference: either slope is a valid derivative at the kink, and a wrong
    gradient disagrees with both. (With zero biases and ReLU this is common: an example whose
    units are all off gives the next layer a pre-activation of exactly 0.)

    Dropout must be off in ``f``: each call would draw a new mask, and with a fixed key ``f`` is not
    the function training differentiates.

    Args:
      f: ``params -> scalar``, the cost; traceable (it runs under ``vmap``).
      params: a pytree of float arrays.
      grads: the gradient to check, shaped like ``params``; ``None`` checks ``jax.grad(f)``.
      epsilon: the step of the difference (> 0).
      dtype: ``None`` keeps the dtypes of ``params``; ``jnp.float64`` casts ``params`` and
        ``grads`` to float64 and runs everything inside ``jax.enable_x64(True)``, without switching
        the caller's program to 64 bits. Arrays that ``f`` closes over keep their dtype: make them
        float64 too (under strict dtype promotion a float32 ``X`` times a float64 ``W`` fails).
      top_k: how many worst coordinates to report.
      chunk_size: see :func:`numerical_gradient`.

    Returns:
      A :class:`GradCheckResult`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> result = check(lambda t: jnp.sum(jnp.sin(t)), jnp.arange(3.0), dtype=jnp.float64)
      >>> result.verdict
      'great'
      >>> bad = check(lambda t: jnp.sum(jnp.sin(t)), jnp.arange(3.0), 2 * jnp.cos(jnp.arange(3.0)),
      ...             dtype=jnp.float64)
      >>> bad.verdict, bad.worst_coordinates[0].index
      ('bug', (0,))
    """
    _check_epsilon(epsilon)
    _checks.check_positive_int("top_k", top_k)
    context, dt = _precision(dtype)
    with context:
        leaves, names, treedef = _flatten(params)
        if dt is not None:
            leaves = [leaf.astype(dt) for leaf in leaves]
        params = jax.tree_util.tree_unflatten(treedef, leaves)
        _check_scalar_output(f, params)
        g_leaves = None if grads is None else _check_grads(grads, params)

        @jax.jit
        def run(ls):  # one compiled program: J, its autodiff gradient, every perturbed J
            p = jax.tree_util.tree_unflatten(treedef, ls)
            auto = jax.tree.leaves(jax.grad(f)(p)) if grads is None else None
            return f(p), auto, _perturbed_values(f, ls, treedef, epsilon, chunk_size)

        f0, auto, values = run(leaves)
        f0 = float(f0)
        g_leaves = auto if g_leaves is None else g_leaves
        numerical, kink_masks = [], []
        for leaf, g, (plus, minus) in zip(leaves, g_leaves, values):
            mask = _kinks_from_one_sided(f0, _host(plus), _host(minus), epsilon, leaf.dtype)
            mask = mask.reshape(leaf.shape)
            numerical.append(_estimate(f0, plus, minus, g, mask, epsilon))
            kink_masks.append(mask)
        work_dtype = leaves[0].dtype
    return _build_result(
        names, treedef, g_leaves, numerical, kink_masks, epsilon, work_dtype, top_k
    )


# --------------------------------------------------------------------------------------------
# Fast path for fjdl's MLPs


def _data_loss(config, logits, Y):
    if config.output != "softmax" and config.sizes[-1] == 1:
        logits = logits[:, 0]
    return losses.DATA_LOSSES[config.output](logits, Y)


def _finish(config, l, layer, state, u, train):
    """Layer ``l``'s pre-activation after the bias or batch norm, from ``u = a_prev @ W``."""
    if config.is_bn_layer(l):
        if train:
            return batchnorm.normalize_train(u, layer["gamma"], layer["beta"], config.bn_eps)[0]
        return batchnorm.normalize_eval(u, layer["gamma"], layer["beta"], state, config.bn_eps)
    return u + layer["b"]


def _column(tree, j):
    """The ``j``-th unit of per-unit vectors (``b``, ``gamma``, ``beta``, running statistics)."""
    return {k: lax.dynamic_slice_in_dim(v, j, 1) for k, v in tree.items() if k != "W"}


def _mlp_cache(config, params, model_state, X, train):
    """Forward pass keeping, per layer, ``(a_prev, u, z, a)``: input, ``a_prev @ W``, the
    pre-activation after bias / batch norm, and the activation (the logits for the last layer)."""
    g = nn.ACTIVATIONS[config.activation]
    a, cache = X, []
    for l, layer in enumerate(params):
        u = a @ layer["W"]
        z = _finish(config, l, layer, model_state[l], u, train)
        a_next = g(z) if l < config.n_layers - 1 else z
        cache.append((a, u, z, a_next))
        a = a_next
    return cache


def _penalty(params, lambd, l1, m):
    total = 0.0
    if lambd is not None:
        total = total + losses.l2_penalty(params, lambd, m)
    if l1 is not None:
        total = total + losses.l1_penalty(params, l1, m)
    return total


def _mlp_tail(config, params, model_state, cache, train, l, j, z_col, Y):
    """Data loss and kink pattern when column ``j`` of layer ``l``'s pre-activation is ``z_col``.

    Layers below ``l`` are untouched (their cache is reused). The new activation column changes the
    next layer's ``u`` by the rank-one term ``da ⊗ W_{l+1}[j, :]``; layers above are recomputed.
    """
    g = nn.ACTIVATIONS[config.activation]
    L = config.n_layers
    if l == L - 1:
        return _data_loss(config, cache[l][2].at[:, j].set(z_col), Y), []
    kinky = config.activation in _KINKED_ACTIVATIONS
    pattern = [z_col > 0] if kinky else []
    a_col = g(z_col)
    da = a_col - cache[l][3][:, j]
    u = cache[l + 1][1] + da[:, None] * params[l + 1]["W"][j][None, :]
    a = None
    for k in range(l + 1, L):
        if a is not None:
            u = a @ params[k]["W"]
        z = _finish(config, k, params[k], model_state[k], u, train)
        if k == L - 1:
            return _data_loss(config, z, Y), pattern
        if kinky:
            pattern.append(z > 0)
        a = g(z)
    raise AssertionError("unreachable")


def _mlp_perturbed(
    config, train, chunk_size, with_grad, params, model_state, X, Y, lambd, l1, epsilon
):
    """Per leaf: ``J(theta + eps e_i)``, ``J(theta - eps e_i)`` and whether ``+`` and ``-`` fall on
    different sides of a ReLU kink, for every coordinate, by ``vmap`` over coordinates; with
    ``with_grad``, also ``jax.grad`` of the cost through :func:`fjdl.model.apply`."""
    if with_grad:

        def J(p):
            logits, _ = model.apply(config, p, model_state, X, train=train)
            return losses.cost(
                logits, Y, p, output=config.output,
                lambd=0.0 if lambd is None else lambd, l1=0.0 if l1 is None else l1,
            )  # fmt: skip

        f0, values = _mlp_perturbed(
            config, train, chunk_size, False, params, model_state, X, Y, lambd, l1, epsilon
        )
        return f0, values, jax.tree.leaves(jax.grad(J)(params))
    m = X.shape[0]
    cache = _mlp_cache(config, params, model_state, X, train)
    base_penalty = _penalty(params, lambd, l1, m)

    def d_penalty(w, w_new):
        d = 0.0
        if lambd is not None:
            d = d + lambd / (2 * m) * (jnp.square(w_new) - jnp.square(w))
        if l1 is not None:
            d = d + l1 / (2 * m) * (jnp.abs(w_new) - jnp.abs(w))
        return d

    signs = jnp.array([1.0, -1.0], X.dtype)
    out = []
    for l, layer in enumerate(params):
        a_prev, u, _, _ = cache[l]
        n_out = layer["W"].shape[1]

        def finish_col(j, u_col, layer_col, l=l):
            state_col = _column(model_state[l], j) if model_state[l] else model_state[l]
            return _finish(config, l, layer_col, state_col, u_col[:, None], train)[:, 0]

        def evaluate(j, z_col, dpen, l=l):
            data, pattern = _mlp_tail(config, params, model_state, cache, train, l, j, z_col, Y)
            return data + (base_penalty + dpen), pattern

        def weight(c, sign, layer=layer, a_prev=a_prev, u=u, n_out=n_out):
            i, j = c // n_out, c % n_out
            w = layer["W"][i, j]
            w_new = w + sign * epsilon
            u_col = u[:, j] + a_prev[:, i] * (w_new - w)
            loss, pattern = evaluate(
                j, finish_col(j, u_col, _column(layer, j)), d_penalty(w, w_new)
            )
            # The L1 term |w| has a kink at w = 0.
            return loss, pattern + ([w_new > 0] if l1 is not None else [])

        def vector(name, layer, u):
            def one(j, sign):
                col = _column(layer, j)
                col[name] = col[name] + sign * epsilon
                return evaluate(j, finish_col(j, u[:, j], col), 0.0)

            return one

        for name in layer:
            fn = weight if name == "W" else vector(name, layer, u)

            def both(c, fn=fn):
                # One trace for both signs: vmap over (+1, -1).
                values, patterns = jax.vmap(fn, in_axes=(None, 0))(c, signs)
                crossed = jnp.zeros((), bool)
                for p in patterns:
                    crossed = crossed | jnp.any(p[0] != p[1])
                return values[0], values[1], crossed

            n = layer[name].size
            out.append(_map_chunks(both, n, chunk_size))
    return _data_loss(config, cache[-1][2], Y) + base_penalty, out


_mlp_perturbed_jit = jax.jit(_mlp_perturbed, static_argnums=(0, 1, 2, 3))


def _mlp_inputs(config, params, model_state, X, Y, lambd, l1, train, epsilon, chunk_size):
    if not isinstance(config, model.MLP):
        raise TypeError(f"config must be an fjdl.model.MLP, got {type(config).__name__}")
    _check_epsilon(epsilon)
    _checks.check_positive_int("chunk_size", chunk_size)
    _checks.check_nonnegative("lambd", lambd)
    _checks.check_nonnegative("l1", l1)
    if train and config.uses_dropout:
        raise ValueError(
            f"a gradient check needs dropout off, got keep_probs={config.keep_probs} with "
            "train=True: every evaluation would draw a new mask (or, with a fixed key, check a "
            "function that training never differentiates). Use train=False or keep_probs=None."
        )
    model.check_params(config, params)
    _flatten(params)
    if not isinstance(model_state, tuple | list) or len(model_state) != config.n_layers:
        raise ValueError(
            f"model_state must be a tuple of {config.n_layers} per-layer dicts (from model.init)"
        )
    dtype = jnp.asarray(params[0]["W"]).dtype
    X = jnp.asarray(X)
    if X.ndim != 2 or X.shape[1] != config.sizes[0]:
        raise ValueError(f"X must have shape (m, {config.sizes[0]}), got {X.shape}")
    X = X.astype(dtype)
    Y = jnp.asarray(Y)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have {X.shape[0]} rows like X, got shape {Y.shape}")
    # Validate shapes (abstractly, no computation) and label values (Y is concrete here) once.
    jax.eval_shape(
        lambda p, s, x: losses.cost(
            model.apply(config, p, s, x, train=train)[0], Y, None, output=config.output
        ),
        params,
        model_state,
        X,
    )
    lambd = None if (_checks.is_concrete(lambd) and float(lambd) == 0) else lambd
    l1 = None if (_checks.is_concrete(l1) and float(l1) == 0) else l1
    return X, Y, lambd, l1


def numerical_gradient_mlp(
    config: model.MLP,
    params: Params,
    model_state: State,
    X,
    Y,
    *,
    lambd=0.0,
    l1=0.0,
    train: bool = False,
    epsilon: float = 1e-7,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Params:
    """The two-sided numerical gradient of an MLP's cost, without redoing unchanged work.

    The same numbers as :func:`numerical_gradient` (up to rounding) on

    .. math::
      J(\\theta) = \\mathrm{cost}(\\mathrm{apply}(\\theta, X), Y)
                   + \\frac{\\lambda}{2m} \\sum_l \\lVert W^{[l]} \\rVert_F^2
                   + \\frac{\\lambda_1}{2m} \\sum_l \\lvert W^{[l]} \\rvert

    that is ``losses.cost(model.apply(config, p, model_state, X, train=train)[0], Y, p,
    output=config.output, lambd=lambd, l1=l1)``, but each perturbed forward pass reuses the
    unperturbed one:

    - a parameter of layer ``l`` leaves the layers below ``l`` unchanged: their activations are
      computed once;
    - ``W[i, j] + eps`` changes only column ``j`` of ``z^{[l]}``, by ``eps * a^{[l-1]}[:, i]``; ``b[j]``,
      ``gamma[j]`` and ``beta[j]`` change only column ``j`` too. Batch norm's statistics are per
      unit, so in training mode the column is re-normalized on its own;
    - the new activation column changes the next layer's ``z`` by a rank-one term
      ``da ⊗ W^{[l+1]}[j, :]``; the layers above are recomputed;
    - the penalties change in closed form, ``lambd / (2m) * ((w + eps)^2 - w^2)``.

    Coordinates are evaluated by ``vmap`` in chunks of ``chunk_size``. For a 784-64-10 network on
    100 examples in float64 (50,890 coordinates, both signs) this takes about a second on a 2-core
    CPU, against ~40 s for the course's numpy loop over coordinates.

    Dropout must be off (see the module docstring): ``train=True`` with ``keep_probs`` < 1 raises.

    Args:
      config: the :class:`fjdl.model.MLP`.
      params, model_state: from :func:`fjdl.model.init`.
      X: inputs ``(m, n_x)``, cast to the parameters' dtype.
      Y: labels, as :func:`fjdl.losses.cost` expects for ``config.output``.
      lambd, l1: the L2 and L1 strengths of the cost (>= 0).
      train: batch norm with batch statistics (``True``) or running statistics (``False``).
      epsilon: the step of the difference (> 0).
      chunk_size: coordinates per ``vmap``.

    Returns:
      A pytree shaped like ``params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from fjdl import model
      >>> cfg = model.MLP((3, 4, 1), activation="tanh")
      >>> with jax.enable_x64(True):
      ...     params, state = model.init(jax.random.key(0), cfg, dtype=jnp.float64)
      ...     X = jax.random.normal(jax.random.key(1), (5, 3), jnp.float64)
      ...     Y = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0])
      ...     g = numerical_gradient_mlp(cfg, params, state, X, Y)
      >>> g[0]["W"].shape, g[1]["b"].shape
      ((3, 4), (1,))
    """
    X, Y, lambd_, l1_ = _mlp_inputs(
        config, params, model_state, X, Y, lambd, l1, train, epsilon, chunk_size
    )
    _, values = _mlp_perturbed_jit(
        config, bool(train), int(chunk_size), False, params, model_state, X, Y, lambd_, l1_, epsilon
    )
    leaves, _, treedef = _flatten(params)
    grads = [
        ((plus - minus) / (2 * epsilon)).astype(leaf.dtype).reshape(leaf.shape)
        for leaf, (plus, minus, _) in zip(leaves, values)
    ]
    return jax.tree_util.tree_unflatten(treedef, grads)


def check_mlp(
    config: model.MLP,
    params: Params,
    model_state: State,
    X,
    Y,
    *,
    grads: Params | None = None,
    lambd=0.0,
    l1=0.0,
    train: bool = False,
    epsilon: float = 1e-7,
    dtype=jnp.float64,
    top_k: int = 5,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> GradCheckResult:
    """:func:`check` for an :class:`fjdl.model.MLP`'s cost, with the fast numerical gradient.

    Checks ``grads`` (``None``: ``jax.grad`` of the cost through :func:`fjdl.model.apply`) against
    :func:`numerical_gradient_mlp`, on the course's scale (< 1e-7 great, < 1e-5 fine, up to 1e-3
    suspicious, above a bug). Kinks are found exactly: a coordinate is reported when
    ``theta + eps`` and ``theta - eps`` put some ReLU pre-activation on different sides of 0.

    Args:
      config, params, model_state, X, Y, lambd, l1, train, epsilon, chunk_size: as for
        :func:`numerical_gradient_mlp`.
      grads: the gradient to check, shaped like ``params``.
      dtype: the dtype of the check; float64 (the default) runs inside ``jax.enable_x64(True)``
        with ``params``, ``grads``, ``model_state`` and ``X`` cast to it. ``None`` keeps
        ``params``' dtype.
      top_k: how many worst coordinates to report.

    Returns:
      A :class:`GradCheckResult`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from fjdl import model
      >>> cfg = model.MLP((3, 4, 1), activation="tanh")
      >>> params, state = model.init(jax.random.key(0), cfg)
      >>> X = jax.random.normal(jax.random.key(1), (5, 3))
      >>> check_mlp(cfg, params, state, X, jnp.array([0.0, 1.0, 1.0, 0.0, 1.0])).verdict
      'great'
    """
    _checks.check_positive_int("top_k", top_k)
    context, dt = _precision(dtype)
    with context:
        if dt is not None:
            cast = lambda t: jax.tree.map(lambda v: jnp.asarray(v).astype(dt), t)  # noqa: E731
            params, model_state = cast(params), cast(model_state)
            X = jnp.asarray(X).astype(dt)
            if jnp.issubdtype(jnp.asarray(Y).dtype, jnp.floating):
                Y = jnp.asarray(Y).astype(dt)
        X, Y, lambd_, l1_ = _mlp_inputs(
            config, params, model_state, X, Y, lambd, l1, train, epsilon, chunk_size
        )
        leaves, names, treedef = _flatten(params)

        if grads is not None:
            g_leaves = _check_grads(grads, params)
            g_leaves = [g.astype(leaf.dtype) for g, leaf in zip(g_leaves, leaves)]
        out = _mlp_perturbed_jit(
            config, bool(train), int(chunk_size), grads is None,
            params, model_state, X, Y, lambd_, l1_, epsilon,
        )  # fmt: skip
        f0, values, g_leaves = out if grads is None else (*out, g_leaves)
        numerical, kinks = [], []
        for leaf, g, (plus, minus, crossed) in zip(leaves, g_leaves, values):
            mask = np.asarray(crossed).reshape(leaf.shape)
            numerical.append(_estimate(float(f0), plus, minus, g, mask, epsilon))
            kinks.append(mask)
        work_dtype = leaves[0].dtype
    return _build_result(names, treedef, g_leaves, numerical, kinks, epsilon, work_dtype, top_k)
