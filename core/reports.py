"""PDF reports of a classified folder, for filing: cover, charts, agreement metrics, every image, model cards.

Every page carries the disclaimer and "Page x of y". Thumbnails are decoded one at a time while the page
is drawn and re-encoded as small JPEGs from pixel arrays, so no EXIF (GPS, camera) and no original file
ever reaches the PDF, and memory grows only with the small thumbnails, not with the photos.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from core import DISCLAIMER, __version__
from core.images import ImageDecodeError, load_rgb
from core.progress import CancelToken, ProgressFn, report
from core.records import (
    FLAG_OUT_OF_SCOPE,
    FLAG_UNCERTAIN,
    LABEL_MPOX,
    LABEL_NOT_MPOX,
    ResultRecord,
)

DEFAULT_TITLE = "Mpox triage report"
REVIEW_UNSURE = "unsure"
THUMB_MAX_SIDE = 96        # pixels: sharp at the ~34 pt printed size (about 140 dpi)
THUMB_QUALITY = 70
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
ROWS_PER_TABLE = 40        # table chunks keep ReportLab's page splitting linear in the number of rows

# Colours: red for mpox, amber for uncertain, blue for not mpox, grey for errors / unlabelled.
_C_MPOX = "#c0392b"
_C_NOT = "#2e86c1"
_C_GREY = "#95a5a6"


# ---------------------------------------------------------------------------------------------- thumbnails


def _encode_jpeg(im: Image.Image, quality: int = THUMB_QUALITY) -> bytes:
    buf = io.BytesIO()
    # A fresh image built from a pixel array has no info/EXIF; save() is given none either.
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def make_thumbnail(path: str | os.PathLike, max_side: int = THUMB_MAX_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    """A small JPEG of the photo with no metadata at all (re-encoded from pixels; EXIF orientation applied).

    Raises ImageDecodeError when the file cannot be read.
    """
    rgb = load_rgb(path, max_side=max_side)
    im = Image.fromarray(rgb, "RGB")
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _encode_jpeg(im, quality)


def _jet(x: np.ndarray) -> np.ndarray:
    """A jet-like colour map (0 blue .. 1 red) without matplotlib."""
    x = np.clip(x, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def make_gradcam_thumbnail(path: str | os.PathLike, cam: np.ndarray, max_side: int = THUMB_MAX_SIDE,
                           alpha: float = 0.45) -> bytes:
    """Thumbnail of a Grad-CAM: a 2-D heat map (any size, values 0..1) is blended over the photo;
    an (H, W, 3) uint8 array is taken as an already-blended overlay."""
    cam = np.asarray(cam)
    if cam.ndim == 3 and cam.shape[2] == 3:
        im = Image.fromarray(cam.astype(np.uint8), "RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return _encode_jpeg(im)
    if cam.ndim != 2:
        raise ValueError(f"{path}: Grad-CAM must be a 2-D heat map or an RGB overlay, got shape {cam.shape}")
    base = Image.fromarray(load_rgb(path, max_side=max_side), "RGB")
    base.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    heat = cam.astype(np.float32)
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    heat_im = Image.fromarray((heat * 255).astype(np.uint8), "L").resize(base.size, Image.Resampling.BILINEAR)
    colour = _jet(np.asarray(heat_im, dtype=np.float32) / 255.0) * 255.0
    blended = np.asarray(base, dtype=np.float32) * (1 - alpha) + colour * alpha
    return _encode_jpeg(Image.fromarray(blended.clip(0, 255).astype(np.uint8), "RGB"))


# ---------------------------------------------------------------------------------------------- summaries


@dataclass
class Counts:
    """How many images fell in each status, prediction and flag."""

    total: int = 0
    ok: int = 0
    errors: int = 0
    mpox: int = 0
    not_mpox: int = 0
    uncertain: int = 0
    out_of_scope: int = 0
    unflagged: int = 0
    reviewed: int = 0


def count_records(records: Sequence[ResultRecord], reviews: dict[str, dict] | None = None) -> Counts:
    c = Counts(total=len(records))
    for r in records:
        if not r.ok:
            c.errors += 1
            continue
        c.ok += 1
        c.mpox += r.prediction == LABEL_MPOX
        c.not_mpox += r.prediction == LABEL_NOT_MPOX
        c.uncertain += r.flag == FLAG_UNCERTAIN
        c.out_of_scope += r.flag == FLAG_OUT_OF_SCOPE
        c.unflagged += not r.flag
    if reviews:
        c.reviewed = sum(1 for r in records if _lookup(reviews, r.path))
    return c


def _norm(path: str) -> str:
    return os.path.normpath(str(path))


def _lookup(table: dict[str, Any] | None, path: str) -> Any:
    """Find a path's entry whether the caller keyed by the record's exact string or a normalised one."""
    if not table:
        return None
    hit = table.get(path)
    if hit is None:
        hit = table.get(_norm(path))
    return hit


@dataclass
class Agreement:
    """Model output against reference labels (ground truth where known, else the reviewer's label)."""

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
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    roc: tuple[np.ndarray, np.ndarray] | None = None   # fpr, tpr
    resamples: int = BOOTSTRAP_RESAMPLES
    engine: str = "core.reports"                       # which code computed the intervals


def _reference_labels(records: Sequence[ResultRecord], reviews: dict[str, dict] | None,
                      truth: dict[str, str] | None) -> dict[int, str]:
    """Record index -> reference label, preferring ground truth over a reviewer's call."""
    out: dict[int, str] = {}
    for i, r in enumerate(records):
        t = _lookup(truth, r.path)
        if t in (LABEL_MPOX, LABEL_NOT_MPOX):
            out[i] = t
            continue
        rv = _lookup(reviews, r.path)
        if rv and rv.get("label") in (LABEL_MPOX, LABEL_NOT_MPOX):
            out[i] = rv["label"]
    return out


def _rank_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney U with tied ranks averaged); rows lacking a class are dropped.

    The same number as sklearn's roc_auc_score, vectorised because the bootstrap needs a thousand of them.
    """
    from scipy.stats import rankdata

    pos = y.sum(1)
    neg = y.shape[1] - pos
    keep = (pos > 0) & (neg > 0)
    ranks = rankdata(scores[keep], axis=1)
    u = (ranks * y[keep]).sum(1) - pos[keep] * (pos[keep] + 1) / 2.0
    return u / (pos[keep] * neg[keep])


def _agreement_from_evaluation(ag: Agreement, y: np.ndarray, p: np.ndarray, threshold: float,
                               resamples: int, seed: int) -> bool:
    """Fill point values and intervals from core.evaluation (the same code as training and evaluation)."""
    from core.evaluation import evaluate_probabilities

    ev = evaluate_probabilities(y.astype(np.int64), p, threshold=float(threshold), n_bootstrap=resamples, seed=seed)
    cm = ev["confusion"]
    ag.confusion = {k: int(cm[k]) for k in ("tp", "fn", "fp", "tn")}
    tp, fn, fp, tn = (ag.confusion[k] for k in ("tp", "fn", "fp", "tn"))
    # evaluation reports 0.0 for a rate whose denominator is empty; the report says "n/a" instead.
    ag.sensitivity = float(ev["sensitivity"]) if tp + fn else None
    ag.specificity = float(ev["specificity"]) if tn + fp else None
    ag.ppv = float(ev["precision"]) if tp + fp else None
    ag.npv = _ratio(tn, tn + fn)
    ag.accuracy = float(ev["accuracy"])
    auc = float(ev.get("roc_auc", float("nan")))
    ag.auc = auc if math.isfinite(auc) else None
    ag.ci = {}
    for ours, theirs, present in (("sensitivity", "sensitivity", ag.sensitivity), ("specificity", "specificity",
                                  ag.specificity), ("auc", "roc_auc", ag.auc)):
        lo, hi = (ev.get("ci95") or {}).get(theirs, [float("nan")] * 2)
        if present is not None and math.isfinite(lo) and math.isfinite(hi):
            ag.ci[ours] = (float(lo), float(hi))
    ag.engine = "core.evaluation"
    return True


def truth_from_class_folders(paths: Sequence[str | os.PathLike], folder: str | os.PathLike) -> dict[str, str] | None:
    """path -> "mpox"/"not_mpox" from each file's first sub-folder under `folder`, when the folder is laid out
    as a labelled set (a class folder named mpox/monkeypox/... and at least one other class); else None.

    Meant for an explicit option (a clinic's own "mpox" folder is not ground truth by itself).
    """
    from core.datasets import binary_label

    root = Path(folder)
    classes: dict[str, str] = {}
    for p in paths:
        try:
            parts = Path(p).relative_to(root).parts
        except ValueError:
            continue
        if len(parts) >= 2:
            classes[str(p)] = parts[0]
    labels = {name: binary_label(name) for name in set(classes.values())}
    if LABEL_MPOX not in labels.values() or len(labels) < 2:
        return None
    return {path: labels[name] for path, name in classes.items()}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def compute_agreement(records: Sequence[ResultRecord], reviews: dict[str, dict] | None = None,
                      truth: dict[str, str] | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> Agreement | None:
    """Confusion matrix at each record's own threshold, ROC, and bootstrap 95% intervals; None without labels.

    When every record used the same threshold (one model), the numbers come from
    core.evaluation.evaluate_probabilities, so the report agrees with training and evaluation; otherwise
    (several models) they are computed here from each record's own prediction.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    refs = _reference_labels(records, reviews, truth)
    if not refs:
        return None
    idx = [i for i in refs if records[i].ok and records[i].p_mpox is not None]
    from_truth = sum(1 for i in idx if _lookup(truth, records[i].path) in (LABEL_MPOX, LABEL_NOT_MPOX))
    unsure = sum(1 for r in records if (_lookup(reviews, r.path) or {}).get("label") == REVIEW_UNSURE
                 and _lookup(truth, r.path) is None)
    y = np.array([refs[i] == LABEL_MPOX for i in idx], dtype=bool)
    p = np.array([float(records[i].p_mpox) for i in idx], dtype=np.float64)
    pred = np.array([records[i].prediction == LABEL_MPOX for i in idx], dtype=bool)
    tp, fn = int(np.sum(y & pred)), int(np.sum(y & ~pred))
    fp, tn = int(np.sum(~y & pred)), int(np.sum(~y & ~pred))
    ag = Agreement(n=len(idx), from_truth=from_truth, from_review=len(idx) - from_truth,
                   left_out_unsure=unsure, left_out_error=sum(1 for i in refs if not records[i].ok),
                   confusion={"tp": tp, "fn": fn, "fp": fp, "tn": tn}, resamples=resamples)
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

    thresholds = {records[i].threshold for i in idx}
    if len(thresholds) == 1 and None not in thresholds and _agreement_from_evaluation(ag, y, p, thresholds.pop(),
                                                                                        resamples, seed):
        return ag

    # Percentile bootstrap over images. Resampling in blocks keeps memory small for large folders.
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {"sensitivity": [], "specificity": [], "auc": []}
    n = len(idx)
    block = max(1, min(resamples, 2_000_000 // max(n, 1)))
    done = 0
    while done < resamples:
        m = min(block, resamples - done)
        draw = rng.integers(0, n, size=(m, n))
        yb, pb = y[draw], pred[draw]
        pos, neg = yb.sum(1), (~yb).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = (yb & pb).sum(1) / pos
            spec = (~yb & ~pb).sum(1) / neg
        stats["sensitivity"].extend(sens[pos > 0].tolist())
        stats["specificity"].extend(spec[neg > 0].tolist())
        if both:
            stats["auc"].extend(_rank_auc(yb, p[draw]).tolist())
        done += m
    for key, values in stats.items():
        if len(values) >= 20:  # too few valid resamples make a meaningless interval
            lo, hi = np.percentile(values, [2.5, 97.5])
            ag.ci[key] = (float(lo), float(hi))
    return ag


# ---------------------------------------------------------------------------------------------- PDF parts


def _fmt_p(x: float | None) -> str:
    return "" if x is None else f"{float(x):.3f}"


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "–"


def _fmt_metric(value: float | None, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if ci:
        text += f"  ({ci[0]:.3f}–{ci[1]:.3f})"
    return text


_HEADLINE_HEADER = ("Photos", "n", "accuracy", "sensitivity", "specificity", "ROC-AUC", "ECE")
_HEADLINE_KEYS = ("n", "accuracy", "sensitivity", "specificity", "roc_auc", "ece")


def _headline_metrics(metrics: Any) -> list[list[str]]:
    """One row per evaluated set of a card (val, test, each transfer direction) with its headline figures."""
    if not isinstance(metrics, dict):
        return []
    sets = [(name, m) for name, m in metrics.items() if name != "transfer"]
    transfer = metrics.get("transfer")
    if isinstance(transfer, dict):
        sets += [(f"transfer {k}", v) for k, v in transfer.items()]
    rows = []
    for name, m in sets:
        if isinstance(m, dict) and "roc_auc" in m:
            rows.append([name] + [f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, "—"))
                                  for k in _HEADLINE_KEYS])
    return rows


def _flatten(data: Any, prefix: str = "", out: list[tuple[str, str]] | None = None,
             limit: int = 40) -> list[tuple[str, str]]:
    """Nested card fields as (dotted key, short text) pairs, for printing."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(data, dict):
        for k, v in data.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, limit)
    elif isinstance(data, (list, tuple)) and data and all(isinstance(v, dict) for v in data):
        for j, v in enumerate(data):
            _flatten(v, f"{prefix}[{j}]", out, limit)
    else:
        if isinstance(data, float):
            text = f"{data:.4g}"
        elif isinstance(data, (list, tuple)):
            text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in data)
        else:
            text = str(data)
        if len(text) > 300:
            text = text[:297] + "…"
        if len(out) < limit:
            out.append((prefix or "value", text))
    return out


def _truncate_middle(text: str, width: float, font: str, size: float) -> str:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    if stringWidth(text, font, size) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest kept length whose "head…tail" fits
        mid = (lo + hi + 1) // 2
        cand = text[: mid // 2] + "…" + text[len(text) - (mid - mid // 2):]
        if stringWidth(cand, font, size) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[: lo // 2] + "…" + text[len(text) - (lo - lo // 2):]


_UNICODE_FONT: str | None = None


def _unicode_font() -> str | None:
    """A TrueType font for names outside Latin-1 (Helvetica cannot draw them), when one is installed."""
    global _UNICODE_FONT
    if _UNICODE_FONT is None:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        _UNICODE_FONT = ""
        for cand in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                     "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                     "C:/Windows/Fonts/arial.ttf", "/Library/Fonts/Arial Unicode.ttf"):
            if os.path.isfile(cand):
                try:
                    pdfmetrics.registerFont(TTFont("ReportUnicode", cand))
                    _UNICODE_FONT = "ReportUnicode"
                    break
                except Exception:  # a broken system font must not stop the report
                    continue
    return _UNICODE_FONT or None


def _font_for(text: str, default: str = "Helvetica") -> str:
    try:
        text.encode("latin-1")
        return default
    except UnicodeEncodeError:
        return _unicode_font() or default


def _display_name(path: str, folder: str) -> str:
    try:
        rel = os.path.relpath(path, folder)
        if not rel.startswith(".."):
            return rel
    except ValueError:  # different drive on Windows
        pass
    return os.path.basename(path) or str(path)


def _model_groups(records: Sequence[ResultRecord]) -> list[tuple[tuple[str, str, str], list[int]]]:
    """Record indices per model (name, version, SHA-256), in order of first appearance.

    The desktop app can run several models over one folder; their results must not be pooled.
    """
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.model, r.model_version, r.model_sha256), []).append(i)
    return list(groups.items())


def _card_for(key: tuple[str, str, str], cards: Sequence[Any]) -> Any | None:
    name, version, sha = key
    for c in cards:
        if sha and c.model_sha256 == sha:
            return c
    for c in cards:
        if not sha and (c.name, c.version) == (name, version):
            return c
    return None


def _row_order(records: Sequence[ResultRecord]) -> list[int]:
    """mpox and uncertain first (highest p first), then other scored images, then errors."""

    def key(i: int) -> tuple[int, float, str]:
        r = records[i]
        if not r.ok:
            group = 3
        elif r.prediction == LABEL_MPOX or r.flag == FLAG_UNCERTAIN:
            group = 0
        elif r.flag == FLAG_OUT_OF_SCOPE:
            group = 1
        else:
            group = 2
        return group, -(r.p_mpox or 0.0), r.path

    return sorted(range(len(records)), key=key)


def _histogram_drawing(records: Sequence[ResultRecord], refs: dict[int, str], threshold: float | None,
                       band: Sequence[float] | None, width: float, height: float = 170, bins: int = 20):
    """Stacked histogram of p(mpox): reference mpox / not mpox / unlabelled, with threshold and uncertain band."""
    from reportlab.graphics.shapes import Drawing, Group, Line, Rect, String
    from reportlab.lib import colors

    groups = {"mpox": np.zeros(bins, int), "not_mpox": np.zeros(bins, int), "none": np.zeros(bins, int)}
    for i, r in enumerate(records):
        if not r.ok or r.p_mpox is None:
            continue
        b = min(bins - 1, max(0, int(float(r.p_mpox) * bins)))
        groups[refs.get(i, "none")][b] += 1
    total = groups["mpox"] + groups["not_mpox"] + groups["none"]
    ymax = max(1, int(total.max()))
    step = 10 ** math.floor(math.log10(ymax)) if ymax >= 10 else 1
    while ymax / step > 5:
        step *= 2
    ytop = int(math.ceil(ymax / step) * step)

    d = Drawing(width, height)
    left, bottom, right, top = 40, 30, 10, 34
    pw, ph = width - left - right, height - bottom - top
    if band:
        lo, hi = float(band[0]), float(band[1])
        d.add(Rect(left + lo * pw, bottom, (hi - lo) * pw, ph, fillColor=colors.HexColor("#fdf2e0"),
                   strokeColor=None))
    for k in range(0, ytop + 1, step):
        y = bottom + ph * k / ytop
        d.add(Line(left, y, left + pw, y, strokeColor=colors.HexColor("#e5e5e5"), strokeWidth=0.5))
        d.add(String(left - 4, y - 3, str(k), fontSize=7, textAnchor="end"))
    bw = pw / bins
    palette = [("mpox", _C_MPOX), ("not_mpox", _C_NOT), ("none", _C_GREY)]
    for b in range(bins):
        y0 = bottom
        for name, col in palette:
            h = ph * groups[name][b] / ytop
            if h > 0:
                d.add(Rect(left + b * bw + 0.5, y0, bw - 1, h, fillColor=colors.HexColor(col),
                           strokeColor=colors.white, strokeWidth=0.3))
                y0 += h
    d.add(Line(left, bottom, left + pw, bottom, strokeWidth=0.8))
    d.add(Line(left, bottom, left, bottom + ph, strokeWidth=0.8))
    for k in range(0, 11, 2):
        x = left + pw * k / 10
        d.add(Line(x, bottom, x, bottom - 3, strokeWidth=0.8))
        d.add(String(x, bottom - 12, f"{k / 10:.1f}", fontSize=7, textAnchor="middle"))
    d.add(String(left + pw / 2, 3, "p(mpox), calibrated", fontSize=8, textAnchor="middle"))
    label = Group(String(0, 0, "images", fontSize=8, textAnchor="middle"))
    label.transform = (0, 1, -1, 0, 10, bottom + ph / 2)  # rotated 90 degrees
    d.add(label)
    if threshold is not None:
        x = left + float(threshold) * pw
        d.add(Line(x, bottom, x, bottom + ph, strokeColor=colors.black, strokeWidth=1, strokeDashArray=[3, 2]))
        d.add(String(x + 3, bottom + ph - 4, f"threshold {float(threshold):.2f}", fontSize=7))
    # Legend
    lx = left + 4
    items = [("reference mpox", _C_MPOX), ("reference not mpox", _C_NOT),
             ("no reference label" if refs else "all images", _C_GREY)]
    if not refs:
        items = [items[2]]
    elif not groups["none"].any():
        items = items[:2]
    if band:
        items.append(("uncertain band", "#fdf2e0"))
    for text, col in items:
        d.add(Rect(lx, height - 10, 7, 7, fillColor=colors.HexColor(col), strokeColor=colors.HexColor("#999999"),
                   strokeWidth=0.3))
        d.add(String(lx + 10, height - 9, text, fontSize=7))
        lx += 18 + len(text) * 3.6
    return d


def _roc_drawing(ag: Agreement, size: float = 230):
    from reportlab.graphics.shapes import Circle, Drawing, Group, Line, PolyLine, String
    from reportlab.lib import colors

    d = Drawing(size, size)
    left, bottom, pad = 36, 28, 8
    pw = ph = size - left - pad
    d.add(Line(left, bottom, left + pw, bottom + ph, strokeColor=colors.HexColor("#bbbbbb"), strokeDashArray=[2, 2]))
    d.add(Line(left, bottom, left + pw, bottom, strokeWidth=0.8))
    d.add(Line(left, bottom, left, bottom + ph, strokeWidth=0.8))
    for k in range(0, 11, 2):
        v = k / 10
        d.add(String(left + v * pw, bottom - 11, f"{v:.1f}", fontSize=6.5, textAnchor="middle"))
        d.add(String(left - 3, bottom + v * ph - 2, f"{v:.1f}", fontSize=6.5, textAnchor="end"))
    d.add(String(left + pw / 2, 2, "1 - specificity", fontSize=7.5, textAnchor="middle"))
    label = Group(String(0, 0, "sensitivity", fontSize=7.5, textAnchor="middle"))
    label.transform = (0, 1, -1, 0, 8, bottom + ph / 2)  # rotated 90 degrees
    d.add(label)
    if ag.roc is not None:
        fpr, tpr = ag.roc
        if len(fpr) > 400:  # thin the polyline; the curve's shape does not need every step
            keep = np.unique(np.linspace(0, len(fpr) - 1, 400).astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        pts: list[float] = []
        for x, y in zip(fpr, tpr):
            pts += [left + float(x) * pw, bottom + float(y) * ph]
        d.add(PolyLine(pts, strokeColor=colors.HexColor(_C_MPOX), strokeWidth=1.4))
        if ag.auc is not None:
            d.add(String(left + pw - 2, bottom + 6, f"AUC {ag.auc:.3f}", fontSize=8, textAnchor="end"))
    else:
        d.add(String(left + pw / 2, bottom + ph / 2, "ROC needs both classes", fontSize=8, textAnchor="middle"))
    if ag.sensitivity is not None and ag.specificity is not None:
        d.add(Circle(left + (1 - ag.specificity) * pw, bottom + ag.sensitivity * ph, 3,
                     fillColor=colors.black, strokeColor=colors.white))
    return d


def _numbered_canvas_class(footer_left: str, header: str):
    from reportlab.lib import colors
    from reportlab.pdfgen import canvas

    class NumberedCanvas(canvas.Canvas):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages: list[dict] = []

        def showPage(self):  # noqa: N802 (ReportLab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._decorate(total)
                canvas.Canvas.showPage(self)
            canvas.Canvas.save(self)

        def _decorate(self, total: int) -> None:
            w, _ = self._pagesize
            self.saveState()
            self.setStrokeColor(colors.HexColor("#999999"))
            self.setLineWidth(0.5)
            self.line(36, 34, w - 36, 34)
            self.setFillColor(colors.HexColor("#333333"))
            self.setFont("Helvetica-Bold", 7.5)
            self.drawString(36, 24, footer_left)
            self.setFont("Helvetica", 7.5)
            self.drawRightString(w - 36, 24, f"Page {self._pageNumber} of {total}")
            if self._pageNumber > 1:
                self.setFont(_font_for(header), 7)
                self.setFillColor(colors.HexColor("#777777"))
                self.drawString(36, self._pagesize[1] - 26, header)
            self.restoreState()

    return NumberedCanvas


def _styles():
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    ss = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("t", parent=ss["Title"], fontSize=20, leading=24, alignment=0, spaceAfter=4),
        "h1": ParagraphStyle("h1", parent=ss["Heading1"], fontSize=14, leading=17, spaceBefore=6, spaceAfter=6),
        "h2": ParagraphStyle("h2", parent=ss["Heading2"], fontSize=11, leading=14, spaceBefore=8, spaceAfter=4),
        "body": ParagraphStyle("b", parent=ss["BodyText"], fontSize=9, leading=12),
        "small": ParagraphStyle("s", parent=ss["BodyText"], fontSize=7.5, leading=9.5,
                                textColor="#444444"),
        "warn": ParagraphStyle("w", parent=ss["BodyText"], fontSize=9.5, leading=12.5, textColor="#7b241c",
                               borderColor="#c0392b", borderWidth=0.8, borderPadding=6, backColor="#fbeeee",
                               spaceBefore=6, spaceAfter=10),
        "cell": ParagraphStyle("c", parent=ss["BodyText"], fontSize=8, leading=10),
        # 6.5 pt Courier fits a whole SHA-256 (64 hex digits) on one line in the model table.
        "mono": ParagraphStyle("m", parent=ss["BodyText"], fontName="Courier", fontSize=6.5, leading=8.5),
    }


def _grid_style(extra: list | None = None) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import TableStyle

    base = [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eaeef2")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#8a99a8")),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#dddddd")),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
    ]
    return TableStyle(base + (extra or []))


# ---------------------------------------------------------------------------------------------- main entry


def write_pdf_report(
    records: list[ResultRecord],
    out_path: str | os.PathLike,
    *,
    folder: str,
    cards: list[Any],
    reviews: dict[str, dict] | None = None,
    truth: dict[str, str] | None = None,
    gradcam: dict[str, np.ndarray] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    title: str = DEFAULT_TITLE,
    generated: datetime | None = None,
) -> Path:
    """Write the PDF report of one classified folder and return its path.

    `cards` are the ModelCards of the model(s) that produced `records`; `reviews` maps a record's path to
    {"label": "mpox"|"not_mpox"|"unsure", "reviewer", "time"}; `truth` maps a path to "mpox"/"not_mpox"
    (e.g. from class folders); `gradcam` maps a path to a heat map or overlay. The file is written to a
    temporary sibling and renamed, so a cancelled or failed build leaves no half-written report.
    Raises core.progress.Cancelled when `cancel` fires.
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import (
        CondPageBreak,
        Flowable,
        KeepTogether,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
    )

    out_path = Path(out_path)
    records = list(records)
    cards = list(cards or [])
    generated = generated or datetime.now(timezone.utc)
    when = generated.astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    st = _styles()
    n = len(records)

    report(progress, 0, max(n, 1), "Computing summary", "summary")
    counts = count_records(records, reviews)
    groups = _model_groups(records)
    multi = len(groups) > 1
    has_refs = bool(_reference_labels(records, reviews, truth))
    sections = []  # per model: (title suffix, its records, its card, its agreement)
    for key, idx in groups:
        subset = [records[i] for i in idx]
        label = f"{key[0] or '?'} {key[1]}".strip()
        sections.append((label, subset, _card_for(key, cards),
                         compute_agreement(subset, reviews, truth) if has_refs else None))
    if cancel is not None:
        cancel.raise_if_cancelled()

    page_w, _ = A4
    margin = 15 * mm
    frame_w = page_w - 2 * margin
    story: list[Any] = []

    # ---- cover
    story.append(Paragraph(f"<font name='{_font_for(title, 'Helvetica-Bold')}'>{escape(title)}</font>", st["title"]))
    story.append(Paragraph(f"Generated {escape(when)} · mpox-triage {escape(__version__)}", st["body"]))
    story.append(Paragraph(escape(DISCLAIMER) + " A clinician must review every image; the model ranks photos "
                           "for attention and can be wrong, especially on skin tones, body sites, cameras and "
                           "conditions unlike its training data.", st["warn"]))
    folder_font = _font_for(folder)
    story.append(Paragraph(f"<b>Folder:</b> <font name='{folder_font}'>{escape(str(folder))}</font>", st["body"]))
    story.append(Spacer(1, 6))

    def row(label: str, value: int, base: int) -> list[str]:
        return [label, f"{value:,}", _pct(value, base)]

    first = ("Results (image × model)" if multi else "Images in report")
    count_rows = [["", "results" if multi else "images", "share"],
                  row(first, counts.total, counts.total),
                  row("Scored (ok)", counts.ok, counts.total),
                  row("Errors (not scored)", counts.errors, counts.total),
                  row("Predicted mpox", counts.mpox, counts.ok),
                  row("Predicted not mpox", counts.not_mpox, counts.ok),
                  row("Flagged uncertain", counts.uncertain, counts.ok),
                  row("Flagged out of scope", counts.out_of_scope, counts.ok),
                  row("Not flagged", counts.unflagged, counts.ok)]
    if reviews is not None:
        count_rows.append(row("Reviewed by a person", counts.reviewed, counts.total))
        labels = Counter((_lookup(reviews, r.path) or {}).get("label") for r in records)
        for lab, text in ((LABEL_MPOX, "  reviewer: mpox"), (LABEL_NOT_MPOX, "  reviewer: not mpox"),
                          (REVIEW_UNSURE, "  reviewer: unsure")):
            count_rows.append(row(text, labels.get(lab, 0), counts.reviewed))
    if multi:
        distinct = len({_norm(r.path) for r in records})
        count_rows.insert(2, [f"Distinct images ({len(groups)} models)", f"{distinct:,}", ""])
    tint = []
    for k, r_ in enumerate(count_rows):
        if r_[0].startswith("Predicted mpox"):
            tint.append(("TEXTCOLOR", (0, k), (-1, k), colors.HexColor(_C_MPOX)))
        if r_[0].startswith("Errors") and counts.errors:
            tint.append(("TEXTCOLOR", (0, k), (-1, k), colors.HexColor("#7f8c8d")))
    count_table = Table(count_rows, colWidths=[120, 55, 50], hAlign="LEFT")
    count_table.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                                      ("LINEBELOW", (0, 3 + multi), (-1, 3 + multi), 0.6,
                                       colors.HexColor("#8a99a8"))] + tint))
    note = Paragraph("Shares of predictions and flags are of scored images; status shares are of all images; "
                     "reviewer shares are of reviewed images. Flags: <i>uncertain</i> = p(mpox) inside the "
                     "model's uncertain band; <i>out of scope</i> = photo unlike the training data, so the "
                     "prediction should not be trusted.", st["small"])
    story.append(Table([[count_table, note]], colWidths=[240, frame_w - 240],
                       style=[("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))

    # ---- models
    story.append(Paragraph("Model(s)", st["h2"]))
    model_rows: list[list[Any]] = [["Name", "Version", "Architecture", "Threshold", "Model SHA-256"]]
    seen_sha = set()
    for c in cards:
        seen_sha.add(c.model_sha256)
        model_rows.append([c.name, c.version, f"{c.architecture} ({c.input_size}px)",
                           f"{float(c.threshold):.3f}", Paragraph(escape(c.model_sha256 or "(not recorded)"),
                                                                  st["mono"])])
    record_models = Counter((r.model, r.model_version, r.model_sha256, r.threshold) for r in records if r.ok)
    for (name, version, sha, thr), _k in record_models.items():
        if sha not in seen_sha:  # records from a model whose card was not supplied: still name it
            seen_sha.add(sha)
            model_rows.append([name or "?", version or "?", "(card not supplied)", _fmt_p(thr),
                               Paragraph(escape(sha or "(not recorded)"), st["mono"])])
    mt = Table(model_rows, colWidths=[72, 40, 82, 42, frame_w - 236], hAlign="LEFT")
    mt.setStyle(_grid_style())
    story.append(mt)
    story.append(Spacer(1, 3))
    story.append(Paragraph(f"App version {escape(__version__)}. Each row of the image table was produced by the "
                           "model whose SHA-256 is recorded in the CSV export; thresholds are the models' own.",
                           st["small"]))
    if multi:
        per = [["Model", "scored", "errors", "mpox", "not mpox", "uncertain", "out of scope"]]
        for label, subset, _card, _ag in sections:
            c = count_records(subset)
            per.append([label, f"{c.ok:,}", f"{c.errors:,}", f"{c.mpox:,} ({_pct(c.mpox, c.ok)})",
                        f"{c.not_mpox:,}", f"{c.uncertain:,}", f"{c.out_of_scope:,}"])
        pt = Table(per, colWidths=[140, 50, 45, 75, 55, 55, 60], hAlign="LEFT")
        pt.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT")]))
        story += [Spacer(1, 6), pt]

    # ---- distribution chart
    for label, subset, card, _ag in sections:
        threshold = card.threshold if card else next((r.threshold for r in subset if r.threshold is not None), None)
        band = card.uncertain_band if card else None
        story.append(CondPageBreak(230))
        story.append(Paragraph("Distribution of p(mpox)" + (f": {escape(label)}" if multi else ""), st["h2"]))
        if any(r.ok for r in subset):
            refs = _reference_labels(subset, reviews, truth)
            story.append(_histogram_drawing(subset, refs, threshold, band, frame_w))
        else:
            story.append(Paragraph("No image could be scored, so there is no distribution to show.", st["body"]))

    # ---- agreement, one section per model
    for k_section, (label, _subset, _card, agreement) in enumerate(sections):
        if agreement is None:
            continue
        story.append(PageBreak() if k_section == 0 or not multi else CondPageBreak(330))
        story.append(Paragraph("Agreement with reference labels" + (f": {escape(label)}" if multi else ""),
                               st["h1"]))
        srcs = []
        if agreement.from_truth:
            srcs.append(f"{agreement.from_truth:,} from ground-truth folders")
        if agreement.from_review:
            srcs.append(f"{agreement.from_review:,} from reviewers")
        left_out = []
        if agreement.left_out_unsure:
            left_out.append(f"{agreement.left_out_unsure:,} reviewed as unsure")
        if agreement.left_out_error:
            left_out.append(f"{agreement.left_out_error:,} labelled but not scored (error)")
        story.append(Paragraph(
            f"{agreement.n:,} scored images have a reference label ({', '.join(srcs) or 'none'}). "
            + (f"Left out: {', '.join(left_out)}. " if left_out else "")
            + "Ground truth is used where known, otherwise the reviewer's label. Predictions use each "
            "model's own threshold.", st["body"]))
        story.append(Spacer(1, 6))
        cm = agreement.confusion
        pos, neg = cm["tp"] + cm["fn"], cm["fp"] + cm["tn"]
        cm_rows = [["", "predicted\nmpox", "predicted\nnot mpox", "total"],
                   ["reference mpox", f"{cm['tp']:,}", f"{cm['fn']:,}", f"{pos:,}"],
                   ["reference not mpox", f"{cm['fp']:,}", f"{cm['tn']:,}", f"{neg:,}"],
                   ["total", f"{cm['tp'] + cm['fp']:,}", f"{cm['fn'] + cm['tn']:,}", f"{agreement.n:,}"]]
        cmt = Table(cm_rows, colWidths=[86, 60, 60, 50])
        cmt.setStyle(_grid_style([
            ("ALIGN", (1, 0), (-1, -1), "CENTER"),
            ("FONT", (0, 1), (0, -1), "Helvetica-Bold", 8),
            ("BACKGROUND", (1, 1), (1, 1), colors.HexColor("#d5f5e3")),
            ("BACKGROUND", (2, 2), (2, 2), colors.HexColor("#d5f5e3")),
            ("BACKGROUND", (2, 1), (2, 1), colors.HexColor("#fadbd8")),
            ("BACKGROUND", (1, 2), (1, 2), colors.HexColor("#fdebd0")),
            ("FONT", (1, 1), (2, 2), "Helvetica-Bold", 10),
            ("TOPPADDING", (1, 1), (2, 2), 7), ("BOTTOMPADDING", (1, 1), (2, 2), 7),
        ]))
        ci = agreement.ci
        met_rows = [["Measure", "Value (95% interval)"],
                    ["Sensitivity", _fmt_metric(agreement.sensitivity, ci.get("sensitivity"))],
                    ["Specificity", _fmt_metric(agreement.specificity, ci.get("specificity"))],
                    ["ROC AUC", _fmt_metric(agreement.auc, ci.get("auc"))],
                    ["PPV (precision)", _fmt_metric(agreement.ppv)],
                    ["NPV", _fmt_metric(agreement.npv)],
                    ["Accuracy", _fmt_metric(agreement.accuracy)]]
        mtab = Table(met_rows, colWidths=[82, 174])
        mtab.setStyle(_grid_style())
        left_col = [cmt, Spacer(1, 10), mtab, Spacer(1, 6),
                    Paragraph(f"Intervals: 95% percentile bootstrap over images ({agreement.resamples:,} "
                              f"resamples, seed {BOOTSTRAP_SEED}). Photos of the same patient are not "
                              "independent, so true uncertainty can be wider. The dot on the ROC curve is "
                              "the operating point.", st["small"])]
        story.append(Table([[left_col, _roc_drawing(agreement)]], colWidths=[266, frame_w - 266],
                           style=[("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))

    # ---- image table
    story.append(PageBreak())
    story.append(Paragraph("Images", st["h1"]))
    story.append(Paragraph("Ordered: predicted mpox or flagged uncertain first (highest p(mpox) first), then "
                           "out of scope, then not mpox, then files that could not be read. Thumbnails are "
                           "re-encoded previews without metadata.", st["small"]))
    story.append(Spacer(1, 4))

    thumb_pt = 30.0
    drawn = [0]
    total_rows = max(n, 1)
    every = max(1, n // 100)

    def tick() -> None:
        drawn[0] += 1
        if cancel is not None:
            cancel.raise_if_cancelled()
        if drawn[0] % every == 0 or drawn[0] == n:
            report(progress, drawn[0], total_rows, f"Drawing image {drawn[0]:,} of {n:,}", "thumbnails")

    class Thumb(Flowable):
        """Decodes and draws one thumbnail only when its page is drawn, so no photo stays in memory."""

        def __init__(self, make: Callable[[], bytes], count: bool):
            super().__init__()
            self._make = make
            self._count = count

        def wrap(self, aw, ah):  # noqa: D401 (ReportLab API)
            return thumb_pt, thumb_pt

        def draw(self):
            c = self.canv
            try:
                data = self._make()
            except (ImageDecodeError, OSError, ValueError):
                data = None
            if data is None:
                c.setFillColor(colors.HexColor("#eeeeee"))
                c.rect(0, 0, thumb_pt, thumb_pt, stroke=0, fill=1)
                c.setFillColor(colors.HexColor("#888888"))
                c.setFont("Helvetica", 6)
                c.drawCentredString(thumb_pt / 2, thumb_pt / 2 - 2, "no preview")
            else:
                img = ImageReader(io.BytesIO(data))
                iw, ih = img.getSize()
                s = thumb_pt / max(iw, ih)
                w, h = iw * s, ih * s
                c.drawImage(img, (thumb_pt - w) / 2, (thumb_pt - h) / 2, w, h)
            if self._count:
                tick()

    has_cam = bool(gradcam)
    cols = ["#", "Photo"] + (["Grad-CAM"] if has_cam else []) + ["File", "p(mpox)", "Prediction", "Flag",
                                                                 "Reviewer"]
    fixed = [24, thumb_pt + 6] + ([46] if has_cam else []) + [0, 40, 50, 60, 74]
    name_w = frame_w - sum(fixed)
    fixed[cols.index("File")] = name_w
    name_col = cols.index("File")
    text_w = name_w - 6

    def make_row(rank: int, i: int) -> tuple[list[Any], list[tuple]]:
        r = records[i]
        path = r.path
        cells: list[Any] = [str(rank), Thumb(lambda p=path: make_thumbnail(p), True)]
        if has_cam:
            cam = _lookup(gradcam, path)
            cells.append(Thumb(lambda p=path, a=cam: make_gradcam_thumbnail(p, a), False) if cam is not None
                         else "")
        name = _display_name(path, folder)
        font = _font_for(name)
        lines = [_truncate_middle(name, text_w, font, 7.5)]
        if multi:
            lines.append(_truncate_middle(f"model: {r.model} {r.model_version}", text_w, font, 7.5))
        if not r.ok:
            err = r.error or "unknown error"
            if err.startswith(f"{path}: "):  # the file name is already on the line above
                err = err[len(path) + 2:]
            lines.append(_truncate_middle("error: " + err, text_w, "Helvetica", 6.5))
        cells.append("\n".join(lines))
        if r.ok:
            pred = {LABEL_MPOX: "mpox", LABEL_NOT_MPOX: "not mpox"}.get(r.prediction or "", r.prediction or "")
            flag = {FLAG_UNCERTAIN: "uncertain", FLAG_OUT_OF_SCOPE: "out of scope"}.get(r.flag, r.flag)
            cells += [_fmt_p(r.p_mpox), pred, flag]
        else:
            cells += ["", "error", ""]
        rv = _lookup(reviews, path)
        style_extra: list[tuple] = []
        if rv:
            lab = {LABEL_MPOX: "mpox", LABEL_NOT_MPOX: "not mpox"}.get(rv.get("label", ""), rv.get("label", ""))
            who = _truncate_middle(str(rv.get("reviewer", "")), 66, "Helvetica", 6.5)
            cells.append(lab + (f"\n{who}" if who else ""))
        else:
            t = _lookup(truth, path)
            cells.append(f"folder: {t.replace('_', ' ')}" if t else "")
            if t:
                style_extra = [("TEXTCOLOR", (len(cols) - 1, 0), (len(cols) - 1, 0), colors.HexColor("#7f8c8d"))]
        style = [("FONT", (name_col, 0), (name_col, 0), font, 7.5)] + style_extra
        if not r.ok:
            style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f2f3f4")),
                      ("TEXTCOLOR", (name_col, 0), (-1, 0), colors.HexColor("#7f8c8d"))]
        elif r.prediction == LABEL_MPOX:
            style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#fbeeee")),
                      ("TEXTCOLOR", (name_col + 2, 0), (name_col + 2, 0), colors.HexColor(_C_MPOX)),
                      ("FONT", (name_col + 2, 0), (name_col + 2, 0), "Helvetica-Bold", 8)]
        elif r.flag == FLAG_UNCERTAIN:
            style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#fef5e7"))]
        if r.flag:
            style += [("FONT", (name_col + 3, 0), (name_col + 3, 0), "Helvetica-Bold", 7.5)]
        return cells, style

    order = _row_order(records)
    if not order:
        story.append(Paragraph("The folder held no images.", st["body"]))
    for start in range(0, len(order), ROWS_PER_TABLE):
        chunk = order[start:start + ROWS_PER_TABLE]
        data: list[list[Any]] = [cols]
        cmds: list[tuple] = [("ALIGN", (0, 0), (0, -1), "RIGHT"),
                             ("ALIGN", (name_col + 1, 0), (name_col + 1, -1), "RIGHT"),
                             ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
                             ("FONT", (0, 1), (0, -1), "Helvetica", 7),
                             ("FONT", (-1, 1), (-1, -1), "Helvetica", 7.5),
                             ("LEADING", (0, 1), (-1, -1), 9),
                             ("LEFTPADDING", (1, 1), (name_col - 1, -1), 3),
                             ("RIGHTPADDING", (1, 1), (name_col - 1, -1), 3)]
        for k, i in enumerate(chunk, start=1):
            cells, style = make_row(start + k, i)
            data.append(cells)
            for cmd in style:
                name_, (c0, _), (c1, _), *rest = cmd
                cmds.append((name_, (c0, k), (c1, k), *rest))
        t = Table(data, colWidths=fixed, repeatRows=1)
        t.setStyle(_grid_style(cmds))
        story.append(t)

    # ---- model cards
    story.append(PageBreak())
    story.append(Paragraph("Model card summary", st["h1"]))
    if not cards:
        story.append(Paragraph("No model card was supplied with these results.", st["body"]))
    for c in cards:
        block: list[Any] = [Paragraph(f"{escape(c.name)} {escape(c.version)}", st["h2"])]
        facts = [["Architecture", f"{c.architecture}, input {c.input_size}×{c.input_size} px"],
                 ["Model SHA-256", Paragraph(escape(c.model_sha256 or "(not recorded)"), st["mono"])],
                 ["Threshold", f"{float(c.threshold):.3f}"
                  + (f" — {c.threshold_reason}" if c.threshold_reason else "")],
                 ["Calibration", f"temperature {float(c.temperature):.3f}"],
                 ["Uncertain band", f"{c.uncertain_band[0]:.2f} to {c.uncertain_band[1]:.2f} "
                  "(p inside is flagged uncertain)" if c.uncertain_band else "none"],
                 ["Out-of-scope limit", f"{c.ood_threshold:.3g}" if c.ood_threshold is not None else "none"],
                 ["Created", f"{c.created} with app {c.app_version}"]]
        if c.parent:
            facts.append(["Fine-tuned from", ", ".join(f"{k} {v}" for k, v in c.parent.items())])
        facts = [[a, Paragraph(escape(b), st["cell"]) if isinstance(b, str) else b] for a, b in facts]
        ft = Table(facts, colWidths=[95, frame_w - 95], hAlign="LEFT")
        ft.setStyle(_grid_style([("FONT", (0, 0), (-1, 0), "Helvetica", 8),
                                 ("BACKGROUND", (0, 0), (-1, 0), colors.white),
                                 ("LINEBELOW", (0, 0), (-1, 0), 0.25, colors.HexColor("#dddddd")),
                                 ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 8),
                                 ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        block += [ft, Paragraph("Intended use", st["h2"]), Paragraph(escape(c.intended_use), st["body"])]
        story.append(KeepTogether(block))
        headline = _headline_metrics(c.metrics)
        if headline:
            story.append(Paragraph("Metrics (from the model card)", st["h2"]))
            mt = Table([list(_HEADLINE_HEADER)] + headline, hAlign="LEFT",
                       colWidths=[frame_w - 6 * 58] + [58] * 6, repeatRows=1)
            mt.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT")]))
            story.append(mt)
            if any(r[0].startswith("transfer") for r in headline):
                story.append(Paragraph(
                    "Transfer rows: a head trained on one collection only, its threshold set on that collection, "
                    "scored on another collection's photos: what to expect on photos from elsewhere.", st["body"]))
        sections = [("Training data", c.training_data)]
        if not headline:
            sections.append(("Metrics (from the model card)", c.metrics))
        for heading, data_ in sections:
            story.append(Paragraph(heading, st["h2"]))
            fields = _flatten(data_, limit=10**9)  # cards are small; the page prints the first 40
            pairs = fields[:40]
            if not pairs:
                story.append(Paragraph("Not recorded.", st["body"]))
                continue
            if len(fields) > len(pairs):
                pairs.append(("…", f"{len(fields) - len(pairs)} more fields in the bundle's model_card.json"))
            kv = Table([[Paragraph(escape(k), st["cell"]), Paragraph(escape(v), st["cell"])] for k, v in pairs],
                       colWidths=[170, frame_w - 170], hAlign="LEFT")
            kv.setStyle(_grid_style([("FONT", (0, 0), (-1, 0), "Helvetica", 8),
                                     ("BACKGROUND", (0, 0), (-1, 0), colors.white),
                                     ("LINEBELOW", (0, 0), (-1, 0), 0.25, colors.HexColor("#dddddd")),
                                     ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                     ("TOPPADDING", (0, 0), (-1, -1), 1),
                                     ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
            story.append(kv)
        story.append(Paragraph("Limits", st["h2"]))
        limits = list(c.limitations) or ["No limitations recorded in the model card; treat this as unknown, "
                                         "not as absent."]
        for item in limits:
            story.append(Paragraph("• " + escape(str(item)), st["body"]))

    # ---- build (atomic)
    header = f"{title} · {when} · {folder}"
    if len(header) > 140:
        header = header[:139] + "…"
    canvas_cls = _numbered_canvas_class(DISCLAIMER, header)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".partial", dir=out_path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes 0600; a filed report should get the usual mode
    doc = SimpleDocTemplate(tmp_name, pagesize=A4, leftMargin=margin, rightMargin=margin,
                            topMargin=margin + 4, bottomMargin=margin + 8, title=title,
                            author=f"mpox-triage {__version__}", subject=DISCLAIMER,
                            creator=f"mpox-triage {__version__}")
    try:
        doc.build(story, canvasmaker=canvas_cls)
        os.replace(tmp_name, out_path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    report(progress, total_rows, total_rows, f"Report written: {out_path}", "done")
    return out_path
