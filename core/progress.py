"""Progress reporting and cooperative cancellation shared by every long-running core function."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


class Cancelled(Exception):
    """Raised inside a long task when its CancelToken was cancelled."""


class CancelToken:
    """Thread-safe flag polled by long-running work between items."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    message: str = ""
    stage: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressFn = Callable[[Progress], None]


def report(progress: ProgressFn | None, done: int, total: int, message: str = "", stage: str = "") -> None:
    """Call a progress callback if one was given."""
    if progress is not None:
        progress(Progress(done, total, message, stage))
