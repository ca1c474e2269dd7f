"""Runs a workspace through one or more model workers and merges their signals for the window.

Each worker iterates `core.store.workspace.Workspace.run` for its model (the workspace commits and records
the run's status); this controller only schedules, merges and counts in photos.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Iterable

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from desktop_app.workers.model_worker import ModelHandle, RunJob, RunSummary


# The GUI thread inserts arriving results in bounded chunks, one chunk per timer tick, so a backlog
# (a fast model, a busy machine) never turns into one long stretch of row inserts and repaints.
FLUSH_INTERVAL_MS = 30
FLUSH_MAX_RECORDS = 48
FLUSH_BUDGET_S = 0.02
PROGRESS_INTERVAL_S = 0.1   # a QProgressBar repaints synchronously on every visible change


class RunController(QObject):
    """Starts a run on each selected model (each in its own worker thread) and reports them as one.

    Signals: started(photos), progress(photos done, photos), records(list of records, in arrival order),
    result(record, once per record, for scripts), finished(summary dict), failed(message). Every count is
    in photos, never file x model: with two models a photo is done when both have scored it (progress is
    the mean of the models' progress, in photos). Records and progress reach the window in bounded chunks
    from a timer, so a backlog never becomes one long stretch of GUI work; `finished` comes after the last
    record.

    The finished summary: {status (finished | cancelled | failed; see core.store.workspace), total (photos to score),
    kept (photos that got a result), errors (photos that could not be read), results (records, file x model),
    cancelled, elapsed_s, failures, models}.
    """

    started = Signal(int)
    progress = Signal(int, int)
    records = Signal(object)
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
        self._queue: deque = deque()
        self._final: dict | None = None
        self._last_progress = 0.0
        self._progress_dirty = False
        self._flush_timer = QTimer(self)
        self._flush_timer.setInterval(FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self._flush)

    def start(self, jobs: Iterable[tuple[ModelHandle, object]], workspace, names: dict | None = None) -> None:
        """Start one run per (model handle, core.store.workspace.ScorePlan) pair on `workspace`; all share one
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
        # A photo is done when every model that has to score it has: progress counts those, never a mean.
        self._remaining: dict[str, set[str]] = {}
        for _h, plan in jobs:
            for p in plan.score:
                self._remaining.setdefault(str(p), set()).add(plan.key)   # the model key records carry
        self._complete = 0
        self._names = {h.key: (names or {}).get(plan.key) or getattr(plan.card, "display_name", h.key)
                       for h, plan in jobs}
        self._summaries = {}
        self._queue.clear()
        self._final = None
        self._last_progress = 0.0
        self.started_at = time.monotonic()
        self.running = True
        self._connected = True
        for handle in self._handles:
            w = handle.worker
            w.progress.connect(self._on_progress)
            w.results.connect(self._on_results)
            w.run_finished.connect(self._on_finished)
        self.started.emit(self.total)
        self._flush_timer.start()
        from core.triage.inference import backbone_sharing  # NumPy only, no TensorFlow

        # "Both": the combined model scores its components in its own pass; their workers hand out those rows.
        roles = backbone_sharing([plan.card for _h, plan in jobs])
        for (handle, plan), role in zip(jobs, roles):
            handle.run(RunJob(workspace, plan, self.token, self._job_id, share=role))

    @property
    def total(self) -> int:
        """Photos to score in this run."""
        return self._photos

    @property
    def done(self) -> int:
        """Photos scored by every model that has to score them (a photo half scored is not done)."""
        return self._complete

    def cancel(self) -> None:
        if self.token is not None:
            self.token.cancel()

    def _disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        for handle in self._handles:
            w = handle.worker
            for signal, slot in ((w.progress, self._on_progress), (w.results, self._on_results),
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
        self._progress_dirty = True

    @Slot(object)
    def _on_results(self, records: list) -> None:
        # Only queued here: the flush timer inserts them in bounded chunks.
        self._queue.extend(records)
        for record in records:
            left = self._remaining.get(str(record.path))
            if left and record.model_key in left:
                left.discard(record.model_key)
                if not left:
                    self._complete += 1

    def _flush(self) -> None:
        """One timer tick: hand over at most a bounded chunk of records, then progress, then the end."""
        start = time.perf_counter()
        while self._queue and time.perf_counter() - start < FLUSH_BUDGET_S:
            chunk = [self._queue.popleft() for _ in range(min(FLUSH_MAX_RECORDS, len(self._queue)))]
            self.records.emit(chunk)
            for record in chunk:
                self.result.emit(record)
        now = time.monotonic()
        if self._progress_dirty and (now - self._last_progress >= PROGRESS_INTERVAL_S or self._final is not None):
            self._progress_dirty = False
            self._last_progress = now
            self.progress.emit(self.done, self.total)
        if self._final is not None and not self._queue:
            final, self._final = self._final, None
            self._flush_timer.stop()
            self._finish(final)

    @Slot(object)
    def _on_finished(self, summary: RunSummary) -> None:
        self._summaries[summary.model_key] = summary
        self._done[summary.model_key] = summary.done
        if len(self._summaries) < len(self._handles):
            return
        self._disconnect()
        self._progress_dirty = True
        from core.triage.shift import folder_verdict  # NumPy only, no TensorFlow

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
            # Photos every model of this run scored, and what each model kept (a cancelled run says both).
            "complete": self._complete,
            "per_model": [(self._names.get(s.model_key, s.model_key), len(s.scored), self._totals.get(s.model_key, 0))
                          for s in summaries],
            # The shift test of the first model whose test fired, else of the first that ran.
            "shift": folder_verdict([s.extra["shift"] for s in summaries if "shift" in s.extra]),
        }
        # Finished only once every queued record has reached the window (see _flush).
        self._final = out
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def _finish(self, out: dict) -> None:
        self.running = False
        if out["failures"] and len(out["failures"]) == len(out["models"]) and out["kept"] == 0:
            self.failed.emit("; ".join(out["failures"]))
        self.finished.emit(out)
