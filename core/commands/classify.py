"""`mpox-triage classify FOLDER`: score every image in a folder offline and write a CSV (and a PDF)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from core import DISCLAIMER
from core.progress import Progress


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify every image in a folder",
                       description=f"Classify every image under FOLDER. {DISCLAIMER}")
    p.add_argument("folder", help="folder of photos (searched recursively)")
    p.add_argument("--model", default="mobilenetv2",
                   help="bundle name in models/ (mobilenetv2, xception) or a bundle folder (default: mobilenetv2)")
    p.add_argument("--csv", dest="csv_path", help="write one row per file to this CSV")
    p.add_argument("--report", dest="report_path", help="write a PDF report to this path")
    p.add_argument("--threshold", type=float, help="decision threshold on p(mpox) (default: the model card's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--session", help="session folder: every result is stored there as it arrives")
    p.add_argument("--resume", action="store_true", help="with --session: score only files not yet scored")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _check_writable(path: str | None, what: str) -> None:
    from core.commands import CliError

    if not path:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise CliError(f"cannot write {what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"cannot write {what} {path}: folder {parent} is not writable")
    if Path(path).is_dir():
        raise CliError(f"cannot write {what} {path}: it is a folder; give a file name")


class ProgressBar:
    """A one-line progress bar with rate and ETA on stderr (plain lines when not a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self.last_line = 0.0

    def __call__(self, p: Progress) -> None:
        if not self.enabled or p.total == 0:
            return
        now = time.monotonic()
        elapsed = max(now - self.start, 1e-6)
        rate = p.done / elapsed
        eta = (p.total - p.done) / rate if rate > 0 else 0
        width = 30
        filled = int(width * p.done / p.total)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} "
                f"{rate:5.1f} img/s ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        if self.tty:
            sys.stderr.write("\r" + line)
            if p.done == p.total:
                sys.stderr.write("\n")
        elif p.done == p.total or now - self.last_line > 5:
            sys.stderr.write(line + "\n")
            self.last_line = now
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from core.commands import CliError
    from core.images import discover_images

    folder = Path(os.path.abspath(Path(args.folder).expanduser()))
    if not folder.exists():
        raise CliError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise CliError(f"not a folder: {folder}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.resume and not args.session:
        raise CliError("--resume needs --session DIR (the session folder of the run to resume)")
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    _check_writable(args.csv_path, "CSV")
    _check_writable(args.report_path, "report")

    walk_errors: list[str] = []
    paths = discover_images(folder, errors=walk_errors)
    for message in walk_errors:
        print(f"warning: {message}", file=sys.stderr)

    from core.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(args.model)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    from core.inference import InferenceEngine

    engine = InferenceEngine(bundle, batch_size=args.batch_size, threshold=args.threshold)
    card = bundle.card

    store = run_id = None
    previous = []
    todo = paths
    if args.session:
        from core.session import SessionStore

        session_dir = Path(args.session).expanduser()
        session_dir.mkdir(parents=True, exist_ok=True)
        store = SessionStore.open(session_dir)
        if args.resume:
            done = store.done_paths(card.model_sha256)
            wanted = {str(p) for p in paths}
            previous = [r for r in store.results(model_sha256=card.model_sha256) if r.path in wanted]
            todo = [p for p in paths if str(p) not in done]
            print(f"Resuming: {len(previous)} already scored, {len(todo)} to go", file=sys.stderr)
        run_id = store.start_run(card, str(folder), engine.threshold)

    print(f"{card.name} {card.version} (sha256 {card.short_sha}, threshold {engine.threshold:.3f}, "
          f"runtime {bundle.runtime_name}) on "
          f"{len(paths)} images in {folder}. {DISCLAIMER}", file=sys.stderr)
    bar = ProgressBar(enabled=not args.quiet)
    records = []
    status = "interrupted"
    try:
        if store is None:
            records.extend(engine.run(todo, progress=bar))
        else:
            # The engine yields whole batches, so a batch-sized sink commits each batch as it completes.
            with store.batched(run_id, size=args.batch_size) as sink:
                for record in engine.run(todo, progress=bar):
                    sink.add(record)
                    records.append(record)
        status = "finished"
    finally:
        if store is not None:
            store.finish_run(run_id, status)

    # Resumed runs report every file once: earlier results first in discovery order.
    by_path = {r.path: r for r in previous}
    by_path.update({r.path: r for r in records})
    ordered = [by_path[str(p)] for p in paths if str(p) in by_path]

    if args.csv_path:
        from core.csvio import write_results_csv

        write_results_csv(ordered, args.csv_path)
    if args.report_path:
        from core.reports import write_pdf_report

        reviews = store.reviews() if store is not None else None
        write_pdf_report(ordered, args.report_path, folder=str(folder), cards=[card], reviews=reviews)
        if store is not None:
            store.log("report_exported", {"path": str(args.report_path), "rows": len(ordered)})

    counts = Counter(r.prediction if r.ok else "error" for r in ordered)
    flags = Counter(r.flag for r in ordered if r.flag)
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    flag_text = ", ".join(f"{k}: {v}" for k, v in sorted(flags.items())) or "none"
    print(f"Done: {len(ordered)} files ({summary}); flagged for review: {flag_text}", file=sys.stderr)
    if args.csv_path:
        print(f"CSV: {args.csv_path}", file=sys.stderr)
    if args.report_path:
        print(f"Report: {args.report_path}", file=sys.stderr)
    if not args.csv_path and not args.report_path:
        for r in ordered:
            value = f"{r.p_mpox:.3f}" if r.p_mpox is not None else "-"
            print(f"{r.path}\t{r.status}\t{value}\t{r.prediction or ''}\t{r.flag}\t{r.error}")
    return 0
