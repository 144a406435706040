"""The data of a run, checked before anything compiles: inputs as float arrays of shape
``(m, ...)``, labels as the loss expects them, both against the model's output shape."""

import jax
import jax.numpy as jnp
import numpy as np

from fjdl import _checks, losses
from fjdl.model import MLP, Model


def as_inputs(name: str, X) -> jax.Array:
    """``X`` as a float array of shape ``(m, ...)``: integers and bools become the default float."""
    X = jnp.asarray(X)
    if jnp.issubdtype(X.dtype, jnp.complexfloating):
        raise TypeError(f"{name} X must be real, got dtype {X.dtype}")
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    if X.ndim == 0:
        raise ValueError(f"{name} X must have shape (m, ...) (examples first), got a scalar")
    if X.shape[0] == 0:
        raise ValueError(f"{name} set is empty: X has 0 examples")
    _checks.check_all_finite(f"{name} X", X)
    return X


def output_shape(config: Model, name: str, X, params, model_state) -> tuple:
    """The shape of the model's output on ``X``, found without compiling (``jax.eval_shape``)."""
    if isinstance(config, MLP):
        if X.ndim != 2 or X.shape[1] != config.sizes[0]:
            raise ValueError(f"{name} X must have shape (m, {config.sizes[0]}), got {X.shape}")
        n_out = config.sizes[-1]
        single = config.output != "softmax" and n_out == 1
        return (X.shape[0],) if single else (X.shape[0], n_out)
    try:
        out, _ = jax.eval_shape(
            lambda p, s, x: config.apply(p, s, x, train=False), params, model_state, X
        )
    except Exception as e:  # the model's own error, whatever it is, told in one line
        raise ValueError(
            f"{name} X of shape {X.shape} and dtype {X.dtype} does not fit the "
            f"{type(config).__name__}: its apply raised {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return tuple(out.shape)


def check_labels(loss: losses.Loss, name: str, X, Y, out_shape):
    """``Y`` checked against the loss (``loss.labels``) and converted for it."""
    m = X.shape[0]
    Y = jnp.asarray(Y)
    if Y.shape[:1] != (m,):
        raise ValueError(f"{name} Y must have {m} labels (one per example), got shape {Y.shape}")
    if loss.labels == "binary":
        if Y.ndim == 2 and Y.shape[1] == 1:
            Y = Y[:, 0]
        _checks.check_shape(f"{name} Y", Y, (m,))
        y = _checks.host_value(Y)
        if not np.all((y == 0) | (y == 1)):
            found = np.unique(y[(y != 0) & (y != 1)])[:5]
            raise ValueError(
                f"{name} Y must hold binary labels in {{0, 1}}, got other values such as "
                f"{found.tolist()}"
            )
        return Y.astype(X.dtype)
    if loss.labels == "classes":
        n_classes = out_shape[-1] if len(out_shape) >= 2 else None
        if Y.ndim == 2 and n_classes is not None and Y.shape[1] == n_classes:
            y = _checks.host_value(Y)
            if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
                raise ValueError(
                    f"{name} Y of shape {Y.shape} must be one-hot: one 1 per row, 0 elsewhere"
                )
            Y = jnp.argmax(Y, axis=1)
        _checks.check_shape(f"{name} Y", Y, (m,))
        y = _checks.host_value(Y)
        if not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
            raise ValueError(f"{name} Y must hold integer class labels")
        if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(
                f"{name} Y must hold class labels in [0, {n_classes}), got {y.min()} to {y.max()}"
            )
        return Y.astype(jnp.int32)
    if loss is losses.LOSSES["mse"] or not jnp.issubdtype(Y.dtype, jnp.floating):
        return Y.astype(X.dtype)
    return Y


def check_data(config: Model, name: str, X, Y, *, loss: losses.Loss, params=None, model_state=None):
    """``(X, Y)`` checked against the model and the loss, before anything compiles.

    For a model other than an MLP the output's shape comes from ``jax.eval_shape`` of its
    ``apply`` on ``(params, model_state)``, which are then needed.
    """
    X = as_inputs(name, X)
    return X, check_labels_of(config, name, X, Y, loss=loss, params=params, model_state=model_state)


def check_labels_of(config: Model, name: str, X, Y, *, loss: losses.Loss, params, model_state):
    """``Y`` checked against the model's output on ``X`` (already :func:`as_inputs`) and the loss."""
    return check_labels(loss, name, X, Y, output_shape(config, name, X, params, model_state))
