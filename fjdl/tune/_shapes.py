"""Shape search in one program: MLPs of several hidden widths padded to the widest, extra units
masked. Why this computes exactly what each narrow model computes: see :mod:`fjdl.tune.many`,
"Several widths in one program"."""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import batchnorm, initializers
from fjdl.model import MLP


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
    """Whether :func:`init_padded` reproduces :func:`fjdl.model.init`: a named scheme, and keys
    whose random bits are counter-based per element (threefry with
    ``jax_threefry_partitionable``, JAX's default), which makes a narrow draw the start of a wider
    one."""
    if not (scheme is None or isinstance(scheme, str)):
        return False
    impl = str(jax.random.key_impl(keys)) if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) else "threefry2x32"
    return "threefry" in impl and bool(jax.config.values["jax_threefry_partitionable"])


def init_scales(config: MLP, scheme: str) -> np.ndarray | None:
    """Each layer's ``sigma`` under a named scheme (:func:`fjdl.initializers.normal_scale`) in
    float32, as :func:`fjdl.model.init` computes it for ``config`` (its initializers draw in
    float32, then cast); ``None`` for ``"zeros"``."""
    scales = [
        initializers.normal_scale(scheme, (n_in, n_out), jnp.float32)
        for n_in, n_out in zip(config.sizes[:-1], config.sizes[1:])
    ]
    if scales[0] is None:
        return None
    return np.array([np.asarray(s) for s in scales])


def init_padded(key, sizes, scales, *, wide: MLP, dtype):
    """:func:`fjdl.model.init` of the MLP of layer ``sizes`` (an int array, traced: any widths up
    to ``wide``'s), padded to ``wide``, and the run's key, as :func:`fjdl.train.init_state`
    splits them. One compiled program serves every width.

    It draws each layer's ``N(0, 1)`` values at ``wide``'s size, flat, and takes element
    ``i * n_out + j`` for ``W[i, j]``: JAX's counter-based random bits make a narrow draw the start
    of a wider one (``normal(key, (n,))`` is ``normal(key, (N,))[:n]``, and a draw of shape
    ``(n_in, n_out)`` is the flat one reshaped), so the weights are those of the narrow model's
    own init, multiplied by the same ``sigma`` (``scales``, from :func:`init_scales`).
    """
    sizes = jnp.asarray(sizes).astype(jnp.int32)
    init_key, run_key = jax.random.split(key)
    layer_keys = jax.random.split(init_key, wide.n_layers)
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
    return (tuple(params), tuple(state)), run_key
