r"""Panda: babysit one model, changing its hyperparameters between chunks of epochs.

The course's "panda" (week 3): when the hardware trains one model at a time, watch it and adjust
the learning rate (or the regularization) as it goes. The numbers live in arrays, so each change
reuses the compiled loop of :func:`fjdl.train.fit`.
"""

import dataclasses

import numpy as np

from fjdl import _checks, train
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
        is_weight=None,
    ):
        if callable(learning_rate):
            raise TypeError(
                "Panda's learning_rate must be a number (set() changes it between runs); for a "
                f"decay within runs give schedule=lr0 -> (epoch -> lr), got {learning_rate!r}"
            )
        run = train.prepare(
            model, X, Y, loss=loss, optimizer=optimizer, learning_rate=learning_rate,
            batch_size=batch_size, lambd=lambd, l1=l1, keep_probs=keep_probs, schedule=schedule,
            dev=dev, scheme=scheme, eval_every=eval_every, is_weight=is_weight, epochs=1,
        )  # fmt: skip
        refusal = _refusal(run.spec, run.hp)
        if refusal is not None:
            raise TypeError(refusal)
        self.run_spec, self.hyperparams, self.data = run.spec, run.hp, run.data
        self.state = train.start(run.spec.optimizer, run.spec.rate, run.hp, key, run.init)
        self._histories: list[train.History] = []
        self.diverged_epoch: int | None = None

    @property
    def config(self):
        """The model (with dropout switched on when ``keep_probs`` was given)."""
        return self.run_spec.model

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
        hp = self.hyperparams
        if keep_probs is not None and getattr(self.config, "keep_probs", None) is None:
            raise ValueError(
                "keep_probs can change only when the config has dropout: build the MLP with "
                "keep_probs=... (1.0 for none yet)"
            )
        if callable(learning_rate):
            raise TypeError(f"Panda's learning_rate must be a number, got {learning_rate!r}")
        new = train.make_hyperparams(
            self.config,
            hp.learning_rate if learning_rate is None else learning_rate,
            hp.lambd if lambd is None else lambd,
            hp.l1 if l1 is None else l1,
            keep_probs if keep_probs is not None else (hp.keep_probs if self._is_mlp else None),
            hp.lambd.dtype,
        )
        self.hyperparams = hp._replace(
            learning_rate=new.learning_rate, lambd=new.lambd, l1=new.l1, keep_probs=new.keep_probs
        )

    @property
    def _is_mlp(self) -> bool:
        return isinstance(self.config, MLP)

    def run(self, epochs: int) -> train.History:
        """Train ``epochs`` more epochs; returns their history (also appended to :attr:`history`).

        When the run diverges it stops there, keeps the last finite state and sets
        :attr:`diverged_epoch`: lower the learning rate with :meth:`set` and run again.
        """
        _checks.check_positive_int("epochs", epochs)
        spec = dataclasses.replace(self.run_spec, epochs=epochs)
        start = train.start_loop(self.state, epochs, self.data.X.dtype)
        loop = train.run_epochs(spec, self.hyperparams, self.data, start)
        history = loop.history
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
            loss=self.run_spec.loss,
            is_weight=self.run_spec.is_weight,
            lambd=hp.lambd,
            l1=hp.l1,
        )


def _refusal(spec: train.RunSpec, hp: train.Hyperparams) -> str | None:
    """Why Panda cannot babysit a run of this optimizer and rate, or None: :meth:`Panda.set`
    changes the learning rate, which a ready transformation or a schedule of the epoch ignore."""
    if train.is_transformation(spec.optimizer):
        return "Panda needs an optimizer fjdl builds (a name or a factory)"
    rate = spec.rate
    if (rate.fn is not None and not rate.factory) or callable(hp.learning_rate):
        return (
            "Panda's schedule must be a factory lr0 -> (epoch -> lr), which decays the rate that "
            f"set() changes; a schedule of the epoch would replace it, got "
            f"{rate.fn or hp.learning_rate!r}"
        )
    return None
