"""Operating points: where a model calls mpox, and which scores it sends to review.

A point is a threshold (p >= threshold is called mpox) and an uncertain band [lo, hi): a score inside
the band is flagged `uncertain`, so it is reviewed whatever the call. Triage therefore clears a photo
only when p < lo (and no other flag applies): lo is the review floor, the number that sets
**triage sensitivity** (mpox photos called mpox or flagged) and **triage specificity** (other photos
called not-mpox with no flag).

A card carries two points (release 1.3.0 on):
- `default`: the card's `threshold` and `uncertain_band`;
- `out_of_collection`: `card.extra["operating_points"]["out_of_collection"]`, the point a folder
  moves to when the shift alarm fires (core.triage.shift), chosen on leave-one-collection-out predictions.
Cards without it use the default point for both. The choice of both is in bench/operating_point.py;
docs/operating_points.md has the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT = "default"
OUT_OF_COLLECTION = "out_of_collection"
MANUAL = "manual"
POINT_NAMES = (DEFAULT, OUT_OF_COLLECTION)
TARGET_TRIAGE_SENSITIVITY = 0.95


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and an uncertain band [lo, hi) on calibrated p(mpox)."""

    threshold: float
    band: tuple[float, float]
    name: str = DEFAULT

    @property
    def review_floor(self) -> float:
        """Below this score a photo is cleared (unless another flag applies)."""
        return min(float(self.band[0]), float(self.threshold))

    def at_threshold(self, threshold: float) -> "OperatingPoint":
        """The point moved to `threshold` with its band moved along (same distances in logit units)."""
        t0, (lo, hi) = _logit(self.threshold), self.band
        t = _logit(threshold)
        return OperatingPoint(float(threshold), (_sigmoid(t - (t0 - _logit(lo))), _sigmoid(t + (_logit(hi) - t0))),
                              MANUAL)

    def same_as(self, other: "OperatingPoint") -> bool:
        return (abs(self.threshold - other.threshold) < 1e-12
                and all(abs(a - b) < 1e-12 for a, b in zip(self.band, other.band)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": float(self.threshold), "uncertain_band": [float(b) for b in self.band]}


def _get(card: Any, name: str, default: Any = None) -> Any:
    return card.get(name, default) if isinstance(card, dict) else getattr(card, name, default)


def card_points(card: Any) -> dict[str, OperatingPoint]:
    """The card's operating points by name; `out_of_collection` falls back to the default point."""
    band = _get(card, "uncertain_band") or (0.0, 0.0)
    points = {DEFAULT: OperatingPoint(float(_get(card, "threshold", 0.5)), (float(band[0]), float(band[1])), DEFAULT)}
    extra = _get(card, "extra") or {}
    ooc = (extra.get("operating_points") or {}).get(OUT_OF_COLLECTION) if isinstance(extra, dict) else None
    if isinstance(ooc, dict) and "threshold" in ooc and "uncertain_band" in ooc:
        lo, hi = ooc["uncertain_band"]
        points[OUT_OF_COLLECTION] = OperatingPoint(float(ooc["threshold"]), (float(lo), float(hi)), OUT_OF_COLLECTION)
    else:
        points[OUT_OF_COLLECTION] = OperatingPoint(points[DEFAULT].threshold, points[DEFAULT].band, OUT_OF_COLLECTION)
    return points


def card_point(card: Any, name: str = DEFAULT, threshold: float | None = None) -> OperatingPoint:
    """The card's point `name`; with `threshold` (a user's --threshold) that point moved to it."""
    point = card_points(card).get(name) or card_points(card)[DEFAULT]
    if threshold is not None and abs(float(threshold) - point.threshold) > 1e-12:
        point = point.at_threshold(float(threshold))
    return point


def review_share(card: Any) -> float | None:
    """The out-of-collection point's `review_share` (see folder_point), None when the card has none."""
    extra = _get(card, "extra") or {}
    ooc = (extra.get("operating_points") or {}).get(OUT_OF_COLLECTION) if isinstance(extra, dict) else None
    share = ooc.get("review_share") if isinstance(ooc, dict) else None
    return float(share) if isinstance(share, (int, float)) and 0.0 < float(share) < 1.0 else None


def has_distinct_out_of_collection_point(card: Any) -> bool:
    pts = card_points(card)
    return review_share(card) is not None or not pts[DEFAULT].same_as(pts[OUT_OF_COLLECTION])


MIN_FOLDER_SCORES = 30


def folder_point(point: OperatingPoint, share: float | None, scores: Sequence[float]) -> OperatingPoint:
    """The out-of-collection point for one folder. A shift alarm says the model's calibration does not hold
    here, while its ranking mostly still does (out-of-collection ROC-AUC stays far above chance). So besides
    the card's fixed floor, the `share` of this folder's photos with the highest scores go to review: the
    floor becomes the lower of the two. Needs MIN_FOLDER_SCORES scores; otherwise the card's floor alone."""
    vals = np.asarray([s for s in scores if s is not None and np.isfinite(s)], dtype=np.float64)
    if share is None or len(vals) < MIN_FOLDER_SCORES:
        return point
    floor = float(np.quantile(vals, 1.0 - float(share), method="lower"))
    return band_with_floor(point, floor)


# -- measuring and choosing points on out-of-fold predictions --------------------------------------------------


def triage_rates(y: Sequence[int], p: Sequence[float], floor: float,
                 flagged: Sequence[bool] | None = None) -> tuple[float, float]:
    """(triage sensitivity, triage specificity) when photos with p >= floor, or `flagged`, go to review."""
    y = np.asarray(y).astype(int)
    review = np.asarray(p, dtype=np.float64) >= float(floor)
    if flagged is not None:
        review |= np.asarray(flagged, dtype=bool)
    sens = float(review[y == 1].mean()) if (y == 1).any() else float("nan")
    spec = float((~review[y == 0]).mean()) if (y == 0).any() else float("nan")
    return sens, spec


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson interval of k successes in n."""
    if n <= 0:
        return [float("nan"), float("nan")]
    ph = k / n
    den = 1 + z * z / n
    centre = (ph + z * z / (2 * n)) / den
    half = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return [max(0.0, centre - half), min(1.0, centre + half)]


# What each triage figure is, wherever it is printed (evaluate, reports, docs).
TRIAGE_MEANING = {
    "triage_sensitivity": "share of mpox photos called mpox or flagged for review",
    "triage_specificity": "share of other photos cleared: called not mpox with no flag",
}


def triage_from_review(y: Sequence[int], review: Sequence[bool]) -> dict[str, Any]:
    """Triage sensitivity (mpox photos called mpox or flagged: `review`) and specificity (other photos not
    reviewed) with 95% Wilson intervals and counts."""
    y = np.asarray(y).astype(int)
    review = np.asarray(review, dtype=bool)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    k1, k0 = int(review[y == 1].sum()), int((~review[y == 0]).sum())
    return {"triage_sensitivity": k1 / n1 if n1 else float("nan"), "triage_sensitivity_ci95": wilson(k1, n1),
            "triage_specificity": k0 / n0 if n0 else float("nan"), "triage_specificity_ci95": wilson(k0, n0),
            "n_mpox": n1, "n_other": n0}


def records_review(predictions: Sequence[str | None], flags: Sequence[str]) -> np.ndarray:
    """Which photos a user reviews: called mpox, or flagged for any reason (uncertain, out of scope...)."""
    return np.array([pred == "mpox" or bool(flag) for pred, flag in zip(predictions, flags)], dtype=bool)


def triage_report(y: Sequence[int], p: Sequence[float], floor: float,
                  flagged: Sequence[bool] | None = None) -> dict[str, Any]:
    """Triage sensitivity and specificity when scores >= `floor` (or `flagged` photos) go to review."""
    review = np.asarray(p, dtype=np.float64) >= float(floor)
    if flagged is not None:
        review |= np.asarray(flagged, dtype=bool)
    return {**triage_from_review(y, review), "review_floor": float(floor)}


def floor_for_sensitivity(y: Sequence[int], p: Sequence[float], target: float = TARGET_TRIAGE_SENSITIVITY) -> float:
    """The highest review floor at which at least `target` of the mpox scores are >= the floor."""
    y = np.asarray(y).astype(int)
    pos = np.sort(np.asarray(p, dtype=np.float64)[y == 1])
    if len(pos) == 0:
        raise ValueError("no mpox photos to choose a review floor on")
    # Keep ceil(target * n) positives at or above the floor: the floor is the k-th largest positive score.
    keep = int(math.ceil(target * len(pos) - 1e-9))
    return float(pos[len(pos) - keep]) if keep > 0 else float(pos[-1])


def band_with_floor(point: OperatingPoint, floor: float, name: str | None = None) -> OperatingPoint:
    """`point` with its band's lower edge lowered to `floor` (never raised: the band only widens)."""
    lo, hi = point.band
    return OperatingPoint(point.threshold, (min(float(lo), float(floor)), float(hi)), name or point.name)


# -- the point a folder is decided at, and the one way it is said ----------------------------------------------


def decided_point(card: Any, alarm: bool, scores: Sequence[float | None], threshold: float | None = None
                  ) -> OperatingPoint:
    """The point a folder's photos are decided at for `card`: its default point, or while the folder's shift
    alarm stands its out-of-collection point with this folder's review floor (folder_point over `scores`, the
    model's stored p(mpox) of the folder); moved to `threshold` when given. Workspace.point_for's rule."""
    if not alarm:
        return card_point(card, DEFAULT, threshold)
    return folder_point(card_point(card, OUT_OF_COLLECTION, threshold), review_share(card), scores)


def stored_scores(records: Sequence[Any]) -> list[float]:
    """The scores folder_point ranks: every stored p(mpox) of one model's ok records of the folder."""
    return [float(r.p_mpox) for r in records if r.ok and r.p_mpox is not None]


def records_point(card: Any, alarm: bool, records: Sequence[Any]) -> OperatingPoint:
    """decided_point for a model's stored records of one folder, at the threshold they were decided at (a
    user's --threshold moves the point; the most common stored threshold, the card's when none is stored)."""
    from collections import Counter

    thresholds = Counter(float(r.threshold) for r in records if r.ok and r.threshold is not None)
    threshold = thresholds.most_common(1)[0][0] if thresholds else None
    if threshold is not None and abs(threshold - decided_point(card, alarm, []).threshold) <= 1e-9:
        threshold = None  # stored at the point's own threshold (CSV rounding aside): not a user's threshold
    return decided_point(card, alarm, stored_scores(records), threshold)


POINT_WORDS = {DEFAULT: "its default operating point", OUT_OF_COLLECTION: "its out-of-collection operating point",
               MANUAL: "a threshold set by the user"}


def point_text(point: OperatingPoint, default: OperatingPoint | None = None) -> str:
    """A point's figures in words, the same on every surface: "threshold 0.511; photos with p(mpox) >= 0.027 go
    to review" (", 0.209 otherwise" with the `default` point it replaces, when that differs)."""
    text = f"threshold {point.threshold:.3f}; photos with p(mpox) >= {point.review_floor:.3f} go to review"
    if default is not None and not point.same_as(default):
        text += f", {default.review_floor:.3f} otherwise"
    return text


def point_message(name: str, point: OperatingPoint, default: OperatingPoint | None = None) -> str:
    """The sentence that says where a model decides a folder (stderr, --summary's point_message, the app's banner
    and the PDF cover all print this): its name, which point and point_text."""
    why = " because this folder is unlike the training photos" if point.name == OUT_OF_COLLECTION or (
        default is not None and not point.same_as(default) and point.name != MANUAL) else ""
    words = POINT_WORDS.get(point.name, f"its {point.name} operating point")
    return f"{name}: decided at {words} ({point_text(point, default)}){why}"
