"""bench/: the smoke run of ``python -m bench --quick`` (results finite, implementations agree; no
time is asserted), the benchmark's own helpers, and the fast paths of fjdl's training loop that
the benchmark motivated (they must keep fit's behaviour)."""

import json
import math
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import __main__ as bench_main
from bench import _common, _numpy_worker, case_b
from fjdl import data, losses, model, train
from fjdl.model import MLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the smoke run ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_bench_runs_and_implementations_agree(tmp_path):
    path = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| fjdl |" in proc.stdout  # the markdown table
    record = json.loads(path.read_text())
    assert record["env"]["device"] and record["env"]["jax"] == jax.__version__
    assert set(record["cases"]) == {"B", "C", "D", "E"}
    for case, result in record["cases"].items():
        rows = bench_main._rows(result)
        for r in rows:
            if r["status"].startswith(("not installed", "pending")):
                continue  # torch absent, or an API the case needs is missing
            assert r["status"] == "ok", (case, r)
            assert math.isfinite(r["median_s"]) and r["median_s"] > 0, (case, r)
            assert r["min_s"] <= r["median_s"] <= r["max_s"], (case, r)
            assert r["agree"], (case, r)
        ran = {r["impl"] for r in rows if r["status"] == "ok"}
        assert len(ran) >= 3, (case, ran)  # fjdl and at least two peers computed the same thing
    b = record["cases"]["B"]["rows"]
    assert {r["impl"] for r in b if r["status"] == "ok"} >= {
        "fjdl",
        "numpy (course style, subprocess)",
        "jax: scan, examples last",
        "optax + flax linen (scan)",
    }
    costs = [r["final_cost"] for r in b if r["status"] == "ok"]
    np.testing.assert_allclose(costs, costs[0], rtol=1e-4)
    if _common.has_torch():
        assert next(r for r in b if r["impl"] == "torch eager")["status"] == "ok"


def test_cases_option_selects_and_rejects(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_main.main(["--cases", "B,Z"])
    assert "unknown case" in capsys.readouterr().err


# ---- the benchmark's helpers -------------------------------------------------------------------------


def test_timeit_counts_and_orders():
    calls = []
    timing, out = _common.timeit(lambda: calls.append(1) or jnp.ones(3), reps=4, warmup=2)
    assert len(calls) == 6 and timing["reps"] == 4
    assert timing["min_s"] <= timing["median_s"] <= timing["max_s"]
    assert timing["compile_s"] >= 0
    np.testing.assert_array_equal(out, np.ones(3))


def test_rel_diff_is_the_course_measure():
    a, b = [np.array([3.0, 0.0])], [np.array([0.0, 4.0])]
    assert _common.rel_diff(a, b) == pytest.approx(5.0 / 7.0)
    assert _common.rel_diff(a, a) == 0.0


def test_numpy_peer_backprop_equals_jax_grad():
    """The hand-derived course backprop of the numpy peer against jax.grad of fjdl's cost."""
    with jax.enable_x64(True):
        config = MLP(case_b.SIZES)
        params, state = model.init(jax.random.key(3), config, dtype=jnp.float64)
        X, Y = data.make_moons(jax.random.key(4), 40)
        X, Y = X.astype(jnp.float64), Y.astype(jnp.float64)
        lambd = 0.7

        def cost(p):
            logits, _ = model.apply(config, p, state, X)
            return losses.cost(logits, Y, p, output="sigmoid", lambd=lambd)

        want = jax.grad(cost)(params)
    course = {}
    for l, layer in enumerate(params, start=1):
        course[f"W{l}"] = np.asarray(layer["W"]).T
        course[f"b{l}"] = np.asarray(layer["b"])[:, None]
    got = _numpy_worker.forward_backward(course, np.asarray(X).T, np.asarray(Y)[None], lambd)
    for l, layer in enumerate(want, start=1):
        np.testing.assert_allclose(got[f"dW{l}"].T, layer["W"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[f"db{l}"][:, 0], layer["b"], rtol=1e-10, atol=1e-12)


def test_speedups_and_agreement_marks():
    result = {
        "rows": [
            {"impl": "fjdl", "status": "ok", "steps_per_s": 300.0, "param_rel_diff_vs_fjdl": 0.0},
            {
                "impl": "numpy (x)",
                "status": "ok",
                "steps_per_s": 10.0,
                "param_rel_diff_vs_fjdl": 1e-6,
            },
            {"impl": "jax: a", "status": "ok", "steps_per_s": 100.0, "param_rel_diff_vs_fjdl": 0.1},
            {
                "impl": "jax: b",
                "status": "ok",
                "steps_per_s": 200.0,
                "param_rel_diff_vs_fjdl": 1e-5,
            },
            {"impl": "torch eager", "status": "not installed (pip install torch)"},
        ]
    }
    bench_main.mark_agreement("B", result)
    assert [r.get("agree") for r in result["rows"]] == [True, True, False, True, None]
    s = bench_main.speedups("B", result)
    assert s["vs_numpy"] == 30.0 and s["vs_best_plain_jax"] == 1.5 and s["met"] is False
    assert s["best_plain_jax"] == "jax: b"


# ---- fjdl's chunked loop keeps fit's behaviour ------------------------------------------------


@pytest.fixture(scope="module")
def moons():
    X, Y = data.make_moons(jax.random.key(0), 120, noise=0.2)
    return np.asarray(X), np.asarray(Y)


@pytest.mark.parametrize("eval_every, chunk", [(1, 1), (7, 7), (50, 50), (200, 100), (97, 97)])
def test_chunk_size_divides_eval_every(eval_every, chunk):
    assert train._chunk_size(eval_every, 1000) == chunk
    assert eval_every % train._chunk_size(eval_every, 1000) == 0
    assert train._chunk_size(50, 20) == 10  # never longer than the run


def _per_epoch_fit(monkeypatch, *args, **kwargs):
    """fit with chunks switched off: the reference per-epoch loop."""
    with monkeypatch.context() as mp:
        mp.setattr(train, "_chunk_size", lambda eval_every, epochs: 1)
        train.run_epochs.clear_cache()
        try:
            return train.fit(*args, **kwargs)
        finally:
            train.run_epochs.clear_cache()


def test_chunked_run_equals_the_per_epoch_loop(moons, monkeypatch):
    X, Y = moons
    config = MLP((2, 6, 3, 1))
    kw = dict(key=jax.random.key(5), optimizer="gd", learning_rate=0.2, lambd=0.3, epochs=130)
    fast = train.fit(config, X, Y, eval_every=25, dev=(X[:40], Y[:40]), **kw)
    slow = _per_epoch_fit(monkeypatch, config, X, Y, eval_every=25, dev=(X[:40], Y[:40]), **kw)
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-5, atol=1e-6)
    assert int(fast.state.step) == int(slow.state.step) == 130
    assert int(fast.state.epoch) == 130
    for a, b in zip(fast.history, slow.history):
        assert a.shape == (130,)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))  # same epochs evaluated
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    evaluated = np.flatnonzero(~np.isnan(fast.history.dev_cost))
    np.testing.assert_array_equal(evaluated, [24, 49, 74, 99, 124])
    # Same key, same run, bit for bit.
    again = train.fit(config, X, Y, eval_every=25, dev=(X[:40], Y[:40]), **kw)
    chex.assert_trees_all_equal(again.state, fast.state)
    chex.assert_trees_all_equal(again.history, fast.history)


def test_chunked_run_with_minibatches_and_dropout(moons, monkeypatch):
    X, Y = moons
    config = MLP((2, 8, 1), keep_probs=0.8)
    kw = dict(key=jax.random.key(6), optimizer="adam", learning_rate=0.01, epochs=12, batch_size=32)
    fast = train.fit(config, X, Y, eval_every=4, **kw)
    slow = _per_epoch_fit(monkeypatch, config, X, Y, eval_every=4, **kw)
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.history.cost, slow.history.cost, rtol=1e-5)
    np.testing.assert_allclose(fast.history.learning_rate, 0.01)


@pytest.mark.parametrize("eval_every", [4, 100])
def test_divergence_inside_a_chunk_keeps_the_last_finite_state(moons, monkeypatch, eval_every):
    X, _ = moons
    # Large inputs and a large step: gradient descent blows up at epoch 6, in the middle of the
    # second chunk of 4 epochs (eval_every=4) or inside the first one (eval_every=100).
    config = MLP((2, 4, 1), activation="leaky_relu", output="linear")
    args = (config, 10 * X, X[:, 0] + X[:, 1])
    kw = dict(key=jax.random.key(7), optimizer="gd", learning_rate=0.018, epochs=400)
    with pytest.raises(train.TrainingDiverged) as fast:
        train.fit(*args, eval_every=eval_every, **kw)
    with pytest.raises(train.TrainingDiverged) as slow:
        _per_epoch_fit(monkeypatch, *args, eval_every=eval_every, **kw)
    fast, slow = fast.value, slow.value
    assert fast.epoch == slow.epoch < 400
    assert len(fast.history.cost) == fast.epoch
    assert np.all(np.isfinite(fast.history.cost))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(fast.state.params))
    assert int(fast.state.epoch) == fast.epoch  # the state before the epoch that diverged
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-4, atol=1e-5)


def test_early_stopping_on_chunk_ends(moons, monkeypatch):
    X, Y = moons
    config = MLP((2, 12, 1))
    kw = dict(
        key=jax.random.key(8),
        optimizer="adam",
        learning_rate=0.05,
        epochs=300,
        eval_every=10,
        dev=(X[:30], Y[:30]),
        patience=3,
    )
    fast = train.fit(config, X[30:], Y[30:], **kw)
    slow = _per_epoch_fit(monkeypatch, config, X[30:], Y[30:], **kw)
    assert fast.best_epoch == slow.best_epoch
    assert fast.stopped_epoch == slow.stopped_epoch
    assert fast.best_epoch is not None and (fast.best_epoch + 1) % 10 == 0
    chex.assert_trees_all_close(fast.state.params, slow.state.params, rtol=1e-5, atol=1e-6)
