"""How a model's calls on a folder agree with reference labels (ground truth where known, else a reviewer's).

The figures come from core.learning.evaluation, the same code that measures a model in training and evaluation:
`evaluate_probabilities` when every record was called at one threshold, otherwise `bootstrap_ci` over each
record's own call. ROC curve and AUC are scikit-learn's. Used by the PDF report, one model at a time
(results of several models are never pooled).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from core.records import CALLS, LABEL_MPOX, LABEL_NOT_MPOX, ResultRecord

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
REVIEW_UNSURE = "unsure"
ENGINE_ONE_THRESHOLD = "core.triage.metrics.evaluate_probabilities"
ENGINE_OWN_CALLS = "core.triage.metrics.bootstrap_ci"


def lookup(table: dict[str, Any] | None, path: str) -> Any:
    """A path's entry whether the caller keyed it by the record's exact string or a normalised one."""
    if not table:
        return None
    hit = table.get(path)
    if hit is None:
        hit = table.get(os.path.normpath(str(path)))
    return hit


@dataclass
class Agreement:
    """One model's output against reference labels."""

    n: int
    from_truth: int
    from_review: int
    left_out_unsure: int
    left_out_error: int
    confusion: dict[str, int]                      # tp, fn, fp, tn
    sensitivity: float | None = None
    specificity: float | None = None
    ppv: float | None = None
    npv: float | None = None
    accuracy: float | None = None
    auc: float | None = None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)   # sensitivity, specificity, auc
    roc: tuple[np.ndarray, np.ndarray] | None = None                   # fpr, tpr
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = BOOTSTRAP_SEED
    engine: str = ENGINE_ONE_THRESHOLD               # which core.learning.evaluation function gave the intervals
    left_out_out_of_scope: int = 0                   # labelled, scored, but out of scope: no call


def reference_labels(records: Sequence[ResultRecord], reviews: dict[str, dict] | None,
                     truth: dict[str, str] | None) -> dict[int, str]:
    """Record index -> reference label, preferring ground truth over a reviewer's call."""
    out: dict[int, str] = {}
    for i, r in enumerate(records):
        t = lookup(truth, r.path)
        if t in (LABEL_MPOX, LABEL_NOT_MPOX):
            out[i] = t
            continue
        rv = lookup(reviews, r.path)
        if rv and rv.get("label") in (LABEL_MPOX, LABEL_NOT_MPOX):
            out[i] = rv["label"]
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _finite_ci(ci95: dict[str, list[float]], theirs: str) -> tuple[float, float] | None:
    lo, hi = ci95.get(theirs, [float("nan")] * 2)
    return (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None


def compute_agreement(records: Sequence[ResultRecord], reviews: dict[str, dict] | None = None,
                      truth: dict[str, str] | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> Agreement | None:
    """Confusion matrix of the records' own calls, ROC, and bootstrap 95% intervals; None without labels.

    `records` are one model's. Rates whose denominator is empty are None (the report prints "n/a").
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    from core.triage.metrics import bootstrap_ci, evaluate_probabilities

    refs = reference_labels(records, reviews, truth)
    if not refs:
        return None
    # An out-of-scope photo has no call to agree or disagree with: left out, and said so.
    scoped = [i for i in refs if records[i].ok and records[i].p_mpox is not None]
    idx = [i for i in scoped if records[i].prediction in CALLS]
    from_truth = sum(1 for i in idx if lookup(truth, records[i].path) in (LABEL_MPOX, LABEL_NOT_MPOX))
    unsure = sum(1 for r in records if (lookup(reviews, r.path) or {}).get("label") == REVIEW_UNSURE
                 and lookup(truth, r.path) is None)
    y = np.array([refs[i] == LABEL_MPOX for i in idx], dtype=bool)
    p = np.array([float(records[i].p_mpox) for i in idx], dtype=np.float64)
    pred = np.array([records[i].prediction == LABEL_MPOX for i in idx], dtype=bool)
    tp, fn = int(np.sum(y & pred)), int(np.sum(y & ~pred))
    fp, tn = int(np.sum(~y & pred)), int(np.sum(~y & ~pred))
    ag = Agreement(n=len(idx), from_truth=from_truth, from_review=len(idx) - from_truth,
                   left_out_unsure=unsure, left_out_error=sum(1 for i in refs if not records[i].ok),
                   confusion={"tp": tp, "fn": fn, "fp": fp, "tn": tn}, resamples=resamples, seed=seed,
                   left_out_out_of_scope=len(scoped) - len(idx))
    if not idx:
        return ag
    ag.sensitivity = _ratio(tp, tp + fn)
    ag.specificity = _ratio(tn, tn + fp)
    ag.ppv = _ratio(tp, tp + fp)
    ag.npv = _ratio(tn, tn + fn)
    ag.accuracy = _ratio(tp + tn, len(idx))
    both = bool(y.any() and (~y).any())
    if both:
        ag.auc = float(roc_auc_score(y, p))
        fpr, tpr, _ = roc_curve(y, p)
        ag.roc = (fpr, tpr)
    if not resamples:
        return ag

    thresholds = {records[i].threshold for i in idx}
    one = thresholds.pop() if len(thresholds) == 1 else None
    if one is not None and np.array_equal(pred, p >= float(one)):
        # Every call is p >= one threshold: the very numbers training and evaluation print.
        ci95 = evaluate_probabilities(y.astype(np.int64), p, threshold=float(one), n_bootstrap=resamples,
                                      seed=seed)["ci95"]
        calls_ci, rank_ci = ci95, ci95
        ag.engine = ENGINE_ONE_THRESHOLD
    else:
        # Records called at different (or unrecorded) thresholds: resample the calls themselves (a 0/1 score
        # at 0.5 reproduces each call); the same seed draws the same resamples for the ranking metric.
        calls_ci = bootstrap_ci(y.astype(np.int64), pred.astype(np.float64), 0.5, resamples, seed)
        rank_ci = bootstrap_ci(y.astype(np.int64), p, 0.5, resamples, seed) if both else {}
        ag.engine = ENGINE_OWN_CALLS
    for ours, source, theirs, present in (("sensitivity", calls_ci, "sensitivity", ag.sensitivity),
                                          ("specificity", calls_ci, "specificity", ag.specificity),
                                          ("auc", rank_ci, "roc_auc", ag.auc)):
        interval = _finite_ci(source, theirs) if present is not None else None
        if interval is not None:
            ag.ci[ours] = interval
    return ag
