"""fjdl: exact, fast JAX implementations of the techniques that make deep networks train well.

Every function is pure: data in, new data out. Modules import downward: ``nn``, ``losses``,
``batchnorm``, ``initializers``, ``optim`` and ``schedules`` know nothing of training.
``fjdl.testing`` (hypothesis strategies, gradient assertions) is imported on its own, since it needs
the test dependencies.
"""

from importlib import metadata as _metadata

try:  # defined once, in pyproject.toml; an installed (or editable) fjdl carries it
    __version__ = _metadata.version("fjdl")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

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
