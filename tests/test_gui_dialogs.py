"""Menus, dialogs and exports of the main window: notices, model card, settings, recent folders, drops, CSV/PDF."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402

from desktop_app.about import about_text  # noqa: E402
from desktop_app.mainwindow import MainWindow  # noqa: E402
from desktop_app.notices import RESEARCH_NOTICE  # noqa: E402
from desktop_app.settings.dialog import SettingsDialog  # noqa: E402
from desktop_app.settings.store import AppSettings  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path, tiny_bundle):
    tiny_bundle("tiny", threshold=0.42)
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    settings.reviewer = "tester"
    w = MainWindow(settings, models_dir=tmp_path / "models", sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def test_research_notice_is_always_visible(window):
    assert window.notice_label.text() == "Research use — not a medical device"
    assert window.notice_label.isVisible()
    assert RESEARCH_NOTICE in about_text()


def test_model_picker_and_card_show_name_version_threshold(window):
    assert window.model_combo.count() == 1
    assert "tiny 0.0.1" in window.model_combo.currentText()
    assert "threshold 0.42" in window.model_combo.currentText()
    dialog = window.show_model_card()
    text = dialog.browser.toPlainText()
    assert "tiny 0.0.1" in text and "0.420" in text and "untrained test fixture" in text
    assert RESEARCH_NOTICE in text
    dialog.close()


def test_settings_dialog_saves_to_qsettings_and_shows_thresholds(window, tmp_path):
    dialog = window.open_settings()
    assert isinstance(dialog, SettingsDialog)
    assert dialog.thresholds.rowCount() == 1 and dialog.thresholds.item(0, 2).text() == "0.420"
    dialog.weights.setText(str(tmp_path / "weights"))
    dialog.reviewer.setText("dr. who")
    dialog.batch.setValue(7)
    dialog.accept()
    again = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert again.weights_dir == str(tmp_path / "weights")
    assert again.reviewer == "dr. who" and again.batch_size == 7


def test_opening_and_dropping_folders_fills_recent_folders(window, image_folder, tmp_path):
    folder = image_folder(n_per_class=2)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.folder == str(folder) and len(window.paths) == 4
    assert window.settings.recent_folders[0] == str(folder)
    assert window.settings.last_folder == str(folder)
    window.menu_recent.aboutToShow.emit()
    assert [a.text() for a in window.menu_recent.actions()] == [str(folder)]
    # Thumbnails and the session never go beside the photos.
    assert window.session.session_dir.is_relative_to(tmp_path / "sessions")


def test_exports_write_csv_with_reviews_and_a_pdf(qtbot, window, image_folder, tmp_path):
    window.open_folder(image_folder(n_per_class=2))
    with qtbot.waitSignal(window.run_finished, timeout=120_000):
        window.run()
    window.results.select_source_row(0)
    window.review(0, "not_mpox")
    out = window.export_csv(str(tmp_path / "out.csv"))
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert len(rows) == 4
    first = next(r for r in rows if r["path"] == window.model.row_at(0).path)
    assert first["model"] == "tiny" and first["prediction"] in ("mpox", "not_mpox")
    review_cols = [k for k in first if "review" in k]
    assert review_cols and "not_mpox" in [first[k] for k in review_cols]

    pytest.importorskip("core.reports")
    with qtbot.waitSignal(window.export_finished, timeout=120_000) as done:
        assert window.export_pdf(str(tmp_path / "report.pdf"))
    assert done.args == [str(tmp_path / "report.pdf")]
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")


def test_a_broken_bundle_reports_a_clear_error_without_blocking(qtbot, tmp_path, tiny_bundle, image_folder):
    model_file = tiny_bundle("tiny") / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:-10] + b"tampered!!")
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(settings, models_dir=tmp_path / "models", sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    window.open_folder(image_folder(n_per_class=1))
    with qtbot.waitSignal(window.run_finished, timeout=120_000) as done:
        window.run()
    summary = done.args[0]
    assert summary["kept"] == 0 and summary["failures"]
    assert "SHA-256" in summary["failures"][0]
    assert window.last_warning is not None and "SHA-256" in window.last_warning.text()
    assert window.act_run.isEnabled()  # the user can fix the bundle and try again
    window.close()


def test_smoke_test_option_scores_a_folder_and_exits(tmp_path, tiny_bundle, image_folder):
    """The packaging check (`mpox-triage-gui --smoke-test FOLDER`) drives the real window in a fresh process."""
    import os
    import subprocess
    import sys

    tiny_bundle("tiny")
    folder = image_folder(n_per_class=2)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-m", "desktop_app.main", "--models-dir", str(tmp_path / "models"),
                          "--smoke-test", str(folder)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "smoke test: 4 of 4 scored by tiny 0.0.1" in out.stdout
    assert not any(folder.rglob("*.png"))  # nothing written beside the photos (thumbnails live in the session)
