"""`mpox-triage models`: list the installed model bundles (shipped, then the user's own)."""

from __future__ import annotations

import argparse

from core.models.bundle import model_search_dirs, scan_bundles
from core.commands import warn
from core.models.releases import origin_text


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list installed model bundles")
    p.add_argument("--models-dir", help="folder of bundles (default: the shipped models/ and the user's model folder)")
    p.add_argument("--card", metavar="NAME", help="print the full model card of the bundle NAME (or NAME VERSION, "
                   "or its folder name) as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    found = scan_bundles(args.models_dir or None, problems)
    for line in problems:
        warn(line)
    if not found:
        from core.commands import CliError

        raise CliError(f"no model bundles in {', '.join(str(d) for d in model_search_dirs(args.models_dir or None))}")
    if getattr(args, "card", None):
        return print_card(found, args.card)
    from core.models.bundle import refusal, replaced_on
    from core.records import console_text

    print(f"{'name':<14} {'version':<10} {'arch':<12} {'input':>5} {'threshold':>9}  sha256        test metrics"
          "           origin")
    memo: dict = {}
    for path, card in found:
        test = card.metrics.get("test", {}) if isinstance(card.metrics, dict) else {}
        acc, auc = test.get("accuracy"), test.get("roc_auc")
        summary = f"acc {acc:.3f} AUC {auc:.3f}" if isinstance(acc, float) and isinstance(auc, float) else "-"
        # What classify would do with it: a refused bundle says so, with the reason; a kept backup says so.
        problem = refusal(path, card, args.models_dir or None, memo)
        backup = replaced_on(path)
        origin = (f"REFUSED: {problem}" if problem else
                  f"backup kept when replaced on {backup} ({path.name}); {origin_text(card)}" if backup else
                  origin_text(card))
        print(console_text(f"{card.name:<14} {card.version:<10} {card.architecture:<12} {card.input_size:>5} "
                           f"{card.threshold:>9.3f}  {card.short_sha:<12}  {summary:<22} {origin}"))
    return 0


def print_card(found: list, name: str) -> int:
    """The full card of one bundle as JSON (what File > Export model card writes in the app)."""
    import json

    from core.commands import CliError

    wanted = name.strip()
    matches = [card for path, card in found
               if wanted in (card.name, f"{card.name} {card.version}", path.name, str(path))]
    if not matches:
        names = ", ".join(sorted({f"{c.name} {c.version}" for _p, c in found}))
        raise CliError(f"no model bundle named {wanted!r}; installed: {names}")
    if len({(c.name, c.version, c.model_sha256) for c in matches}) > 1:
        versions = ", ".join(f"{c.name} {c.version}" for c in matches)
        raise CliError(f"{wanted!r} names several bundles ({versions}); give NAME VERSION")
    print(json.dumps(matches[0].to_dict(), indent=2))
    return 0
