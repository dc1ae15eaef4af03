"""The package stays readable in pieces: no function longer than a screen, and the protocol module
holds the protocol alone (its parts live in modules of their own)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "w2sjax"
MAX_FUNCTION_LINES = 60
MAX_EXPERIMENT_LINES = 400


def _function_lengths(path: pathlib.Path):
    """(name, first line, lines) of every function in ``path``, nested ones and methods included,
    counted from the ``def`` line (decorators aside) to the last line of the body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_the_length_count_is_def_to_last_line(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("@decorator\ndef outer(a,\n          b):\n    def inner():\n        return 1\n\n    return a\n")
    assert sorted(_function_lengths(sample)) == [("inner", 4, 2), ("outer", 2, 6)]


def test_no_function_in_the_package_is_longer_than_a_screen():
    long = [f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({n} lines)"
            for path in sorted(PACKAGE.rglob("*.py")) for name, line, n in _function_lengths(path)
            if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines; split them into named helpers: {long}"


def test_the_protocol_module_stays_small():
    lines = len((PACKAGE / "experiment.py").read_text().splitlines())
    assert lines < MAX_EXPERIMENT_LINES, f"w2sjax/experiment.py has {lines} lines"
