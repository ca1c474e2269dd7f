"""The retrain wizard in the clinic install (no TensorFlow, issue 24): training's need for the `[train]` extra is
said on the first page with Adapt offered, nothing claims to load TensorFlow, the parent is the picker's model
of that architecture, and a failure leaves no live control."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("pytestqt")

from desktop_app.retrain.common import parent_for  # noqa: E402

ITEMS = [(f"/site/p{i}.jpg", "mpox" if i % 2 else "not_mpox") for i in range(24)]


def card(name: str, version: str, arch: str, threshold: float = 0.5):
    return SimpleNamespace(name=name, version=version, architecture=arch, threshold=threshold,
                           display_name=f"{name} {version}", files={})


def _wizard(qtbot, monkeypatch, can_train: bool, **kw):
    import desktop_app.retrain.wizard as wizard_module

    monkeypatch.setattr(wizard_module, "training_available", lambda: can_train)
    kw.setdefault("current", [])
    kw.setdefault("session_items", ITEMS)
    w = wizard_module.RetrainWizard(None, models_dir=kw.pop("models_dir", None), **kw)
    qtbot.addWidget(w)
    w.show()
    return w


def test_without_tensorflow_the_first_page_says_training_needs_the_train_extra_and_offers_adapt(qtbot, monkeypatch,
                                                                                                 tmp_path):
    """Issue 24: TensorFlow was first mentioned on page 3, after a failure."""
    w = _wizard(qtbot, monkeypatch, False, models_dir=tmp_path / "user")
    page = w.data_page
    assert w.currentPage() is page
    assert page.train_note.isVisible()
    assert "needs TensorFlow" in page.train_note.text() and "mpox-triage[train]" in page.train_note.text()
    assert "Adapting" in page.train_note.text()
    assert not page.from_folder.isEnabled() and not page.from_session.isEnabled()
    assert not page.load_button.isEnabled()
    assert page.from_adapt.isChecked() and page.isComplete()
    w.next()
    assert w.currentPage() is w.adapt_page
    w.host.shutdown()


def test_with_tensorflow_the_first_page_has_no_train_extra_note(qtbot, monkeypatch, tmp_path):
    w = _wizard(qtbot, monkeypatch, True, models_dir=tmp_path / "user")
    assert not w.data_page.train_note.isVisible() and w.data_page.from_folder.isEnabled()
    w.host.shutdown()


def test_the_adapt_run_page_never_claims_to_load_tensorflow(qtbot, monkeypatch, tmp_path):
    """Issue 24: the adapt page said "loading TensorFlow and the model" in an install that has none."""
    w = _wizard(qtbot, monkeypatch, False, models_dir=tmp_path / "user")
    monkeypatch.setattr(w, "start_adapt", lambda: None)
    w.adapt_run_page.initializePage()
    assert "TensorFlow" not in w.adapt_run_page.message.text()
    w.host.shutdown()


def test_a_failed_training_leaves_no_live_controls_and_the_charts_stop_waiting(qtbot, monkeypatch, tmp_path):
    """Issue 24: after "needs TensorFlow" the charts kept saying "waiting for the first epoch..." and Cancel
    training stayed enabled."""
    w = _wizard(qtbot, monkeypatch, True, models_dir=tmp_path / "user")
    page = w.train_page
    page.cancel_button.setEnabled(True)
    page.progress.setRange(0, 0)            # busy, as while loading
    with qtbot.waitSignal(w.training_finished) as done:
        w.host.worker.failed.emit("train", "training needs TensorFlow, which this install does not include")
    assert done.args == ["failed"]
    assert not page.cancel_button.isEnabled() and page.progress.maximum() > 0
    assert "waiting" not in page.loss.empty_text and "waiting" not in page.acc.empty_text
    assert "Training stopped: training needs TensorFlow" in page.message.text()
    w.host.shutdown()


def test_the_parent_is_the_pickers_model_of_that_architecture_when_combined_is_selected(qtbot, monkeypatch,
                                                                                          tmp_path):
    """Issue 24: "Current model (parent): none loaded for this architecture" while MobileNetV2 1.3.0 was in the
    picker (the picker's selection was the combined model)."""
    combined = card("combined", "1.3.0", "combined")
    old, new = card("mobilenetv2", "1.2.0", "mobilenetv2"), card("mobilenetv2", "1.3.0", "mobilenetv2", 0.47)
    local = card("mobilenetv2-site", "1.3.0+site.2026-12-07", "mobilenetv2")
    bundles = [(Path("m/combined"), combined), (Path("m/old"), old), (Path("m/new"), new), (Path("m/site"), local)]
    assert parent_for("mobilenetv2", [(Path("m/combined"), combined)], bundles) == ("m/new", new)
    assert parent_for("mobilenetv2", [(Path("m/site"), local)], bundles) == ("m/site", local)   # the selection
    assert parent_for("xception", [], bundles) == (None, None)
    w = _wizard(qtbot, monkeypatch, True, models_dir=tmp_path / "user", current=[(Path("m/combined"), combined)],
                bundles=bundles)
    w.model_page.arch.setCurrentIndex(w.model_page.arch.findData("mobilenetv2"))
    assert w.model_page.parent_label.text().startswith("mobilenetv2 1.3.0 (threshold 0.47)")
    assert w.model_page.version.text() == "1.3.1"
    w.host.shutdown()


def test_the_adapt_pages_and_the_wizard_do_not_import_each_other():
    """Issue 24: desktop_app/retrain/wizard.py <-> adapt_pages.py was an import circle."""
    source = Path(__file__).resolve().parents[1] / "desktop_app" / "retrain" / "adapt_pages.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert "desktop_app.retrain.wizard" not in imported
    assert "desktop_app.retrain.common" in imported
