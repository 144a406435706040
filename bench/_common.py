"""Timing, environment and agreement helpers shared by the benchmark cases."""

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def block(x):
    """Wait for every JAX array in ``x`` (other leaves, e.g. numpy or torch, pass through).

    Without JAX arrays JAX is not touched, so a PyTorch subprocess never starts XLA's threads.
    """
    if any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(x)):
        return jax.block_until_ready(x)
    return x


def timeit(
    fn: Callable[[], Any],
    *,
    reps: int,
    warmup: int = 1,
    warmup_fn: Callable[[], Any] | None = None,
    warmup_fraction: float = 1.0,
) -> tuple[dict, Any]:
    """Time ``fn()``: ``warmup`` untimed calls (the first one compiles), then ``reps`` timed ones.

    Every call is followed by ``jax.block_until_ready`` on its result, inside the timed region.
    ``warmup_fn`` (default ``fn``) is what the warm-up calls run: a shorter run of the same
    compiled step, doing ``warmup_fraction`` of ``fn``'s work, for peers that loop in Python.
    Returns ``({"first_s", "median_s", "min_s", "max_s", "reps", "compile_s"}, last result)``;
    ``compile_s`` is the first call's time minus the steady-state time of its work (tracing and
    compiling), and ``None`` when there was no warm-up call.
    """
    first = None
    out = None
    warmup_fn = warmup_fn or fn
    for i in range(warmup):
        t0 = time.perf_counter()
        block(warmup_fn())
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = block(fn())
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "first_s": first,
        "compile_s": None if first is None else max(first - median * warmup_fraction, 0.0),
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "reps": reps,
    }, out


def env_info() -> dict:
    """Device, versions and thread counts, for the JSON record."""
    info = {
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        "n_devices": jax.device_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "env": {
            k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "XLA_FLAGS")
        },
    }
    for name in ("jaxlib", "optax", "flax", "torch", "threadpoolctl"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def rel_diff(a, b) -> float:
    """``||a - b|| / (||a|| + ||b||)`` over lists of arrays (the course's gradient-check measure)."""
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in a])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in b])
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom else 0.0


def flat_params(params) -> list[np.ndarray]:
    """fjdl-layout parameters ``({"W": (n_in, n_out), "b"}, ...)`` as a flat list W1, b1, W2, ..."""
    out = []
    for layer in params:
        out += [np.asarray(layer["W"]), np.asarray(layer["b"])]
    return out


def row(impl: str, timing: dict | None, *, status: str = "ok", **extra) -> dict:
    """One result row: the implementation, its timing and case-specific figures."""
    r = {"impl": impl, "status": status}
    if timing is not None:
        r.update(timing)
    r.update(extra)
    return r


def pending(impl: str, why: str) -> dict:
    return row(impl, None, status=f"pending: {why}")


def error(impl: str, exc: Exception) -> dict:
    """The row of a peer that raised: reported, not fatal to the run."""
    return row(impl, None, status=f"error: {type(exc).__name__}: {exc}"[:200])


def not_installed(impl: str, what: str) -> dict:
    return row(impl, None, status=f"not installed ({what})")


NUMPY_DROPPED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run_numpy(case: str, arrays: dict, reps: int, timeout: float = 600) -> dict:
    """Run a numpy peer in a subprocess without ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``.

    Those variables (set for older OpenBLAS builds) slow a current numpy; they are removed for this
    subprocess only. Returns the worker's JSON plus ``dropped_env`` (what was removed).
    """
    import json
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ)
    dropped = {k: env.pop(k) for k in NUMPY_DROPPED_ENV if k in env}
    with tempfile.TemporaryDirectory() as tmp:
        path_in, path_out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.json")
        np.savez(path_in, **arrays)
        subprocess.run(
            [sys.executable, "-m", "bench._numpy_worker", case, path_in, path_out, str(reps)],
            env=env,
            check=True,
            timeout=timeout,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        with open(path_out) as f:
            out = json.load(f)
    out["dropped_env"] = dropped
    return out


def run_subprocess(
    module: str, func: str, kwargs: dict, timeout: float = 600, extra_env: dict | None = None
):
    """``module.func(**kwargs)`` in a fresh Python process; returns its (pickled) result.

    ``extra_env`` is added to the child's environment (e.g. ``XLA_FLAGS``, read when JAX starts).

    PyTorch peers run this way: in a process where XLA's thread pool is alive, PyTorch's own
    intra-op threads contend with it on a 2-core machine and eager PyTorch ran 5-40x slower.
    """
    import pickle
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path_in, path_out = os.path.join(tmp, "in.pkl"), os.path.join(tmp, "out.pkl")
        with open(path_in, "wb") as f:
            pickle.dump(kwargs, f)
        subprocess.run(
            [sys.executable, "-m", "bench._subproc", module, func, path_in, path_out],
            check=True,
            timeout=timeout,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env={**os.environ, **(extra_env or {})},
        )
        with open(path_out, "rb") as f:
            return pickle.load(f)
