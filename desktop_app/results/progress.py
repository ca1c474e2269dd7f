"""Run progress in words a clinic reads right: a loading phase of its own, counts in photos, and an
ETA only from the scoring rate (never from the model's load time), smoothed so it does not jump."""

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

    # The rate is an exponentially weighted mean of the rates between updates at least MIN_STEP_S apart, so one
    # slow or fast batch (a decode stall, a cache hit) moves the ETA a little, not 0:07 -> 0:16 -> 0:10.
    SMOOTHING = 0.25
    MIN_STEP_S = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.n_models = 1
        self.loading: list[str] = []
        self._t0: float | None = None
        self._d0 = 0
        self._rate: float | None = None      # photos per second, smoothed
        self._last: tuple[float, int] = (0.0, 0)
        self._eta_text = ""

    def start(self, n_models: int, loading: list[str]) -> tuple[str, str]:
        """(message, eta) at the start; `loading` names the models not loaded yet ("Xception 1.1.0")."""
        self.n_models = max(1, n_models)
        self.loading = list(loading)
        self._t0, self._d0, self._rate, self._eta_text = None, 0, None, ""
        if self.loading:
            return f"Loading {', '.join(self.loading)}… (scoring starts when the model is ready)", ""
        return "Starting…", ""

    @staticmethod
    def photos(count: int) -> int:
        return int(count)

    def update(self, done: int, total: int) -> tuple[str, str]:
        """(message, eta). No ETA until the first batch is scored; then from the smoothed scoring rate."""
        if done <= 0:
            return (f"Loading {', '.join(self.loading)}…" if self.loading else "Scoring the first batch…"), ""
        now = self.clock()
        if self._t0 is None:
            self._t0, self._d0 = now, done
            self._last = (now, done)
        else:
            t_last, d_last = self._last
            if now - t_last >= self.MIN_STEP_S and done > d_last:
                rate = (done - d_last) / (now - t_last)
                self._rate = rate if self._rate is None else self.SMOOTHING * rate + (1 - self.SMOOTHING) * self._rate
                self._last = (now, done)
            elif self._rate is None and done > self._d0 and now > self._t0:
                self._rate = (done - self._d0) / (now - self._t0)
            if self._rate and total > done:
                self._eta_text = f"ETA {format_eta((total - done) / self._rate)}"
        if total <= done:
            self._eta_text = ""
        models = f" ({self.n_models} models)" if self.n_models > 1 else ""
        return f"Scored {self.photos(done)} of {self.photos(total)} photos{models}", self._eta_text
