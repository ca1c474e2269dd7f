"""Undoable review labels: every label, clear, undo and redo goes to the session's audit trail.

The window owns one ReviewController; the table's review / clear requests go through it. A label
is a QUndoCommand on a QUndoStack (Ctrl+Z / Ctrl+Shift+Z), so a label set by mistake can be taken
back, down to "unreviewed". The reviewer's name is asked once (ReviewerDialog) and kept in settings.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from desktop_app.results.model import REVIEW_TEXT


def _utc_now() -> str:
    from core.records import utc_now

    return utc_now()


class ReviewCommand(QUndoCommand):
    """Set (label) or clear ("" ) one photo's review; undo puts back what it had before."""

    def __init__(self, ctl: "ReviewController", path: str, new: str, old: str):
        name = ctl.name_of(path)
        text = f"label {name} {REVIEW_TEXT.get(new, new)}" if new else f"clear the label of {name}"
        super().__init__(text)
        self.ctl, self.path, self.new, self.old = ctl, path, new, old

    def redo(self) -> None:
        self.ctl.apply(self.path, self.new)

    def undo(self) -> None:
        self.ctl.apply(self.path, self.old, undoing=True)


class ReviewController(QObject):
    """Applies labels to the table model and the workspace. `window` provides model, results, settings,
    workspace (may be None) and detail; nothing else is assumed."""

    message = Signal(str, bool)     # text for the status bar, error?
    applied = Signal(str, str)      # path, label ("" = cleared): after the table and session agree

    def __init__(self, window, parent: QObject | None = None):
        super().__init__(parent or window)
        self.window = window
        self.stack = QUndoStack(self)
        self.reviewer_dialog = None
        self._pending: Callable[[], None] | None = None

    # --- requests from the table ---------------------------------------------------------------
    def label(self, source_row: int, label: str) -> None:
        """Label a photo (undoable), then move to the next row so the reviewer keeps going."""
        if not self.ensure_reviewer(lambda: self.label(source_row, label)):
            return
        model, results = self.window.model, self.window.results
        row = model.row_at(source_row)
        next_row = results.next_source_row(source_row)
        if row.errors() and not any(r.ok for r in row.records.values()):
            # Nothing was shown to judge: a label here would be a guess filed as a review.
            self.message.emit(f"{row.name} could not be read, so it cannot be labelled; fix or replace the file "
                              "and Run again", True)
            return
        if row.review_label != label:
            self.stack.push(ReviewCommand(self, row.path, label, row.review_label))
        else:
            self.message.emit(f"{row.name} is already labelled {REVIEW_TEXT.get(label, label)}", False)
        if next_row is not None:
            results.select_source_row(next_row)

    def clear(self, source_row: int) -> None:
        """Return a photo to unreviewed (undoable)."""
        row = self.window.model.row_at(source_row)
        if not row.review_label:
            self.message.emit(f"{row.name} has no label to clear", False)
            return
        if not self.ensure_reviewer(lambda: self.clear(source_row)):
            return
        self.stack.push(ReviewCommand(self, row.path, "", row.review_label))

    def reset(self) -> None:
        """A new folder: the old folder's labels are no longer on screen to undo."""
        self.stack.clear()

    # --- the one place a label changes ---------------------------------------------------------
    def name_of(self, path: str) -> str:
        row = self.window.model.row_of(path)
        return self.window.model.row_at(row).name if row is not None else path

    def apply(self, path: str, label: str, undoing: bool = False) -> None:
        model = self.window.model
        source_row = model.row_of(path)
        if source_row is None:
            return
        reviewer = self.window.settings.reviewer
        # Through the workspace (core.store.workspace), the one place that defines a review for the CLI and the app.
        workspace = getattr(self.window, "workspace", None)
        saved = True
        if workspace is not None:
            try:
                if label:
                    workspace.review(path, label, reviewer or None)
                else:
                    workspace.clear_review(path, reviewer or None)
            except Exception as exc:  # noqa: BLE001 - keep the label on screen, but say it was not saved
                saved = False
                self.message.emit(f"Review not saved to the session: {exc}", True)
        if label:
            model.set_review(source_row, label, reviewer, _utc_now())
        else:
            model.set_review(source_row, "", "", "")
        detail = getattr(self.window, "detail", None)
        if detail is not None and detail.row is model.row_at(source_row):
            detail.update_scores()
        if undoing:
            self.window.results.select_source_row(source_row)
        if saved:
            name = model.row_at(source_row).name
            what = f"labelled {REVIEW_TEXT.get(label, label)} by {reviewer}" if label else "back to unreviewed"
            verb = "Undone: " if undoing else ""
            self.message.emit(f"{verb}{name} {what} — Ctrl+Z undoes, Delete clears", False)
        self.applied.emit(path, label)

    # --- reviewer name -------------------------------------------------------------------------
    def ensure_reviewer(self, then: Callable[[], None]) -> bool:
        """True when a reviewer name is set; otherwise ask once (non-blocking) and run `then` after OK."""
        if self.window.settings.reviewer:
            return True
        from desktop_app.review.reviewer_dialog import ReviewerDialog

        self._pending = then
        if self.reviewer_dialog is None or not self.reviewer_dialog.isVisible():
            self.reviewer_dialog = ReviewerDialog(self.window)
            self.reviewer_dialog.name_chosen.connect(self._on_reviewer)
            self.reviewer_dialog.open()
        return False

    def _on_reviewer(self, name: str) -> None:
        self.window.settings.reviewer = name
        pending, self._pending = self._pending, None
        if pending is not None:
            pending()
