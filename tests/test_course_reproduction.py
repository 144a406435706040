"""The course's initialization experiment, reproduced to 1e-6 from its own initial weights.

"Improving Deep Neural Networks", week 1, Initialization: a [2, 10, 5, 1] ReLU network on the
circles data, He initialization drawn with numpy after ``np.random.seed(3)``, 15,000 full-batch
gradient-descent steps at learning rate 0.01. The course prints the costs checked below.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fjdl import losses, model

sklearn_datasets = pytest.importorskip("sklearn.datasets")

PUBLISHED_COSTS = {
    0: 0.8830537463419761,
    3000: 0.6526117768893807,
    10000: 0.15015556280371817,
    14000: 0.07357895962677362,
}


def course_circles():
    np.random.seed(1)
    train_X, train_Y = sklearn_datasets.make_circles(n_samples=300, noise=0.05)
    np.random.seed(2)
    test_X, test_Y = sklearn_datasets.make_circles(n_samples=100, noise=0.05)
    return train_X, train_Y, test_X, test_Y


def course_he_weights(layers_dims):
    """The course's ``initialize_parameters_he``, transposed to fjdl's ``(n_in, n_out)`` layout."""
    np.random.seed(3)
    params = []
    for l in range(1, len(layers_dims)):
        W = np.random.randn(layers_dims[l], layers_dims[l - 1]) * np.sqrt(2.0 / layers_dims[l - 1])
        params.append({"W": W.T, "b": np.zeros(layers_dims[l])})
    return params


def test_he_initialization_reproduces_published_costs():
    train_X, train_Y, test_X, test_Y = course_circles()
    with jax.enable_x64(True):
        cfg = model.MLP((2, 10, 5, 1))
        params = jax.tree.map(jnp.asarray, tuple(course_he_weights(cfg.sizes)))
        state = ({}, {}, {})
        X, Y = jnp.asarray(train_X), jnp.asarray(train_Y, jnp.float64)

        def J(p):
            logits, _ = model.apply(cfg, p, state, X)
            return losses.binary_cross_entropy(logits, Y)

        @jax.jit
        def run(p):
            def step(p, _):
                cost, grads = jax.value_and_grad(J)(p)
                return jax.tree.map(lambda w, g: w - 0.01 * g, p, grads), cost

            return jax.lax.scan(step, p, None, length=15000)

        params, costs = run(params)
        for step, published in PUBLISHED_COSTS.items():
            np.testing.assert_allclose(float(costs[step]), published, rtol=1e-6)
        train_pred = np.asarray(model.predict(cfg, params, state, X))
        test_pred = np.asarray(model.predict(cfg, params, state, jnp.asarray(test_X)))
    assert np.mean(train_pred == train_Y) == pytest.approx(0.9933, abs=5e-5)
    assert np.mean(test_pred == test_Y) == pytest.approx(0.96)
