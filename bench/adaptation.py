"""Leave-one-collection-out learning curve of adaptation (core/adapt.py's recipe on cached embeddings).

Base = one collection's train+val photos; site = the other collection's train+val photos (the
test split is never read). Each draw splits the site photos in half at random (stratified): K
labelled photos are taken from the first half, either at random or in the review order of
core.adapt.suggest_next (rounds of `--round` photos, refitting after each round: nearest the
boundary, kept diverse), and the adapted head (base + K site photos, site weight `--weight`) is
scored on the untouched second half. K = 0 is the base head alone.

    MPOX_TRIAGE_WEIGHTS_DIR=../shared/weights python bench/adaptation.py ../shared/data/manifest.csv --arch combined
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def features(manifest: str, arch: str):
    from core.commands.evaluate import protocol_features

    x, y, _, src = protocol_features(manifest, arch, ["identity"])
    return x[:, 0], y, np.asarray(src)


def curve(xb, yb, xs, ys, ks, draws, weight, C, order, round_size, seed=0):
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from core.adapt import fit_with_site, suggest_next

    out = {k: [] for k in ks}
    for d in range(draws):
        pool, held = train_test_split(np.arange(len(ys)), test_size=0.5, stratify=ys, random_state=seed + d)
        rng = np.random.default_rng(seed + d)
        if order == "random":
            seq = list(rng.permutation(pool))
        else:
            seq = []
            head = fit_with_site(xb, yb, xs[:0], ys[:0], weight, C)
            while len(seq) < min(max(ks), len(pool)):
                left = np.array([i for i in pool if i not in set(seq)])
                z = head.logits(xs[left])
                take = suggest_next(z, xs[left], min(round_size, len(left)), 0.0,
                                    xs[seq] if seq else None)
                seq += [int(left[i]) for i in take]
                head = fit_with_site(xb, yb, xs[seq], ys[seq], weight, C)
        for k in ks:
            if k > len(pool):
                continue
            lab = np.array(seq[:k], dtype=int)
            if k and len(set(ys[lab])) < 2:
                out[k].append(np.nan)
                continue
            head = fit_with_site(xb, yb, xs[lab], ys[lab], weight, C)
            out[k].append(roc_auc_score(ys[held], head.logits(xs[held])))
    return out


def main(argv=None) -> int:
    from core.evaluation import mean_ci95
    from core.heads import DEFAULT_C

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--arch", default="combined")
    ap.add_argument("--ks", default="0,25,50,100,200")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--weight", type=float, default=10.0)
    ap.add_argument("--C", type=float, default=DEFAULT_C)
    ap.add_argument("--round", type=int, default=5, help="photos per review round (uncertainty order)")
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    x, y, src = features(args.manifest, args.arch)
    print(f"Adaptation learning curve, {args.arch}, logistic head C={args.C:g}, site weight {args.weight:g}, "
          f"{args.draws} draws; ROC-AUC on the untouched half of the site's train+val photos (mean [95% CI])")
    print(f"{'base -> site':<22} {'order':<12} " + " ".join(f"{'K=' + str(k):>22}" for k in ks))
    for a in sorted(set(src)):
        b = src != a
        for order in ("random", "uncertainty"):
            res = curve(x[src == a], y[src == a], x[b], y[b], ks, args.draws, args.weight, args.C, order, args.round)
            cells = []
            for k in ks:
                m = mean_ci95(res[k])
                cells.append(f"{m['mean']:.3f} [{m['ci95'][0]:.3f},{m['ci95'][1]:.3f}]" if m["n"] else "n/a")
            name = f"{a} -> {', '.join(sorted(set(src[b])))}"
            print(f"{name:<22} {order:<12} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
