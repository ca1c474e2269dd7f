"""PDF reports of a classified folder, for filing: one line per photo, needs-review first, a sign-off block.

A report is a list of section builders (`SECTIONS`), each a function from one `ReportContext` to the
flowables of its section, one module per section: `cover` (cover and sign-off), `photos`, `charts`
(score distributions, agreement) and `cards` (each model card as one page in words). `rows` makes one
row per photo (several models side by side) and the counts in photos; `layout` holds styles and fonts;
`thumbs` the metadata-free thumbnails; `publish` the atomic write; `writer` puts them together.

Every page carries the disclaimer and "Page x of y". The PDF is built in memory and published atomically:
a failure leaves the previous file as it was.
"""

from __future__ import annotations

from core.triage.agreement import compute_agreement
from core.reports.cards import card_summary, metrics_in_words, model_card_section
from core.reports.charts import agreement_section, distribution_section
from core.reports.context import DEFAULT_TITLE, ReportContext, build_context
from core.reports.cover import SHIFT_ADVICE, cover_section, sign_off_section
from core.reports.photo_table import photos_section
from core.reports.publish import ReportWriteError, publish_atomically
from core.reports.rows import (
    Counts, ModelInfo, PhotoCounts, PhotoRow, count_photos, count_records, model_key, models_of, photo_rows,
)
from core.reports.thumbs import make_gradcam_thumbnail, make_thumbnail
from core.reports.writer import SECTIONS, write_pdf_report

__all__ = [
    "DEFAULT_TITLE", "SECTIONS", "SHIFT_ADVICE", "Counts", "ModelInfo", "PhotoCounts", "PhotoRow", "ReportContext",
    "ReportWriteError", "agreement_section", "build_context", "card_summary", "compute_agreement", "count_photos",
    "count_records", "cover_section", "distribution_section", "make_gradcam_thumbnail", "make_thumbnail",
    "metrics_in_words", "model_card_section", "model_key", "models_of", "photo_rows", "photos_section",
    "publish_atomically", "sign_off_section", "write_pdf_report",
]
