"""Metrics from probabilities (scikit-learn), bootstrap intervals, threshold choice, and PNG plots.

Ranking metrics (ROC-AUC, PR-AUC) are computed from p(mpox), not from thresholded labels; the
threshold only affects accuracy, precision, sensitivity, specificity, F1 and the confusion matrix.
ECE here is the calibration error of p(mpox) itself: 15 equal-width bins over [0, 1], weighted
mean of |fraction of mpox in the bin - mean p(mpox) in the bin|.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.progress import CancelToken, ProgressFn
from core.triage.metrics import (
    ECE_BINS, POINT_METRICS, _point_metrics, as_binary, evaluate_probabilities, expected_calibration_error,
    reliability_table,
)

def paired_exact_p(first_only: int, second_only: int) -> float:
    """Two-sided exact McNemar test of two models on the same photos: the p-value of `first_only` photos right
    only under the first and `second_only` only under the second (scipy.stats.binomtest at 0.5); 1.0 when no
    photo tells them apart."""
    n = int(first_only) + int(second_only)
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(first_only), n, 0.5).pvalue)


def choose_threshold(y_true: Sequence, p: Sequence, min_sensitivity: float = 0.90) -> tuple[float, str]:
    """The highest threshold whose sensitivity on these (validation) images is >= `min_sensitivity`.

    Highest keeps specificity as good as the sensitivity target allows. The value sits halfway between
    the score of the last mpox image it must keep and the next lower score, so tiny calibration noise
    does not flip that image. Returns (threshold, reason for the model card).
    """
    y = as_binary(y_true)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        return 0.5, "no mpox images to choose a threshold on; default 0.5"
    k = int(np.ceil(min_sensitivity * len(pos) - 1e-9))  # mpox images that must score >= threshold
    k = min(max(k, 1), len(pos))
    edge = pos[k - 1]
    lower = p[p < edge]
    thr = float((edge + lower.max()) / 2) if len(lower) else float(edge)
    sens = float(np.mean(pos >= thr))
    spec = float(np.mean(p[y == 0] < thr)) if (y == 0).any() else float("nan")
    reason = (f"highest threshold with sensitivity >= {min_sensitivity:.2f} on the validation split "
              f"(there: sensitivity {sens:.3f}, specificity {spec:.3f}; {len(pos)} mpox, {int((y == 0).sum())} "
              "non-mpox images); triage must not miss cases, so false alarms are preferred to misses")
    return thr, reason


# ---------------------------------------------------------------------------------------------
# Bundles


def evaluate_bundle(bundle, dataset, progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                    n_bootstrap: int = 1000, threshold: float | None = None, batch_size: int = 32) -> dict[str, Any]:
    """Run a bundle on every sample of `dataset` (as the app would) and measure it.

    Photos the model calls out of scope get no call (core.records.decide): they are counted as `no_call`, outside
    accuracy, the confusion matrix and every other metric of p(mpox) (their p means nothing), and inside triage
    (they go to review). Returns the metrics of evaluate_probabilities over the photos with a call, plus model
    identity, `no_call`, flag counts, triage figures (core.models.operating_point.triage_from_review) over every scored
    photo, metrics per source and per fine label, and one prediction per image.
    """
    from core.triage.inference import InferenceEngine
    from core.records import CALLS

    samples = list(dataset.samples)
    engine = InferenceEngine(bundle, batch_size=batch_size, threshold=threshold)
    records = []
    for rec in engine.run([s.path for s in samples], progress=progress, cancel=cancel):
        records.append(rec)
    if cancel is not None:
        cancel.raise_if_cancelled()
    errors = [(s, r) for s, r in zip(samples, records) if not r.ok]
    scored = [(s, r) for s, r in zip(samples, records) if r.ok]
    if not scored:
        raise ValueError("no image could be scored: " + "; ".join(r.error for _, r in errors[:3]))
    pairs = [(s, r) for s, r in scored if r.prediction in CALLS]
    left = [(s, r) for s, r in scored if r.prediction not in CALLS]
    basis = "photos with a call"
    if not pairs:
        # Every photo was out of scope (e.g. a small model's embedding-distance limit, fitted on a few photos):
        # the figures of p(mpox) fall back to every scored photo, and say so, rather than leave a training run
        # without any measure of its model.
        pairs, basis = scored, f"every scored photo: none of the {len(scored)} got a call (all out of scope)"
    y = np.array([s.y for s, _ in pairs])
    p = np.array([r.p_mpox for _, r in pairs], dtype=np.float64)
    thr = engine.threshold
    out = evaluate_probabilities(y, p, thr, n_bootstrap=n_bootstrap)
    card = bundle.card
    out["model"] = {"name": card.name, "version": card.version, "sha256": card.model_sha256,
                    "architecture": card.architecture, "temperature": card.temperature,
                    "uncertain_band": list(card.uncertain_band), "ood_threshold": card.ood_threshold}
    n_left_mpox = sum(int(s.y) for s, _ in left)
    out["no_call"] = {"out_of_scope": len(left), "n_mpox": n_left_mpox, "n_other": len(left) - n_left_mpox,
                      "note": "out of scope: no mpox / not-mpox call, so outside accuracy and the confusion matrix; "
                              "they go to review, so triage counts them"}
    out["n_scored"] = len(scored)
    out["basis"] = basis
    flags = Counter(r.flag for _, r in scored)
    out["flags"] = {"uncertain": flags.get("uncertain", 0), "out_of_scope": flags.get("out_of_scope", 0),
                    "none": flags.get("", 0)}
    unflagged = np.array([r.flag == "" for _, r in pairs])
    if unflagged.any() and len(np.unique(y[unflagged])) == 2:
        out["unflagged"] = {k: v for k, v in evaluate_probabilities(y[unflagged], p[unflagged], thr,
                                                                     n_bootstrap=0).items()
                            if k in POINT_METRICS or k == "n"}
    # Triage as users feel it, over every scored photo (core.models.operating_point): an mpox photo counts when called
    # mpox OR flagged for review (out of scope included); another photo counts when cleared with no flag.
    from core.models.operating_point import TRIAGE_MEANING, records_review, triage_from_review

    out["triage"] = triage_from_review([s.y for s, _ in scored], records_review([r.prediction for _, r in scored],
                                                                                [r.flag for _, r in scored]))
    out["triage"]["meaning"] = dict(TRIAGE_MEANING)
    out["per_source"] = _grouped(pairs, y, p, thr, key=lambda s: s.source)
    out["per_fine_label"] = _grouped(pairs, y, p, thr, key=lambda s: s.fine_label)
    out["errors"] = [{"path": str(s.path), "error": r.error} for s, r in errors]
    out["predictions"] = [{"path": str(s.path), "label": s.label, "fine_label": s.fine_label, "source": s.source,
                           "split": s.split, "p_mpox": r.p_mpox, "prediction": r.prediction, "flag": r.flag,
                           "ood_score": r.ood_score, "scope_score": r.scope_score} for s, r in scored]
    return out


def _grouped(pairs, y: np.ndarray, p: np.ndarray, thr: float, key) -> dict[str, dict[str, float]]:
    keys = np.array([key(s) for s, _ in pairs])
    out = {}
    for k in sorted(set(keys)):
        m = keys == k
        pred = p[m] >= thr
        row: dict[str, float] = {"n": int(m.sum()), "n_mpox": int(y[m].sum())}
        if y[m].any():
            row["sensitivity"] = float(pred[y[m] == 1].mean())
        if (y[m] == 0).any():
            row["specificity"] = float((~pred[y[m] == 0]).mean())
        row["accuracy"] = float((pred == (y[m] == 1)).mean())
        if len(np.unique(y[m])) == 2:
            from sklearn.metrics import roc_auc_score
            row["roc_auc"] = float(roc_auc_score(y[m], p[m]))
        out[str(k)] = row
    return out


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars become Python numbers, NaN and infinities become None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): to_jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(x) for x in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    return value


def save_json(data: dict, path: str | os.PathLike) -> Path:
    """Write metrics as strict JSON (NaN becomes null so any JSON reader accepts it), atomically
    (core.store.outputs.write_text_atomic). The caller checked `path` with the output policy (core.store.outputs)."""
    from core.store.outputs import write_text_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False))
    return path


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib when installed, else simple PIL drawings)


def _mpl():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never a window, never Qt
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        return None


def save_plots(y_true: Sequence, p: Sequence, threshold: float, out_dir: str | os.PathLike,
               history: Sequence | None = None, title: str = "") -> dict[str, Path]:
    """Write roc.png, confusion.png, reliability.png (and training_curves.png with a history)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = as_binary(y_true)
    p = np.asarray(p, dtype=np.float64)
    plt = _mpl()
    files = {}
    files["roc"] = plot_roc(y, p, out_dir / "roc.png", threshold, title, plt)
    files["confusion"] = plot_confusion(y, p, threshold, out_dir / "confusion.png", title, plt)
    files["reliability"] = plot_reliability(y, p, out_dir / "reliability.png", title, plt)
    if history:
        files["training_curves"] = plot_history(history, out_dir / "training_curves.png", title, plt)
    return files


def plot_roc(y: np.ndarray, p: np.ndarray, path: Path, threshold: float | None = None, title: str = "",
             plt=None) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, thr = roc_curve(y, p)
    auc = roc_auc_score(y, p)
    label = f"ROC-AUC {auc:.3f}"
    if plt is None:
        return _pil_lines(path, [(fpr, tpr, label)], f"ROC {title}".strip(), "1 - specificity", "sensitivity",
                          diagonal=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    if threshold is not None:
        pred = p >= threshold
        sens = pred[y == 1].mean() if (y == 1).any() else np.nan
        fp = pred[y == 0].mean() if (y == 0).any() else np.nan
        ax.plot([fp], [sens], "o", c="C3", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC {title}".strip(), xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(y: np.ndarray, p: np.ndarray, threshold: float, path: Path, title: str = "", plt=None) -> Path:
    pred = (p >= threshold).astype(int)
    m = np.array([[np.sum((y == i) & (pred == j)) for j in (0, 1)] for i in (0, 1)])
    names = ["not_mpox", "mpox"]
    if plt is None:
        return _pil_confusion(path, m, names, f"Confusion (t={threshold:.3f}) {title}".strip())
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=120)
    ax.imshow(m, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=14)
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion (t={threshold:.3f}) {title}".strip())
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_reliability(y: np.ndarray, p: np.ndarray, path: Path, title: str = "", plt=None) -> Path:
    rows = [r for r in reliability_table(y, p) if r["n"] > 0]
    ece = expected_calibration_error(y, p)
    xs = np.array([r["mean_p"] for r in rows])
    ys = np.array([r["frac_mpox"] for r in rows])
    if plt is None:
        return _pil_lines(path, [(xs, ys, f"ECE {ece:.3f}")], f"Reliability {title}".strip(), "mean p(mpox)",
                          "fraction mpox", diagonal=True, markers=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.plot(xs, ys, "o-", c="C0", label=f"model (ECE {ece:.3f}, {ECE_BINS} bins)")
    for r in rows:
        ax.annotate(str(r["n"]), (r["mean_p"], r["frac_mpox"]), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    ax.set(xlabel="mean predicted p(mpox)", ylabel="observed fraction mpox", xlim=(0, 1), ylim=(0, 1.01),
           title=f"Reliability {title}".strip())
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _history_rows(history: Sequence) -> list[dict]:
    return [h if isinstance(h, dict) else vars(h) for h in history]


def plot_history(history: Sequence, path: Path, title: str = "", plt=None) -> Path:
    """Loss and accuracy per epoch (train and val), one colour per training phase."""
    rows = _history_rows(history)
    step = np.arange(1, len(rows) + 1)
    series = {k: np.array([np.nan if r.get(k) is None else r[k] for r in rows], dtype=float)
              for k in ("loss", "val_loss", "accuracy", "val_accuracy")}
    if plt is None:
        return _pil_lines(path, [(step, series[k], k) for k in series if np.isfinite(series[k]).any()],
                          f"Training {title}".strip(), "epoch", "value")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), dpi=120)
    for ax, (a, b, name) in zip(axes, (("loss", "val_loss", "loss"), ("accuracy", "val_accuracy", "accuracy"))):
        ax.plot(step, series[a], "-", label=f"train {name}")
        if np.isfinite(series[b]).any():
            ax.plot(step, series[b], "-", label=f"val {name}")
        phases = [r.get("phase", "") for r in rows]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, c="grey", ls=":", lw=1)
        ax.set(xlabel="epoch (all phases)", title=name)
        ax.legend()
    fig.suptitle(f"Training {title}".strip())
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _pil_lines(path: Path, series, title: str, xlabel: str, ylabel: str, diagonal: bool = False,
               markers: bool = False) -> Path:
    from PIL import Image, ImageDraw

    w, h, m = 520, 480, 56
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    xs = np.concatenate([np.asarray(s[0], float) for s in series]) if series else np.array([0.0, 1.0])
    ys = np.concatenate([np.asarray(s[1], float) for s in series]) if series else np.array([0.0, 1.0])
    xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
    x0, x1 = (0.0, 1.0) if diagonal else (float(xs.min(initial=0)), float(xs.max(initial=1)))
    y0, y1 = (0.0, 1.0) if diagonal else (float(ys.min(initial=0)), float(ys.max(initial=1)))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def to_px(x, y):
        return m + (x - x0) / (x1 - x0) * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m)

    d.rectangle([m, m, w - m, h - m], outline="black")
    if diagonal:
        d.line([to_px(0, 0), to_px(1, 1)], fill=(160, 160, 160))
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for k, (sx, sy, label) in enumerate(series):
        pts = [to_px(a, b) for a, b in zip(np.asarray(sx, float), np.asarray(sy, float)) if np.isfinite(a + b)]
        c = colours[k % len(colours)]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        if markers:
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
        d.text((m + 8, m + 8 + 14 * k), label, fill=c)
    d.text((m, 16), title, fill="black")
    d.text((w // 2 - 40, h - m + 20), xlabel, fill="black")
    d.text((4, m - 20), ylabel, fill="black")
    d.text((m - 10, h - m + 4), f"{x0:g}", fill="black")
    d.text((w - m - 10, h - m + 4), f"{x1:g}", fill="black")
    d.text((m - 40, m - 6), f"{y1:.3g}", fill="black")
    im.save(path)
    return path


def _pil_confusion(path: Path, mat: np.ndarray, names: list[str], title: str) -> Path:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (420, 380), "white")
    d = ImageDraw.Draw(im)
    d.text((20, 12), title, fill="black")
    top = max(int(mat.max()), 1)
    for i in range(2):
        for j in range(2):
            shade = int(255 - 180 * mat[i, j] / top)
            x, y = 120 + j * 130, 70 + i * 130
            d.rectangle([x, y, x + 128, y + 128], fill=(shade, shade, 255), outline="black")
            d.text((x + 55, y + 58), str(int(mat[i, j])), fill="black")
    for k, n in enumerate(names):
        d.text((130 + k * 130, 50), f"pred {n}", fill="black")
        d.text((10, 130 + k * 130), f"true {n}", fill="black")
    im.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Protocols: cross-validation and leave-one-collection-out of a training recipe on cached embeddings


def mean_ci95(values: Sequence[float]) -> dict[str, Any]:
    """Mean of per-fold values with a Student-t 95% interval (n - 1 degrees of freedom)."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "ci95": [float("nan")] * 2, "n": 0}
    m = float(v.mean())
    if len(v) < 2:
        return {"mean": m, "ci95": [m, m], "n": int(len(v))}
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return {"mean": m, "ci95": [max(0.0, m - half), min(1.0, m + half)], "n": int(len(v))}


def _inner_calibration(fit, x: np.ndarray, y: np.ndarray, groups: np.ndarray, min_sensitivity: float,
                       seed: int) -> tuple[float, float]:
    """(temperature, threshold) from cross-validated logits inside the training data (3 group folds)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from core.models.calibration import apply_temperature, fit_temperature

    z = np.full(len(y), np.nan)
    k = int(max(2, min(3, np.bincount(y, minlength=2).min())))
    for tr, te in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups):
        z[te] = fit(x[tr], y[tr])(x[te][:, 0])
    t = fit_temperature(z, y)
    thr, _ = choose_threshold(y, apply_temperature(z, t), min_sensitivity)
    return t, thr


def recipe_protocol(x: np.ndarray, y: Sequence[int], groups: Sequence[str], sources: Sequence[str], protocol: str,
                    fit, *, min_sensitivity: float = 0.90, seed: int = 0, n_splits: int = 5,
                    n_bootstrap: int = 500, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Score a training recipe by `protocol` ("cv5" or "loco") on embeddings x (N, V, D) (view 0 = identity).

    `fit(x_train (n, V, D), y_train) -> (x (m, D) -> logits)` is the recipe. cv5: group-aware,
    label-stratified 5-fold cross-validation (scikit-learn StratifiedGroupKFold on `groups`). loco:
    train on one source, score every other. In each fold the temperature and threshold come from
    cross-validated logits inside that fold's training data, as the real recipe sets them on data
    it did not fit. Returns per-fold metrics with bootstrap 95% intervals, their means with 95%
    t-intervals over the folds (clipped to [0, 1]; with loco's two folds read the per-fold
    intervals instead), and pooled figures.
    """
    from core.progress import report

    y = np.asarray(y).astype(int)
    rows, pooled_y, pooled_p, pooled_thr = [], [], [], []
    folds = protocol_predictions(x, y, groups, sources, protocol, fit, min_sensitivity=min_sensitivity, seed=seed,
                                 n_splits=n_splits, progress=progress)
    for name, tr, te, p, thr in folds:
        m = evaluate_probabilities(y[te], p, thr, n_bootstrap=n_bootstrap, seed=seed)
        rows.append({"fold": name, "n_train": int(len(tr)), **{k: m[k] for k in
                     ("n", "n_mpox", "roc_auc", "sensitivity", "specificity", "accuracy", "ece", "threshold")},
                     "ci95": {k: m["ci95"].get(k) for k in ("roc_auc", "sensitivity", "specificity")}
                     if n_bootstrap else {}})
        pooled_y.append(y[te])
        pooled_p.append(p)
        pooled_thr.append(np.full(len(te), thr))
    report(progress, len(folds), len(folds), "done", "evaluate")
    keys = ("roc_auc", "sensitivity", "specificity", "accuracy", "ece")
    out: dict[str, Any] = {"protocol": protocol, "folds": rows,
                           "mean": {k: mean_ci95([r[k] for r in rows]) for k in keys}}
    py, pp = np.concatenate(pooled_y), np.concatenate(pooled_p)
    out["pooled"] = {"roc_auc": float(_point_metrics(py, pp, 0.5)["roc_auc"]),
                     "sensitivity": float(np.mean(pp[py == 1] >= np.concatenate(pooled_thr)[py == 1])),
                     "specificity": float(np.mean(pp[py == 0] < np.concatenate(pooled_thr)[py == 0])),
                     "n": int(len(py))}
    return out


def protocol_predictions(x: np.ndarray, y: Sequence[int], groups: Sequence[str], sources: Sequence[str],
                         protocol: str, fit, *, min_sensitivity: float = 0.90, seed: int = 0, n_splits: int = 5,
                         progress: ProgressFn | None = None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """The out-of-fold predictions of a recipe under `protocol`: per fold (name, train indices, scored
    indices, calibrated p(mpox) of the scored photos, the fold's own threshold). See recipe_protocol."""
    from sklearn.model_selection import StratifiedGroupKFold

    from core.models.calibration import apply_temperature
    from core.progress import report

    x = np.asarray(x)
    y = np.asarray(y).astype(int)
    groups, sources = np.asarray(groups), np.asarray(sources)
    if protocol == "cv5":
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        folds = [(f"fold {i + 1}", tr, te) for i, (tr, te) in enumerate(splitter.split(np.zeros(len(y)), y, groups))]
    elif protocol == "loco":
        folds = [(f"{a} -> {', '.join(sorted(set(sources) - {a}))}", np.flatnonzero(sources == a),
                  np.flatnonzero(sources != a)) for a in sorted(set(sources))]
        if len(folds) < 2:
            raise ValueError("leave-one-collection-out needs photos from at least two sources")
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose cv5 or loco")
    out = []
    for i, (name, tr, te) in enumerate(folds):
        report(progress, i, len(folds), f"{protocol}: {name}", "evaluate")
        t, thr = _inner_calibration(fit, x[tr], y[tr], groups[tr], min_sensitivity, seed)
        p = apply_temperature(fit(x[tr], y[tr])(x[te][:, 0]), t)
        out.append((name, tr, te, p, thr))
    return out
