"""The report as simple HTML for printing from the app (File > Print): the cover's counts, the models, every
photo's call and reasons to review, the reviewer's label and the sign-off lines.

Made from the same rows, counts and reason sentences as the PDF (`rows.py`, `core.triage.reasons`), so the printout and
the PDF cannot disagree; it leaves out thumbnails, charts and the model-card pages (the PDF has them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Sequence

from core import DISCLAIMER, __version__
from core.triage.reasons import call_text
from core.records import ResultRecord
from core.reports.context import DEFAULT_TITLE
from core.reports.layout import _display_name, folder_label
from core.reports.rows import PhotoRow, _origin_text, count_photos, models_of, photo_rows


def printable_html(records: Sequence[ResultRecord], *, folder: str, cards: Sequence[Any] = (),
                   reviews: dict[str, dict] | None = None, shift: dict | None = None,
                   origins: dict[str, str] | None = None, scope_limit: float | None = None,
                   title: str = DEFAULT_TITLE, generated: datetime | None = None) -> str:
    """The report's words as one HTML page (Qt's QTextDocument prints it)."""
    records = list(records)
    models = models_of(records, list(cards), origins)
    rows = photo_rows(records, models, reviews, None, scope_limit, shift)
    c = count_photos(rows, len(models))
    when = (generated or datetime.now(timezone.utc)).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    out = [f"<h1>{escape(title)}</h1>",
           f"<p>Generated {escape(when)} · mpox-triage {escape(__version__)} · Folder: "
           f"{escape(folder_label(folder))} ({c.photos:,} photos)</p>",
           f"<p style='color:#7b241c'><b>{escape(DISCLAIMER)}</b> A clinician must review every photo.</p>"]
    if shift and shift.get("detected"):
        out.append(f"<p style='color:#6e2c00'><b>Shift alarm:</b> {escape(str(shift.get('message') or ''))}</p>")
    counts = [("Photos", c.photos), ("Could not be read", c.errors), ("Scored", c.scored),
              ("Called mpox", c.mpox), ("Called not mpox", c.not_mpox), ("Out of scope (no call)", c.out_of_scope),
              ("Needs review", c.needs_review), ("Reviewed by a person", c.reviewed),
              ("Needs review, not yet reviewed", c.needs_review_unreviewed)]
    if len(models) > 1:
        counts.insert(6, ("Models disagree", c.disagree))
    out.append("<h2>Summary (counts are photos)</h2><table border='1' cellspacing='0' cellpadding='3'>"
               + "".join(f"<tr><td>{escape(k)}</td><td align='right'>{v:,}</td></tr>" for k, v in counts)
               + "</table>")
    out.append("<h2>Models</h2><table border='1' cellspacing='0' cellpadding='3'><tr><th>Name</th><th>Version</th>"
               "<th>Origin</th><th>Threshold</th></tr>"
               + "".join(f"<tr><td>{escape(m.name or '?')}</td><td>{escape(m.version or '?')}</td>"
                         f"<td>{escape(_origin_text(m.origin, m.card))}</td>"
                         f"<td>{'' if m.threshold is None else f'{m.threshold:.3f}'}</td></tr>" for m in models)
               + "</table>")
    needing = [r for r in rows if r.needs_review]
    rest = [r for r in rows if not r.needs_review]
    if needing:
        out.append(f"<h2>Photos that need review ({len(needing):,})</h2>" + _photo_table(needing, models, folder, 1))
    if rest:
        out.append(f"<h2>Other photos ({len(rest):,})</h2>" + _photo_table(rest, models, folder, len(needing) + 1))
    out.append("<h2>Sign-off</h2><p>Reviewed by (name, role): ______________________________</p>"
               "<p>Date: ______________ &nbsp; Signature: ______________________________</p>"
               f"<p><small>{escape(DISCLAIMER)}</small></p>")
    return "<html><body style='font-family: sans-serif; font-size: 9pt'>" + "".join(out) + "</body></html>"


def _photo_table(rows: Sequence[PhotoRow], models: Sequence[Any], folder: str, start: int) -> str:
    head = "".join(f"<th>{escape(m.short)}</th>" for m in models)
    lines = [f"<table border='1' cellspacing='0' cellpadding='2' width='100%'><tr><th>#</th><th>File</th>{head}"
             "<th>Needs review</th><th>Reviewer</th></tr>"]
    for k, row in enumerate(rows, start=start):
        cells = []
        for m in models:
            r = row.results.get(m.key)
            cells.append("not run" if r is None else "error" if not r.ok
                         else f"{float(r.p_mpox):.3f} {escape(call_text(r.prediction))}")
        reasons = "; ".join(escape(x.text) for x in row.reasons)
        review = row.review or {}
        label = escape(call_text(review.get("label", ""))) if row.reviewed else ""
        if label and review.get("reviewer"):
            label += f" ({escape(str(review['reviewer']))})"
        lines.append(f"<tr><td>{k}</td><td>{escape(_display_name(row.path, folder))}</td>"
                     + "".join(f"<td>{x}</td>" for x in cells) + f"<td>{reasons}</td><td>{label}</td></tr>")
    return "".join(lines) + "</table>"
