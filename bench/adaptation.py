"""Which photos to review first: review orders for adaptation, leave-one-collection-out (core/learning/adapt.py's recipe).

Base = one collection's train+val photos; site = the other collection's train+val photos (the test
split is never read). Each draw splits the site photos at random (stratified) into a pool
(`--pool-frac`) and an eval part. K photos are taken from the pool in each review order and labelled;
the adapted head (base + K site photos, site weight `--weight`) is scored on the eval part only,
never on the pool's leftovers (those are biased against any order that picks the hard photos).
K = 0 is the base head alone. Orders:

- random: a random sample of the pool;
- uncertainty: core.triage.labelling.uncertainty_order from the base head (what `adapt --suggest K` did before 1.3.0);
- uncertainty-rounds: the same in rounds of `--round` photos, refitting the head after each round;
- medoids: core.triage.labelling.medoid_order (k-means medoids of the embeddings, biggest cluster first);
- stratified: core.triage.labelling.stratified_order (spread over the base head's score range, widest gap first);
- medoids+uncertainty: half the photos by medoids, refit, the other half by uncertainty.

With `--operating-point`, the orders named in `--op-orders` also get the adapted operating point of
core.learning.adapt.choose_operating_point on cross-validated predictions of their K photos, and its
sensitivity / specificity (at the threshold) and triage sensitivity / specificity (at the review
floor) on the eval part.

    MPOX_TRIAGE_WEIGHTS_DIR=../shared/weights python bench/adaptation.py ../shared/data/manifest.csv \\
        --arch mobilenetv2 --draws 10 --ks 0,25,50,100

`--pseudo BUNDLE` adds third collections: group-wise halves of the train+val photos, one half seen through a
simulated site (bench/pseudo_sites.py: crop, zoom-out, colour, resolution, border), embedded with BUNDLE's
LiteRT runtime (cached). Each order is then compared with random draw by draw (the same pool and eval
split): the mean difference and its 95% interval, pooled over the sites, decide. An order ships only if
it beats random by more than that noise at every K, and only after the bench reproduces the two losses
measured on held-back photos (stratified and uncertainty below random); otherwise random ships.

    nice -n 10 python bench/adaptation.py ../shared/data/manifest.csv --pseudo mobilenetv2 --draws 10 \\
        --ks 50,100,150 --orders random,stratified,uncertainty --site-prevalence 0.24
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ORDERS = ("random", "uncertainty", "uncertainty-rounds", "medoids", "stratified", "medoids+uncertainty")


def features(manifest: str, arch: str):
    from core.commands.evaluate import protocol_features

    x, y, _, src = protocol_features(manifest, arch, ["identity"])
    return x[:, 0], y, np.asarray(src)


def pick(order: str, k: int, pool: np.ndarray, xs, ys, fit, base_head, round_size: int, rng, seed: int) -> list[int]:
    """Site indices (into xs) of the K photos `order` would have labelled from `pool`."""
    from core.triage.labelling import medoid_order, stratified_order, uncertainty_order

    if k == 0:
        return []
    if order == "random":
        return [int(i) for i in rng.permutation(pool)[:k]]
    if order == "uncertainty":
        return [int(pool[i]) for i in uncertainty_order(base_head.logits(xs[pool]), xs[pool], k)]
    if order == "medoids":
        return [int(pool[i]) for i in medoid_order(xs[pool], k, seed=seed)]
    if order == "stratified":
        return [int(pool[i]) for i in stratified_order(base_head.logits(xs[pool]), k)]
    seq: list[int] = []
    head = base_head
    if order == "medoids+uncertainty":
        seq = [int(pool[i]) for i in medoid_order(xs[pool], k // 2, seed=seed)]
        head = fit(seq)
        round_size = k - len(seq)
    while len(seq) < k:
        left = np.setdiff1d(pool, seq)
        take = uncertainty_order(head.logits(xs[left]), xs[left], min(round_size, k - len(seq)), 0.0,
                                 xs[seq] if seq else None)
        seq += [int(left[i]) for i in take]
        if len(seq) < k:
            head = fit(seq)
    return seq


def operating_point_metrics(xb, yb, xs, ys, lab, held, weight, C, seed) -> dict:
    """core.learning.adapt's operating point from cross-validated predictions of the K labelled photos, on the eval part."""
    from core.learning.adapt import _folds, choose_operating_point, cv_site_logits, fit_with_site
    from core.models.calibration import sigmoid

    folds = _folds(ys[lab], None, 5, seed)
    z_cv = cv_site_logits(xb, yb, xs[lab], ys[lab], weight, C, folds)
    point = choose_operating_point(ys[lab], sigmoid(z_cv), None, seed=seed)
    p_eval = sigmoid(fit_with_site(xb, yb, xs[lab], ys[lab], weight, C).logits(xs[held]))
    y = ys[held]
    called = p_eval >= point["threshold"]
    review = p_eval >= min(point["uncertain_band"][0], point["threshold"])
    return {"sensitivity": float(called[y == 1].mean()), "specificity": float((~called[y == 0]).mean()),
            "triage_sensitivity": float(review[y == 1].mean()), "triage_specificity": float((~review[y == 0]).mean()),
            "own": float(point["source"] == "site")}


def curve(xb, yb, xs, ys, ks, draws, weight, C, orders, round_size, pool_frac, op_orders=(), seed=0):
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from core.learning.adapt import fit_with_site

    out = {(o, k): [] for o in orders for k in ks}
    ops = {(o, k): [] for o in op_orders for k in ks if k}
    base_head = fit_with_site(xb, yb, xs[:0], ys[:0], weight, C)
    for d in range(draws):
        pool, held = train_test_split(np.arange(len(ys)), train_size=pool_frac, stratify=ys, random_state=seed + d)

        def fit(idx):
            idx = np.asarray(idx, dtype=int)
            return fit_with_site(xb, yb, xs[idx], ys[idx], weight, C)

        for order in orders:
            for k in ks:
                if k > len(pool):
                    continue
                lab = np.array(pick(order, k, pool, xs, ys, fit, base_head, round_size,
                                    np.random.default_rng(seed + d), seed + d), dtype=int)
                if k and len(set(ys[lab])) < 2:
                    out[(order, k)].append(np.nan)
                    continue
                head = fit(lab) if k else base_head
                out[(order, k)].append(roc_auc_score(ys[held], head.logits(xs[held])))
                if order in op_orders and k and min(np.bincount(ys[lab], minlength=2)) >= 2:
                    ops[(order, k)].append(operating_point_metrics(xb, yb, xs, ys, lab, held, weight, C, seed + d))
        print(f"  draw {d + 1}/{draws} done", file=sys.stderr, flush=True)
    return out, ops


def paired(res, order: str, k: int) -> list[float]:
    """Per-draw ROC-AUC of `order` minus random's (same pool and eval split), draws where both ran."""
    a, b = np.asarray(res[(order, k)], float), np.asarray(res[("random", k)], float)
    d = a - b
    return d[np.isfinite(d)].tolist()


def short_share(ys, ks, draws, pool_frac, seed=0, minimum=10) -> dict:
    """Share of draws whose random K-photo sample holds fewer than `minimum` photos of a class."""
    from sklearn.model_selection import train_test_split

    out = {}
    for k in ks:
        short = []
        for d in range(draws):
            pool, _ = train_test_split(np.arange(len(ys)), train_size=pool_frac, stratify=ys, random_state=seed + d)
            lab = np.random.default_rng(seed + d).permutation(pool)[:k]
            short.append(min(ys[lab].sum(), len(lab) - ys[lab].sum()) < minimum)
        out[k] = float(np.mean(short))
    return out


def cell(values) -> str:
    from core.learning.evaluation import mean_ci95

    m = mean_ci95(values)
    return f"{m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if m["n"] else "n/a"


def main(argv=None) -> int:
    from core.models.heads import DEFAULT_C

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--arch", default="combined")
    ap.add_argument("--ks", default="0,25,50,100")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--weight", type=float, default=10.0)
    ap.add_argument("--C", type=float, default=DEFAULT_C)
    ap.add_argument("--round", type=int, default=25, help="photos per review round (uncertainty-rounds)")
    ap.add_argument("--pool-frac", type=float, default=0.6, help="share of the site photos in the pool")
    ap.add_argument("--orders", default=",".join(ORDERS))
    ap.add_argument("--operating-point", action="store_true", help="also the adapted operating point's rates")
    ap.add_argument("--op-orders", default="random,medoids")
    ap.add_argument("--direction", help="only this base collection (e.g. MSID)")
    ap.add_argument("--pseudo", metavar="BUNDLE", help="pseudo-collections embedded with this shipped bundle "
                    "(bench/pseudo_sites.py) instead of leave-one-collection-out")
    ap.add_argument("--site-prevalence", type=float, help="with --pseudo: the site's share of mpox (e.g. 0.24)")
    args = ap.parse_args(argv)
    if args.pseudo:
        return pseudo_main(args)
    ks = [int(k) for k in args.ks.split(",")]
    orders = args.orders.split(",")
    op_orders = args.op_orders.split(",") if args.operating_point else []
    x, y, src = features(args.manifest, args.arch)
    print(f"Review orders, {args.arch}, logistic head C={args.C:g}, site weight {args.weight:g}, {args.draws} draws, "
          f"pool {args.pool_frac:g} of the site's train+val photos; ROC-AUC on the eval part (mean [95% CI])")
    print(f"| base -> site | order | " + " | ".join(f"K={k}" for k in ks) + " |")
    print("|---|---|" + "---|" * len(ks))
    op_rows = []
    for a in sorted(set(src)):
        if args.direction and a != args.direction:
            continue
        b = src != a
        name = f"{a} -> {', '.join(sorted(set(src[b])))}"
        t0 = time.time()
        res, ops = curve(x[src == a], y[src == a], x[b], y[b], ks, args.draws, args.weight, args.C, orders,
                         args.round, args.pool_frac, op_orders)
        for order in orders:
            print(f"| {name} | {order} | " + " | ".join(cell(res[(order, k)]) for k in ks) + " |", flush=True)
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)
        for (order, k), rows in ops.items():
            if rows:
                op_rows.append(f"| {name} | {order} | {k} | " + " | ".join(
                    cell([r[m] for r in rows]) for m in ("sensitivity", "specificity", "triage_sensitivity",
                                                          "triage_specificity"))
                    + f" | {np.mean([r['own'] for r in rows]):.2f} |")
    if op_rows:
        print("\nAdapted operating point on the eval part (mean [95% CI]); own = share of draws where the site "
              "sample allowed its own review floor (else the parent's point)")
        print("| base -> site | order | K | sensitivity | specificity | triage sensitivity | triage specificity "
              "| own |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(op_rows))
    return 0


def floor_rules(xb, yb, xs, ys, ks, draws, weight, C, pool_frac, seed=0) -> dict:
    """Per K: the adapted default point from a random K-photo sample, by the rule before this release (bootstrap
    on the site's cross-validated mpox scores alone) and the shipped one (pooled with held-out base photos, refused
    under 0.30 triage specificity: then the parent's point), scored on the site's eval part."""
    from sklearn.model_selection import train_test_split

    from core.learning.adapt import _folds, choose_operating_point, cv_site_logits, fit_with_site, review_floor_lower_bound
    from core.models.calibration import sigmoid

    from core.learning.adapt import MIN_MPOX_FOR_OWN_POINT
    from core.models.operating_point import floor_for_sensitivity

    tr_b, va_b = train_test_split(np.arange(len(yb)), test_size=0.2, stratify=yb, random_state=seed)
    # The parent's point: threshold 0.5, review floor keeping 95% of the held-out base mpox photos under the
    # base head alone (as a shipped card's point is chosen on held-out photos).
    base_only = fit_with_site(xb[tr_b], yb[tr_b], xb[:0], yb[:0], weight, C)
    p_floor = floor_for_sensitivity(yb[va_b], sigmoid(base_only.logits(xb[va_b])))
    parent = {"threshold": 0.5, "uncertain_band": [min(p_floor, float(sigmoid(-1.0))), float(sigmoid(1.0))],
              "from": "parent"}
    out = {k: {"old": [], "new": []} for k in ks}
    for d in range(draws):
        pool, held = train_test_split(np.arange(len(ys)), train_size=pool_frac, stratify=ys, random_state=seed + d)
        for k in ks:
            lab = np.random.default_rng(seed + d).permutation(pool)[:k]
            if min(np.bincount(ys[lab], minlength=2)) < 10:
                continue
            folds = _folds(ys[lab], None, 5, seed + d)
            p_cv = sigmoid(cv_site_logits(xb[tr_b], yb[tr_b], xs[lab], ys[lab], weight, C, folds))
            head = fit_with_site(xb[tr_b], yb[tr_b], xs[lab], ys[lab], weight, C)
            p_eval, p_val = sigmoid(head.logits(xs[held])), sigmoid(head.logits(xb[va_b]))
            y = ys[held]
            old_floor = review_floor_lower_bound(p_cv[ys[lab] == 1], n_bootstrap=500, seed=seed + d)
            old_refused = int(ys[lab].sum()) < MIN_MPOX_FOR_OWN_POINT   # the old rule kept the parent's point too
            if old_refused:
                old_floor = parent["uncertain_band"][0]
            new = choose_operating_point(ys[lab], p_cv, parent, 0.5, n_bootstrap=500, seed=seed + d,
                                         prior_y=yb[va_b], prior_p=p_val)
            for rule, floor, refused in (("old", min(old_floor, float(sigmoid(-1.0))), old_refused),
                                         ("new", min(new["uncertain_band"][0], new["threshold"]),
                                          new["source"] != "site")):
                review = p_eval >= floor
                out[k][rule].append({"floor": floor, "triage_sensitivity": float(review[y == 1].mean()),
                                     "triage_specificity": float((~review[y == 0]).mean()), "refused": refused})
    return out


def pseudo_main(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pseudo_sites import pseudo_sites

    ks = [int(k) for k in args.ks.split(",")]
    orders = args.orders.split(",")
    if "random" not in orders:
        orders = ["random"] + orders
    print(f"Review orders on pseudo-collections ({args.pseudo} LiteRT embeddings), logistic head C={args.C:g}, "
          f"site weight {args.weight:g}, {args.draws} draws, pool {args.pool_frac:g} of the site photos"
          + (f", site at {args.site_prevalence:.0%} mpox" if args.site_prevalence else "")
          + "; ROC-AUC on the eval part (mean [95% CI])")
    print("| site | order | " + " | ".join(f"K={k}" for k in ks) + " |")
    print("|---|---|" + "---|" * len(ks))
    diffs = {(o, k): [] for o in orders if o != "random" for k in ks}
    shorts = []
    rules = []
    for name, xb, yb, xs, ys in pseudo_sites(args.manifest, args.pseudo, site_prevalence=args.site_prevalence):
        t0 = time.time()
        res, _ = curve(xb, yb, xs, ys, ks, args.draws, args.weight, args.C, orders, args.round, args.pool_frac)
        for order in orders:
            print(f"| {name} ({len(ys)} photos, {ys.mean():.0%} mpox) | {order} | "
                  + " | ".join(cell(res[(order, k)]) for k in ks) + " |", flush=True)
            if order != "random":
                for k in ks:
                    diffs[(order, k)] += paired(res, order, k)
        shorts.append(short_share(ys, ks, args.draws, args.pool_frac))
        if args.operating_point:
            rules.append((name, floor_rules(xb, yb, xs, ys, ks, args.draws, args.weight, args.C, args.pool_frac)))
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)
    print("\nOrder minus random, paired by draw, pooled over the sites (mean [95% CI]; n = draws x sites)")
    print("| order | " + " | ".join(f"K={k}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    verdict = {}

    def mean_ci95(values):   # unclamped: differences can be negative
        from scipy import stats

        v = np.asarray(values, dtype=np.float64)
        half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
        return {"mean": float(v.mean()) if len(v) else float("nan"),
                "ci95": [float(v.mean()) - half, float(v.mean()) + half] if len(v) else [float("nan")] * 2,
                "n": len(v)}

    for order in [o for o in orders if o != "random"]:
        cells, wins, losses = [], [], []
        for k in ks:
            m = mean_ci95(diffs[(order, k)])
            cells.append(f"{m['mean']:+.4f} [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] (n={m['n']})")
            wins.append(m["ci95"][0] > 0)
            losses.append(m["mean"] < 0)
        verdict[order] = (all(wins), losses[0])   # the loss measured on held-back photos was at K = 50
        print(f"| {order} | " + " | ".join(cells) + " |")
    print("\nRandom samples short of 10 of a class (share of draws): "
          + ", ".join(f"K={k}: {np.mean([s[k] for s in shorts]):.2f}" for k in ks))
    if rules:
        print("\nThe adapted default point from a random K-photo sample, on the eval part (mean [min, max] over "
              "draws): review floor, triage sensitivity, triage specificity; before = bootstrap on the site's mpox "
              "scores alone, now = pooled with held-out base photos, refused under 0.30 (then the parent's point)")
        print("| site | K | rule | floor | triage sensitivity | triage specificity | refused |")
        print("|---|---|---|---|---|---|---|")

        def span(rows, key):
            v = [r[key] for r in rows]
            return f"{np.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]" if v else "n/a"

        for name, res in rules:
            for k in ks:
                for rule, label in (("old", "before"), ("new", "now")):
                    rows = res[k][rule]
                    print(f"| {name} | {k} | {label} | {span(rows, 'floor')} | {span(rows, 'triage_sensitivity')} | "
                          f"{span(rows, 'triage_specificity')} | {sum(r['refused'] for r in rows)}/{len(rows)} |")
    if not verdict:
        return 0
    reproduced = all(verdict.get(o, (False, False))[1] for o in ("stratified", "uncertainty"))
    winners = [o for o, (win, _) in verdict.items() if win]
    if not reproduced:
        print("Verdict: the bench does not reproduce both measured losses (stratified, uncertainty below random): "
              "ship random")
    elif winners:
        print(f"Verdict: the measured losses are reproduced; {', '.join(winners)} beats random beyond noise "
              "at every K")
    else:
        print("Verdict: the measured losses are reproduced, and no order beats random beyond noise: ship random")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
