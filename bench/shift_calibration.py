"""Calibrate the shift alarm's effect floor on the null, per bundle and folder size (issue 17, item 2).

Null: folders of NEW photos from the training collections. Each draw splits the train+val photos by
patient/photo group (manifest `group`) in two halves; one half is the reference (pooled and each
collection, as core.triage.shift.folder_shift compares), folders of n photos are drawn from the other half.
Shift: leave-one-collection-out folders, n photos of one collection against the other's photos.
The test split is never read. For each n the floor is the 97.5th percentile of the null's effect
(the intersection-union verdict's effect), so the null fires on <= 2.5% by construction at the sizes
measured; the LOCO firing rate is then what that floor gives.

    python bench/shift_calibration.py ../shared/data/manifest.csv --draws 25 --json shift_floor.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.triage.shift import read_embeddings, shift_test  # noqa: E402

SIZES = (30, 60, 120, 250, 400)


def load(bundle_dir: Path, manifest: Path):
    import csv

    data = read_embeddings(bundle_dir / "embeddings.npz")
    with open(manifest, newline="", encoding="utf-8") as fh:
        group_of = {r["sha256"]: r["group"] for r in csv.DictReader(fh)}
    groups = np.array([group_of.get(str(s), str(s)) for s in data["path_sha"]])
    return np.asarray(data["embedding"], np.float32), np.asarray(data["source"]).astype(str), groups


def iu(folder, refs, perms, seed):
    """(p, effect) of the intersection-union verdict: the comparison with the largest p decides."""
    res = [shift_test(folder, r, n_permutations=perms, seed=seed, min_effect=0.0) for r in refs]
    worst = max(res, key=lambda r: (r.p_value, -r.statistic))
    return worst.p_value, worst.statistic, [(r.p_value, r.statistic) for r in res]


def run(emb, src, groups, draws, perms, sizes):
    rng = np.random.default_rng(0)
    null = {n: [] for n in sizes}
    loco = {n: [] for n in sizes}
    ug = np.unique(groups)
    names = sorted(set(src))
    for d in range(draws):
        ref_groups = set(rng.choice(ug, len(ug) // 2, replace=False))
        in_ref = np.array([g in ref_groups for g in groups])
        refs = [emb[in_ref]] + [emb[in_ref & (src == s)] for s in names]
        held = np.flatnonzero(~in_ref)
        for n in sizes:
            if n <= len(held):
                pick = rng.choice(held, n, replace=False)
                p, eff, _ = iu(emb[pick], refs, perms, seed=d)
                null[n].append((p, eff))
            for a in names:  # LOCO: reference = collection a (its reference half), folder = the other collection
                others = np.flatnonzero(src != a)
                if n <= len(others):
                    pick = rng.choice(others, n, replace=False)
                    r = shift_test(emb[pick], emb[in_ref & (src == a)], n_permutations=perms, seed=d, min_effect=0.0)
                    loco[n].append((r.p_value, r.statistic, a))
    return null, loco


def summarise(null, loco, alpha=0.05, q=97.5):
    from core.models.operating_point import wilson

    table = []
    for n in sorted(null):
        if not null[n]:
            continue
        eff = np.array([e for _p, e in null[n]])
        floor = float(np.percentile(eff, q))
        null_fire = sum(1 for p, e in null[n] if p < alpha and e > floor)
        lo = [(p, e) for p, e, _a in loco[n]]
        loco_fire = sum(1 for p, e in lo if p < alpha and e > floor)
        table.append({"n": n, "floor": floor, "null_fired": [null_fire, len(null[n])],
                      "null_fired_ci95": wilson(null_fire, len(null[n])),
                      "loco_fired": [loco_fire, len(lo)], "loco_fired_ci95": wilson(loco_fire, len(lo)),
                      "null_effect_median": float(np.median(eff)),
                      "loco_effect_median": float(np.median([e for _p, e in lo])) if lo else None})
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--models", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--only", default="mobilenetv2,xception,combined")
    ap.add_argument("--draws", type=int, default=25)
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    out = {}
    for name in args.only.split(","):
        t0 = time.monotonic()
        emb, src, groups = load(Path(args.models) / name, Path(args.manifest))
        null, loco = run(emb, src, groups, args.draws, args.permutations, SIZES)
        table = summarise(null, loco)
        out[name] = {"table": table, "draws": args.draws, "permutations": args.permutations,
                     "raw_null": {n: v for n, v in null.items()},
                     "raw_loco": {n: [(p, e) for p, e, _a in v] for n, v in loco.items()}}
        print(f"{name} ({time.monotonic() - t0:.0f} s): n, floor, null fired, LOCO fired")
        for r in table:
            print(f"  n={r['n']:>4} floor {r['floor']:.4f}  null {r['null_fired'][0]}/{r['null_fired'][1]}"
                  f"  LOCO {r['loco_fired'][0]}/{r['loco_fired'][1]}  (median effect null {r['null_effect_median']:.4f},"
                  f" LOCO {r['loco_effect_median']:.4f})", flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
