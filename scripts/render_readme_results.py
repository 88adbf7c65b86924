"""Rewrite the README's generated result blocks from the committed ``results/`` folders.

    python scripts/render_readme_results.py          # rewrite README.md in place
    python scripts/render_readme_results.py --check  # exit 1 if README.md differs from a render

The blocks sit between ``<!-- generated:NAME begin -->`` and ``<!-- generated:NAME end -->``
(``NAME`` is a results folder, e.g. ``results`` or ``results/sweep-transfer``); what they say is
rendered by :mod:`relkd_tutorial.tutorial.readme` from the folder's CSV files, so the README's
numbers are the committed results' numbers. Run it after regenerating ``results/``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relkd_tutorial.tutorial.readme import block_names, render_readme  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    names = block_names(text)
    if not names:
        print(f"{path}: no <!-- generated:NAME begin --> blocks", file=sys.stderr)
        return 1
    new = render_readme(text, REPO)
    if args.check:
        if new != text:
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(True), new.splitlines(True), str(path), "rendered"
                )  # fmt: skip
            )
            return 1
        print(f"{path}: blocks {names} are up to date")
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    print(f"{path}: rendered blocks {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
