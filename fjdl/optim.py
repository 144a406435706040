r"""Optimizers, written by hand as optax-compatible gradient transformations.

Each optimizer is a :class:`GradientTransformation`: a NamedTuple ``(init, update)`` of pure
functions, built with optax's own container type, so it works with :func:`apply_updates` and with
``optax.chain`` / ``optax.apply_updates`` alike (this module uses optax for that container only;
every update is written by hand)::

  opt = fjdl.optim.adam(learning_rate=1e-3)
  state = opt.init(params)                    # a NamedTuple of pytrees, count = 0 (int32)
  updates, state = opt.update(grads, state, params)
  params = fjdl.optim.apply_updates(params, updates)   # params + updates

The sign is applied inside (``updates = -learning_rate * ...``), so :func:`apply_updates` only adds.

The formulas are the course's (with the symbols it uses: ``v`` the average of the gradients, ``s``
the average of their squares). ``learning_rate`` is a number, an array, or a schedule
``count -> learning rate`` (see :mod:`fjdl.schedules`) called with the number of updates done
before this one (0 at the first). Every hyperparameter may also be a traced array: building the
optimizer inside ``jit`` or ``vmap`` from array arguments batches over learning rates or betas and
changing a value does not recompile. Hyperparameters are validated when the optimizer is built
(a traced value cannot be checked then, and is let through).

Updates keep the parameters' dtype; the averages of the states (``v``, ``s``) are kept in at least
float32 (:func:`moment_dtype`: float16 and bfloat16 parameters get float32 moments, in which the
step is computed before it is cast back; float64 stays float64); ``count`` is int32.

Weight decay, two ways, on every optimizer (both default to 0, off):

- ``l2``: coupled, added to the gradient before anything else, ``dW <- dW + l2 * W``: the gradient
  of an L2 penalty ``l2 / 2 * ||W||^2`` in the cost. The course's ``lambd / (2 m) ||W||_F^2`` is
  ``l2 = lambd / m`` with ``mask=weights_only``.
- ``weight_decay``: decoupled (Loshchilov & Hutter's AdamW): ``W <- W - lr * (step + wd * W)``,
  where ``step`` is the optimizer's own direction; the decay never enters ``v`` or ``s``.

For :func:`gd` the two are the same; with momentum, RMSprop or Adam they differ.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fjdl import _checks
from fjdl._types import Hyperparameter, Params, PyTree, ScalarOrSchedule
from fjdl.losses import is_weight

Updates = Any
"""A pytree shaped like the parameters: what :func:`apply_updates` adds to them."""

Mask = PyTree | Callable[[Params], PyTree]
"""Where weight decay applies: a pytree of Python bools shaped like the parameters, or a function
of the parameters returning one (e.g. :func:`weights_only`)."""


GradientTransformation = optax.GradientTransformation
"""An optimizer: ``init(params) -> state`` and ``update(grads, state, params=None)`` returning
``(updates, new_state)``. fjdl's optimizers are built with optax's own container (only the
container: their update math is written here), so ``isinstance(opt,
optax.GradientTransformation)`` holds and ``optax.chain``, ``optax.inject_hyperparams``, flax's
``TrainState`` and ``nnx.Optimizer`` accept them, as type checkers do."""


# Each state's ``count`` field shadows the method ``tuple.count``, which mypy reports as an
# incompatible override (python/mypy#3950). The name is optax's (``ScaleByAdamState.count``) and
# part of the states' API, and nothing calls ``.count(value)`` on a state: hence the ignores.


class GdState(NamedTuple):
    """State of :func:`gd`: only the count of updates done (for a schedule)."""

    count: jax.Array  # type: ignore[assignment]  # int32; shadows tuple.count, as in optax


class MomentumState(NamedTuple):
    """State of :func:`momentum`: the velocity ``v``, shaped like the parameters."""

    count: jax.Array  # type: ignore[assignment]  # int32; shadows tuple.count, as in optax
    v: Any


class RmspropState(NamedTuple):
    """State of :func:`rmsprop`: ``s``, the average of the squared gradients."""

    count: jax.Array  # type: ignore[assignment]  # int32; shadows tuple.count, as in optax
    s: Any


class AdamState(NamedTuple):
    """State of :func:`adam`: the first moment ``v`` and the second moment ``s``."""

    count: jax.Array  # type: ignore[assignment]  # int32; shadows tuple.count, as in optax
    v: Any
    s: Any


class EwaState(NamedTuple):
    """State of :func:`ewa`: the running average and the number of values seen."""

    count: jax.Array  # type: ignore[assignment]  # int32; shadows tuple.count, as in optax
    average: Any


# ---------------------------------------------------------------------------------------------
# Helpers


def moment_dtype(dtype) -> jnp.dtype:
    """The dtype of an optimizer's averages for parameters of ``dtype``: at least float32.

    The policy of :mod:`fjdl.optim` (optax's ``mu_dtype`` with a floor): a float16 or bfloat16
    parameter's ``v`` and ``s`` are kept in float32, where ``dW^2`` neither underflows nor
    overflows and ``epsilon = 1e-8`` is not 0; the update is computed there and returned in the
    gradient's dtype. float32 and float64 are kept as they are.

    Example:
      >>> moment_dtype(jnp.bfloat16), moment_dtype(jnp.float64)
      (dtype('float32'), dtype('float64'))
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return dtype


def _zeros_moment(p):
    return jnp.zeros(jnp.shape(p), moment_dtype(jnp.result_type(p)))


def _cast(x, like):
    """``x`` in the dtype of ``like``; Python numbers stay weak (``1 - beta`` stays exact)."""
    if type(x) in (int, float):
        return x
    return jnp.asarray(x, like.dtype)


def _one_minus_power(beta, t, like):
    """``1 - beta ** t`` in the dtype of ``like``, accurate where ``beta`` is near 1.

    Computed as ``-expm1(t * log1p(-(1 - beta)))`` from the same ``1 - beta`` that weights the new
    value in the average (in double precision when ``beta`` is a Python float), so a constant series
    comes back exactly: in float32, ``1 - float32(0.999)`` would be off by 1.3e-5 relative.
    """
    one_minus_beta = jnp.asarray(_cast(1 - beta, like), like.dtype)
    t = jnp.asarray(t).astype(like.dtype)
    return -jnp.expm1(t * jnp.log1p(-one_minus_beta))


def _is_off(x) -> bool:
    """A weight decay known to be 0 (a Python number, or a concrete array as
    ``optax.inject_hyperparams`` passes outside ``jit``): skipped at trace time."""
    if type(x) in (int, float):
        return x == 0
    return _checks.is_concrete(x) and hasattr(x, "dtype") and not bool(jnp.any(x != 0))


def _increment(count):
    """``count + 1``, saturating at the int32 maximum instead of wrapping around."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)


def _zero_count():
    return jnp.zeros((), jnp.int32)


def _learning_rate(learning_rate, count):
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _unzip(like, tree, n):
    """A tree of ``n``-tuples (one per leaf of ``like``) as ``n`` trees."""
    return jax.tree.transpose(jax.tree.structure(like), jax.tree.structure((0,) * n), tree)


def _check_learning_rate(learning_rate):
    if not callable(learning_rate):
        _checks.check_nonnegative("learning_rate", learning_rate)


def _check_decay(l2, weight_decay, mask):
    _checks.check_nonnegative("l2", l2)
    _checks.check_nonnegative("weight_decay", weight_decay)
    if mask is not None and not callable(mask):
        if not all(isinstance(leaf, bool) for leaf in jax.tree.leaves(mask)):
            raise TypeError("mask must be a pytree of Python bools shaped like the parameters")


def _mask_tree(mask, params):
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    return mask(params) if callable(mask) else mask


def _paths(tree: PyTree) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def check_like(name: str, tree: PyTree, like: PyTree, like_name: str) -> None:
    """Raise ``ValueError`` unless ``tree`` has the structure and leaf shapes of ``like``.

    Shapes are static (known at trace time), so this also holds under ``jit``. The message names
    the leaves that differ, as optax's ``check_shapes_equal`` does: a gradient of shape ``(1, 5)``
    for a parameter of shape ``(2, 5)`` would otherwise broadcast silently.
    """
    # jaxlib ships no stub for its compiled ``_jax`` module, so mypy sees ``PyTreeDef`` as an
    # unknown type without ``!=``; the comparison is jax's own way to compare structures.
    if jax.tree.structure(tree) != jax.tree.structure(like):  # type: ignore[operator]
        got, want = _paths(tree), _paths(like)
        extra = [p for p in got if p not in set(want)][:4]
        missing = [p for p in want if p not in set(got)][:4]
        detail = f"; not in {like_name}: {extra}" if extra else ""
        detail += f"; missing: {missing}" if missing else ""
        raise ValueError(
            f"{name} must have the tree structure of {like_name} ({len(want)} leaves), got "
            f"{len(got)} leaves{detail or ' in another structure'}"
        )
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(like)):
        if jnp.shape(a) != jnp.shape(b):
            leaf = jax.tree_util.keystr(path)
            raise ValueError(
                f"{name}{leaf} has shape {jnp.shape(a)}, but {like_name}{leaf} has shape "
                f"{jnp.shape(b)}"
            )


def _check_grads(grads, state_tree, params, state_name: str) -> None:
    if params is not None:
        check_like("grads", grads, params, "params")
    if state_tree is not None:
        check_like("grads", grads, state_tree, f"the optimizer state's {state_name}")


def _needs_params(name, params):
    if params is None:
        raise ValueError(f"{name} needs the parameters: call update(grads, state, params)")


def _add_l2(grads, params, l2, mask):
    """Coupled decay: ``dW + l2 * W`` where the mask is True."""
    if _is_off(l2):
        return grads
    _needs_params("l2", params)
    return jax.tree.map(
        lambda g, p, on: g + _cast(l2, g) * p if on else g, grads, params, _mask_tree(mask, params)
    )


def _scale(directions, params, learning_rate, count, weight_decay, mask):
    """``-lr * (direction + weight_decay * W)``: the sign flip, and decoupled decay if on."""
    lr = _learning_rate(learning_rate, count)
    if _is_off(weight_decay):
        return jax.tree.map(lambda d: -_cast(lr, d) * d, directions)
    _needs_params("weight_decay", params)

    def leaf(d, p, on):
        if on:
            d = d + _cast(weight_decay, d) * p
        return -_cast(lr, d) * d

    return jax.tree.map(leaf, directions, params, _mask_tree(mask, params))


def weights_only(params: Params, is_weight: Callable[[Any, Any], bool] = is_weight) -> Any:
    """A mask for ``l2``/``weight_decay``: True for the weights, False for the rest.

    The course's L2 regularization penalizes the weights only, never ``b`` (nor batch norm's
    ``gamma`` and ``beta``). The weights are the leaves that ``is_weight(path, leaf)`` selects;
    the default, :func:`fjdl.losses.is_weight`, takes the leaves with ``ndim >= 2``: fjdl's ``W``,
    convolution kernels, flax's ``kernel``, equinox's ``weight``.

    Example:
      >>> import jax.numpy as jnp
      >>> weights_only(({"W": jnp.ones((2, 3)), "b": jnp.zeros(3)},))
      ({'W': True, 'b': False},)
    """
    return jax.tree_util.tree_map_with_path(lambda p, leaf: bool(is_weight(p, leaf)), params)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``params + updates``, leaf by leaf, in the parameters' dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> print(apply_updates({"W": jnp.array([1.0, 2.0])}, {"W": jnp.array([-0.5, 0.5])})["W"])
      [0.5 2.5]
    """
    check_like("updates", updates, params, "params")
    return jax.tree.map(
        lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype), params, updates
    )


# ---------------------------------------------------------------------------------------------
# Exponentially weighted averages on their own


def ewa_update(average: PyTree, value: PyTree, beta: Hyperparameter) -> PyTree:
    r"""One step of an exponentially weighted average, on arrays or pytrees.

    .. math::
      v_t = \beta v_{t-1} + (1 - \beta) \theta_t

    with :math:`v_{t-1}` = ``average``, :math:`\theta_t` = ``value`` and :math:`\beta` = ``beta``.
    It averages over roughly the last :math:`1 / (1 - \beta)` values.

    Args:
      average: :math:`v_{t-1}` (start from zeros, :math:`v_0 = 0`).
      value: :math:`\theta_t`, the new value.
      beta: the weight of the past, in [0, 1).

    Returns:
      :math:`v_t`, in the dtype of ``average``.

    Example:
      >>> print(ewa_update(0.0, 10.0, 0.9))  # 0.1 * 10
      1.0
    """
    _checks.check_unit_interval("beta", beta)

    def leaf(v, theta):
        v = jnp.asarray(v)
        return (_cast(beta, v) * v + (1 - _cast(beta, v)) * theta).astype(v.dtype)

    return jax.tree.map(leaf, average, value)


def bias_correction(average: PyTree, beta: Hyperparameter, t: jax.typing.ArrayLike) -> PyTree:
    r"""The bias-corrected average: :math:`v_t / (1 - \beta^t)`, with ``t`` counted from 1.

    An average started at :math:`v_0 = 0` is too small at first: a constant series :math:`c`
    gives :math:`v_t = (1 - \beta^t) c`. Dividing by :math:`1 - \beta^t` gives back :math:`c` from
    :math:`t = 1`; the correction fades as :math:`\beta^t \to 0`.

    Args:
      average: :math:`v_t`, an array or a pytree.
      beta: the average's :math:`\beta`, in [0, 1).
      t: the number of values averaged so far (an int >= 1, or an int array).

    Example:
      >>> v = ewa_update(0.0, 5.0, 0.9)  # 0.5
      >>> print(round(float(bias_correction(v, 0.9, 1)), 6))
      5.0
    """
    _checks.check_unit_interval("beta", beta)
    _checks.check_real("t", t)
    if _checks.is_concrete(t) and jnp.any(jnp.asarray(t) < 1):
        raise ValueError(f"t must be >= 1 (the first value is t = 1), got {t!r}")

    def leaf(v):
        v = jnp.asarray(v)
        return v / _one_minus_power(beta, t, v)

    return jax.tree.map(leaf, average)


def ewa(beta: Hyperparameter, debias: bool = False) -> GradientTransformation:
    r"""A running exponentially weighted average as an ``(init, update)`` pair.

    ``update(values, state)`` returns ``(average, new_state)``: :math:`v_t` after
    :func:`ewa_update`, or :math:`v_t / (1 - \beta^t)` with ``debias=True``. As a gradient
    transformation it equals ``optax.ema(beta, debias)``; use it to average a loss curve for
    plotting, or any pytree.

    Args:
      beta: the weight of the past, in [0, 1). 0.9 averages about the last 10 values.
      debias: return the bias-corrected average (:func:`bias_correction`).

    Example:
      >>> avg = ewa(0.5, debias=True)
      >>> state = avg.init(0.0)
      >>> for x in [4.0, 4.0, 4.0]:
      ...     v, state = avg.update(x, state)
      >>> print(v, state.average)  # corrected: 4; raw: 4 * (1 - 0.5 ** 3)
      4.0 3.5
    """
    _checks.check_unit_interval("beta", beta)

    def init(values):
        zeros = jax.tree.map(lambda x: jnp.zeros_like(jnp.asarray(x)), values)
        return EwaState(count=_zero_count(), average=zeros)

    def update(values, state, params=None):
        del params
        average = ewa_update(state.average, values, beta)
        count = _increment(state.count)
        out = bias_correction(average, beta, count) if debias else average
        return out, EwaState(count=count, average=average)

    return GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# The optimizers


def gd(
    learning_rate: ScalarOrSchedule,
    *,
    l2: Hyperparameter = 0.0,
    weight_decay: Hyperparameter = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""(Mini-batch) gradient descent.

    .. math::
      W \leftarrow W - \alpha \, dW

    with :math:`\alpha` = ``learning_rate``. The same for every parameter, ``W`` and ``b`` alike.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> alpha``.
      l2: coupled weight decay, ``dW + l2 * W`` (default 0, off).
      weight_decay: decoupled weight decay (default 0, off). For plain gradient descent it is the
        same as ``l2``.
      mask: where ``l2``/``weight_decay`` apply: a pytree of bools like the parameters, or a
        function of the parameters returning one (e.g. :func:`weights_only`); default everywhere.

    Returns:
      A :class:`GradientTransformation`; its state is :class:`GdState`.

    Example:
      >>> import jax.numpy as jnp
      >>> opt = gd(0.1)
      >>> params = jnp.array([1.0, 2.0])
      >>> updates, state = opt.update(jnp.array([1.0, -2.0]), opt.init(params))
      >>> print(apply_updates(params, updates))
      [0.9 2.2]

    Equals ``optax.sgd(learning_rate)``.
    """
    _check_learning_rate(learning_rate)
    _check_decay(l2, weight_decay, mask)

    def init(params):
        del params
        return GdState(count=_zero_count())

    def update(grads, state, params=None):
        _check_grads(grads, None, params, "")
        grads = _add_l2(grads, params, l2, mask)
        updates = _scale(grads, params, learning_rate, state.count, weight_decay, mask)
        return updates, GdState(count=_increment(state.count))

    return GradientTransformation(init, update)


def momentum(
    learning_rate: ScalarOrSchedule,
    beta: Hyperparameter = 0.9,
    *,
    heavy_ball: bool = False,
    nesterov: bool = False,
    l2: Hyperparameter = 0.0,
    weight_decay: Hyperparameter = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""Gradient descent with momentum: step along an average of the recent gradients.

    The course's form, an exponentially weighted average of the gradients:

    .. math::
      v \leftarrow \beta v + (1 - \beta) \, dW, \qquad W \leftarrow W - \alpha v

    with :math:`\alpha` = ``learning_rate`` and :math:`\beta` = ``beta``, :math:`v_0 = 0` and no
    bias correction (as in the course). Along a direction where the gradients flip sign each step
    (across a narrow valley) the average is small; along a steady one it is the gradient itself.

    Options beyond the course:

    - ``heavy_ball=True``: Polyak's form without the :math:`1 - \beta`,
      :math:`v \leftarrow \beta v + dW` (optax, PyTorch, Keras). Its steps are
      :math:`1 / (1 - \beta)` times larger: ``momentum(lr, beta)`` equals
      ``momentum(lr * (1 - beta), beta, heavy_ball=True)``.
    - ``nesterov=True``: step along the look-ahead :math:`\beta v + (1 - \beta) dW` (heavy ball:
      :math:`\beta v + dW`) with the updated :math:`v` (Sutskever et al. 2013, as optax writes it).

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> alpha``.
      beta: :math:`\beta`, in [0, 1); the course recommends 0.9 (about the last 10 gradients).
      heavy_ball: use :math:`v = \beta v + dW` instead of the course's average.
      nesterov: Nesterov's accelerated gradient.
      l2: coupled weight decay, added to ``dW`` before it enters ``v`` (default 0, off).
      weight_decay: decoupled weight decay, ``W -= lr * (v + wd * W)`` (default 0, off).
      mask: where ``l2``/``weight_decay`` apply (see :func:`gd`).

    Returns:
      A :class:`GradientTransformation`; its state is :class:`MomentumState` (``v`` like params).

    Example:
      >>> import jax.numpy as jnp
      >>> opt = momentum(0.1, beta=0.9)
      >>> params = jnp.array([1.0])
      >>> updates, state = opt.update(jnp.array([2.0]), opt.init(params))
      >>> print(state.v, updates)  # v = 0.1 * 2; update = -0.1 * v
      [0.2] [-0.02]

    .. warning::
      ``optax.sgd(lr, momentum=beta)``, ``torch.optim.SGD(momentum=beta)`` and Keras' ``SGD`` use
      the heavy-ball form: the course's ``momentum(lr, beta)`` equals
      ``optax.sgd(lr * (1 - beta), momentum=beta)``. PyTorch's ``SGD(momentum=beta,
      dampening=beta)`` (it weights ``dW`` by ``1 - dampening``) gives the course's average except
      on its first step, where it sets ``v = dW`` without damping (here ``v = (1 - beta) dW``).

    References:
      Polyak, 1964, *Some methods of speeding up the convergence of iteration methods*.
      Sutskever, Martens, Dahl & Hinton, 2013, *On the importance of initialization and momentum
      in deep learning*.
    """
    _check_learning_rate(learning_rate)
    _checks.check_unit_interval("beta", beta)
    _check_decay(l2, weight_decay, mask)

    def init(params):
        return MomentumState(count=_zero_count(), v=jax.tree.map(_zeros_moment, params))

    def leaf(dW, v):
        g = dW.astype(v.dtype)  # in the moments' dtype (moment_dtype)
        b = _cast(beta, g)
        damp = 1 if heavy_ball else 1 - b
        v = b * v + damp * g  # the velocity: an average of the gradients
        direction = b * v + damp * g if nesterov else v  # Nesterov: look ahead
        return direction.astype(dW.dtype), v

    def update(grads, state, params=None):
        _check_grads(grads, state.v, params, "v")
        grads = _add_l2(grads, params, l2, mask)
        directions, v = _unzip(grads, jax.tree.map(leaf, grads, state.v), 2)
        updates = _scale(directions, params, learning_rate, state.count, weight_decay, mask)
        return updates, MomentumState(count=_increment(state.count), v=v)

    return GradientTransformation(init, update)


def rmsprop(
    learning_rate: ScalarOrSchedule,
    beta: Hyperparameter = 0.9,
    epsilon: Hyperparameter = 1e-8,
    *,
    eps_in_sqrt: bool = False,
    initial_scale: Hyperparameter = 0.0,
    l2: Hyperparameter = 0.0,
    weight_decay: Hyperparameter = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""RMSprop: divide each gradient by the root mean square of its recent values.

    .. math::
      s \leftarrow \beta s + (1 - \beta) \, dW^2, \qquad
      W \leftarrow W - \alpha \frac{dW}{\sqrt{s} + \varepsilon}

    with :math:`\alpha` = ``learning_rate``, :math:`\beta` = ``beta``, :math:`\varepsilon` =
    ``epsilon`` and :math:`s_0` = ``initial_scale`` (0). Squares and roots are element-wise.
    Directions with large, oscillating gradients get small steps; flat ones get larger steps.

    Options beyond the course:

    - ``eps_in_sqrt=True``: :math:`dW / \sqrt{s + \varepsilon}` (optax's default, and TF1's).
    - ``initial_scale``: start from :math:`s_0` instead of 0 (TF1's RMSPropOptimizer used 1);
      with 0 the first steps are large, :math:`dW / \sqrt{(1 - \beta) dW^2} = \pm 1/\sqrt{0.1}`.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> alpha``.
      beta: :math:`\beta`, in [0, 1); default 0.9 (optax calls it ``decay``, PyTorch ``alpha``,
        Keras ``rho``).
      epsilon: :math:`\varepsilon` >= 0, added to the root to avoid dividing by zero; 1e-8.
      eps_in_sqrt: put :math:`\varepsilon` inside the root.
      initial_scale: :math:`s_0` >= 0.
      l2, weight_decay, mask: coupled and decoupled weight decay (see :func:`gd`, :func:`adam`).

    Returns:
      A :class:`GradientTransformation`; its state is :class:`RmspropState` (``s`` like params).

    Example:
      >>> import jax.numpy as jnp
      >>> opt = rmsprop(0.01, beta=0.75, epsilon=0.0)
      >>> params = jnp.array([1.0])
      >>> updates, state = opt.update(jnp.array([2.0]), opt.init(params))
      >>> print(state.s, updates)  # s = 0.25 * 2^2; update = -0.01 * 2 / sqrt(1)
      [1.] [-0.02]

    .. warning::
      ``optax.rmsprop`` puts :math:`\varepsilon` inside the root by default: the course's
      ``rmsprop(lr, beta, eps)`` equals ``optax.rmsprop(lr, decay=beta, eps=eps,
      eps_in_sqrt=False)``. PyTorch's ``RMSprop`` adds it outside, as here.

    References:
      Hinton, Srivastava & Swersky, 2012, *Neural Networks for Machine Learning*, lecture 6e.
    """
    _check_learning_rate(learning_rate)
    _checks.check_unit_interval("beta", beta)
    _checks.check_nonnegative("epsilon", epsilon)
    _checks.check_nonnegative("initial_scale", initial_scale)
    _check_decay(l2, weight_decay, mask)

    def init(params):
        s = jax.tree.map(
            lambda p: jnp.full(jnp.shape(p), initial_scale, moment_dtype(jnp.result_type(p))),
            params,
        )
        return RmspropState(count=_zero_count(), s=s)

    def leaf(dW, s):
        g = dW.astype(s.dtype)  # in the moments' dtype (moment_dtype)
        b, eps = _cast(beta, g), _cast(epsilon, g)
        s = b * s + (1 - b) * g * g  # average of the squared gradients
        root = jnp.sqrt(s + eps) if eps_in_sqrt else jnp.sqrt(s) + eps
        return (g / root).astype(dW.dtype), s

    def update(grads, state, params=None):
        _check_grads(grads, state.s, params, "s")
        grads = _add_l2(grads, params, l2, mask)
        directions, s = _unzip(grads, jax.tree.map(leaf, grads, state.s), 2)
        updates = _scale(directions, params, learning_rate, state.count, weight_decay, mask)
        return updates, RmspropState(count=_increment(state.count), s=s)

    return GradientTransformation(init, update)


def adam(
    learning_rate: ScalarOrSchedule,
    beta1: Hyperparameter = 0.9,
    beta2: Hyperparameter = 0.999,
    epsilon: Hyperparameter = 1e-8,
    *,
    l2: Hyperparameter = 0.0,
    weight_decay: Hyperparameter = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""Adam: momentum and RMSprop together, both bias-corrected.

    .. math::
      v &\leftarrow \beta_1 v + (1 - \beta_1) \, dW, \qquad
      s \leftarrow \beta_2 s + (1 - \beta_2) \, dW^2 \\
      v^{corrected} &= \frac{v}{1 - \beta_1^t}, \qquad
      s^{corrected} = \frac{s}{1 - \beta_2^t} \\
      W &\leftarrow W - \alpha \frac{v^{corrected}}{\sqrt{s^{corrected}} + \varepsilon}

    with :math:`\alpha` = ``learning_rate``, :math:`\beta_1` = ``beta1``, :math:`\beta_2` =
    ``beta2``, :math:`\varepsilon` = ``epsilon``, and :math:`t` the number of updates including
    this one (1 at the first update; ``state.count`` counts those done before).

    ``weight_decay`` gives AdamW: :math:`W \leftarrow W - \alpha (\text{Adam step} + wd \cdot W)`,
    the decay outside the moments; ``l2`` instead adds :math:`l2 \cdot W` to :math:`dW` before the
    moments, where the normalization by :math:`\sqrt{s}` weakens it for large gradients.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> alpha``. Tune it.
      beta1: :math:`\beta_1`, in [0, 1); the course and the paper recommend 0.9.
      beta2: :math:`\beta_2`, in [0, 1); recommended 0.999.
      epsilon: :math:`\varepsilon` >= 0, recommended 1e-8.
      l2: coupled L2 decay (default 0, off).
      weight_decay: decoupled weight decay, AdamW (default 0, off).
      mask: where ``l2``/``weight_decay`` apply (see :func:`gd`).

    Returns:
      A :class:`GradientTransformation`; its state is :class:`AdamState` (``v``, ``s`` like
      params).

    Example:
      >>> import jax.numpy as jnp
      >>> opt = adam(0.1)
      >>> params = jnp.array([1.0, 1.0])
      >>> updates, state = opt.update(jnp.array([0.5, -20.0]), opt.init(params))
      >>> print(updates.round(6))  # the first step is -alpha * sign(dW), whatever the size of dW
      [-0.1  0.1]

    .. warning::
      Keras' ``Adam`` documents its ``epsilon`` as the paper's "epsilon hat" (the formula just
      before section 2.1): added to the root of the *uncorrected* ``s``, with the corrections
      folded into the rate. It equals ``epsilon = epsilon_hat / sqrt(1 - beta2^t)`` here, about
      32 times larger at t = 1 with beta2 = 0.999, and the same once ``beta2^t`` is small.
      optax's ``adam(b1, b2, eps)`` is this formula (``optax.adamw`` the ``weight_decay`` form);
      PyTorch's ``Adam(weight_decay=...)`` is the coupled ``l2``, ``AdamW`` the decoupled.
      Decoupled decay is multiplied by the learning rate here, as in optax and PyTorch.

    References:
      Kingma & Ba, 2014, *Adam: A Method for Stochastic Optimization*.
      Loshchilov & Hutter, 2019, *Decoupled Weight Decay Regularization*.
    """
    _check_learning_rate(learning_rate)
    _checks.check_unit_interval("beta1", beta1)
    _checks.check_unit_interval("beta2", beta2)
    _checks.check_nonnegative("epsilon", epsilon)
    _check_decay(l2, weight_decay, mask)

    def init(params):
        zeros = jax.tree.map(_zeros_moment, params)
        return AdamState(count=_zero_count(), v=zeros, s=zeros)

    def leaf(dW, v, s, t):
        g = dW.astype(v.dtype)  # in the moments' dtype (moment_dtype)
        b1, b2, eps = _cast(beta1, g), _cast(beta2, g), _cast(epsilon, g)
        v = b1 * v + (1 - b1) * g  # momentum: average of the gradients
        s = b2 * s + (1 - b2) * g * g  # RMSprop: average of their squares
        v_corrected = v / _one_minus_power(b1, t, g)  # bias correction: v / (1 - beta1^t)
        s_corrected = s / _one_minus_power(b2, t, g)
        return (v_corrected / (jnp.sqrt(s_corrected) + eps)).astype(dW.dtype), v, s

    def update(grads, state, params=None):
        _check_grads(grads, state.v, params, "v")
        grads = _add_l2(grads, params, l2, mask)
        t = _increment(state.count)
        out = jax.tree.map(lambda g, v, s: leaf(g, v, s, t), grads, state.v, state.s)
        directions, v, s = _unzip(grads, out, 3)
        updates = _scale(directions, params, learning_rate, state.count, weight_decay, mask)
        return updates, AdamState(count=t, v=v, s=s)

    return GradientTransformation(init, update)
