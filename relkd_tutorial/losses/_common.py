"""Numerical conventions shared by the losses: the precision the loss math runs in.

Teacher and student tensors may arrive in different dtypes (an fp32 teacher cache beside a bf16
student under autocast). Every loss in this package then

- computes in ``loss_dtype(student, teacher)``: float64 if either input is float64, else float32
  (choice: exponentials, logarithms and the Gram-matrix cancellations in the relation primitives
  lose too much in 8- or 11-bit mantissas), and
- switches autocast off for its own arithmetic (``autocast_off``), so a matmul inside the loss is
  not silently run in bf16 again.

The returned loss has that dtype; autograd casts the gradient back to the student's dtype.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import Tensor


def loss_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any tensor is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def autocast_off(device: torch.device) -> AbstractContextManager[object]:
    """A context in which autocast is disabled on ``device``'s type (cpu, cuda, ...)."""
    return torch.autocast(device_type=device.type, enabled=False)
