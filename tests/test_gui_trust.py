"""A table a clinician can trust (issue 19): the table follows the model picker, says true reasons once,
keeps the call and the review in view with three models, remembers the shift alarm, counts in photos, and
the smaller things (photo large, empty table, Tab, shortcuts, window state, adapting as its own action).

Three model bundles are written as cards only (no TensorFlow): the window reads cards to list models, and
model loading is switched off, so these tests never start a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from core.models.bundle import ModelCard, write_card  # noqa: E402
from core.records import ResultRecord  # noqa: E402
from desktop_app.mainwindow import MainWindow, run_message  # noqa: E402
from desktop_app.settings.store import AppSettings  # noqa: E402
from tests.helpers import make_image_folder, make_photo  # noqa: E402


def card_bundle(folder: Path, **fields) -> ModelCard:
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(folder.name.encode() * 64)   # a distinct "model" per bundle
    card = ModelCard(files={"model.keras": ""}, input_size=224, uncertain_band=[0.28, 0.74], **fields)
    return write_card(folder, card)


@pytest.fixture
def models(tmp_path) -> dict[str, ModelCard]:
    root = tmp_path / "models"
    m = card_bundle(root / "mobilenetv2", name="mobilenetv2", version="9.0.0", architecture="mobilenetv2",
                    threshold=0.5, ood_threshold=1.44)
    x = card_bundle(root / "xception", name="xception", version="9.0.0", architecture="xception", threshold=0.5,
                    ood_threshold=1.5)
    refs = [{"name": c.name, "version": c.version, "sha256": c.model_sha256, "architecture": c.architecture,
             "input_size": c.input_size} for c in (m, x)]
    c = card_bundle(root / "combined", name="combined", version="9.0.0", architecture="combined", threshold=0.5,
                    ood_threshold=2.0, extra={"components": refs})
    return {"combined": c, "mobilenetv2": m, "xception": x}


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    from desktop_app.workers.model_worker import ModelHandle

    monkeypatch.setattr(ModelHandle, "load", lambda self: None)


def settings_at(tmp_path: Path) -> AppSettings:
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    settings.reviewer = "tester"
    return settings


def new_window(qtbot, tmp_path, size=(1320, 820)) -> MainWindow:
    window = MainWindow(settings_at(tmp_path), models_dir=tmp_path / "models", sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    return window


def rec(path, card: ModelCard, p: float | None, flag: str = "", prediction: str | None = None,
        error: str = "", scope: float | None = 0.1) -> ResultRecord:
    common = dict(path=str(path), model=card.name, model_version=card.version, model_sha256=card.model_sha256,
                  scoring_digest=card.key)
    if error:
        return ResultRecord(status="error", error=error, **common)
    return ResultRecord(status="ok", p_mpox=p, flag=flag, threshold=0.5, ood_score=1.0, scope_score=scope,
                        prediction=prediction or ("mpox" if p >= 0.5 else "not_mpox"), **common)


def add(window: MainWindow, records: list[ResultRecord]) -> None:
    """Results as a run would leave them: in the workspace (and its session), then in the table."""
    for r in records:
        window.workspace.results.setdefault(r.model_key, {})[r.path] = r
    window.model.add_records(records)


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "photos", n_per_class=2)


def scored_window(qtbot, tmp_path, models, folder, size=(1320, 820)):
    """'Both' chosen; the first photo: combined mpox 0.79, MobileNetV2 mpox 0.81, Xception not mpox 0.45."""
    window = new_window(qtbot, tmp_path, size)
    window.select_model("Both")
    assert window.open_folder(folder)
    first, *rest = sorted(window.paths)
    c, m, x = models["combined"], models["mobilenetv2"], models["xception"]
    records = [rec(first, c, 0.787), rec(first, m, 0.81), rec(first, x, 0.45, "uncertain")]
    for k, path in enumerate(rest):
        p = 0.1 + 0.05 * k
        records += [rec(path, c, p), rec(path, m, p), rec(path, x, p)]
    add(window, records)
    return window, first


def row_of(window, path):
    return window.model.row_at(window.model.row_of(path))


def cell(window, path, kind):
    return window.model.index(window.model.row_of(path), window.model.column_of(kind)).data()


# --- 4. the table follows the model picker ---------------------------------------------------------------

def test_both_shows_the_deciding_models_score_and_the_others_in_one_compact_column(qtbot, tmp_path, models, folder):
    window, first = scored_window(qtbot, tmp_path, models, folder)
    kinds = [window.model.column_kind(c)[0] for c in range(window.model.columnCount())]
    assert kinds.count("p") == 1 and kinds.count("scores") == 1
    head = window.model.headerData(kinds.index("p"), Qt.Orientation.Horizontal)
    assert head == "p(mpox)\ncombined"
    assert window.model.headerData(kinds.index("scores"), Qt.Orientation.Horizontal) == "MobileNetV2 ·\nXception"
    assert cell(window, first, "p") == "0.787" and cell(window, first, "scores") == "0.810 · 0.450"
    assert cell(window, first, "prediction") == "mpox"   # combined decides
    # The cell says it briefly; the tooltip, the side panel, the CSV and the PDF say it in full.
    assert cell(window, first, "needs") == "disagree: Xception not mpox"
    full = window.model.reason(row_of(window, first))[1]
    assert full == "models disagree: combined mpox 0.79, Xception not mpox 0.45"


def test_switching_to_one_model_shows_only_its_results_and_reasons(qtbot, tmp_path, models, folder):
    window, first = scored_window(qtbot, tmp_path, models, folder)
    window.select_model("Xception")
    kinds = [window.model.column_kind(c)[0] for c in range(window.model.columnCount())]
    assert kinds.count("p") == 1 and "scores" not in kinds
    assert window.model.headerData(kinds.index("p"), Qt.Orientation.Horizontal) == "p(mpox)"
    assert cell(window, first, "p") == "0.450" and cell(window, first, "prediction") == "not mpox"
    assert window.model.reason(row_of(window, first))[1] == "uncertain, p(mpox) 0.45 inside 0.28–0.74"  # no disagree
    assert cell(window, first, "needs") == "uncertain 0.45"
    window.select_model("Both")
    assert cell(window, first, "prediction") == "mpox" and cell(window, first, "scores") == "0.810 · 0.450"


def test_the_columns_follow_the_picker_before_any_run_and_keep_one_order(qtbot, tmp_path, models, folder):
    window = new_window(qtbot, tmp_path)
    window.select_model("MobileNetV2")
    assert window.open_folder(folder)
    assert [window.model.column_kind(c)[0] for c in range(window.model.columnCount())].count("p") == 1
    window.select_model("Both")   # no run yet: the three models' columns at once, none unnamed
    assert window.model.models == [(models[n].key, name) for n, name in
                                   (("combined", "combined"), ("mobilenetv2", "MobileNetV2"), ("xception", "Xception"))]
    # Records arriving in another order do not reorder the columns.
    path = window.paths[0]
    add(window, [rec(path, models["xception"], 0.2), rec(path, models["mobilenetv2"], 0.3)])
    assert window.model.headerData(window.model.column_of("scores"), Qt.Orientation.Horizontal) == \
        "MobileNetV2 ·\nXception"


def test_the_deciding_models_call_is_the_same_after_a_restart(qtbot, tmp_path, models, folder):
    window, first = scored_window(qtbot, tmp_path, models, folder)
    assert cell(window, first, "prediction") == "mpox"
    records = [r for by in window.workspace.results.values() for r in by.values()]
    window.close()
    again = new_window(qtbot, tmp_path)
    assert again.open_folder(folder)
    add(again, records)   # as restored from the session
    assert cell(again, first, "prediction") == "mpox"
    assert again.model.reason(row_of(again, first))[1] == \
        "models disagree: combined mpox 0.79, Xception not mpox 0.45"


def test_a_photo_not_yet_scored_by_the_deciding_model_has_no_call(qtbot, tmp_path, models, folder):
    window = new_window(qtbot, tmp_path)
    window.select_model("Both")
    assert window.open_folder(folder)
    path = window.paths[0]
    add(window, [rec(path, models["mobilenetv2"], 0.9)])
    assert cell(window, path, "prediction") == ""
    assert "not scored yet by combined, Xception" in window.model.reason(row_of(window, path))[1]


def test_an_out_of_scope_call_reads_out_of_scope_and_is_not_an_mpox(qtbot, tmp_path, models, folder):
    window = new_window(qtbot, tmp_path)
    window.select_model("MobileNetV2")
    assert window.open_folder(folder)
    path = window.paths[0]
    add(window, [rec(path, models["mobilenetv2"], 0.93, "out_of_scope", prediction="out_of_scope", scope=1.0)])
    assert cell(window, path, "prediction") == "out of scope"
    assert cell(window, path, "needs").startswith("not a skin photo 1.00 > ")
    assert window.model.reason(row_of(window, path))[1].startswith("Not-a-skin-photo score 1.00 > limit ")
    window.results.set_filter("mpox")
    assert window.results.proxy.rowCount() == 0
    window.results.set_filter("flagged")
    assert window.results.proxy.rowCount() == 1


def test_the_side_panel_lists_the_reasons_the_table_gives(qtbot, tmp_path, models, folder):
    window, first = scored_window(qtbot, tmp_path, models, folder)
    window.results.select_source_row(window.model.row_of(first))
    text = window.detail.scores.text()
    assert "models disagree: combined mpox 0.79, Xception not mpox 0.45" in text
    assert text.count("p(mpox) = ") == 3


# --- 3. three models at 1024 x 700 and 1600 x 1000 -------------------------------------------------------

@pytest.mark.parametrize("size", [(1024, 700), (1600, 1000)])
def test_with_both_the_call_and_the_review_stay_on_screen_and_names_keep_their_end(qtbot, tmp_path, models, folder,
                                                                                   size):
    window, _first = scored_window(qtbot, tmp_path, models, folder, size)
    QApplication.processEvents()
    table = window.results.table
    header = table.horizontalHeader()
    width = table.viewport().width()
    for kind in ("file", "prediction", "review", "needs", "p", "reviewer"):
        col = window.model.column_of(kind)
        left = header.sectionViewportPosition(col)
        assert left >= 0 and left + header.sectionSize(col) <= width, (kind, size)
    assert header.sectionSize(window.model.column_of("file")) >= 130
    assert table.textElideMode() == Qt.TextElideMode.ElideMiddle   # "mpox_…00.jpg", never "IMG_…"


def test_a_resized_column_keeps_its_width_through_a_filter_change(qtbot, tmp_path, models, folder):
    window, _first = scored_window(qtbot, tmp_path, models, folder)
    header = window.results.table.horizontalHeader()
    col = window.model.column_of("needs")
    header.resizeSection(col, 333)
    window.results.set_filter("mpox")
    window.results.set_filter("all")
    window.select_model("Xception")
    window.select_model("Both")
    assert header.sectionSize(window.model.column_of("needs")) == 333


# --- 1. the shift alarm stays ---------------------------------------------------------------------------

SHIFT = {"detected": True, "p_value": 0.001, "statistic": 0.08, "n": 60, "model": "combined",
         "message": "These photos differ from the model's training photos (p = 0.001, n = 60).",
         "operating_point": "out_of_collection", "remedy": "review about 60 photos with Review next, then adapt",
         "review_n": 60}


def store_shift(window, card, verdict: dict) -> None:
    """A verdict as a run's end keeps it: in the session, for this source, model and stored set."""
    ws = window.workspace
    fingerprint = ws.stored_set(card.key)[2]
    ws.store_verdict(card.key, {**verdict, "model_key": card.key, "fingerprint": fingerprint})


def test_the_shift_banner_names_the_deciding_model_and_what_to_do(qtbot, tmp_path, models, folder):
    window, _first = scored_window(qtbot, tmp_path, models, folder)
    store_shift(window, models["combined"], SHIFT)
    window.show_shift()
    text = window.shift_banner.text()
    assert window.shift_banner.isVisible() and text.startswith("Shift alarm (combined): These photos differ")
    assert "review about 60 photos with Review next, then adapt" in text and "widened" in text


def test_the_shift_banner_returns_when_the_folder_is_reopened(qtbot, tmp_path, models, folder):
    window, _first = scored_window(qtbot, tmp_path, models, folder)
    store_shift(window, models["combined"], SHIFT)
    window.close()
    # Workspace.open reads each model's verdict for this folder from its session; the window shows the picked ones.
    again = new_window(qtbot, tmp_path)
    again.select_model("Both")
    assert again.open_folder(folder)
    assert again.shift_banner.isVisible() and "Shift alarm (combined)" in again.shift_banner.text()
    again.select_model("Xception")   # a model without an alarm of its own: no banner
    assert not again.shift_banner.isVisible()


# --- 5. counts and progress ------------------------------------------------------------------------------

def test_a_cancelled_run_says_what_each_model_kept():
    text = run_message({"cancelled": True, "total": 60, "kept": 60, "complete": 12, "errors": 0,
                        "per_model": [("combined", 60, 60), ("MobileNetV2", 41, 60), ("Xception", 12, 60)]})
    assert text.startswith("Cancelled — 12 of 60 photos scored by every model")
    assert "combined 60 of 60, MobileNetV2 41 of 60, Xception 12 of 60" in text and "60 of 60 kept" not in text


def test_a_finished_run_counts_readable_and_unreadable_photos_apart():
    text = run_message({"cancelled": False, "total": 45, "kept": 45, "errors": 3, "elapsed_s": 4.0})
    assert text == "Done — 42 photos scored in 4.0 s; 3 more could not be read (see the 'errors' filter)"


def test_the_eta_is_smoothed_and_does_not_jump():
    from desktop_app.results.progress import RunProgress

    now = [0.0]
    progress = RunProgress(clock=lambda: now[0])
    progress.start(1, [])
    etas = []
    # 10 photos a second on average, in uneven batches (a slow one, a fast one).
    for t, done in [(0, 8), (1.0, 18), (2.0, 24), (3.0, 40), (4.0, 48), (5.0, 58), (6.0, 66), (7.0, 78)]:
        now[0] = t
        _text, eta = progress.update(done, 200)
        if eta:
            m, s = eta.removeprefix("ETA ").split(":")
            etas.append(int(m) * 60 + int(s))
    assert len(etas) >= 5
    # The ETA goes down steadily through uneven batches: never up by more than a few seconds, never a jump
    # like 0:07 -> 0:16 -> 0:10.
    assert all(b - a <= 3 for a, b in zip(etas, etas[1:])), etas
    assert all(abs(b - a) <= 6 for a, b in zip(etas, etas[1:])), etas


def test_progress_counts_a_photo_once_every_model_has_scored_it(qtbot):
    from desktop_app.workers.run_controller import RunController

    ctl = RunController()
    ctl._remaining = {"a": {"k1", "k2"}, "b": {"k1", "k2"}}
    ctl._complete = 0
    one = ResultRecord(path="a", status="ok", p_mpox=0.5, model_sha256="k1")
    ctl._on_results([one, ResultRecord(path="b", status="ok", p_mpox=0.5, model_sha256="k1")])
    assert ctl.done == 0            # each photo has one of its two scores: not done, not "half done"
    ctl._on_results([ResultRecord(path="a", status="ok", p_mpox=0.5, model_sha256="k2")])
    assert ctl.done == 1


# --- 9. smaller things -----------------------------------------------------------------------------------

def test_an_unreadable_file_cannot_be_labelled(qtbot, tmp_path, models, folder):
    window = new_window(qtbot, tmp_path)
    window.select_model("MobileNetV2")
    assert window.open_folder(folder)
    path = window.paths[0]
    add(window, [rec(path, models["mobilenetv2"], None, error=f"{path}: cannot identify image file")])
    window.review(window.model.row_of(path), "mpox")
    assert row_of(window, path).review_label == "" and path not in window.workspace.reviews
    assert "cannot be labelled" in window.message.text()


def test_an_empty_table_says_what_to_do_first(qtbot, tmp_path, models, folder):
    window = new_window(qtbot, tmp_path)
    hint = window.results.hint
    assert hint.isVisible() and "Open a folder" in hint.text()
    assert window.open_folder(folder)
    assert hint.isVisible() and "Run" in hint.text()
    window.select_model("MobileNetV2")
    add(window, [rec(window.paths[0], models["mobilenetv2"], 0.3)])
    assert not hint.isVisible()


def test_showing_x_of_y_sits_above_the_table(qtbot, tmp_path, models, folder):
    window, _first = scored_window(qtbot, tmp_path, models, folder)
    label = window.showing
    assert label.isVisible() and label.text() == "showing 4 of 4"
    assert label.mapTo(window, label.rect().topLeft()).y() < \
        window.results.table.mapTo(window, window.results.table.rect().topLeft()).y()


def test_photo_large_shows_the_original_fitted_to_the_screen(qtbot, tmp_path):
    from desktop_app.results.photo_dialog import PhotoDialog

    path = tmp_path / "small.png"
    make_photo((224, 224), seed=1).save(path)
    dialog = PhotoDialog(str(path))
    qtbot.addWidget(dialog)
    assert dialog.original.width() == 224 and "224 × 224 px" in dialog.windowTitle()
    assert dialog.pixmap.width() > 224   # enlarged to be looked at, not shown at 224 px


def test_window_size_and_splitter_are_restored(qtbot, tmp_path, models):
    window = new_window(qtbot, tmp_path, size=(720, 540))   # within the offscreen screen
    window.splitter.setSizes([340, 360])
    sizes = window.splitter.sizes()
    window.close()
    again = new_window(qtbot, tmp_path, size=(640, 480))
    again.restore_window_state()
    assert again.size().width() == 720 and again.size().height() == 540
    assert again.splitter.sizes() == sizes


def test_open_folder_and_run_are_reachable_by_tab_and_exports_have_shortcuts(qtbot, tmp_path, models):
    window = new_window(qtbot, tmp_path)
    for act in (window.act_open, window.act_run):
        assert window.toolbar.widgetForAction(act).focusPolicy() & Qt.FocusPolicy.TabFocus
    assert window.act_export_pdf.shortcut().toString() == "Ctrl+E"
    assert window.act_export_csv.shortcut().toString() == "Ctrl+Shift+E"


# --- 6 and 8: model card export, adapting as its own action ----------------------------------------------

def test_export_model_card_writes_every_field_as_json(qtbot, tmp_path, models):
    window = new_window(qtbot, tmp_path)
    window.select_model("Xception")
    out = window.export_model_card(str(tmp_path / "card.json"))
    data = json.loads(Path(out).read_text())
    assert data == models["xception"].to_dict()
    assert "Export &model card (JSON)…" in [a.text() for a in window.menuBar().actions()[0].menu().actions()]


def test_adapt_to_this_site_is_its_own_action_with_a_visible_changeable_save_location(qtbot, tmp_path, models,
                                                                                      folder):
    window = new_window(qtbot, tmp_path)
    tools = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Tools")
    assert [a.text() for a in tools.actions()][0] == "&Adapt to this site…"
    wizard = window.open_adapt()
    qtbot.addWidget(wizard)
    assert wizard.windowTitle() == "Adapt to this site" and wizard.currentPage() is wizard.adapt_page
    assert wizard.adapting
    page = wizard.save_page
    page.initializePage()
    assert str(wizard.models_dir) in page.target.text()
    page.choose_location(str(tmp_path / "elsewhere"))
    assert wizard.models_dir == tmp_path / "elsewhere" and str(tmp_path / "elsewhere") in page.target.text()
    wizard.host.shutdown()
    wizard.close()


def test_the_status_bar_names_the_model_in_use(qtbot, tmp_path, models):
    window = new_window(qtbot, tmp_path)
    window.select_model("Both")
    assert window.model_in_use.text() == "Model: combined 9.0.0 + mobilenetv2 9.0.0 + xception 9.0.0"
    window.select_model("MobileNetV2")
    assert window.model_in_use.text() == "Model: mobilenetv2 9.0.0"


# --- one story: exports show what the table shows --------------------------------------------------------

def test_a_csv_exported_with_one_model_picked_names_only_that_model_and_its_reasons(qtbot, tmp_path, models, folder):
    """The defect: a CSV exported with one model picked gave reasons like "models disagree: combined ...
    MobileNetV2"."""
    import csv as csvmod

    window, first = scored_window(qtbot, tmp_path, models, folder)
    window.select_model("Xception")
    out = window.export_csv(str(tmp_path / "x.csv"))
    with open(out, newline="", encoding="utf-8") as fh:
        rows = {r["path"]: r for r in csvmod.DictReader(fh)}
    assert {r["model"] for r in rows.values()} == {"xception"}
    assert "disagree" not in rows[first]["needs_review"] and "combined" not in rows[first]["needs_review"]
    window.act_export_all.setChecked(True)   # every model stored for the folder: an explicit choice
    with open(window.export_csv(str(tmp_path / "all.csv")), newline="", encoding="utf-8") as fh:
        header = next(csvmod.reader(fh))
    assert any(h.startswith("p_mpox__") for h in header) and len([h for h in header if h.startswith("p_mpox__")]) == 3


def test_a_reopened_folder_after_a_killed_run_gets_its_verdict_and_banner_from_the_worker(qtbot, tmp_path):
    """The defect: a cancelled or killed run left no verdict (the alarm was lost until a later run tested again)."""
    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine
    from core.store.workspace import Workspace
    from tests.test_never_miss import _alarm_bundle

    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=18, size=(40, 32))
    window = new_window(qtbot, tmp_path)
    session = window.session_dir_for(photos)
    bundle = load_bundle(bdir)
    with Workspace.open(photos, session) as ws:
        run = iter(ws.run(InferenceEngine(bundle, batch_size=36), ws.to_score(bundle.card)))
        for _ in range(36):   # the batch is committed; the process is killed before the run ends
            next(run)
        ws.session.close()
    window.select_model("shifty")
    assert window.open_folder(photos)
    assert not window.shift_banner.isVisible()   # nothing stored fits the stored set yet
    qtbot.waitUntil(lambda: window.shift_banner.isVisible(), timeout=60000)
    assert "Shift alarm (shifty" in window.shift_banner.text()
    assert window.workspace.point_for(bundle.card).name == "out_of_collection"
