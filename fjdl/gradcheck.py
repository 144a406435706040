"""Gradient checking: backprop against a two-sided numerical gradient, for any model's cost.

For every coordinate :math:`\\theta_i` of every parameter, the course's two-sided difference

.. math::
  \\frac{\\partial J}{\\partial \\theta_i} \\approx
  \\frac{J(\\theta + \\varepsilon e_i) - J(\\theta - \\varepsilon e_i)}{2 \\varepsilon}

is compared with the analytic gradient (backprop, or ``jax.grad``) by the relative difference

.. math::
  \\text{difference} = \\frac{\\lVert g - g_{approx} \\rVert_2}
                             {\\lVert g \\rVert_2 + \\lVert g_{approx} \\rVert_2}

over the whole pytree. The course's scale: below ``1e-7`` great; below ``1e-5`` fine, but look
closer; up to ``1e-3`` suspicious; above ``1e-3`` there is almost certainly a bug. (The step
actually taken is ``fl(theta + eps) - fl(theta - eps)``, the difference of the two perturbed values
as stored; it is ``2 eps`` up to rounding, which matters in float32 only.)

.. warning::
  The ``1e-7`` threshold needs **float64**. In float32, ``J`` carries a rounding error of about
  ``1e-7 * |J|``, which the division by ``2 epsilon = 2e-7`` turns into an error of order 1 in every
  coordinate: a correct gradient then shows a difference of ``1e-3`` to ``1e-2`` from rounding
  alone. :func:`check` takes ``dtype=jnp.float64`` to run inside ``jax.enable_x64(True)`` without
  switching the whole program to 64 bits.

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
  report says so when it explains the verdict.
- A sampled check (``coordinates=k``, ``directions=n``) that answers in seconds for any size: ``k``
  random coordinates per leaf, and ``n`` random unit directions ``u`` along which the directional
  derivative ``<g, u>`` is compared with ``(J(theta + eps u) - J(theta - eps u)) / (2 eps)``, as
  ``jax.test_util.check_grads`` does. See :func:`check` for what it can and cannot prove.
- :func:`numerical_gradient_mlp` / :func:`check_mlp`: the same numbers for an
  :class:`fjdl.model.MLP`'s cost far faster, because a perturbed parameter of layer ``l`` changes
  one column of layer ``l`` only (see its docstring).

Kinks (a ReLU pre-activation, a max, an ``|w|`` under L1 within epsilon of its switching point)
make the two-sided difference the mean of two slopes, which no backprop returns; :func:`check`
recognizes them from the one-sided differences (see :func:`check` and :func:`_compare`),
:func:`check_mlp` exactly. After batch norm with running statistics they are common: every unit
that sees a blank patch of an image sits at the same pre-activation.

Dropout must be off during a check: each evaluation of ``J`` would draw a new mask, so
``J(theta + eps) - J(theta - eps)`` would measure the change of mask, not of ``theta``; and with one
fixed key the function checked is not the one training differentiates (whose mask changes every
step). Check with ``train=False`` or with ``keep_probs`` of 1; :func:`check_model` refuses a model
whose output depends on the key.
"""

import concurrent.futures
import contextlib
import dataclasses
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fjdl import _checks, batchnorm, losses, nn
from fjdl import model as model_lib
from fjdl._types import Params, PRNGKey, State

DEFAULT_CHUNK_SIZE = 512
"""Coordinates evaluated together by one ``vmap`` in :func:`numerical_gradient_mlp`."""

_CHUNK_BUDGET = 1 << 20
"""Elements of ``f``'s largest intermediate value, summed over the coordinates and signs that one
``vmap`` evaluates together (8 MiB in float64); it sets the default chunk size."""

_ALONE = 8
"""A leaf with at least ``1 / _ALONE`` of the coordinates is mapped on its own (see
:func:`_leaf_groups`)."""

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
"""Rounding allowance of that test, in units of ``machine_eps * |J| / epsilon``."""

_ONE_SIDED_MATCH = 0.25
"""A kink is also recognized where the analytic derivative lies within this fraction of
``|forward - backward|`` of one one-sided slope (smooth curvature puts it midway, at 1/2)."""

_ONE_SIDED_NOISE = 64.0
"""Rounding allowance of that test, in units of ``machine_eps * |J| / epsilon``."""


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


def _largest_value(jaxpr) -> int:
    """Elements of the largest value a jaxpr computes (nested jaxprs included)."""
    largest = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            largest = max(largest, math.prod(getattr(v.aval, "shape", ())))
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(sub, "eqns"):
                    largest = max(largest, _largest_value(sub))
    return largest


def _chunk(chunk_size, n, per_coordinate):
    """Coordinates per ``vmap``: ``chunk_size``, or as many as hold ``_CHUNK_BUDGET`` elements."""
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BUDGET // max(per_coordinate, 1))
    else:
        _checks.check_positive_int("chunk_size", chunk_size)
    return max(1, min(chunk_size, n))


def _map_chunks(fn, index, chunk):
    """``vmap(fn)`` over ``index`` (an int ``n`` means ``arange(n)``) in chunks of ``chunk``
    (``lax.map`` over the chunks).

    The last chunk is padded by repeating the last coordinate, so the loop body is compiled once.
    """
    index = jnp.arange(index) if isinstance(index, int) else jnp.asarray(index)
    n = index.shape[0]
    if n <= chunk:
        return jax.vmap(fn)(index)
    n_chunks = -(-n // chunk)
    padded = jnp.concatenate([index, jnp.broadcast_to(index[-1], (n_chunks * chunk - n,))])
    out = lax.map(jax.vmap(fn), padded.reshape(n_chunks, chunk))
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk, *o.shape[2:])[:n], out)


def _leaf_groups(leaves):
    """The leaves perturbed by one map each: every leaf that holds at least ``1 / _ALONE`` of the
    coordinates has a map of its own (so at most ``_ALONE`` do), the others share one.

    Under ``vmap`` over the coordinates of one leaf, whatever ``f`` computes before it uses that
    leaf does not depend on the mapped coordinate and is computed once, and a convolution whose
    kernel alone is mapped becomes one wide convolution. A map costs a copy of ``f`` in the
    compiled program (a third of a second of compilation for a small convnet), which pays for a
    large leaf only: on the 5,178-parameter convnet, the 4,608 coordinates of the second kernel
    alone, the 570 others together.
    """
    n = _size(leaves)
    alone = [i for i, leaf in enumerate(leaves) if leaf.size * _ALONE >= n]
    rest = [i for i in range(len(leaves)) if i not in alone]
    return [[i] for i in alone] + ([rest] if rest else [])


def _group_values(f, leaves, treedef, group, epsilon, chunk_size, per_coordinate, index):
    """``(J(theta + eps e_c), J(theta - eps e_c))`` for the coordinates ``c`` in ``index`` of the
    leaves in ``group``, numbered as one vector; the other leaves stay.

    Both signs go through one more ``vmap``, so the compiled program holds one copy of ``f``.
    """
    sizes = [leaves[i].size for i in group]
    offsets = np.cumsum([0, *sizes])
    n = len(index)
    widest = max((leaves[i].dtype for i in group), key=lambda d: d.itemsize)
    signs = jnp.array([1.0, -1.0], widest)

    def at(c, sign):
        moved = list(leaves)
        for i, size, offset in zip(group, sizes, offsets):
            if size == 0:
                continue
            local = c - int(offset)
            # Out of this leaf: an out-of-bounds index, which the scatter drops.
            local = jnp.where((local >= 0) & (local < size), local, size)
            step = (sign * epsilon).astype(leaves[i].dtype)
            moved[i] = leaves[i].ravel().at[local].add(step, mode="drop").reshape(leaves[i].shape)
        return f(jax.tree_util.tree_unflatten(treedef, moved))

    def both(c):
        values = jax.vmap(at, in_axes=(None, 0))(c, signs)
        return values[0], values[1]

    chunk = _chunk(chunk_size, n, 2 * per_coordinate + 2 * sum(sizes))
    return _map_chunks(both, index, chunk)


def _perturbed_values(f, leaves, treedef, epsilon, chunk_size, per_coordinate, picks=None):
    """``(J(theta + eps e_i), J(theta - eps e_i))`` per leaf, flat: for every coordinate (one map
    per group of :func:`_leaf_groups`), or for the coordinates ``picks`` (one index array per
    leaf; one map for all)."""
    groups = _leaf_groups(leaves) if picks is None else [list(range(len(leaves)))]
    out = [(jnp.zeros((0,), leaf.dtype),) * 2 for leaf in leaves]
    for group in groups:
        counts = [leaves[i].size if picks is None else len(picks[i]) for i in group]
        if sum(counts) == 0:
            continue
        if picks is None:
            index = np.arange(sum(counts))
        else:
            offsets = np.cumsum([0, *(leaves[i].size for i in group)])
            index = np.concatenate([picks[i] + o for i, o in zip(group, offsets)])

        def values(ls, idx, group=group):
            return _group_values(f, ls, treedef, group, epsilon, chunk_size, per_coordinate, idx)

        plus, minus = _run(values, (leaves,), index)
        bounds = np.cumsum([0, *counts])
        for i, lo, hi in zip(group, bounds, bounds[1:]):
            out[i] = (plus[lo:hi], minus[lo:hi])
    return out


def _cpu_threads(n: int) -> int:
    """Threads to run a map from: one per core on a CPU (at most ``n``), else 1."""
    if jax.devices()[0].platform != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, n))


def _run(fn, args, index):
    """``fn(*args, index)``, a map over ``index``: compiled once and run in equal parts, from one
    thread per core on a CPU; inline when traced (inside the caller's ``jit``).

    JAX shows a CPU as one device, and one evaluation of a small model runs mostly on one core:
    the parts of the same compiled program run concurrently from threads (as
    :func:`fjdl.tune.train_many` does). On 2 cores, the 4,608 coordinates of the 5,178-parameter
    convnet's second kernel took 8.8 s in train mode from one thread, 5.3 s from two (chunks of
    4 coordinates; from one thread, larger chunks use the second core inside XLA, less well: 7.8 s
    at best).
    """
    index = np.asarray(index, np.int32)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
        return fn(*args, index)
    n_threads = _cpu_threads(index.size)
    part = -(-index.size // n_threads)
    padded = np.concatenate([index, np.full(part * n_threads - index.size, index[-1], np.int32)])
    parts = np.split(padded, n_threads)
    # Traced and compiled here, in the caller's thread (and its x64 mode); the threads only run it.
    compiled = jax.jit(fn).lower(*args, parts[0]).compile()
    if n_threads == 1:
        results = [compiled(*args, parts[0])]
    else:
        with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
            results = list(pool.map(lambda q: jax.block_until_ready(compiled(*args, q)), parts))
    return jax.tree.map(
        lambda *r: np.concatenate([np.asarray(v) for v in r])[: index.size], *results
    )


def _per_coordinate(f, params):
    """Elements of the largest value ``f`` computes (0 when ``f`` cannot be traced to a jaxpr)."""
    try:
        return _largest_value(jax.make_jaxpr(f)(params).jaxpr)
    except Exception:  # noqa: BLE001 (a size estimate only: fall back to the parameters' size)
        return 0


def _two_sided(plus, minus, leaf, epsilon):
    """``(J+ - J-) / (fl(theta + eps) - fl(theta - eps))``, in the leaf's dtype (traceable)."""
    step = jnp.asarray(epsilon).astype(leaf.dtype)
    h = ((leaf + step) - (leaf - step)).ravel()
    return ((plus - minus).astype(leaf.dtype) / h).reshape(leaf.shape)


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
    :math:`\\varepsilon` is ``epsilon`` (the denominator is the step actually taken,
    ``fl(theta + eps) - fl(theta - eps)``, which differs from ``2 eps`` by rounding). The
    coordinates are evaluated by ``vmap`` in chunks (``lax.map`` over the chunks), compiled once,
    not by a Python loop; ``f`` must therefore be traceable. Each leaf holding at least an eighth
    of the coordinates has its own map, so that what ``f`` computes before using it is computed
    once; on a CPU, equal parts of the coordinates run from one thread per core (inside the
    caller's ``jit``, everything is traced into the caller's program instead). Use float64 for the
    course's thresholds (see the module's warning). For an :class:`fjdl.model.MLP`,
    :func:`numerical_gradient_mlp` gives the same numbers far faster.

    Args:
      f: ``params -> scalar``, the cost :math:`J`.
      params: a pytree of float arrays, :math:`\\theta`.
      epsilon: the step :math:`\\varepsilon` (> 0); the course's 1e-7.
      chunk_size: coordinates per ``vmap``; by default as many as hold 1M elements (8 MiB in
        float64) of ``f``'s largest intermediate value, both signs counted.

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
    per = _per_coordinate(f, params) if chunk_size is None else 0
    values = _perturbed_values(f, leaves, treedef, epsilon, chunk_size, per)
    grads = [_two_sided(p, m, leaf, epsilon) for leaf, (p, m) in zip(leaves, values)]
    return jax.tree_util.tree_unflatten(treedef, grads)


def _direction_values(
    f, leaves, treedef, g_leaves, epsilon, key, index, chunk_size, per_coordinate
):
    """For random unit directions ``u`` (over the whole pytree), numbered ``index``: ``J(theta + eps u)``,
    ``J(theta - eps u)`` and the analytic derivative along the steps actually taken: ``<g, d> /
    eps`` for ``d = fl(theta + eps u) - theta`` and for ``theta - fl(theta - eps u)``.

    Direction ``j`` is drawn from ``fold_in(key, j)`` inside the loop: none is ever stored whole.
    """
    wide = jnp.float64 if any(leaf.dtype.itemsize == 8 for leaf in leaves) else jnp.float32
    signs = jnp.array([1.0, -1.0], wide)

    def at(j):
        flat = jax.random.normal(jax.random.fold_in(key, j), (_size(leaves),), wide)
        norm = jnp.sqrt(jnp.sum(jnp.square(flat)))
        bounds = np.cumsum([0, *(leaf.size for leaf in leaves)])
        u = [flat[lo:hi].reshape(leaf.shape) for leaf, lo, hi in zip(leaves, bounds, bounds[1:])]

        def moved(sign):
            return [
                (leaf + (sign * epsilon / norm * v).astype(leaf.dtype))
                for leaf, v in zip(leaves, u)
            ]

        def J(sign):
            return f(jax.tree_util.tree_unflatten(treedef, moved(sign)))

        values = jax.vmap(J)(signs)  # one copy of f for both signs

        def along(sign):  # <g, d> / eps along the step actually taken
            d = [(p - leaf) * sign for p, leaf in zip(moved(sign), leaves)]
            return sum(jnp.sum(g.astype(wide) * v.astype(wide)) for g, v in zip(g_leaves, d))

        return values[0], values[1], along(signs[0]) / epsilon, along(signs[1]) / epsilon

    n = len(index)
    return _map_chunks(at, index, _chunk(chunk_size, n, 2 * per_coordinate + 4 * _size(leaves)))


def _size(leaves) -> int:
    return int(sum(leaf.size for leaf in leaves))


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
    """The relative difference of one leaf, with the norms of its two gradients (over the
    coordinates checked: all of them, or the sampled ones)."""

    leaf: str
    difference: float
    analytic_norm: float
    numerical_norm: float
    n_checked: int | None = None


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
        In a sampled check, the larger of the two estimates of it: over the sampled coordinates
        (each leaf's sums weighted by its size over its sample), and over the random directions.
      verdict: ``"great"`` (< 1e-7), ``"fine"`` (< 1e-5, look closer), ``"suspicious"``
        (< 1e-3) or ``"bug"`` (>= 1e-3; also for NaN).
      leaves: one :class:`LeafDifference` per leaf, in the order of ``params`` (none when only
        directions were checked).
      worst_coordinates: the ``top_k`` :class:`Coordinate` s with the largest absolute difference.
      kinks: coordinates ``(leaf, index)`` whose two-sided difference straddles a kink (a ReLU at 0),
        where the numerical gradient is not to be trusted.
      warnings: sentences about kinks, float32 and anything else that weakens the check.
      epsilon, dtype, n_params: how the check ran.
      analytic, numerical: the two gradients, as pytrees of numpy float64 arrays. On a kink,
        ``numerical`` holds the one-sided difference nearer to ``analytic`` (the two-sided one is
        the mean of two slopes there, which no backprop computes); NaN where a sampled check did
        not look.
      n_checked: coordinates compared (``n_params`` unless sampled).
      sampled: whether only some coordinates, or random directions, were checked.
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
        """``difference < 1e-5``: great or fine (the ``fjdl gradcheck`` exit status)."""
        return self.difference < 1e-5

    def __str__(self) -> str:
        message = next(m for _, name, m in VERDICTS if name == self.verdict)
        lines = [
            f"gradient check: {message}",
            f"  relative difference {self.difference:.3e}  ({self.dtype}, epsilon {self.epsilon:g},"
            f" {self.n_params} parameters in {len(jax.tree.leaves(self.analytic))} leaves)",
            "  scale: < 1e-7 great, < 1e-5 fine (look closer), < 1e-3 suspicious, above: bug",
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
                    f"  {d.leaf:<{width}}  {d.difference:.3e}  ({verdict_for(d.difference)})"
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
        if self.directions:
            lines.append(
                f"random directions: relative difference {self.direction_difference:.3e} "
                f"({verdict_for(self.direction_difference)}) over {len(self.directions)}"
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


def _build_result(
    names, treedef, analytic, numerical, kink_masks, epsilon, dtype, top_k,
    checked=None, directions=(), rounding=None,
):  # fmt: skip
    """``GradCheckResult`` from per-leaf host arrays of the two gradients; ``checked`` (one flat
    index array per leaf, ``None``: every coordinate) and ``directions`` for a sampled check;
    ``rounding``: per leaf, the rounding error of each checked coordinate's difference."""
    analytic = [_host(a) for a in analytic]
    numerical = [_host(n) for n in numerical]
    n_params = int(sum(a.size for a in analytic))
    if checked is None:
        checked = [np.arange(a.size) for a in analytic]
    a_seen = [a.ravel()[c] for a, c in zip(analytic, checked)]
    n_seen = [n.ravel()[c] for n, c in zip(numerical, checked)]
    n_checked = int(sum(c.size for c in checked))
    # Each leaf's sample stands for the whole leaf: its sums of squares count size / sampled.
    weights = [a.size / max(c.size, 1) for a, c in zip(analytic, checked)]
    leaves, coords, estimates = [], [], []
    if n_checked:
        for name, a, n, c in zip(names, a_seen, n_seen, checked):
            leaves.append(
                LeafDifference(
                    name, _np_relative_difference([a], [n]), float(np.linalg.norm(a)),
                    float(np.linalg.norm(n)), int(c.size),
                )
            )  # fmt: skip
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
    difference = max(estimates, key=_nan_last)
    warnings = []
    if kinks:
        warnings.append(_describe_kinks(kinks))
    n_kinked = sum(d.kink for d in directions)
    if n_kinked:
        warnings.append(
            f"{n_kinked} of {len(directions)} random direction(s) cross a kink within epsilon;"
            " they are compared with the nearer one-sided difference."
        )
    if np.dtype(dtype).itemsize < 8:
        warnings.append(
            f"checked in {np.dtype(dtype).name}: rounding alone gives differences of about 1e-3 to "
            "1e-2 with epsilon 1e-7; use dtype=jnp.float64 for the course's 1e-7 threshold."
        )
    if not np.isfinite(difference):
        warnings.append("the difference is not finite: a gradient or the cost holds NaN or inf.")
    if rounding is not None and n_checked and np.dtype(dtype).itemsize >= 8:
        norms = [_weighted_norm(vs, weights) for vs in (rounding, a_seen, n_seen)]
        floor = norms[0] / max(norms[1] + norms[2], math.ulp(0.0))
        warnings += _rounding_note(floor, difference, n_params, epsilon)
    return GradCheckResult(
        difference=difference,
        verdict=verdict_for(difference),
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


def _rounding_note(floor, difference, n_params, epsilon):
    """A sentence when rounding alone explains a verdict short of "great"."""
    if verdict_for(difference) == "great" or not floor * 2 >= difference:
        return []
    return [
        f"rounding alone (one unit in the last place of J per evaluation, over the step 2 epsilon)"
        f" gives a relative difference of about {floor:.1e} here, over {n_params} parameters: a"
        f" difference of this size is what a correct gradient shows at epsilon {epsilon:g} (a"
        f" larger epsilon lowers it, and brings more kinks within reach)."
    ]


def _precision(dtype):
    """``(context, dtype)``: float64 runs inside ``jax.enable_x64(True)``."""
    if dtype is None:
        return contextlib.nullcontext(), None
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise TypeError(f"dtype must be a float dtype like jnp.float64, got {dtype!r}")
    return (jax.enable_x64(True) if dt.itemsize == 8 else contextlib.nullcontext()), dt


# --------------------------------------------------------------------------------------------
# Kinks


def _steps(theta, epsilon):
    """The steps actually taken, up ``fl(theta + eps) - theta`` and down ``theta - fl(theta -
    eps)``, as host float64 arrays (the arithmetic in ``theta``'s dtype, as the check did it)."""
    theta = np.asarray(jax.device_get(theta)).ravel()
    step = np.asarray(epsilon, theta.dtype)
    t = theta.astype(np.float64)
    return (theta + step).astype(np.float64) - t, t - (theta - step).astype(np.float64)


def _compare(
    f0, plus, minus, up, down, analytic, dtype, kink=None, analytic_up=None, analytic_down=None
):
    """The numerical derivative to compare with ``analytic``, and where a kink was found.

    Given ``J(theta)``, ``J(theta + up)`` and ``J(theta - down)`` (host float64 vectors, one
    entry per coordinate or direction), the slopes are two-sided ``c = (J+ - J-) / (up + down)``,
    forward ``F = (J+ - J0) / up`` and backward ``B = (J0 - J-) / down``. A smooth ``J`` puts ``F``
    and ``B`` on either side of the derivative, at ``+-eps J'' / 2``; at a kink they differ by the
    jump of the slope, and the derivative autodiff reports is one of them (ReLU's derivative at 0
    is taken as 0 or 1 by convention), while ``c`` is their mean, which no backprop returns. A kink
    is recognized (unless ``kink`` gives the mask, found exactly) where ``|F - B|`` exceeds
    rounding and

    - exceeds ``_KINK_RTOL`` of ``|F| + |B|`` (a jump no small step explains), or
    - ``analytic`` lies within ``_ONE_SIDED_MATCH * |F - B|`` of ``F`` or of ``B``: one-sided,
      where smooth curvature puts it midway, ``|F - B| / 2`` from each.

    There the nearer one-sided slope is compared; a wrong gradient still disagrees with both. The
    second test looks at ``analytic``, but what it can hide is bounded: it could take for a kink a
    bug no larger than ``(1/2 + _ONE_SIDED_MATCH) |F - B|``, which on a smooth coordinate is
    ``eps |J''|``, the error of a one-sided difference itself. ``analytic_up`` and
    ``analytic_down`` (default ``analytic``) are what ``F`` and ``B`` estimate when the two steps
    differ (a direction's rounded steps). The rounding allowance is in units of ``|J|``: a ``J``
    that is a small difference of large terms (rare for a cost, a sum of positive terms) may show
    a few kinks that are rounding; the values compared there stay within rounding of each other.
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
            unit = np.finfo(dtype).eps * scale / np.minimum(up, down)
        size = _KINK_RTOL * (np.abs(forward) + np.abs(backward))
        jump = spread > np.maximum(_KINK_NOISE * unit, size)
        near = np.minimum(np.abs(off_f), np.abs(off_b))
        one_sided = (spread > _ONE_SIDED_NOISE * unit) & (near <= _ONE_SIDED_MATCH * spread)
        kink = jump | one_sided
    nearer = analytic + np.where(np.abs(off_f) <= np.abs(off_b), off_f, off_b)
    return np.where(kink, nearer, two_sided), np.asarray(kink, bool)


def _rounding(f0, plus, minus, up, down, dtype):
    """One unit in the last place of ``J`` over the two-sided step: the error rounding alone
    gives a two-sided difference (host float64, one entry per coordinate or direction)."""
    scale = np.maximum(np.maximum(np.abs(plus), np.abs(minus)), abs(f0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.finfo(dtype).eps * scale / (up + down)


# --------------------------------------------------------------------------------------------
# The checks


def _pick(key, leaves, k):
    """``k`` distinct random coordinates of every leaf (all of a leaf with at most ``k``), sorted.

    Drawn by numpy from a seed taken from ``key`` (no O(leaf size) permutation for a large leaf).
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    rng = np.random.default_rng(np.asarray(key).ravel().tolist())
    return [
        np.arange(leaf.size) if k >= leaf.size else np.sort(rng.choice(leaf.size, k, replace=False))
        for leaf in leaves
    ]


def _value_and_grad(f, leaves, treedef, grads):
    """``J(theta)`` and the gradient to check (``jax.grad(f)`` when ``grads`` is ``None``)."""

    @jax.jit
    def run(ls):
        p = jax.tree_util.tree_unflatten(treedef, ls)
        return f(p), (jax.tree.leaves(jax.grad(f)(p)) if grads is None else None)

    f0, auto = run(leaves)
    return f0, auto if grads is None else grads


def _check_sampling(coordinates, directions, key):
    for name, value in (("coordinates", coordinates), ("directions", directions)):
        if value is not None:
            _checks.check_positive_int(name, value)
    if (coordinates is not None or directions is not None) and key is None:
        raise ValueError(
            "a sampled check (coordinates= or directions=) needs key=jax.random.key(...): it "
            "chooses the coordinates and directions at random"
        )


def check(
    f: Callable[[Params], jax.Array],
    params: Params,
    grads: Params | None = None,
    epsilon: float = 1e-7,
    *,
    dtype=None,
    top_k: int = 5,
    chunk_size: int | None = None,
    coordinates: int | None = None,
    directions: int | None = None,
    key: PRNGKey | None = None,
) -> GradCheckResult:
    """Compare an analytic gradient with the two-sided numerical gradient, and locate disagreement.

    .. math::
      \\text{difference} = \\frac{\\lVert g - g_{approx} \\rVert_2}
                                 {\\lVert g \\rVert_2 + \\lVert g_{approx} \\rVert_2}

    with :math:`g` = ``grads`` (backprop) and :math:`g_{approx}` from :func:`numerical_gradient`.
    The verdict follows the course's scale: < 1e-7 ``"great"``; < 1e-5 ``"fine"`` (look closer);
    up to 1e-3 ``"suspicious"``; above 1e-3 ``"bug"``. The per-leaf differences and the worst
    coordinates say *where* a bug is.

    **Kinks.** Where a ReLU pre-activation (or a max, or a weight under L1) lies within epsilon of
    its switching point, ``theta + eps`` and ``theta - eps`` fall on different sides and the
    two-sided difference is the mean of two slopes, which no backprop returns (either slope is a
    valid derivative there: ReLU's derivative at 0 is 0 or 1 by convention). Such a coordinate is
    recognized from the one-sided differences ``F = (J(+) - J(0)) / eps`` and ``B = (J(0) - J(-)) /
    eps``: they disagree beyond rounding, and either by more than 0.1% or with the analytic value
    next to one of them (within a quarter of ``|F - B|``) where smooth curvature would put it
    midway. There the analytic value is compared with the nearer one-sided slope, and a wrong
    gradient still disagrees with both; the most this can hide is ``eps |J''|``, the error of a
    one-sided difference itself. (The 0.1% test alone misses small jumps: in a convnet, one
    position of one image crossing 0 moves a slope by a small fraction of its size, and a few such
    coordinates made a correct gradient "suspicious", 1e-5 over 5,178 parameters. With zero
    biases and ReLU kinks are common: an example whose units are all off gives the next layer a
    pre-activation of exactly 0; after batch norm with running statistics, so is every unit that
    sees a blank patch of an image.) In float32 rounding hides kinks.

    **Sampled check.** With ``coordinates=k``, only ``k`` random coordinates of each leaf (all of a
    smaller leaf) are perturbed; with ``directions=n``, ``n`` random unit directions ``u`` (normal,
    scaled to norm 1 over the whole pytree) compare ``<g, u>`` with ``(J(theta + eps u) - J(theta -
    eps u)) / (2 eps)``, as ``jax.test_util.check_grads`` does. Each costs two evaluations of ``f``,
    so the check answers in seconds at any size. What it can prove:

    - it sees *every* coordinate's error through the directions: for ``u`` uniform on the sphere,
      ``E <a, u>^2 = ||a||^2 / n_params`` for any vector ``a``, so the relative difference over
      ``n`` directions estimates the every-coordinate one (within a factor ``1 +- sqrt(2 / n)`` or
      so), and a wrong gradient is missed only if its error happens to be nearly orthogonal to
      all ``n`` directions;
    - it locates a bug only through the coordinates: a bug confined to a fraction ``p`` of a leaf
      escapes ``k`` coordinates of it with probability ``(1 - p)^k``; coordinates not sampled are
      NaN in ``result.numerical`` and were not checked;
    - ``difference`` is the larger of the two estimates; a check that passes says the gradient is
      right *on average*, not that no coordinate is wrong. The every-coordinate check says that;
    - a direction moves every coordinate, so the rounding errors of ``J(theta + eps u)`` and
      ``J(theta - eps u)`` do not cancel as they largely do when one coordinate moves: in float64 a
      correct gradient may get "fine" from the directions where the coordinates say "great".

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
      coordinates: check only this many random coordinates per leaf (``None``: every coordinate,
        unless ``directions`` is given).
      directions: also check this many random unit directions.
      key: a PRNG key choosing the coordinates and directions (required with either).

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
      >>> sampled = check(lambda t: jnp.sum(jnp.sin(t)), jnp.arange(1000.0), dtype=jnp.float64,
      ...                 coordinates=10, directions=8, key=jax.random.key(0))
      >>> sampled.verdict, sampled.n_checked, len(sampled.directions)
      ('great', 10, 8)
    """
    _check_epsilon(epsilon)
    _checks.check_positive_int("top_k", top_k)
    _check_sampling(coordinates, directions, key)
    sampled = coordinates is not None or directions is not None
    context, dt = _precision(dtype)
    with context:
        leaves, names, treedef = _flatten(params)
        if dt is not None:
            leaves = [leaf.astype(dt) for leaf in leaves]
        params = jax.tree_util.tree_unflatten(treedef, leaves)
        _check_scalar_output(f, params)
        g_given = None if grads is None else _check_grads(grads, params)
        per = _per_coordinate(f, params) if chunk_size is None else 0
        if sampled:
            key_c, key_d = jax.random.split(key)
            picks = _pick(key_c, leaves, coordinates or 0)
        else:
            key_d, picks = None, None

        f0, g_leaves = _value_and_grad(f, leaves, treedef, g_given)
        f0 = float(f0)
        values = _perturbed_values(f, leaves, treedef, epsilon, chunk_size, per, picks)
        numerical, kinks, rounding = _estimates(f0, leaves, g_leaves, values, picks, epsilon)
        found = []
        if directions:

            def along(ls, g, key, idx):
                return _direction_values(f, ls, treedef, g, epsilon, key, idx, chunk_size, per)

            dirs = _run(along, (leaves, g_leaves, key_d), np.arange(directions))
            found = _directions_found(f0, dirs, epsilon, leaves)
        work_dtype = leaves[0].dtype
    return _build_result(
        names, treedef, g_leaves, numerical, kinks, epsilon, work_dtype, top_k,
        picks, found, rounding,
    )  # fmt: skip


def _estimates(f0, leaves, g_leaves, values, picks, epsilon):
    """Per leaf, full-shaped host arrays: the numerical derivative to compare (NaN where not
    sampled), the kink mask, and (flat, at the checked coordinates) the rounding error."""
    numerical, kinks, rounding = [], [], []
    for i, (leaf, g, (plus, minus)) in enumerate(zip(leaves, g_leaves, values)):
        pick = np.arange(leaf.size) if picks is None else picks[i]
        up, down = (s[pick] for s in _steps(leaf, epsilon))
        plus, minus = _host(plus), _host(minus)
        estimate, mask = _compare(f0, plus, minus, up, down, _host(g).ravel()[pick], leaf.dtype)
        full, full_mask = np.full(leaf.size, np.nan), np.zeros(leaf.size, bool)
        full[pick], full_mask[pick] = estimate, mask
        numerical.append(full.reshape(leaf.shape))
        kinks.append(full_mask.reshape(leaf.shape))
        rounding.append(_rounding(f0, plus, minus, up, down, leaf.dtype))
    return numerical, kinks, rounding


def _directions_found(f0, dirs, epsilon, leaves):
    """The :class:`Direction` s from ``_direction_values``' host results."""
    plus, minus, a_up, a_down = (_host(v) for v in dirs)
    eps = np.full(plus.shape, float(epsilon))
    narrowest = min((leaf.dtype for leaf in leaves), key=lambda d: d.itemsize)
    a = (a_up + a_down) / 2
    estimate, mask = _compare(
        f0, plus, minus, eps, eps, a, narrowest, analytic_up=a_up, analytic_down=a_down
    )
    return [
        Direction(j, float(a[j]), float(estimate[j]), float(abs(a[j] - estimate[j])), bool(mask[j]))
        for j in range(plus.size)
    ]


def _refuse_randomness(net, params, state, X, train):
    """Raise if ``net.apply`` depends on its key (dropout): the check needs one function."""
    run = jax.jit(lambda k: net.apply(params, state, X, key=k, train=train)[0])
    out = [np.asarray(run(jax.random.key(s))) for s in (0, 1)]
    if out[0].shape != out[1].shape or not np.array_equal(out[0], out[1], equal_nan=True):
        raise ValueError(
            f"a gradient check needs dropout off, but {type(net).__name__}.apply(train={train}) "
            "gives different outputs for different keys: every evaluation would draw a new mask "
            "(or, with a fixed key, check a function that training never differentiates). Use "
            "train=False or a keep probability of 1."
        )


def check_model(
    model,
    params: Params,
    state: State,
    X,
    Y,
    *,
    loss=None,
    grads: Params | None = None,
    train: bool = False,
    lambd=0.0,
    l1=0.0,
    is_weight: losses.WeightPredicate = losses.is_weight,
    epsilon: float = 1e-7,
    dtype=jnp.float64,
    top_k: int = 5,
    chunk_size: int | None = None,
    coordinates: int | None = None,
    directions: int | None = None,
    key: PRNGKey | None = None,
) -> GradCheckResult:
    """:func:`check` on the cost of any model of the protocol (see :mod:`fjdl.model`).

    .. math::
      J(\\theta) = \\frac{1}{m} \\sum_i \\mathcal{L}(\\mathrm{apply}(\\theta, s, X)_i, y_i)
                   + \\frac{\\lambda}{2m} \\sum_W \\lVert W \\rVert_F^2
                   + \\frac{\\lambda_1}{2m} \\sum_W \\lvert W \\rvert

    that is ``losses.cost(model.apply(params, state, X, train=train)[0], Y, params, output=loss,
    lambd=lambd, l1=l1, is_weight=is_weight)``, the cost :func:`fjdl.train.fit` minimizes (the
    model's new state is dropped). ``train=True`` checks batch norm with batch statistics,
    ``train=False`` with the running ones. A model whose output depends on the key (dropout) is
    refused: see the module docstring. An :class:`fjdl.model.MLP` with its own loss, the default
    weights and every coordinate goes through :func:`check_mlp`'s fast path.

    Args:
      model: a model of the protocol: ``init(key)``, ``apply(params, state, x, *, key, train)``.
      params, state: its parameters and state.
      X: inputs, batch first; cast to ``dtype`` when floating.
      Y: labels or targets, as ``loss`` expects (cast to ``dtype`` when floating).
      loss: ``"binary"`` (sigmoid cross-entropy on logits), ``"softmax"``, ``"mse"`` (half mean
        squared error), a function ``(out, y) -> scalar`` or an :class:`fjdl.losses.Loss` (see
        :func:`fjdl.losses.get`); ``None`` takes ``model.loss`` when the model has one (an MLP's
        comes from its output), else ``"softmax"``.
      grads: the gradient to check; ``None``: ``jax.grad`` of ``J``.
      train: batch norm with batch statistics (``True``) or running ones (``False``).
      lambd, l1: the L2 and L1 strengths (>= 0).
      is_weight: which leaves the penalties act on (default: ``ndim >= 2``, see
        :func:`fjdl.losses.is_weight`).
      epsilon, top_k, chunk_size, coordinates, directions, key: as for :func:`check`.
      dtype: the dtype of the check (float64 by default, inside ``jax.enable_x64(True)``);
        ``params``, ``state`` and floating ``X`` and ``Y`` are cast to it. ``None`` keeps them.

    Returns:
      A :class:`GradCheckResult`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from fjdl import testing
      >>> net = testing.ConvNet(channels=(2, 3), n_classes=3)
      >>> params, state = net.init(jax.random.key(0))
      >>> X = jax.random.normal(jax.random.key(1), (8, 6, 6, 1))
      >>> Y = jnp.arange(8) % 3
      >>> check_model(net, params, state, X, Y, train=True).verdict
      'great'
    """
    model_lib.check_model(model)
    _checks.check_nonnegative("lambd", lambd)
    _checks.check_nonnegative("l1", l1)
    _check_sampling(coordinates, directions, key)
    loss = losses.get(getattr(model, "loss", "softmax") if loss is None else loss)
    if (
        isinstance(model, model_lib.MLP)
        and coordinates is None
        and directions is None
        and is_weight is losses.is_weight
        and loss == losses.get(model.loss)
    ):
        return check_mlp(
            model, params, state, X, Y, grads=grads, lambd=lambd, l1=l1, train=train,
            epsilon=epsilon, dtype=dtype, top_k=top_k,
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        )  # fmt: skip
    context, dt = _precision(dtype)
    with context:
        if dt is not None:

            def cast(t):
                return jax.tree.map(
                    lambda v: v.astype(dt) if jnp.issubdtype(v.dtype, jnp.floating) else v,
                    jax.tree.map(jnp.asarray, t),
                )

            params, state, X, Y = cast(params), cast(state), cast(X), cast(Y)
        X, Y = jnp.asarray(X), jnp.asarray(Y)
        _refuse_randomness(model, params, state, X, train)
        fixed_key = jax.random.key(0)

        def J(p):
            out, _ = model.apply(p, state, X, key=fixed_key, train=train)
            return losses.cost(
                out, Y, p, output=loss, lambd=lambd, l1=l1, m=X.shape[0], is_weight=is_weight
            )

        return check(
            J, params, grads, epsilon, top_k=top_k, chunk_size=chunk_size,
            coordinates=coordinates, directions=directions, key=key,
        )  # fmt: skip


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
            logits, _ = model_lib.apply(config, p, model_state, X, train=train)
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
    if not isinstance(config, model_lib.MLP):
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
    model_lib.check_params(config, params)
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
            model_lib.apply(config, p, s, x, train=train)[0], Y, None, output=config.output
        ),
        params,
        model_state,
        X,
    )
    lambd = None if (_checks.is_concrete(lambd) and float(lambd) == 0) else lambd
    l1 = None if (_checks.is_concrete(l1) and float(l1) == 0) else l1
    return X, Y, lambd, l1


def numerical_gradient_mlp(
    config: model_lib.MLP,
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
        _two_sided(plus, minus, leaf, epsilon) for leaf, (plus, minus, _) in zip(leaves, values)
    ]
    return jax.tree_util.tree_unflatten(treedef, grads)


def check_mlp(
    config: model_lib.MLP,
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
        numerical, kinks, rounding = [], [], []
        for leaf, g, (plus, minus, crossed) in zip(leaves, g_leaves, values):
            up, down = _steps(leaf, epsilon)
            estimate, mask = _compare(
                float(f0), _host(plus), _host(minus), up, down, _host(g).ravel(), leaf.dtype,
                kink=np.asarray(crossed),
            )  # fmt: skip
            numerical.append(estimate.reshape(leaf.shape))
            kinks.append(mask.reshape(leaf.shape))
            rounding.append(_rounding(float(f0), _host(plus), _host(minus), up, down, leaf.dtype))
        work_dtype = leaves[0].dtype
    return _build_result(
        names, treedef, g_leaves, numerical, kinks, epsilon, work_dtype, top_k, rounding=rounding
    )
