"""bench/: the smoke run of ``python -m bench --quick`` (results finite, implementations agree; no
time is asserted) and the benchmark's own helpers. The chunked training loop the benchmark
motivated is tested in test_train.py."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import __main__ as bench_main
from bench import _common, _numpy_worker, case_b
from fjdl import data, losses, model
from fjdl.model import MLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the smoke run ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_bench_runs_and_implementations_agree(tmp_path):
    path = tmp_path / "quick.json"
    proc = subprocess.run(
        # Case F times whole processes of 24 fits: a figure for bench/RESULTS.md, not a smoke test.
        [sys.executable, "-m", "bench", "--quick", "--cases", "B,C,D,E", "--json", str(path)],
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
    shapes = record["cases"]["D"]["shapes"]["rows"]
    padded, per_width = shapes
    assert padded["agree"] and padded["compilations"] == 2  # one init, one training loop
    assert per_width["compilations"] == 2 * record["cases"]["D"]["shapes"]["distinct_widths"]
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


def test_ab_table_gives_each_side_and_the_ratio():
    from bench import ab

    result = {
        "rows": [
            {"impl": "fjdl", "status": "ok", "median_s": 2.0},
            {"impl": "torch eager", "status": "pending"},
        ],
        "convnet": {"rows": [{"impl": "fjdl fit, flax convnet", "status": "ok", "median_s": 1.0}]},
    }
    assert ab._medians(result) == {"fjdl": 2.0, "fjdl fit, flax convnet": 1.0}
    table = ab.render({"C": {"fjdl": {"base": [2.0, 2.2], "new": [1.9, 2.1]}}})
    assert "| fjdl | 2 / 2.2 | 1.9 / 2.1 | 0.952 |" in table
