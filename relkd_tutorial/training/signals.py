"""Stop on SIGINT/SIGTERM (Ctrl-C, a notebook's stop button, a scheduler) at a step boundary.

While :func:`~relkd_tutorial.training.fit` runs, :class:`StopSignals` makes the first signal only
record the request; the loop finishes the step, writes a mid-epoch checkpoint and raises
:class:`TrainingInterrupted`. The same signal again goes to the previous handler (a second Ctrl-C
stops a hung loop); the handlers are restored when ``fit`` ends, and a signal that came after the
last check is delivered then. Main thread only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """``fit`` stopped at a step boundary after SIGINT/SIGTERM; a ``KeyboardInterrupt``
    (``except Exception`` does not swallow it) with ``signum``, ``checkpoint`` (the path written, or
    ``None``), ``epoch`` (0-based) and ``step`` (steps of that epoch done).
    """

    def __init__(
        self, message: str, signum: int, checkpoint: str | None, epoch: int, step: int
    ) -> None:
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.step = step

    @property
    def exit_code(self) -> int:
        """The shell convention for "ended by signal ``signum``": ``128 + signum``."""
        return 128 + int(self.signum)


class StopSignals:
    """Context manager: while active, SIGINT/SIGTERM set :attr:`signum` instead of stopping
    (``enabled=False``: nothing installed; ``announce``: one line on stderr).
    """

    def __init__(self, enabled: bool = True, announce: bool = True) -> None:
        self.enabled = enabled
        self.announce = announce
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signum:  # the same signal again: the user insists
            self._deliver(signum, frame)
            return
        if self.signum is None:
            self.signum = signum
            if self.announce:
                name = signal.Signals(signum).name
                print(
                    f"\n[relkd_tutorial] {name} received: finishing the current step, then "
                    f"saving a checkpoint and stopping (send {name} again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )

    def _deliver(self, signum: int, frame: FrameType | None) -> None:
        """Restore the previous handlers and let the previous one act on ``signum``."""
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._restore()
        if callable(previous):
            previous(signum, frame)  # Python's SIGINT default raises KeyboardInterrupt here
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action, e.g. terminate on SIGTERM

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous = signal.signal(signum, self._handle)
                # None: a handler installed from C; SIG_DFL is the closest we can restore
                self._previous[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None and self.signum is not None and self._previous:
            # A signal arrived after the loop's last check: delayed to here, never lost.
            self._deliver(self.signum, None)
        self._restore()


def _interrupted(
    signum: int | None, ckpt_path: Path | None, epoch: int, step: int
) -> TrainingInterrupted:
    """The exception that ends a run stopped by a signal, with a message that says what next."""
    signum = int(signum) if signum is not None else int(signal.SIGTERM)  # another rank's signal
    name = signal.Signals(signum).name
    where = f"after step {step} of epoch {epoch + 1}" if step else f"after epoch {epoch}"
    if ckpt_path is None:
        saved = "no checkpoint_dir was set, so nothing was saved"
    else:
        saved = (
            f"checkpoint written to {ckpt_path}; run the same command with resume=True "
            "(--resume) to continue exactly where it stopped"
        )
    return TrainingInterrupted(
        f"training stopped by {name} {where}: {saved}",
        signum,
        None if ckpt_path is None else str(ckpt_path),
        epoch,
        step,
    )
