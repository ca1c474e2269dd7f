"""Per-photo predictions of the parent and the adapted model on the same site photos (no Qt).

core.adapt.AdaptResult holds the cross-validated site metrics with intervals but not the per-photo
predictions, which a paired verdict (retrain/verdict.py, McNemar) needs. This rebuilds them with
core.adapt's own functions and the choices recorded in the result (site weight, C, folds from the
same seed, the new card's temperature and threshold), then checks that they reproduce the result's
cross-validated site ROC-AUC; if they do not, the caller gets None and shows no paired verdict.
It embeds the site photos a second time (core.adapt keeps no embeddings in its result).
TODO (core): AdaptResult could carry the per-photo cross-validated and parent probabilities; then
this module reduces to building the two prediction lists.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _predictions(paths: Sequence[str], y: np.ndarray, p: np.ndarray, threshold: float) -> list[dict]:
    return [{"path": str(path), "label": "mpox" if yy == 1 else "not_mpox",
             "prediction": "mpox" if pp >= threshold else "not_mpox", "p_mpox": float(pp)}
            for path, yy, pp in zip(paths, y, p)]


def site_predictions(bundle, result, paths: Sequence[str], labels: Sequence[int], groups: Sequence[str] | None,
                     seed: int = 0, progress=None, cancel=None) -> tuple[dict, dict] | None:
    """({"n", "predictions", ...} of the adapted model cross-validated, same of the parent) or None."""
    from core.adapt import _auc, _folds, base_embeddings, cv_site_logits, embed_photos
    from core.calibration import apply_temperature

    rep = result.report
    base = base_embeddings(bundle)
    z_parent, xs_all, ok, _errors = embed_photos(bundle, paths, progress=progress, cancel=cancel)
    y = np.asarray(labels).astype(int)[ok]
    xs, zp = xs_all[ok], z_parent[ok]
    kept = [p for p, good in zip(paths, ok) if good]
    g = None if groups is None else [gg for gg, good in zip(groups, ok) if good]
    is_train = base["split"] == "train"
    xb, yb = base["embedding"][is_train], base["label"][is_train].astype(int)
    z_cv = cv_site_logits(xb, yb, xs, y, float(rep["site_weight"]), float(rep["C"]), _folds(y, g, 5, seed))
    p_new = apply_temperature(z_cv, result.card.temperature)
    if not abs(_auc(y, p_new) - float(rep["site_cv"]["roc_auc"])) < 1e-6:
        return None  # not the predictions the result describes: no paired verdict rather than a wrong one
    p_old = apply_temperature(zp, bundle.card.temperature)
    new = {"n": int(len(y)), "predictions": _predictions(kept, y, p_new, float(result.card.threshold))}
    old = {"n": int(len(y)), "predictions": _predictions(kept, y, p_old, float(bundle.card.threshold))}
    return new, old
