"""Print every typed result number in notebooks and Markdown files; exit 1 if there is any.

    python scripts/check_prose.py notebooks/*.ipynb README.md results/README.md docs/*.md

The rule is :func:`relkd_tutorial.tutorial.prose.find_typed_results` with the escapes of
:func:`markdown_findings`: in a Markdown file (its
generated README blocks skipped: ``scripts/render_readme_results.py`` checks them) and a
notebook's Markdown cells (an ``<!-- asserted -->`` block may state the numbers of the next code
cell's ``assert``), and in code cells over the literal text of ``say(...)`` / ``Markdown(...)``
templates (f-string pieces, ``.format`` templates): moving a typed number into a string does not
make it computed. ``tests/test_generated_prose.py`` enforces it.
"""

from __future__ import annotations

import ast
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relkd_tutorial.tutorial.prose import (  # noqa: E402
    _MASKS,
    _NUM,
    Finding,
    _blank,
    find_typed_results,
    format_literals,
)

PROSE_CALLS = ("say", "Markdown", "display_markdown")
NOT_A_RESULT = re.compile(r"<!--\s*not-a-result\b[^>]*-->", re.IGNORECASE)
ASSERTED = re.compile(r"<!--\s*asserted\s*-->", re.IGNORECASE)
GENERATED = re.compile(r"<!--\s*generated:([\w./-]+)\s+(begin|end)\s*-->")


def _blocks(lines: Sequence[str]) -> list[tuple[int, int]]:
    """``(first, last)`` line indices of the blocks: runs of lines between blank lines."""
    out, start = [], None
    for i, line in enumerate(lines):
        if line.strip():
            start = i if start is None else start
        elif start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(lines) - 1))
    return out


def _asserted(match: str, literals: Sequence[float]) -> bool:
    m = re.search(_NUM, match)
    if m is None:
        return True  # e.g. a bare "±": nothing to assert
    value = float(m.group(0).replace(",", ""))
    targets = [value, value / 100.0] if "%" in match or "percent" in match.lower() else [value]
    return any(math.isclose(t, v, rel_tol=1e-9, abs_tol=1e-12) for t in targets for v in literals)


def markdown_findings(
    text: str,
    *,
    generated_blocks: bool = False,
    asserted_literals: Iterable[float] | None = None,
) -> list[Finding]:
    """:func:`find_typed_results` of a Markdown file with its escapes, each for one block (lines
    up to the next blank line): ``<!-- not-a-result: why -->`` skips it; ``<!-- asserted -->``
    lets it state ``asserted_literals`` (the numbers of the next code cell's ``assert``; a
    percentage may match its fraction; ``None``: the marker is not honoured); with
    ``generated_blocks`` the ``<!-- generated:NAME begin/end -->`` blocks are skipped (an
    unclosed one is itself a finding)."""
    lines = text.split("\n")
    # markers count only outside code (a page may show a marker in backticks)
    marked = _MASKS[2].sub(_blank, _MASKS[0].sub(_blank, text)).split("\n")
    skip: set[int] = set()
    asserted: set[int] = set()
    findings: list[Finding] = []
    if generated_blocks:
        open_at: tuple[int, str] | None = None
        for i, line in enumerate(marked):
            for m in GENERATED.finditer(line):
                if m.group(2) == "begin":
                    open_at = (i, m.group(1))
                elif open_at is not None and open_at[1] == m.group(1):
                    skip.update(range(open_at[0], i + 1))
                    open_at = None
        if open_at is not None:
            findings.append(
                Finding(open_at[0] + 1, lines[open_at[0]], open_at[1], "unclosed generated block")
            )
    for first, last in _blocks(lines):
        block = "\n".join(marked[first : last + 1])
        if NOT_A_RESULT.search(block):
            skip.update(range(first, last + 1))
        elif ASSERTED.search(block):
            asserted.update(range(first, last + 1))
    literals = [float(v) for v in asserted_literals] if asserted_literals is not None else None
    for f in find_typed_results(text):
        i = f.line - 1
        if i in skip:
            continue
        if i not in asserted:
            findings.append(f)
        elif literals is None:
            why = "(an <!-- asserted --> block needs a following code cell)"
            findings.append(replace(f, reason=f"{f.reason} {why}"))
        elif not _asserted(f.match, literals):
            findings.append(replace(f, reason=f"{f.reason} not in the next cell's asserts"))
    return findings


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
            findings = markdown_findings(src, asserted_literals=literals)
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
    findings = markdown_findings(path.read_text(encoding="utf-8"), generated_blocks=True)
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
