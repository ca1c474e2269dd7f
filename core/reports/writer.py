"""write_pdf_report: run the section builders, number the pages, publish atomically."""

from __future__ import annotations

import io
import os
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from reportlab.lib.pagesizes import A4
from reportlab.platypus import SimpleDocTemplate

from core import DISCLAIMER, __version__
from core.progress import CancelToken, ProgressFn, report
from core.records import ResultRecord
from core.reports.cards import model_card_section
from core.reports.case_summary import case_summary_section
from core.reports.charts import agreement_section, distribution_section
from core.reports.context import DEFAULT_TITLE, ReportContext, build_context
from core.reports.cover import cover_section, sign_off_section
from core.reports.layout import MARGIN, _NumberedCanvas, folder_label
from core.reports.photo_table import photos_section
from core.reports.publish import publish_atomically


SECTIONS: tuple[Callable[[ReportContext], list[Any]], ...] = (
    cover_section,
    sign_off_section,
    case_summary_section,
    photos_section,
    distribution_section,
    agreement_section,
    model_card_section,
)


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
    shift: dict | None = None,
    origins: dict[str, str] | None = None,
    scope_limit: float | None = None,
    points: dict[str, Any] | None = None,
    sections: Sequence[Callable[[ReportContext], list[Any]]] = SECTIONS,
    cases: Any = None,
    shifts: dict[str, dict | None] | None = None,
) -> Path:
    """Write the PDF report of one classified folder and return its path.

    `records` may hold several models per photo (same path, different model); the report has one line
    per photo. `cards` are the models' ModelCards; `reviews` maps a path to {"label": "mpox"|"not_mpox"|
    "unsure", "reviewer", "time"}; `truth` maps a path to "mpox"/"not_mpox" (e.g. from class folders);
    `gradcam` maps a path to a heat map or overlay; `shift` is a folder's shift test ({"detected",
    "p_value", "statistic", "n"}, e.g. core.triage.shift's ShiftResult.to_dict()); `origins` maps a model key
    (model SHA-256, else "name version") to "shipped" or "local"; `scope_limit` is the limit out-of-scope
    scores were compared with (default: each card's ood_threshold); it is printed beside the score, while
    the record's flag decides whether a photo is out of scope. `cases` (core.store.cases.CaseView) adds a case summary
    and lists the photos under their cases. `shifts` maps a model key to that model's own verdict: the cover names
    every model whose alarm stands, as stderr and the app's banner do, not only the deciding one.

    The PDF is published atomically: on any failure the previous file at `out_path` stays as it was and
    nothing half-written is left. Raises ReportWriteError (one line) when the file cannot be written,
    core.progress.Cancelled when `cancel` fires.
    """
    out_path = Path(out_path)
    ctx = build_context(records, folder=folder, cards=cards, reviews=reviews, truth=truth, gradcam=gradcam,
                        shift=shift, origins=origins, scope_limit=scope_limit, title=title, generated=generated,
                        points=points, shifts=shifts,
                        progress=progress, cancel=cancel, cases=cases)
    story: list[Any] = []
    for section in sections:
        story += section(ctx)
    header = f"{title} · {ctx.when} · {folder_label(folder)}"
    if len(header) > 140:
        header = header[:139] + "…"
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN + 4,
                            bottomMargin=MARGIN + 8, title=title, author=f"mpox-triage {__version__}",
                            subject=DISCLAIMER, creator=f"mpox-triage {__version__}")
    doc.build(story, canvasmaker=partial(_NumberedCanvas, footer=DISCLAIMER, header=header))
    n = max(len(ctx.photos), 1)
    report(progress, n, n, f"Saving {out_path.name}", "saving")
    publish_atomically(out_path, buf.getbuffer())
    report(progress, n, n, f"Report written: {out_path}", "done")
    return out_path
