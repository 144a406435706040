"""The checks: :func:`check` for any scalar function of a pytree (every coordinate, or sampled),
:func:`check_model` for any model of the protocol."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, losses
from fjdl import model as model_lib
from fjdl._types import Params, PRNGKey, State
from fjdl.gradcheck._errors import (
    compare_coordinate,
    coordinate_rounding,
    measure_noise,
    rounding_of_directions,
    step_sizes,
)
from fjdl.gradcheck._mlp import check_mlp
from fjdl.gradcheck._numerical import (
    DEFAULT_CHUNK_SIZE,
    check_analytic_grads,
    check_epsilon,
    check_scalar_output,
    direction_values,
    epsilon_for,
    flatten_leaves,
    largest_value_size,
    narrowest_dtype,
    perturbed_values,
    run_coordinates,
)
from fjdl.gradcheck._report import (
    Direction,
    GradCheckResult,
    build_result,
    precision_of,
    to_host,
    with_noise_measured,
    working_dtype,
)

# The interface of this module to the rest of fjdl.gradcheck (and its public names).
__all__ = [
    "check",
    "check_model",
]


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
    epsilon: float | None = None,
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
    The verdict follows the scale of the check's dtype (:func:`scale_for`), in float64 the
    course's: < 1e-7 ``"great"``; < 1e-5 ``"fine"`` (look closer); up to 1e-3 ``"suspicious"``;
    above 1e-3 ``"bug"``; in float32 < 1e-4, < 1e-3, < 1e-2, above. It is never ``"bug"`` where
    rounding alone explains the difference (see :mod:`fjdl.gradcheck`). The per-leaf differences
    and the worst coordinates say *where* a bug is.

    **Kinks.** Where a ReLU pre-activation (or a max, or a weight under L1) lies within epsilon of
    its switching point, ``theta + eps`` and ``theta - eps`` fall on different sides and the
    two-sided difference is the mean of two slopes (either slope is a valid derivative there:
    ReLU's derivative at 0 is 0 or 1 by convention; so is the mean, which ``sign(0) = 0`` gives
    an L1 term). Such a coordinate is recognized from the one-sided differences ``F = (J(+) -
    J(0)) / eps`` and ``B = (J(0) - J(-)) / eps``: they disagree beyond rounding, and either by
    more than 0.1% (10% in float32, whose larger step gives curvature a larger share) or with the
    analytic value next to one of them (within a quarter of ``|F - B|``) where smooth curvature
    would put it midway. There the analytic value is compared with the nearest of the two slopes
    and their mean, and a wrong gradient still disagrees with all three; the most this can hide
    is ``eps |J''|``, the error of a one-sided difference itself. (The 0.1% test alone misses
    small jumps: in a convnet, one
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
      epsilon: the step of the difference (> 0); ``None``: by the dtype of the check,
        :func:`default_epsilon` (1e-7 in float64, 1e-3 in float32).
      dtype: ``None`` keeps the dtypes of ``params`` (float32 or float64: 16-bit floats are
        refused, see :func:`scale_for`); ``jnp.float64`` casts ``params`` and
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
    check_epsilon(epsilon)
    _checks.check_positive_int("top_k", top_k)
    _check_sampling(coordinates, directions, key)
    sampled = coordinates is not None or directions is not None
    context, dt = precision_of(dtype)
    with context:
        leaves, names, treedef = flatten_leaves(params)
        if dt is not None:
            leaves = [leaf.astype(dt) for leaf in leaves]
        work_dtype = working_dtype(leaves, dtype)
        epsilon = epsilon_for(epsilon, work_dtype)
        params = jax.tree_util.tree_unflatten(treedef, leaves)
        check_scalar_output(f, params)
        g_given = None if grads is None else check_analytic_grads(grads, params)
        per = largest_value_size(f, params) if chunk_size is None else 0
        if sampled and key is not None:  # a sampled check has a key (checked above)
            key_c, key_d = jax.random.split(key)
            picks = _pick(key_c, leaves, coordinates or 0)
        else:
            key_d, picks = None, None

        f0, g_leaves = _value_and_grad(f, leaves, treedef, g_given)
        f0 = float(f0)
        values = perturbed_values(f, leaves, treedef, epsilon, chunk_size, per, picks)
        dirs = None
        if directions:

            def along(ls, g, key, idx):
                return direction_values(f, ls, treedef, g, epsilon, key, idx, chunk_size, per)

            dirs = run_coordinates(along, (leaves, g_leaves, key_d), np.arange(directions))

        def result(noise):
            numerical, kinks = _estimates(f0, leaves, g_leaves, values, picks, epsilon, noise)
            return build_result(
                names, treedef, g_leaves, numerical, kinks, epsilon, work_dtype, top_k, picks,
                [] if dirs is None else _directions_found(f0, dirs, epsilon, leaves, noise),
                coordinate_rounding(f0, leaves, values, picks, epsilon, noise),
                None if dirs is None else rounding_of_directions(f0, dirs, epsilon, leaves, noise),
                noise,
            )  # fmt: skip

        def measure():
            return measure_noise(f, leaves, treedef, epsilon, chunk_size, per)

        return with_noise_measured(result, measure, work_dtype)


def _estimates(f0, leaves, g_leaves, values, picks, epsilon, noise=None):
    """Per leaf, full-shaped host arrays: the numerical derivative to compare (NaN where not
    sampled) and the kink mask (see :func:`compare_coordinate`)."""
    numerical, kinks = [], []
    for i, (leaf, g, (plus, minus)) in enumerate(zip(leaves, g_leaves, values)):
        pick = np.arange(leaf.size) if picks is None else picks[i]
        up, down = (s[pick] for s in step_sizes(leaf, epsilon))
        plus, minus = to_host(plus), to_host(minus)
        a = to_host(g).ravel()[pick]
        estimate, mask = compare_coordinate(f0, plus, minus, up, down, a, leaf.dtype, noise=noise)
        full, full_mask = np.full(leaf.size, np.nan), np.zeros(leaf.size, bool)
        full[pick], full_mask[pick] = estimate, mask
        numerical.append(full.reshape(leaf.shape))
        kinks.append(full_mask.reshape(leaf.shape))
    return numerical, kinks


def _directions_found(f0, dirs, epsilon, leaves, noise=None):
    """The :class:`Direction` s from ``direction_values``' host results."""
    plus, minus, a_up, a_down = (to_host(v) for v in dirs)
    eps = np.full(plus.shape, float(epsilon))
    a = (a_up + a_down) / 2
    estimate, mask = compare_coordinate(
        f0, plus, minus, eps, eps, a, narrowest_dtype(leaves), analytic_up=a_up, analytic_down=a_down,
        noise=noise,
    )  # fmt: skip
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
    epsilon: float | None = None,
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
    refused: see :mod:`fjdl.gradcheck`. An :class:`fjdl.model.MLP` with its own loss, the default
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
      dtype: the dtype of the check (float64 by default, inside ``jax.enable_x64(True)``; float32
        on its own scale, see :func:`scale_for`); ``params``, ``state`` and floating ``X`` and
        ``Y`` are cast to it. ``None`` keeps them.

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
    context, dt = precision_of(dtype)
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
