"""Cross-fitted heads: the shipped head and the evidence its operating points are chosen on come from the same heads.

Until release 1.3.0 the shipped head was fitted on the train split and its temperature on val, while the review
floors were chosen on out-of-fold predictions of *other* heads (one per fold). On new photos the shipped head's
scores sat below the fold heads' scores, so a floor chosen on the folds let more mpox photos through.

Cross-fitting removes the mismatch. Group-aware, label-stratified 5-fold splits of the training photos
(scikit-learn StratifiedGroupKFold), repeated with `draws` seeds, give one head per fold (the logistic recipe,
core.models.heads.fit_logistic). Every photo gets an out-of-fold logit from each draw. Then:
- the temperature is fitted on those pooled out-of-fold logits (core.models.calibration.fit_temperature);
- the shipped head is the mean of the fold heads: the heads are linear, so the mean is one head whose logit is
  the mean of theirs;
- thresholds and review floors are chosen on the out-of-fold probabilities (sigmoid(logit / T)).
A new photo is then scored by heads none of which saw it, exactly as each training photo was in the evidence.
The mean has less head-to-head noise than a single fold head, so its lower tail sits a little higher than the
evidence's: floors chosen on the evidence err towards review.

Leave-one-collection-out evidence applies the same recipe inside each collection (`cross_fit` on one, scored on
the other), so its probabilities are on the scale the shipped head would have had, trained there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from core.models.calibration import apply_temperature, fit_temperature
from core.models.heads import DEFAULT_C, LinearHead, fit_logistic

DRAWS = 3
N_SPLITS = 5


@dataclass
class CrossFit:
    """A cross-fitted head, its temperature and the out-of-fold evidence it was calibrated on."""

    head: LinearHead                 # the mean of the fold heads
    temperature: float               # fitted on the pooled out-of-fold logits
    oof_logits: np.ndarray           # (draws, N): each photo's logit from the fold head that did not see it
    members: int                     # fold heads averaged
    info: dict = field(default_factory=dict)

    def oof_probabilities(self) -> np.ndarray:
        """(draws, N) calibrated out-of-fold p(mpox)."""
        return apply_temperature(self.oof_logits, self.temperature)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Calibrated p(mpox) of the shipped (mean) head on embeddings (N, D)."""
        return apply_temperature(self.head.logits(x), self.temperature)


def mean_head(heads: Sequence[LinearHead]) -> LinearHead:
    """One linear head whose logit is the mean of the heads' logits (same features: all signed-sqrt or none)."""
    if not heads or len({h.sqrt for h in heads}) != 1:
        raise ValueError("mean_head needs one or more heads on the same features")
    return LinearHead(np.mean([h.w for h in heads], axis=0), float(np.mean([h.b for h in heads])),
                      C=heads[0].C, sqrt=heads[0].sqrt)


def cross_fit(x: np.ndarray, y: Sequence[int], groups: Sequence[str], *, C: float = DEFAULT_C, draws: int = DRAWS,
              n_splits: int = N_SPLITS, seed: int = 0, progress=None) -> CrossFit:
    """Cross-fit the logistic head on embeddings x (N, V, D) (view 0 = identity; every view a training row).

    Each draw splits the photos by group into `n_splits` folds (seed `seed + draw`); photos of one group never
    sit on both sides. `progress(done, total)` is called after each fold head.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, None, :]
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    k = int(max(2, min(n_splits, np.bincount(y, minlength=2).min())))
    oof = np.full((draws, len(y)), np.nan)
    heads = []
    for d in range(draws):
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed + d)
        for tr, te in splitter.split(np.zeros(len(y)), y, groups):
            head = fit_logistic(x[tr], y[tr], C=C)
            oof[d, te] = head.logits(x[te][:, 0])
            heads.append(head)
            if progress is not None:
                progress(len(heads), draws * k)
    temperature = fit_temperature(oof.ravel(), np.tile(y, draws))
    return CrossFit(mean_head(heads), temperature, oof, len(heads),
                    {"draws": draws, "n_splits": k, "seed": seed, "C": C, "views": int(x.shape[1]),
                     "n": int(len(y)), "n_mpox": int(y.sum())})


def loco_evidence(x: np.ndarray, y: Sequence[int], groups: Sequence[str], sources: Sequence[str], *,
                  C: float = DEFAULT_C, draws: int = 1, seed: int = 0, progress=None
                  ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """Leave-one-collection-out predictions of the cross-fitted recipe: for each collection A, `cross_fit` on A's
    photos and the calibrated mean head scored on every other photo. Returns (name, train idx, scored idx,
    p(mpox), temperature) per direction, the fold tuples of bench/operating_point.py."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, None, :]
    y = np.asarray(y).astype(int)
    groups, sources = np.asarray(groups), np.asarray(sources)
    out = []
    for a in sorted(set(sources.tolist())):
        tr, te = np.flatnonzero(sources == a), np.flatnonzero(sources != a)
        fit = cross_fit(x[tr], y[tr], groups[tr], C=C, draws=draws, seed=seed, progress=progress)
        name = f"{a} -> {', '.join(sorted(set(sources.tolist()) - {a}))}"
        out.append((name, tr, te, fit.probabilities(x[te][:, 0]), fit.temperature))
    if len(out) < 2:
        raise ValueError("leave-one-collection-out needs photos from at least two sources")
    return out
