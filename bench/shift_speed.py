"""The shift test's cost and its agreement with the 1.3.0 implementation (issue 26, item 1).

    nice -n 10 python bench/shift_speed.py                       # all three shipped models
    nice -n 10 python bench/shift_speed.py --models mobilenetv2 --draws 50 --json /tmp/shift_speed.json

(a) Speed: folder_shift on the embeddings of 300 photos (150 MSID + 150 MSLD v1, any split: only time is
    measured) against the bundle's training embeddings, the 1.3.0 code (kept below, only here) vs
    core.triage.shift; median process time and wall time of --repeat runs after one warm-up, plus the one-off
    import of what each needs.
(b) Agreement, folder by folder, on the designs of bench/shift_calibration.py (train+val only, never test):
    null folders = n NEW photos from the training collections (each draw splits train+val by manifest
    `group` in halves; one half is the reference: pooled and each collection, the intersection-union
    verdict of folder_shift); leave-one-collection-out (LOCO) folders = n photos of one collection against
    the other collection's reference half. Old and new get the same folder, references, seed and the card's
    effect floor; the verdict (detected), the p < alpha category and the effect are compared.

Embeddings of every shared photo are computed once per model through the shipped bundle's own runtime
(LiteRT) by core.learning.features.dataset_embeddings and cached under --cache (default /work/wt/_cache/shiftspeed);
the combined model's embedding is its components' side by side, as its forward pass makes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.triage.shift import ShiftResult, card_floor_table, effect_floor  # noqa: E402

SHARED = Path(os.environ.get("MPOX_TRIAGE_SHARED", REPO.parent / "shared")) / "data"
SIZES = (30, 60, 120, 250)


# -- the 1.3.0 implementation, verbatim but for names: the comparison's baseline -------------------------


def _old_prepare(folder, reference, n_components):
    from scipy.linalg import eigh

    pooled = np.vstack([folder, reference])
    pooled = (pooled - pooled.mean(axis=0)) / (pooled.std(axis=0) + 1e-6)
    n, d = pooled.shape
    k = int(min(n_components, n - 1, d))
    if 1 <= k < d:
        if n <= d:
            vals, vecs = eigh(pooled @ pooled.T, subset_by_index=[n - k, n - 1])
            pooled = vecs * np.sqrt(np.maximum(vals, 0.0))
        else:
            _, vecs = eigh(pooled.T @ pooled, subset_by_index=[d - k, d - 1])
            pooled = pooled @ vecs
    return pooled[: len(folder)], pooled[len(folder):]


def _old_statistic(K, n):
    N = len(K)

    def statistic(ix, iy, axis=-1):
        ix = np.moveaxis(np.asarray(ix), axis, -1).astype(np.intp)
        iy = np.moveaxis(np.asarray(iy), axis, -1).astype(np.intp)
        lead = ix.shape[:-1]
        ix, iy = ix.reshape(-1, ix.shape[-1]), iy.reshape(-1, iy.shape[-1])
        w = np.zeros((len(ix), N))
        rows = np.arange(len(ix))[:, None]
        w[rows, ix] = 1.0 / n
        w[rows, iy] = -1.0 / (N - n)
        return np.einsum("bi,bi->b", w @ K, w).reshape(lead)

    return statistic


def old_shift_test(folder_emb, reference_emb, alpha=0.05, n_permutations=1000, seed=0, max_folder=500,
                   max_reference=700, n_components=32, bandwidth_scale=1.0, min_effect=None, min_photos=30,
                   floor_table=None) -> ShiftResult:
    from scipy.stats import permutation_test
    from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel

    folder = np.asarray(folder_emb, dtype=np.float64)
    ref = np.asarray(reference_emb, dtype=np.float64)
    folder = folder[np.all(np.isfinite(folder), axis=1)]
    n = int(len(folder))
    if len(ref) < min_photos or n < min_photos:
        return ShiftResult(False, None, None, n, reason="too few", alpha=alpha)
    rng = np.random.default_rng(seed)
    if len(folder) > max_folder:
        folder = folder[rng.choice(len(folder), max_folder, replace=False)]
    if len(ref) > max_reference:
        ref = ref[rng.choice(len(ref), max_reference, replace=False)]
    x, y = _old_prepare(folder, ref, n_components)
    nx, ny = len(x), len(y)
    d = euclidean_distances(y, squared=False)
    sigma = (float(np.median(d[np.triu_indices(ny, 1)])) or 1.0) * bandwidth_scale
    pooled = np.vstack([x, y])
    K = rbf_kernel(pooled, gamma=1.0 / (2 * sigma**2))
    res = permutation_test((np.arange(nx), np.arange(nx, nx + ny)), _old_statistic(K, nx),
                           permutation_type="independent", vectorized=True, n_resamples=n_permutations,
                           alternative="greater", batch=100, random_state=rng)
    p = float(res.pvalue)
    effect = float(res.statistic - np.mean(res.null_distribution))
    floor = effect_floor(n, floor_table) if min_effect is None else float(min_effect)
    return ShiftResult(bool(p < alpha and effect > floor), p, effect, n, n_reference=ny, alpha=alpha,
                       extra={"min_effect": floor})


def old_against(folder, refs, alpha=0.05, seed=0, **kw) -> ShiftResult:
    results = [old_shift_test(folder, r, alpha=alpha, seed=seed, **kw) for r in refs]
    if len(results) == 1 or not all(r.ran for r in results):
        return results[0]
    weakest = max(results, key=lambda r: (r.p_value, -r.statistic))
    return replace(weakest, detected=all(r.detected for r in results))


# -- embeddings -------------------------------------------------------------------------------------------


def bundle_embeddings(name: str) -> dict:
    """The train+val embeddings the bundle ships (embeddings.npz), with each photo's manifest group."""
    import csv

    from core.models.bundle import load_bundle
    from core.triage.shift import read_embeddings

    bundle = load_bundle(name, models_dir=REPO / "models")
    data = dict(read_embeddings(Path(bundle.path) / "embeddings.npz"))
    with open(SHARED / "manifest.csv", newline="", encoding="utf-8") as fh:
        group_of = {r["sha256"]: r["group"] for r in csv.DictReader(fh)}
    data["group"] = np.array([group_of.get(str(s), str(s)) for s in data["path_sha"]])
    data["bundle"], data["runtime"] = bundle, "embeddings.npz"
    return data


def embeddings(name: str, cache: Path, from_bundle: bool = False) -> dict:
    """Every shared photo's embedding under the shipped bundle `name` (cached), with its group."""
    from core.models.bundle import load_bundle
    from core.learning.datasets import load_manifest_dataset
    from core.learning.features import dataset_embeddings

    if from_bundle:
        return bundle_embeddings(name)
    dataset = load_manifest_dataset(SHARED / "manifest.csv")
    bundle = load_bundle(name, models_dir=REPO / "models")
    parts = getattr(bundle, "components", None)
    if parts:  # the combined embedding is its components' embeddings side by side
        got = [dataset_embeddings(c, dataset, cache_dir=cache) for c in parts]
        data = dict(got[0])
        data["embedding"] = np.concatenate([g["embedding"] for g in got], axis=1)
        runtime = bundle.runtime_name
    else:
        data = dict(dataset_embeddings(bundle, dataset, cache_dir=cache))
        runtime = bundle.runtime_name
    group = {str(s.path): s.group for s in dataset.samples}
    data["group"] = np.array([group[str(p)] for p in data["path"]])
    data["bundle"], data["runtime"] = bundle, runtime
    return data


# -- (a) speed ------------------------------------------------------------------------------------------


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(median process seconds, median wall seconds, last result) of `repeat` calls after one warm-up."""
    out = fn()
    cpu, wall = [], []
    for _ in range(repeat):
        t0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), out


def import_cost(module_names: list[str]) -> float:
    import subprocess

    code = ("import time, numpy; t = time.perf_counter(); " + "; ".join(f"import {m}" for m in module_names)
            + "; print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(proc.stdout.strip())


def speed(data: dict, repeat: int) -> dict:
    from core.triage.shift import folder_shift, reference_sets

    bundle = data["bundle"]
    rng = np.random.default_rng(0)
    src = data["source"].astype(str)
    pick = np.concatenate([rng.choice(np.flatnonzero(src == "MSID"), 150, replace=False),
                           rng.choice(np.flatnonzero(src == "MSLD v1"), 150, replace=False)])
    folder = data["embedding"][pick].astype(np.float16)   # as the engine keeps them
    rows = list(folder)
    refs = list(reference_sets(bundle).values())
    table = card_floor_table(bundle.card)
    old_cpu, old_wall, old = timed(lambda: old_against(np.stack(rows).astype(np.float32), refs,
                                                       floor_table=table), repeat)
    new_cpu, new_wall, new = timed(lambda: folder_shift(bundle, rows), repeat)
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    again = folder_shift(bundle, shuffled)
    return {"n": len(rows), "references": [len(r) for r in refs],
            "old_cpu_s": old_cpu, "old_wall_s": old_wall, "new_cpu_s": new_cpu, "new_wall_s": new_wall,
            "old": old.to_dict(), "new": new.to_dict(), "new_permutations": new.extra.get("n_permutations"),
            "row_order_invariant": again.to_dict() == new.to_dict()}


# -- (b) agreement ----------------------------------------------------------------------------------------


def folders(data: dict, draws: int, sizes: tuple[int, ...]):
    """Yield (kind, n, draw, folder rows, reference sets) as bench/shift_calibration.py makes them."""
    keep = np.isin(data["split"].astype(str), ["train", "val"])
    emb = data["embedding"][keep].astype(np.float32)
    src, groups = data["source"][keep].astype(str), data["group"][keep]
    rng = np.random.default_rng(0)
    ug = np.unique(groups)
    names = sorted(set(src))
    for d in range(draws):
        ref_groups = set(rng.choice(ug, len(ug) // 2, replace=False))
        in_ref = np.array([g in ref_groups for g in groups])
        refs = [emb[in_ref]] + [emb[in_ref & (src == s)] for s in names]
        held = np.flatnonzero(~in_ref)
        for n in sizes:
            if n <= len(held):
                yield "null", n, d, emb[rng.choice(held, n, replace=False)], refs
            for a in names:
                others = np.flatnonzero(src != a)
                if n <= len(others):
                    yield f"loco:{a}", n, d, emb[rng.choice(others, n, replace=False)], [emb[in_ref & (src == a)]]


def agreement(data: dict, draws: int, sizes: tuple[int, ...], alpha: float = 0.05) -> dict:
    from core.triage.shift import shift_against

    table = card_floor_table(data["bundle"].card)
    rows = []
    cpu_old = cpu_new = 0.0
    for kind, n, d, folder, refs in folders(data, draws, sizes):
        t0 = time.process_time()
        old = old_against(folder, refs, alpha=alpha, seed=d, floor_table=table)
        t1 = time.process_time()
        new = shift_against(folder, refs, alpha=alpha, seed=d, floor_table=table)
        t2 = time.process_time()
        cpu_old += t1 - t0
        cpu_new += t2 - t1
        rows.append({"kind": kind.split(":")[0], "n": n, "draw": d,
                     "old": [old.detected, old.p_value, old.statistic],
                     "new": [new.detected, new.p_value, new.statistic],
                     "floor": effect_floor(n, table), "perms": new.extra.get("n_permutations")})
    out = {"cpu_old_s": cpu_old, "cpu_new_s": cpu_new, "rows": rows, "by_kind": {}}
    for kind in ("null", "loco"):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        same = sum(r["old"][0] == r["new"][0] for r in sel)
        same_p = sum((r["old"][1] < alpha) == (r["new"][1] < alpha) for r in sel)
        deff = [abs(r["old"][2] - r["new"][2]) for r in sel]
        out["by_kind"][kind] = {"folders": len(sel), "verdict_agrees": same, "p_category_agrees": same_p,
                                "fired_old": sum(r["old"][0] for r in sel), "fired_new": sum(r["new"][0] for r in sel),
                                "max_abs_effect_diff": max(deff), "median_abs_effect_diff": float(np.median(deff)),
                                "disagreements": [r for r in sel if r["old"][0] != r["new"][0]]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mobilenetv2,xception,combined")
    ap.add_argument("--draws", type=int, default=50, help="draws of the reference half (null folders = draws x sizes)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per implementation in (a)")
    ap.add_argument("--only", default="ab", help="a: speed, b: agreement")
    ap.add_argument("--cache", default="/work/wt/_cache/shiftspeed")
    ap.add_argument("--from-bundle", action="store_true",
                    help="use the train+val embeddings each bundle ships (embeddings.npz) instead of computing every "
                         "shared photo's through its runtime (quicker; (a) then picks its 300 from train+val)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    if not (SHARED / "manifest.csv").is_file():
        raise SystemExit(f"needs the shared photos: {SHARED}/manifest.csv not found")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    if "a" in args.only:
        print(f"imports the 1.3.0 test needs (scipy.stats, sklearn.metrics.pairwise): "
              f"{import_cost(['scipy.stats', 'sklearn.metrics.pairwise']):.2f} s (fresh interpreter after numpy, "
              "wall); the new test imports nothing beyond numpy", flush=True)
    report = {}
    for name in args.models.split(","):
        t0 = time.monotonic()
        data = embeddings(name, Path(args.cache), args.from_bundle)
        print(f"{name}: {len(data['embedding'])} embeddings {data['embedding'].shape[1]}-wide "
              f"(runtime {data['runtime']}, {time.monotonic() - t0:.0f} s incl. cache)", flush=True)
        entry = report.setdefault(name, {})
        if "a" in args.only:
            s = speed(data, args.repeat)
            entry["speed"] = s
            print(f"  (a) 300 photos vs references {s['references']}: old {s['old_cpu_s']:.2f} s cpu / "
                  f"{s['old_wall_s']:.2f} s wall, new {s['new_cpu_s']:.3f} s cpu / {s['new_wall_s']:.3f} s wall "
                  f"({s['old_cpu_s'] / s['new_cpu_s']:.0f}x cpu); verdict old {s['old']['detected']} "
                  f"p {s['old']['p_value']:.3g} effect {s['old']['statistic']:.4f}, new {s['new']['detected']} "
                  f"p {s['new']['p_value']:.3g} effect {s['new']['statistic']:.4f} ({s['new_permutations']} "
                  f"permutations); same result for shuffled rows: {s['row_order_invariant']}", flush=True)
        if "b" in args.only:
            agr = agreement(data, args.draws, sizes)
            entry["agreement"] = agr
            print(f"  (b) cpu over all folders: old {agr['cpu_old_s']:.0f} s, new {agr['cpu_new_s']:.1f} s",
                  flush=True)
            for kind, k in agr["by_kind"].items():
                print(f"      {kind}: verdict agrees {k['verdict_agrees']}/{k['folders']} "
                      f"({k['verdict_agrees'] / k['folders']:.1%}), p<0.05 agrees {k['p_category_agrees']}/"
                      f"{k['folders']}, fired old {k['fired_old']} new {k['fired_new']}, |effect diff| median "
                      f"{k['median_abs_effect_diff']:.1e} max {k['max_abs_effect_diff']:.1e}", flush=True)
                for r in k["disagreements"]:
                    print(f"        n={r['n']} draw {r['draw']}: old {r['old']} new {r['new']} floor {r['floor']:.4f}")
        entry.pop("bundle", None)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
