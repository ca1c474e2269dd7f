"""Train+val embeddings of the shipped backbones, computed once through their LiteRT exports (as the app
computes them: each photo decoded straight to the model's input size), cached for the release builder.

The test split is never read. Views: identity and hflip (the head recipe's). Resumable: rows already in
the cache file are kept; it is rewritten every `--every` photos.

    nice -n 10 python bench/release_embeddings.py ../shared/data/manifest.csv --models models \\
        --out /work/wt/_cache/release/embeddings
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def recipe_views(card) -> tuple[str, ...]:
    """The views the bundle's head recipe was fitted on (identity first)."""
    views = ((card.training.get("hyperparameters") or {}).get("head") or {}).get("views") or ["identity"]
    return ("identity",) + tuple(v for v in views if v != "identity")


def cache_file(out: Path, arch: str, backbone_sha: str) -> Path:
    return out / f"{arch}-{backbone_sha[:12]}.npz"


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """{photo SHA-256: (V, D) embeddings} from a cache file (empty when absent)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as d:
        return {str(s): e for s, e in zip(d["sha256"], d["embedding"])}


def write_cache(path: Path, rows: dict[str, np.ndarray], views: tuple[str, ...]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    keys = sorted(rows)
    np.savez(tmp, sha256=np.array(keys), embedding=np.stack([rows[k] for k in keys]).astype(np.float32),
             views=np.array(views))
    tmp.replace(path)


def embed_bundle(bundle_dir: Path, samples, out: Path, every: int = 64) -> Path:
    """Cache (V, D) embeddings of `samples` through the bundle's verified LiteRT backbone; returns the file."""
    from core.learning.augment import apply_view
    from core.models.bundle import load_bundle, runtime_info
    from core.photos.preprocess import load_model_input

    bundle = load_bundle(bundle_dir)
    backbone = getattr(bundle.runtime, "backbone", None)
    if backbone is None:
        raise SystemExit(f"{bundle_dir}: no verified LiteRT backbone")
    path = cache_file(out, bundle.card.architecture, runtime_info(bundle.card)["sha256"])
    views = recipe_views(bundle.card)
    rows = {k: v for k, v in read_cache(path).items() if len(v) == len(views)}
    todo = [s for s in samples if s.file_hash() not in rows]
    print(f"{bundle.card.display_name} ({', '.join(views)}): {len(rows)} cached, {len(todo)} to do -> {path}",
          flush=True)
    t0 = time.monotonic()
    for i, s in enumerate(todo, 1):
        img = load_model_input(s.path, bundle.input_size)
        batch = np.stack([apply_view(img, v, s.file_hash()) for v in views])
        _, emb = backbone(batch)
        rows[s.file_hash()] = np.asarray(emb, np.float32)
        if i % every == 0 or i == len(todo):
            write_cache(path, rows, views)
            rate = (time.monotonic() - t0) / i
            print(f"  {i}/{len(todo)} ({rate:.2f} s/photo)", flush=True)
    return path


def main(argv=None) -> int:
    from core.learning.datasets import load_manifest_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--models", default="models")
    ap.add_argument("--only", default="mobilenetv2,xception")
    ap.add_argument("--out", default="/work/wt/_cache/release/embeddings")
    args = ap.parse_args(argv)
    ds = load_manifest_dataset(args.manifest)
    samples = [s for s in ds.samples if s.split in ("train", "val")]  # never test
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for arch in args.only.split(","):
        embed_bundle(Path(args.models) / arch, samples, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
