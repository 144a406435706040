"""Sphinx configuration of fjdl's documentation: the API reference, the notebooks, the course map.

Build it from the repository root (``pip install -e ".[docs]"`` first)::

    sphinx-build -n -W --keep-going -b html docs docs/_build/html

``-n`` (nitpicky) makes every cross-reference that does not resolve a warning and ``-W`` every
warning an error; ``fjdl_docs`` (``docs/_ext``) adds one warning per public name of fjdl that has no
docstring or does not appear in the built pages. ``tests/test_docs.py`` runs this build.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document this tree, installed or not
sys.path.insert(0, str(DOCS / "_ext"))

import fjdl  # noqa: E402

project = "fjdl"
author = "the fjdl authors"
copyright = "the fjdl authors, Apache-2.0"  # noqa: A001 (Sphinx's name)
release = fjdl.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
    "fjdl_docs",
]

# The notebooks are linked from ../notebooks (docs/notebooks is a symbolic link); the test suite
# executes them (tests/test_notebooks.py), the docs show them as committed.
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "notebooks/_course.py"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True  # `$$...$$` inside a paragraph, as Jupyter renders it
myst_heading_anchors = 3

# Docstrings: Google style (``Args:``, ``Returns:``), as optax writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True  # `learning_rate=0.01`, not the float's repr after evaluation
autodoc_class_signature = "separated"

# Broken cross-references fail the build. No inventories of other projects are fetched (the build
# needs no network), so references to them (jax.Array, optax's classes, numpy) cannot resolve:
# those, and only those, are let through.
nitpicky = True
_EXTERNAL = (
    r"(jax|jaxlib|optax|numpy|flax|equinox|chex|hypothesis|matplotlib|tqdm"  # other projects
    r"|collections|typing|types|os|pathlib|argparse|dataclasses)"  # the standard library
)
nitpick_ignore_regex = [(r"py:.*", _EXTERNAL + r"(\..*)?")]
nitpick_ignore = [("py:class", "Axes")]  # matplotlib's, which fjdl.plots imports for type checkers

html_theme = "furo"
html_title = f"fjdl {release}"
html_static_path: list[str] = []
templates_path: list[str] = []
