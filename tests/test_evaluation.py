"""Evaluation: metrics agree with scikit-learn, ECE has its textbook value, thresholds meet sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, brier_score_loss, f1_score, precision_score,
                             recall_score, roc_auc_score)

from core.learning.evaluation import choose_threshold, save_plots
from core.triage.metrics import evaluate_probabilities, expected_calibration_error, fast_metrics

Y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1])
P = np.array([0.05, 0.20, 0.35, 0.60, 0.10, 0.40, 0.70, 0.80, 0.95, 0.55, 0.45, 0.30])


def test_metrics_match_scikit_learn_on_a_fixed_case():
    m = evaluate_probabilities(Y, P, threshold=0.5, n_bootstrap=0)
    pred = (P >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(Y, pred))
    assert m["precision"] == pytest.approx(precision_score(Y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(Y, pred)) == m["recall"]
    assert m["specificity"] == pytest.approx(recall_score(1 - Y, 1 - pred))
    assert m["f1"] == pytest.approx(f1_score(Y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y, P))   # from probabilities, not labels
    assert m["pr_auc"] == pytest.approx(average_precision_score(Y, P))
    assert m["brier"] == pytest.approx(brier_score_loss(Y, P))
    # Hand count at 0.5: TP 4 (0.70, 0.80, 0.95, 0.55), FN 2, FP 1 (0.60), TN 5.
    assert m["confusion"]["matrix"] == [[5, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(9 / 12)
    assert m["roc_auc"] == pytest.approx(30 / 36)  # 30 of 36 (mpox, other) pairs ranked right


def test_label_names_are_accepted_as_targets():
    names = np.where(Y == 1, "mpox", "not_mpox")
    assert evaluate_probabilities(names, P, 0.5, n_bootstrap=0)["f1"] == pytest.approx(
        evaluate_probabilities(Y, P, 0.5, n_bootstrap=0)["f1"])


@pytest.mark.parametrize("seed", range(4))
def test_fast_bootstrap_metrics_equal_scikit_learn_including_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.random(80), 1)  # many ties
    fast = fast_metrics(y, p, 0.5)
    slow = evaluate_probabilities(y, p, 0.5, n_bootstrap=0)
    for k, v in fast.items():
        assert v == pytest.approx(slow[k], abs=1e-12), k


def test_ece_has_its_known_value():
    # Bin [0.067, 0.133): p 0.1, 0.1 with labels 0, 1 -> |0.5 - 0.1| * 2/4 = 0.2.
    # Bin [0.867, 0.933): p 0.9, 0.9 with labels 1, 1 -> |1.0 - 0.9| * 2/4 = 0.05.
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.25)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == pytest.approx(0.0)  # p = 1.0 falls in the last bin


def test_bootstrap_intervals_bracket_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.4 + rng.random(200) * 0.6, 0, 1)
    a = evaluate_probabilities(y, p, 0.5, n_bootstrap=300, seed=1)
    b = evaluate_probabilities(y, p, 0.5, n_bootstrap=300, seed=1)
    assert a["ci95"] == b["ci95"]
    for k in ("accuracy", "roc_auc", "sensitivity", "ece"):
        lo, hi = a["ci95"][k]
        assert lo <= a[k] <= hi and lo < hi


def test_threshold_is_the_highest_meeting_the_sensitivity_target():
    thr, reason = choose_threshold(Y, P, min_sensitivity=0.9)
    pos = P[Y == 1]
    assert np.mean(pos >= thr) >= 0.9
    # Any higher threshold that changes a decision loses sensitivity: the lowest mpox score (0.30) must pass.
    assert 0.20 < thr <= 0.30
    assert "sensitivity" in reason and "0.90" in reason
    thr80, _ = choose_threshold(Y, P, min_sensitivity=0.8)
    assert thr80 > thr and np.mean(pos >= thr80) >= 0.8


def test_plots_are_written_as_png(tmp_path):
    history = [{"phase": "head", "epoch": i, "loss": 1 / (i + 1), "accuracy": 0.5 + i / 20, "val_loss": 1.1 / (i + 1),
                "val_accuracy": 0.5} for i in range(5)]
    files = save_plots(Y, P, 0.5, tmp_path, history=history, title="t")
    assert set(files) == {"roc", "confusion", "reliability", "training_curves"}
    for f in files.values():
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_fall_back_to_pil_without_matplotlib(tmp_path, monkeypatch):
    import core.learning.evaluation as ev

    monkeypatch.setattr(ev, "_mpl", lambda: None)
    files = ev.save_plots(Y, P, 0.5, tmp_path, history=[{"loss": 1.0, "val_loss": 1.2}], title="t")
    for f in files.values():
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
