"""Retrain wizard: data -> architecture and preset -> live training -> new vs current -> save or discard.

Or, from the data page, "Adapt to this site's reviewed photos" (retrain/adapt_pages.py): base model ->
core.learning.adapt in the worker -> old vs new on the same site photos with a verdict -> the same save page.

Every step is a core call (core.learning.datasets, core.learning.training, core.learning.evaluation) made in the wizard's own
worker thread; the pages only present and schedule.

Guardrails (docs/desktop.md): at least MIN_PER_CLASS photos of each class overall and
MIN_PER_CLASS_SPLIT of each class in train and in validation, or the data page refuses to go on;
the comparison gives a paired verdict (retrain/verdict.py); Save works only after "Keep" is
chosen; closing after training asks before the model is thrown away; bundles go to the user's
model folder, never into the install's models/ and never over an existing bundle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QFileDialog, QFormLayout, QGridLayout, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton, QRadioButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWizard, QWizardPage)

from desktop_app.notices import RESEARCH_NOTICE
from desktop_app.retrain.adapt_pages import AdaptComparePage, AdaptPage, AdaptRunPage
from desktop_app.retrain.chart import LineChart
from desktop_app.retrain.common import parent_for, stop_controls, train_extra_note, training_available
from desktop_app.retrain.progress import PhaseProgress
from desktop_app.retrain.verdict import lean, paired_verdict
from desktop_app.settings.store import user_models_dir
from desktop_app.retrain.worker import RetrainHost

MIN_PER_CLASS = 10          # photos of each class, all splits together
MIN_PER_CLASS_SPLIT = 5     # photos of each class in train and in validation (fewer gives 1.00 (1.00-1.00) on 2)
LOWER_IS_BETTER = {"brier", "ece"}
COMPARE_METRICS = [("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("accuracy", "Accuracy"),
                   ("precision", "Precision"), ("f1", "F1"), ("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"),
                   ("brier", "Brier score (lower is better)"), ("ece", "Calibration error (lower is better)")]


def data_problem(counts: dict[str, dict[str, int]], min_total: int = MIN_PER_CLASS,
                 min_split: int = MIN_PER_CLASS_SPLIT) -> str:
    """Why these split counts are too few to train and judge a model ("" when they are enough)."""
    names = {"mpox": "mpox", "not_mpox": "not mpox"}
    for label, name in names.items():
        total = sum(c.get(label, 0) for c in counts.values())
        if total < min_total:
            return (f"Too few photos: {total} {name} in all (at least {min_total} of each class are needed). "
                    "Add more photos or patients.")
    for split, split_name in (("train", "training"), ("val", "validation")):
        c = counts.get(split, {})
        for label, name in names.items():
            if c.get(label, 0) < min_split:
                return (f"Too few photos: the {split_name} split has {c.get(label, 0)} {name} (at least "
                        f"{min_split} of each class are needed in training and in validation, or the comparison "
                        "means nothing). Add more photos or patients.")
    return ""


def next_version(version: str) -> str:
    """Bump the last number of a version ('1.2.0' -> '1.2.1'); otherwise append '.1'."""
    m = re.match(r"^(.*?)(\d+)$", version or "")
    return f"{m.group(1)}{int(m.group(2)) + 1}" if m else f"{version or '0'}.1"


class DataPage(QWizardPage):
    """Choose class folders or the session's reviewed labels; shows counts per split and class."""

    def __init__(self, wizard: "RetrainWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("Training data")
        self.setSubTitle("Class folders (e.g. mpox/ and other/) or the labels you gave in this session. "
                         "Photos of one patient (or duplicates) always stay in the same split.")
        self.dataset = None
        self.from_folder = QRadioButton("Class folders:")
        self.from_session = QRadioButton("This session's reviewed labels")
        self.from_adapt = QRadioButton("Adapt to this site's reviewed photos")
        self.load_button = None
        self.from_adapt.setToolTip("Keep a model's training data and add this folder's reviewed photos "
                                   "(core.learning.adapt; needs a bundle that carries its training embeddings)")
        group = QButtonGroup(self)
        group.addButton(self.from_folder)
        group.addButton(self.from_session)
        group.addButton(self.from_adapt)
        group.buttonToggled.connect(lambda _b, _c: self.completeChanged.emit())
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder with one subfolder per class")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        load = QPushButton("Load and split")
        load.clicked.connect(self.load)
        self.load_button = load
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.counts = QTableWidget(0, 4)
        self.counts.setHorizontalHeaderLabels(["Split", "mpox", "not mpox", "total"])
        self.counts.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.counts.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.counts.verticalHeader().hide()
        n_reviewed = len(wizard.session_items)
        self.from_session.setText(f"This session's reviewed labels ({n_reviewed} photos labelled mpox / not mpox)")
        self.from_session.setEnabled(n_reviewed > 0)
        self.from_adapt.setText(f"Adapt to this site's reviewed photos ({n_reviewed} labelled; a model's own "
                                "training data plus these)")
        self.from_folder.setChecked(True)
        # The clinic install has no TensorFlow: say so here, before anything fails, and offer what works.
        self.can_train = training_available()
        self.train_note = QLabel(train_extra_note())
        self.train_note.setWordWrap(True)
        self.train_note.setStyleSheet("background: #fff1cc; border: 1px solid #d9a400; color: #5a3d00; padding: 6px;")
        self.train_note.setVisible(not self.can_train)
        if not self.can_train:
            for widget in (self.from_folder, self.from_session, self.folder, browse, load):
                widget.setEnabled(False)
            self.from_adapt.setChecked(True)

        row = QHBoxLayout()
        row.addWidget(self.from_folder)
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.train_note)
        layout.addLayout(row)
        layout.addWidget(self.from_session)
        # "Load and split" acts on the two choices above it; adapting has its own action (Tools > Adapt to
        # this site…) and is listed last here, below the button, so the button never sits between choices.
        layout.addWidget(load, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addSpacing(8)
        layout.addWidget(self.from_adapt)
        layout.addWidget(self.status)
        layout.addWidget(self.counts)
        wizard.host.worker.prepared.connect(self._on_prepared)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with one subfolder per class", self.folder.text())
        if folder:
            self.folder.setText(folder)
            self.from_folder.setChecked(True)

    def use_folder(self, folder: str) -> None:
        self.folder.setText(str(folder))
        self.from_folder.setChecked(True)
        self.load()

    def use_session(self) -> None:
        self.from_session.setChecked(True)
        self.load()

    def use_adapt(self) -> None:
        self.from_adapt.setChecked(True)

    def load(self) -> None:
        self.dataset = None
        self.completeChanged.emit()
        if self.from_adapt.isChecked():
            self.status.setText("Adapting needs no split here: press Next to choose the model to adapt.")
            return
        if self.from_folder.isChecked():
            if not self.folder.text().strip():
                self.status.setText("Choose a folder first.")
                return
            source: dict[str, Any] = {"folder": self.folder.text().strip()}
        else:
            source = {"items": list(self.w.session_items)}
        self.status.setText("Reading the photos and splitting by patient/group…")
        self.w.host.prepare(source)

    def _on_prepared(self, ds) -> None:
        self.dataset = ds
        counts = ds.counts()
        splits = [s for s in ("train", "val", "test", "") if s in counts]
        self.counts.setRowCount(len(splits))
        for i, split in enumerate(splits):
            c = counts[split]
            values = [split or "(unsplit)", c.get("mpox", 0), c.get("not_mpox", 0), sum(c.values())]
            for j, v in enumerate(values):
                self.counts.setItem(i, j, QTableWidgetItem(str(v)))
        groups = ds.split_info.get("n_groups", "?") if hasattr(ds, "split_info") else "?"
        problem = self.problem()
        self.status.setText(f"{len(ds)} photos in {groups} groups, split {ds.split_info.get('protocol', 'group')}-"
                            f"aware." + (f" <b>{problem}</b>" if problem else ""))
        self.completeChanged.emit()
        self.w.data_ready.emit(ds)

    def problem(self) -> str:
        if self.dataset is None:
            return "no data"
        return data_problem(self.dataset.counts(), self.w.min_per_class, self.w.min_per_class_split)

    def isComplete(self) -> bool:
        if self.from_adapt.isChecked():
            return True   # the adapt page checks the counts (core.learning.adapt's rule)
        return self.dataset is not None and not self.problem()

    def nextId(self) -> int:
        return self.w.adapt_id if self.from_adapt.isChecked() else self.w.model_id


class ModelPage(QWizardPage):
    def __init__(self, wizard: "RetrainWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("Architecture and preset")
        self.setSubTitle("Quick trains only the head on cached features (minutes). Full also fine-tunes the top "
                         "blocks of the backbone (much longer).")
        from core.photos.preprocess import ARCHITECTURES

        self.arch = QComboBox()
        for key, spec in ARCHITECTURES.items():
            self.arch.addItem(spec.display_name, key)
        self.preset = QComboBox()
        self.preset.addItem("Quick — head only, cached features", "quick")
        self.preset.addItem("Full — fine-tune the top blocks", "full")
        self.name = QLineEdit()
        self.version = QLineEdit()
        self.parent_label = QLabel()
        self.parent_label.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Architecture", self.arch)
        form.addRow("Preset", self.preset)
        form.addRow("Name", self.name)
        form.addRow("Version", self.version)
        form.addRow("Current model (parent)", self.parent_label)
        self.arch.currentIndexChanged.connect(lambda _i: self._fill_defaults())
        self._fill_defaults()

    def parent_bundle(self) -> tuple[str | None, Any]:
        """The current model of the chosen architecture: recorded as parent and compared against."""
        return parent_for(self.arch.currentData(), self.w.current, self.w.bundles)

    def _fill_defaults(self) -> None:
        path, card = self.parent_bundle()
        if card is not None:
            self.name.setText(card.name)
            self.version.setText(next_version(card.version))
            self.parent_label.setText(f"{card.name} {card.version} (threshold {card.threshold:.2f}); the new "
                                      "model records it as its parent and is compared against it")
        else:
            self.name.setText(f"mpox-{self.arch.currentData()}")
            self.version.setText("1.0.0")
            self.parent_label.setText("no model of this architecture in the models folder: the new model is "
                                      "compared with nothing")

    def validatePage(self) -> bool:
        return bool(self.name.text().strip() and self.version.text().strip())


class TrainPage(QWizardPage):
    def __init__(self, wizard: "RetrainWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("Training")
        self.setSubTitle("Loss and accuracy per epoch; Cancel stops at the next batch and saves nothing.")
        self.loss = LineChart("Loss")
        self.acc = LineChart("Accuracy")
        self.progress = QProgressBar()
        self.message = QLabel("Waiting…")
        self.message.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.clicked.connect(self.cancel)
        self.done = False
        charts = QGridLayout()
        charts.addWidget(self.loss, 0, 0)
        charts.addWidget(self.acc, 0, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.progress, 1)
        bottom.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(charts, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.message)
        worker = wizard.host.worker
        worker.epoch.connect(self._on_epoch)
        worker.trained.connect(self._on_trained)
        worker.cancelled.connect(self._on_cancelled)
        worker.stage_progress.connect(self._on_progress)
        self.phases = PhaseProgress()
        self.phase_label = QLabel("")
        bottom.insertWidget(0, self.phase_label)
        self.progress.setRange(0, 1000)

    def initializePage(self) -> None:
        self.done = False
        self.phases = PhaseProgress()
        self.progress.setValue(0)
        self.loss.clear()
        self.acc.clear()
        self.cancel_button.setEnabled(True)
        self.loss.set_empty_text("waiting for the first epoch…")
        self.acc.set_empty_text("waiting for the first epoch…")
        self.message.setText("Starting (loading TensorFlow and the backbone)…" if training_available()
                             else "Starting…")
        self.w.start_training()

    def failed(self, message: str) -> None:
        """Training stopped with an error: said once, the charts say no epoch will come, Cancel is off."""
        stop_controls(self.cancel_button, self.progress, self.phase_label)
        for chart in (self.loss, self.acc):
            chart.set_empty_text("no epochs: training stopped")
        self.message.setText(f"<span style='color:#b02020'>Training stopped: {message}</span> Nothing was saved. "
                             "Go Back to change settings or Cancel to close.")

    def cancel(self) -> None:
        self.w.host.cancel()
        self.cancel_button.setEnabled(False)
        self.message.setText("Cancelling… (stops after the current batch)")

    def _on_progress(self, stage: str, done: int, total: int, message: str) -> None:
        """One phase at a time: the bar restarts only when the phase (named beside it) changes."""
        if self.w.currentPage() is not self:
            return
        _new, fraction, label = self.phases.update(stage, done, total, message)
        self.progress.setValue(int(round(fraction * 1000)))
        self.phase_label.setText(label.split(" — ")[0])
        if self.cancel_button.isEnabled():
            self.message.setText(label)

    def _on_epoch(self, log) -> None:
        tag = "" if log.phase in ("head", "") else f" ({log.phase})"
        self.loss.add_point("train" + tag, log.loss)
        self.loss.add_point("validation" + tag, log.val_loss, dashed=True)
        self.acc.add_point("train" + tag, log.accuracy)
        self.acc.add_point("validation" + tag, log.val_accuracy, dashed=True)

    def _on_trained(self, result) -> None:
        self.done = True
        self.cancel_button.setEnabled(False)
        m = result.val_metrics or {}
        sens, spec = m.get("sensitivity"), m.get("specificity")
        extra = f" Validation sensitivity {sens:.2f}, specificity {spec:.2f}." if sens is not None and spec is not None \
            else ""
        self.message.setText(f"Trained {result.card.name} {result.card.version} — threshold "
                             f"{result.card.threshold:.2f}.{extra}")
        self.completeChanged.emit()
        self.w.training_finished.emit("trained")

    def _on_cancelled(self, stage: str) -> None:
        if stage != "train":
            return
        self.message.setText("Training cancelled — nothing was saved. Go Back to change settings or Cancel to close.")
        self.w.training_finished.emit("cancelled")

    def isComplete(self) -> bool:
        return self.done


class ComparePage(QWizardPage):
    def __init__(self, wizard: "RetrainWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("New model vs current model")
        self.setSubTitle("Both evaluated on the same validation photos (never seen in training).")
        self.table = QTableWidget(len(COMPARE_METRICS), 2)
        self.table.setHorizontalHeaderLabels(["New model", "Current model"])
        self.table.setVerticalHeaderLabels([label for _k, label in COMPARE_METRICS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.verdict_label = QLabel()
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setStyleSheet("font-size: 14px; padding: 4px 0;")
        self.verdict = None
        self.metrics: tuple[Any, Any] | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self.verdict_label)
        layout.addWidget(self.table)
        layout.addWidget(self.message)
        wizard.host.worker.compared.connect(self._on_compared)

    def initializePage(self) -> None:
        self.metrics = None
        self.verdict = None
        self.verdict_label.setText("")
        self.message.setText("Evaluating on the validation split…")
        self.w.start_comparison()

    def _on_compared(self, new: dict, current: dict | None) -> None:
        self.metrics = (new, current)
        for i, (key, _label) in enumerate(COMPARE_METRICS):
            values = [None if m is None else m.get(key) for m in (new, current)]
            known = [v for v in values if isinstance(v, (int, float))]
            best = (min(known) if key in LOWER_IS_BETTER else max(known)) if len(known) == 2 else None
            for j, (m, value) in enumerate(zip((new, current), values)):
                text = "—" if value is None else f"{value:.3f}"
                ci = (m or {}).get("ci95", {}).get(key) if m else None
                if ci and isinstance(ci, (list, tuple)) and len(ci) == 2:
                    text += f"  ({ci[0]:.2f}–{ci[1]:.2f})"
                item = QTableWidgetItem(text)
                if best is not None and value == best and known[0] != known[1]:
                    font = item.font()
                    font.setBold(True)  # the better of the two; overlapping intervals mean "not clearly better"
                    item.setFont(font)
                self.table.setItem(i, j, item)

        def who(m: dict) -> str:
            thr = m.get("threshold")
            return f"{m['model'].get('name')} {m['model'].get('version')}" + (
                f" (threshold {thr:.2f})" if isinstance(thr, (int, float)) else "")

        self.verdict = paired_verdict(new, current)
        colour = {"better": "#1b6e20", "worse": "#b02020"}.get(self.verdict.word, "#333")
        self.verdict_label.setText(f"<span style='color:{colour}'>{self.verdict.text}</span>"
                                   + lean(new, current, COMPARE_METRICS, LOWER_IS_BETTER))
        n = new.get("n", "?")
        self.message.setText(f"{n} validation photos; 95% intervals in brackets; bold = the better value. New: "
                             f"{who(new)}; current: " + (who(current) if current else
                                                          "none of this architecture to compare with") + ". "
                             + RESEARCH_NOTICE)
        self.completeChanged.emit()
        self.w.comparison_ready.emit(new, current)

    def isComplete(self) -> bool:
        return self.metrics is not None


class SavePage(QWizardPage):
    def __init__(self, wizard: "RetrainWizard"):
        super().__init__()
        self.w = wizard
        self.setTitle("Keep or discard")
        self.setSubTitle("Saving writes a new bundle version next to the current one; nothing is replaced.")
        self.save_choice = QRadioButton("Keep: save as a new bundle version")
        self.discard_choice = QRadioButton("Discard this model")
        # No choice is made for the user: Save works only once Keep is chosen.
        self.choice_group = QButtonGroup(self)
        self.choice_group.addButton(self.save_choice)
        self.choice_group.addButton(self.discard_choice)
        self.target = QLabel()
        self.target.setWordWrap(True)
        self.target.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Where the new bundle goes is shown and can be changed (never a hidden folder with no choice).
        self.change_button = QPushButton("Change save location…")
        self.change_button.clicked.connect(lambda: self.choose_location())
        self.save_button = QPushButton("Save bundle")
        self.save_button.clicked.connect(self.save)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.saved_path: str | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self.save_choice)
        where = QHBoxLayout()
        where.addWidget(self.target, 1)
        where.addWidget(self.change_button)
        layout.addLayout(where)
        layout.addWidget(self.save_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.discard_choice)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.save_choice.toggled.connect(lambda _c: self._update())
        self.discard_choice.toggled.connect(lambda _c: self._update())
        wizard.host.worker.saved.connect(self._on_saved)

    def nextId(self) -> int:
        return -1   # the last page of both paths

    def initializePage(self) -> None:
        self.saved_path = None
        self._show_target()
        self.message.setText("")
        self._update()

    def _show_target(self) -> None:
        self.target.setText(f"Save location: {self.w.models_dir}<br>New bundle folder: {self.w.target_dir()}")

    def choose_location(self, folder: str | None = None) -> None:
        """Change the folder the new bundle is saved in (the model picker lists it from there)."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the new model in", str(self.w.models_dir))
        if folder:
            self.w.models_dir = Path(folder)
            self._show_target()
            self.message.setText("")

    def _update(self) -> None:
        self.save_button.setEnabled(self.save_choice.isChecked() and self.saved_path is None)
        self.completeChanged.emit()

    def save(self) -> None:
        if not self.save_choice.isChecked() or self.saved_path is not None:
            return
        problem = self.w.target_problem()
        if problem:
            self.message.setText(f"<span style='color:#b02020'>{problem}</span>")
            return
        self.save_button.setEnabled(False)
        self.message.setText("Saving…")
        if self.w.adapting:
            self.w.host.save_adapted(str(self.w.target_dir()))
        else:
            self.w.host.save(str(self.w.target_dir()))

    def _on_saved(self, path: str) -> None:
        self.saved_path = path
        self.w.log_retrain(path)
        self.message.setText(f"Saved to {path}. It is now in the model picker.")
        self.completeChanged.emit()
        self.w.bundle_saved.emit(path)

    def isComplete(self) -> bool:
        return self.discard_choice.isChecked() or self.saved_path is not None


class RetrainWizard(QWizard):
    """Signals: bundle_saved(path). `config_overrides` adds TrainConfig fields (tests use a tiny backbone)."""

    # Emitted on the GUI thread after the pages have updated (tests and callers wait on these).
    bundle_saved = Signal(str)
    failed = Signal(str, str)
    data_ready = Signal(object)
    training_finished = Signal(str)          # "trained" | "cancelled" | "failed"
    comparison_ready = Signal(object, object)
    adapt_finished = Signal(str)             # "adapted" | "cancelled" | "failed"

    def __init__(self, window=None, models_dir: str | Path | None = None, current: list | None = None,
                 session_items: list | None = None, weights_dir: str | None = None, bundles: list | None = None,
                 adapt_only: bool = False, review_sha256: dict | None = None):
        super().__init__(window)
        self.main_window = window
        self.setWindowTitle("Adapt to this site" if adapt_only else "Retrain a model")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        # The user's own model folder by default (never the install's models/, see target_problem).
        # A models folder the user chose (Settings or --models-dir) is used as is; target_problem still
        # refuses the shipped one.
        chosen = models_dir or (getattr(window, "_models_dir", None) if window is not None else None)
        self.models_dir = Path(chosen) if chosen else user_models_dir()
        self.min_per_class, self.min_per_class_split = MIN_PER_CLASS, MIN_PER_CLASS_SPLIT
        self.discard_box: QMessageBox | None = None
        self.current = current if current is not None else (
            list(zip(window.selected_dirs(), window.selected_cards())) if window is not None else [])
        self.session_items = session_items if session_items is not None else (
            window.reviewed_items() if window is not None else [])
        # The content each review labelled: core.learning.adapt leaves out photos changed since (stale reviews).
        self.review_sha256 = review_sha256 if review_sha256 is not None else (
            window.reviewed_sha256() if window is not None and hasattr(window, "reviewed_sha256") else {})
        self.weights_dir = weights_dir if weights_dir is not None else (
            window.settings.weights_dir if window is not None else None)
        # Every bundle the window lists (any of them can be a base to adapt), the selected one first choice.
        self.bundles = list(bundles if bundles is not None else (getattr(window, "bundles", []) or []))
        self.preferred_dirs = list(window.selected_dirs()) if window is not None else []
        self.config_overrides: dict[str, Any] = {}
        self.n_bootstrap = 200
        self.host = RetrainHost(self)
        self.host.worker.failed.connect(self._on_failed)
        # One receiver for the adapt result, so both pages are filled before adapt_finished is emitted (each
        # cross-thread connection is its own queued event; a listener could run between two of them).
        self.host.worker.adapted.connect(self._on_adapted)
        self.data_page = DataPage(self)
        self.model_page = ModelPage(self)
        self.train_page = TrainPage(self)
        self.compare_page = ComparePage(self)
        self.save_page = SavePage(self)
        self.adapt_page = AdaptPage(self)
        self.adapt_run_page = AdaptRunPage(self)
        self.adapt_compare_page = AdaptComparePage(self)
        self.data_id = self.addPage(self.data_page)
        self.model_id = self.addPage(self.model_page)
        self.addPage(self.train_page)
        self.addPage(self.compare_page)
        self.save_id = self.addPage(self.save_page)
        self.adapt_id = self.addPage(self.adapt_page)
        self.adapt_run_id = self.addPage(self.adapt_run_page)
        self.adapt_compare_id = self.addPage(self.adapt_compare_page)
        self.resize(860, 600)
        self.finished.connect(lambda _r: self.host.shutdown())
        if adapt_only:   # Tools > Adapt to this site…: straight to choosing the model to adapt
            self.data_page.from_adapt.setChecked(True)
            self.setStartId(self.adapt_id)

    def log_retrain(self, path: str) -> None:
        """Record the retrain (data manifest hash, split seed, parent) in the open session's audit trail."""
        session = getattr(self.main_window, "session", None)
        result = getattr(self.host.worker, "adapt_result" if self.adapting else "result", None)
        if session is None or result is None:
            return
        from core.store.session import ACTION_RETRAIN
        from core.learning.training import retrain_audit_details

        session.log(ACTION_RETRAIN, retrain_audit_details(result.card, path))

    def train_config(self):
        from core.learning.training import TrainConfig

        page = self.model_page
        fields = dict(arch=page.arch.currentData(), preset=page.preset.currentData(), name=page.name.text().strip(),
                      version=page.version.text().strip(), weights_dir=self.weights_dir or None,
                      n_bootstrap=self.n_bootstrap)
        fields.update(self.config_overrides)
        return TrainConfig(**fields)

    def start_training(self) -> None:
        _path, parent_card = self.model_page.parent_bundle()
        try:
            config = self.train_config()
        except Exception as exc:
            self._on_failed("train", str(exc))
            return
        self.host.train(self.data_page.dataset, config, parent_card)

    @property
    def adapting(self) -> bool:
        """The data page chose "Adapt to this site's reviewed photos"."""
        return self.data_page.from_adapt.isChecked()

    def start_adapt(self) -> None:
        path, _card = self.adapt_page.chosen()
        self.host.adapt({"bundle": str(path), "items": list(self.session_items), "review_sha256": self.review_sha256,
                         "name": self.adapt_page.name.text().strip(), "version": self.adapt_page.version.text().strip(),
                         "n_bootstrap": self.n_bootstrap})

    def _on_adapted(self, result, paired) -> None:
        self.adapt_run_page.present(result)
        self.adapt_compare_page.present(result, paired)
        self.adapt_finished.emit("adapted")
        self.comparison_ready.emit(result.report.get("site_cv", {}), result.report.get("site_parent", {}))

    def start_comparison(self) -> None:
        path, _card = self.model_page.parent_bundle()
        self.host.compare(self.data_page.dataset.subset("val"), path, self.n_bootstrap)

    def target_dir(self) -> Path:
        page = self.adapt_page if self.adapting else self.model_page
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{page.name.text().strip()}-{page.version.text().strip()}")
        return self.models_dir / safe

    def target_problem(self) -> str:
        """Why the bundle cannot be saved where planned: over an existing bundle, or into the shipped models."""
        target = self.target_dir()
        if target.exists():
            where = "the Adapt page" if self.adapting else "the Architecture page"
            return f"{target} already exists: change the version on {where}, nothing is overwritten."
        try:
            from core.models.bundle import default_models_dir

            shipped = default_models_dir().resolve()
            if target.resolve().is_relative_to(shipped):
                return f"{target} is inside the shipped models folder; bundles go to {user_models_dir()}."
        except Exception:  # noqa: BLE001 - no shipped folder to protect
            pass
        from core.store.outputs import OutputError, check_output

        try:  # the one output policy (core.store.outputs): never inside another bundle, the photos, a session
            check_output(target, "model folder", folder=self.data_page.folder.text().strip() or None,
                         kind="bundle")
        except OutputError as exc:
            return str(exc)
        return ""

    def _on_failed(self, stage: str, message: str) -> None:
        page = {"data": self.data_page, "train": self.train_page, "compare": self.compare_page,
                "save": self.save_page, "adapt": self.adapt_run_page}.get(stage)
        if hasattr(page, "failed"):   # the page says it and stops its controls (train, adapt)
            page.failed(message)
        else:
            label = getattr(page, "status", None) or getattr(page, "message", None)
            if label is not None:
                label.setText(f"<span style='color:#b02020'>Failed ({stage}): {message}</span>")
        if stage == "save" and page is not None:
            self.save_page.save_button.setEnabled(True)
        if stage == "train":
            self.training_finished.emit("failed")
        if stage == "data":
            self.data_ready.emit(None)
        if stage == "adapt":
            self.adapt_finished.emit("failed")
        self.failed.emit(stage, message)

    def has_unsaved_model(self) -> bool:
        page = self.save_page
        done = self.adapt_run_page.done if self.adapting else self.train_page.done
        return done and page.saved_path is None and not page.discard_choice.isChecked()

    def reject(self) -> None:
        """Cancel / Esc / close: ask before throwing away a trained model that was not saved."""
        if self.has_unsaved_model():
            if self.discard_box is None or not self.discard_box.isVisible():
                what = "adapted" if self.adapting else "trained"
                self.discard_box = QMessageBox(QMessageBox.Icon.Question, f"Discard the {what} model?",
                                               "The new model has not been saved. Close the wizard and discard it?",
                                               QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
                                               self)
                self.discard_box.setDefaultButton(QMessageBox.StandardButton.Cancel)
                self.discard_box.finished.connect(self._on_discard_answer)
                self.discard_box.open()
            return
        self.host.cancel()
        super().reject()

    def _on_discard_answer(self, _result: int) -> None:
        box = self.discard_box
        if box is not None and box.clickedButton() is box.button(QMessageBox.StandardButton.Discard):
            self.train_page.done = False
            self.adapt_run_page.done = False
            self.host.cancel()
            QWizard.reject(self)

