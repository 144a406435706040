"""A Sphinx extension for fjdl's docs: an undocumented public name fails the build.

For every public module of fjdl (``fjdl.X`` not starting with ``_``, and the public modules of a
package such as ``fjdl.tune``), once all pages are read, it warns (an error under ``-W``):

- when the module is not documented (no ``.. automodule::`` of it; for a module of a package, no
  ``.. fjdl-submodules::`` of the package);
- for each public name of the module that has no docstring (a function or class without one; a
  constant or alias without a docstring string or ``#:`` comment under its assignment);
- for each public name that does not appear in the built pages (a package's page documents what
  the package exports, for its modules too).

The public names of a module are its ``__all__`` when it defines one, else the names not starting
with ``_`` that the module defines: by a ``def``, ``class`` or assignment at its top level, or, for
a package, in one of its submodules (a re-export). Imported names (``jax``, ``Params``) are not.

Two adjustments to autodoc and napoleon, both in :func:`_before_napoleon`: a value a module
re-exports gets the docstring written where it is assigned, and a value's docstring whose first
line holds a colon stays prose (napoleon would read ``words: more`` as ``type: description``).

Directives: ``.. fjdl-cli-help:: train`` shows ``fjdl train --help`` as this version prints it;
``.. fjdl-submodules:: fjdl.tune`` lists a package's public modules and makes each a ``:mod:``
target.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import sys
import types
from collections.abc import Iterable

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

PACKAGE = "fjdl"


def public_modules(package: str = PACKAGE) -> list[str]:
    """The public modules of ``package``: ``package.X`` for every ``X`` not starting with ``_``,
    and, for a package ``package.X``, its own public modules ``package.X.Y``."""
    names = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name.startswith("_"):
            continue
        names.append(f"{package}.{info.name}")
        if info.ispkg:
            names.extend(public_modules(f"{package}.{info.name}"))
    return sorted(names)


def _top_level_names(module: types.ModuleType) -> tuple[set[str], set[str]]:
    """Names bound at the top level of ``module``'s source: (by def or class, by assignment)."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return set(), set()
    defined, assigned = set(), set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                assigned.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif hasattr(ast, "TypeAlias") and isinstance(node, ast.TypeAlias):  # Python 3.12
            assigned.add(node.name.id)
    return defined, assigned


def public_names(module: types.ModuleType) -> list[str]:
    """The public names of ``module``: ``__all__`` if defined, else the public names it defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    defined, assigned = _top_level_names(module)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        origin = getattr(value, "__module__", None)
        reexported = (
            hasattr(module, "__path__")  # a package: names defined in its own submodules count
            and isinstance(origin, str)
            and origin.startswith(module.__name__ + ".")
            and (inspect.isclass(value) or inspect.isroutine(value))
        )
        if name in defined or name in assigned or reexported:
            names.append(name)
    return names


def _source_docstring(obj) -> str | None:
    """The docstring written in the source of a function or class (not one Python made up).

    ``dataclass`` and ``NamedTuple`` give a class without a docstring one of their own (its
    signature), so ``__doc__`` alone cannot tell. The definition is found by its qualified name in
    the parsed source of its module, not by line number, so a file edited since it was imported
    is still read right.
    """
    target = inspect.unwrap(obj) if callable(obj) else obj
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    qualname = getattr(target, "__qualname__", "")
    try:
        body = ast.parse(inspect.getsource(module)).body if module else []
    except (OSError, TypeError, SyntaxError):
        body = []
    node = None
    for part in qualname.split("."):
        node = next(
            (
                n
                for n in body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and n.name == part
            ),
            None,
        )
        if node is None:
            break
        body = node.body
    if node is None:  # not found in a source (a builtin, a function made by another function)
        return getattr(obj, "__doc__", None)
    return ast.get_docstring(node)


def _attribute_docstring(name: str, value, modules: Iterable[types.ModuleType]) -> str | None:
    """The docstring (or ``#:`` comment) under the assignment of ``name`` in one of ``modules``."""
    for module in modules:
        if getattr(module, name, _MISSING) is not value:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
        except Exception:  # noqa: BLE001 (no source: nothing to find)
            continue
        lines = docs.get(("", name))
        if lines and "".join(lines).strip():
            return "\n".join(lines)
    return None


_MISSING = object()


def undocumented(module: types.ModuleType) -> list[str]:
    """The public names of ``module`` without a docstring, each with what kind of name it is."""
    _, assigned = _top_level_names(module)
    fjdl_modules = [m for n, m in sorted(_loaded_modules().items()) if n != module.__name__]
    missing = []
    for name in public_names(module):
        value = getattr(module, name, _MISSING)
        if value is _MISSING:
            missing.append(f"{name} (in __all__ but not defined)")
        elif isinstance(value, types.ModuleType):
            continue  # a module named in __all__: documented on its own page
        elif name in assigned or not (inspect.isclass(value) or inspect.isroutine(value)):
            # a constant or an alias (`Initializer = Callable[...]`): a docstring under it
            if not _attribute_docstring(name, value, [module, *fjdl_modules]):
                missing.append(f"{name} (a value: write a docstring under its assignment)")
        elif not (_source_docstring(value) or "").strip():
            missing.append(f"{name} (a {'class' if inspect.isclass(value) else 'function'})")
    return missing


def _loaded_modules() -> dict[str, types.ModuleType]:
    return {
        name: module
        for name, module in list(sys.modules.items())
        if module is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))
    }


def _documented_as(module: types.ModuleType, name: str) -> list[str]:
    """The full names under which ``module.name`` may appear: its own, and for a module of a
    package, the package's name for the same object (the package's page documents its exports)."""
    names = [f"{module.__name__}.{name}"]
    parent_name = module.__name__.rpartition(".")[0]
    parent = sys.modules.get(parent_name)
    value = getattr(module, name, _MISSING)
    if parent is not None and hasattr(parent, "__path__") and parent_name != PACKAGE:
        names += [
            f"{parent_name}.{exported}"
            for exported in public_names(parent)
            if getattr(parent, exported, None) is value
        ]
    return names


def check_documented(app: Sphinx, env) -> None:
    """Warn for every public module without a page and every public name undocumented or absent."""
    domain = env.get_domain("py")
    objects = set(domain.objects)
    documented_modules = set(domain.modules)
    for modname in app.config.fjdl_documented_modules or public_modules():
        if modname not in documented_modules:
            parent = modname.rpartition(".")[0]
            fix = (
                f"add `.. fjdl-submodules:: {parent}` to its page"
                if modname.count(".") > 1
                else f"add docs/api/{modname.rpartition('.')[2]}.rst with `.. automodule:: "
                f"{modname}` and `:members:`, and list it in docs/api/index.rst"
            )
            logger.warning(
                "fjdl_docs: public module %s is not documented (%s)",
                modname,
                fix,
                type="fjdl_docs",
                subtype="module",
            )
            continue
        module = importlib.import_module(modname)
        # a name a package re-exports from this module is reported once, for the package
        missing = [e for e in undocumented(module) if len(_documented_as(module, e.split()[0])) == 1]
        for entry in missing:
            logger.warning(
                "fjdl_docs: %s.%s has no docstring", modname, entry, type="fjdl_docs", subtype="doc"
            )
        without_docstring = {entry.split(" ")[0] for entry in missing}
        for name in public_names(module):
            if name in without_docstring or isinstance(getattr(module, name, None), types.ModuleType):
                continue
            if not any(full in objects for full in _documented_as(module, name)):
                in_package = modname.count(".") > 1
                logger.warning(
                    "fjdl_docs: public name %s.%s does not appear in the built docs%s",
                    modname,
                    name,
                    (
                        f" (export it from {modname.rpartition('.')[0]}, or start its name with _)"
                        if in_package
                        else ""
                    ),
                    type="fjdl_docs",
                    subtype="absent",
                )


def _before_napoleon(app: Sphinx, what, name, obj, options, lines) -> None:
    """Prepare a docstring for napoleon; remember the module being documented.

    - A module: a value it re-exports (``BATCH_AXIS`` of ``fjdl.model``, from ``fjdl.wrappers``;
      a constant a package takes from its submodule) has its docstring in the module that assigns
      it, where autodoc does not look, so autodoc would leave it out. Its docstring is lent to the
      module's analyzer, which autodoc reads next, for the module's members.
    - A value or attribute: napoleon reads a first line ``words: more words`` as ``type:
      description`` (Google style for untyped attributes). fjdl annotates its types and writes
      prose there ("Where weight decay applies: a pytree..."), so the line is kept as prose.
    """
    if what == "module" and name in sys.modules:
        _lend_reexported_docstrings(sys.modules[name])
    elif what in ("data", "attribute", "property") and lines and ":" in lines[0]:
        # napoleon's own split (it skips colons in roles and literals); a colon that ends the
        # line has nothing after it, which napoleon reads as no type.
        before, colon, after = GoogleDocstring("", app.config)._partition_field_on_colon(lines[0])
        if colon and before and after:
            indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
            lines[0:1] = [f"{indent}{before}{colon}", f"{indent}{after}"]


def _lend_reexported_docstrings(module: types.ModuleType) -> None:
    try:
        attr_docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
    except Exception:  # noqa: BLE001 (no source: autodoc finds nothing either)
        return
    others = [m for n, m in sorted(_loaded_modules().items()) if n != module.__name__]
    for name in public_names(module):
        value = getattr(module, name, _MISSING)
        if (
            ("", name) in attr_docs
            or value is _MISSING
            or isinstance(value, types.ModuleType)
            or inspect.isclass(value)
            or inspect.isroutine(value)
        ):
            continue
        doc = _attribute_docstring(name, value, others)
        if doc:
            attr_docs[("", name)] = [*inspect.cleandoc(doc).splitlines(), ""]


class Submodules(SphinxDirective):
    """``.. fjdl-submodules:: fjdl.tune``: the public modules of a package, one line each.

    The package's page documents every name it exports (``automodule`` with ``:members:``); this
    lists the modules those names come from and makes each a target of ``:mod:``. Nothing for a
    module that is not a package.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        package = importlib.import_module(self.arguments[0])
        if not hasattr(package, "__path__"):
            return []
        names = [
            f"{package.__name__}.{info.name}"
            for info in pkgutil.iter_modules(package.__path__)
            if not info.name.startswith("_")
        ]
        rst = [".. rubric:: Submodules", ""] if names else []
        for full in names:
            doc = inspect.getdoc(importlib.import_module(full)) or ""
            summary = doc.split("\n\n")[0].replace("\n", " ")
            rst.append(f"- :mod:`{full}`: {summary}")
        rst.append("")
        previous = self.env.ref_context.get("py:module")
        for full in names:  # the targets, after the list (each sets the current module)
            rst += [f".. py:module:: {full}", ""]
        container = nodes.container()
        self.state.nested_parse(
            StringList(rst, source=self.get_source_info()[0]), self.content_offset, container
        )
        if previous is None:
            self.env.ref_context.pop("py:module", None)
        else:
            self.env.ref_context["py:module"] = previous
        return container.children


class CliHelp(SphinxDirective):
    """``.. fjdl-cli-help:: train``: the output of ``fjdl train --help``, as a literal block."""

    required_arguments = 0
    optional_arguments = 1
    option_spec = {"width": directives.positive_int}

    def run(self) -> list[nodes.Node]:
        from fjdl import cli

        argv = [*self.arguments, "--help"]
        out, err = io.StringIO(), io.StringIO()
        previous = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = str(self.options.get("width", 100))  # argparse wraps to this
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code
        finally:
            if previous is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = previous
        if status not in (0, None) or not out.getvalue().strip():
            raise self.error(
                f"`fjdl {' '.join(argv)}` exited {status}: {err.getvalue().strip()[:500]}"
            )
        text = out.getvalue().rstrip()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict:
    app.add_config_value("fjdl_documented_modules", [], "env", types=[list])
    app.connect("env-check-consistency", check_documented)
    app.add_directive("fjdl-cli-help", CliHelp)
    app.add_directive("fjdl-submodules", Submodules)
    app.connect("autodoc-process-docstring", _before_napoleon, priority=400)  # napoleon's: 500
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
