"""Review next (Ctrl+J): the review queue, for safety (no Qt).

From stored results only, so it is instant and never blocks the window: among the unreviewed photos the
current model did not call mpox, the one it scores highest first (core.triage.labelling.review_queue): the photos
most likely to be a missed mpox are looked at first. Photos called mpox come after them (they are
reviewed as positives anyway).

Photos to label for adapting are another job with another order: the labelling sample
(`mpox-triage adapt --suggest N`, core.triage.labelling.labelling_sample), a seeded random sample of the folder.
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
    from core.triage.labelling import review_queue

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


@dataclass
class LabelPick:
    path: str | None          # None: the sample is labelled (or no photo has a hash yet: Run first)
    position: int             # 1-based place in the labelling sample
    size: int                 # the sample's size now (grown past N when a class is short)
    left: int                 # photos of the sample still to label
    reason: str               # why the sample grew, or why it cannot reach the minimum


def pick_for_labelling(order: Sequence[str], records: Mapping[str, object], reviews: Mapping[str, object],
                       folder: str, n: int, session: object = None) -> LabelPick:
    """The next photo of the folder's labelling sample (core.triage.labelling.labelling_sample, seeded by `folder`) that has
    no mpox / not-mpox review; photos reviewed `unsure` are passed over. `records`: path -> ResultRecord of
    one model (their file SHA-256 places each photo; the sample is blind to the scores)."""
    from core.triage.labelling import folder_seed, labelling_sample, remember_sample, stored_sample

    def label(p):
        r = reviews.get(p)
        r = r.get("label") if isinstance(r, dict) else r
        return {"mpox": 1, "not_mpox": 0}.get(r) if r != "unsure" else "unsure"

    photos = [p for p in order if label(p) != "unsure"]
    shas = [getattr(records.get(p), "file_sha256", None) for p in photos]
    seed = folder_seed(folder)
    # With a session the sample drawn before stays first (it keeps its photos when the folder grows).
    sample = labelling_sample(shas, n, seed, [label(p) for p in photos], keep=stored_sample(session, seed))
    remember_sample(session, seed, sample, shas)
    todo = sample.to_label
    if not todo:
        return LabelPick(None, 0, sample.size, 0, sample.reason)
    return LabelPick(photos[todo[0]], sample.order.index(todo[0]) + 1, sample.size, len(todo), sample.reason)
