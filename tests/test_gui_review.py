"""Safe labelling: typing never labels, every label can be undone or cleared, the reviewer is asked once."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from tests.gui_fixtures import window_with_rows  # noqa: E402


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def focused_table(window):
    table = window.results.table
    table.setFocus()
    window.results.table.selectRow(0)
    return table


def test_typing_a_word_into_the_table_or_the_filter_labels_nothing(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    table = focused_table(window)
    clock = FakeClock()
    table.clock = clock
    current = window.results.current_source_row()

    qtbot.keyClicks(table, "other_NM")          # a burst: N and M follow other letters at once
    assert not any(r.review_label for r in window.model.rows)
    assert window.results.current_source_row() == current   # letters do not jump rows either

    window.results.search.setFocus()
    qtbot.keyClicks(window.results.search, "mnu")
    assert window.results.search.text() == "mnu"
    assert not any(r.review_label for r in window.model.rows)
    assert window.session.reviews() == {}
    window.results.search.clear()

    # A deliberate M (after a pause) labels the current row and says so.
    focused_table(window)
    clock.t += 1.0
    row = window.model.row_at(window.results.current_source_row())
    qtbot.keyClick(table, Qt.Key.Key_M)
    assert row.review_label == "mpox" and row.reviewer == "tester"
    assert window.session.reviews()[row.path]["label"] == "mpox"
    assert row.name in window.message.text() and "mpox" in window.message.text()
    review_col = window.model.column_of("review")
    assert window.model.index(window.model.row_of(row.path), review_col).data() == "mpox"
    # Review keys in a row (M then N at once) are deliberate and both act.
    nxt = window.model.row_at(window.results.current_source_row())
    qtbot.keyClick(table, Qt.Key.Key_N)
    assert nxt.review_label == "not_mpox"


def test_undo_returns_a_photo_to_unreviewed_and_redo_puts_the_label_back(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    table = focused_table(window)
    row = window.model.row_at(window.results.current_source_row())
    qtbot.keyClick(table, Qt.Key.Key_U)
    assert row.review_label == "unsure"

    window.act_undo.trigger()
    assert row.review_label == "" and row.reviewer == ""
    assert row.path not in window.session.reviews()
    assert window.results.current_source_row() == window.model.row_of(row.path)  # shows what was undone
    window.results.set_filter("unreviewed")
    assert window.results.proxy.rowCount() == window.model.rowCount()
    window.results.set_filter("all")

    window.act_redo.trigger()
    assert row.review_label == "unsure"
    assert window.session.reviews()[row.path]["label"] == "unsure"
    assert window.act_undo.shortcut().toString() == "Ctrl+Z"
    assert "Ctrl+Shift+Z" in [s.toString() for s in window.act_redo.shortcuts()]

    # Every change is in the audit trail: label, undo (cleared), redo.
    trail = [(a["details"]["old_label"], a["details"]["new_label"]) for a in window.session.audit("review")
             if a["details"]["path"] == row.path]
    assert trail == [(None, "unsure"), ("unsure", None), (None, "unsure")]


def test_delete_backspace_and_the_context_menu_clear_a_label(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    table = focused_table(window)
    source = window.results.current_source_row()
    row = window.model.row_at(source)
    window.review(source, "mpox")
    window.results.select_source_row(source)
    qtbot.keyClick(table, Qt.Key.Key_Delete)
    assert row.review_label == "" and row.path not in window.session.reviews()
    assert "unreviewed" in window.message.text()

    window.review(source, "not_mpox")
    window.results.select_source_row(source)
    qtbot.keyClick(table, Qt.Key.Key_Backspace)
    assert row.review_label == ""

    window.review(source, "mpox")
    menu = window.results.context_menu_for(window.results.proxy.mapFromSource(window.model.index(source, 1)))
    clear = next(a for a in menu.actions() if a.text().startswith("Clear label"))
    assert clear.isEnabled()
    clear.trigger()
    assert row.review_label == ""
    window.act_undo.trigger()
    assert row.review_label == "mpox"


def test_the_reviewer_is_asked_once_and_never_silently_the_os_user(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path, reviewer=None)
    assert window.settings.reviewer == ""
    table = focused_table(window)
    row = window.model.row_at(window.results.current_source_row())
    qtbot.keyClick(table, Qt.Key.Key_M)
    dialog = window.reviews.reviewer_dialog
    assert dialog is not None and dialog.isVisible()
    assert row.review_label == ""                     # nothing recorded without a name

    qtbot.keyClicks(dialog.name, "Dr A. Mensah")
    dialog.accept()
    assert row.review_label == "mpox" and row.reviewer == "Dr A. Mensah"
    assert window.settings.reviewer == "Dr A. Mensah"
    assert window.session.reviews()[row.path]["reviewer"] == "Dr A. Mensah"

    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_N)
    assert window.reviews.reviewer_dialog is dialog and not dialog.isVisible()   # not asked again
