"""One long-lived worker thread per loaded model, and the Qt adapter that turns core calls into signals.

Keras models are not thread-safe, so every call that touches a bundle (load, inference, Grad-CAM)
runs in the one QThread that owns it; requests arrive as queued signals and are served in order.
TensorFlow is imported here, inside the worker thread, never on the GUI thread.
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
    """One inference request for one model: what to score and where to record it."""

    paths: list[str]
    cancel: Any                      # core.progress.CancelToken
    folder: str = ""
    session: Any = None              # core.session.SessionStore or None
    job_id: int = 0


@dataclass
class RunSummary:
    """How a run of one model ended."""

    model_key: str
    total: int
    done: int = 0
    errors: int = 0
    cancelled: bool = False
    failed: str = ""
    elapsed_s: float = 0.0
    card: Any = None
    extra: dict = field(default_factory=dict)


class ModelWorker(QObject):
    """Lives in its own QThread; owns one core.bundle.Bundle."""

    loaded = Signal(object)              # ModelCard
    load_failed = Signal(str)
    run_started = Signal(int)            # total files
    progress = Signal(int, int)          # done, total
    results = Signal(object)             # list[core.records.ResultRecord], in input order
    run_finished = Signal(object)        # RunSummary
    explained = Signal(str, str, object, object)  # path, model key, (H, W, 3) uint8 colorized, (H, W) float heat
    explain_failed = Signal(str, str, str)  # path, model key, message

    def __init__(self, bundle_ref: str, batch_size: int = 32):
        super().__init__()
        self.bundle_ref = str(bundle_ref)
        self.batch_size = batch_size
        self.bundle = None

    def _ensure_loaded(self):
        if self.bundle is None:
            from core.tf_runtime import load_tensorflow

            load_tensorflow()
            from core.bundle import load_bundle

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
        summary = RunSummary(self.bundle_ref, total=len(job.paths))
        start = time.monotonic()
        self.run_started.emit(len(job.paths))
        run_id = None
        try:
            bundle = self._ensure_loaded()
            summary.card = bundle.card
            from core.inference import InferenceEngine
            from core.progress import Cancelled

            if job.session is not None:
                run_id = job.session.start_run(bundle.card, job.folder)
            engine = InferenceEngine(bundle, batch_size=self.batch_size)

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

            try:
                for record in engine.run(job.paths, progress=on_progress, cancel=job.cancel):
                    summary.done += 1
                    if not record.ok:
                        summary.errors += 1
                    if job.session is not None and run_id is not None:
                        # Stored here, off the GUI thread: each result is committed durably (fsync).
                        job.session.add_result(run_id, record)
                    pending.append(record)
            except Cancelled:
                pass
            finally:
                emit_pending()
            summary.cancelled = bool(job.cancel is not None and job.cancel.cancelled and summary.done < summary.total)
        except Exception as exc:  # a failed run reports why and keeps the partial results
            summary.failed = str(exc) or type(exc).__name__
        finally:
            summary.elapsed_s = time.monotonic() - start
            if job.session is not None and run_id is not None:
                status = "failed" if summary.failed else ("cancelled" if summary.cancelled else "finished")
                try:
                    job.session.finish_run(run_id, status)
                except Exception:  # noqa: BLE001 - the run's results are already stored
                    pass
            self.run_finished.emit(summary)

    @Slot(str)
    def explain(self, path: str) -> None:
        try:
            bundle = self._ensure_loaded()
            from core.explain import colorize, gradcam
            from core.images import load_rgb

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

    def shutdown(self, wait_ms: int = 30000) -> None:
        """Stop the thread after its current request (cancel a run first so that is short)."""
        self.thread.quit()
        self.thread.wait(wait_ms)
