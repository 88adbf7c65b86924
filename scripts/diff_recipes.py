"""Compare two recipe files (e.g. a tuning with and without ``--prune``): did a choice change?

    python scripts/diff_recipes.py relkd_tutorial/bench/recipes.json results/tuning/recipes-pruned.json

Lists every knob's two choices and marks ``DIFFERS`` where they are more than a factor 3 apart
(about half a decade) or a method is in one file only, with the two validation scores and the
number of pruned trials (the output committed as ``results/tuning/pruning-diff.txt``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from relkd_tutorial.bench.recipes import FORMAT


def read_recipes(path: str | Path) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a format-{FORMAT} recipe file")
    return doc


def diff_recipes(a: dict[str, Any], b: dict[str, Any], factor: float = 3.0) -> list[str]:
    """Lines comparing two recipe files: every knob's two choices; ``DIFFERS`` where they are
    more than ``factor`` apart or a method is in one file only."""
    lines = []
    for setting in sorted(set(a["settings"]) | set(b["settings"])):
        ea, eb = a["settings"].get(setting, {}), b["settings"].get(setting, {})
        for method in sorted(set(ea) | set(eb)):
            if method not in ea or method not in eb:
                lines.append(f"{setting} {method}: in one file only  DIFFERS")
                continue
            pa, pb = ea[method]["params"], eb[method]["params"]
            for k in sorted(set(pa) | set(pb)):
                va, vb = pa.get(k, math.nan), pb.get(k, math.nan)
                ratio = max(va, vb) / min(va, vb) if min(va, vb) > 0 else math.inf
                flag = "  DIFFERS" if not ratio <= factor else ""
                lines.append(f"{setting} {method} {k}: {va:g} vs {vb:g} (x{ratio:.2g}){flag}")
            lines.append(
                f"{setting} {method} validation score: {ea[method]['selection_score']:.4f} vs "
                f"{eb[method]['selection_score']:.4f}; trials {ea[method]['trials']} vs "
                f"{eb[method]['trials']}, pruned {ea[method].get('pruned', 0)} vs "
                f"{eb[method].get('pruned', 0)}"
            )
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    lines = diff_recipes(*(read_recipes(p) for p in argv))
    print("\n".join(lines))
    print(f"{sum('DIFFERS' in line for line in lines)} choice(s) differ by more than a factor 3")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
