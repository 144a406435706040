"""``fjdl train --data FILE [--save PATH]`` and ``fjdl predict``: the CLI on the user's own data.

Each model is trained once per module (a few epochs on 60 examples) and shared by the tests that
predict with it; the refusals of bad files train nothing and run in milliseconds.
"""

import contextlib
import csv
import io
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fjdl import checkpoint, cli, data, nn, tabular, train

QUICK = [
    "--epochs",
    "30",
    "--lr",
    "0.1",
    "--hidden",
    "4",
    "--no-plot",
    "--no-progress",
    "--seed",
    "3",
]
SPECIES = ("cat", "dog", "emu")


def _run(args):
    """``fjdl args`` in-process: ``(status, stdout, stderr)`` (also usable from a module fixture)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def refused(args, *needles):
    """``fjdl args`` must be refused before any work: exit 2, one line on stderr with every needle,
    no traceback, nothing on stdout (no header: nothing was trained). Returns the line."""
    status, out, err = _run(args)
    err = err.strip()
    assert status == 2, (status, out, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert out == ""
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def three_species(m=60, seed=0):
    """Features (m, 3) and names of 3 classes that a small network separates."""
    rng = np.random.default_rng(seed)
    y = np.arange(m) % 3
    X = rng.normal(size=(m, 3)) * 0.5 + np.eye(3)[y] * 3 + np.array([10.0, -5.0, 100.0])
    return X.round(4), np.array(SPECIES)[y]


def read_predictions(text):
    rows = list(csv.reader(io.StringIO(text)))
    return (
        rows[0],
        [r[0] for r in rows[1:]],
        np.array([[float(x) for x in r[1:]] for r in rows[1:]]),
    )


def expected_predictions(ckpt, X_raw):
    """What ``fjdl predict`` must give: ``fjdl.train.predict`` of the loaded model on the
    standardized data, and the probabilities of its output."""
    config, params, state = checkpoint.load_model(ckpt)
    record = checkpoint.read_metadata(ckpt)["fjdl_train"]
    stats = data.Standardizer(
        jnp.asarray(record["mean"], jnp.float32), jnp.asarray(record["std"], jnp.float32)
    )
    X = data.standardize(jnp.asarray(X_raw, jnp.float32), stats)
    predicted = np.asarray(train.predict(config, params, state, X))
    logits, _ = config.apply(params, state, X)
    if config.output == "sigmoid":
        p = np.asarray(nn.sigmoid(logits.reshape(-1)), np.float64)
        probabilities = np.stack([1 - p, p], axis=1)
    else:
        probabilities = np.asarray(nn.softmax(logits), np.float64)
    return [record["classes"][k] for k in predicted], probabilities, record


def train_split(path, seed, target=None):
    """The training part of ``path`` as ``fjdl train --seed seed`` splits it."""
    table = tabular.read_table(path, target=target)
    Y = tabular.encode_labels(table, tabular.classes_of(table))
    split_key = jax.random.split(jax.random.key(seed), 3)[1]
    fractions = tabular.split_fractions(table.X.shape[0])
    return data.split(split_key, table.X, Y, fractions)[0]


# --------------------------------------------------------------------------------------------------
# Models trained once for the module


@pytest.fixture(scope="module")
def species(tmp_path_factory):
    """A CSV with 3 string classes, the target not last (``--target``), trained and saved."""
    d = tmp_path_factory.mktemp("species")
    X, y = three_species()
    rows = [[f"{a}", label, f"{b}", f"{c}"] for (a, b, c), label in zip(X, y)]
    path = write_csv(d / "zoo.csv", ["length", "species", "weight", "age"], rows)
    ckpt = d / "zoo_model.npz"
    status, out, err = _run(
        ["train", "--data", path, "--target", "species", "--save", ckpt, *QUICK]
    )
    assert status == 0, err
    return {"dir": d, "csv": path, "ckpt": ckpt, "X": X, "y": y, "out": out}


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """An npz with integer labels 3 and 7 (two classes: a sigmoid output), trained and saved."""
    d = tmp_path_factory.mktemp("binary")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 2)) + np.array([5.0, -1.0])
    y = np.where(X[:, 0] + X[:, 1] > 4.0, 7, 3)
    path = d / "points.npz"
    np.savez(path, X=X, y=y)
    ckpt = d / "points_model.npz"
    status, out, err = _run(["train", "--data", path, "--save", ckpt, *QUICK])
    assert status == 0, err
    return {"dir": d, "npz": path, "ckpt": ckpt, "X": X, "y": y, "out": out}


# --------------------------------------------------------------------------------------------------
# fjdl train --data, --save


def test_train_on_a_csv_prints_the_split_and_saves_what_predict_needs(species):
    out = species["out"]
    header, described = out.splitlines()[:2]
    assert header.startswith("fjdl train: zoo.csv (36 train / 12 dev / 12 test), layers [3, 4, 3]")
    assert "60 examples, 3 features, target 'species' with 3 classes (cat, dog, emu)" in described
    assert "split 60/20/20" in described
    assert "accuracy" in out and f"model saved to {species['ckpt']}" in out
    config, params, _ = checkpoint.load_model(species["ckpt"])
    assert config.sizes == (3, 4, 3) and config.output == "softmax"
    record = checkpoint.read_metadata(species["ckpt"])["fjdl_train"]
    assert record["classes"] == list(SPECIES)
    assert record["target"] == "species" and record["features"] == ["length", "weight", "age"]
    assert record["source"] == "zoo.csv" and record["split"] == [0.6, 0.2, 0.2]
    # The standardization is the training part's: the same split, the same statistics.
    X_train, _ = train_split(species["csv"], seed=3, target="species")
    assert X_train.shape == (36, 3)
    stats = data.fit_standardizer(X_train)
    np.testing.assert_array_equal(np.float32(record["mean"]), np.asarray(stats.mean))
    np.testing.assert_array_equal(np.float32(record["std"]), np.asarray(stats.std))


def test_train_on_an_npz_with_two_classes_uses_a_sigmoid_output(binary):
    header, described = binary["out"].splitlines()[:2]
    assert header.startswith(
        "fjdl train: points.npz (36 train / 12 dev / 12 test), layers [2, 4, 1]"
    )
    assert "target 'y' with 2 classes (3, 7)" in described and "split 60/20/20" in described
    config, _, _ = checkpoint.load_model(binary["ckpt"])
    assert config.output == "sigmoid" and config.sizes == (2, 4, 1)
    record = checkpoint.read_metadata(binary["ckpt"])["fjdl_train"]
    assert record["classes"] == ["3", "7"] and record["features"] is None
    X_train, _ = train_split(binary["npz"], seed=3)
    np.testing.assert_array_equal(
        np.float32(record["mean"]), np.asarray(data.fit_standardizer(X_train).mean)
    )


def test_train_on_a_csv_with_two_string_classes(tmp_path):
    """Binary string labels in the default (last) column; the classes are sorted names."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 2))
    labels = np.where(X[:, 0] > 0, "yes", "no")
    rows = [[f"{a:.4f}", f"{b:.4f}", label] for (a, b), label in zip(X, labels)]
    path = write_csv(tmp_path / "answers.csv", ["p", "q", "answer"], rows)
    ckpt = tmp_path / "m.npz"
    status, out, err = _run(["train", "--data", path, "--save", ckpt, *QUICK, "--epochs", "3"])
    assert status == 0, err
    assert "layers [2, 4, 1]" in out and "target 'answer' with 2 classes (no, yes)" in out
    record = checkpoint.read_metadata(ckpt)["fjdl_train"]
    assert record["classes"] == ["no", "yes"] and record["features"] == ["p", "q"]


def test_save_with_a_built_in_dataset_then_predict(tmp_path):
    ckpt = tmp_path / "moons.npz"
    args = ["train", "--dataset", "moons", "--n-samples", "100", "--save", ckpt, *QUICK]
    status, out, err = _run(args)
    assert status == 0, err
    record = checkpoint.read_metadata(ckpt)["fjdl_train"]
    assert record["source"] == "moons" and record["classes"] == ["0", "1"]
    X, Y = data.make_moons(jax.random.key(5), 30)
    path = tmp_path / "new.npz"
    np.savez(path, X=np.asarray(X), y=np.asarray(Y))
    status, out, err = _run(["predict", "--checkpoint", ckpt, "--data", path])
    assert status == 0, err
    _, names, _ = read_predictions(out)
    expected, _, _ = expected_predictions(ckpt, X)
    assert names == expected
    correct = sum(a == str(b) for a, b in zip(names, np.asarray(Y).tolist()))
    assert f"accuracy {correct / 30:.2%} ({correct} of 30)" in err


# --------------------------------------------------------------------------------------------------
# fjdl predict


def test_predict_to_a_file_matches_train_predict_and_prints_the_accuracy(species):
    out_path = species["dir"] / "preds.csv"
    args = ["predict", "--checkpoint", species["ckpt"], "--data", species["csv"], "--out", out_path]
    status, out, err = _run(args)
    assert status == 0 and err == ""
    header, names, probabilities = read_predictions(out_path.read_text())
    assert header == ["species", "P(cat)", "P(dog)", "P(emu)"]
    expected, expected_p, _ = expected_predictions(species["ckpt"], species["X"])
    assert names == expected and len(names) == 60
    np.testing.assert_allclose(probabilities, expected_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    correct = sum(a == b for a, b in zip(names, species["y"]))
    assert out.splitlines() == [
        f"fjdl predict: 60 predictions written to {out_path}",
        f"accuracy {correct / 60:.2%} ({correct} of 60) against the target 'species' of "
        f"{species['csv']}",
    ]
    assert correct >= 50  # the model learned something: 3 well-separated classes


def test_predict_to_stdout_writes_only_csv_and_the_accuracy_to_stderr(species):
    args = ["predict", "--checkpoint", species["ckpt"], "--data", species["csv"]]
    status, out, err = _run(args)
    assert status == 0
    _, names, _ = read_predictions(out)
    assert names == expected_predictions(species["ckpt"], species["X"])[0]
    assert err.startswith("accuracy ") and len(err.splitlines()) == 1


def test_predict_without_labels_and_with_columns_in_another_order(species):
    """No target column: predictions, no accuracy; the features are matched by name."""
    X = species["X"][:7]
    rows = [[f"{age}", f"{length}", f"{weight}"] for length, weight, age in X]
    path = write_csv(species["dir"] / "unlabelled.csv", ["age", "length", "weight"], rows)
    status, out, err = _run(["predict", "--checkpoint", species["ckpt"], "--data", path])
    assert status == 0 and err == ""
    _, names, _ = read_predictions(out)
    assert names == expected_predictions(species["ckpt"], X)[0]


def test_predict_binary_gives_both_probabilities(binary):
    path = binary["dir"] / "X_only.npz"
    np.savez(path, X=binary["X"])
    status, out, err = _run(["predict", "--checkpoint", binary["ckpt"], "--data", path])
    assert status == 0 and err == ""  # no y: no accuracy
    header, names, probabilities = read_predictions(out)
    assert header == ["y", "P(3)", "P(7)"]
    expected, expected_p, _ = expected_predictions(binary["ckpt"], binary["X"])
    assert names == expected and set(names) <= {"3", "7"}
    np.testing.assert_allclose(probabilities, expected_p, rtol=1e-5, atol=1e-6)
    assert all((p[1] > 0.5) == (n == "7") for n, p in zip(names, probabilities))
    status, _, err = _run(["predict", "--checkpoint", binary["ckpt"], "--data", binary["npz"]])
    correct = sum(a == str(b) for a, b in zip(names, binary["y"].tolist()))
    assert status == 0 and f"accuracy {correct / 60:.2%} ({correct} of 60)" in err


# --------------------------------------------------------------------------------------------------
# Bad --data files for fjdl train: one line, exit 2, nothing trained


def _bad_csv(name, text):
    def make(d):
        path = d / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return make


def _bad_npz(name, **arrays):
    def make(d):
        path = d / name
        np.savez(path, **arrays)
        return path

    return make


GOOD_ROWS = "".join(f"{i},{i % 2 + 0.5},{'ab'[i % 2]}\n" for i in range(10))

BAD_FILES = [
    ("missing", lambda d: d / "nope.csv", ["nope.csv: no such file"]),
    ("extension", _bad_csv("data.xlsx", "a,b\n1,2\n"), ["unsupported file type", "'.xlsx'"]),
    ("directory", lambda d: (d / "dir.csv").mkdir() or d / "dir.csv", ["is a directory"]),
    ("not utf-8", _bad_csv("bin.csv", b"a,b\n\xff\xfe\x00,1\n"), ["not a UTF-8 text file"]),
    ("empty", _bad_csv("empty.csv", ""), ["the file is empty"]),
    ("header only", _bad_csv("head.csv", "a,b,y\n"), ["no data rows"]),
    ("no header", _bad_csv("nohead.csv", "1,2,0\n3,4,1\n"), ["needs a header row"]),
    (
        "non-numeric",
        _bad_csv("color.csv", "size,color,y\n" + "1,red,a\n2,blue,b\n" * 5),
        ["column 'color' is not numeric", "'red' at row 1 (line 2)"],
    ),
    (
        "empty cell",
        _bad_csv("hole.csv", "a,b,y\n" + GOOD_ROWS + "3,,a\n"),
        ["column 'b' has an empty cell at row 11 (line 12)"],
    ),
    (
        "NaN",
        _bad_csv("nan.csv", "a,b,y\n1,2,a\nNaN,3,b\n" + GOOD_ROWS),
        ["column 'a' has a missing value ('NaN') at row 2 (line 3)"],
    ),
    (
        "NA",
        _bad_csv("na.csv", "a,b,y\n" + GOOD_ROWS + "1,NA,b\n"),
        ["column 'b' has a missing value ('NA') at row 11"],
    ),
    (
        "inf",
        _bad_csv("inf.csv", "a,b,y\n" + GOOD_ROWS + "inf,1,b\n"),
        ["column 'a' has a value that is not finite ('inf') at row 11"],
    ),
    (
        "empty label",
        _bad_csv("nolabel.csv", "a,b,y\n" + GOOD_ROWS + "1,2,\n"),
        ["the target 'y' has an empty cell at row 11"],
    ),
    (
        "ragged",
        _bad_csv("ragged.csv", "a,b,y\n" + GOOD_ROWS + "1,2\n"),
        ["line 12 has 2 fields, the header has 3"],
    ),
    (
        "single class",
        _bad_csv("one.csv", "a,b,y\n" + "1,2,cat\n3,4,cat\n" * 5),
        ["the target 'y' holds a single class, 'cat'"],
    ),
    (
        "measurements as target",
        _bad_csv("price.csv", "a,price\n" + "1,3\n2,4.5\n" * 5),
        ["the target 'price' holds '4.5' at row 2 (line 3), not an integer"],
    ),
    (
        "duplicate column",
        _bad_csv("dup.csv", "a,a,y\n" + GOOD_ROWS),
        ["the header names column 'a' twice"],
    ),
    ("only a target", _bad_csv("lonely.csv", "y\na\nb\n"), ["no feature columns"]),
    (
        "too few rows",
        _bad_csv("four.csv", "a,b,y\n1,2,a\n3,4,b\n5,6,a\n7,8,b\n"),
        ["4 examples are too few to split 60/20/20", "at least 5"],
    ),
    ("npz not a zip", _bad_csv("fake.npz", "hello"), ["not a readable .npz archive"]),
    ("npz empty", _bad_csv("void.npz", b""), ["the file is empty"]),
    (
        "npz strings in X",
        _bad_npz("sx.npz", X=np.array([["a", "b"]] * 6), y=np.arange(6) % 2),
        ["X must hold numbers"],
    ),
    (
        "npz without X",
        _bad_npz("noX.npz", features=np.zeros((5, 2)), y=np.arange(5) % 2),
        ["no array 'X'", "'features', 'y'"],
    ),
    ("npz without y", _bad_npz("noy.npz", X=np.zeros((5, 2))), ["no array 'y'"]),
    (
        "npz lengths",
        _bad_npz("len.npz", X=np.zeros((6, 2)), y=np.arange(5) % 2),
        ["y must have shape (m,) with m = 6 rows", "got (5,)"],
    ),
    (
        "npz NaN",
        _bad_npz("nan.npz", X=np.where(np.eye(6, 2) > 0, np.nan, 1.0), y=np.arange(6) % 2),
        ["X[0, 0]", "is nan"],
    ),
    (
        "npz 3-D",
        _bad_npz("img.npz", X=np.zeros((6, 2, 2)), y=np.arange(6) % 2),
        ["X must have shape (m, n_features)", "(6, 2, 2)"],
    ),
    (
        "npz single class",
        _bad_npz("same.npz", X=np.zeros((6, 2)), y=np.ones(6, int)),
        ["holds a single class, '1'"],
    ),
    (
        "npz objects",
        _bad_npz("obj.npz", X=np.zeros((6, 2)), y=np.array([{}, 1, 2, 3, 4, 5], dtype=object)),
        ["holds Python objects (pickled), never loaded"],
    ),
]


@pytest.mark.parametrize("make, needles", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_data_file_is_one_line_and_exit_2(make, needles, tmp_path):
    path = make(tmp_path)
    refused(["train", "--data", path, *QUICK], f"fjdl train: error: --data {path}", *needles)


def test_a_target_that_is_not_a_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a", "b", "label"], [[1, 2, "x"], [3, 4, "y"]] * 5)
    refused(
        ["train", "--data", path, "--target", "species", *QUICK],
        "--data",
        "no column 'species'; the columns are 'a', 'b', 'label'",
    )


# --------------------------------------------------------------------------------------------------
# Flags that contradict each other, refused before any work


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--dataset", "moons"], ["--data and --dataset cannot be used together"]),
        (["--n-samples", "50"], ["--n-samples has no effect with --data"]),
        (["--noise", "0.1"], ["--noise has no effect with --data"]),
    ],
)
def test_data_flag_conflicts(args, needles, tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a", "y"], [[1, 0], [2, 1]] * 5)
    refused(["train", "--data", path, *args, *QUICK], *needles)


def test_target_needs_a_csv_and_save_a_writable_place(tmp_path):
    refused(["train", "--target", "y", *QUICK], "--target has no effect without --data")
    npz = tmp_path / "d.npz"
    np.savez(npz, X=np.zeros((6, 1)), y=np.arange(6) % 2)
    refused(
        ["train", "--data", npz, "--target", "y", *QUICK], "--target has no effect with an .npz"
    )
    refused(["train", "--save", "/nonexistent/dir/m.npz", *QUICK], "--save", "does not exist")
    refused(["train", "--save", tmp_path, *QUICK], f"--save {tmp_path} is a directory")
    refused(["train", "--data", npz, "--save", npz, *QUICK], "is the --data file")


# --------------------------------------------------------------------------------------------------
# Bad --checkpoint and --data files for fjdl predict


def test_predict_refuses_checkpoints_that_are_not_models_saved_by_fjdl_train(species, tmp_path):
    csv_path = species["csv"]

    def predict_with(ckpt, *needles):
        refused(["predict", "--checkpoint", ckpt, "--data", csv_path], "--checkpoint", *needles)

    predict_with(tmp_path / "nope.npz", "nope.npz: no such file")
    predict_with(csv_path, "is not a valid fjdl checkpoint", "not an .npz (zip) archive")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, W=np.zeros(3))
    predict_with(foreign, "is not a valid fjdl checkpoint", "not written by fjdl?")
    state_only = tmp_path / "state.npz"
    checkpoint.save(state_only, {"W": jnp.zeros((2, 2))}, metadata={"epoch": 3})
    predict_with(state_only, "not a model saved by fjdl train --save")
    config, params, state = checkpoint.load_model(species["ckpt"])
    bare_model = tmp_path / "bare.npz"
    checkpoint.save_model(bare_model, config, params, state)
    predict_with(bare_model, "not a model saved by fjdl train --save")
    damaged = tmp_path / "damaged.npz"
    record = checkpoint.read_metadata(species["ckpt"])["fjdl_train"]
    checkpoint.save_model(
        damaged, config, params, state, metadata={"fjdl_train": {**record, "mean": [0.0]}}
    )
    predict_with(damaged, "record is damaged: mean is not a list of 3 numbers")


def test_predict_refuses_data_that_does_not_fit_the_model(species, binary, tmp_path):
    ckpt = species["ckpt"]
    renamed = write_csv(tmp_path / "renamed.csv", ["length", "mass", "age"], [[1, 2, 3]] * 3)
    refused(
        ["predict", "--checkpoint", ckpt, "--data", renamed],
        f"--data {renamed}: its feature columns do not match the model's",
        "missing 'weight'; unexpected 'mass'",
    )
    unknown = write_csv(
        tmp_path / "unknown.csv", ["length", "weight", "age", "species"], [[1, 2, 3, "yak"]]
    )
    refused(
        ["predict", "--checkpoint", ckpt, "--data", unknown],
        "holds classes the model does not know: 'yak'",
    )
    wide = tmp_path / "wide.npz"
    np.savez(wide, X=np.zeros((4, 5)))
    refused(
        ["predict", "--checkpoint", binary["ckpt"], "--data", wide],
        "5 feature columns, the model takes 2",
    )
    hole = write_csv(tmp_path / "hole.csv", ["length", "weight", "age"], [[1, "", 3]])
    refused(["predict", "--checkpoint", ckpt, "--data", hole], "column 'weight' has an empty cell")
    refused(["predict", "--checkpoint", ckpt, "--data", tmp_path / "x.json"], "unsupported file")


def test_predict_flags(species, tmp_path):
    refused(["predict", "--data", species["csv"]], "required: --checkpoint")
    args = ["predict", "--checkpoint", species["ckpt"], "--data", species["csv"]]
    refused([*args, "--out", species["csv"]], "is the --data file; it would be overwritten")
    refused([*args, "--out", "/nonexistent/dir/p.csv"], "--out", "does not exist")
    refused([*args, "--chec", "x"], "unrecognized arguments: --chec")


def test_help_describes_the_new_flags(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--data FILE", "--target NAME", "--save PATH", "60/20/20", "98/1/1"):
        assert flag in out
    assert cli.main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--checkpoint PATH" in out and "--out FILE" in out and "stdout" in out


def test_a_bad_file_in_a_real_process_gives_no_traceback(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a", "y"], [["x", 0], ["z", 1]] * 5)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "fjdl", "train", "--data", str(path), "--no-plot"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"fjdl train: error: --data {path}: column 'a' is not numeric: 'x' at row 1 (line 2); "
        "features must be numbers (encode the column as numbers, or remove it)"
    )


# --------------------------------------------------------------------------------------------------
# fjdl.tabular


def test_split_fractions_follow_the_course():
    assert tabular.split_fractions(100) == (0.6, 0.2, 0.2)
    assert tabular.split_fractions(10_000) == (0.6, 0.2, 0.2)
    assert tabular.split_fractions(50_000) == (0.6, 0.2, 0.2)
    assert tabular.split_fractions(200_000) == (0.9, 0.05, 0.05)  # 10,000 dev, 10,000 test
    assert tabular.split_fractions(1_000_000) == (0.98, 0.01, 0.01)
    assert tabular.split_fractions(5_000_000) == (0.98, 0.01, 0.01)


def test_labels_integers_sort_numerically_and_floats_with_integer_values_are_integers(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((4, 1)), y=np.array([10.0, 2.0, 2.0, 1.0]))
    table = tabular.read_table(path)
    assert table.labels.tolist() == ["10", "2", "2", "1"]
    assert tabular.classes_of(table) == ("1", "2", "10")
    np.testing.assert_array_equal(tabular.encode_labels(table, ("1", "2", "10")), [2, 1, 1, 0])
    strings = tmp_path / "s.npz"
    np.savez(strings, X=np.zeros((3, 1)), y=np.array(["b", "a", "b"]))
    assert tabular.classes_of(tabular.read_table(strings)) == ("a", "b")


def test_csv_reading_keeps_values_exactly_and_skips_blank_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('\ufeffx,"y, z",label\n0.1,-2e3,a\n\n 3 ,4.25, b \n')
    table = tabular.read_table(path)
    assert table.features == ("x", "y, z") and table.target == "label"
    np.testing.assert_array_equal(table.X, np.float32([[0.1, -2e3], [3, 4.25]]))
    assert table.labels.tolist() == ["a", "b"]
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text("x,y\n1,2\n")
    table = tabular.read_table(unlabelled, target="label", target_required=False)
    assert table.labels is None and table.target is None and table.features == ("x", "y")
    with pytest.raises(tabular.TableError, match="no column 'label'; the columns are 'x', 'y'"):
        tabular.read_table(unlabelled, target="label")
