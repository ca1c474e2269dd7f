"""Shift alarm figures: false-alarm rate on random subsets of held-out photos, detection rate on
leave-one-collection-out folders, and the test's speed. One command:

    OMP_NUM_THREADS=1 python bench/shift_alarm.py [--draws 100] [--no-report]

Embeddings of every shared photo under each shipped bundle are computed once and cached under
$MPOX_SHIFT_CACHE (default /tmp/mpox-shift-cache), outside the repository. The reference is the
bundle's `train` split (as embeddings.npz will carry it); for leave-one-collection-out it is the
OTHER collection's train photos only, and the folder is photos of one collection (any split).
Choice figures use val subsets; `--no-report` leaves test untouched. `--write-embeddings DIR` writes
each bundle's embeddings.npz (the bundle format) to DIR/<name>/ for wiring tests of 1.1.0 bundles.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.learning.features import dataset_embeddings  # noqa: E402
from core.triage.shift import MIN_EFFECT, shift_test  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MPOX_TRIAGE_SHARED", REPO.parent / "shared"))
CACHE = Path(os.environ.get("MPOX_SHIFT_CACHE", "/tmp/mpox-shift-cache"))
SIZES = (30, 50, 100, 155)
OTHER = {"MSID": "MSLD v1", "MSLD v1": "MSID"}


def wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def rate(hits: list[bool]) -> str:
    k, n = int(sum(hits)), len(hits)
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n:.3f} (95% CI {lo:.3f}-{hi:.3f})"


def embeddings(name: str, data: Path) -> dict:
    from core.models.bundle import load_bundle
    from core.learning.datasets import load_manifest_dataset

    return dataset_embeddings(load_bundle(name, models_dir=REPO / "models"), load_manifest_dataset(data),
                              cache_dir=CACHE)


def subsets(pool: np.ndarray, n: int, draws: int, rng) -> list[np.ndarray]:
    return [pool[rng.choice(len(pool), min(n, len(pool)), replace=False)] for _ in range(draws)]


def quiet(name, d, split, draws, rng) -> None:
    emb, sp = d["embedding"], d["split"]
    ref, pool = emb[sp == "train"], emb[sp == split]
    for n in SIZES:
        res = [shift_test(x, ref, seed=i) for i, x in enumerate(subsets(pool, n, draws, rng))]
        note = " (the whole split: draws differ only in the permutations)" if n >= len(pool) - 10 else ""
        print(f"  {name:11s} {split:4s} n={n:3d}: quiet {rate([not r.detected for r in res])}; "
              f"p<0.05 alone would be quiet {rate([r.p_value >= 0.05 for r in res])}{note}")


def loco(name, d, splits, draws, rng) -> None:
    emb, sp, src = d["embedding"], d["split"], d["source"]
    for a, b in OTHER.items():
        pool = emb[np.isin(sp, splits) & (src == a)]
        ref = emb[(sp == "train") & (src == b)]
        for n in SIZES:
            res = [shift_test(x, ref, seed=i) for i, x in enumerate(subsets(pool, n, draws, rng))]
            eff = np.array([r.statistic for r in res])
            print(f"  {name:11s} {a} photos vs {b}-train reference ({len(ref)}), n={n:3d}: fires {rate([r.detected for r in res])}; "
                  f"effect min {eff.min():.3f}")
        whole = shift_test(pool, ref)
        print(f"  {name:11s} all {len(pool)} {a} photos ({'+'.join(splits)}): detected={whole.detected} "
              f"p={whole.p_value:.4f} effect={whole.statistic:.3f}")


def speed() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(700, 1536)).astype(np.float32)
    for n in (30, 155, 3000):
        folder = rng.normal(size=(n, 1536)).astype(np.float32)
        shift_test(folder, ref)  # warm up imports
        t = time.perf_counter()
        shift_test(folder, ref)
        print(f"  n={n:4d} vs 700 x 1536: {time.perf_counter() - t:.2f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "manifest.csv")
    ap.add_argument("--models", nargs="+", default=["mobilenetv2", "xception"])
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--no-report", action="store_true", help="choice figures only (val, LOCO on train+val)")
    ap.add_argument("--write-embeddings", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    print(f"alpha 0.05, min effect {MIN_EFFECT}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    data = {name: embeddings(name, args.data) for name in args.models}
    if args.write_embeddings:
        for name, d in data.items():
            out = args.write_embeddings / name
            out.mkdir(parents=True, exist_ok=True)
            keep = d["split"] != "test"
            np.savez_compressed(out / "embeddings.npz", embedding=d["embedding"][keep].astype(np.float16),
                                label=d["label"][keep], source=d["source"][keep], split=d["split"][keep])
            print(f"wrote {out / 'embeddings.npz'}")
    print("CHOICE SET (what MIN_EFFECT and the method were chosen on)")
    for name, d in data.items():
        quiet(name, d, "val", args.draws, np.random.default_rng(1))
        loco(name, d, ["train", "val"], max(10, args.draws // 2), np.random.default_rng(2))
    if not args.no_report:
        print("REPORT (test split, measured once; nothing was chosen with it)")
        for name, d in data.items():
            quiet(name, d, "test", args.draws, np.random.default_rng(3))
            loco(name, d, ["test"], max(10, args.draws // 2), np.random.default_rng(4))
    print("SPEED (one test, default 1000 permutations)")
    speed()
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
