"""Ablation of the training choices on the shared manifest's fixed group-aware split: what each one does on `val`.

    MPOX_TRIAGE_CACHE=/tmp/mtcache MPOX_TRIAGE_WEIGHTS_DIR=../shared/weights python bench/ablation.py --json out.json
    python bench/ablation.py --parts views,options --seeds 0      # a quicker subset
    python bench/ablation.py --limit 24 --cache-dir /tmp/abl-smoke  # smoke test on a few images

Everything goes through the engine's own functions: core.learning.features.FeatureExtractor.embed (with the
on-disk cache), core.learning.training.train_head, core.models.calibration (temperature scaling on val),
core.learning.evaluation.choose_threshold (val sensitivity >= 0.95, as shipped) and evaluate_probabilities. Each row
is scored as train_model scores a bundle: temperature fitted on val, the threshold chosen on the
calibrated val probabilities, then test scored once at that temperature and threshold. Choices are
read from the val columns; test is printed only as a secondary column and never selects anything.

Parts (--parts):
  views       train views for the head: identity; +hflip; +aug#0..3; +augz#0..3 (the shipped set)
  options     class weighting off, label smoothing 0.1, head learning rate 1e-4 (the study's)
  tta         test-time augmentation: mean of identity and hflip probabilities (same heads)
  calibration temperature scaling of the shipped head: NLL and ECE before/after, the ECE a perfectly
              calibrated model would still show on this many images, bootstrap intervals on val
  protocol    the study's image-level random 60/10/30 split vs the fixed group-aware split
  resolution  MobileNetV2 at 299 px vs 224 (identity+hflip views; computes 299-px embeddings once)
  xception    Xception rows, only from embeddings already in the cache (never computed here: 0.5 s
              per image view on the 2-core dev machine)
  layers      MobileNetV2 feature layer (the layer pooled into the embedding), shipped views: the val
              columns plus the leave-one-collection-out estimate of core.learning.training.transfer_estimate
              (head trained on one collection's train photos, temperature and threshold on its val,
              scored on the other collection's train and val photos), the closest measure these
              photos allow of how a choice transfers to photos from elsewhere

Head fits are repeated over --seeds (default 0,1,2) and averaged: with 162 val images one image is
0.6 points of accuracy, so single-seed differences below about a point are noise. About 7 minutes
with a warm cache on the 2-core dev machine; results and reading in docs/ablation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

PARTS = ("views", "options", "tta", "calibration", "protocol", "resolution", "xception", "layers")
# Candidate MobileNetV2 feature layers for the `layers` part ("top" = out_relu, the whole network).
LAYERS = ("top", "block_16_project_BN", "block_16_expand_relu", "block_15_expand_relu", "block_14_expand_relu")
AUG = [f"aug#{k}" for k in range(4)]
AUGZ = [f"augz#{k}" for k in range(4)]
SHIPPED_VIEWS = ["identity", "hflip"] + AUG + AUGZ
# The quick preset's head settings (core.learning.training.train_model): the shipped recipe.
SHIPPED_HEAD = {"lr": 1e-3, "class_weight": True, "label_smoothing": 0.0, "dropout": 0.2, "patience": 5,
                "epochs": 200, "batch_size": 32}
# The shipped bundles choose the highest threshold with val sensitivity >= 0.90 + a 0.05 margin
# (TrainConfig.min_sensitivity + sensitivity_margin in their model cards); --min-sensitivity changes it.
MIN_SENSITIVITY = 0.95


# Shifted copies of the val images, scored with the same head, temperature and threshold: a proxy for
# photos unlike the tight training crops (val itself is tight crops from the same collections, so it
# cannot show what augmentation buys on whole photos). Instance #9 is never a training view.
STRESS = {"zoom-out": "zoomout@0.5#9", "aug": "aug#9"}


@dataclass
class Split:
    """Embeddings and labels of one protocol: train (N, V, D) under `views`; val (M, 2 + S, D) under
    identity, hflip and the stress views; test (K, 2, D) under identity and hflip."""
    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    x_te: np.ndarray
    y_te: np.ndarray
    views: list[str]
    stress: list[str] = field(default_factory=list)  # names (STRESS keys) of val columns 2, 3, ...
    has_flip: bool = True

    def train_views(self, views: list[str]) -> np.ndarray:
        return self.x_tr[:, [self.views.index(v) for v in views]]


@dataclass
class Row:
    part: str
    setting: str
    val: dict = field(default_factory=dict)     # metric -> mean over seeds
    test: dict = field(default_factory=dict)
    spread: dict = field(default_factory=dict)  # metric -> sd over seeds
    seeds: int = 0
    seconds: float = 0.0
    note: str = ""
    transfer: dict = field(default_factory=dict)  # "A -> B" -> mean ROC-AUC, sens, spec on B (layers part)


# ---------------------------------------------------------------------------------------------
# Scoring (the same steps as core.learning.training.train_model after the head is fitted)


def score(z_va: np.ndarray, y_va: np.ndarray, z_te: np.ndarray | None, y_te: np.ndarray | None,
          target: float = MIN_SENSITIVITY) -> tuple[dict, dict]:
    """Temperature on val, threshold for val sensitivity >= target, then val and test metrics at both."""
    from core.models.calibration import apply_temperature, fit_temperature, sigmoid
    from core.learning.evaluation import choose_threshold
    from core.triage.metrics import evaluate_probabilities, expected_calibration_error

    t = fit_temperature(z_va, y_va)
    p_va = apply_temperature(z_va, t)
    thr, _ = choose_threshold(y_va, p_va, target)
    mv = evaluate_probabilities(y_va, p_va, thr, n_bootstrap=0)
    val = {k: mv[k] for k in ("accuracy", "roc_auc", "ece", "sensitivity", "specificity")}
    val.update(ece_raw=expected_calibration_error(y_va, sigmoid(z_va)), temperature=t, threshold=thr,
               accuracy_at_half=float(np.mean((p_va >= 0.5) == y_va)))
    test: dict = {}
    if z_te is not None and len(z_te):
        p_te = apply_temperature(z_te, t)
        mt = evaluate_probabilities(y_te, p_te, thr, n_bootstrap=0)
        test = {k: mt[k] for k in ("accuracy", "roc_auc", "ece", "sensitivity", "specificity")}
        test.update(ece_raw=expected_calibration_error(y_te, sigmoid(z_te)),
                    accuracy_at_half=float(np.mean((p_te >= 0.5) == y_te)))
    return val, test


def tta_logit(z: np.ndarray) -> np.ndarray:
    """Test-time augmentation: the mean of the identity and hflip probabilities, back on the logit scale."""
    from core.models.calibration import logit, sigmoid

    return logit(sigmoid(z).mean(axis=1))


def fit_heads(x_tr: np.ndarray, y_tr: np.ndarray, sp: Split, seeds: list[int], **head) -> list[tuple]:
    """One head per seed (core.learning.training.train_head, early stopping on val identity); per seed the raw
    logits of val and test under identity and hflip, shape (M, 2)."""
    from core.learning.training import train_head

    kw = {**SHIPPED_HEAD, **head}
    out = []
    for seed in seeds:
        model, _, _ = train_head(x_tr, sp.y_tr, sp.x_va[:, 0], sp.y_va, seed=seed, **kw)

        def logits(x: np.ndarray) -> np.ndarray:
            flat = x.reshape(-1, x.shape[-1]).astype(np.float32)
            return np.asarray(model(flat, training=False), dtype=np.float64).reshape(x.shape[:2])

        out.append((logits(sp.x_va), logits(sp.x_te) if len(sp.x_te) else np.zeros((0, 2))))
        del model
    return out


def summarise(part: str, setting: str, fits: list[tuple], sp: Split, tta: bool = False, seconds: float = 0.0,
              note: str = "", target: float = MIN_SENSITIVITY) -> Row:
    from core.models.calibration import apply_temperature
    from core.triage.metrics import evaluate_probabilities

    if tta and not sp.has_flip:
        raise ValueError("TTA needs hflip embeddings of val and test")
    vals, tests = [], []
    for z_va, z_te in fits:
        if tta:
            v, t = score(tta_logit(z_va[:, :2]), sp.y_va, tta_logit(z_te) if len(z_te) else None, sp.y_te, target)
        else:
            v, t = score(z_va[:, 0], sp.y_va, z_te[:, 0] if len(z_te) else None, sp.y_te, target)
            for j, name in enumerate(sp.stress, start=2):
                m = evaluate_probabilities(sp.y_va, apply_temperature(z_va[:, j], v["temperature"]), v["threshold"],
                                           n_bootstrap=0)
                v[f"{name}_roc_auc"], v[f"{name}_sensitivity"] = m["roc_auc"], m["sensitivity"]
        vals.append(v)
        tests.append(t)
    row = Row(part, setting, seeds=len(fits), seconds=seconds, note=note)
    row.val = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
    row.spread = {k: float(np.std([v[k] for v in vals])) for k in ("accuracy", "roc_auc")}
    if tests[0]:
        row.test = {k: float(np.mean([t[k] for t in tests])) for k in tests[0]}
    return row


def calibration_report(fits: list[tuple], sp: Split, target: float, n_draws: int = 1000) -> str:
    """Temperature scaling of one setting's heads, seed by seed, as a markdown table plus noise figures."""
    from core.models.calibration import apply_temperature, binary_nll, fit_temperature, sigmoid
    from core.learning.evaluation import choose_threshold
    from core.triage.metrics import evaluate_probabilities, expected_calibration_error

    lines = ["\n### calibration (temperature scaling of the shipped head, per seed)\n",
             "| seed | T | val NLL raw -> T-scaled | val ECE raw -> T-scaled | test ECE raw -> T-scaled | "
             "val ECE of a perfectly calibrated model (mean, 95th pct) |",
             "|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for i, (z_va, z_te) in enumerate(fits):
        zv, zt = z_va[:, 0], z_te[:, 0]
        t = fit_temperature(zv, sp.y_va)
        p = apply_temperature(zv, t)
        # Labels drawn from the calibrated probabilities themselves: what 15-bin ECE shows by chance alone.
        floor = [expected_calibration_error((rng.random(len(p)) < p).astype(int), p) for _ in range(n_draws)]
        lines.append(
            f"| {i} | {t:.2f} | {binary_nll(zv, sp.y_va):.3f} -> {binary_nll(zv, sp.y_va, t):.3f} | "
            f"{expected_calibration_error(sp.y_va, sigmoid(zv)):.3f} -> {expected_calibration_error(sp.y_va, p):.3f} | "
            f"{expected_calibration_error(sp.y_te, sigmoid(zt)):.3f} -> "
            f"{expected_calibration_error(sp.y_te, apply_temperature(zt, t)):.3f} | "
            f"{np.mean(floor):.3f}, {np.percentile(floor, 95):.3f} |")
    z_va = fits[0][0][:, 0]
    t = fit_temperature(z_va, sp.y_va)
    p = apply_temperature(z_va, t)
    thr, _ = choose_threshold(sp.y_va, p, target)
    m = evaluate_probabilities(sp.y_va, p, thr, n_bootstrap=1000, seed=0)
    ci = m["ci95"]
    lines.append(f"\nVal noise scale (seed 0, bootstrap 95% intervals over the {len(p)} val images): accuracy "
                 f"{m['accuracy']:.3f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}], ROC-AUC "
                 f"{m['roc_auc']:.3f} [{ci['roc_auc'][0]:.3f}, {ci['roc_auc'][1]:.3f}], ECE {m['ece']:.3f} "
                 f"[{ci['ece'][0]:.3f}, {ci['ece'][1]:.3f}].")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Data


def subsample(ds, limit: int, seed: int = 0):
    """Up to `limit` images per split, half per class (smoke tests)."""
    from core.learning.datasets import Dataset

    rng = np.random.default_rng(seed)
    keep = []
    for split in ("train", "val", "test"):
        for lab in ("mpox", "not_mpox"):
            idx = [i for i, s in enumerate(ds.samples) if s.split == split and s.label == lab]
            keep += list(rng.permutation(idx)[: max(2, limit // 2)])
    return Dataset([ds.samples[i] for i in sorted(keep)], ds.root, dict(ds.split_info))


def embed_split(fx, ds, train_views: list[str], flip: bool = True, stress: bool = True, test: bool = True,
                progress=None) -> Split:
    """Embeddings of one split (computed once, then read from the cache); `test` False leaves test empty."""
    from core.learning.datasets import Dataset

    tr, va = ds.subset("train"), ds.subset("val")
    te = ds.subset("test") if test else Dataset([])
    eval_views = ["identity", "hflip"] if flip else ["identity"]
    x_tr = fx.embed(tr, train_views, progress)
    x_va = fx.embed(va, eval_views + (list(STRESS.values()) if stress else []), progress)
    x_te = fx.embed(te, eval_views, progress) if len(te) else np.zeros((0, len(eval_views), fx.dim), np.float32)
    if not flip:  # keep the column layout; TTA rows are refused for such a split (has_flip False)
        x_va = np.concatenate([x_va[:, :1], x_va], axis=1)
        x_te = np.concatenate([x_te[:, :1], x_te], axis=1)
    return Split(x_tr, tr.labels, x_va, va.labels, x_te, te.labels, list(train_views),
                 list(STRESS) if stress else [], flip)


def transfer_auc(fx, ds, views: list[str], seeds: list[int], progress=None,
                 target: float = MIN_SENSITIVITY) -> dict[str, dict[str, float]]:
    """Leave-one-collection-out with the engine's own estimate (core.learning.training.transfer_estimate, as in a
    model card), with the shipped head settings; means over head seeds."""
    from core.learning.training import TrainConfig, transfer_estimate

    tr, va = ds.subset("train"), ds.subset("val")
    x_tr = fx.embed(tr, views, progress)
    x_va = fx.embed(va, ["identity"], progress)[:, 0]
    runs = [transfer_estimate(x_tr, tr.labels, [s.source for s in tr.samples], x_va, va.labels,
                              [s.source for s in va.samples], views.index("identity"),
                              TrainConfig("mobilenetv2", seed=seed, min_sensitivity=target))
            for seed in seeds]
    keys = [k for k in runs[0] if k != "method"]
    return {k: {m: float(np.mean([r[k][m] for r in runs])) for m in ("roc_auc", "sensitivity", "specificity")}
            for k in keys}


def cached_views(fx, samples, views: list[str]) -> bool:
    """Whether every (image, view) embedding is already in fx's cache (reads the cache, computes nothing)."""
    from core.learning.features import _key  # the cache's own key names, so the check matches embed() exactly

    for s in samples:
        entry = fx._read(s.file_hash())
        if any(_key(v) not in entry for v in views):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Output


def fmt(x: float | None, nd: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


HEADER = ("| setting | val acc | val ROC-AUC | val ECE raw -> T-scaled (T) | val sens / spec | "
          "val zoom-out: ROC-AUC / sens | val aug: ROC-AUC / sens | "
          "test acc | test ROC-AUC | test sens | test ECE |\n|---|---|---|---|---|---|---|---|---|---|---|")


def table_row(r: Row) -> str:
    v, t, sd = r.val, r.test, r.spread
    pm = (lambda k: f" ±{sd[k]:.3f}" if r.seeds > 1 else "")
    return (f"| {r.setting} | {fmt(v['accuracy'])}{pm('accuracy')} | {fmt(v['roc_auc'])}{pm('roc_auc')} | "
            f"{fmt(v['ece_raw'])} -> {fmt(v['ece'])} ({v['temperature']:.2f}) | "
            f"{fmt(v['sensitivity'])} / {fmt(v['specificity'])} | "
            + " | ".join(f"{fmt(v.get(f'{n}_roc_auc'))} / {fmt(v.get(f'{n}_sensitivity'))}"
                         if f"{n}_roc_auc" in v else "" for n in STRESS)
            + f" | {fmt(t.get('accuracy'))} | "
            f"{fmt(t.get('roc_auc'))} | {fmt(t.get('sensitivity'))} | {fmt(t.get('ece'))} |")


def print_table(rows: list[Row]) -> None:
    part = None
    for r in rows:
        if r.part != part:
            part = r.part
            print(f"\n### {part}\n")
            print(HEADER)
        print(table_row(r))
    notes = [r for r in rows if r.note]
    if notes:
        print()
        for r in notes:
            print(f"- {r.setting}: {r.note}")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", default=str(benchlib.SHARED / "data" / "manifest.csv"))
    ap.add_argument("--cache-dir", default=None, help="feature cache (default $MPOX_TRIAGE_CACHE)")
    ap.add_argument("--weights-dir", default=os.environ.get("MPOX_TRIAGE_WEIGHTS_DIR",
                                                           str(benchlib.SHARED / "weights")))
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--seeds", default="0,1,2", help="head seeds averaged per row")
    ap.add_argument("--min-sensitivity", type=float, default=MIN_SENSITIVITY,
                    help="threshold: the highest with at least this val sensitivity (shipped: 0.90 + 0.05 margin)")
    ap.add_argument("--limit", type=int, default=0, help="use only this many images per split (smoke test)")
    ap.add_argument("--json", default=None, help="also write every row as JSON here")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    from core.learning.datasets import Dataset, load_manifest_dataset, split_dataset
    from core.learning.features import FeatureExtractor

    summarise_at = partial(summarise, target=args.min_sensitivity)

    started = time.perf_counter()
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    def progress(p) -> None:  # core.progress.Progress
        if p.stage == "features" and (p.done == 0 or p.done == p.total or p.done % 512 == 0):
            log(f"  [{time.perf_counter() - started:6.0f} s] {p.message} {p.done}/{p.total}")

    ds = load_manifest_dataset(args.manifest)
    if args.limit:
        ds = subsample(ds, args.limit)
    counts = ds.counts()
    print(f"# Ablation on {args.manifest} (fixed split: "
          + ", ".join(f"{k} {sum(v.values())} ({v.get('mpox', 0)} mpox)" for k, v in sorted(counts.items()))
          + f"); seeds {seeds}; threshold for val sensitivity >= {args.min_sensitivity}")
    print(f"# {benchlib.machine_line()}")

    rows: list[Row] = []
    fx = FeatureExtractor("mobilenetv2", weights_dir=args.weights_dir, cache_dir=args.cache_dir)
    shipped_parts = {"views", "options", "tta", "calibration", "protocol"}
    need_train = SHIPPED_VIEWS if shipped_parts & set(parts) else ["identity", "hflip"]
    log(f"MobileNetV2 224 embeddings ({fx.cache_dir})")
    sp = embed_split(fx, ds, need_train, progress=progress)

    memo: dict[tuple, tuple[list, float]] = {}

    def run(part: str, setting: str, views: list[str], split: Split = sp, tta: bool = False, note: str = "",
            **head) -> Row:
        """Fit (or reuse) the heads of one setting and add its row."""
        key = (id(split), tuple(views), tuple(sorted(head.items())))
        if key not in memo:
            t0 = time.perf_counter()
            memo[key] = (fit_heads(split.train_views(views), split.y_tr, split, seeds, **head),
                         time.perf_counter() - t0)
        fits, seconds = memo[key]
        row = summarise_at(part, setting, fits, split, tta=tta, seconds=seconds, note=note)
        rows.append(row)
        log(f"  [{time.perf_counter() - started:6.0f} s] {part}: {setting}: val acc {row.val['accuracy']:.3f} "
            f"ROC-AUC {row.val['roc_auc']:.3f} ({seconds:.0f} s for {len(seeds)} fits)")
        return row

    shipped = "shipped: 10 views, class weights, no smoothing, head lr 1e-3"
    if "views" in parts:
        run("views", "identity", ["identity"])
        run("views", "identity + hflip", ["identity", "hflip"])
        run("views", "identity + hflip + aug#0..3", ["identity", "hflip"] + AUG)
        run("views", "identity + hflip + augz#0..3", ["identity", "hflip"] + AUGZ)
        run("views", "identity + hflip + aug#0..3 + augz#0..3 (shipped)", SHIPPED_VIEWS)
    if "options" in parts:
        run("options", shipped, SHIPPED_VIEWS)
        run("options", "without class weighting", SHIPPED_VIEWS, class_weight=False)
        run("options", "label smoothing 0.1", SHIPPED_VIEWS, label_smoothing=0.1)
        run("options", "head lr 1e-4 (the study's)", SHIPPED_VIEWS, lr=1e-4)
        run("options", "study phase 1 on features: identity only, lr 1e-4", ["identity"], lr=1e-4)
    if "tta" in parts:
        run("tta", "shipped head, plain image", SHIPPED_VIEWS)
        run("tta", "shipped head, TTA: mean p(identity, hflip)", SHIPPED_VIEWS, tta=True)
        run("tta", "identity-only head, plain image", ["identity"])
        run("tta", "identity-only head, TTA", ["identity"], tta=True)

    if "calibration" in parts:
        run("calibration", shipped, SHIPPED_VIEWS)  # its fits are reused below
        calib = calibration_report(memo[(id(sp), tuple(SHIPPED_VIEWS), ())][0], sp, args.min_sensitivity)

    if "protocol" in parts:
        # The study's image-level random split of the same 973 images: patients and near-duplicate crops
        # cross train/val/test, so its figures are optimistic. Its val is 10% (~97 images).
        unsplit = Dataset([replace(s, split="") for s in ds.samples], ds.root, {})
        study = split_dataset(unsplit, "study", seed=0)
        log("study-protocol embeddings (shipped views for its train images)")
        sps = embed_split(fx, study, SHIPPED_VIEWS, progress=progress)
        run("protocol", "group-aware fixed split (manifest), " + shipped, SHIPPED_VIEWS)
        run("protocol", "study protocol (image-level random 60/10/30, seed 0), same recipe", SHIPPED_VIEWS,
            split=sps)
        run("protocol", "study protocol, study phase-1 head (identity, lr 1e-4)", ["identity"], split=sps, lr=1e-4)
        for r in rows:
            if r.part == "protocol":  # the study reported accuracy at p >= 0.5, not at a sensitivity target
                r.note = (f"accuracy at calibrated p >= 0.5: val {r.val['accuracy_at_half']:.3f}, "
                          f"test {r.test['accuracy_at_half']:.3f}")

    if "resolution" in parts:
        fx299 = FeatureExtractor("mobilenetv2", input_size=299, weights_dir=args.weights_dir,
                                 cache_dir=args.cache_dir)
        log(f"MobileNetV2 299 embeddings ({fx299.cache_dir})")
        sp299 = embed_split(fx299, ds, ["identity", "hflip"], progress=progress)
        run("resolution", "MobileNetV2 224, identity + hflip", ["identity", "hflip"])
        run("resolution", "MobileNetV2 299, identity + hflip", ["identity", "hflip"], split=sp299)
        del fx299

    if "xception" in parts:
        for size in (299, 224):
            fxx = FeatureExtractor("xception", input_size=size, weights_dir=args.weights_dir,
                                   cache_dir=args.cache_dir)
            tr, va, te = ds.subset("train"), ds.subset("val"), ds.subset("test")
            if not cached_views(fxx, va.samples + tr.samples, ["identity"]):
                log(f"Xception {size}: train/val identity embeddings not all cached in {fxx.cache_dir}; skipped")
                continue
            with_test = cached_views(fxx, te.samples, ["identity"])
            flips = cached_views(fxx, va.samples + (te.samples if with_test else []), ["hflip"])
            train_views = [v for v in ("identity", "hflip", "aug#0", "augz#0")
                           if cached_views(fxx, tr.samples, [v])]
            stress = cached_views(fxx, va.samples, list(STRESS.values()))
            log(f"Xception {size}: cached train views {train_views}; test {'cached' if with_test else 'not cached'}, "
                f"val hflip {'cached' if flips else 'not cached'}, val stress views "
                f"{'cached' if stress else 'not cached'} (only cached embeddings are used)")
            spx = embed_split(fxx, ds, train_views, flip=flips, stress=stress, test=with_test)
            run("xception", f"Xception {size}, identity", ["identity"], split=spx)
            if len(train_views) > 1:
                run("xception", f"Xception {size}, {' + '.join(train_views)}", train_views, split=spx)
                if flips:
                    run("xception", f"Xception {size}, {' + '.join(train_views)}, TTA", train_views, split=spx,
                        tta=True)
            del fxx

    if "layers" in parts:
        transfer_rows, keep_alive = [], []  # `run` memoises by id(split): keep every split alive
        for layer in LAYERS:
            fxl = FeatureExtractor("mobilenetv2", weights_dir=args.weights_dir, cache_dir=args.cache_dir,
                                   feature_layer=layer)
            log(f"MobileNetV2 224 at {fxl.feature_layer} ({fxl.dim}-d; {fxl.cache_dir})")
            spl = embed_split(fxl, ds, SHIPPED_VIEWS, progress=progress)
            keep_alive.append(spl)
            row = run("layers", f"{fxl.feature_layer} ({fxl.dim}-d)", SHIPPED_VIEWS, split=spl)
            row.transfer = transfer_auc(fxl, ds, SHIPPED_VIEWS, seeds, progress, args.min_sensitivity)
            transfer_rows.append(row)
            log(f"  transfer {row.transfer}")
            del fxl

    print_table(rows)
    if "layers" in parts:
        keys = sorted({k for r in transfer_rows for k in r.transfer})
        print("\n## Leave-one-collection-out (head, temperature and threshold from one collection; scored on "
              "the other): ROC-AUC, sensitivity / specificity\n")
        print("| feature layer | val ROC-AUC | " + " | ".join(keys) + " | mean ROC-AUC |")
        print("|---" * (len(keys) + 3) + "|")
        for r in transfer_rows:
            cells = [r.transfer.get(k) for k in keys]
            text = [f"{fmt(c['roc_auc'])}, {fmt(c['sensitivity'])} / {fmt(c['specificity'])}" if c else "n/a"
                    for c in cells]
            mean = float(np.mean([c["roc_auc"] for c in cells if c]))
            print(f"| {r.setting} | {fmt(r.val['roc_auc'])} | " + " | ".join(text) + f" | {fmt(mean)} |")
    if "calibration" in parts:
        print(calib)
    total = time.perf_counter() - started
    print(f"\n# total {total:.0f} s; ECE over 15 bins; T = temperature fitted on val; sd over seeds after ±")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"manifest": args.manifest, "seeds": seeds, "seconds": total,
                                               "machine": benchlib.machine_line(),
                                               "rows": [r.__dict__ for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
