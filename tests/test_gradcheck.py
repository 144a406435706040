"""fjdl.gradcheck: the numerical gradient against closed forms, the course's checks and planted bugs,
kinks, float32 against float64, and the MLP fast path against the generic path."""

import dataclasses
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from fjdl import gradcheck, losses, model, nn, testing

COURSE_BUGGY_DIFFERENCE = 0.2850931566540251  # the course's printout for its buggy backprop


def course_network():
    """The course's ``gradient_check_n_test_case``: a [4, 5, 3, 1] ReLU network on 3 examples,
    transposed to fjdl's layout (examples in rows, ``W`` of shape ``(n_in, n_out)``)."""
    np.random.seed(1)
    x = np.random.randn(4, 3)
    y = np.array([1, 1, 0])
    layers = []
    for n_out, n_in in ((5, 4), (3, 5), (1, 3)):
        W = np.random.randn(n_out, n_in)
        b = np.random.randn(n_out, 1)
        layers.append({"W": W.T, "b": b.ravel()})
    return x.T, y, layers


def course_cost():
    """``(config, params, state, X, Y, J)`` of the course network, in float64 (call under x64)."""
    x, y, layers = course_network()
    cfg = model.MLP((4, 5, 3, 1))
    params = tuple({k: jnp.asarray(v, jnp.float64) for k, v in layer.items()} for layer in layers)
    state = ({}, {}, {})
    X, Y = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)

    def J(p):
        return losses.cost(model.apply(cfg, p, state, X)[0], Y)

    return cfg, params, state, X, Y, J


def plant_bugs(grads):
    """The course's two bugs: ``dW2`` doubled and ``db1`` four times too large."""
    return (
        {**grads[0], "b": 4 * grads[0]["b"]},
        {**grads[1], "W": 2 * grads[1]["W"]},
        *grads[2:],
    )


def random_mlp(config, seed, m=6, dtype=jnp.float64, bias_scale=0.1):
    """Parameters (with non-zero biases and batch-norm parameters), state and data for ``config``,
    drawn with numpy (cheap), as jax arrays of ``dtype`` (call under x64 for float64)."""
    rng = np.random.default_rng(seed)
    params, state = [], []
    for l, (n_in, n_out) in enumerate(zip(config.sizes[:-1], config.sizes[1:])):
        layer = {"W": rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)}
        if config.is_bn_layer(l):
            layer["gamma"] = 1 + bias_scale * rng.standard_normal(n_out)
            layer["beta"] = bias_scale * rng.standard_normal(n_out)
            state.append({"mean": 0.1 * rng.standard_normal(n_out), "var": 1 + rng.random(n_out)})
        else:
            layer["b"] = bias_scale * rng.standard_normal(n_out)
            state.append({})
        params.append(layer)
    to_jax = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
    X = jnp.asarray(rng.standard_normal((m, config.sizes[0])), dtype)
    n_out = config.sizes[-1]
    shape = (m,) if n_out == 1 else (m, n_out)
    if config.output == "softmax":
        Y = jnp.asarray(rng.integers(0, n_out, m), jnp.int32)
    elif config.output == "sigmoid":
        Y = jnp.asarray(rng.random(shape) < 0.5, dtype)
    else:
        Y = jnp.asarray(rng.standard_normal(shape), dtype)
    return to_jax(tuple(params)), to_jax(tuple(state)), X, Y


def mlp_cost(config, state, X, Y, *, lambd=0.0, l1=0.0, train=False):
    def J(p):
        logits, _ = model.apply(config, p, state, X, train=train)
        return losses.cost(logits, Y, p, output=config.output, lambd=lambd, l1=l1)

    return J


def max_abs_difference(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# ---------------------------------------------------------------------------------------------
# The course's checks


def test_one_dimensional_check_of_theta_times_x():
    # J(theta) = theta * x, dJ/dtheta = x (the course's first exercise: x = 2, theta = 4).
    with jax.enable_x64(True):
        theta, x = jnp.array(4.0, jnp.float64), jnp.array(2.0, jnp.float64)
        J = lambda t: t * x  # noqa: E731
        grad = gradcheck.numerical_gradient(J, theta)
        assert abs(float(grad) - 2.0) < 1e-8
        result = gradcheck.check(J, theta, x)
    assert result.difference < 1e-7
    assert result.verdict == "great"
    assert result.leaves[0].leaf == "params"


def test_course_network_backprop_is_great_in_float64():
    with jax.enable_x64(True):
        _, params, _, _, _, J = course_cost()
        result = gradcheck.check(J, params)
    assert result.difference < 1e-7 and result.verdict == "great"
    assert result.n_params == 4 * 5 + 5 + 5 * 3 + 3 + 3 + 1
    assert [d.leaf for d in result.leaves] == [
        f"layer {l} {n}" for l in (1, 2, 3) for n in ("W", "b")
    ]


def test_planted_bugs_are_found_and_located():
    with jax.enable_x64(True):
        _, params, _, _, _, J = course_cost()
        buggy = plant_bugs(jax.jit(jax.grad(J))(params))
        result = gradcheck.check(J, params, buggy)
    # The course's buggy backprop printed 0.2850931566540251.
    assert result.difference == pytest.approx(COURSE_BUGGY_DIFFERENCE, abs=1e-6)
    assert result.verdict == "bug"
    worst = result.worst_leaves
    assert {worst[0].leaf, worst[1].leaf} == {"layer 1 b", "layer 2 W"}
    # db1 = 4 g against g: |3g| / |5g|; dW2 = 2 g against g: |g| / |3g|.
    assert worst[0].leaf == "layer 1 b" and worst[0].difference == pytest.approx(3 / 5, rel=1e-6)
    assert worst[1].difference == pytest.approx(1 / 3, rel=1e-6)
    assert all(d.difference < 1e-7 for d in worst[2:])
    assert {c.leaf for c in result.worst_coordinates} <= {"layer 1 b", "layer 2 W"}
    top = result.worst_coordinates[0]
    assert top.abs_difference == pytest.approx(abs(top.analytic - top.numerical))
    assert top.analytic == pytest.approx(4 * top.numerical, rel=1e-6)  # db1 four times too large
    text = str(result)
    assert "bug" in text and "layer 1 b" in text and "layer 2 W" in text and "2.85" in text


def test_fast_path_finds_the_planted_bugs_too():
    with jax.enable_x64(True):
        cfg, params, state, X, Y, J = course_cost()
        buggy = plant_bugs(jax.jit(jax.grad(J))(params))
        result = gradcheck.check_mlp(cfg, params, state, X, Y, grads=buggy)
        clean = gradcheck.check_mlp(cfg, params, state, X, Y)
    assert result.difference == pytest.approx(COURSE_BUGGY_DIFFERENCE, abs=1e-6)
    assert [d.leaf for d in result.worst_leaves[:2]] == ["layer 1 b", "layer 2 W"]
    assert clean.verdict in ("great", "fine")


@pytest.mark.parametrize(
    "difference, verdict",
    [(0.0, "great"), (9e-8, "great"), (1e-7, "fine"), (9e-6, "fine"), (1e-5, "suspicious"),
     (9e-4, "suspicious"), (1e-3, "bug"), (0.5, "bug"), (float("nan"), "bug")],
)  # fmt: skip
def test_verdict_follows_the_course_scale(difference, verdict):
    assert gradcheck.verdict_for(difference) == verdict


# ---------------------------------------------------------------------------------------------
# numerical_gradient against closed forms, with and without jit


class NumericalGradientTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("quadratic", lambda t, A: jnp.sum(A * t**2), lambda t, A: 2 * A * t),
        ("exp", lambda t, A: jnp.sum(jnp.exp(A * t)), lambda t, A: A * jnp.exp(A * t)),
        ("sin_times", lambda t, A: jnp.sum(jnp.sin(t) * A), lambda t, A: A * jnp.cos(t)),
        (
            "log_sum_exp",
            lambda t, A: jax.nn.logsumexp(A * t),
            lambda t, A: A * jnp.exp(A * t - jax.nn.logsumexp(A * t)),
        ),
    )
    def test_matches_closed_form(self, f, grad):
        with jax.enable_x64(True):
            key_t, key_a = jax.random.split(jax.random.key(7))
            theta = jax.random.normal(key_t, (3, 4), jnp.float64)
            A = jax.random.uniform(key_a, (3, 4), jnp.float64, 0.5, 1.5)
            numerical = self.variant(
                lambda t: gradcheck.numerical_gradient(lambda s: f(s, A), t, chunk_size=5)
            )(theta)
            chex.assert_trees_all_close(numerical, grad(theta, A), rtol=1e-6, atol=1e-8)
            assert numerical.dtype == jnp.float64 and numerical.shape == theta.shape

    @chex.variants(with_jit=True, without_jit=True)
    def test_pytree_of_leaves_keeps_structure(self):
        with jax.enable_x64(True):
            params = {
                "a": jnp.array([1.0, -2.0, 0.5], jnp.float64),
                "b": (jnp.array([[0.3, 0.7]], jnp.float64), jnp.array(1.5, jnp.float64)),
            }

            def f(p):  # a . a * b0 sum + exp(b1)
                return jnp.sum(p["a"] ** 2) * jnp.sum(p["b"][0]) + jnp.exp(p["b"][1])

            numerical = self.variant(lambda p: gradcheck.numerical_gradient(f, p))(params)
            expected = {
                "a": 2 * params["a"] * jnp.sum(params["b"][0]),
                "b": (
                    jnp.full((1, 2), jnp.sum(params["a"] ** 2), jnp.float64),
                    jnp.exp(params["b"][1]),
                ),
            }
            chex.assert_trees_all_equal_structs(numerical, params)
            chex.assert_trees_all_close(numerical, expected, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_chunk_size_does_not_change_the_result(chunk_size):
    with jax.enable_x64(True):
        theta = jnp.linspace(-1.0, 1.0, 7, dtype=jnp.float64)
        f = lambda t: jnp.sum(jnp.cos(t) * jnp.arange(1.0, 8.0, dtype=jnp.float64))  # noqa: E731
        got = gradcheck.numerical_gradient(f, theta, chunk_size=chunk_size)
        chex.assert_trees_all_close(got, gradcheck.numerical_gradient(f, theta, chunk_size=7))
        np.testing.assert_allclose(
            got, -jnp.sin(theta) * jnp.arange(1.0, 8.0), rtol=1e-6, atol=1e-8
        )


# ---------------------------------------------------------------------------------------------
# relative_difference


def test_relative_difference_values():
    a = {"w": jnp.array([3.0, 0.0]), "b": jnp.zeros(1)}
    b = {"w": jnp.array([0.0, 4.0]), "b": jnp.zeros(1)}
    assert float(gradcheck.relative_difference(a, a)) == 0.0
    # ||a - b|| = 5, ||a|| + ||b|| = 3 + 4.
    assert float(gradcheck.relative_difference(a, b)) == pytest.approx(5 / 7, rel=1e-6)
    assert float(gradcheck.relative_difference(b, a)) == float(gradcheck.relative_difference(a, b))
    zeros = jax.tree.map(jnp.zeros_like, a)
    assert float(gradcheck.relative_difference(zeros, zeros)) == 0.0
    assert float(gradcheck.relative_difference(a, zeros)) == 1.0
    # Over a whole pytree: leaves are stacked, not averaged.
    c = ({"W": jnp.array([1.0, 2.0])}, {"W": jnp.array([2.0])})
    d = ({"W": jnp.array([1.0, 2.0])}, {"W": jnp.array([0.0])})
    expected = 2.0 / (3.0 + np.sqrt(5.0))
    assert float(gradcheck.relative_difference(c, d)) == pytest.approx(expected, rel=1e-6)


def test_relative_difference_rejects_mismatched_trees():
    with pytest.raises(ValueError, match="structure"):
        gradcheck.relative_difference({"a": jnp.ones(2)}, {"b": jnp.ones(2)})
    with pytest.raises(ValueError, match="shapes"):
        gradcheck.relative_difference({"a": jnp.ones(2)}, {"a": jnp.ones(3)})


# ---------------------------------------------------------------------------------------------
# float32 against float64


def test_float32_check_is_worse_than_float64_on_the_same_network():
    cfg = model.MLP((5, 6, 4, 1), activation="tanh")
    params, state, X, Y = random_mlp(cfg, 0, m=8, dtype=jnp.float32)
    result32 = gradcheck.check(mlp_cost(cfg, state, X, Y), params)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        J64 = mlp_cost(cfg, state, X.astype(jnp.float64), Y.astype(jnp.float64))
        result64 = gradcheck.check(J64, p64)
    assert result64.difference < 1e-7 and result64.dtype == "float64"
    assert result32.dtype == "float32"
    assert result32.difference > 1e-5 > 100 * result64.difference
    assert any("float64" in w for w in result32.warnings)
    assert not result64.warnings


def test_dtype_float64_runs_without_global_x64():
    # float32 params and a function of numpy float64 data: checked in float64 on request.
    A = np.linspace(0.5, 2.0, 6).reshape(2, 3)
    params = {"w": jnp.ones((2, 3), jnp.float32)}
    f = lambda p: jnp.sum(jnp.asarray(A) * jnp.sin(p["w"]))  # noqa: E731
    result = gradcheck.check(f, params, dtype=jnp.float64)
    assert result.dtype == "float64" and result.difference < 1e-7
    np.testing.assert_allclose(result.numerical["w"], A * np.cos(1.0), rtol=1e-7)
    assert jnp.ones(1).dtype == jnp.float32  # the caller's mode is untouched


# ---------------------------------------------------------------------------------------------
# Kinks


def relu_on_a_kink(seed=3):
    """A ReLU network where unit 2 of layer 1 has pre-activation exactly 0 on example 1."""
    cfg = model.MLP((3, 4, 1))
    params, state, X, Y = random_mlp(cfg, seed, m=5)
    W = params[0]["W"]
    b = params[0]["b"].at[2].set(-(X[1] @ W[:, 2]))
    params = ({**params[0], "b": b}, params[1])
    return cfg, params, state, X, Y


def test_relu_kink_is_named_by_the_generic_check():
    with jax.enable_x64(True):
        cfg, params, state, X, Y = relu_on_a_kink()
        result = gradcheck.check(mlp_cost(cfg, state, X, Y), params)
    assert ("layer 1 b", (2,)) in result.kinks
    assert all(leaf.startswith("layer 1") for leaf, _ in result.kinks)
    assert any("kink" in w and "layer 1 b (2)" in w for w in result.warnings)
    assert "kink" in str(result)


def test_on_a_kink_the_nearer_one_sided_slope_is_compared_and_bugs_still_show():
    with jax.enable_x64(True):
        cfg, params, state, X, Y = relu_on_a_kink()
        J = mlp_cost(cfg, state, X, Y)
        two_sided = gradcheck.numerical_gradient(J, params)
        grads = jax.jit(jax.grad(J))(params)
        # The two-sided difference at the kink is the mean of two slopes, not the derivative ...
        assert abs(float(two_sided[0]["b"][2] - grads[0]["b"][2])) > 1e-3
        for result in (
            gradcheck.check(J, params),
            gradcheck.check_mlp(cfg, params, state, X, Y),
        ):
            # ... so the check compares with the one-sided slope that autodiff took (relu'(0) = 0).
            assert result.verdict == "great" and result.kinks
            assert abs(result.numerical[0]["b"][2] - float(grads[0]["b"][2])) < 1e-6
        # A wrong derivative at the kink disagrees with both slopes.
        wrong = ({**grads[0], "b": grads[0]["b"].at[2].multiply(3.0)}, grads[1])
        for result in (
            gradcheck.check(J, params, wrong),
            gradcheck.check_mlp(cfg, params, state, X, Y, grads=wrong),
        ):
            assert result.verdict == "bug"
            top = result.worst_coordinates[0]
            assert (top.leaf, top.index) == ("layer 1 b", (2,))


def test_relu_kink_is_found_exactly_by_the_fast_path():
    with jax.enable_x64(True):
        cfg, params, state, X, Y = relu_on_a_kink()
        result = gradcheck.check_mlp(cfg, params, state, X, Y)
    # z[1, 2] = X[1] @ W[:, 2] + b[2] = 0 moves with b[2] and with W[i, 2] (X[1, i] != 0), only.
    expected = {("layer 1 b", (2,))} | {("layer 1 W", (i, 2)) for i in range(3)}
    assert set(result.kinks) == expected
    assert any("layer 1 b (2)" in w for w in result.warnings)


def test_l1_kink_at_a_zero_weight_is_found_by_both_paths():
    with jax.enable_x64(True):
        cfg = model.MLP((3, 4, 1), activation="tanh")
        params, state, X, Y = random_mlp(cfg, 4, m=5)
        params = ({**params[0], "W": params[0]["W"].at[1, 2].set(0.0)}, params[1])
        generic = gradcheck.check(mlp_cost(cfg, state, X, Y, l1=0.5), params)
        fast = gradcheck.check_mlp(cfg, params, state, X, Y, l1=0.5)
    assert generic.kinks == fast.kinks == (("layer 1 W", (1, 2)),)
    assert generic.verdict == fast.verdict == "great"


def test_smooth_network_has_no_kink_warning():
    with jax.enable_x64(True):
        cfg = model.MLP((3, 4, 1), activation="tanh")
        params, state, X, Y = random_mlp(cfg, 3, m=5)
        generic = gradcheck.check(mlp_cost(cfg, state, X, Y), params)
        fast = gradcheck.check_mlp(cfg, params, state, X, Y)
    assert generic.kinks == () and generic.warnings == ()
    assert fast.kinks == () and fast.warnings == ()


def test_relu_away_from_kinks_has_no_warning():
    with jax.enable_x64(True):
        cfg, params, state, X, Y = relu_on_a_kink()
        params = ({**params[0], "b": params[0]["b"].at[2].add(0.5)}, params[1])
        generic = gradcheck.check(mlp_cost(cfg, state, X, Y), params)
        fast = gradcheck.check_mlp(cfg, params, state, X, Y)
    assert generic.kinks == () and fast.kinks == ()
    assert generic.verdict == fast.verdict == "great"


# ---------------------------------------------------------------------------------------------
# The MLP fast path against the generic path


FAST_CASES = [
    ("relu_sigmoid", dict(sizes=(4, 5, 3, 1)), {}),
    ("tanh_softmax_l2", dict(sizes=(3, 6, 4), activation="tanh", output="softmax"), {"lambd": 0.7}),
    ("sigmoid_l1_l2", dict(sizes=(3, 4, 4, 1), activation="sigmoid"), {"lambd": 0.3, "l1": 0.2}),
    ("leaky_linear", dict(sizes=(2, 5, 2), activation="leaky_relu", output="linear"), {}),
    ("bn_train_tanh", dict(sizes=(3, 5, 4, 1), activation="tanh", batchnorm=True), {"train": True}),
    ("bn_train_relu_softmax", dict(sizes=(4, 6, 3), batchnorm=True, output="softmax"),
     {"train": True, "lambd": 0.5}),
    ("bn_eval", dict(sizes=(3, 4, 1), activation="tanh", batchnorm=True), {}),
    ("one_layer", dict(sizes=(3, 1)), {"lambd": 0.1}),
    ("20_8_3", dict(sizes=(20, 8, 3), output="softmax"), {"lambd": 0.7}),
]  # fmt: skip


@pytest.mark.parametrize("name, config_kw, cost_kw", FAST_CASES, ids=[c[0] for c in FAST_CASES])
def test_fast_path_equals_generic_numerical_gradient(name, config_kw, cost_kw):
    with jax.enable_x64(True):
        cfg = model.MLP(**config_kw)
        params, state, X, Y = random_mlp(cfg, sum(map(ord, name)), m=7)
        J = mlp_cost(cfg, state, X, Y, **cost_kw)
        # With epsilon = 1e-4 both paths evaluate J at the same points and rounding (1e-16 / 1e-4)
        # is small: they agree to ~1e-12. (At the course's 1e-7, rounding alone is 1e-16 / 2e-7 ~
        # 1e-9 per entry in either path, so they agree to ~1e-9 there.)
        generic = gradcheck.numerical_gradient(J, params, 1e-4)
        fast = gradcheck.numerical_gradient_mlp(cfg, params, state, X, Y, epsilon=1e-4, **cost_kw)
        chex.assert_trees_all_equal_shapes_and_dtypes(fast, params)
        assert max_abs_difference(fast, generic) < 1e-11


def test_fast_check_agrees_with_generic_check_on_batchnorm_train():
    with jax.enable_x64(True):
        cfg = model.MLP((4, 6, 3), activation="tanh", output="softmax", batchnorm=True)
        params, state, X, Y = random_mlp(cfg, 11, m=9)
        generic = gradcheck.check(mlp_cost(cfg, state, X, Y, train=True, lambd=0.2), params)
        fast = gradcheck.check_mlp(cfg, params, state, X, Y, train=True, lambd=0.2)
    assert fast.verdict == generic.verdict == "great"
    assert [d.leaf for d in fast.leaves] == [d.leaf for d in generic.leaves]
    assert sorted(fast.leaves[0].__dict__) == sorted(generic.leaves[0].__dict__)
    chex.assert_trees_all_close(fast.numerical, generic.numerical, atol=1e-8)


def test_check_mlp_casts_float32_inputs_to_float64():
    cfg = model.MLP((3, 5, 2), activation="sigmoid", output="softmax")
    params, state, X, Y = random_mlp(cfg, 5, m=6, dtype=jnp.float32)
    result = gradcheck.check_mlp(cfg, params, state, X, Y, lambd=0.1)
    assert result.dtype == "float64" and result.verdict == "great"
    assert jnp.ones(1).dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# The result object


def test_result_is_frozen_and_prints_a_report():
    with jax.enable_x64(True):
        _, params, _, _, _, J = course_cost()
        result = gradcheck.check(J, params, top_k=3)
    assert len(result.worst_coordinates) == 3
    assert result.passed
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.difference = 1.0
    text = str(result)
    for needle in (
        "great",
        "relative difference",
        "worst leaves",
        "worst coordinates",
        "layer 1 W",
    ):
        assert needle in text
    ab = [c.abs_difference for c in result.worst_coordinates]
    assert ab == sorted(ab, reverse=True)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_epsilon():
    f = lambda t: jnp.sum(t**2)  # noqa: E731
    for eps in (0.0, -1e-7):
        with pytest.raises(ValueError, match="epsilon"):
            gradcheck.numerical_gradient(f, jnp.ones(3), eps)
        with pytest.raises(ValueError, match="epsilon"):
            gradcheck.check(f, jnp.ones(3), epsilon=eps)
    with pytest.raises(ValueError, match="epsilon"):
        gradcheck.numerical_gradient(f, jnp.ones(3), float("nan"))


def test_grads_of_the_wrong_shape_or_structure_name_the_leaf():
    with jax.enable_x64(True):
        _, params, _, _, _, J = course_cost()
        grads = jax.jit(jax.grad(J))(params)
        wrong_shape = (grads[0], {**grads[1], "W": grads[1]["W"].T}, grads[2])
        with pytest.raises(ValueError, match=r"layer 2 W.*\(5, 3\).*\(3, 5\)"):
            gradcheck.check(J, params, wrong_shape)
        missing = (grads[0], {"W": grads[1]["W"]}, grads[2])
        with pytest.raises(ValueError, match="missing leaves.*layer 2 b"):
            gradcheck.check(J, params, missing)
        with pytest.raises(ValueError, match="structure"):
            gradcheck.check(J, params, grads[:2])


def test_non_scalar_f_and_non_float_params():
    with pytest.raises(ValueError, match="scalar"):
        gradcheck.check(lambda t: t**2, jnp.ones(3))
    with pytest.raises(ValueError, match="scalar"):
        gradcheck.numerical_gradient(lambda t: t**2, jnp.ones(3))
    with pytest.raises(TypeError, match="float"):
        gradcheck.numerical_gradient(lambda t: jnp.sum(t), {"n": jnp.arange(3)})
    with pytest.raises(TypeError, match="float"):
        gradcheck.check(lambda t: jnp.sum(t > 0), jnp.ones(3))
    with pytest.raises(ValueError, match="non-empty"):
        gradcheck.check(lambda t: 0.0, {})


def test_fast_path_refuses_dropout_in_training():
    cfg = model.MLP((3, 4, 1), keep_probs=0.8)
    params, state, X, Y = random_mlp(cfg, 0, m=4, dtype=jnp.float32)
    with pytest.raises(ValueError, match="dropout"):
        gradcheck.numerical_gradient_mlp(cfg, params, state, X, Y, train=True)
    with pytest.raises(ValueError, match="dropout"):
        gradcheck.check_mlp(cfg, params, state, X, Y, train=True)
    # Dropout is off in eval mode, so the check runs.
    assert gradcheck.check_mlp(cfg, params, state, X, Y).verdict == "great"


def test_fast_path_validates_its_inputs():
    cfg = model.MLP((3, 4, 1))
    params, state, X, Y = random_mlp(cfg, 0, m=4, dtype=jnp.float32)
    with pytest.raises(ValueError, match="X must have shape"):
        gradcheck.numerical_gradient_mlp(cfg, params, state, X[:, :2], Y)
    with pytest.raises(ValueError, match="epsilon"):
        gradcheck.numerical_gradient_mlp(cfg, params, state, X, Y, epsilon=0.0)
    with pytest.raises(ValueError, match="lambd"):
        gradcheck.numerical_gradient_mlp(cfg, params, state, X, Y, lambd=-1.0)
    with pytest.raises(ValueError, match="labels"):
        gradcheck.numerical_gradient_mlp(cfg, params, state, X, 3 * Y + 2)
    with pytest.raises(ValueError, match="layer 2"):
        gradcheck.numerical_gradient_mlp(cfg, (params[0], {"W": params[1]["W"]}), state, X, Y)
    with pytest.raises(TypeError, match="MLP"):
        gradcheck.check_mlp((3, 4, 1), params, state, X, Y)


# ---------------------------------------------------------------------------------------------
# Property: autodiff through fjdl's model matches the numerical gradient, for random small nets


@settings(max_examples=6)
@given(data=st.data(), lambd=st.sampled_from([0.0, 0.1, 0.7]))
def test_model_gradients_match_numerical_gradient(data, lambd):
    config = data.draw(testing.mlp_configs(max_layers=3, max_width=5))
    params = data.draw(testing.params_for(config))
    X, Y = data.draw(testing.datasets(config, min_examples=4, max_examples=8))
    # Batch norm runs in training mode here; its running statistics only need the right dtype.
    state = tuple(
        {"mean": np.zeros(n), "var": np.ones(n)} if config.is_bn_layer(l) else {}
        for l, n in enumerate(config.sizes[1:])
    )

    def J(p):
        logits, _ = model.apply(config, p, state, X, train=config.batchnorm)
        return losses.cost(logits, Y, p, output=config.output, lambd=lambd)

    result = testing.assert_gradients_match(J, params, max_difference=1e-7)
    assert result.dtype == "float64"


# ---------------------------------------------------------------------------------------------
# Any model: the reference convnet, every coordinate and sampled


def blank_images(seed, m, size=8):
    """Digit-like images: 0 on a blank background, multiples of 1/16 on strokes (as scikit-learn's
    digits). A blank 3x3 patch gives a convolution output of exactly 0."""
    rng = np.random.default_rng(seed)
    strokes = rng.random((m, size, size, 1)) < 0.4
    return np.where(strokes, rng.integers(1, 17, (m, size, size, 1)) / 16, 0.0)


def convnet_case(seed=0, m=24, channels=(4, 8), trained=False):
    """A convnet, float64 parameters and state, images and labels (call under x64). ``trained``
    moves every parameter and the running statistics away from their initial values."""
    net = testing.ConvNet(channels=channels)
    params, state = net.init(jax.random.key(seed), dtype=jnp.float64)
    if trained:
        rng = np.random.default_rng(seed)
        params = jax.tree.map(lambda v: v + 0.1 * rng.standard_normal(v.shape), params)
        state = jax.tree.map(lambda v: v * (1 + 0.3 * rng.random(v.shape)), state)
    X = jnp.asarray(blank_images(seed, m), jnp.float64)
    Y = jnp.asarray(np.arange(m) % net.n_classes, jnp.int32)
    return net, params, state, X, Y


def convnet_cost(net, state, X, Y, train):
    def J(p):
        return losses.softmax_cross_entropy(net.apply(p, state, X, train=train)[0], Y)

    return J


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("trained", [False, True], ids=["init", "moved"])
def test_convnet_every_coordinate_passes_a_correct_gradient(train, trained):
    with jax.enable_x64(True):
        net, params, state, X, Y = convnet_case(trained=trained)
        result = gradcheck.check_model(net, params, state, X, Y, train=train)
    assert result.verdict in ("great", "fine"), str(result)
    assert result.n_checked == result.n_params == 4 * 9 + 8 + 4 * 8 * 9 + 16 + 8 * 10 + 10
    assert not result.sampled and result.dtype == "float64"
    if not train and not trained:
        # At init, eval mode: a blank patch gives conv output 0, normalized by the running
        # statistics (mean 0, var 1) to exactly 0 + beta = 0: every beta coordinate is a kink.
        assert {("['conv1']['beta']", (c,)) for c in range(4)} <= set(result.kinks)


def test_convnet_check_model_is_check_of_the_cost():
    with jax.enable_x64(True):
        net, params, state, X, Y = convnet_case(seed=1, trained=True)
        via_model = gradcheck.check_model(net, params, state, X, Y, train=True, lambd=0.3)

        def J(p):
            w = [p["conv1"]["W"], p["conv2"]["W"], p["dense"]["W"]]
            l2 = 0.3 / (2 * X.shape[0]) * sum(jnp.sum(jnp.square(v)) for v in w)
            return convnet_cost(net, state, X, Y, True)(p) + l2

        direct = gradcheck.check(J, params)
        grads = jax.grad(J)(params)
    assert via_model.difference == pytest.approx(direct.difference, rel=1e-6)
    chex.assert_trees_all_close(via_model.numerical, direct.numerical, rtol=1e-9)
    chex.assert_trees_all_close(via_model.analytic, grads, rtol=1e-12)


def test_convnet_planted_bugs_are_caught_and_located():
    with jax.enable_x64(True):
        net, params, state, X, Y = convnet_case(seed=2, trained=True)
        grads = jax.grad(convnet_cost(net, state, X, Y, False))(params)
        dense_doubled = {**grads, "dense": {**grads["dense"], "W": 2 * grads["dense"]["W"]}}
        one_channel = {
            **grads,
            "conv2": {**grads["conv2"], "W": grads["conv2"]["W"].at[..., 3].multiply(1.01)},
        }
        doubled = gradcheck.check_model(net, params, state, X, Y, grads=dense_doubled)
        scaled = gradcheck.check_model(net, params, state, X, Y, grads=one_channel)
    assert doubled.verdict == "bug" and doubled.worst_leaves[0].leaf == "['dense']['W']"
    assert doubled.worst_leaves[0].difference == pytest.approx(1 / 3, rel=1e-3)
    # A 1% error in one output channel of one kernel: suspicious at least, and found there.
    assert scaled.verdict in ("suspicious", "bug"), str(scaled)
    assert scaled.worst_leaves[0].leaf == "['conv2']['W']"
    assert scaled.worst_leaves[1].difference < 1e-5
    assert all(c.leaf == "['conv2']['W']" and c.index[-1] == 3 for c in scaled.worst_coordinates)


def test_kink_with_a_small_jump_is_recognized():
    # J = 100 t + 0.01 relu(t) at t = 0: the slopes are 100 and 100.01, a jump of 1e-4 of their
    # size, under the 0.1% test. Autodiff takes relu'(0) = 0 (the left slope, 100); the two-sided
    # difference is their mean, 100.005, a relative difference of 2.5e-5 for a correct gradient.
    # The analytic value sits on one one-sided slope, which smooth curvature cannot explain.
    with jax.enable_x64(True):
        t = jnp.array([0.0, 0.5], jnp.float64)
        J = lambda t: jnp.sum(100 * t + 0.01 * nn.relu(t))  # noqa: E731
        result = gradcheck.check(J, t)
        wrong = gradcheck.check(J, t, jnp.array([100.01 * 1.001, 100.01], jnp.float64))
    assert result.verdict == "great" and result.kinks == (("params", (0,)),)
    assert result.numerical[0] == pytest.approx(100.0, abs=1e-6)
    assert wrong.verdict in ("suspicious", "bug") and wrong.worst_coordinates[0].index == (0,)


def test_sampled_check_passes_a_correct_gradient_on_the_full_convnet():
    with jax.enable_x64(True):
        net = testing.ConvNet()
        params, state = net.init(jax.random.key(3), dtype=jnp.float64)
        X = jnp.asarray(blank_images(3, 64), jnp.float64)
        Y = jnp.asarray(np.arange(64) % 10, jnp.int32)
        result = gradcheck.check_model(
            net, params, state, X, Y, train=True, coordinates=8, directions=16,
            key=jax.random.key(4),
        )  # fmt: skip
    assert result.verdict in ("great", "fine"), str(result)
    assert result.sampled and result.n_params == 5178
    # 8 of each leaf, or all of a smaller one: beta/gamma (16, 32) and b (10) have more than 8.
    assert result.n_checked == 8 * 8 and [d.n_checked for d in result.leaves] == [8] * 8
    assert len(result.directions) == 16 and result.direction_difference < 1e-5
    numerical = result.numerical["conv2"]["W"]
    assert np.sum(np.isfinite(numerical)) == 8 and np.isnan(numerical).sum() == 4608 - 8
    assert "sampled" in str(result) and "random directions" in str(result)


def test_sampled_check_catches_a_planted_bug_through_the_directions():
    with jax.enable_x64(True):
        net = testing.ConvNet()
        params, state = net.init(jax.random.key(5), dtype=jnp.float64)
        X = jnp.asarray(blank_images(5, 64), jnp.float64)
        Y = jnp.asarray(np.arange(64) % 10, jnp.int32)
        grads = jax.grad(convnet_cost(net, state, X, Y, True))(params)
        buggy = {
            **grads,
            "conv2": {**grads["conv2"], "W": grads["conv2"]["W"].at[..., 7].multiply(1.1)},
        }
        result = gradcheck.check_model(
            net, params, state, X, Y, grads=buggy, train=True, directions=16,
            key=jax.random.key(6),
        )  # fmt: skip
    # The directions alone see the error of one channel in 5,178 coordinates.
    assert result.leaves == () and result.n_checked == 0
    assert result.verdict in ("suspicious", "bug"), str(result)


def test_directions_estimate_the_every_coordinate_difference():
    # One wrong coordinate in 2,000: every direction sees it, with E <a, u>^2 = ||a||^2 / n.
    with jax.enable_x64(True):
        theta = jnp.linspace(-2.0, 2.0, 2000, dtype=jnp.float64)
        f = lambda t: jnp.sum(jnp.sin(t) + 0.1 * t**3)  # noqa: E731
        g = jnp.cos(theta) + 0.3 * theta**2
        full = gradcheck.check(f, theta, g.at[100].multiply(3.0))
        sampled = gradcheck.check(
            f, theta, g.at[100].multiply(3.0), directions=64, key=jax.random.key(0)
        )
        clean = gradcheck.check(f, theta, g, directions=64, key=jax.random.key(0))
    assert full.verdict == "bug"
    assert 0.3 * full.difference < sampled.direction_difference < 3 * full.difference
    assert clean.verdict in ("great", "fine")


def test_sampling_arguments():
    with jax.enable_x64(True):
        f = lambda t: jnp.sum(t["a"] ** 2) + jnp.sum(jnp.exp(t["b"]))  # noqa: E731
        params = {"a": jnp.arange(5.0, dtype=jnp.float64), "b": jnp.ones((3, 4), jnp.float64)}
        with pytest.raises(ValueError, match="key"):
            gradcheck.check(f, params, coordinates=2)
        with pytest.raises(ValueError, match="coordinates"):
            gradcheck.check(f, params, coordinates=0, key=jax.random.key(0))
        with pytest.raises(TypeError, match="directions"):
            gradcheck.check(f, params, directions=1.5, key=jax.random.key(0))
        everything = gradcheck.check(f, params, coordinates=100, key=jax.random.key(0))
        some = gradcheck.check(f, params, coordinates=4, key=jax.random.key(1))
        again = gradcheck.check(f, params, coordinates=4, key=jax.random.key(1))
    assert everything.n_checked == 17 and np.all(np.isfinite(everything.numerical["b"]))
    assert [d.n_checked for d in some.leaves] == [4, 4] and some.verdict == "great"
    np.testing.assert_array_equal(np.isnan(some.numerical["b"]), np.isnan(again.numerical["b"]))


def test_check_model_refuses_dropout_and_names_the_losses():
    with jax.enable_x64(True):
        net = testing.ConvNet(channels=(2,), n_classes=1, keep_prob=0.5)
        params, state = net.init(jax.random.key(0), dtype=jnp.float64)
        X = jnp.asarray(blank_images(0, 6, size=5), jnp.float64)
        Y = jnp.asarray([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], jnp.float64)
        with pytest.raises(ValueError, match="dropout"):
            gradcheck.check_model(net, params, state, X, Y, loss="binary", train=True)
        for loss in ("binary", "mse", lambda out, y: jnp.mean((out[:, 0] - y) ** 4)):
            result = gradcheck.check_model(net, params, state, X, Y, loss=loss)
            assert result.verdict in ("great", "fine"), (loss, str(result))
        with pytest.raises(ValueError, match="loss"):
            gradcheck.check_model(net, params, state, X, Y, loss="hinge")
        with pytest.raises(TypeError, match="model protocol"):
            gradcheck.check_model(object(), params, state, X, Y)


def test_check_model_takes_the_fast_path_for_an_mlp():
    with jax.enable_x64(True):
        cfg, params, state, X, Y = course_cost()[:5]
        via_model = gradcheck.check_model(cfg, params, state, X, Y, lambd=0.1)
        fast = gradcheck.check_mlp(cfg, params, state, X, Y, lambd=0.1)
        # A loss given as a function takes the generic path: the same check.
        generic = gradcheck.check_model(
            cfg, params, state, X, Y, lambd=0.1,
            loss=lambda out, y: losses.binary_cross_entropy(out, y),
        )  # fmt: skip
    assert via_model.difference == fast.difference
    assert generic.verdict == fast.verdict == "great"
    chex.assert_trees_all_close(generic.numerical, fast.numerical, atol=1e-8)


def test_large_leaves_are_mapped_alone_and_small_ones_together():
    # Leaves with at least 1/8 of the coordinates have a map of their own: the same numbers.
    sizes = (1, 2, 3, 50, 5, 60, 0)
    with jax.enable_x64(True):
        params = [jnp.linspace(0.1, 1.0, n, dtype=jnp.float64) for n in sizes]
        assert gradcheck._numerical.leaf_groups(params) == [[3], [5], [0, 1, 2, 4, 6]]
        f = lambda p: sum(jnp.sum(jnp.sin(k * v)) for k, v in enumerate(p, 1))  # noqa: E731
        got = gradcheck.numerical_gradient(f, params, chunk_size=7)
        want = [k * jnp.cos(k * v) for k, v in enumerate(params, 1)]
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)


def test_the_step_actually_taken_is_the_denominator():
    # In float32, 0.3 + 1e-7 rounds to a step of 1.19e-7: dividing by 2e-7 would be off by 19%.
    theta = jnp.full(3, 0.3, jnp.float32)
    g = gradcheck.numerical_gradient(lambda t: t[1], theta)
    np.testing.assert_array_equal(g, np.array([0.0, 1.0, 0.0], np.float32))


@settings(max_examples=4)
@given(net=testing.convnets(max_layers=2, max_channels=3), data=st.data())
def test_any_model_gradients_match_numerical_gradient(net, data):
    # Property: autodiff through a model of the protocol passes the every-coordinate check, in
    # either batch-norm mode, away from initialization.
    seed, train = data.draw(st.integers(0, 2**32 - 1)), data.draw(st.booleans())
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        params, state = net.init(jax.random.key(seed % 1000), dtype=jnp.float64)
        params = jax.tree.map(lambda v: v + 0.1 * rng.standard_normal(v.shape), params)
        X = rng.standard_normal((6, 5, 5, net.in_channels))
        Y = rng.integers(0, net.n_classes, 6).astype(np.int32)
        result = gradcheck.check_model(net, params, state, X, Y, train=train)
    assert result.verdict in ("great", "fine"), str(result)


def test_rounding_is_named_when_it_explains_the_verdict():
    # J ~ 1e4 with derivatives ~1e-3: one unit in the last place of J (2e-12) over 2e-7 is ~1e-5
    # per coordinate, so a correct gradient gets a poor verdict from rounding alone, and says so.
    with jax.enable_x64(True):
        theta = jnp.linspace(-1.0, 1.0, 100, dtype=jnp.float64)
        f = lambda t: 1e4 + 1e-3 * jnp.sum(jnp.sin(t))  # noqa: E731
        noisy = gradcheck.check(f, theta)
        wrong = gradcheck.check(f, theta, (1e-3 * jnp.cos(theta)).at[7].multiply(10.0))
        smooth = gradcheck.check(lambda t: jnp.sum(jnp.cos(t)), theta)
    assert noisy.verdict != "great" and any("rounding alone" in w for w in noisy.warnings)
    assert wrong.verdict == "bug" and not any("rounding alone" in w for w in wrong.warnings)
    assert smooth.verdict == "great" and smooth.warnings == ()


# ---------------------------------------------------------------------------------------------
# Precision: the step and the verdict's scale by dtype (float32 never calls rounding a bug)


def sin_cost(p):
    return jnp.sum(jnp.sin(p["w"]))


def float32_mlp(activation, batchnorm):
    """The network ``fjdl gradcheck`` checks by default, [4, 5, 3, 1], in float32 (fjdl's init:
    zero biases), with its cost."""
    cfg = model.MLP((4, 5, 3, 1), activation=activation, batchnorm=batchnorm)
    params, state = model.init(jax.random.key(0), cfg)
    X = jax.random.normal(jax.random.key(1), (10, 4))
    Y = (jax.random.uniform(jax.random.key(2), (10,)) < 0.5).astype(jnp.float32)

    def J(p):
        return losses.cost(model.apply(cfg, p, state, X, train=batchnorm)[0], Y, p)

    return cfg, params, state, X, Y, J


def test_the_step_and_the_scale_follow_the_dtype():
    assert gradcheck.default_epsilon(jnp.float64) == 1e-7  # the course's
    assert gradcheck.default_epsilon(jnp.float32) == 1e-3
    assert gradcheck.scale_for(jnp.float64) == (1e-7, 1e-5, 1e-3)
    assert gradcheck.scale_for(jnp.float32) == (1e-4, 1e-3, 1e-2)
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        gradcheck.default_epsilon(jnp.int32)
    with jax.enable_x64(True):  # float64 results are those of epsilon 1e-7, as before
        _, params, _, _, _, J = course_cost()
        default, course = gradcheck.check(J, params), gradcheck.check(J, params, epsilon=1e-7)
    assert default.epsilon == 1e-7 and default.difference == course.difference
    assert "scale (float64): < 1e-7 great, < 1e-5 fine" in str(default)


@pytest.mark.parametrize(
    "difference, verdict",
    [(0.0, "great"), (9e-5, "great"), (1e-4, "fine"), (9e-4, "fine"), (1e-3, "suspicious"),
     (9e-3, "suspicious"), (1e-2, "bug"), (0.5, "bug"), (float("nan"), "bug")],
)  # fmt: skip
def test_verdict_follows_the_float32_scale(difference, verdict):
    assert gradcheck.verdict_for(difference, jnp.float32) == verdict


def test_sin_in_float32_is_great_not_a_bug():
    # fjdl issue 14: at epsilon 1e-7 this float32 check gave 1.8e-1 and "bug".
    result = gradcheck.check(sin_cost, {"w": jnp.arange(3.0)})
    assert result.dtype == "float32" and result.epsilon == 1e-3
    assert result.difference < 1e-4 and result.verdict == "great" and result.passed
    np.testing.assert_allclose(result.numerical["w"], np.cos(np.arange(3.0)), atol=1e-4)
    assert "scale (float32): < 1e-4 great, < 1e-3 fine" in str(result)
    assert any("use dtype=jnp.float64" in w for w in result.warnings)


def test_float32_at_the_course_epsilon_blames_rounding_not_backprop():
    # At epsilon 1e-7, one unit in the last place of J (2e-7) over 2e-7 is of order 1: rounding
    # alone explains the 1.8e-1, so the verdict stops at "suspicious" and says why.
    result = gradcheck.check(sin_cost, {"w": jnp.arange(3.0)}, epsilon=1e-7)
    assert result.difference == pytest.approx(0.1838, abs=1e-3)
    assert result.verdict == "suspicious" and not result.passed
    assert any("rounding alone" in w and "cannot tell" in w for w in result.warnings)
    assert result.leaves[0].rounding * 2 >= result.leaves[0].difference
    assert "(bug)" not in str(result)


def test_planted_x2_bug_is_still_a_bug_in_float32():
    w = jnp.arange(3.0)
    g = np.cos(np.arange(3.0))
    wrong = g.copy()
    wrong[0] *= 2.0
    result = gradcheck.check(sin_cost, {"w": w}, {"w": jnp.asarray(wrong, jnp.float32)})
    expected = np.linalg.norm(wrong - g) / (np.linalg.norm(wrong) + np.linalg.norm(g))
    assert result.verdict == "bug" and not result.passed
    assert result.difference == pytest.approx(expected, rel=1e-3)
    assert result.worst_coordinates[0].index == (0,)
    assert not any("rounding alone" in w for w in result.warnings)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
def test_16_bit_checks_are_refused_naming_dtype(dtype):
    name = np.dtype(dtype).name
    params = {"w": jnp.arange(3.0, dtype=dtype)}
    with pytest.raises(ValueError, match=rf"dtype must be float32 or float64.* got {name}.*"
                       r"dtype=jnp.float32.*dtype=None keeps them"):  # fmt: skip
        gradcheck.check(sin_cost, params)
    with pytest.raises(ValueError, match=rf"dtype must be float32 or float64.* got {name}"):
        gradcheck.check(sin_cost, {"w": jnp.arange(3.0)}, dtype=dtype)
    cfg, p32, state, X, Y, _ = float32_mlp("tanh", False)
    with pytest.raises(ValueError, match=rf"dtype must be float32 or float64.* got {name}"):
        gradcheck.check_mlp(cfg, p32, state, X, Y, dtype=dtype)
    # Cast to float32 on request, the check runs and passes.
    assert gradcheck.check(sin_cost, params, dtype=jnp.float32).verdict == "great"
    # The numerical gradient itself still runs in 16 bits, at the step cbrt(u).
    got = gradcheck.numerical_gradient(sin_cost, params)
    assert got["w"].dtype == dtype
    np.testing.assert_allclose(np.asarray(got["w"], np.float32), np.cos(np.arange(3.0)), atol=2e-2)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_correct_mlp_gradient_in_float32_is_not_a_bug_and_bugs_are(activation, batchnorm):
    cfg, params, state, X, Y, J = float32_mlp(activation, batchnorm)
    kw = dict(train=batchnorm, dtype=jnp.float32)
    for result in (
        gradcheck.check_mlp(cfg, params, state, X, Y, **kw),
        gradcheck.check_model(cfg, params, state, X, Y, **kw),
        gradcheck.check(J, params),
    ):
        assert result.dtype == "float32" and result.epsilon == 1e-3
        assert result.difference < 1e-3 and result.verdict in ("great", "fine"), str(result)
    grads = jax.grad(J)(params)
    # The CLI's --plant-bug: the last layer's dW doubled.
    leaf = (*grads[:-1], {**grads[-1], "W": 2 * grads[-1]["W"]})
    # One coordinate doubled: the largest of layer 2's W.
    W2 = grads[1]["W"]
    i = np.unravel_index(int(jnp.argmax(jnp.abs(W2))), W2.shape)
    coordinate = (grads[0], {**grads[1], "W": W2.at[i].multiply(2.0)}, grads[2])
    for wrong, where in ((leaf, "layer 3 W"), (coordinate, "layer 2 W")):
        for result in (
            gradcheck.check_mlp(cfg, params, state, X, Y, grads=wrong, **kw),
            gradcheck.check(J, params, wrong),
        ):
            assert result.verdict == "bug" and result.difference > 5e-2, str(result)
            assert result.worst_leaves[0].leaf == where
    assert result.worst_coordinates[0].index == tuple(int(v) for v in i)


def test_convnet_in_float32_is_not_called_a_bug():
    # The generic path through check_model, ReLU after batch norm: kinks within the float32 step.
    net = testing.ConvNet(channels=(2, 3), n_classes=3)
    params, state = net.init(jax.random.key(0))
    X = jax.random.normal(jax.random.key(1), (8, 6, 6, 1))
    Y = jnp.arange(8) % 3
    result = gradcheck.check_model(net, params, state, X, Y, dtype=jnp.float32)
    assert result.dtype == "float32" and result.difference < 1e-2 and result.verdict != "bug"


def test_rounding_of_j_is_measured_not_assumed():
    # A convnet's cost in float32: the measured rms error of one evaluation of J against float64
    # J at the same parameters.
    net = testing.ConvNet(channels=(2, 3), n_classes=3)
    params, state = net.init(jax.random.key(0))
    X = jax.random.normal(jax.random.key(1), (8, 6, 6, 1))
    Y = jnp.arange(8) % 3

    def cost(dtype):
        s, x = jax.tree.map(lambda v: v.astype(dtype), (state, X))
        return lambda p: losses.cost(net.apply(p, s, x)[0], Y, p, output="softmax")

    leaves, treedef = jax.tree_util.tree_flatten(params)
    sigma = gradcheck._errors.measure_noise(cost(jnp.float32), leaves, treedef, 1e-3, None, 0)
    rng = np.random.default_rng(0)
    J32 = jax.jit(cost(jnp.float32))
    errors = []
    with jax.enable_x64(True):
        J64 = jax.jit(cost(jnp.float64))
        for _ in range(64):
            p = jax.tree.map(lambda v: v + rng.uniform(-1e-3, 1e-3, v.shape).astype("f4"), params)
            p64 = jax.tree.map(lambda v: v.astype(jnp.float64), p)
            errors.append(float(J32(p)) - float(J64(p64)))
    rms = float(np.sqrt(np.mean(np.square(errors))))
    assert rms / 4 < sigma < 4 * rms, (sigma, rms)


def test_cli_gradcheck_float32_exits_0_without_a_traceback():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def run(*flags):
        return subprocess.run(
            [sys.executable, "-m", "fjdl.cli", "gradcheck", *flags],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip

    ok = run("--float32")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Traceback" not in ok.stderr
    assert "float32, epsilon 0.001" in ok.stdout and "scale (float32)" in ok.stdout
    assert "backprop is wrong" not in ok.stdout
    bug = run("--float32", "--plant-bug")
    assert bug.returncode == 1 and "Traceback" not in bug.stderr
    assert "bug: backprop is wrong" in bug.stdout
    assert "layer 3 W" in bug.stdout.split("worst leaves")[1].splitlines()[1]
    course = run("--float32", "--epsilon", "1e-7")  # the user's epsilon is kept
    assert course.returncode == 1 and "Traceback" not in course.stderr
    assert "epsilon 1e-07" in course.stdout and "backprop is wrong" not in course.stdout
