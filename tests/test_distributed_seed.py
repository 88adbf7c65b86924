"""Two processes (gloo, CPU) whose ranks build the student, the method and the teacher with
*different* seeds: ``fit`` must broadcast rank 0's copies before training, so both ranks end with
the single-process result of rank 0's parts.

In ``tests/test_distributed.py`` every rank builds its method under the same seed, so a ``fit``
that forgot to broadcast the method's state (RRD's random frozen teacher head, its learnable head
and the queue's random initial keys) could not be told apart; here it can. The same spawn also
checks that ``sync_batchnorm=True`` is read under several processes (refused on the CPU).
"""

from __future__ import annotations

import pytest
import torch
from _dist_worker import WORLD, launch, seeded_fit, seeded_parts, seeds_worker

TOL = {"rtol": 1e-10, "atol": 1e-12}


def test_ranks_seeded_differently_train_rank_0s_parts(tmp_path) -> None:
    launch(seeds_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"seeds_r{r}.pt", weights_only=True) for r in range(WORLD)]

    # the parts really differ between the ranks before training
    (_, m0, t0), (_, m1, t1) = seeded_parts(0), seeded_parts(1)
    for a, b in ((m0.state_dict(), m1.state_dict()), (t0.state_dict(), t1.state_dict())):
        assert any(not torch.equal(v, b[k]) for k, v in a.items())

    reference = seeded_fit(0, 0, 1)  # one process, rank 0's parts, the same global batches
    for rank, got in enumerate(ranks):
        for part in ("model", "method", "teacher"):
            assert got[part].keys() == reference[part].keys()
            for k, v in reference[part].items():
                torch.testing.assert_close(got[part][k], v, msg=f"rank {rank} {part} {k}", **TOL)
        assert got["loss"] == pytest.approx(reference["loss"], rel=1e-10)
        assert "sync_batchnorm=True needs CUDA" in got["sync_batchnorm_error"]
    for k, v in ranks[0]["method"].items():  # identical copies on both ranks
        assert torch.equal(v, ranks[1]["method"][k]), k
