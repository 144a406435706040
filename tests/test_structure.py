"""The lint rules of fjdl's structure (DEVELOPERS.md, "Small pieces"), kept by the tests in CI:

- no function in ``fjdl/`` runs past :data:`MAX_CODE_LINES` lines of code (docstrings, comments
  and blank lines aside), so that a reader takes each in at one glance;
- :mod:`fjdl.tune` runs the one training loop: it imports no numerics module and no private name
  of :mod:`fjdl.train`;
- the CLI's lists of choices are the library's own.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fjdl"
MAX_CODE_LINES = 60
NUMERICS = {"initializers", "batchnorm", "nn", "losses"}


def _code_lines(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``node``'s body that hold code: neither blank, nor a comment, nor a docstring
    (its own or a nested function's). The signature is not counted (``fit``'s arguments are the
    API contract), as ``../shared/tools/structure.py`` counts."""
    body = node.body
    has_doc = ast.get_docstring(node, clean=False) is not None
    if has_doc and len(body) == 1:
        return 0
    lines = set(range(body[1 if has_doc else 0].lineno, node.end_lineno + 1))
    for child in ast.walk(node):
        inner = getattr(child, "body", None)
        if child is not node and isinstance(child, ast.FunctionDef | ast.ClassDef) and inner:
            if ast.get_docstring(child, clean=False) is not None:
                lines -= set(range(inner[0].lineno, inner[0].end_lineno + 1))
    text = [line.strip() for line in source.splitlines()]
    return sum(1 for n in lines if text[n - 1] and not text[n - 1].startswith("#"))


def _functions():
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{path.relative_to(ROOT.parent)}:{node.name}", _code_lines(source, node)


def test_no_function_is_longer_than_a_screen():
    long = sorted((n, name) for name, n in _functions() if n > MAX_CODE_LINES)
    assert not long, f"functions over {MAX_CODE_LINES} lines of code: {long[::-1]}"


def test_the_counter_counts_code_only():
    source = 'def f(x):\n    """Doc.\n\n    More."""\n    # a comment\n\n    y = x\n    return y\n'
    (node,) = ast.parse(source).body
    assert _code_lines(source, node) == 2  # y = x, return y


@pytest.mark.parametrize("path", sorted((ROOT / "tune").glob("*.py")), ids=lambda p: p.name)
def test_tune_runs_the_one_loop(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "fjdl":
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fjdl."):
            imported.add(node.module.split(".")[1])
            private = node.module.startswith("fjdl.train.") or any(
                a.name.startswith("_") for a in node.names if node.module == "fjdl.train"
            )
            assert not private, f"{path.name} imports from fjdl.train's internals: {node.module}"
    assert not imported & NUMERICS, f"{path.name} imports {imported & NUMERICS}"
    private = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "train"
        and node.attr.startswith("_")
    }
    assert not private, f"{path.name} uses private names of fjdl.train: {sorted(private)}"


def test_the_cli_choices_are_the_library_s():
    from fjdl import cli, data, initializers, nn, train

    assert cli.OPTIMIZERS == tuple(train.OPTIMIZERS)
    assert set(cli.ACTIVATIONS) == set(nn.ACTIVATIONS)
    parser = cli.build_parser()
    choices = {
        a.dest: tuple(a.choices)
        for sub in parser._subparsers._group_actions[0].choices.values()
        for a in sub._actions
        if a.choices
    }
    assert set(choices["optimizer"]) == set(train.OPTIMIZERS)
    assert set(choices["init"]) <= set(initializers.SCHEMES)
    assert set(choices["dataset"]) <= set(data.DATASETS)


def test_the_cli_s_optimizer_flags_are_the_registry_s():
    """--beta, --beta1, --beta2 and --epsilon are refused as pointless exactly for the optimizers
    whose registry entry does not take them; the search's beta is one they take."""
    import argparse

    from fjdl import cli, train

    flags = {"--beta": "beta", "--beta1": "beta1", "--beta2": "beta2", "--epsilon": "epsilon"}
    for name, named in train.OPTIMIZERS.items():
        args = argparse.Namespace(
            optimizer=name, decay="none", patience=None, dataset="moons", hidden=(3,), data=None
        )
        pointless = {flag for flag, is_pointless, _ in cli._pointless_train_flags(args)
                     if is_pointless and flag in flags}  # fmt: skip
        assert pointless == {f for f, h in flags.items() if h not in named.hyperparams}, name
        if name in cli._BETA_OF:
            assert cli._BETA_OF[name] in named.hyperparams
