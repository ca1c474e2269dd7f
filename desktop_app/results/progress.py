"""Run progress in words a clinic reads right: a loading phase of its own, counts in photos, and an
ETA only from the scoring rate (never from the model's load time)."""

from __future__ import annotations

import time
from typing import Callable


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class RunProgress:
    """Feed it start() then update(done, total) with the controller's counts, which are photos (a photo is
    done when every selected model has scored it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.n_models = 1
        self.loading: list[str] = []
        self._t0: float | None = None
        self._d0 = 0

    def start(self, n_models: int, loading: list[str]) -> tuple[str, str]:
        """(message, eta) at the start; `loading` names the models not loaded yet ("Xception 1.1.0")."""
        self.n_models = max(1, n_models)
        self.loading = list(loading)
        self._t0, self._d0 = None, 0
        if self.loading:
            return f"Loading {', '.join(self.loading)}… (scoring starts when the model is ready)", ""
        return "Starting…", ""

    @staticmethod
    def photos(count: int) -> int:
        return int(count)

    def update(self, done: int, total: int) -> tuple[str, str]:
        """(message, eta). No ETA until the first batch is scored; then from the rate since that batch."""
        if done <= 0:
            return (f"Loading {', '.join(self.loading)}…" if self.loading else "Scoring the first batch…"), ""
        now = self.clock()
        if self._t0 is None:
            self._t0, self._d0 = now, done
            eta = ""
        elif done > self._d0 and total > done:
            eta = f"ETA {format_eta((now - self._t0) / (done - self._d0) * (total - done))}"
        else:
            eta = ""
        models = f" ({self.n_models} models)" if self.n_models > 1 else ""
        return f"Scored {self.photos(done)} of {self.photos(total)} photos{models}", eta
