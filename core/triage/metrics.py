"""Metrics of p(mpox) against reference labels: point metrics at a threshold, ranking metrics (ROC-AUC,
PR-AUC) from p(mpox) itself, calibration error (15 equal-width bins), and bootstrap 95% intervals. The same code
measures a model in training and evaluation (core.learning.evaluation) and a folder's agreement with its
reviewers (core.triage.agreement)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from core.records import LABEL_MPOX

ECE_BINS = 15
POINT_METRICS = ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc", "pr_auc", "brier", "ece")


def as_binary(y: Sequence) -> np.ndarray:
    """0/1 targets from 0/1 numbers, booleans or labels (`mpox` is 1, anything else 0)."""
    arr = np.asarray(y)
    if arr.dtype.kind in "USO":  # strings or objects: label names
        return np.array([1 if str(v) == LABEL_MPOX else 0 for v in arr], dtype=np.int64)
    return arr.astype(np.int64).reshape(-1)


def expected_calibration_error(y_true: Sequence, p: Sequence, n_bins: int = ECE_BINS) -> float:
    """ECE of p(mpox) over `n_bins` equal-width bins (the last bin includes 1.0)."""
    y = as_binary(y_true).astype(np.float64)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if len(p) == 0:
        return float("nan")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=n_bins) - np.bincount(idx, weights=p, minlength=n_bins))
    # sum over bins of |B|/n * |mean y - mean p| = sum |sum y - sum p| / n
    return float(gap[count > 0].sum() / len(p))


def reliability_table(y_true: Sequence, p: Sequence, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per-bin count, mean p and observed mpox fraction (the reliability diagram's data)."""
    y = as_binary(y_true).astype(np.float64)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int(m.sum()),
                     "mean_p": float(p[m].mean()) if m.any() else float("nan"),
                     "frac_mpox": float(y[m].mean()) if m.any() else float("nan")})
    return rows


def _point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import (accuracy_score, average_precision_score, brier_score_loss, f1_score,
                                 precision_score, recall_score, roc_auc_score)

    pred = (p >= threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "sensitivity": float(recall_score(y, pred, zero_division=0)),
        "specificity": float(recall_score(1 - y, 1 - pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }
    return out


def evaluate_probabilities(y_true: Sequence, p_mpox: Sequence, threshold: float = 0.5, n_bootstrap: int = 1000,
                           seed: int = 0) -> dict[str, Any]:
    """All metrics at `threshold`, the confusion matrix and bootstrap 95% intervals.

    Returns {accuracy, precision, sensitivity, recall (= sensitivity), specificity, f1, roc_auc, pr_auc,
    brier, ece, n, n_mpox, threshold, confusion: {tn, fp, fn, tp, matrix}, ci95: {metric: [lo, hi]}}.
    """
    from sklearn.metrics import confusion_matrix

    y = as_binary(y_true)
    p = np.asarray(p_mpox, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) == 0:
        raise ValueError("nothing to evaluate: no samples")
    out: dict[str, Any] = _point_metrics(y, p, threshold)
    out["recall"] = out["sensitivity"]
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1]).ravel())
    out.update(n=int(len(y)), n_mpox=int(y.sum()), threshold=float(threshold),
               confusion={"tn": tn, "fp": fp, "fn": fn, "tp": tp, "matrix": [[tn, fp], [fn, tp]],
                          "rows": "true not_mpox, true mpox", "cols": "predicted not_mpox, predicted mpox"})
    out["ci95"] = bootstrap_ci(y, p, threshold, n_bootstrap, seed) if n_bootstrap else {}
    return out


def fast_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The same metrics as scikit-learn gives, in plain numpy (the bootstrap calls this thousands of times;
    tests check it against scikit-learn)."""
    from scipy.stats import rankdata

    y = y.astype(np.int64)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & neg))
    fn = n_pos - tp
    out = {
        "accuracy": float(np.mean(pred == pos)),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "sensitivity": tp / n_pos if n_pos else 0.0,
        "specificity": (n_neg - fp) / n_neg if n_neg else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p),
        "roc_auc": float("nan"),
        "pr_auc": float("nan"),
    }
    if n_pos and n_neg:
        ranks = rankdata(p)  # average ranks handle ties as the Mann-Whitney statistic does
        out["roc_auc"] = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        order = np.argsort(-p, kind="mergesort")
        ps, ys = p[order], y[order]
        last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]  # last index of each distinct score
        tps = np.cumsum(ys)[last]
        precision = tps / (last + 1)
        recall = tps / n_pos
        out["pr_auc"] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return out


def bootstrap_ci(y: np.ndarray, p: np.ndarray, threshold: float, n_bootstrap: int = 1000,
                 seed: int = 0) -> dict[str, list[float]]:
    """Percentile 95% intervals from resampling images with replacement (resamples with one class are
    skipped for the ranking metrics)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    n = len(y)
    draws: dict[str, list[float]] = {k: [] for k in POINT_METRICS}
    for _ in range(int(n_bootstrap)):
        idx = rng.integers(0, n, n)
        for k, v in fast_metrics(y[idx], p[idx], threshold).items():
            if not np.isnan(v):
                draws[k].append(v)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else [float("nan")] * 2
            for k, v in draws.items()}
