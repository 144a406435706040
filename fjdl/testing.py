"""Helpers for users' tests: a gradient assertion and hypothesis strategies for small MLPs.

``hypothesis`` is a test dependency, not one of fjdl's: this module imports it, and ``import fjdl``
does not import this module. Import it yourself::

  from fjdl import testing

The strategies draw plain numpy arrays (float64 by default), so what they give does not depend on
whether JAX runs in 64-bit mode; JAX functions accept them as they are.

Example, a property test of your own backprop::

  from hypothesis import given
  from fjdl import losses, model, testing

  @given(data=st.data())
  def test_my_backprop(data):
      config = data.draw(testing.mlp_configs(activations=("tanh",)))
      params = data.draw(testing.params_for(config))
      X, Y = data.draw(testing.datasets(config))
      state = model.init(jax.random.key(0), config)[1]
      J = lambda p: losses.cost(model.apply(config, p, state, X, train=True)[0], Y, p,
                                output=config.output)
      testing.assert_gradients_match(J, params, my_backprop(config, params, X, Y))
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from fjdl import _checks, gradcheck, model, nn
from fjdl._types import Params


def assert_gradients_match(
    f: Callable[[Params], object],
    params: Params,
    grads: Params | None = None,
    *,
    epsilon: float = 1e-7,
    max_difference: float = 1e-7,
    dtype=jnp.float64,
) -> gradcheck.GradCheckResult:
    """Assert that ``grads`` (default ``jax.grad(f)``) match the numerical gradient of ``f``.

    .. math::
      \\frac{\\lVert g - g_{approx} \\rVert_2}{\\lVert g \\rVert_2 + \\lVert g_{approx} \\rVert_2}
      < \\text{max\\_difference}

    with :math:`g_{approx}` the two-sided difference of :func:`fjdl.gradcheck.numerical_gradient`.

    Args:
      f: ``params -> scalar``, traceable.
      params: a pytree of float arrays.
      grads: the gradient to test; ``None`` tests ``jax.grad(f)``.
      epsilon: the step of the numerical gradient.
      max_difference: the largest relative difference accepted; the course's 1e-7 needs float64.
      dtype: the dtype of the check (float64 runs inside ``jax.enable_x64(True)``; arrays that ``f``
        closes over must be float64 or numpy arrays then).

    Returns:
      The :class:`fjdl.gradcheck.GradCheckResult`, when the assertion holds.

    Raises:
      AssertionError: naming the relative difference, the worst leaves and the worst coordinates.

    Example:
      >>> import jax.numpy as jnp
      >>> _ = assert_gradients_match(lambda t: jnp.sum(t ** 3), jnp.array([1.0, 2.0]))
      >>> assert_gradients_match(lambda t: jnp.sum(t ** 3), jnp.array([1.0, 2.0]),
      ...                        jnp.array([3.0, 13.0]))  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      AssertionError: gradients do not match: relative difference 3.89e-02 >= 1e-07 ...
    """
    _checks.check_positive("max_difference", max_difference)
    result = gradcheck.check(f, params, grads, epsilon, dtype=dtype)
    if not result.difference < max_difference:
        worst = ", ".join(f"{d.leaf} ({d.difference:.2e})" for d in result.worst_leaves[:3])
        raise AssertionError(
            f"gradients do not match: relative difference {result.difference:.2e} >= "
            f"{max_difference:g} (worst leaves: {worst})\n{result}"
        )
    return result


def _seeds():
    return st.integers(min_value=0, max_value=2**32 - 1)


def mlp_configs(
    *,
    min_layers: int = 1,
    max_layers: int = 3,
    min_width: int = 1,
    max_width: int = 6,
    activations: Sequence[str] = ("tanh", "sigmoid"),
    outputs: Sequence[str] = ("sigmoid", "softmax"),
    batchnorm: bool | None = None,
    dropout: bool = False,
) -> st.SearchStrategy:
    """Strategy: small :class:`fjdl.model.MLP` configs.

    Args:
      min_layers, max_layers: bounds on ``L``, the layers with parameters (>= 1).
      min_width, max_width: bounds on every width (input and hidden; a softmax output has 2 to
        ``max(2, max_width)`` classes, a sigmoid or linear output 1 unit).
      activations: hidden activations to draw from. The default keeps to smooth ones, so a
        gradient check never sits on a ReLU kink.
      outputs: output layers to draw from (``"sigmoid"``, ``"softmax"``, ``"linear"``).
      batchnorm: ``True``/``False`` fixes it; ``None`` draws it.
      dropout: when ``True``, draw a keep_prob in [0.5, 1] for every hidden layer; else no dropout.

    Example:
      >>> from hypothesis import given
      >>> @given(mlp_configs(max_layers=2))
      ... def test(config):
      ...     assert 1 <= config.n_layers <= 2
      >>> test()
    """
    _checks.check_positive_int("min_layers", min_layers)
    _checks.check_positive_int("max_layers", max_layers)
    _checks.check_positive_int("min_width", min_width)
    _checks.check_positive_int("max_width", max_width)
    activations, outputs = tuple(activations), tuple(outputs)
    for a in activations:
        if a not in nn.ACTIVATIONS:
            raise ValueError(f"activations must be among {sorted(nn.ACTIVATIONS)}, got {a!r}")
    for o in outputs:
        if o not in model.OUTPUTS:
            raise ValueError(f"outputs must be among {model.OUTPUTS}, got {o!r}")
    if not activations or not outputs:
        raise ValueError("activations and outputs must each name at least one choice")
    return _mlp_configs(
        min_layers, max(min_layers, max_layers), min_width, max(min_width, max_width),
        activations, outputs, batchnorm, dropout,
    )  # fmt: skip


@st.composite
def _mlp_configs(
    draw, min_layers, max_layers, min_width, max_width, activations, outputs, batchnorm, dropout
) -> model.MLP:
    L = draw(st.integers(min_layers, max_layers))
    widths = [draw(st.integers(min_width, max_width)) for _ in range(L)]
    output = draw(st.sampled_from(outputs))
    n_out = draw(st.integers(2, max(2, max_width))) if output == "softmax" else 1
    use_bn = draw(st.booleans()) if batchnorm is None else bool(batchnorm)
    keep = None
    if dropout and L > 1:
        keep = tuple(draw(st.floats(0.5, 1.0)) for _ in range(L - 1))
    return model.MLP(
        (*widths, n_out),
        activation=draw(st.sampled_from(activations)),
        output=output,
        keep_probs=keep,
        batchnorm=use_bn,
    )


def params_for(config: model.MLP, *, dtype=np.float64, bias_scale: float = 0.1):
    """Strategy: parameters for ``config``, drawn from a seed.

    Weights are Xavier-scaled normals (std ``sqrt(1 / n_in)``); biases and ``beta`` normal with std
    ``bias_scale``; ``gamma`` ``1 + bias_scale * normal``. Non-zero biases and batch-norm parameters
    make a gradient check cover every term, not only the ones that are nonzero at initialization.
    The batch-norm running statistics are not parameters: take them from
    ``fjdl.model.init(key, config)[1]``.

    Args:
      config: an :class:`fjdl.model.MLP`.
      dtype: numpy dtype of every array (default float64).
      bias_scale: spread of biases, ``gamma - 1`` and ``beta``.

    Returns:
      A strategy of tuples of per-layer dicts of numpy arrays, as :func:`fjdl.model.init` lays them.

    Example:
      >>> from hypothesis import given
      >>> from fjdl import model
      >>> cfg = model.MLP((3, 4, 1), batchnorm=True)
      >>> @given(params_for(cfg))
      ... def test(params):
      ...     model.check_params(cfg, params)
      >>> test()
    """
    _check_config(config)
    _checks.check_nonnegative("bias_scale", bias_scale)
    return _params_for(config, np.dtype(dtype), bias_scale)


def _check_config(config):
    if not isinstance(config, model.MLP):
        raise TypeError(f"config must be an fjdl.model.MLP, got {type(config).__name__}")


@st.composite
def _params_for(draw, config, dtype, bias_scale) -> Params:
    rng = np.random.default_rng(draw(_seeds()))
    params = []
    for l, (n_in, n_out) in enumerate(zip(config.sizes[:-1], config.sizes[1:])):
        layer = {"W": rng.standard_normal((n_in, n_out)) * np.sqrt(1.0 / n_in)}
        if config.is_bn_layer(l):
            layer["gamma"] = 1.0 + bias_scale * rng.standard_normal(n_out)
            layer["beta"] = bias_scale * rng.standard_normal(n_out)
        else:
            layer["b"] = bias_scale * rng.standard_normal(n_out)
        params.append({k: v.astype(dtype) for k, v in layer.items()})
    return tuple(params)


def datasets(
    config: model.MLP,
    *,
    min_examples: int = 4,
    max_examples: int = 8,
    dtype=np.float64,
):
    """Strategy: a small ``(X, Y)`` with labels valid for ``config``'s output.

    ``X`` is standard normal, shape ``(m, n_x)``. ``Y`` is, for a sigmoid output, 0/1 floats of
    shape ``(m,)`` (``(m, n_L)`` with several units); for softmax, int32 classes in ``[0, C)`` of
    shape ``(m,)``; for a linear output, normal targets shaped like the logits. Both classes of a
    binary problem are present when ``m >= 2``.

    Args:
      config: an :class:`fjdl.model.MLP`.
      min_examples, max_examples: bounds on ``m`` (batch norm in training mode needs ``m >= 2``).
      dtype: numpy dtype of ``X`` and of float labels.

    Example:
      >>> from hypothesis import given
      >>> from fjdl import model
      >>> cfg = model.MLP((3, 5, 4), output="softmax")
      >>> @given(datasets(cfg))
      ... def test(data):
      ...     X, Y = data
      ...     assert X.shape == (Y.shape[0], 3) and 0 <= Y.min() and Y.max() < 4
      >>> test()
    """
    _check_config(config)
    _checks.check_positive_int("min_examples", min_examples)
    _checks.check_positive_int("max_examples", max_examples)
    return _datasets(config, min_examples, max(min_examples, max_examples), np.dtype(dtype))


@st.composite
def _datasets(draw, config, min_examples, max_examples, dtype):
    m = draw(st.integers(min_examples, max_examples))
    rng = np.random.default_rng(draw(_seeds()))
    X = rng.standard_normal((m, config.sizes[0])).astype(dtype)
    n_out = config.sizes[-1]
    label_shape = (m,) if n_out == 1 else (m, n_out)
    if config.output == "softmax":
        Y = rng.integers(0, n_out, size=m).astype(np.int32)
    elif config.output == "sigmoid":
        Y = (rng.random(label_shape) < 0.5).astype(dtype)
        if m >= 2 and n_out == 1:
            Y[0], Y[1] = 0, 1
    else:
        Y = rng.standard_normal(label_shape).astype(dtype)
    return X, Y
