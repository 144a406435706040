"""Helpers shared by the notebooks: the course's datasets and initial weights, and small tables.

The course ("Improving Deep Neural Networks") draws its data with scikit-learn and its initial
weights with numpy's legacy global RNG (``np.random.seed``). These functions reproduce both, in
fjdl's layout: ``W`` of shape ``(n_in, n_out)`` (the course's ``W.T``), ``b`` of shape ``(n_out,)``.
They are for the notebooks only; nothing in ``fjdl/`` depends on them.
"""

import os
from pathlib import Path

import numpy as np

FOOTBALL_FILES = ("football_train.csv", "football_test.csv")
NO_COURSE_DATA_ENV = "FJDL_NOTEBOOKS_NO_COURSE_DATA"
"""Set this environment variable to 1 to make :func:`load_football` act as if the data were absent."""


def course_circles():
    """The initialization experiment's data: ``make_circles`` with seeds 1 (300) and 2 (100)."""
    from sklearn.datasets import make_circles

    np.random.seed(1)
    train_X, train_Y = make_circles(n_samples=300, noise=0.05)
    np.random.seed(2)
    test_X, test_Y = make_circles(n_samples=100, noise=0.05)
    return train_X, train_Y.astype(np.int32), test_X, test_Y.astype(np.int32)


def course_moons():
    """The optimization experiment's data: ``np.random.seed(3); make_moons(300, noise=.2)``."""
    from sklearn.datasets import make_moons

    np.random.seed(3)
    X, Y = make_moons(n_samples=300, noise=0.2)
    return X, Y.astype(np.int32)


def course_weights(layers_dims, scheme, seed=3, dtype=np.float64):
    """The course's initial weights, drawn with ``np.random.seed(seed)``, in fjdl's layout.

    Args:
      layers_dims: ``[n_x, n_1, ..., n_L]``.
      scheme: ``"zeros"`` (``W = 0``), ``"large"`` (``randn * 10``), ``"he"``
        (``randn * sqrt(2 / n_prev)``) or ``"xavier"`` (``randn / sqrt(n_prev)``, the
        regularization experiment's ``initialize_parameters``).
      seed: the numpy seed (3 in all the course's experiments).
      dtype: numpy dtype of the arrays.

    Returns:
      A tuple of ``{"W", "b"}`` dicts, one per layer, biases zero.
    """
    np.random.seed(seed)
    params = []
    for l in range(1, len(layers_dims)):
        n_prev, n = layers_dims[l - 1], layers_dims[l]
        if scheme == "zeros":
            W = np.zeros((n, n_prev))
        elif scheme == "large":
            W = np.random.randn(n, n_prev) * 10
        elif scheme == "he":
            W = np.random.randn(n, n_prev) * np.sqrt(2.0 / n_prev)
        elif scheme == "xavier":
            W = np.random.randn(n, n_prev) / np.sqrt(n_prev)
        else:
            raise ValueError(f"scheme must be zeros, large, he or xavier, got {scheme!r}")
        params.append({"W": W.T.astype(dtype), "b": np.zeros(n, dtype)})
    return tuple(params)


def find_shared_data(name, start=None):
    """The path of ``shared/data/<name>`` in ``start`` (default: the cwd) or a folder above it.

    Also looks in a ``shared`` folder beside each ancestor (the repository's ``../shared/data``).
    Returns ``None`` when there is none.
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        for candidate in (
            folder / "shared" / "data" / name,
            folder.parent / "shared" / "data" / name,
        ):
            if candidate.is_file():
                return candidate
    return None


def _read_xy(path, dtype):
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return table[:, :2].astype(dtype), table[:, 2].astype(np.int32)


def load_football(dtype=np.float64):
    """The regularization experiment's football data, or ``None`` when it is not available.

    Returns:
      ``(train_X, train_Y, test_X, test_Y)`` (211 and 200 examples) read from
      ``shared/data/football_{train,test}.csv``, or ``None`` when the files are not found (or the
      environment variable :data:`NO_COURSE_DATA_ENV` is set to 1).
    """
    if os.environ.get(NO_COURSE_DATA_ENV) == "1":
        return None
    paths = [find_shared_data(name) for name in FOOTBALL_FILES]
    if any(p is None for p in paths):
        return None
    train_X, train_Y = _read_xy(paths[0], dtype)
    test_X, test_Y = _read_xy(paths[1], dtype)
    return train_X, train_Y, test_X, test_Y


def table(header, rows, floatfmt="{:.1%}"):
    """A plain-text table: ``header`` a list of column names, ``rows`` lists of cells.

    Floats are formatted with ``floatfmt`` (percentages by default); other cells with ``str``.
    """
    cells = [[c if isinstance(c, str) else floatfmt.format(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)
