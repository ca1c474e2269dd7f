"""Benchmark of head-only retraining on cached embeddings of 1,000 images (target: under 60 s on 2 cores).

    python bench/bench_retrain.py                         # both architectures, synthetic embeddings
    python bench/bench_retrain.py --arch mobilenetv2 --embeddings feats.npz

What is timed is what a retrain does once the frozen-backbone embeddings are cached (core.learning.features):
  1. read the per-image cache files (.npz, one per image holding every view, as core.learning.features writes them),
  2. train the head with core.learning.training.train_head (the `quick` preset: Adam 1e-3, up to 200 epochs,
     early stopping with patience 5, class weights, every view a training row),
  3. calibrate on val (temperature, threshold) and fit the out-of-scope statistics.
Computing the embeddings in the first place is not part of it (that is the backbone's forward pass,
measured by bench_classify.py (b)).

Embeddings: `--embeddings FILE.npz` with `feats` (V, N, D) or (N, D) and `y` (N,) uses real ones;
otherwise synthetic ones of the right size (960-d MobileNetV2, 1536-d Xception: their default feature
layers, core.photos.preprocess.ArchSpec.feature_layer), non-negative like
pooled ReLU features, with two classes separated about as well as the real ones (val accuracy ~0.85).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import benchlib  # noqa: E402
from benchlib import Timer  # noqa: E402

DIMS = {"mobilenetv2": 960, "xception": 1536}


def synthetic(n: int, views: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, V, D) embeddings and labels: a shared positive profile, a class direction, per-view jitter."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    base = rng.gamma(2.0, 0.25, dim).astype(np.float32)
    direction = rng.normal(0, 1, dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    per_image = base + rng.normal(0, 0.35, (n, dim)).astype(np.float32)
    per_image += np.where(y[:, None] == 1, 1.0, -1.0).astype(np.float32) * direction * 0.45
    x = per_image[:, None, :] + rng.normal(0, 0.15, (n, views, dim)).astype(np.float32)
    return np.maximum(x, 0.0), y


def load_real(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        feats = np.asarray(data["feats"], np.float32)
        y = np.asarray(data["y"]).astype(np.int64)
    if feats.ndim == 2:
        feats = feats[:, None, :]
    elif feats.shape[0] != len(y):  # (V, N, D) as written by some extraction scripts
        feats = np.transpose(feats, (1, 0, 2))
    reps = int(np.ceil(n / len(y)))
    return np.concatenate([feats] * reps)[:n], np.concatenate([y] * reps)[:n]


def write_cache(folder: Path, x: np.ndarray) -> list[Path]:
    """One .npz per image with one array per view, the layout core.learning.features uses."""
    paths = []
    for i, views in enumerate(x):
        p = folder / f"{i:02x}"[:2] / f"img{i:05d}.npz"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez(p, **{("identity" if j == 0 else f"view_{j}"): v for j, v in enumerate(views)})
        paths.append(p)
    return paths


def read_cache(paths: list[Path]) -> np.ndarray:
    out = []
    for p in paths:
        with np.load(p, allow_pickle=False) as data:
            out.append(np.stack([data[k] for k in data.files]))
    return np.stack(out)


def bench(arch: str, args) -> None:
    dim = DIMS[arch]
    if args.embeddings:
        x, y = load_real(Path(args.embeddings), args.n)
        source = f"real embeddings from {args.embeddings}"
    else:
        x, y = synthetic(args.n, args.views, dim)
        source = "synthetic embeddings (see module docstring)"
    n, v, d = x.shape
    print(f"\n== {arch}: {n} images x {v} views x {d}-d, {source}", flush=True)
    rng = np.random.default_rng(1)
    val = rng.random(n) < 0.2
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_cache(Path(tmp), x)
        with Timer() as t_read:
            cached = read_cache(paths)
    x_tr, y_tr = cached[~val], y[~val]
    x_va, y_va = cached[val][:, 0], y[val]
    try:
        from core.learning.training import train_head

        how = "core.learning.training.train_head (quick preset settings)"
    except ImportError:
        train_head = None
        how = "a plain Keras Dropout+Dense head (core.learning.training not available)"
    with Timer() as t_train:
        if train_head is not None:
            head, history, val_logits = train_head(x_tr, y_tr, x_va, y_va, lr=1e-3, epochs=200,
                                                   batch_size=args.batch_size, patience=5, seed=0)
            epochs = len(history)
        else:
            import keras

            keras.utils.set_random_seed(0)
            head = keras.Sequential([keras.Input((d,)), keras.layers.Dropout(0.2), keras.layers.Dense(1)])
            head.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
            h = head.fit(x_tr.reshape(-1, d), np.repeat(y_tr, v), validation_data=(x_va, y_va), epochs=200,
                         batch_size=args.batch_size, verbose=0,
                         callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
            epochs = len(h.history["loss"])
            val_logits = np.asarray(head(x_va), np.float64).reshape(-1)
    with Timer() as t_cal:
        from core.models.calibration import apply_temperature, fit_temperature
        from core.models.ood import fit_ood

        temperature = fit_temperature(val_logits, y_va)
        p_val = apply_temperature(val_logits, temperature)
        fit_ood(x_tr[:, 0], n_components=32)
    acc = float(np.mean((p_val >= 0.5) == (y_va == 1)))
    total = t_read.seconds + t_train.seconds + t_cal.seconds
    verdict = "meets" if total < 60 else "ABOVE"
    print(f"    read {n} cached .npz files        {t_read.seconds:6.1f} s", flush=True)
    print(f"    train head ({how}): {t_train.seconds:6.1f} s, {epochs} epochs of {len(x_tr) * v} rows "
          f"(early stopping), val accuracy {acc:.2f}", flush=True)
    print(f"    calibrate + out-of-scope stats      {t_cal.seconds:6.1f} s", flush=True)
    print(f"    total head-only retrain             {total:6.1f} s ({verdict} target 60 s; load "
          f"{benchlib.load_now()})", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="all", choices=["all", *DIMS])
    p.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    p.add_argument("--views", type=int, default=10,
                   help="views per image for synthetic embeddings (default 10: identity, hflip, 8 augmentations)")
    p.add_argument("--batch-size", type=int, default=32, help="head training batch size (default 32, as the quick preset)")
    p.add_argument("--embeddings", help="npz with real `feats` and `y` (repeated to --n images if fewer)")
    args = p.parse_args(argv)
    from core.models.tf_runtime import load_tensorflow

    load_tensorflow()
    print(f"machine: {benchlib.machine_line()}", flush=True)
    for arch in (DIMS if args.arch == "all" else [args.arch]):
        if args.embeddings and args.arch == "all":
            raise SystemExit("--embeddings belongs to one architecture; add --arch")
        bench(arch, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
