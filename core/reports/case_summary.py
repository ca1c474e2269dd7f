"""The case summary (one row per case, before the photo list) and the photo list grouped under its cases.

Present only when the report is given cases (core.store.cases.CaseView): a clinician decides per patient or visit, so
the report says each case's call, its highest p(mpox), why it needs review, and then lists every photo once,
under its case, in the order the summary gives.
"""

from __future__ import annotations

from typing import Any

from reportlab.lib import colors
from reportlab.platypus import CondPageBreak, Paragraph, Spacer, Table

from core.triage.reasons import call_text
from core.records import LABEL_MPOX
from core.reports.context import ReportContext
from core.reports.layout import FRAME_W, _BG_FLAG, _BG_MPOX, _C_MPOX, _cell, _fmt_p, _grid_style, _styles, markup

MAX_CASE_CHARS = 80


def _case_name(case_id: str) -> str:
    return case_id if len(case_id) <= MAX_CASE_CHARS else case_id[:MAX_CASE_CHARS // 2 - 1] + "…" + \
        case_id[-(MAX_CASE_CHARS // 2):]


def _call_words(call: str) -> str:
    return call_text(call) if call else "no call (no photo in scope)"


def _ordered(ctx: ReportContext) -> list[Any]:
    from core.store.cases import review_order

    return review_order(ctx.cases.cases) if ctx.cases is not None else []


def case_summary_section(ctx: ReportContext) -> list[Any]:
    """One row per case: call, highest p(mpox), photos, flags, reviews and the reason to look first."""
    if ctx.cases is None:
        return []
    st = _styles()
    cases = _ordered(ctx)
    grouping = ctx.cases.grouping.text if ctx.cases.grouping is not None else "one case per photo"
    out: list[Any] = [CondPageBreak(160), Paragraph(f"Cases ({len(cases):,})", st["h1"]),
                      Paragraph(f"Photos grouped by {markup(grouping)}; a photo with no case is its own case. "
                                "A case is called mpox when any of its in-scope photos is; its score is the "
                                "highest p(mpox) of those photos; it needs review when any photo does, for the "
                                "reason given (that of its photo most likely to be mpox). Cases needing review "
                                "first, then mpox calls, highest score first.", st["small"]), Spacer(1, 4)]
    head = [Paragraph(t, st["colhead"]) for t in ("Case", "Call", "Highest<br/>p(mpox)", "Photos", "Flagged",
                                                  "Reviewed", "Needs review (its photo most likely mpox)")]
    widths = [0, 62, 52, 40, 44, 48, 170]
    widths[0] = FRAME_W - sum(widths)
    data: list[list[Any]] = [head]
    cmds: list[tuple] = [("FONT", (0, 1), (-1, -1), "Helvetica", 8), ("ALIGN", (2, 1), (5, -1), "RIGHT")]
    for k, case in enumerate(cases, start=1):
        n = case.counts()
        call = markup(_call_words(case.call))
        if case.call == LABEL_MPOX:
            call = f"<font color='{_C_MPOX}'><b>{call}</b></font>"
        data.append([_cell(_case_name(case.case_id)), Paragraph(call, st["reason"]), _fmt_p(case.score),
                     str(n["photos"]), str(n["flagged"]), str(n["reviewed"]),
                     Paragraph(markup(case.review_reason) if case.needs_review else "", st["reason"])])
        if case.needs_review:
            cmds.append(("BACKGROUND", (0, k), (-1, k), colors.HexColor(_BG_FLAG)))
        elif case.call == LABEL_MPOX:
            cmds.append(("BACKGROUND", (0, k), (-1, k), colors.HexColor(_BG_MPOX)))
    table = Table(data, colWidths=widths, repeatRows=1)
    table.setStyle(_grid_style(cmds))
    return out + [table]


def photos_by_case(ctx: ReportContext, layout: Any) -> list[Any]:
    """The photo list under its cases (each photo once), cases in the summary's order; `layout` is the photo
    section's table maker (core.reports.photo_table._PhotoTable)."""
    st = _styles()
    rows = {r.path: r for r in ctx.photos}
    order = {r.path: i for i, r in enumerate(ctx.photos)}   # needs review first, highest risk first
    out: list[Any] = [Paragraph("Photos by case", st["h1"]),
                      Paragraph("Each photo once, under its case; within a case, photos that need review first. "
                                "Thumbnails are re-encoded previews without metadata.", st["small"])]
    rank = 1
    listed: set[str] = set()
    for case in _ordered(ctx):
        chunk = sorted((rows[p.path] for p in case.photos if p.path in rows and p.path not in listed),
                       key=lambda r: order[r.path])
        if not chunk:
            continue
        listed.update(r.path for r in chunk)
        out += [CondPageBreak(90), Paragraph(f"Case {markup(_case_name(case.case_id))}: "
                                             f"{markup(_call_words(case.call))}, highest p(mpox) "
                                             f"{_fmt_p(case.score)}, {len(chunk):,} photo(s)", st["h2"])]
        out += layout.tables(chunk, start=rank)
        rank += len(chunk)
    rest = [r for r in ctx.photos if r.path not in listed]
    if rest:   # photos the case view did not list (no result of the chosen models): still listed, never hidden
        out += [CondPageBreak(90), Paragraph(f"Photos without a case ({len(rest):,})", st["h2"])]
        out += layout.tables(rest, start=rank)
    return out
