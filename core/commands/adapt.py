"""`mpox-triage adapt --model NAME (--labelled FOLDER | --session DIR) --out DIR`: adapt a bundle to a site.

Trains a new head on the bundle's own training embeddings plus the site's labelled photos (site
weight, temperature and threshold from cross-validation on the site photos; see core/learning/adapt.py),
prints the cross-validated site figures next to the parent's on the same photos, and saves a new
bundle into `--out` (a new folder, never a shipped bundle). `--suggest N` instead lists the photos of the
labelling sample still to label (a seeded random sample of the folder, grown until it holds adapt's
minimum of each class; core.triage.labelling.labelling_sample).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import DISCLAIMER
from core.commands import warn
from core.records import console_text


def add_parser(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a model to a site's reviewed photos",
                       description=f"Adapt a model bundle to a site's own labelled photos. {DISCLAIMER}")
    p.add_argument("--model", default="mobilenetv2", help="bundle name in models/ or a bundle folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labelled", help="folder of class subfolders (same naming rules as `train`)")
    src.add_argument("--session", help="session folder: its reviewed labels are used (unsure ones left out)")
    src.add_argument("--pool", help="with --suggest: a folder of unlabelled photos to choose from")
    p.add_argument("--out", help="new bundle folder (must not exist unless --force; never a shipped bundle)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (never a shipped bundle)")
    p.add_argument("--name", help="name in the new card (default: NAME-site)")
    p.add_argument("--version", help="version in the new card (default: parent version +site.DATE)")
    p.add_argument("--min-sensitivity", type=float, default=0.90)
    p.add_argument("--accept-worse", action="store_true",
                   help="keep an adapted model whose cross-validated site ROC-AUC is below 0.6 or below the parent's")
    p.add_argument("--suggest", type=int, metavar="N", nargs="?", const=-1,
                   help="list the photos of the N-photo labelling sample still to label, then stop (N omitted: "
                        "the size that reaches 10 of each class at the model's expected share of mpox)")
    p.add_argument("--order", choices=("random", "stratified", "medoids", "uncertainty"), default=None,
                   help="order for --suggest (default random: the labelling sample; the others are for the bench, "
                        "see docs/adaptation.md)")
    p.add_argument("--include-out-of-scope", action="store_true",
                   help="also learn from labelled photos the scope check says are not skin photos")
    p.add_argument("--json", dest="json_path", help="write the adaptation report (or suggestions) as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def _session_items(session_dir: str) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """(reviewed (path, label, SHA-256 the review labelled) without 'unsure', unreviewed paths scored in the
    session). The session is opened read-only: adapt never writes to it."""
    from core.store.session import SessionError, SessionStore

    try:
        store = SessionStore.open_read_only(session_dir)
    except SessionError as exc:
        from core.commands import CliError

        raise CliError(str(exc)) from None
    try:
        reviews = store.reviews()
        scored = [rec.path for rec in store.results() if rec.status == "ok"]
    finally:
        store.close()
    labelled = [(p, r["label"], r.get("file_sha256")) for p, r in reviews.items() if r["label"] in ("mpox", "not_mpox")]
    reviewed = set(reviews) - {p for p, r in reviews.items() if r["label"] == "unsure"}
    return labelled, [p for p in dict.fromkeys(scored) if p not in reviewed]


def _session_folder(session_dir: str) -> str | None:
    """The photo folder the session's latest run scored (the labelling sample's seed, as the app's), or None."""
    from core.store.session import SessionError, SessionStore

    try:
        store = SessionStore.open_read_only(session_dir)
    except SessionError:
        return None
    try:
        folders = [r.get("folder") for r in store.runs() if r.get("folder")]
    finally:
        store.close()
    return folders[-1] if folders else None


def _point(p: dict) -> str:
    lo, hi = p["uncertain_band"]
    return f"threshold {p['threshold']:.3f}, uncertain band [{lo:.3f}, {hi:.3f}]"


def run(args: argparse.Namespace) -> int:
    from core.learning.adapt import AdaptError, adapt_bundle, check_out_dir, save_adapted
    from core.triage.labelling import DEFAULT_ORDER, sample_paths, suggest_paths
    from core.triage.remedy import labelling_sample_size
    from core.models.bundle import BundleError, load_bundle
    from core.commands import CliError
    from core.commands.train import _printer
    from core.learning.datasets import DatasetError, dataset_from_labels, load_folder_dataset
    from core.learning.evaluation import save_json

    progress = _printer(args.quiet)
    if args.suggest is None and not args.out:
        raise CliError("--out DIR is required (a new folder for the adapted model)")
    if args.suggest is not None and (args.suggest == 0 or args.suggest < -1):
        raise CliError(f"--suggest {args.suggest}: give how many photos to suggest (1 or more)")
    if args.suggest is None and args.pool:
        raise CliError("--pool is for --suggest; adapt with --labelled FOLDER or --session DIR")
    from core.commands import check_outputs
    from core.store.outputs import session_files

    # The output policy (core.store.outputs) on --out (a bundle folder) and --json, before any slow work.
    check_outputs([("--out", args.out), ("--json", args.json_path)], inputs=[p for p in (args.labelled, args.pool)
                  if p], protected=session_files(args.session), bundles=("--out",))
    if args.out:
        try:
            check_out_dir(args.out, args.force)  # refuse before any slow work
        except AdaptError as exc:
            raise CliError(str(exc)) from None
    try:
        bundle = load_bundle(args.model)
    except BundleError as exc:
        raise CliError(str(exc)) from None

    if args.suggest is not None:
        labelled = []
        if args.session:
            labelled, pool = _session_items(args.session)
            labelled_paths = [p for p, _, _ in labelled]
        elif args.pool:
            from core.photos.images import discover_images

            if not Path(args.pool).is_dir():
                raise CliError(f"{args.pool}: not a folder; --pool takes a folder of unlabelled photos")
            errors: list[str] = []
            pool, labelled_paths = [str(p) for p in discover_images(Path(args.pool), errors)], []
            for e in errors:
                warn(e)
        else:
            raise CliError("--suggest needs --session DIR (its unreviewed photos) or --pool FOLDER")
        if not pool:
            raise CliError("no unreviewed photos to choose from")
        order = args.order or DEFAULT_ORDER
        n = args.suggest if args.suggest > 0 else labelling_sample_size(bundle.card)
        reason = ""
        if order == "random":
            folder = _session_folder(args.session) if args.session else args.pool
            session_store = None
            if args.session:   # the sample the app keeps there stays first (read-only: adapt writes nothing)
                from core.store.session import SessionError, SessionStore

                try:
                    session_store = SessionStore.open_read_only(args.session)
                except SessionError:
                    session_store = None
            try:
                picks, sample = sample_paths(pool, n, {p: int(lab == "mpox") for p, lab, _ in labelled},
                                             folder=folder, session=session_store)
            finally:
                if session_store is not None:
                    session_store.close()
            reason = sample.reason
            print(f"The labelling sample: {sample.size} photos of this folder drawn at random (seeded by the folder, "
                  f"blind to class and score; {sample.counts['mpox']} mpox and {sample.counts['not_mpox']} not-mpox "
                  f"labelled so far); label these {len(picks)}:", file=sys.stderr)
            if reason:
                print(reason, file=sys.stderr)
        else:
            picks = suggest_paths(bundle, pool, n, labelled_paths, progress=progress, order=order, seed=args.seed)
            how = {"stratified": "spread over the model's score range, widest gap first",
                   "medoids": "photos that stand for many others (k-means medoids of the embeddings)",
                   "uncertainty": "nearest the decision boundary, kept diverse"}[order]
            print(f"Label these {len(picks)} of {len(pool)} unreviewed photos next ({how}; "
                  f"{bundle.card.display_name}):", file=sys.stderr)
        for item in picks:
            score = "" if item["p_mpox"] is None else f"p={item['p_mpox']:.3f}  "
            print(f"{item['rank']:>3}  {score}{console_text(str(item['path']))}")
        if args.json_path:
            save_json({"model": bundle.card.display_name, "order": order, "n": n, "reason": reason,
                       "suggestions": picks}, args.json_path)
        return 0

    from core.learning.adapt import class_name_problem

    review_sha = None
    try:
        if args.labelled:
            ds = load_folder_dataset(args.labelled)
            site_label = str(args.labelled)
            if class_name_problem(ds):
                raise CliError(f"{args.labelled}: {class_name_problem(ds)}")
        else:
            labelled, _ = _session_items(args.session)
            if not labelled:
                raise CliError(f"{args.session}: no reviewed photos (mpox / not_mpox) in this session")
            ds = dataset_from_labels([(p, label) for p, label, _ in labelled], source="session")
            review_sha = [sha for _, _, sha in labelled]
            site_label = f"session {args.session}"
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    paths = [s.path for s in ds.samples]
    labels = [s.y for s in ds.samples]
    groups = [s.group for s in ds.samples]
    from core.learning.adapt import check_site

    try:
        check_site(paths, labels, groups, review_sha)   # one line, before the slow work (adapt_bundle checks again)
    except AdaptError as exc:
        raise CliError(str(exc)) from None
    print(f"Adapting {bundle.card.display_name} to {len(paths)} site photos ({sum(labels)} mpox). {DISCLAIMER}",
          file=sys.stderr)
    try:
        result = adapt_bundle(bundle, paths, labels, groups, name=args.name, version=args.version,
                              min_sensitivity=args.min_sensitivity, seed=args.seed, site_label=site_label,
                              review_sha256=review_sha, accept_worse=args.accept_worse,
                              include_out_of_scope=args.include_out_of_scope, progress=progress)
    except AdaptError as exc:
        raise CliError(str(exc)) from None
    rep = result.report
    for w in result.warnings:
        warn(w)

    def line(label: str, m: dict) -> str:
        if not m:
            return f"{label:<34} (not measured)"
        ci = m.get("ci95", {}).get("roc_auc", [float("nan")] * 2)
        return (f"{label:<34} ROC-AUC {m['roc_auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  sensitivity "
                f"{m['sensitivity']:.3f}  specificity {m['specificity']:.3f}  (n={m['n']})")

    op = rep["operating_point"]
    print(f"site weight {rep['site_weight']:g} (cross-validated), threshold {result.card.threshold:.3f}")
    chosen = op["adapted"]
    where = "chosen on the site photos" if chosen["source"] == "site" else "the parent's out-of-collection point, kept"
    print(f"operating point: {_point(chosen)} ({where}); triage sensitivity {chosen['triage_sensitivity']:.3f}, "
          f"triage specificity {chosen['triage_specificity']:.3f} on cross-validated site predictions")
    if chosen["source"] != "site":
        print(f"why: {chosen['reason']}")
    ooc = (result.card.extra or {}).get("operating_points", {}).get("out_of_collection", {})
    print(f"out-of-collection point (photos from a third place, under a shift alarm): {_point(ooc)} "
          f"(from the {ooc.get('from', 'parent')})")
    print(line("site, parent model", rep["site_parent"]))
    print(line("site, adapted (cross-validated)", rep["site_cv"]))
    print(line("base val, parent", rep["base_val_before"]))
    print(line("base val, adapted", rep["base_val_after"]))
    print("learning curve (site photos per fold -> CV ROC-AUC): "
          + ", ".join(f"{c['k_site']}: {c['cv_roc_auc']:.3f}" for c in rep["learning_curve"]))
    from core.models.bundle import replaced_bundle_dir

    target = Path(args.out).expanduser().resolve()
    keep = replaced_bundle_dir(target) if args.force and target.exists() else None
    try:
        out = save_adapted(result, args.out, force=args.force, keep_previous_as=keep)
    except (AdaptError, BundleError) as exc:
        raise CliError(str(exc)) from None
    print(f"Saved {result.card.display_name} to {out}", file=sys.stderr)
    if keep is not None:
        print(f"The model that was there is kept at {keep}", file=sys.stderr)
    if args.json_path:
        save_json(rep, args.json_path)
        print(f"JSON: {args.json_path}", file=sys.stderr)
    return 0

