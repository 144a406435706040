"""Models of the protocol from flax linen and equinox modules.

fjdl's training loop asks a model for two pure methods (see :mod:`fjdl.model`)::

  init(key) -> (params, state)
  apply(params, state, x, *, key=None, train=False) -> (out, new_state)

:func:`from_flax` and :func:`from_equinox` give a module of either library these two methods, so
everything above the building blocks (``fit``, early stopping, ``train_many``, gradient checks)
trains it as it trains an :class:`fjdl.MLP`. Each wrapper is hashable, and two wrappers of the same
module are equal: a wrapper is a ``jit`` static argument, and wrapping a module again reuses the
compiled program.

How each library's conventions map onto the protocol:

======================  ===========================================  ===========================================
protocol                flax linen (:func:`from_flax`)               equinox (:func:`from_equinox`)
======================  ===========================================  ===========================================
``params``              the ``"params"`` collection                  the module's float arrays (``eqx.partition``)
``state``               every other collection (``"batch_stats"``),  the ``eqx.nn.State``, or ``{}``
                        ``{}`` when there is none
``train``               the ``train=`` keyword of ``__call__``       ``eqx.nn.inference_mode(model, not train)``
``key``                 the ``"dropout"`` rng                        split into one key per example
batch                   the module sees the whole batch              the module sees one example; ``jax.vmap``
                                                                     over the batch, axis named ``"batch"``
======================  ===========================================  ===========================================

flax and equinox are optional: each is imported only when its wrapper is used.
"""

import dataclasses
import functools
import importlib
import inspect
import sys
import types
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fjdl._types import Params, PRNGKey, State

BATCH_AXIS = "batch"
"""The default name of the batch axis that :func:`from_equinox` maps over: give it to your
``eqx.nn.BatchNorm(..., axis_name="batch")``."""


def _require(module: str, package: str, caller: str) -> types.ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"fjdl.model.{caller} needs {package}, which is not installed: pip install {package}"
        ) from None


def _accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (or any keyword); ``True`` if unknown."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        (p.name == name and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD
        for p in parameters
    )


# ---------------------------------------------------------------------------------------------
# flax linen


@dataclasses.dataclass(frozen=True)
class FlaxModel:
    """A flax linen module as a model of the protocol (see :func:`from_flax`).

    Hashable; equal to another ``FlaxModel`` of an equal module and an equal example shape and
    dtype, so the two share compiled programs.
    """

    module: Any
    example: jax.ShapeDtypeStruct
    takes_train: bool = True

    def init(self, key: PRNGKey) -> tuple[Params, State]:
        """``module.init`` on zeros shaped like the example, in eval mode (``train=False``).

        Returns:
          ``(params, state)``: the ``"params"`` collection, and a dict of every other collection
          (``{"batch_stats": ...}`` with batch norm, ``{}`` without; sown ``"intermediates"`` are
          left out).
        """
        flax = _require("flax", "flax", "from_flax")
        params_key, dropout_key = jax.random.split(key)
        x = jnp.zeros(self.example.shape, self.example.dtype)
        kwargs = {"train": False} if self.takes_train else {}
        variables = flax.core.unfreeze(
            self.module.init({"params": params_key, "dropout": dropout_key}, x, **kwargs)
        )
        params = variables.pop("params", {})
        variables.pop("intermediates", None)
        return params, variables

    def apply(
        self,
        params: Params,
        state: State,
        x: jax.typing.ArrayLike,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        """``module.apply({"params": params, **state}, x, train=train, ...)``.

        In training every collection of ``state`` is mutable and comes back updated (``key``, if
        given, is the ``"dropout"`` rng); otherwise nothing is mutable and ``state`` is returned
        as it came.
        """
        flax = _require("flax", "flax", "from_flax")
        kwargs = {"train": train} if self.takes_train else {}
        rngs = {} if key is None else {"dropout": key}
        mutable = list(state) if train and state else False
        try:
            result = self.module.apply(
                {"params": params, **state}, x, rngs=rngs, mutable=mutable, **kwargs
            )
        except flax.errors.InvalidRngError as e:
            if key is None:
                raise ValueError(
                    f"apply(train={train}) of {type(self.module).__name__} needs a PRNG key for "
                    f"its dropout: pass key=... (flax said: {e})"
                ) from None
            raise
        if mutable is False:
            return result, state
        out, updated = result
        return out, {**state, **flax.core.unfreeze(updated)}


def from_flax(module: Any, example_x: Any) -> FlaxModel:
    """A model of the protocol for a flax linen module.

    The module follows linen's habits: its parameters are the ``"params"`` collection, batch norm
    keeps its running statistics in ``"batch_stats"``, dropout draws from the ``"dropout"`` rng,
    and ``__call__`` takes ``train`` as a keyword (``nn.BatchNorm(use_running_average=not train)``,
    ``nn.Dropout(rate, deterministic=not train)``). A module whose ``__call__`` has no ``train``
    argument is called without it. The module sees the whole batch, ``x`` of shape ``(m, ...)``.

    Args:
      module: a ``flax.linen.Module`` (unbound; hashable, as linen modules are).
      example_x: an input of the shape and dtype the module takes, e.g. ``X[:1]`` (only its shape
        and dtype are kept, as a ``jax.ShapeDtypeStruct``; ``init`` calls the module on zeros of
        that shape); a ``jax.ShapeDtypeStruct`` also works.

    Returns:
      A hashable :class:`FlaxModel`. ``init(key)`` splits ``key`` into the ``"params"`` and
      ``"dropout"`` rngs of ``module.init`` and returns ``(params, state)``, ``state`` a dict of
      every collection but ``"params"`` (``{"batch_stats": ...}``, or ``{}``). ``apply`` calls
      ``module.apply``; in training it needs ``key`` when the module has dropout, and raises a
      ``ValueError`` saying so otherwise.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train: bool = False):
      ...         x = nn.Dense(4)(x)
      ...         x = nn.BatchNorm(use_running_average=not train)(x)
      ...         x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
      ...         return nn.Dense(1)(x)[:, 0]
      >>> net = from_flax(Net(), jnp.ones((1, 3)))
      >>> params, state = net.init(jax.random.key(0))
      >>> sorted(params), sorted(state)
      (['BatchNorm_0', 'Dense_0', 'Dense_1'], ['batch_stats'])
      >>> out, state = net.apply(params, state, jnp.ones((5, 3)), key=jax.random.key(1), train=True)
      >>> out.shape, net == from_flax(Net(), jnp.zeros((1, 3)))
      ((5,), True)
    """
    linen = _require("flax.linen", "flax", "from_flax")
    if not isinstance(module, linen.Module):
        raise TypeError(
            f"module must be a flax.linen.Module, got {type(module).__name__} (for an equinox "
            f"module use fjdl.model.from_equinox)"
        )
    try:
        hash(module)
    except TypeError as e:
        raise TypeError(
            f"module must be hashable (the model is a static argument of the compiled loop); "
            f"{type(module).__name__} is not: {e}. Give its fields hashable values (tuples, "
            f"not lists)"
        ) from None
    if isinstance(example_x, jax.ShapeDtypeStruct):
        shape, dtype = example_x.shape, example_x.dtype
    else:
        example = example_x if hasattr(example_x, "dtype") else np.asarray(example_x)
        shape, dtype = np.shape(example), example.dtype
    if len(shape) == 0:
        raise ValueError(f"example_x must have a batch axis first, (m, ...); got shape {shape}")
    example = jax.ShapeDtypeStruct(tuple(shape), jax.dtypes.canonicalize_dtype(dtype))
    return FlaxModel(module, example, _accepts(module.__call__, "train"))


# ---------------------------------------------------------------------------------------------
# equinox


def _same_array(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if np.shape(a) != np.shape(b) or a.dtype != b.dtype:
        return False
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        a, b = jax.random.key_data(a), jax.random.key_data(b)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


@dataclasses.dataclass(frozen=True, eq=False)
class EquinoxModel:
    """An equinox module as a model of the protocol (see :func:`from_equinox`).

    Hashable. Built from a factory, it is equal to another built from the same factory and axis
    name. Built from a module, it is equal to another whose module has the same structure and
    static fields and the same arrays (the very same, or equal values): those arrays are what
    ``init`` returns, and a compiled ``init`` holds them as constants.

    Attributes:
      static: the module with ``None`` in place of its float arrays (``eqx.partition``).
      axis_name: the name of the batch axis ``apply`` maps over.
      factory: ``key -> module`` or ``key -> (module, state)``, or ``None``.
      initial: ``(params, state)`` of the module given, or ``None`` with a factory.
      stateful: whether the module is called as ``module(x, state, ...) -> (out, state)``.
      takes_key: whether the module's ``__call__`` takes ``key``.
      has_dropout: whether the module holds an ``eqx.nn.Dropout`` (training then needs ``key``).
    """

    static: Any
    axis_name: Hashable
    factory: Callable | None
    initial: tuple[Params, State] | None = dataclasses.field(repr=False)
    stateful: bool
    takes_key: bool
    has_dropout: bool

    @functools.cached_property
    def _identity(self) -> tuple[Hashable, tuple[Any, ...]]:
        """(hashable part, arrays compared by value) of what makes this model what it is; computed
        once, as ``jit`` hashes its static arguments at every call."""
        if self.factory is not None:
            return (self.factory, self.axis_name), ()
        leaves, treedef = jax.tree_util.tree_flatten((self.initial, self.static))
        arrays = tuple(l for l in leaves if isinstance(l, np.ndarray | jax.Array))
        others = tuple(l for l in leaves if not isinstance(l, np.ndarray | jax.Array))
        specs = tuple((np.shape(a), str(a.dtype)) for a in arrays)
        return (treedef, others, specs, self.axis_name), arrays

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EquinoxModel):
            return False
        (mine, my_arrays), (theirs, their_arrays) = self._identity, other._identity
        return mine == theirs and all(map(_same_array, my_arrays, their_arrays))

    def __hash__(self) -> int:
        return hash((EquinoxModel, self._identity[0]))

    def init(self, key: PRNGKey) -> tuple[Params, State]:
        """The module's float arrays and its state: a fresh module of ``factory(key)``, or the
        module given (``key`` then unused)."""
        eqx = _require("equinox", "equinox", "from_equinox")
        if self.factory is None:
            assert self.initial is not None  # from_equinox sets it whenever there is no factory
            params, state = self.initial
        else:
            module, state = _module_and_state(eqx, self.factory(key), None, from_factory=True)
            params, _ = eqx.partition(module, eqx.is_inexact_array)
        # A copy of the state's pytree: equinox invalidates an eqx.nn.State once it is updated.
        return params, jax.tree_util.tree_map(lambda a: a, state)

    def apply(
        self,
        params: Params,
        state: State,
        x: jax.typing.ArrayLike,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        """``jax.vmap`` of the module over the examples of ``x``, in inference mode unless
        ``train``; ``key`` split into one key per example."""
        eqx = _require("equinox", "equinox", "from_equinox")
        x = jnp.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"x must have a batch axis first, (m, ...); got shape {x.shape}")
        if train and key is None and self.has_dropout:
            raise ValueError(
                f"apply(train=True) of {type(self.static).__name__} needs a PRNG key for its "
                f"dropout: pass key=..."
            )
        module = eqx.nn.inference_mode(eqx.combine(params, self.static), value=not train)
        keys = None if key is None or not self.takes_key else jax.random.split(key, x.shape[0])

        def one(x_i, state, key_i):
            kwargs = {"key": key_i} if self.takes_key else {}
            if self.stateful:
                return module(x_i, state, **kwargs)
            return module(x_i, **kwargs), state

        out, new_state = jax.vmap(
            one, in_axes=(0, None, 0), out_axes=(0, None), axis_name=self.axis_name
        )(x, state, keys)
        return out, (new_state if train else state)


def _is_flax_module(obj: object) -> bool:
    """Whether ``obj`` is a flax module (flax is loaded when there is one)."""
    kinds = [sys.modules.get("flax.linen"), sys.modules.get("flax.nnx")]
    return any(kind is not None and isinstance(obj, kind.Module) for kind in kinds)


def _module_and_state(
    eqx: types.ModuleType, module: Any, state: Any, from_factory: bool = False
) -> tuple[Any, Any]:
    """Split a module's initial state (batch norm) out of it, as ``eqx.nn.make_with_state`` does.

    A factory's output may be a module or ``(module, state)``."""
    if from_factory and isinstance(module, tuple) and len(module) == 2:
        module, state = module
    if not isinstance(module, eqx.Module):
        where = "factory(key) must return" if from_factory else "model must be"
        raise TypeError(f"{where} an equinox Module, got {type(module).__name__}")
    is_index = lambda node: isinstance(node, eqx.nn.StateIndex)  # noqa: E731
    indices = [n for n in jax.tree_util.tree_leaves(module, is_leaf=is_index) if is_index(n)]
    if indices and state is None:
        try:
            state = eqx.nn.State(module)
        except ValueError:
            raise ValueError(
                f"{type(module).__name__} has state (batch norm) but state is None: pass the "
                f"eqx.nn.State that eqx.nn.make_with_state returned with the model"
            ) from None
        if from_factory and not all(isinstance(i.marker, str) for i in indices):
            raise ValueError(
                "a factory's stateful module must be built with eqx.nn.make_with_state, so that "
                "every call of the factory gives the same state layout"
            )
    if indices:
        module = eqx.nn.delete_init_state(module)
    return module, ({} if state is None else state)


def _split_module(eqx, model, state):
    """An equinox module's static part, its ``(params, state)`` (its float arrays and its
    ``eqx.nn.State`` or ``{}``), and whether it has state."""
    no_state = isinstance(state, dict) and not state
    module, state = _module_and_state(eqx, model, None if no_state else state)
    leaves = jax.tree_util.tree_leaves((module, state))
    if any(isinstance(l, jax.core.Tracer) for l in leaves):
        raise TypeError(
            "from_equinox got a module holding traced arrays: build the wrapper outside "
            "jit/vmap, or pass a factory key -> module"
        )
    params, static = eqx.partition(module, eqx.is_inexact_array)
    return static, (params, jax.tree_util.tree_map(lambda a: a, state)), _is_stateful(state)


def _is_stateful(state) -> bool:
    """Whether a module has state (an ``eqx.nn.State``), not ``{}``."""
    return not (isinstance(state, dict) and not state)


def _static_of_factory(eqx, factory):
    """The static part of the modules ``factory(key)`` builds, found without building one, and
    whether they have state."""
    module, state = eqx.filter_eval_shape(
        lambda key: _module_and_state(eqx, factory(key), None, from_factory=True),
        jax.random.key(0),
    )
    is_struct = lambda a: isinstance(a, jax.ShapeDtypeStruct)  # noqa: E731
    is_float = lambda a: is_struct(a) and jnp.issubdtype(a.dtype, jnp.inexact)  # noqa: E731
    _, static = eqx.partition(module, is_float, is_leaf=is_struct)
    if any(is_struct(l) for l in jax.tree_util.tree_leaves(static, is_leaf=is_struct)):
        raise ValueError(
            "factory(key) returns a module holding non-float arrays, which the wrapper cannot "
            "keep static; pass the module itself instead"
        )
    return static, _is_stateful(state)


def from_equinox(
    model: Any, state: Any = None, *, axis_name: Hashable = BATCH_AXIS
) -> EquinoxModel:
    """A model of the protocol for an equinox module, written for one example.

    Equinox layers take one example; ``apply`` maps the module over the examples of ``x`` (shape
    ``(m, ...)``) with ``jax.vmap(..., axis_name=axis_name)``, so an
    ``eqx.nn.BatchNorm(size, axis_name="batch")`` computes its statistics over the whole batch.
    The module is called as ``module(x_i, *, key=k_i) -> out_i``, or, with state, as
    ``module(x_i, state, *, key=k_i) -> (out_i, state)`` (equinox's stateful convention; the state
    is shared by all examples: ``in_axes=None``, ``out_axes=None``). ``key`` is split into one key
    per example, and only passed when ``__call__`` takes ``key``. Training and evaluation set every
    ``inference`` flag of the module with ``eqx.nn.inference_mode(module, value=not train)``: in
    training, dropout is on and batch norm uses and updates batch statistics; otherwise dropout is
    off, batch norm uses its running statistics, and ``state`` is returned as it came.

    Args:
      model: an ``eqx.Module``, or a factory ``key -> module`` or ``key -> (module, state)`` (e.g.
        ``eqx.nn.make_with_state(Net)``), so that ``init(key)`` builds a fresh
        module from ``key`` and seeds mean something when many models train.
      state: the ``eqx.nn.State`` of ``model``, as ``eqx.nn.make_with_state`` returns it with the
        module; ``None`` (or ``{}``) for a module without state, or for a factory. A module with
        batch norm built directly (not by ``make_with_state``) gets its state made here.
      axis_name: the name of the batch axis; the same as the ``axis_name`` of the module's
        ``eqx.nn.BatchNorm`` layers (checked).

    Returns:
      A hashable :class:`EquinoxModel`. ``init(key)`` returns ``(params, state)``: ``params`` the
      module's float arrays (``eqx.partition(module, eqx.is_inexact_array)``, ``None`` elsewhere),
      ``state`` its ``eqx.nn.State`` or ``{}``. Given a module, ``init`` returns that module's own
      arrays and ignores ``key``; given a factory, it calls ``factory(key)``. Everything else in
      the module (activations, sizes, flags) stays static in the wrapper. Images reach the module
      as one example ``x[i]`` laid out as stored, ``(H, W, C)`` in fjdl; equinox convolutions take
      ``(C, H, W)``, so transpose inside the module.

    .. note::
      ``eqx.nn.Conv`` keeps its bias as ``(out_channels, 1, ..., 1)``: the default weight
      predicate, :func:`fjdl.losses.is_weight`, leaves it out by its name ``bias``, so L2 and
      weight decay act on ``weight`` only. A predicate of your own written as ``ndim >= 2`` alone
      would take these biases for weights.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import equinox as eqx
      >>> class Net(eqx.Module):
      ...     linear: eqx.nn.Linear
      ...     norm: eqx.nn.BatchNorm
      ...     dropout: eqx.nn.Dropout
      ...     def __init__(self, key):
      ...         self.linear = eqx.nn.Linear(3, 4, key=key)
      ...         self.norm = eqx.nn.BatchNorm(4, axis_name="batch", mode="batch")
      ...         self.dropout = eqx.nn.Dropout(0.5)
      ...     def __call__(self, x, state, *, key=None):
      ...         x, state = self.norm(self.linear(x), state)
      ...         return self.dropout(x, key=key), state
      >>> factory = eqx.nn.make_with_state(Net)  # key -> (module, state)
      >>> net = from_equinox(factory)
      >>> params, state = net.init(jax.random.key(0))
      >>> out, state = net.apply(params, state, jnp.ones((5, 3)), key=jax.random.key(1), train=True)
      >>> out.shape, params.linear.weight.shape, type(state).__name__, net == from_equinox(factory)
      ((5, 4), (4, 3), 'State', True)
    """
    eqx = _require("equinox", "equinox", "from_equinox")
    try:
        hash(axis_name)
    except TypeError:
        raise TypeError(f"axis_name must be hashable, got {axis_name!r}") from None
    if isinstance(model, eqx.Module):
        factory = None
        static, initial, stateful = _split_module(eqx, model, state)
    elif callable(model) and not _is_flax_module(model):
        if state not in (None, {}):
            raise ValueError(
                "state is for a module; a factory returns its own state: key -> (module, state)"
            )
        factory, initial = model, None
        static, stateful = _static_of_factory(eqx, model)
    else:
        raise TypeError(
            f"model must be an equinox Module or a factory key -> module, got "
            f"{type(model).__name__} (for a flax linen module use fjdl.model.from_flax)"
        )
    is_layer = lambda n: isinstance(n, eqx.nn.BatchNorm | eqx.nn.Dropout)  # noqa: E731
    layers = [n for n in jax.tree_util.tree_leaves(static, is_leaf=is_layer) if is_layer(n)]
    for norm in (n for n in layers if isinstance(n, eqx.nn.BatchNorm)):
        names = norm.axis_name if isinstance(norm.axis_name, tuple | list) else (norm.axis_name,)
        if axis_name not in names:
            raise ValueError(
                f"the model's eqx.nn.BatchNorm has axis_name={norm.axis_name!r}, but apply maps "
                f"the batch over axis_name={axis_name!r}: give both the same name"
            )
    has_dropout = any(
        isinstance(n, eqx.nn.Dropout) and not (isinstance(n.p, int | float) and n.p == 0)
        for n in layers
    )
    result = EquinoxModel(
        static,
        axis_name,
        factory,
        initial,
        stateful,
        _accepts(type(static).__call__, "key"),
        has_dropout,
    )
    try:
        hash(result)
    except TypeError as e:
        raise TypeError(
            f"the static part of {type(static).__name__} (everything but its arrays) must be "
            f"hashable, as the model is a static argument of the compiled loop: {e}"
        ) from None
    return result
