"""The two-sided numerical gradient of any scalar function of a pytree, every coordinate at
once: validation, the step by dtype, ``vmap`` over coordinates in chunks, threads on a CPU."""

import concurrent.futures
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fjdl import _checks
from fjdl._types import Params

# The interface of this module to the rest of fjdl.gradcheck (and its public names).
__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_EPSILON",
    "check_analytic_grads",
    "check_epsilon",
    "check_scalar_output",
    "default_epsilon",
    "direction_values",
    "epsilon_for",
    "flatten_leaves",
    "largest_value_size",
    "map_chunks",
    "narrowest_dtype",
    "numerical_gradient",
    "perturbed_values",
    "relative_difference",
    "run_coordinates",
    "two_sided_difference",
]

DEFAULT_CHUNK_SIZE = 512
"""Coordinates evaluated together by one ``vmap`` in :func:`numerical_gradient_mlp`."""


_CHUNK_BUDGET = 1 << 20
"""Elements of ``f``'s largest intermediate value, summed over the coordinates and signs that one
``vmap`` evaluates together (8 MiB in float64); it sets the default chunk size."""


_ALONE = 8
"""A leaf with at least ``1 / _ALONE`` of the coordinates is mapped on its own (see
:func:`leaf_groups`)."""


DEFAULT_EPSILON = {"float64": 1e-7, "float32": 1e-3, "float16": 1e-1, "bfloat16": 2e-1}
"""The step ``epsilon=None`` takes, by dtype (see :mod:`fjdl.gradcheck`). The 16-bit ones,
``cbrt(machine epsilon)``, serve :func:`numerical_gradient` only."""


def _leaf_name(path) -> str:
    """``layer 2 W`` for fjdl's tuple-of-dicts parameters, else the key path like ``['w']``."""
    if (
        len(path) == 2
        and isinstance(path[0], jax.tree_util.SequenceKey)
        and isinstance(path[1], jax.tree_util.DictKey)
    ):
        return f"layer {path[0].idx + 1} {path[1].key}"
    return jax.tree_util.keystr(path) or "params"


def flatten_leaves(params, what="params"):
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


def check_epsilon(epsilon):
    """Validate an explicit ``epsilon`` (``None``, "by dtype", passes)."""
    if epsilon is None:
        return
    _checks.check_positive("epsilon", epsilon)
    if np.ndim(epsilon) != 0:
        raise ValueError(f"epsilon must be a scalar, got shape {np.shape(epsilon)}")


def default_epsilon(dtype) -> float:
    """The step ``epsilon=None`` takes in ``dtype``: 1e-7 in float64 (the course's), 1e-3 in
    float32.

    :mod:`fjdl.gradcheck` derives them: a two-sided difference is off by about
    ``eps^2 |J'''| / 6 + u |J| / (2 eps)`` (truncation plus rounding, ``u`` the machine epsilon),
    least near ``eps = cbrt(u)``; float32 takes a step 5 times smaller, which keeps ReLU kinks out
    of reach for 4 times the least error. bfloat16 and float16 get ``cbrt(u)``, 2e-1 and 1e-1
    (for :func:`numerical_gradient`: a check refuses them, see :func:`scale_for`).

    Example:
      >>> default_epsilon(jnp.float64), default_epsilon(jnp.float32)
      (1e-07, 0.001)
    """
    name = np.dtype(dtype).name
    if name not in DEFAULT_EPSILON:
        raise TypeError(f"dtype must be a float dtype like jnp.float32, got {dtype!r}")
    return DEFAULT_EPSILON[name]


def epsilon_for(epsilon, dtype) -> float:
    """``epsilon``, or the default step for ``dtype`` when it is ``None``."""
    check_epsilon(epsilon)
    return default_epsilon(dtype) if epsilon is None else epsilon


def narrowest_dtype(leaves):
    """The narrowest dtype among the leaves: the one whose rounding limits the check."""
    return min((leaf.dtype for leaf in leaves), key=lambda d: d.itemsize)


def check_scalar_output(f, params):
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar, got {type(f).__name__}")
    out = jax.eval_shape(f, params)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"f must return a scalar, got {shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"f must return a float scalar, got dtype {out.dtype}")


def check_analytic_grads(grads, params):
    p_leaves, p_names, p_def = flatten_leaves(params)
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
    g_leaves, _, _ = flatten_leaves(grads, "grads")
    for name, p, g in zip(p_names, p_leaves, g_leaves):
        if g.shape != p.shape:
            raise ValueError(
                f"grads leaf {name} must have the shape of params' {name}, {p.shape}, got {g.shape}"
            )
    return g_leaves


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


def map_chunks(fn, index, chunk):
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


def leaf_groups(leaves):
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


def _group_values(
    f, leaves, treedef, group, epsilon, chunk_size, per_coordinate, index, multiples=(1.0, -1.0)
):
    """``(J(theta + eps e_c), J(theta - eps e_c))`` for the coordinates ``c`` in ``index`` of the
    leaves in ``group``, numbered as one vector; the other leaves stay. (With ``multiples``,
    ``J(theta + k eps e_c)`` for each ``k`` of them.)

    Both signs go through one more ``vmap``, so the compiled program holds one copy of ``f``.
    """
    sizes = [leaves[i].size for i in group]
    offsets = np.cumsum([0, *sizes])
    n = len(index)
    widest = max((leaves[i].dtype for i in group), key=lambda d: d.itemsize)
    signs = jnp.array(multiples, widest)

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
        return tuple(values[k] for k in range(len(multiples)))

    chunk = _chunk(chunk_size, n, len(multiples) * (per_coordinate + sum(sizes)))
    return map_chunks(both, index, chunk)


def perturbed_values(
    f, leaves, treedef, epsilon, chunk_size, per_coordinate, picks=None, multiples=(1.0, -1.0)
):
    """``(J(theta + eps e_i), J(theta - eps e_i))`` per leaf, flat: for every coordinate (one map
    per group of :func:`leaf_groups`), or for the coordinates ``picks`` (one index array per
    leaf; one map for all). With ``multiples``, ``J(theta + k eps e_i)`` for each ``k``."""
    groups = leaf_groups(leaves) if picks is None else [list(range(len(leaves)))]
    out = [(jnp.zeros((0,), leaf.dtype),) * len(multiples) for leaf in leaves]
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
            return _group_values(
                f, ls, treedef, group, epsilon, chunk_size, per_coordinate, idx, multiples
            )

        found = run_coordinates(values, (leaves,), index)
        bounds = np.cumsum([0, *counts])
        for i, lo, hi in zip(group, bounds, bounds[1:]):
            out[i] = tuple(v[lo:hi] for v in found)
    return out


def _cpu_threads(n: int) -> int:
    """Threads to run a map from: one per core on a CPU (at most ``n``), else 1."""
    if jax.devices()[0].platform != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, n))


def run_coordinates(fn, args, index):
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


def largest_value_size(f, params):
    """Elements of the largest value ``f`` computes (0 when ``f`` cannot be traced to a jaxpr)."""
    try:
        return _largest_value(jax.make_jaxpr(f)(params).jaxpr)
    except Exception:  # noqa: BLE001 (a size estimate only: fall back to the parameters' size)
        return 0


def two_sided_difference(plus, minus, leaf, epsilon):
    """``(J+ - J-) / (fl(theta + eps) - fl(theta - eps))``, in the leaf's dtype (traceable)."""
    step = jnp.asarray(epsilon).astype(leaf.dtype)
    h = ((leaf + step) - (leaf - step)).ravel()
    return ((plus - minus).astype(leaf.dtype) / h).reshape(leaf.shape)


def numerical_gradient(
    f: Callable[[Params], jax.Array],
    params: Params,
    epsilon: float | None = None,
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
    course's thresholds (see :mod:`fjdl.gradcheck`). For an :class:`fjdl.model.MLP`,
    :func:`numerical_gradient_mlp` gives the same numbers far faster.

    Args:
      f: ``params -> scalar``, the cost :math:`J`.
      params: a pytree of float arrays, :math:`\\theta`.
      epsilon: the step :math:`\\varepsilon` (> 0); ``None``: by the narrowest dtype of
        ``params``, :func:`default_epsilon` (the course's 1e-7 in float64, 1e-3 in float32).
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
    check_epsilon(epsilon)
    leaves, _, treedef = flatten_leaves(params)
    epsilon = epsilon_for(epsilon, narrowest_dtype(leaves))
    check_scalar_output(f, params)
    per = largest_value_size(f, params) if chunk_size is None else 0
    values = perturbed_values(f, leaves, treedef, epsilon, chunk_size, per)
    grads = [two_sided_difference(p, m, leaf, epsilon) for leaf, (p, m) in zip(leaves, values)]
    return jax.tree_util.tree_unflatten(treedef, grads)


def direction_values(
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
    return map_chunks(at, index, _chunk(chunk_size, n, 2 * per_coordinate + 4 * _size(leaves)))


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
    a_def: Any = jax.tree.structure(a)  # (PyTreeDef's stub has no __ne__ mypy can see)
    if a_def != jax.tree.structure(b):
        raise ValueError(
            f"a and b must have the same structure, got {jax.tree.structure(a)} and "
            f"{jax.tree.structure(b)}"
        )
    sq_diff: float | jax.Array = 0.0
    sq_a: float | jax.Array = 0.0
    sq_b: float | jax.Array = 0.0
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
