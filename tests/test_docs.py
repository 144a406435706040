"""The documentation site (``docs/``): it builds with warnings as errors, and it documents fjdl whole.

``sphinx-build -n -W --keep-going`` makes a broken cross-reference an error (``-n``: nitpicky), and
``docs/_ext/fjdl_docs.py`` adds an error for every public module without a page and every public
name without a docstring or absent from the pages. The probe tests below show that both do fail a
build, on a small project of their own.
"""

import importlib
import subprocess
import sys
import textwrap
import types
import zlib
from pathlib import Path

import pytest

sphinx = pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TIMEOUT_S = 900  # the whole site takes about half a minute on a busy 2-core machine

sys.path.insert(0, str(DOCS / "_ext"))
fjdl_docs = importlib.import_module("fjdl_docs")


def _build(source: Path, out: Path) -> subprocess.CompletedProcess:
    """``sphinx-build -n -W --keep-going -b html source out``, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(source), str(out / "html")],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


def _warnings(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]


def _inventory_names(path: Path) -> set[str]:
    """The names in a Sphinx ``objects.inv`` (version 2: four header lines, then zlib'd lines
    ``name domain:role priority uri display-name``)."""
    raw = path.read_bytes()
    header = raw.split(b"\n", 4)
    assert header[0] == b"# Sphinx inventory version 2", header[0]
    return {line.split(" ", 1)[0] for line in zlib.decompress(header[4]).decode().splitlines()}


@pytest.mark.slow
def test_the_site_builds_without_a_warning_and_documents_every_public_name(tmp_path):
    result = _build(DOCS, tmp_path)
    assert result.returncode == 0 and not _warnings(result), (
        f"sphinx-build exited {result.returncode}:\n" + "\n".join(_warnings(result) or [result.stderr])
    )
    html = tmp_path / "html"
    for page in ("index", "course", "notebooks", "api/index", "api/optim", "api/cli"):
        assert (html / f"{page}.html").is_file(), page
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (html / "notebooks" / f"{notebook.stem}.html").is_file(), notebook.name

    # The same promise read back from what was built: Sphinx's inventory of documented objects.
    documented = _inventory_names(html / "objects.inv")
    modules = fjdl_docs.public_modules()
    assert {"fjdl.optim", "fjdl.train", "fjdl.tune", "fjdl.cli", "fjdl.testing"} <= set(modules)
    absent, undocumented = [], []
    for modname in modules:
        module = importlib.import_module(modname)
        if modname not in documented:
            absent.append(modname)
        undocumented += [f"{modname}.{entry}" for entry in fjdl_docs.undocumented(module)]
        for name in fjdl_docs.public_names(module):
            if isinstance(getattr(module, name, None), types.ModuleType):
                continue  # a module named in __all__: it has its own page
            if not any(full in documented for full in fjdl_docs._documented_as(module, name)):
                absent.append(f"{modname}.{name}")
    assert not absent, f"public names missing from the docs: {absent}"
    assert not undocumented, f"public names without a docstring: {undocumented}"

    # The math is rendered (MathJax), and the course page links to the functions.
    optim = (html / "api" / "optim.html").read_text(encoding="utf-8")
    assert "mathjax" in optim.lower() and 'class="math' in optim
    course = (html / "course.html").read_text(encoding="utf-8")
    for target in ("fjdl.optim.adam", "fjdl.batchnorm.normalize_eval", "fjdl.tune.log_uniform"):
        assert f'href="api/{target.split(".")[1]}.html#{target}"' in course, target


# --------------------------------------------------------------------------------------------------
# The checks themselves fail a build


PROBE = '''
"""A module with one of everything the check looks at."""

import dataclasses

LIMIT = 3
"""A documented constant."""

UNDOCUMENTED_CONSTANT = 4


def documented(x):
    """Return ``x``."""
    return x


def undocumented(x):
    return x


@dataclasses.dataclass(frozen=True)
class Undocumented:  # dataclass writes a __doc__ of its own: it does not count
    size: int


def _private(x):
    return x
'''


def _probe_project(tmp_path: Path, name: str, page: str) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / f"{name}.py").write_text(textwrap.dedent(PROBE), encoding="utf-8")
    (source / "conf.py").write_text(
        textwrap.dedent(
            f"""
            import runpy, sys
            sys.path.insert(0, {str(source)!r})
            globals().update(
                (k, v) for k, v in runpy.run_path({str(DOCS / "conf.py")!r}).items()
                if not k.startswith("__")
            )
            fjdl_documented_modules = [{name!r}]
            """
        ),
        encoding="utf-8",
    )
    (source / "index.rst").write_text(page, encoding="utf-8")
    return source


def test_a_broken_cross_reference_and_an_undocumented_name_fail_the_build(tmp_path):
    name = "fjdl_docs_probe_a"
    page = (
        "Probe\n=====\n\n:func:`fjdl.optim.adamm` and :func:`fjdl_docs_probe_a.documented`.\n\n"
        f".. automodule:: {name}\n   :members:\n"
    )
    result = _build(_probe_project(tmp_path, name, page), tmp_path / "out")
    assert result.returncode != 0
    warnings = "\n".join(_warnings(result))
    assert "py:func reference target not found: fjdl.optim.adamm" in warnings
    assert f"{name}.undocumented (a function) has no docstring" in warnings
    assert f"{name}.Undocumented (a class) has no docstring" in warnings
    assert f"{name}.UNDOCUMENTED_CONSTANT (a value" in warnings
    for fine in ("documented (a", "LIMIT", "_private"):  # documented, or not public
        assert f"{name}.{fine}" not in warnings, fine
    assert "target not found: fjdl_docs_probe_a.documented" not in warnings


def test_a_public_module_without_a_page_fails_the_build(tmp_path):
    name = "fjdl_docs_probe_b"
    result = _build(_probe_project(tmp_path, name, "Probe\n=====\n\nNo page for it.\n"), tmp_path)
    assert result.returncode != 0
    assert f"public module {name} is not documented" in "\n".join(_warnings(result))


# --------------------------------------------------------------------------------------------------
# What counts as public


def _module(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def test_public_names_are_all_when_defined_else_the_names_the_module_defines(tmp_path, monkeypatch):
    source = "import math\n__all__ = ['f']\ndef f(): pass\ndef g(): pass\n"
    with_all = _module(tmp_path, monkeypatch, "fjdl_docs_with_all", source)
    assert fjdl_docs.public_names(with_all) == ["f"]
    without = _module(tmp_path, monkeypatch, "fjdl_docs_probe_c", PROBE)
    assert set(fjdl_docs.public_names(without)) == {
        "LIMIT", "UNDOCUMENTED_CONSTANT", "documented", "undocumented", "Undocumented",
    }  # fmt: skip  (not `dataclasses`, imported; not `_private`)
    assert sorted(entry.split(" ")[0] for entry in fjdl_docs.undocumented(without)) == [
        "UNDOCUMENTED_CONSTANT", "Undocumented", "undocumented",
    ]  # fmt: skip


def test_every_public_module_of_fjdl_is_found():
    modules = fjdl_docs.public_modules()
    for expected in ("fjdl.optim", "fjdl.schedules", "fjdl.losses", "fjdl.nn", "fjdl.model",
                     "fjdl.wrappers", "fjdl.initializers", "fjdl.batchnorm", "fjdl.data",
                     "fjdl.train", "fjdl.parallel", "fjdl.tune", "fjdl.gradcheck",
                     "fjdl.checkpoint", "fjdl.diagnose", "fjdl.trajectories", "fjdl.testing",
                     "fjdl.cli", "fjdl.plots"):  # fmt: skip
        assert expected in modules
    assert not [m for m in modules if any(part.startswith("_") for part in m.split("."))]

