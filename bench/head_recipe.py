"""Which head transfers best? The engine's Dense head against a logistic head (with and without a
signed square root, several L2 strengths), per backbone and on both backbones' embeddings together.

Chosen by leave-one-collection-out (train on one collection's train photos, its val for early
stopping where a recipe uses it; score the other collection's train+val photos) and by val (train on train, score val). The test split is never read.
Uses the feature cache (core.learning.features), so it takes seconds once the embeddings are cached.

    MPOX_TRIAGE_WEIGHTS_DIR=../shared/weights python bench/head_recipe.py ../shared/data/manifest.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VIEWS = ["identity", "hflip", "aug#0", "augz#0"]


def load_features(manifest: str, views=VIEWS, arches=("mobilenetv2", "xception")):
    from core.learning.datasets import load_manifest_dataset
    from core.learning.features import FeatureExtractor

    ds = load_manifest_dataset(manifest)
    ds.samples = [s for s in ds.samples if s.split in ("train", "val")]  # test is never read
    feats = {}
    for arch in arches:
        feats[arch] = FeatureExtractor(arch).embed(ds, views)
    if len(arches) == 2:
        feats["combined"] = np.concatenate([feats["mobilenetv2"], feats["xception"]], axis=-1)
    y = np.array([s.y for s in ds.samples])
    src = np.array([s.source for s in ds.samples])
    split = np.array([s.split for s in ds.samples])
    return feats, y, src, split


def dense_fit(x_tr, y_tr, x_va, y_va):
    from core.learning.training import train_head

    head, _, _ = train_head(x_tr, y_tr, x_va, y_va)
    return lambda x: np.asarray(head(x.astype(np.float32), training=False)).reshape(-1)


def logistic_fit(C, sqrt):
    from core.models.heads import fit_logistic

    def fit(x_tr, y_tr, x_va=None, y_va=None):
        return fit_logistic(x_tr, y_tr, C=C, sqrt=sqrt).logits
    return fit


def main(argv=None) -> int:
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--views", default=",".join(VIEWS))
    ap.add_argument("--arches", default="mobilenetv2,xception")
    args = ap.parse_args(argv)
    feats, y, src, split = load_features(args.manifest, args.views.split(","), args.arches.split(","))
    recipes = {"dense (engine, Adam+dropout)": dense_fit}
    for C in (0.001, 0.003, 0.01, 0.03, 0.1, 1.0):
        recipes[f"logistic sqrt C={C:g}"] = logistic_fit(C, True)
    for C in (0.01, 0.1, 1.0):
        recipes[f"logistic raw C={C:g}"] = logistic_fit(C, False)
    sources = sorted(set(src))
    print(f"{'features':<12} {'recipe':<30} {'val AUC':>8} " + " ".join(f"{a[:6]}->{b[:6]:<6}" for a in sources
                                                                         for b in sources if a != b) + "  LOCO mean")
    for name, X in feats.items():
        for rname, fit in recipes.items():
            tr, va = split == "train", split == "val"
            f = fit(X[tr], y[tr], X[va][:, 0], y[va])
            val_auc = roc_auc_score(y[va], f(X[va][:, 0]))
            loco = []
            for a in sources:
                ta, tb = (src == a) & tr, (src == a) & va
                f = fit(X[ta], y[ta], X[tb][:, 0], y[tb])  # the same photos for every recipe
                b = src != a
                loco.append(roc_auc_score(y[b], f(X[b][:, 0])))
            print(f"{name:<12} {rname:<30} {val_auc:8.3f} " + " ".join(f"{v:14.3f}" for v in loco)
                  + f"  {np.mean(loco):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
