"""The photo large: the original file (EXIF-rotated) fitted to the screen, up or down, in its own window."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImageReader, QPixmap
from PySide6.QtWidgets import QDialog, QLabel, QVBoxLayout, QWidget


class PhotoDialog(QDialog):
    def __init__(self, path: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        self.original = QPixmap()
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
            self.original = QPixmap.fromImage(image)
            self.setWindowTitle(f"{path} — original {image.width()} × {image.height()} px")
            pix = self.original
            # Fitted to the screen both ways: a 224 px photo is enlarged to be looked at, a large one reduced.
            if avail is not None:
                pix = pix.scaled(avail, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            self.pixmap = pix
            self.label.setPixmap(pix)
            self.resize(pix.size())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
