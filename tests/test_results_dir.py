"""``tutorial.runs.find_results_dir``: how notebook 06 finds the committed benchmark results.

Found from ``notebooks/``, from the repository root, from a copy of the notebooks folder placed
next to a ``results/`` anywhere, from a folder outside every checkout (the package's own source
checkout), through ``$RELKD_RESULTS_DIR``; and a clear error naming the variable otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relkd_tutorial.tutorial import runs as tutorial_runs
from relkd_tutorial.tutorial.runs import RESULTS_ENV, find_results_dir

REPO = Path(__file__).resolve().parents[1]


def _results(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "runs.csv").write_text("key\n")
    return folder


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESULTS_ENV, raising=False)


def test_found_from_the_notebooks_folder_and_the_repository_root() -> None:
    assert find_results_dir(REPO / "notebooks") == REPO / "results"
    assert find_results_dir(REPO) == REPO / "results"


def test_default_start_is_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _results(tmp_path / "results")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert find_results_dir() == results


def test_walks_up_from_a_copied_notebooks_folder(tmp_path: Path) -> None:
    results = _results(tmp_path / "course" / "results")
    deep = tmp_path / "course" / "notebooks" / "chapter"
    deep.mkdir(parents=True)
    assert find_results_dir(deep) == results
    # the nearest results/ wins
    nearer = _results(tmp_path / "course" / "notebooks" / "results")
    assert find_results_dir(deep) == nearer


def test_a_results_folder_without_runs_csv_is_skipped(tmp_path: Path) -> None:
    results = _results(tmp_path / "results")
    (tmp_path / "notebooks" / "results").mkdir(parents=True)  # empty: not the benchmark's
    assert find_results_dir(tmp_path / "notebooks") == results


def test_outside_every_checkout_falls_back_to_the_package_checkout(tmp_path: Path) -> None:
    assert (REPO / "results" / "runs.csv").is_file()
    assert find_results_dir(tmp_path) == REPO / "results"


def test_nothing_found_names_the_variable_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a package installed without its checkout: no results/ beside it
    fake = tmp_path / "site-packages" / "relkd_tutorial" / "tutorial" / "runs.py"
    monkeypatch.setattr(tutorial_runs, "__file__", str(fake))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(FileNotFoundError, match=RESULTS_ENV) as err:
        find_results_dir(elsewhere)
    assert str(elsewhere / "results") in str(err.value)
    assert str(tmp_path / "site-packages" / "results") in str(err.value)


def test_the_environment_variable_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _results(tmp_path / "my-run")
    monkeypatch.setenv(RESULTS_ENV, str(chosen))
    assert find_results_dir(REPO / "notebooks") == chosen  # beats the repository's results/
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="does not hold runs.csv"):
        find_results_dir(REPO / "notebooks")


def test_meta_records_the_checkouts_commit() -> None:
    """``meta.json``'s ``git_commit`` is this checkout's HEAD (it was ``None`` when ``.git`` was
    looked for one folder too low, inside the package)."""
    import subprocess

    from relkd_tutorial.bench import store

    repo = Path(store.__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout (an installed package has no commit to record)")
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert store.git_commit() == head
