"""The ``fjdl`` command: ``fjdl train``, ``fjdl gradcheck`` and ``fjdl tune``.

Bad flags and bad values end with one line on stderr and exit status 2, never a traceback.
"""

import argparse
import sys
import time

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _hidden_sizes(text: str) -> tuple[int, ...]:
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


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_dataset_flags(p):
    """The built-in dataset flags that ``train`` and ``tune`` share (``fjdl.data.DATASETS``)."""
    p.add_argument(
        "--dataset", default="moons", choices=["moons", "circles", "spirals", "blobs", "digits"]
    )
    p.add_argument(
        "--n-samples", type=_positive_int, default=600, help="examples to generate (2-D sets)"
    )


def _add_train_flags(p):
    _add_dataset_flags(p)
    p.add_argument(
        "--noise", type=float, default=None, help="noise of the 2-D sets (default: each set's own)"
    )
    p.add_argument(
        "--hidden", type=_hidden_sizes, default=(16, 8), help="hidden widths, e.g. 20,7,5"
    )
    p.add_argument(
        "--activation", default="relu", choices=["relu", "tanh", "leaky_relu", "sigmoid"]
    )
    p.add_argument("--optimizer", default="adam", choices=["gd", "momentum", "rmsprop", "adam"])
    p.add_argument("--lr", type=float, default=0.01, help="learning rate alpha")
    p.add_argument("--beta", type=float, default=0.9, help="momentum / RMSprop beta")
    p.add_argument("--beta1", type=float, default=0.9, help="Adam beta1")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2")
    p.add_argument("--epsilon", type=float, default=1e-8, help="RMSprop / Adam epsilon")
    p.add_argument(
        "--decay",
        default="none",
        choices=["none", "inverse_time", "exponential", "inverse_sqrt"],
        help="per-epoch learning-rate decay",
    )
    p.add_argument("--decay-rate", type=float, default=1.0, help="inverse_time decay rate")
    p.add_argument("--decay-interval", type=_positive_int, default=1, help="epochs per decay step")
    p.add_argument("--decay-base", type=float, default=0.95, help="exponential decay base")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="mini-batch size")
    p.add_argument("--full-batch", action="store_true", help="batch gradient descent")
    p.add_argument("--epochs", type=_positive_int, default=200)
    p.add_argument("--lambd", type=float, default=0.0, help="L2 regularization lambda")
    p.add_argument("--l1", type=float, default=0.0, help="L1 regularization strength")
    p.add_argument(
        "--keep-prob", type=float, default=1.0, help="dropout keep_prob on hidden layers"
    )
    p.add_argument("--batchnorm", action="store_true", help="batch normalization on hidden layers")
    p.add_argument(
        "--init", default="he", choices=["he", "xavier", "glorot", "random_normal", "zeros"]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=_positive_int, default=None, help="early stopping patience")
    p.add_argument("--min-delta", type=float, default=0.0, help="early stopping min improvement")
    p.add_argument("--human-error", type=float, default=0.0, help="human-level (Bayes) error")
    p.add_argument("--plot", default="fjdl_train.png", help="where to write the plot")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fjdl", description="fjdl: train, check and tune networks with fjdl.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    train_p = sub.add_parser("train", help="train an MLP on a built-in dataset and report")
    _add_train_flags(train_p)
    gc = sub.add_parser("gradcheck", help="check backprop against a numerical gradient")
    gc.add_argument(
        "--sizes", type=_hidden_sizes, default=(4, 5, 3, 1), help="all widths, e.g. 4,5,3,1"
    )
    gc.add_argument(
        "--activation", default="relu", choices=["relu", "tanh", "leaky_relu", "sigmoid"]
    )
    gc.add_argument("--examples", type=_positive_int, default=10)
    gc.add_argument("--lambd", type=float, default=0.0)
    gc.add_argument("--batchnorm", action="store_true")
    gc.add_argument("--epsilon", type=float, default=1e-7)
    gc.add_argument("--float32", action="store_true", help="check in float32 (default float64)")
    gc.add_argument("--plant-bug", action="store_true", help="double dW of the last layer")
    gc.add_argument("--seed", type=int, default=0)
    tune_p = sub.add_parser(
        "tune", help="random (coarse-to-fine) search of the learning rate and beta"
    )
    _add_tune_flags(tune_p)
    return parser


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_tune_flags(p):
    _add_dataset_flags(p)
    p.add_argument("--trials", type=_positive_int, default=16, help="trials per round")
    p.add_argument(
        "--rounds", type=_positive_int, default=2, help="search rounds (1: plain random search)"
    )
    p.add_argument("--epochs", type=_positive_int, default=60, help="epochs per trial")
    p.add_argument("--optimizer", default="adam", choices=["gd", "momentum", "rmsprop", "adam"])
    p.add_argument(
        "--hidden", type=_hidden_sizes, default=(16, 8), help="hidden widths, e.g. 20,7,5"
    )
    p.add_argument(
        "--activation", default="relu", choices=["relu", "tanh", "leaky_relu", "sigmoid"]
    )
    p.add_argument("--lr-min", type=_positive_float, default=1e-4, help="smallest learning rate")
    p.add_argument("--lr-max", type=_positive_float, default=1.0, help="largest learning rate")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="mini-batch size")
    p.add_argument("--full-batch", action="store_true", help="batch gradient descent")
    p.add_argument("--top", type=_positive_int, default=10, help="rows of the ranked table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="fjdl_tune.png", help="where to write the scatter plot")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")


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


def cmd_train(args) -> int:
    import jax

    from fjdl import data, diagnose, train
    from fjdl.model import MLP

    key = jax.random.key(args.seed)
    data_key, split_key, fit_key = jax.random.split(key, 3)
    ds = data.load_dataset(args.dataset, data_key, n=args.n_samples, noise=args.noise)
    (X_tr, Y_tr), (X_dev, Y_dev), (X_te, Y_te) = data.split(split_key, ds.X, ds.Y, (0.6, 0.2, 0.2))
    stats = data.fit_standardizer(X_tr)
    X_tr, X_dev, X_te = (data.standardize(x, stats) for x in (X_tr, X_dev, X_te))
    sizes = (ds.X.shape[1], *args.hidden, ds.n_classes if ds.output == "softmax" else 1)
    keep = None if args.keep_prob == 1.0 else args.keep_prob
    config = MLP(
        sizes,
        activation=args.activation,
        output=ds.output,
        keep_probs=keep,
        batchnorm=args.batchnorm,
    )
    print(
        f"fjdl train: {args.dataset} ({X_tr.shape[0]} train / {X_dev.shape[0]} dev / "
        f"{X_te.shape[0]} test), layers {list(sizes)}, {args.optimizer} lr={args.lr}, "
        f"{'full batch' if args.full_batch else f'mini-batches of {args.batch_size}'}, "
        f"{args.epochs} epochs"
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
            dev=(X_dev, Y_dev),
            patience=args.patience,
            min_delta=args.min_delta,
            scheme=args.init,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        diverged = None
    except train.TrainingDiverged as err:
        print(f"fjdl: {err}", file=sys.stderr)
        result, diverged = train.FitResult(err.state, err.history, None, None), err.epoch
    seconds = time.perf_counter() - start
    state = result.state
    rows = []
    for name, (Xs, Ys) in (
        ("train", (X_tr, Y_tr)),
        ("dev", (X_dev, Y_dev)),
        ("test", (X_te, Y_te)),
    ):
        m = train.evaluate(config, state.params, state.model_state, Xs, Ys)
        rows.append((name, m["cost"], m["accuracy"]))
    print(f"\n{'set':<6} {'cost':>9} {'accuracy':>9}")
    for name, cost, acc in rows:
        print(f"{name:<6} {cost:>9.4f} {acc:>9.2%}")
    epochs_run = len(result.history.cost)
    print(f"\n{epochs_run} epochs in {seconds:.1f} s (compilation included)")
    if result.best_epoch is not None:
        print(f"early stopping: best dev cost at epoch {result.best_epoch}, parameters restored")
    d = diagnose.diagnose(1 - rows[0][2], 1 - rows[1][2], args.human_error)
    print(f"diagnosis: {d}")
    if not args.no_plot:
        from fjdl import plots

        path = plots.training_report(config, state, result.history, (X_tr, Y_tr), args.plot)
        print(f"plot written to {path}")
    return 1 if diverged is not None else 0


def cmd_gradcheck(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fjdl import gradcheck, losses, model
    from fjdl.model import MLP

    sizes = args.sizes
    if len(sizes) < 2:
        raise ValueError("--sizes needs at least an input and an output width")
    config = MLP(sizes, activation=args.activation, batchnorm=args.batchnorm)
    dtype = jnp.float32 if args.float32 else jnp.float64
    with jax.enable_x64(not args.float32):
        k1, k2, k3 = jax.random.split(jax.random.key(args.seed), 3)
        params, state = model.init(k1, config, dtype=dtype)
        X = jax.random.normal(k2, (args.examples, sizes[0]), dtype)
        Y = (jax.random.uniform(k3, (args.examples,)) < 0.5).astype(dtype)

        def J(p):
            logits, _ = model.apply(config, p, state, X, train=args.batchnorm)
            return losses.cost(logits, Y, p, lambd=args.lambd)

        grads = jax.grad(J)(params)
        if args.plant_bug:
            grads = (*grads[:-1], {**grads[-1], "W": 2 * grads[-1]["W"]})
        result = gradcheck.check(J, params, grads, epsilon=args.epsilon)
    print(f"fjdl gradcheck: layers {list(sizes)}, {np.dtype(dtype).name}, epsilon {args.epsilon}")
    print(result)
    return 0 if result.difference < 1e-5 else 1


_BETA_OF = {"momentum": "beta", "rmsprop": "beta", "adam": "beta1"}


def cmd_tune(args) -> int:
    import jax

    from fjdl import data, tune
    from fjdl.model import MLP

    if not args.lr_min < args.lr_max:
        raise ValueError(
            f"--lr-min must be < --lr-max, got --lr-min {args.lr_min} and --lr-max {args.lr_max}"
        )
    key = jax.random.key(args.seed)
    data_key, split_key, search_key = jax.random.split(key, 3)
    ds = data.load_dataset(args.dataset, data_key, n=args.n_samples)
    (X_tr, Y_tr), (X_dev, Y_dev), _ = data.split(split_key, ds.X, ds.Y, (0.6, 0.2, 0.2))
    stats = data.fit_standardizer(X_tr)
    X_tr, X_dev = data.standardize(X_tr, stats), data.standardize(X_dev, stats)
    sizes = (ds.X.shape[1], *args.hidden, ds.n_classes if ds.output == "softmax" else 1)
    config = MLP(sizes, activation=args.activation, output=ds.output)
    space = {"learning_rate": tune.LogUniform(args.lr_min, args.lr_max)}
    beta = _BETA_OF.get(args.optimizer)
    if beta is not None:
        space[beta] = tune.BetaLogScale(0.9, 0.999)
    batching = "full batch" if args.full_batch else f"mini-batches of {args.batch_size}"
    print(
        f"fjdl tune: {args.dataset} ({X_tr.shape[0]} train / {X_dev.shape[0]} dev), layers "
        f"{list(sizes)}, {args.optimizer}, {batching}, {args.epochs} epochs; "
        f"{args.rounds} round(s) of {args.trials} trials over {', '.join(space)}"
    )
    start = time.perf_counter()
    result = tune.coarse_to_fine(
        space,
        X_tr,
        Y_tr,
        dev=(X_dev, Y_dev),
        key=search_key,
        n_trials=args.trials,
        rounds=args.rounds,
        config=config,
        epochs=args.epochs,
        optimizer=args.optimizer,
        batch_size=None if args.full_batch else args.batch_size,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    n = len(result.trials)
    print(f"\n{n} trials in {seconds:.1f} s (compilation included); the best {min(args.top, n)}:")
    print(result.table(top=args.top))
    for r, space_r in enumerate(result.spaces[1:], start=2):
        ranges = ", ".join(f"{k} in [{s.low:.4g}, {s.high:.4g}]" for k, s in space_r.items())
        print(f"round {r} searched {ranges}")
    best = result.best
    chosen = ", ".join(f"{k}={best[k]:.4g}" for k in space)
    print(
        f"\nbest: {chosen}, hidden {list(best['hidden'])}: dev accuracy "
        f"{best['dev_accuracy']:.2%}, dev cost {best['dev_cost']:.4f} (round {best['round'] + 1})"
    )
    if not args.no_plot:
        from fjdl import plots

        title = "random search" if args.rounds == 1 else f"coarse to fine, {args.rounds} rounds"
        path = plots.search_scatter(
            result.trials, args.plot, x="learning_rate", y=beta, title=f"{title}: {args.dataset}"
        )
        print(f"plot written to {path}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE_ERROR
    commands = {"train": cmd_train, "gradcheck": cmd_gradcheck, "tune": cmd_tune}
    try:
        return commands[args.command](args)
    except (ValueError, TypeError) as err:
        print(f"fjdl {args.command}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
