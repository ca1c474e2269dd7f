"""Cases in the app (desktop_app/results/cases.py): a Case column, a group-by-case view with a case row (call,
highest p(mpox), counts), keyboard review photo by photo in it, and File > Export FHIR bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from desktop_app.results.cases import CASE_ROLE  # noqa: E402
from tests.gui_fixtures import window_with_rows  # noqa: E402


def case_rows(window) -> dict[str, object]:
    tree = window.results.case_model
    return {tree.index(i, 0).data(CASE_ROLE).case_id: tree.index(i, 0) for i in range(tree.rowCount())}


def test_grouping_by_subfolder_shows_a_case_column_and_a_case_row_with_call_score_and_counts(qtbot, tmp_path):
    window, folder, recs = window_with_rows(qtbot, tmp_path)
    assert window.results.set_grouping("subfolder")
    model = window.model
    case_col = model.column_of("case")
    assert model.headerData(case_col, Qt.Orientation.Horizontal) == "Case"
    for r in range(model.rowCount()):
        row = model.row_at(r)
        assert model.index(r, case_col).data() == Path(row.path).parent.name
    assert window.results.stack.currentWidget() is window.results.case_tree
    rows = case_rows(window)
    assert set(rows) == {"mpox", "other"}
    tree = window.results.case_model
    # "mpox" holds p 0.10, 0.92, 0.48 (discovery order): called mpox, highest score 0.92, three photos.
    mpox = rows["mpox"]
    assert tree.index(mpox.row(), model.column_of("prediction")).data() == "mpox"
    assert tree.index(mpox.row(), model.column_of("p")).data() == "0.920"
    assert tree.rowCount(mpox) == 3
    assert "3 photos" in tree.index(mpox.row(), model.column_of("file")).data()
    other = rows["other"]
    assert tree.rowCount(other) == 4   # three photos and the broken file: every photo is listed
    # Case figures are core.store.cases', over the same records the CLI reads.
    from core.store.cases import workspace_view

    view = workspace_view(window.workspace, None, window.results.case_grouping())
    by = {c.case_id: c for c in view.cases}
    assert tree.index(other.row(), 0).data(CASE_ROLE).call == by["other"].call
    assert tree.index(other.row(), 0).data(CASE_ROLE).score == pytest.approx(by["other"].score)


def test_a_filter_shows_fewer_photos_under_a_case_but_never_changes_the_cases_call(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    window.results.set_grouping("subfolder")
    window.results.set_filter("not_mpox")
    window.results.case_model.rebuild()
    tree = window.results.case_model
    rows = case_rows(window)
    assert tree.rowCount(rows["mpox"]) == 2
    assert rows["mpox"].data(CASE_ROLE).call == "mpox"


def test_keyboard_review_in_the_case_view_labels_photo_by_photo_and_skips_case_rows(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    window.results.set_grouping("subfolder")
    tree_view = window.results.case_tree
    tree = window.results.case_model
    tree_view.setFocus()
    tree_view.clock = lambda: 0.0
    # On a case row, M labels nothing.
    tree_view.setCurrentIndex(tree.index(0, 1))
    qtbot.keyClick(tree_view, Qt.Key.Key_M)
    assert not any(r.review_label for r in window.model.rows)
    photos = tree.photo_rows()
    tree_view.setCurrentIndex(photos[0])
    first = window.model.row_at(tree.source_row(photos[0]))
    qtbot.keyClick(tree_view, Qt.Key.Key_M)
    assert first.review_label == "mpox"
    assert window.session.reviews()[first.path]["label"] == "mpox"
    # The view moved on to the next photo of the case order (over case rows), and N labels that one.
    second = window.model.row_at(window.results.current_source_row())
    assert second.path == window.model.row_at(tree.source_row(photos[1])).path
    qtbot.keyClick(tree_view, Qt.Key.Key_N)
    assert second.review_label == "not_mpox"
    # The case row counts its reviewed photos.
    tree.rebuild()
    case = Path(first.path).parent.name
    expected = 1 + (Path(second.path).parent.name == case)
    reviewed = tree.index(case_rows(window)[case].row(), window.model.column_of("review")).data()
    assert reviewed.startswith(f"{expected}/")


def test_a_file_name_pattern_groups_photos_and_no_cases_removes_the_column(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    assert window.results.set_grouping(r"regex:^(mpox|other)_0[01]")
    assert {"mpox", "other"} <= set(case_rows(window))
    assert not window.results.set_grouping("regex:(")        # a bad pattern changes nothing, says why
    assert "not a valid pattern" in window.results.count_label.text()
    assert window.results.set_grouping(None)
    with pytest.raises(KeyError):
        window.model.column_of("case")
    assert window.results.stack.currentWidget() is window.results.table


def test_export_fhir_from_the_app_writes_one_report_per_case_and_one_observation_per_scored_photo(qtbot, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    window.results.set_grouping("subfolder")
    window.act_export_all.setChecked(True)   # the synthetic results' model is not in the picker
    out = tmp_path / "out.json"
    assert window.export_fhir(str(out)) == str(out)
    bundle = Bundle.model_validate_json(out.read_text(encoding="utf-8"))
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds.count("DiagnosticReport") == 2
    assert kinds.count("Observation") == sum(1 for r in recs if r.ok)
    urls = {e.fullUrl for e in bundle.entry}
    text = json.loads(out.read_text())
    refs = [x["reference"] for e in text["entry"] for k in ("result",) for x in e["resource"].get(k, [])]
    assert refs and all(r in urls for r in refs)
    # The case CSV column and the CSV export follow the grouping too.
    csv_out = tmp_path / "out.csv"
    assert window.export_csv(str(csv_out)) == str(csv_out)
    assert "case_id" in csv_out.read_text(encoding="utf-8").splitlines()[0].split(",")


def test_the_pdf_exported_while_grouped_has_the_case_summary(qtbot, tmp_path):
    from pypdf import PdfReader

    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    window.results.set_grouping("subfolder")
    window.act_export_all.setChecked(True)
    out = tmp_path / "r.pdf"
    with qtbot.waitSignal(window.export_finished, timeout=60000):
        assert window.export_pdf(str(out))
    text = "\n".join(p.extract_text() for p in PdfReader(out).pages)
    assert "Cases (2)" in text and "Case mpox:" in text and "Case other:" in text


def test_up_and_down_in_the_case_view_move_from_photo_to_photo_over_case_rows(qtbot, tmp_path):
    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    window.results.set_grouping("subfolder")
    view, tree = window.results.case_tree, window.results.case_model
    view.setFocus()
    photos = [tree.source_row(i) for i in tree.photo_rows()]
    view.setCurrentIndex(tree.photo_rows()[0])
    seen = [window.results.current_source_row()]
    for _ in range(len(photos) - 1):
        qtbot.keyClick(view, Qt.Key.Key_Down)
        seen.append(window.results.current_source_row())
    assert seen == photos                     # every photo in case order, never a case row (None)
    for _ in range(len(photos) - 1):
        qtbot.keyClick(view, Qt.Key.Key_Up)
    assert window.results.current_source_row() == photos[0]
