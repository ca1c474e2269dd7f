"""Help > Keyboard shortcuts: one list, shown as a dialog (and kept in docs/desktop.md)."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from desktop_app.results.keys import TYPING_BURST_S

SHORTCUTS: list[tuple[str, str]] = [
    ("Ctrl+O", "Open a folder of photos"),
    ("Ctrl+R", "Run the selected model(s) on the folder"),
    ("Esc", "Cancel the run (results so far are kept)"),
    ("Up / Down, Page Up / Page Down", "Move between photos in the table"),
    ("Home / End", "First / last photo"),
    ("M", "Label the current photo mpox, then move on (table focused)"),
    ("N", "Label not mpox, then move on"),
    ("U", "Label unsure, then move on"),
    ("Ctrl+J", "Review next: the unreviewed photo not called mpox with the highest score"),
    ("Ctrl+Shift+J", "Label next for adapting: the next photo of the folder's labelling sample"),
    ("Delete / Backspace", "Clear the current photo's label (back to unreviewed)"),
    ("Ctrl+Z", "Undo the last label or clear"),
    ("Ctrl+Shift+Z", "Redo"),
    ("Double-click (or the context menu)", "Open the photo large"),
    ("Ctrl+F", "Filter by file name"),
    ("Tab / Shift+Tab", "Move between the filter, the table and the detail pane"),
    ("Ctrl+Q", "Quit"),
]


def shortcuts_html() -> str:
    rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in SHORTCUTS)
    return ("<h3>Keyboard shortcuts</h3><table cellspacing='2' cellpadding='4'>" + rows + "</table>"
            f"<p>M, N and U act only while the results table has the focus (the blue frame) and nothing is "
            f"being typed: a review key pressed within {TYPING_BURST_S * 1000:.0f} ms after another letter is "
            "ignored, so typing a word into the table labels nothing. Every label, clear, undo and redo is "
            "written to the folder's audit trail.</p>")


class ShortcutsDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.browser = QTextBrowser()
        self.browser.setHtml(shortcuts_html())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        self.resize(560, 520)
