"""The notebooks' widgets, used the way a person uses them: in JupyterLab, in a real browser.

For every notebook in ``notebooks/`` (a glob, so a new chapter is covered): JupyterLab serves a
temporary copy of the notebooks folder (outputs stripped, so everything on the page comes from the
live kernel) with the repository's ``results/`` beside it, the kernels in fast mode; headless
Chromium opens the notebook, runs every cell from the "Run" menu, waits for the last cell to
finish, moves one slider or dropdown (:data:`WIDGETS`, found by its description label), and
checks that the output beside it changed and that no cell shows a traceback or "Error displaying
widget".

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``), ``selenium``
and ``jupyterlab``; skipped with the reason when one of them is missing. Marked ``browser``
(``-m "not browser"`` leaves it out). On a failure a screenshot and the page's HTML are written to
a temporary folder whose path the failure message gives.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.browser

# notebook stem -> (kind, description label, what it shows before it is moved or None) of the one
# widget each test moves. The shown value pins two defects a person met: 05's dropdown drawn blank
# (its first option's value was None), 00/01's T slider reading 3.98 while the plot said T = 4 (4.0
# was not on the slider's grid). A new notebook needs an entry: its test fails until it has one.
WIDGETS: dict[str, tuple[str, str, str | None]] = {
    "00_setup_and_data": ("slider", "T", "4.00"),
    "01_kd_basics": ("slider", "T", "4.00"),
    "02_rkd": ("slider", "angle (°)", "0.00"),
    "03_rrd": ("slider", "noise sigma", "0.00"),
    "04_refilled": ("slider", "anchor", "0"),
    "05_grkd": ("dropdown", "group", "all classes"),
    "06_benchmark": ("dropdown", "metric", None),
    "07_distil_your_own_model": ("dropdown", "student", "KD"),
}

# seconds; fast-mode notebooks take seconds to a minute each on a 2-core CPU
SERVER_START = 90
NOTEBOOK_RUN = 300
WIDGET_UPDATE = 60
POLL = 0.2

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_NAMES = ("chromedriver", "chromium-driver")

ERROR_WIDGET_TEXT = "Error displaying widget"


def _which(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for path in extra:
        if os.access(path, os.X_OK):
            return path
    return None


def _requirements() -> tuple[str, str]:
    """Chromium's and chromedriver's paths, or a skip that names what is missing."""
    missing = []
    for module in ("selenium", "jupyterlab", "ipywidgets"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {module}")
    browser = _which(CHROMIUM_NAMES)
    driver = _which(DRIVER_NAMES, ("/usr/lib/chromium/chromedriver",))
    if browser is None:
        missing.append("Chromium (apt-get install chromium)")
    if driver is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    if missing:
        pytest.skip("browser test needs " + ", ".join(missing))
    return browser, driver  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET", timeout: float = 5.0) -> object:
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read().decode("utf-8", "replace")
    return json.loads(body) if body else None


def _strip_outputs(src: Path, dst: Path) -> None:
    """Copy a notebook without outputs or execution counts: the page then shows only live output."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


def _settings(folder: Path) -> None:
    """JupyterLab user settings for the test: every cell in the DOM, no news or update toasts."""
    notebook = folder / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    apputils = folder / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@dataclass
class Lab:
    base: str
    token: str
    driver: object
    shots: Path
    log: Path


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    browser, driver_path = _requirements()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # not pytest's tmp_path: pytest prunes old numbered folders (other sessions' runs included),
    # and the screenshots of a failure must outlive the run. Removed at the end unless one failed.
    root = Path(tempfile.mkdtemp(prefix="relkd-browser-test-"))
    served = root / "course"
    (served / "notebooks").mkdir(parents=True)
    for path in NOTEBOOKS:
        _strip_outputs(path, served / "notebooks" / path.name)
    shutil.copytree(REPO / "results", served / "results")  # beside notebooks/, as in the repo
    jupyter = root / "jupyter"
    _settings(jupyter / "settings")
    shots = root / "failures"
    shots.mkdir()

    port, token = _free_port(), "relkd-browser-test"
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "RELKD_FAST": "1",  # the kernels run the notebooks' fast mode
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # never the user's Jupyter configuration, runtime files or lab settings
        "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
        "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
        "JUPYTER_DATA_DIR": str(jupyter / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(jupyter / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "workspaces"),
        "IPYTHONDIR": str(jupyter / "ipython"),
    }
    # the kernels must import the package under test: the one this test imports
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
    ]  # fmt: skip
    log = root / "lab.log"
    log_file = log.open("w")
    server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=served)
    driver = None
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                log_file.flush()
                pytest.fail(
                    f"jupyter lab did not start within {SERVER_START} s (exit code "
                    f"{server.poll()}); its log:\n{log.read_text()[-3000:]}"
                )
            try:
                _api(base, token, "/api/status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(POLL)

        options = webdriver.ChromeOptions()
        options.binary_location = browser
        options.unhandled_prompt_behavior = "accept"  # a "leave this page?" never blocks a test
        for arg in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1600,1200",
            f"--user-data-dir={root / 'chromium-profile'}",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        driver.set_page_load_timeout(60)
        print(f"\nbrowser test: JupyterLab at {base}, serving {served}; failures go to {shots}")
        yield Lab(base=base, token=token, driver=driver, shots=shots, log=log)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log_file.close()
        if any(shots.iterdir()):
            print(f"\nbrowser test: screenshots and pages of the failures kept in {shots}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The page: JupyterLab 4's DOM
# ---------------------------------------------------------------------------------------------

RUN_MENU = "//div[contains(@class,'lm-MenuBar-itemLabel') and normalize-space()='Run']"
RUN_ALL = "li.lm-Menu-item[data-command='runmenu:run-all']"
FILE_MENU = "//div[contains(@class,'lm-MenuBar-itemLabel') and normalize-space()='File']"
SAVE = "li.lm-Menu-item[data-command='docmanager:save']"
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
CODE_PROMPTS = NOTEBOOK + " .jp-CodeCell .jp-InputArea-prompt"
TRACEBACKS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
KERNEL_IDLE = (
    ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']"
)
KIND_CLASS = {"slider": "widget-slider", "dropdown": "widget-dropdown"}

# text and images of every widget Output in the widget's cell (an interact's plot and prints)
OUTPUT_SIGNATURE_JS = """
const cell = arguments[0].closest('.jp-Cell');
const parts = [];
for (const img of cell.querySelectorAll('.jp-OutputArea-output img')) {
  parts.push(img.getAttribute('src') || '');
}
for (const pre of cell.querySelectorAll('.jp-OutputArea-output pre')) parts.push(pre.textContent);
return parts.join('\\n');
"""


PROMPTS_JS = (
    "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent.trim());"
)
ERRORS_JS = """
const found = Array.from(document.querySelectorAll(arguments[0]), e => e.textContent);
for (const out of document.querySelectorAll('.jp-OutputArea-output')) {
  const text = out.textContent;
  const i = text.indexOf(arguments[1]);
  if (i >= 0) found.push(text.slice(i, i + 300));
}
return found;
"""


WIDGET_JS = """
const found = [];
for (const label of document.querySelectorAll('.jupyter-widgets > label.widget-label')) {
  const widget = label.parentElement;
  if (widget.classList.contains(arguments[0]) && label.textContent.trim() === arguments[1]) {
    found.push(widget);
  }
}
return found;
"""


def _widget(driver, kind: str, label: str) -> list:
    """The sliders or dropdowns whose description label reads ``label``."""
    return driver.execute_script(WIDGET_JS, KIND_CLASS[kind], label)


def _tracebacks(driver) -> list[str]:
    """Tracebacks shown in any output, and "Error displaying widget" messages."""
    texts = driver.execute_script(ERRORS_JS, TRACEBACKS, ERROR_WIDGET_TEXT)
    return [t for t in texts if "Traceback" in t or ERROR_WIDGET_TEXT in t]


def _menu(driver, wait, menu_xpath: str, item_css: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait.until(ec.element_to_be_clickable((By.XPATH, menu_xpath))).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, item_css))).click()


def _prompts(driver) -> list[str]:
    """The input prompts of the code cells: ``[ ]:`` not run, ``[*]:`` running, ``[3]:`` done."""
    return driver.execute_script(PROMPTS_JS, CODE_PROMPTS)


def _shutdown_kernels(lab: Lab) -> None:
    for session in _api(lab.base, lab.token, "/api/sessions") or []:
        _api(lab.base, lab.token, f"/api/sessions/{session['id']}", method="DELETE", timeout=30)


def _close(lab: Lab) -> None:
    """Save (so leaving the page asks nothing) and shut the notebook's kernel down."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        _menu(lab.driver, WebDriverWait(lab.driver, 10, poll_frequency=POLL), FILE_MENU, SAVE)
    except Exception:  # noqa: BLE001 - best effort: the next page load starts afresh anyway
        pass
    _shutdown_kernels(lab)


def _fail(lab: Lab, name: str, message: str) -> None:
    shot = lab.shots / f"{name}.png"
    try:
        lab.driver.save_screenshot(str(shot))
        (lab.shots / f"{name}.html").write_text(lab.driver.page_source, encoding="utf-8")
        where = f"screenshot {shot}, page {shot.with_suffix('.html')}"
    except Exception as err:  # noqa: BLE001 - a dead browser still fails the test with its reason
        where = f"no screenshot ({err})"
    pytest.fail(f"{name}: {message}\n({where}; server log {lab.log})")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_widget_redraws_in_a_browser(lab: Lab, path: Path) -> None:
    name = path.stem
    assert name in WIDGETS, (
        f"{path.name} has no widget in tests/test_browser.py's WIDGETS table: add the kind "
        "('slider' or 'dropdown'), the description label of one widget whose move redraws an "
        "output, and the value it shows before it is moved (or None)"
    )
    kind, label, shown_first = WIDGETS[name]
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = lab.driver
    # a code cell whose source is collapsed (an exercise's solution) shows no input prompt
    n_code = sum(
        c["cell_type"] == "code"
        and not c.get("metadata", {}).get("jupyter", {}).get("source_hidden")
        for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
    )
    wait = WebDriverWait(driver, 60, poll_frequency=POLL)
    tic = time.monotonic()
    step = "opening the notebook"
    try:
        # a workspace of its own: JupyterLab restores no other notebook (and starts no kernel)
        driver.get(f"{lab.base}/lab/workspaces/{name}/tree/notebooks/{path.name}?token={lab.token}")
        wait.until(lambda d: len(_prompts(d)) == n_code)
        step = "waiting for the kernel"
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, KERNEL_IDLE)))
        step = "running all cells"
        _menu(driver, wait, RUN_MENU, RUN_ALL)
        run_wait = WebDriverWait(driver, NOTEBOOK_RUN, poll_frequency=POLL)

        def finished(d) -> bool:
            prompts = _prompts(d)
            return bool(_tracebacks(d)) or all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)

        run_wait.until(finished)
        # the collapsed cells (no prompt to watch) run last: wait until the kernel is idle
        run_wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, KERNEL_IDLE)))
        errors = _tracebacks(driver)
        if errors:
            _fail(lab, name, f"a cell shows an error after Run All:\n{errors[0][-2000:]}")
        run_seconds = time.monotonic() - tic

        step = f"finding the {kind} {label!r}"
        found = wait.until(lambda d: _widget(d, kind, label))
        assert len(found) == 1, f"{len(found)} {kind}s labelled {label!r}"
        widget = found[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", widget)
        wait.until(lambda d: d.execute_script(OUTPUT_SIGNATURE_JS, widget))
        before = driver.execute_script(OUTPUT_SIGNATURE_JS, widget)

        step = f"moving the {kind} {label!r}"
        if kind == "slider":
            handle = widget.find_element(By.CSS_SELECTOR, ".noUi-handle")
            readout = widget.find_element(By.CSS_SELECTOR, ".widget-readout").text
            if shown_first is not None and readout != shown_first:
                _fail(lab, name, f"the slider {label!r} reads {readout!r}, not {shown_first!r}")
            at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
            handle.click()  # focus the handle; an arrow key then moves it one step
            handle.send_keys(Keys.ARROW_LEFT if at_max else Keys.ARROW_RIGHT)
            wait.until(
                lambda d: widget.find_element(By.CSS_SELECTOR, ".widget-readout").text != readout
            )
            moved = f"{readout} -> {widget.find_element(By.CSS_SELECTOR, '.widget-readout').text}"
        else:
            menu = Select(widget.find_element(By.TAG_NAME, "select"))
            shown = menu.first_selected_option.text if menu.all_selected_options else ""
            if not shown.strip():
                _fail(lab, name, f"the dropdown {label!r} is drawn blank (no option selected)")
            if shown_first is not None and shown != shown_first:
                _fail(lab, name, f"the dropdown {label!r} shows {shown!r}, not {shown_first!r}")
            index = [o.text for o in menu.options].index(shown)
            menu.select_by_index((index + 1) % len(menu.options))
            moved = f"{shown} -> {menu.first_selected_option.text}"

        step = f"waiting for the output beside {label!r} to redraw ({moved})"
        WebDriverWait(driver, WIDGET_UPDATE, poll_frequency=POLL).until(
            lambda d: (sig := d.execute_script(OUTPUT_SIGNATURE_JS, widget)) and sig != before
        )
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, KERNEL_IDLE)))
        errors = _tracebacks(driver)
        if errors:
            _fail(lab, name, f"an error after moving {label!r} ({moved}):\n{errors[0][-2000:]}")
        print(
            f"{name}: ran {n_code} code cells in {run_seconds:.0f} s; {kind} {label!r} {moved} "
            f"redrew its output; {time.monotonic() - tic:.0f} s in all"
        )
    except TimeoutException:
        _fail(lab, name, f"timed out while {step}; code cell prompts: {_prompts(driver)}")
    finally:
        _close(lab)
