"""Plots with matplotlib (an optional dependency: ``pip install matplotlib``).

Every function draws on a figure it creates with the non-interactive Agg backend and writes it to a
file, so it works on machines without a screen.
"""

import os
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from fjdl import model
from fjdl._types import Params, State

if TYPE_CHECKING:  # matplotlib is optional, and fjdl.train sits above this module's imports
    from matplotlib.axes import Axes

    from fjdl.train import History, TrainState

_PathLike = str | os.PathLike[str]


def _pyplot() -> types.ModuleType:
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - matplotlib is in the test extra
        raise ImportError("plots need matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def decision_boundary(
    ax: "Axes",
    config: model.MLP,
    params: Params,
    model_state: State,
    X: jax.typing.ArrayLike,
    Y: jax.typing.ArrayLike,
    *,
    resolution: int = 200,
    title: str | None = None,
) -> None:
    """Shade ``ax`` by the class the model predicts over the square around the 2-D points ``X``."""
    X = np.asarray(X)
    if X.shape[1] != 2:
        raise ValueError(f"a decision boundary needs 2-D inputs, got X of shape {X.shape}")
    pad = 0.5
    x0 = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, resolution)
    x1 = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, resolution)
    g0, g1 = np.meshgrid(x0, x1)
    grid = np.stack([g0.ravel(), g1.ravel()], axis=1).astype(X.dtype)
    pred = np.asarray(model.predict(config, params, model_state, grid)).reshape(g0.shape)
    ax.contourf(g0, g1, pred, alpha=0.3, cmap="coolwarm" if config.output == "sigmoid" else "tab10")
    ax.scatter(
        X[:, 0],
        X[:, 1],
        c=np.asarray(Y),
        s=12,
        edgecolors="k",
        linewidths=0.3,
        cmap="coolwarm" if config.output == "sigmoid" else "tab10",
    )
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title or "decision boundary")


def cost_curve(ax: "Axes", history: "History", *, title: str = "cost per epoch") -> None:
    """Training cost (and dev cost, when recorded) per epoch."""
    epochs = np.arange(len(history.cost))
    ax.plot(epochs, history.cost, label="train cost")
    if np.any(np.isfinite(history.dev_cost)):
        ax.plot(epochs, history.dev_cost, label="dev cost")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()


def training_report(
    config: model.MLP,
    state: "TrainState",
    history: "History",
    train_data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike],
    path: _PathLike,
) -> _PathLike:
    """Cost curve, and the decision boundary for 2-D inputs, written to ``path``. Returns ``path``."""
    plt = _pyplot()
    two_d = config.sizes[0] == 2
    fig, axes = plt.subplots(1, 2 if two_d else 1, figsize=(11 if two_d else 6, 4.2))
    axes = np.atleast_1d(axes)
    cost_curve(axes[0], history)
    if two_d:
        decision_boundary(axes[1], config, state.params, state.model_state, *train_data)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scatter_trials(ax, trials, xs, ys, cs, has_y: bool):
    """The trials' points on ``ax``: one marker per round, diverged trials as red crosses, the
    best one circled. Returns the last round's points (for the colour bar), or None."""
    rounds = np.array([t.get("round", 1) for t in trials])
    finite = np.isfinite(cs)
    vmin, vmax = (np.nanmin(cs), np.nanmax(cs)) if finite.any() else (0.0, 1.0)
    markers = "os^Dv"
    points = None
    for r in np.unique(rounds):
        sel = (rounds == r) & finite
        points = ax.scatter(
            xs[sel],
            ys[sel],
            c=cs[sel],
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            marker=markers[int(r) % len(markers)],
            edgecolors="k",
            linewidths=0.3,
            label=f"round {int(r)}" if len(np.unique(rounds)) > 1 else None,
        )
    if (~finite).any():
        ax.scatter(
            xs[~finite],
            ys[~finite] if has_y else np.full((~finite).sum(), vmin),
            marker="x",
            c="red",
            label="diverged",
        )
    if "rank" in trials[0]:
        best = min(range(len(trials)), key=lambda i: trials[i]["rank"])
        ax.scatter(
            [xs[best]],
            [ys[best]],
            s=220,
            facecolors="none",
            edgecolors="red",
            linewidths=1.5,
            label="best",
        )
    return points


def search_scatter(
    trials: Iterable[Mapping[str, Any]],
    path: _PathLike,
    *,
    x: str = "learning_rate",
    y: str | None = None,
    color: str = "dev_accuracy",
    title: str = "random search",
) -> _PathLike:
    """Scatter of a search's trials, coloured by ``color``, written to ``path``. Returns ``path``.

    ``x`` is drawn on a log axis; a ``y`` whose name starts with ``beta`` is drawn as ``1 - beta``
    on a log axis (the scale it was sampled on), any other ``y`` on a log axis as well. Without
    ``y`` the metric ``color`` itself goes on the vertical axis. The best trial (rank 1, when the
    records have ranks) is circled; later rounds of a coarse-to-fine search get other markers.

    Args:
      trials: records as in :class:`fjdl.tune.SearchResult` ``.trials``.
      path: the image file to write.
      x, y: names of the hyperparameters on the axes.
      color: the metric that colours the points (default the dev accuracy).
      title: the figure title.
    """
    trials = list(trials)
    if not trials:
        raise ValueError("search_scatter needs at least one trial")
    for name in (x, y, color):
        if name is not None and name not in trials[0]:
            raise ValueError(f"the trials have no {name!r}; they have {sorted(trials[0])}")
    plt = _pyplot()
    xs = np.array([t[x] for t in trials], np.float64)
    cs = np.array([t[color] for t in trials], np.float64)
    is_beta = y is not None and y.startswith("beta")
    if y is None:
        ys = cs
    else:
        ys = np.array([t[y] for t in trials], np.float64)
        ys = 1.0 - ys if is_beta else ys
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    points = _scatter_trials(ax, trials, xs, ys, cs, y is not None)
    ax.set_xscale("log")
    ax.set_xlabel(f"{x} (log scale)")
    if y is None:
        ax.set_ylabel(color.replace("_", " "))
    else:
        ax.set_yscale("log")
        ax.set_ylabel(f"1 - {y} (log scale)" if is_beta else f"{y} (log scale)")
    if points is not None:
        fig.colorbar(points, ax=ax, label=color.replace("_", " "))
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
