"""Benchmark runs in worker processes (``--jobs N``): :class:`WorkerPool`.

Each worker is a fresh Python process (the ``spawn`` start method: never a ``fork`` of a
process whose torch threads have started) with ``threads`` torch threads (1 by default). It
loads each workspace once from its file on disk (:func:`~.workspace.load_workspace`, written by
the parent before the pool starts), then runs one job at a time (:func:`~.runner.run_job`) and
sends back the row and its history; only the parent writes ``runs.csv``
(:func:`~.runner.run_settings` appends each row as it arrives).

Stopping. The workers ignore SIGINT (a Ctrl-C reaches the whole process group) and never stop on
their own; the parent decides. While the pool is open the parent records SIGINT and SIGTERM
(:class:`~relkd_tutorial.training.signals.StopSignals`); at the next wake-up (at most
:attr:`WorkerPool.poll_seconds`) it takes every result already sent, terminates the workers
(SIGTERM, then SIGKILL after a grace period) and reports the signal, so the runs in progress are
lost and every finished run is kept. A second Ctrl-C stops at once. A worker that dies or raises
stops the benchmark with its traceback (never a silently missing run). If the parent itself is
killed, a worker finds its pipe closed when it next reads or writes and exits.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from .settings import Setting


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_jobs(device: torch.device | str) -> int:
    """Runs at once by default: the usable cores on a CPU, 1 on a GPU (one device, one run)."""
    return usable_cores() if torch.device(device).type == "cpu" else 1


@dataclass(frozen=True)
class WorkspaceRef:
    """What a worker needs to load a workspace: its file, the setting, the layout, the device."""

    path: str
    setting: Setting
    channels_last: bool
    device: str


class WorkerError(RuntimeError):
    """A worker raised or died; the message holds its traceback or exit code."""


def _worker_main(conn: Connection, threads: int, refs: list[WorkspaceRef]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    torch.set_num_threads(threads)
    from . import runner
    from .workspace import load_workspace

    runner.HANDLE_SIGNALS = False
    loaded: dict[int, Any] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:
            return
        tid, job, index = message
        try:
            if index not in loaded:
                ref = refs[index]
                loaded[index] = load_workspace(ref.path, ref.device, ref.setting, ref.channels_last)
            row, history = runner.run_job(job, loaded[index])
            reply: tuple = ("ok", tid, row, history)
        except BaseException:  # noqa: BLE001 - reported to the parent, which stops
            reply = ("error", tid, traceback.format_exc(), None)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
        if reply[0] == "error":
            return


class WorkerPool:
    """``jobs`` worker processes, used by :func:`~.runner.run_settings` as its executor.

    Use as a context manager (it installs the stop handlers and always ends the workers)::

        with WorkerPool(2, refs) as pool:
            run_settings(workspaces, methods, store, progress, executor=pool)
    """

    poll_seconds = 0.2
    grace_seconds = 5.0

    def __init__(
        self, jobs: int, refs: list[WorkspaceRef], threads: int = 1, start_method: str = "spawn"
    ) -> None:
        from ..training.signals import StopSignals

        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError("start_method must be 'spawn' or 'forkserver' (never fork torch)")
        self.capacity = jobs
        self._ctx = mp.get_context(start_method)
        self._refs = list(refs)
        self._threads = threads
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._busy: dict[int, tuple[int, Any]] = {}  # worker -> (tid, job)
        self._stop = StopSignals(announce=True)

    # -- lifetime -----------------------------------------------------------------------------

    def __enter__(self) -> WorkerPool:
        self._stop.__enter__()
        try:
            for _ in range(self.capacity):
                parent, child = self._ctx.Pipe(duplex=True)
                proc = self._ctx.Process(
                    target=_worker_main, args=(child, self._threads, self._refs), daemon=True
                )
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        except BaseException:
            self.terminate()
            self._stop.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        try:
            if exc_type is None:
                self.close()
            else:
                self.terminate()
        finally:
            self._stop._restore()  # never re-deliver: the benchmark reported the signal itself

    def close(self) -> None:
        """Ask idle workers to exit, wait for them; terminate any that does not."""
        for conn in self._conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(self.grace_seconds)
        self.terminate()

    def terminate(self) -> None:
        """SIGTERM every live worker, SIGKILL what is left after the grace period."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(self.grace_seconds)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs, self._busy = [], [], {}

    # -- the executor protocol of run_settings ------------------------------------------------

    def submit(self, tid: int, job: Any, ws_index: int) -> None:
        idle = [w for w in range(len(self._procs)) if w not in self._busy]
        if not idle:
            raise RuntimeError("every worker is busy; wait() for a result first")
        worker = idle[0]
        self._conns[worker].send((tid, job, ws_index))
        self._busy[worker] = (tid, job)

    def wait(self) -> tuple[list[tuple[int, dict[str, Any], list[dict[str, Any]]]], int | None]:
        """Block until at least one run finishes or a stop signal arrives."""
        while True:
            results = self._collect(0.0 if self._stop.requested else self.poll_seconds)
            if self._stop.requested:
                results += self._collect(0.0)
                return results, self._stop.signum
            if results:
                return results, None

    def _collect(self, timeout: float) -> list[tuple[int, dict[str, Any], list[dict[str, Any]]]]:
        if not self._busy:
            return []
        conns = {self._conns[w]: w for w in self._busy}
        sentinels = {self._procs[w].sentinel: w for w in self._busy}
        ready = wait([*conns, *sentinels], timeout)
        results = []
        for conn in [r for r in ready if r in conns]:
            worker = conns[conn]  # type: ignore[index]
            try:
                status, tid, payload, history = conn.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                continue  # died while sending: reported through its sentinel below
            _, job = self._busy.pop(worker)
            if status != "ok":
                raise WorkerError(f"a worker failed on {job}:\n{payload}")
            results.append((tid, payload, history))
        for sentinel in [r for r in ready if r in sentinels]:
            worker = sentinels[sentinel]  # type: ignore[index]
            if worker in self._busy:
                _, job = self._busy.pop(worker)
                code = self._procs[worker].exitcode
                raise WorkerError(f"a worker died (exit code {code}) while running {job}")
        return results
