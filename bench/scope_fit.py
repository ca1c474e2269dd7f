"""Fit the per-photo scope model (core.scope), choose its limit without `test`, and report its flag rates.

    python bench/scope_fit.py                 # fit + choose + report (test and a fresh generated set, once)
    python bench/scope_fit.py --write         # ... and write resources/scope_model.json
    python bench/scope_fit.py --no-report     # fit + choose only (what to run while changing the recipe)

In-scope photos: the shared train split (fit) and val + train out of fold (limit). Non-photos:
core.scope.generate_non_photos with seed 0 (fit), 1 (development figures) and 2 (report only), and
core.scope.generate_from_photos (inverted, false colour / heat map, gallery or web-page screenshots,
blurred noise) made from the train photos with seed 0 (fit; in each fold from that fold's photos),
from the val photos with seed 1 (development figures) and from the test photos with seed 2 (report
only: other photos and another seed than anything fitted). The limit is the 99th percentile of
held-out in-scope scores (val under the train fit, train out of fold), so about 1% of
in-distribution photos are flagged; leave-one-collection-out rates are printed, not used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import scope  # noqa: E402
from core.datasets import load_manifest_dataset  # noqa: E402
from core.images import load_rgb  # noqa: E402

SHARED = Path(os.environ.get("MPOX_TRIAGE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
CACHE = Path(os.environ.get("MPOX_SHIFT_CACHE", "/tmp/mpox-shift-cache"))
N_FIT, N_CHOOSE, N_REPORT = 800, 400, 800
N_DERIVED_FIT, N_DERIVED_CHOOSE, N_DERIVED_REPORT = 800, 400, 600  # 200, 100, 150 of each kind
SEED_FIT, SEED_CHOOSE, SEED_REPORT = 0, 1, 2
PERCENTILE = 99.0
FOLDS = 5


def wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def rate(flags: np.ndarray) -> str:
    k, n = int(np.sum(flags)), len(flags)
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / max(n, 1):.3f} (95% CI {lo:.3f}-{hi:.3f})"


def _code_key() -> str:
    """What the cached statistics depend on: core.scope's features and generators (from FEATURES on),
    not its model, limit or docs (the section between "# -- the fitted model" and the generators)."""
    text = Path(scope.__file__).read_text(encoding="utf-8")
    text = text[text.index("FEATURES = ("):]
    a, b = text.index("# -- the fitted model"), text.index("# -- generated non-photos")
    return hashlib.sha256((text[:a] + text[b:]).encode()).hexdigest()[:12]


def photo_features(ds) -> np.ndarray:
    key = hashlib.sha256("\n".join(s.file_hash() for s in ds.samples).encode()).hexdigest()[:12]
    path = CACHE / f"scope-photos-{key}-{_code_key()}.npy"
    if path.is_file():
        return np.load(path)
    feats = np.stack([scope.scope_features(load_rgb(s.path)) for s in ds.samples])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


def generated(n: int, seed: int, photos=None, key: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kinds, features, tiny-by-rule) of a generated non-photo set; made from the photos that `photos()`
    loads (DERIVED_KINDS) when given, `key` naming them."""
    path = CACHE / f"scope-gen-{key}{n}-{seed}-{_code_key()}.npz"
    if path.is_file():
        with np.load(path) as d:
            return d["kind"], d["feat"], d["tiny"]
    items = scope.generate_non_photos(n, seed) if photos is None else scope.generate_from_photos(photos(), n, seed)
    kind = np.array([k for k, _ in items])
    feat = np.stack([scope.scope_features(a) for _, a in items])
    tiny = np.array([min(a.shape[:2]) < scope.TINY_SIDE for _, a in items])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, kind=kind, feat=feat, tiny=tiny)
    return kind, feat, tiny


def scores_of(model: scope.ScopeModel, feats: np.ndarray, tiny: np.ndarray | None = None) -> np.ndarray:
    s = model.score_features(feats)
    return s if tiny is None else np.where(tiny, 1.0, s)


def _photo_set(ds, mask: np.ndarray):
    """(a function loading the RGB photos of `ds` where `mask`, a key naming them for the cache)."""
    samples = [s for s, m in zip(ds.samples, mask) if m]
    key = hashlib.sha256("\n".join(s.file_hash() for s in samples).encode()).hexdigest()[:10]
    return (lambda: [load_rgb(s.path) for s in samples]), key


def derived(ds, mask: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """generated(...) for non-photos made from the photos of `ds` where `mask` (core.scope.DERIVED_KINDS)."""
    photos, key = _photo_set(ds, mask)  # loaded only when the set is not cached
    return generated(n, seed, photos, key=f"from-{key}-")


def fit_without(ds, feats: np.ndarray, keep: np.ndarray, gfit: np.ndarray, gkind: np.ndarray, C: float):
    """The scope model fitted on the photos where `keep` and on non-photos made from them only."""
    dkind, dfeat, _ = derived(ds, keep, N_DERIVED_FIT, SEED_FIT)
    return scope.fit_scope_model(feats[keep], np.vstack([gfit, dfeat]), C=C, kinds=np.r_[gkind, dkind])


def kind_rates(name: str, kinds: np.ndarray, flags: np.ndarray, order) -> dict:
    """Print and return {kind: {k, n, rate, ci95}} of a generated set."""
    print(f"  {name}: {rate(flags)}")
    out = {}
    for k in order:
        f = flags[kinds == k]
        if len(f):
            print(f"    {k:13s} {rate(f)}")
            out[k] = {"k": int(f.sum()), "n": int(len(f)), "rate": round(float(f.mean()), 3),
                      "ci95": [round(x, 3) for x in wilson(int(f.sum()), len(f))]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "manifest.csv"))
    ap.add_argument("--write", action="store_true", help="write resources/scope_model.json")
    ap.add_argument("--no-report", action="store_true", help="do not touch test or the report set")
    ap.add_argument("--C", type=float, default=3.0)
    args = ap.parse_args(argv)
    t0 = time.time()
    ds = load_manifest_dataset(args.data)
    feats = photo_features(ds)
    split = np.array([s.split for s in ds.samples])
    source = np.array([s.source for s in ds.samples])
    train = split == "train"
    gkind, gfit, gfit_tiny = generated(N_FIT, SEED_FIT)
    gkind, gfit = gkind[~gfit_tiny], gfit[~gfit_tiny]  # tiny images are flagged by rule; their statistics teach nothing
    dkind_fit, dfit, _ = derived(ds, train, N_DERIVED_FIT, SEED_FIT)
    nonfit = np.vstack([gfit, dfit])
    ckind, gchoose, gchoose_tiny = generated(N_CHOOSE, SEED_CHOOSE)
    dkind, dchoose, _ = derived(ds, split == "val", N_DERIVED_CHOOSE, SEED_CHOOSE)

    # Held-out in-scope scores: val under the train fit, and each train photo under a fit on the other
    # four fifths of train (its non-photos made from those photos only).
    model = scope.fit_scope_model(feats[train], nonfit, C=args.C, kinds=np.r_[gkind, dkind_fit])
    idx = np.flatnonzero(train)
    fold = np.random.default_rng(0).permutation(len(idx)) % FOLDS
    oof = np.empty(len(idx))
    for k in range(FOLDS):
        keep = np.zeros(len(split), bool)
        keep[idx[fold != k]] = True
        oof[fold == k] = scores_of(fit_without(ds, feats, keep, gfit, gkind, args.C), feats[idx[fold == k]])
    held = [("val", scores_of(model, feats[split == "val"])), (f"train, out of fold ({FOLDS}-fold)", oof)]
    pooled = np.concatenate([s for _, s in held])
    limit = float(np.percentile(pooled, PERCENTILE))
    print(f"limit = {PERCENTILE:g}th percentile of {len(pooled)} held-out in-scope scores = {limit:.4f}")
    for name, s in held:
        print(f"  in-scope flagged, {name}: {rate(s > limit)}")
    # A new collection: each one scored by a fit on the other (not used for the limit; a shifted
    # collection's odd photos are flagged more often, which sends them to review).
    for src in np.unique(source):
        other = fit_without(ds, feats, train & (source != src), gfit, gkind, args.C)
        print(f"  in-scope flagged, loco {src} (train+val): "
              f"{rate(scores_of(other, feats[(split != 'test') & (source == src)]) > limit)}")
    print(f"  in-scope flagged, train (fitted on): {rate(scores_of(model, feats[train]) > limit)}")
    kind_rates(f"generated non-photos flagged (seed {SEED_CHOOSE}, choice set)", ckind,
               scores_of(model, gchoose, gchoose_tiny) > limit, scope.KINDS)
    kind_rates(f"non-photos made from val photos flagged (seed {SEED_CHOOSE}, choice set)", dkind,
               scores_of(model, dchoose) > limit, scope.DERIVED_KINDS)

    final = scope.ScopeModel(model.mean, model.scale, model.coef, model.intercept, limit, heads=model.heads, info={
        "fitted_on": f"shared train split ({int(train.sum())} photos) vs {len(gfit)} generated non-photos "
                     f"(core.scope.generate_non_photos({N_FIT}, seed={SEED_FIT}), tiny ones left out) and "
                     f"{len(dfit)} made from the train photos (core.scope.generate_from_photos(..., "
                     f"{N_DERIVED_FIT}, seed={SEED_FIT}))",
        "heads": "one logistic regression per family of non-photos (core.scope.FAMILIES); the score is the highest",
        "limit_rule": f"{PERCENTILE:g}th percentile of held-out in-scope scores (val under the train fit, train "
                      f"out of fold, {FOLDS}-fold)",
        "C": args.C, "refit": "python bench/scope_fit.py --write"})
    if not args.no_report:
        report(ds, final, split, source, limit)
    if args.write:
        final.save(scope.PARAMS_FILE)
        print(f"wrote {scope.PARAMS_FILE}")
    k = len(scope.FEATURES)
    for head, coef in zip(final.heads, final.coef):
        top = sorted(range(2 * k), key=lambda i: -abs(coef[i]))[:6]
        print(f"head {head}: strongest terms " + ", ".join(
            f"{'log ' if i >= k else ''}{scope.FEATURES[i % k]} {coef[i]:+.2f}" for i in top))
    print(f"({time.time() - t0:.0f} s)")
    return 0


def report(ds, final: scope.ScopeModel, split: np.ndarray, source: np.ndarray, limit: float) -> dict:
    """The figures (measured once; nothing was chosen with them), printed and returned as the dict a model
    card's metrics.scope_check holds."""
    feats = photo_features(ds)
    test = split == "test"
    print("REPORT (measured once; nothing above was chosen with it):")
    out = {"limit": round(limit, 4)}
    for name in ("test", "val", "train"):
        f = scores_of(final, feats[split == name]) > limit
        print(f"  shared {name} split flagged: {rate(f)}")
        k, n = int(f.sum()), len(f)
        out[f"{name}_split_flagged"] = {"k": k, "n": n, "rate": round(k / max(n, 1), 4),
                                        "ci95": [round(x, 4) for x in wilson(k, n)]}
    for src in np.unique(source):
        print(f"    test, {src}: {rate(scores_of(final, feats[test & (source == src)]) > limit)}")
    rkind, grep_, grep_tiny = generated(N_REPORT, SEED_REPORT)
    out["generated_flagged"] = kind_rates(f"fresh generated non-photos flagged (seed {SEED_REPORT})", rkind,
                                          scores_of(final, grep_, grep_tiny) > limit, scope.KINDS)
    dkind, drep, _ = derived(ds, test, N_DERIVED_REPORT, SEED_REPORT)
    out["made_from_test_photos_flagged"] = kind_rates(
        f"non-photos made from test photos flagged (seed {SEED_REPORT})", dkind, scores_of(final, drep) > limit,
        scope.DERIVED_KINDS)
    photos = _photo_set(ds, test)[0]()
    t = time.perf_counter()
    for rgb in photos:
        scope.scope_score(rgb, final)
    out["ms_per_photo"] = round(1000 * (time.perf_counter() - t) / max(1, len(photos)), 2)
    print(f"  cost: {out['ms_per_photo']} ms per {photos[0].shape[1]}x{photos[0].shape[0]} photo (one core)")
    out["command"] = "python bench/scope_fit.py"
    print("metrics.scope_check = " + json.dumps(out))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
