"""One process of the multi-host test (tests/test_multihost.py), or the single-process reference.

Usage: ``python tests/_multihost_worker.py OUT_DIR PROCESS_ID NUM_PROCESSES PORT``. With
``NUM_PROCESSES`` > 1 the process joins ``jax.distributed`` (coordinator on ``localhost:PORT``)
and every case runs over all the processes' devices; with 1 it is the reference: the same cases in
one process on one device (``fit`` for ``fit_data_parallel``, one device for ``train_many``).

Each case writes what this process holds of the result, read with plain ``np.asarray`` (a process
that does not hold the whole result fails there), to ``OUT_DIR/<case>.p<PROCESS_ID>.npz``, or its
error to ``OUT_DIR/<case>.p<PROCESS_ID>.err``. The cases fail alike on every process (they are
the same program on the same data), so a failing case does not leave a peer waiting in a
collective. ``OUT_DIR/meta.p<PROCESS_ID>.json`` records the devices seen.
"""

import json
import os
import sys
import traceback

import jax
import numpy as np

from fjdl import data, parallel, train, tune
from fjdl.model import MLP


def _host(tree) -> dict:
    """The leaves of ``tree`` as this process reads them, by path; PRNG keys as their data."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def _datasets():
    X, Y = data.make_moons(jax.random.key(0), 64)
    dev = data.make_moons(jax.random.key(1), 24)  # 24 = 6 per device: the dev set is sharded too
    return X, Y, dev


def _placement(single) -> dict:
    """Typed keys, data and stacked models placed over every device, read back by ``to_host``."""
    X, Y, _ = _datasets()
    devices = jax.devices()[:1] if single else None
    placed = {
        "keys": parallel.shard_models(jax.random.split(jax.random.key(4), 4), devices),
        "key": parallel.replicate(jax.random.key(5), devices),
        "data": parallel.shard_data((X, Y), devices),
        "models": parallel.shard_models(X[:8], devices),
    }
    return _host(parallel.to_host(placed))


def _fit(single, config, **kw) -> dict:
    X, Y, dev = _datasets()
    args = dict(key=jax.random.key(3), optimizer="adam", learning_rate=0.01, dev=dev)
    args.update(kw, progress=False)
    if single:
        result = train.fit(config, X, Y, **args)
    else:
        result = parallel.fit_data_parallel(config, X, Y, **args)
    return _host({"history": result.history, "state": result.state})


def _many(single, config, n=6, use_dev=False, **kw) -> dict:
    X, Y, dev = _datasets()
    args = dict(
        keys=jax.random.split(jax.random.key(2), n),
        optimizer="adam",
        learning_rate=np.geomspace(1e-3, 1e-1, n),
        lambd=0.1,
        dev=dev if use_dev else None,
    )
    args.update(kw)
    devices = jax.devices()[:1] if single else None
    result = tune.train_many(config, X, Y, devices=devices, **args)
    return _host(
        {"history": result.history, "params": result.params, "model_state": result.model_state}
    )


# fit_data_parallel first: a train_many case that fails must not keep them from being recorded.
CASES = {
    "placement": _placement,
    "fit_full_batch": lambda single: _fit(single, MLP((2, 8, 1)), epochs=4),
    "fit_minibatch_batchnorm": lambda single: _fit(
        single, MLP((2, 8, 4, 1), batchnorm=True), epochs=3, batch_size=16
    ),
    "many_full_batch": lambda single: _many(single, MLP((2, 6, 1)), epochs=4),
    "many_minibatch_dropout_dev": lambda single: _many(
        single, MLP((2, 6, 4, 1), keep_probs=0.8), epochs=3, batch_size=16, use_dev=True
    ),
    "many_chunks": lambda single: _many(single, MLP((2, 6, 1)), epochs=3, chunk_size=4),
}


def main(out, process_id, num_processes, port):
    if num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    meta = {
        "process_count": jax.process_count(),
        "n_devices": len(jax.devices()),
        "n_local_devices": len(jax.local_devices()),
        # the examples of this process's devices: the data really is split over the processes
        "local_rows": sorted(
            s.data.shape[0]
            for s in parallel.shard_data(np.zeros((64, 2), np.float32)).addressable_shards
        ),
    }
    with open(os.path.join(out, f"meta.p{process_id}.json"), "w") as f:
        json.dump(meta, f)
    for name, case in CASES.items():
        stem = os.path.join(out, f"{name}.p{process_id}")
        try:
            result = case(num_processes == 1)
        except Exception:  # recorded for the test to show; the next case still runs
            with open(stem + ".err", "w") as f:
                f.write(traceback.format_exc())
            continue
        np.savez(stem + ".npz", **result)
        print(f"process {process_id}: {name} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
