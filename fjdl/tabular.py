"""Tables from files: a CSV with a header row or an ``.npz`` with ``X`` and ``y``, for classifiers.

:func:`read_table` reads a file into a :class:`Table`: float32 features ``X`` of shape
``(m, n_features)`` and, when the file has them, the class labels as strings. It refuses a file
that a classifier cannot learn from with a :class:`TableError` (a ``ValueError``) of one line that
names the file and what is wrong in it: the column and row of a missing value, the first value of a
column that is not numeric, the columns there are when the target is not one of them.

- **CSV** (``.csv``): comma-separated, a header row naming the columns, one example per row. The
  target (the labels) is the column named ``target``, by default the last one; every other column
  is a feature and must hold finite numbers. Empty cells and ``NA``, ``N/A``, ``null``, ``None``,
  ``NaN``, ``?`` are missing values, refused. Rows count from 1 after the header; ``line`` is the
  line of the file.
- **npz** (``.npz``): arrays ``X`` ``(m, n_features)``, numeric, and ``y`` ``(m,)``, integers or
  strings; read with ``allow_pickle=False``, so loading never runs code from the file. Its features
  have no names.

Labels are class names: strings stay as they are (stripped); integers, and floats with integer
values, are written as integers (``1.0`` is ``"1"``). Non-integer numbers are refused: the target
of a classifier holds classes, not measurements. :func:`classes_of` sorts the names (numerically
when all are integers), and :func:`encode_labels` maps them to class indices ``[0, C)``, as
``fjdl.train.fit`` expects them.

:func:`split_fractions` gives the course's train / dev / test fractions for ``m`` examples.

Example:
  >>> import os, tempfile
  >>> path = os.path.join(tempfile.mkdtemp(), "flowers.csv")
  >>> with open(path, "w") as f:
  ...     _ = f.write("length,width,species\\n1.4,0.2,setosa\\n4.7,1.4,versicolor\\n")
  ...     _ = f.write("1.3,0.2,setosa\\n")
  >>> table = read_table(path)
  >>> table.X.shape, table.features, table.target, classes_of(table)
  ((3, 2), ('length', 'width'), 'species', ('setosa', 'versicolor'))
  >>> encode_labels(table, classes_of(table)).tolist()
  [0, 1, 0]
"""

import csv
import math
import os
import zipfile
from typing import NamedTuple

import numpy as np

EXTENSIONS = (".csv", ".npz")
"""The file types :func:`read_table` reads."""

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
"""CSV cells (compared in lower case, stripped) that mean a missing value."""

_SHOWN = 6  # names listed in one message before "..."


class TableError(ValueError):
    """A file a classifier cannot learn from or predict on; the message names the file and place."""


class Table(NamedTuple):
    """A table read by :func:`read_table`."""

    X: np.ndarray
    """Features, float32 ``(m, n_features)``, all finite."""
    labels: np.ndarray | None
    """Class names, ``(m,)`` strings; ``None`` when the file has no target."""
    features: tuple[str, ...] | None
    """Column names of ``X`` (CSV); ``None`` for an ``.npz``."""
    target: str | None
    """Name of the target column (``"y"`` for an ``.npz``); ``None`` without labels."""
    path: str
    """The file read."""


def _listed(names) -> str:
    names = [repr(n) for n in names]
    return ", ".join(names[:_SHOWN]) + (
        f", ... ({len(names)} in all)" if len(names) > _SHOWN else ""
    )


def _where(row: int, line: int) -> str:
    return f"row {row} (line {line})"


# --------------------------------------------------------------------------------------------------
# Labels


def _is_integer_name(name: str) -> bool:
    try:
        int(name)
    except ValueError:
        return False
    return True


def _label_names(path, target, values, lines=None) -> np.ndarray:
    """Class names from raw labels: strings stripped, integer values as integers."""
    numbers = []
    for value in values:
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            break
    if len(numbers) < len(values):  # names: kept as they are
        return np.array([str(v).strip() for v in values], dtype=str)
    for i, x in enumerate(numbers):
        if not (math.isfinite(x) and x == math.floor(x)):
            where = f"y[{i}]" if lines is None else _where(i + 1, lines[i])  # npz: numpy's index
            raise TableError(
                f"{path}: the target {target!r} holds {values[i]!r} at {where}, not an integer "
                "or a name: a classifier's target holds class labels (integers or names)"
            )
    return np.array([str(int(x)) for x in numbers], dtype=str)


def classes_of(table: Table) -> tuple[str, ...]:
    """The sorted class names of ``table``'s labels: numerically when every name is an integer.

    Raises:
      TableError: the table has no labels, or a single class (a classifier needs two).
    """
    if table.labels is None:
        raise TableError(f"{table.path}: it has no target {table.target!r} to learn from")
    names = set(table.labels.tolist())
    if all(_is_integer_name(n) for n in names):
        classes = tuple(sorted(names, key=int))
    else:
        classes = tuple(sorted(names))
    if len(classes) < 2:
        raise TableError(
            f"{table.path}: the target {table.target!r} holds a single class, {classes[0]!r}; "
            "a classifier needs at least two"
        )
    return classes


def encode_labels(table: Table, classes) -> np.ndarray:
    """``table``'s labels as int32 class indices: the position of each name in ``classes``.

    Raises:
      TableError: a label is not one of ``classes`` (the labels are named, with their first row).
    """
    if table.labels is None:
        raise TableError(f"{table.path}: it has no target {table.target!r}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [n for n in dict.fromkeys(table.labels.tolist()) if n not in index]
    if unknown:
        i = table.labels.tolist().index(unknown[0])
        first = f"y[{i}]" if table.features is None else f"row {i + 1}"  # npz: numpy's index
        raise TableError(
            f"{table.path}: the target {table.target!r} holds classes the model does not know: "
            f"{_listed(unknown)} (the first in {first}); it knows {_listed(classes)}"
        )
    return np.array([index[n] for n in table.labels.tolist()], dtype=np.int32)


# --------------------------------------------------------------------------------------------------
# CSV


def _column_floats(path, name, cells, lines) -> np.ndarray:
    """One feature column as float64, or a :class:`TableError` naming the first bad cell."""
    try:
        values = np.array(cells).astype(np.float64)
    except ValueError:
        values = None
    if values is not None and np.all(np.isfinite(values)):
        return values
    tokens = [cell.strip() for cell in cells]
    for i, token in enumerate(tokens):  # the slow path, to name the cell
        if token.lower() not in MISSING and not _is_number(token):
            raise TableError(
                f"{path}: column {name!r} is not numeric: {token!r} at {_where(i + 1, lines[i])}; "
                "features must be numbers (encode the column as numbers, or remove it)"
            )
    for i, token in enumerate(tokens):
        if token.lower() in MISSING:
            what = f"a missing value ({token!r})" if token else "an empty cell"
        elif not math.isfinite(float(token)):
            what = f"a value that is not finite ({token!r})"
        else:
            continue
        raise TableError(
            f"{path}: column {name!r} has {what} at {_where(i + 1, lines[i])}; fill it in or "
            "remove the row"
        )
    raise AssertionError("unreachable: a column that failed to parse has a bad cell")


def _read_csv_rows(path) -> tuple[list[str], list[list[str]], list[int]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header, rows, lines = None, [], []
            for fields in reader:
                if not any(cell.strip() for cell in fields):
                    continue  # a blank line
                if header is None:
                    header = fields
                    continue
                rows.append(fields)
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise TableError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise TableError(f"{path}: not a readable CSV file: {e}") from None
    if header is None:
        raise TableError(f"{path}: the file is empty; expected a header row and data rows")
    return header, rows, lines


def _read_csv(path: str, target: str | None, target_required: bool) -> Table:
    header, rows, lines = _read_csv_rows(path)
    names = [h.strip() for h in header]
    for j, name in enumerate(names):
        if not name:
            raise TableError(f"{path}: column {j + 1} has no name in the header row")
        if name in names[:j]:
            raise TableError(f"{path}: the header names column {name!r} twice")
    if all(_is_number(n) for n in names):
        raise TableError(
            f"{path}: the first line ({','.join(header)}) holds numbers, not column names; the "
            "file needs a header row"
        )
    if not rows:
        raise TableError(f"{path}: no data rows after the header")
    for fields, line in zip(rows, lines):
        if len(fields) != len(names):
            raise TableError(
                f"{path}: line {line} has {len(fields)} fields, the header has {len(names)}"
            )
    if target is None and target_required:
        target = names[-1]
    if target is not None and target not in names:
        if target_required:
            raise TableError(
                f"{path}: no column {target!r}; the columns are {', '.join(map(repr, names))}"
            )
        target = None
    features = [n for n in names if n != target]
    if not features:
        raise TableError(f"{path}: no feature columns besides the target {target!r}")
    columns = dict(zip(names, zip(*rows)))
    X = np.stack([_column_floats(path, n, list(columns[n]), lines) for n in features], axis=1)
    labels = None
    if target is not None:
        cells = list(columns[target])
        for i, cell in enumerate(cells):
            if cell.strip().lower() in MISSING:
                what = "an empty cell" if not cell.strip() else f"a missing value ({cell!r})"
                raise TableError(
                    f"{path}: the target {target!r} has {what} at {_where(i + 1, lines[i])}"
                )
        labels = _label_names(path, target, [c.strip() for c in cells], lines)
    return _finish(path, X, labels, tuple(features), target)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# npz


def _npz_labels(path: str, y, shape):
    """The labels of an .npz's ``y``, checked against ``X``'s ``shape``."""
    if y.ndim != 1 or y.shape[0] != shape[0]:
        raise TableError(
            f"{path}: y must have shape (m,) with m = {shape[0]} rows, as X {shape}; "
            f"got {y.shape}"
        )
    if y.dtype.kind not in "biufUS":
        raise TableError(f"{path}: y must hold integers or strings, it holds {y.dtype}")
    values = y.astype(str).tolist() if y.dtype.kind in "US" else y.astype(np.float64).tolist()
    if y.dtype.kind in "US":
        for i, v in enumerate(values):
            if v.strip().lower() in MISSING:
                raise TableError(f"{path}: y[{i}] is a missing value ({v!r})")
    else:
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise TableError(f"{path}: y[{i}] is {v}; labels must be finite")
    return _label_names(path, "y", values)


def _read_npz(path: str, target_required: bool) -> Table:
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise TableError(f"{path}: the file is empty; expected an .npz with arrays X and y")
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.load would take it for a pickle or .npy
        raise TableError(
            f"{path}: not a readable .npz archive (a zip of arrays): it starts with {magic!r}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise TableError(f"{path}: not an .npz archive")
            names = list(npz.files)
            needed = ["X", "y"] if target_required else ["X"]
            missing = [n for n in needed if n not in names]
            if missing:
                raise TableError(
                    f"{path}: no array {' or '.join(map(repr, missing))}; it holds "
                    f"{_listed(names) if names else 'no arrays'} (expected X (m, n_features) and "
                    "y (m,))"
                )
            X = npz["X"]
            y = npz["y"] if "y" in names else None
    except TableError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise TableError(f"{path}: it holds Python objects (pickled), never loaded") from None
        raise TableError(f"{path}: not a readable .npz archive: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise TableError(f"{path}: not a readable .npz archive: {e}") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise TableError(f"{path}: X must have shape (m, n_features) with m, n >= 1, got {X.shape}")
    if X.dtype.kind not in "biuf":
        raise TableError(f"{path}: X must hold numbers, it holds {X.dtype}")
    X = X.astype(np.float64)
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        i, j = (int(k) for k in bad[0])
        raise TableError(
            f"{path}: X[{i}, {j}] (row {i}, feature {j}, counting from 0) is {X[i, j]}; "
            "features must be finite"
        )
    labels = None if y is None else _npz_labels(path, y, X.shape)
    return _finish(path, X, labels, None, "y" if labels is not None else None)


# --------------------------------------------------------------------------------------------------
# Reading


def _finish(path, X, labels, features, target) -> Table:
    X32 = X.astype(np.float32)
    overflow = np.argwhere(~np.isfinite(X32))
    if overflow.size:
        i, j = (int(k) for k in overflow[0])
        where = f"X[{i}, {j}]" if features is None else f"column {features[j]!r}, row {i + 1}"
        raise TableError(f"{path}: {float(X[i, j])!r} at {where} is too large for float32")
    return Table(X32, labels, features, target, path)


def read_table(path, *, target: str | None = None, target_required: bool = True) -> Table:
    """Read a ``.csv`` (with a header row) or an ``.npz`` (``X``, ``y``) into a :class:`Table`.

    Args:
      path: the file; its extension (``.csv`` or ``.npz``, any case) says how to read it.
      target: the CSV column holding the labels; ``None``: the last column when
        ``target_required``, else none. An ``.npz``'s labels are always ``y``.
      target_required: whether the labels must be there (training). When ``False`` (prediction),
        a CSV without the ``target`` column, or an ``.npz`` without ``y``, gives ``labels=None``
        and every column is a feature.

    Returns:
      A :class:`Table` ``(X, labels, features, target, path)``.

    Raises:
      TableError: (a ``ValueError``) the file is missing or unreadable, has another extension,
        or holds something a classifier cannot use; the message names the file, and the column and
        row where it applies.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
      >>> np.savez(path, X=np.zeros((4, 3)), y=np.array([0, 1, 1, 2]))
      >>> t = read_table(path)
      >>> t.X.dtype, t.labels.tolist(), t.features, t.target
      (dtype('float32'), ['0', '1', '1', '2'], None, 'y')
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in EXTENSIONS:
        what = f"extension {extension!r}" if extension else "no extension"
        raise TableError(
            f"{path}: unsupported file type ({what}); expected a .csv with a header row or an "
            ".npz with arrays X and y"
        )
    if not os.path.exists(path):
        raise TableError(f"{path}: no such file")
    if os.path.isdir(path):
        raise TableError(f"{path}: is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise TableError(f"{path}: cannot be read (permission denied)")
    try:
        if extension == ".csv":
            return _read_csv(path, target, target_required)
        return _read_npz(path, target_required)
    except OSError as e:
        raise TableError(f"{path}: cannot be read: {e.strerror or e}") from None


def select_features(table: Table, features, n_features: int) -> np.ndarray:
    """``table.X`` with the columns ``features`` (names saved with a model), in that order.

    With ``features`` ``None`` (a model trained on an ``.npz`` or a built-in dataset), or a table
    without names (an ``.npz``), only the number of columns is checked, against ``n_features``.

    Raises:
      TableError: the columns differ: the missing and the unexpected ones are named, or the counts.
    """
    if features is None or table.features is None:
        if table.X.shape[1] != n_features:
            raise TableError(
                f"{table.path}: {table.X.shape[1]} feature columns, the model takes {n_features}"
            )
        return table.X
    missing = [f for f in features if f not in table.features]
    extra = [f for f in table.features if f not in features]
    if missing or extra:
        why = []
        if missing:
            why.append(f"missing {_listed(missing)}")
        if extra:
            why.append(f"unexpected {_listed(extra)}")
        raise TableError(
            f"{table.path}: its feature columns do not match the model's "
            f"({_listed(features)}): " + "; ".join(why)
        )
    return table.X[:, [table.features.index(f) for f in features]]


def split_fractions(m: int) -> tuple[float, float, float]:
    """The course's train / dev / test fractions for ``m`` examples.

    Dev and test each get ``f = clip(10_000 / m, 0.01, 0.2)``: 60/20/20 for up to 50,000 examples
    (the course's "small data": hundreds to tens of thousands), 10,000 each for larger sets, 98/1/1
    from a million on ("big data": 10,000 dev examples are plenty to compare models).

    Example:
      >>> split_fractions(150), split_fractions(100_000), split_fractions(2_000_000)
      ((0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (0.98, 0.01, 0.01))
    """
    f = min(0.2, max(0.01, 10_000 / m)) if m > 0 else 0.2
    return (round(1 - 2 * f, 12), f, f)
