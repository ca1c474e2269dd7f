"""The photo large: the full-size image (EXIF-rotated) scaled to fit the screen, in its own window."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImageReader, QPixmap
from PySide6.QtWidgets import QDialog, QLabel, QVBoxLayout, QWidget


class PhotoDialog(QDialog):
    def __init__(self, path: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        self.setWindowTitle(path)
        self.label = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.label.setStyleSheet("background: #26292e; color: #ddd;")
        reader = QImageReader(path)
        reader.setAutoTransform(True)
        image = reader.read()
        screen = (parent.screen() if parent is not None else None) or QGuiApplication.primaryScreen()
        avail = screen.availableGeometry().size() * 0.9 if screen is not None else None
        if image.isNull():
            self.pixmap = QPixmap()
            self.label.setText(f"Cannot display this file: {reader.errorString()}")
            self.resize(520, 200)
        else:
            pix = QPixmap.fromImage(image)
            if avail is not None and (pix.width() > avail.width() or pix.height() > avail.height()):
                pix = pix.scaled(avail, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
            self.pixmap = pix
            self.label.setPixmap(pix)
            self.resize(pix.size())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
