"""`mpox-triage models`: list the installed model bundles (shipped, then the user's own)."""

from __future__ import annotations

import argparse
import sys

from core.bundle import model_search_dirs, scan_bundles
from core.releases import origin_text


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list installed model bundles")
    p.add_argument("--models-dir", help="folder of bundles (default: the shipped models/ and the user's model folder)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    found = scan_bundles(args.models_dir or None, problems)
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    if not found:
        from core.commands import CliError

        raise CliError(f"no model bundles in {', '.join(str(d) for d in model_search_dirs(args.models_dir or None))}")
    print(f"{'name':<14} {'version':<10} {'arch':<12} {'input':>5} {'threshold':>9}  sha256        test metrics"
          "           origin")
    for _, card in found:
        test = card.metrics.get("test", {}) if isinstance(card.metrics, dict) else {}
        acc, auc = test.get("accuracy"), test.get("roc_auc")
        summary = f"acc {acc:.3f} AUC {auc:.3f}" if isinstance(acc, float) and isinstance(auc, float) else "-"
        print(f"{card.name:<14} {card.version:<10} {card.architecture:<12} {card.input_size:>5} "
              f"{card.threshold:>9.3f}  {card.short_sha:<12}  {summary:<22} {origin_text(card)}")
    return 0
