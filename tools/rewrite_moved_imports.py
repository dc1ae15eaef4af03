"""Rewrite imports of moved w2sjax modules to their new paths, in place.

    python tools/rewrite_moved_imports.py FILE...

The old paths still import for one release (``w2sjax.MOVED``), with a DeprecationWarning; this
moves code off them. It rewrites ``from w2sjax import a, b`` into one line per package,
``w2sjax.OLD`` and ``w2sjax/OLD.py`` in code and prose, and, where a module was also renamed
(``stages`` -> ``stage_keys``), the uses ``OLD.name`` of a module imported by its bare old name,
for the names that module defines only (so a variable called ``labels`` is left alone). It reads
the package's files and imports nothing of it. Review the diff: a local variable named like an
old module and used as ``labels.refine`` in the same file would be renamed too.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def moved() -> dict[str, str]:
    """``w2sjax.MOVED``, read from the package's ``__init__.py`` without importing it."""
    tree = ast.parse((ROOT / "w2sjax" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["MOVED"]:
            return ast.literal_eval(node.value)
    raise SystemExit("w2sjax/__init__.py defines no MOVED")


def _defined(module: str) -> set[str]:
    """Top-level names that ``module``'s file defines or imports."""
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        return set()
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


_FROM = re.compile(r"^([ \t]*)from w2sjax import (\([^)]*\)|[^\n]*)", re.M)


# ``w2sjax.report`` was the tables module and is now the package holding it: only a bare
# ``from w2sjax import report`` (and its uses) moves, never a dotted ``w2sjax.report.x``.
_BARE_ONLY = {"report": "w2sjax.report.tables"}


def rewrite(text: str, table: dict[str, str]) -> str:
    alt = "|".join(sorted(table, key=len, reverse=True))
    text = re.sub(rf"\bw2sjax\.({alt})\b(?!\.py)", lambda m: table[m.group(1)], text)
    text = re.sub(rf"\bw2sjax/({alt})\.py\b", lambda m: table[m.group(1)].replace(".", "/") + ".py", text)
    renamed: dict[str, str] = {}

    def split(match: re.Match) -> str:
        indent, body = match.group(1), re.sub(r"#[^\n]*", "", match.group(2))
        groups: dict[str, list[str]] = {}
        for item in (n.strip() for n in body.strip("()").replace("\\\n", " ").split(",")):
            if not item:
                continue
            name, _, alias = (p.strip() for p in item.partition(" as "))
            package, new = ("w2sjax", name)
            target = table.get(name) or _BARE_ONLY.get(name)
            if target:
                package, _, new = target.rpartition(".")
                if not alias and new != name:
                    renamed[name] = target
            groups.setdefault(package, []).append(f"{new} as {alias}" if alias else new)
        return "\n".join(f"{indent}from {package} import {', '.join(sorted(names))}"
                         for package, names in sorted(groups.items()))

    text = _FROM.sub(split, text)
    for old, new in renamed.items():
        names = "|".join(sorted(_defined(new), key=len, reverse=True))
        if names:
            text = re.sub(rf"(?<![\w.]){old}\.(?=({names})\b)", new.rpartition(".")[2] + ".", text)
    return text


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    table = {old: new for old, new in moved().items() if new.startswith("w2sjax.")}
    for name in argv:
        path = pathlib.Path(name)
        text = path.read_text()
        new = rewrite(text, table)
        if new != text:
            path.write_text(new)
            print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
