"""Type aliases shared by fjdl's modules (as optax's ``_src/base.py`` does)."""

from collections.abc import Callable
from typing import Any

import jax

PRNGKey = jax.Array
"""A key from ``jax.random.key`` or ``jax.random.PRNGKey``."""

Params = Any
"""A pytree of parameters: for an MLP, a tuple with one dict per layer."""

State = Any
"""A pytree of non-trainable state (batch-norm running statistics)."""

OptState = Any
"""An optimizer's state: a NamedTuple of pytrees."""

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]
"""A learning-rate schedule: ``count -> learning rate``."""

ScalarOrSchedule = float | jax.Array | Schedule
