"""`mpox-triage evaluate DATA --model NAME`: measure a bundle on labelled photos (JSON and PNG plots).

DATA is a folder of class subfolders or a manifest CSV. With a split (a manifest's `split`
column, or train/val/test folders) only `--split` (default `test`) is scored; `--split all`
scores everything.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core import DISCLAIMER

SHOWN = ("accuracy", "precision", "sensitivity", "specificity", "f1", "roc_auc", "pr_auc", "brier", "ece")


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="measure a model bundle on labelled photos",
                       description=f"Evaluate a model bundle on labelled photos. {DISCLAIMER}")
    p.add_argument("data", help="folder of class subfolders or a manifest CSV")
    p.add_argument("--model", default="mobilenetv2", help="bundle name in models/ or a bundle folder")
    p.add_argument("--split", default="test", help="split to score when DATA has one: train, val, test or all "
                                                  "(default: test)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model card's)")
    p.add_argument("--json", dest="json_path", help="write all metrics and per-image predictions as JSON here")
    p.add_argument("--plots", help="folder for ROC, confusion matrix and reliability PNGs")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.bundle import BundleError, load_bundle
    from core.commands import CliError
    from core.commands.train import _printer
    from core.datasets import DatasetError, load_dataset
    from core.evaluation import evaluate_bundle, save_json, save_plots

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}")
    try:
        ds = load_dataset(args.data)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    if ds.has_splits() and args.split != "all":
        if args.split not in ("train", "val", "test"):
            raise CliError(f"--split must be train, val, test or all, got {args.split!r}")
        ds = ds.subset(args.split)
        if not len(ds):
            raise CliError(f"{args.data}: no images in split {args.split!r}")
    where = args.split if ds.has_splits() else "all"
    try:
        bundle = load_bundle(args.model)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    card = bundle.card
    print(f"Evaluating {card.name} {card.version} (sha256 {card.short_sha}) on {len(ds)} images ({where}). "
          f"{DISCLAIMER}", file=sys.stderr)
    started = time.monotonic()
    result = evaluate_bundle(bundle, ds, progress=_printer(args.quiet), n_bootstrap=args.bootstrap,
                             threshold=args.threshold, batch_size=args.batch_size)
    result["data"] = {"source": str(args.data), "split": where, "n_images": len(ds),
                      "time_s": round(time.monotonic() - started, 1)}
    print(f"{'metric':<12} {'value':>7}  95% CI", file=sys.stderr)
    for k in SHOWN:
        lo, hi = result["ci95"].get(k, [float("nan")] * 2)
        print(f"{k:<12} {result[k]:>7.3f}  [{lo:.3f}, {hi:.3f}]")
    c = result["confusion"]
    print(f"confusion (threshold {result['threshold']:.3f}): TN {c['tn']} FP {c['fp']} FN {c['fn']} TP {c['tp']}; "
          f"flagged uncertain {result['flags']['uncertain']}, out_of_scope {result['flags']['out_of_scope']}")
    if result["errors"]:
        print(f"warning: {len(result['errors'])} image(s) could not be read, e.g. {result['errors'][0]['error']}",
              file=sys.stderr)
    if args.json_path:
        save_json(result, args.json_path)
        print(f"JSON: {args.json_path}", file=sys.stderr)
    if args.plots:
        preds = result["predictions"]
        files = save_plots([p["label"] for p in preds], [p["p_mpox"] for p in preds], result["threshold"],
                           Path(args.plots), history=card.training.get("history"), title=f"{card.name} {where}")
        print(f"Plots: {', '.join(str(f) for f in files.values())}", file=sys.stderr)
    return 0
