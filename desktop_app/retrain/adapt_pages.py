"""The wizard's "Adapt to this site's reviewed photos" path: base model -> adapt -> same-photos verdict.

Presentation and scheduling only: core.learning.adapt does the work (count_problem / count_warnings decide what is
refused or rough, adapt_bundle adapts, save_adapted saves) in the wizard's worker thread
(retrain/worker.py). After the comparison the wizard goes to its shared Keep-or-discard page, with the
same guardrails as a retrain (Save only after Keep, confirm before discarding, the user's model folder,
never over an existing folder or a shipped bundle).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWizardPage)

from desktop_app.notices import RESEARCH_NOTICE
from desktop_app.retrain.common import WizardLike, stop_controls
from desktop_app.retrain.progress import PhaseProgress
from desktop_app.retrain.verdict import paired_verdict

EMBEDDINGS_FILE = "embeddings.npz"   # core.learning.features.EMBEDDINGS_FILE (not imported: it pulls in no Qt, but numpy)
SITE_METRICS = [("roc_auc", "ROC AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                ("accuracy", "Accuracy"), ("ece", "Calibration error (lower is better)")]
RED, AMBER = "#b02020", "#8a5a00"


def has_embeddings(path: str | Path, card) -> bool:
    """The bundle carries its training embeddings (release 1.2.0 and later), which adapting needs."""
    return EMBEDDINGS_FILE in (getattr(card, "files", None) or {}) and (Path(path) / EMBEDDINGS_FILE).is_file()


def site_counts(items: list[tuple[str, str]]) -> tuple[int, int]:
    """(mpox, not mpox) among the session's reviewed photos (unsure is never among them)."""
    n_pos = sum(1 for _p, label in items if label == "mpox")
    return n_pos, len(items) - n_pos


class AdaptPage(QWizardPage):
    """Choose the base bundle; shows the site counts and core.learning.adapt's refusal or warning."""

    def __init__(self, wizard: WizardLike):
        super().__init__()
        self.w = wizard
        self.setTitle("Adapt to this site's reviewed photos")
        self.setSubTitle("A new head is trained on the chosen model's own training embeddings plus the photos "
                         "reviewed in this folder (mpox / not mpox; unsure left out). Nothing is replaced.")
        self.base = QComboBox()
        for path, card in wizard.bundles:
            tag = "" if has_embeddings(path, card) else "  — no training embeddings"
            self.base.addItem(f"{card.display_name} ({card.architecture}){tag}", str(path))
        self.base_note = QLabel()
        self.base_note.setWordWrap(True)
        self.counts = QLabel()
        self.counts.setWordWrap(True)
        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextFormat(Qt.TextFormat.RichText)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.name = QLineEdit()
        self.version = QLineEdit()
        form = QFormLayout(self)
        form.addRow("Model to adapt", self.base)
        form.addRow("", self.base_note)
        form.addRow("Site photos", self.counts)
        form.addRow("New name", self.name)
        form.addRow("New version", self.version)
        form.addRow(self.problem_label)
        form.addRow(self.warning_label)
        preferred = next((str(d) for d in wizard.preferred_dirs), None)
        index = self.base.findData(preferred) if preferred else -1
        if index < 0 or not has_embeddings(*wizard.bundles[index]):
            index = next((i for i, (p, c) in enumerate(wizard.bundles) if has_embeddings(p, c)), 0)
        if self.base.count():
            self.base.setCurrentIndex(index)
        self.base.currentIndexChanged.connect(lambda _i: self.refresh())
        self.refresh()

    def chosen(self):
        i = self.base.currentIndex()
        return self.w.bundles[i] if 0 <= i < len(self.w.bundles) else (None, None)

    def choose(self, bundle_dir: str | Path) -> None:
        self.base.setCurrentIndex(self.base.findData(str(bundle_dir)))

    def refresh(self) -> None:
        from core.triage.remedy import MIN_PER_CLASS

        path, card = self.chosen()
        n_pos, n_neg = site_counts(self.w.session_items)
        self.counts.setText(f"{n_pos} mpox and {n_neg} not mpox reviewed in this folder (at least {MIN_PER_CLASS} "
                            "of each are needed; photos marked unsure are left out)")
        if card is not None:
            self.name.setText(f"{card.name}-site")
            from core.learning.adapt import site_version

            self.version.setText(site_version(card.version))
            self.base_note.setText(f"{path}" if has_embeddings(path, card) else
                                   f"{card.display_name} carries no {EMBEDDINGS_FILE} (bundles before release 1.2.0): "
                                   "it cannot be adapted. Choose a bundle of release 1.2.0 or later.")
        problem = self.problem()
        self.problem_label.setText(f"<span style='color:{RED}'><b>{problem}</b></span>" if problem else "")
        warnings = self.warnings() if not problem else []
        self.warning_label.setText("".join(f"<span style='color:{AMBER}'>Warning: {w}</span>" for w in warnings))
        self.completeChanged.emit()

    def labels(self) -> list[int]:
        return [1 if label == "mpox" else 0 for _p, label in self.w.session_items]

    def problem(self) -> str:
        """core.learning.adapt's one-line refusal, or why the chosen bundle cannot be adapted ("" = can go on)."""
        from core.learning.adapt import count_problem

        path, card = self.chosen()
        if card is None:
            return "No model bundles found: nothing to adapt."
        if not has_embeddings(path, card):
            return (f"{card.display_name} carries no training embeddings ({EMBEDDINGS_FILE}); adapting needs a "
                    "bundle of release 1.2.0 or later.")
        return count_problem(self.labels()) or ""

    def warnings(self) -> list[str]:
        from core.learning.adapt import count_warnings

        return count_warnings(self.labels())

    def isComplete(self) -> bool:
        return not self.problem() and bool(self.name.text().strip() and self.version.text().strip())

    def nextId(self) -> int:
        return self.w.adapt_run_id


class AdaptRunPage(QWizardPage):
    """Runs core.learning.adapt.adapt_bundle in the worker thread, with the phase bar and Cancel."""

    def __init__(self, wizard: WizardLike):
        super().__init__()
        self.w = wizard
        self.setTitle("Adapting")
        self.setSubTitle("Embedding the site photos with the model's own backbone, then cross-validating the new "
                         "head on them. Cancel stops at the next batch of photos and saves nothing.")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.phase_label = QLabel("")
        self.message = QLabel("Waiting…")
        self.message.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel adapting")
        self.cancel_button.clicked.connect(self.cancel)
        self.done = False
        self.phases = PhaseProgress()
        row = QHBoxLayout()
        row.addWidget(self.phase_label)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.message)
        layout.addStretch(1)
        worker = wizard.host.worker
        worker.stage_progress.connect(self._on_progress)
        worker.cancelled.connect(self._on_cancelled)   # worker.adapted: RetrainWizard._on_adapted calls present()

    def initializePage(self) -> None:
        self.done = False
        self.phases = PhaseProgress()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)
        self.message.setText("Starting (loading the model)…")
        self.w.start_adapt()

    def cancel(self) -> None:
        self.w.host.cancel()
        self.cancel_button.setEnabled(False)
        self.message.setText("Cancelling… (stops after the current batch of photos)")

    def _on_progress(self, stage: str, done: int, total: int, message: str) -> None:
        if self.w.currentPage() is not self or self.done:
            return
        # core.learning.adapt reports every step under one stage: each message is its own phase here.
        _new, fraction, label = self.phases.update(message or stage, done, total, "")
        if total <= 1 or fraction >= 1.0:
            # A step without counts, or one whose counted part is done but still working: busy, never a
            # percentage that sits at 100% for minutes.
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(round(fraction * 1000)))
        self.phase_label.setText(label)   # the step is named once, beside the bar
        if self.cancel_button.isEnabled():
            self.message.setText("Working… Cancel stops after the current batch of photos and saves nothing.")

    def present(self, result) -> None:
        self.done = True
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000)
        warnings = "".join(f"<br><span style='color:{AMBER}'>Warning: {w}</span>" for w in result.warnings)
        self.message.setText(f"Adapted: {result.card.display_name}, threshold {result.card.threshold:.3f} "
                             f"(site weight {result.report.get('site_weight', 0):g}, chosen by cross-validation)."
                             + warnings)
        self.completeChanged.emit()

    def failed(self, message: str) -> None:
        """core.learning.adapt's refusal or error: said once, and no control left looking alive."""
        stop_controls(self.cancel_button, self.progress, self.phase_label)
        self.message.setText(f"<span style='color:{RED}'>Adapting stopped: {message}</span> Nothing was saved. Go "
                             "Back to change the model or the reviews, or Cancel to close.")

    def _on_cancelled(self, stage: str) -> None:
        if stage != "adapt":
            return
        stop_controls(self.cancel_button, self.progress, self.phase_label)
        self.message.setText("Adapting cancelled — nothing was saved. Go Back to change the model or Cancel to "
                             "close.")
        self.w.adapt_finished.emit("cancelled")

    def isComplete(self) -> bool:
        return self.done

    def nextId(self) -> int:
        return self.w.adapt_compare_id


def _fmt(m: dict, key: str) -> str:
    value = (m or {}).get(key)
    if not isinstance(value, (int, float)):
        return "—"
    ci = (m or {}).get("ci95", {}).get(key)
    text = f"{value:.3f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        text += f"  ({ci[0]:.2f}–{ci[1]:.2f})"
    return text


def forgets(before: dict, after: dict) -> bool:
    """The adapted model's base-val ROC AUC interval lies wholly below the parent's point figure."""
    hi = ((after or {}).get("ci95", {}) or {}).get("roc_auc")
    ref = (before or {}).get("roc_auc")
    return isinstance(ref, (int, float)) and isinstance(hi, (list, tuple)) and len(hi) == 2 and hi[1] < ref


class AdaptComparePage(QWizardPage):
    """Old and new on the same site photos (the adapted model cross-validated), the verdict, and forgetting."""

    def __init__(self, wizard: WizardLike):
        super().__init__()
        self.w = wizard
        self.setTitle("Adapted model vs the model it came from")
        self.setSubTitle("Both scored on the same site photos: the adapted model by cross-validation (each photo "
                         "scored by a head that did not see it), the original as it is.")
        self.verdict_label = QLabel()
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setStyleSheet("font-size: 14px; padding: 4px 0;")
        self.table = QTableWidget(len(SITE_METRICS), 2)
        self.table.setHorizontalHeaderLabels(["Adapted (cross-validated)", "Original"])
        self.table.setVerticalHeaderLabels([label for _k, label in SITE_METRICS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.base_label = QLabel()
        self.base_label.setWordWrap(True)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.verdict = None
        self.result = None
        self.forgets = False
        layout = QVBoxLayout(self)
        layout.addWidget(self.verdict_label)
        layout.addWidget(self.table)
        layout.addWidget(self.base_label)
        layout.addWidget(self.message)

    def present(self, result, paired) -> None:
        self.result = result
        rep = result.report
        new, old = rep.get("site_cv", {}), rep.get("site_parent", {})
        for i, (key, _label) in enumerate(SITE_METRICS):
            self.table.setItem(i, 0, QTableWidgetItem(_fmt(new, key)))
            self.table.setItem(i, 1, QTableWidgetItem(_fmt(old, key)))
        parent = rep.get("parent", {})
        parent_name = f"{parent.get('name', '?')} {parent.get('version', '')}".strip()
        if paired is not None:
            self.verdict = paired_verdict(paired[0], paired[1], what="site photos",
                                          current_name=f"{parent_name} (the original)")
            colour = {"better": "#1b6e20", "worse": RED}.get(self.verdict.word, "#333")
            self.verdict_label.setText(f"<span style='color:{colour}'>{self.verdict.text}</span>")
        else:
            self.verdict = None
            self.verdict_label.setText("No paired verdict: the per-photo predictions could not be rebuilt to match "
                                       "the adaptation's figures; judge by the intervals below.")
        before, after = rep.get("base_val_before", {}), rep.get("base_val_after", {})
        self.base_label.setText(
            "Forgetting check on the original model's own validation photos (not used in fitting): ROC AUC "
            f"{_fmt(before, 'roc_auc')} before, {_fmt(after, 'roc_auc')} after; sensitivity "
            f"{_fmt(before, 'sensitivity')} before, {_fmt(after, 'sensitivity')} after." if before and after else
            "Forgetting check: the original model's validation photos are not in its embeddings; not measured.")
        self.forgets = forgets(before, after)
        if self.forgets:
            self.base_label.setText(f"<span style='color:{RED}'><b>The adapted model is worse on the original's own "
                                    "validation photos</b> (its ROC AUC interval lies below the original's figure): "
                                    "it has forgotten part of what the base data taught.</span> "
                                    + self.base_label.text())
        site = rep.get("site", {})
        warnings = "".join(f" <span style='color:{AMBER}'>Warning: {w}</span>" for w in result.warnings)
        self.message.setText(
            f"{site.get('photos', '?')} site photos ({site.get('mpox', '?')} mpox); 95% bootstrap intervals in "
            f"brackets. Adapted threshold {result.card.threshold:.3f} (sensitivity >= 0.90 on the cross-validated "
            f"site predictions, so its sensitivity here is optimistic); original threshold "
            f"{self.w.adapt_page.chosen()[1].threshold:.3f}." + warnings + " " + RESEARCH_NOTICE)
        self.completeChanged.emit()

    def initializePage(self) -> None:
        pass  # filled when the worker reports (before this page can be reached)

    def isComplete(self) -> bool:
        return self.result is not None

    def nextId(self) -> int:
        return self.w.save_id
