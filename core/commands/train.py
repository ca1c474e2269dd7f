"""`mpox-triage train DATA --arch mobilenetv2|xception`: train, calibrate and save a model bundle.

DATA is a folder of class subfolders or a manifest CSV. A manifest's own split is kept unless
`--protocol` asks for a new one; a folder without a split is split group-aware (seeded).

Where the bundle goes: without `--out`, a new folder `<name>-<version>` in the user's model folder
(core.models.bundle.user_models_dir: $MPOX_TRIAGE_USER_MODELS_DIR, else the platform's per-user data folder),
never the install's models/. Training never writes over an existing bundle: an existing `--out` (or a
name and version already saved) is refused before training starts, unless `--force`; with `--force`
the previous bundle is kept whole beside it as `<out>.replaced-<time>` (its .tflite included), and a
shipped release is never replaced. Images that cannot be read are listed on the console.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from core import DISCLAIMER


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model bundle from labelled photos",
                       description=f"Train, calibrate on val and save a model bundle. {DISCLAIMER}")
    p.add_argument("data", help="folder of class subfolders (mpox/, other classes...) or a manifest CSV")
    p.add_argument("--arch", required=True, choices=["mobilenetv2", "xception"])
    p.add_argument("--out", help="new bundle folder to write (default: <name>-<version> in the user's model folder, "
                                 "$MPOX_TRIAGE_USER_MODELS_DIR or the platform's per-user data folder)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out bundle; the previous one is kept beside it as "
                        "<out>.replaced-<time> (never deleted; shipped releases are never replaced)")
    p.add_argument("--name", help="model name in the card (default: the architecture)")
    p.add_argument("--version", help="model version (default: UTC date and time)")
    p.add_argument("--preset", choices=["quick", "full", "study"], default="quick",
                   help="quick: head on cached features (minutes); full: + fine-tune top blocks with augmentation; "
                        "study: the original study's two-phase recipe (default: quick)")
    p.add_argument("--protocol", choices=["group", "study"],
                   help="make a new split: group (group-aware, stratified 70/15/15) or study (image-level random "
                        "60/10/30, for comparison only). Default: keep a manifest's split, else group")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="maximum head / phase-1 epochs (early stopping decides)")
    p.add_argument("--fine-tune-epochs", type=int, help="maximum fine-tuning epochs (full / study presets)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, help="input size in pixels (default: 224 MobileNetV2, 299 Xception)")
    p.add_argument("--feature-layer",
                   help="backbone layer pooled into the embedding, or 'top' for the whole backbone "
                        "(default: block_16_expand_relu for MobileNetV2, block14_sepconv1_act for Xception; docs/ablation.md)")
    p.add_argument("--views", help="comma-separated augmentation views for head training, e.g. "
                                   "identity,hflip,aug#0,aug#1 (default: identity,hflip,aug#0..aug#7)")
    p.add_argument("--n-aug", type=int, help="use identity, hflip and this many aug#k views")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--no-class-weight", action="store_true", help="do not weight classes by inverse frequency")
    p.add_argument("--lr", type=float, help="head learning rate (default 1e-3; study preset 1e-4)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--fine-tune-from", type=int, help="first unfrozen backbone layer (default 120 MobileNetV2, 100 Xception)")
    p.add_argument("--fine-tune-lr", type=float, help="fine-tuning learning rate (default 1e-5)")
    p.add_argument("--fine-tune-patience", type=int, help="fine-tuning early-stopping patience (default: study 1, full 3)")
    p.add_argument("--fine-tune-augment", choices=["aug", "augz", "none"], default="aug",
                   help="full preset: on-the-fly augmentation while fine-tuning (augz adds zoom-out)")
    p.add_argument("--sensitivity-margin", type=float, default=0.0,
                   help="aim for min-sensitivity + this on val, to keep a margin on new photos")
    p.add_argument("--uncertain-width", type=float, default=1.0,
                   help="uncertain band: calibrated logit within +-this of the threshold's (default 1.0)")
    p.add_argument("--min-sensitivity", type=float, default=0.90,
                   help="the threshold is the highest with at least this sensitivity on val (default 0.90)")
    p.add_argument("--strategy", choices=["mirrored", "multiworker"],
                   help="fine-tune (full / study presets) under tf.distribute: mirrored (this machine's devices) "
                        "or multiworker (one command per machine with TF_CONFIG; docs/scale.md)")
    p.add_argument("--parent", help="bundle this model derives from (recorded in the card)")
    p.add_argument("--weights-dir", help="folder with the ImageNet notop weight files")
    p.add_argument("--cache-dir", help="feature cache folder (default: $MPOX_TRIAGE_CACHE or ~/.cache/mpox-triage)")
    p.add_argument("--head", choices=["dense", "logistic"], default="dense",
                   help="quick preset: dense (Dropout + Dense, early stopping on val) or logistic (L2 logistic "
                        "regression on signed-square-rooted embeddings: the 1.2.0 recipe, with --c 0.01)")
    p.add_argument("--c", dest="head_c", type=float, help="with --head logistic: inverse L2 strength (1.2.0: 0.01)")
    p.add_argument("--no-test", action="store_true", help="do not score the test split after training")
    p.add_argument("--no-transfer", action="store_true",
                   help="skip the leave-one-collection-out estimate (quick preset, data from 2+ sources)")
    p.add_argument("--plots", help="folder for val (and test) plots: ROC, confusion, reliability, training curves")
    p.add_argument("--json", dest="json_path", help="write val/test metrics as JSON here")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--session", help="session folder whose audit log records this retrain")
    # Tests and demos: a tiny random backbone ("tiny:32") instead of ImageNet weights.
    p.add_argument("--base-model", help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
    p.set_defaults(run=run)


def _printer(quiet: bool):
    last = [0.0, ""]

    def show(p) -> None:
        if quiet:
            return
        now = time.monotonic()
        # One line per stage change or every 5 s (epochs are printed by on_epoch): readable in logs.
        if p.stage != last[1] or now - last[0] > 5:
            if p.total:
                print(f"[{p.stage}] {p.done}/{p.total} {p.message}", file=sys.stderr)
            last[0], last[1] = now, p.stage

    return show


def run(args: argparse.Namespace) -> int:
    from core.models.tf_runtime import require_tensorflow

    require_tensorflow("training")  # before reading any data: one line, what to install
    from core.models.bundle import BundleError, check_save_target, load_bundle, new_bundle_dir
    from core.models.releases import find_release
    from core.commands import CliError
    from core.learning.datasets import DatasetError, load_dataset, split_dataset
    from core.learning.evaluation import save_json, save_plots
    from core.learning.augment import default_views
    from core.models.backbones import FeatureLayerError, WeightsNotFoundError
    from core.learning.training import TrainConfig, save_trained, train_model

    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    if not 0.0 < args.min_sensitivity <= 1.0:
        raise CliError("--min-sensitivity must be in (0, 1]")
    views = None
    if args.views:
        views = [v.strip() for v in args.views.split(",") if v.strip()]
    elif args.n_aug is not None:
        views = default_views(args.n_aug)
    name = args.name or args.arch
    version = args.version or datetime.now(timezone.utc).strftime("%Y.%m.%d-%H%M")
    release = find_release(name, version)
    if release is not None:
        raise CliError(f"{name} {version} is a shipped release; give the new model another --version (or --name)")
    out = Path(args.out).expanduser() if args.out else new_bundle_dir(name, version)
    from core.commands import check_outputs

    data = Path(args.data).expanduser()
    # The output policy (core.store.outputs): no output in DATA or inside a bundle; --out is a bundle folder.
    check_outputs([("--out", out), ("--json", args.json_path), ("--plots", args.plots)],
                  folder=data if data.is_dir() else None, inputs=[data], dirs=("--plots",), bundles=("--out",))
    try:  # refuse before training, not after it
        check_save_target(out, replace=args.force)
    except BundleError as exc:
        hint = "" if args.out else "; give another --version (or --out)"
        raise CliError(f"{exc}{hint}") from None
    if args.session:  # a damaged, read-only or wrong session is refused now, not after training
        from core.store.session import SessionError, SessionStore

        try:
            SessionStore.open(Path(args.session).expanduser()).close()
        except SessionError as exc:
            raise CliError(f"--session: {exc}") from None
    try:
        ds = load_dataset(args.data)
        if args.protocol or not ds.has_splits():
            ds = split_dataset(ds, args.protocol or "group", seed=args.seed, progress=_printer(args.quiet))
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    _report_lines(ds.warnings, "folder{s} or link{s} could not be read or lead outside the data and {were} left out")
    parent = None
    if args.parent:
        try:
            parent = load_bundle(args.parent).card
        except BundleError as exc:
            raise CliError(f"--parent: {exc}") from None
    try:
        config = TrainConfig(args.arch, preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
                             seed=args.seed, input_size=args.input_size, feature_layer=args.feature_layer,
                             weights_dir=args.weights_dir,
                             name=name, version=version, views=views, head_lr=args.lr,
                             label_smoothing=args.label_smoothing, class_weight=not args.no_class_weight,
                             fine_tune_epochs=args.fine_tune_epochs, min_sensitivity=args.min_sensitivity,
                             cache_dir=args.cache_dir, base_model=args.base_model, n_bootstrap=args.bootstrap,
                             dropout=args.dropout, fine_tune_from=args.fine_tune_from, fine_tune_lr=args.fine_tune_lr,
                             fine_tune_patience=args.fine_tune_patience,
                             fine_tune_augment=args.fine_tune_augment, sensitivity_margin=args.sensitivity_margin,
                             uncertain_logit_width=args.uncertain_width, transfer=not args.no_transfer,
                             score_test=not args.no_test, strategy=args.strategy, head=args.head,
                             head_c=args.head_c)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    counts = ds.counts()
    print(f"Training {args.arch} ({args.preset}) on {len(ds)} images; split {ds.split_info.get('protocol', '?')}: "
          + ", ".join(f"{k} {v.get('mpox', 0)} mpox / {v.get('not_mpox', 0)} other" for k, v in sorted(counts.items())),
          file=sys.stderr)

    def on_epoch(e) -> None:
        if not args.quiet:
            val = f" val_loss {e.val_loss:.4f} val_acc {e.val_accuracy:.3f}" if e.val_loss is not None else ""
            print(f"  {e.phase} epoch {e.epoch}: loss {e.loss:.4f} acc {e.accuracy:.3f}{val}", file=sys.stderr)

    started = time.monotonic()
    try:
        result = train_model(ds, config, progress=_printer(args.quiet), on_epoch=on_epoch, parent=parent)
    except (DatasetError, WeightsNotFoundError, FeatureLayerError) as exc:
        raise CliError(str(exc)) from None
    card = result.card
    report = {"val": result.val_metrics}
    if "transfer" in card.metrics:
        report["transfer"] = card.metrics["transfer"]
    if result.test_report is not None:  # scored once by core.learning.training after every choice was made on val
        report["test"] = result.test_report
    _report_lines(result.unreadable, "image{s} could not be read and {were} skipped",
                  "listed in the model card's training_data.unreadable_files")
    try:
        path = save_trained(result, out, replace=args.force)
    except BundleError as exc:
        raise CliError(f"{exc} (the trained model was not saved)") from None
    if result.replaced_path is not None:
        print(f"The previous bundle at {path} was kept, whole, at {result.replaced_path}", file=sys.stderr)
    if args.session:
        from core.store.session import ACTION_RETRAIN, SessionError, SessionStore
        from core.learning.training import retrain_audit_details

        try:
            with SessionStore.open(Path(args.session).expanduser()) as store:
                store.log(ACTION_RETRAIN, retrain_audit_details(card, path))
        except (SessionError, OSError) as exc:
            raise CliError(f"the model was saved to {path}, but the retrain could not be recorded in the session: "
                           f"{exc}") from None
    elapsed = time.monotonic() - started
    vm = result.val_metrics
    print(f"Saved {card.name} {card.version} to {path} ({elapsed:.0f} s). Threshold {card.threshold:.3f} "
          f"(val sensitivity {vm['sensitivity']:.3f}, specificity {vm['specificity']:.3f}), temperature "
          f"{card.temperature:.2f}, val ROC-AUC {vm['roc_auc']:.3f}, val ECE {vm['ece']:.3f}", file=sys.stderr)
    if "test" in report:
        tm = report["test"]
        ci = (tm.get("ci95") or {}).get("accuracy")  # absent with --bootstrap 0
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        print(f"Test: accuracy {tm['accuracy']:.3f}{interval}, "
              f"ROC-AUC {tm['roc_auc']:.3f}, sensitivity {tm['sensitivity']:.3f}, specificity "
              f"{tm['specificity']:.3f}, ECE {tm['ece']:.3f}", file=sys.stderr)
    for key, t in card.metrics.get("transfer", {}).items():
        if isinstance(t, dict):
            print(f"Transfer {key} ({t['n']} photos, train and val): ROC-AUC {t['roc_auc']:.3f}, sensitivity "
                  f"{t['sensitivity']:.3f}, specificity {t['specificity']:.3f} at that collection's own threshold",
                  file=sys.stderr)
    if args.json_path:
        save_json({"model": {"name": card.name, "version": card.version, "sha256": card.model_sha256,
                             "path": str(path)}, **report, "history": card.training["history"]}, args.json_path)
    if args.plots:
        history = card.training["history"]
        save_plots(result.val_labels, _calibrated(result), card.threshold, Path(args.plots) / "val",
                   history=history, title=f"{card.name} val")
        if "test" in report:
            preds = report["test"]["predictions"]
            save_plots([p["label"] for p in preds], [p["p_mpox"] for p in preds], card.threshold,
                       Path(args.plots) / "test", title=f"{card.name} test")
    return 0


def _report_lines(lines: list[str], what: str, where: str = "", show: int = 5) -> None:
    """Say on the console (even with --quiet) how many things were left out, naming the first few."""
    if not lines:
        return
    n = len(lines)
    print(f"Warning: {n} " + what.format(s="s" if n != 1 else "", were="were" if n != 1 else "was") + ":",
          file=sys.stderr)
    for line in lines[:show]:
        print(f"  {line}", file=sys.stderr)
    if n > show:
        print(f"  ... and {n - show} more" + (f" ({where})" if where else ""), file=sys.stderr)


def _calibrated(result):
    from core.models.calibration import apply_temperature

    return apply_temperature(result.val_logits, result.card.temperature)
