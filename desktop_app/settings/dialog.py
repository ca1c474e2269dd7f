"""Settings dialog: weights and models folders, default model, reviewer name, thresholds (read-only)."""

from __future__ import annotations

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget, QLabel, QHeaderView)

from desktop_app.settings.store import AppSettings


def _folder_row(edit: QLineEdit, title: str) -> QWidget:
    box = QWidget()
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    browse = QPushButton("Browse…")

    def pick() -> None:
        folder = QFileDialog.getExistingDirectory(box, title, edit.text())
        if folder:
            edit.setText(folder)

    browse.clicked.connect(pick)
    lay.addWidget(browse)
    return box


class SettingsDialog(QDialog):
    """Edits AppSettings; `bundles` is [(bundle dir, ModelCard)] for the default-model choice and thresholds."""

    def __init__(self, settings: AppSettings, bundles: list, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.weights = QLineEdit(settings.weights_dir)
        self.weights.setPlaceholderText("folder with the Keras ImageNet notop .h5 files (needed to retrain)")
        self.models = QLineEdit(settings.models_dir)
        self.models.setPlaceholderText("default: the models/ folder shipped with the app")
        self.default_model = QComboBox()
        self.default_model.addItem("(first available)", "")
        for path, card in bundles:
            self.default_model.addItem(f"{card.name} {card.version}", str(path))
        idx = self.default_model.findData(settings.default_model)
        self.default_model.setCurrentIndex(max(0, idx))
        self.reviewer = QLineEdit(settings.reviewer)
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(settings.batch_size)
        self.last_folder = QLineEdit(settings.last_folder)
        self.last_folder.setReadOnly(True)

        form = QFormLayout()
        form.addRow("Weights folder", _folder_row(self.weights, "ImageNet weights folder"))
        form.addRow("Models folder", _folder_row(self.models, "Model bundles folder"))
        form.addRow("Default model", self.default_model)
        form.addRow("Reviewer name", self.reviewer)
        form.addRow("Batch size", self.batch)
        form.addRow("Last folder", self.last_folder)

        self.thresholds = QTableWidget(len(bundles), 4)
        self.thresholds.setHorizontalHeaderLabels(["Model", "Version", "Threshold", "Uncertain band"])
        for i, (_path, card) in enumerate(bundles):
            band = "–".join(f"{b:.2f}" for b in card.uncertain_band)
            for j, text in enumerate([card.name, card.version, f"{card.threshold:.3f}", band]):
                self.thresholds.setItem(i, j, QTableWidgetItem(text))
        self.thresholds.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.thresholds.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.thresholds.setMaximumHeight(140)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Thresholds (read-only: they come from each model card; retrain to change them)"))
        layout.addWidget(self.thresholds)
        layout.addWidget(buttons)
        self.resize(620, 440)

    def accept(self) -> None:
        s = self.settings
        s.weights_dir = self.weights.text().strip()
        s.models_dir = self.models.text().strip()
        s.default_model = self.default_model.currentData() or ""
        s.reviewer = self.reviewer.text().strip()
        s.batch_size = self.batch.value()
        s.sync()
        super().accept()
