"""Type aliases shared by fjdl's modules (as optax's ``_src/base.py`` does).

Functions take :data:`ArrayLike` (a ``jax.Array``, a NumPy array, a NumPy scalar or a Python
number) and return :data:`Array` (``jax.Array``), as JAX's own functions do.

Pytrees are typed :data:`PyTree` (``Any``) on purpose. A pytree is any nesting of tuples, lists,
dicts, NamedTuples, ``None`` and node types registered with ``jax.tree_util`` (flax's and
equinox's modules among them) with arrays at the leaves. A precise alias, such as optax's recursive
``ArrayTree = ArrayLike | Iterable[ArrayTree] | Mapping[Any, ArrayTree]``, cannot name registered
node types, and it rejects the code users write on the trees they get back: ``params[0]["W"]``
does not type-check against ``Iterable``, and ``state.count`` not against ``Mapping``. So
:data:`Params`, :data:`State` and :data:`OptState` are ``Any`` under names that
say which tree is meant (optax, flax and equinox do the same for their pytrees).
"""

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax

Array = jax.Array
"""What fjdl's functions return: a ``jax.Array``."""

ArrayLike = jax.typing.ArrayLike
"""What fjdl's functions accept: a ``jax.Array``, a NumPy array or scalar, or a Python number."""

DTypeLike = jax.typing.DTypeLike
"""A dtype: ``jnp.float32``, ``np.dtype("float64")``, ``"bfloat16"``..."""

Shape = Sequence[int]
"""An array shape, e.g. ``(n_in, n_out)`` or ``(3, 3, C_in, C_out)``."""

AxisName = Hashable
"""A mapped axis's name (``vmap``/``shard_map``/``pmap``'s ``axis_name``), usually a string."""

PRNGKey = jax.Array
"""A key from ``jax.random.key`` (typed) or ``jax.random.PRNGKey`` (raw ``uint32`` of shape (2,))."""

Hyperparameter = float | jax.Array
"""A numeric hyperparameter (learning rate, beta, epsilon, lambd, keep_prob): a Python number or a
scalar ``jax.Array``, possibly traced (``jit``/``vmap`` over hyperparameters), so changing it never
recompiles. (At run time NumPy scalars work too; ``float | jax.Array`` is optax's convention.)"""

PyTree = Any
"""Any pytree of arrays (``Any``: see the module docstring for why it cannot be precise)."""

Params = PyTree
"""A pytree of trainable arrays: for fjdl's MLP, a tuple with one dict per layer ``{"W", "b"}``
(``{"W", "gamma", "beta"}`` with batch normalization)."""

State = PyTree
"""A pytree of non-trainable arrays: for fjdl's MLP, a tuple with one dict per layer, ``{"mean",
"var"}`` for batch-normalized layers and ``{}`` for the others."""

OptState = PyTree
"""An optimizer's state: a NamedTuple of pytrees (``fjdl.optim.AdamState``, or optax's states for
``optax.chain``)."""

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]
"""A learning-rate schedule as :mod:`fjdl.schedules` builds them: ``count -> learning rate``, the
count an int or an int array (0 for the first update), the rate a scalar array. It is also an
``optax.Schedule``."""

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.typing.ArrayLike]
"""A learning rate: a number, a scalar array (a :data:`Hyperparameter`), or a schedule. The optimizers call a schedule with
their ``count`` (an int32 array), and accept any function of it returning a number or an array, so
every :data:`Schedule` fits, and so do ``optax.schedules`` and plain ``lambda count: ...``."""
