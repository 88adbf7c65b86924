"""The package installs like a library: a wheel built from the checkout carries the shipped data.

A user who runs ``pip install .`` or ``pip install git+<repository>`` gets a wheel, not a clone, so
the Fashion-MNIST subset, its licence, ``SHA256SUMS`` and the shipped teacher must be package data
(``relkd_tutorial/shipped/``). This test builds the wheel offline from a copy of the checkout (so
that no ``build/`` or ``*.egg-info`` is left in the repository and no stale ``build/lib`` leaks
into the wheel), installs it into a temporary folder, and loads the data and the teacher from
there in a fresh interpreter that cannot see the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from relkd_tutorial.data import read_sha256sums, shipped_data_dir

REPO = Path(__file__).resolve().parents[1]

#: The files of the package-data folder that must be in every wheel.
SHIPPED = {
    "fashion_mnist_subset.npz",
    "LICENSE-fashion-mnist.txt",
    "SHA256SUMS",
    "teacher_cnn_fashion_mnist.pt",
    "teacher_cnn_fashion_mnist.json",
    "teacher_cnn_fashion_mnist_classes0-4.pt",  # notebook 04's cross-task teacher
    "teacher_cnn_fashion_mnist_classes0-4.json",
    "teacher_cnn_fashion_mnist_heldout.pt",  # the benchmark's: never saw the validation split
    "teacher_cnn_fashion_mnist_heldout.json",
}

# Runs in the fresh interpreter: everything it imports must come from the installed wheel.
_CHECK = """
import json, sys
from pathlib import Path
import relkd_tutorial
from relkd_tutorial import load_fashion_mnist
from relkd_tutorial.pretrained import load_shipped_teacher, shipped_teacher_info
from relkd_tutorial.data import data_dir, read_sha256sums, sha256_of, verify_sha256

folder = data_dir()
manifest = read_sha256sums(folder / "SHA256SUMS")
for name in manifest:
    verify_sha256(folder / name)  # raises on any mismatch
train, test = load_fashion_mnist("subset")  # checks the .npz against SHA256SUMS itself
teacher = load_shipped_teacher("cpu")  # checks the .pt against SHA256SUMS itself
logits = teacher(test.images[:8].float() / 255)[1]
print(json.dumps({
    "package": relkd_tutorial.__file__,
    "data_dir": str(folder),
    "manifest": sorted(manifest),
    "sizes": [len(train), len(test)],
    "logits_shape": list(logits.shape),
    "teacher_model": shipped_teacher_info().get("model"),
    "licence": "Copyright (c) 2017 Zalando SE" in (folder / "LICENSE-fashion-mnist.txt").read_text(),
}))
"""


def _copy_checkout(dst: Path) -> None:
    """The files a wheel build reads: pyproject.toml, README.md (the long description), the package."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".ipynb_checkpoints")
    shutil.copytree(REPO / "relkd_tutorial", dst / "relkd_tutorial", ignore=ignore)


@pytest.mark.slow
def test_installed_wheel_loads_the_shipped_data_and_teacher(tmp_path):
    source, wheels, site = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
    _copy_checkout(source)
    env = {k: v for k, v in os.environ.items() if k not in ("RELKD_DATA_DIR", "PYTHONPATH")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        cwd=source,
        env=env,
        check=True,
        timeout=240,
    )
    (wheel,) = wheels.glob("relkd_tutorial-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"relkd_tutorial/shipped/{f}" for f in SHIPPED} <= names
    # one copy of the data, inside the package; no tests, notebooks or scripts
    assert not any(n.startswith(("data/", "tests/", "notebooks/", "scripts/")) for n in names)

    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        env=env,
        check=True,
        timeout=240,
    )
    outside = tmp_path / "elsewhere"  # cwd outside the repository, so "" on sys.path cannot help
    outside.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _CHECK],
        cwd=outside,
        env={**env, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(site)
    assert Path(report["data_dir"]) == site / "relkd_tutorial" / "shipped"
    assert set(report["manifest"]) == SHIPPED - {"SHA256SUMS"}
    assert report["manifest"] == sorted(read_sha256sums(shipped_data_dir() / "SHA256SUMS"))
    assert report["sizes"] == [10_000, 2_000]
    assert report["logits_shape"] == [8, 10]
    assert report["teacher_model"] == "teacher_cnn"
    assert report["licence"]
