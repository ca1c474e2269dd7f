"""Build a release: mobilenetv2 and xception with the logistic head, and the combined bundle, each with its
LiteRT runtime (core.models.export.attach_light_runtime: backbone .tflite + numpy head, checked against Keras on the
shared test photos; components first, then combined, whose card records their card digests).

Every choice (head recipe, C, views, threshold, temperature) is made on val and leave-one-collection-out
(bench/head_recipe.py, docs/training.md); the shared test split is scored once per bundle after
everything is fixed and only reported in the cards. Embeddings come from the feature cache
(core.learning.features), so with a warm cache this takes a few minutes (test scoring runs the real models).

    MPOX_TRIAGE_WEIGHTS_DIR=../shared/weights python bench/build_release.py ../shared/data/manifest.csv

`--light-only` attaches the LiteRT runtimes to the bundles already in --models (no training).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from core.models.bundle import Bundle, read_card
    from core.models.combined import save_combined
    from core.learning.training import train_combined
    from core.learning.datasets import load_manifest_dataset
    from core.learning.evaluation import evaluate_bundle, to_jsonable
    from core.learning.features import EMBEDDINGS_FILE
    from core.learning.training import TrainConfig, save_trained, train_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--models", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--version", default="1.2.0")
    ap.add_argument("--views", default="identity,hflip")
    ap.add_argument("--C", type=float, default=0.01)
    ap.add_argument("--margin", type=float, default=0.05)
    ap.add_argument("--only", default="mobilenetv2,xception,combined")
    ap.add_argument("--light-only", action="store_true",
                    help="only attach LiteRT runtimes to the bundles in --models (components first)")
    args = ap.parse_args(argv)
    models = Path(args.models)
    views = args.views.split(",")
    only = args.only.split(",")
    ds = load_manifest_dataset(args.manifest)
    test = ds.subset("test")

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def attach(name):
        """The bundle's LiteRT runtime, checked against Keras on the shared test photos (only reported)."""
        from core.models.export import attach_light_runtime

        t0 = time.monotonic()
        info = attach_light_runtime(models / name, [s.path for s in test.samples])
        agree = info["agreement"]
        log(f"{name}: LiteRT runtime {info.get('file') or info['head']} attached in {time.monotonic() - t0:.0f} s; "
            f"max |dp| vs Keras {agree['max_abs_diff_p']:.2e} on {agree['images']} test photos")
        return info

    if args.light_only:
        for name in ("mobilenetv2", "xception", "combined"):
            if name in only:
                attach(name)
        return 0

    def test_metrics(bundle):
        m = evaluate_bundle(bundle, test, n_bootstrap=1000)
        log(f"TEST (once) {bundle.card.name}: ROC-AUC {m['roc_auc']:.3f} {m['ci95']['roc_auc']} acc {m['accuracy']:.3f}"
            f" sens {m['sensitivity']:.3f} spec {m['specificity']:.3f} ece {m['ece']:.3f}")
        return to_jsonable({k: v for k, v in m.items() if k not in ("predictions", "errors")})

    for arch in ("mobilenetv2", "xception"):
        if arch not in only:
            continue
        parent = read_card(models / arch)
        cfg = TrainConfig(arch, head="logistic", head_c=args.C, views=views, version=args.version,
                          sensitivity_margin=args.margin)
        t0 = time.monotonic()
        result = train_model(ds, cfg, parent=parent)
        vm = result.val_metrics
        log(f"{arch}: trained in {time.monotonic() - t0:.0f} s; val ROC-AUC {vm['roc_auc']:.3f} sens "
            f"{vm['sensitivity']:.3f} spec {vm['specificity']:.3f}; transfer {result.card.metrics.get('transfer')}")
        if arch == "xception":
            # Same maths as the bundle (the head on the frozen embedding of the 299 px input, which the
            # cache holds; train_model checked the assembled model against it), without 155 slow forwards.
            from core.models.calibration import apply_temperature
            from core.triage.metrics import evaluate_probabilities

            xt = result.extractor.embed(test, ["identity"])[:, 0]
            pt = apply_temperature(result.head.logits(xt), result.card.temperature)
            m = evaluate_probabilities([s.y for s in test.samples], pt, result.card.threshold, n_bootstrap=1000)
            log(f"TEST (once) xception: ROC-AUC {m['roc_auc']:.3f} {m['ci95']['roc_auc']} acc {m['accuracy']:.3f}"
                f" sens {m['sensitivity']:.3f} spec {m['specificity']:.3f} ece {m['ece']:.3f}")
            result.card.metrics["test"] = to_jsonable(m)
        else:
            result.card.metrics["test"] = test_metrics(Bundle(result.card, result.model, result.ood))
        save_trained(result, models / arch)
        log(f"saved {models / arch}")
        attach(arch)

    if "combined" in only:
        comps = [models / "mobilenetv2", models / "xception"]
        out = train_combined(ds, comps, views=views, C=args.C, sensitivity_margin=args.margin, version=args.version)
        card = out["card"]
        vm = card.metrics["val"]
        log(f"combined: val ROC-AUC {vm['roc_auc']:.3f} sens {vm['sensitivity']:.3f} spec {vm['specificity']:.3f}; "
            f"transfer {card.metrics.get('transfer')}")
        card.extra = {"kind": "combined", "components": out["components"]}
        # Val and test are scored the bundle's way: each component's embedding of the photo decoded straight
        # to its own size (the bundle does so since 1.3.0; before, it resized its 299 px input to 224 for
        # MobileNetV2), the head, the card's temperature and threshold.
        from core.models.calibration import apply_temperature
        from core.triage.metrics import evaluate_probabilities
        from core.learning.features import FeatureExtractor
        from core.photos.preprocess import load_model_input

        fx_m = FeatureExtractor("mobilenetv2", use_cache=False)
        fx_x = FeatureExtractor("xception")
        head_model = out["model"]

        def bundle_way(split_ds):
            em = []
            for i in range(0, len(split_ds.samples), 32):
                # Since 1.3.0 the bundle decodes each photo once per component size (core.triage.inference.load_input).
                batch = np.stack([load_model_input(s.path, 224) for s in split_ds.samples[i:i + 32]])
                em.append(fx_m.forward(batch))
            ex = fx_x.embed(split_ds, ["identity"])[:, 0]
            z = np.asarray(head_model(np.concatenate([np.concatenate(em), ex], axis=1).astype(np.float32))["logit"],
                           dtype=np.float64).reshape(-1)
            return np.array([s.y for s in split_ds.samples]), apply_temperature(z, card.temperature)

        val = ds.subset("val")
        yv, p_bundle = bundle_way(val)
        p_cached = apply_temperature(out["val_logits"], card.temperature)
        vb = evaluate_probabilities(yv, p_bundle, card.threshold, n_bootstrap=0)
        card.metrics["val_through_bundle"] = to_jsonable({
            "roc_auc": vb["roc_auc"], "sensitivity": vb["sensitivity"], "specificity": vb["specificity"],
            "max_abs_diff_p_vs_cached_features": float(np.max(np.abs(p_bundle - p_cached))),
            "note": "val scored the bundle's way (each component's input decoded straight to its own size, as "
                    "the component alone decodes it) against the cached embeddings the head was fitted on"})
        log(f"combined val the bundle's way: ROC-AUC {vb['roc_auc']:.3f} max |dp| {np.max(np.abs(p_bundle - p_cached)):.4f}")
        yt, pt = bundle_way(test)
        m = evaluate_probabilities(yt, pt, card.threshold, n_bootstrap=1000)
        log(f"TEST (once) combined: ROC-AUC {m['roc_auc']:.3f} {m['ci95']['roc_auc']} acc {m['accuracy']:.3f}"
            f" sens {m['sensitivity']:.3f} spec {m['specificity']:.3f} ece {m['ece']:.3f}")
        card.metrics["test"] = to_jsonable(m)
        save_combined(out["model"], card, models / "combined", out["components"], ood=out["ood"],
                      extra_files={EMBEDDINGS_FILE: out["embeddings_npz"]})
        log(f"saved {models / 'combined'}")
        attach("combined")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPOX_TRIAGE_WEIGHTS_DIR", "../shared/weights")
    sys.exit(main())
