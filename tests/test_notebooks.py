"""The notebooks in ``notebooks/``: each runs end to end without an error, and each is committed clean.

Every notebook checks its own claims with ``assert`` in its cells (the course's figures where they
are reproduced exactly, the verdicts of the gradient check, ...), so executing it is a test of the
story it tells, not only of the absence of exceptions.
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("sklearn")  # the notebooks load the course's datasets through scikit-learn

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = (
    "01_initialization.ipynb",
    "02_regularization.ipynb",
    "03_gradient_checking.ipynb",
    "04_optimization.ipynb",
    "05_batchnorm_softmax.ipynb",
    "06_hyperparameter_search.ipynb",
    "07_any_model.ipynb",
)
"""The notebooks the README lists, in order."""

TIMEOUT_S = 600  # per cell; each notebook takes well under a minute on a 2-core CPU
NO_COURSE_DATA_ENV = "FJDL_NOTEBOOKS_NO_COURSE_DATA"  # see notebooks/_course.py


def _football_present() -> bool:
    """Whether notebook 2 finds the course's football data (``../shared/data`` of the repo)."""
    for folder in (NOTEBOOK_DIR, *NOTEBOOK_DIR.parents):
        for base in (folder / "shared" / "data", folder.parent / "shared" / "data"):
            if (base / "football_train.csv").is_file() and (base / "football_test.csv").is_file():
                return True
    return False


def _read(name):
    return nbformat.read(str(NOTEBOOK_DIR / name), as_version=4)


def _execute(name):
    nb = _read(name)
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return nb


def _stderr_warnings(nb):
    """Warnings printed by the cells (``DeprecationWarning``, ``RuntimeWarning``, ...)."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                if "Warning" in out.get("text", ""):
                    found.append(f"cell {i}: {out['text'].strip()}")
    return found


_RUNS = [pytest.param(name, None, id=name.removesuffix(".ipynb")) for name in NOTEBOOKS]
if _football_present():
    # Where the football data is present, the default run uses it: run the built-in-data branch too.
    _RUNS.append(pytest.param("02_regularization.ipynb", "1", id="02_regularization-builtin-data"))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "no_course_data"), _RUNS)
def test_notebook_runs(name, no_course_data, monkeypatch):
    if no_course_data is None:
        monkeypatch.delenv(NO_COURSE_DATA_ENV, raising=False)
    else:
        monkeypatch.setenv(NO_COURSE_DATA_ENV, no_course_data)  # the kernel inherits it
    nb = _execute(name)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), "a cell did not run"
    assert not any(o.get("output_type") == "error" for c in code_cells for o in c.outputs)
    # Every notebook draws at least one figure, and the figures come back as images.
    images = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} drew no figure"
    assert not _stderr_warnings(nb), _stderr_warnings(nb)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_listed_clean_and_titled(name):
    path = NOTEBOOK_DIR / name
    assert path.is_file(), f"the README lists {name}, which does not exist"
    nb = _read(name)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{name} must open with a markdown title cell ('# ...')"
    )
    title_number = first.source[2:].split(".", 1)[0]
    assert title_number == str(int(name[:2])), f"{name}'s title should be numbered {int(name[:2])}"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name} cell {i} holds outputs: commit notebooks with their outputs cleared"
            )


def test_every_notebook_in_the_folder_is_listed():
    on_disk = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert on_disk == sorted(NOTEBOOKS)


def test_notebooks_use_a_headless_backend():
    # Each notebook either selects the inline backend or Agg: both work without a display.
    for name in NOTEBOOKS:
        sources = "\n".join(cell.source for cell in _read(name).cells)
        assert "%matplotlib inline" in sources or 'matplotlib.use("Agg")' in sources, name


def test_course_helpers(tmp_path, monkeypatch):
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("_course", NOTEBOOK_DIR / "_course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)

    # He weights as the course draws them: numpy seed 3, randn(n, n_prev) * sqrt(2 / n_prev),
    # transposed to fjdl's (n_in, n_out); biases zero.
    np.random.seed(3)
    W1 = np.random.randn(10, 2) * np.sqrt(2.0 / 2)
    W2 = np.random.randn(5, 10) * np.sqrt(2.0 / 10)
    he = course.course_weights([2, 10, 5, 1], "he")
    np.testing.assert_array_equal(he[0]["W"], W1.T)
    np.testing.assert_array_equal(he[1]["W"], W2.T)
    assert he[2]["W"].shape == (5, 1) and not any(p["b"].any() for p in he)
    np.random.seed(3)
    expected = np.random.randn(4, 2) / np.sqrt(2)
    np.testing.assert_array_equal(course.course_weights([2, 4, 1], "xavier")[0]["W"], expected.T)
    assert not course.course_weights([2, 4, 1], "zeros")[0]["W"].any()
    with pytest.raises(ValueError, match="scheme"):
        course.course_weights([2, 4, 1], "ones")

    # The football data is found by searching upwards, in shared/data or a sibling shared/data.
    data_dir = tmp_path / "shared" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "football_train.csv").write_text("x1,x2,y\n0.5,-0.25,1\n0.0,1.0,0\n")
    (data_dir / "football_test.csv").write_text("x1,x2,y\n1.5,2.0,0\n")
    deep = tmp_path / "repo" / "notebooks"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    monkeypatch.delenv(NO_COURSE_DATA_ENV, raising=False)
    train_X, train_Y, test_X, test_Y = course.load_football()
    np.testing.assert_array_equal(train_X, [[0.5, -0.25], [0.0, 1.0]])
    np.testing.assert_array_equal(train_Y, [1, 0])
    assert test_X.shape == (1, 2) and test_Y.tolist() == [0]
    monkeypatch.setenv(NO_COURSE_DATA_ENV, "1")
    assert course.load_football() is None
    monkeypatch.delenv(NO_COURSE_DATA_ENV)
    monkeypatch.chdir(tmp_path.parent)
    assert course.find_shared_data("no_such_file.csv") is None

    assert course.table(["a", "b"], [["x", 0.5]]).splitlines() == [
        "a  b    ",
        "-  -----",
        "x  50.0%",
    ]
