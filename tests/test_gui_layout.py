"""Layout and keyboard: needs-review column and risk order, 1024x700, Tab, Ctrl+F, End, photo large,
detail pane states, title, remembered folders and model, honest progress text."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from desktop_app.results.model import ROW_ROLE, SORT_ROLE  # noqa: E402
from desktop_app.results.progress import RunProgress  # noqa: E402
from tests.gui_fixtures import window_with_rows  # noqa: E402


def shown_rows(window):
    proxy = window.results.proxy
    return [proxy.index(r, 0).data(ROW_ROLE) for r in range(proxy.rowCount())]


def test_needs_review_column_gives_true_reasons_and_the_default_order_is_highest_risk_first(qtbot, tmp_path):
    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    window.model.set_cards([SimpleNamespace(model_sha256="sha-a", name="m", version="1.0.0", ood_threshold=0.7)])
    assert window.model.column_of("prediction") == window.model.column_of("file") + 1
    rows = shown_rows(window)
    reasons = [window.model.reason(r)[1] for r in rows]
    # The figure, the limit and the side it is on, from core.triage.reasons (the CSV and the PDF say the same).
    assert reasons[0] == "unlike the training photos, embedding distance 0.90 > limit 0.70"
    assert window.model.reason(rows[0])[0] == "out of scope 0.90 > 0.70"   # the cell, briefly
    assert reasons[1] == "flagged uncertain, p(mpox) 0.48"
    assert reasons[-1] == "unreadable: cannot identify image file"  # the reason, not the path; errors last
    assert window.model.reason(rows[-1])[1] == "unreadable: cannot identify image file"
    risks = [window.model.reason(r)[2] for r in rows]
    assert risks == sorted(risks, reverse=True)
    # Unflagged photos follow, highest p(mpox) first.
    assert [r.records["sha-a"].p_mpox for r in rows[2:-1]] == [0.92, 0.75, 0.30, 0.10]

    # The first click on p(mpox) sorts highest first, with the unreadable file last.
    p_col = window.model.column_of("p")
    window.results.table.sortByColumn(p_col, Qt.SortOrder.AscendingOrder)  # Qt flips to ascending, then
    window.results.table.horizontalHeader().sectionClicked.emit(p_col)     # emits the click
    proxy = window.results.proxy
    values = [proxy.index(r, p_col).data(SORT_ROLE) for r in range(proxy.rowCount())]
    assert values == sorted(values, reverse=True) and values[-1] == -1.0

    # A folder's shift alarm is said in the tooltip; it invents no reason for a photo it does not concern.
    window.model.set_shift({"detected": True, "message": "the photos differ from the training data"})
    calm = next(r for r in window.model.rows if r.records.get("sha-a") and r.records["sha-a"].p_mpox == 0.10)
    assert window.model.reason(calm)[0] == ""
    assert "Shift alarm for this folder: the photos differ" in window.model.reason(calm)[1]


def test_at_1024x700_the_call_review_needs_review_and_reviewer_columns_are_on_screen(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path, size=(1024, 700))
    window.resize(1024, 700)
    QApplication.processEvents()
    table = window.results.table
    header = table.horizontalHeader()
    width = table.viewport().width()
    for kind in ("file", "prediction", "review", "needs", "p", "reviewer"):
        col = window.model.column_of(kind)
        left = header.sectionViewportPosition(col)
        assert left >= 0 and left + header.sectionSize(col) <= width, (kind, left, header.sectionSize(col), width)
    assert header.sectionSize(window.model.column_of("file")) >= 60
    assert table.textElideMode() == Qt.TextElideMode.ElideMiddle
    index = window.model.index(0, window.model.column_of("file"))
    assert index.data(Qt.ItemDataRole.ToolTipRole).startswith(window.model.row_at(0).path)


def test_tab_leaves_the_table_ctrl_f_focuses_the_filter_and_end_moves_down_not_sideways(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path, size=(1024, 700))
    table = window.results.table
    assert not table.tabKeyNavigation()
    assert ":focus" in table.styleSheet()
    table.setFocus()
    table.selectRow(0)
    qtbot.keyClick(table, Qt.Key.Key_End)
    assert table.currentIndex().row() == window.results.proxy.rowCount() - 1
    assert table.horizontalScrollBar().value() == 0
    qtbot.keyClick(table, Qt.Key.Key_Home)
    assert table.currentIndex().row() == 0
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_Tab)
    assert not table.hasFocus()                      # Tab leaves the table
    window.results.find_shortcut.activated.emit()
    assert window.results.search.hasFocus() or QApplication.focusWidget() is window.results.search
    assert window.results.find_shortcut.key().toString() == "Ctrl+F"


def test_double_click_opens_the_photo_large_and_help_lists_the_shortcuts(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    rows = shown_rows(window)
    ok_index = window.results.proxy.index(0, 1)
    window.results.table.doubleClicked.emit(ok_index)
    dialog = window.results.photo_dialog
    assert dialog is not None and dialog.isVisible() and dialog.path == rows[0].path
    assert not dialog.pixmap.isNull()
    # A broken file opens with the reason, not an empty window.
    broken = window.results.open_photo(rows[-1].path)
    assert broken.pixmap.isNull() and "Cannot display" in broken.label.text()

    shortcuts = window.show_shortcuts()
    text = shortcuts.browser.toPlainText()
    for key in ("Ctrl+Z", "Ctrl+Shift+Z", "Delete", "Ctrl+F", "M", "Tab"):
        assert key in text
    assert window.act_shortcuts in window.menuBar().actions()[-1].menu().actions()


def test_detail_pane_shows_why_a_broken_file_has_no_photo_and_resets_on_reopen(qtbot, tmp_path):
    window, folder, _recs = window_with_rows(qtbot, tmp_path)
    window.model.set_cards([SimpleNamespace(model_sha256="sha-a", name="m", version="1.0.0", ood_threshold=0.7)])
    rows = shown_rows(window)
    window.results.select_source_row(window.model.row_of(rows[-1].path))
    assert window.detail.view.message.startswith("Cannot display this file: cannot identify image file")
    window.results.select_source_row(window.model.row_of(rows[0].path))   # the out-of-scope photo
    # The side panel lists the same reasons as the table, then each chosen model's score.
    assert "embedding distance 0.90 &gt; limit 0.70" in window.detail.scores.text()

    window.open_folder(folder)
    assert window.detail.title.text() == "No photo selected"
    assert "Loading" not in window.detail.view.message
    assert window.windowTitle() == f"{folder} — {window.windowTitle().split(' — ')[-1]}"
    assert window.windowTitle().count("Mpox") <= 1


def test_exports_start_in_the_last_export_folder_and_model_choice_is_remembered(qtbot, tmp_path):
    window, folder, _recs = window_with_rows(qtbot, tmp_path)
    # Never inside the scanned folder (the workspace refuses outputs there): beside it.
    assert window.settings.export_path(str(folder), "results.csv") == str(folder.parent / "results.csv")
    out = tmp_path / "exports"
    out.mkdir()
    assert window.export_csv(str(out / "r.csv"))
    assert window.settings.export_path(str(folder), "results.csv") == str(out / "results.csv")

    choices = [("a", ["/m/a"], []), ("b", ["/m/b"], []), ("Both", ["/m/a", "/m/b"], [])]
    window.settings.remember_model(["/m/a", "/m/b"])
    assert window.settings.remembered_choice(choices) == 2
    window.settings.remember_model(["/m/gone"])
    assert window.settings.remembered_choice(choices) == 0
    assert window.settings.last_folder == str(folder)


def test_both_says_which_version_of_each_architecture_it_uses():
    from desktop_app.mainwindow import model_choices

    card = lambda arch, v: SimpleNamespace(architecture=arch, name=f"mpox-{arch}", version=v, threshold=0.5)  # noqa
    choices = model_choices([("/m/mnv2-2", card("mobilenetv2", "1.0.1")), ("/m/x", card("xception", "1.1.0"))])
    assert choices[-1][0] == "Both · MobileNetV2 1.0.1 + Xception 1.1.0"


def test_progress_has_a_loading_phase_counts_photos_and_no_eta_before_the_first_batch():
    now = [0.0]
    progress = RunProgress(clock=lambda: now[0])
    message, eta = progress.start(2, ["Xception 1.1.0"])
    assert message.startswith("Loading Xception 1.1.0…") and eta == ""
    now[0] = 20.0                                   # the model took 20 s to load
    assert progress.update(0, 68) == ("Loading Xception 1.1.0…", "")
    message, eta = progress.update(16, 68)          # first batch: no rate yet
    assert message == "Scored 16 of 68 photos (2 models)" and eta == ""
    now[0] = 22.0
    message, eta = progress.update(32, 68)          # 16 photos in 2 s -> 36 photos left in 4.5 s
    assert message == "Scored 32 of 68 photos (2 models)" and eta == "ETA 0:04"


def test_model_card_dialog_is_a_summary_in_words_with_the_full_card_as_a_readable_appendix(qtbot):
    from pathlib import Path

    from core.models.bundle import read_card
    from desktop_app.about import ModelCardDialog

    shipped = Path(__file__).resolve().parent.parent / "models" / "mobilenetv2"
    if not (shipped / "model_card.json").is_file():
        pytest.skip("the shipped mobilenetv2 bundle is not in this checkout")
    card = read_card(shipped)
    dialog = ModelCardDialog([card])
    qtbot.addWidget(dialog)
    text = dialog.browser.toPlainText()
    for words in ("What it does", "Trained on", "Decision threshold", "Limits", "sensitivity", "missed",
                  "false alarms"):
        assert words in text, words
    # Figures on photos the model was not fitted on: validation photos (1.3.0) or out of fold (1.4.0 on).
    assert "On validation photos" in text or "Out of fold" in text
    for raw in ("tn:", "counts.val", "root ../shared"):
        assert raw not in text
    assert dialog.appendix.isHidden()
    dialog.appendix_button.setChecked(True)
    assert not dialog.appendix.isHidden()
    names = []

    def walk(item):
        names.append(item.text(0))
        for i in range(item.childCount()):
            walk(item.child(i))

    for i in range(dialog.appendix.topLevelItemCount()):
        walk(dialog.appendix.topLevelItem(i))
    # The names come from core.names, the one table the PDF uses too.
    assert "mpox photos missed" in names and "Data folder (as given to training)" in names
    assert "tn" not in names and "n_mpox" not in names
