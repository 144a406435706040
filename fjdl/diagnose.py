"""Bias and variance from three error rates, and the course's recipe for each.

Human-level error stands in for the Bayes (optimal) error. The gap from it to the training error is
the **avoidable bias**; the gap from the training error to the dev error is the **variance**:

.. math::
  \\text{avoidable bias} = e_{\\text{train}} - e_{\\text{human}}, \\qquad
  \\text{variance} = e_{\\text{dev}} - e_{\\text{train}}

so that ``avoidable_bias + variance = dev_error - human_error``: the whole gap to human level.

**Rule.** A gap is *high* when it is more than ``threshold`` (an absolute error fraction, default
0.015, i.e. 1.5 percentage points). The default lies between the largest gap the course calls fine
(1 pp: train 15%, dev 16% beside human-level 14%) and the smallest gap it says to work on (2 pp:
train 8%, dev 10% beside human-level 7.5%: "focus on variance"), so none of its examples sits on the
boundary. Gaps within ``1e-9`` of the threshold count as equal to it, so that ``0.10 - 0.08`` (which
is ``0.020000000000000004`` in floating point) is not more than a threshold of ``0.02``.

The **focus** is the larger gap, to attack first; the bias on a tie (gaps within ``1e-9`` are tied),
as the course's recipe fits the training set before the dev set. The default reproduces the course's
examples:

=====  =====  =====  ==========================  =========================================
human  train  dev    gaps (bias, variance)       diagnosis
=====  =====  =====  ==========================  =========================================
0%     1%     11%    1, 10 pp                    high variance
0%     15%    16%    15, 1 pp                    high bias
0%     15%    30%    15, 15 pp                   high bias and high variance
0%     0.5%   1%     0.5, 0.5 pp                 low bias and low variance
14%    15%    16%    1, 1 pp                     low bias and low variance
1%     8%     10%    7, 2 pp                     high bias and high variance (focus: bias)
7.5%   8%     10%    0.5, 2 pp                   high variance
=====  =====  =====  ==========================  =========================================

For tasks whose errors are all well below 1%, pass a smaller ``threshold``.

**Recipe** (the course's basic recipe for machine learning):

- high bias: a bigger network (more hidden units or layers), train longer (or a better
  optimizer), another architecture;
- high variance: more data, regularization (L2, dropout, data augmentation), another architecture.

Reference: Andrew Ng, *Improving Deep Neural Networks*, week 1 ("Bias / Variance", "Basic Recipe
for Machine Learning"), and *Structuring Machine Learning Projects*, week 1 ("Avoidable Bias",
"Understanding Human-level Performance").
"""

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from fjdl import _checks
from fjdl._types import ArrayLike

DEFAULT_THRESHOLD = 0.015
"""A gap of more than 1.5 percentage points counts as high."""

_TOLERANCE = 1e-9  # gaps this close to the threshold count as equal to it (floating-point noise)

BIAS_RECIPE = (
    "bigger network (more hidden units or layers)",
    "train longer (or use a better optimizer)",
    "try another architecture",
)
"""What to try against high (avoidable) bias, in the course's order."""

VARIANCE_RECIPE = (
    "more training data",
    "regularization (L2, dropout, data augmentation)",
    "try another architecture",
)
"""What to try against high variance, in the course's order."""


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """The result of :func:`diagnose`.

    Attributes:
      avoidable_bias: ``train_error - human_error`` (negative when training beats human level).
      variance: ``dev_error - train_error``.
      high_bias: ``avoidable_bias > threshold`` (by more than ``1e-9``).
      high_variance: ``variance > threshold`` (by more than ``1e-9``).
      verdict: ``"high bias"``, ``"high variance"``, ``"high bias and high variance"`` or
        ``"low bias and low variance"``.
      recipe: what to try, most urgent problem first (empty when neither gap is high).
      focus: ``"bias"`` or ``"variance"``: the larger gap, to attack first (bias on a tie, gaps
        within ``1e-9`` counting as tied).
      notes: warnings about the inputs (training error below human level; dev error well below
        training error).
      train_error, dev_error, human_error, threshold: the inputs.
    """

    avoidable_bias: float
    variance: float
    high_bias: bool
    high_variance: bool
    verdict: str
    recipe: tuple[str, ...]
    focus: str
    notes: tuple[str, ...]
    train_error: float
    dev_error: float
    human_error: float
    threshold: float

    def __str__(self) -> str:
        def pct(x):
            return f"{100 * x:.3g}%"

        def pp(x):
            return f"{100 * x:.3g} pp"

        lines = [
            f"{self.verdict} (a gap is high above {pp(self.threshold)})",
            f"  avoidable bias {pp(self.avoidable_bias)} = train {pct(self.train_error)}"
            f" - human {pct(self.human_error)}" + ("  <- high" if self.high_bias else ""),
            f"  variance       {pp(self.variance)} = dev {pct(self.dev_error)}"
            f" - train {pct(self.train_error)}" + ("  <- high" if self.high_variance else ""),
        ]
        if self.recipe:
            lines.append(f"  attack the {self.focus} first; try:")
            lines.extend(f"    - {step}" for step in self.recipe)
        else:
            lines.append(f"  nothing high; the larger gap is the {self.focus}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _as_fraction(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not isinstance(value, numbers.Real):
        arr = np.asarray(value) if _checks.is_concrete(value) else None
        if arr is None or arr.shape != () or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be a real scalar, got {value!r}")
        value = arr.item()
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        hint = " (pass fractions: 0.11 for 11%)" if math.isfinite(value) and value > 1 else ""
        raise ValueError(f"{name} must be {what} in [0, 1], got {value!r}{hint}")
    return value


def diagnose(
    train_error: ArrayLike,
    dev_error: ArrayLike,
    human_error: ArrayLike = 0.0,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> Diagnosis:
    """Diagnose bias and variance from the training, dev and human-level errors.

    .. math::
      \\text{avoidable bias} = e_{\\text{train}} - e_{\\text{human}}, \\qquad
      \\text{variance} = e_{\\text{dev}} - e_{\\text{train}}

    A gap is high when it is larger than ``threshold``; the recipe lists the course's remedies for
    each high gap, the larger gap's first.

    Args:
      train_error: error rate on the training set, a fraction in [0, 1] (0.01 for 1%).
      dev_error: error rate on the dev set, in [0, 1].
      human_error: human-level error, the estimate of the Bayes error, in [0, 1]; default 0.
      threshold: the largest gap, as a fraction, that does not count as high; default 0.015
        (1.5 percentage points). Must be in [0, 1).

    Returns:
      A :class:`Diagnosis`.

    Raises:
      TypeError: an argument is not a real scalar.
      ValueError: an error rate outside [0, 1] (a percentage such as 11 instead of 0.11), or a
        threshold outside [0, 1).

    Example:
      >>> d = diagnose(0.01, 0.11)
      >>> d.verdict, d.recipe[0]
      ('high variance', 'more training data')
      >>> diagnose(0.15, 0.16, human_error=0.14).verdict
      'low bias and low variance'
      >>> print(diagnose(0.15, 0.30))
      high bias and high variance (a gap is high above 1.5 pp)
        avoidable bias 15 pp = train 15% - human 0%  <- high
        variance       15 pp = dev 30% - train 15%  <- high
        attack the bias first; try:
          - bigger network (more hidden units or layers)
          - train longer (or use a better optimizer)
          - try another architecture
          - more training data
          - regularization (L2, dropout, data augmentation)
    """
    train_error = _as_fraction("train_error", train_error, "an error rate")
    dev_error = _as_fraction("dev_error", dev_error, "an error rate")
    human_error = _as_fraction("human_error", human_error, "an error rate")
    threshold = _as_fraction("threshold", threshold, "a gap")
    if threshold == 1.0:
        raise ValueError("threshold must be in [0, 1): with 1 no gap could ever be high")

    avoidable_bias = train_error - human_error
    variance = dev_error - train_error
    high_bias = avoidable_bias > threshold + _TOLERANCE
    high_variance = variance > threshold + _TOLERANCE
    focus = "bias" if avoidable_bias >= variance - _TOLERANCE else "variance"

    if high_bias and high_variance:
        verdict = "high bias and high variance"
    elif high_bias:
        verdict = "high bias"
    elif high_variance:
        verdict = "high variance"
    else:
        verdict = "low bias and low variance"

    order = []
    if high_bias and high_variance:
        first, second = (BIAS_RECIPE, VARIANCE_RECIPE)
        if focus == "variance":
            first, second = second, first
        order = [*first, *second]
    elif high_bias:
        order = list(BIAS_RECIPE)
    elif high_variance:
        order = list(VARIANCE_RECIPE)
    recipe = tuple(dict.fromkeys(order))  # "another architecture" once

    notes = []
    if avoidable_bias < 0:
        notes.append(
            "training error is below human-level error: human level no longer estimates the "
            "Bayes error, so the avoidable bias is unknown"
        )
    if variance < -threshold:
        notes.append(
            "dev error is well below training error: check that the dev set comes from the "
            "training distribution, and that training error is measured without dropout"
        )
    return Diagnosis(
        avoidable_bias=avoidable_bias,
        variance=variance,
        high_bias=high_bias,
        high_variance=high_variance,
        verdict=verdict,
        recipe=recipe,
        focus=focus,
        notes=tuple(notes),
        train_error=train_error,
        dev_error=dev_error,
        human_error=human_error,
        threshold=threshold,
    )


def diagnose_accuracy(
    train_acc: ArrayLike,
    dev_acc: ArrayLike,
    human_acc: ArrayLike = 1.0,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> Diagnosis:
    """:func:`diagnose` from accuracies: each error is ``1 - accuracy``.

    Args:
      train_acc: training-set accuracy, a fraction in [0, 1].
      dev_acc: dev-set accuracy, in [0, 1].
      human_acc: human-level accuracy, in [0, 1]; default 1 (Bayes error 0).
      threshold: as in :func:`diagnose`.

    Example:
      >>> diagnose_accuracy(0.85, 0.84).verdict
      'high bias'
    """
    train_acc = _as_fraction("train_acc", train_acc, "an accuracy")
    dev_acc = _as_fraction("dev_acc", dev_acc, "an accuracy")
    human_acc = _as_fraction("human_acc", human_acc, "an accuracy")
    return diagnose(1.0 - train_acc, 1.0 - dev_acc, 1.0 - human_acc, threshold=threshold)
