"""The notebooks' publication policy, and JupyterLab serving them.

1. Every notebook in ``notebooks/`` is committed *with outputs* (readers browsing the repository
   see derivations and plots; CI re-executes them all under nbval anyway). So each one must be a
   valid nbformat-4 notebook for the ``python3`` kernel, executed top to bottom in one run
   (execution counts 1..n in order), without an error output, without the bulky
   ``metadata.widgets`` state, small enough to browse (< 1.5 MB), without this machine's absolute
   paths in its outputs, and it must teach and check: at least one Markdown cell with LaTeX and at
   least one ``assert``. No output prints a report as raw Markdown (more than
   :data:`MAX_RAW_MARKDOWN_LINES` lines of table rows, headings, bold or list items in one printed
   output): a report is rendered (``display(Markdown(...))``), not printed.
2. ``jupyter lab`` starts headless on the loopback interface and serves the notebooks: the lab
   page, the contents API listing them, and the python3 kernel spec.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MAX_BYTES = 1_500_000

# Absolute paths that would leak this machine's layout into a committed output.
MACHINE_PATHS = re.compile(r"(/work/|/tmp/|/root/|/home/\w+|/usr/local/lib/python)")
LATEX = re.compile(r"\$[^$\n]*\\[A-Za-z]+|\$\$|\\begin\{")


# A printed output line that is Markdown source: a table row, a heading, a list item or bold text.
RAW_MARKDOWN = re.compile(r"^\s*(\|.*\|\s*$|#{1,6}\s|[-*+]\s|\d+\.\s)|\*\*\S")
MAX_RAW_MARKDOWN_LINES = 40


def raw_markdown_lines(output: dict) -> int:
    """How many lines of ``output`` are Markdown source shown as plain text (a stream, or a
    ``text/plain`` result without a rendered Markdown or HTML form)."""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        data = output.get("data", {})
        if "text/markdown" in data or "text/html" in data:
            return 0
        text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else str(text)
    return sum(bool(RAW_MARKDOWN.match(line)) for line in text.splitlines())


def test_raw_markdown_count_sees_a_printed_report_and_not_a_rendered_one() -> None:
    report = "# Results\n\n**Verdict.** ...\n\n| a | b |\n|---|---|\n" + "| x | 1 |\n" * 50
    assert raw_markdown_lines({"output_type": "stream", "text": report}) == 54
    assert (
        raw_markdown_lines({"output_type": "execute_result", "data": {"text/plain": report}}) == 54
    )
    rendered = {"output_type": "display_data", "data": {"text/markdown": report, "text/plain": ""}}
    assert raw_markdown_lines(rendered) == 0
    assert raw_markdown_lines({"output_type": "stream", "text": "loss 0.5\n  KD: 0.81\n"}) == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_output_prints_a_report_as_raw_markdown(path: Path) -> None:
    cells = _load(path)["cells"]
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        for out in cell.get("outputs", []):
            n = raw_markdown_lines(out)
            assert n <= MAX_RAW_MARKDOWN_LINES, (
                f"{path.name}: code cell {i + 1} prints {n} lines of raw Markdown (at most "
                f"{MAX_RAW_MARKDOWN_LINES}): render it with display(Markdown(...)) and keep the "
                "table that matters"
            )


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _output_text(output: dict) -> str:
    parts = []
    for key in ("text", "traceback", "evalue"):
        value = output.get(key)
        if value is not None:
            parts.append("".join(value) if isinstance(value, list) else str(value))
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            parts.append("".join(value) if isinstance(value, list) else json.dumps(value))
    return "\n".join(parts)


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed_and_clean(path: Path) -> None:
    import nbformat

    raw = path.read_bytes()
    assert len(raw) < MAX_BYTES, f"{path.name} is {len(raw) / 1e6:.2f} MB (limit 1.5 MB)"
    nb = nbformat.reads(raw.decode("utf-8"), as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4, f"{path.name}: nbformat {nb.nbformat}, expected 4"
    nbformat.validate(nb)  # raises ValidationError with the offending field
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: kernelspec must be python3, got {nb.metadata.get('kernelspec')}"
    )
    assert "widgets" not in nb.metadata, (
        f"{path.name}: strip metadata.widgets (widget state is bulky and not rendered)"
    )

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(code)}; execute the notebook top "
        "to bottom in one kernel (nbconvert --execute) before committing"
    )
    for i, cell in enumerate(code, start=1):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", (
                f"{path.name}: code cell {i} has an error output: {out.get('ename')}: "
                f"{out.get('evalue')}"
            )
            leak = MACHINE_PATHS.search(_output_text(out))
            assert leak is None, f"{path.name}: code cell {i} output shows the path {leak!r}"

    markdown = [_source(c) for c in nb.cells if c.cell_type == "markdown"]
    assert any(LATEX.search(m) for m in markdown), f"{path.name}: no Markdown cell with LaTeX"
    assert any(re.search(r"^\s*assert\b", _source(c), re.M) for c in code), (
        f"{path.name}: no assert in any code cell"
    )


# ---------------------------------------------------------------------------------------------
# JupyterLab, headless
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_jupyterlab_serves_the_notebooks(tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab")
    port, token = _free_port(), "relkd-test-token"
    base = f"http://127.0.0.1:{port}"
    # the server's runtime files (connection info, cookie secret) go to a temporary folder
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
    ]  # fmt: skip
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90  # ~5 s on an idle machine; generous for a loaded CI box
        status = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                break
            try:
                status, _ = _get(f"{base}/api/status?token={token}", timeout=2)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                status = None
            if status == 200:
                break
            time.sleep(0.25)
        log.flush()
        assert status == 200, (
            f"jupyter lab did not answer /api/status within 90 s (exit code {server.poll()}):\n"
            + (tmp_path / "lab.log").read_text()[-3000:]
        )

        code, page = _get(f"{base}/lab?token={token}", timeout=10)
        assert code == 200
        title = re.search(r"<title>(.*?)</title>", page, re.S)
        assert title is not None and "JupyterLab" in title.group(1)

        code, body = _get(f"{base}/api/contents/notebooks?token={token}", timeout=10)
        assert code == 200
        listed = {item["name"] for item in json.loads(body)["content"]}
        assert {p.name for p in NOTEBOOKS} <= listed, f"contents API lists {sorted(listed)}"

        code, body = _get(f"{base}/api/kernelspecs?token={token}", timeout=10)
        assert code == 200
        assert "python3" in json.loads(body)["kernelspecs"]

        code, _ = _get(f"{base}/api/contents/notebooks", timeout=10)  # no token: refused
        assert code in (401, 403)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log.close()
