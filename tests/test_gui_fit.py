"""What a first-time user sees at 1024x700 and 1600x1000 (issue 24): a window that fits the screen, names and
calls that read whole, status messages never cut silently, right plurals, an empty filter that says why, the
photo large with its heat map, and File > Print."""

from __future__ import annotations

import re
import unicodedata
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSize, Qt  # noqa: E402
from PySide6.QtGui import QFontMetrics  # noqa: E402
from PySide6.QtWidgets import QApplication, QStyleOptionViewItem  # noqa: E402

from desktop_app.elide import elide_file_name, plural  # noqa: E402
from desktop_app.mainwindow import MainWindow, initial_size, run_message  # noqa: E402
from tests.gui_fixtures import settings_at, window_with_rows  # noqa: E402


def test_the_first_window_fits_a_1024x700_screen_and_keeps_its_size_on_a_large_one(qtbot, tmp_path):
    """Issue 24: the first window was 1320x820 on a 1024x700 screen; the status bar and detail pane were cut."""
    small = initial_size(QSize(1024, 700))
    assert small.width() <= 1024 - 16 and small.height() <= 700 - 40
    assert initial_size(QSize(1920, 1080)) == QSize(1320, 820)
    window = MainWindow(settings_at(tmp_path), models_dir=tmp_path / "none", sessions_dir=tmp_path / "s")
    qtbot.addWidget(window)
    avail = window.screen().availableGeometry()
    assert window.width() <= avail.width() and window.height() <= avail.height()
    # A size saved on a larger screen is shrunk to this one when restored.
    window.resize(avail.width() + 600, avail.height() + 400)
    window.fit_on_screen()
    assert window.width() <= avail.width() and window.height() <= avail.height()


def test_file_names_elide_in_the_middle_keeping_the_end_that_tells_photos_apart(qtbot, tmp_path):
    """Issue 24: under Both, names read "iconlab_..._129.jpg", hiding the part that tells photos apart."""
    metrics = QFontMetrics(QApplication.font())
    names = ["iconlab_clinic_visit_2026_12_patient_0127.jpg", "iconlab_clinic_visit_2026_12_patient_0129.jpg"]
    width = metrics.horizontalAdvance("iconla…patient_0129.jpg")
    shown = [elide_file_name(n, metrics, width) for n in names]
    assert shown[0] != shown[1]
    assert all(s.startswith("iconla…") and s.endswith(n[-16:]) for s, n in zip(shown, names))
    assert all(metrics.horizontalAdvance(s) <= width for s in shown)
    assert elide_file_name("short.jpg", metrics, width) == "short.jpg"

    window, _folder, recs = window_with_rows(qtbot, tmp_path, size=(1024, 700))
    col = window.model.column_of("file")
    proxy = window.results.proxy
    index = proxy.index(0, col)
    option = QStyleOptionViewItem()
    option.initFrom(window.results.table)
    option.rect = window.results.table.visualRect(index)
    full = index.data(Qt.ItemDataRole.DisplayRole)
    option.rect.setWidth(option.fontMetrics.horizontalAdvance(full) - 2)
    window.results.table.itemDelegateForColumn(col).initStyleOption(option, index)
    assert option.text != full and "…" in option.text and option.text.endswith(full[-6:])


def test_the_call_column_fits_out_of_scope_at_both_sizes(qtbot, tmp_path):
    """Issue 24: the Call column read "out...ope" even at 1600x1000."""
    for size in ((1024, 700), (1600, 1000)):
        window, _folder, _recs = window_with_rows(qtbot, tmp_path / f"{size[0]}", size=size)
        QApplication.processEvents()
        table = window.results.table
        need = table.fontMetrics().horizontalAdvance("out of scope")
        assert table.horizontalHeader().sectionSize(window.model.column_of("prediction")) >= need + 12


def test_a_status_message_too_long_for_the_bar_ends_in_an_ellipsis_with_the_whole_text_in_its_tooltip(qtbot,
                                                                                                     tmp_path):
    """Issue 24: status messages were cut mid-word ("labelled not mpox b")."""
    window, _folder, _recs = window_with_rows(qtbot, tmp_path, size=(1024, 700))
    long = ("iconlab_clinic_visit_2026_12_patient_0129.jpg labelled not mpox by Dr A. Okafor — Ctrl+Z undoes; "
            "12 photos that need review are not reviewed yet")
    window._set_message(long)
    QApplication.processEvents()
    label = window.message
    assert label.text() == long
    shown = label.shown_text()
    assert shown == long or (shown.endswith("…") and long in label.toolTip())
    assert label.fontMetrics().horizontalAdvance(shown) <= label.width()
    window._set_message("Done")
    assert window.message.shown_text() == "Done" and window.message.toolTip() == ""


def test_counts_in_status_messages_use_the_right_plural():
    """Issue 24: "Done — 1 photos"."""
    assert plural(1, "photo") == "1 photo" and plural(2, "photo") == "2 photos" and plural(0, "photo") == "0 photos"
    done = run_message({"kept": 1, "errors": 0, "elapsed_s": 0.4, "total": 1})
    assert done.startswith("Done — 1 photo scored in 0.4 s")
    cancelled = run_message({"cancelled": True, "kept": 0, "complete": 0, "total": 1})
    assert "0 of 1 photo scored" in cancelled


def test_a_folder_whose_photos_are_all_scored_says_nothing_left_to_score_not_press_run(qtbot, tmp_path, monkeypatch):
    """Issue 24: "60 restored — press Run" when nothing was left to score."""
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    monkeypatch.setattr(window, "selected_cards", lambda: [SimpleNamespace(key="sha-a")])
    monkeypatch.setattr(window.workspace, "to_score", lambda card: SimpleNamespace(score=[]))
    assert window._next_step() == " — nothing left to score"
    monkeypatch.setattr(window.workspace, "to_score", lambda card: SimpleNamespace(score=["a.jpg"]))
    assert window._next_step() == " — 1 photo to score: press Run"


def test_an_empty_filtered_view_says_why_over_the_table(qtbot, tmp_path):
    """Issue 24: the errors filter showed an empty table with no words."""
    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    window.model.clear()
    window.model.add_records([r for r in recs if r.ok])    # no unreadable file
    panel = window.results
    panel.set_filter("errors")
    QApplication.processEvents()
    assert panel.proxy.rowCount() == 0
    assert panel.hint.isVisible()
    assert "No errors: every photo in this folder could be read." in panel.hint.text()
    assert "Show: All" in panel.hint.text()
    panel.set_filter("all")
    panel.search.setText("zzz-no-such-name")
    QApplication.processEvents()
    assert panel.hint.isVisible() and "No photo name contains" in panel.hint.text()
    panel.search.setText("")
    QApplication.processEvents()
    assert not panel.hint.isVisible()


def test_the_photo_large_shows_the_heat_map_with_a_toggle(qtbot, tmp_path):
    """Issue 24: the enlarged photo had no heat map."""
    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    path = next(r.path for r in recs if r.ok)
    window.results.select_source_row(window.model.row_of(path))
    heat = np.zeros((8, 8, 3), np.uint8)
    heat[..., 0] = 255
    window.detail.set_heatmap(path, "sha-a", heat)
    dialog = window.results.open_photo(path)
    qtbot.addWidget(dialog)
    assert dialog.heat_box.isEnabled() and dialog.heat_box.isChecked() and dialog.showing_heat
    with_heat = dialog.pixmap.toImage()
    dialog.heat_box.setChecked(False)
    assert dialog.pixmap.toImage() != with_heat and dialog.pixmap.toImage() == dialog.plain.toImage()
    other = next(r.path for r in recs if r.ok and r.path != path)
    plain = window.results.open_photo(other)   # no heat map computed for it: the toggle says so
    qtbot.addWidget(plain)
    assert not plain.heat_box.isEnabled() and "none yet" in plain.heat_box.text()


def test_file_print_prints_the_reports_counts_photos_and_sign_off(qtbot, tmp_path):
    """Issue 24: there was no Print."""
    from PySide6.QtPrintSupport import QPrinter
    from pypdf import PdfReader

    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    window._update_actions()   # the fixture's results were added without a run
    assert window.act_print.isEnabled() and window.act_print in window.menuBar().actions()[0].menu().actions()
    printer = QPrinter()
    printer.setOutputFormat(QPrinter.OutputFormat.PdfFormat)
    out = tmp_path / "printed.pdf"
    printer.setOutputFileName(str(out))
    with qtbot.waitSignal(window.print_finished, timeout=30_000) as done:
        assert window.print_report(printer)
    assert done.args == [True]
    text = " ".join(page.extract_text() for page in PdfReader(str(out)).pages)
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))   # Qt's PDF writes ligatures ("ﬀ")
    assert "Mpox triage report" in text and "Photos that need review" in text and "Sign-off" in text
    assert "broken.jpg" in text and "unreadable" in text
    assert "Not a medical device" in text
