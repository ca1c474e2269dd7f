"""Score distributions and agreement with reference labels (histogram, confusion, ROC)."""

from __future__ import annotations

import math
from typing import Any, Sequence
from xml.sax.saxutils import escape

import numpy as np
from reportlab.lib import colors
from reportlab.platypus import CondPageBreak, PageBreak, Paragraph, Spacer, Table

from core.triage.agreement import Agreement, reference_labels
from core.records import ResultRecord
from core.reports.cards import Adaptation, adaptation_of
from core.reports.context import ReportContext
from core.reports.layout import FRAME_W, _C_GREY, _C_MPOX, _C_NOT, _fmt_metric, _grid_style, _styles


def distribution_section(ctx: ReportContext) -> list[Any]:
    """A histogram of p(mpox) per model, stacked by reference label, with threshold and uncertain band."""
    st = _styles()
    out: list[Any] = [PageBreak(), Paragraph("Scores", st["h1"])]
    for m in ctx.models:
        subset = ctx.records_of(m.key)
        band = m.card.uncertain_band if m.card is not None else None
        out.append(CondPageBreak(230))
        out.append(Paragraph("Distribution of p(mpox)" + (f": {escape(m.label)}" if ctx.multi else ""), st["h2"]))
        if any(r.ok for r in subset):
            refs = reference_labels(subset, ctx.reviews, ctx.truth)
            out.append(_histogram_drawing(subset, refs, m.threshold, band, FRAME_W))
        else:
            out.append(Paragraph("No photo could be scored, so there is no distribution to show.", st["body"]))
    if not ctx.models:
        out.append(Paragraph("No photo could be scored, so there is no distribution to show.", st["body"]))
    return out


def agreement_section(ctx: ReportContext) -> list[Any]:
    """Per model: its calls against reference labels (ground truth, else reviewers), with intervals."""
    out: list[Any] = []
    for m in ctx.models:
        ag = ctx.agreements.get(m.key)
        if ag is None:
            continue
        out.append(CondPageBreak(340))  # a block needs about 330 pt; it shares a page when there is room
        adapted = adaptation_of(m.card) if m.card is not None and ag.from_review else None
        out += _agreement_block(ag, m.label if ctx.multi else "", adapted)
    return out


def _agreement_block(ag: Agreement, label: str, adapted: Adaptation | None = None) -> list[Any]:
    """The model's calls against the reference labels. For a model adapted on this site's reviewed photos
    (`adapted`), those labels are largely the photos it learned from: the figures are marked in-sample and its
    cross-validated site figures (from its card) are put first."""
    st = _styles()
    out: list[Any] = [Paragraph("Agreement with reference labels" + (f": {escape(label)}" if label else ""),
                                st["h1"])]
    if adapted is not None:
        out.append(Paragraph(
            f"<b>In-sample: this model was adapted on {escape(adapted.in_words())}.</b> The reviewer labels "
            "below are likely the same photos, so its agreement with them is flattered and is no measure of the "
            "model. Use the cross-validated figures (each photo scored by a head that never saw it), recorded in "
            "its card, in the first column.", st["alarm"]))
    srcs = []
    if ag.from_truth:
        srcs.append(f"{ag.from_truth:,} from ground-truth folders")
    if ag.from_review:
        srcs.append(f"{ag.from_review:,} from reviewers")
    left_out = []
    if ag.left_out_unsure:
        left_out.append(f"{ag.left_out_unsure:,} reviewed as unsure")
    if ag.left_out_error:
        left_out.append(f"{ag.left_out_error:,} labelled but not scored (error)")
    if ag.left_out_out_of_scope:
        left_out.append(f"{ag.left_out_out_of_scope:,} out of scope (no call)")
    out.append(Paragraph(
        f"{ag.n:,} scored photos have a reference label ({', '.join(srcs) or 'none'}). "
        + (f"Left out: {', '.join(left_out)}. " if left_out else "")
        + "Ground truth is used where known, otherwise the reviewer's label. Calls use the model's own "
        "threshold.", st["body"]))
    out.append(Spacer(1, 6))
    cm = ag.confusion
    pos, neg = cm["tp"] + cm["fn"], cm["fp"] + cm["tn"]
    cm_rows = [["in-sample" if adapted is not None else "", "called\nmpox", "called\nnot mpox", "total"],
               ["reference mpox", f"{cm['tp']:,}", f"{cm['fn']:,}", f"{pos:,}"],
               ["reference not mpox", f"{cm['fp']:,}", f"{cm['tn']:,}", f"{neg:,}"],
               ["total", f"{cm['tp'] + cm['fp']:,}", f"{cm['fn'] + cm['tn']:,}", f"{ag.n:,}"]]
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
    ci = ag.ci
    met_rows = [["Measure", "Value (95% interval)"],
                ["Sensitivity", _fmt_metric(ag.sensitivity, ci.get("sensitivity"))],
                ["Specificity", _fmt_metric(ag.specificity, ci.get("specificity"))],
                ["ROC AUC", _fmt_metric(ag.auc, ci.get("auc"))],
                ["PPV (precision)", _fmt_metric(ag.ppv)],
                ["NPV", _fmt_metric(ag.npv)],
                ["Accuracy", _fmt_metric(ag.accuracy)]]
    if adapted is not None:
        cv = adapted.site_cv
        cv_ci = cv.get("ci95") if isinstance(cv.get("ci95"), dict) else {}
        figures = {"Sensitivity": "sensitivity", "Specificity": "specificity", "ROC AUC": "roc_auc",
                   "Accuracy": "accuracy"}
        head = [Paragraph(f"<b>Cross-validated, its {adapted.photos:,} site photos</b>", st["colhead"]),
                Paragraph("<b>In-sample, these labels</b>", st["colhead"])]
        met_rows = [["Measure"] + head] + [
            [name, _fmt_metric(cv.get(figures[name]), cv_ci.get(figures[name])) if name in figures else "not recorded",
             value] for name, value in met_rows[1:]]
        mtab = Table(met_rows, colWidths=[62, 97, 97])
        mtab.setStyle(_grid_style([("FONT", (1, 1), (1, -1), "Helvetica-Bold", 7.5),
                                   ("FONT", (2, 1), (2, -1), "Helvetica", 7.5),
                                   ("TEXTCOLOR", (2, 1), (2, -1), colors.HexColor("#7f8c8d"))]))
    else:
        mtab = Table(met_rows, colWidths=[82, 174])
        mtab.setStyle(_grid_style())
    left_col = [cmt, Spacer(1, 10), mtab, Spacer(1, 6),
                Paragraph(f"Intervals: 95% percentile bootstrap over photos ({ag.resamples:,} resamples, seed "
                          f"{ag.seed}; {escape(ag.engine)}). Photos of the same patient are not independent, "
                          "so true uncertainty can be wider. The dot on the ROC curve is the operating point.",
                          st["small"])]
    out.append(Table([[left_col, _roc_drawing(ag)]], colWidths=[266, FRAME_W - 266],
                     style=[("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return out


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
    label = Group(String(0, 0, "photos", fontSize=8, textAnchor="middle"))
    label.transform = (0, 1, -1, 0, 10, bottom + ph / 2)  # rotated 90 degrees
    d.add(label)
    if threshold is not None:
        x = left + float(threshold) * pw
        d.add(Line(x, bottom, x, bottom + ph, strokeColor=colors.black, strokeWidth=1, strokeDashArray=[3, 2]))
        d.add(String(x + 3, bottom + ph - 4, f"threshold {float(threshold):.2f}", fontSize=7))
    # Legend
    lx = left + 4
    items = [("reference mpox", _C_MPOX), ("reference not mpox", _C_NOT),
             ("no reference label" if refs else "all photos", _C_GREY)]
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
