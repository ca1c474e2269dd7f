"""The photo large: the original file (EXIF-rotated) fitted to the screen, up or down, in its own window, with
the selected model's Grad-CAM heat map over it when one has been computed (a toggle, as in the detail pane)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QGuiApplication, QImageReader, QPainter, QPixmap
from PySide6.QtWidgets import QCheckBox, QDialog, QLabel, QVBoxLayout, QWidget

HEAT_OPACITY = 0.45


def with_heat(photo: QPixmap, heat: QPixmap, opacity: float = HEAT_OPACITY) -> QPixmap:
    """`photo` with `heat` drawn over it, stretched to the photo, at `opacity`."""
    out = QPixmap(photo)
    painter = QPainter(out)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    painter.setOpacity(opacity)
    painter.drawPixmap(QRectF(out.rect()), heat, QRectF(heat.rect()))
    painter.end()
    return out


class PhotoDialog(QDialog):
    def __init__(self, path: str, parent: QWidget | None = None, heat: QPixmap | None = None,
                 heat_model: str = ""):
        super().__init__(parent)
        self.path = path
        self.original = QPixmap()
        self.plain = QPixmap()
        self.overlaid = QPixmap()
        self.setWindowTitle(path)
        self.label = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.label.setStyleSheet("background: #26292e; color: #ddd;")
        self.heat_box = QCheckBox("Heat map" + (f" ({heat_model})" if heat_model else ""))
        reader = QImageReader(path)
        reader.setAutoTransform(True)
        image = reader.read()
        screen = (parent.screen() if parent is not None else None) or QGuiApplication.primaryScreen()
        # Room for the toggle below the photo.
        avail = screen.availableGeometry().size() * 0.9 if screen is not None else None
        if avail is not None:
            avail.setHeight(max(100, avail.height() - 40))
        if image.isNull():
            self.pixmap = QPixmap()
            self.label.setText(f"Cannot display this file: {reader.errorString()}")
            self.heat_box.hide()
            self.resize(520, 200)
        else:
            self.original = QPixmap.fromImage(image)
            self.setWindowTitle(f"{path} — original {image.width()} × {image.height()} px")
            pix = self.original
            # Fitted to the screen both ways: a 224 px photo is enlarged to be looked at, a large one reduced.
            if avail is not None:
                pix = pix.scaled(avail, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            self.plain = pix
            if heat is not None and not heat.isNull():
                self.overlaid = with_heat(pix, heat)
                self.heat_box.setChecked(True)
                self.heat_box.setToolTip("Grad-CAM of the model selected in the detail pane: red = regions that "
                                         "raised p(mpox); it explains the model, not the lesion")
            else:
                self.heat_box.setEnabled(False)
                self.heat_box.setText("Heat map: none yet (select the photo; the detail pane computes it)")
            self.heat_box.toggled.connect(self._show)
            self._show()
            self.resize(pix.width(), pix.height() + 32)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.heat_box, 0, Qt.AlignmentFlag.AlignHCenter)

    @property
    def showing_heat(self) -> bool:
        return self.heat_box.isChecked() and not self.overlaid.isNull()

    def _show(self, *_args) -> None:
        self.pixmap = self.overlaid if self.showing_heat else self.plain
        self.label.setPixmap(self.pixmap)
