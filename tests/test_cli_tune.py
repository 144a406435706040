"""End-to-end tests of ``fjdl tune``."""

import re

import pytest

from fjdl import cli


def table_rows(out):
    """The ranked table's data rows: (rank, round, learning_rate, ..., dev_accuracy)."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.split()[:2] == ["rank", "round"])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip() or not line.split()[0].isdigit():
            break
        rows.append([float(v) for v in line.split()])
    return lines[start].split(), rows


def test_tune_with_defaults_prints_ranked_table_best_and_plot(tmp_path, capsys):
    plot = tmp_path / "search.png"
    # the defaults, with fewer trials and epochs to keep the test short
    args = ["tune", "--trials", "6", "--epochs", "10", "--plot", str(plot), "--no-progress"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    header, rows = table_rows(out)
    assert header == [
        "rank",
        "round",
        "learning_rate",
        "beta1",
        "train_cost",
        "train_accuracy",
        "dev_cost",
        "dev_accuracy",
    ]
    assert len(rows) == 10 and [r[0] for r in rows] == list(range(1, 11))
    dev_acc = [r[-1] for r in rows]
    assert dev_acc == sorted(dev_acc, reverse=True)  # ranked by dev accuracy
    assert {r[1] for r in rows} <= {1, 2}
    assert all(1e-4 <= r[2] <= 1 and 0.9 <= r[3] <= 0.999 for r in rows)
    assert (
        "12 trials" in out
        and "moons" in out
        and "adam" in out
        and "round 2 searched learning_rate in [" in out
    )
    best = re.search(r"best: learning_rate=([\d.e-]+), beta1=([\d.]+).*dev accuracy ([\d.]+)%", out)
    assert best is not None
    assert float(best.group(1)) == pytest.approx(rows[0][2], rel=1e-3)
    assert float(best.group(3)) / 100 == pytest.approx(rows[0][-1], abs=1e-4)
    assert str(plot) in out and plot.stat().st_size > 10_000  # a real PNG


def test_tune_with_flags(tmp_path, capsys):
    plot = tmp_path / "gd.png"
    args = [
        "tune",
        "--dataset",
        "circles",
        "--n-samples",
        "200",
        "--trials",
        "5",
        "--rounds",
        "1",
        "--epochs",
        "10",
        "--optimizer",
        "gd",
        "--hidden",
        "6",
        "--activation",
        "tanh",
        "--lr-min",
        "0.01",
        "--lr-max",
        "0.5",
        "--full-batch",
        "--top",
        "3",
        "--seed",
        "4",
        "--plot",
        str(plot),
        "--no-progress",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "circles" in out and "layers [2, 6, 1]" in out and "gd, full batch" in out
    header, rows = table_rows(out)
    assert "beta1" not in header and "beta" not in header and len(rows) == 3
    assert all(0.01 <= r[2] <= 0.5 and r[1] == 1 for r in rows)
    assert "round 2" not in out and plot.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["tune", "--trials", "0"], "--trials"),
        (["tune", "--rounds", "x"], "--rounds"),
        (["tune", "--epochs", "-3"], "--epochs"),
        (["tune", "--optimizer", "sgd"], "--optimizer"),
        (["tune", "--dataset", "mnist"], "--dataset"),
        (["tune", "--hidden", "4,b"], "--hidden"),
        (["tune", "--lr-min", "0"], "--lr-min"),
        (["tune", "--lr-max", "inf"], "--lr-max"),
        (["tune", "--lr-min", "0.5", "--lr-max", "0.1"], "--lr-min must be <"),
        (["tune", "--top", "0"], "--top"),
        (["tune", "--batch-size", "-1"], "--batch-size"),
        (["tune", "--n-samples", "4"], "--n-samples"),
        (["tune", "--seed", "1.5"], "--seed"),
        (["tune", "--full-batch", "--batch-size", "8"], "--batch-size has no effect"),
        (["tune", "--dataset", "digits", "--n-samples", "50"], "--n-samples has no effect"),
        (["tune", "--no-plot", "--plot", "x.png"], "--plot has no effect"),
        (["tune", "--plot", "/nonexistent/dir/x.png"], "--plot"),
        (["tune", "--trial", "3"], "unrecognized arguments: --trial"),
        (["tune", "--bogus"], "unrecognized"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(args, needle, capsys):
    """Refused before any work: nothing on stdout, one line on stderr naming the flag."""
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert captured.out == ""


def test_a_batch_larger_than_the_training_set_is_reported_as_full_batch(capsys):
    args = ["tune", "--n-samples", "100", "--batch-size", "1000", "--trials", "2", "--rounds", "1"]
    assert cli.main([*args, "--epochs", "2", "--hidden", "3", "--no-plot", "--no-progress"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "adam, full batch" in header and "1000" not in header


def test_a_search_whose_trials_all_diverge_says_so_and_exits_1(capsys):
    args = ["tune", "--lr-min", "1e8", "--lr-max", "1e9", "--optimizer", "gd", "--full-batch"]
    args += ["--trials", "2", "--rounds", "1", "--epochs", "5", "--hidden", "8,8,8,8"]
    assert cli.main([*args, "--n-samples", "100", "--no-plot", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1  # the header, no table and no "best"
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "all 2 trials diverged" in err and "--lr-max" in err
