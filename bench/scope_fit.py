"""Fit the per-photo scope model (core.scope), choose its limit without `test`, and report its flag rates.

    python bench/scope_fit.py                 # fit + choose + report (test and a fresh generated set, once)
    python bench/scope_fit.py --write         # ... and write resources/scope_model.json
    python bench/scope_fit.py --no-report     # fit + choose only (what to run while changing the recipe)

In-scope photos: the shared train split (fit) and val + leave-one-collection-out (limit). Non-photos:
core.scope.generate_non_photos with seed 0 (fit), seed 1 (limit) and seed 2 (report only). The limit
is the highest of: the 99th percentile of held-out in-scope scores (val scored by the train fit, and
each collection scored by a fit on the other), so about 1% of in-distribution photos are flagged.
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
SEED_FIT, SEED_CHOOSE, SEED_REPORT = 0, 1, 2
PERCENTILE = 99.0


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
    return hashlib.sha256(Path(scope.__file__).read_bytes()).hexdigest()[:12]


def photo_features(ds) -> np.ndarray:
    key = hashlib.sha256("\n".join(s.file_hash() for s in ds.samples).encode()).hexdigest()[:12]
    path = CACHE / f"scope-photos-{key}-{_code_key()}.npy"
    if path.is_file():
        return np.load(path)
    feats = np.stack([scope.scope_features(load_rgb(s.path)) for s in ds.samples])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


def generated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kinds, features, tiny-by-rule) of a generated non-photo set."""
    path = CACHE / f"scope-gen-{n}-{seed}-{_code_key()}.npz"
    if path.is_file():
        with np.load(path) as d:
            return d["kind"], d["feat"], d["tiny"]
    items = scope.generate_non_photos(n, seed)
    kind = np.array([k for k, _ in items])
    feat = np.stack([scope.scope_features(a) for _, a in items])
    tiny = np.array([min(a.shape[:2]) < scope.TINY_SIDE for _, a in items])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, kind=kind, feat=feat, tiny=tiny)
    return kind, feat, tiny


def scores_of(model: scope.ScopeModel, feats: np.ndarray, tiny: np.ndarray | None = None) -> np.ndarray:
    s = model.score_features(feats)
    return s if tiny is None else np.where(tiny, 1.0, s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "manifest.csv"))
    ap.add_argument("--write", action="store_true", help="write resources/scope_model.json")
    ap.add_argument("--no-report", action="store_true", help="do not touch test or the report set")
    ap.add_argument("--C", type=float, default=1.0)
    args = ap.parse_args(argv)
    t0 = time.time()
    ds = load_manifest_dataset(args.data)
    feats = photo_features(ds)
    split = np.array([s.split for s in ds.samples])
    source = np.array([s.source for s in ds.samples])
    _, gfit, gfit_tiny = generated(N_FIT, SEED_FIT)
    gfit = gfit[~gfit_tiny]  # tiny images are flagged by rule; their statistics teach nothing
    ckind, gchoose, gchoose_tiny = generated(N_CHOOSE, SEED_CHOOSE)
    train = split == "train"

    # Held-out in-scope scores: val under the train fit; each collection under a fit on the other.
    held = []
    model = scope.fit_scope_model(feats[train], gfit, C=args.C)
    held.append(("val", scores_of(model, feats[split == "val"])))
    for src in np.unique(source):
        other = scope.fit_scope_model(feats[train & (source != src)], gfit, C=args.C)
        held.append((f"loco {src} (train+val)", scores_of(other, feats[(split != "test") & (source == src)])))
    pooled = np.concatenate([s for _, s in held])
    limit = float(np.percentile(pooled, PERCENTILE))
    print(f"limit = {PERCENTILE:g}th percentile of {len(pooled)} held-out in-scope scores = {limit:.4f}")
    for name, s in held:
        print(f"  in-scope flagged, {name}: {rate(s > limit)}")
    gs = scores_of(model, gchoose, gchoose_tiny)
    print(f"  generated non-photos flagged (seed {SEED_CHOOSE}, choice set): {rate(gs > limit)}")
    for k in scope.KINDS:
        print(f"    {k:11s} {rate(gs[ckind == k] > limit)}")

    final = scope.ScopeModel(model.mean, model.scale, model.coef, model.intercept, limit, {
        "fitted_on": f"shared train split ({int(train.sum())} photos) vs {len(gfit)} generated non-photos "
                     f"(core.scope.generate_non_photos({N_FIT}, seed={SEED_FIT}), tiny ones left out)",
        "limit_rule": f"{PERCENTILE:g}th percentile of held-out in-scope scores (val + leave-one-collection-out)",
        "C": args.C, "refit": "python bench/scope_fit.py --write"})
    if not args.no_report:
        print("REPORT (measured once; nothing above was chosen with it):")
        test = split == "test"
        print(f"  shared test split flagged: {rate(scores_of(final, feats[test]) > limit)}")
        for src in np.unique(source):
            print(f"    {src}: {rate(scores_of(final, feats[test & (source == src)]) > limit)}")
        rkind, grep_, grep_tiny = generated(N_REPORT, SEED_REPORT)
        gr = scores_of(final, grep_, grep_tiny)
        print(f"  fresh generated non-photos flagged (seed {SEED_REPORT}): {rate(gr > limit)}")
        for k in scope.KINDS:
            print(f"    {k:11s} {rate(gr[rkind == k] > limit)}")
    if args.write:
        final.save(scope.PARAMS_FILE)
        print(f"wrote {scope.PARAMS_FILE}")
    k = len(scope.FEATURES)
    print("coefficients (value, log value): " + json.dumps(
        {f: [round(float(final.coef[i]), 2), round(float(final.coef[k + i]), 2)] for i, f in enumerate(scope.FEATURES)}))
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
