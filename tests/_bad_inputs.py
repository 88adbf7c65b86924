"""Shared bad-input checks for the logit and feature losses (used by the loss test files)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from relkd_tutorial import input_checks


def assert_rejects_bad_pairs(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_name: str,
    teacher_name: str,
    width_must_match: bool,
    min_batch: int = 1,
) -> None:
    """Every malformed (student, teacher) pair raises a ValueError/TypeError naming the argument."""
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(TypeError, match=student_name):
        loss(s.numpy(), t)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=teacher_name):
        loss(s, torch.ones(4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=student_name + r".*\(B, "):
        loss(torch.randn(4, 5, 1), t)
    with pytest.raises(ValueError, match=teacher_name + r".*\(B, "):
        loss(s, torch.randn(5))
    with pytest.raises(ValueError, match="batch size"):
        loss(s, torch.randn(3, 5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(s, torch.where(t > 0, torch.full_like(t, float("nan")), t))
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(torch.full_like(s, float("inf")), t)
    with pytest.raises(ValueError, match="empty"):
        loss(torch.randn(0, 5), torch.randn(0, 5))
    if width_must_match:
        with pytest.raises(ValueError, match="number of classes"):
            loss(s, torch.randn(4, 6))
    else:
        loss(torch.randn(4, 5), torch.randn(4, 7))  # different widths are fine
    if min_batch > 1:
        small = min_batch - 1
        with pytest.raises(ValueError, match=f"at least {min_batch}"):
            loss(torch.randn(small, 5), torch.randn(small, 5))
    with input_checks(False), pytest.raises(ValueError, match="device"):
        loss(s, torch.randn(4, 5, device="meta"))
