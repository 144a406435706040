"""Case F: 24 ``fit`` calls written the natural way: 4 optimizers x learning-rate decay on/off x
3 seeds on the digits data (MLP 64-32-10, softmax, mini-batches of 64, 20 epochs).

What a researcher's loop costs when a new hyperparameter value compiles a new program, and when
it does not. Each variant runs in a fresh process, twice over the same 24 calls: the first pass
("cold") includes every compilation, the second ("warm") only what recompiles. Variants:

- ``decay_rate=``: the decay as a number (an array in the compiled loop): on, off, or another
  rate share one program per optimizer.
- ``schedule=lambda lr0: ...``: the decay as a new function in every call, the only way before
  ``decay_rate`` existed: a new function is a new static argument, so each call compiles.

The same script runs on an older checkout (``python bench/case_f.py --variant lambda`` with that
checkout first on ``PYTHONPATH``) to give the figures from before.
"""

import argparse
import json
import os
import subprocess
import sys
import time

OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")
VARIANTS = ("decay_rate", "lambda")


def loop(variant: str, quick: bool) -> list[float]:
    """The 24 calls, twice; returns ``[cold_s, warm_s, final cost of the last call]``."""
    import jax

    from fjdl import data, schedules, train
    from fjdl.model import MLP

    X, Y = data.load_digits()
    m = 256 if quick else X.shape[0]
    X, Y = X[:m], Y[:m]
    model = MLP((64, 32, 10), output="softmax")
    epochs = 2 if quick else 20
    seeds = 1 if quick else 3
    times, cost = [], float("nan")
    for _ in range(2):
        t0 = time.perf_counter()
        for name in OPTIMIZERS:
            for decay in (False, True):
                for seed in range(seeds):
                    kw = dict(
                        key=jax.random.key(seed), optimizer=name, learning_rate=0.01,
                        epochs=epochs, batch_size=64, progress=False,
                    )  # fmt: skip
                    if variant == "decay_rate":
                        kw["decay_rate"] = 0.3 if decay else None
                    elif decay:
                        kw["schedule"] = lambda lr0: schedules.inverse_time_decay(lr0, 0.3)
                    r = train.fit(model, X, Y, **kw)
                    cost = float(r.history.cost[-1])
        times.append(time.perf_counter() - t0)
    return [*times, cost]


def run(quick: bool) -> dict:
    """Each variant in a fresh process (cold means cold); a table row per variant."""
    rows = []
    for variant in VARIANTS:
        cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant]
        if quick:
            cmd.append("--quick")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            rows.append({"impl": variant, "status": f"error: {proc.stderr[-300:]}"})
            continue
        cold, warm, cost = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "impl": f"fit x 24, {variant}",
                "status": "ok",
                "cold_s": cold,
                "warm_s": warm,
                "final_cost": cost,
                "process_s": time.perf_counter() - t0,
            }
        )
    return {"case": "F", "n_fits": 24 if not quick else 8, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(loop(args.variant, args.quick)))
