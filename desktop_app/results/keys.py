"""Keyboard review in a results view (the table, the case tree): M / N / U label the current photo, Delete /
Backspace clear its review, and a review key inside a typing burst (within TYPING_BURST_S of a printable key
that was not itself a review) is ignored, so typing a word into a view labels nothing."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QAbstractItemView

REVIEW_KEYS = {Qt.Key.Key_M: "mpox", Qt.Key.Key_N: "not_mpox", Qt.Key.Key_U: "unsure"}
CLEAR_KEYS = {Qt.Key.Key_Delete, Qt.Key.Key_Backspace}
TYPING_BURST_S = 0.3


def review_key_press(view: QAbstractItemView, event: QKeyEvent, row: int | None, review, clear, ignored) -> bool:
    """The review keys of a results view (the table, the case tree): M / N / U emit `review(row, label)`, Delete /
    Backspace `clear(row)`, a review key inside a typing burst `ignored(text)`; True when the key was taken.
    `view` keeps `clock`, `_last_printable` and `_last_was_review`; `row` is the current photo's source row."""
    mods = event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
                                | Qt.KeyboardModifier.MetaModifier)
    key = Qt.Key(event.key())
    text = event.text()
    printable = bool(text) and text.isprintable() and not mods
    if printable:
        now = view.clock()
        in_burst = now - view._last_printable < TYPING_BURST_S and not view._last_was_review
        view._last_printable = now
        label = REVIEW_KEYS.get(key)
        editing = view.state() == QAbstractItemView.State.EditingState
        if label is not None and not in_burst and not editing:
            view._last_was_review = True
            if row is not None:
                review.emit(row, label)
        else:
            view._last_was_review = False
            if label is not None:
                ignored.emit(text)
        event.accept()   # letters never jump rows (no keyboard search) and never label by accident
        return True
    if key in CLEAR_KEYS and not mods:
        if row is not None:
            clear.emit(row)
        event.accept()
        return True
    return False
