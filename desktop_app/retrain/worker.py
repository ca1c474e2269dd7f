"""The retrain wizard's worker: prepares data, trains (or adapts), compares and saves in one thread it owns.

The new model is created in this thread and only ever used here (Keras models are not thread-safe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from desktop_app.workers.model_worker import PythonThread


class RetrainWorker(QObject):
    prepared = Signal(object)            # core.learning.datasets.Dataset with splits
    progress = Signal(int, int, str)     # done, total, message
    stage_progress = Signal(str, int, int, str)   # stage, done, total, message (the bar's phases)
    epoch = Signal(object)               # core.learning.training.EpochLog
    trained = Signal(object)             # core.learning.training.TrainResult
    compared = Signal(object, object)    # metrics of the new model, of the current one (or None)
    saved = Signal(str)                  # bundle folder
    failed = Signal(str, str)            # stage, message
    cancelled = Signal(str)              # stage
    adapted = Signal(object, object)     # core.learning.adapt.AdaptResult, (new, parent) per-photo predictions or None

    def __init__(self):
        super().__init__()
        self.result = None
        self.adapt_result = None
        self.cancel = None

    def _progress(self, p) -> None:
        self.progress.emit(int(p.done), int(p.total), p.message or p.stage)
        self.stage_progress.emit(str(p.stage or ""), int(p.done), int(p.total), p.message or "")

    @Slot(object)
    def prepare(self, source: dict) -> None:
        """source: {"folder": path} or {"items": [(path, label)]}; then a group-aware split."""
        try:
            from core.learning.datasets import dataset_from_labels, load_folder_dataset, split_dataset

            if "folder" in source:
                ds = load_folder_dataset(source["folder"])
            else:
                ds = dataset_from_labels(source["items"])
            if not ds.has_splits():
                ds = split_dataset(ds, "group", seed=int(source.get("seed", 0)), progress=self._progress)
            self.prepared.emit(ds)
        except Exception as exc:
            self.failed.emit("data", str(exc) or type(exc).__name__)

    @Slot(object, object, object)
    def train(self, dataset, config, parent_card) -> None:
        from core.progress import CancelToken, Cancelled

        self.cancel = CancelToken()
        self.result = None
        try:
            from core.models.tf_runtime import load_tensorflow

            load_tensorflow()
            from core.learning.training import train_model

            result = train_model(dataset, config, progress=self._progress, cancel=self.cancel,
                                 on_epoch=self.epoch.emit, parent=parent_card)
        except Cancelled:
            self.cancelled.emit("train")
            return
        except Exception as exc:
            self.failed.emit("train", str(exc) or type(exc).__name__)
            return
        self.result = result
        self.trained.emit(result)

    @Slot(object, object, int)
    def compare(self, val_dataset, current_bundle_dir, n_bootstrap: int) -> None:
        """Evaluate the new model and the current one on the same validation images."""
        try:
            from core.models.bundle import Bundle, load_bundle
            from core.learning.evaluation import evaluate_bundle

            new = Bundle(self.result.card, self.result.model, self.result.ood)
            new_metrics = evaluate_bundle(new, val_dataset, progress=self._progress, n_bootstrap=n_bootstrap)
            current_metrics: Any = None
            if current_bundle_dir:
                current = load_bundle(current_bundle_dir)
                current_metrics = evaluate_bundle(current, val_dataset, progress=self._progress,
                                                  n_bootstrap=n_bootstrap)
            self.compared.emit(new_metrics, current_metrics)
        except Exception as exc:
            self.failed.emit("compare", str(exc) or type(exc).__name__)

    @Slot(object)
    def adapt(self, spec: dict) -> None:
        """spec: {"bundle": folder, "items": [(path, label)], "review_sha256": {path: SHA-256 the review labelled},
        "name", "version", "seed", "n_bootstrap"}. core.learning.adapt's refusals reach the page as `failed` (one line).

        core.learning.adapt.adapt_bundle on the session's reviewed photos (as `mpox-triage adapt --session`), then the
        per-photo predictions of both models on the same site photos for the paired verdict."""
        from core.progress import CancelToken, Cancelled

        # The host made the token when it sent the request, so a Cancel pressed before this slot starts counts.
        self.cancel = spec.get("cancel") or CancelToken()
        self.adapt_result = None
        try:
            from core.learning.adapt import adapt_bundle  # LiteRT and numpy; TensorFlow only if the model needs it
            from core.models.bundle import load_bundle
            from core.learning.datasets import dataset_from_labels
            from core.learning.adapt import site_predictions

            bundle = load_bundle(spec["bundle"])
            ds = dataset_from_labels(spec["items"], source="session")
            paths = [s.path for s in ds.samples]
            labels = [s.y for s in ds.samples]
            groups = [s.group for s in ds.samples]
            seed = int(spec.get("seed", 0))
            shas = spec.get("review_sha256") or {}
            result = adapt_bundle(bundle, paths, labels, groups, name=spec.get("name") or None,
                                  review_sha256=[shas.get(str(p)) for p in paths],
                                  version=spec.get("version") or None, seed=seed,
                                  n_bootstrap=int(spec.get("n_bootstrap", 1000)), site_label="session (app)",
                                  progress=self._progress, cancel=self.cancel)
            if result.stale:   # the comparison uses the photos adapt used
                stale = set(result.stale)
                keep = [str(p) not in stale for p in paths]
                paths, labels, groups = ([v for v, k in zip(col, keep) if k] for col in (paths, labels, groups))
            self._progress_text("comparing both models on the same site photos")
            paired = site_predictions(bundle, result, paths, labels, groups, seed=seed, progress=self._compare_progress,
                                      cancel=self.cancel)
        except Cancelled:
            self.cancelled.emit("adapt")
            return
        except Exception as exc:
            self.failed.emit("adapt", str(exc) or type(exc).__name__)
            return
        self.adapt_result = result
        self.adapted.emit(result, paired)

    def _progress_text(self, message: str) -> None:
        self.stage_progress.emit("adapt", 0, 0, message)

    def _compare_progress(self, p) -> None:
        self.stage_progress.emit("adapt", int(p.done), int(p.total), "comparing both models on the same site photos")

    @Slot(str)
    def save_adapted(self, out_dir: str) -> None:
        """core.learning.adapt.save_adapted: refuses an existing folder and the shipped models folder."""
        try:
            from core.learning.adapt import save_adapted

            self.saved.emit(str(save_adapted(self.adapt_result, out_dir, force=False)))
        except Exception as exc:
            self.failed.emit("save", str(exc) or type(exc).__name__)

    @Slot(str)
    def save(self, out_dir: str) -> None:
        try:
            from core.learning.training import save_trained

            if Path(out_dir).exists():
                raise FileExistsError(f"{out_dir} already exists; choose another version so no bundle is replaced")
            self.saved.emit(str(save_trained(self.result, out_dir)))
        except Exception as exc:
            self.failed.emit("save", str(exc) or type(exc).__name__)


class RetrainHost(QObject):
    """GUI-side handle: owns the thread and forwards requests as queued signals."""

    _prepare = Signal(object)
    _train = Signal(object, object, object)
    _compare = Signal(object, object, int)
    _save = Signal(str)
    _adapt = Signal(object)
    _save_adapted = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.thread = PythonThread()
        self.thread.setObjectName("retrain")
        self.worker = RetrainWorker()
        self.worker.moveToThread(self.thread)
        self._prepare.connect(self.worker.prepare)
        self._train.connect(self.worker.train)
        self._compare.connect(self.worker.compare)
        self._save.connect(self.worker.save)
        self._adapt.connect(self.worker.adapt)
        self._save_adapted.connect(self.worker.save_adapted)
        self.thread.start(QThread.Priority.LowPriority)

    def prepare(self, source: dict) -> None:
        self._prepare.emit(source)

    def train(self, dataset, config, parent_card) -> None:
        self._train.emit(dataset, config, parent_card)

    def compare(self, val_dataset, current_bundle_dir: str | None, n_bootstrap: int) -> None:
        self._compare.emit(val_dataset, current_bundle_dir, n_bootstrap)

    def save(self, out_dir: str) -> None:
        self._save.emit(str(out_dir))

    def adapt(self, spec: dict) -> None:
        from core.progress import CancelToken

        spec = dict(spec, cancel=CancelToken())
        self.worker.cancel = spec["cancel"]
        self._adapt.emit(spec)

    def save_adapted(self, out_dir: str) -> None:
        self._save_adapted.emit(str(out_dir))

    def cancel(self) -> None:
        if self.worker.cancel is not None:
            self.worker.cancel.cancel()

    def shutdown(self) -> None:
        self.cancel()
        self.thread.quit()
        self.thread.wait(60000)
