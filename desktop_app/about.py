"""About boxes: the app (with the research-use notice) and a model card rendered as a readable page."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMessageBox, QTextBrowser, QVBoxLayout, QWidget

from desktop_app.notices import APP_NAME, RESEARCH_NOTICE


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(str(k))}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return html.escape(str(value))


def card_html(card) -> str:
    """A model card as HTML: identity, decision rule, metrics, training data, intended use, limitations."""
    rows = [
        ("Name", card.name), ("Version", card.version), ("Architecture", card.architecture),
        ("Input size", f"{card.input_size} × {card.input_size}"),
        ("Threshold", f"{card.threshold:.3f}" + (f" ({card.threshold_reason})" if card.threshold_reason else "")),
        ("Uncertain band", " – ".join(f"{b:.2f}" for b in card.uncertain_band)),
        ("Temperature", f"{card.temperature:.3f}"),
        ("Out-of-scope threshold", "" if card.ood_threshold is None else f"{card.ood_threshold:.2f}"),
        ("Weights SHA-256", card.model_sha256), ("Created", card.created),
        ("Parent", _fmt(card.parent) if card.parent else "—"), ("App version", card.app_version),
    ]
    parts = [f"<h2>{html.escape(card.name)} {html.escape(card.version)}</h2>",
             f"<p style='color:#a0301c'><b>{html.escape(RESEARCH_NOTICE)}</b></p>",
             "<table cellspacing='2' cellpadding='3'>"]
    parts += [f"<tr><td><b>{k}</b></td><td>{_fmt(v) if not isinstance(v, str) else html.escape(v)}</td></tr>"
              for k, v in rows]
    parts.append("</table>")
    if card.metrics:
        parts.append("<h3>Metrics</h3><table cellspacing='2' cellpadding='3'>")
        for k, v in card.metrics.items():
            parts.append(f"<tr><td><b>{html.escape(str(k))}</b></td><td>{_fmt(v)}</td></tr>")
        parts.append("</table>")
    if card.training_data:
        parts.append("<h3>Training data</h3><table cellspacing='2' cellpadding='3'>")
        for k, v in card.training_data.items():
            parts.append(f"<tr><td><b>{html.escape(str(k))}</b></td><td>{_fmt(v)}</td></tr>")
        parts.append("</table>")
    parts.append(f"<h3>Intended use</h3><p>{html.escape(card.intended_use)}</p>")
    if card.limitations:
        parts.append("<h3>Limitations</h3><ul>" + "".join(f"<li>{html.escape(str(x))}</li>"
                                                          for x in card.limitations) + "</ul>")
    parts.append(f"<p><small>Preprocessing: {html.escape(card.preprocessing or '—')}</small></p>")
    return "\n".join(parts)


class ModelCardDialog(QDialog):
    def __init__(self, cards: list, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About this model")
        self.browser = QTextBrowser()
        self.browser.setHtml("<hr>".join(card_html(c) for c in cards) or "<p>No model selected.</p>")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        self.resize(640, 620)


def about_text() -> str:
    from core import __version__

    return (f"<h3>{APP_NAME} {__version__}</h3>"
            "<p>Offline triage of skin-lesion photos: ranks photos by the model's probability of mpox "
            "so that people review the most likely ones first.</p>"
            f"<p style='color:#a0301c'><b>{html.escape(RESEARCH_NOTICE)}</b></p>"
            "<p>Every result records the model name, version and weights hash, the threshold and the "
            "photo's hash. Nothing leaves this computer.</p>")


def show_about(parent: QWidget) -> QMessageBox:
    box = QMessageBox(parent)
    box.setWindowTitle(f"About {APP_NAME}")
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(about_text())
    box.setIcon(QMessageBox.Icon.Information)
    box.open()
    return box
