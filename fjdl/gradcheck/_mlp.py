"""The fast path for fjdl's MLPs: a perturbed parameter of layer ``l`` reuses the unperturbed
forward pass below ``l`` and moves one column of ``z[l]``."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fjdl import _checks, batchnorm, losses, nn
from fjdl import model as model_lib
from fjdl._types import Params, State
from fjdl.gradcheck._errors import (
    compare_coordinate,
    coordinate_rounding,
    measure_noise,
    step_sizes,
)
from fjdl.gradcheck._numerical import (
    DEFAULT_CHUNK_SIZE,
    check_analytic_grads,
    check_epsilon,
    epsilon_for,
    flatten_leaves,
    largest_value_size,
    map_chunks,
    narrowest_dtype,
    two_sided_difference,
)
from fjdl.gradcheck._report import (
    GradCheckResult,
    build_result,
    precision_of,
    to_host,
    with_noise_measured,
    working_dtype,
)

# The interface of this module to the rest of fjdl.gradcheck (and its public names).
__all__ = [
    "check_mlp",
    "numerical_gradient_mlp",
]

_KINKED_ACTIVATIONS = ("relu", "leaky_relu")


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
    total: float | jax.Array = 0.0
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
            out.append(map_chunks(both, n, chunk_size))
    return _data_loss(config, cache[-1][2], Y) + base_penalty, out


_mlp_perturbed_jit = jax.jit(_mlp_perturbed, static_argnums=(0, 1, 2, 3))


def _mlp_inputs(config, params, model_state, X, Y, lambd, l1, train, epsilon, chunk_size):
    if not isinstance(config, model_lib.MLP):
        raise TypeError(f"config must be an fjdl.model.MLP, got {type(config).__name__}")
    check_epsilon(epsilon)
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
    flatten_leaves(params)
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
    epsilon: float | None = None,
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

    Dropout must be off (see :mod:`fjdl.gradcheck`): ``train=True`` with ``keep_probs`` < 1 raises.

    Args:
      config: the :class:`fjdl.model.MLP`.
      params, model_state: from :func:`fjdl.model.init`.
      X: inputs ``(m, n_x)``, cast to the parameters' dtype.
      Y: labels, as :func:`fjdl.losses.cost` expects for ``config.output``.
      lambd, l1: the L2 and L1 strengths of the cost (>= 0).
      train: batch norm with batch statistics (``True``) or running statistics (``False``).
      epsilon: the step of the difference (> 0); ``None``: by the parameters' dtype,
        :func:`default_epsilon` (1e-7 in float64, 1e-3 in float32).
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
    leaves, _, treedef = flatten_leaves(params)
    epsilon = epsilon_for(epsilon, narrowest_dtype(leaves))
    _, values = _mlp_perturbed_jit(
        config, bool(train), int(chunk_size), False, params, model_state, X, Y, lambd_, l1_, epsilon
    )
    grads = [
        two_sided_difference(plus, minus, leaf, epsilon) for leaf, (plus, minus, _) in zip(leaves, values)
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
    epsilon: float | None = None,
    dtype=jnp.float64,
    top_k: int = 5,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> GradCheckResult:
    """:func:`check` for an :class:`fjdl.model.MLP`'s cost, with the fast numerical gradient.

    Checks ``grads`` (``None``: ``jax.grad`` of the cost through :func:`fjdl.model.apply`) against
    :func:`numerical_gradient_mlp`, on the scale of the check's dtype (:func:`scale_for`; in
    float64 the course's: < 1e-7 great, < 1e-5 fine, up to 1e-3 suspicious, above a bug; never a
    bug where rounding alone explains the difference). Kinks are found exactly: a coordinate is
    reported when
    ``theta + eps`` and ``theta - eps`` put some ReLU pre-activation on different sides of 0.

    Args:
      config, params, model_state, X, Y, lambd, l1, train, chunk_size: as for
        :func:`numerical_gradient_mlp`.
      epsilon: the step (> 0); ``None``: by the dtype of the check, :func:`default_epsilon`
        (1e-7 in float64, 1e-3 in float32).
      grads: the gradient to check, shaped like ``params``.
      dtype: the dtype of the check; float64 (the default) runs inside ``jax.enable_x64(True)``
        with ``params``, ``grads``, ``model_state`` and ``X`` cast to it; float32 on its own
        scale. ``None`` keeps ``params``' dtype; 16-bit floats are refused.
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
    context, dt = precision_of(dtype)
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
        leaves, names, treedef = flatten_leaves(params)
        work_dtype = working_dtype(leaves, dtype)
        epsilon = epsilon_for(epsilon, work_dtype)

        if grads is not None:
            g_leaves = check_analytic_grads(grads, params)
            g_leaves = [g.astype(leaf.dtype) for g, leaf in zip(g_leaves, leaves)]
        out = _mlp_perturbed_jit(
            config, bool(train), int(chunk_size), grads is None,
            params, model_state, X, Y, lambd_, l1_, epsilon,
        )  # fmt: skip
        f0, values, g_leaves = out if grads is None else (*out, g_leaves)
        f0 = float(f0)
        numerical, kinks = [], []
        for leaf, g, (plus, minus, crossed) in zip(leaves, g_leaves, values):
            up, down = step_sizes(leaf, epsilon)
            estimate, mask = compare_coordinate(
                f0, to_host(plus), to_host(minus), up, down, to_host(g).ravel(), leaf.dtype,
                kink=np.asarray(crossed),
            )  # fmt: skip
            numerical.append(estimate.reshape(leaf.shape))
            kinks.append(mask.reshape(leaf.shape))
        values = [(plus, minus) for plus, minus, _ in values]

        def result(noise):
            rounding = coordinate_rounding(f0, leaves, values, None, epsilon, noise)
            return build_result(
                names, treedef, g_leaves, numerical, kinks, epsilon, work_dtype, top_k,
                rounding=rounding, noise=noise,
            )  # fmt: skip

        def measure():  # on the cost the fast path evaluates, by the generic path
            def J(p):
                logits, _ = model_lib.apply(config, p, model_state, X, train=train)
                return losses.cost(
                    logits, Y, p, output=config.output,
                    lambd=0.0 if lambd_ is None else lambd_, l1=0.0 if l1_ is None else l1_,
                )  # fmt: skip

            return measure_noise(J, leaves, treedef, epsilon, None, largest_value_size(J, params))

        return with_noise_measured(result, measure, work_dtype)
