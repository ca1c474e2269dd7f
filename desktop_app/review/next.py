"""Review next (Ctrl+J): the unreviewed photo worth labelling next under the current model (no Qt).

From stored results only, so it is instant and never blocks the window: the current model's
calibrated p(mpox) of every scored photo (the session keeps them; embeddings are not stored), through
core.adapt.suggest_next with k = 1 in its default order (core.adapt.DEFAULT_ORDER, chosen by
bench/adaptation.py; docs/adaptation.md): for the stratified order, the photo whose score fills the
widest gap in the score range left by the photos already reviewed (the median score first), so a
run of Ctrl+J labels photos from the whole range, as a random sample would, not only the boundary.
The folder positions are passed as the "embeddings" for the orders that use them (medoids,
uncertainty): bursts of near-identical photos of one patient sit next to each other in a folder.

`mpox-triage adapt --suggest K --session DIR` ranks with the same order (medoids and uncertainty
with the model's embeddings instead: it re-embeds every unreviewed photo, minutes on a large folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

POOL = 3   # candidates nearest the threshold among which diversity decides


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
    import numpy as np

    from core.adapt import suggest_next
    from core.calibration import logit

    done = set(reviewed)
    position = {p: i for i, p in enumerate(order)}
    cands, z, thr_of = [], [], {}
    unscored = 0
    for p in order:
        if p in done:
            continue
        rec = records.get(p)
        if rec is None or getattr(rec, "status", "") != "ok" or getattr(rec, "p_mpox", None) is None:
            unscored += 1
            continue
        thr = rec.threshold if rec.threshold is not None else default_threshold
        cands.append(p)
        thr_of[p] = thr
        z.append(float(logit(float(rec.p_mpox))) - float(logit(float(thr))))   # 0 = on the threshold
    if not cands:
        return NextPick(None, None, None, 0, unscored)
    # suggest_next square-roots the "embeddings" before measuring distance: pass squared positions so
    # the distance it measures is the distance in folder order.
    pos = np.array([[float(position[p]) ** 2] for p in cands])
    labelled = np.array([[float(position[p]) ** 2] for p in order if p in done]) if done & set(position) else None
    # The reviewed photos' own scores: the default (stratified) order fills the widest gap they leave.
    zl = [float(logit(float(r.p_mpox))) - float(logit(float(r.threshold if r.threshold is not None
                                                             else default_threshold)))
          for p in order if p in done and (r := records.get(p)) is not None
          and getattr(r, "status", "") == "ok" and getattr(r, "p_mpox", None) is not None]
    i = suggest_next(np.asarray(z), pos, 1, 0.0, labelled, pool_factor=POOL, labelled_logits=np.asarray(zl))[0]
    p = cands[i]
    return NextPick(p, float(records[p].p_mpox), float(thr_of[p]), len(cands), unscored)
