"""Fit the per-photo scope model (core.photos.scope), choose its limit without `test`, and report its figures.

    nice -n 10 python bench/scope_fit.py              # fit + choose + report (writes nothing)
    nice -n 10 python bench/scope_fit.py --write      # ... and write resources/scope_model.json
    nice -n 10 python bench/scope_fit.py --no-report  # fit + choose only (what to run while changing the recipe)
    nice -n 10 python bench/scope_fit.py --cost-only  # the CPU cost per photo only

In scope: the shared photos and hard variants of them (core.photos.scope.generate_hard_in_scope: frames, colour
casts, darker and lighter renderings, wider views, scanner grain, old slides, thumbnails), the proxy for photos from
other collections. Not in scope: core.photos.scope.generate_non_photos and core.photos.scope.generate_from_photos
(inverted, false colour / heat map, gallery and web-page screenshots, blurred noise, flat fills and plain
gradients). Fit: train photos, variants and non-photos made from train photos (each made per fold of
train, so a fold's held-out scores come from a fit that never saw its photos), synthetic seed 0.
Limit: chosen on held-out in-scope scores (val under the train fit, train out of fold) and the
development non-photos (val photos, seed 1). Report, measured once: test photos, variants and
non-photos made from test photos with seed 2, synthetic seed 2 (>= 100 of each family).

Working images (core.photos.scope.scope_image) of every set are cached in $MPOX_SCOPE_CACHE (default
/work/wt/_cache/scope), keyed by the photos and by core.photos.scope's generator and working-image code, so a
change of the statistics recomputes them from the cache in about a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.photos import scope  # noqa: E402
from core.learning.datasets import load_manifest_dataset  # noqa: E402
from core.photos.images import load_rgb  # noqa: E402

SHARED = Path(os.environ.get("MPOX_TRIAGE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
CACHE = Path(os.environ.get("MPOX_SCOPE_CACHE", "/work/wt/_cache/scope"))
FOLDS = 5
N_SYN = {"fit": 800, "choose": 400, "report": 800}            # 100 of each synthetic kind in the report
N_DERIVED = {"fit": 200, "choose": 500, "report": 750}        # fit: per fold; 150 of each family in the report
N_HARD = {"fit": 96, "choose": 400, "report": 480}            # fit: per fold; 60 of each kind in the report
SEEDS = {"fit": 0, "choose": 1, "report": 2}
PHOTO_PCT, HARD_PCT = 99.0, 98.0  # limit: above both percentiles of held-out in-scope scores (see choose_limit)


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


def rate_dict(flags: np.ndarray) -> dict:
    k, n = int(np.sum(flags)), len(flags)
    return {"k": k, "n": n, "rate": round(k / max(n, 1), 4), "ci95": [round(x, 4) for x in wilson(k, n)]}


def _code_key() -> str:
    """What the cached working images depend on: core.photos.scope's working image and generators."""
    text = Path(scope.__file__).read_text(encoding="utf-8")
    parts = [text[text.index("def scope_image("):text.index("def scope_features(")], f"WORK_SIDE={scope.WORK_SIDE}",
             text[text.index("# -- generated non-photos"):]]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _cached(name: str, make):
    """(kinds, working images, tiny-by-rule) of a set, made by `make()` -> [(kind, rgb)] once."""
    path = CACHE / f"{name}-{_code_key()}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    items = make()
    out = (np.array([k for k, _ in items]), [scope.scope_image(a) for _, a in items],
           np.array([min(a.shape[:2]) < scope.TINY_SIDE for _, a in items]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def _key(samples) -> str:
    return hashlib.sha256("\n".join(s.file_hash() for s in samples).encode()).hexdigest()[:10]


class Sets:
    """The shared photos and every generated set, as features (computed from the cached working images)."""

    def __init__(self, ds):
        self.ds = ds
        self.split = np.array([s.split for s in ds.samples])
        self.source = np.array([s.source for s in ds.samples])
        train = np.flatnonzero(self.split == "train")
        self.fold = np.full(len(self.split), -1)
        self.fold[train] = np.random.default_rng(0).permutation(len(train)) % FOLDS
        _, work, _ = _cached(f"photos-{_key(ds.samples)}", lambda: [("photo", load_rgb(s.path)) for s in ds.samples])
        self.photos = self._features(work)

    @staticmethod
    def _features(work) -> np.ndarray:
        return np.stack([scope.work_features(w) for w in work])

    def _photos_where(self, mask):
        samples = [s for s, m in zip(self.ds.samples, mask) if m]
        return samples, (lambda: [load_rgb(s.path) for s in samples])

    def generated(self, what: str, role: str, mask=None, n: int = 0, seed: int = 0):
        """(kinds, features, tiny) of a generated set: synthetic, derived or hard, made from the photos where mask."""
        if what == "synthetic":
            kinds, work, tiny = _cached(f"syn-{n}-{seed}", lambda: scope.generate_non_photos(n, seed))
        else:
            samples, load = self._photos_where(mask)
            gen = scope.generate_from_photos if what == "derived" else scope.generate_hard_in_scope
            kinds, work, tiny = _cached(f"{what}-{_key(samples)}-{n}-{seed}", lambda: gen(load(), n, seed))
        return kinds, self._features(work), tiny

    def per_fold(self, what: str, n: int):
        """(kinds, features, fold) of a derived or hard set made from each train fold's photos."""
        parts = [self.generated(what, "fit", (self.split == "train") & (self.fold == k), n, SEEDS["fit"] + 100 * k)
                 for k in range(FOLDS)]
        return (np.concatenate([p[0] for p in parts]), np.vstack([p[1] for p in parts]),
                np.concatenate([np.full(len(p[0]), k) for k, p in enumerate(parts)]))


def fit(sets: Sets, keep_fold: np.ndarray, syn, derived, hard, C: float) -> scope.ScopeModel:
    """The scope model fitted on train photos, hard variants and derived non-photos of the folds where keep_fold."""
    pm = (sets.split == "train") & keep_fold[np.clip(sets.fold, 0, None)]
    dm, hm = keep_fold[derived[2]], keep_fold[hard[2]]
    in_scope = np.vstack([sets.photos[pm], hard[1][hm]])
    return scope.fit_scope_model(in_scope, np.vstack([syn[1], derived[1][dm]]), C=C,
                                 kinds=np.r_[syn[0], derived[0][dm]])


def choose_limit(photo_scores: np.ndarray, hard_scores: np.ndarray) -> float:
    """Above the PHOTO_PCT percentile of held-out photos' scores and the HARD_PCT percentile of held-out hard
    variants' scores: about 1% of photos like the shared ones flagged, about 2% of the harder ones."""
    return float(max(np.percentile(photo_scores, PHOTO_PCT), np.percentile(hard_scores, HARD_PCT)))


def kind_rates(name: str, kinds: np.ndarray, flags: np.ndarray, order) -> dict:
    print(f"  {name}: {rate(flags)}")
    out = {}
    for k in order:
        f = flags[kinds == k]
        if len(f):
            print(f"    {k:13s} {rate(f)}")
            out[k] = rate_dict(f)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "manifest.csv"))
    ap.add_argument("--write", action="store_true", help="write resources/scope_model.json")
    ap.add_argument("--no-report", action="store_true", help="do not touch test or the report sets")
    ap.add_argument("--cost-only", action="store_true", help="measure the CPU cost per photo only")
    ap.add_argument("--metrics-out", help="also write the report's metrics.scope_check JSON here "
                                           "(for bench/retune_release.py --scope)")
    ap.add_argument("--C", type=float, default=3.0)
    args = ap.parse_args(argv)
    t0 = time.time()
    ds = load_manifest_dataset(args.data)
    if args.cost_only:
        cost(ds, scope.load_scope_model())
        return 0
    sets = Sets(ds)
    split = sets.split
    syn = sets.generated("synthetic", "fit", n=N_SYN["fit"], seed=SEEDS["fit"])
    syn = (syn[0][~syn[2]], syn[1][~syn[2]])  # tiny images are flagged by rule; their statistics teach nothing
    derived = sets.per_fold("derived", N_DERIVED["fit"])
    hard = sets.per_fold("hard", N_HARD["fit"])
    every = np.ones(FOLDS, bool)
    model = fit(sets, every, syn, derived, hard, args.C)

    # Held-out in-scope scores: val (photos and variants) under the train fit; each train fold's photos and
    # variants under a fit on the other folds.
    val = split == "val"
    _, hval, _ = sets.generated("hard", "choose", val, N_HARD["choose"], SEEDS["choose"])
    oof_photo, oof_hard = [], []
    for k in range(FOLDS):
        m = fit(sets, np.arange(FOLDS) != k, syn, derived, hard, args.C)
        oof_photo.append(m.score_features(sets.photos[sets.fold == k]))
        oof_hard.append(m.score_features(hard[1][hard[2] == k]))
    held_photo = np.concatenate([model.score_features(sets.photos[val])] + oof_photo)
    held_hard = np.concatenate([model.score_features(hval)] + oof_hard)
    limit = choose_limit(held_photo, held_hard)
    print(f"limit = max({PHOTO_PCT:g}th pct of {len(held_photo)} held-out photos "
          f"{np.percentile(held_photo, PHOTO_PCT):.4f}, {HARD_PCT:g}th pct of {len(held_hard)} held-out hard "
          f"variants {np.percentile(held_hard, HARD_PCT):.4f}) = {limit:.4f}")
    print(f"  in-scope flagged, val photos: {rate(model.score_features(sets.photos[val]) > limit)}")
    print(f"  in-scope flagged, train photos out of fold: {rate(np.concatenate(oof_photo) > limit)}")
    print(f"  in-scope flagged, hard variants of val photos: {rate(model.score_features(hval) > limit)}")
    print(f"  in-scope flagged, hard variants of train photos out of fold: {rate(np.concatenate(oof_hard) > limit)}")
    ckind, cfeat, ctiny = sets.generated("synthetic", "choose", n=N_SYN["choose"], seed=SEEDS["choose"])
    kind_rates("generated non-photos flagged (seed 1, development)", ckind,
               np.where(ctiny, 1.0, model.score_features(cfeat)) > limit, scope.KINDS)
    dk, dfeat, _ = sets.generated("derived", "choose", val, N_DERIVED["choose"], SEEDS["choose"])
    kind_rates("non-photos made from val photos flagged (seed 1, development)", dk,
               model.score_features(dfeat) > limit, scope.DERIVED_KINDS)
    hk, _, _ = sets.generated("hard", "choose", val, N_HARD["choose"], SEEDS["choose"])
    kind_rates("hard variants of val photos flagged (seed 1, development; in scope)", hk,
               model.score_features(hval) > limit, scope.HARD_KINDS)

    final = scope.ScopeModel(model.mean, model.scale, model.coef, model.intercept, limit, heads=model.heads, info={
        "fitted_on": f"shared train split ({int((split == 'train').sum())} photos) and "
                     f"{len(hard[0])} hard variants of them (core.photos.scope.generate_hard_in_scope, {N_HARD['fit']} per "
                     f"fold) vs {len(syn[0])} generated non-photos (core.photos.scope.generate_non_photos({N_SYN['fit']}, "
                     f"seed=0), tiny ones left out) and {len(derived[0])} made from the train photos "
                     f"(core.photos.scope.generate_from_photos, {N_DERIVED['fit']} per fold)",
        "heads": "one logistic regression per family of non-photos (core.photos.scope.FAMILIES); the score is the highest",
        "limit_rule": f"max of the {PHOTO_PCT:g}th percentile of held-out photos' scores and the {HARD_PCT:g}th "
                      f"of held-out hard variants' (val under the train fit, train out of fold, {FOLDS}-fold)",
        "work_side": scope.WORK_SIDE, "C": args.C, "refit": "python bench/scope_fit.py --write"})
    if not args.no_report:
        metrics = report(sets, final)
        if args.metrics_out:
            Path(args.metrics_out).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
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


def report(sets: Sets, final: scope.ScopeModel) -> dict:
    """The figures (measured once; nothing was chosen with them), printed and returned as a model card's
    metrics.scope_check."""
    limit, split, test = final.limit, sets.split, sets.split == "test"
    print("REPORT (measured once; nothing above was chosen with it):")
    out = {"limit": round(limit, 4)}
    for name in ("test", "val", "train"):
        f = final.score_features(sets.photos[split == name]) > limit
        print(f"  shared {name} split flagged: {rate(f)}")
        out[f"{name}_split_flagged"] = rate_dict(f)
    for src in np.unique(sets.source):
        print(f"    test, {src}: {rate(final.score_features(sets.photos[test & (sets.source == src)]) > limit)}")
    hk, hfeat, _ = sets.generated("hard", "report", test, N_HARD["report"], SEEDS["report"])
    out["hard_in_scope_flagged"] = kind_rates("hard variants of test photos flagged (seed 2; in scope, target <= 3%)",
                                              hk, final.score_features(hfeat) > limit, scope.HARD_KINDS)
    out["hard_in_scope_flagged"]["all"] = rate_dict(final.score_features(hfeat) > limit)
    rk, rfeat, rtiny = sets.generated("synthetic", "report", n=N_SYN["report"], seed=SEEDS["report"])
    out["generated_flagged"] = kind_rates("fresh generated non-photos flagged (seed 2)", rk,
                                          np.where(rtiny, 1.0, final.score_features(rfeat)) > limit, scope.KINDS)
    dk, dfeat, _ = sets.generated("derived", "report", test, N_DERIVED["report"], SEEDS["report"])
    out["made_from_test_photos_flagged"] = kind_rates("non-photos made from test photos flagged (seed 2)", dk,
                                                      final.score_features(dfeat) > limit, scope.DERIVED_KINDS)
    out.update(cost(sets.ds, final))
    out["command"] = "python bench/scope_fit.py"
    print("metrics.scope_check = " + json.dumps(out))
    return out


# -- cost ------------------------------------------------------------------------------------------------------

LARGE_MP = (1, 3, 6, 12)


def large_jpegs(ds, n: int = 24) -> list[Path]:
    """`n` test photos enlarged to 1-12 MP JPEGs (4:3), made once into the cache."""
    from PIL import Image

    folder = CACHE / "large"
    folder.mkdir(parents=True, exist_ok=True)
    samples = [s for s in ds.samples if s.split == "test"][:n]
    out = []
    for i, s in enumerate(samples):
        mp = LARGE_MP[i % len(LARGE_MP)]
        path = folder / f"{Path(s.path).stem}-{mp}mp.jpg"
        if not path.is_file():
            w = int((mp * 1e6 * 4 / 3) ** 0.5)
            im = Image.fromarray(load_rgb(s.path)).resize((w, w * 3 // 4), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            path.write_bytes(buf.getvalue())
        out.append(path)
    return out


def _ms(fn, items) -> float:
    """Median CPU time of fn(item) on this thread, in ms (two warm-up calls first)."""
    for item in items[:2]:
        fn(item)
    times = []
    for item in items:
        t = time.thread_time()
        fn(item)
        times.append(time.thread_time() - t)
    return round(1000 * float(np.median(times)), 2)


def cost(ds, model: scope.ScopeModel) -> dict:
    """Median per-photo CPU ms of scope_score (one thread): on the 224 px test split, and on 1-12 MP JPEGs as
    core.triage.inference.load_input decodes them for a 224 and a 299 px model and at full size; and how far one
    photo's score moves between a 224 and a 299 px decode (one score per photo, whatever the model)."""
    import cv2

    cv2.setNumThreads(1)
    test = [load_rgb(s.path) for s in ds.samples if s.split == "test"]
    out = {"ms_per_photo_224": _ms(lambda a: scope.scope_score(a, model), test)}
    print(f"  cost: {out['ms_per_photo_224']} ms per 224x224 test photo ({len(test)}; median CPU, one thread)")
    paths = large_jpegs(ds)
    for side in (224, 299, None):
        decoded = [load_rgb(p, max_side=side) for p in paths]
        key = f"ms_per_photo_1_12mp_decoded_{side or 'full'}"
        out[key] = _ms(lambda a: scope.scope_score(a, model), decoded)
        shapes = sorted({f"{a.shape[1]}x{a.shape[0]}" for a in decoded}, key=lambda s: int(s.split("x")[0]))
        how = f"for a {side} px model" if side else "at full size"
        print(f"  cost: {out[key]} ms per 1-12 MP JPEG decoded {how} ({len(decoded)} photos, decoded "
              f"{shapes[0]}..{shapes[-1]})")
    s224 = np.array([scope.scope_score(load_rgb(p, max_side=224), model) for p in paths])
    s299 = np.array([scope.scope_score(load_rgb(p, max_side=299), model) for p in paths])
    out["score_224_vs_299_max_abs_diff"] = round(float(np.abs(s224 - s299).max()), 4)
    out["verdict_224_vs_299_disagree"] = int(((s224 > model.limit) != (s299 > model.limit)).sum())
    print(f"  one photo, two decodes (224 vs 299 px model): max |score difference| "
          f"{out['score_224_vs_299_max_abs_diff']}, verdicts disagree on {out['verdict_224_vs_299_disagree']} "
          f"of {len(paths)}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
