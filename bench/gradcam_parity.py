"""Grad-CAM without TensorFlow (numpy, from the LiteRT feature map and the head) against the TensorFlow
gradient-tape Grad-CAM of the Keras model, on real photos: correlation and largest difference of the maps.

    MPOX_TRIAGE_MODELS_DIR=/tmp/litert_models python bench/gradcam_parity.py ../shared/data/manifest.csv --n 24
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from core.models.bundle import load_bundle
    from core.models.explain import gradcam
    from core.photos.images import load_rgb

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--n", type=int, default=24, help="test-split photos (spread over the split)")
    ap.add_argument("--models", default="mobilenetv2,xception,combined")
    args = ap.parse_args(argv)
    root = Path(args.manifest).parent
    with open(args.manifest, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    photos = [root / r["path"] for r in rows[::max(1, len(rows) // args.n)][:args.n]]
    print("| model | photos | correlation min / median | max abs difference | numpy s/map | TensorFlow s/map |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        fast, keras = load_bundle(name), load_bundle(name, runtime="keras")
        corr, diff, t_fast, t_keras = [], [], 0.0, 0.0
        gradcam(keras, load_rgb(photos[0], max_side=768))  # trace once, outside the timing
        for p in photos:
            rgb = load_rgb(p, max_side=768)
            t0 = time.perf_counter()
            a = gradcam(fast, rgb)
            t1 = time.perf_counter()
            b = gradcam(keras, rgb)
            t2 = time.perf_counter()
            t_fast += t1 - t0
            t_keras += t2 - t1
            corr.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0)
            diff.append(float(np.max(np.abs(a - b))))
        print(f"| {name} | {len(photos)} | {min(corr):.4f} / {np.median(corr):.4f} | {max(diff):.2e} | "
              f"{t_fast / len(photos):.2f} | {t_keras / len(photos):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
