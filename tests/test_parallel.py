"""Tests of fjdl.parallel and of train_many over several devices.

Several CPU devices exist only when ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` is set
before JAX starts, so the sharded runs happen in a subprocess that compares them with single-device
runs and reports the differences as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from fjdl import data, parallel, train
from fjdl.model import MLP

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    from fjdl import data, parallel, train, tune
    from fjdl.model import MLP

    def max_diff(a, b):
        leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
        return max(
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in leaves
            if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        )

    def rel_diff(a, b):
        leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
        return max(
            float(np.max(np.abs(np.asarray(x) - np.asarray(y)) / (1e-6 + np.abs(np.asarray(y)))))
            for x, y in leaves
            if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        )

    out = {"n_devices": len(jax.devices())}
    X, Y = data.make_moons(jax.random.key(0), 64)
    X_dev, Y_dev = data.make_moons(jax.random.key(1), 24)
    # train_many: 6 models (padded to 8) with dropout and batch norm, over 4 devices and over 1
    config = MLP((2, 6, 4, 1), keep_probs=0.8, batchnorm=True)
    kw = dict(keys=jax.random.split(jax.random.key(2), 6), optimizer="adam",
              learning_rate=np.geomspace(1e-3, 1e-1, 6), epochs=3, batch_size=16, lambd=0.1,
              dev=(X_dev, Y_dev))
    one = tune.train_many(config, X, Y, devices=jax.devices()[:1], **kw)
    four = tune.train_many(config, X, Y, **kw)
    out["many_state"] = rel_diff(four.groups[0].state, one.groups[0].state)
    out["many_history"] = max_diff(four.history, one.history)
    # fit_data_parallel == fit, full batch with batch norm
    for name, batch_size in (("full", None),):
        cfg = MLP((2, 6, 4, 1), batchnorm=True)
        args = dict(key=jax.random.key(3), epochs=3, batch_size=batch_size, progress=False,
                    dev=(X_dev, Y_dev), learning_rate=0.01)
        ref = train.fit(cfg, X, Y, **args)
        par = parallel.fit_data_parallel(cfg, X, Y, **args)
        out[f"dp_{name}_state"] = rel_diff(par.state, ref.state)
        out[f"dp_{name}_history"] = max_diff(par.history, ref.history)
    # the data really is split: each device holds a quarter of the examples
    Xs, _ = parallel.shard_data((X, Y))
    out["shard_rows"] = sorted({s.data.shape[0] for s in Xs.addressable_shards})
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded_run():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_four_simulated_devices(sharded_run):
    assert sharded_run["n_devices"] == 4
    assert sharded_run["shard_rows"] == [16]


def test_train_many_sharded_equals_one_device(sharded_run):
    assert sharded_run["many_state"] < 1e-4  # rtol, on parameters, BN statistics and moments
    assert sharded_run["many_history"] < 1e-5


@pytest.mark.parametrize("batching", ["full"])
def test_fit_data_parallel_equals_fit(sharded_run, batching):
    # batch-norm statistics over the global batch: otherwise the costs would differ at 1e-2
    assert sharded_run[f"dp_{batching}_state"] < 1e-4
    assert sharded_run[f"dp_{batching}_history"] < 1e-5


def test_mesh_and_shardings_on_the_default_devices():
    n = len(jax.devices())
    assert parallel.mesh(axis_name="models").shape == {"models": n}
    assert parallel.model_sharding().spec == jax.sharding.PartitionSpec("models")
    assert parallel.data_sharding().spec == jax.sharding.PartitionSpec("data")


def test_fit_data_parallel_on_one_device_is_fit():
    X, Y = data.make_moons(jax.random.key(0), 40)
    cfg = MLP((2, 4, 1))
    args = dict(key=jax.random.key(1), epochs=2, progress=False)
    ref = train.fit(cfg, X, Y, **args)
    got = parallel.fit_data_parallel(cfg, X, Y, devices=jax.devices()[:1], **args)
    np.testing.assert_allclose(got.history.cost, ref.history.cost, rtol=1e-6)


def test_uneven_split_and_empty_devices_raise():
    X = np.zeros((10, 2), np.float32)
    cpu = jax.devices()[0]
    with pytest.raises(ValueError, match=r"number of examples \(10\) must be a multiple"):
        parallel.shard_data(X, [cpu, cpu, cpu])
    with pytest.raises(ValueError, match="devices is empty"):
        parallel.mesh([])
    with pytest.raises(ValueError, match=r"number of models \(10\) must be a multiple"):
        parallel.shard_models(X, [cpu, cpu, cpu])
