"""Shared pytest setup: fast mode on, one thread, deterministic seeds."""

from __future__ import annotations

import os

# Notebooks run under nbval in kernels that inherit this process's environment: the README's
# test command always runs them in fast mode unless the caller sets RELKD_FAST=0 explicitly.
os.environ.setdefault("RELKD_FAST", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Unit tests use small tensors, where a second thread costs more in synchronisation than it
# gives (measured 5-15x slower on a busy 2-core box). Notebook kernels keep their own setting.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
