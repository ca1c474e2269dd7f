"""Which backbone layer to pool into the embedding: val and leave-one-collection-out ROC-AUC per layer.

    MPOX_TRIAGE_WEIGHTS_DIR=../shared/weights python bench/feature_layers.py --arch mobilenetv2
    python bench/feature_layers.py --arch xception --views identity,hflip,augz#0 --npz /tmp/xc-layers.npz

One forward pass per image view gives the global-average-pooled feature map of every candidate layer
at once (far cheaper than one core.learning.features.FeatureExtractor per layer, which matters for Xception at
about 5 images/s on 2 cores). Each layer then gets a linear probe: scikit-learn logistic regression on
standardised embeddings, balanced class weights, C chosen on val ROC-AUC. Columns:

- val ROC-AUC: trained on train (all --views), scored on val (identity);
- zoom-out: the same probe on test photos shrunk inside a reflected border (zoomout@0.3#1), a proxy
  for whole photos where the lesion is small;
- A -> B: trained on every photo of collection A (all views), scored on every photo of collection B.
  The two collections differ in camera, cropping and the non-mpox classes, so this is the closest
  measure these photos allow of how a layer transfers to photos from elsewhere.

The rule used for the shipped default (core.photos.preprocess.ArchSpec.feature_layer): among layers whose val
ROC-AUC is within 0.01 of the best, the highest mean A -> B ROC-AUC. Test appears only as a
secondary column. `bench/ablation.py --parts layers` repeats the MobileNetV2 comparison with the
engine's own head, calibration and threshold.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

CANDIDATES = {
    "mobilenetv2": ["block_14_expand_relu", "block_15_expand_relu", "block_16_expand_relu",
                    "block_16_project_BN", "out_relu"],
    "xception": ["block13_sepconv2_act", "add_11", "block14_sepconv1_act", "block14_sepconv2_act"],
}
DEFAULT_VIEWS = {"mobilenetv2": "identity,hflip,aug#0,aug#1,aug#2,aug#3,augz#0,augz#1",
                 "xception": "identity,hflip,augz#0"}
SHIFT = "zoomout@0.3#1"
C_GRID = (0.0003, 0.001, 0.003)


def extract(arch: str, layers: list[str], views: list[str], manifest: str, weights_dir: str | None,
            batch: int = 32) -> dict:
    """Pooled embeddings (N, V, sum of layer widths) of every manifest photo under every view."""
    import keras
    import tensorflow as tf

    from core.learning.augment import apply_view
    from core.models.backbones import build_backbone
    from core.learning.datasets import load_manifest_dataset
    from core.photos.preprocess import arch_spec, load_model_input

    spec = arch_spec(arch)
    net = build_backbone(arch, weights_dir=weights_dir, feature_layer="top")
    size = int(net.input_shape[1])
    maps = keras.Model(net.input, [net.get_layer(name).output for name in layers])
    inputs = keras.Input((size, size, 3))
    outs = maps(keras.layers.Rescaling(spec.scale, offset=spec.offset)(inputs), training=False)
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(o) for o in outs])
    model = keras.Model(inputs, pooled)
    forward = tf.function(lambda x: model(tf.cast(x, tf.float32), training=False))
    ds = load_manifest_dataset(manifest)
    images = [load_model_input(s.path, size) for s in ds.samples]
    keys = [s.file_hash() for s in ds.samples]
    emb = np.zeros((len(images), len(views), int(model.output_shape[-1])), np.float32)
    t0 = time.perf_counter()
    for j, view in enumerate(views):
        for i in range(0, len(images), batch):
            x = np.stack([apply_view(im, view, k) for im, k in zip(images[i:i + batch], keys[i:i + batch])])
            emb[i:i + batch, j] = forward(x).numpy()
        print(f"  {view}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return {"E": emb, "views": np.array(views), "layers": np.array(layers),
            "dims": np.array([int(o.shape[-1]) for o in outs]), "y": ds.labels,
            "split": np.array([s.split for s in ds.samples]), "source": np.array([s.source for s in ds.samples])}


def probe(data: dict) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore")
    emb, y, split, source = data["E"], data["y"], data["split"], data["source"]
    views = [str(v) for v in data["views"]]
    train_views = [i for i, v in enumerate(views) if v != SHIFT]
    ident, shift = views.index("identity"), views.index(SHIFT)
    sources = sorted(set(source))
    rows, offset = [], 0
    for layer, dim in zip(data["layers"], data["dims"]):
        x = emb[..., offset:offset + int(dim)]
        offset += int(dim)

        def fit(mask, c):
            xt = np.concatenate([x[mask, v] for v in train_views])
            yt = np.concatenate([y[mask]] * len(train_views))
            scaler = StandardScaler().fit(xt)
            clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(scaler.transform(xt), yt)
            return lambda m, v=ident: clf.decision_function(scaler.transform(x[m, v]))

        tr, va, te = split == "train", split == "val", split == "test"
        c = max(C_GRID, key=lambda c: roc_auc_score(y[va], fit(tr, c)(va)))
        f = fit(tr, c)
        row = {"layer": str(layer), "dim": int(dim), "C": c, "val": roc_auc_score(y[va], f(va)),
               "test": roc_auc_score(y[te], f(te)), "test zoom-out": roc_auc_score(y[te], f(te, shift))}
        for a in sources:
            others = source != a
            row[f"{a} -> {'+'.join(s for s in sources if s != a)}"] = roc_auc_score(y[others], fit(source == a, c)(others))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(CANDIDATES), default="mobilenetv2")
    ap.add_argument("--layers", help="comma list of layer names (default: the candidates for --arch)")
    ap.add_argument("--views", help="training views (default: 8 for MobileNetV2, 3 for Xception)")
    ap.add_argument("--manifest", default=str(benchlib.SHARED / "data" / "manifest.csv"))
    ap.add_argument("--weights-dir", default=os.environ.get("MPOX_TRIAGE_WEIGHTS_DIR", str(benchlib.SHARED / "weights")))
    ap.add_argument("--npz", help="embeddings file: read if it exists, else computed and written here")
    args = ap.parse_args(argv)
    layers = args.layers.split(",") if args.layers else CANDIDATES[args.arch]
    views = (args.views or DEFAULT_VIEWS[args.arch]).split(",")
    if "identity" not in views:
        views = ["identity"] + views
    t0 = time.perf_counter()
    if args.npz and Path(args.npz).is_file():
        with np.load(args.npz) as f:
            data = {k: f[k] for k in f.files}
    else:
        data = extract(args.arch, layers, views + [SHIFT], args.manifest, args.weights_dir)
        if args.npz:
            np.savez(args.npz, **data)
    seconds = time.perf_counter() - t0
    rows = probe(data)
    cols = [k for k in rows[0] if k not in ("layer", "dim", "C")]
    transfer = [k for k in cols if "->" in k]
    best_val = max(r["val"] for r in rows)
    eligible = [r for r in rows if r["val"] >= best_val - 0.01]
    chosen = max(eligible, key=lambda r: np.mean([r[k] for k in transfer]))
    print(f"# {args.arch} feature layers, linear probe; train views {','.join(v for v in map(str, data['views']) if v != SHIFT)}")
    print(f"# {benchlib.machine_line()}; embeddings {seconds:.0f} s")
    print("\n| layer | dim | " + " | ".join(cols) + " | mean transfer |")
    print("|---" * (len(cols) + 3) + "|")
    for r in rows:
        mark = " (chosen)" if r is chosen else ""
        print(f"| {r['layer']}{mark} | {r['dim']} | " + " | ".join(f"{r[k]:.3f}" for k in cols)
              + f" | {np.mean([r[k] for k in transfer]):.3f} |")
    print(f"\nRule: among layers with val ROC-AUC within 0.01 of the best ({best_val:.3f}), the highest mean "
          f"transfer ROC-AUC: {chosen['layer']}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
