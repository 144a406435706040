"""The ``fjdl`` command: ``fjdl train``, ``fjdl gradcheck`` and ``fjdl tune``.

Every flag is checked before any work: a bad flag, a bad value, or a flag that the other flags make
pointless ends with one line on stderr that names the flag, exit status 2, and nothing on stdout.
A failure while running (a run that diverges, a plot that cannot be written) ends with one line on
stderr and exit status 1. A reader that closes stdout early (``fjdl train | head -1``) ends the
command quietly, exit status 1. Flags are never abbreviated: ``--epoch`` is not ``--epochs``.
"""

import argparse
import math
import os
import sys
import time

from fjdl import __version__

USAGE_ERROR = 2
FAILURE = 1
OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")
ACTIVATIONS = ("relu", "tanh", "leaky_relu", "sigmoid")


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


def _add_train_flags(p):
    _add_dataset_flags(p)
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
    p.add_argument("--epsilon", type=_positive, default=1e-7, help="step of the numerical gradient")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fjdl", description="fjdl: train, check and tune networks with fjdl.")
    parser.add_argument("--version", action="version", version=f"fjdl {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_train_flags(sub.add_parser("train", help="train an MLP on a built-in dataset and report"))
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
    ]


def _pointless_shared_flags(a):
    return [
        ("--n-samples", a.dataset == "digits", "with --dataset digits (1,797 fixed images)"),
        ("--batch-size", a.full_batch, "with --full-batch"),
        ("--plot", a.no_plot, "with --no-plot"),
    ]


def _check_plot(path: str) -> None:
    """Refuse a plot file that cannot be written, before any training."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise _UsageError(f"--plot {path} is a directory; give a file name such as {path}/x.png")
    if not os.path.isdir(directory):
        raise _UsageError(f"--plot {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise _UsageError(f"--plot {path}: the directory {directory} is not writable")
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
    if args.command in ("train", "tune") and not args.no_plot:
        _check_plot(args.plot)


# --------------------------------------------------------------------------------------------------
# Shared pieces of the commands


def _load(args, data_key, split_key):
    """The dataset, split 60/20/20 and standardized with the training part's statistics."""
    from fjdl import data

    ds = data.load_dataset(
        args.dataset, data_key, n=args.n_samples, noise=getattr(args, "noise", None)
    )
    parts = data.split(split_key, ds.X, ds.Y, (0.6, 0.2, 0.2))
    stats = data.fit_standardizer(parts[0][0])
    return ds, [(data.standardize(X, stats), Y) for X, Y in parts]


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


def _optimizer(args):
    from functools import partial

    from fjdl import optim

    if args.optimizer == "gd":
        return optim.gd
    if args.optimizer == "momentum":
        return partial(optim.momentum, beta=args.beta)
    if args.optimizer == "rmsprop":
        return partial(optim.rmsprop, beta=args.beta, epsilon=args.epsilon)
    return partial(optim.adam, beta1=args.beta1, beta2=args.beta2, epsilon=args.epsilon)


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
    import jax

    from fjdl import plots, train
    from fjdl.model import MLP

    data_key, split_key, fit_key = jax.random.split(jax.random.key(args.seed), 3)
    ds, sets = _load(args, data_key, split_key)
    (X_tr, Y_tr), dev, _ = sets
    sizes = (ds.X.shape[1], *args.hidden, ds.n_classes if ds.output == "softmax" else 1)
    keep = None if args.keep_prob == 1.0 else args.keep_prob
    config = MLP(
        sizes,
        activation=args.activation,
        output=ds.output,
        keep_probs=keep,
        batchnorm=args.batchnorm,
    )
    m_tr, m_dev, m_te = (X.shape[0] for X, _ in sets)
    print(
        f"fjdl train: {args.dataset} ({m_tr} train / {m_dev} dev / {m_te} test), layers "
        f"{list(sizes)}, {args.optimizer} lr={args.lr}, {_batching(args, m_tr)}, {args.epochs} epochs"
    )
    start = time.perf_counter()
    try:
        result = train.fit(
            config,
            X_tr,
            Y_tr,
            key=fit_key,
            optimizer=_optimizer(args),
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
    if args.no_plot:
        return 0
    return _write_plot(
        "train",
        args.plot,
        lambda: plots.training_report(config, result.state, result.history, sets[0], args.plot),
    )


# --------------------------------------------------------------------------------------------------
# fjdl gradcheck


def cmd_gradcheck(args) -> int:
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
        f"epsilon {args.epsilon}"
    )
    print(result)
    return 0 if result.difference < 1e-5 else FAILURE


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
    import jax

    from fjdl import plots, tune
    from fjdl.model import MLP

    data_key, split_key, search_key = jax.random.split(jax.random.key(args.seed), 3)
    ds, ((X_tr, Y_tr), dev, _) = _load(args, data_key, split_key)
    sizes = (ds.X.shape[1], *args.hidden, ds.n_classes if ds.output == "softmax" else 1)
    config = MLP(sizes, activation=args.activation, output=ds.output)
    space = {"learning_rate": tune.LogUniform(args.lr_min, args.lr_max)}
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

_COMMANDS = {"train": cmd_train, "gradcheck": cmd_gradcheck, "tune": cmd_tune}


def _run(argv) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("choose a command: train, gradcheck or tune (fjdl --help describes them)")
    except SystemExit as exit_:  # a usage error (2), --help or --version (0)
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    try:
        _check_args(args, argv)
    except _UsageError as err:
        print(f"fjdl {args.command}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    try:
        return _COMMANDS[args.command](args)
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
