"""Hyperparameter search: sampling on the right scale, many models trained at once, random and
coarse-to-fine search, and babysitting one model.

The course's advice (week 3, "Hyperparameter tuning"), one module per concept:

- :mod:`fjdl.tune.samplers`: **sample at random, on the right scale** (:class:`LogUniform` for a
  learning rate, :class:`BetaLogScale` for a momentum ``beta``), :func:`grid` to compare,
  :func:`narrow` to zoom in.
- :mod:`fjdl.tune.many`: **caviar**, many models in parallel (:func:`train_many`), ``jax.vmap`` of
  :func:`fjdl.train.fit`'s own loop; :func:`train_many` trains several hidden widths in one
  program.
- :mod:`fjdl.tune.search`: :func:`random_search` and :func:`coarse_to_fine` over any model and any
  numeric hyperparameter of ``fit``, the optimizer and the widths included.
- :mod:`fjdl.tune.panda`: **panda**, babysit one model and change its hyperparameters as it trains
  (:class:`Panda`).

A search space is a plain dict from hyperparameter names to samplers or constants::

  space = {
      "learning_rate": tune.LogUniform(1e-4, 1.0),
      "beta1": tune.BetaLogScale(0.9, 0.999),
      "n_units": tune.UniformInt(5, 50),
      "optimizer": tune.Choice(("adam", "momentum")),
  }
  result = tune.random_search(space, X, Y, dev=(X_dev, Y_dev), key=key, n_trials=64,
                              config=MLP((2, 20, 1)), epochs=200)
  result.best        # the best trial's record

References:
  Bergstra & Bengio, 2012, *Random Search for Hyper-Parameter Optimization*.
  Andrew Ng, *Improving Deep Neural Networks*, week 3.
"""

from fjdl import optim
from fjdl.model import MLP
from fjdl.tune.many import (
    OPTIMIZER_NAMES,
    ManyResult,
    ModelGroup,
    run_many,
    train_many,
)
from fjdl.tune.panda import Panda
from fjdl.tune.samplers import (
    SAMPLERS,
    BetaLogScale,
    Choice,
    LogUniform,
    Sampler,
    Uniform,
    UniformInt,
    beta_log_scale,
    grid,
    log_uniform,
    narrow,
    sample,
    uniform,
    uniform_int,
)
from fjdl.tune.search import (
    METRICS,
    PER_MODEL_NAMES,
    SHAPE_NAMES,
    SearchResult,
    coarse_to_fine,
    random_search,
)

__all__ = [
    "MLP",
    "METRICS",
    "OPTIMIZER_NAMES",
    "PER_MODEL_NAMES",
    "SAMPLERS",
    "SHAPE_NAMES",
    "BetaLogScale",
    "Choice",
    "LogUniform",
    "ManyResult",
    "ModelGroup",
    "Panda",
    "Sampler",
    "SearchResult",
    "Uniform",
    "UniformInt",
    "beta_log_scale",
    "coarse_to_fine",
    "grid",
    "log_uniform",
    "narrow",
    "optim",
    "random_search",
    "run_many",
    "sample",
    "train_many",
    "uniform",
    "uniform_int",
]
