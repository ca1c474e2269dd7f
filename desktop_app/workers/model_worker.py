"""One long-lived worker thread per loaded model, and the Qt adapter that turns core calls into signals.

Keras models are not thread-safe, so every call that touches a bundle (load, inference, Grad-CAM)
runs in the one QThread that owns it; requests arrive as queued signals and are served in order.
Bundles run on LiteRT and numpy; TensorFlow, where a bundle still needs it, is imported here, inside the
worker thread, never on the GUI thread.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot


BACKGROUND_NICE = 10


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> None:
    """Make the calling thread (and threads it starts later, e.g. TensorFlow's and the decoders' pools)
    yield the CPU to the GUI thread. Linux: per-thread nice value; elsewhere a no-op (QThread priority
    covers Windows and macOS)."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
        except OSError:
            pass  # not permitted in some sandboxes; only responsiveness suffers


class PythonThread(QThread):
    """A QThread whose event loop runs inside one Python call, so the thread keeps one Python thread state.

    With a plain QThread, PySide creates and deletes a Python thread state around every queued slot;
    TensorFlow's pybind11 layer caches the first one and later dereferences it (a segfault when an
    eager op raises internally, e.g. in Grad-CAM after a run). Running exec() from a Python run()
    keeps a single thread state alive for the thread's whole life.
    """

    def run(self) -> None:
        # Heavy work lives here; the GUI thread must win the CPU on a busy 2-core laptop.
        lower_thread_priority()
        self.exec()


@dataclass
class RunJob:
    """One run request for one model: a core.store.workspace.ScorePlan on a core.store.workspace.Workspace."""

    workspace: Any                   # core.store.workspace.Workspace
    plan: Any                        # core.store.workspace.ScorePlan for this worker's model
    cancel: Any                      # core.progress.CancelToken
    job_id: int = 0
    # core.triage.inference.backbone_sharing role: a combined model run beside its components scores them in its pass
    share: Any = None


@dataclass
class RunSummary:
    """How a run of one model ended; counts are photos (one run scores each photo once)."""

    model_key: str
    total: int
    done: int = 0
    errors: int = 0
    status: str = ""                 # core.store.workspace.RUN_STATUSES
    cancelled: bool = False
    failed: str = ""
    elapsed_s: float = 0.0
    card: Any = None
    scored: set = field(default_factory=set)        # photos scored in this run
    unreadable: set = field(default_factory=set)    # of which error rows
    extra: dict = field(default_factory=dict)


class ModelWorker(QObject):
    """Lives in its own QThread; owns one core.models.bundle.Bundle."""

    loaded = Signal(object)              # ModelCard
    load_failed = Signal(str)
    run_started = Signal(int)            # total files
    progress = Signal(int, int)          # done, total
    results = Signal(object)             # list[core.records.ResultRecord], in input order
    run_finished = Signal(object)        # RunSummary
    explained = Signal(str, str, object, object)  # path, model key, (H, W, 3) uint8 colorized, (H, W) float heat
    explain_failed = Signal(str, str, str)  # path, model key, message
    attached = Signal(object, object)    # workspace, list of re-decided ResultRecords (see attach)

    def __init__(self, bundle_ref: str, batch_size: int = 32):
        super().__init__()
        self.bundle_ref = str(bundle_ref)
        self.batch_size = batch_size
        self.bundle = None

    def _ensure_loaded(self):
        if self.bundle is None:
            # TensorFlow is imported (here, in this thread) only for a bundle without a LiteRT runtime.
            from core.models.bundle import load_bundle

            bundle = load_bundle(self.bundle_ref)
            self._warm_up(bundle)
            # TensorFlow leaves hundreds of thousands of long-lived objects; a full garbage collection
            # over them takes 100+ ms of whichever thread triggers it, often the GUI thread. Moving
            # what exists now into the permanent generation keeps later collections short.
            gc.collect()
            gc.freeze()
            self.bundle = bundle
            self.loaded.emit(self.bundle.card)
        return self.bundle

    @staticmethod
    def _warm_up(bundle) -> None:
        """Trace the forward pass now (two batch shapes, so it generalises), not in the middle of a run:
        tracing is long Python work that competes with the GUI thread for the GIL."""
        import numpy as np

        size = bundle.input_size
        for n in (1, 2):
            bundle.forward(np.zeros((n, size, size, 3), dtype=np.uint8))

    @Slot()
    def load(self) -> None:
        """Load the bundle if needed; emits `loaded` every time, so a caller can wait for 'ready'."""
        try:
            was_loaded = self.bundle is not None
            self._ensure_loaded()
            if was_loaded:
                self.loaded.emit(self.bundle.card)
        except Exception as exc:  # surfaced to the user as a message, never a crash
            self.load_failed.emit(f"Cannot load model {self.bundle_ref}: {exc}")

    @Slot(object)
    def run(self, job: RunJob) -> None:
        """Iterate the workspace's run of this model (it commits to the session); emit each result."""
        summary = RunSummary(self.bundle_ref, total=len(job.plan.score))
        start = time.monotonic()
        self.run_started.emit(summary.total)
        run = None
        try:
            bundle = self._ensure_loaded()
            summary.card = bundle.card
            from core.triage.inference import shared_engine

            engine = shared_engine(bundle, job.share, batch_size=self.batch_size, threshold=job.plan.threshold)

            pending: list = []

            def emit_pending() -> None:
                # Results cross to the GUI thread one list per inference batch: a queued signal per
                # photo made the GUI thread wake, dispatch and repaint once per photo.
                if pending:
                    self.results.emit(list(pending))
                    pending.clear()

            def on_progress(p) -> None:
                emit_pending()   # the engine reports progress after each batch it has yielded
                self.progress.emit(int(p.done), int(p.total))

            run = job.workspace.run(engine, job.plan, progress=on_progress, cancel=job.cancel)
            try:
                for record in run:
                    pending.append(record)
            finally:
                emit_pending()
            # However the run ended, the workspace recomputed this model's verdict on what is stored (core.store.workspace,
            # WorkspaceRun._after_run: the shift test, here in the worker) and moved its stored rows to the point that
            # verdict gives: the re-decided rows go to the table like results.
            pending.extend(run.redecided)
            emit_pending()
            summary.extra["shift"] = run.verdict
        except Exception as exc:  # a failed run reports why and keeps the partial results
            summary.failed = str(exc) or type(exc).__name__
        finally:
            if job.share is not None and job.share[0] == "combined":
                job.share[1].close()  # even if loading failed: its components then score their photos themselves
            summary.elapsed_s = time.monotonic() - start
            if run is not None:
                summary.status = run.status or "failed"
                summary.done, summary.errors = run.scored, run.errors
                summary.scored, summary.unreadable = set(run.scored_paths), set(run.error_paths)
            else:
                summary.status = "failed"
            summary.cancelled = summary.status == "cancelled"
            if summary.status == "failed" and not summary.failed:
                summary.failed = (run.error if run is not None else "") or "failed"
            self.run_finished.emit(summary)

    @Slot(object)
    def attach(self, workspace) -> None:
        """Bring this model's verdict on an opened folder up to date with what its session stores (after a killed
        run the stored set has changed since the last verdict: core.store.workspace.Workspace.attach), here in the worker
        because the shift test takes up to a second; stored rows move to the point the verdict gives."""
        try:
            bundle = self._ensure_loaded()
            before = workspace.point_for(bundle.card)
            workspace.attach(bundle)
            moved = []
            if not workspace.point_for(bundle.card).same_as(before):
                moved = workspace.redecide(bundle.card)
            self.attached.emit(workspace, moved)
        except Exception:  # noqa: BLE001 - the folder stays usable; the next run's end tests it again
            self.attached.emit(workspace, [])

    @Slot(str)
    def explain(self, path: str) -> None:
        try:
            bundle = self._ensure_loaded()
            from core.models.explain import colorize, gradcam
            from core.photos.images import load_rgb

            rgb = load_rgb(path, max_side=768)
            heat = gradcam(bundle, rgb)
            self.explained.emit(path, self.bundle_ref, colorize(heat), heat)
        except Exception as exc:
            self.explain_failed.emit(path, self.bundle_ref, f"Grad-CAM failed for {Path(path).name}: {exc}")


class ModelHandle(QObject):
    """GUI-side handle of a ModelWorker and its thread; requests are queued to the worker in order."""

    _load_requested = Signal()
    _run_requested = Signal(object)
    _explain_requested = Signal(str)
    _attach_requested = Signal(object)
    ready = Signal(object)   # ModelCard, emitted on the GUI thread once the worker has the model loaded

    def __init__(self, bundle_ref: str, batch_size: int = 32, parent: QObject | None = None):
        super().__init__(parent)
        self.key = str(bundle_ref)
        self.card = None
        self.thread = PythonThread()
        self.thread.setObjectName(f"model:{Path(self.key).name}")
        self.worker = ModelWorker(self.key, batch_size)
        self.worker.moveToThread(self.thread)
        self._load_requested.connect(self.worker.load)
        self._run_requested.connect(self.worker.run)
        self._explain_requested.connect(self.worker.explain)
        self._attach_requested.connect(self.worker.attach)
        self.worker.loaded.connect(self._remember_card)
        self.thread.start(QThread.Priority.LowPriority)

    @Slot(object)
    def _remember_card(self, card) -> None:
        self.card = card
        self.ready.emit(card)

    def load(self) -> None:
        self._load_requested.emit()

    def run(self, job: RunJob) -> None:
        self._run_requested.emit(job)

    def explain(self, path: str) -> None:
        self._explain_requested.emit(str(path))

    def attach(self, workspace) -> None:
        """Ask the worker to bring its model's verdict on `workspace` up to date (ModelWorker.attach)."""
        self._attach_requested.emit(workspace)

    def shutdown(self, wait_ms: int = 30000) -> None:
        """Stop the thread after its current request (cancel a run first so that is short)."""
        self.thread.quit()
        self.thread.wait(wait_ms)
