"""The real main window, offscreen: open a folder, run a tiny model, sort, filter, review, cancel, Grad-CAM."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt, QTimer  # noqa: E402

from desktop_app.mainwindow import MainWindow  # noqa: E402
from desktop_app.results.model import ROW_ROLE, SORT_ROLE  # noqa: E402
from desktop_app.settings.store import AppSettings  # noqa: E402

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def make_window(qtbot, tmp_path):
    windows = []

    def factory(batch_size: int = 4) -> MainWindow:
        settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        settings.batch_size = batch_size
        settings.reviewer = "tester"
        window = MainWindow(settings, models_dir=tmp_path / "models", sessions_dir=tmp_path / "sessions")
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield factory
    for w in windows:
        w.close()


@pytest.fixture
def photos(image_folder):
    folder = image_folder(n_per_class=4)
    (folder / "other" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return folder


def run_and_wait(qtbot, window: MainWindow) -> dict:
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as blocker:
        assert window.run()
    return blocker.args[0]


def test_run_streams_every_file_into_the_table_with_error_rows(qtbot, make_window, tiny_bundle, photos):
    tiny_bundle("tiny")
    window = make_window()
    streamed = []
    window.controller.result.connect(lambda rec: streamed.append(rec.path))
    assert window.open_folder(photos)
    assert len(window.paths) == 9
    summary = run_and_wait(qtbot, window)

    assert summary["kept"] == 9 and summary["errors"] == 1 and not summary["cancelled"]
    assert window.model.rowCount() == 9
    assert streamed == window.paths  # streamed one by one, in input order
    # Counts are photos (issue 13), readable ones apart from the unreadable (issue 19).
    assert window.message.text().startswith("Done — 8 photos scored")
    assert "1 more could not be read" in window.message.text()
    broken = window.model.row_at(window.model.row_of(str(photos / "other" / "broken.jpg")))
    assert broken.errors() and "broken.jpg" in broken.errors()[0]
    pred_col = window.model.column_of("prediction")
    row = window.model.row_of(broken.path)
    assert window.model.index(row, pred_col).data().startswith("error:")
    # Every result was stored in the session, off the GUI thread.
    assert len(window.session.results()) == 9
    assert window.showing.text() == "showing 9 of 9"
    ok = window.model.row_at(0)
    rec = next(iter(ok.records.values()))
    assert rec.model == "tiny" and rec.model_version == "0.0.1" and 0.0 <= rec.p_mpox <= 1.0


def test_sort_by_p_mpox_is_numeric_and_filters_are_explicit(qtbot, make_window, tiny_bundle, photos):
    tiny_bundle("tiny")
    window = make_window()
    window.open_folder(photos)
    run_and_wait(qtbot, window)
    proxy, table = window.results.proxy, window.results.table
    p_col = window.model.column_of("p")

    table.sortByColumn(p_col, Qt.SortOrder.DescendingOrder)
    values = [proxy.index(r, p_col).data(SORT_ROLE) for r in range(proxy.rowCount())]
    assert values == sorted(values, reverse=True)
    assert values[-1] == -1.0  # the unreadable file sorts below every probability
    texts = [proxy.index(r, p_col).data() for r in range(proxy.rowCount() - 1)]
    assert [float(t) for t in texts] == sorted((float(t) for t in texts), reverse=True)

    window.results.set_filter("errors")
    assert proxy.rowCount() == 1
    assert window.showing.text() == "showing 1 of 9"
    window.results.set_filter("all")
    assert proxy.rowCount() == 9

    n_mpox = sum(1 for r in window.model.rows if "mpox" in r.predictions())
    window.results.set_filter("mpox")
    assert proxy.rowCount() == n_mpox
    window.results.set_filter("not_mpox")
    assert proxy.rowCount() == 8 - n_mpox

    window.results.set_filter("all")
    window.results.search.setText("mpox_0")
    assert {proxy.index(r, 0).data(ROW_ROLE).name for r in range(proxy.rowCount())} == {
        f"mpox_{i:02d}.jpg" for i in range(4)}
    assert window.showing.text() == "showing 4 of 9"


def test_keyboard_review_labels_rows_without_touching_predictions(qtbot, make_window, tiny_bundle, photos):
    tiny_bundle("tiny")
    window = make_window()
    window.open_folder(photos)
    run_and_wait(qtbot, window)
    table = window.results.table
    table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # arrival order (the default is highest risk first)
    table.setFocus()
    window.results.select_source_row(0)
    first = window.model.row_at(0)
    before = {k: (r.p_mpox, r.prediction) for k, r in first.records.items()}

    qtbot.keyClick(table, Qt.Key.Key_M)
    assert first.review_label == "mpox" and first.reviewer == "tester" and first.review_time
    assert {k: (r.p_mpox, r.prediction) for k, r in first.records.items()} == before
    assert window.results.current_source_row() == 1  # moved on to the next photo

    qtbot.keyClick(table, Qt.Key.Key_N)
    assert window.model.row_at(1).review_label == "not_mpox"
    qtbot.keyClick(table, Qt.Key.Key_Down)
    qtbot.keyClick(table, Qt.Key.Key_U)
    assert window.model.row_at(3).review_label == "unsure"
    assert window.model.row_at(2).review_label == ""

    stored = window.session.reviews()
    assert stored[first.path]["label"] == "mpox" and stored[first.path]["reviewer"] == "tester"
    assert stored[window.model.row_at(1).path]["label"] == "not_mpox"

    review_col = window.model.column_of("review")
    assert window.model.index(0, review_col).data() == "mpox"
    window.results.set_filter("unreviewed")
    assert window.results.proxy.rowCount() == 6

    # Reopening the folder restores results and reviews from the session.
    window.open_folder(photos)
    assert window.model.rowCount() == 9
    assert window.model.row_at(window.model.row_of(first.path)).review_label == "mpox"


def test_cancel_mid_run_keeps_partial_results(qtbot, make_window, tiny_bundle, image_folder):
    tiny_bundle("tiny")
    folder = image_folder(n_per_class=10)
    window = make_window(batch_size=2)
    window.open_folder(folder)
    cancelled_at = []

    def cancel_in_worker(_records) -> None:
        # Runs in the worker thread (direct connection), so the cancel lands during the run, deterministically.
        if not cancelled_at:
            cancelled_at.append(1)
            window.controller.token.cancel()

    handle = window.handle_for(window.selected_dirs()[0])
    handle.worker.results.connect(cancel_in_worker, Qt.ConnectionType.DirectConnection)
    # The GUI side presses Cancel as soon as the first result shows up.
    press_cancel = lambda _r: window.cancel_run()  # noqa: E731
    window.controller.result.connect(press_cancel)
    summary = run_and_wait(qtbot, window)

    assert summary["cancelled"]
    assert 1 <= summary["kept"] < summary["total"] == 20
    assert summary["kept"] <= 4  # stops after the current batch (batch size 2), not at the end
    assert window.model.rowCount() == summary["kept"]
    assert window.message.text().startswith(f"Cancelled — {summary['kept']} of 20 photos scored by every model")
    assert window.act_run.isEnabled() and not window.act_cancel.isEnabled()
    statuses = [r["status"] for r in window.session.runs()]
    assert statuses == ["cancelled"]

    # Run again: it resumes with the photos that are left, and every photo ends up with one result.
    kept = summary["kept"]
    handle.worker.results.disconnect(cancel_in_worker)
    window.controller.result.disconnect(press_cancel)
    streamed = []
    window.controller.result.connect(streamed.append)
    summary = run_and_wait(qtbot, window)
    assert len(streamed) == 20 - kept  # each remaining photo once (no stale connections from the first run)
    assert summary["total"] == 20 - kept and summary["kept"] == 20 - kept and not summary["cancelled"]
    assert window.model.rowCount() == 20
    assert sorted(r.path for r in window.session.results()) == sorted(window.paths)
    assert not window.run()  # nothing left to score
    assert window.message.text().startswith("Nothing left to score: all 20 photos were already scored")


def test_cancel_shows_cancelling_while_the_batch_finishes(qtbot, make_window, tiny_bundle, image_folder):
    tiny_bundle("tiny")
    window = make_window(batch_size=2)
    window.open_folder(image_folder(n_per_class=6))
    messages = []
    window.controller.started.connect(lambda _t: (window.cancel_run(), messages.append(window.message.text())))
    summary = run_and_wait(qtbot, window)
    assert messages == ["Cancelling… (finishing the current batch)"]
    assert summary["cancelled"] and window.message.text().startswith("Cancelled — ")


def test_detail_pane_shows_photo_and_gradcam_overlay(qtbot, make_window, tiny_bundle, photos):
    tiny_bundle("tiny")
    window = make_window()
    window.open_folder(photos)
    requested = []
    window.detail.gradcam_requested.connect(lambda p, _k: requested.append(p))
    run_and_wait(qtbot, window)
    row = [i for i, r in enumerate(window.model.rows) if not r.errors()][-1]
    assert window.results.current_source_row() != row  # a fresh selection, so a fresh request
    wanted = window.model.row_at(row).path
    assert wanted not in requested
    with qtbot.waitSignal(window.detail.heatmap_ready, timeout=RUN_TIMEOUT_MS,
                          check_params_cb=lambda p, _k: p == wanted), \
            qtbot.waitSignal(window.detail.photo_ready, timeout=RUN_TIMEOUT_MS,
                             check_params_cb=lambda p: p == wanted):
        window.results.select_source_row(row)
    assert requested.count(wanted) == 1  # asked once, computed by the model's own worker
    heat = window.detail.view.heat
    assert (heat.width(), heat.height()) == (64, 48)  # the photo's own size, ready to overlay
    raw = window.heatmaps[wanted]  # kept for the PDF report
    assert raw.shape == (48, 64) and raw.dtype.name == "float32" and 0 <= raw.min() <= raw.max() <= 1
    assert window.detail.title.text() == Path(wanted).name
    assert window.detail.has_heatmap()
    assert not window.detail.view.photo.isNull()
    assert "p(mpox) = " in window.detail.scores.text()

    window.detail.opacity.setValue(80)
    assert window.detail.view.opacity == pytest.approx(0.8)
    window.detail.gradcam_box.setChecked(False)
    assert not window.detail.view.show_heat and not window.detail.opacity.isEnabled()
    window.detail.gradcam_box.setChecked(True)
    assert window.detail.view.show_heat
    image = window.detail.view.grab().toImage()
    assert image.width() > 0


def test_both_models_give_one_row_per_file_with_both_scores(qtbot, make_window, tiny_bundle, photos, tmp_path):
    from core.models.bundle import ModelCard, save_bundle
    from tests.helpers import make_tiny_model

    tiny_bundle("tiny_a", seed=0)
    # A second tiny model that calls itself Xception, so the picker offers "Both".
    card = ModelCard(name="tiny_b", version="0.0.1", architecture="xception", input_size=32, threshold=0.5)
    save_bundle(make_tiny_model(32, seed=1), card, tmp_path / "models" / "tiny_b")
    window = make_window()
    labels = [c[0] for c in window.choices]
    assert any(label.startswith("Both") for label in labels)
    window.select_model("Both")
    window.open_folder(photos)
    summary = run_and_wait(qtbot, window)
    # Counts are photos, not file x model (issue 13): 9 photos, each scored by both models.
    assert summary["total"] == 9 and summary["kept"] == 9, (summary["failures"], summary["models"])
    assert summary["results"] == 18 and summary["errors"] == 1 and summary["status"] == "finished"
    assert window.model.rowCount() == 9
    # The first model's p(mpox) has its column; the other's score sits in one compact column beside it.
    kinds = [window.model.column_kind(c)[0] for c in range(window.model.columnCount())]
    assert kinds.count("p") == 1 and kinds.count("scores") == 1
    p_head = window.model.headerData(kinds.index("p"), Qt.Orientation.Horizontal)
    other_head = window.model.headerData(kinds.index("scores"), Qt.Orientation.Horizontal)
    assert {p_head, other_head} == {"p(mpox)\nMobileNetV2", "Xception"} or \
        {p_head, other_head} == {"p(mpox)\nXception", "MobileNetV2"}
    good = [r for r in window.model.rows if not r.errors()]
    assert all(len(r.records) == 2 for r in good)
    window.results.select_source_row(window.model.row_of(good[0].path))
    assert window.detail.scores.text().count("p(mpox) = ") == 2
    assert window.detail.model_combo.count() == 2


def test_event_loop_stays_responsive_while_inference_runs(qtbot, make_window, tiny_bundle, image_folder, capsys):
    """A 10 ms QTimer keeps ticking while 120 photos are scored (decoding, inference, thumbnails, session writes).

    Two measures per gap between ticks: wall time, and the GUI thread's own CPU time (time.thread_time).
    A loop blocked by our code shows both large; a loop waiting for a CPU on a loaded 2-core box shows a
    large wall gap with little GUI CPU. So: GUI CPU per gap < 100 ms (the goal, no machine-load excuse),
    wall gap < 250 ms in the typical case (p95), and < 1 s at worst (a frozen loop shows seconds).
    """
    tiny_bundle("tiny")
    window = make_window(batch_size=8)
    window.open_folder(image_folder(n_per_class=60, size=(320, 240)))
    # Load the model first: this test measures inference, not TensorFlow's import.
    handle = window.handle_for(window.selected_dirs()[0])
    with qtbot.waitSignal(handle.ready, timeout=RUN_TIMEOUT_MS):
        handle.load()
    gaps: list[tuple[float, float]] = []   # (wall s, GUI-thread CPU s)
    last = [time.perf_counter(), time.thread_time()]

    def tick() -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        gaps.append((now - last[0], cpu - last[1]))
        last[:] = [now, cpu]

    def start_timer(_total: int) -> None:
        last[:] = [time.perf_counter(), time.thread_time()]
        timer.start()

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    window.controller.started.connect(start_timer)
    summary = run_and_wait(qtbot, window)
    timer.stop()
    assert summary["kept"] == 120
    assert len(gaps) >= 5
    walls = sorted(w for w, _ in gaps)
    worst_wall, p95_wall = walls[-1], walls[int(0.95 * (len(walls) - 1))]
    worst_cpu = max(c for _, c in gaps)
    with capsys.disabled():
        print(f"\nevent-loop latency during inference ({len(gaps)} ticks, run {summary['elapsed_s']:.2f} s): "
              f"max gap {worst_wall * 1000:.0f} ms, p95 {p95_wall * 1000:.0f} ms, "
              f"max GUI-thread CPU in a gap {worst_cpu * 1000:.0f} ms")
    assert worst_cpu < 0.1
    assert p95_wall < 0.25
    assert worst_wall < 1.0


def test_results_reach_the_table_in_bounded_chunks_and_finish_after_the_last(qtbot, make_window, tiny_bundle,
                                                                            image_folder):
    """A worker batch larger than the GUI's chunk is split, so a backlog never becomes one long insert; and
    'finished' is only announced once every photo is in the table."""
    from desktop_app.workers.run_controller import FLUSH_MAX_RECORDS

    tiny_bundle("tiny")
    window = make_window(batch_size=2 * FLUSH_MAX_RECORDS)
    window.open_folder(image_folder(n_per_class=FLUSH_MAX_RECORDS + 10))
    chunks: list[int] = []
    rows_at_finish: list[int] = []
    window.controller.records.connect(lambda records: chunks.append(len(records)))
    window.controller.finished.connect(lambda _s: rows_at_finish.append(window.model.rowCount()))
    summary = run_and_wait(qtbot, window)
    n = 2 * (FLUSH_MAX_RECORDS + 10)
    assert summary["kept"] == n and sum(chunks) == n
    assert max(chunks) <= FLUSH_MAX_RECORDS < 2 * FLUSH_MAX_RECORDS  # the 96-photo batch was split
    assert rows_at_finish == [n]


def test_window_opens_without_importing_tensorflow(tmp_path):
    code = (
        "import os, sys, time; os.environ['QT_QPA_PLATFORM']='offscreen'; t=time.perf_counter();"
        "from PySide6.QtWidgets import QApplication; app=QApplication([]);"
        "from desktop_app.mainwindow import MainWindow; w=MainWindow(models_dir=sys.argv[1]); w.show();"
        "app.processEvents(); print('tf' if 'tensorflow' in sys.modules else 'no-tf', time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "no-tf"


def test_gradcam_after_a_run_on_a_nested_backbone_bundle(qtbot, make_window, image_folder, tmp_path):
    """Grad-CAM through the window for a build_classifier bundle (nested backbone), after a run in the same
    worker thread. With a plain QThread this path segfaulted in the screenshot tool on a real MobileNetV2
    (stale Python thread state in TensorFlow's pybind11 layer); the crash depends on memory reuse, so this
    test exercises the path but cannot always reproduce the crash."""
    from core.models.backbones import build_classifier
    from core.models.bundle import ModelCard, save_bundle

    model = build_classifier("mobilenetv2", weights=None, input_size=64)
    save_bundle(model, ModelCard(name="mnv2-random", version="0.0.1", architecture="mobilenetv2", input_size=64),
                tmp_path / "models" / "mnv2-random")
    window = make_window()
    window.open_folder(image_folder(n_per_class=2))
    run_and_wait(qtbot, window)
    wanted = window.model.row_at(window.model.rowCount() - 1).path
    with qtbot.waitSignal(window.detail.heatmap_ready, timeout=RUN_TIMEOUT_MS,
                          check_params_cb=lambda p, _k: p == wanted):
        window.results.select_source_row(window.model.rowCount() - 1)
    assert window.detail.has_heatmap()
