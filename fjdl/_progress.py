"""Progress of a compiled run, reported from the host between segments of epochs.

Nothing inside a compiled program calls back to Python: :func:`fjdl.train.fit` and
:func:`fjdl.tune.train_many` run a long run as a few calls of one compiled program (segments of
epochs, see :func:`segment_ends`) and report after each. The reporter is made per call from the
``progress`` argument, so there is no module-level state and nothing to recompile.
"""

from collections.abc import Callable

SEGMENTS = 100
"""A run with progress shown is cut into at most this many segments (one host round trip each)."""


def check(name: str, progress) -> None:
    """Refuse a ``progress`` that is not ``None``, a bool or a function ``f(epochs_done)``."""
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(
            f"{name} must be True (a progress bar), False, or a function f(epochs_done), got "
            f"{progress!r}"
        )


def segment_ends(epochs: int, chunk: int, shown: bool) -> list[int]:
    """The epoch counts at which the host reports: ``[epochs]`` when nothing is shown, else about
    :data:`SEGMENTS` equal segments, each a multiple of ``chunk`` (the compiled loop's chunk of
    epochs, so that segments do not split chunks)."""
    if not shown:
        return [epochs]
    size = max(chunk, -(-epochs // SEGMENTS))
    size = -(-size // chunk) * chunk
    return [*range(size, epochs, size), epochs]


class Reporter:
    """What ``progress=`` asks for: a tqdm bar (``True``), a function ``f(epochs_done)``, or nothing
    (``False``). Opened before compiling, so the bar shows from the first second."""

    def __init__(self, progress: bool | Callable[[int], None], total: int, what: str = "epoch"):
        self._call = progress if callable(progress) else None
        self._bar = None
        self.shown = bool(progress)
        if progress is True:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # progress is optional: pip install tqdm
                self.shown = False
                return
            self._bar = tqdm(total=total, unit=what, leave=False, mininterval=0.2)
            self._bar.set_description("compiling", refresh=True)

    def update(self, done: int, **postfix) -> None:
        """``done`` epochs (of the total) are finished; ``postfix`` values shown beside the bar."""
        if self._call is not None:
            self._call(done)
        if self._bar is not None:
            if self._bar.desc:
                self._bar.set_description("", refresh=False)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
