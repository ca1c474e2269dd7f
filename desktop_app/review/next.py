"""Review next (Ctrl+J): the review queue, for safety (no Qt).

From stored results only, so it is instant and never blocks the window: among the unreviewed photos the
current model did not call mpox, the one it scores highest first (core.adapt.review_queue): the photos
most likely to be a missed mpox are looked at first. Photos called mpox come after them (they are
reviewed as positives anyway).

Photos to label for adapting are another job with another order: the labelling sample
(`mpox-triage adapt --suggest N`, core.adapt.labelling_sample), a seeded random sample of the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

@dataclass
class NextPick:
    path: str | None          # None: nothing left to suggest
    p_mpox: float | None
    threshold: float | None
    candidates: int           # unreviewed photos with a score from this model
    unscored: int             # unreviewed photos this model has not scored (Run first)


def pick_next(order: Sequence[str], records: Mapping[str, object], reviewed: Iterable[str],
              default_threshold: float = 0.5) -> NextPick:
    """`order`: the folder's photos in display order; `records`: path -> ResultRecord of one model;
    `reviewed`: paths with any review (mpox, not mpox, unsure)."""
    from core.adapt import review_queue

    done = set(reviewed)
    cands, p_of, thr_of, called = [], [], {}, []
    unscored = 0
    for p in order:
        if p in done:
            continue
        rec = records.get(p)
        if rec is None or getattr(rec, "status", "") != "ok" or getattr(rec, "p_mpox", None) is None:
            unscored += 1
            continue
        cands.append(p)
        thr_of[p] = rec.threshold if rec.threshold is not None else default_threshold
        p_of.append(float(rec.p_mpox))
        called.append(getattr(rec, "prediction", None) == "mpox")
    if not cands:
        return NextPick(None, None, None, 0, unscored)
    p = cands[review_queue(p_of, called, [False] * len(cands))[0]]
    return NextPick(p, float(records[p].p_mpox), float(thr_of[p]), len(cands), unscored)
