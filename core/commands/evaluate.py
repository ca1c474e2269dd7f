"""`mpox-triage evaluate DATA --model NAME`: measure a bundle on labelled photos (JSON and PNG plots).

DATA is a folder of class subfolders or a manifest CSV. With a split (a manifest's `split`
column, or train/val/test folders) only `--split` (default `test`) is scored; `--split all`
scores everything.

`--protocol cv5|loco` instead measures the training recipe (not a bundle): group-aware 5-fold
cross-validation, or leave-one-collection-out (train on one collection, score the other), on the
cached frozen embeddings of DATA's train and val photos (the test split is left untouched), with
means and 95% intervals over the folds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

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
    p.add_argument("--protocol", choices=("cv5", "loco"),
                   help="measure the training recipe instead of a bundle: group-aware 5-fold CV or "
                        "leave-one-collection-out, on the train+val photos (test untouched)")
    p.add_argument("--arch", default="combined", help="with --protocol: mobilenetv2, xception or combined")
    p.add_argument("--head", default="logistic", choices=("logistic", "dense"), help="with --protocol: head recipe")
    p.add_argument("--C", dest="head_c", type=float, help="with --protocol: logistic head L2 strength "
                                                          "(default: the shipped recipe's)")
    p.add_argument("--views", default="identity,hflip", help="with --protocol: training views")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", help="also measure triage per case (patient or visit): 'regex:PATTERN' on the file "
                                   "name or 'column:NAME' of the manifest; a case is mpox if any photo is labelled "
                                   "mpox, and goes to review if any photo does (subfolders are the classes here)")
    p.set_defaults(run=run)


def protocol_features(data: str, arch: str, views: list[str], progress=None):
    """(embeddings (N, V, D), labels, groups, sources) of DATA's train+val photos (all photos when unsplit)."""
    from core.learning.datasets import load_dataset
    from core.learning.features import FeatureExtractor

    from core.models.tf_runtime import tensorflow_available

    ds = load_dataset(data)
    if ds.has_splits():
        ds.samples = [s for s in ds.samples if s.split in ("train", "val")]
    arches = ["mobilenetv2", "xception"] if arch == "combined" else [arch]
    # Without TensorFlow (the default install) the embeddings come from the installed bundles' LiteRT backbones.
    extractors = ([FeatureExtractor(a) for a in arches] if tensorflow_available()
                  else [runtime_extractor(a) for a in arches])
    parts = [fx.embed(ds, views, progress) for fx in extractors]
    x = np.concatenate(parts, axis=-1)
    ok = ~np.isnan(x.reshape(len(x), -1)).any(axis=1)
    samples = [s for s, good in zip(ds.samples, ok) if good]
    return (x[ok], np.array([s.y for s in samples]), [s.group or str(s.path) for s in samples],
            [s.source for s in samples])


def runtime_extractor(arch: str):
    """A core.learning.features.RuntimeFeatureExtractor over the installed bundle named `arch` (the shipped release's
    name), when it runs on LiteRT and was trained on its frozen backbone; CliError (one line) otherwise."""
    from core.models.bundle import BundleError, load_bundle
    from core.commands import CliError
    from core.learning.features import RuntimeFeatureExtractor
    from core.models.tf_runtime import TRAIN_EXTRA_HINT

    try:
        bundle = load_bundle(arch)
    except BundleError as exc:
        raise CliError(f"--protocol without TensorFlow takes its {arch} embeddings from the installed {arch} model, "
                       f"which cannot be used: {exc}") from None
    preset = bundle.card.training.get("preset") if isinstance(bundle.card.training, dict) else None
    if bundle.runtime is None or getattr(bundle.runtime, "features", None) is None or preset != "quick":
        raise CliError(f"--protocol without TensorFlow needs the installed {arch} model to carry a LiteRT backbone "
                       f"trained frozen (release 1.3.0 or later); {bundle.card.display_name} does not. Or install "
                       f"TensorFlow: {TRAIN_EXTRA_HINT}")
    return RuntimeFeatureExtractor(bundle)


def recipe(head: str, C: float | None):
    """The head recipe as fit(x (n, V, D), y) -> (x (m, D) -> logits)."""
    if head == "logistic":
        from core.models.heads import DEFAULT_C, fit_logistic

        return lambda x, y: fit_logistic(x, y, C=C or DEFAULT_C).logits

    from core.models.tf_runtime import require_tensorflow

    require_tensorflow("--head dense (a Keras head)")  # one line; --head logistic runs without it

    def fit(x, y):
        from sklearn.model_selection import train_test_split

        from core.learning.training import train_head

        tr, va = train_test_split(np.arange(len(y)), test_size=0.15, stratify=y, random_state=0)
        model, _, _ = train_head(x[tr], y[tr], x[va][:, 0], y[va])
        return lambda z: np.asarray(model(z.astype(np.float32), training=False), dtype=np.float64).reshape(-1)
    return fit


def run_protocol(args: argparse.Namespace) -> int:
    from core.commands import CliError
    from core.commands.train import _printer
    from core.learning.datasets import DatasetError
    from core.learning.evaluation import recipe_protocol, save_json

    if args.arch not in ("mobilenetv2", "xception", "combined"):
        raise CliError(f"--arch must be mobilenetv2, xception or combined, got {args.arch!r}")
    views = [v for v in args.views.split(",") if v]
    if not views or views[0] != "identity":
        views = ["identity"] + [v for v in views if v != "identity"]
    _check_outputs(args)
    fit = recipe(args.head, args.head_c)  # before the embeddings: a head this install cannot fit says so first
    started = time.monotonic()
    try:
        x, y, groups, sources = protocol_features(args.data, args.arch, views, _printer(args.quiet))
    except (DatasetError, ValueError) as exc:
        raise CliError(str(exc)) from None
    try:
        res = recipe_protocol(x, y, groups, sources, args.protocol, fit, seed=args.seed,
                              progress=_printer(args.quiet))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from core.models.heads import DEFAULT_C
    from core.models.portable import portable_path
    from core.models.tf_runtime import tensorflow_available

    # The C actually used (the default when none was given), and the data as the card may record it.
    res["recipe"] = {"arch": args.arch, "head": args.head,
                     "C": (args.head_c or DEFAULT_C) if args.head == "logistic" else args.head_c, "views": views,
                     "data": portable_path(args.data), "photos": int(len(y)), "test_split_used": False,
                     "embeddings": "keras" if tensorflow_available() else "litert (the installed bundles' backbones)",
                     "time_s": round(time.monotonic() - started, 1)}
    print(f"{args.protocol} of the {args.head} head on {args.arch} embeddings ({len(y)} train+val photos; "
          f"test untouched). {DISCLAIMER}", file=sys.stderr)
    print(f"{'fold':<24} {'n':>5} {'ROC-AUC [95% CI]':>22} {'sensitivity [95% CI]':>22} "
          f"{'specificity [95% CI]':>22} {'ECE':>6}")

    def cell(r, k):
        lo, hi = (r.get("ci95") or {}).get(k) or [float("nan")] * 2
        return f"{r[k]:.3f} [{lo:.3f}, {hi:.3f}]"
    for r in res["folds"]:
        print(f"{r['fold']:<24} {r['n']:>5} {cell(r, 'roc_auc'):>22} {cell(r, 'sensitivity'):>22} "
              f"{cell(r, 'specificity'):>22} {r['ece']:>6.3f}")
    for k, m in res["mean"].items():
        print(f"mean {k:<12} {m['mean']:.3f}  95% CI [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] over {m['n']} folds"
              + (" (t-interval over 2 folds: uninformative; read each fold's)" if m["n"] == 2 else ""))
    if args.json_path:
        save_json(res, args.json_path)
        print(f"JSON: {args.json_path}", file=sys.stderr)
    return 0


def _check_outputs(args: argparse.Namespace, photos=()) -> None:
    """The output policy (core.store.outputs) on --json and --plots: never DATA (or inside it), a photo, any bundle."""
    from core.commands import check_outputs

    data = Path(args.data).expanduser()
    check_outputs([("--json", args.json_path), ("--plots", args.plots)],
                  folder=data if data.is_dir() else None, inputs=[data, *photos], dirs=("--plots",))


def _grouping(text: str | None, data: str):
    """--cases as a core.store.cases.Grouping (None without it); a bad value or `subfolder` is one line, exit 2."""
    if not text:
        return None
    from core.store.cases import CaseError, Grouping
    from core.commands import CliError

    try:
        grouping = Grouping.parse(text)
    except CaseError as exc:
        raise CliError(str(exc)) from None
    if grouping.kind == "subfolder":
        raise CliError("--cases subfolder: in evaluate the first-level subfolders are the classes; group cases with "
                       "'regex:PATTERN' or 'column:NAME'")
    folder = Path(data).expanduser()
    if grouping.kind == "column" and folder.is_dir() and not (folder / "manifest.csv").is_file():
        raise CliError(f"--cases {grouping.text} needs a manifest: {folder} is a folder without manifest.csv")
    return grouping


def run(args: argparse.Namespace) -> int:
    from core.models.bundle import BundleError, load_bundle
    from core.commands import CliError
    from core.commands.train import _printer
    from core.learning.datasets import DatasetError, load_dataset
    from core.learning.evaluation import evaluate_bundle, save_json, save_plots

    if args.protocol:
        return run_protocol(args)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}")
    grouping = _grouping(args.cases, args.data)
    try:
        ds = load_dataset(args.data)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    _check_outputs(args, [s.path for s in ds.samples])
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
    try:
        result = evaluate_bundle(bundle, ds, progress=_printer(args.quiet), n_bootstrap=args.bootstrap,
                                 threshold=args.threshold, batch_size=args.batch_size)
    except ValueError as exc:
        raise CliError(f"{args.data}: {exc}") from None
    result["data"] = {"source": str(args.data), "split": where, "n_images": len(ds),
                      "time_s": round(time.monotonic() - started, 1)}
    print(f"{'metric':<12} {'value':>7}  95% CI   (over the {result['n']} photos with an mpox / not-mpox call)",
          file=sys.stderr)
    for k in SHOWN:
        lo, hi = result["ci95"].get(k, [float("nan")] * 2)
        print(f"{k:<12} {result[k]:>7.3f}  [{lo:.3f}, {hi:.3f}]")
    t = result["triage"]
    for k in ("triage_sensitivity", "triage_specificity"):
        lo, hi = t[k + "_ci95"]
        print(f"{k:<19} {t[k]:>7.3f}  [{lo:.3f}, {hi:.3f}]  ({t['meaning'][k]})")
    if grouping is not None:
        from core.store.cases import CaseError, evaluation_cases

        try:
            result["cases"] = cases = evaluation_cases(result["predictions"], grouping, args.data)
        except CaseError as exc:
            raise CliError(str(exc)) from None
        for k in ("triage_sensitivity", "triage_specificity"):
            lo, hi = cases[k + "_ci95"]
            print(f"{'case_' + k:<19} {cases[k]:>7.3f}  [{lo:.3f}, {hi:.3f}]  ({cases['n_cases']} cases: "
                  f"{cases['n_mpox_cases']} mpox, {cases['n_other_cases']} other)")
    c, none = result["confusion"], result["no_call"]
    print(f"confusion (threshold {result['threshold']:.3f}; photos with a call): TN {c['tn']} FP {c['fp']} "
          f"FN {c['fn']} TP {c['tp']}; flagged uncertain {result['flags']['uncertain']}")
    print(f"no call (out of scope): {none['out_of_scope']} photos ({none['n_mpox']} mpox, {none['n_other']} other), "
          "outside accuracy and the confusion matrix; they go to review")
    if result["errors"]:
        print(f"warning: {len(result['errors'])} image(s) could not be read, e.g. {result['errors'][0]['error']}",
              file=sys.stderr)
    if args.json_path:
        save_json(result, args.json_path)
        print(f"JSON: {args.json_path}", file=sys.stderr)
    if args.plots:
        from core.records import CALLS

        preds = [p for p in result["predictions"] if p["prediction"] in CALLS]   # the confusion's photos
        files = save_plots([p["label"] for p in preds], [p["p_mpox"] for p in preds], result["threshold"],
                           Path(args.plots), history=card.training.get("history"), title=f"{card.name} {where}")
        print(f"Plots: {', '.join(str(f) for f in files.values())}", file=sys.stderr)
    return 0
