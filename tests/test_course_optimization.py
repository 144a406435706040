"""The course's optimization experiment (week 2): mini-batch GD vs Adam, with and without decay.

Course setup: ``np.random.seed(3); make_moons(n_samples=300, noise=.2)``, layers [2, 5, 2, 1], He
initialization, mini-batches of 64, learning rate 0.0007, 5,000 epochs. The course reports about
72% train accuracy for gradient descent and 94% for Adam; with scheduled decay (lr0 0.1,
decay_rate 1, time_interval 1000) gradient descent reaches about 94%.
"""

import jax
import numpy as np
import pytest

from fjdl import schedules, train
from fjdl.model import MLP

sklearn_datasets = pytest.importorskip("sklearn.datasets")

CONFIG = MLP((2, 5, 2, 1))


@pytest.fixture(scope="module")
def course_moons():
    np.random.seed(3)
    X, Y = sklearn_datasets.make_moons(n_samples=300, noise=0.2)
    return X.astype(np.float32), Y.astype(np.float32)


def course_params(layers_dims):
    """The course's He initialization (``np.random.seed(3)``), in fjdl's ``(n_in, n_out)`` layout."""
    np.random.seed(3)
    params = []
    for l in range(1, len(layers_dims)):
        W = np.random.randn(layers_dims[l], layers_dims[l - 1]) * np.sqrt(2 / layers_dims[l - 1])
        params.append({"W": W.T.astype(np.float32), "b": np.zeros(layers_dims[l], np.float32)})
    return tuple(params)


def _accuracy(X, Y, **kwargs):
    result = train.fit(
        CONFIG,
        X,
        Y,
        key=jax.random.key(0),
        params=course_params(CONFIG.sizes),
        batch_size=64,
        epochs=5000,
        eval_every=5000,
        **kwargs,
    )
    return result.history.train_accuracy[-1]


def test_adam_beats_plain_minibatch_gd(course_moons):
    X, Y = course_moons
    gd = _accuracy(X, Y, optimizer="gd", learning_rate=0.0007)
    adam = _accuracy(X, Y, optimizer="adam", learning_rate=0.0007)
    print(f"mini-batch GD {gd:.4f} (course ~0.72), Adam {adam:.4f} (course ~0.94)")
    assert adam >= 0.93
    assert 0.6 <= gd <= 0.85


def test_scheduled_decay_rescues_gd(course_moons):
    X, Y = course_moons
    decayed = _accuracy(
        X,
        Y,
        optimizer="gd",
        learning_rate=0.1,
        schedule=lambda lr0: schedules.inverse_time_decay(lr0, 1.0, time_interval=1000),
    )
    print(f"GD with scheduled decay {decayed:.4f} (course ~0.943)")
    assert decayed >= 0.93
