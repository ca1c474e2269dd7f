"""Issue 18, item 2: one output policy (core.store.outputs) refuses, from every entry point, outputs over a session
database, over any file of any model bundle, over special files and links; nothing is written or replaced.

The CLI runs in-process (core.cli.main); every refusal comes before any model is loaded, so these are fast."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from core.cli import main
from core.store.outputs import OutputError, check_output, publish
from tests.conftest import REPO
from tests.helpers import make_image_folder, make_tiny_bundle

SHIPPED = REPO / "models"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def refused(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1, err
    assert all(w in lines[0] for w in words), lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("models") / "alpha", name="alpha")


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_image_folder(tmp_path / "photos", n_per_class=2, size=(40, 32))


# --- the session database --------------------------------------------------------------------------
def test_classify_resume_refuses_the_live_session_database_and_its_side_files_as_csv(capsys, photos, tiny,
                                                                                       tmp_path):
    session = tmp_path / "s"
    code, err = run_cli(capsys, "classify", photos, "--model", tiny, "--session", session, "--quiet")
    assert code == 0, err
    db = session / "session.sqlite"
    before = digest(db)
    for target in (db, session / "session.sqlite-wal", session / "session.sqlite-shm"):
        code, err = run_cli(capsys, "classify", photos, "--model", tiny, "--session", session, "--resume",
                            "--csv", target, "--quiet")
        refused(code, err, "session")
    assert digest(db) == before


def test_a_session_given_as_a_db_file_protects_its_wal_even_before_it_exists(capsys, photos, tiny, tmp_path):
    code, err = run_cli(capsys, "classify", photos, "--model", tiny, "--session", tmp_path / "run.db",
                        "--csv", tmp_path / "run.db-wal", "--quiet")
    refused(code, err, "never written")
    assert not (tmp_path / "run.db").exists()


# --- files inside model bundles ----------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--engine", "ray", "--csv", SHIPPED / "mobilenetv2" / "model_card.json"],
    ["--model", "combined", "--csv", SHIPPED / "xception" / "model_card.json"],   # a component of the model in use
    ["--model", "mobilenetv2", "--summary", SHIPPED / "combined" / "ood.npz"],    # a bundle not in use
    ["--model", "mobilenetv2", "--report", SHIPPED / "mobilenetv2" / "new.pdf"],  # a new file inside a bundle
], ids=["ray-card", "combined-component-card", "other-bundle", "new-file-in-bundle"])
def test_classify_never_writes_inside_any_bundle(capsys, photos, args):
    before = {p: digest(p) for p in SHIPPED.rglob("*") if p.is_file()}
    code, err = run_cli(capsys, "classify", photos, *args, "--quiet")
    refused(code, err, "model bundle")
    assert {p: digest(p) for p in SHIPPED.rglob("*") if p.is_file()} == before


def test_export_refuses_to_write_over_the_bundles_own_tflite(capsys):
    import json

    runtime = json.loads((SHIPPED / "mobilenetv2" / "model_card.json").read_text())["extra"]["runtime"]
    tflite = SHIPPED / "mobilenetv2" / runtime["file"]  # the bundle's own LiteRT backbone (release 1.3.0 on)
    assert tflite.is_file() and tflite.suffix == ".tflite"
    before = digest(tflite)
    code, err = run_cli(capsys, "export", "--model", "mobilenetv2", "--format", "tflite", tflite)
    refused(code, err, "model bundle")
    assert digest(tflite) == before


def test_export_refuses_a_sidecar_inside_a_bundle(capsys, tiny):
    code, err = run_cli(capsys, "export", "--model", tiny, "--format", "tflite", tiny / "x.tflite")
    refused(code, err, "model bundle")
    assert not (tiny / "x.tflite").exists()


def test_evaluate_json_and_plots_never_go_into_a_bundle(capsys, photos, tiny):
    card = tiny / "model_card.json"
    before = digest(card)
    code, err = run_cli(capsys, "evaluate", photos, "--model", tiny, "--json", card, "--quiet")
    refused(code, err, "model bundle")
    code, err = run_cli(capsys, "evaluate", photos, "--model", tiny, "--plots", tiny / "plots", "--quiet")
    refused(code, err, "model bundle")
    assert digest(card) == before and not (tiny / "plots").exists()


def test_train_refuses_json_onto_a_card_and_a_bundle_inside_a_bundle(capsys, photos, tiny, tmp_path):
    card = tiny / "model_card.json"
    before = digest(card)
    code, err = run_cli(capsys, "train", photos, "--arch", "mobilenetv2", "--out", tmp_path / "new",
                        "--json", card, "--quiet")
    refused(code, err, "model bundle")
    code, err = run_cli(capsys, "train", photos, "--arch", "mobilenetv2", "--out", tiny / "nested", "--quiet")
    refused(code, err, "model bundle")
    assert digest(card) == before and not (tiny / "nested").exists()


def test_adapt_and_suggest_refuse_json_onto_a_card(capsys, photos, tiny, tmp_path):
    card = tiny / "model_card.json"
    before = digest(card)
    code, err = run_cli(capsys, "adapt", "--model", tiny, "--suggest", "3", "--pool", photos, "--json", card,
                        "--quiet")
    refused(code, err, "model bundle")
    code, err = run_cli(capsys, "adapt", "--model", tiny, "--labelled", photos, "--out", tmp_path / "new",
                        "--json", photos / "mpox" / "x.json", "--quiet")
    refused(code, err, "input")
    code, err = run_cli(capsys, "adapt", "--model", tiny, "--labelled", photos, "--out", tiny / "site", "--quiet")
    refused(code, err, "model bundle")
    assert digest(card) == before


# --- special files and links --------------------------------------------------------------------------
def test_a_fifo_is_refused_and_stays_a_fifo(capsys, photos, tiny, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, err = run_cli(capsys, "classify", photos, "--model", tiny, "--csv", fifo, "--quiet")
    refused(code, err, "FIFO", "leave its option out")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_dev_null_is_refused_and_left_a_device(capsys, photos, tiny):
    code, err = run_cli(capsys, "classify", photos, "--model", tiny, "--summary", os.devnull, "--quiet")
    refused(code, err, "device")
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)


def test_a_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(OutputError, match="socket"):
            check_output(path, "--csv")


def test_a_symlink_is_refused_and_neither_it_nor_its_target_changes(capsys, photos, tiny, tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("kept\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    code, err = run_cli(capsys, "classify", photos, "--model", tiny, "--csv", link, "--quiet")
    refused(code, err, "symbolic link")
    assert link.is_symlink() and real.read_text() == "kept\n"


# --- the app's exports go through the same policy ------------------------------------------------------
def test_the_apps_exports_refuse_the_session_database_a_bundle_file_and_a_fifo(qtbot, tmp_path, tiny):
    pytest.importorskip("pytestqt")
    from tests.gui_fixtures import window_with_rows

    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    db = window.workspace.session.db_path
    before = digest(db)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for target in (db, Path(f"{db}-wal"), tiny / "model_card.json", fifo):
        assert window.export_csv(out_path=str(target)) is None
        assert window.export_pdf(out_path=str(target)) is False
    assert digest(db) == before and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert window.export_csv(out_path=str(tmp_path / "fine.csv")) == str(tmp_path / "fine.csv")


# --- permissions ----------------------------------------------------------------------------------
def test_published_files_get_the_mode_of_a_normal_file_or_of_the_file_they_replace(tmp_path):
    umask = os.umask(0o022)
    try:
        tmp = tmp_path / ".a.partial"
        tmp.write_text("x")
        os.chmod(tmp, 0o600)
        publish(tmp, tmp_path / "a.csv")
        assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o644
        os.chmod(tmp_path / "a.csv", 0o640)
        tmp.write_text("y")
        publish(tmp, tmp_path / "a.csv")
        assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o640
    finally:
        os.umask(umask)


def test_classify_csv_and_pdf_get_the_same_permissions(capsys, photos, tiny, tmp_path):
    pytest.importorskip("reportlab")
    code, err = run_cli(capsys, "classify", photos, "--model", tiny, "--csv", tmp_path / "r.csv",
                        "--report", tmp_path / "r.pdf", "--summary", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    modes = {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("r.csv", "r.pdf", "r.json")}
    assert len(modes) == 1, modes


def test_the_wizard_refuses_to_save_a_bundle_inside_another_bundle_or_the_photos(qtbot, tmp_path, tiny, photos):
    pytest.importorskip("pytestqt")
    from desktop_app.retrain.wizard import RetrainWizard

    w = RetrainWizard(None, models_dir=tiny, current=[], session_items=[])   # a models folder inside a bundle
    qtbot.addWidget(w)
    assert "model bundle" in w.target_problem()
    w.models_dir = photos / "mpox"
    w.data_page.folder.setText(str(photos))
    assert "inside the folder" in w.target_problem()
    w.models_dir = tmp_path / "user-models"
    assert w.target_problem() == ""
    w.host.shutdown()


def test_the_apps_model_card_export_never_writes_over_a_bundles_card(qtbot, tmp_path, tiny):
    pytest.importorskip("pytestqt")
    from desktop_app.mainwindow import MainWindow
    from tests.gui_fixtures import settings_at

    window = MainWindow(settings_at(tmp_path), models_dir=tiny.parent, sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    card = tiny / "model_card.json"
    before = digest(card)
    assert window.export_model_card(out_path=str(card)) is None
    assert digest(card) == before
    assert window.export_model_card(out_path=str(tmp_path / "card.json")) == str(tmp_path / "card.json")
