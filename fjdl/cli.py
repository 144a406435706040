"""The ``fjdl`` command: ``fjdl train``, ``fjdl predict``, ``fjdl gradcheck`` and ``fjdl tune``.

Every flag is checked before any work: a bad flag, a bad value, or a flag that the other flags make
pointless ends with one line on stderr that names the flag, exit status 2, and nothing on stdout.
Files are flags too: a ``--data`` file a classifier cannot learn from (missing, not numeric, with an
empty cell, a single class, ...) or a ``--checkpoint`` that is not a model saved by
``fjdl train --save`` is refused the same way, naming the flag, the file and the column and row.
A failure while running (a run that diverges, a plot that cannot be written) ends with one line on
stderr and exit status 1. A reader that closes stdout early (``fjdl train | head -1``) ends the
command quietly, exit status 1. Flags are never abbreviated: ``--epoch`` is not ``--epochs``.
"""

import argparse
import csv
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from fjdl import __version__

if TYPE_CHECKING:  # the commands import the library when they run: --help stays quick
    from fjdl.data import Standardizer

USAGE_ERROR = 2
"""Exit status of a refusal before any work: a bad flag, flags that contradict, a bad file."""
FAILURE = 1
"""Exit status of a failure while running: a diverged run, a file that cannot be written."""
OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")
"""The choices of ``--optimizer``: the names of :data:`fjdl.train.OPTIMIZERS` (a test keeps them in
step; the library is not imported here, so that ``--help`` stays quick)."""
ACTIVATIONS = ("relu", "tanh", "leaky_relu", "sigmoid")
"""The choices of ``--activation``."""


class _UsageError(Exception):
    """A flag or a combination of flags refused before any work (exit status 2)."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (``None``, a switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """No abbreviations, defaults in ``--help``, one-line errors; subparsers are built alike."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------------------------------
# Flag types: each refuses a bad value with a message that argparse prefixes with the flag's name.


def _int_in(low, high=None, *, why="", expected=None):
    """An argparse type: an integer ``>= low`` (and ``<= high``); ``why`` explains the bound."""
    if expected is None:
        expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        expected += f" ({why})" if why else ""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _number(low, high=None, *, low_open=False, high_open=False, why=""):
    """An argparse type: a finite float between ``low`` and ``high`` (``None``: unbounded)."""
    if high is None:
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        expected = (
            f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )
    expected += f" ({why})" if why else ""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _widths(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 20,7 got {text!r}"
        ) from None
    if any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return sizes


def _all_widths(text: str) -> tuple[int, ...]:
    sizes = _widths(text)
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(
            f"expected an input and an output width at least, like 4,5,3,1, got {text!r}"
        )
    return sizes


_positive_int = _int_in(1)
_seed = _int_in(-(2**63), 2**63 - 1, expected="an integer in [-2**63, 2**63) (a 64-bit seed)")
_nonnegative = _number(0.0)
_positive = _number(0.0, low_open=True)
_beta = _number(0.0, 1.0, high_open=True)
_unit_open_low = _number(0.0, 1.0, low_open=True)  # (0, 1]: keep_prob, a decay base


# --------------------------------------------------------------------------------------------------
# The parsers


def _add_dataset_flags(p):
    """The built-in dataset flags that ``train`` and ``tune`` share (``fjdl.data.DATASETS``)."""
    p.add_argument(
        "--dataset",
        default="moons",
        choices=["moons", "circles", "spirals", "blobs", "digits"],
        help="built-in dataset, split 60/20/20 into train, dev and test",
    )
    p.add_argument(
        "--n-samples",
        type=_int_in(5, why="the 60/20/20 split needs a dev and a test example"),
        default=600,
        help="examples to generate (2-D sets; not digits)",
    )


def _add_model_flags(p):
    p.add_argument("--hidden", type=_widths, default="16,8", help="hidden widths, or none")
    p.add_argument("--activation", default="relu", choices=ACTIVATIONS, help="hidden activation")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="optimizer")


def _add_output_flags(p, plot):
    p.add_argument("--batch-size", type=_positive_int, default=64, help="mini-batch size")
    p.add_argument("--full-batch", action="store_true", help="batch gradient descent")
    p.add_argument("--seed", type=_seed, default=0, help="seed of data, initialization, shuffling")
    p.add_argument("--plot", default=plot, help="image file to write (.png, .pdf, .svg, ...)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_optimizer_flags(p):
    p.add_argument("--lr", type=_nonnegative, default=0.01, help="learning rate alpha")
    p.add_argument("--beta", type=_beta, default=0.9, help="momentum / RMSprop beta")
    p.add_argument("--beta1", type=_beta, default=0.9, help="Adam beta1")
    p.add_argument("--beta2", type=_beta, default=0.999, help="Adam beta2")
    p.add_argument("--epsilon", type=_positive, default=1e-8, help="RMSprop / Adam epsilon")
    p.add_argument(
        "--decay",
        default="none",
        choices=["none", "inverse_time", "exponential", "inverse_sqrt"],
        help="per-epoch learning-rate decay",
    )
    p.add_argument("--decay-rate", type=_nonnegative, default=1.0, help="inverse_time decay rate")
    p.add_argument(
        "--decay-interval", type=_positive_int, default=1, help="inverse_time: epochs per step"
    )
    p.add_argument("--decay-base", type=_unit_open_low, default=0.95, help="exponential decay base")


def _add_regularization_flags(p):
    p.add_argument("--lambd", type=_nonnegative, default=0.0, help="L2 regularization lambda")
    p.add_argument("--l1", type=_nonnegative, default=0.0, help="L1 regularization strength")
    p.add_argument(
        "--keep-prob", type=_unit_open_low, default=1.0, help="dropout keep_prob on hidden layers"
    )
    p.add_argument("--batchnorm", action="store_true", help="batch normalization on hidden layers")
    p.add_argument(
        "--init",
        default="he",
        choices=["he", "xavier", "glorot", "random_normal", "zeros"],
        help="weight initialization",
    )
    p.add_argument(
        "--patience",
        type=_positive_int,
        default=None,
        help="early stopping patience in epochs (default: off)",
    )
    p.add_argument(
        "--min-delta", type=_nonnegative, default=0.0, help="early stopping min improvement"
    )


def _add_data_flags(p):
    """``fjdl train`` on the user's own file, and the model it saves (``fjdl predict`` reads it)."""
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your own data instead of --dataset: a .csv with a header row (the labels in --target)"
        " or an .npz with arrays X (m, n_features) and y (m,); split train/dev/test by the course's"
        " guidance for its size (60/20/20 up to 50,000 examples, 98/1/1 from a million) and"
        " standardized with the training part's mean and std; two classes: a sigmoid output, more:"
        " softmax",
    )
    p.add_argument(
        "--target",
        default=None,
        metavar="NAME",
        help="the CSV column holding the labels, integers or names (default: the last column)",
    )
    p.add_argument(
        "--save",
        default=None,
        metavar="PATH",
        help="write the trained model to this checkpoint, with its standardization, class names"
        " and feature names, for fjdl predict",
    )


def _add_train_flags(p):
    _add_dataset_flags(p)
    _add_data_flags(p)
    p.add_argument(
        "--noise",
        type=_nonnegative,
        default=None,
        help="noise of the 2-D sets (default: each set's own)",
    )
    _add_model_flags(p)
    _add_optimizer_flags(p)
    p.add_argument("--epochs", type=_positive_int, default=200, help="passes over the data")
    _add_regularization_flags(p)
    p.add_argument(
        "--human-error",
        type=_number(0.0, 1.0, why="a fraction: 0.11 for 11%"),
        default=0.0,
        help="human-level (Bayes) error, as a fraction",
    )
    _add_output_flags(p, plot="fjdl_train.png")


def _add_gradcheck_flags(p):
    p.add_argument(
        "--sizes", type=_all_widths, default="4,5,3,1", help="all widths; >1 output: softmax"
    )
    p.add_argument("--activation", default="relu", choices=ACTIVATIONS, help="hidden activation")
    p.add_argument("--examples", type=_positive_int, default=10, help="random examples in the cost")
    p.add_argument("--lambd", type=_nonnegative, default=0.0, help="L2 regularization lambda")
    p.add_argument("--batchnorm", action="store_true", help="batch normalization on hidden layers")
    p.add_argument(
        "--epsilon",
        type=_positive,
        default=None,
        help="step of the numerical gradient (default by dtype: 1e-7 float64, 1e-3 float32)",
    )
    p.add_argument("--float32", action="store_true", help="check in float32 (default float64)")
    p.add_argument("--plant-bug", action="store_true", help="double dW of the last layer")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the parameters and examples")


def _add_tune_flags(p):
    _add_dataset_flags(p)
    p.add_argument("--trials", type=_positive_int, default=16, help="trials per round")
    p.add_argument(
        "--rounds", type=_positive_int, default=2, help="search rounds (1: plain random search)"
    )
    p.add_argument("--epochs", type=_positive_int, default=60, help="epochs per trial")
    _add_model_flags(p)
    p.add_argument("--lr-min", type=_positive, default=1e-4, help="smallest learning rate")
    p.add_argument("--lr-max", type=_positive, default=1.0, help="largest learning rate")
    p.add_argument("--top", type=_positive_int, default=10, help="rows of the ranked table")
    _add_output_flags(p, plot="fjdl_tune.png")


def _add_predict_flags(p):
    p.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="a model saved by fjdl train --save"
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="a .csv with the model's feature columns (its target column too, for the accuracy) or"
        " an .npz with X (and y)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="CSV file for the predictions: the predicted class and each class's probability, one"
        " row per example (default: stdout)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``fjdl`` and its commands (no abbreviations, defaults shown in ``--help``)."""
    parser = _Parser(
        prog="fjdl", description="fjdl: train, check and tune networks, and predict, with fjdl."
    )
    parser.add_argument("--version", action="version", version=f"fjdl {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_train_flags(
        sub.add_parser("train", help="train an MLP on a built-in dataset or your own file, report")
    )
    _add_predict_flags(
        sub.add_parser("predict", help="predict with a model saved by fjdl train --save")
    )
    _add_gradcheck_flags(
        sub.add_parser("gradcheck", help="check backprop against a numerical gradient")
    )
    _add_tune_flags(
        sub.add_parser("tune", help="random (coarse-to-fine) search of the learning rate and beta")
    )
    return parser


# --------------------------------------------------------------------------------------------------
# Checks of flags against each other, before any work


def _given(argv, flag) -> bool:
    """Whether ``flag`` was typed (as ``--flag value``, ``--flag=value`` or a switch)."""
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _pointless_train_flags(a):
    """``(flag, pointless, why)`` for each flag that other flags can make have no effect."""
    optimizer = f"with --optimizer {a.optimizer}"
    no_hidden = "without hidden layers (--hidden none)"
    return [
        ("--beta", a.optimizer in ("gd", "adam"), f"{optimizer} (adam has --beta1, --beta2)"),
        ("--beta1", a.optimizer != "adam", f"{optimizer} (only adam uses it)"),
        ("--beta2", a.optimizer != "adam", f"{optimizer} (only adam uses it)"),
        ("--epsilon", a.optimizer in ("gd", "momentum"), f"{optimizer} (rmsprop and adam use it)"),
        ("--decay-rate", a.decay != "inverse_time", "without --decay inverse_time"),
        ("--decay-interval", a.decay != "inverse_time", "without --decay inverse_time"),
        ("--decay-base", a.decay != "exponential", "without --decay exponential"),
        ("--min-delta", a.patience is None, "without --patience (early stopping)"),
        ("--noise", a.dataset == "digits", "with --dataset digits"),
        ("--keep-prob", not a.hidden, no_hidden),
        ("--batchnorm", not a.hidden, no_hidden),
        ("--n-samples", a.data is not None, "with --data (your file has its own examples)"),
        ("--noise", a.data is not None, "with --data (your file is used as it is)"),
        ("--target", a.data is None, "without --data"),
        ("--target", _is_npz(a.data), "with an .npz --data (its labels are the array y)"),
    ]


def _is_npz(path) -> bool:
    return path is not None and path.lower().endswith(".npz")


def _pointless_shared_flags(a):
    return [
        ("--n-samples", a.dataset == "digits", "with --dataset digits (1,797 fixed images)"),
        ("--batch-size", a.full_batch, "with --full-batch"),
        ("--plot", a.no_plot, "with --no-plot"),
    ]


def _check_writable(flag: str, path: str, example: str) -> None:
    """Refuse an output file that cannot be written, before any work."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise _UsageError(
            f"{flag} {path} is a directory; give a file name such as {path}/{example}"
        )
    if not os.path.isdir(directory):
        raise _UsageError(f"{flag} {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise _UsageError(f"{flag} {path}: the directory {directory} is not writable")


def _check_plot(path: str) -> None:
    """Refuse a plot file that cannot be written, before any training."""
    _check_writable("--plot", path, "x.png")
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise _UsageError(
            "--plot needs matplotlib (pip install matplotlib); or pass --no-plot"
        ) from None
    formats = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(path)[1][1:].lower()
    if extension and extension not in formats:
        raise _UsageError(
            f"--plot {path}: matplotlib cannot write .{extension} files; use one of "
            + ", ".join(f".{f}" for f in sorted(formats))
        )


def _check_args(args, argv) -> None:
    """Raise :class:`_UsageError` for flags that contradict each other or cannot work."""
    if args.command == "train" and args.data is not None and _given(argv, "--dataset"):
        raise _UsageError(
            "--data and --dataset cannot be used together: --data trains on your file, --dataset "
            "on a built-in set"
        )
    if args.command == "predict":
        _check_predict_args(args)
        return
    pointless = []
    if args.command in ("train", "tune"):
        pointless += _pointless_shared_flags(args)
    if args.command == "train":
        pointless += _pointless_train_flags(args)
    for flag, is_pointless, why in pointless:
        if is_pointless and _given(argv, flag):
            raise _UsageError(f"{flag} has no effect {why}")
    if args.command == "tune" and not args.lr_min < args.lr_max:
        raise _UsageError(
            f"--lr-min must be < --lr-max, got --lr-min {args.lr_min} and --lr-max {args.lr_max}"
        )
    if getattr(args, "dataset", None) == "digits":
        import importlib.util

        if importlib.util.find_spec("sklearn") is None:
            raise _UsageError("--dataset digits needs scikit-learn: pip install scikit-learn")
    if args.command == "train" and args.save is not None:
        _check_writable("--save", args.save, "model.npz")
        if args.data is not None and _same_file(args.save, args.data):
            raise _UsageError(f"--save {args.save} is the --data file; it would be overwritten")
    if args.command in ("train", "tune") and not args.no_plot:
        _check_plot(args.plot)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _check_predict_args(args) -> None:
    if args.out is None:
        return
    _check_writable("--out", args.out, "predictions.csv")
    if _same_file(args.out, args.data):
        raise _UsageError(f"--out {args.out} is the --data file; it would be overwritten")


# --------------------------------------------------------------------------------------------------
# Shared pieces of the commands


class _Data(NamedTuple):
    """A dataset ready to train on, and what ``--save`` keeps of it."""

    name: str
    sets: list  # [(X, Y)] of train, dev, test; X standardized with the training part's statistics
    n_classes: int
    stats: "Standardizer"  # fitted on the training part
    about: dict  # source, target, classes, features: saved with --save


def _load(args, data_key, split_key) -> _Data:
    """The built-in dataset, split 60/20/20 and standardized with the training part's statistics."""
    from fjdl import data

    ds = data.load_dataset(
        args.dataset, data_key, n=args.n_samples, noise=getattr(args, "noise", None)
    )
    parts = data.split(split_key, ds.X, ds.Y, (0.6, 0.2, 0.2))
    stats = data.fit_standardizer(parts[0][0])
    about = {
        "source": args.dataset,
        "target": "y",
        "classes": [str(c) for c in range(ds.n_classes)],
        "features": None,
    }
    sets = [(data.standardize(X, stats), Y) for X, Y in parts]
    return _Data(args.dataset, sets, ds.n_classes, stats, about)


def _load_file(args, split_key) -> _Data:
    """The ``--data`` file, split by the course's guidance for its size, standardized alike."""
    from fjdl import data, tabular

    try:
        table = tabular.read_table(args.data, target=args.target)
        classes = tabular.classes_of(table)
        Y = tabular.encode_labels(table, classes)
    except tabular.TableError as err:
        raise _UsageError(f"--data {err}") from None
    m = table.X.shape[0]
    fractions = tabular.split_fractions(m)
    if any(math.floor(f * m + 1e-9) < 1 for f in fractions[1:]):
        raise _UsageError(
            f"--data {args.data}: {m} examples are too few to split {_percent(fractions)} into "
            f"train, dev and test sets; at least {math.ceil(1 / fractions[1] - 1e-9)} are needed"
        )
    parts = data.split(split_key, table.X, Y, fractions)
    stats = data.fit_standardizer(parts[0][0])
    about = {
        "source": os.path.basename(args.data),
        "target": table.target,
        "classes": list(classes),
        "features": None if table.features is None else list(table.features),
        "split": list(fractions),
    }
    sets = [(data.standardize(X, stats), Y) for X, Y in parts]
    return _Data(os.path.basename(args.data), sets, len(classes), stats, about)


def _percent(fractions) -> str:
    return "/".join(f"{100 * f:.3g}" for f in fractions)


def _describe_file(d: _Data) -> str:
    """The line that says what was read from ``--data`` and how it was split."""
    about, m = d.about, sum(X.shape[0] for X, _ in d.sets)
    classes = about["classes"]
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    return (
        f"data: {m} examples, {d.sets[0][0].shape[1]} features, target {about['target']!r} with "
        f"{len(classes)} classes ({shown}); split {_percent(about['split'])} (the course's "
        f"guidance for {m:,} examples); features standardized with the training part's mean and std"
    )


def _batching(args, m_train: int) -> str:
    """How the run batches, as it will really run: ``fit`` caps the batch at the training set."""
    if args.full_batch or args.batch_size >= m_train:
        return "full batch"
    return f"mini-batches of {args.batch_size}"


def _write_plot(command: str, path: str, write) -> int:
    """Call ``write()``; a failure is one line on stderr and exit status 1."""
    try:
        write()
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        print(f"fjdl {command}: error: --plot: could not write {path}: {reason}", file=sys.stderr)
        return FAILURE
    print(f"plot written to {path}")
    return 0


def _progress(args) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# --------------------------------------------------------------------------------------------------
# fjdl train


def _schedule(args):
    from fjdl import schedules

    if args.decay == "none":
        return None
    if args.decay == "inverse_time":
        return lambda lr0: schedules.inverse_time_decay(lr0, args.decay_rate, args.decay_interval)
    if args.decay == "exponential":
        return lambda lr0: schedules.exponential_decay(lr0, args.decay_base)
    return lambda lr0: schedules.inverse_sqrt_decay(lr0, 1.0)


def _optimizer(args) -> dict:
    """``fit``'s optimizer arguments: the name, and the hyperparameters that the registry of named
    optimizers (:data:`fjdl.train.OPTIMIZERS`) says it takes (arrays: nothing recompiles)."""
    from fjdl import train

    names = train.OPTIMIZERS[args.optimizer].hyperparams
    return {"optimizer": args.optimizer, **{name: getattr(args, name) for name in names}}


def _report_divergence(args, err) -> int:
    """One line for a run that became NaN or Inf: where, why, and the last finite epoch."""
    costs = err.history.cost
    if len(costs):
        last = f"the last finite epoch is {len(costs)}, cost {float(costs[-1]):.4g}"
    else:
        last = "no epoch ended with a finite cost"
    print(
        f"fjdl train: error: training diverged in epoch {err.epoch + 1} of {args.epochs} (the "
        f"cost or the parameters became NaN or Inf); likely cause: --lr {args.lr:g} is too large "
        f"for --optimizer {args.optimizer}, try a smaller one; {last}",
        file=sys.stderr,
    )
    return FAILURE


def _report_training(args, config, result, sets, seconds) -> None:
    """The cost and accuracy of each set, the run's length, and the bias/variance diagnosis."""
    from fjdl import diagnose, train

    state = result.state
    rows = []
    for name, (X, Y) in zip(("train", "dev", "test"), sets):
        m = train.evaluate(config, state.params, state.model_state, X, Y)
        rows.append((name, m["cost"], m["accuracy"]))
    print(f"\n{'set':<6} {'cost':>9} {'accuracy':>9}")
    for name, cost, acc in rows:
        print(f"{name:<6} {cost:>9.4f} {acc:>9.2%}")
    print(f"\n{len(result.history.cost)} epochs in {seconds:.1f} s (compilation included)")
    if result.best_epoch is not None:
        print(f"early stopping: best dev cost at epoch {result.best_epoch}, parameters restored")
    d = diagnose.diagnose(1 - rows[0][2], 1 - rows[1][2], args.human_error)
    print(f"diagnosis: {d}")


def cmd_train(args) -> int:
    """``fjdl train``: train an MLP on a built-in dataset or ``--data``, report, save, plot."""
    import jax

    from fjdl import plots, train
    from fjdl.model import MLP

    data_key, split_key, fit_key = jax.random.split(jax.random.key(args.seed), 3)
    d = _load_file(args, split_key) if args.data is not None else _load(args, data_key, split_key)
    sets = d.sets
    (X_tr, Y_tr), dev, _ = sets
    output = "softmax" if d.n_classes > 2 else "sigmoid"
    sizes = (X_tr.shape[1], *args.hidden, d.n_classes if output == "softmax" else 1)
    keep = None if args.keep_prob == 1.0 else args.keep_prob
    config = MLP(
        sizes,
        activation=args.activation,
        output=output,
        keep_probs=keep,
        batchnorm=args.batchnorm,
    )
    m_tr, m_dev, m_te = (X.shape[0] for X, _ in sets)
    print(
        f"fjdl train: {d.name} ({m_tr} train / {m_dev} dev / {m_te} test), layers "
        f"{list(sizes)}, {args.optimizer} lr={args.lr}, {_batching(args, m_tr)}, {args.epochs} epochs"
    )
    if args.data is not None:
        print(_describe_file(d))
    start = time.perf_counter()
    try:
        result = train.fit(
            config,
            X_tr,
            Y_tr,
            key=fit_key,
            **_optimizer(args),
            learning_rate=args.lr,
            epochs=args.epochs,
            batch_size=None if args.full_batch else args.batch_size,
            lambd=args.lambd,
            l1=args.l1,
            schedule=_schedule(args),
            dev=dev,
            patience=args.patience,
            min_delta=args.min_delta,
            scheme=args.init,
            progress=_progress(args),
        )
    except train.TrainingDiverged as err:
        return _report_divergence(args, err)
    _report_training(args, config, result, sets, time.perf_counter() - start)
    if args.save is not None and _save_model(args.save, config, result.state, d) != 0:
        return FAILURE
    if args.no_plot:
        return 0
    return _write_plot(
        "train",
        args.plot,
        lambda: plots.training_report(config, result.state, result.history, sets[0], args.plot),
    )


# --------------------------------------------------------------------------------------------------
# fjdl train --save, and fjdl predict

_SAVED = "fjdl_train"
"""The metadata field of a checkpoint written by ``fjdl train --save``: what ``fjdl predict`` needs
besides the model (``source``, ``target``, ``classes``, ``features``, ``mean``, ``std``)."""


def _save_model(path: str, config, state, d: _Data) -> int:
    """Write the model, with the standardization and the names, to ``path``; 1 on failure."""
    import numpy as np

    from fjdl import checkpoint

    about = {
        **d.about,
        "mean": np.asarray(d.stats.mean, np.float64).tolist(),
        "std": np.asarray(d.stats.std, np.float64).tolist(),
    }
    try:
        checkpoint.save_model(
            path, config, state.params, state.model_state, metadata={_SAVED: about}
        )
    except OSError as err:
        print(
            f"fjdl train: error: --save: could not write {path}: {err.strerror or err}",
            file=sys.stderr,
        )
        return FAILURE
    print(f"model saved to {path} (fjdl predict --checkpoint {path} --data FILE)")
    return 0


def _saved_record_problem(config, about: dict) -> str | None:
    """What is wrong with a ``fjdl train --save`` record, or ``None``."""
    classes, features = about.get("classes"), about.get("features")
    n_in = config.sizes[0]
    if not isinstance(about.get("target"), str):
        return "no target name"
    if not (
        isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
    ):
        return f"classes {classes!r} are not a list of two or more names"
    output, n_out = ("sigmoid", 1) if len(classes) == 2 else ("softmax", len(classes))
    if config.output != output or config.sizes[-1] != n_out:
        return f"{len(classes)} classes, but a {config.output} output of {config.sizes[-1]} units"
    if features is not None and (
        not isinstance(features, list)
        or len(features) != n_in
        or not all(isinstance(f, str) for f in features)
    ):
        return f"features {features!r} are not {n_in} names"
    for name in ("mean", "std"):
        values = about.get(name)
        if not (
            isinstance(values, list)
            and len(values) == n_in
            and all(isinstance(v, (int, float)) for v in values)
        ):
            return f"{name} is not a list of {n_in} numbers"
    if not all(math.isfinite(v) for v in about["mean"]):
        return "mean holds a value that is not finite"
    if not all(math.isfinite(v) and v > 0 for v in about["std"]):
        return "std holds a value that is not positive"
    return None


def _load_saved(path: str):
    """``(config, params, model_state, record)`` of a model saved by ``fjdl train --save``."""
    from fjdl import checkpoint

    try:
        record = checkpoint.read_metadata(path).get(_SAVED)
        if not isinstance(record, dict):
            raise _UsageError(
                f"--checkpoint {path}: an fjdl checkpoint, but not a model saved by fjdl train "
                f"--save (it has no {_SAVED!r} record)"
            )
        config, params, model_state = checkpoint.load_model(path)
    except FileNotFoundError:
        raise _UsageError(f"--checkpoint {path}: no such file") from None
    except IsADirectoryError:
        raise _UsageError(f"--checkpoint {path}: is a directory, not a file") from None
    except OSError as err:
        raise _UsageError(f"--checkpoint {path}: cannot be read: {err.strerror or err}") from None
    except ValueError as err:  # checkpoint.CheckpointError and restore's refusals name the file
        raise _UsageError(f"--checkpoint {err}") from None
    problem = _saved_record_problem(config, record)
    if problem is not None:
        raise _UsageError(f"--checkpoint {path}: its {_SAVED!r} record is damaged: {problem}")
    return config, params, model_state, record


def _probabilities(config, params, model_state, X):
    """Each class's probability, ``(m, C)``: the sigmoid or softmax of the model's output."""
    import numpy as np

    from fjdl import model, nn

    logits, _ = model.apply(config, params, model_state, X)
    if config.output == "sigmoid":
        p = np.asarray(nn.sigmoid(logits.reshape(-1)), np.float64)  # (m,) or (m, 1) logits
        return np.stack([1 - p, p], axis=1)
    return np.asarray(nn.softmax(logits), np.float64)


def _write_predictions(f, target, classes, predicted, probabilities) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow([target, *(f"P({c})" for c in classes)])
    for k, p in zip(predicted.tolist(), probabilities.tolist()):
        writer.writerow([classes[k], *(f"{x:.6g}" for x in p)])


def cmd_predict(args) -> int:
    """``fjdl predict``: the classes and probabilities a ``--save``'d model gives ``--data``."""
    import jax.numpy as jnp
    import numpy as np

    from fjdl import data, tabular, train

    config, params, model_state, record = _load_saved(args.checkpoint)
    classes, target = record["classes"], record["target"]
    try:
        table = tabular.read_table(args.data, target=target, target_required=False)
        X = tabular.select_features(table, record["features"], config.sizes[0])
        Y = None if table.labels is None else tabular.encode_labels(table, classes)
    except tabular.TableError as err:
        raise _UsageError(f"--data {err}") from None
    stats = data.Standardizer(
        jnp.asarray(record["mean"], jnp.float32), jnp.asarray(record["std"], jnp.float32)
    )
    X_std = data.standardize(X, stats)
    predicted = np.asarray(train.predict(config, params, model_state, X_std))
    probabilities = _probabilities(config, params, model_state, X_std)
    m = X_std.shape[0]
    if args.out is None:
        _write_predictions(sys.stdout, target, classes, predicted, probabilities)
        report = sys.stderr
    else:
        try:
            with open(args.out, "w", newline="", encoding="utf-8") as f:
                _write_predictions(f, target, classes, predicted, probabilities)
        except OSError as err:
            print(
                f"fjdl predict: error: --out: could not write {args.out}: {err.strerror or err}",
                file=sys.stderr,
            )
            return FAILURE
        print(f"fjdl predict: {m} predictions written to {args.out}")
        report = sys.stdout
    if Y is not None:
        correct = int(np.sum(predicted == Y))
        print(
            f"accuracy {correct / m:.2%} ({correct} of {m}) against the target {table.target!r} "
            f"of {args.data}",
            file=report,
        )
    return 0


# --------------------------------------------------------------------------------------------------
# fjdl gradcheck


def cmd_gradcheck(args) -> int:
    """``fjdl gradcheck``: backprop of an MLP against a numerical gradient, and the verdict."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fjdl import gradcheck, losses, model
    from fjdl.model import MLP

    sizes, n_out = args.sizes, args.sizes[-1]
    output = "softmax" if n_out > 1 else "sigmoid"  # several output units: class labels
    config = MLP(sizes, activation=args.activation, output=output, batchnorm=args.batchnorm)
    dtype = jnp.float32 if args.float32 else jnp.float64
    with jax.enable_x64(not args.float32):
        k1, k2, k3 = jax.random.split(jax.random.key(args.seed), 3)
        params, state = model.init(k1, config, dtype=dtype)
        X = jax.random.normal(k2, (args.examples, sizes[0]), dtype)
        if output == "softmax":
            Y = jax.random.randint(k3, (args.examples,), 0, n_out)
        else:
            Y = (jax.random.uniform(k3, (args.examples,)) < 0.5).astype(dtype)

        def J(p):
            logits, _ = model.apply(config, p, state, X, train=args.batchnorm)
            return losses.cost(logits, Y, p, output=output, lambd=args.lambd)

        grads = jax.grad(J)(params)
        if args.plant_bug:
            grads = (*grads[:-1], {**grads[-1], "W": 2 * grads[-1]["W"]})
        result = gradcheck.check(J, params, grads, epsilon=args.epsilon)
    classes = f" (softmax output over {n_out} classes)" if n_out > 1 else ""
    print(
        f"fjdl gradcheck: layers {list(sizes)}{classes}, {np.dtype(dtype).name}, "
        f"epsilon {result.epsilon:g}"
    )
    print(result)
    return 0 if result.passed else FAILURE  # great or fine, on the dtype's scale


# --------------------------------------------------------------------------------------------------
# fjdl tune

_BETA_OF = {"momentum": "beta", "rmsprop": "beta", "adam": "beta1"}


def _print_search(args, result, space, seconds) -> None:
    n, n_diverged = len(result.trials), sum(t["diverged"] for t in result.trials)
    trials = f"{n} trials" + (f" ({n_diverged} diverged)" if n_diverged else "")
    print(f"\n{trials} in {seconds:.1f} s (compilation included); the best {min(args.top, n)}:")
    print(result.table(top=args.top))
    for r, space_r in enumerate(result.spaces[1:], start=2):
        ranges = ", ".join(f"{k} in [{s.low:.4g}, {s.high:.4g}]" for k, s in space_r.items())
        print(f"round {r} searched {ranges}")
    best = result.best
    chosen = ", ".join(f"{k}={best[k]:.4g}" for k in space)
    print(
        f"\nbest: {chosen}, hidden {list(best['hidden'])}: dev accuracy "
        f"{best['dev_accuracy']:.2%}, dev cost {best['dev_cost']:.4f} (round {best['round']})"
    )


def cmd_tune(args) -> int:
    """``fjdl tune``: a random, coarse-to-fine search of the learning rate and beta."""
    import jax

    from fjdl import plots, tune
    from fjdl.model import MLP

    data_key, split_key, search_key = jax.random.split(jax.random.key(args.seed), 3)
    d = _load(args, data_key, split_key)
    (X_tr, Y_tr), dev, _ = d.sets
    output = "softmax" if d.n_classes > 2 else "sigmoid"
    sizes = (X_tr.shape[1], *args.hidden, d.n_classes if output == "softmax" else 1)
    config = MLP(sizes, activation=args.activation, output=output)
    space: dict[str, Any] = {"learning_rate": tune.LogUniform(args.lr_min, args.lr_max)}
    beta = _BETA_OF.get(args.optimizer)
    if beta is not None:
        space[beta] = tune.BetaLogScale(0.9, 0.999)
    print(
        f"fjdl tune: {args.dataset} ({X_tr.shape[0]} train / {dev[0].shape[0]} dev), layers "
        f"{list(sizes)}, {args.optimizer}, {_batching(args, X_tr.shape[0])}, {args.epochs} "
        f"epochs; {args.rounds} round(s) of {args.trials} trials over {', '.join(space)}"
    )
    start = time.perf_counter()
    result = tune.coarse_to_fine(
        space,
        X_tr,
        Y_tr,
        dev=dev,
        key=search_key,
        n_trials=args.trials,
        rounds=args.rounds,
        config=config,
        epochs=args.epochs,
        optimizer=args.optimizer,
        batch_size=None if args.full_batch else args.batch_size,
        progress=_progress(args),
    )
    if all(t["diverged"] for t in result.trials):  # no best to report
        print(
            f"fjdl tune: error: all {len(result.trials)} trials diverged (the cost or the "
            f"parameters became NaN or Inf); likely cause: learning rates from --lr-min "
            f"{args.lr_min:g} to --lr-max {args.lr_max:g} are too large, try a smaller --lr-max",
            file=sys.stderr,
        )
        return FAILURE
    _print_search(args, result, space, time.perf_counter() - start)
    if args.no_plot:
        return 0
    title = "random search" if args.rounds == 1 else f"coarse to fine, {args.rounds} rounds"
    return _write_plot(
        "tune",
        args.plot,
        lambda: plots.search_scatter(
            result.trials, args.plot, x="learning_rate", y=beta, title=f"{title}: {args.dataset}"
        ),
    )


# --------------------------------------------------------------------------------------------------
# Entry point

_COMMANDS = {
    "train": cmd_train,
    "predict": cmd_predict,
    "gradcheck": cmd_gradcheck,
    "tune": cmd_tune,
}


def _run(argv) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error(
                "choose a command: train, predict, gradcheck or tune (fjdl --help describes them)"
            )
    except SystemExit as exit_:  # a usage error (2), --help or --version (0)
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    try:
        _check_args(args, argv)
    except _UsageError as err:
        print(f"fjdl {args.command}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    try:
        return _COMMANDS[args.command](args)
    except _UsageError as err:  # a --data or --checkpoint file refused before any work
        print(f"fjdl {args.command}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    # A refusal by the library that the checks above did not foresee: still one line.
    except (ValueError, TypeError, ImportError) as err:
        print(f"fjdl {args.command}: error: {err}", file=sys.stderr)
        return FAILURE
    except KeyboardInterrupt:
        return 130


def main(argv=None) -> int:
    """Run the ``fjdl`` command on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    try:
        status = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
    except BrokenPipeError:
        # The reader of stdout went away (`fjdl train | head -1`). Point stdout at devnull so that
        # Python's flush at exit does not fail again; the recipe of the Python docs (signal module,
        # "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
