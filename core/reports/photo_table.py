"""The photo table: one row per photo, needs-review first, each model's score side by side."""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.platypus import CondPageBreak, Paragraph, Spacer, Table

from core.triage.agreement import lookup
from core.triage.reasons import call_text
from core.records import FLAG_OUT_OF_SCOPE, FLAG_UNCERTAIN, LABEL_MPOX
from core.reports.context import ReportContext
from core.reports.layout import (
    FRAME_W, MARGIN, _BG_ERROR, _BG_FLAG, _BG_MPOX, _C_MPOX, _C_OVERRIDE, _display_name, _fmt_p, _grid_style, _styles,
    _truncate_middle, fit_cell, markup,
)
from core.reports.rows import PhotoRow
from core.reports.thumbs import THUMB_PT, _Thumb, make_gradcam_thumbnail, make_thumbnail


ROWS_PER_TABLE = 40        # table chunks keep ReportLab's page splitting linear in the number of rows
MAX_NAME_CHARS = 120       # longer names keep their start and their end (with the extension)


def photos_section(ctx: ReportContext) -> list[Any]:
    """One row per photo: photos that need review first, then the rest, highest risk first."""
    st = _styles()
    out: list[Any] = [CondPageBreak(0.6 * (A4[1] - 2 * MARGIN))]  # a new page unless this one is mostly free
    if not ctx.photos:
        return out + [Paragraph("Photos", st["h1"]), Paragraph("The folder held no photos.", st["body"])]
    layout = _PhotoTable(ctx)
    if ctx.cases is not None:
        from core.reports.case_summary import photos_by_case

        return out + photos_by_case(ctx, layout)
    needing = [r for r in ctx.photos if r.needs_review]
    rest = [r for r in ctx.photos if not r.needs_review]
    if needing:
        out += [Paragraph(f"Photos that need review ({len(needing):,})", st["h1"]),
                Paragraph("In this order: could not be read, not a skin photo, out of scope"
                          + (", models disagree" if ctx.multi else "") + ", uncertain, each with its figure and "
                          "limit; within each, highest p(mpox) first. Purple: a reviewer's label against the "
                          "model's call. "
                          "Thumbnails are re-encoded previews without metadata.", st["small"]),
                Spacer(1, 4)]
        out += layout.tables(needing, start=1)
    else:
        out += [Paragraph("Photos that need review", st["h1"]),
                Paragraph("None: every photo was read, and no score was out of scope or uncertain"
                          + (", and the models agree on every photo." if ctx.multi else "."), st["body"])]
    if rest:
        out += [CondPageBreak(120), Paragraph(f"Other photos ({len(rest):,}), highest p(mpox) first", st["h1"])]
        out += layout.tables(rest, start=len(needing) + 1)
    return out


class _PhotoTable:
    """Columns and rows of the photo table: thumbnail, file, each model's score side by side, why to look,
    the reviewer's label."""

    def __init__(self, ctx: ReportContext):
        self.ctx = ctx
        self.has_cam = bool(ctx.gradcam)
        model_w = 52 if len(ctx.models) <= 3 else 44
        cam = [Paragraph("Grad-CAM", _styles()["colhead"])] if self.has_cam else []
        # Each model by its short name (rows.short_labels, as in the other tables), wrapped at spaces; the
        # font shrinks until every word fits, so no name is broken or cut.
        self.model_w = model_w
        self.cols = (["#", "Photo"] + cam + ["File"]
                     + [fit_cell("p(mpox)<br/>" + markup(m.short), f"p(mpox) {m.short}", model_w - 12, "colhead")
                        for m in ctx.models]
                     + ["Needs review", "Reviewer"])
        widths = [24, THUMB_PT + 6] + ([THUMB_PT + 14] if self.has_cam else []) + [0] \
            + [model_w] * len(ctx.models) + [106, 66]
        self.file_col = 3 if self.has_cam else 2
        widths[self.file_col] = FRAME_W - sum(widths)
        self.widths = widths
        self.first_model = self.file_col + 1
        self.reason_col = self.first_model + len(ctx.models)

    def tables(self, rows: Sequence[PhotoRow], start: int) -> list[Table]:
        out = []
        for at in range(0, len(rows), ROWS_PER_TABLE):
            chunk = rows[at:at + ROWS_PER_TABLE]
            data: list[list[Any]] = [self.cols]
            cmds: list[tuple] = [("ALIGN", (0, 0), (0, -1), "RIGHT"),
                                 ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
                                 ("FONT", (0, 1), (0, -1), "Helvetica", 7),
                                 ("FONT", (-1, 1), (-1, -1), "Helvetica", 7.5),
                                 ("FONT", (self.first_model, 0), (self.reason_col - 1, 0), "Helvetica-Bold", 7),
                                 ("LEADING", (0, 0), (-1, -1), 9),
                                 ("LEFTPADDING", (1, 0), (self.file_col - 1, -1), 3),
                                 ("RIGHTPADDING", (1, 0), (self.file_col - 1, -1), 3)]
            for k, row in enumerate(chunk, start=1):
                cells, style = self.row(start + at + k - 1, row)
                data.append(cells)
                for cmd in style:
                    name_, (c0, _), (c1, _), *rest = cmd
                    cmds.append((name_, (c0, k), (c1, k), *rest))
            t = Table(data, colWidths=self.widths, repeatRows=1)
            t.setStyle(_grid_style(cmds))
            out.append(t)
        return out

    def row(self, rank: int, row: PhotoRow) -> tuple[list[Any], list[tuple]]:
        ctx, st = self.ctx, _styles()
        path = row.path
        cells: list[Any] = [str(rank), _Thumb(partial(make_thumbnail, path), ctx.photo_drawn)]
        if self.has_cam:
            cam = lookup(ctx.gradcam, path)
            cells.append(_Thumb(partial(make_gradcam_thumbnail, path, cam)) if cam is not None else "")
        # The whole name, wrapped anywhere (a name has no spaces to break at), each script in a font that has it.
        name = _display_name(path, ctx.folder)
        if len(name) > MAX_NAME_CHARS:
            name = name[:MAX_NAME_CHARS // 2 - 1] + "…" + name[-(MAX_NAME_CHARS // 2):]
        cells.append(Paragraph(markup(name), st["filename"]))
        style: list[tuple] = []
        for j, m in enumerate(ctx.models):
            col = self.first_model + j
            r = row.results.get(m.key)
            if r is None:
                cells.append("not run")
                style.append(("TEXTCOLOR", (col, 0), (col, 0), colors.HexColor("#7f8c8d")))
            elif not r.ok:
                cells.append("error")
                style.append(("TEXTCOLOR", (col, 0), (col, 0), colors.HexColor("#7f8c8d")))
            else:
                call = call_text(r.prediction)
                flag = {FLAG_UNCERTAIN: "uncertain", FLAG_OUT_OF_SCOPE: "out of scope"}.get(r.flag, r.flag)
                if flag == call:
                    flag = ""
                # Score, call and flag on their own lines, wrapped inside the cell: three models' cells never
                # run into each other.
                html = f"{_fmt_p(r.p_mpox)}<br/>{escape(call)}" + (f"<br/><i>{escape(flag)}</i>" if flag else "")
                if r.prediction == LABEL_MPOX:
                    html = f"<font color='{_C_MPOX}'><b>{html}</b></font>"
                cells.append(fit_cell(html, f"{call} {flag}", self.model_w - 12, "score", "Helvetica-Bold"))
        if row.reasons:
            first, *more = [x.text for x in row.reasons]
            html = f"<b>{markup(first)}</b>" + "".join(f"<br/>also {markup(t)}" for t in more)
            cells.append(Paragraph(html, st["reason"]))
        else:
            cells.append("")
        cells.append(self._reviewer_cell(row, style))
        if row.has_error:
            style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(_BG_ERROR)),
                      ("TEXTCOLOR", (self.file_col, 0), (self.file_col, 0), colors.HexColor("#7f8c8d"))]
        elif row.needs_review:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(_BG_FLAG)))
        elif row.call == LABEL_MPOX:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(_BG_MPOX)))
        return cells, style

    def _reviewer_cell(self, row: PhotoRow, style: list[tuple]) -> Any:
        col = len(self.cols) - 1
        st = _styles()
        if row.reviewed:
            rv = row.review or {}
            lab = call_text(rv.get("label", ""))
            who = _truncate_middle(str(rv.get("reviewer", "") or ""), 60, "Helvetica", 6.5)
            html = markup(lab) + (f"<br/>{markup(who)}" if who else "")
            if row.overridden:
                # A reviewer's label against the model's call is the report's most important line: mark it.
                html = (f"<font color='{_C_OVERRIDE}'><b>{markup(lab)}</b><br/>overrides the model "
                        f"({markup(call_text(row.call))})</font>" + (f"<br/>{markup(who)}" if who else ""))
                style.append(("LINEBEFORE", (col, 0), (col, 0), 2, colors.HexColor(_C_OVERRIDE)))
            return Paragraph(html, st["reason"])
        if row.truth:
            style.append(("TEXTCOLOR", (col, 0), (col, 0), colors.HexColor("#7f8c8d")))
            return f"folder: {row.truth.replace('_', ' ')}"
        return ""
