"""Print the "runs, as recorded" table of a results folder from its ``meta.json``.

    python scripts/invocation_table.py results [--strip-prefix /work/runs/main16]

One row per invocation of ``python -m relkd_tutorial.bench`` that wrote into the folder: its
command, settings, start time, runs trained, training seconds (``wall_seconds``), jobs x threads
and the load average at its start and end, every value copied from ``meta.json`` (so the table in
``results/README.md`` is a copy, not typed), then the machine and the versions. A scratch output
folder named in the commands can be shortened to the committed one with ``--strip-prefix``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _load(values: list[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "n/a"


def table(folder: Path, strip: str | None = None) -> str:
    meta = json.loads((folder / "meta.json").read_text())
    lines = [
        "<!-- not-a-result: measured run metadata, copied from meta.json by "
        "scripts/invocation_table.py, not typed -->",
        "| invocation | command | settings | started (UTC) | runs trained "
        "| training seconds (`wall_seconds`) | jobs × threads "
        "| load average (1/5/15 min) start → end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, inv in enumerate(meta["invocations"], 1):
        command = inv["command"]
        if strip:
            command = command.replace(strip, str(folder.name))
        lines.append(
            f"| {i} | `{command}` | {', '.join(inv['settings'])} | `{inv['started']}` "
            f"| `{inv['runs_trained']}` | `{inv['wall_seconds']}` "
            f"| `{inv.get('jobs', 1)}` × `{inv.get('threads')}` "
            f"| `{_load(inv.get('load_average_start'))}` → `{_load(inv.get('load_average_end'))}` |"
        )
    env = meta.get("environment", {})
    versions = ", ".join(f"{k} `{env[k]}`" for k in ("python", "torch", "numpy", "matplotlib")
                         if k in env)  # fmt: skip
    lines += [
        "",
        f"Machine: `cpu_count: {env.get('cpu_count')}`, `{env.get('machine')}`, "
        f"`{env.get('platform')}`; {versions}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--strip-prefix", default=None, help="a scratch folder to shorten")
    args = parser.parse_args(argv)
    print(table(Path(args.folder), args.strip_prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
