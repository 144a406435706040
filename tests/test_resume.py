"""Save a TrainState mid-run, restore it, and resume: the result equals the uninterrupted run."""

import chex
import jax
import numpy as np
import pytest

from fjdl import checkpoint, data, train
from fjdl.model import MLP


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_resume_from_checkpoint_is_bit_for_bit(tmp_path, optimizer):
    X, Y = data.make_moons(jax.random.key(0), 150, noise=0.2)
    config = MLP((2, 8, 4, 1), keep_probs=0.9, batchnorm=True)
    key = jax.random.key(1)
    kw = dict(optimizer=optimizer, learning_rate=0.01, batch_size=32, lambd=0.05)
    whole = train.fit(config, X, Y, key=key, epochs=6, **kw)
    first = train.fit(config, X, Y, key=key, epochs=3, **kw)
    path = tmp_path / "run.npz"
    checkpoint.save(path, first.state, metadata={"epochs": 3})
    template = jax.eval_shape(lambda k: train.init_state(k, config, optimizer), key)
    restored = checkpoint.restore(path, template)
    chex.assert_trees_all_equal(
        jax.tree.map(np.asarray, jax.random.key_data(restored.key)),
        np.asarray(jax.random.key_data(first.state.key)),
    )
    resumed = train.fit(config, X, Y, key=key, epochs=3, state=restored, **kw)
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    chex.assert_trees_all_equal(resumed.state.opt_state, whole.state.opt_state)
    chex.assert_trees_all_equal(resumed.state.model_state, whole.state.model_state)
    np.testing.assert_array_equal(resumed.history.cost, whole.history.cost[3:])


def test_restoring_into_another_optimizer_is_refused(tmp_path):
    X, Y = data.make_moons(jax.random.key(0), 60, noise=0.2)
    config = MLP((2, 4, 1))
    result = train.fit(config, X, Y, key=jax.random.key(0), epochs=1, optimizer="adam")
    path = tmp_path / "adam.npz"
    checkpoint.save(path, result.state)
    template = jax.eval_shape(lambda k: train.init_state(k, config, "momentum"), jax.random.key(0))
    with pytest.raises(ValueError, match="opt_state"):
        checkpoint.restore(path, template)
    wider = jax.eval_shape(lambda k: train.init_state(k, MLP((2, 5, 1)), "adam"), jax.random.key(0))
    with pytest.raises(ValueError, match=r"shape \(2, 4\) in file, \(2, 5\) expected"):
        checkpoint.restore(path, wider)
