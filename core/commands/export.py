"""`mpox-triage export --model NAME --format tflite|onnx OUT`: a model file for phones and other apps.

The export is kept only if its probabilities agree with the Keras model's within 1e-4 on check images
(a folder of real photos with --check-images, else generated images).
"""

from __future__ import annotations

import argparse
import sys

from core import DISCLAIMER


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model as LiteRT (.tflite) or ONNX for other apps",
                       description="Export a model bundle as a LiteRT (.tflite) or ONNX file, checked against the "
                                   f"Keras model. {DISCLAIMER}")
    p.add_argument("out", metavar="OUT", nargs="?",
                   help="file to write, e.g. mobilenetv2.tflite (a OUT.json sidecar is written too)")
    p.add_argument("--model", default="mobilenetv2",
                   help="bundle name in models/ or a bundle folder (default: mobilenetv2)")
    p.add_argument("--format", dest="fmt", choices=["tflite", "onnx"], default=None,
                   help="tflite (LiteRT, for Android/iOS) or onnx (default: from OUT's suffix)")
    p.add_argument("--check-images", metavar="FOLDER",
                   help="folder of real photos for the agreement check (default: generated images)")
    p.add_argument("--attach", action="store_true",
                   help="instead of OUT: put its LiteRT runtime (backbone .tflite, head in numpy) into the bundle, "
                        "checked against Keras, and record it in its model card, so classify, Grad-CAM and adapt run "
                        "without TensorFlow; use --check-images with real photos; for a combined model, attach its "
                        "components first")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed p(mpox) difference from the Keras model (default 1e-4)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.commands import CliError
    from core.models.export import FORMATS, ExportError
    from core.models.tf_runtime import require_tensorflow

    require_tensorflow("exporting a model (it converts the Keras model)")
    if not 0.0 < args.tolerance < 1.0:
        raise CliError(f"--tolerance must be between 0 and 1, got {args.tolerance}")
    if args.attach:
        return _attach(args)
    if not args.out:
        raise CliError("give the file to write (OUT), e.g. mobilenetv2.tflite, or --attach")
    out = Path(args.out).expanduser()
    fmt = args.fmt
    if fmt is None:
        fmt = next((f for f, suffix in FORMATS.items() if out.suffix.lower() == suffix), None)
        if fmt is None:
            raise CliError(f"cannot tell the format from {out.name!r}; add --format tflite or --format onnx")
    if out.is_dir():
        raise CliError(f"{out} is a folder; give a file name such as model{FORMATS[fmt]}")
    if not out.parent.is_dir():
        raise CliError(f"cannot write {out}: folder {out.parent} does not exist")
    if args.check_images and not Path(args.check_images).is_dir():
        raise CliError(f"--check-images {args.check_images}: no such folder")
    from core.commands import check_outputs

    # The output policy (core.store.outputs): never inside any bundle (the model exported included), a check photo,
    # a session, a link or a special file; the same for the OUT.json sidecar.
    check_outputs([("OUT", out), ("OUT.json", out.with_name(out.name + ".json"))],
                  inputs=[args.check_images] if args.check_images else [])

    from core.models.bundle import BundleError, load_bundle
    from core.models.export import export_model

    try:
        bundle = load_bundle(args.model, runtime="keras")
    except BundleError as exc:
        raise CliError(str(exc)) from None
    print(f"Exporting {bundle.card.display_name} (sha256 {bundle.card.short_sha}) to {fmt}: {out}", file=sys.stderr)
    try:
        result = export_model(bundle, fmt, out, check_images=args.check_images, tolerance=args.tolerance)
    except ExportError as exc:
        raise CliError(str(exc)) from None
    agree = result["agreement"]
    print(f"Wrote {result['path']} ({result['bytes'] / 2**20:.1f} MiB, sha256 {result['sha256'][:12]}) and "
          f"{result['sidecar']}", file=sys.stderr)
    print(f"Agreement with the Keras model on {result['check_images']}: max |dp| = {agree['max_abs_diff_p']:.2e} "
          f"(tolerance {agree['tolerance']:.0e})", file=sys.stderr)
    print(f"Input: float32 RGB 0..255, {bundle.input_size}x{bundle.input_size}; p(mpox) = sigmoid(logit / "
          f"{bundle.card.temperature:g}); threshold {bundle.card.threshold:.3f}", file=sys.stderr)
    return 0


def _attach(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.models.bundle import BundleError, resolve_bundle_dir
    from core.commands import CliError
    from core.models.export import ExportError, attach_light_runtime

    if args.out:
        raise CliError("--attach writes into the bundle; give no OUT file")
    if args.fmt not in (None, "tflite"):
        raise CliError("--attach supports --format tflite only (LiteRT is the runtime classify can use)")
    if args.check_images and not Path(args.check_images).is_dir():
        raise CliError(f"--check-images {args.check_images}: no such folder")
    try:
        bundle_dir = resolve_bundle_dir(args.model)
        result = attach_light_runtime(bundle_dir, args.check_images, tolerance=args.tolerance)
    except (BundleError, ExportError) as exc:
        raise CliError(str(exc)) from None
    agree = result["agreement"]
    print(f"Attached {result['path']} ({result['bytes'] / 2**20:.1f} MiB); agreement with the Keras model on "
          f"{result['check_images']}: max |dp| = {agree['max_abs_diff_p']:.2e} (tolerance {agree['tolerance']:.0e}). "
          "It now runs on LiteRT and numpy; MPOX_TRIAGE_RUNTIME=keras forces Keras.", file=sys.stderr)
    return 0
