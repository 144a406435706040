"""Plots with matplotlib (an optional dependency: ``pip install matplotlib``).

Every function draws on a figure it creates with the non-interactive Agg backend and writes it to a
file, so it works on machines without a screen.
"""

import numpy as np

from fjdl import model


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - matplotlib is in the test extra
        raise ImportError("plots need matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def decision_boundary(ax, config, params, model_state, X, Y, *, resolution=200, title=None):
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


def cost_curve(ax, history, *, title="cost per epoch"):
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


def training_report(config, state, history, train_data, path):
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
