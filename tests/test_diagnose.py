"""Tests for fjdl.diagnose: the course's examples, the recipe, input checks and the laws."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fjdl.diagnose import (
    BIAS_RECIPE,
    DEFAULT_THRESHOLD,
    VARIANCE_RECIPE,
    Diagnosis,
    diagnose,
    diagnose_accuracy,
)

VERDICTS = {
    (True, True): "high bias and high variance",
    (True, False): "high bias",
    (False, True): "high variance",
    (False, False): "low bias and low variance",
}


# The course's examples ("Bias / Variance", "Avoidable Bias"), human-level error ~0 unless given.
@pytest.mark.parametrize(
    "train, dev, human, high_bias, high_variance, bias, variance",
    [
        (0.01, 0.11, 0.0, False, True, 0.01, 0.10),
        (0.15, 0.16, 0.0, True, False, 0.15, 0.01),
        (0.15, 0.30, 0.0, True, True, 0.15, 0.15),
        (0.005, 0.01, 0.0, False, False, 0.005, 0.005),
        (0.15, 0.16, 0.14, False, False, 0.01, 0.01),
        # "Avoidable Bias": human 1%, train 8%, dev 10% -> focus on bias; human 7.5% -> variance.
        (0.08, 0.10, 0.01, True, True, 0.07, 0.02),
        (0.08, 0.10, 0.075, False, True, 0.005, 0.02),
    ],
)
def test_course_examples(train, dev, human, high_bias, high_variance, bias, variance):
    d = diagnose(train, dev, human)
    assert (d.high_bias, d.high_variance) == (high_bias, high_variance)
    assert d.verdict == VERDICTS[high_bias, high_variance]
    assert d.avoidable_bias == pytest.approx(bias, abs=1e-12)
    assert d.variance == pytest.approx(variance, abs=1e-12)
    assert (d.train_error, d.dev_error, d.human_error) == (train, dev, human)
    assert d.threshold == DEFAULT_THRESHOLD


def test_recipes():
    assert diagnose(0.01, 0.11).recipe == VARIANCE_RECIPE
    assert diagnose(0.15, 0.16).recipe == BIAS_RECIPE
    assert diagnose(0.005, 0.01).recipe == ()
    assert "more training data" in VARIANCE_RECIPE and "more training data" not in BIAS_RECIPE
    assert any("bigger network" in step for step in BIAS_RECIPE)
    assert any("regularization" in step for step in VARIANCE_RECIPE)


def test_both_high_attacks_the_larger_gap_first():
    bias_first = diagnose(0.15, 0.30)  # a tie: bias first, as the course's recipe
    assert bias_first.focus == "bias"
    assert bias_first.recipe[:3] == BIAS_RECIPE
    assert bias_first.recipe.count("try another architecture") == 1
    assert set(bias_first.recipe) == set(BIAS_RECIPE) | set(VARIANCE_RECIPE)
    variance_first = diagnose(0.05, 0.30)
    assert variance_first.focus == "variance"
    assert variance_first.recipe[:3] == VARIANCE_RECIPE
    assert variance_first.recipe[3:] == (
        "bigger network (more hidden units or layers)",
        "train longer (or use a better optimizer)",
    )


def test_avoidable_bias_examples_focus():
    assert diagnose(0.08, 0.10, 0.01).focus == "bias"
    assert diagnose(0.08, 0.10, 0.01).recipe[:3] == BIAS_RECIPE
    assert diagnose(0.08, 0.10, 0.075).focus == "variance"


def test_threshold_is_strict_and_adjustable():
    assert not diagnose(0.0, 0.25, threshold=0.25).high_variance  # 0.25 is exactly representable
    assert diagnose(0.0, 0.25, threshold=0.24).high_variance
    # 0.10 - 0.08 is 0.020000000000000004 in floating point: still not more than 2 pp.
    assert 0.10 - 0.08 > 0.02
    assert not diagnose(0.08, 0.10, threshold=0.02).high_variance
    assert diagnose(0.08, 0.10, threshold=0.0199).high_variance
    # Near-zero errors: 1.4 pp of variance is small by default, large with a 0.5 pp threshold.
    assert not diagnose(0.001, 0.015).high_variance
    assert diagnose(0.001, 0.015, threshold=0.005).verdict == "high variance"


def test_accuracy_form_matches_error_form():
    for acc, err in [
        ((0.99, 0.89), (0.01, 0.11)),
        ((0.85, 0.70, 0.99), (0.15, 0.30, 0.01)),
        ((0.85, 0.84, 0.86), (0.15, 0.16, 0.14)),
    ]:
        a, e = diagnose_accuracy(*acc), diagnose(*err)
        assert (a.high_bias, a.high_variance, a.verdict, a.recipe, a.focus) == (
            e.high_bias,
            e.high_variance,
            e.verdict,
            e.recipe,
            e.focus,
        )
        assert a.avoidable_bias == pytest.approx(e.avoidable_bias, abs=1e-12)
        assert a.variance == pytest.approx(e.variance, abs=1e-12)
    assert diagnose_accuracy(0.95, 0.94, threshold=0.08).verdict == "low bias and low variance"
    assert diagnose_accuracy(0.95, 0.94).verdict == "high bias"


def test_notes():
    beyond_human = diagnose(0.003, 0.004, human_error=0.005)
    assert beyond_human.avoidable_bias < 0 and not beyond_human.high_bias
    assert any("below human-level" in note for note in beyond_human.notes)
    dev_easier = diagnose(0.10, 0.05)
    assert dev_easier.variance < 0 and not dev_easier.high_variance
    assert any("dev set" in note for note in dev_easier.notes)
    assert diagnose(0.01, 0.11).notes == ()


def test_str_is_readable():
    text = str(diagnose(0.01, 0.11))
    assert text.splitlines()[0] == "high variance (a gap is high above 1.5 pp)"
    assert "avoidable bias 1 pp = train 1% - human 0%" in text
    assert "variance       10 pp = dev 11% - train 1%  <- high" in text
    assert "attack the variance first" in text and "- more training data" in text
    calm = str(diagnose(0.15, 0.16, 0.14))
    assert "nothing high" in calm and "<- high" not in calm
    assert "note: training error is below" in str(diagnose(0.003, 0.004, 0.005))


def test_frozen_and_hashable():
    d = diagnose(0.01, 0.11)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.high_bias = True
    assert hash(d) == hash(diagnose(0.01, 0.11))
    assert isinstance(d, Diagnosis)


def test_accepts_numpy_and_jax_scalars():
    d = diagnose(np.float32(0.25), jnp.asarray(0.5), np.array(0.0))
    assert isinstance(d.train_error, float) and d.train_error == 0.25 and d.dev_error == 0.5
    assert d.verdict == "high bias and high variance"


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (
            (11, 0.2),
            {},
            ValueError,
            r"train_error must be an error rate in \[0, 1\], got 11.0 "
            r"\(pass fractions: 0.11 for 11%\)",
        ),
        ((0.1, -0.01), {}, ValueError, r"dev_error must be an error rate in \[0, 1\], got -0.01"),
        ((0.1, 0.2, float("nan")), {}, ValueError, r"human_error must be .* got nan"),
        ((0.1, float("inf")), {}, ValueError, r"dev_error must be .* got inf"),
        ((0.1, 0.2), {"threshold": -0.1}, ValueError, r"threshold must be a gap in \[0, 1\]"),
        ((0.1, 0.2), {"threshold": 1.0}, ValueError, r"threshold must be in \[0, 1\)"),
        ((True, 0.2), {}, TypeError, r"train_error must be a real number, got True"),
        ((None, 0.2), {}, TypeError, r"train_error must be a real number, got None"),
        (("0.1", 0.2), {}, TypeError, r"train_error must be a real scalar, got '0.1'"),
        ((0.1, np.array([0.2, 0.3])), {}, TypeError, r"dev_error must be a real scalar"),
    ],
)
def test_bad_inputs(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        diagnose(*args, **kwargs)


def test_bad_accuracies_name_the_argument():
    with pytest.raises(ValueError, match=r"dev_acc must be an accuracy in \[0, 1\], got 89.0"):
        diagnose_accuracy(0.99, 89)
    with pytest.raises(ValueError, match=r"human_acc must be an accuracy"):
        diagnose_accuracy(0.99, 0.89, human_acc=1.5)


fractions = st.floats(0.0, 1.0, allow_nan=False)


@given(fractions, fractions, fractions, st.floats(0.0, 0.5, allow_nan=False))
def test_laws(train, dev, human, threshold):
    d = diagnose(train, dev, human, threshold=threshold)
    assert d.avoidable_bias == train - human and d.variance == dev - train
    assert d.avoidable_bias + d.variance == pytest.approx(dev - human, abs=1e-12)
    assert d.high_bias == (d.avoidable_bias > threshold + 1e-9)
    assert d.high_variance == (d.variance > threshold + 1e-9)
    assert d.verdict == VERDICTS[d.high_bias, d.high_variance]
    assert d.focus == ("bias" if d.avoidable_bias >= d.variance - 1e-9 else "variance")
    assert (d.recipe == ()) == (not d.high_bias and not d.high_variance)
    assert len(set(d.recipe)) == len(d.recipe)
    if d.high_bias:
        assert set(BIAS_RECIPE) <= set(d.recipe)
    if d.high_variance:
        assert set(VARIANCE_RECIPE) <= set(d.recipe)
    if d.recipe:
        assert d.recipe[:3] == (BIAS_RECIPE if d.focus == "bias" else VARIANCE_RECIPE)
    assert d.verdict in str(d)
    acc = diagnose_accuracy(1 - train, 1 - dev, 1 - human, threshold=threshold)
    assert acc.avoidable_bias == pytest.approx(d.avoidable_bias, abs=1e-12)
