"""Detail pane: the photo large, a Grad-CAM overlay (toggle, opacity, model), and every model's scores."""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSizePolicy, QSlider, QVBoxLayout,
                               QWidget)

from core.triage.reasons import call_text, limit_text
from desktop_app.results.model import FLAG_TEXT, REVIEW_TEXT, FileRow, error_text

DISPLAY_SIDE = 1024


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """A deep copy, so the QImage does not point into a NumPy buffer that may be freed."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class PhotoView(QWidget):
    """Paints the photo scaled to fit, and the heat map over it at the chosen opacity."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.photo = QPixmap()
        self.heat = QPixmap()
        self.opacity = 0.45
        self.show_heat = True
        self.message = "Select a photo"
        self.setMinimumSize(240, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(38, 41, 46))
        if self.photo.isNull():
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
            return
        size = self.photo.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        target = QRectF((self.width() - size.width()) / 2, (self.height() - size.height()) / 2,
                        size.width(), size.height())
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawPixmap(target, self.photo, QRectF(self.photo.rect()))
        if self.show_heat and not self.heat.isNull():
            p.setOpacity(self.opacity)
            p.drawPixmap(target, self.heat, QRectF(self.heat.rect()))


class DetailPane(QWidget):
    """Shows one FileRow. Asks for the display image and Grad-CAM through signals; the window serves them."""

    gradcam_requested = Signal(str, str)   # path, model key
    heatmap_ready = Signal(str, str)       # path, model key: a heat map arrived (GUI thread)
    photo_ready = Signal(str)              # path: the display image arrived (GUI thread)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.row: FileRow | None = None
        # Set by the window to the table's model: the chosen models' records and core.triage.reasons for a row, so
        # the pane says exactly what the table and the exports say.
        self.results_model = None
        self._heat_cache: dict[tuple[str, str], QPixmap] = {}
        self._requested: set[tuple[str, str]] = set()   # asked for once; the worker answers in order
        self.title = QLabel("No photo selected")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.title.setStyleSheet("font-weight: 600; font-size: 13px;")
        self.view = PhotoView()
        self.gradcam_box = QCheckBox("Grad-CAM")
        self.gradcam_box.setChecked(True)
        self.gradcam_box.setToolTip("Regions that raised the model's mpox score (explains the model, not the lesion)")
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Which model's Grad-CAM to show")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.opacity.setToolTip("Heat-map opacity")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #666;")
        self.scores = QLabel()
        self.scores.setTextFormat(Qt.TextFormat.RichText)
        self.scores.setWordWrap(True)
        self.scores.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        controls = QHBoxLayout()
        controls.addWidget(self.gradcam_box)
        controls.addWidget(self.model_combo)
        controls.addWidget(QLabel("Opacity"))
        controls.addWidget(self.opacity, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addWidget(self.scores)

        self.gradcam_box.toggled.connect(self._on_toggle)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._show_heat())

    # --- called by the window ------------------------------------------------------------------
    def clear_cache(self) -> None:
        self._heat_cache.clear()
        self._requested.clear()

    def show_row(self, row: FileRow | None, photo: QPixmap | None = None) -> None:
        self.row = row
        self.view.heat = QPixmap()
        if row is None:
            self.title.setText("No photo selected")
            self.title.setToolTip("")
            self.view.photo = QPixmap()
            self.view.message = "Select a photo"
            self.scores.setText("")
            self.status.setText("")
            self.view.update()
            return
        self.title.setText(row.name)
        self.title.setToolTip(row.path)
        self.view.photo = photo if photo is not None else QPixmap()
        # A file no model could read will not decode here either: say why instead of "Loading…".
        self.view.message = ("Cannot display this file: " + error_text(row)) if row.errors() and not row.ok_records() \
            else "Loading…"
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for rec in self._records(row):
            if rec.ok:
                self.model_combo.addItem(f"{rec.model} {rec.model_version}".strip(), rec.model_key)
        self.model_combo.blockSignals(False)
        self.model_combo.setVisible(self.model_combo.count() > 1)
        self.update_scores()
        self._show_heat()
        self.view.update()

    def set_photo(self, path: str, pixmap: QPixmap) -> None:
        if self.row is not None and self.row.path == path:
            self.view.photo = pixmap
            reason = ": " + error_text(self.row) if self.row.errors() else ""
            self.view.message = ("Cannot display this file" + reason) if pixmap.isNull() else ""
            self.view.update()
            self.photo_ready.emit(path)

    def set_heatmap(self, path: str, key: str, heat_rgb: np.ndarray) -> None:
        self._heat_cache[(path, key)] = QPixmap.fromImage(rgb_to_qimage(heat_rgb))
        if self.row is not None and self.row.path == path and self.current_model_key() == key:
            self._show_heat()
        self.heatmap_ready.emit(path, key)

    def set_heatmap_error(self, path: str, key: str, message: str) -> None:
        if self.row is not None and self.row.path == path:
            self.status.setText(message)
        self._requested.discard((path, key))

    def current_model_key(self) -> str | None:
        return self.model_combo.currentData()

    def heat_for(self, path: str) -> tuple[QPixmap | None, str]:
        """The Grad-CAM computed for `path` (the model chosen here first, else any chosen model) and its model's
        name, for the photo large; (None, "") when none has been computed."""
        keys = [self.current_model_key()] + [self.model_combo.itemData(i) for i in range(self.model_combo.count())]
        for key in keys:
            heat = self._heat_cache.get((path, key)) if key is not None else None
            if heat is not None:
                index = self.model_combo.findData(key)
                return heat, self.model_combo.itemText(index) if index >= 0 else ""
        for (shown, _key), heat in self._heat_cache.items():   # a photo other than the one shown here
            if shown == path:
                return heat, ""
        return None, ""

    def has_heatmap(self) -> bool:
        return not self.view.heat.isNull()

    def _records(self, row: FileRow) -> list:
        model = self.results_model
        return model.shown_records(row) if model is not None else list(row.records.values())

    def update_scores(self) -> None:
        row = self.row
        if row is None:
            return
        lines = []
        reasons = self.results_model.reasons(row) if self.results_model is not None else []
        if reasons:
            lines.append("<b>Needs review:</b>")
            lines += [f"&nbsp;&nbsp;• {html.escape(r.text)}" for r in reasons]
        for rec in self._records(row):
            name = html.escape(f"{rec.model} {rec.model_version}".strip())
            if not rec.ok:
                lines.append(f"<b>{name}</b>: <span style='color:#b02020'>error — {html.escape(rec.error)}</span>")
                continue
            pred = html.escape(call_text(rec.prediction))
            flag = f" · <i>{html.escape(FLAG_TEXT.get(rec.flag, rec.flag))}</i>" if rec.flag else ""
            thr = f" (threshold {rec.threshold:.2f})" if rec.threshold is not None else ""
            lines.append(f"<b>{name}</b>: p(mpox) = <b>{rec.p_mpox:.3f}</b> → {pred}{thr}{flag}{self._distance(rec)}")
        lines += self._scope_lines(row)
        if row.review_label:
            lines.append(f"Reviewer label: <b>{REVIEW_TEXT.get(row.review_label, row.review_label)}</b> "
                         f"by {html.escape(row.reviewer)} at {html.escape(row.review_time.replace('T', ' ')[:16])} UTC "
                         "<span style='color:#666'>(Delete clears, Ctrl+Z undoes)</span>")
        elif row.errors() and not any(r.ok for r in self._records(row)):
            lines.append("<span style='color:#666'>Not reviewed — an unreadable file cannot be labelled</span>")
        else:
            lines.append("<span style='color:#666'>Not reviewed — press M (mpox), N (not mpox) or U (unsure)</span>")
        self.scores.setText("<br>".join(lines))

    def _distance(self, rec) -> str:
        """A model's embedding distance against its card's limit (the out-of-scope check of that model)."""
        card = (getattr(self.results_model, "cards", None) or {}).get(rec.model_key)
        limit = getattr(card, "ood_threshold", None)
        if rec.ood_score is None or limit is None:
            return ""
        return " · " + html.escape(limit_text("embedding distance", float(rec.ood_score), float(limit)))

    def _scope_lines(self, row: FileRow) -> list[str]:
        """The not-a-skin-photo score against its limit: once when every model saw the same score, else each
        model's own (the one its out-of-scope flag was decided with)."""
        from core.photos.scope import SCOPE_LIMIT  # NumPy and OpenCV only; no TensorFlow on the GUI thread

        limit = getattr(self.results_model, "scope_limit", None)
        limit = float(SCOPE_LIMIT if limit is None else limit)
        scored = [r for r in self._records(row) if r.ok and r.scope_score is not None]
        out = []
        for r in scored:
            s = float(r.scope_score)
            what = ("this does not look like a skin photo; no mpox / not-mpox call" if s > limit
                    else "looks like a photo")
            who = "" if len({x.scope_score for x in scored}) == 1 else f"{r.model} {r.model_version}: ".lstrip()
            out.append(html.escape(f"{who}{limit_text('Not-a-skin-photo score', s, limit)}: {what}"))
            if not who:
                break
        return out

    # --- internals -----------------------------------------------------------------------------
    def _on_toggle(self, checked: bool) -> None:
        self.view.show_heat = checked
        self.opacity.setEnabled(checked)
        self._show_heat()

    def _on_opacity(self, value: int) -> None:
        self.view.opacity = value / 100.0
        self.view.update()

    def _show_heat(self) -> None:
        row, key = self.row, self.current_model_key()
        if row is None or key is None:
            self.view.heat = QPixmap()
            self.status.setText("" if row is None or not row.errors() else "No scores: the file could not be read")
            self.view.update()
            return
        cached = self._heat_cache.get((row.path, key))
        self.view.heat = cached if cached is not None else QPixmap()
        if cached is None and self.gradcam_box.isChecked():
            self.status.setText("Computing Grad-CAM… (queued behind any running batch)")
            if (row.path, key) not in self._requested:
                self._requested.add((row.path, key))
                self.gradcam_requested.emit(row.path, key)
        elif cached is not None:
            self.status.setText("Grad-CAM: red = regions that raised p(mpox); it explains the model, not the lesion")
        self.view.update()

