"""Wizard guardrails: too few photos refused, a plain paired verdict, Save only after Keep, a confirm
before a trained model is thrown away, bundles saved to the user's folder, the bar one way per phase."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QMessageBox  # noqa: E402

from desktop_app.retrain.progress import PhaseProgress  # noqa: E402
from desktop_app.retrain.verdict import paired_verdict  # noqa: E402
from desktop_app.retrain.wizard import (MIN_PER_CLASS, MIN_PER_CLASS_SPLIT, RetrainWizard, data_problem,  # noqa: E402
                                        user_models_dir)

TIMEOUT_MS = 120_000


def test_eight_reviewed_photos_are_refused_with_a_clear_message(qtbot, tmp_path, image_folder):
    pytest.importorskip("core.learning.datasets")
    folder = image_folder(n_per_class=4)
    items = [(str(p), "mpox" if p.parent.name == "mpox" else "not_mpox") for p in sorted(folder.rglob("*.jpg"))]
    w = RetrainWizard(None, models_dir=tmp_path / "models", current=[], session_items=items)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.data_ready, timeout=TIMEOUT_MS):
        w.data_page.use_session()
    assert not w.data_page.isComplete()
    text = w.data_page.status.text()
    assert "Too few photos" in text and f"at least {MIN_PER_CLASS}" in text
    w.host.shutdown()


def test_data_problem_names_the_split_and_class_that_is_short():
    enough = {"train": {"mpox": 20, "not_mpox": 20}, "val": {"mpox": 6, "not_mpox": 5}, "test": {"mpox": 5}}
    assert data_problem(enough) == ""
    short_val = {"train": {"mpox": 20, "not_mpox": 20}, "val": {"mpox": 6, "not_mpox": 2}}
    message = data_problem(short_val)
    assert "validation split has 2 not mpox" in message and f"at least {MIN_PER_CLASS_SPLIT}" in message
    assert "training split has 0 mpox" in data_problem({"train": {"not_mpox": 20}, "val": {"mpox": 12, "not_mpox": 5}})


def _preds(correct: list[bool]) -> list[dict]:
    return [{"path": f"p{i}", "label": "mpox", "prediction": "mpox" if ok else "not_mpox"}
            for i, ok in enumerate(correct)]


def test_paired_verdict_says_better_worse_or_not_measurably_different():
    current = {"n": 40, "predictions": _preds([True] * 20 + [False] * 20)}
    better = {"n": 40, "predictions": _preds([True] * 20 + [True] * 15 + [False] * 5)}
    assert paired_verdict(better, current).word == "better"
    worse = {"n": 40, "predictions": _preds([False] * 14 + [True] * 6 + [False] * 20)}
    assert paired_verdict(worse, current).word == "worse"
    # Two photos can never show a difference, whatever the point estimates say.
    tiny_new = {"n": 2, "predictions": _preds([True, True])}
    tiny_cur = {"n": 2, "predictions": _preds([False, False])}
    verdict = paired_verdict(tiny_new, tiny_cur)
    assert verdict.word == "not measurably different" and verdict.n == 2
    assert "not measurably different" in verdict.text and "2 validation photos" in verdict.text
    assert paired_verdict(better, None).word == "no comparison"


def test_retrain_bar_moves_one_way_within_a_phase_and_names_it():
    bar = PhaseProgress()
    seen = []
    # What core.learning.training reports: batches restart every epoch, epoch ends in between.
    for stage, done, total, msg in [("features", 5, 10, "computing embeddings"),
                                    ("features", 10, 10, "computing embeddings"),
                                    ("head", 5, 6, "head: epoch 1/3"), ("head", 1, 3, "head: epoch 1 loss 0.6"),
                                    ("head", 1, 6, "head: epoch 2/3"), ("head", 6, 6, "head: epoch 2/3"),
                                    ("head", 2, 3, "head: epoch 2 loss 0.5"), ("head", 1, 6, "head: epoch 3/3")]:
        new, fraction, label = bar.update(stage, done, total, msg)
        seen.append((stage, new, fraction, label))
    head = [f for s, _n, f, _l in seen if s == "head"]
    assert head == sorted(head) and head[0] > 0.2
    assert [n for _s, n, _f, _l in seen] == [True, False, True, False, False, False, False, False]
    assert seen[0][3].startswith("Step 1: Computing features") and seen[2][3].startswith("Step 2: Training the head")


def test_save_needs_keep_cancel_after_training_asks_and_the_default_folder_is_the_users(qtbot, tmp_path):
    w = RetrainWizard(None, current=[], session_items=[])
    qtbot.addWidget(w)
    assert w.models_dir == user_models_dir()
    from core.models.bundle import default_models_dir

    assert w.models_dir.resolve() != default_models_dir().resolve()
    page = w.save_page
    page.initializePage()
    assert not page.save_button.isEnabled() and not page.isComplete()
    page.discard_choice.setChecked(True)
    assert not page.save_button.isEnabled() and page.isComplete()
    page.save_choice.setChecked(True)
    assert page.save_button.isEnabled()

    # Never into the shipped models folder, never over an existing bundle.
    w.models_dir = default_models_dir()
    assert "shipped models folder" in w.target_problem()
    w.models_dir = tmp_path
    w.target_dir().mkdir()
    assert "already exists" in w.target_problem()

    # A trained, unsaved model: Cancel asks first, and only Discard closes.
    w.show()
    w.train_page.done = True
    page.save_choice.setChecked(True)
    w.reject()
    assert w.isVisible() and w.discard_box is not None and w.discard_box.isVisible()
    w.discard_box.button(QMessageBox.StandardButton.Cancel).click()
    assert w.isVisible()
    w.reject()
    w.discard_box.button(QMessageBox.StandardButton.Discard).click()
    assert not w.isVisible()
    w.host.shutdown()


def test_the_picker_lists_bundles_the_wizard_saved_in_the_users_model_folder(tmp_path):
    import shutil
    from pathlib import Path

    from PySide6.QtCore import QStandardPaths

    from desktop_app.mainwindow import scan_bundles

    card = Path(__file__).resolve().parent.parent / "models" / "mobilenetv2" / "model_card.json"
    if not card.is_file():
        pytest.skip("the shipped mobilenetv2 bundle is not in this checkout")
    QStandardPaths.setTestModeEnabled(True)   # ~/.qttest: never the real user's folder
    try:
        target = user_models_dir() / "retrained-test-bundle"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(card, target / "model_card.json")
        assert target in [p for p, _c in scan_bundles(None)]
        assert target not in [p for p, _c in scan_bundles(tmp_path)]   # an explicit folder is used alone
    finally:
        shutil.rmtree(user_models_dir() / "retrained-test-bundle", ignore_errors=True)
        QStandardPaths.setTestModeEnabled(False)
