"""Shape search in one program: MLPs of several hidden widths padded to the widest, extra units
masked. Why this computes exactly what each narrow model computes: see :mod:`fjdl.tune.many`,
"Several widths in one program"."""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

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


def widest(configs: Sequence[MLP]) -> MLP:
    """The config whose every hidden layer is as wide as the widest of ``configs`` there."""
    hidden = np.max(np.array([hidden_widths(c) for c in configs]), axis=0)
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
