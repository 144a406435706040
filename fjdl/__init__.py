"""fjdl: exact, fast JAX implementations of the techniques that make deep networks train well.

Every function is pure: data in, new data out. Modules import downward: ``nn``, ``losses``,
``batchnorm``, ``initializers``, ``optim`` and ``schedules`` know nothing of training.
``fjdl.testing`` (hypothesis strategies, gradient assertions) is imported on its own, since it needs
the test dependencies.
"""

from fjdl import (
    batchnorm,
    checkpoint,
    data,
    diagnose,
    gradcheck,
    initializers,
    losses,
    model,
    nn,
    optim,
    parallel,
    schedules,
    train,
    trajectories,
    tune,
)
from fjdl.model import MLP

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "batchnorm",
    "checkpoint",
    "data",
    "diagnose",
    "gradcheck",
    "initializers",
    "losses",
    "model",
    "nn",
    "optim",
    "parallel",
    "schedules",
    "train",
    "trajectories",
    "tune",
]
