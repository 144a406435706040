"""Helpers for users' tests: a gradient assertion, hypothesis strategies for small MLPs, and a
reference convnet of the model protocol (:class:`ConvNet`).

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

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st

from fjdl import _checks, batchnorm, gradcheck, initializers, model, nn
from fjdl._types import DTypeLike, Params, PRNGKey, State


def assert_gradients_match(
    f: Callable[[Params], jax.Array],
    params: Params,
    grads: Params | None = None,
    *,
    epsilon: float = 1e-7,
    max_difference: float = 1e-7,
    dtype: DTypeLike = jnp.float64,
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


def _seeds() -> st.SearchStrategy[int]:
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
) -> st.SearchStrategy[model.MLP]:
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
    draw: st.DrawFn,
    min_layers: int,
    max_layers: int,
    min_width: int,
    max_width: int,
    activations: tuple[str, ...],
    outputs: tuple[str, ...],
    batchnorm: bool | None,
    dropout: bool,
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


def params_for(
    config: model.MLP, *, dtype: npt.DTypeLike = np.float64, bias_scale: float = 0.1
) -> st.SearchStrategy[Params]:
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


def _check_config(config: object) -> None:
    if not isinstance(config, model.MLP):
        raise TypeError(f"config must be an fjdl.model.MLP, got {type(config).__name__}")


@st.composite
def _params_for(
    draw: st.DrawFn, config: model.MLP, dtype: np.dtype, bias_scale: float
) -> Params:
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
    dtype: npt.DTypeLike = np.float64,
) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
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
def _datasets(
    draw: st.DrawFn, config: model.MLP, min_examples: int, max_examples: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
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


# ------------------------------------------------------------------------------------------------
# A reference convnet of the model protocol


@dataclasses.dataclass(frozen=True)
class ConvNet:
    """A small convnet of the model protocol, for tests, benchmarks and property tests.

    For each entry of ``channels``, a 3x3 convolution (``'SAME'`` padding, stride 1, no bias: batch
    norm's mean subtraction cancels it), batch norm and ReLU; then global average pooling, dropout
    (when training with ``keep_prob < 1``) and a dense layer to ``n_classes`` logits:

    .. math::
      z^{[l]} = a^{[l-1]} * W^{[l]}, \\quad
      a^{[l]} = \\mathrm{relu}(\\mathrm{BN}_{\\gamma^{[l]}, \\beta^{[l]}}(z^{[l]})), \\quad
      \\text{logits} = \\mathrm{dropout}(\\mathrm{mean}_{h, w}\\, a^{[L]}) \\, W + b

    Batch norm's statistics are per channel, over the examples and every position (``(m, H, W)``).
    Images are batch first with channels last, ``x`` of shape ``(m, H, W, in_channels)`` (NHWC);
    kernels are ``(3, 3, n_in, n_out)`` (HWIO), the kernel layout of the design notes.

    Parameters: ``{"conv1": {"W", "gamma", "beta"}, ..., "dense": {"W", "b"}}``; state (running
    statistics, mean 0 and variance 1 at init): ``{"conv1": {"mean", "var"}, ...}``. With the
    defaults, ``(16, 32)`` channels and 10 classes on one input channel, 5,178 parameters:
    144 + 32 + 4,608 + 64 + 330.

    Attributes:
      channels: output channels of each convolution.
      n_classes: logits out.
      in_channels: channels of the input images.
      keep_prob: dropout keep probability before the dense layer, when training (1: no dropout).
      bn_momentum: weight of the old running average (see :func:`fjdl.batchnorm.update_running`).
      bn_eps: batch norm's epsilon.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = ConvNet()
      >>> params, state = net.init(jax.random.key(0))
      >>> sum(p.size for p in jax.tree.leaves(params))
      5178
      >>> x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
      >>> logits, new_state = net.apply(params, state, x, train=True)
      >>> logits.shape, new_state["conv2"]["mean"].shape
      ((4, 10), (32,))
    """

    channels: tuple[int, ...] = (16, 32)
    n_classes: int = 10
    in_channels: int = 1
    keep_prob: float = 1.0
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        if isinstance(self.channels, int) or not all(
            isinstance(c, int | np.integer) for c in self.channels
        ):
            raise TypeError(f"channels must be a tuple of ints, got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels:
            raise ValueError("channels must name at least one convolution, got ()")
        for i, c in enumerate(self.channels):
            _checks.check_positive_int(f"channels[{i}]", c)
        _checks.check_positive_int("n_classes", self.n_classes)
        _checks.check_positive_int("in_channels", self.in_channels)
        _checks.check_keep_prob("keep_prob", self.keep_prob)
        _checks.check_unit_interval("bn_momentum", self.bn_momentum)
        _checks.check_positive("bn_eps", self.bn_eps)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """``("conv1", ..., "dense")``: the keys of the parameters."""
        return (*(f"conv{i + 1}" for i in range(len(self.channels))), "dense")

    def init(self, key: PRNGKey, *, dtype: DTypeLike = jnp.float32) -> tuple[Params, State]:
        """He-initialized kernels (std ``sqrt(2 / fan_in)``, fan-in ``3 * 3 * n_in``), ``gamma``
        1, ``beta`` and ``b`` 0; running mean 0, variance 1. One key per layer."""
        keys = jax.random.split(key, len(self.channels) + 1)
        params, state = {}, {}
        n_in = self.in_channels
        for name, k, n_out in zip(self.layer_names, keys, self.channels):
            params[name] = {
                "W": initializers.he(k, (3, 3, n_in, n_out), dtype),
                "gamma": jnp.ones((n_out,), dtype),
                "beta": jnp.zeros((n_out,), dtype),
            }
            state[name] = batchnorm.init_running(n_out, dtype)
            n_in = n_out
        params["dense"] = {
            "W": initializers.he(keys[-1], (n_in, self.n_classes), dtype),
            "b": jnp.zeros((self.n_classes,), dtype),
        }
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: jax.typing.ArrayLike,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        """Logits ``(m, n_classes)`` of images ``x`` ``(m, H, W, in_channels)``, and the new state
        (running statistics updated when ``train``; unchanged otherwise)."""
        x = jnp.asarray(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"x must have shape (m, H, W, {self.in_channels}) (NHWC), got {x.shape}"
            )
        dtype = params["dense"]["W"].dtype
        a, new_state = x.astype(dtype), {}
        for name in self.layer_names[:-1]:
            layer = params[name]
            z = jax.lax.conv_general_dilated(
                a, layer["W"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            z, new_state[name] = self._batchnorm(z, layer, state[name], train)
            a = nn.relu(z)
        pooled = jnp.mean(a, axis=(1, 2))
        if train and self.keep_prob < 1:
            if key is None:
                raise ValueError(
                    f"ConvNet.apply with train=True and keep_prob={self.keep_prob} needs a key "
                    "for dropout: pass key=jax.random.key(...)"
                )
            pooled = nn.dropout(key, pooled, self.keep_prob)
        return pooled @ params["dense"]["W"] + params["dense"]["b"], new_state

    def _batchnorm(
        self, z: jax.Array, layer: Params, running: State, train: bool
    ) -> tuple[jax.Array, State]:
        """Per-channel statistics over the examples and every position (``(m, H, W)``)."""
        if train:
            out, stats = batchnorm.normalize_train(z, layer["gamma"], layer["beta"], self.bn_eps)
            return out, batchnorm.update_running(running, stats, self.bn_momentum)
        out = batchnorm.normalize_eval(z, layer["gamma"], layer["beta"], running, self.bn_eps)
        return out, running


def convnets(
    *, max_layers: int = 2, max_channels: int = 4, max_classes: int = 4, dropout: bool = False
) -> st.SearchStrategy[ConvNet]:
    """Strategy: small :class:`ConvNet` configs, for property tests of code that takes any model.

    Args:
      max_layers: 1 to this many convolutions.
      max_channels: 1 to this many channels per convolution (and 1 or 2 input channels).
      max_classes: 2 to this many classes.
      dropout: when ``True``, draw a ``keep_prob`` in [0.5, 1]; else 1 (no dropout).

    Example:
      >>> from hypothesis import given
      >>> @given(convnets(max_layers=1))
      ... def test(net):
      ...     assert len(net.channels) == 1 and hash(net) == hash(ConvNet(**vars(net)))
      >>> test()
    """
    for name, value in (("max_layers", max_layers), ("max_channels", max_channels)):
        _checks.check_positive_int(name, value)
    _checks.check_positive_int("max_classes", max_classes)
    return st.builds(
        ConvNet,
        channels=st.lists(st.integers(1, max_channels), min_size=1, max_size=max_layers).map(tuple),
        n_classes=st.integers(2, max(2, max_classes)),
        in_channels=st.integers(1, 2),
        keep_prob=st.floats(0.5, 1.0) if dropout else st.just(1.0),
    )
