"""Issue 18, item 3: one card schema (core.models.card_schema, pydantic) used by core.models.bundle; a bad card is skipped with one
warning line in `models`, `classify` and the app's model list, never stops the app, never crashes the PDF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.models import bundle as bundle_mod
from core.models.bundle import CARD_FILE, BundleError, ModelCard, read_card
from core.models.card_schema import FORMAT_VERSION, card_problem, check_card, CardError
from core.cli import main
from core.reports.workspace_pdf import export_pdf
from tests.conftest import REPO
from tests.helpers import make_image_folder, make_tiny_bundle

BAD_CARDS = {
    "format_version_text": {"format_version": "abc"},
    "metrics_test_list": {"metrics": {"test": [1, 2]}},
    "runtime_text": {"extra": {"runtime": "fast"}},
    "components_number": {"extra": {"kind": "combined", "components": 5}},
    "operating_point_threshold": {"extra": {"operating_points": {"screening": {"threshold": "low"}}}},
    "parent_text": {"parent": "someone"},
    "intended_use_list": {"intended_use": ["triage"]},
}


def reseal(folder: Path, **changes) -> None:
    """Edit card fields and recompute its digest, as anyone with write access could."""
    data = json.loads((folder / CARD_FILE).read_text())
    data.update(changes)
    try:
        data["card_sha256"] = ModelCard.from_dict(dict(data)).content_digest()
    except BundleError:
        pass
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user-models")
    make_tiny_bundle(root / "good", name="good")
    return root


def with_bad(models_dir: Path, tmp_path: Path, case: str) -> Path:
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    shutil.copytree(models_dir / "good", root / "bad")
    reseal(root / "bad", name="bad", **BAD_CARDS[case])
    return root


def test_every_shipped_card_matches_the_schema():
    for folder in sorted(p for p in (REPO / "models").iterdir() if (p / CARD_FILE).is_file()):
        check_card(json.loads((folder / CARD_FILE).read_text()), str(folder))


def test_schema_format_version_is_the_bundles():
    assert FORMAT_VERSION == bundle_mod.FORMAT_VERSION


def test_known_extras_are_checked_and_unknown_extras_allowed():
    data = json.loads((REPO / "models" / "mobilenetv2" / CARD_FILE).read_text())
    data["extra"] = {**data.get("extra", {}), "operating_points": {"screening": {"threshold": 0.3, "uncertain_band": [0.2, 0.4],
                                                                      "note": "x"}},
                     "runtime": {"file": "m.tflite", "format": "tflite", "agreement": {"max_abs_diff_p": 1e-6},
                                 "delegate": "xnnpack"},
                     "something_new": {"any": [1, 2]}}
    check_card(data)
    data["extra"]["runtime"]["agreement"]["max_abs_diff_p"] = "tiny"
    with pytest.raises(CardError, match="'extra.runtime.agreement.max_abs_diff_p'"):
        check_card(data)


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_a_malformed_card_is_refused_with_one_line_naming_the_field(models_dir, tmp_path, case):
    root = with_bad(models_dir, tmp_path, case)
    with pytest.raises(BundleError) as info:
        read_card(root / "bad")
    message = str(info.value)
    field = next(iter(BAD_CARDS[case]))
    assert "\n" not in message and f"'{field}" in message, message


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_models_lists_the_good_bundles_and_warns_once_about_the_bad(models_dir, tmp_path, capsys, case):
    root = with_bad(models_dir, tmp_path, case)
    code = main(["models", "--models-dir", str(root)])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err
    assert "good" in out and "bad " not in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "bad" in warnings[0], err


def test_classify_with_an_unknown_model_and_a_bad_card_says_one_error_line(models_dir, tmp_path, capsys,
                                                                            monkeypatch):
    root = with_bad(models_dir, tmp_path, "format_version_text")
    monkeypatch.setenv("MPOX_TRIAGE_USER_MODELS_DIR", str(root))
    photos = make_image_folder(tmp_path / "photos", n_per_class=1, size=(32, 32))
    code = main(["classify", str(photos), "--model", "nosuch", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert len([line for line in err.splitlines() if line.startswith("warning:") and "bad" in line]) == 1


def test_the_app_starts_with_a_bad_card_lists_the_good_one_and_shows_a_warning(qtbot, models_dir, tmp_path):
    pytest.importorskip("pytestqt")
    from tests.gui_fixtures import settings_at
    from desktop_app.mainwindow import MainWindow

    root = with_bad(models_dir, tmp_path, "format_version_text")
    window = MainWindow(settings_at(tmp_path), models_dir=root, sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    assert [c.name for _p, c in window.bundles] == ["good"]
    assert len(window.model_problems) == 1 and "bad" in window.message.text()


def test_a_card_with_malformed_extras_never_crashes_the_pdf(tmp_path):
    pytest.importorskip("reportlab")
    from core.records import ResultRecord
    from core.store.workspace import Workspace

    photos = make_image_folder(tmp_path / "photos", n_per_class=1, size=(32, 32))
    bad = ModelCard(name="m", version="1", architecture="mobilenetv2", input_size=32, model_sha256="a" * 64,
                    extra={"runtime": "x", "components": 5}, metrics={"test": [1]}, parent="someone")
    assert card_problem(bad)
    with Workspace.open(photos) as ws:
        for p in ws.paths:
            ws.results.setdefault(bad.key, {})[p] = ResultRecord(p, "ok", 0.7, "mpox", model="m", model_version="1",
                                                                 model_sha256="a" * 64, threshold=0.5)
        ws.cards[bad.key] = bad
        out = export_pdf(ws, tmp_path / "r.pdf", [bad.key], cards=[bad])
    assert out.stat().st_size > 1000
