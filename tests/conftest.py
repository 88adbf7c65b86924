"""Shared pytest setup: fast mode on, two threads, deterministic seeds."""

from __future__ import annotations

import os

# Notebooks run under nbval in kernels that inherit this process's environment: the README's
# test command always runs them in fast mode unless the caller sets RELKD_FAST=0 explicitly.
os.environ.setdefault("RELKD_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
