"""Stopping a run cleanly: SIGINT and SIGTERM finish the step in flight, then the loop saves and
returns (docs/training.md)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["StopFlag", "catch"]


class StopFlag:
    """Signal handler: remember the first SIGINT/SIGTERM; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum


@contextmanager
def catch(flag: StopFlag) -> Iterator[None]:
    """SIGINT and SIGTERM set ``flag`` while the block runs (from the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield                      # handlers can only be installed from the main thread
        return
    # a signal the process ignores (SIGINT of a background job) stays ignored
    old = {s: h for s in (signal.SIGINT, signal.SIGTERM)
           if (h := signal.getsignal(s)) is not signal.SIG_IGN}
    try:
        for s in old:
            signal.signal(s, flag)
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
