"""Adapting a bundle to a site's own reviewed photos, without the original training photos.

A bundle of release 1.2.0 or later carries the embeddings of its training and validation photos
(`embeddings.npz`, core.learning.features.load_embeddings). Adapting embeds the site's labelled photos with
the bundle's own backbone(s) and fits a new logistic head (core.models.heads) on the base training
embeddings plus the site photos, each site photo weighted `w` times a base photo:

- `w` is chosen by cross-validation on the site photos (stratified, group-aware folds; every
  fold's model is trained on all base photos plus the other folds' site photos and scores the
  held-out site photos), as the weight with the best cross-validated site ROC-AUC;
- the threshold comes from those cross-validated site predictions (the highest with sensitivity
  >= 0.90 there; lowered, if needed, to keep >= 0.90 on the base val photos too), the temperature from them plus the final head's logits on the base val photos
  (held out from fitting); never from photos a model was trained on;
- the card records the parent bundle, the site photo counts, the cross-validated site metrics
  with bootstrap 95% intervals next to the parent's own scores on the same photos, the base
  validation metrics before and after (forgetting check) and a learning curve (cross-validated site
  ROC-AUC against the number of site photos used).

Fewer than MIN_PER_CLASS photos of either class is refused (the message says how many more are
needed); fewer than ROUGH_BELOW adapts but warns that the site figures are rough.
Two orders, each for its job: `review_queue` (the app's Review next: unreviewed photos not called
mpox, highest score first: safety) and `labelling_sample` (`adapt --suggest N`: a seeded, class-blind
random sample that reaches MIN_PER_CLASS of each class: teaching). `suggest_next` keeps the ordered
candidates the bench compares with random (bench/adaptation.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.progress import CancelToken, ProgressFn, report
from core.triage.labelling import content_sha256, embed_photos
from core.triage.remedy import MIN_PER_CLASS

ROUGH_BELOW = 30
SITE_WEIGHTS = (1.0, 3.0, 10.0, 30.0)
SITE_SOURCE = "site"


class AdaptError(ValueError):
    """Adaptation cannot run (too few photos, a bundle without embeddings, ...); the message says why."""


# -- data ------------------------------------------------------------------------------------------


def site_version(parent_version: str) -> str:
    """An adapted model's version: its parent's, then the time to the second, so two adaptations never share one."""
    from core.records import utc_now

    return f"{parent_version}+site.{utc_now()[:19].replace('-', '').replace(':', '')}"

def base_embeddings(bundle) -> dict[str, np.ndarray]:
    """The bundle's own training/validation embeddings (verified against its card), or AdaptError."""
    from core.learning.features import load_embeddings

    data = load_embeddings(bundle)
    if not data:
        raise AdaptError(f"{bundle.card.display_name} carries no embeddings.npz (bundles before release 1.2.0); "
                         "adapt needs a bundle that carries its training embeddings")
    return data


def count_problem(y: Sequence[int]) -> str | None:
    """One line saying how many more photos are needed, or None when there are enough."""
    y = np.asarray(y).astype(int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    need = [f"{MIN_PER_CLASS - n} more {name}" for n, name in ((n_pos, "mpox"), (n_neg, "not-mpox"))
            if n < MIN_PER_CLASS]
    if not need:
        return None
    return (f"adapting needs at least {MIN_PER_CLASS} labelled photos of each class; have {n_pos} mpox and "
            f"{n_neg} not-mpox: label {' and '.join(need)} photos")


def count_warnings(y: Sequence[int]) -> list[str]:
    y = np.asarray(y).astype(int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if min(n_pos, n_neg) < ROUGH_BELOW:
        return [f"only {n_pos} mpox and {n_neg} not-mpox site photos: the site figures are rough (wide intervals); "
                f"{ROUGH_BELOW}+ of each class give usable ones"]
    return []


def out_of_scope_mask(scores: Sequence[float | None]) -> np.ndarray:
    """True where the scope check says a photo is not a skin photo (core.photos.scope.is_out_of_scope)."""
    from core.photos.scope import is_out_of_scope

    return np.array([is_out_of_scope(s) for s in scores], dtype=bool)


def out_of_scope_line(paths: Sequence, labels: np.ndarray, mask: np.ndarray, included: bool) -> str:
    """One line counting the labelled photos that are not skin photos (by class), or ""."""
    if not mask.any():
        return ""
    lab = np.asarray(labels)[: len(mask)]
    n_pos, n_neg = int((mask & (lab == 1)).sum()), int((mask & (lab == 0)).sum())
    first = next(str(p) for p, m in zip(paths, mask) if m)
    what = f"{int(mask.sum())} labelled photo(s) are not skin photos ({n_pos} mpox, {n_neg} not-mpox; e.g. {first})"
    if included:
        return f"{what}: used anyway (--include-out-of-scope)"
    return f"{what}: left out (core.photos.scope); --include-out-of-scope uses them"


# -- the site photos: guards before any slow work --------------------------------------------------

# Class folder names `adapt --labelled` accepts, compared lower-cased without punctuation
# (core.learning.datasets._norm): mpox aliases are mpox; these name other photos. Any other name is refused,
# so a `suspected_mpox/` or `unsure/` folder never silently becomes not-mpox.
OTHER_CONDITION_NAMES = frozenset({
    "normal", "healthy", "healthyskin", "chickenpox", "varicella", "measles", "cowpox", "hfmd",
    "handfootmouth", "handfootandmouthdisease", "acne", "herpes", "shingles", "zoster", "scabies", "eczema",
    "psoriasis", "impetigo", "molluscum", "molluscumcontagiosum",
})
MIN_ROC_AUC = 0.6   # below this cross-validated site ROC-AUC an adapted model is refused (unless accepted)


def not_mpox_names() -> frozenset[str]:
    """Every class name adapt reads as not-mpox (normalised): core.learning.datasets' generic ones plus named conditions."""
    from core.learning.datasets import NOT_MPOX_ALIASES

    return NOT_MPOX_ALIASES | OTHER_CONDITION_NAMES


def class_name_problem(dataset) -> str | None:
    """One line naming class folders outside the accepted list (docs/adaptation.md), or None."""
    from core.learning.datasets import MPOX_ALIASES, _norm

    accepted = MPOX_ALIASES | not_mpox_names()
    unknown = sorted({s.fine_label for s in dataset.samples
                      if _norm(s.fine_label) not in accepted and s.label != "mpox"})
    if not unknown:
        return None
    return (f"class folder(s) {', '.join(unknown)} not understood: adapt reads mpox/ (or monkeypox/) as mpox and "
            "other/, not_mpox/, normal/, chickenpox/, measles/ ... as not-mpox (the list is in docs/adaptation.md); "
            "rename or move the folder (photos you are unsure of are left out, not guessed)")


def duplicate_label_problem(paths: Sequence[str | os.PathLike], labels: Sequence[int],
                            sha256: Sequence[str | None]) -> str | None:
    """One line when the same photo content (SHA-256) carries both labels, or None."""
    seen: dict[str, tuple[int, str]] = {}
    for p, y, h in zip(paths, labels, sha256):
        if not h:
            continue
        if h in seen and seen[h][0] != int(y):
            first = seen[h]
            names = {1: "mpox", 0: "not-mpox"}
            return (f"the same photo (SHA-256 {h[:12]}...) is labelled {names[first[0]]} as {first[1]} and "
                    f"{names[int(y)]} as {p}; fix one label (or remove the copy) before adapting")
        seen.setdefault(h, (int(y), str(p)))
    return None


def stale_mask(recorded: Sequence[str | None] | None, current: Sequence[str | None]) -> np.ndarray:
    """True where a photo's content differs from the content its review labelled (unknown = not stale)."""
    if recorded is None:
        return np.zeros(len(current), dtype=bool)
    return np.array([bool(r) and r != c for r, c in zip(recorded, current)], dtype=bool)


@dataclass
class SiteCheck:
    """The site photos adapt will use: stale ones left out, with their current SHA-256."""
    paths: list
    labels: np.ndarray
    groups: list | None
    sha256: list
    stale: list[str]
    warnings: list[str]


def check_site(paths: Sequence[str | os.PathLike], labels: Sequence[int], groups: Sequence[str] | None = None,
               review_sha256: Sequence[str | None] | None = None) -> SiteCheck:
    """Leave out stale labels (content changed since the review), then AdaptError (one line) for one content
    under both labels or too few photos. Reads (hashes) the files; fast, so callers run it before slow work."""
    labels = np.asarray(labels).astype(int)
    paths = list(paths)
    shas = content_sha256(paths)
    stale = stale_mask(review_sha256, shas)
    warnings: list[str] = []
    stale_paths = [str(p) for p, st in zip(paths, stale) if st]
    if stale.any():
        warnings.append(f"{len(stale_paths)} reviewed photo(s) changed since they were reviewed (e.g. "
                        f"{stale_paths[0]}): their reviews are stale and were not used")
        keep = ~stale
        paths, labels, shas = [p for p, k in zip(paths, keep) if k], labels[keep], [h for h, k in zip(shas, keep) if k]
        groups = None if groups is None else [g for g, k in zip(groups, keep) if k]
    problem = duplicate_label_problem(paths, labels, shas) or count_problem(labels)
    if problem:
        raise AdaptError(problem)
    return SiteCheck(paths, labels, None if groups is None else list(groups), shas, stale_paths, warnings)


def quality_problem(site_cv: dict, site_parent: dict) -> str | None:
    """What is wrong when the adapted head ranks the site's photos below MIN_ROC_AUC or below the parent, or None."""
    auc, parent = float(site_cv.get("roc_auc", float("nan"))), float(site_parent.get("roc_auc", float("nan")))
    if np.isfinite(auc) and auc < MIN_ROC_AUC:
        return (f"the adapted model's cross-validated ROC-AUC on the site photos is {auc:.3f}, below "
                f"{MIN_ROC_AUC:.1f} (it would not rank this site's photos usefully)")
    if np.isfinite(auc) and np.isfinite(parent) and auc < parent:
        return (f"the adapted model ranks the site photos worse than its parent (cross-validated ROC-AUC {auc:.3f} "
                f"vs {parent:.3f} for the parent on the same photos)")
    return None


# -- the adapted operating point --------------------------------------------------------------------

from core.models.operating_point import TARGET_TRIAGE_SENSITIVITY  # noqa: E402 - one target for every operating point

MIN_MPOX_FOR_OWN_POINT = 20   # fewer mpox site photos cannot show 0.95 (one miss is 5%): keep the parent's point


def parent_out_of_collection_point(card) -> dict:
    """The parent's out-of-collection operating point ({threshold, uncertain_band, from}): core.models.operating_point's
    reading of the card, which falls back to the card's own threshold and band (cards before release 1.3.0)."""
    from core.models.operating_point import OUT_OF_COLLECTION, card_points, has_distinct_out_of_collection_point

    point = card_points(card)[OUT_OF_COLLECTION]
    ooc = ((card.extra or {}).get("operating_points") or {}).get(OUT_OF_COLLECTION) \
        if isinstance(card.extra, dict) else None
    source = "parent out_of_collection" if isinstance(ooc, dict) or has_distinct_out_of_collection_point(card) \
        else "parent threshold (the card has no out-of-collection point)"
    from core.models.operating_point import review_share

    out = {"threshold": float(point.threshold), "uncertain_band": [float(b) for b in point.band], "from": source}
    if review_share(card) is not None:
        out["review_share"] = review_share(card)
    return out


def review_floor_lower_bound(p_mpox: np.ndarray, target: float = TARGET_TRIAGE_SENSITIVITY,
                             n_bootstrap: int = 1000, seed: int = 0) -> float:
    """A review floor that keeps >= `target` of mpox photos in 95% of bootstrap resamples of their scores.

    Per resample: the highest floor with >= target of the resampled mpox scores at or above it (the rule of
    core.models.operating_point.floor_for_sensitivity, vectorised over the resamples); the floor returned is the
    5th percentile of those, so the triage sensitivity target holds at the bootstrap's lower bound rather
    than only on this one sample."""
    pos = np.sort(np.asarray(p_mpox, dtype=np.float64))
    keep = int(np.ceil(target * len(pos) - 1e-9))
    rng = np.random.default_rng(seed)
    draws = np.sort(rng.choice(pos, size=(max(1, n_bootstrap), len(pos)), replace=True), axis=1)
    floors = draws[:, len(pos) - keep]
    # Just below the bound's score, so that photo itself is kept (scores tie at float precision).
    return float(np.nextafter(np.percentile(floors, 5.0, method="lower"), -np.inf))


MIN_TRIAGE_SPECIFICITY = 0.30   # a review floor that clears fewer other photos than this is refused
BAND_EDGE = 1e-4                 # bands stay inside (0, 1): a floor of exactly 0 would review every photo


def pooled_floor_lower_bound(p_site: np.ndarray, p_prior: np.ndarray | None = None,
                             target: float = TARGET_TRIAGE_SENSITIVITY, n_bootstrap: int = 1000,
                             seed: int = 0) -> float:
    """A review floor for the site: the lower of (a) the bootstrap lower bound of the floor keeping >= `target`
    of the mpox scores of the site's cross-validated predictions `p_site` pooled with the prior's `p_prior`
    (held-out base photos under the adapted head; site and prior resampled separately), and (b) the floor
    keeping >= `target` of the site's own mpox scores (core.models.operating_point.floor_for_sensitivity).

    On about 20 site photos alone the bootstrap bound is the lowest mpox score (floors of 0.000 were seen):
    one outlier, drawn twice in a resample, sets it. Pooled with the prior's photos it is an estimate, and
    (b) keeps the site's own sensitivity at the target on its photos."""
    from core.models.operating_point import floor_for_sensitivity

    site = np.asarray(p_site, dtype=np.float64)
    prior = np.asarray(p_prior if p_prior is not None else [], dtype=np.float64)
    if not len(prior):
        return review_floor_lower_bound(site, target, n_bootstrap, seed)
    rng = np.random.default_rng(seed)
    n = len(site) + len(prior)
    keep = int(np.ceil(target * n - 1e-9))
    draws = np.sort(np.concatenate([rng.choice(site, size=(max(1, n_bootstrap), len(site)), replace=True),
                                    rng.choice(prior, size=(max(1, n_bootstrap), len(prior)), replace=True)],
                                   axis=1), axis=1)
    pooled = float(np.percentile(draws[:, n - keep], 5.0, method="lower"))
    own = floor_for_sensitivity(np.ones(len(site), dtype=int), site, target)
    return float(np.nextafter(min(pooled, own), -np.inf))


def choose_operating_point(y: Sequence[int], p_cv: Sequence[float], parent_point: dict | None,
                           threshold: float | None = None, target: float = TARGET_TRIAGE_SENSITIVITY,
                           n_bootstrap: int = 1000, seed: int = 0, prior_y: Sequence[int] | None = None,
                           prior_p: Sequence[float] | None = None) -> dict:
    """The adapted model's default point (threshold and uncertain band) for its site.

    With MIN_MPOX_FOR_OWN_POINT or more mpox site photos: the threshold is `threshold` (or the highest with
    sensitivity >= 0.90 on the cross-validated site predictions `p_cv`); the review floor is lowered, if
    needed, to pooled_floor_lower_bound of the site's mpox scores and the prior's (`prior_y`, `prior_p`:
    held-out base photos under the adapted head). A floor whose triage specificity is under
    MIN_TRIAGE_SPECIFICITY on the site's other photos, or on site and prior pooled,
    is refused, as are fewer mpox photos:
    then the parent's out-of-collection point, unchanged, with the reason. Returns {threshold,
    uncertain_band, source ("site" | "parent"), reason, triage_sensitivity, triage_specificity (on p_cv),
    triage: {"site_cv": ..., "base_val": ...} (core.models.operating_point.triage_report of the point's floor)}.
    """
    from core.models.calibration import logit, sigmoid
    from core.learning.evaluation import choose_threshold
    from core.models.operating_point import triage_report

    y = np.asarray(y).astype(int)
    p = np.asarray(p_cv, dtype=np.float64)
    py = None if prior_y is None else np.asarray(prior_y).astype(int)
    pp = None if prior_p is None else np.asarray(prior_p, dtype=np.float64)
    n_pos = int((y == 1).sum())

    def evidence(floor: float) -> dict:
        out = {"site_cv": triage_report(y, p, floor)}
        if py is not None and len(py) and (py == 1).any():
            out["base_val"] = triage_report(py, pp, floor)
            # Site and prior pooled, as the floor pools them.
            yy, review = np.concatenate([y, py]), np.concatenate([p, pp]) >= floor
            out["pooled"] = {
                "triage_sensitivity": float(review[yy == 1].mean()),
                "triage_specificity": float((~review[yy == 0]).mean()) if (yy == 0).any() else float("nan"),
                "review_floor": float(floor)}
        return out

    refused = None
    if n_pos < MIN_MPOX_FOR_OWN_POINT:
        refused = (f"only {n_pos} mpox site photos (fewer than {MIN_MPOX_FOR_OWN_POINT}: a triage sensitivity of "
                   f"{target:.2f} cannot be shown on them)")
    else:
        thr = float(threshold) if threshold is not None else choose_threshold(y, p, 0.90)[0]
        centre = float(logit(thr))
        lo, hi = float(sigmoid(centre - 1.0)), float(sigmoid(centre + 1.0))
        prior_pos = pp[py == 1] if pp is not None and py is not None else None
        floor = pooled_floor_lower_bound(p[y == 1], prior_pos, target, n_bootstrap=n_bootstrap, seed=seed)
        band = [min(max(min(lo, floor), BAND_EDGE), thr), min(max(hi, thr), 1.0 - BAND_EDGE)]
        triage = evidence(min(band[0], thr))
        specs = {k: v["triage_specificity"] for k, v in triage.items()
                 if k in ("site_cv", "pooled") and np.isfinite(v["triage_specificity"])}
        low = {k: s for k, s in specs.items() if s < MIN_TRIAGE_SPECIFICITY}
        prior_note = f" pooled with {int((py == 1).sum())} held-out base val mpox photos" \
            if prior_pos is not None and len(prior_pos) else ""
        if low:
            names = {"site_cv": "site's cross-validated", "pooled": "site and base val pooled"}
            where = ", ".join(f"{s:.2f} on the {names[k]} photos" for k, s in low.items())
            refused = (f"the site's own review floor {band[0]:.3f} would clear too few other photos (triage "
                       f"specificity {where}, under {MIN_TRIAGE_SPECIFICITY:.2f})")
        else:
            source = "site"
            reason = (f"review floor {band[0]:.3f}: triage sensitivity >= {target:.2f} at the bootstrap lower bound "
                      f"on cross-validated site predictions ({n_pos} mpox){prior_note}")
    if refused is not None:
        if parent_point is None:
            raise AdaptError(f"{refused}, and there is no parent point to keep")
        thr, band = float(parent_point["threshold"]), [float(b) for b in parent_point["uncertain_band"]]
        source = "parent"
        reason = f"{refused}; kept the parent's out-of-collection operating point"
        triage = evidence(min(band[0], thr))
    site = triage["site_cv"]
    return {"threshold": thr, "uncertain_band": band, "source": source, "reason": reason,
            "triage_sensitivity": site["triage_sensitivity"], "triage_specificity": site["triage_specificity"],
            "triage": triage}


def card_operating_points(default: dict, parent_point: dict) -> dict:
    """extra.operating_points of an adapted card: `default` (its site's point, with its triage evidence) and
    `out_of_collection` (the parent's, for photos from a third place), never stricter than `default`: its
    threshold and review floor are at most the default's (core/models/card_schema.py checks the same)."""
    thr = float(default["threshold"])
    lo, hi = (float(b) for b in default["uncertain_band"])
    o_thr = min(float(parent_point["threshold"]), thr)
    o_lo, o_hi = (float(b) for b in parent_point["uncertain_band"])
    o_lo, o_hi = min(o_lo, lo, o_thr), max(o_hi, o_thr)
    ooc = {"threshold": o_thr, "uncertain_band": [max(o_lo, BAND_EDGE), min(o_hi, 1.0 - BAND_EDGE)],
           "from": parent_point.get("from", "parent")}
    if (o_thr, o_lo) != (float(parent_point["threshold"]), float(parent_point["uncertain_band"][0])):
        ooc["note"] = "lowered to the site point's threshold or floor: a third place is never decided more strictly"
    if parent_point.get("review_share") is not None:
        ooc["review_share"] = float(parent_point["review_share"])
    return {"default": {"threshold": thr, "uncertain_band": [lo, hi], "source": default["source"],
                        "reason": default["reason"], "triage": default.get("triage", {})},
            "out_of_collection": ooc}


# -- the recipe on embeddings -----------------------------------------------------------------------

def _folds(y: np.ndarray, groups: Sequence[str] | None, n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    k = int(max(2, min(n_splits, np.bincount(y, minlength=2).min())))
    if groups is not None and len(set(groups)) < len(groups):
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_with_site(xb: np.ndarray, yb: np.ndarray, xs: np.ndarray, ys: np.ndarray, weight: float, C: float):
    from core.models.heads import fit_logistic

    x = np.concatenate([xb, xs]) if len(xs) else xb
    y = np.concatenate([yb, ys]) if len(ys) else yb
    w = np.concatenate([np.ones(len(yb)), np.full(len(ys), float(weight))])
    return fit_logistic(x, y, sample_weight=w, C=C)


def cv_site_logits(xb, yb, xs, ys, weight: float, C: float, folds, k_site: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """Cross-validated logits of the site photos; `k_site` keeps only that many site photos per training fold."""
    out = np.full(len(ys), np.nan)
    rng = np.random.default_rng(seed)
    for tr, te in folds:
        use = tr
        if k_site is not None and k_site < len(tr):
            use = rng.choice(tr, size=k_site, replace=False) if k_site > 0 else tr[:0]
        head = fit_with_site(xb, yb, xs[use], ys[use], weight, C)
        out[te] = head.logits(xs[te])
    return out


def _auc(y, z) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, z)) if len(set(np.asarray(y).tolist())) == 2 else float("nan")


def choose_site_weight(xb, yb, xs, ys, C: float, folds, weights: Sequence[float] = SITE_WEIGHTS
                       ) -> tuple[float, list[dict], np.ndarray]:
    """The site weight with the best cross-validated site ROC-AUC (ties: the smaller weight)."""
    table, best = [], None
    for w in weights:
        z = cv_site_logits(xb, yb, xs, ys, w, C, folds)
        auc = _auc(ys, z)
        table.append({"site_weight": float(w), "cv_roc_auc": auc})
        if best is None or auc > best[1] + 1e-9:
            best = (w, auc, z)
    return float(best[0]), table, best[2]


def learning_curve(xb, yb, xs, ys, weight: float, C: float, folds, seed: int = 0,
                   sizes: Sequence[int] = (0, 10, 20, 50, 100, 200, 400)) -> list[dict]:
    """Cross-validated site ROC-AUC with K site photos per training fold (K = 0: base photos only)."""
    max_k = min(len(tr) for tr, _ in folds)
    ks = sorted({k for k in sizes if k < max_k} | {max_k})
    return [{"k_site": int(k), "cv_roc_auc": _auc(ys, cv_site_logits(xb, yb, xs, ys, weight, C, folds, k, seed))}
            for k in ks]


def parent_head(bundle):
    """The parent bundle's head as a function of its embeddings (N, D) -> logits (N,) (numpy; Bundle.head)."""
    return bundle.head.logits


# -- the whole adaptation ---------------------------------------------------------------------------

@dataclass
class AdaptResult:
    model: Any                       # the end-to-end Keras model, or None where TensorFlow is not installed
    card: Any
    ood: Any
    embeddings_npz: bytes
    report: dict
    warnings: list[str] = field(default_factory=list)
    components: list | None = None   # combined bundles: the component references to keep
    head: Any = None                 # core.models.heads.LinearHead: the new head (runs in numpy)
    parent: Any = None               # the parent Bundle (its LiteRT backbone is reused)
    photos: list = field(default_factory=list)  # the site photos used (a few check the new runtime)
    stale: list[str] = field(default_factory=list)   # photos left out: changed since their review


def adapt_bundle(bundle, paths: Sequence[str | os.PathLike], labels: Sequence[int], groups: Sequence[str] | None = None,
                 *, name: str | None = None, version: str | None = None, min_sensitivity: float = 0.90,
                 C: float | None = None, seed: int = 0, n_bootstrap: int = 1000, site_label: str = "",
                 review_sha256: Sequence[str | None] | None = None, accept_worse: bool = False,
                 include_out_of_scope: bool = False, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None) -> AdaptResult:
    """Adapt `bundle` to labelled site photos (labels 1 = mpox, 0 = not mpox); writes nothing.

    `review_sha256`: the content each label was given to (from the session's reviews); a photo whose
    content differs now has a stale label and is left out. Refused with AdaptError (one line): too few
    photos, one content under both labels, or an adapted model that ranks the site photos below
    MIN_ROC_AUC or below the parent (unless `accept_worse`). Photos that fail the scope check (core.photos.scope: not
    a skin photo) are left out, counted in one warning, unless `include_out_of_scope`; photos the embedding
    distance (ood) alone flags stay in."""
    from core.models.bundle import ModelCard
    from core.models.calibration import apply_temperature, fit_temperature
    from core.learning.evaluation import choose_threshold, to_jsonable
    from core.triage.metrics import evaluate_probabilities
    from core.learning.features import embeddings_npz_bytes
    from core.models.heads import DEFAULT_C, attach_head
    from core.models.ood import fit_ood
    from core.records import utc_now

    labels = np.asarray(labels).astype(int)
    site = check_site(paths, labels, groups, review_sha256)
    paths, labels, groups, shas = site.paths, site.labels, site.groups, site.sha256
    base = base_embeddings(bundle)
    scope_scores: list = []
    parent_logits, xs_all, ok, errors = embed_photos(bundle, paths, progress=progress, cancel=cancel,
                                                     scope_scores=scope_scores)
    out_of_scope = out_of_scope_mask(scope_scores) & ok
    scope_warning = out_of_scope_line(paths, labels, out_of_scope, include_out_of_scope)
    if not include_out_of_scope:
        ok = ok & ~out_of_scope
    ys = labels[ok]
    problem = count_problem(ys)
    if problem:
        why = "; ".join(w for w in (f"{len(errors)} photo(s) could not be read" if errors else "",
                                    scope_warning if not include_out_of_scope else "") if w)
        raise AdaptError(f"{why}; {problem}" if why else problem)
    xs, z_parent = xs_all[ok], parent_logits[ok]
    site_sha = [h for h, good in zip(shas, ok) if good]
    kept_paths = [p for p, good in zip(paths, ok) if good]
    g = None if groups is None else [gg for gg, good in zip(groups, ok) if good]
    warnings = site.warnings + ([scope_warning] if scope_warning else []) + count_warnings(ys)

    card0 = bundle.card
    C = float(C or card0.training.get("hyperparameters", {}).get("head", {}).get("C") or DEFAULT_C)
    is_train, is_val = base["split"] == "train", base["split"] == "val"
    xb, yb = base["embedding"][is_train], base["label"][is_train].astype(int)
    xv, yv = base["embedding"][is_val], base["label"][is_val].astype(int)
    folds = _folds(ys, g, 5, seed)
    report(progress, 0, 1, "choosing the site weight by cross-validation", "adapt")
    weight, weight_table, z_cv = choose_site_weight(xb, yb, xs, ys, C, folds)
    head = fit_with_site(xb, yb, xs, ys, weight, C)
    z_val_after = head.logits(xv)
    # Temperature on held-out logits of both kinds: the cross-validated site predictions and the final
    # head on the base val photos (not fitted on). With a few well-separated site photos alone the NLL
    # would drive T to its floor and saturate every probability.
    temperature = fit_temperature(np.concatenate([z_cv, z_val_after]), np.concatenate([ys, yv]))
    p_cv = apply_temperature(z_cv, temperature)
    p_parent = apply_temperature(z_parent, card0.temperature)
    problem = quality_problem({"roc_auc": _auc(ys, z_cv)}, {"roc_auc": _auc(ys, p_parent)})
    if problem and not accept_worse:
        raise AdaptError(f"{problem}; refused, nothing saved: check the labels, review more photos, or keep it "
                         "anyway with --accept-worse")
    if problem:
        warnings.append(f"kept with --accept-worse although {problem}")
    threshold, reason = choose_threshold(ys, p_cv, min_sensitivity)
    reason = reason.replace("on the validation split", "on cross-validated site predictions")
    if len(set(yv.tolist())) == 2:
        # Sensitivity first: never above the threshold the base val photos would need for the same target,
        # so a small, easy site sample cannot raise it at the cost of the cases the base data describes.
        base_thr, _ = choose_threshold(yv, apply_temperature(z_val_after, temperature), min_sensitivity)
        if base_thr < threshold:
            threshold = base_thr
            reason += (f"; lowered to {base_thr:.3f}, the highest that also keeps sensitivity >= {min_sensitivity:.2f} "
                       "on the base val photos")
    parent_point = parent_out_of_collection_point(card0)
    p_val_after = apply_temperature(z_val_after, temperature)
    point = choose_operating_point(ys, p_cv, parent_point, threshold, n_bootstrap=n_bootstrap, seed=seed,
                                   prior_y=yv, prior_p=p_val_after)
    if point["source"] == "parent":
        threshold = point["threshold"]
    reason += f"; {point['reason']}"
    site_cv = evaluate_probabilities(ys, p_cv, threshold, n_bootstrap=n_bootstrap, seed=seed)
    site_parent = evaluate_probabilities(ys, p_parent, card0.threshold, n_bootstrap=n_bootstrap, seed=seed)
    report(progress, 0, 1, "learning curve", "adapt")
    curve = learning_curve(xb, yb, xs, ys, weight, C, folds, seed)

    before = parent_head(bundle)(xv)
    base_before = evaluate_probabilities(yv, apply_temperature(before, card0.temperature), card0.threshold,
                                         n_bootstrap=n_bootstrap, seed=seed) if len(set(yv)) == 2 else {}
    base_after = evaluate_probabilities(yv, p_val_after, threshold,
                                        n_bootstrap=n_bootstrap, seed=seed) if len(set(yv)) == 2 else {}
    model = adapted_keras_model(bundle, head)

    ood = fit_ood(np.concatenate([xb, xs]).astype(np.float64), n_components=32)
    ood_ref = np.concatenate([ood.score(xv), ood.score(xs)]) if len(xv) else ood.score(xs)
    ood_threshold = float(np.percentile(ood_ref, 99.0))
    band = [float(b) for b in point["uncertain_band"]]

    npz = embeddings_npz_bytes(
        np.concatenate([base["embedding"], xs]), np.concatenate([base["label"], ys]),
        # The site photos join the training rows as their own source: core.triage.shift then compares a folder with
        # every source, so the rest of this site is quiet and a third collection still alarms.
        list(base["source"]) + [SITE_SOURCE] * len(ys), list(base["split"]) + ["train"] * len(ys),
        list(base["path_sha"]) + site_sha)
    keys = ("roc_auc", "sensitivity", "specificity", "accuracy", "ece", "n", "n_mpox", "ci95")
    rep = {
        "parent": {"name": card0.name, "version": card0.version, "sha256": card0.model_sha256},
        "site": {"photos": int(len(ys)), "mpox": int(ys.sum()), "not_mpox": int((ys == 0).sum()),
                 "unreadable": errors[:20], "from": site_label,
                 "out_of_scope": {"flagged": int(out_of_scope.sum()), "used": bool(include_out_of_scope)}},
        "site_weight": weight, "site_weight_selection": weight_table, "C": C,
        "site_cv": {k: site_cv[k] for k in keys},
        "site_parent": {k: site_parent[k] for k in keys},
        "base_val_before": {k: base_before[k] for k in keys} if base_before else {},
        "base_val_after": {k: base_after[k] for k in keys} if base_after else {},
        "learning_curve": curve, "warnings": warnings,
        "operating_point": {"adapted": point, "parent_out_of_collection": parent_point},
        "method": ("logistic head (core.models.heads) on the parent's base training embeddings plus the site photos, "
                   "site weight chosen by cross-validated site ROC-AUC; threshold (sensitivity >= "
                   f"{min_sensitivity:.2f}) from the cross-validated site predictions; temperature from those and "
                   "the final head on the base val photos; base val photos unused in fitting (forgetting check)"),
    }
    rep = to_jsonable(rep)
    d = card0.to_dict()
    training = dict(card0.training or {})
    training["adapt"] = {k: rep[k] for k in ("site_weight", "site_weight_selection", "C", "method", "operating_point")}
    card = ModelCard(
        name=name or f"{card0.name}-site",  # the version to the second: two adaptations a day are two versions
        version=version or site_version(card0.version),
        architecture=card0.architecture, input_size=card0.input_size, preprocessing=card0.preprocessing,
        class_names=list(card0.class_names), threshold=float(threshold), threshold_reason=reason,
        temperature=float(temperature), uncertain_band=band, ood_threshold=ood_threshold,
        metrics={"site_cv": rep["site_cv"], "site_parent": rep["site_parent"],
                 "base_val_before": rep["base_val_before"], "base_val_after": rep["base_val_after"],
                 "learning_curve": curve, "parent_metrics": d.get("metrics", {}).get("val", {}),
                 "selection": "site weight, temperature and threshold from cross-validated site predictions"},
        training_data={"base": {"from": f"{card0.name} {card0.version} embeddings.npz",
                                "train": int(is_train.sum()), "val": int(is_val.sum())}, "site": rep["site"]},
        training=training, limitations=list(card0.limitations) + warnings + [
            "Adapted to one site's reviewed photos: its figures describe that site; re-check after changes in "
            "camera, population or referral pattern."],
        parent=rep["parent"], extra={**{k: v for k, v in (card0.extra or {}).items() if k in ("kind", "components")},
                                     "operating_points": to_jsonable(card_operating_points(point, parent_point))},
    )
    return AdaptResult(model, card, ood, npz, rep, warnings, components=(card0.extra or {}).get("components"),
                       head=head, parent=bundle, photos=[str(p) for p in kept_paths], stale=site.stale)


def adapted_keras_model(bundle, head):
    """The parent's model with the new head, as one Keras model, where TensorFlow is installed and the parent has a
    model.keras; else None (the adapted bundle then exists only as its LiteRT runtime: the parent's backbone export
    and the head in numpy, as release 1.4.0's bundles do)."""
    from core.models.bundle import MODEL_FILE
    from core.models.tf_runtime import tensorflow_available

    if not tensorflow_available() or MODEL_FILE not in bundle.card.files:
        return None
    from core.models.heads import attach_head

    model = bundle.model
    return attach_head(model, head, name=model.name)


# Site photos the adapted bundle's LiteRT runtime is checked on against its Keras model (where there is one).
RUNTIME_CHECK_PHOTOS = 32


def save_adapted(result: AdaptResult, out_dir: str | os.PathLike, force: bool = False,
                 keep_previous_as: str | os.PathLike | None = None) -> Path:
    """Write the adapted bundle; refuses an existing folder (unless `force`) and any shipped bundle folder.

    With `force` a bundle already at `out_dir` is replaced and kept whole at `keep_previous_as`
    (default `<out>.replaced-<time>`, core.models.bundle.save_bundle): a model is never lost.

    The bundle runs on LiteRT and numpy when its parent does: it reuses the parent's backbone export and
    carries its new head as `head-<sha>.npz`. With TensorFlow installed it also holds the Keras model, and
    the runtime is checked against it on site photos (core.models.export.attach_light_runtime); without, the
    runtime is the model (core.models.bundle.model_file)."""
    from core.models.bundle import save_bundle
    from core.learning.features import EMBEDDINGS_FILE

    out = check_out_dir(out_dir, force)
    extra = {EMBEDDINGS_FILE: result.embeddings_npz}
    light = None if result.model is not None else _light_only_runtime(result)
    if light is not None:
        files, info = light
        extra.update(files)
        result.card.extra = {**(result.card.extra or {}), "runtime": info}
    options = {"replace": force, "keep_previous_as": keep_previous_as}
    if result.components:
        from core.models.combined import save_combined

        path = save_combined(result.model, result.card, out, result.components, ood=result.ood, extra_files=extra,
                             **options)
    else:
        path = save_bundle(result.model, result.card, out, ood=result.ood, extra_files=extra, **options)
    backbone = _parent_backbone(result.parent)
    if result.model is not None and (backbone is not None or result.components) and result.photos:
        from core.models.export import ExportError, attach_light_runtime

        try:
            attach_light_runtime(path, result.photos[:RUNTIME_CHECK_PHOTOS], backbone_from=backbone)
        except ExportError:
            pass  # components without runtimes, or no agreement: the bundle runs on Keras, as its parent does
    return path


def _parent_backbone(parent) -> Path | None:
    """The parent's verified LiteRT backbone file, when it runs on one."""
    runner = getattr(getattr(parent, "runtime", None), "backbone", None)
    path = getattr(runner, "path", None)
    return Path(path) if path is not None and Path(path).is_file() else None


def _light_only_runtime(result: AdaptResult) -> tuple[dict, dict]:
    """(extra files, card runtime record) of an adapted bundle without a Keras model: the parent's backbone
    export (a plain bundle) and the new head in numpy."""
    import hashlib
    import io

    from core.models.bundle import HEAD_FILE, RUNTIME_BACKBONE, RUNTIME_HEAD, runtime_info, sha256_file
    from core.records import utc_now

    parent = result.parent
    buf = io.BytesIO()
    result.head.save_npz(buf)
    head_bytes = buf.getvalue()
    head_sha = hashlib.sha256(head_bytes).hexdigest()
    head_name = f"{Path(HEAD_FILE).stem}-{head_sha[:12]}.npz"
    parent_info = runtime_info(parent.card) if parent is not None else {}
    info = {"format": "numpy" if result.components else "tflite",
            "kind": RUNTIME_HEAD if result.components else RUNTIME_BACKBONE,
            "head": head_name, "head_sha256": head_sha, "model_sha256": head_sha,
            "head_features": "signed square root" if result.head.sqrt else "embedding",
            "agreement": {"reference": "none: adapted without TensorFlow, this model has no Keras form; its head "
                                       "runs in numpy only",
                          "backbone": "the parent's verified LiteRT export, unchanged",
                          "parent_agreement": parent_info.get("agreement", {})},
            "parent": {"name": parent.card.name, "version": parent.card.version,
                       "sha256": parent.card.model_sha256} if parent is not None else {},
            "created": utc_now()}
    files: dict[str, Any] = {head_name: head_bytes}
    if not result.components:
        backbone = _parent_backbone(parent)
        if backbone is None:
            raise AdaptError(f"{parent.card.display_name} has no LiteRT backbone export, so an adapted model needs "
                             "TensorFlow to be saved: pip install 'mpox-triage[train]'")
        info.update({"file": backbone.name, "sha256": sha256_file(backbone),
                     "outputs": parent_info.get("outputs", {})})
        files[backbone.name] = backbone
    return files, info


def check_out_dir(out_dir: str | os.PathLike, force: bool = False) -> Path:
    """`out_dir` resolved, or AdaptError: never inside the shipped models folder, never over a folder unless
    forced, and then only over a bundle you made (core.models.bundle.check_save_target)."""
    from core.models.bundle import BundleError, check_save_target, default_models_dir

    out = Path(out_dir).expanduser().resolve()
    shipped = default_models_dir().resolve()
    if out == shipped or shipped in out.parents:
        raise AdaptError(f"{out}: inside the shipped models folder {shipped}; save an adapted model in your own "
                         "models folder (shipped bundles are never written over)")
    if out.exists() and not force:
        raise AdaptError(f"{out} already exists; choose a new folder (or --force to replace a model you made)")
    if out.exists() and not out.is_dir():
        raise AdaptError(f"{out} is a file, not a folder")
    try:
        check_save_target(out, force)
    except BundleError as exc:
        raise AdaptError(str(exc)) from None
    return out


# -- what to review next ----------------------------------------------------------------------------


def _predictions(paths: Sequence[str], y: np.ndarray, p: np.ndarray, threshold: float) -> list[dict]:
    return [{"path": str(path), "label": "mpox" if yy == 1 else "not_mpox",
             "prediction": "mpox" if pp >= threshold else "not_mpox", "p_mpox": float(pp)}
            for path, yy, pp in zip(paths, y, p)]


def site_predictions(bundle, result, paths: Sequence[str], labels: Sequence[int], groups: Sequence[str] | None,
                     seed: int = 0, progress=None, cancel=None) -> tuple[dict, dict] | None:
    """Per-photo predictions of the adapted model (cross-validated, as the result measured it) and of its parent
    on the same site photos, for a paired verdict (desktop_app/retrain/verdict.py, McNemar): ({"n", "predictions"},
    same of the parent), or None when the rebuilt predictions do not reproduce the result's cross-validated site
    ROC-AUC (then no paired verdict is shown rather than a wrong one). Rebuilt with the choices the result records
    (site weight, C, folds from the same seed, the new card's temperature and threshold); embeds the site photos
    a second time (an AdaptResult keeps no embeddings)."""
    from core.models.calibration import apply_temperature

    rep = result.report
    base = base_embeddings(bundle)
    z_parent, xs_all, ok, _errors = embed_photos(bundle, paths, progress=progress, cancel=cancel)
    y = np.asarray(labels).astype(int)[ok]
    xs, zp = xs_all[ok], z_parent[ok]
    kept = [p for p, good in zip(paths, ok) if good]
    g = None if groups is None else [gg for gg, good in zip(groups, ok) if good]
    is_train = base["split"] == "train"
    xb, yb = base["embedding"][is_train], base["label"][is_train].astype(int)
    z_cv = cv_site_logits(xb, yb, xs, y, float(rep["site_weight"]), float(rep["C"]), _folds(y, g, 5, seed))
    p_new = apply_temperature(z_cv, result.card.temperature)
    if not abs(_auc(y, p_new) - float(rep["site_cv"]["roc_auc"])) < 1e-6:
        return None  # not the predictions the result describes: no paired verdict rather than a wrong one
    p_old = apply_temperature(zp, bundle.card.temperature)
    new = {"n": int(len(y)), "predictions": _predictions(kept, y, p_new, float(result.card.threshold))}
    old = {"n": int(len(y)), "predictions": _predictions(kept, y, p_old, float(bundle.card.threshold))}
    return new, old
