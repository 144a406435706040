import argparse
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

import fjdl
from fjdl import cli

SMALL = ["--n-samples", "100", "--hidden", "4", "--no-progress"]  # a quick run


def usage_error(args, capsys):
    """Run ``fjdl args``, which must be refused before any work: exit 2, one line on stderr, no
    traceback, nothing on stdout. Returns the line."""
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert captured.out == ""
    return err


def test_train_with_defaults_prints_table_diagnosis_and_plot(tmp_path, capsys):
    plot = tmp_path / "run.png"
    assert cli.main(["train", "--plot", str(plot), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for word in ("train", "dev", "test", "accuracy", "diagnosis", str(plot)):
        assert word in out
    assert "mini-batches of 64" in out
    assert plot.stat().st_size > 10_000  # a real PNG, not an empty file


def test_train_with_flags(tmp_path, capsys):
    args = [
        "train",
        "--dataset",
        "circles",
        "--hidden",
        "10,5",
        "--optimizer",
        "momentum",
        "--lr",
        "0.1",
        "--beta",
        "0.95",
        "--decay",
        "inverse_time",
        "--decay-rate",
        "0.5",
        "--decay-interval",
        "10",
        "--batch-size",
        "32",
        "--epochs",
        "30",
        "--lambd",
        "0.1",
        "--keep-prob",
        "0.9",
        "--batchnorm",
        "--init",
        "xavier",
        "--seed",
        "3",
        "--patience",
        "5",
        "--no-plot",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "circles" in out and "layers [2, 10, 5, 1]" in out and "momentum" in out


def test_train_softmax_dataset(capsys):
    assert cli.main(["train", "--dataset", "spirals", "--epochs", "20", "--no-plot"]) == 0
    assert "layers [2, 16, 8, 3]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--epochs", "x"], "--epochs"),
        (["train", "--hidden", "3,a"], "--hidden"),
        (["train", "--optimizer", "sgd"], "--optimizer"),
        (["train", "--dataset", "mnist"], "--dataset"),
        (["train", "--bogus"], "unrecognized"),
        (["gradcheck", "--sizes", "4"], "--sizes"),
        (["gradcheck", "--examples", "0"], "--examples"),
        (["gradcheck", "--lambd", "-1"], "--lambd"),
        (["gradcheck", "--epsilon", "0"], "--epsilon"),
        (["gradcheck", "--epsilon", "inf"], "--epsilon"),
        (["gradcheck", "--seed", "x"], "--seed"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(args, needle, capsys):
    assert needle in usage_error(args, capsys)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--beta", "1"),
        ("--beta1", "-0.1"),
        ("--beta2", "1"),
        ("--epsilon", "0"),
        ("--decay-rate", "-1"),
        ("--decay-interval", "0"),
        ("--decay-base", "0"),
        ("--decay-base", "1.5"),
        ("--keep-prob", "0"),
        ("--keep-prob", "1.5"),
        ("--lambd", "-1"),
        ("--l1", "-0.5"),
        ("--min-delta", "-1"),
        ("--human-error", "2"),
        ("--human-error", "-0.1"),
        ("--noise", "-1"),
        ("--n-samples", "4"),  # the 60/20/20 split would leave no dev example
        ("--patience", "0"),
        ("--batch-size", "0"),
        ("--seed", str(2**64)),
    ],
)
def test_every_numeric_train_flag_is_checked_before_any_work(flag, value, capsys):
    """Refused before the header line and before training, naming the flag (not an API argument
    such as ``keep_probs[0]`` or ``base``)."""
    err = usage_error(["train", flag, value], capsys)
    assert f"argument {flag}:" in err and repr(value) in err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--beta", "0.5"], "--beta has no effect with --optimizer adam"),
        (["--optimizer", "momentum", "--beta1", "0.8"], "--beta1 has no effect"),
        (["--optimizer", "rmsprop", "--beta2=0.99"], "--beta2 has no effect"),
        (["--optimizer", "gd", "--epsilon", "1e-6"], "--epsilon has no effect"),
        (["--decay-rate", "0.5"], "--decay-rate has no effect without --decay inverse_time"),
        (["--decay", "exponential", "--decay-interval", "3"], "--decay-interval has no effect"),
        (["--decay", "inverse_time", "--decay-base", "0.5"], "--decay-base has no effect"),
        (["--min-delta", "0.01"], "--min-delta has no effect without --patience"),
        (["--dataset", "digits", "--noise", "0.1"], "--noise has no effect"),
        (["--dataset", "digits", "--n-samples", "100"], "--n-samples has no effect"),
        (["--hidden", "none", "--keep-prob", "0.5"], "--keep-prob has no effect"),
        (["--hidden", "none", "--batchnorm"], "--batchnorm has no effect"),
        (["--full-batch", "--batch-size", "32"], "--batch-size has no effect with --full-batch"),
        (["--no-plot", "--plot", "x.png"], "--plot has no effect with --no-plot"),
    ],
)
def test_a_flag_that_other_flags_make_pointless_is_refused(args, needle, capsys):
    assert needle in usage_error(["train", *args], capsys)


@pytest.mark.parametrize("command", ["train", "tune"])
def test_an_unwritable_plot_is_refused_before_any_work(command, tmp_path, capsys):
    missing = "/nonexistent/dir/x.png"
    err = usage_error([command, "--plot", missing], capsys)
    assert "--plot" in err and "/nonexistent/dir does not exist" in err
    err = usage_error([command, "--plot", str(tmp_path)], capsys)
    assert "--plot" in err and "is a directory" in err
    err = usage_error([command, "--plot", str(tmp_path / "x.nosuchformat")], capsys)
    assert "--plot" in err and "cannot write .nosuchformat files" in err and ".png" in err


def test_a_plot_that_fails_to_write_after_training_is_one_line_and_exit_1(
    tmp_path, monkeypatch, capsys
):
    from fjdl import plots

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "training_report", disk_full)
    plot = tmp_path / "run.png"
    assert cli.main(["train", "--epochs", "2", *SMALL, "--plot", str(plot)]) == 1
    captured = capsys.readouterr()
    assert "diagnosis" in captured.out  # the results came before the plot
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"--plot: could not write {plot}: No space left on device" in err


@pytest.mark.parametrize(
    "args, unrecognized",
    [
        (["train", "--epoch", "5"], "--epoch"),
        (["train", "--lr=0.1", "--no-pl"], "--no-pl"),
        (["gradcheck", "--example", "3"], "--example"),
        (["tune", "--trial", "3"], "--trial"),
    ],
)
def test_flags_are_never_abbreviated(args, unrecognized, capsys):
    err = usage_error(args, capsys)
    assert f"unrecognized arguments: {unrecognized}" in err


def test_no_command_is_a_usage_error(capsys):
    assert "choose a command" in usage_error([], capsys)


def test_a_diverged_run_says_so_and_prints_no_results(capsys):
    args = ["train", "--lr", "1e8", "--optimizer", "gd", "--full-batch", "--epochs", "30"]
    args += ["--n-samples", "100", "--hidden", "8,8,8,8", "--no-plot", "--no-progress"]
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and captured.out.startswith("fjdl train:")  # the header
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "diverged" in err and "--lr 1e+08 is too large" in err
    found = re.search(r"diverged in epoch (\d+) of 30 .* the last finite epoch is (\d+), cost", err)
    assert found is not None, err
    assert int(found.group(2)) == int(found.group(1)) - 1


def test_a_batch_larger_than_the_training_set_is_reported_as_full_batch(capsys):
    args = ["train", "--batch-size", "100000", "--epochs", "2", *SMALL, "--no-plot"]
    assert cli.main(args) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "full batch" in header and "100000" not in header


def test_help_shows_the_defaults_and_every_flag_has_help(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 0.01)" in out and "(default: 16,8)" in out and "(default: adam)" in out
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(commands.choices) == ["gradcheck", "predict", "train", "tune"]
    for name, sub in commands.choices.items():
        assert sub.allow_abbrev is False
        for action in sub._actions:
            assert action.help, f"fjdl {name} {action.option_strings} has no help"


def test_version(capsys):
    assert fjdl.__version__ == importlib.metadata.version("fjdl")
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"fjdl {fjdl.__version__}\n"


def test_a_closed_stdout_ends_quietly():
    """``fjdl train | head -1``: the reader goes away after the first line."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fjdl", "train", "--epochs", "2", *SMALL, "--no-plot"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # before the results are printed: training takes a while
    _, err = proc.communicate(timeout=300)
    assert first.startswith("fjdl train: moons")
    assert proc.returncode == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_console_script_runs_as_a_module():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "fjdl", "train", "--epochs", "5", "--no-plot"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fjdl", "train", "--batch-size", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_gradcheck_default_run_passes_and_prints_the_verdict(capsys):
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "layers [4, 5, 3, 1], float64" in out
    assert "great" in out and "relative difference" in out and "worst leaves" in out


def test_gradcheck_planted_bug_exits_1_and_names_the_leaf(capsys):
    assert cli.main(["gradcheck", "--plant-bug", "--activation", "tanh"]) == 1
    out = capsys.readouterr().out
    assert "bug" in out
    worst_leaves = out.split("worst leaves")[1].splitlines()
    assert "layer 3 W" in worst_leaves[1]  # --plant-bug doubles the last layer's dW


def test_gradcheck_float32_warns_and_batchnorm_checks(capsys):
    cli.main(["gradcheck", "--float32", "--activation", "tanh"])
    out = capsys.readouterr().out
    assert "float32" in out and "use dtype=jnp.float64" in out
    args = [
        "gradcheck",
        "--batchnorm",
        "--activation",
        "tanh",
        "--sizes",
        "3,6,4,1",
        "--lambd",
        "0.5",
    ]
    assert cli.main(args) == 0
    assert "great" in capsys.readouterr().out


def test_gradcheck_of_a_softmax_output(capsys):
    assert cli.main(["gradcheck", "--sizes", "4,5,3,2", "--activation", "tanh"]) == 0
    out = capsys.readouterr().out
    assert "layers [4, 5, 3, 2] (softmax output over 2 classes)" in out and "great" in out
    assert cli.main(["gradcheck", "--sizes", "3,4,3", "--plant-bug", "--lambd", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "softmax output over 3 classes" in out and "bug" in out
