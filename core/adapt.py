"""Adapting a bundle to a site's own reviewed photos, without the original training photos.

A bundle of release 1.2.0 or later carries the embeddings of its training and validation photos
(`embeddings.npz`, core.features.load_embeddings). Adapting embeds the site's labelled photos with
the bundle's own backbone(s) and fits a new logistic head (core.heads) on the base training
embeddings plus the site photos, each site photo weighted `w` times a base photo:

- `w` is chosen by cross-validation on the site photos (stratified, group-aware folds; every
  fold's model is trained on all base photos plus the other folds' site photos and scores the
  held-out site photos), as the weight with the best cross-validated site ROC-AUC;
- the threshold comes from those cross-validated site predictions (the highest with sensitivity
  >= 0.90 there; lowered, if needed, to keep >= 0.90 on the base val photos too), the temperature from them plus the final head's logits on the base val photos
  (held out from fitting); never from photos a model was trained on;
- the card records the parent bundle, the site photo counts, the cross-validated site metrics
  with bootstrap 95% intervals next to the parent's own scores on the same photos, the base
  validation metrics before and after (forgetting check) and a learning curve (cross-validated site
  ROC-AUC against the number of site photos used).

Fewer than MIN_PER_CLASS photos of either class is refused (the message says how many more are
needed); fewer than ROUGH_BELOW adapts but warns that the site figures are rough.
`suggest_next` orders unlabelled photos for review: nearest the decision boundary first, kept
diverse (greedy k-center on the embeddings among the most uncertain).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.progress import CancelToken, ProgressFn, report

MIN_PER_CLASS = 10
ROUGH_BELOW = 30
SITE_WEIGHTS = (1.0, 3.0, 10.0, 30.0)
SITE_SOURCE = "site"


class AdaptError(ValueError):
    """Adaptation cannot run (too few photos, a bundle without embeddings, ...); the message says why."""


# -- data ------------------------------------------------------------------------------------------

def base_embeddings(bundle) -> dict[str, np.ndarray]:
    """The bundle's own training/validation embeddings (verified against its card), or AdaptError."""
    from core.features import load_embeddings

    data = load_embeddings(bundle)
    if not data:
        raise AdaptError(f"{bundle.card.display_name} carries no embeddings.npz (bundles before release 1.2.0); "
                         "adapt needs a bundle that carries its training embeddings")
    return data


def count_problem(y: Sequence[int]) -> str | None:
    """One line saying how many more photos are needed, or None when there are enough."""
    y = np.asarray(y).astype(int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    need = [f"{MIN_PER_CLASS - n} more {name}" for n, name in ((n_pos, "mpox"), (n_neg, "not-mpox"))
            if n < MIN_PER_CLASS]
    if not need:
        return None
    return (f"adapting needs at least {MIN_PER_CLASS} labelled photos of each class; have {n_pos} mpox and "
            f"{n_neg} not-mpox: label {' and '.join(need)} photos")


def count_warnings(y: Sequence[int]) -> list[str]:
    y = np.asarray(y).astype(int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if min(n_pos, n_neg) < ROUGH_BELOW:
        return [f"only {n_pos} mpox and {n_neg} not-mpox site photos: the site figures are rough (wide intervals); "
                f"{ROUGH_BELOW}+ of each class give usable ones"]
    return []


def embed_photos(bundle, paths: Sequence[str | os.PathLike], batch_size: int = 16, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(logits (N,), embeddings (N, D), ok mask (N,), errors) of photos under the bundle's own model.

    Photos are decoded as the classify engine decodes them (core.inference.load_input: once per input size
    of the bundle), so a site photo's parent logit is the one classify gave it."""
    from core.inference import load_input, stack_inputs

    sizes = tuple(getattr(bundle, "input_sizes", (bundle.input_size,)))
    paths = [Path(p) for p in paths]
    logits = np.full(len(paths), np.nan)
    embs: list[np.ndarray | None] = [None] * len(paths)
    errors: list[str] = []
    for start in range(0, len(paths), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        idx, arrays = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            arr, _, err, _ = load_input(paths[i], sizes)
            if arr is None:
                errors.append(f"{paths[i]}: {err}")
            else:
                idx.append(i)
                arrays.append(arr)
        if arrays:
            z, e = bundle.forward(stack_inputs(arrays))
            for j, i in enumerate(idx):
                logits[i] = z[j]
                embs[i] = np.asarray(e[j], dtype=np.float32)
        report(progress, min(start + batch_size, len(paths)), len(paths), "embedding site photos", "adapt")
    ok = np.array([e is not None for e in embs], dtype=bool)
    dim = next((e.shape[0] for e in embs if e is not None), 0)
    out = np.stack([e if e is not None else np.full(dim, np.nan, np.float32) for e in embs]) if dim else \
        np.zeros((len(paths), 0), np.float32)
    return logits, out, ok, errors


# -- the recipe on embeddings -----------------------------------------------------------------------

def _folds(y: np.ndarray, groups: Sequence[str] | None, n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    k = int(max(2, min(n_splits, np.bincount(y, minlength=2).min())))
    if groups is not None and len(set(groups)) < len(groups):
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_with_site(xb: np.ndarray, yb: np.ndarray, xs: np.ndarray, ys: np.ndarray, weight: float, C: float):
    from core.heads import fit_logistic

    x = np.concatenate([xb, xs]) if len(xs) else xb
    y = np.concatenate([yb, ys]) if len(ys) else yb
    w = np.concatenate([np.ones(len(yb)), np.full(len(ys), float(weight))])
    return fit_logistic(x, y, sample_weight=w, C=C)


def cv_site_logits(xb, yb, xs, ys, weight: float, C: float, folds, k_site: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """Cross-validated logits of the site photos; `k_site` keeps only that many site photos per training fold."""
    out = np.full(len(ys), np.nan)
    rng = np.random.default_rng(seed)
    for tr, te in folds:
        use = tr
        if k_site is not None and k_site < len(tr):
            use = rng.choice(tr, size=k_site, replace=False) if k_site > 0 else tr[:0]
        head = fit_with_site(xb, yb, xs[use], ys[use], weight, C)
        out[te] = head.logits(xs[te])
    return out


def _auc(y, z) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, z)) if len(set(np.asarray(y).tolist())) == 2 else float("nan")


def choose_site_weight(xb, yb, xs, ys, C: float, folds, weights: Sequence[float] = SITE_WEIGHTS
                       ) -> tuple[float, list[dict], np.ndarray]:
    """The site weight with the best cross-validated site ROC-AUC (ties: the smaller weight)."""
    table, best = [], None
    for w in weights:
        z = cv_site_logits(xb, yb, xs, ys, w, C, folds)
        auc = _auc(ys, z)
        table.append({"site_weight": float(w), "cv_roc_auc": auc})
        if best is None or auc > best[1] + 1e-9:
            best = (w, auc, z)
    return float(best[0]), table, best[2]


def learning_curve(xb, yb, xs, ys, weight: float, C: float, folds, seed: int = 0,
                   sizes: Sequence[int] = (0, 10, 20, 50, 100, 200, 400)) -> list[dict]:
    """Cross-validated site ROC-AUC with K site photos per training fold (K = 0: base photos only)."""
    max_k = min(len(tr) for tr, _ in folds)
    ks = sorted({k for k in sizes if k < max_k} | {max_k})
    return [{"k_site": int(k), "cv_roc_auc": _auc(ys, cv_site_logits(xb, yb, xs, ys, weight, C, folds, k, seed))}
            for k in ks]


def parent_head(bundle):
    """The parent bundle's head as a function of its embeddings (N, D) -> logits (N,) (numpy; Bundle.head)."""
    return bundle.head.logits


# -- the whole adaptation ---------------------------------------------------------------------------

@dataclass
class AdaptResult:
    model: Any                       # the end-to-end Keras model, or None where TensorFlow is not installed
    card: Any
    ood: Any
    embeddings_npz: bytes
    report: dict
    warnings: list[str] = field(default_factory=list)
    components: list | None = None   # combined bundles: the component references to keep
    head: Any = None                 # core.heads.LinearHead: the new head (runs in numpy)
    parent: Any = None               # the parent Bundle (its LiteRT backbone is reused)
    photos: list = field(default_factory=list)  # the site photos used (a few check the new runtime)


def adapt_bundle(bundle, paths: Sequence[str | os.PathLike], labels: Sequence[int], groups: Sequence[str] | None = None,
                 *, name: str | None = None, version: str | None = None, min_sensitivity: float = 0.90,
                 C: float | None = None, seed: int = 0, n_bootstrap: int = 1000, site_label: str = "",
                 progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> AdaptResult:
    """Adapt `bundle` to labelled site photos (labels 1 = mpox, 0 = not mpox); writes nothing."""
    from core.bundle import ModelCard
    from core.calibration import apply_temperature, fit_temperature, logit, sigmoid
    from core.evaluation import choose_threshold, evaluate_probabilities, to_jsonable
    from core.features import embeddings_npz_bytes
    from core.heads import DEFAULT_C, attach_head
    from core.images import file_sha256
    from core.ood import fit_ood
    from core.records import utc_now

    labels = np.asarray(labels).astype(int)
    problem = count_problem(labels)
    if problem:
        raise AdaptError(problem)
    base = base_embeddings(bundle)
    parent_logits, xs_all, ok, errors = embed_photos(bundle, paths, progress=progress, cancel=cancel)
    ys = labels[ok]
    problem = count_problem(ys)
    if problem:
        raise AdaptError(f"{len(errors)} photo(s) could not be read; {problem}")
    xs, z_parent = xs_all[ok], parent_logits[ok]
    kept_paths = [p for p, good in zip(paths, ok) if good]
    g = None if groups is None else [gg for gg, good in zip(groups, ok) if good]
    warnings = count_warnings(ys)

    card0 = bundle.card
    C = float(C or card0.training.get("hyperparameters", {}).get("head", {}).get("C") or DEFAULT_C)
    is_train, is_val = base["split"] == "train", base["split"] == "val"
    xb, yb = base["embedding"][is_train], base["label"][is_train].astype(int)
    xv, yv = base["embedding"][is_val], base["label"][is_val].astype(int)
    folds = _folds(ys, g, 5, seed)
    report(progress, 0, 1, "choosing the site weight by cross-validation", "adapt")
    weight, weight_table, z_cv = choose_site_weight(xb, yb, xs, ys, C, folds)
    head = fit_with_site(xb, yb, xs, ys, weight, C)
    z_val_after = head.logits(xv)
    # Temperature on held-out logits of both kinds: the cross-validated site predictions and the final
    # head on the base val photos (not fitted on). With a few well-separated site photos alone the NLL
    # would drive T to its floor and saturate every probability.
    temperature = fit_temperature(np.concatenate([z_cv, z_val_after]), np.concatenate([ys, yv]))
    p_cv = apply_temperature(z_cv, temperature)
    threshold, reason = choose_threshold(ys, p_cv, min_sensitivity)
    reason = reason.replace("on the validation split", "on cross-validated site predictions")
    if len(set(yv.tolist())) == 2:
        # Sensitivity first: never above the threshold the base val photos would need for the same target,
        # so a small, easy site sample cannot raise it at the cost of the cases the base data describes.
        base_thr, _ = choose_threshold(yv, apply_temperature(z_val_after, temperature), min_sensitivity)
        if base_thr < threshold:
            threshold = base_thr
            reason += (f"; lowered to {base_thr:.3f}, the highest that also keeps sensitivity >= {min_sensitivity:.2f} "
                       "on the base val photos")
    site_cv = evaluate_probabilities(ys, p_cv, threshold, n_bootstrap=n_bootstrap, seed=seed)
    p_parent = apply_temperature(z_parent, card0.temperature)
    site_parent = evaluate_probabilities(ys, p_parent, card0.threshold, n_bootstrap=n_bootstrap, seed=seed)
    report(progress, 0, 1, "learning curve", "adapt")
    curve = learning_curve(xb, yb, xs, ys, weight, C, folds, seed)

    before = parent_head(bundle)(xv)
    base_before = evaluate_probabilities(yv, apply_temperature(before, card0.temperature), card0.threshold,
                                         n_bootstrap=n_bootstrap, seed=seed) if len(set(yv)) == 2 else {}
    base_after = evaluate_probabilities(yv, apply_temperature(z_val_after, temperature), threshold,
                                        n_bootstrap=n_bootstrap, seed=seed) if len(set(yv)) == 2 else {}
    model = adapted_keras_model(bundle, head)

    ood = fit_ood(np.concatenate([xb, xs]).astype(np.float64), n_components=32)
    ood_ref = np.concatenate([ood.score(xv), ood.score(xs)]) if len(xv) else ood.score(xs)
    ood_threshold = float(np.percentile(ood_ref, 99.0))
    centre = float(logit(threshold))
    band = [float(sigmoid(centre - 1.0)), float(sigmoid(centre + 1.0))]

    site_sha = [file_sha256(p) for p in kept_paths]
    npz = embeddings_npz_bytes(
        np.concatenate([base["embedding"], xs]), np.concatenate([base["label"], ys]),
        list(base["source"]) + [SITE_SOURCE] * len(ys), list(base["split"]) + ["site"] * len(ys),
        list(base["path_sha"]) + site_sha)
    keys = ("roc_auc", "sensitivity", "specificity", "accuracy", "ece", "n", "n_mpox", "ci95")
    rep = {
        "parent": {"name": card0.name, "version": card0.version, "sha256": card0.model_sha256},
        "site": {"photos": int(len(ys)), "mpox": int(ys.sum()), "not_mpox": int((ys == 0).sum()),
                 "unreadable": errors[:20], "from": site_label},
        "site_weight": weight, "site_weight_selection": weight_table, "C": C,
        "site_cv": {k: site_cv[k] for k in keys},
        "site_parent": {k: site_parent[k] for k in keys},
        "base_val_before": {k: base_before[k] for k in keys} if base_before else {},
        "base_val_after": {k: base_after[k] for k in keys} if base_after else {},
        "learning_curve": curve, "warnings": warnings,
        "method": ("logistic head (core.heads) on the parent's base training embeddings plus the site photos, "
                   "site weight chosen by cross-validated site ROC-AUC; threshold (sensitivity >= "
                   f"{min_sensitivity:.2f}) from the cross-validated site predictions; temperature from those and "
                   "the final head on the base val photos; base val photos unused in fitting (forgetting check)"),
    }
    rep = to_jsonable(rep)
    d = card0.to_dict()
    training = dict(card0.training or {})
    training["adapt"] = {k: rep[k] for k in ("site_weight", "site_weight_selection", "C", "method")}
    card = ModelCard(
        name=name or f"{card0.name}-site", version=version or f"{card0.version}+site.{utc_now()[:10]}",
        architecture=card0.architecture, input_size=card0.input_size, preprocessing=card0.preprocessing,
        class_names=list(card0.class_names), threshold=float(threshold), threshold_reason=reason,
        temperature=float(temperature), uncertain_band=band, ood_threshold=ood_threshold,
        metrics={"site_cv": rep["site_cv"], "site_parent": rep["site_parent"],
                 "base_val_before": rep["base_val_before"], "base_val_after": rep["base_val_after"],
                 "learning_curve": curve, "parent_metrics": d.get("metrics", {}).get("val", {}),
                 "selection": "site weight, temperature and threshold from cross-validated site predictions"},
        training_data={"base": {"from": f"{card0.name} {card0.version} embeddings.npz",
                                "train": int(is_train.sum()), "val": int(is_val.sum())}, "site": rep["site"]},
        training=training, limitations=list(card0.limitations) + warnings + [
            "Adapted to one site's reviewed photos: its figures describe that site; re-check after changes in "
            "camera, population or referral pattern."],
        parent=rep["parent"], extra={k: v for k, v in (card0.extra or {}).items()
                                     if k in ("kind", "components")},
    )
    return AdaptResult(model, card, ood, npz, rep, warnings, components=(card0.extra or {}).get("components"),
                       head=head, parent=bundle, photos=[str(p) for p in kept_paths])


def adapted_keras_model(bundle, head):
    """The parent's model with the new head, as one Keras model, where TensorFlow is installed; else None (the
    adapted bundle then exists only as its LiteRT runtime: the parent's backbone export and the head in numpy)."""
    from core.tf_runtime import tensorflow_available

    if not tensorflow_available():
        return None
    from core.heads import attach_head

    model = bundle.model
    return attach_head(model, head, name=model.name)


# Site photos the adapted bundle's LiteRT runtime is checked on against its Keras model (where there is one).
RUNTIME_CHECK_PHOTOS = 32


def save_adapted(result: AdaptResult, out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Write the adapted bundle; refuses an existing folder (unless `force`) and any shipped bundle folder.

    The bundle runs on LiteRT and numpy when its parent does: it reuses the parent's backbone export and
    carries its new head as `head-<sha>.npz`. With TensorFlow installed it also holds the Keras model, and
    the runtime is checked against it on site photos (core.export.attach_light_runtime); without, the
    runtime is the model (core.bundle.model_file)."""
    from core.bundle import save_bundle
    from core.features import EMBEDDINGS_FILE

    out = check_out_dir(out_dir, force)
    extra = {EMBEDDINGS_FILE: result.embeddings_npz}
    light = None if result.model is not None else _light_only_runtime(result)
    if light is not None:
        files, info = light
        extra.update(files)
        result.card.extra = {**(result.card.extra or {}), "runtime": info}
    if result.components:
        from core.combined import save_combined

        path = save_combined(result.model, result.card, out, result.components, ood=result.ood, extra_files=extra)
    else:
        path = save_bundle(result.model, result.card, out, ood=result.ood, extra_files=extra)
    backbone = _parent_backbone(result.parent)
    if result.model is not None and (backbone is not None or result.components) and result.photos:
        from core.export import ExportError, attach_light_runtime

        try:
            attach_light_runtime(path, result.photos[:RUNTIME_CHECK_PHOTOS], backbone_from=backbone)
        except ExportError:
            pass  # components without runtimes, or no agreement: the bundle runs on Keras, as its parent does
    return path


def _parent_backbone(parent) -> Path | None:
    """The parent's verified LiteRT backbone file, when it runs on one."""
    runner = getattr(getattr(parent, "runtime", None), "backbone", None)
    path = getattr(runner, "path", None)
    return Path(path) if path is not None and Path(path).is_file() else None


def _light_only_runtime(result: AdaptResult) -> tuple[dict, dict]:
    """(extra files, card runtime record) of an adapted bundle without a Keras model: the parent's backbone
    export (a plain bundle) and the new head in numpy."""
    import hashlib
    import io

    from core.bundle import HEAD_FILE, RUNTIME_BACKBONE, RUNTIME_HEAD, runtime_info, sha256_file
    from core.records import utc_now

    parent = result.parent
    buf = io.BytesIO()
    result.head.save_npz(buf)
    head_bytes = buf.getvalue()
    head_sha = hashlib.sha256(head_bytes).hexdigest()
    head_name = f"{Path(HEAD_FILE).stem}-{head_sha[:12]}.npz"
    parent_info = runtime_info(parent.card) if parent is not None else {}
    info = {"format": "numpy" if result.components else "tflite",
            "kind": RUNTIME_HEAD if result.components else RUNTIME_BACKBONE,
            "head": head_name, "head_sha256": head_sha, "model_sha256": head_sha,
            "head_features": "signed square root" if result.head.sqrt else "embedding",
            "agreement": {"reference": "none: adapted without TensorFlow, this model has no Keras form; its head "
                                       "runs in numpy only",
                          "backbone": "the parent's verified LiteRT export, unchanged",
                          "parent_agreement": parent_info.get("agreement", {})},
            "parent": {"name": parent.card.name, "version": parent.card.version,
                       "sha256": parent.card.model_sha256} if parent is not None else {},
            "created": utc_now()}
    files: dict[str, Any] = {head_name: head_bytes}
    if not result.components:
        backbone = _parent_backbone(parent)
        if backbone is None:
            raise AdaptError(f"{parent.card.display_name} has no LiteRT backbone export, so an adapted model needs "
                             "TensorFlow to be saved: pip install 'mpox-triage[train]'")
        info.update({"file": backbone.name, "sha256": sha256_file(backbone),
                     "outputs": parent_info.get("outputs", {})})
        files[backbone.name] = backbone
    return files, info


def check_out_dir(out_dir: str | os.PathLike, force: bool = False) -> Path:
    """`out_dir` resolved, or AdaptError: never inside the shipped models folder, never over a folder unless forced."""
    from core.bundle import default_models_dir

    out = Path(out_dir).expanduser().resolve()
    shipped = default_models_dir().resolve()
    if out == shipped or shipped in out.parents:
        raise AdaptError(f"{out}: inside the shipped models folder {shipped}; save an adapted model in your own "
                         "models folder (shipped bundles are never written over)")
    if out.exists() and not force:
        raise AdaptError(f"{out} already exists; choose a new folder (or --force to replace a model you made)")
    if out.exists() and not out.is_dir():
        raise AdaptError(f"{out} is a file, not a folder")
    return out


# -- what to review next ----------------------------------------------------------------------------

def suggest_next(logits: np.ndarray, embeddings: np.ndarray, k: int, threshold_logit: float = 0.0,
                 labelled_embeddings: np.ndarray | None = None, pool_factor: int = 4) -> list[int]:
    """Indices of the `k` photos to label next: the most uncertain, kept diverse.

    Uncertainty is closeness of the (calibrated) logit to the threshold's logit. Among the
    `pool_factor * k` most uncertain photos, greedy k-center on the standardised, square-rooted
    embeddings picks each next photo farthest from those already labelled or chosen, so a review
    round does not spend itself on near-copies. Returned in the order to review.
    """
    from core.heads import signed_sqrt

    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    n = len(z)
    k = int(min(max(k, 0), n))
    if k == 0:
        return []
    order = np.argsort(np.abs(z - threshold_logit), kind="stable")
    pool = order[: min(n, max(k, pool_factor * k))]
    f = signed_sqrt(np.asarray(embeddings, dtype=np.float64))
    mu, sd = f.mean(axis=0), f.std(axis=0) + 1e-6
    f = (f - mu) / sd
    cand = f[pool]
    if labelled_embeddings is not None and len(labelled_embeddings):
        lab = (signed_sqrt(np.asarray(labelled_embeddings, dtype=np.float64)) - mu) / sd
        dist = np.min(((cand[:, None, :] - lab[None, :, :]) ** 2).sum(-1), axis=1)
        chosen: list[int] = []
    else:
        chosen = [0]  # the single most uncertain photo first
        dist = ((cand - cand[0]) ** 2).sum(-1)
    while len(chosen) < k:
        dist_c = dist.copy()
        dist_c[chosen] = -1.0
        nxt = int(np.argmax(dist_c))
        chosen.append(nxt)
        dist = np.minimum(dist, ((cand - cand[nxt]) ** 2).sum(-1))
    return [int(pool[i]) for i in chosen]


def suggest_paths(bundle, paths: Sequence[str | os.PathLike], k: int,
                  labelled_paths: Sequence[str | os.PathLike] = (), progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> list[dict]:
    """The `k` unlabelled photos to review next under `bundle` ([{path, p_mpox, rank}]), for "Review next"."""
    from core.calibration import apply_temperature, logit

    z, emb, ok, _ = embed_photos(bundle, paths, progress=progress, cancel=cancel)
    idx = np.flatnonzero(ok)
    lab = None
    if labelled_paths:
        _, le, lok, _ = embed_photos(bundle, labelled_paths, cancel=cancel)
        lab = le[lok]
    t = float(bundle.card.temperature or 1.0)
    picks = suggest_next(z[idx] / t, emb[idx], k, float(logit(bundle.card.threshold)), lab)
    return [{"path": str(paths[idx[i]]), "p_mpox": float(apply_temperature(z[idx[i]], t)), "rank": r + 1}
            for r, i in enumerate(picks)]
