"""The trajectory demo: the test functions' landmarks and the claims about each optimizer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fjdl import optim
from fjdl import trajectories as tj

PLATEAU_START = (0.5, 4.0)
VALLEY_START = (-8.0, 1.0)
valley = functools.partial(tj.elongated_quadratic, condition=20.0)


def test_saddle_plateau_landmarks():
    f = tj.saddle_plateau
    grad, hess = jax.grad(f), jax.hessian(f)
    for minimum in [(0.0, 1.0), (0.0, -1.0)]:
        np.testing.assert_allclose(f(jnp.array(minimum)), -1.0, rtol=1e-6)
        np.testing.assert_allclose(grad(jnp.array(minimum)), 0.0, atol=1e-6)
        assert np.all(np.linalg.eigvalsh(np.asarray(hess(jnp.array(minimum)))) > 0)
    saddle = jnp.zeros(2)
    np.testing.assert_allclose(grad(saddle), 0.0, atol=1e-7)
    # A minimum along x, a maximum along y: curvatures 2 and -2e.
    np.testing.assert_allclose(hess(saddle), np.diag([2.0, -2 * np.e]), rtol=1e-6)
    # The plateau: for |y| > 3 the slope along y is below 0.02 and vanishes quickly.
    ys = np.linspace(3.0, 6.0, 61)
    slopes = np.array([abs(float(grad(jnp.array([0.0, y]))[1])) for y in ys])
    assert slopes.max() < 0.02 and slopes[ys >= 4].max() < 4e-5
    assert bool(tj.on_plateau(jnp.array([0.0, -3.5]))) and not bool(tj.on_plateau(jnp.zeros(2)))


def test_paths_shape_start_and_a_manual_loop():
    opt = optim.momentum(0.05, 0.9)
    path = tj.trajectory(opt, PLATEAU_START, 20)
    assert path.shape == (21, 2) and path.dtype == jnp.float32
    np.testing.assert_array_equal(path[0], PLATEAU_START)
    p, state = jnp.asarray(PLATEAU_START), opt.init(jnp.asarray(PLATEAU_START))
    for t in range(1, 21):
        updates, state = opt.update(jax.grad(tj.saddle_plateau)(p), state, p)
        p = optim.apply_updates(p, updates)
        np.testing.assert_allclose(path[t], p, rtol=1e-6, atol=1e-7)


def test_trajectories_returns_one_path_per_optimizer_and_accepts_optax():
    opts = {"gd": optim.gd(0.1), "optax_sgd": optax.sgd(0.1), "adam": optim.adam(0.1)}
    paths = tj.trajectories(opts, (1.0, 0.5), 15, loss=valley)
    assert list(paths) == ["gd", "optax_sgd", "adam"]
    assert all(p.shape == (16, 2) for p in paths.values())
    np.testing.assert_allclose(paths["gd"], paths["optax_sgd"], rtol=1e-6)
    with jax.enable_x64(True):
        assert tj.trajectory(optim.adam(0.1), np.array([1.0, 0.5]), 3).dtype == jnp.float64


def test_adam_leaves_the_plateau_and_gd_does_not():
    lr, n = 0.1, 300
    paths = tj.trajectories(
        {
            "gd": optim.gd(lr),
            "momentum": optim.momentum(lr),
            "rmsprop": optim.rmsprop(lr),
            "adam": optim.adam(lr),
        },
        PLATEAU_START,
        n,
    )
    # Gradient descent, with or without momentum, is stuck: y moved by less than 0.01.
    for name in ("gd", "momentum"):
        assert tj.first_exit(paths[name], tj.on_plateau) is None
        assert abs(float(paths[name][-1, 1]) - PLATEAU_START[1]) < 0.01
    # Adam and RMSprop normalize the tiny slope away: off the plateau within 15 steps ...
    assert tj.first_exit(paths["adam"], tj.on_plateau) <= 15
    assert tj.first_exit(paths["rmsprop"], tj.on_plateau) <= 15
    # ... and down into a minimum (f = -1) by the end.
    assert float(tj.saddle_plateau(paths["adam"][-1])) < -0.99


def test_adam_escapes_the_saddle_sooner_than_gd():
    # Started just off the saddle's stable axis, |y| must grow from 1e-6 to 0.5.
    near_saddle = lambda p: jnp.abs(jnp.asarray(p)[..., 1]) < 0.5  # noqa: E731
    paths = tj.trajectories({"gd": optim.gd(0.1), "adam": optim.adam(0.1)}, (1.0, 1e-6), 100)
    steps_gd = tj.first_exit(paths["gd"], near_saddle)
    steps_adam = tj.first_exit(paths["adam"], near_saddle)
    assert steps_adam is not None and steps_gd is not None
    assert steps_adam * 3 <= steps_gd


def test_momentum_damps_the_zigzag_across_the_valley():
    lr, n = 0.09, 60  # lr * condition = 1.8: gradient descent overshoots y every step
    paths = tj.trajectories(
        {"gd": optim.gd(lr), "momentum": optim.momentum(lr, 0.9)}, VALLEY_START, n, loss=valley
    )
    gd, mom = paths["gd"], paths["momentum"]
    assert tj.reversals(gd, axis=1) == n - 1  # turns back at every step
    assert tj.reversals(mom, axis=1) <= n // 5
    travel = {k: float(np.abs(np.diff(np.asarray(p)[:, 1])).sum()) for k, p in paths.items()}
    assert travel["momentum"] < 0.7 * travel["gd"]
    # Along the long axis there is no zig-zag for either.
    assert tj.reversals(gd, axis=0) == 0


def test_momentum_stays_stable_where_gd_diverges():
    lr, n = 0.11, 60  # lr * condition = 2.2 > 2: gradient descent diverges along y
    paths = tj.trajectories(
        {"gd": optim.gd(lr), "momentum": optim.momentum(lr, 0.9)}, VALLEY_START, n, loss=valley
    )
    assert abs(float(paths["gd"][-1, 1])) > 1e3
    assert float(valley(paths["momentum"][-1])) < 0.05 * float(valley(jnp.array(VALLEY_START)))


def test_reversals_and_first_exit():
    path = np.array([[0, 0], [1, 1], [2, 0], [3, 0], [4, 2], [5, 1]], np.float32)
    assert tj.reversals(path, axis=1) == 3  # up, down, (flat skipped), up, down
    assert tj.reversals(path, axis=0) == 0
    assert tj.first_exit(path, lambda p: p[..., 0] < 2.5) == 3
    assert tj.first_exit(path, lambda p: p[..., 0] < 10) is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="start"):
        tj.trajectory(optim.gd(0.1), (1.0, 2.0, 3.0), 5)
    with pytest.raises(ValueError, match="n_steps"):
        tj.trajectory(optim.gd(0.1), (1.0, 2.0), 0)
    with pytest.raises(TypeError, match="optimizers"):
        tj.trajectories([optim.gd(0.1)], (1.0, 2.0), 5)
    with pytest.raises(TypeError, match="optimizers"):
        tj.trajectories({"gd": 0.1}, (1.0, 2.0), 5)
    with pytest.raises(ValueError, match="condition"):
        tj.elongated_quadratic(jnp.zeros(2), condition=-1.0)
