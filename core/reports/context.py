"""ReportContext: everything the section builders read, computed once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from core.triage.agreement import Agreement, compute_agreement, reference_labels
from core.progress import CancelToken, ProgressFn, report
from core.triage.reasons import deciding_key
from core.records import ResultRecord
from core.reports.rows import (ModelInfo, PhotoCounts, PhotoRow, count_photos, folder_points, model_key, models_of,
                                photo_rows)


DEFAULT_TITLE = "Mpox triage report"


@dataclass
class ReportContext:
    """Everything a section builder may read: the inputs, one row per photo, per-model agreement."""

    records: list[ResultRecord]
    folder: str
    cards: list[Any]
    models: list[ModelInfo]
    photos: list[PhotoRow]
    counts: PhotoCounts
    agreements: dict[str, Agreement | None]
    reviews: dict[str, dict] | None = None
    truth: dict[str, str] | None = None
    gradcam: dict[str, np.ndarray] | None = None
    shift: dict | None = None
    origins: dict[str, str] | None = None
    scope_limit: float | None = None
    title: str = DEFAULT_TITLE
    when: str = ""
    progress: ProgressFn | None = None
    cancel: CancelToken | None = None
    drawn: int = 0
    decider: str = ""                  # core.triage.reasons.deciding_key: the model whose call is the photo's
    points: dict[str, Any] | None = None   # the operating point each model decides the folder at (folder_points)
    cases: Any = None                  # core.store.cases.CaseView: a case summary, photos listed under their cases
    shifts: dict[str, dict | None] | None = None   # each model's own verdict, by key (the cover names every alarm)

    @property
    def multi(self) -> bool:
        return len(self.models) > 1

    def records_of(self, key: str) -> list[ResultRecord]:
        return [r for r in self.records if model_key(r) == key]

    def origin_of(self, card: Any) -> str | None:
        return (self.origins or {}).get(model_key(card))

    def photo_drawn(self) -> None:
        """Called as each photo's thumbnail is drawn: progress per photo and a cancel point."""
        self.drawn += 1
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        n = len(self.photos)
        if self.drawn % max(1, n // 100) == 0 or self.drawn == n:
            report(self.progress, self.drawn, max(n, 1), f"Drawing photo {self.drawn:,} of {n:,}", "thumbnails")


def build_context(records: Sequence[ResultRecord], *, folder: str, cards: Sequence[Any] = (),
                  reviews: dict[str, dict] | None = None, truth: dict[str, str] | None = None,
                  gradcam: dict[str, np.ndarray] | None = None, shift: dict | None = None,
                  origins: dict[str, str] | None = None, scope_limit: float | None = None,
                  title: str = DEFAULT_TITLE, generated: datetime | None = None,
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                  points: dict[str, Any] | None = None, cases: Any = None,
                  shifts: dict[str, dict | None] | None = None) -> ReportContext:
    """Everything the sections need, computed once: models, one row per photo, counts, agreement per model."""
    records = list(records)
    cards = list(cards or [])
    report(progress, 0, 1, "Computing summary", "summary")
    models = models_of(records, cards, origins)
    # The point each model decides the folder at: the workspace's (each model under its own verdict) when given.
    points = {**folder_points(records, models, shift), **(points or {})}
    photos = photo_rows(records, models, reviews, truth, scope_limit, shift, points)
    has_refs = bool(reference_labels(records, reviews, truth))
    agreements = {m.key: compute_agreement([r for r in records if model_key(r) == m.key], reviews, truth)
                  if has_refs else None for m in models}
    if cancel is not None:
        cancel.raise_if_cancelled()
    generated = generated or datetime.now(timezone.utc)
    return ReportContext(records=records, folder=str(folder), cards=cards, models=models, photos=photos,
                         counts=count_photos(photos, len(models)), agreements=agreements, reviews=reviews,
                         truth=truth, gradcam=gradcam, shift=shift, origins=origins, scope_limit=scope_limit,
                         title=title, decider=deciding_key([m.card for m in models if m.card is not None]),
                         when=generated.astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(), progress=progress,
                         cancel=cancel, points=points, cases=cases, shifts=shifts)
