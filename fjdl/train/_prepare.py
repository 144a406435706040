"""Prepare a run once: every argument of ``fit`` checked, and the :class:`Run` built from them.

:func:`prepare` is the one place where a run's arguments are read: :func:`fjdl.train.fit`,
:func:`fjdl.tune.train_many` (with ``n``: one value per model), :class:`fjdl.tune.Panda`,
:func:`fjdl.parallel.fit_data_parallel` and the CLI all call it. Each check is written here once,
raises before anything compiles, and names the argument, its value and what was expected.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from fjdl import _checks, losses, optim
from fjdl import model as model_lib
from fjdl.model import MLP, Model

from . import _inputs, _rates
from ._spec import Data, Hyperparams, RunSpec, default_loss, make_hyperparams


class Run(NamedTuple):
    """A prepared run: the static :class:`RunSpec`, the array :class:`Hyperparams` (scalars, or a
    leading model axis), the checked :class:`Data`, and ``init`` (``key -> (params,
    model_state)``: the model's initialization, in the run's dtype and scheme)."""

    spec: RunSpec
    hp: Hyperparams
    data: Data
    init: Callable


def model_init(model: Model, scheme=None, dtype=None) -> Callable:
    """``key -> (params, model_state)``: an MLP's :func:`fjdl.model.init` under ``scheme``
    (default ``"he"``) in ``dtype``; any other model's own ``init`` (no ``scheme``)."""
    if isinstance(model, MLP):
        return lambda key: model_lib.init(key, model, scheme or "he", dtype or np.float32)
    if scheme is not None:
        raise ValueError(
            f"scheme applies to an fjdl.MLP only; {type(model).__name__} initializes its "
            f"parameters in its own init(key), got scheme={scheme!r}"
        )
    return model.init


def with_dropout(model: Model, keep_probs) -> Model:
    """An MLP built without dropout gets it when ``keep_probs`` is given (its rates from there)."""
    if isinstance(model, MLP) and keep_probs is not None and model.keep_probs is None:
        return dataclasses.replace(model, keep_probs=(1.0,) * (model.n_layers - 1))
    return model


def _check_dev(dev) -> None:
    if dev is not None and (not isinstance(dev, tuple | list) or len(dev) != 2):
        raise ValueError(
            f"dev must be a pair (X_dev, Y_dev), got {type(dev).__name__}"
            + (f" of length {len(dev)}" if isinstance(dev, tuple | list) else "")
        )


def _check_loop(epochs, batch_size, patience, dev, eval_every, decay_interval, is_weight) -> None:
    """The static settings of the loop."""
    for name, v in (("epochs", epochs), ("eval_every", eval_every)):
        _checks.check_positive_int(name, v)
    _checks.check_positive_int("decay_interval", decay_interval)
    if batch_size is not None:
        _checks.check_positive_int("batch_size", batch_size)
    if patience is not None:
        _checks.check_positive_int("patience", patience)
        if dev is None:
            raise ValueError("early stopping (patience) needs a dev set: pass dev=(X_dev, Y_dev)")
    _check_dev(dev)
    if not callable(is_weight):
        raise TypeError(f"is_weight must be a function (key path, leaf) -> bool, got {is_weight!r}")


def _check_optimizer(optimizer, named: dict, decay_rate, scheduled: bool) -> None:
    """The optimizer against the learning rate: a name's hyperparameters only with a name; a
    schedule or a decay only for an optimizer fjdl builds, and not both."""
    _rates.check_optimizer(optimizer)
    given = sorted(k for k, v in named.items() if v is not None)
    if given and not isinstance(optimizer, str):
        raise ValueError(
            f"{', '.join(given)} apply to an optimizer given by name ('momentum', 'rmsprop', "
            "'adam'); a factory or a transformation carries its own"
        )
    decays = decay_rate is not None and np.any(np.asarray(decay_rate, np.float64) != 0)
    if decays and scheduled:
        raise ValueError("decay_rate and a schedule both decay the learning rate: give one")
    if _rates.is_transformation(optimizer) and (decays or scheduled):
        raise ValueError(
            "a schedule or decay_rate needs an optimizer fjdl builds (a name or a factory), "
            f"not a ready GradientTransformation ({type(optimizer).__name__}), which keeps its "
            "own learning rate"
        )


def _check_epoch_schedule(rate: _rates.Rate, schedule, learning_rate, n) -> None:
    """A schedule of the epoch (not a factory) replaces the learning rate: per-model rates would
    be ignored."""
    if n is None or schedule is None or rate.factory:
        return
    if len(set(np.atleast_1d(np.asarray(learning_rate, np.float64)).tolist())) > 1:
        raise ValueError(
            "schedule is a schedule of the epoch, which replaces the learning rate: per-model "
            "learning_rate values would be ignored; give a factory lr0 -> (epoch -> lr) to decay "
            "each model's rate, or one learning_rate"
        )


def check_data(spec: RunSpec, init: Callable, X, Y, dev) -> Data:
    """The training and dev sets checked against the model's output (found without compiling);
    ``X`` is already :func:`fjdl.train.as_inputs` (checked once: a pass over a large set costs)."""
    params, model_state = jax.eval_shape(init, jax.random.key(0))
    where = dict(loss=spec.loss, params=params, model_state=model_state)
    Y = _inputs.check_labels_of(spec.model, "training", X, Y, **where)
    if dev is None:
        return Data(X, Y)
    return Data(X, Y, *_inputs.check_data(spec.model, "dev", *dev, **where))


def prepare(
    model: Model, X, Y, *, n: int | None = None, loss=None, optimizer="adam",
    learning_rate=0.001, epochs: int = 100, batch_size: int | None = None, lambd=0.0, l1=0.0,
    keep_probs=None, schedule=None, dev=None, patience: int | None = None, min_delta=0.0,
    scheme=None, eval_every: int = 1, is_weight=losses.is_weight, beta=None, beta1=None,
    beta2=None, epsilon=None, decay_rate=None, decay_interval: int = 1,
) -> Run:  # fmt: skip
    """Check every argument of a run and build its :class:`Run` (the arguments as for
    :func:`fjdl.train.fit`). With ``n``, every number is one value or ``n`` values (one per
    model) and the hyperparameters get a leading axis of ``n``. ``is_weight=None`` is
    :func:`fjdl.losses.is_weight`."""
    model_lib.check_model(model)
    model = with_dropout(model, keep_probs)
    is_weight = losses.is_weight if is_weight is None else is_weight
    _check_loop(epochs, batch_size, patience, dev, eval_every, decay_interval, is_weight)
    numbers, rate = _rates.plan(learning_rate, schedule, decay_interval)
    named = dict(beta=beta, beta1=beta1, beta2=beta2, epsilon=epsilon)
    scheduled = schedule is not None or callable(learning_rate)
    _check_optimizer(optimizer, named, decay_rate, scheduled)
    _check_epoch_schedule(rate, schedule, learning_rate, n)
    X = _inputs.as_inputs("training", X)
    m = X.shape[0]
    hp = make_hyperparams(
        model, numbers, lambd, l1, keep_probs, X.dtype, n=n, decay_rate=decay_rate,
        min_delta=min_delta, **named,
    )  # fmt: skip
    spec = RunSpec(
        model, default_loss(model, loss), is_weight, optimizer, rate,
        m if batch_size is None else min(batch_size, m), epochs, patience, eval_every,
    )  # fmt: skip
    init = model_init(model, scheme, X.dtype)
    return Run(spec, hp, check_data(spec, init, X, Y, dev), init)


def checked_params(model: Model, params, like) -> Any:
    """``params`` given to start from, checked against the model's (``like``, shapes and dtypes
    of its init) and cast to its dtypes."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        _checks.check_all_finite(f"params{jax.tree_util.keystr(path)}", leaf)
    if isinstance(model, MLP):
        model_lib.check_params(model, params)
    else:
        optim.check_like("params", params, like, "the model's init")
    return jax.tree.map(lambda a, f: jax.numpy.asarray(a, f.dtype), params, like)


def per_model_items(name: str, value, n: int, one: Callable[[Any], bool]) -> list:
    """A list of ``n`` items: ``value`` repeated when ``one(value)``, else a sequence of ``n``."""
    if one(value):
        return [value] * n
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != n:
            raise ValueError(f"{name} must be one value or one per model ({n}), got {len(items)}")
        return items
    raise TypeError(f"{name} must be one value or a sequence of one per model, got {value!r}")
