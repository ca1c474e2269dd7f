"""Release 1.3.0: the 1.2.0 models (same weights and heads) with operating points chosen out of collection,
a shift alarm calibrated on the null, the scope check's figures, and a LiteRT runtime for every bundle.

Inputs are what the benches wrote (none of them reads the test split):
- bench/operating_point.py --json DIR/points_<arch>.json  (review floors, review share, triage figures)
- bench/shift_calibration.py --json FLOOR.json            (effect floor by folder size, null and LOCO rates)
- optional JSON files with the scope check's and the adaptation curve's figures (copied into the cards).
Then, once per bundle and after every choice is fixed, the test split is scored and only reported.
Components first (card, runtime, test figures), then combined, whose card records their final card digests.

    MPOX_TRIAGE_WEIGHTS_DIR=../shared/weights python bench/retune_release.py ../shared/data/manifest.csv \\
        --points /tmp/miss --shift-floor /tmp/miss/shift_floor.json --scope scope.json --adaptation adapt.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ORDER = ("mobilenetv2", "xception", "combined")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def floor_table(cal: dict) -> dict:
    """The card's effect-floor table from bench/shift_calibration.py: floors made non-increasing in n."""
    rows = sorted(cal["table"], key=lambda r: r["n"])
    ns, eff = [int(r["n"]) for r in rows], [float(r["floor"]) for r in rows]
    for i in range(len(eff) - 2, -1, -1):
        eff[i] = max(eff[i], eff[i + 1])
    return {"n": ns, "effect": [round(e, 5) for e in eff]}


def shift_figures(cal: dict, table: dict) -> dict:
    """Null and LOCO firing rates at the shipped floor (recomputed from the raw draws)."""
    from core.models.operating_point import wilson
    from core.triage.shift import effect_floor

    out = []
    for n in table["n"]:
        null = cal["raw_null"].get(str(n)) or cal["raw_null"].get(n) or []
        loco = cal["raw_loco"].get(str(n)) or cal["raw_loco"].get(n) or []
        f = effect_floor(n, table)
        kn = sum(1 for p, e in null if p < 0.05 and e > f)
        kl = sum(1 for p, e in loco if p < 0.05 and e > f)
        out.append({"n": n, "floor": f, "null_quiet": [len(null) - kn, len(null)],
                    "null_quiet_ci95": wilson(len(null) - kn, len(null)), "loco_fired": [kl, len(loco)],
                    "loco_fired_ci95": wilson(kl, len(loco))})
    return {"by_size": out, "draws": cal.get("draws"), "permutations": cal.get("permutations")}


def review_n(curve: dict | None, default: int = 100) -> int:
    """Photos to review before adapting: the smallest K whose mean ROC-AUC (best order, LOCO) is within 0.01
    of the largest K's; the default when no curve is given."""
    if not curve:
        return default
    order = curve.get("shipped_order")
    rows = [r for r in curve.get("rows", []) if isinstance(r, dict) and (not order or r.get("order") == order)]
    ks = sorted({int(k[2:]) for r in rows for k in r if k.startswith("K=") and int(k[2:]) > 0})
    if not ks:
        return default

    def mean_auc(k):
        vals = [r[f"K={k}"]["roc_auc"] for r in rows if isinstance(r.get(f"K={k}"), dict)]
        return float(np.mean(vals)) if vals else float("nan")
    best = mean_auc(ks[-1])
    return next((k for k in ks if mean_auc(k) >= best - 0.01), ks[-1])


def retune_card(card, pts: dict, table: dict, shift_fig: dict, scope: dict | None, curve: dict | None,
                version: str) -> None:
    from core.models.operating_point import OUT_OF_COLLECTION

    lo_old, hi = (float(b) for b in card.uncertain_band)
    thr = float(card.threshold)
    card.parent = {"name": card.name, "version": card.version, "sha256": card.model_sha256,
                   "card_sha256": card.card_sha256}
    card.version = version
    card.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    default_floor = min(float(pts["default_floor"]), thr)
    ooc_floor = min(float(pts["out_of_collection_floor"]), default_floor)
    card.uncertain_band = [default_floor, hi]
    n_review = review_n(curve)
    extra = dict(card.extra or {})
    extra["operating_points_method"] = {
        "rule": ("review floor (uncertain band's lower edge) = the highest with triage sensitivity >= 0.95 on "
                 "pooled out-of-fold predictions, leave-one-collection-out both directions AND cv5 "
                 f"({pts['recipe']['cv5_draws']} draws); out_of_collection: >= 0.95 in each LOCO direction alone, "
                 "plus the top review_share of the folder by rank; test never used"),
        "command": "python bench/operating_point.py MANIFEST --from-bundles models --draws 3",
        "recipe": pts["recipe"],
    }
    extra["operating_points"] = {
        "default": {"threshold": thr, "uncertain_band": [default_floor, hi],
                    "triage": {k: pts["default"][k] for k in pts["default"]},
                    "previous_release": pts.get("previous")},
        OUT_OF_COLLECTION: {"threshold": thr, "uncertain_band": [ooc_floor, hi],
                            "review_share": round(float(pts["review_share"]), 4), "review_n": n_review,
                            "triage": pts.get("out_of_collection_with_share") or pts["out_of_collection"]},
    }
    extra["shift_alarm"] = {"effect_floor": table, "measured": shift_fig,
                            "method": "mmd-rbf-permutation, alpha 0.05, effect floor by folder size (97.5th "
                                      "percentile of new-patient folders of the training collections), "
                                      "intersection-union over the pooled and per-collection references",
                            "command": "python bench/shift_calibration.py MANIFEST --draws 40"}
    card.extra = extra
    card.metrics = dict(card.metrics)
    card.metrics.pop("shift_alarm", None)
    if scope:
        card.metrics["scope_check"] = scope
    if curve:
        card.metrics["adaptation_curve"] = curve
    card.metrics["previous_test"] = card.metrics.pop("test", None)
    from core.models.heads import DEFAULT_C

    for proto in (card.metrics.get("protocols") or {}).values():  # 1.2.0 recorded C: null for the default C
        if isinstance(proto, dict) and isinstance(proto.get("recipe"), dict) and proto["recipe"].get("C") is None:
            proto["recipe"]["C"] = DEFAULT_C


def test_once(bundle, test) -> dict:
    """The test split, scored once through the engine at the card's (new) default point."""
    from core.learning.evaluation import evaluate_bundle, to_jsonable

    m = evaluate_bundle(bundle, test, n_bootstrap=1000)
    t = m["triage"]
    log(f"TEST (once) {bundle.card.name} {bundle.card.version}: ROC-AUC {m['roc_auc']:.3f} sens {m['sensitivity']:.3f} "
        f"spec {m['specificity']:.3f}; triage sens {t['triage_sensitivity']:.3f} {t['triage_sensitivity_ci95']} "
        f"triage spec {t['triage_specificity']:.3f} {t['triage_specificity_ci95']}")
    return to_jsonable({k: v for k, v in m.items() if k not in ("predictions", "errors")})


def main(argv=None) -> int:
    from core.models.bundle import load_bundle, read_card, write_card
    from core.learning.datasets import load_manifest_dataset
    from core.models.export import attach_light_runtime

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--models", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--version", default="1.3.0")
    ap.add_argument("--points", required=True, help="folder with points_<arch>.json from bench/operating_point.py")
    ap.add_argument("--shift-floor", required=True)
    ap.add_argument("--scope")
    ap.add_argument("--adaptation")
    args = ap.parse_args(argv)
    models = Path(args.models)
    test = load_manifest_dataset(args.manifest).subset("test")
    cal = json.loads(Path(args.shift_floor).read_text())
    scope = json.loads(Path(args.scope).read_text()) if args.scope else None
    curves = json.loads(Path(args.adaptation).read_text()) if args.adaptation else {}
    def attach(name):
        info = attach_light_runtime(models / name, [s.path for s in test.samples])
        log(f"{name}: runtime attached, max |dp| {info['agreement']['max_abs_diff_p']:.2e}")

    def has_runtime(name):  # a light runtime (backbone .tflite and/or numpy head), not 1.2.0's whole-model export
        return bool(((read_card(models / name).extra or {}).get("runtime") or {}).get("head"))

    # Resumable: a bundle already at the new version keeps its card; a step already done is not done again.
    for name in ORDER:
        card = read_card(models / name)
        if card.version != args.version:
            pts = json.loads((Path(args.points) / f"points_{name}.json").read_text())[name]
            table = floor_table(cal[name])
            retune_card(card, pts, table, shift_figures(cal[name], table), scope, curves.get(name), args.version)
            write_card(models / name, card)
        if name == "combined":  # record the 1.3.0 components (name, version, weights, final card digest)
            from core.models.combined import component_ref

            card = read_card(models / name)
            refs = [component_ref(models / r["name"], read_card(models / r["name"]), dim=r.get("dim"))
                    for r in card.extra["components"]]
            if refs != card.extra["components"]:
                card.extra = {**card.extra, "components": refs}
                write_card(models / name, card)
        if not has_runtime(name):
            attach(name)  # runtime first: the test is scored as users run it (LiteRT, each backbone once)
        if "triage" not in (read_card(models / name).metrics.get("test") or {}):
            bundle = load_bundle(models / name)
            card = read_card(models / name)
            card.metrics["test"] = test_once(bundle, test)
            write_card(models / name, card)
    from core.models.releases import release_line

    for name in ORDER:
        print(release_line(read_card(models / name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
