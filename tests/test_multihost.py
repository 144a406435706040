"""Multi-host training for real: two processes joined by ``jax.distributed`` on localhost.

Each process has 2 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``),
4 devices in all, and JAX's CPU collectives (gloo, the default of JAX 0.10: no flag) connect them.
Both processes run ``tests/_multihost_worker.py``: the placement of typed PRNG keys, data and
stacked models over all 4 devices, read back with ``fjdl.parallel.to_host``; ``fit_data_parallel``
(full batch; mini-batches with batch norm and a dev set); and ``train_many`` (full batch;
mini-batches with dropout and a dev set; chunks). A third process runs the same cases alone on one device: the reference. The test
checks that every process holds every result (the worker reads them with plain ``np.asarray``) and
that they equal the reference to float tolerance.

A hard timeout kills the process groups of all the workers and fails the test rather than hang
(a process whose peer died waits in a collective forever).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_multihost_worker.py")
TIMEOUT_S = 240
N_PROCESSES = 2
RTOL, ATOL = 1e-5, 1e-6  # observed: at most 3e-7 absolute, 4e-6 relative (Adam's moments)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(out: Path, process_id: int, num_processes: int, port: int, n_devices: int):
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
        "JAX_PLATFORMS": "cpu",
    }
    log = open(out / f"log.p{process_id}.n{num_processes}.txt", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(out), str(process_id), str(num_processes), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group, killed whole on timeout
    )
    return proc, log


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the two joined processes and the single-process reference, all at once."""
    root = tmp_path_factory.mktemp("multihost")
    multi, single = root / "multi", root / "single"
    multi.mkdir()
    single.mkdir()
    port = _free_port()
    procs = [_start(multi, i, N_PROCESSES, port, 2) for i in range(N_PROCESSES)]
    procs.append(_start(single, 0, 1, 0, 1))
    deadline = time.monotonic() + TIMEOUT_S
    timed_out = False
    try:
        for proc, _ in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                timed_out = True
                break
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                _kill(proc)
            log.close()
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(root.glob("*/log.*"))
    )
    return {
        "multi": multi,
        "single": single,
        "timed_out": timed_out,
        "returncodes": [p.returncode for p, _ in procs],
        "logs": logs,
    }


def test_both_processes_finish_within_the_timeout(runs):
    assert not runs["timed_out"], f"killed after {TIMEOUT_S} s\n{runs['logs']}"
    assert runs["returncodes"] == [0] * (N_PROCESSES + 1), runs["logs"]
    for i in range(N_PROCESSES):
        meta = json.loads((runs["multi"] / f"meta.p{i}.json").read_text())
        assert meta == {
            "process_count": 2,
            "n_devices": 4,
            "n_local_devices": 2,
            "local_rows": [16, 16],
        }
    assert json.loads((runs["single"] / "meta.p0.json").read_text()) == {
        "process_count": 1,
        "n_devices": 1,
        "n_local_devices": 1,
        "local_rows": [64],
    }


def _atol(want: np.ndarray) -> float:
    """``ATOL``, scaled down for a leaf of small values (Adam's second moments are ~1e-8)."""
    finite = np.abs(want[np.isfinite(want)])
    return ATOL * min(1.0, float(finite.max())) if finite.size else ATOL


def _load(directory: Path, case: str, process_id: int) -> dict:
    stem = directory / f"{case}.p{process_id}"
    err = stem.parent / (stem.name + ".err")
    if err.exists():
        pytest.fail(f"{case} raised on process {process_id}:\n{err.read_text()[-3000:]}")
    npz = stem.parent / (stem.name + ".npz")
    assert npz.exists(), f"{case}: no result from process {process_id}"
    with np.load(npz) as f:
        return dict(f)


@pytest.mark.parametrize(
    "case",
    [
        "placement",
        "fit_full_batch",
        "fit_minibatch_batchnorm",
        "many_full_batch",
        "many_minibatch_dropout_dev",
        "many_chunks",
    ],
)
def test_every_process_holds_the_single_device_result(runs, case):
    assert not runs["timed_out"], f"killed after {TIMEOUT_S} s\n{runs['logs']}"
    reference = _load(runs["single"], case, 0)
    assert reference
    for i in range(N_PROCESSES):
        got = _load(runs["multi"], case, i)
        assert sorted(got) == sorted(reference), f"process {i}"
        for name, want in reference.items():
            assert got[name].shape == want.shape, f"process {i}: {name}"
            if np.issubdtype(want.dtype, np.floating):
                np.testing.assert_allclose(
                    got[name], want, rtol=RTOL, atol=_atol(want), err_msg=f"process {i}: {name}"
                )
            else:  # counts, epochs and PRNG key data: exactly
                np.testing.assert_array_equal(got[name], want, err_msg=f"process {i}: {name}")
