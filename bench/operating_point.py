"""Choose each bundle's operating points on out-of-collection evidence (issue 17, item 1).

Out-of-fold predictions of the shipped head recipe (logistic, C 0.01, signed square root, identity+hflip views,
temperature and threshold set inside each fold's training data) on the train+val photos; the test split
is never read:
- LOCO: trained on one collection, scored on the other, both directions pooled;
- cv5: group-aware, label-stratified 5-fold cross-validation, repeated with `--draws` seeds, pooled.

Triage sensitivity = share of mpox photos at or above the review floor (the uncertain band's lower edge);
triage specificity = share of other photos below it. Points:
- default: review floor = the highest floor with triage sensitivity >= 0.95 on BOTH pooled LOCO and pooled cv5;
- out_of_collection (used when the folder's shift alarm fires): the highest floor with triage sensitivity
  >= 0.95 in EACH LOCO direction alone.
The call threshold stays the card's; the band's upper edge too. Bootstrap 95% intervals over photos.

    python bench/operating_point.py ../shared/data/manifest.csv --json /tmp/points.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET = 0.95


def bundle_features(manifest: str, bundle_dir: Path):
    """(x (N, 1, D), y, groups, sources) of the train+val photos from a bundle's embeddings.npz (the identity
    view the bundle itself computed), groups from the manifest by photo SHA-256."""
    import csv

    from core.triage.shift import read_embeddings

    data = read_embeddings(bundle_dir / "embeddings.npz")
    with open(manifest, newline="", encoding="utf-8") as fh:
        group_of = {r["sha256"]: r["group"] for r in csv.DictReader(fh)}
    groups = [group_of.get(str(s), str(s)) for s in data["path_sha"]]
    return (np.asarray(data["embedding"], np.float32)[:, None, :], np.asarray(data["label"]).astype(int),
            groups, [str(s) for s in data["source"]])


def predictions(manifest: str, arch: str, views: list[str], draws: int, C: float, bundles: Path | None = None):
    from core.commands.evaluate import protocol_features, recipe
    from core.learning.evaluation import protocol_predictions

    if bundles is not None:
        x, y, groups, src = bundle_features(manifest, bundles / arch)
    else:
        x, y, groups, src = protocol_features(manifest, arch, views)
    fit = recipe("logistic", C)
    loco = protocol_predictions(x, y, groups, src, "loco", fit)
    cv = [f for seed in range(draws) for f in protocol_predictions(x, y, groups, src, "cv5", fit, seed=seed)]
    return np.asarray(y), loco, cv


def pooled(y, folds):
    return (np.concatenate([y[te] for _n, _tr, te, _p, _t in folds]),
            np.concatenate([p for _n, _tr, _te, p, _t in folds]))


def boot_floor(y, p, target, n_boot=1000, seed=0):
    """The floor's bootstrap distribution (resampling photos): its 5th percentile is a floor that keeps the
    target in 95% of resamples."""
    from core.models.operating_point import floor_for_sensitivity

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if (y[i] == 1).any():
            out.append(floor_for_sensitivity(y[i], p[i], target))
    return np.asarray(out)


def save_predictions(path: Path, y, loco, cv) -> None:
    flat = {"y": y}
    for tag, folds in (("loco", loco), ("cv", cv)):
        for i, (name, tr, te, p, thr) in enumerate(folds):
            flat[f"{tag}{i}_name"] = np.array(name)
            flat[f"{tag}{i}_te"], flat[f"{tag}{i}_p"], flat[f"{tag}{i}_thr"] = te, p, np.array(thr)
    np.savez_compressed(path, **flat)


def load_predictions(path: Path):
    d = np.load(path)
    folds = {"loco": [], "cv": []}
    for tag in folds:
        i = 0
        while f"{tag}{i}_p" in d:
            folds[tag].append((str(d[f"{tag}{i}_name"]), None, d[f"{tag}{i}_te"], d[f"{tag}{i}_p"],
                               float(d[f"{tag}{i}_thr"])))
            i += 1
    return d["y"], folds["loco"], folds["cv"]


def choose(y, loco, cv, target=TARGET, previous_floor: float | None = None, cv_floor: float | None = None):
    """Both points and their triage figures; `cv_floor` replaces the cv5 floor (e.g. its bootstrap lower bound)."""
    from core.models.operating_point import floor_for_sensitivity, triage_report

    yl, pl = pooled(y, loco)
    yc, pc = pooled(y, cv)
    f_loco = floor_for_sensitivity(yl, pl, target)
    f_cv = floor_for_sensitivity(yc, pc, target) if cv_floor is None else float(cv_floor)
    default = min(f_loco, f_cv)
    per_dir = {n: floor_for_sensitivity(y[te], p, target) for n, _tr, te, p, _t in loco}
    # Never above the default floor; each LOCO direction alone keeps the target.
    ooc = min(default, *per_dir.values())
    # The rank rule (core.models.operating_point.folder_point): the share of each folder that must go to review, by
    # rank alone (no calibrated floor), for the target. Per LOCO direction (reported) and pooled over both
    # directions (each folder reviewing its own top share): the pooled one is the card's review_share.
    shares = {n: float(np.mean(p >= per_dir[n])) for n, _tr, _te, p, _t in loco}
    share = 1.0
    for s in np.arange(0.30, 1.0001, 0.005):
        review = np.concatenate([p >= np.quantile(p, 1 - s, method="lower") for _n, _tr, _te, p, _t in loco])
        ys = np.concatenate([y[te] for _n, _tr, te, _p, _t in loco])
        if review[ys == 1].mean() >= target:
            share = float(s)
            break
    res = {"default_floor": default, "out_of_collection_floor": ooc,
           "floors": {"loco_pooled": f_loco, "cv5_pooled": f_cv, **{f"loco {k}": v for k, v in per_dir.items()}},
           "default": {"loco": triage_report(yl, pl, default), "cv5": triage_report(yc, pc, default),
                       **{f"loco {n}": triage_report(y[te], p, default) for n, _tr, te, p, _t in loco}},
           "out_of_collection": {"loco": triage_report(yl, pl, ooc), "cv5": triage_report(yc, pc, ooc),
                                 **{f"loco {n}": triage_report(y[te], p, ooc) for n, _tr, te, p, _t in loco}},
           "review_share": share, "review_shares": shares}
    # Under an alarm each folder is reviewed by the lower of the fixed floor and its own share quantile.
    ranked = {}
    for n, _tr, te, p, _t in loco:
        f = min(ooc, float(np.quantile(p, 1 - share, method="lower")))
        ranked[f"loco {n}"] = triage_report(y[te], p, f)
    res["out_of_collection_with_share"] = ranked
    if previous_floor is not None:  # what the card's current (previous release's) band gives on the same predictions
        res["previous"] = {"review_floor": previous_floor, "loco": triage_report(yl, pl, previous_floor),
                           "cv5": triage_report(yc, pc, previous_floor),
                           **{f"loco {n}": triage_report(y[te], p, previous_floor) for n, _tr, te, p, _t in loco}}
    bl = boot_floor(yl, pl, target)
    res["loco_floor_bootstrap_p5"] = float(np.percentile(bl, 5)) if len(bl) else None
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--only", default="mobilenetv2,xception,combined")
    ap.add_argument("--views", default="identity,hflip")
    ap.add_argument("--draws", type=int, default=5, help="cv5 repetitions (seeds)")
    ap.add_argument("--C", type=float, default=0.01)
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--predictions", metavar="DIR", help="keep (and reuse) the out-of-fold predictions here")
    ap.add_argument("--from-bundles", metavar="MODELS", help="read train+val embeddings from each bundle's "
                    "embeddings.npz in MODELS (identity view) instead of the feature cache")
    args = ap.parse_args(argv)
    out = {}
    for arch in args.only.split(","):
        t0 = time.monotonic()
        cache = Path(args.predictions) / f"{arch}.npz" if args.predictions else None
        if cache is not None and cache.is_file():
            y, loco, cv = load_predictions(cache)
        else:
            y, loco, cv = predictions(args.manifest, arch, args.views.split(","), args.draws, args.C,
                                      Path(args.from_bundles) if args.from_bundles else None)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                save_predictions(cache, y, loco, cv)
        previous = None
        if args.from_bundles:
            from core.models.bundle import read_card

            previous = float(read_card(Path(args.from_bundles) / arch).uncertain_band[0])
        res = choose(y, loco, cv, previous_floor=previous)
        res["command"] = "python bench/operating_point.py MANIFEST"
        res["recipe"] = {"head": "logistic", "C": args.C, "cv5_draws": args.draws, "test_split_used": False,
                         "views": ["identity"] if args.from_bundles else args.views.split(","),
                         "features": "bundle embeddings.npz" if args.from_bundles else "feature cache"}
        out[arch] = res
        print(f"{arch} ({time.monotonic() - t0:.0f} s) floors: " +
              ", ".join(f"{k} {v:.3f}" for k, v in res["floors"].items()))
        print(f"  review share under an alarm {res['review_share']:.3f} ({res['review_shares']})")
        for point in ("previous", "default", "out_of_collection", "out_of_collection_with_share"):
            if point not in res:
                continue
            print(f"  {point} floor {res.get(point + '_floor', res[point].get('review_floor', float('nan'))):.3f}")
            for k, r in ((k, r) for k, r in res[point].items() if isinstance(r, dict)):
                print(f"    {k:<22} triage sens {r['triage_sensitivity']:.3f} "
                      f"[{r['triage_sensitivity_ci95'][0]:.3f}, {r['triage_sensitivity_ci95'][1]:.3f}]  "
                      f"triage spec {r['triage_specificity']:.3f} "
                      f"[{r['triage_specificity_ci95'][0]:.3f}, {r['triage_specificity_ci95'][1]:.3f}]  "
                      f"(n {r['n_mpox']}+{r['n_other']})", flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
