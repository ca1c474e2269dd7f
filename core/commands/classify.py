"""`mpox-triage classify FOLDER`: score every photo in a folder offline; CSV, PDF and JSON summary.

Arguments -> core.store.workspace.Workspace -> summary. Every rule (what to resume, when to commit, how a
run ends, what the CSV holds, what the audit says) lives in the workspace, shared with the app.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from core import DISCLAIMER
from core.commands import warn
from core.progress import Progress

RAY_MISSING = '--engine ray needs the scale extra: pip install -e ".[scale]"'
# (argument dest, what it is): every output a run writes, each checked by the one output policy (core.store.outputs:
# never an input or inside the scanned folder, a session database, a file in a bundle, a link or a special file,
# nor another output's path). A new output is added here too.
OUTPUTS = (("csv_path", "--csv"), ("report_path", "--report"), ("summary_path", "--summary"),
           ("parquet_dir", "--parquet"), ("session", "--session"), ("case_csv_path", "--case-csv"),
           ("fhir_path", "--fhir"))
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify every image in a folder",
                       description=f"Classify every image under FOLDER. {DISCLAIMER}")
    p.add_argument("folder", metavar="SOURCE",
                   help="folder of photos (searched recursively), or a CSV/TSV/Parquet manifest with a 'path' column")
    p.add_argument("--model", action="append", default=None,
                   help="bundle name in models/ (mobilenetv2, xception) or a bundle folder; repeat it or give a "
                        "comma list to run several models (one CSV row per photo, side by side) "
                        "(default: mobilenetv2)")
    p.add_argument("--csv", dest="csv_path", help="write one row per photo to this CSV")
    p.add_argument("--report", dest="report_path", help="write a PDF report to this path")
    p.add_argument("--summary", dest="summary_path", help="write a JSON summary (counts in photos) to this path")
    p.add_argument("--parquet", dest="parquet_dir",
                   help="write the results as Parquet shards into this new folder (needs the scale extra; one row "
                        "per file and model, for archives of millions of photos)")
    from core.store.cases import CASES_HELP

    p.add_argument("--cases", help=CASES_HELP + "; the CSV gains a case_id column, the PDF a case summary")
    p.add_argument("--case-csv", dest="case_csv_path",
                   help="write one row per case to this CSV (call, highest p(mpox), counts, why to review)")
    p.add_argument("--fhir", dest="fhir_path",
                   help="write a FHIR R4 Bundle (JSON) for a health record: a DiagnosticReport per case, an "
                        "Observation per scored photo, a Device per model (docs/interop.md)")
    p.add_argument("--fhir-images", action="store_true",
                   help="with --fhir: embed each scored photo's bytes as a Media resource (default: none)")
    p.add_argument("--threshold", type=float,
                   help="decision threshold on p(mpox) (default: the model card's); on --resume, results stored "
                        "at another threshold are re-decided from their stored p(mpox)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--session", help="session folder: every result is stored there as it arrives")
    p.add_argument("--resume", action="store_true",
                   help="with --session: score only photos without a result, with an error row, or changed since")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default) or ray (several processes or machines; needs the scale extra)")
    p.add_argument("--address", help="with --engine ray: the Ray cluster address (default: start one locally)")
    p.add_argument("--actors", type=int, default=1, help="with --engine ray: model replicas (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _model_refs(values: list[str] | None) -> list[str]:
    from core.commands import CliError

    refs: list[str] = []
    for value in values or ["mobilenetv2"]:
        for part in value.split(","):
            part = part.strip()
            if not part:
                raise CliError("--model needs a bundle name or folder")
            if part not in refs:
                refs.append(part)
    return refs


def check_outputs(outputs: list[tuple[str, str]], folder: Path | None, inputs: list[Path],
                  protected: list[Path] = ()) -> None:
    """The one output policy (core.store.outputs) on a run's outputs; a refusal is a CliError (one line, exit 2)."""
    from core.commands import check_outputs as policy

    policy(outputs, folder=folder, inputs=inputs, protected=protected, dirs=("--parquet",))


class ProgressBar:
    """A one-line progress bar with rate and ETA on stderr (plain lines when not a terminal); counts photos."""

    def __init__(self, enabled: bool, label: str = ""):
        self.enabled = enabled
        self.label = label
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
        line = (f"{self.label}[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} photos "
                f"{rate:5.1f} img/s ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        if self.tty:
            sys.stderr.write("\r" + line)
            if p.done == p.total:
                sys.stderr.write("\n")
        elif p.done == p.total or now - self.last_line > 5:
            sys.stderr.write(line + "\n")
            self.last_line = now
        sys.stderr.flush()


def _warn_bad_bundles() -> None:
    """One warning line per bundle in the models folders whose card is malformed (it is skipped, never fatal)."""
    from core.models.bundle import scan_bundles

    problems: list[str] = []
    scan_bundles(None, problems)
    for line in problems:
        warn(line)


def _make_engines(args: argparse.Namespace, refs: list[str]) -> list:
    """(engine, card, runtime name) per --model value, in their order. Locally, combined models load first and
    a --model that is one of their components reuses the component already loaded (one copy in memory)."""
    if args.engine != "local":
        return [_make_engine(args, ref) for ref in refs]
    from core.models.bundle import BundleError, read_card, resolve_bundle_dir

    kinds = []
    for ref in refs:
        try:
            kinds.append(read_card(resolve_bundle_dir(ref)).extra.get("kind"))
        except BundleError:
            kinds.append(None)  # load_bundle says what is wrong, in its turn
    loaded: dict[str, object] = {}   # folder -> a component bundle loaded with a combined model
    out: list = [None] * len(refs)
    for i in sorted(range(len(refs)), key=lambda i: kinds[i] != "combined"):
        out[i] = _make_engine(args, refs[i], loaded)
        for comp in getattr(out[i][0].bundle, "components", None) or []:
            loaded.setdefault(str(Path(comp.path).resolve()), comp)
    return out


def _make_engine(args: argparse.Namespace, ref: str, loaded: dict | None = None):
    """(engine, card, runtime name) for one --model value (`loaded`: bundles already loaded, by model key)."""
    from core.commands import CliError

    if args.engine == "ray":
        try:
            import ray  # noqa: F401  (the scale extra; without it, one line saying how to install it)
            from core.scale import RayEngine
        except ImportError:
            raise CliError(RAY_MISSING) from None
        try:
            # The threshold is the workspace's: it re-decides what an engine returns (core.store.workspace.decide).
            engine = RayEngine(ref, address=args.address, actors=args.actors, batch_size=args.batch_size)
        except Exception as exc:  # noqa: BLE001 - a cluster or bundle problem, said in one line
            raise CliError(f"cannot start the Ray engine for {ref}: {exc}") from None
        return engine, engine.card, "ray"
    from core.models.bundle import BundleError, load_bundle
    from core.triage.inference import InferenceEngine

    try:
        bundle = None
        if loaded:
            from core.models.bundle import resolve_bundle_dir

            bundle = loaded.get(str(resolve_bundle_dir(ref).resolve()))  # the very folder a combined model uses
        bundle = bundle or load_bundle(ref)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    try:
        engine = InferenceEngine(bundle, batch_size=args.batch_size, threshold=args.threshold)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return engine, bundle.card, bundle.runtime_name


def _read_manifest(source: Path):
    """A manifest (CSV/TSV/Parquet with a `path` column) as a core.photos.images.Discovery of its files, in its order."""
    from core.commands import CliError
    from core.photos.images import Discovery
    from core.store.sources import ManifestError, read_manifest

    from collections import Counter

    from core.records import safe_text

    try:
        listed = read_manifest(source)
    except (ManifestError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    # A photo listed twice is scored once (one row per photo), and the repeats are reported, not hidden.
    repeats = {p: n for p, n in Counter(listed).items() if n > 1}
    errors = []
    if repeats:
        first = next(iter(repeats))
        errors.append(f"{safe_text(str(source))}: {sum(repeats.values()) - len(repeats)} row(s) repeat a photo "
                      f"already listed ({len(repeats)} photo(s), e.g. {safe_text(first)} {repeats[first]} times); "
                      "each photo is scored once")
    return Discovery(root=source.parent, paths=[Path(p) for p in dict.fromkeys(listed)], errors=errors)


def _write_parquet(ws, keys: list[str], out_dir: str, case_of: dict[str, str] | None = None) -> None:
    """Every record of these models (one row per file and model) as Parquet shards, each published atomically."""
    from core.scale import ParquetShardWriter
    from core.store.workspace import WorkspaceError

    writer = None
    try:
        with ParquetShardWriter(out_dir, origins={k: ws.origin(k) for k in keys}, cases=case_of) as writer:
            writer.extend(ws.records(keys))
    except OSError as exc:
        # The folder is new (checked before the run): take back what this run put in it, so a full disk leaves
        # no half-written folder that blocks the next run.
        folder = Path(out_dir)
        for shard in getattr(writer, "shards", []):
            shard.unlink(missing_ok=True)
        for leftover in folder.glob(".part-*.tmp-*") if folder.is_dir() else ():
            leftover.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass
        raise WorkspaceError(f"cannot write Parquet folder {out_dir}: {exc.strerror or exc}") from None


def _shift_alarm(ws, engines, threshold: float | None) -> None:
    """Say each model's shift verdict on this source (core.store.workspace: a test of every in-scope photo stored for
    that model and source, recomputed when each run ended, so a resume or a cancelled run cannot replace it with
    a test of only the new photos). Under a model's alarm its stored rows were moved to its out-of-collection
    operating point when its run ended (CsvStream.close then writes the CSV again from the workspace). The point
    each model is decided at is said by the one point text (core.models.operating_point)."""
    for _engine, card, _rt in engines:
        verdict = ws.verdict_for(card.key)
        if verdict is None:
            continue
        print(f"{card.display_name}: {verdict.get('message', '')}", file=sys.stderr)
        if verdict.get("detected"):
            print(f"Shift alarm ({card.display_name}): folder unlike the training photos; "
                  f"{verdict.get('remedy', '')}.", file=sys.stderr)
    for message in _point_messages(ws, [card for _e, card, _rt in engines], threshold).values():
        print(message, file=sys.stderr)


def _point_messages(ws, cards, threshold: float | None) -> dict[str, str]:
    """core.models.operating_point.point_message of each model whose folder point is not its default one (under a shift
    alarm), by model key: stderr and --summary's point_message print exactly these."""
    from core.models.operating_point import card_point, point_message

    out = {}
    for card in cards:
        point, default = ws.point_for(card, threshold), card_point(card, threshold=threshold)
        if not point.same_as(default):
            out[card.key] = point_message(card.display_name, point, default)
    return out


def _summary_point(summary: dict, ws, cards, threshold: float | None) -> dict:
    """The summary with its shift verdicts' point_message rendered from the point the folder is decided at now
    (a stored verdict's own text predates the folder's review floor), the one text stderr printed: the deciding
    verdict (`shift`) and each model's (`shifts`)."""
    messages = _point_messages(ws, cards, threshold)

    def now(verdict: dict, fallback: str | None = None) -> dict:
        verdict = {k: v for k, v in verdict.items() if k != "point_message"}
        message = messages.get(verdict.get("model_key", ""), fallback)
        if message:
            verdict["point_message"] = message
        return verdict

    out = dict(summary)
    if isinstance(summary.get("shift"), dict):
        out["shift"] = now(summary["shift"], next(iter(messages.values()), None))
    if isinstance(summary.get("shifts"), dict):
        out["shifts"] = {name: now(v) if isinstance(v, dict) else v for name, v in summary["shifts"].items()}
    return out


def _write_json_atomic(data: dict, path: str) -> None:
    from core.store.outputs import write_text_atomic
    from core.store.workspace import WorkspaceError

    try:
        write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    except OSError as exc:
        raise WorkspaceError(f"cannot write summary {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from core.commands import CliError
    from core.store.workspace import WorkspaceError

    try:
        return _run(args)
    except WorkspaceError as exc:
        raise CliError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    from core.commands import CliError
    from core.records import safe_text
    from core.store.workspace import Workspace

    # --- arguments --------------------------------------------------------------------------------
    if args.engine != "ray" and (args.actors != 1 or args.address):
        warn("--actors and --address apply to --engine ray only; this run scores locally")
    for dest, option in OUTPUTS:
        value = getattr(args, dest, None)
        if value is not None and not str(value).strip():
            raise CliError(f"{option} needs a {'folder' if dest == 'session' else 'file'} name, got ''")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.resume and not args.session:
        raise CliError("--resume needs --session DIR (the session folder of the run to resume)")
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    if args.actors < 1:
        raise CliError("--actors must be at least 1")
    if args.fhir_images and not args.fhir_path:
        raise CliError("--fhir-images needs --fhir OUT.json")
    grouping = None
    if args.cases is not None:
        from core.store.cases import CaseError, Grouping

        try:
            grouping = Grouping.parse(args.cases)
        except CaseError as exc:
            raise CliError(str(exc)) from None
    refs = _model_refs(args.model)
    _warn_bad_bundles()
    source = Path(os.path.abspath(Path(args.folder).expanduser()))
    manifest = source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES
    folder = source.parent if manifest else source
    if not source.exists():
        raise CliError(f"no such folder: {safe_text(str(source))}")
    if not manifest and not source.is_dir():
        raise CliError(f"not a folder or a manifest (.csv, .tsv, .parquet): {safe_text(str(source))}")
    from core.store.outputs import session_files

    outputs = [(option, getattr(args, dest)) for dest, option in OUTPUTS if getattr(args, dest, None)]
    check_outputs(outputs, None if manifest else folder, [source], session_files(args.session))
    if args.parquet_dir:
        from core.scale import RAY_MISSING as SCALE_MISSING, ray_available

        if not ray_available():
            raise CliError(f"--parquet needs pyarrow: {SCALE_MISSING}")
        if Path(args.parquet_dir).exists():
            raise CliError(f"--parquet {safe_text(args.parquet_dir)} exists; give a new folder")

    found = _read_manifest(source) if manifest else Workspace.discover(folder)
    paths = found.paths
    for message in found.errors:
        warn(message)
    if found.skipped_links:
        print(f"note: {len(found.skipped_links)} symbolic link(s) lead outside {safe_text(str(folder))} and were "
              "not followed", file=sys.stderr)
    # A manifest's photos may live anywhere: outputs must not be one of them, nor the manifest itself. Every
    # model bundle (the ones in use, their components, shipped or the user's) is refused by core.store.outputs.
    if manifest:
        check_outputs(outputs, None, list(paths) + [source], session_files(args.session))

    engines = _make_engines(args, refs)
    keys = []
    for _e, card, _rt in engines:
        if card.key in keys:
            raise CliError(f"--model {card.display_name} is given twice")
        keys.append(card.key)
    if args.engine == "local":
        from core.triage.inference import share_backbones

        # A combined model given with its components scores them in its own pass (each backbone once).
        engines = [(e, e.card, e.bundle.runtime_name) for e in share_backbones([e for e, _c, _rt in engines])]

    column = None
    if grouping is not None and grouping.kind == "column":
        from core.store.cases import CaseError, manifest_column

        if not manifest:
            raise CliError(f"--cases {grouping.text} needs a manifest (CSV, TSV or Parquet) that lists the photos; "
                           "for a folder use 'subfolder' or 'regex:PATTERN'")
        try:
            column = manifest_column(source, grouping.value)
        except CaseError as exc:
            raise CliError(str(exc)) from None
    ws = Workspace.open(folder, args.session, found=found)
    if manifest:
        ws.scanned_folder = None   # outputs may sit beside a manifest, never on one of its photos
        ws.source = safe_text(str(source))   # two manifests over one folder keep verdicts of their own
    try:
        for moved_from, moved_to in ws.moved:
            print(f"moved: {safe_text(moved_from)} -> {safe_text(moved_to)} (same photo: its results and review "
                  "follow it)", file=sys.stderr)
        from core.store.workspace import shift_reference

        for engine, _card, _rt in engines:
            reference = shift_reference(engine)
            if reference is not None:
                ws.attach(reference)   # its verdict on what is stored decides the operating point of its plan
        from core.store.cases import assign

        case_of = assign(ws.paths, grouping, ws.folder, column)
        written: list[str] = []
        try:
            return _classify(args, ws, engines, keys, case_of if grouping is not None else None, case_of, written)
        except KeyboardInterrupt:
            _say_outputs(args, written, "Interrupted")
            raise
        except Exception:   # an output that could not be written (a full disk...): its own line follows this one
            if written:
                _say_outputs(args, written, "Stopped by an error")
            raise
    finally:
        ws.close()


def _say_outputs(args, written: list[str], why: str) -> None:
    """After an interrupt or an error: which of the asked outputs were written by this run and which were not
    (each is published whole or not at all, so one not written is as it was before)."""
    from core.records import safe_text

    asked = [(label, path) for label, path in _output_labels(args) if path]
    if not asked:
        return
    done = [f"{label} {safe_text(str(path))}" for label, path in asked if label in written]
    left = [f"{label} {safe_text(str(path))}" for label, path in asked if label not in written]
    if done:
        print(f"{why} after writing: {'; '.join(done)}.", file=sys.stderr)
    print(f"Not written (any earlier file there is unchanged): {'; '.join(left)}.", file=sys.stderr)


def _output_labels(args) -> list[tuple[str, str | None]]:
    """(label, path) of every output a run may write, in the order the last lines of a run name them."""
    return [("CSV", args.csv_path), ("Report", args.report_path), ("Summary", args.summary_path),
            ("Case CSV", args.case_csv_path), ("FHIR", args.fhir_path), ("Parquet", args.parquet_dir)]


def _classify(args, ws, engines, keys, case_column: dict[str, str] | None, case_of: dict[str, str],
              written: list[str]) -> int:
    """The runs and outputs; `case_column`: photo -> case id for the CSV's and Parquet's case_id column (with
    --cases), `case_of`: the cases of the case CSV, the PDF and the FHIR Bundle (each photo its own without)."""
    from core.store import cases
    from core.commands import CliError
    from core.records import console_text
    from core.store.workspace import WorkspaceError, combined_status

    try:
        plans = [ws.to_score(card, args.threshold, resume=args.resume) for _e, card, _rt in engines]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    for (_e, card, runtime), plan in zip(engines, plans):
        print(f"{card.name} {card.version} (sha256 {card.short_sha}, threshold {plan.threshold:.3f}, "
              f"runtime {runtime}) on {len(ws.paths)} photos in {console_text(str(ws.folder))}. {DISCLAIMER}",
              file=sys.stderr)
        if args.resume:
            prefix = f"{card.display_name}: " if len(engines) > 1 else ""
            print(f"Resuming: {prefix}{plan.describe()}", file=sys.stderr)

    if not ws.paths:
        from core.photos.images import IMAGE_EXTENSIONS

        print(f"No photos found in {console_text(str(ws.folder))} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
              "nothing to classify.", file=sys.stderr)
    stream = None
    if args.csv_path:
        stream = (cases.csv_stream(ws, args.csv_path, keys, plans, case_column) if case_column is not None
                  else ws.csv_stream(args.csv_path, keys, plans))
    runs = []
    try:
        for (engine, card, _rt), plan in zip(engines, plans):
            label = f"{card.name} " if len(engines) > 1 else ""
            run = ws.run(engine, plan, progress=ProgressBar(not args.quiet, label))
            runs.append(run)
            try:
                for record in run:
                    if stream is not None:
                        stream.add(record)
            except WorkspaceError:
                raise
            except (KeyboardInterrupt, CliError):
                raise
            except Exception as exc:  # noqa: BLE001 - an engine failure: one line, exit 2, nothing published
                raise CliError(f"{card.display_name} failed: {exc}") from None
        _shift_alarm(ws, engines, args.threshold)
        if args.parquet_dir:
            _write_parquet(ws, keys, args.parquet_dir, case_column)
            written.append("Parquet")
        if stream is not None:
            # Rows streamed during the runs that the runs' end changed (a verdict that moved the operating point,
            # re-decided results, a new reason) are written again from what is stored (CsvStream.close).
            stream.close()
            written.append("CSV")
    except BaseException:
        if stream is not None:
            stream.abort()
        raise
    status = combined_status(runs)
    grouping = cases.Grouping.parse(args.cases) if args.cases else None
    view = None   # computed only for an output that needs it: an archive run with --parquet alone stays lean
    if case_column is not None or args.case_csv_path or args.fhir_path:
        view = cases.workspace_view(ws, keys, grouping, case_of=case_of)
    if args.report_path:
        from core.reports.workspace_pdf import export_case_pdf, export_pdf

        if case_column is not None:
            export_case_pdf(ws, args.report_path, view, cards=[card for _e, card, _rt in engines])
        else:
            export_pdf(ws, args.report_path, keys, cards=[card for _e, card, _rt in engines])
        written.append("Report")
    if args.case_csv_path:
        cases.write_case_csv(view, args.case_csv_path, ws)
        written.append("Case CSV")
    if args.fhir_path:
        from core.reports.fhir_export import export_workspace

        run_ids = ",".join(r.run_id for r in runs if r.run_id)
        export_workspace(ws, args.fhir_path, view, run=run_ids, images=args.fhir_images)
        written.append("FHIR")
    outputs = {"csv": args.csv_path, "report": args.report_path, "summary": args.summary_path,
               "parquet": args.parquet_dir, "case_csv": args.case_csv_path, "fhir": args.fhir_path}
    summary = _summary_point(ws.summary(keys, status, runs, outputs), ws, [c for _e, c, _rt in engines],
                             args.threshold)
    if view is not None:
        summary["cases"] = cases.case_counts(view)
    if args.summary_path:
        _write_json_atomic(summary, args.summary_path)
        written.append("Summary")

    preds = ", ".join(f"{k}: {v}" for k, v in summary["predictions"].items())
    if summary["errors"]:
        preds = ", ".join(filter(None, [preds, f"error: {summary['errors']}"]))
    flag_text = ", ".join(f"{k}: {v}" for k, v in summary["flags"].items()) or "none"
    agree = summary.get("agreement")
    agree_text = f"; models disagree on {agree.get('disagree', 0)}" if agree else ""
    print(f"Done: {summary['with_result']} photos ({preds}); flagged for review: {flag_text}{agree_text}",
          file=sys.stderr)
    if view is not None:
        c = summary["cases"]
        print(f"Cases: {c['cases']} ({c['mpox']} called mpox, {c['needs_review']} need review)", file=sys.stderr)
    for label, path in _output_labels(args):
        if path and label != "Parquet":   # these lines name files; the shard folder is not among them
            print(f"{label}: {path}", file=sys.stderr)
    if not args.csv_path and not args.report_path:
        for path in ws.paths:
            recs = [r for r in ws.photo_records(path, keys) if r is not None]
            if not recs:
                continue
            cells = []
            for r in recs:
                value = f"{r.p_mpox:.3f}" if r.p_mpox is not None else "-"
                cells += [r.status, value, r.prediction or "", r.flag]
            # One line per photo, whatever its name holds (newlines, tabs): core.records.console_text.
            print("\t".join(console_text(c) for c in [path] + cells + [next((r.error for r in recs if r.error), "")]))
    return 0
