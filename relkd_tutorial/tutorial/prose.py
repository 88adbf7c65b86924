"""Generated prose: no sentence that reports a result is typed by hand.

A number in a sentence drifts from the output it describes as soon as a run, a seed or a default
changes. So the course keeps two kinds of text apart:

- **Typed prose** (Markdown cells of the notebooks, ``README.md``, ``results/README.md``, the
  ``docs/`` pages) explains, derives and defines. It may hold integers (seeds, epochs, class
  indices, years) and anything inside LaTeX math (``$...$``, ``$$...$$``) or code (`` `...` ``,
  fenced blocks), which is where parameters and equations belong.
- **Results** are rendered from computed values: in a notebook by a code cell (:func:`say`, or
  ``display(Markdown(...))`` built from variables), in the README by a block between
  ``<!-- generated:NAME begin -->`` and ``<!-- generated:NAME end -->`` that
  ``scripts/render_readme_results.py`` rewrites from ``results/``.

:func:`find_typed_results` is the rule. Outside math, code, HTML comments and link targets it
flags, with a reason,

- a **decimal number** (``0.692``, ``90.85``), except a dotted version or section number
  (``2.14.1``, ``3.2.1``) or one right after a word such as ``Sec.``, ``Eq.``, ``Table``,
  ``Python`` or ``arXiv`` (:data:`ALLOWED_BEFORE_DECIMAL`);
- a **percentage** (``40%``, ``12 percent``), except a confidence level naming its interval
  (``95% interval``, ``95% CI``) and the column name ``top-1 %``;
- a **ratio** (``45.9×``, ``48 times``, ``3-fold``; a size such as ``5×5`` or ``28x28`` is fine);
- a **difference** (``+3.97 points``, ``4 percentage points``, ``5 pp``) or a **spread**
  (``± 2``);
- a **duration** (``24 minutes``, ``1.5 s``).

Escapes, each for one block (a paragraph, list or table: lines up to the next blank line):

- ``<!-- not-a-result -->`` (optionally ``<!-- not-a-result: why -->``): the block's numbers are
  constants, not results (a table of parameters, a data set's size, a licence year range).
- ``<!-- asserted -->`` (notebooks only): every flagged number of the block must appear as a
  literal in an ``assert`` of the next code cell, so a changed result fails the notebook.

In code cells the same rule reads the literal text of :func:`say` templates and of
``Markdown(...)`` arguments (f-string pieces, ``.format`` templates): moving a typed number into a
string does not make it computed. ``python -m relkd_tutorial.tutorial.prose FILE...`` prints every
offender; ``tests/test_generated_prose.py`` enforces the rule.
"""

from __future__ import annotations

import ast
import json
import math
import re
import string
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------

#: Words after which a decimal is a reference or a version, not a result (``Sec. 3.2``).
ALLOWED_BEFORE_DECIMAL = (
    "sec", "secs", "sect", "section", "sections", "§", "eq", "eqs", "equation", "equations",
    "fig", "figure", "table", "tab", "algorithm", "alg", "appendix", "chapter", "ch", "theorem",
    "thm", "lemma", "definition", "def", "prop", "proposition", "corollary", "dlmf", "python",
    "torch", "pytorch", "torchvision", "cuda", "numpy", "matplotlib", "version", "v", "arxiv",
    "release",
)  # fmt: skip

NOT_A_RESULT = re.compile(r"<!--\s*not-a-result\b[^>]*-->", re.IGNORECASE)
ASSERTED = re.compile(r"<!--\s*asserted\s*-->", re.IGNORECASE)
GENERATED = re.compile(r"<!--\s*generated:([\w./-]+)\s+(begin|end)\s*-->")

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_START = r"(?<![\w.,])"  # a number starts here, not inside a word or another number
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "percentage",
        re.compile(
            _START + r"(?<!top-)" + _NUM + r"\s?(?:%|percent\b)"
            r"(?![\s-]*(?:paired[\s-]+)?(?:t[\s-]+)?(?:confidence[\s-]+)?(?:intervals?|CIs?)\b)",
            re.IGNORECASE,
        ),
    ),
    ("ratio", re.compile(_START + _NUM + r"\s?(?:×|x)(?!\s?\d)(?!\w)")),
    ("ratio", re.compile(_START + _NUM + r"(?:\s+times\b|\s?-?fold\b)", re.IGNORECASE)),
    (
        "difference in points",
        re.compile(
            r"(?:(?<!\w)[-+±−]\s?" + _NUM + r"\s*(?:percentage\s+)?(?:points?|pp|pts)\b"
            r"|" + _START + _NUM + r"\s*(?:percentage\s+points?|pp)\b)",
            re.IGNORECASE,
        ),
    ),
    ("spread (±)", re.compile(r"±\s?" + _NUM)),
    (
        "duration",
        re.compile(
            _START + _NUM + r"\s?(?:ms|s|secs?|seconds?|mins?|minutes?|h|hrs?|hours?)\b",
            re.IGNORECASE,
        ),
    ),
)
_DECIMAL = re.compile(_START + r"\d+(?:\.\d+)+")
_WORD_BEFORE = re.compile(r"([^\W\d_]+|§)\.?\s*(?:\(|\s)?$", re.UNICODE)


@dataclass(frozen=True)
class Finding:
    """One typed result: where (1-based ``line`` of the text), what matched, and why."""

    line: int
    text: str
    match: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason} {self.match!r} in: {self.text.strip()}"


def _blank(match: re.Match[str]) -> str:
    """The matched text with every character but newlines replaced by a space."""
    return re.sub(r"[^\n]", " ", match.group(0))


_MASKS = (
    re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.MULTILINE | re.DOTALL),  # fenced code
    re.compile(r"<!--.*?-->", re.DOTALL),  # HTML comments (and the markers)
    re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL),  # inline code, any backtick run
    re.compile(r"\$\$.+?\$\$", re.DOTALL),  # display math
    re.compile(r"\\\[.+?\\\]|\\\(.+?\\\)", re.DOTALL),  # \[ \] and \( \) math
    re.compile(r"(?<![\\$])\$(?!\s)(?:[^$\n]|\n(?!\s*\n))+?(?<![\s\\])\$"),  # inline $...$
    re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)"),  # link and image targets: ](path "title")
    re.compile(r"<[a-zA-Z/][^>\n]*>"),  # HTML tags
    re.compile(r"\bhttps?://\S+"),  # bare URLs
)


def mask_markup(text: str) -> str:
    """``text`` with code, math, comments, tags and link targets blanked (lines are kept)."""
    for pattern in _MASKS:
        text = pattern.sub(_blank, text)
    return text


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


def _after_reference(masked_line: str, start: int) -> bool:
    """Whether the number at ``start`` follows a reference word (``Eq. 4 times`` is fine)."""
    before = _WORD_BEFORE.search(masked_line[:start])
    return bool(before) and before.group(1).lower() in ALLOWED_BEFORE_DECIMAL


def _decimal_allowed(masked_line: str, m: re.Match[str]) -> bool:
    if m.group(0).count(".") >= 2:  # a version or a section: 2.14.1, 3.2.1
        return True
    return _after_reference(masked_line, m.start())


def _line_findings(masked: str, original: str, line_no: int) -> list[Finding]:
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for reason, pattern in _RULES:
        for m in pattern.finditer(masked):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            if _after_reference(masked, m.start()):
                continue
            taken.append((m.start(), m.end()))
            found.append(Finding(line_no, original, m.group(0).strip(), reason))
    for m in _DECIMAL.finditer(masked):
        if any(a < m.end() and m.start() < b for a, b in taken) or _decimal_allowed(masked, m):
            continue
        found.append(Finding(line_no, original, m.group(0), "decimal number"))
    return sorted(found, key=lambda f: original.find(f.match))


def find_typed_results(
    text: str,
    *,
    generated_blocks: bool = False,
    asserted_literals: Iterable[float] | None = None,
) -> list[Finding]:
    """Typed result numbers in Markdown ``text`` (see the module docstring for the rule).

    Args:
        text: Markdown.
        generated_blocks: skip ``<!-- generated:NAME begin/end -->`` blocks (a file whose blocks
            a test regenerates, such as the README); an unclosed block is itself a finding.
        asserted_literals: the numeric literals of the ``assert`` statements of the next code
            cell; a block marked ``<!-- asserted -->`` may state these numbers (and only these;
            a percentage may match its fraction). ``None``: the marker is not honoured.

    Returns:
        The findings in reading order (empty: the text passes).
    """
    lines = text.split("\n")
    masked = mask_markup(text).split("\n")
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
    for i, (m_line, line) in enumerate(zip(masked, lines, strict=True)):
        if i in skip:
            continue
        for f in _line_findings(m_line, line, i + 1):
            if i in asserted:
                if literals is None:
                    findings.append(
                        Finding(
                            f.line,
                            f.text,
                            f.match,
                            f"{f.reason} (an <!-- asserted --> block needs a following code cell)",
                        )  # fmt: skip
                    )
                elif not _asserted(f.match, literals):
                    findings.append(
                        Finding(
                            f.line, f.text, f.match, f"{f.reason} not in the next cell's asserts"
                        )
                    )
                continue
            findings.append(f)
    return findings


def _asserted(match: str, literals: Sequence[float]) -> bool:
    m = re.search(_NUM, match)
    if m is None:
        return True  # e.g. a bare "±": nothing to assert
    value = float(m.group(0).replace(",", ""))
    targets = [value, value / 100.0] if "%" in match or "percent" in match.lower() else [value]
    return any(math.isclose(t, v, rel_tol=1e-9, abs_tol=1e-12) for t in targets for v in literals)


# ---------------------------------------------------------------------------------------------
# Code cells: literal text of say(...) and Markdown(...)
# ---------------------------------------------------------------------------------------------

PROSE_CALLS = ("say", "Markdown", "display_markdown")


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _format_literals(text: str) -> list[str]:
    """The literal pieces of a ``str.format`` template (the whole text if it is not one)."""
    try:
        return [lit for lit, *_ in string.Formatter().parse(text) if lit]
    except ValueError:
        return [text]


def _literal_text(node: ast.expr) -> list[str]:
    """The typed pieces of a string expression: constants, f-string parts, format templates."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _format_literals(node.value)
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


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


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


def markdown_offenders(path: str | Path, *, generated_blocks: bool = False) -> list[Offender]:
    """Every typed result in a Markdown file (see :func:`find_typed_results`)."""
    path = Path(path)
    findings = find_typed_results(
        path.read_text(encoding="utf-8"), generated_blocks=generated_blocks
    )
    return [Offender(str(path), None, f) for f in findings]


def file_offenders(path: str | Path) -> list[Offender]:
    """:func:`notebook_offenders` for ``*.ipynb``, else :func:`markdown_offenders` (generated
    blocks skipped: whoever generates them checks them)."""
    path = Path(path)
    if path.suffix == ".ipynb":
        return notebook_offenders(path)
    return markdown_offenders(path, generated_blocks=True)


# ---------------------------------------------------------------------------------------------
# Writing results: say()
# ---------------------------------------------------------------------------------------------


class Sentence(str):
    """A rendered sentence: a ``str`` that a notebook displays as Markdown (no quotes)."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def say(template: str, /, **values: Any) -> Sentence:
    """A result sentence rendered from computed values, to end a notebook code cell with.

    ``template`` is a :meth:`str.format` template whose literal text obeys the prose rule (no
    typed result number: every number comes from ``values``), e.g.::

        say("KD reaches {acc:.1f}% against CE's {ce:.1f}%.", acc=100 * kd, ce=100 * ce)

    Raises:
        ValueError: the template types a result number, names a missing value, or a value is
            NaN or infinite (a sentence about a number that does not exist).
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    typed = [f for piece in _format_literals(template) for f in find_typed_results(piece)]
    if typed:
        raise ValueError(
            "say(): the template types a result number; pass it as a value instead: "
            + "; ".join(f"{f.reason} {f.match!r}" for f in typed)
        )
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"say(): value {name}={value} is not a finite number")
    try:
        return Sentence(template.format(**values))
    except (KeyError, IndexError) as err:
        raise ValueError(f"say(): the template names {err} but no such value was given") from err


def main(argv: Sequence[str] | None = None) -> int:
    """Print every typed result of the given files; exit status 1 if there is any."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m relkd_tutorial.tutorial.prose FILE.ipynb|FILE.md ...")
        return 2
    total = 0
    for p in paths:
        offenders = file_offenders(p)
        total += len(offenders)
        for o in offenders:
            print(o)
    print(f"{total} typed result(s) in {len(paths)} file(s)")
    return 1 if total else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
