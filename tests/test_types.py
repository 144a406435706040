"""Types: mypy finds no error in fjdl/, and a user's script type-checks against the installed fjdl.

The second test installs fjdl as a user's ``pip install fjdl`` would (a wheel built from this tree,
installed into a folder of its own) because the editable install of the development environment
hides fjdl from mypy: setuptools' editable mode puts an import hook on ``sys.path``, which mypy
does not run ("Cannot find implementation or library stub for module named 'fjdl'"). The wheel
also proves that ``py.typed`` ships (``[tool.setuptools.package-data]``): mypy reads an installed
package's annotations only when it holds that marker (PEP 561).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds; a cold mypy cache on a busy 2-core machine takes about a minute

pytestmark = pytest.mark.slow


def _run(args, *, cwd, env=None, timeout=TIMEOUT):
    try:
        return subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(map(str, args))} did not finish in {timeout} s:\n{e.stdout}")


def _cache_dir(request, tmp_path, name):
    """A mypy cache kept between test runs (pytest's own cache folder), else a fresh one."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir(name) if cache is not None else tmp_path / name


def test_mypy_finds_no_error_in_fjdl(request, tmp_path):
    """``mypy`` with the ``[tool.mypy]`` settings of pyproject.toml (which check ``fjdl/``)."""
    result = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(_cache_dir(request, tmp_path, "mypy-fjdl")),
        ],
        cwd=ROOT,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"mypy found errors in fjdl/ (exit status {result.returncode}):\n{output}")
    assert re.search(r"Success: no issues found in \d+ source files", output), output


USER_SCRIPT = '''\
"""What a user writes: an MLP on moons, Adam inside optax.chain with a decay schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fjdl
from fjdl import data, losses, model, optim, schedules, train

key = jax.random.key(0)
data_key, split_key, fit_key = jax.random.split(key, 3)
X, Y = data.make_moons(data_key, 300, noise=0.2)
(X_train, Y_train), (X_dev, Y_dev) = data.split(split_key, X, Y, (0.8, 0.2))
stats = data.fit_standardizer(X_train)
X_train, X_dev = data.standardize(X_train, stats), data.standardize(X_dev, stats)

net: model.MLP = fjdl.MLP((2, 16, 8, 1), activation="relu", output="sigmoid")
params, state = net.init(fit_key)
logits, _ = net.apply(params, state, X_train[:4])
first: jax.Array = losses.binary_cross_entropy(logits, Y_train[:4])

schedule: optax.Schedule = schedules.exponential_decay(1e-2, base=0.95)
rate: jax.Array = schedules.exponential_decay(1e-2)(jnp.asarray(3))
tx: optax.GradientTransformation = optax.chain(
    optax.clip_by_global_norm(1.0), optim.adam(schedule, beta1=0.9, weight_decay=1e-4)
)
opt_state = tx.init(params)
grads = jax.grad(lambda p: losses.cost(net.apply(p, state, X_train)[0], Y_train, p))(params)
updates, opt_state = tx.update(grads, opt_state, params)
params = optim.apply_updates(params, updates)

result = train.fit(
    net, X_train, Y_train, key=fit_key, optimizer=tx, epochs=5, batch_size=64, dev=(X_dev, Y_dev)
)
costs = np.asarray(result.history.cost)
metrics = train.evaluate(net, result.state.params, result.state.model_state, X_dev, Y_dev)
predictions: jax.Array = train.predict(net, result.state.params, result.state.model_state, X_dev)
accuracy = float(jnp.mean(predictions == Y_dev))
print(costs.shape, metrics, accuracy, float(first), float(rate))
'''

# Mistakes that mypy must catch, one per line: proof that fjdl's annotations are read (an fjdl
# seen as untyped would let every one of them through).
MISTAKES = {
    4: ('optim.adam(learning_rate="fast")', 'Argument "learning_rate" to "adam"'),
    5: ('schedules.exponential_decay(1e-2, base="slow")', 'Argument "base" to "exponential_decay"'),
    6: ('fjdl.MLP((2, 1), batchnorm="yes")', 'Argument "batchnorm" to "MLP"'),
    7: ("losses.l2_penalty((), lambd=None, m=10)", 'Argument "lambd" to "l2_penalty"'),
    8: ("x: str = fjdl.nn.relu(1.0)", "Incompatible types in assignment"),
}
MISTAKES_SCRIPT = "import fjdl\nfrom fjdl import losses, optim, schedules\n\n" + "".join(
    f"{code}\n" for code, _ in MISTAKES.values()
)

# optax ships no py.typed marker: a user's mypy needs to be told to read it (or to ignore it).
USER_MYPY_INI = """\
[mypy]
python_version = 3.11
warn_unused_ignores = True

[mypy-optax,optax.*]
follow_untyped_imports = True
"""


@pytest.fixture(scope="module")
def installed_fjdl(tmp_path_factory):
    """fjdl built from this tree and installed (not editable) into a folder of its own."""
    src, site = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("site")
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "fjdl", src / "fjdl", ignore=shutil.ignore_patterns("__pycache__"))
    result = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--target", str(site), str(src)],
        cwd=src,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"pip could not install fjdl:\n{result.stdout}{result.stderr}")
    assert (site / "fjdl" / "py.typed").is_file(), "the installed fjdl has no py.typed marker"
    return site


def test_user_script_type_checks_against_the_installed_package(installed_fjdl, request, tmp_path):
    (tmp_path / "user_script.py").write_text(USER_SCRIPT)
    (tmp_path / "mistakes.py").write_text(MISTAKES_SCRIPT)
    (tmp_path / "mypy.ini").write_text(USER_MYPY_INI)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    env["PYTHONPATH"] = str(installed_fjdl)  # on sys.path, as site-packages is: PEP 561 applies
    cache = _cache_dir(request, tmp_path, "mypy-user")
    result = _run(
        [sys.executable, "-m", "mypy", "--verbose", "--cache-dir", str(cache),
         "--config-file", "mypy.ini", "user_script.py", "mistakes.py"],
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    output, log = result.stdout, result.stderr

    # mypy read fjdl from the installed copy, and from nowhere else (not from the source tree).
    fjdl_files = set(re.findall(r"(\S+)/fjdl/[\w/]+\.py\b", log))
    assert fjdl_files == {str(installed_fjdl)}, f"fjdl was read from {fjdl_files}:\n{output}"

    errors = [line for line in output.splitlines() if ": error:" in line]
    assert not [e for e in errors if not e.startswith("mistakes.py:")], (
        f"the user script does not type-check against fjdl:\n{output}"
    )
    lines = {int(e.split(":")[1]): e for e in errors}
    assert sorted(lines) == sorted(MISTAKES), f"mypy did not flag exactly the mistakes:\n{output}"
    for line, (_, message) in MISTAKES.items():
        assert message in lines[line], f"line {line}: expected {message!r}, got {lines[line]!r}"
    assert result.returncode == 1, output
