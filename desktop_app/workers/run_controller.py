"""Runs a workspace through one or more model workers and merges their signals for the window.

Each worker iterates `core.workspace.Workspace.run` for its model (the workspace commits and records
the run's status); this controller only schedules, merges and counts in photos.
"""

from __future__ import annotations

import time
from typing import Iterable

from PySide6.QtCore import QObject, Signal, Slot

from desktop_app.workers.model_worker import ModelHandle, RunJob, RunSummary


class RunController(QObject):
    """Starts a run on each selected model (each in its own worker thread) and reports them as one.

    Signals: started(photos), progress(photos done, photos), result(record), finished(summary dict),
    failed(message). Every count is in photos, never file x model: with two models a photo is done when
    both have scored it (progress is the mean of the models' progress, in photos).

    The finished summary: {status (finished | cancelled | failed; see core.workspace), total (photos to score),
    kept (photos that got a result), errors (photos that could not be read), results (records, file x model),
    cancelled, elapsed_s, failures, models}.
    """

    started = Signal(int)
    progress = Signal(int, int)
    result = Signal(object)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.token = None
        self._handles: list[ModelHandle] = []
        self._done: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._summaries: dict[str, RunSummary] = {}
        self._photos = 0
        self._job_id = 0
        self.started_at = 0.0
        self.running = False
        self._connected = False

    def start(self, jobs: Iterable[tuple[ModelHandle, object]], workspace) -> None:
        """Start one run per (model handle, core.workspace.ScorePlan) pair on `workspace`; all share one
        CancelToken."""
        from core.progress import CancelToken  # pure Python, no TensorFlow

        if self.running:
            raise RuntimeError("A run is already in progress; cancel it or wait for it to finish")
        self._disconnect()
        jobs = list(jobs)
        self._handles = [handle for handle, _paths in jobs]
        self._job_id += 1
        self.token = CancelToken()
        self._done = {h.key: 0 for h in self._handles}
        self._totals = {h.key: len(plan.score) for h, plan in jobs}
        self._photos = len({p for _h, plan in jobs for p in plan.score})
        self._summaries = {}
        self.started_at = time.monotonic()
        self.running = True
        self._connected = True
        for handle in self._handles:
            w = handle.worker
            w.progress.connect(self._on_progress)
            w.result.connect(self.result)
            w.run_finished.connect(self._on_finished)
        self.started.emit(self.total)
        for handle, plan in jobs:
            handle.run(RunJob(workspace, plan, self.token, self._job_id))

    @property
    def total(self) -> int:
        """Photos to score in this run."""
        return self._photos

    @property
    def done(self) -> int:
        """Photos scored so far (mean over the models of each one's share of its work)."""
        shares = [self._done[k] / t for k, t in self._totals.items() if t]
        return int(self._photos * sum(shares) / len(shares)) if shares else 0

    def cancel(self) -> None:
        if self.token is not None:
            self.token.cancel()

    def _disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        for handle in self._handles:
            w = handle.worker
            for signal, slot in ((w.progress, self._on_progress), (w.result, self.result),
                                 (w.run_finished, self._on_finished)):
                try:
                    signal.disconnect(slot)
                except (RuntimeError, TypeError):
                    pass

    @Slot(int, int)
    def _on_progress(self, done: int, total: int) -> None:
        sender = self.sender()
        key = getattr(sender, "bundle_ref", None)
        if key in self._done:
            self._done[key] = done
            self._totals[key] = total
        self.progress.emit(self.done, self.total)

    @Slot(object)
    def _on_finished(self, summary: RunSummary) -> None:
        self._summaries[summary.model_key] = summary
        self._done[summary.model_key] = summary.done
        if len(self._summaries) < len(self._handles):
            return
        self.running = False
        self._disconnect()
        summaries = list(self._summaries.values())
        failures = [s.failed for s in summaries if s.failed]
        statuses = {s.status for s in summaries}
        status = next((s for s in ("failed", "interrupted", "cancelled") if s in statuses), "finished")
        out = {
            "status": status,
            "total": self._photos,
            "kept": len(set().union(*(s.scored for s in summaries))),
            "errors": len(set().union(*(s.unreadable for s in summaries))),
            "results": sum(s.done for s in summaries),
            "cancelled": bool(self.token is not None and self.token.cancelled),
            "elapsed_s": time.monotonic() - self.started_at,
            "failures": failures,
            "models": [s.model_key for s in summaries],
        }
        if failures and len(failures) == len(summaries) and out["kept"] == 0:
            self.failed.emit("; ".join(failures))
        self.finished.emit(out)
