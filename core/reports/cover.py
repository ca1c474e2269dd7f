"""Cover (title, disclaimer, folder, shift alarm, counts, models) and the sign-off block."""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.platypus import KeepTogether, Paragraph, Spacer, Table

from core import DISCLAIMER, __version__
from core.triage.agreement import REVIEW_UNSURE
from core.triage.reasons import DISAGREE, KIND_TEXT, NOT_SCORED, ORDER, SHIFT, short_name
from core.records import LABEL_MPOX, LABEL_NOT_MPOX
from core.reports.context import ReportContext
from core.reports.layout import (
    FRAME_W, _C_MPOX, _C_OVERRIDE, _fmt_p, _grid_style, _pct, _styles, fit_cell, folder_label, markup,
)
from core.reports.rows import _origin_text, count_records


SHIFT_ADVICE = ("Predictions on this folder are less reliable than the model card's figures; review more "
                "photos, or adapt the model to this site's reviewed photos.")


def cover_section(ctx: ReportContext) -> list[Any]:
    """Title, disclaimer, folder, the shift alarm, counts in photos and the models that scored them."""
    st = _styles()
    out: list[Any] = [
        Paragraph(markup(ctx.title), st["title"]),
        Paragraph(f"Generated {escape(ctx.when)} · mpox-triage {escape(__version__)}", st["body"]),
        Paragraph(escape(DISCLAIMER) + " A clinician must review every photo; the model ranks photos for "
                  "attention and can be wrong, especially on skin tones, body sites, cameras and conditions "
                  "unlike its training data.", st["warn"]),
        Paragraph(f"<b>Folder:</b> {markup(folder_label(ctx.folder))} ({ctx.counts.photos:,} photos; the CSV "
                  "export and the session record each photo's full path)", st["body"]),
    ]
    out += _shift_section(ctx)
    out += [Paragraph("Summary (counts are photos)", st["h2"]), _counts_block(ctx)]
    out += [Paragraph("Models", st["h2"]), _models_table(ctx),
            Spacer(1, 3),
            Paragraph(f"App version {escape(__version__)}. Thresholds are each model's own; the CSV export "
                      "records the model SHA-256 behind every score.", st["small"])]
    if ctx.multi:
        out += [Spacer(1, 6), _per_model_table(ctx)]
    return out


def _point_messages(ctx: ReportContext) -> dict[str, str]:
    """core.models.operating_point.point_message of each model whose folder point is not its default one, by model
    key: the text classify printed and the app's banner shows."""
    from core.models.operating_point import card_point, point_message

    out = {}
    for m in ctx.models:
        point = (ctx.points or {}).get(m.key)
        if m.card is None or point is None:
            continue
        default = card_point(m.card, threshold=point.threshold if point.name == "manual" else None)
        if not point.same_as(default):
            out[m.key] = point_message(m.card.display_name, point, default)
    return out


def _shift_section(ctx: ReportContext) -> list[Any]:
    """The deciding verdict (ctx.shift), then the alarm of every other model shown whose own alarm stands
    (ctx.shifts), each with the point its model decides the folder at: what stderr and the app's banner say."""
    from core.triage.shift import clean_verdict

    messages = _point_messages(ctx)
    deciding = clean_verdict(ctx.shift) if ctx.shift else None
    deciding_key = (deciding or {}).get("model_key", "")
    others = []
    for key, verdict in (ctx.shifts or {}).items():
        verdict = clean_verdict(verdict) if verdict else None
        if key != deciding_key and verdict is not None and verdict.get("detected"):
            others.append((key, verdict))
    alarm_keys = {k for k, _v in others} | ({deciding_key} if (deciding or {}).get("detected") else set())
    # A point text of a model with no alarm paragraph of its own (none here before) still goes with the decider's.
    own = [messages[k] for k in messages if k == deciding_key or k not in alarm_keys]
    out = _shift_paragraphs(ctx.shift, own, widened=bool(deciding_key and deciding_key in messages))
    for key, verdict in others:
        out += _shift_paragraphs(verdict, [messages[key]] if key in messages else [], widened=key in messages)
    return out


def _shift_paragraphs(shift: dict | None, points: Sequence[str] = (), widened: bool = True) -> list[Any]:
    """The folder's stored shift result (Workspace.shift): the alarm, with the model whose test decides, what it
    changed and what to do; a quiet line when it ran and found nothing or did not run."""
    from core.triage.shift import clean_verdict

    st = _styles()
    if not shift:
        return []
    shift = clean_verdict(shift)
    if shift is None:  # a damaged or hand-edited stored verdict: neither trusted nor crashed on
        return [Paragraph("Warning: the folder's stored shift check result is malformed and was ignored; run the "
                          "folder again to test it.", st["warn"])]
    p, n, stat = shift.get("p_value"), shift.get("n"), shift.get("statistic")
    figures = ", ".join(x for x in (f"p = {p:.3g}" if p is not None else "",
                                    f"statistic {stat:.3g}" if stat is not None else "",
                                    f"{int(n):,} photos" if n is not None else "") if x)
    model = f" ({shift['model']})" if shift.get("model") else ""
    if shift.get("detected"):
        text = (f"<b>Shift alarm{escape(model)}: these photos differ from the photos the model learned from</b> "
                f"({escape(figures)}). {escape(SHIFT_ADVICE)}")
        if shift.get("operating_point") == "out_of_collection" and widened:
            text += (" The review band was widened to the model's out-of-collection operating point, so more "
                     "photos are marked for review.")
        for message in points:
            text += f" {escape(message)}."
        if shift.get("remedy"):
            text += f" What to do: {escape(str(shift['remedy']).rstrip('.'))}."
        return [Paragraph(text, st["alarm"])]
    if p is None:
        why = shift.get("reason") or "not enough photos"
        return [Paragraph(f"Shift check not run{escape(model)}: {escape(str(why))}.", st["small"])]
    return [Paragraph(f"Shift check{escape(model)}: no shift detected ({escape(figures)}). That does not show these "
                      "photos are like the training photos; it found no evidence that they differ.", st["small"])]


def _counts_block(ctx: ReportContext) -> Table:
    st = _styles()
    c = ctx.counts

    def row(label: str, value: int, base: int | None) -> list[str]:
        return [label, f"{value:,}", _pct(value, base) if base is not None else ""]

    scored_label = "Scored by every model" if ctx.multi else "Scored"
    decider = next((m for m in ctx.models if m.card is not None and m.key == ctx.decider), None)
    by = f" ({short_name(decider.card)} decides)" if decider is not None else (" by every model" if ctx.multi
                                                                             else "")
    rows = [["", "photos", "share"],
            row("Photos in this report", c.photos, c.photos),
            row("Could not be read", c.errors, c.photos),
            row(scored_label if not c.partly_scored else "Scored", c.scored, c.photos)]
    if c.partly_scored:
        rows.append(row("  not by every model", c.partly_scored, c.scored))
    rows += [row(f"Called mpox{by}", c.mpox, c.scored),
             row(f"Called not mpox{by}", c.not_mpox, c.scored)]
    if c.out_of_scope:
        rows.append(row("Out of scope (no call)", c.out_of_scope, c.scored))
    if ctx.multi:
        rows.append(row("Models disagree", c.disagree, c.scored))
    needs_at = len(rows)
    rows.append(row("Needs review", c.needs_review, c.photos))
    for reason in ORDER:
        if (reason == DISAGREE and not ctx.multi) or (reason in (SHIFT, NOT_SCORED) and not c.by_reason.get(reason)):
            continue
        rows.append(row(f"  {KIND_TEXT[reason]}", c.by_reason.get(reason, 0), c.needs_review))
    if ctx.reviews is not None:
        rows.append(row("Reviewed by a person", c.reviewed, c.photos))
        for lab, text in ((LABEL_MPOX, "  reviewer: mpox"), (LABEL_NOT_MPOX, "  reviewer: not mpox"),
                          (REVIEW_UNSURE, "  reviewer: unsure")):
            rows.append(row(text, c.review_labels.get(lab, 0), c.reviewed))
        rows.append(row("  against the model's call", c.overrides, c.reviewed))
        rows.append(row("Needs review, not yet reviewed", c.needs_review_unreviewed, c.needs_review))
    tint = [("FONT", (0, needs_at), (-1, needs_at), "Helvetica-Bold", 8),
            ("LINEABOVE", (0, needs_at), (-1, needs_at), 0.6, colors.HexColor("#8a99a8"))]
    for k, r_ in enumerate(rows):
        if r_[0].startswith("Called mpox"):
            tint.append(("TEXTCOLOR", (0, k), (-1, k), colors.HexColor(_C_MPOX)))
        if r_[0] == "  against the model's call" and c.overrides:
            tint.append(("TEXTCOLOR", (0, k), (-1, k), colors.HexColor(_C_OVERRIDE)))
        if r_[0] == "Reviewed by a person":
            tint.append(("LINEABOVE", (0, k), (-1, k), 0.6, colors.HexColor("#8a99a8")))
    table = Table(rows, colWidths=[150, 45, 45], hAlign="LEFT")
    table.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT"), ("TOPPADDING", (0, 0), (-1, -1), 1.2),
                                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.2)] + tint))
    note = Paragraph(
        "Every figure counts photos, whatever the number of models. Shares of calls are of scored photos; "
        "reasons and reviewer labels are shares of the photos needing review or reviewed. Why a photo needs "
        "review (a photo can have several reasons, each printed with its figure and limit): it could not be "
        "read; it is <i>not a skin photo</i> (not-a-skin-photo score above its limit); it is <i>out of scope</i> "
        "(unlike the photos the model was trained on, so its score should not be trusted); it is "
        "<i>uncertain</i> (p(mpox) inside the deciding model's uncertain band)"
        + ("; the <i>models disagree</i> (one calls it mpox, another not)." if ctx.multi else ".")
        + " The photo list starts with these photos. <i>Against the model's call</i>: a reviewer labelled the "
        "photo mpox where the model said not mpox, or the reverse; those rows are marked in the photo list.",
        st["small"])
    return Table([[table, note]], colWidths=[250, FRAME_W - 250],
                 style=[("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)])


def _models_table(ctx: ReportContext) -> Table:
    """One row per model (name, version, origin, architecture, threshold) with its SHA-256 on a line of its own
    below, so long local versions ("1.3.0+site.2026-12-07") and origins wrap inside their cells."""
    st = _styles()
    show_origin = any(m.origin for m in ctx.models) or any(ctx.origin_of(c) for c in ctx.cards)
    widths = [118, 92] + ([128] if show_origin else []) + [100]
    widths.append(FRAME_W - sum(widths))
    header = ["Name", "Version"] + (["Origin"] if show_origin else []) + ["Architecture", "Threshold"]
    rows: list[list[Any]] = [header]
    style: list[tuple] = [("VALIGN", (0, 0), (-1, -1), "TOP")]

    def add(name: str, short: str, version: str, origin: str, arch: str, thr: str, sha: str) -> None:
        name_html = markup(name) + (f"<br/><font size='6.5' color='#555555'>in tables: {markup(short)}</font>"
                                    if short and short.lower() != f"{name} {version}".lower() else "")
        cells = [fit_cell(name_html, name, widths[0] - 12), fit_cell(markup(version), version, widths[1] - 12)]
        if show_origin:
            cells.append(fit_cell(markup(origin), origin, widths[2] - 12))
        rows.append(cells + [fit_cell(markup(arch), arch, widths[-2] - 12), thr])
        rows.append([Paragraph("SHA-256 " + escape(sha or "(not recorded)"), st["mono"])] + [""] * (len(widths) - 1))
        k = len(rows) - 1
        style.extend([("SPAN", (0, k), (-1, k)), ("LINEBELOW", (0, k - 1), (-1, k - 1), 0, colors.white),
                      ("TOPPADDING", (0, k), (-1, k), 0)])

    listed = []
    for m in ctx.models:
        c = m.card
        arch = f"{c.architecture} ({c.input_size}px)" if c is not None else "(card not supplied)"
        thr = ", ".join(_fmt_p(t) for t in m.thresholds) if c is None or len(m.thresholds) > 1 \
            else _fmt_p(m.threshold)
        add(m.name or "?", m.short, m.version or "?", _origin_text(m.origin, c), arch, thr, m.sha256)
        listed.append(c)
    for c in ctx.cards:  # cards supplied for models with no records here: still say what they are
        if any(c is x for x in listed):
            continue
        add(c.name, "", c.version, _origin_text(ctx.origin_of(c), c), f"{c.architecture} ({c.input_size}px)",
            _fmt_p(c.threshold), c.model_sha256)
    t = Table(rows, colWidths=widths, hAlign="LEFT")
    t.setStyle(_grid_style(style))
    return t


def _per_model_table(ctx: ReportContext) -> Table:
    per = [["Model", "scored", "errors", "mpox", "not mpox", "uncertain", "out of scope"]]
    for m in ctx.models:
        c = count_records(ctx.records_of(m.key))
        per.append([m.label, f"{c.ok:,}", f"{c.errors:,}", f"{c.mpox:,} ({_pct(c.mpox, c.ok)})",
                    f"{c.not_mpox:,}", f"{c.uncertain:,}", f"{c.out_of_scope:,}"])
    t = Table(per, colWidths=[140, 50, 45, 75, 55, 55, 60], hAlign="LEFT")
    t.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT")]))
    return t


def sign_off_section(ctx: ReportContext) -> list[Any]:
    """Who reviewed the photos, when, and a line to sign: what makes the report fileable."""
    st = _styles()
    c = ctx.counts
    who = Counter(str(r.review.get("reviewer") or "unnamed") for r in ctx.photos if r.reviewed)
    recorded = "; ".join(f"{name}: {n:,} photo{'s' if n != 1 else ''}" for name, n in who.most_common())
    text = (f"{c.reviewed:,} of {c.photos:,} photos carry a reviewer's label"
            + (f", given by {markup(recorded)}" if recorded else "")
            + f". {c.needs_review_unreviewed:,} of the {c.needs_review:,} photos that need review "
            + ("have none yet." if c.needs_review_unreviewed != 1 else "has none yet."))
    lines = [["Reviewed by (name, role)", ""], ["Date", ""], ["Signature", ""]]
    table = Table(lines, colWidths=[130, FRAME_W - 130], rowHeights=[22, 22, 30], hAlign="LEFT")
    table.setStyle([("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9),
                    ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                    ("LINEBELOW", (1, 0), (1, -1), 0.8, colors.black),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 2)])
    return [KeepTogether([
        Paragraph("Sign-off", st["h2"]),
        Paragraph(text + " To be completed by the clinician responsible for this review; the model's scores "
                  "are not a diagnosis.", st["small"]),
        table])]
