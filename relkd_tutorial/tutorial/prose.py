"""Generated prose: no sentence that reports a result is typed by hand.

Typed prose (notebook Markdown, READMEs, ``docs/``) explains and defines; it may hold integers
(seeds, epochs, years) and anything in math (``$...$``) or code. Results are rendered from
computed values: in a notebook by :func:`say`, in the README by ``scripts/render_readme_results.py``.

:func:`find_typed_results` is the rule. Outside math, code, HTML comments and link targets it
flags a **decimal** (``0.692``; not a version or section ``2.14.1``, nor one after a word of
:data:`ALLOWED_BEFORE_DECIMAL` such as ``Sec.`` or ``Python``), a **percentage** (``40%``; not a
confidence level naming its interval, ``95% CI``, nor the column ``top-1 %``), a **ratio**
(``45.9×``, ``48 times``, ``3-fold``; not a size ``28x28``), a **difference** (``+3.97 points``,
``5 pp``), a **spread** (``± 2``) and a **duration** (``24 minutes``). ``scripts/check_prose.py``
applies it to files, with the escapes of one block (``<!-- not-a-result: why -->``,
``<!-- asserted -->``) and the README's generated blocks; ``tests/test_generated_prose.py``
enforces it.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any

#: Words after which a decimal is a reference or a version, not a result (``Sec. 3.2``).
ALLOWED_BEFORE_DECIMAL = (
    "sec", "secs", "sect", "section", "sections", "§", "eq", "eqs", "equation", "equations",
    "fig", "figure", "table", "tab", "algorithm", "alg", "appendix", "chapter", "ch", "theorem",
    "thm", "lemma", "definition", "def", "prop", "proposition", "corollary", "dlmf", "python",
    "torch", "pytorch", "torchvision", "cuda", "numpy", "matplotlib", "version", "v", "arxiv",
    "release",
)  # fmt: skip

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_START = r"(?<![\w.,])"  # a number starts here, not inside a word or another number
_I = re.IGNORECASE
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("percentage", re.compile(
        _START + r"(?<!top-)" + _NUM + r"\s?(?:%|percent\b)"
        r"(?![\s-]*(?:paired[\s-]+)?(?:t[\s-]+)?(?:confidence[\s-]+)?(?:intervals?|CIs?)\b)", _I)),
    ("ratio", re.compile(_START + _NUM + r"\s?(?:×|x)(?!\s?\d)(?!\w)")),
    ("ratio", re.compile(_START + _NUM + r"(?:\s+times\b|\s?-?fold\b)", _I)),
    ("difference in points", re.compile(
        r"(?:(?<!\w)[-+±−]\s?" + _NUM + r"\s*(?:percentage\s+)?(?:points?|pp|pts)\b"
        r"|" + _START + _NUM + r"\s*(?:percentage\s+points?|pp)\b)", _I)),
    ("spread (±)", re.compile(r"±\s?" + _NUM)),
    ("duration", re.compile(
        _START + _NUM + r"\s?(?:ms|s|secs?|seconds?|mins?|minutes?|h|hrs?|hours?)\b", _I)),
)  # fmt: skip
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


def _line_findings(masked: str, original: str, line_no: int) -> list[Finding]:
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for reason, pattern in (*_RULES, ("decimal number", _DECIMAL)):
        for m in pattern.finditer(masked):
            version = pattern is _DECIMAL and m.group(0).count(".") >= 2  # 2.14.1, section 3.2.1
            if version or any(a < m.end() and m.start() < b for a, b in taken):
                continue
            before = _WORD_BEFORE.search(masked[: m.start()])  # a reference: Eq. 4 times is fine
            if before and before.group(1).lower() in ALLOWED_BEFORE_DECIMAL:
                continue
            taken.append((m.start(), m.end()))
            found.append(Finding(line_no, original, m.group(0).strip(), reason))
    return sorted(found, key=lambda f: original.find(f.match))


def find_typed_results(text: str) -> list[Finding]:
    """Typed result numbers in Markdown ``text``, in reading order (empty: the text passes)."""
    masked = mask_markup(text).split("\n")
    return [f for i, (m, line) in enumerate(zip(masked, text.split("\n"), strict=True))
            for f in _line_findings(m, line, i + 1)]  # fmt: skip


# --- Writing results: say()


def format_literals(text: str) -> list[str]:
    """The literal pieces of a ``str.format`` template (the whole text if it is not one)."""
    try:
        return [lit for lit, *_ in string.Formatter().parse(text) if lit]
    except ValueError:
        return [text]


class Sentence(str):
    """A rendered sentence: a ``str`` that a notebook displays as Markdown (no quotes)."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def say(template: str, /, **values: Any) -> Sentence:
    """A result sentence rendered from computed values, e.g. ``say("KD reaches {acc:.1f}%.",
    acc=100 * kd)``: ValueError where the template's literal text types a result number, names a
    missing value, or a value is NaN or infinite."""
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    typed = [f for piece in format_literals(template) for f in find_typed_results(piece)]
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
