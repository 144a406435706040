r"""Panda: babysit one model, changing its hyperparameters between chunks of epochs.

The course's "panda" (week 3): when the hardware trains one model at a time, watch it and adjust
the learning rate (or the regularization) as it goes. The numbers live in arrays, so each change
reuses the compiled loop of :func:`fjdl.train.fit`.
"""

import jax.numpy as jnp
import numpy as np

from fjdl import _checks, losses, train
from fjdl import model as fjdl_model
from fjdl._types import PRNGKey
from fjdl.model import MLP


class Panda:
    r"""Babysit one model: train it a chunk of epochs at a time and change its hyperparameters in
    between, without recompiling.

    The learning rate, ``lambd``, ``l1`` and the keep_probs are arrays in the run's
    :class:`fjdl.train.Hyperparams`, not compile-time constants: :meth:`set` replaces them, and
    the next :meth:`run` of the same number of epochs reuses the compiled
    :func:`fjdl.train.run_epochs`. The optimizer state, step and epoch counts carry over, so
    ``run(10); set(learning_rate=a); run(10)`` equals ``fit(10 epochs)`` then ``fit(state=...,
    learning_rate=a, 10 epochs)``.

    Args:
      model: any model of the protocol (:mod:`fjdl.model`). To change an MLP's keep_probs later,
        give its config ``keep_probs`` (dropout is compiled in only then).
      X, Y: the training set.
      key: the run's PRNG key (as for :func:`fjdl.train.fit`).
      loss: what the output means (see :func:`fjdl.train.fit`); default: the model's.
      optimizer: a name or a factory ``learning_rate -> GradientTransformation``.
      learning_rate, lambd, l1, keep_probs: the starting hyperparameters.
      batch_size: mini-batch size (``None``: full batch).
      schedule: per-epoch decay (see :func:`fjdl.train.fit`), applied to the current rate.
      dev: optional ``(X_dev, Y_dev)``.
      scheme: an MLP's weight initialization (default ``"he"``).
      eval_every: evaluate every this many epochs.
      is_weight: which parameters L2 and L1 act on (see :func:`fjdl.train.fit`).

    Attributes:
      state: the current :class:`fjdl.train.TrainState`.
      diverged_epoch: the epoch at which the last :meth:`run` diverged, or ``None``.

    Example:
      >>> import jax
      >>> from fjdl import data
      >>> X, Y = data.make_moons(jax.random.key(0), 100)
      >>> panda = Panda(MLP((2, 8, 1)), X, Y, key=jax.random.key(1), learning_rate=0.01)
      >>> _ = panda.run(epochs=5)
      >>> panda.set(learning_rate=0.001)
      >>> _ = panda.run(epochs=5)
      >>> panda.epoch, [round(float(lr), 4) for lr in panda.history.learning_rate[4:6]]
      (10, [0.01, 0.001])
    """

    def __init__(
        self,
        model,
        X,
        Y,
        *,
        key: PRNGKey,
        loss=None,
        optimizer="adam",
        learning_rate=0.001,
        lambd=0.0,
        l1=0.0,
        keep_probs=None,
        batch_size: int | None = None,
        schedule=None,
        dev=None,
        scheme=None,
        eval_every: int = 1,
        is_weight=losses.is_weight,
    ):
        fjdl_model.check_model(model)
        config = model
        self.config = config
        self.loss = train.default_loss(config, loss)
        self.is_weight = is_weight
        X = train._as_inputs("training", X)
        m = X.shape[0]
        if batch_size is not None:
            _checks.check_positive_int("batch_size", batch_size)
        self.batch_size = m if batch_size is None else min(batch_size, m)
        _checks.check_positive_int("eval_every", eval_every)
        self.eval_every = eval_every
        self.optimizer = train._resolve_optimizer(optimizer)
        if isinstance(self.optimizer, train._Fixed):
            raise TypeError("Panda needs an optimizer fjdl builds (a name or a factory)")
        if callable(learning_rate):
            raise TypeError(
                "Panda's learning_rate must be a number (set() changes it between runs); for a "
                f"decay within runs give schedule=lr0 -> (epoch -> lr), got {learning_rate!r}"
            )
        if schedule is not None:
            _, plan = train._rate_plan(learning_rate, schedule)
            if plan is not schedule:
                raise TypeError(
                    "Panda's schedule must be a factory lr0 -> (epoch -> lr), which decays the "
                    "rate that set() changes; a schedule of the epoch would replace it, got "
                    f"{schedule!r}"
                )
        self.schedule = schedule
        dtype = X.dtype
        self.hyperparams = train.make_hyperparams(
            config, learning_rate, lambd, l1, keep_probs, dtype
        )
        self.state = train.init_state(
            key, config, self.optimizer, learning_rate, scheme=scheme, dtype=dtype
        )
        where = dict(loss=self.loss, params=self.state.params, model_state=self.state.model_state)
        self.X, self.Y = train._check_data(config, "training", X, Y, **where)
        self.dev = (
            train._check_data(config, "dev", *dev, **where) if dev is not None else (None, None)
        )
        self._histories: list[train.History] = []
        self.diverged_epoch: int | None = None

    @property
    def epoch(self) -> int:
        """Epochs trained so far."""
        return int(self.state.epoch)

    @property
    def params(self):
        return self.state.params

    @property
    def history(self) -> train.History:
        """Every epoch run so far, all chunks joined (NumPy arrays)."""
        if not self._histories:
            return train.History(*(np.zeros((0,), np.float32) for _ in train.History._fields))
        return train.History(*(np.concatenate(f) for f in zip(*self._histories)))

    def set(self, *, learning_rate=None, lambd=None, l1=None, keep_probs=None) -> None:
        """Change hyperparameters for the next :meth:`run` (``None`` keeps the current value)."""
        is_mlp = isinstance(self.config, MLP)
        hp = self.hyperparams
        dtype = hp.learning_rate.dtype
        if keep_probs is not None and getattr(self.config, "keep_probs", None) is None:
            raise ValueError(
                "keep_probs can change only when the config has dropout: build the MLP with "
                "keep_probs=... (1.0 for none yet)"
            )
        self.hyperparams = train.make_hyperparams(
            self.config,
            hp.learning_rate if learning_rate is None else learning_rate,
            hp.lambd if lambd is None else lambd,
            hp.l1 if l1 is None else l1,
            keep_probs if keep_probs is not None else (hp.keep_probs if is_mlp else None),
            dtype,
        )

    def run(self, epochs: int) -> train.History:
        """Train ``epochs`` more epochs; returns their history (also appended to :attr:`history`).

        When the run diverges it stops there, keeps the last finite state and sets
        :attr:`diverged_epoch`: lower the learning rate with :meth:`set` and run again.
        """
        _checks.check_positive_int("epochs", epochs)
        X_dev, Y_dev = self.dev
        loop, history = train.run_epochs(
            self.state,
            self.hyperparams,
            self.X,
            self.Y,
            X_dev,
            Y_dev,
            jnp.zeros((), self.X.dtype),
            config=self.config,
            loss=self.loss,
            is_weight=self.is_weight,
            optimizer=self.optimizer,
            schedule=self.schedule,
            batch_size=self.batch_size,
            epochs=epochs,
            patience=None,
            eval_every=self.eval_every,
        )
        diverged = int(loop.diverged_epoch)
        n_run = int(loop.i) - (diverged >= 0)
        history = train.History(*(np.asarray(h)[:n_run] for h in history))
        self.state = loop.state
        self.diverged_epoch = diverged if diverged >= 0 else None
        self._histories.append(history)
        return history

    def evaluate(self, X, Y) -> dict:
        """Eval-mode cost and accuracy of the current parameters on ``(X, Y)``."""
        hp = self.hyperparams
        return train.evaluate(
            self.config,
            self.state.params,
            self.state.model_state,
            X,
            Y,
            loss=self.loss,
            is_weight=self.is_weight,
            lambd=hp.lambd,
            l1=hp.l1,
        )
