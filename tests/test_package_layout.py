"""The package's shape: a short top level, no import cycles, and the old module paths still working
(for one release) as the very same modules, with a warning naming the new path."""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import w2sjax

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "w2sjax"

# Pairs of modules that import each other through an import inside a function, each with why it
# stays. Such an import runs when the function is called, after both modules have loaded, so it
# cannot fail half-way through an import; each one here is a lower-level module calling back up
# into the one that builds on it. (Longer loops closed by imports inside functions, through the
# package __init__s, are allowed for the same reason: the module-level graph has none.)
MUTUAL_LAZY = {
    # assets notices, while fetching, that a file it checked earlier changed on disk, and asks verify
    # to discard the caches derived from it; verify reads every asset, so it is the module above.
    frozenset({"w2sjax.assets", "w2sjax.runner.verify"}),
    # tables.write_html is the one-call way to the page; the page (html) is built from the tables.
    frozenset({"w2sjax.report.tables", "w2sjax.report.html"}),
}


def test_top_level_has_at_most_twelve_modules():
    modules = sorted(p.name for p in PKG.glob("*.py"))
    assert len(modules) <= 12, modules


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules: dict, *, module_level: bool) -> set[str]:
    """The w2sjax modules that importing ``name`` imports: its ``import`` and ``from`` statements
    (at module level only, or anywhere), and the packages above each of them, whose ``__init__``
    runs first."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    found = set()
    for target in targets:
        if target.split(".")[0] != "w2sjax":
            continue
        parts = target.split(".")
        for i in range(2, len(parts) + 1):  # the package w2sjax itself is always imported first
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                found.add(prefix)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[frozenset]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    modules = _modules()
    module_level = {m: _imports(m, p, modules, module_level=True) for m, p in modules.items()}
    assert _cycles(module_level) == []
    anywhere = {m: _imports(m, p, modules, module_level=False) for m, p in modules.items()}
    mutual = {frozenset((a, b)) for a in anywhere for b in anywhere[a] if a in anywhere[b]}
    assert mutual <= MUTUAL_LAZY, mutual - MUTUAL_LAZY


def test_the_cycle_finder_finds_cycles_and_imports(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    modules = {"w2sjax.runner": None, "w2sjax.runner.x": None, "w2sjax.report.y": None}
    path = tmp_path / "z.py"
    path.write_text("import os\nfrom w2sjax.runner import x\nfrom . import y\ndef f():\n    import w2sjax.runner\n")
    assert _imports("w2sjax.report.z", path, modules, module_level=True) == {
        "w2sjax.runner", "w2sjax.runner.x", "w2sjax.report.y"}


def test_old_module_paths_leave_no_files_behind():
    # A file at an old path would take the import and hide the move (and it defeats git's rename
    # detection for anyone editing the old file).
    assert [old for old in w2sjax.MOVED if (PKG / f"{old}.py").exists()] == []


@pytest.mark.parametrize("old", sorted(w2sjax.MOVED))
def test_old_module_path_is_the_moved_module_and_warns(old, monkeypatch):
    new = w2sjax.MOVED[old]
    # Import afresh: forget the alias (not the module it names) if an earlier test imported it.
    monkeypatch.delitem(sys.modules, f"w2sjax.{old}", raising=False)
    monkeypatch.delattr(w2sjax, old, raising=False)
    with pytest.warns(DeprecationWarning, match=rf"w2sjax\.{old} is deprecated.*import {new}$") as caught:
        module = importlib.import_module(f"w2sjax.{old}")
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new  # its own spec, not the alias's
    assert sys.modules[f"w2sjax.{old}"] is module and getattr(w2sjax, old) is module
    ours = [w.filename for w in caught if "will be removed in the next release" in str(w.message)]
    assert ours == [__file__]  # the warning points at the importing line, not at w2sjax


def test_from_import_of_an_old_path_warns(monkeypatch):
    monkeypatch.delitem(sys.modules, "w2sjax.stages", raising=False)
    monkeypatch.delattr(w2sjax, "stages", raising=False)
    with pytest.warns(DeprecationWarning, match="w2sjax.runner.stage_keys"):
        from w2sjax import stages
        from w2sjax.stages import StageKey
    from w2sjax.runner import stage_keys

    assert stages is stage_keys and StageKey is stage_keys.StageKey


def test_old_report_module_names_forward_to_tables():
    from w2sjax.report import tables

    with pytest.warns(DeprecationWarning, match=r"w2sjax\.report\.tables\.format_table"):
        assert w2sjax.report.format_table is tables.format_table
    with pytest.raises(AttributeError):
        w2sjax.report.no_such_name  # noqa: B018


def test_importing_the_package_stays_light():
    code = ("import sys, w2sjax\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('jax', 'numpy', 'flax', 'optax', 'orbax')]\n"
            "assert not heavy, heavy\n"
            "assert not [m for m in sys.modules if m.startswith('w2sjax.')], 'imported a submodule'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_rewrite_tool_moves_code_off_the_old_paths(tmp_path):
    import runpy

    tool = runpy.run_path(str(ROOT / "tools" / "rewrite_moved_imports.py"))
    assert tool["moved"]() == w2sjax.MOVED
    src = tmp_path / "user.py"
    src.write_text("from w2sjax import config, report, stages\n"
                   "from w2sjax.results import finite\n\n\n"
                   "def f(parser):\n"
                   "    report = parser.add_parser('report')  # a variable, not the module\n"
                   "    report.add_argument('dir')\n"
                   "    return stages.StageKey, finite, `w2sjax/signals.py`\n".replace("`", '"'))
    assert tool["main"]([str(src)]) == 0
    assert src.read_text() == ("from w2sjax import config\n"
                               "from w2sjax.report import tables\n"
                               "from w2sjax.runner import stage_keys\n"
                               "from w2sjax.report.results import finite\n\n\n"
                               "def f(parser):\n"
                               "    report = parser.add_parser('report')  # a variable, not the module\n"
                               "    report.add_argument('dir')\n"
                               "    return stage_keys.StageKey, finite, \"w2sjax/runner/sigint.py\"\n")
