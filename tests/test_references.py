"""The repository documents itself: every reference points at a file that exists in it.

1. No citation of documents a user of the repository does not have: the design notes
   (``DESIGN.md``), the project notes (``notes/papers.md`` and siblings), "the benchmark
   guidance", or anything under ``../shared``. Checked in every ``*.py`` and ``*.md`` file and in
   every cell source (code and Markdown) of every notebook. The content those citations relied on
   lives in ``docs/`` (see ``docs/README.md``); cite a paper or a ``docs/`` page instead.
2. Every relative Markdown link ``[text](path)`` (and image ``![alt](path)``) in the README, the
   ``docs/`` pages, ``results/``, ``benchmarks/README.md``, ``data/README.md`` and the notebooks'
   Markdown cells resolves to an existing file or folder (anchors are stripped, ``http(s)`` and
   ``mailto`` links are not followed).
3. Every mention of a ``docs/<page>.md`` anywhere in ``*.py``, ``*.md`` and ``*.ipynb`` names an
   existing page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

# Folders that are not part of the repository's content (virtual environments, caches, outputs).
SKIP_DIRS = {"runs", "build", "dist", "__pycache__", "node_modules"}

FORBIDDEN = (
    # the design notes, as "DESIGN.md", "DESIGN §2.3", "DESIGN Sec. 2.5": capitals only, so the
    # ordinary word "design" is fine
    re.compile(r"\bDESIGN\b"),
    re.compile(
        r"\bnotes/[\w.-]+"  # notes/papers.md, notes/peers.md, notes/environment.md, ...
        r"|\bbenchmark[- _]guidance\b"
        r"|\b(?:the|our|project's) guidance\b"
        r"|\b(?:the|our) (?:project|design) notes\b"
        r"|\.\./shared\b|/work/shared\b|\bshared/(?:notes|seeds)\b",
        re.IGNORECASE,
    ),
)

MD_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MD_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
DOCS_MENTION = re.compile(r"(?<![\w./-])docs/[\w./-]*?[\w-]+\.md\b")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts[:-1]
    return any(p.startswith(".") or p in SKIP_DIRS or p.endswith(".egg-info") for p in parts)


def _files(*patterns: str) -> list[Path]:
    out = set()
    for pattern in patterns:
        out.update(p for p in REPO.rglob(pattern) if p.is_file() and not _skipped(p, REPO))
    return sorted(out)


def _cell_sources(path: Path) -> list[tuple[str, str]]:
    """``(cell_type, source)`` of every cell of a notebook."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in nb.get("cells", []):
        src = cell.get("source", "")
        cells.append((cell.get("cell_type", ""), "".join(src) if isinstance(src, list) else src))
    return cells


def _texts(path: Path, root: Path) -> list[tuple[str, str]]:
    """``(where, text)`` pieces of a file: the whole file, or one piece per notebook cell."""
    rel = path.relative_to(root).as_posix()
    if path.suffix == ".ipynb":
        return [
            (f"{rel} cell {i} ({kind})", src) for i, (kind, src) in enumerate(_cell_sources(path))
        ]
    return [(rel, path.read_text(encoding="utf-8"))]


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def forbidden_citations(paths: list[Path], root: Path = REPO) -> list[str]:
    """``"file:line: match"`` for every citation of a document outside the repository."""
    found = []
    for path in paths:
        if path.resolve() == THIS_FILE:
            continue
        for where, text in _texts(path, root):
            for pattern in FORBIDDEN:
                for m in pattern.finditer(text):
                    found.append(f"{where}:{_line_of(text, m.start())}: {m.group(0)!r}")
    return found


def _markdown_prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code (their brackets are not links).

    Removed spans are replaced by as many newlines as they held, so line numbers stay right.
    """
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub("", text)


def broken_links(paths: list[Path], root: Path = REPO) -> list[str]:
    """``"file:line: target"`` for every relative Markdown link that does not resolve."""
    broken = []
    for path in paths:
        pieces = _texts(path, root)
        if path.suffix == ".ipynb":
            pieces = [(w, t) for w, t in pieces if w.endswith("(markdown)")]
        for where, text in pieces:
            prose = _markdown_prose(text)
            targets = [(m.group(1), m.start()) for m in MD_LINK.finditer(prose)]
            targets += [(m.group(1), m.start()) for m in MD_REF_DEF.finditer(prose)]
            for target, pos in sorted(targets, key=lambda tp: tp[1]):
                if EXTERNAL.match(target):
                    continue
                local = target.split("#", 1)[0].split("?", 1)[0]
                if local and not (path.parent / local).exists():
                    broken.append(f"{where}:{_line_of(prose, pos)}: {target}")
    return broken


def missing_docs_pages(paths: list[Path], root: Path = REPO) -> list[str]:
    """``"file:line: docs/x.md"`` for every mention of a ``docs/`` page that does not exist."""
    missing = []
    for path in paths:
        if path.resolve() == THIS_FILE:
            continue
        for where, text in _texts(path, root):
            for m in DOCS_MENTION.finditer(text):
                if not (root / m.group(0)).is_file():
                    missing.append(f"{where}:{_line_of(text, m.start())}: {m.group(0)}")
    return missing


def link_checked_files() -> list[Path]:
    explicit = [REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "data" / "README.md"]
    docs = sorted((REPO / "docs").glob("*.md"))
    results = sorted(p for p in (REPO / "results").rglob("*.md") if not _skipped(p, REPO))
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    return [p for p in explicit if p.is_file()] + docs + results + notebooks


def test_docs_folder_has_its_pages() -> None:
    for page in ("README", "notation", "benchmark", "grkd"):
        assert (REPO / "docs" / f"{page}.md").is_file(), f"docs/{page}.md is missing"


def test_no_citation_of_documents_outside_the_repository() -> None:
    found = forbidden_citations(_files("*.py", "*.md", "*.ipynb"))
    assert not found, (
        "these lines cite documents that are not in the repository (DESIGN.md, notes/, the "
        "benchmark guidance, ../shared); cite a paper or a docs/ page instead:\n  "
        + "\n  ".join(found)
    )


def test_every_relative_markdown_link_resolves() -> None:
    broken = broken_links(link_checked_files())
    assert not broken, "these links point at files that do not exist:\n  " + "\n  ".join(broken)


def test_every_mentioned_docs_page_exists() -> None:
    missing = missing_docs_pages(_files("*.py", "*.md", "*.ipynb"))
    assert not missing, "these lines name docs/ pages that do not exist:\n  " + "\n  ".join(missing)


# --- the checks themselves can fail ------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "see DESIGN.md §2.3",
        "(DESIGN 2.5 (paper silent))",
        "DESIGN Sec. 2.1",
        "as listed in notes/papers.md §0",
        "the problem (notes/peers.md Sec. 2)",
        "from the benchmark guidance: the regime",
        "the project's benchmark-guidance",
        "The guidance warns that",
        "read ../shared/seeds/x.txt",
        "as summarised in the project notes",
        "where our design notes and a paper disagree",
    ],
)
def test_forbidden_citation_is_detected(tmp_path: Path, line: str) -> None:
    f = tmp_path / "x.py"
    f.write_text(f"# {line}\n")
    assert forbidden_citations([f], tmp_path), f"not detected: {line!r}"


@pytest.mark.parametrize(
    "line", ["a good design choice", "the design of the loop", "release notes: x", "Design"]
)
def test_ordinary_words_are_not_citations(tmp_path: Path, line: str) -> None:
    f = tmp_path / "x.md"
    f.write_text(line + "\n")
    assert not forbidden_citations([f], tmp_path)


def test_citation_in_a_notebook_code_cell_is_detected(tmp_path: Path) -> None:
    nb = {"cells": [{"cell_type": "code", "source": ["x = 1  # DESIGN 2.3\n"]}]}
    f = tmp_path / "n.ipynb"
    f.write_text(json.dumps(nb))
    assert forbidden_citations([f], tmp_path) == ["n.ipynb cell 0 (code):1: 'DESIGN'"]


def test_broken_link_and_missing_docs_page_are_detected(tmp_path: Path) -> None:
    (tmp_path / "here.md").write_text("x\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](here.md#anchor) [web](https://example.org/x.md) [anchor](#top)\n"
        "[bad](missing.md)\n"
        "```\n[not a link](inside-a-fence.md)\n```\n"
        "`[not a link](inline.md)` ![img](nope.png)\n"
    )
    assert broken_links([page], tmp_path) == ["page.md:2: missing.md", "page.md:6: nope.png"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notation.md").write_text("x\n")
    mention = tmp_path / "m.py"
    mention.write_text('"""See docs/no-such-page.md and docs/notation.md."""\n')
    assert missing_docs_pages([mention], tmp_path) == ["m.py:1: docs/no-such-page.md"]
