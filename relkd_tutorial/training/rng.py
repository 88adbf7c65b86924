"""Seeds and the global RNG states (python, numpy, torch, CUDA) that a checkpoint saves, as tensors and plain values (``weights_only``-loadable)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. building a model or a method with a learnable head) under
    ``torch.manual_seed (seed)`` in a forked RNG: the state outside the block is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain Python values (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            str(kind),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rank_state(state: dict[str, Any], key: str, rank: int, world: int) -> Any:
    """This rank's entry of a per-rank RNG list if the checkpoint has one for this many ranks,
    else the rank-0 entry (a run resumed with a different number of processes)."""
    per_rank = state.get(f"{key}_ranks")
    if world > 1 and per_rank is not None and len(per_rank) == world:
        return per_rank[rank]
    return state[key]
