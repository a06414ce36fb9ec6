"""SIGINT/SIGTERM during a batch: the first signal finishes the current row, then the batch
writes what it has and stops; a second signal stops at once."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["StopRequest", "catch_signals"]


class StopRequest:
    """Signal bookkeeping: ``signum`` is set by the first SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.current = ""  # what is being finished, for the message

    def handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.signum = signum
        name = signal.Signals(signum).name
        sys.stderr.write(
            f"\nvolqa: {name} received; finishing "
            f"{self.current or 'the current row and writing the results'} (send it again to "
            "stop at once)\n"
        )
        sys.stderr.flush()


@contextmanager
def catch_signals(stop: StopRequest) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``stop`` (only in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, stop.handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
