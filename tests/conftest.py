"""Test configuration: strict dtype promotion, warnings as errors (pyproject), a fresh-key fixture."""

import itertools
import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile(
    "fjdl",
    deadline=None,
    max_examples=int(os.environ.get("FJDL_HYPOTHESIS_EXAMPLES", "30")),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("fjdl")

_counter = itertools.count()


@pytest.fixture
def getkey():
    """A function returning a new, never-reused PRNG key on each call (equinox's habit)."""
    base = jax.random.key(0)
    return lambda: jax.random.fold_in(base, next(_counter))
