"""About boxes: the app (with the research-use notice) and a model card rendered as a readable page."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QMessageBox, QTextBrowser, QToolButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from core.names import readable_key
from desktop_app.notices import APP_NAME, RESEARCH_NOTICE


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _with_ci(m: dict, key: str) -> str:
    value = m.get(key)
    if not isinstance(value, (int, float)):
        return ""
    ci = (m.get("ci95") or {}).get(key)
    interval = f" ({_num(ci[0])}–{_num(ci[1])})" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
    return f"{_num(value)}{interval}"


def metrics_sentence(m: dict) -> str:
    """'sensitivity 0.96 (0.90–1.00), specificity ... on 162 photos (73 mpox); missed 3 of 73 mpox, ...'."""
    parts = [f"{name} {_with_ci(m, key)}" for key, name in (("sensitivity", "sensitivity"),
                                                            ("specificity", "specificity"), ("roc_auc", "ROC AUC"))
             if _with_ci(m, key)]
    text = ", ".join(parts)
    n, n_mpox = m.get("n"), m.get("n_mpox")
    if n:
        text += f" on {n} photos" + (f" ({n_mpox} mpox)" if n_mpox is not None else "")
    conf = m.get("confusion") or {}
    if {"fn", "tp", "fp", "tn"} <= set(conf):
        text += (f"; missed {conf['fn']} of {conf['fn'] + conf['tp']} mpox, {conf['fp']} false alarms among "
                 f"{conf['fp'] + conf['tn']} not mpox")
    has_ci = any(isinstance((m.get("ci95") or {}).get(k), (list, tuple)) for k in ("sensitivity", "specificity"))
    return html.escape(text) + (" <i>(95% intervals in brackets)</i>" if has_ci else "")


def _trained_on(card) -> str:
    td = card.training_data or {}
    bits = []
    if td.get("n_images"):
        groups = f" of {td['n_groups']} patients / groups" if td.get("n_groups") else ""
        bits.append(f"{td['n_images']} photos{groups}")
    sources = sorted({k.split("/")[0] for split in (td.get("sources") or {}).values() for k in split})
    if sources:
        bits.append("from " + ", ".join(sources))
    counts = td.get("counts") or {}
    split_text = "; ".join(f"{readable_key(s).lower()} {c.get('mpox', 0)} mpox / {c.get('not_mpox', 0)} not mpox"
                           for s, c in counts.items() if isinstance(c, dict))
    if split_text:
        bits.append(f"({split_text})")
    fine = sorted({k for split in (td.get("fine_labels") or {}).values() for k in split})
    if fine:
        bits[-1] += ";"
        bits.append("conditions seen: " + ", ".join(fine))
    if td.get("note"):
        bits.append(str(td["note"]))
    return html.escape(" ".join(bits)) or "not recorded"


def summary_rows(card) -> list[tuple[str, str]]:
    """The card in words: what, trained on, decision rule and why, validation and test figures, limits."""
    from core.photos.preprocess import ARCHITECTURES

    arch = ARCHITECTURES.get(card.architecture.lower())
    arch_name = arch.display_name if arch else card.architecture
    rows = [("What it does", html.escape(f"Ranks skin-lesion photos by the probability of mpox for a person to "
                                         f"review ({arch_name}, {card.input_size} × {card.input_size} px). "
                                         f"{card.intended_use}")),
            ("Trained on", _trained_on(card))]
    why = f" — chosen as the {card.threshold_reason}" if card.threshold_reason else ""
    rows.append(("Decision threshold", html.escape(f"p(mpox) at or above {card.threshold:.3f} is called mpox{why}.")))
    flags = []
    if card.uncertain_band:
        lo, hi = card.uncertain_band[0], card.uncertain_band[-1]
        flags.append(f"p(mpox) between {lo:.2f} and {hi:.2f} is flagged uncertain")
    if card.ood_threshold is not None:
        flags.append(f"an out-of-scope score above {card.ood_threshold:.2f} (the photo looks unlike the training "
                     "photos) is flagged out of scope")
    if flags:
        rows.append(("Flags", html.escape("; ".join(flags) + ".")))
    metrics = card.metrics or {}
    for key, title in (("val", "On validation photos"),
                       ("out_of_fold", "Out of fold (train + val photos, each scored by heads that never saw it)"),
                       ("test", "On held-out test photos")):
        if isinstance(metrics.get(key), dict):
            rows.append((title, metrics_sentence(metrics[key])))
    transfer = metrics.get("transfer") or {}
    moves = [(k, v) for k, v in transfer.items() if isinstance(v, dict)]
    if moves:
        rows.append(("On another collection", "<br>".join(
            f"trained on {html.escape(k.split(' -> ')[0])}, tested on {html.escape(k.split(' -> ')[-1])}: "
            f"{metrics_sentence(v)}" for k, v in moves)))
    if card.limitations:
        rows.append(("Limits", "<ul style='margin:0'>" + "".join(f"<li>{html.escape(str(x))}</li>"
                                                                  for x in card.limitations) + "</ul>"))
    rows.append(("Identity", html.escape(f"{card.name} {card.version}, created {card.created or '—'}, weights "
                                         f"{card.model_sha256[:12] if card.model_sha256 else '—'}")
                 + (f", retrained from {html.escape(str(card.parent.get('name', '')))} "
                    f"{html.escape(str(card.parent.get('version', '')))}" if isinstance(card.parent, dict)
                    and card.parent else "")))
    return rows


def card_html(card) -> str:
    """The summary of a model card as HTML (the full card is the dialog's appendix)."""
    parts = [f"<h2>{html.escape(card.name)} {html.escape(card.version)}</h2>",
             f"<p style='color:#a0301c'><b>{html.escape(RESEARCH_NOTICE)}</b></p>",
             "<table cellspacing='0' cellpadding='4' border='0' width='100%'>"]
    parts += [f"<tr><td valign='top' width='24%'><b>{k}</b></td><td valign='top'>{v}</td></tr>"
              for k, v in summary_rows(card)]
    parts.append("</table>")
    return "\n".join(parts)


def card_dict(card) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(card) if is_dataclass(card) else dict(vars(card))


def _leaf_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (list, tuple)) for v in value):
            return "; ".join(", ".join(_leaf_text(x) for x in row) for row in value)
        return " – ".join(_leaf_text(v) for v in value) if len(value) == 2 and all(
            isinstance(v, float) for v in value) else ", ".join(_leaf_text(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def fill_tree(tree: QTreeWidget, data: Any, parent: QTreeWidgetItem | None = None) -> None:
    """The full card with readable keys, one branch per section (collapsed)."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        name = readable_key(key) if not isinstance(key, int) else f"{key + 1}"
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], (dict, str))
                                       and len(_leaf_text(value)) > 80):
            item = QTreeWidgetItem([name, ""])
            fill_tree(tree, value, item)
        else:
            item = QTreeWidgetItem([name, _leaf_text(value)])
            item.setToolTip(1, _leaf_text(value))
        if parent is None:
            tree.addTopLevelItem(item)
        else:
            parent.addChild(item)


class ModelCardDialog(QDialog):
    """A readable summary table in words, then the full card as a collapsible appendix."""

    def __init__(self, cards: list, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About this model")
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(False)
        self.browser.setHtml("<hr>".join(card_html(c) for c in cards) or "<p>No model selected.</p>")
        self.appendix_button = QToolButton()
        self.appendix_button.setText("Appendix: the full model card")
        self.appendix_button.setCheckable(True)
        self.appendix_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.appendix_button.setArrowType(Qt.ArrowType.RightArrow)
        self.appendix = QTreeWidget()
        self.appendix.setHeaderLabels(["Field", "Value"])
        self.appendix.setColumnWidth(0, 260)
        for card in cards:
            top = QTreeWidgetItem([f"{card.name} {card.version}", ""])
            fill_tree(self.appendix, card_dict(card), top)
            self.appendix.addTopLevelItem(top)
            top.setExpanded(True)
        self.appendix.hide()
        self.appendix_button.toggled.connect(self._toggle)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 3)
        layout.addWidget(self.appendix_button)
        layout.addWidget(self.appendix, 2)
        layout.addWidget(buttons)
        self.resize(760, 680)

    def _toggle(self, shown: bool) -> None:
        self.appendix.setVisible(shown)
        self.appendix_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)


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
