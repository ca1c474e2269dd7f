"""`mpox-triage fhir PARQUET_DIR OUT.json`: a FHIR R4 Bundle from the Parquet shards of a run (classify --parquet,
e.g. with --engine ray), for runs too large to keep a session; the mapping is core.reports.fhir_export's (docs/interop.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import DISCLAIMER


def add_parser(sub) -> None:
    p = sub.add_parser("fhir", help="write a FHIR R4 Bundle from a run's Parquet shards",
                       description=f"Write a FHIR R4 Bundle (JSON) from Parquet result shards. {DISCLAIMER}")
    p.add_argument("parquet", metavar="PARQUET_DIR", help="folder of part-*.parquet shards (classify --parquet)")
    p.add_argument("out", metavar="OUT", help="the Bundle's JSON file")
    p.add_argument("--model", action="append", default=[],
                   help="bundle name or folder of a model in the shards, for its Device's card digest (default: "
                        "the installed bundles whose weights match the rows)")
    p.add_argument("--root", help="folder photo paths are made relative to (default: their common folder)")
    p.add_argument("--images", action="store_true", help="embed each scored photo's bytes as a Media resource")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.models.bundle import BundleError, read_card, resolve_bundle_dir, scan_bundles
    from core.commands import CliError
    from core.reports.fhir_export import FhirExportError, parquet_bundle, write_bundle
    from core.store.outputs import OutputError, check_output
    from core.records import safe_text, unescape_path
    from core.store.sources import read_parquet_records
    from core.scale import RayMissingError
    from core.store.workspace import WorkspaceError

    folder = Path(args.parquet).expanduser()
    if not folder.is_dir():
        raise CliError(f"no such folder: {safe_text(str(folder))}")
    try:
        check_output(args.out, "OUT", folder=folder)
        loaded = read_parquet_records(folder)
        for photos in sorted({str(Path(unescape_path(r.path)).parent) for r in loaded[0]}):
            # As classify refuses: never a photo of the run, never inside a folder its photos came from.
            check_output(args.out, "OUT", folder=photos)
        cards = [read_card(resolve_bundle_dir(ref)) for ref in args.model] or [c for _p, c in scan_bundles()]
        bundle = parquet_bundle(folder, cards, root=args.root, images=args.images, loaded=loaded)
        write_bundle(bundle, args.out)
    except (OutputError, BundleError, FhirExportError, WorkspaceError, RayMissingError) as exc:
        raise CliError(safe_text(str(exc))) from None
    n = sum(1 for e in bundle.entry if e.resource.get_resource_type() == "DiagnosticReport")
    print(f"FHIR: {args.out} ({n} case(s)). {DISCLAIMER}", file=sys.stderr)
    return 0
