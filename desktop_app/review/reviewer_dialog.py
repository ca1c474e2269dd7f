"""Asks the reviewer's name once, on the first label, so reviews are never silently the OS login."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QLineEdit, QVBoxLayout, QWidget


class ReviewerDialog(QDialog):
    name_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Who is reviewing?")
        text = QLabel("Your name or initials are stored with every label you give, in this folder's session "
                      "and its audit trail. You are asked once; change it in Tools > Settings.")
        text.setWordWrap(True)
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. Dr A. Mensah")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(self.name)
        layout.addWidget(self.buttons)
        self.name.textChanged.connect(self._update)
        self._update()

    def _update(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self.name.text().strip()))

    def accept(self) -> None:
        name = self.name.text().strip()
        if not name:
            return
        super().accept()
        self.name_chosen.emit(name)
