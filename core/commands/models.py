"""`mpox-triage models`: list the installed model bundles."""

from __future__ import annotations

import argparse

from core.bundle import default_models_dir, list_bundles


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list installed model bundles")
    p.add_argument("--models-dir", help="folder of bundles (default: the shipped models/)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    base = args.models_dir or default_models_dir()
    cards = list_bundles(base)
    if not cards:
        print(f"No model bundles in {base}")
        return 1
    print(f"{'name':<14} {'version':<10} {'arch':<12} {'input':>5} {'threshold':>9}  sha256        test metrics")
    for card in cards:
        test = card.metrics.get("test", {}) if isinstance(card.metrics, dict) else {}
        acc, auc = test.get("accuracy"), test.get("roc_auc")
        summary = f"acc {acc:.3f} AUC {auc:.3f}" if isinstance(acc, float) and isinstance(auc, float) else "-"
        print(f"{card.name:<14} {card.version:<10} {card.architecture:<12} {card.input_size:>5} "
              f"{card.threshold:>9.3f}  {card.short_sha:<12}  {summary}")
    return 0
