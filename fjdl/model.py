"""The model protocol, and fjdl's multilayer perceptron as one model among others.

**The protocol.** A model is any hashable object (usable as a ``jit`` static argument) with two pure
methods:

- ``init(key) -> (params, state)``: ``params`` a pytree of trainable arrays, ``state`` a pytree of
  non-trainable arrays (batch-norm running statistics; empty when there are none);
- ``apply(params, state, x, *, key=None, train=False) -> (out, new_state)``: dropout only when
  training (it needs ``key``); batch norm uses batch statistics when training, running ones
  otherwise.

Everything above the building blocks (:func:`fjdl.train.fit`, early stopping, the NaN guard,
:class:`fjdl.tune.Panda`, :func:`fjdl.parallel.fit_data_parallel`, :mod:`fjdl.gradcheck`) works
for any such model. :class:`MLP` implements it; :func:`from_functions` makes a model of two plain
functions, :func:`from_flax` of a flax linen module and :func:`from_equinox` of an equinox module.
The protocol follows Keras 3's ``stateless_call(trainable, non_trainable, x, training=...)`` and
equinox's ``(out, state)``.

**The MLP** is a frozen config plus two pure functions, :func:`init` and :func:`apply`.

Forward propagation, layer ``l`` of ``L`` (batch first; the course's ``W`` is our ``W.T``):

.. math::
  z^{[l]} = a^{[l-1]} W^{[l]} + b^{[l]}, \\qquad a^{[l]} = g(z^{[l]}), \\qquad
  a^{[l]} \\leftarrow \\mathrm{dropout}(a^{[l]}, \\text{keep\\_prob}_l) \\text{ (training only)}

With batch normalization a hidden layer has no ``b`` (the mean subtraction cancels it) and computes
``z_tilde = gamma * z_norm + beta`` before its activation. The output layer returns logits: the loss
applies the sigmoid or softmax itself (see :mod:`fjdl.losses`).
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, batchnorm, initializers, nn
from fjdl._types import AxisName, DTypeLike, Params, PRNGKey, State
from fjdl.wrappers import BATCH_AXIS, EquinoxModel, FlaxModel, from_equinox, from_flax

__all__ = [
    "BATCH_AXIS",
    "MLP",
    "EquinoxModel",
    "FlaxModel",
    "FunctionModel",
    "Model",
    "apply",
    "check_model",
    "check_params",
    "from_equinox",
    "from_flax",
    "from_functions",
    "init",
    "predict",
]

OUTPUTS = ("sigmoid", "softmax", "linear")
NARROW_WIDTH = 128
"""Networks no wider than this run with examples along the last axis inside :func:`apply`."""


@runtime_checkable
class Model(Protocol):
    """What fjdl asks of a model: hashable, with pure ``init`` and ``apply`` (see the module doc)."""

    def init(self, key: PRNGKey) -> tuple[Params, State]: ...

    def apply(
        self,
        params: Params,
        state: State,
        x: jax.typing.ArrayLike,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]: ...


def check_model(model: Any, name: str = "model") -> None:
    """Raise a ``TypeError`` naming ``name`` unless ``model`` follows the model protocol."""
    missing = [m for m in ("init", "apply") if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(
            f"{name} must follow the model protocol (init(key) -> (params, state) and "
            f"apply(params, state, x, *, key=None, train=False) -> (out, state)), as fjdl.MLP, "
            f"fjdl.model.from_functions, from_flax and from_equinox do; {type(model).__name__} "
            f"has no {' or '.join(missing)}"
        )
    try:
        hash(model)
    except TypeError as e:
        raise TypeError(
            f"{name} must be hashable (it is a static argument of the compiled loop); "
            f"{type(model).__name__} is not: {e}"
        ) from None


@dataclasses.dataclass(frozen=True)
class MLP:
    """Static configuration of a dense network; hashable, so it can be a ``jit`` static argument.

    Args:
      sizes: layer widths ``(n_x, n_1, ..., n_L)``.
      activation: hidden activation, one of ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"leaky_relu"``.
      output: ``"sigmoid"`` (binary; with one output unit the logits have shape ``(m,)``),
        ``"softmax"`` (``C`` classes, logits ``(m, C)``) or ``"linear"``.
      keep_probs: dropout keep probability for each hidden layer (a tuple of ``L - 1`` values, or one
        value for every hidden layer); ``None`` means no dropout.
      batchnorm: batch normalization on every hidden layer, before the activation.
      bn_momentum: the running statistics' ``momentum`` (weight of the old average).
      bn_eps: the ``epsilon`` of batch norm.

    Example:
      >>> MLP((2, 10, 5, 1)).n_layers
      3
    """

    sizes: tuple[int, ...]
    activation: str = "relu"
    output: str = "sigmoid"
    keep_probs: tuple[float, ...] | None = None
    batchnorm: bool = False
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        sizes = tuple(self.sizes) if isinstance(self.sizes, Sequence) else self.sizes
        if not isinstance(sizes, tuple) or len(sizes) < 2:
            raise ValueError(
                f"sizes must list at least the input and output widths, got {self.sizes!r}"
            )
        for i, n in enumerate(sizes):
            _checks.check_positive_int(f"sizes[{i}]", n)
        object.__setattr__(self, "sizes", tuple(int(n) for n in sizes))
        if self.activation not in nn.ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(nn.ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.output == "softmax" and sizes[-1] < 2:
            raise ValueError(
                f"a softmax output needs at least 2 units, got sizes[-1] = {sizes[-1]}"
            )
        n_hidden = len(sizes) - 2
        keep = self.keep_probs
        if keep is not None:
            if isinstance(keep, int | float):
                keep = (float(keep),) * n_hidden
            keep = tuple(float(k) for k in keep)
            if len(keep) != n_hidden:
                raise ValueError(
                    f"keep_probs must have one value per hidden layer ({n_hidden}), got {len(keep)}"
                )
            for i, k in enumerate(keep):
                _checks.check_keep_prob(f"keep_probs[{i}]", k)
            object.__setattr__(self, "keep_probs", keep)
        _checks.check_unit_interval("bn_momentum", self.bn_momentum)
        _checks.check_positive("bn_eps", self.bn_eps)

    @property
    def n_layers(self) -> int:
        """``L``, the number of layers with parameters."""
        return len(self.sizes) - 1

    @property
    def uses_dropout(self) -> bool:
        return self.keep_probs is not None and any(k < 1 for k in self.keep_probs)

    def is_bn_layer(self, l: int) -> bool:
        """Whether layer ``l`` (0-based) is batch-normalized: every hidden layer, when enabled."""
        return self.batchnorm and l < self.n_layers - 1

    @property
    def loss(self) -> str:
        """The default loss of the output (see :func:`fjdl.losses.get`): ``"binary"`` for a
        sigmoid, ``"softmax"``, ``"mse"`` for a linear output."""
        return {"sigmoid": "binary", "softmax": "softmax", "linear": "mse"}[self.output]

    def init(self, key: PRNGKey) -> tuple[Params, State]:
        """The protocol's ``init``: :func:`fjdl.model.init` with He initialization in float32."""
        return init(key, self)

    def apply(
        self,
        params: Params,
        state: State,
        x: jax.typing.ArrayLike,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        """The protocol's ``apply``: :func:`fjdl.model.apply` of this config."""
        return apply(self, params, state, x, key=key, train=train)


def init(
    key: PRNGKey,
    config: MLP,
    scheme: str | initializers.Initializer = "he",
    dtype: DTypeLike = jnp.float32,
) -> tuple[Params, State]:
    """Initial parameters and batch-norm state of ``config``.

    Args:
      key: a PRNG key, split into one key per layer.
      config: an :class:`MLP`.
      scheme: weight initializer (see :mod:`fjdl.initializers`): ``"he"`` (default), ``"xavier"``,
        ``"glorot"``, ``"random_normal"``, ``"zeros"`` or a callable ``(key, (n_in, n_out)) -> W``.
      dtype: dtype of every array.

    Returns:
      ``(params, state)``: ``params`` a tuple of per-layer dicts (``{"W", "b"}``, or
      ``{"W", "gamma", "beta"}`` for batch-normalized layers, with gamma 1 and beta 0); ``state`` a
      tuple with one dict per layer: ``{"mean", "var"}`` (0 and 1) for batch-normalized layers,
      ``{}`` otherwise.

    Example:
      >>> import jax
      >>> params, state = init(jax.random.key(0), MLP((2, 4, 1), batchnorm=True))
      >>> sorted(params[0]), sorted(params[1]), sorted(state[0])
      (['W', 'beta', 'gamma'], ['W', 'b'], ['mean', 'var'])
    """
    if not isinstance(config, MLP):
        raise TypeError(f"config must be an fjdl.model.MLP, got {type(config).__name__}")
    dense = initializers.init_mlp(key, config.sizes, scheme, dtype)
    params, state = [], []
    for l, layer in enumerate(dense):
        if config.is_bn_layer(l):
            n = layer["b"].shape[0]
            params.append(
                {"W": layer["W"], "gamma": jnp.ones((n,), dtype), "beta": jnp.zeros((n,), dtype)}
            )
            # Running statistics in at least float32, whatever the parameters' dtype.
            state.append(batchnorm.init_running(n, batchnorm._stats_dtype(jnp.dtype(dtype))))
        else:
            params.append(layer)
            state.append({})
    return tuple(params), tuple(state)


def check_params(config: MLP, params: Params) -> None:
    """Raise a ``ValueError`` naming the layer when ``params`` does not fit ``config``."""
    if not isinstance(params, tuple | list) or len(params) != config.n_layers:
        got = len(params) if isinstance(params, tuple | list) else type(params).__name__
        raise ValueError(f"params must be a tuple of {config.n_layers} layer dicts, got {got}")
    for l, (layer, n_in, n_out) in enumerate(zip(params, config.sizes[:-1], config.sizes[1:])):
        want_keys = {"W", "gamma", "beta"} if config.is_bn_layer(l) else {"W", "b"}
        if not isinstance(layer, dict) or set(layer) != want_keys:
            raise ValueError(f"layer {l + 1}: params must be a dict with keys {sorted(want_keys)}")
        shapes = {"W": (n_in, n_out), "b": (n_out,), "gamma": (n_out,), "beta": (n_out,)}
        for name, value in layer.items():
            _checks.check_shape(f"layer {l + 1} {name}", value, shapes[name])


def _check_state(config: MLP, state: State) -> State:
    """The state as a tuple of per-layer dicts; ``None`` is "no state" for a net without batch
    norm."""
    if state is None:
        if config.batchnorm:
            raise ValueError(
                "state is None, but this MLP has batch norm: pass the state from init (its "
                "running mean and variance)"
            )
        return tuple({} for _ in range(config.n_layers))
    if not isinstance(state, tuple | list) or len(state) != config.n_layers:
        got = f"{len(state)} items" if isinstance(state, tuple | list) else type(state).__name__
        raise ValueError(
            f"state must be a tuple of {config.n_layers} per-layer dicts (from init), or None "
            f"without batch norm; got {got}"
        )
    return state


def apply(
    config: MLP,
    params: Params,
    state: State,
    x: jax.typing.ArrayLike,
    *,
    key: PRNGKey | None = None,
    train: bool = False,
    axis_name: AxisName | None = None,
    keep_probs: Sequence[float] | jax.Array | None = None,
    unit_masks: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, State]:
    """Forward propagation: logits of the output layer, and the new batch-norm state.

    Args:
      config: the :class:`MLP` (static under ``jit``).
      params, state: from :func:`init`; ``state`` may be ``None`` for a network without batch norm.
      x: inputs of shape ``(m, n_x)``.
      key: PRNG key for dropout; needed when ``train`` and the config has a keep_prob < 1. Split
        into one key per hidden layer.
      train: training mode: dropout on, batch norm with batch statistics (and running statistics
        updated). Otherwise dropout is off and batch norm uses the running statistics.
      axis_name: optional mapped axis over which batch norm averages its statistics in training
        (data-parallel training over devices).
      keep_probs: optional override of ``config.keep_probs`` with one value per hidden layer, which
        may be a traced array (to change it without recompiling). Only used when the config has
        dropout (``config.keep_probs`` is not ``None``).
      unit_masks: optional 0/1 masks, one ``(n_l,)`` array per hidden layer, multiplied into that
        layer's activations: a masked unit outputs 0. A network padded to wider layers, its extra
        units masked and their weights zero, computes what the narrower network computes, and its
        extra parameters get zero gradients (:func:`fjdl.tune.train_many` trains models of
        several widths in one program this way).

    Returns:
      ``(logits, new_state)``. Logits have shape ``(m,)`` for a single sigmoid or linear output unit,
      else ``(m, n_L)``. In eval mode ``new_state`` is ``state``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> cfg = MLP((2, 3, 1))
      >>> params, state = init(jax.random.key(0), cfg)
      >>> logits, _ = apply(cfg, params, state, jnp.ones((5, 2)))
      >>> logits.shape
      (5,)
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != config.sizes[0]:
        raise ValueError(
            f"layer 1 expects x of shape (m, {config.sizes[0]}) (examples in rows), got {x.shape}"
        )
    check_params(config, params)
    state = _check_state(config, state)
    keep: Sequence[float] | jax.Array | None
    if keep_probs is None:
        keep = config.keep_probs
        dropping = train and config.uses_dropout
    else:
        keep = keep_probs
        dropping = train and config.keep_probs is not None
        _checks.check_shape("keep_probs", keep, (config.n_layers - 1,))
    if dropping and key is None:
        raise ValueError("apply(train=True) with keep_probs < 1 needs a PRNG key: pass key=...")
    # ``keys`` is not None exactly when dropping (which needs a key, checked above), and then
    # neither is ``keep``.
    keys = None
    if dropping and key is not None:
        keys = jax.random.split(key, max(config.n_layers - 1, 1))
    g = nn.ACTIVATIONS[config.activation]
    # Narrow networks run with examples along the last axis inside (the course's layout,
    # h = a^T of shape (n_l, m)): XLA on CPU runs their small products about 2.4x faster so
    # (bench/, case B), while wide layers are ~10% faster batch first. The arithmetic is the same;
    # batch norm and dropout always see the (m, n) view, so masks and statistics do not change.
    examples_last = max(config.sizes) <= NARROW_WIDTH
    view = (
        (lambda t: t.T) if examples_last else (lambda t: t)
    )  # internal <-> (m, n); its own inverse
    h = view(x)
    new_state = []
    for l, layer in enumerate(params):
        h = layer["W"].T @ h if examples_last else h @ layer["W"]
        last = l == config.n_layers - 1
        if config.is_bn_layer(l):
            gamma, beta, eps = layer["gamma"], layer["beta"], config.bn_eps
            if train:
                z, stats = batchnorm.normalize_train(view(h), gamma, beta, eps, axis_name=axis_name)
                new_state.append(batchnorm.update_running(state[l], stats, config.bn_momentum))
            else:
                z = batchnorm.normalize_eval(view(h), gamma, beta, state[l], eps)
                new_state.append(state[l])
            h = view(z)
        else:
            h = h + (layer["b"][:, None] if examples_last else layer["b"])
            new_state.append(state[l])
        if not last:
            h = g(h)
            if unit_masks is not None:
                mask = unit_masks[l].astype(h.dtype)
                h = h * (mask[:, None] if examples_last else mask)
            if keys is not None and keep is not None and (keep_probs is not None or keep[l] < 1):
                h = view(nn.dropout(keys[l], view(h), keep[l]))
    logits = view(h)
    if config.output != "softmax" and config.sizes[-1] == 1:
        logits = logits[:, 0]
    return logits, tuple(new_state)


def predict(config: MLP, params: Params, state: State, x: jax.typing.ArrayLike) -> jax.Array:
    """Predictions in eval mode: class 0/1 for sigmoid (``sigmoid(z) > 0.5``), the argmax class for
    softmax, the output itself for linear."""
    logits, _ = apply(config, params, state, x)
    if config.output == "sigmoid":
        return (logits > 0).astype(jnp.int32)
    if config.output == "softmax":
        return jnp.argmax(logits, axis=-1)
    return logits


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionModel:
    """A model made of two plain functions (see :func:`from_functions`).

    Two ``FunctionModel`` are equal, and hash alike, when they hold the same functions and the
    same ``name``: building one twice from the same functions reuses the compiled loop.
    """

    init_fn: Callable[[PRNGKey], tuple[Params, State]]
    apply_fn: Callable[..., tuple[jax.Array, State]]
    name: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FunctionModel) and (
            (self.init_fn, self.apply_fn, self.name) == (other.init_fn, other.apply_fn, other.name)
        )

    def __hash__(self) -> int:
        return hash((FunctionModel, self.init_fn, self.apply_fn, self.name))

    def init(self, key: PRNGKey) -> tuple[Params, State]:
        params, state = self.init_fn(key)
        return params, ({} if state is None else state)

    def apply(
        self,
        params: Params,
        state: State,
        x: jax.typing.ArrayLike,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        return self.apply_fn(params, state, x, key=key, train=train)


def from_functions(
    init: Callable[[PRNGKey], tuple[Params, State]],
    apply: Callable[..., tuple[jax.Array, State]],
    name: str = "",
) -> FunctionModel:
    """A model of the protocol from two plain functions.

    Args:
      init: ``key -> (params, state)``; ``state`` may be ``None`` or ``{}`` for a model without
        batch norm.
      apply: ``(params, state, x, *, key=None, train=False) -> (out, new_state)``, pure and
        traceable. It must accept ``key`` and ``train`` as keywords even if it ignores them.
      name: shown in messages and results.

    Returns:
      A hashable :class:`FunctionModel`; models built from the same two functions are equal, so
      they share compiled programs. (A ``lambda`` written anew each time is a new function, and
      compiles anew.)

    Example:
      >>> import jax, jax.numpy as jnp
      >>> def init_fn(key):
      ...     return {"w": jax.random.normal(key, (3,))}, {}
      >>> def apply_fn(params, state, x, *, key=None, train=False):
      ...     return x @ params["w"], state
      >>> net = from_functions(init_fn, apply_fn, name="linear")
      >>> params, state = net.init(jax.random.key(0))
      >>> out, _ = net.apply(params, state, jnp.ones((4, 3)))
      >>> out.shape, net == from_functions(init_fn, apply_fn, name="linear")
      ((4,), True)
    """
    for arg, fn in (("init", init), ("apply", apply)):
        if not callable(fn):
            raise TypeError(f"{arg} must be a function, got {type(fn).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return FunctionModel(init, apply, name)

# --------------------------------------------------------------------------------------------------
# Several widths in one program: MLPs padded to the widest, extra units masked. Why this computes
# exactly what each narrow model computes: see :mod:`fjdl.tune.many`, "Several widths in one
# program".


def hidden_widths(config: MLP) -> tuple[int, ...]:
    """The widths of an MLP's hidden layers, ``sizes[1:-1]``."""
    return tuple(config.sizes[1:-1])


def family_key(model):
    """Models with equal keys can be trained as one padded model: for an MLP, its config with the
    hidden widths blanked out (the depth is kept); any other model is its own family."""
    if isinstance(model, MLP) and model.n_layers > 1:
        rest = tuple(
            (f.name, getattr(model, f.name)) for f in dataclasses.fields(model) if f.name != "sizes"
        )
        return ("mlp", model.sizes[0], model.sizes[-1], model.n_layers, rest)
    return ("model", model)


def widest(configs: Sequence[MLP], pad_to: Sequence[int] | None = None) -> MLP:
    """The config whose every hidden layer is as wide as the widest of ``configs`` there (and at
    least ``pad_to``, one width per hidden layer or one for all)."""
    hidden = np.max(np.array([hidden_widths(c) for c in configs]), axis=0)
    if pad_to is not None:
        hidden = np.maximum(hidden, np.broadcast_to(np.asarray(pad_to), hidden.shape))
    c = configs[0]
    return dataclasses.replace(c, sizes=(c.sizes[0], *(int(n) for n in hidden), c.sizes[-1]))


def unit_masks(config: MLP, wide: MLP, dtype=jnp.float32) -> tuple[jax.Array, ...]:
    """One ``(n_l,)`` 0/1 mask per hidden layer of ``wide``: 1 for the first units, as many as
    ``config`` has there."""
    return tuple(
        (jnp.arange(n_wide) < n).astype(dtype)
        for n, n_wide in zip(hidden_widths(config), hidden_widths(wide))
    )


def pad(tree, wide_tree, fill=0.0):
    """Every leaf of ``tree`` zero-padded (``fill``) at the end of each axis to the shape of the
    matching leaf of ``wide_tree`` (shapes only: ``wide_tree`` may hold ``ShapeDtypeStruct``)."""

    def one(a, w):
        a = jnp.asarray(a)
        if a.shape == tuple(w.shape):
            return a
        return jnp.pad(
            a,
            [(0, n - k) for k, n in zip(a.shape, w.shape)],
            constant_values=jnp.asarray(fill, a.dtype),
        )

    return jax.tree.map(one, tree, wide_tree)


def pad_model_state(state, wide_state):
    """Batch-norm running statistics padded: means with 0, variances with 1."""
    if not state:
        return state
    return tuple(
        {k: pad(v, wide_state[l][k], 1.0 if k == "var" else 0.0) for k, v in layer.items()}
        for l, layer in enumerate(state)
    )


def unpad(tree, narrow_tree):
    """The inverse of :func:`pad`: every leaf cut to the shape of the matching narrow leaf."""
    return jax.tree.map(lambda a, n: a[tuple(slice(0, k) for k in np.shape(n))], tree, narrow_tree)


def can_init_padded(scheme, keys) -> bool:
    """Whether :func:`init_padded` reproduces :func:`init`: a named scheme, and keys
    whose random bits are counter-based per element (threefry with
    ``jax_threefry_partitionable``, JAX's default), which makes a narrow draw the start of a wider
    one."""
    if not (scheme is None or isinstance(scheme, str)):
        return False
    impl = str(jax.random.key_impl(keys)) if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) else "threefry2x32"
    return "threefry" in impl and bool(jax.config.values["jax_threefry_partitionable"])


def init_scales(config: MLP, scheme: str) -> np.ndarray | None:
    """Each layer's ``sigma`` under a named scheme (:func:`fjdl.initializers.normal_scale`) in
    float32, as :func:`init` computes it for ``config`` (its initializers draw in
    float32, then cast); ``None`` for ``"zeros"``."""
    scales = [
        initializers.normal_scale(scheme, (n_in, n_out), jnp.float32)
        for n_in, n_out in zip(config.sizes[:-1], config.sizes[1:])
    ]
    if scales[0] is None:
        return None
    return np.array([np.asarray(s) for s in scales])


def init_padded(key, sizes, scales, *, wide: MLP, dtype):
    """:func:`init` of the MLP of layer ``sizes`` (an int array, traced: any widths up to
    ``wide``'s), padded to ``wide``. One compiled program serves every width.

    It draws each layer's ``N(0, 1)`` values at ``wide``'s size, flat, and takes element
    ``i * n_out + j`` for ``W[i, j]``: JAX's counter-based random bits make a narrow draw the start
    of a wider one (``normal(key, (n,))`` is ``normal(key, (N,))[:n]``, and a draw of shape
    ``(n_in, n_out)`` is the flat one reshaped), so the weights are those of the narrow model's
    own init, multiplied by the same ``sigma`` (``scales``, from :func:`init_scales`).
    """
    sizes = jnp.asarray(sizes).astype(jnp.int32)
    layer_keys = jax.random.split(key, wide.n_layers)
    params, state = [], []
    for l in range(wide.n_layers):
        N_in, N_out = wide.sizes[l], wide.sizes[l + 1]
        n_in, n_out = sizes[l], sizes[l + 1]
        i = jnp.arange(N_in, dtype=jnp.int32)[:, None]
        j = jnp.arange(N_out, dtype=jnp.int32)[None, :]
        real = (i < n_in) & (j < n_out)
        if scales is None:  # "zeros"
            W = jnp.zeros((N_in, N_out), dtype)
        else:  # drawn and scaled in float32, then cast, as fjdl.initializers.init_mlp does
            z = jax.random.normal(layer_keys[l], (N_in * N_out,), jnp.float32)
            w = scales[l] * z[jnp.where(real, i * n_out + j, 0)]
            W = jnp.where(real, w, jnp.zeros((), jnp.float32)).astype(dtype)
        unit = (jnp.arange(N_out, dtype=jnp.int32) < n_out).astype(dtype)
        if wide.is_bn_layer(l):
            params.append({"W": W, "gamma": unit, "beta": jnp.zeros((N_out,), dtype)})
            state.append(batchnorm.init_running(N_out, batchnorm._stats_dtype(jnp.dtype(dtype))))
        else:
            params.append({"W": W, "b": jnp.zeros((N_out,), dtype)})
            state.append({})
    return tuple(params), tuple(state)
