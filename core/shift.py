"""Shift alarm for a folder: do its photos' embeddings come from the distribution the model learned?

`shift_test` compares a folder's embeddings with a reference (the bundle's training embeddings):
Gaussian-kernel MMD^2 (scikit-learn's rbf_kernel) on standardised embeddings projected on the
pooled sample's top principal components, with a permutation p-value from scipy.stats.permutation_test.
The bandwidth is the median distance between reference rows, so nothing is tuned per folder.
It fires when p < alpha AND the effect (MMD^2 above its permutation-null mean) exceeds MIN_EFFECT:
photos of new patients from the training collections themselves already differ significantly from
the training photos (photos come in groups), so significance alone would fire on harmless folders.
Method and MIN_EFFECT were chosen on val and leave-one-collection-out data (docs/shift.md).

A detected shift means: predictions on this folder are less reliable than the card's figures.
It says nothing about any single photo (that is core.scope / the per-photo out_of_scope flag).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

# Below this many scored photos the test is not run: with fewer, only gross shifts are detectable
# and a "no shift" answer would be read as reassurance it cannot give.
MIN_PHOTOS = 30
EMBEDDINGS_FILE = "embeddings.npz"
# Smallest shift worth an alarm, in units of the statistic (MMD^2 minus its permutation-null mean), by folder
# size: the 97.5th percentile of the effect that folders of NEW photos from the training collections show
# (bench/shift_calibration.py: group-wise halves of train+val, never test). A bundle's card may carry its own
# table (`extra.shift_alarm.effect_floor`: {"n": [...], "effect": [...]}); this one is the fallback.
# Interpolated linearly in 1/sqrt(n) (an estimate's noise shrinks as 1/sqrt(n)), held flat outside the table.
EFFECT_FLOOR = {"n": [30, 60, 120, 250, 400], "effect": [0.012, 0.008, 0.005, 0.004, 0.003]}
MIN_EFFECT = EFFECT_FLOOR["effect"][-1]   # the floor at large n (older callers)
REVIEW_N_DEFAULT = 100
METHOD = "mmd-rbf-permutation"

SHIFT_MEANING = ("predictions on this folder are less reliable than the card's figures; "
                 "review more, or adapt")


def effect_floor(n: int, table: dict | None = None) -> float:
    """The alarm's effect floor for a folder of `n` photos (EFFECT_FLOOR, or a card's own table)."""
    table = table if isinstance(table, dict) and table.get("n") and table.get("effect") else EFFECT_FLOOR
    ns = np.asarray(table["n"], dtype=np.float64)
    eff = np.asarray(table["effect"], dtype=np.float64)
    order = np.argsort(-1 / np.sqrt(ns))
    x = 1 / np.sqrt(max(int(n), 1))
    return float(np.interp(-x, -1 / np.sqrt(ns[order]), eff[order]))


def card_floor_table(card) -> dict | None:
    extra = (card.get("extra") if isinstance(card, dict) else getattr(card, "extra", None)) or {}
    table = (extra.get("shift_alarm") or {}).get("effect_floor") if isinstance(extra, dict) else None
    return table if isinstance(table, dict) else None


@dataclass
class ShiftResult:
    """Outcome of one folder-vs-reference test. `detected` is False whenever the test did not run."""

    detected: bool
    p_value: float | None
    statistic: float | None
    n: int
    method: str = METHOD
    reason: str = ""        # why the test did not run ("" when it ran)
    n_reference: int = 0
    alpha: float = 0.05
    extra: dict = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return self.p_value is not None

    def to_dict(self) -> dict:
        """The `"shift"` entry of a run summary: detected, p_value, statistic, n, method (+ reason if not run)."""
        out = {"detected": bool(self.detected),
               "p_value": None if self.p_value is None else float(self.p_value),
               "statistic": None if self.statistic is None else float(self.statistic),
               "n": int(self.n), "method": self.method}
        if self.reason:
            out["reason"] = self.reason
        return out

    def message(self) -> str:
        """One line for a CLI summary, banner or report cover; it never contradicts the p-value."""
        return shift_message(self.to_dict() | {"min_effect": self.extra.get("min_effect")})


def shift_message(entry: dict) -> str:
    """The one-line text of a shift entry (ShiftResult.to_dict() plus `min_effect`)."""
    p, n, eff, floor = entry.get("p_value"), entry.get("n"), entry.get("statistic"), entry.get("min_effect")
    if p is None:
        return f"Shift check not run: {entry.get('reason', 'not enough photos')}"
    if entry.get("detected"):
        return (f"These photos differ from the model's training photos (shift test p = {p:.3g}, n = {n}): "
                f"{SHIFT_MEANING}.")
    if p < float(entry.get("alpha", 0.05)):
        size = "" if eff is None or floor is None else f" (effect {eff:.3f}, alarm floor {floor:.3f} at this size)"
        return (f"These photos differ slightly from the training photos (p = {p:.3g}, n = {n}), no more than new "
                f"patients of the training collections do{size}: no alarm.")
    return f"No shift detected against the model's training photos (p = {p:.3g}, n = {n})."


def verdict_entry(result: "ShiftResult", card) -> dict:
    """A model's shift result as the folder keeps it: the test's fields, the model, the one-line message,
    the operating point the folder is decided at, and the remedy with a number (from the card)."""
    from core.operating_point import DEFAULT, OUT_OF_COLLECTION, card_points, has_distinct_out_of_collection_point

    name = card.get("name") if isinstance(card, dict) else getattr(card, "display_name", None) or card.name
    key = getattr(card, "key", None) or (card.get("model_sha256") if isinstance(card, dict) else "")
    entry = {**result.to_dict(), "alpha": float(result.alpha), "min_effect": result.extra.get("min_effect"),
             "model": name, "model_key": key}
    entry["message"] = shift_message(entry)
    if result.detected:
        ooc = card_points(card)[OUT_OF_COLLECTION]
        from core.adapt import labelling_sample_size, remedy  # N reaches adapt's minimum of each class

        review_n = labelling_sample_size(card)
        moved = has_distinct_out_of_collection_point(card)
        entry.update({"operating_point": OUT_OF_COLLECTION if moved else DEFAULT, "review_n": review_n,
                      "remedy": remedy(card)})
        if moved:
            entry["point_message"] = (f"{name}: decided at its out-of-collection operating point (threshold "
                                      f"{ooc.threshold:.3f}, photos with p(mpox) >= {ooc.review_floor:.3f} go to "
                                      "review) because this folder is unlike the training photos")
    else:
        entry["operating_point"] = DEFAULT
    return entry


def _prepare(folder: np.ndarray, reference: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardise and project onto the top principal components of the POOLED sample.

    Fitting on the pooled sample keeps the permutation test exact (the map does not depend on which
    rows are "folder"); fitting on the reference alone would not: in-sample rows spread more along
    their own components than new rows do, and the test would fire on identical distributions.
    """
    from scipy.linalg import eigh

    pooled = np.vstack([folder, reference])
    pooled = (pooled - pooled.mean(axis=0)) / (pooled.std(axis=0) + 1e-6)
    n, d = pooled.shape
    k = int(min(n_components, n - 1, d))
    if 1 <= k < d:
        # PCA scores from the top-k eigenpairs of the smaller of the Gram and covariance matrices
        # (only k eigenpairs are computed: a fraction of a full PCA's time at these sizes).
        if n <= d:
            vals, vecs = eigh(pooled @ pooled.T, subset_by_index=[n - k, n - 1])
            pooled = vecs * np.sqrt(np.maximum(vals, 0.0))
        else:
            _, vecs = eigh(pooled.T @ pooled, subset_by_index=[d - k, d - 1])
            pooled = pooled @ vecs
    return pooled[: len(folder)], pooled[len(folder):]


def _mmd2_statistic(K: np.ndarray, n: int):
    """Biased MMD^2 between index sets, from one precomputed pooled kernel matrix K (N, N).

    Returns scipy.stats.permutation_test's vectorised statistic: it receives the permuted
    "folder" and "reference" index arrays, shape (..., n) and (..., N - n).
    """
    N = len(K)

    def statistic(ix: np.ndarray, iy: np.ndarray, axis: int = -1) -> np.ndarray:
        ix = np.moveaxis(np.asarray(ix), axis, -1).astype(np.intp)
        iy = np.moveaxis(np.asarray(iy), axis, -1).astype(np.intp)
        lead = ix.shape[:-1]
        ix, iy = ix.reshape(-1, ix.shape[-1]), iy.reshape(-1, iy.shape[-1])
        w = np.zeros((len(ix), N))
        rows = np.arange(len(ix))[:, None]
        w[rows, ix] = 1.0 / n
        w[rows, iy] = -1.0 / (N - n)
        return np.einsum("bi,bi->b", w @ K, w).reshape(lead)

    return statistic


def shift_test(folder_emb: np.ndarray, reference_emb: np.ndarray, alpha: float = 0.05,
               n_permutations: int = 1000, seed: int = 0, max_folder: int = 500, max_reference: int = 700,
               n_components: int = 32, bandwidth_scale: float = 1.0, min_effect: float | None = None,
               min_photos: int = MIN_PHOTOS, floor_table: dict | None = None) -> ShiftResult:
    """Two-sample MMD permutation test of folder vs reference embeddings (N, D) and (M, D).

    Fewer than `min_photos` folder rows: not run (detected False, p_value None, reason set).
    Large inputs are subsampled (seeded) to `max_folder` / `max_reference` rows so a run of
    thousands of photos costs about a second on 2 CPU cores.
    """
    from scipy.stats import permutation_test
    from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel

    folder = np.asarray(folder_emb, dtype=np.float64)
    ref = np.asarray(reference_emb, dtype=np.float64)
    folder = folder[np.all(np.isfinite(folder), axis=1)] if folder.ndim == 2 else folder.reshape(0, 1)
    n = int(len(folder))
    if ref.ndim != 2 or len(ref) < min_photos:
        return ShiftResult(False, None, None, n, reason="the model carries no usable training embeddings",
                           n_reference=0 if ref.ndim != 2 else len(ref), alpha=alpha)
    if n < min_photos:
        return ShiftResult(False, None, None, n, reason=f"needs at least {min_photos} scored photos (has {n})",
                           n_reference=len(ref), alpha=alpha)
    if folder.shape[1] != ref.shape[1]:
        raise ValueError(f"folder embeddings have {folder.shape[1]} dimensions, the reference {ref.shape[1]}: "
                         "they must come from the same model")
    rng = np.random.default_rng(seed)
    if len(folder) > max_folder:
        folder = folder[rng.choice(len(folder), max_folder, replace=False)]
    if len(ref) > max_reference:
        ref = ref[rng.choice(len(ref), max_reference, replace=False)]
    x, y = _prepare(folder, ref, n_components)
    nx, ny = len(x), len(y)
    # Bandwidth: median distance between reference points (a property of the model, not the folder).
    d = euclidean_distances(y, squared=False)
    sigma = (float(np.median(d[np.triu_indices(ny, 1)])) or 1.0) * bandwidth_scale
    pooled = np.vstack([x, y])
    K = rbf_kernel(pooled, gamma=1.0 / (2 * sigma**2))
    res = permutation_test((np.arange(nx), np.arange(nx, nx + ny)), _mmd2_statistic(K, nx),
                           permutation_type="independent", vectorized=True, n_resamples=n_permutations,
                           alternative="greater", batch=100, random_state=rng)
    p = float(res.pvalue)
    # Effect: MMD^2 above what shuffling alone gives (removes the estimator's 1/n bias).
    effect = float(res.statistic - np.mean(res.null_distribution))
    floor = effect_floor(n, floor_table) if min_effect is None else float(min_effect)
    return ShiftResult(bool(p < alpha and effect > floor), p, effect, n, n_reference=ny, alpha=alpha,
                       extra={"bandwidth": sigma, "n_permutations": n_permutations, "n_used": nx,
                              "mmd2": float(res.statistic), "min_effect": floor})


# -- reference embeddings ---------------------------------------------------------------------------------


def read_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An embeddings.npz: `embedding` (N, D), `label`, `source`, `split` (N,) each."""
    from core.npz import read_arrays  # garbage or a missing `embedding` array: one line (ArrayFileError)

    return read_arrays(path, {"embedding": 2})


def reference_embeddings(bundle, splits: tuple[str, ...] = ("train",)) -> np.ndarray | None:
    """The bundle's own training embeddings (float32 (N, D)) from its `embeddings.npz`, or None.

    `bundle` is a core.bundle.Bundle or a bundle folder. None when the bundle carries no such file
    (bundles before 1.2.0) or it has no rows of `splits`; the caller then skips the shift test.
    """
    folder = getattr(bundle, "path", bundle)
    if folder is None:
        return None
    path = Path(folder) / EMBEDDINGS_FILE
    if not path.is_file():
        return None
    data = read_embeddings(path)
    emb = np.asarray(data["embedding"], dtype=np.float32)
    if "split" in data and splits:
        keep = np.isin(np.asarray(data["split"]).astype(str), list(splits))
        emb = emb[keep]
    return emb if len(emb) else None


def dataset_embeddings(bundle, dataset, cache_dir: str | os.PathLike | None = None, batch_size: int = 32,
                       progress=None) -> dict[str, np.ndarray]:
    """Embeddings of every photo of a core.datasets.Dataset under a bundle's model, in the embeddings.npz
    format plus `path`; cached (keyed by model and data fingerprints) under the feature cache folder.
    """
    import hashlib

    from core.features import default_cache_dir
    from core.preprocess import load_model_input
    from core.progress import report

    key = hashlib.sha256("\n".join(f"{s.split}\t{s.label}\t{s.source}\t{s.file_hash()}"
                                   for s in dataset.samples).encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = base / "shift" / f"{bundle.card.name}-{bundle.card.model_sha256[:12]}-{key}.npz"
    if path.is_file():
        return read_embeddings(path)
    size = bundle.input_size
    embs, logits = [], []
    samples = list(dataset.samples)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        batch = np.stack([load_model_input(s.path, size) for s in chunk])
        lg, emb = bundle.forward(batch)
        embs.append(emb)
        logits.append(lg)
        report(progress, start + len(chunk), len(samples), "embedding", "shift")
    out = {"embedding": np.concatenate(embs).astype(np.float32),
           "logit": np.concatenate(logits).astype(np.float32),
           "label": np.array([s.label for s in samples]), "source": np.array([s.source for s in samples]),
           "split": np.array([s.split for s in samples]), "path": np.array([str(s.path) for s in samples])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **out)
    os.replace(tmp, path)
    return out


def reference_sets(bundle, splits: tuple[str, ...] = ("train",), min_rows: int = MIN_PHOTOS) -> dict[str, np.ndarray]:
    """The bundle's training embeddings as comparison sets: "all" (every source pooled) and one per source
    with at least `min_rows` rows. Empty when the bundle carries no embeddings.npz."""
    folder = getattr(bundle, "path", bundle)
    path = Path(folder) / EMBEDDINGS_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}
    data = read_embeddings(path)
    emb = np.asarray(data["embedding"], dtype=np.float32)
    keep = np.ones(len(emb), bool)
    if "split" in data and splits:
        keep = np.isin(np.asarray(data["split"]).astype(str), list(splits))
    if not keep.any():
        return {}
    sets = {"all": emb[keep]}
    if "source" in data:
        sources = np.asarray(data["source"]).astype(str)
        names = sorted(set(sources[keep]))
        if len(names) > 1:
            for name in names:
                rows = keep & (sources == name)
                if rows.sum() >= min_rows:
                    sets[name] = emb[rows]
    return sets


def folder_shift(bundle, embeddings, reference: np.ndarray | None = None, alpha: float = 0.05) -> ShiftResult:
    """The shift test of a run: `embeddings` of the folder's in-scope photos vs the bundle's training
    embeddings (or an explicit `reference`). Not run, with a reason, when either side is missing.

    With a bundle whose training photos come from several collections, the folder is compared with all of
    them pooled and with each collection alone, and the alarm fires only when every comparison does (an
    intersection-union test: its p-value is the largest, valid at level alpha with no correction). So a
    folder drawn from one of the collections the model learned from, or from their mix, is not a shift;
    a folder unlike each of them is.
    """
    emb = [np.asarray(e, dtype=np.float32) for e in embeddings]
    folder = np.stack(emb) if emb else np.zeros((0, 1), np.float32)
    try:
        sets = {"all": np.asarray(reference, dtype=np.float32)} if reference is not None else reference_sets(bundle)
    except ValueError as exc:  # garbage embeddings.npz (core.npz.ArrayFileError): the test is skipped, said once
        return ShiftResult(False, None, None, len(folder), alpha=alpha, reason=" ".join(str(exc).split()))
    if not sets:
        return ShiftResult(False, None, None, len(folder), alpha=alpha,
                           reason="this model carries no training embeddings (embeddings.npz, bundles 1.2.0 on)")
    wide = {ref.shape[-1] for ref in sets.values()}
    if len(folder) and (len(wide) != 1 or folder.shape[-1] not in wide):
        return ShiftResult(False, None, None, len(folder), alpha=alpha,
                           reason=f"the training embeddings (embeddings.npz) are {sorted(wide)} wide; the model gives "
                                  f"{folder.shape[-1]}: not comparable")
    table = card_floor_table(getattr(bundle, "card", None)) if bundle is not None else None
    results = [shift_test(folder, ref, alpha=alpha, floor_table=table) for ref in sets.values()]
    if len(results) == 1 or not all(r.ran for r in results):
        return results[0]
    # The least significant comparison decides: its p-value and statistic are the folder's.
    weakest = max(results, key=lambda r: (r.p_value, -r.statistic))
    return replace(weakest, detected=all(r.detected for r in results))


def folder_verdict(entries: Sequence[dict], decider: str = "") -> dict | None:
    """One shift entry for a run of several models (each a ShiftResult.to_dict() plus extras): the first that
    fired, else the first that ran, else the first (which says why it did not run); None without entries.
    The CLI summary and the app's banner both use it."""
    entries = list(entries)
    # The model whose call is the photo's call (a combined model run with its components) speaks for the
    # folder when its test ran; the app's banner and the CLI then name the same model every time.
    own = next((e for e in entries if decider and e.get("model_key") == decider and e.get("p_value") is not None),
               None)
    if own is not None:
        return own
    return next((e for e in entries if e.get("detected")),
                next((e for e in entries if e.get("p_value") is not None), entries[0] if entries else None))
