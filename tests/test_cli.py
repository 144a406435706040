import os
import subprocess
import sys

import pytest

from fjdl import cli


def test_train_with_defaults_prints_table_diagnosis_and_plot(tmp_path, capsys):
    plot = tmp_path / "run.png"
    assert cli.main(["train", "--plot", str(plot), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for word in ("train", "dev", "test", "accuracy", "diagnosis", str(plot)):
        assert word in out
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
        (["train", "--lr", "-1", "--no-plot"], "learning_rate"),
        (["train", "--keep-prob", "1.5", "--no-plot"], "keep_prob"),
        (["train", "--bogus"], "unrecognized"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = cli.main(args)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


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


def test_gradcheck_bad_epsilon_is_a_usage_error(capsys):
    assert cli.main(["gradcheck", "--epsilon", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "epsilon" in err and len(err.splitlines()) == 1
