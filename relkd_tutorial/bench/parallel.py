"""Benchmark runs in worker processes (``--jobs N``): :func:`run_in_workers`.

A :class:`concurrent.futures.ProcessPoolExecutor` of fresh ``spawn`` processes (never a ``fork``
of a process whose torch threads have started); a worker loads each workspace once from its file
and sends back each run's row and history; only the parent writes ``runs.csv``. The workers
ignore SIGINT; on SIGINT or SIGTERM the parent keeps the finished runs, ends the workers and
raises :class:`~relkd_tutorial.training.TrainingInterrupted`. A run that raises, or a worker that
dies, stops the benchmark with a :class:`WorkerError` once the runs already started are recorded.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from ..training import StopSignals, TrainingInterrupted
from . import runner
from .workspace import WorkspaceRef, load

#: How often the parent checks for a stop signal while it waits for runs (seconds).
POLL_SECONDS = 0.2
#: How long a worker gets to end after SIGTERM before SIGKILL (seconds).
GRACE_SECONDS = 5.0


def default_jobs(device: torch.device | str) -> int:
    """Runs at once by default: on a CPU the cores this process may run on (its affinity mask),
    at least 1; 1 on a GPU (one device, one run)."""
    if torch.device(device).type != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class WorkerError(RuntimeError):
    """A run raised or its worker died; the message holds the traceback or says which run."""


def spawn_pool(
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    start_method: str = "spawn",
) -> ProcessPoolExecutor:
    """A process pool whose workers start fresh (``spawn`` or ``forkserver``, never ``fork``);
    ``ProcessPoolExecutor`` refuses ``workers < 1``."""
    if start_method not in ("spawn", "forkserver"):
        raise ValueError("start_method must be 'spawn' or 'forkserver' (never fork torch)")
    return ProcessPoolExecutor(
        workers, mp.get_context(start_method), initializer=initializer, initargs=initargs
    )


def _init_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    torch.set_num_threads(threads)
    runner.HANDLE_SIGNALS = False


def _run(job: Any, ref: WorkspaceRef) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return runner.run_job(job, load(ref))


def _end(pool: ProcessPoolExecutor) -> None:
    """End the workers at once (SIGTERM, then SIGKILL) and cancel what has not started."""
    processes = list((pool._processes or {}).values())  # no public handle before Python 3.14
    for p in processes:
        p.terminate()  # a no-op for one that has exited
    for p in processes:
        p.join(GRACE_SECONDS)
        if p.is_alive():
            p.kill()
            p.join()
    pool.shutdown(wait=True, cancel_futures=True)


def run_in_workers(
    jobs: Sequence[tuple[int, Any]],
    record: Callable[[Any, dict[str, Any], list[dict[str, Any]]], None],
    refs: Sequence[WorkspaceRef],
    workers: int,
    threads: int = 1,
) -> None:
    """Run ``jobs`` (``(workspace index, job)`` pairs) in ``workers`` processes, calling
    ``record(job, row, history)`` in this process as each run finishes (the executor of
    :func:`~.runner.run_settings`)."""
    stop = StopSignals(announce=True).__enter__()
    pool = spawn_pool(workers, _init_worker, (threads,))
    futures: dict[Future, Any] = {}
    error: WorkerError | None = None
    clean = False

    def take(done: Sequence[Future]) -> None:
        nonlocal error
        for future in done:
            job = futures.pop(future)
            if future.cancelled():
                continue
            try:
                row, history = future.result()
            except BrokenProcessPool:
                error = error or WorkerError(f"a worker died while running {job}")
            except Exception as err:  # noqa: BLE001 - reported below, with its traceback
                error = error or WorkerError(f"a worker failed on {job}:\n{err.__cause__ or err}")
            else:
                record(job, row, history)

    try:
        futures = {pool.submit(_run, job, refs[index]): job for index, job in jobs}
        while futures and not stop.requested:
            take(wait(futures, POLL_SECONDS, FIRST_COMPLETED)[0])
            if error is not None:  # the runs not started are cancelled; the others finish
                for future in futures:
                    future.cancel()
        if stop.requested:
            take([f for f in futures if f.done()])
        clean = not stop.requested and error is None
    finally:
        pool.shutdown() if clean else _end(pool)
        stop._restore()  # never re-deliver: the benchmark reports the signal itself
    if stop.signum is not None:
        raise TrainingInterrupted(
            f"benchmark stopped by {signal.Signals(stop.signum).name}: {len(futures)} runs in "
            "progress or waiting were stopped",
            stop.signum, None, 0, 0,
        )  # fmt: skip
    if error is not None:
        raise error
