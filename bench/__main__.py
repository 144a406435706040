"""``python -m bench [--quick] [--cases B,C,D,E] [--json PATH]``: run the side-by-side benchmarks.

Each case warms up (compiles) first, then times several repetitions; ``jax.block_until_ready``
closes every timed JAX call; compile time is reported apart from the steady-state median (with min
and max). A markdown table goes to stdout, the figures (with device, versions and thread counts) to
``bench/results/<name>.json`` or ``--json``. Every case also checks that the implementations compute
the same thing (``agree`` in each row, tolerances in ``TOLERANCES``).
"""

import argparse
import datetime
import json
import math
import os
import sys
import time

CASES = {
    "B": ("course-size full-batch training (2-20-7-5-1, 300 examples, GD)", "bench.case_b"),
    "C": ("MNIST-size epoch (784-512-256-10, dropout, Adam, batches of 256)", "bench.case_c"),
    "D": ("caviar search: 64 course-size models", "bench.case_d"),
    "E": ("gradient check, float64, every coordinate", "bench.case_e"),
    "F": ("24 fit calls written the natural way (4 optimizers x decay x 3 seeds)", "bench.case_f"),
}

TOLERANCES = {
    # B: 10,000 float32 steps; implementations differ in summation order only.
    "B": {"param_rel_diff_vs_fjdl": 1e-3},
    # C: 3 full-batch Adam steps without dropout from the same parameters.
    "C": {"check_param_rel_diff_vs_fjdl": 1e-4},
    # D: final cost of every model against train_many's: the median within 1e-4, and at most a
    # tenth of the models (the chaotic ones at the largest rates) off by more than 1e-3.
    "D": {
        "median_abs_cost_diff_vs_first": 1e-4,
        "frac_models_off_by_1e_3": 0.1,
        # the convnets: 3 epochs of Adam, train_many against the hand-written vmap of a scan.
        "param_rel_diff_vs_first": 1e-3,
        # the shape search: widths padded against one call per width (float rounding only).
        "max_abs_cost_diff_vs_per_width": 1e-4,
    },
    # E: numerical gradients (float64, epsilon 1e-7) against jax.grad.
    "E": {"rel_diff_vs_jax_grad": 1e-6},
    "F": {},
}

TARGETS = {
    "B": "fjdl >= 15x numpy and >= 2x the best plain-JAX version",
    "C": "fjdl >= 1.2x the best plain-JAX version, >= 1.5x PyTorch eager, >= 65% of peak; "
    "fit of a flax convnet within 5% of a hand-written flax + optax scan",
    "D": "train_many >= 2x the sequential fit calls; several widths in one compilation",
    "E": "fjdl >= 10x the numpy loop",
    "F": "decay on/off and new values compile nothing: the warm pass well under the cold one",
}


def _rows(result):
    if "networks" in result:
        return [r for net in result["networks"] for r in net["rows"]]
    return result["rows"] + result.get("convnet", {}).get("rows", [])


def _all_rows(result):
    """Every row that agreement is checked on (the shape search's too, which has no timing)."""
    return _rows(result) + result.get("shapes", {}).get("rows", [])


def mark_agreement(case: str, result: dict) -> None:
    """Set ``agree`` on every row that ran: its difference figures within ``TOLERANCES[case]``."""
    for r in _all_rows(result):
        if r["status"] != "ok":
            continue
        checks = [(k, r.get(k)) for k in TOLERANCES[case] if r.get(k) is not None]
        r["agree"] = all(math.isfinite(v) and v <= TOLERANCES[case][k] for k, v in checks)


def _ok(rows, name):
    for r in rows:
        if r["impl"] == name and r["status"] == "ok":
            return r
    return None


def speedups(case: str, result: dict) -> dict:
    """The target ratios of a case (``None`` where a peer did not run)."""
    rows = _rows(result)
    out: dict = {"target": TARGETS[case]}
    if case == "B":
        fj = _ok(rows, "fjdl")
        jax_rows = [r for r in rows if r["impl"].startswith("jax") and r["status"] == "ok"]
        npy = next((r for r in rows if r["impl"].startswith("numpy") and r["status"] == "ok"), None)
        if fj and npy:
            out["vs_numpy"] = fj["steps_per_s"] / npy["steps_per_s"]
        if fj and jax_rows:
            best = max(jax_rows, key=lambda r: r["steps_per_s"])
            out["vs_best_plain_jax"] = fj["steps_per_s"] / best["steps_per_s"]
            out["best_plain_jax"] = best["impl"]
        if "vs_numpy" in out and "vs_best_plain_jax" in out:
            out["met"] = out["vs_numpy"] >= 15 and out["vs_best_plain_jax"] >= 2
    elif case == "C":
        fj, jx, te = (
            _ok(rows, "fjdl"),
            _ok(rows, "jax: hand-written scan"),
            _ok(rows, "torch eager"),
        )
        if fj:
            out["fraction_of_peak"] = fj["fraction_of_peak"]
        if fj and jx:
            out["vs_plain_jax"] = fj["examples_per_s"] / jx["examples_per_s"]
        if fj and te:
            out["vs_torch_eager"] = fj["examples_per_s"] / te["examples_per_s"]
        cv = result.get("convnet", {}).get("rows", [])
        cf, cs = _ok(cv, "fjdl fit, flax convnet"), _ok(cv, "optax + flax linen: hand-written scan")
        if cf and cs:
            out["convnet_fit_vs_scan"] = cf["examples_per_s"] / cs["examples_per_s"]
        if fj and jx and te:
            out["met"] = (
                out["vs_plain_jax"] >= 1.2
                and out["vs_torch_eager"] >= 1.5
                and out["fraction_of_peak"] >= 0.65
                and out.get("convnet_fit_vs_scan", 0) >= 0.95
            )
    elif case == "D":
        tm, seq = _ok(rows, "fjdl.tune.train_many"), _ok(rows, "fjdl.train.fit x N, sequential")
        one = _ok(rows, "fjdl.tune.train_many, vmapped loop on one thread")
        if tm and seq:
            out["vs_sequential"] = seq["median_s"] / tm["median_s"]
            out["met"] = out["vs_sequential"] >= 2
        if tm and one:
            out["threads_vs_one_thread"] = one["median_s"] / tm["median_s"]
        cv = result.get("convnet", {}).get("rows", [])
        if len(cv) == 2 and all(r["status"] == "ok" for r in cv):
            out["convnet_train_many_vs_scan"] = cv[1]["median_s"] / cv[0]["median_s"]
        sh = result.get("shapes", {}).get("rows", [])
        if len(sh) == 2:
            out["shape_search_cold_speedup"] = sh[1]["cold_s"] / sh[0]["cold_s"]
            if "met" in out:
                # one program for the start states (inits), one for training: for any widths
                out["met"] = out["met"] and sh[0]["compilations"] <= 2
        cores = _ok(rows, "fjdl.tune.train_many, one CPU device per core")
        if cores and seq:
            out["vs_sequential_all_cores"] = seq["median_s"] / cores["median_s"]
    elif case == "F":
        by = {r["impl"]: r for r in rows if r["status"] == "ok"}
        new, old = by.get("fit x 24, decay_rate"), by.get("fit x 24, lambda")
        if new:
            out["decay_rate_cold_over_warm"] = new["cold_s"] / new["warm_s"]
            out["met"] = new["warm_s"] * 3 < new["cold_s"]
        if new and old:
            out["lambda_cold_vs_decay_rate_cold"] = old["cold_s"] / new["cold_s"]
    elif case == "E":
        net = result["networks"][-1]
        fj = _ok(net["rows"], "fjdl.gradcheck.numerical_gradient_mlp")
        npy = next((r for r in net["rows"] if r["impl"].startswith("numpy")), None)
        if fj and npy and npy["status"] == "ok":
            out["vs_numpy_loop"] = npy["median_s"] / fj["median_s"]
            out["met"] = out["vs_numpy_loop"] >= 10
    return out


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.2e}"
        return f"{x:.{digits}g}"
    return str(x)


METRICS = {
    "B": [
        ("steps/s", "steps_per_s"),
        ("final cost", "final_cost"),
        ("param diff", "param_rel_diff_vs_fjdl"),
    ],
    "C": [
        ("examples/s", "examples_per_s"),
        ("GFLOP/s", "gflops"),
        ("of peak", "fraction_of_peak"),
        ("check diff", "check_param_rel_diff_vs_fjdl"),
    ],
    "D": [
        ("models/s", "models_per_s"),
        ("model-steps/s", "model_steps_per_s"),
        ("median cost diff", "median_abs_cost_diff_vs_first"),
        ("max cost diff", "max_abs_cost_diff_vs_first"),
    ],
    "E": [("diff vs jax.grad", "rel_diff_vs_jax_grad")],
}


def table(case: str, rows: list) -> str:
    head = ["implementation", "median s", "min s", "max s", "compile s"]
    head += [h for h, _ in METRICS[case]] + ["agree"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            cells = [r["impl"], r["status"]] + [""] * (len(head) - 2)
        else:
            cells = [r["impl"]] + [
                _fmt(r.get(k)) for k in ("median_s", "min_s", "max_s", "compile_s")
            ]
            cells += [_fmt(r.get(k)) for _, k in METRICS[case]]
            cells.append("yes" if r.get("agree") else "NO")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(case: str, result: dict) -> str:
    title, _ = CASES[case]
    out = [f"### {case}. {title}", ""]
    if case == "C":
        p = result["peak"]
        out += [
            f"m = {result['m']}; FLOPs per epoch = {result['flops_formula']} = "
            f"{result['flops_per_epoch']:.3e}; float32 matmul peak ({p['n']}x{p['n']}): "
            f"{p['gflops']:.1f} GFLOP/s (best {p['best_gflops']:.1f})",
            "",
        ]
    if case == "F":
        out += [
            "| implementation | cold s | warm s | final cost |",
            "|---|---|---|---|",
        ]
        for r in result["rows"]:
            if r["status"] != "ok":
                out.append(f"| {r['impl']} | {r['status']} | | |")
                continue
            out.append(
                f"| {r['impl']} | {_fmt(r['cold_s'])} | {_fmt(r['warm_s'])} | "
                f"{_fmt(r['final_cost'])} |"
            )
        out.append("")
    elif case == "E":
        for net in result["networks"]:
            out += [
                f"{net['network']} ({net['n_params']} parameters)",
                "",
                table(case, net["rows"]),
                "",
            ]
    else:
        out += [table(case, result["rows"]), ""]
    if case == "D" and "convnet" in result:
        cv = result["convnet"]
        out += [
            f"ConvNet (8, 16) on {cv['m']} digits, {cv['n_models']} models, {cv['epochs']} "
            f"epochs of Adam in batches of {cv['batch_size']}:",
            "",
            "| implementation | median s | compile s | models/s | param diff vs first | agree |",
            "|---|---|---|---|---|---|",
        ]
        for r in cv["rows"]:
            out.append(
                f"| {r['impl']} | {_fmt(r.get('median_s'))} | {_fmt(r.get('compile_s'))} | "
                f"{_fmt(r.get('models_per_s'))} | {_fmt(r.get('param_rel_diff_vs_first'))} | "
                f"{'yes' if r.get('agree') else 'NO'} |"
            )
        sh = result["shapes"]
        out += [
            "",
            f"Shape search: {sh['n_models']} models 2-w-1, w in [5, 50] ({sh['distinct_widths']} "
            f"distinct), {sh['epochs']} epochs of Adam in batches of 64 (cold: compilations "
            "included):",
            "",
            "| implementation | compilations | cold s | warm s | max cost diff |",
            "|---|---|---|---|---|",
        ]
        for r in sh["rows"]:
            out.append(
                f"| {r['impl']} | {r['compilations']} | {_fmt(r['cold_s'])} | "
                f"{_fmt(r['warm_s'])} | {_fmt(r.get('max_abs_cost_diff_vs_per_width'))} |"
            )
        out.append("")
    elif "convnet" in result:
        cv = result["convnet"]
        out += [
            f"flax linen convnet, one epoch of {cv['m']} 8x8x1 images in batches of "
            f"{cv['batch_size']} (GFLOP/s not counted):",
            "",
            table(case, cv["rows"]),
            "",
        ]
    s = result["speedups"]
    ratios = ", ".join(f"{k} {_fmt(v)}" for k, v in s.items() if k not in ("target", "met"))
    met = {True: "met", False: "NOT met", None: "not measured"}[s.get("met")]
    out += [f"Target: {s['target']}. Measured: {ratios or '-'}; {met}.", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 1 min)")
    parser.add_argument("--cases", default="B,C,D,E,F", help="comma-separated cases, e.g. B,C")
    parser.add_argument("--json", default=None, help="where to write the JSON record")
    args = parser.parse_args(argv)
    cases = [c.strip().upper() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")

    import importlib

    from bench import _common

    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "env": _common.env_info(),
        "cases": {},
    }
    print(f"# fjdl benchmarks ({'quick' if args.quick else 'full'})\n")
    e = record["env"]
    print(
        f"device {e['device']}; jax {e['jax']}, numpy {e['numpy']}, torch {e['torch']}; "
        f"{e['cpu_count']} CPUs\n",
        flush=True,
    )
    t_all = time.perf_counter()
    for case in cases:
        t0 = time.perf_counter()
        result = importlib.import_module(CASES[case][1]).run(args.quick)
        mark_agreement(case, result)
        result["speedups"] = speedups(case, result)
        result["wall_s"] = time.perf_counter() - t0
        record["cases"][case] = result
        print(render(case, result), flush=True)
    record["wall_s"] = time.perf_counter() - t_all
    path = args.json or os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "results",
        ("quick" if args.quick else "full") + ".json",
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=str)
    print(f"total {record['wall_s']:.0f} s; JSON written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
