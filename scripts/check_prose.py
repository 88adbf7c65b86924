"""Print every typed result number in notebooks and Markdown files; exit 1 if there is any.

    python scripts/check_prose.py notebooks/*.ipynb README.md results/README.md docs/*.md

The rule is :func:`relkd_tutorial.tutorial.prose.find_typed_results`: in a Markdown file (its
generated README blocks skipped: ``scripts/render_readme_results.py`` checks them) and a
notebook's Markdown cells (an ``<!-- asserted -->`` block may state the numbers of the next code
cell's ``assert``), and in code cells over the literal text of ``say(...)`` / ``Markdown(...)``
templates (f-string pieces, ``.format`` templates): moving a typed number into a string does not
make it computed. ``tests/test_generated_prose.py`` enforces it.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relkd_tutorial.tutorial.prose import Finding, find_typed_results, format_literals  # noqa: E402

PROSE_CALLS = ("say", "Markdown", "display_markdown")


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _literal_text(node: ast.expr) -> list[str]:
    """The typed pieces of a string expression: constants, f-string parts, format templates."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return format_literals(node.value)
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_text(node.left) + _literal_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "format":
            return _literal_text(node.func.value)
    return []


def parse_cell(source: str) -> ast.Module | None:
    """A code cell as Python, IPython magics and shell lines blanked; ``None`` if it is not."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n")]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def code_cell_findings(source: str) -> list[Finding]:
    """Typed result numbers in the literal text of the cell's :data:`PROSE_CALLS`."""
    tree = parse_cell(source)
    if tree is None:
        return []
    src_lines = source.split("\n")
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _call_name(node.func) in PROSE_CALLS):
            continue
        for arg in node.args[:1]:
            for piece in _literal_text(arg):
                for f in find_typed_results(piece):
                    text = src_lines[node.lineno - 1] if node.lineno <= len(src_lines) else piece
                    out.append(Finding(node.lineno, text, f.match, f"{f.reason} typed into "
                                       f"{_call_name(node.func)}()"))  # fmt: skip
    return out


def assert_literals(source: str) -> list[float]:
    """The numeric literals inside the ``assert`` statements of a code cell."""
    tree = parse_cell(source)
    if tree is None:
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            for sub in ast.walk(node.test):
                if isinstance(sub, ast.Constant) and type(sub.value) in (int, float):
                    out.append(float(sub.value))
    return out


@dataclass(frozen=True)
class Offender:
    """A finding in a file: ``cell`` is the notebook cell index (``None`` in a Markdown file)."""

    path: str
    cell: int | None
    finding: Finding

    def __str__(self) -> str:
        where = self.path if self.cell is None else f"{self.path} cell {self.cell}"
        return f"{where}, {self.finding}"


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def notebook_offenders(path: str | Path) -> list[Offender]:
    """Every typed result in a notebook's Markdown cells and in its code cells' prose calls."""
    path = Path(path)
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    out = []
    for i, cell in enumerate(cells):
        src = _source(cell)
        if cell.get("cell_type") == "markdown":
            nxt = next((c for c in cells[i + 1 :] if c.get("cell_type") == "code"), None)
            literals = assert_literals(_source(nxt)) if nxt is not None else None
            findings = find_typed_results(src, asserted_literals=literals)
        elif cell.get("cell_type") == "code":
            findings = code_cell_findings(src)
        else:
            findings = []
        out += [Offender(str(path), i, f) for f in findings]
    return out


def file_offenders(path: str | Path) -> list[Offender]:
    """:func:`notebook_offenders` for ``*.ipynb``, else a Markdown file's typed results (its
    generated blocks skipped: whoever generates them checks them)."""
    path = Path(path)
    if path.suffix == ".ipynb":
        return notebook_offenders(path)
    findings = find_typed_results(path.read_text(encoding="utf-8"), generated_blocks=True)
    return [Offender(str(path), None, f) for f in findings]


def main(argv: Sequence[str] | None = None) -> int:
    """Print every typed result of the given files; exit status 1 if there is any."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python scripts/check_prose.py FILE.ipynb|FILE.md ...")
        return 2
    total = 0
    for p in paths:
        offenders = file_offenders(p)
        total += len(offenders)
        for o in offenders:
            print(o)
    print(f"{total} typed result(s) in {len(paths)} file(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
