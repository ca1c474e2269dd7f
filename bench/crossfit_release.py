"""Release 1.4.0: cross-fitted heads (core.learning.crossfit) on the 1.3.0 LiteRT backbones, operating points chosen
again on their out-of-fold evidence, bundles without model.keras. Resumable at every step.

Steps (each skips what is already done; nothing but `test` reads the test split):
  evidence  cross-fit each head on the train+val embeddings (bench/release_embeddings.py's cache), its
            leave-one-collection-out evidence, the operating points (bench/operating_point.choose) and the
            1.3.0 head against the same evidence on val -> STAGE/evidence/<name>.npz and points_<name>.json
  build     write the 1.4.0 bundles into STAGE/models (backbone export copied unchanged, numpy head, ood.npz
            and embeddings.npz copied, no model.keras); components first, then combined
  test      score the test split once per bundle through the engine (as users run it) into its card
  seal      copy the staged bundles into the repository's models/ and print the core/models/releases.py lines

    nice -n 10 python bench/crossfit_release.py evidence ../shared/data/manifest.csv
    nice -n 10 python bench/crossfit_release.py build ../shared/data/manifest.csv
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
STAGE = Path("/work/wt/_cache/release")
ORDER = ("mobilenetv2", "xception", "combined")
COMPONENTS = ("mobilenetv2", "xception")
VERSION = "1.4.0"
TARGET = 0.95          # triage sensitivity the points aim at (core.models.operating_point.TARGET_TRIAGE_SENSITIVITY)
CALL_TARGET = 0.95     # sensitivity of the call threshold on the evidence (1.3.0: 0.90 + 0.05 margin on val)
BAND_LOGIT_WIDTH = 1.0  # the band's upper edge: the threshold's logit + 1 (as before)
MIN_SPECIFICITY = 0.70  # the specificity target: the bootstrap floor only where the nested check keeps it


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- data ---------------------------------------------------------------------------------------------------


def trainval(manifest: str):
    """The train+val samples of the manifest (never test), with labels, groups and sources."""
    from core.learning.datasets import load_manifest_dataset

    samples = [s for s in load_manifest_dataset(manifest).samples if s.split in ("train", "val")]
    return (samples, np.array([s.y for s in samples]), np.array([s.group for s in samples]),
            np.array([s.source for s in samples]), np.array([s.split for s in samples]))


def component_embeddings(arch: str, models: Path, samples, cache: Path) -> np.ndarray:
    """(N, V, D) embeddings through the 1.3.0 LiteRT backbone (bench/release_embeddings.py's cache)."""
    from bench.release_embeddings import cache_file, read_cache
    from core.models.bundle import read_card, runtime_info

    path = cache_file(cache, arch, runtime_info(read_card(models / arch))["sha256"])
    rows = read_cache(path)
    missing = [s.path for s in samples if s.file_hash() not in rows]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} photos not embedded yet; run bench/release_embeddings.py first")
    return np.stack([rows[s.file_hash()] for s in samples]).astype(np.float32)


def recipe_x(name: str, models: Path, samples, cache: Path) -> np.ndarray:
    """The recipe's training rows: a component's views, or the combined head's concatenated identity views."""
    if name != "combined":
        return component_embeddings(name, models, samples, cache)
    parts = [component_embeddings(c, models, samples, cache)[:, :1] for c in COMPONENTS]
    return np.concatenate(parts, axis=-1)


# -- evidence -----------------------------------------------------------------------------------------------


def previous_head_on_val(name: str, models: Path, x: np.ndarray, y: np.ndarray, split: np.ndarray,
                         oof_p: np.ndarray) -> dict:
    """The 1.3.0 head (fitted on train, temperature on val) on the val photos against the cross-fitted
    out-of-fold probabilities of the same photos: how far the shipped head's scale sat from the evidence's."""
    from core.models.bundle import read_card, runtime_info
    from core.models.calibration import apply_temperature
    from core.models.heads import LinearHead
    from core.models.operating_point import triage_report

    card = read_card(models / name)
    head = LinearHead.load_npz(models / name / runtime_info(card)["head"])
    val = split == "val"
    p_old = apply_temperature(head.logits(x[val][:, 0]), card.temperature)
    floor = float(card.uncertain_band[0])
    pos = y[val] == 1
    return {"n_val": int(val.sum()), "n_val_mpox": int(pos.sum()), "floor_1_3_0": floor,
            "median_p_mpox_1_3_0_head": float(np.median(p_old[pos])),
            "median_p_mpox_out_of_fold": float(np.median(oof_p[:, val][:, pos])),
            "p5_p_mpox_1_3_0_head": float(np.percentile(p_old[pos], 5)),
            "p5_p_mpox_out_of_fold": float(np.percentile(oof_p[:, val][:, pos], 5)),
            "triage_1_3_0_head_at_1_3_0_floor": triage_report(y[val], p_old, floor)}


def boot_floor_photos(y: np.ndarray, oof_p: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The cv5 floor's bootstrap distribution, resampling photos (each with all its draws' scores, so a photo
    scored in 3 draws is not counted as 3 independent photos)."""
    from core.models.operating_point import floor_for_sensitivity

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if (y[i] == 1).any():
            out.append(floor_for_sensitivity(np.tile(y[i], len(oof_p)), oof_p[:, i].ravel(), TARGET))
    return np.asarray(out)


def evidence_folds(name: str):
    """(y, loco folds, cv5 folds) of a bundle's cached cross-fitted evidence, as bench/operating_point.choose reads
    them, and the cached npz."""
    from core.models.calibration import apply_temperature

    ev = np.load(STAGE / "evidence" / f"{name}.npz")
    pts = json.loads((STAGE / "evidence" / f"points_{name}.json").read_text())[name]
    y = ev["y"]
    loco = [(n, None, ev[f"loco{i}_te"], ev[f"loco{i}_p"], t)
            for i, (n, t) in enumerate(pts["loco_temperatures"].items())]
    oof_p = apply_temperature(ev["oof_logits"], float(ev["temperature"]))
    cv = [(f"draw {d}", None, np.arange(len(y)), oof_p[d], float("nan")) for d in range(len(oof_p))]
    return y, loco, cv, ev, pts


def floor_rule(name: str) -> str:
    """"bootstrap_p5" when the nested check's held-out triage specificity at the bootstrap floor is >=
    MIN_SPECIFICITY with 95% confidence (its Wilson lower bound), else "point": the sensitivity margin is taken
    only where the specificity target keeps the same confidence (rule fixed before the test split was scored)."""
    js = STAGE / "evidence" / f"nested_{name}.json"
    if not js.is_file():
        raise SystemExit(f"{js}: run `nested` first (the floor rule depends on it)")
    spec_lo = json.loads(js.read_text())[name]["bootstrap_p5"]["triage_specificity_ci95"][0]
    return "bootstrap_p5" if spec_lo >= MIN_SPECIFICITY else "point"


def final_points(name: str) -> dict:
    """The operating points of the 1.4.0 card: bench/operating_point.choose on the cross-fitted evidence, with the
    cv5 floor at its bootstrap 5th percentile where floor_rule says so."""
    from bench.operating_point import choose

    y, loco, cv, _ev, pts = evidence_folds(name)
    rule = floor_rule(name)
    res = choose(y, loco, cv, previous_floor=pts.get("previous", {}).get("review_floor"),
                 cv_floor=pts["cv5_floor_bootstrap_p5"] if rule == "bootstrap_p5" else None)
    keep = ("cv5_floor_bootstrap_p5", "threshold", "threshold_reason", "temperature", "crossfit", "loco_temperatures",
            "previous_head_on_val", "recipe")
    return res | {k: pts[k] for k in keep} | {"floor_rule": rule, "point_floors": pts["floors"]}


def evidence(args) -> None:
    from bench.operating_point import choose
    from core.models.bundle import read_card
    from core.learning.crossfit import cross_fit, loco_evidence
    from core.learning.evaluation import choose_threshold

    samples, y, groups, sources, split = trainval(args.manifest)
    out = STAGE / "evidence"
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        npz, js = out / f"{name}.npz", out / f"points_{name}.json"
        if js.is_file() and not args.force:
            log(f"{name}: evidence already in {js}")
            continue
        t0 = time.monotonic()
        x = recipe_x(name, args.models, samples, args.embeddings)
        cf = cross_fit(x, y, groups, draws=args.draws,
                       progress=lambda d, n: log(f"{name}: cross-fit head {d}/{n}"))
        loco = loco_evidence(x, y, groups, sources, draws=args.loco_draws,
                             progress=lambda d, n: log(f"{name}: LOCO head {d}/{n}"))
        oof_p = cf.oof_probabilities()
        cv = [(f"draw {d}", None, np.arange(len(y)), oof_p[d], float("nan")) for d in range(len(oof_p))]
        previous = float(read_card(args.models / name).uncertain_band[0])
        res = choose(y, loco, cv, previous_floor=previous)
        yc, pc = np.tile(y, len(oof_p)), oof_p.ravel()
        res["cv5_floor_bootstrap_p5"] = float(np.percentile(boot_floor_photos(y, oof_p), 5))
        thr, reason = choose_threshold(yc, pc, CALL_TARGET)
        res["threshold"], res["threshold_reason"] = thr, reason.replace("the validation split",
                                                                        "the cross-fitted out-of-fold predictions")
        res["temperature"] = cf.temperature
        res["crossfit"] = cf.info | {"members": cf.members, "loco_draws": args.loco_draws}
        res["loco_temperatures"] = {n: t for n, _tr, _te, _p, t in loco}
        res["previous_head_on_val"] = previous_head_on_val(name, args.models, x, y, split, oof_p)
        res["recipe"] = {"head": "logistic", "C": cf.info["C"], "cv5_draws": args.draws,
                         "loco_draws": args.loco_draws, "test_split_used": False, "views": cf.info["views"],
                         "features": "1.3.0 LiteRT backbone embeddings (bench/release_embeddings.py)",
                         "calibration": "cross-fitted (core.learning.crossfit)"}
        np.savez(npz, w=cf.head.w, b=cf.head.b, C=cf.head.C, sqrt=cf.head.sqrt, temperature=cf.temperature,
                 oof_logits=cf.oof_logits, y=y,
                 **{f"loco{i}_p": p for i, (_n, _tr, _te, p, _t) in enumerate(loco)},
                 **{f"loco{i}_te": te for i, (_n, _tr, te, _p, _t) in enumerate(loco)})
        js.write_text(json.dumps({name: res}, indent=1, default=float))
        log(f"{name}: evidence in {time.monotonic() - t0:.0f} s; T {cf.temperature:.3f}, threshold {thr:.3f}, "
            f"floors {', '.join(f'{k} {v:.3f}' for k, v in res['floors'].items())}; default "
            f"{res['default_floor']:.3f}, out of collection {res['out_of_collection_floor']:.3f}, "
            f"cv5 bootstrap p5 {res['cv5_floor_bootstrap_p5']:.3f}, LOCO bootstrap p5 "
            f"{res['loco_floor_bootstrap_p5']:.3f}")


# -- nested check -------------------------------------------------------------------------------------------


def nested(args) -> None:
    """Does a floor chosen on the cross-fitted evidence hold for the mean head on photos of new groups? Outer
    group-aware 5-fold split of train+val (never test): on each outer-train part, cross-fit (inner cv5, --draws)
    and choose the floor on its out-of-fold evidence (the point estimate, and the bootstrap 5th percentile); then
    score the outer-held-out photos with the mean head. Pooled over the outer folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    from bench.operating_point import boot_floor
    from core.learning.crossfit import cross_fit
    from core.models.operating_point import floor_for_sensitivity, triage_report

    samples, y, groups, sources, split = trainval(args.manifest)
    out = STAGE / "evidence"
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        js = out / f"nested_{'control_' if args.control else ''}{name}.json"
        if js.is_file() and not args.force:
            log(f"{name}: nested check already in {js}")
            continue
        x = recipe_x(name, args.models, samples, args.embeddings)
        if args.control:
            nested_control(name, x, y, groups, sources, split, js)
            continue
        p_out = {"point": np.full(len(y), np.nan), "bootstrap_p5": np.full(len(y), np.nan)}
        floors = {"point": np.full(len(y), np.nan), "bootstrap_p5": np.full(len(y), np.nan)}
        outer = StratifiedGroupKFold(5, shuffle=True, random_state=100)
        for i, (tr, te) in enumerate(outer.split(np.zeros(len(y)), y, groups)):
            cf = cross_fit(x[tr], y[tr], groups[tr], draws=args.draws)
            yo, po = np.tile(y[tr], len(cf.oof_logits)), cf.oof_probabilities().ravel()
            f_point = floor_for_sensitivity(yo, po, TARGET)
            f_boot = float(np.percentile(boot_floor(yo, po, TARGET, n_boot=300), 5))
            p = cf.probabilities(x[te][:, 0])
            for key, f in (("point", f_point), ("bootstrap_p5", f_boot)):
                p_out[key][te], floors[key][te] = p, f
            log(f"{name}: outer fold {i + 1}/5: floors {f_point:.3f} / {f_boot:.3f}; held-out triage sens "
                f"{np.mean(p[y[te] == 1] >= f_point):.3f} / {np.mean(p[y[te] == 1] >= f_boot):.3f}")
        res = {}
        for key in p_out:
            review = p_out[key] >= floors[key]
            r = triage_report(y, review.astype(float), 0.5)
            r.pop("review_floor", None)
            res[key] = r
            log(f"{name}: nested, floor {key}: held-out triage sensitivity {r['triage_sensitivity']:.3f} "
                f"{[round(v, 3) for v in r['triage_sensitivity_ci95']]}, specificity {r['triage_specificity']:.3f} "
                f"{[round(v, 3) for v in r['triage_specificity_ci95']]} (n {r['n_mpox']}+{r['n_other']})")
        js.write_text(json.dumps({name: res, "draws": args.draws, "test_split_used": False}, indent=1, default=float))



def nested_control(name, x, y, groups, sources, split, js: Path) -> None:
    """The same nested check for the 1.3.0 recipe: head fitted on the outer-train part's train split, temperature on
    its val split, floor chosen on protocol_predictions' cv5 out-of-fold evidence (fold heads, inner temperatures)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from core.models.calibration import apply_temperature, fit_temperature
    from core.commands.evaluate import recipe
    from core.learning.evaluation import protocol_predictions
    from core.models.heads import fit_logistic
    from core.models.operating_point import floor_for_sensitivity, triage_report

    p_out, floors = np.full(len(y), np.nan), np.full(len(y), np.nan)
    outer = StratifiedGroupKFold(5, shuffle=True, random_state=100)
    for i, (tr, te) in enumerate(outer.split(np.zeros(len(y)), y, groups)):
        t_, v_ = tr[split[tr] == "train"], tr[split[tr] == "val"]
        head = fit_logistic(x[t_], y[t_])
        temperature = fit_temperature(head.logits(x[v_][:, 0]), y[v_])
        folds = protocol_predictions(x[tr], y[tr], groups[tr], sources[tr], "cv5", recipe("logistic", None), seed=0)
        yo = np.concatenate([y[tr][f[2]] for f in folds])
        po = np.concatenate([f[3] for f in folds])
        floors[te] = floor_for_sensitivity(yo, po, TARGET)
        p_out[te] = apply_temperature(head.logits(x[te][:, 0]), temperature)
        log(f"{name} (1.3.0 recipe): outer fold {i + 1}/5: floor {floors[te][0]:.3f}, T {temperature:.3f}; "
            f"held-out triage sens {np.mean(p_out[te][y[te] == 1] >= floors[te][0]):.3f}")
    r = triage_report(y, (p_out >= floors).astype(float), 0.5)
    r.pop("review_floor", None)
    log(f"{name} (1.3.0 recipe): nested held-out triage sensitivity {r['triage_sensitivity']:.3f} "
        f"{[round(v, 3) for v in r['triage_sensitivity_ci95']]}, specificity {r['triage_specificity']:.3f} "
        f"{[round(v, 3) for v in r['triage_specificity_ci95']]}")
    js.write_text(json.dumps({name: {"point": r}, "test_split_used": False}, indent=1, default=float))


WHERE = {"loco": "LOCO pooled", "cv5": "cv5 pooled"}


def fmt(r: dict) -> str:
    """'0.951 [0.920, 0.970]' for triage sensitivity and specificity of a triage report."""
    def one(k):
        lo, hi = r[f"{k}_ci95"]
        return f"{r[k]:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{one('triage_sensitivity')} | {one('triage_specificity')}"


def table(args) -> None:
    """The markdown rows of docs/operating_points.md's 1.4.0 tables, from the cached evidence and nested checks."""
    print("| bundle | point (review floor) | out-of-fold set | triage sensitivity | triage specificity |")
    print("|---|---|---|---|---|")
    for name in args.only.split(","):
        pts = final_points(name)
        for point, label in (("default", f"**1.4.0 default** ({pts['default_floor']:.3f})"),
                             ("out_of_collection_with_share",
                              f"1.4.0 under an alarm (floor {pts['out_of_collection_floor']:.3f}, top "
                              f"{pts['review_share']:.3f} by rank)")):
            for where, r in pts[point].items():
                if isinstance(r, dict) and "triage_sensitivity" in r:
                    print(f"| {name} | {label} | {WHERE.get(where, where.replace('loco ', 'LOCO '))} | "
                          f"{fmt(r)} |")
    print()
    print("| bundle | floor chosen on the outer-train evidence | held-out triage sensitivity | held-out triage "
          "specificity |")
    print("|---|---|---|---|")
    for name in args.only.split(","):
        for tag, what in (("", "cross-fitted"), ("control_", "1.3.0 recipe")):
            js = STAGE / "evidence" / f"nested_{tag}{name}.json"
            if js.is_file():
                for key, r in json.loads(js.read_text())[name].items():
                    print(f"| {name} | {what}, {key.replace('_', ' ')} | {fmt(r)} |")
    for name in args.only.split(","):
        pts = final_points(name)
        print(f"{name}: rule {pts['floor_rule']}; T {pts['temperature']:.3f}; threshold {pts['threshold']:.3f}; "
              f"floors {json.dumps({k: round(v, 3) for k, v in pts['floors'].items()})}; point floors "
              f"{json.dumps({k: round(v, 3) for k, v in pts['point_floors'].items()})}; cv5 bootstrap p5 "
              f"{pts['cv5_floor_bootstrap_p5']:.3f}; review share {pts['review_share']:.3f}; 1.3.0 head on val "
              f"{json.dumps({k: v for k, v in pts['previous_head_on_val'].items() if not isinstance(v, dict)})}")


# -- build --------------------------------------------------------------------------------------------------


def head_bytes(ev) -> tuple[bytes, str]:
    """The cross-fitted head as head.npz bytes and its file name head-<sha12>.npz."""
    import hashlib
    import io

    from core.models.heads import LinearHead

    buf = io.BytesIO()
    LinearHead(np.asarray(ev["w"], np.float64), float(ev["b"]), C=float(ev["C"]), sqrt=bool(ev["sqrt"])).save_npz(buf)
    data = buf.getvalue()
    return data, f"head-{hashlib.sha256(data).hexdigest()[:12]}.npz"


def out_of_fold_metrics(ev, threshold: float) -> dict:
    """Metrics of the cross-fitted out-of-fold probabilities (first draw: each photo once) at the call threshold."""
    from core.models.calibration import apply_temperature
    from core.learning.evaluation import to_jsonable
    from core.triage.metrics import evaluate_probabilities

    p = apply_temperature(ev["oof_logits"][0], float(ev["temperature"]))
    m = evaluate_probabilities(ev["y"], p, threshold, n_bootstrap=1000)
    m = {k: v for k, v in m.items() if k not in ("predictions", "errors", "reliability")}
    return to_jsonable(m | {"note": "out-of-fold predictions of the cross-fitted recipe on train+val (cv5, draw 0: "
                                    "each photo scored once, by a fold head that did not see it)"})


def new_card(name: str, parent_dir: Path, pts: dict, ev, args):
    """The 1.4.0 card from the 1.3.0 card: cross-fitted temperature, threshold, both operating points."""
    from bench.retune_release import retune_card, shift_figures, floor_table
    from core.models.bundle import ModelCard, read_card
    from core.models.calibration import logit, sigmoid

    card0 = read_card(parent_dir)
    card = ModelCard.from_dict(card0.to_dict())
    thr = float(pts["threshold"])
    card.threshold, card.threshold_reason, card.temperature = thr, pts["threshold_reason"], float(ev["temperature"])
    card.uncertain_band = [min(float(pts["default_floor"]), thr), float(sigmoid(float(logit(thr)) + BAND_LOGIT_WIDTH))]
    shift = (card0.extra or {}).get("shift_alarm") or {}
    table, measured = shift.get("effect_floor"), shift.get("measured")
    if args.shift_floor:  # the shift engineers' new calibration (bench/shift_calibration.py --json)
        cal = json.loads(Path(args.shift_floor).read_text())[name]
        table = floor_table(cal)
        measured = shift_figures(cal, table)
    scope = json.loads(Path(args.scope).read_text()) if args.scope else card0.metrics.get("scope_check")
    retune_card(card, pts, table, measured, scope, card0.metrics.get("adaptation_curve"), VERSION)
    if args.shift_floor is None:  # retune_card rewrites the method text; keep the parent's own
        card.extra["shift_alarm"] = shift
    card.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    card.metrics.pop("val", None)  # the 1.3.0 head's validation figures: val is training data now
    card.metrics.pop("val_through_bundle", None)
    card.metrics["out_of_fold"] = out_of_fold_metrics(ev, thr)
    card.metrics["calibration_check"] = pts["previous_head_on_val"]
    info = pts["crossfit"]
    card.training = dict(card.training)
    card.training["calibration"] = (
        f"cross-fitted (core.learning.crossfit): temperature fitted on the pooled out-of-fold logits of {info['members']} "
        f"fold heads (group-aware {info['n_splits']}-fold, {info['draws']} draws, train+val); the head is their "
        "mean; threshold and review floors chosen on the same out-of-fold probabilities")
    card.training["uncertain_band_rule"] = ("lower edge: the default review floor (extra.operating_points); upper "
                                            f"edge: calibrated logit {BAND_LOGIT_WIDTH:+g} from the threshold's")
    hyper = dict(card.training.get("hyperparameters") or {})
    hyper["head"] = {**(hyper.get("head") or {}), "cross_fit": info, "fitted_on": "train+val (cross-fitted)"}
    card.training["hyperparameters"] = hyper
    card.extra["operating_points_method"] = {
        "rule": ("review floor = the highest with triage sensitivity >= 0.95 on the cross-fitted out-of-fold "
                 "predictions, pooled leave-one-collection-out (the recipe cross-fitted inside each collection) AND "
                 f"pooled cv5 ({info['draws']} draws, the shipped head's own fold heads); out_of_collection: >= 0.95 "
                 "in each LOCO direction alone, plus the top review_share of the folder by rank; test never used"),
        "command": "python bench/crossfit_release.py evidence MANIFEST",
        "recipe": pts["recipe"],
        "bootstrap_p5_floors": {"cv5": pts.get("cv5_floor_bootstrap_p5"), "loco": pts.get("loco_floor_bootstrap_p5")},
        "floor_rule": {
            "used": pts["floor_rule"], "point_estimate_floors": pts["point_floors"],
            "rule": ("the cv5 floor is its bootstrap 5th percentile (photos resampled: 95% confidence of >= 0.95) when "
                     "the nested check (outer group 5-fold of train+val, bench/crossfit_release.py nested) keeps "
                     f"held-out triage specificity >= {MIN_SPECIFICITY} there with 95% confidence (Wilson lower "
                     "bound); else the point estimate"),
        },
    }
    card.app_version = __import__("core").__version__
    return card0, card


def light_runtime(card0, head_name: str, head_data: bytes, components=None) -> dict:
    """The card's runtime record: the parent's backbone export (unchanged) or the components', and the numpy head."""
    import hashlib

    from core.models.bundle import RUNTIME_BACKBONE, RUNTIME_HEAD, runtime_info
    from core.records import utc_now

    sha = hashlib.sha256(head_data).hexdigest()
    rec = {"head": head_name, "head_sha256": sha, "model_sha256": sha, "created": utc_now()}
    if components is not None:
        return {"format": "numpy", "kind": RUNTIME_HEAD, **rec, "components": components}
    parent = runtime_info(card0)
    return {"format": "tflite", "kind": RUNTIME_BACKBONE, "file": parent["file"], "sha256": parent["sha256"], **rec,
            "outputs": parent.get("outputs", {}), "head_features": parent.get("head_features", "signed square root")}


def check_photos(manifest: str, n: int, sizes: tuple[int, ...]):
    """n val photos (never test) decoded as the engine decodes them, per input size."""
    from core.photos.preprocess import load_model_input

    samples, *_rest, split = trainval(manifest)
    val = [s for s, sp in zip(samples, split) if sp == "val"]
    pick = val[:: max(1, len(val) // n)][:n]
    batches = {size: np.stack([load_model_input(s.path, size) for s in pick]) for size in sizes}
    return batches if len(sizes) > 1 else batches[sizes[0]], len(pick)


def record_agreement(out: Path, manifest: str, n: int) -> None:
    """Check the LiteRT backbone + numpy head against the Keras model rebuilt from the ImageNet weights and the head
    (core.models.bundle (rebuild_keras_model)) on n val photos; the figures go into the card's runtime record."""
    from core.models.bundle import load_bundle, read_card, runtime_info, write_card
    from core.models.export import check_agreement

    fast = load_bundle(out)
    keras = load_bundle(out, runtime="keras")
    images, k = check_photos(manifest, n, tuple(fast.input_sizes))
    report = check_agreement(keras, fast.forward, images, what=f"the LiteRT runtime of {fast.card.display_name}")
    card = read_card(out)
    info = runtime_info(card)
    info["agreement"] = report | {"reference": "the Keras model rebuilt from the local ImageNet weights (fingerprint "
                                               "checked) and this head (core.models.bundle (rebuild_keras_model))"}
    info["check_images"] = f"{k} val photos of the manifest (never test)"
    card.extra = {**card.extra, "runtime": info}
    write_card(out, card)
    log(f"{card.display_name}: LiteRT vs rebuilt Keras on {k} val photos: max |dp| {report['max_abs_diff_p']:.2e}")


def build(args) -> None:
    from core.models.bundle import BundleError, read_card, runtime_info, save_bundle, verify_bundle
    from core.models.combined import component_ref, save_combined
    from core.learning.features import EMBEDDINGS_FILE
    from core.models.bundle import OOD_FILE

    stage = STAGE / "models"
    stage.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        out = stage / name
        if (out / "model_card.json").is_file():
            try:
                card = verify_bundle(out)
            except BundleError as exc:
                raise SystemExit(f"{out}: a staged bundle that does not verify ({exc}); move it away and rerun")
            if card.version == VERSION and runtime_info(card).get("agreement"):
                log(f"{name}: {VERSION} already staged in {out}")
                continue
        else:
            parent_dir = args.models / name
            pts = final_points(name)
            ev = np.load(STAGE / "evidence" / f"{name}.npz")
            card0, card = new_card(name, parent_dir, pts, ev, args)
            data, head_name = head_bytes(ev)
            files = {head_name: data, OOD_FILE: parent_dir / OOD_FILE, EMBEDDINGS_FILE: parent_dir / EMBEDDINGS_FILE}
            if name == "combined":
                refs = []
                for ref in card0.extra["components"]:
                    comp = stage / ref["name"]
                    refs.append(component_ref(comp, read_card(comp), dim=ref.get("dim")))
                runs = [{"name": r["name"], "version": r["version"], "sha256": r["sha256"],
                         "runtime_sha256": runtime_info(read_card(stage / r["name"])).get("sha256", "")} for r in refs]
                card.extra = {**card.extra, "runtime": light_runtime(card0, head_name, data, runs)}
                save_combined(None, card, out, refs, extra_files=files)
            else:
                backbone = runtime_info(card0)["file"]
                files[backbone] = parent_dir / backbone
                card.extra = {**card.extra, "runtime": light_runtime(card0, head_name, data)}
                save_bundle(None, card, out, extra_files=files)
            log(f"{name}: {VERSION} staged in {out} (files {', '.join(sorted(read_card(out).files))})")
        record_agreement(out, args.manifest, args.check_photos)


# -- test (once) and seal -----------------------------------------------------------------------------------


def test(args) -> None:
    """Score the test split once per staged bundle (through the engine, LiteRT, as users run it) into its card:
    components first, then combined, which records their final cards first."""
    from bench.retune_release import test_once
    from core.models.bundle import load_bundle, read_card, write_card
    from core.models.combined import record_component_cards
    from core.learning.datasets import load_manifest_dataset

    split = load_manifest_dataset(args.manifest).subset("test")
    for name in args.only.split(","):
        out = STAGE / "models" / name
        if name == "combined":
            record_component_cards(out)
        card = read_card(out)
        if "triage" in (card.metrics.get("test") or {}):
            log(f"{name}: test already scored ({card.metrics['test']['triage']['triage_sensitivity']:.3f})")
            continue
        bundle = load_bundle(out)
        card.metrics["test"] = test_once(bundle, split)
        write_card(out, card)


def seal(args) -> None:
    """Put the staged bundles into the repository's models/ (files of the parent not in the new card removed) and
    print the core/models/releases.py lines."""
    from core.models.bundle import CARD_FILE, read_card, verify_bundle
    from core.models.releases import release_line

    lines = []
    for name in ORDER:
        src, dst = STAGE / "models" / name, ROOT / "models" / name
        card = verify_bundle(src)
        if card.version != VERSION or "triage" not in (card.metrics.get("test") or {}):
            raise SystemExit(f"{src}: not a finished {VERSION} bundle (version {card.version}, test scored: "
                             f"{'triage' in (card.metrics.get('test') or {})}); run build and test first")
        keep = set(card.files) | {CARD_FILE}
        for old in dst.iterdir():
            if old.name not in keep:
                old.unlink()
        for f in sorted(keep):
            if not (dst / f).is_file() or (dst / f).read_bytes() != (src / f).read_bytes():
                shutil.copyfile(src / f, dst / f)
        lines.append(release_line(read_card(dst)))
        log(f"{name}: sealed into {dst}")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=("evidence", "nested", "table", "build", "test", "seal"))
    ap.add_argument("manifest")
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="the 1.3.0 bundles (parents)")
    ap.add_argument("--embeddings", type=Path, default=STAGE / "embeddings")
    ap.add_argument("--only", default=",".join(ORDER))
    ap.add_argument("--draws", type=int, default=3, help="cv5 repetitions of the cross-fit")
    ap.add_argument("--loco-draws", type=int, default=1, help="cv5 repetitions inside each LOCO collection")
    ap.add_argument("--force", action="store_true", help="recompute evidence already cached")
    ap.add_argument("--control", action="store_true", help="nested: check the 1.3.0 recipe instead")
    ap.add_argument("--shift-floor", help="bench/shift_calibration.py --json output (default: the 1.3.0 cards' table)")
    ap.add_argument("--scope", help="the scope check's figures as JSON (default: the 1.3.0 cards')")
    ap.add_argument("--check-photos", type=int, default=32, help="val photos for the LiteRT/Keras agreement check")
    args = ap.parse_args(argv)
    steps = {"evidence": evidence, "nested": nested, "table": table, "build": build, "test": test, "seal": seal}
    steps[args.step](args)
    return 0


if __name__ == "__main__":
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPOX_TRIAGE_WEIGHTS_DIR", str(ROOT.parent / "shared" / "weights"))
    raise SystemExit(main())
