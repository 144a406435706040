"""``python -m bench.ab --base REF [--cases B,C,D] [--rounds 2] [--quick] [--json PATH]``: the
benchmarks of two versions of fjdl, interleaved in one sitting on one machine.

A change that should cost nothing (a refactoring) is judged by running the same cases before and
after it, side by side: ``REF`` (a commit, e.g. ``HEAD`` or ``main~1``) is checked out into a
temporary git worktree, and each round runs ``python -m bench --cases C`` once for the base and
once for the working tree, alternately and each in a fresh process (so that a busy minute of the
machine falls on both sides alike). The table gives, per case and row, each side's medians and the
ratio of the working tree's time to the base's (below 1: faster).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_bench(tree: str, case: str, quick: bool, out: str) -> dict:
    """One ``python -m bench`` of ``tree`` (its own fjdl and bench) in a fresh process."""
    env = {**os.environ, "PYTHONPATH": tree}
    cmd = [sys.executable, "-m", "bench", "--cases", case, "--json", out]
    subprocess.run(cmd + (["--quick"] if quick else []), cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    with open(out) as f:
        return json.load(f)["cases"][case]


def _medians(result: dict) -> dict:
    """``{row name: median seconds}`` of the rows that ran."""
    rows = result["rows"] + result.get("convnet", {}).get("rows", [])
    if "networks" in result:
        rows = [r for net in result["networks"] for r in net["rows"]]
    return {r["impl"]: r["median_s"] for r in rows if r.get("status") == "ok" and "median_s" in r}


def compare(base: str, cases, rounds: int, quick: bool) -> dict:
    """Every case, ``rounds`` times base then working tree; ``{case: {row: {"base", "new"}}}``."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for r in range(rounds):
                for side, tree in (("base", base), ("new", HERE)):
                    got = _medians(_run_bench(tree, case, quick, os.path.join(tmp, "r.json")))
                    for name, median in got.items():
                        out.setdefault(case, {}).setdefault(name, {"base": [], "new": []})
                        out[case][name][side].append(median)
                    print(f"case {case}, round {r + 1}, {side}: done", file=sys.stderr)
    return out


def render(figures: dict) -> str:
    lines = []
    for case, rows in figures.items():
        lines += [f"\n### {case}\n", "| row | base s | after s | after / base |", "|---|---|---|---|"]
        for name, sides in rows.items():
            if not sides["base"] or not sides["new"]:
                continue
            ratio = statistics.mean(sides["new"]) / statistics.mean(sides["base"])
            fmt = lambda v: " / ".join(f"{x:.3g}" for x in v)  # noqa: E731
            lines.append(f"| {name} | {fmt(sides['base'])} | {fmt(sides['new'])} | {ratio:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git commit to compare against")
    parser.add_argument("--cases", default="B,C,D")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=os.path.join(HERE, "bench", "results", "ab.json"))
    args = parser.parse_args(argv)
    cases = [c.strip().upper() for c in args.cases.split(",") if c.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", base, args.base], cwd=HERE,
                       check=True)  # fmt: skip
        try:
            figures = compare(base, cases, args.rounds, args.quick)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base], cwd=HERE, check=False)
    print(f"# A/B: {args.base} (base) against the working tree, {args.rounds} round(s)")
    print(render(figures))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"base": args.base, "rounds": args.rounds, "figures": figures}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
