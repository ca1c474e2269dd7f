"""The command line and the app drive the same Workspace: the same folder through `classify` and through
the main window gives the same session, CSV and audit trail (modulo timestamps, run ids and output paths)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from core.store.session import SessionStore, default_actor  # noqa: E402

RUN_TIMEOUT_MS = 120_000


def _session_view(session_dir: Path, out_path: str) -> dict:
    with SessionStore.open(session_dir) as store:
        results = sorted((dict(r.to_dict(), timestamp=None) for r in store.results()),
                         key=lambda r: (r["path"], r["model"]))
        runs = [{k: r[k] for k in ("model", "model_version", "model_sha256", "threshold", "folder", "status")}
                for r in store.runs()]
        audit = []
        for e in store.audit():
            details = {k: v for k, v in e["details"].items() if k != "run_id"}
            if e["action"] == "report_exported":
                assert details["path"] == out_path
                details["path"] = "<out>"
            audit.append((e["actor"], e["action"], details))
        reviews = {p: {k: r[k] for k in ("label", "reviewer")} for p, r in store.reviews().items()}
    # The app runs two models side by side, the command line one after the other: predictions, run entries and
    # each model's shift verdict are compared per model, the rest (review, export) in order.
    run_actions = ("prediction", "run_started", "run_finished", "shift_test")
    per_run = sorted((a for a in audit if a[1] in run_actions), key=repr)
    others = [a for a in audit if a[1] not in run_actions]
    runs.sort(key=lambda r: r["model"])
    return {"results": results, "runs": runs, "per_run": per_run, "audit": others, "reviews": reviews}


def _csv_rows(path: str) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [dict(r, timestamp="", review_time="") for r in reader]
    return list(reader.fieldnames), rows


@pytest.mark.parametrize("n_models", [1, 2])
def test_cli_and_app_give_the_same_session_csv_and_audit(qtbot, tmp_path, image_folder, n_models):
    from core.models.bundle import ModelCard, save_bundle
    from core.cli import main
    from desktop_app.mainwindow import MainWindow
    from desktop_app.settings.store import AppSettings
    from tests.helpers import make_tiny_bundle, make_tiny_model

    folder = image_folder(n_per_class=3)
    (folder / "other" / "broken.jpg").write_bytes(b"not a jpeg")
    models = tmp_path / "models"
    bundles = [make_tiny_bundle(models / "tiny_a", name="tiny_a")]
    if n_models == 2:  # a second model that calls itself Xception, so the app offers "Both"
        card = ModelCard(name="tiny_b", version="0.0.1", architecture="xception", input_size=32, threshold=0.5)
        bundles.append(save_bundle(make_tiny_model(32, seed=1), card, models / "tiny_b"))

    # The command line, with a review added through the workspace as the app would.
    cli_session, cli_csv = tmp_path / "cli_session", str(tmp_path / "cli.csv")
    args = ["classify", str(folder), "--session", str(cli_session), "--quiet", "--batch-size", "4"]
    for b in bundles:
        args += ["--model", str(b)]
    assert main(args) == 0
    from core.store.workspace import Workspace

    from core.models.bundle import read_card

    with Workspace.open(folder, cli_session, actor=default_actor()) as ws:
        for b in bundles:   # the cards classify met (their bands and limits word the needs_review column)
            card = read_card(b)
            ws.cards[card.key] = card
        first = ws.paths[0]
        ws.review(first, "not_mpox")
        ws.export_csv(cli_csv)

    # The app: same folder, same models, a review of the same photo, CSV export.
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    settings.batch_size = 4
    settings.reviewer = default_actor()
    window = MainWindow(settings, models_dir=models, sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    if n_models == 2:
        window.select_model("Both")
    assert window.open_folder(folder)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as blocker:
        assert window.run()
    summary = blocker.args[0]
    assert summary["status"] == "finished" and summary["total"] == 7 and summary["kept"] == 7
    assert summary["errors"] == 1  # photos, whatever the number of models
    window.review(window.model.row_of(first), "not_mpox")
    app_csv = window.export_csv(str(tmp_path / "app.csv"))
    assert app_csv
    app_session = window.session.session_dir
    window.close()

    cli_view, app_view = _session_view(cli_session, cli_csv), _session_view(app_session, app_csv)
    assert cli_view["results"] == app_view["results"]
    assert cli_view["runs"] == app_view["runs"]
    assert cli_view["per_run"] == app_view["per_run"]
    assert cli_view["reviews"] == app_view["reviews"] == {first: {"label": "not_mpox", "reviewer": default_actor()}}
    assert cli_view["audit"] == app_view["audit"]
    assert [a[1] for a in cli_view["audit"]] == ["review", "report_exported"]
    # Each model's verdict on what it stored (session format 5), the same from both faces.
    assert sum(a[1] == "shift_test" for a in cli_view["per_run"]) == n_models
    assert sum(a[1] == "run_finished" and a[2]["status"] == "finished" for a in cli_view["per_run"]) == n_models

    cli_cols, cli_rows = _csv_rows(cli_csv)
    app_cols, app_rows = _csv_rows(app_csv)
    assert cli_cols == app_cols and "reviewer_label" in cli_cols
    assert cli_rows == app_rows and len(cli_rows) == 7  # one row per photo
    if n_models == 2:
        assert "agreement" in cli_cols and "p_mpox__tiny_b" in cli_cols
