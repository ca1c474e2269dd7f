"""Shared GUI-test builders: a main window over a folder with synthetic results (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from core.records import ResultRecord
from desktop_app.mainwindow import MainWindow
from desktop_app.settings.store import AppSettings
from tests.helpers import make_image_folder


def settings_at(tmp_path: Path, reviewer: str | None = "tester") -> AppSettings:
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    if reviewer is not None:
        settings.reviewer = reviewer
    return settings


def record(path, p: float | None, flag: str = "", ood: float | None = None, sha: str = "sha-a",
           model: str = "m", version: str = "1.0.0", error: str = "") -> ResultRecord:
    if error:
        return ResultRecord(path=str(path), status="error", model=model, model_version=version, model_sha256=sha,
                            error=error)
    return ResultRecord(path=str(path), status="ok", p_mpox=p, prediction="mpox" if p >= 0.5 else "not_mpox",
                        flag=flag, ood_score=ood, model=model, model_version=version, model_sha256=sha, threshold=0.5)


def window_with_rows(qtbot, tmp_path: Path, reviewer: str | None = "tester", size=(1320, 820)):
    """A shown window over 6 generated photos + 1 broken file, with results for each (one model)."""
    folder = make_image_folder(tmp_path / "photos", n_per_class=3)
    broken = folder / "other" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    window = MainWindow(settings_at(tmp_path, reviewer), models_dir=tmp_path / "no-models",
                        sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    assert window.open_folder(folder)
    paths = sorted(window.paths)
    ok = [p for p in paths if p != str(broken)]
    probs = [0.10, 0.92, 0.48, 0.30, 0.75, 0.05]
    flags = ["", "", "uncertain", "", "", "out_of_scope"]
    recs = [record(p, pr, fl, ood=(0.9 if fl == "out_of_scope" else 0.2)) for p, pr, fl in zip(ok, probs, flags)]
    recs.append(record(broken, None, error=f"{broken}: cannot identify image file"))
    # The workspace holds the results (exports read it); the table shows them.
    for rec in recs:
        window.workspace.results.setdefault(rec.model_key, {})[rec.path] = rec
    window.model.add_records(recs)
    return window, folder, recs
