"""Shift alarm for a folder: do its photos' embeddings come from the distribution the model learned?

`shift_test` compares a folder's embeddings with a reference (the bundle's training embeddings):
Gaussian-kernel MMD^2 on standardised embeddings projected on the pooled sample's top principal
components, with a permutation p-value (numpy only; the draws stop once p < alpha is out of reach).
The bandwidth is the median distance between reference rows, so nothing is tuned per folder.
It fires when p < alpha AND the effect (MMD^2 above its permutation-null mean, computed exactly) exceeds
the effect floor: photos of new patients from the training collections themselves already differ
significantly from the training photos (photos come in groups), so significance alone would fire on
harmless folders. Method and floors were chosen on val and leave-one-collection-out data (docs/shift.md).

A detected shift means: predictions on this folder are less reliable than the card's figures.
It says nothing about any single photo (that is core.photos.scope / the per-photo out_of_scope flag).
"""

from __future__ import annotations

import functools
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
# A folder none of whose first SETTLE_DRAWS permutations reaches its statistic has p < alpha settled: the test
# stops there (p = 1/201) instead of drawing all n_permutations (see _permutation_null).
SETTLE_DRAWS = 200
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
    from core.models.operating_point import DEFAULT, OUT_OF_COLLECTION, card_points, has_distinct_out_of_collection_point

    name = card.get("name") if isinstance(card, dict) else getattr(card, "display_name", None) or card.name
    key = getattr(card, "key", None) or (card.get("model_sha256") if isinstance(card, dict) else "")
    entry = {**result.to_dict(), "alpha": float(result.alpha), "min_effect": result.extra.get("min_effect"),
             "model": name, "model_key": key}
    entry["message"] = shift_message(entry)
    if result.detected:
        ooc = card_points(card)[OUT_OF_COLLECTION]
        from core.triage.remedy import labelling_sample_size, remedy

        review_n = labelling_sample_size(card)
        moved = has_distinct_out_of_collection_point(card)
        entry.update({"operating_point": OUT_OF_COLLECTION if moved else DEFAULT, "review_n": review_n,
                      "remedy": remedy(card, photos=result.n)})
        if moved:
            from core.models.operating_point import point_message

            # The card's point; the folder's review floor (folder_point) is added where the folder's scores are
            # known: classify's stderr and --summary, the app's banner and the PDF render it with point_message.
            entry["point_message"] = point_message(name, ooc, card_points(card)[DEFAULT])
    else:
        entry["operating_point"] = DEFAULT
    return entry


def _prepare(folder: np.ndarray, reference: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardise and project onto the top principal components of the POOLED sample.

    Fitting on the pooled sample keeps the permutation test exact (the map does not depend on which
    rows are "folder"); fitting on the reference alone would not: in-sample rows spread more along
    their own components than new rows do, and the test would fire on identical distributions.
    """
    pooled = np.vstack([folder, reference])
    pooled = (pooled - pooled.mean(axis=0)) / (pooled.std(axis=0) + 1e-6)
    n, d = pooled.shape
    k = int(min(n_components, n - 1, d))
    if 1 <= k < d:
        # PCA scores from the top-k eigenpairs of the smaller of the Gram and covariance matrices. The product
        # in float32 (relative error ~1e-7, far below anything the test resolves) halves its time.
        p32 = pooled.astype(np.float32)
        if n <= d:
            vals, vecs = top_eigenpairs((p32 @ p32.T).astype(np.float64), k)
            pooled = vecs * np.sqrt(np.maximum(vals, 0.0))
        else:
            _, vecs = top_eigenpairs((p32.T @ p32).astype(np.float64), k)
            pooled = pooled @ vecs
    return pooled[: len(folder)], pooled[len(folder):]


def top_eigenpairs(G: np.ndarray, k: int, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (ascending) and their eigenvectors of a symmetric positive semi-definite G.

    Block Lanczos with full reorthogonalisation from a fixed start (the same G gives the same answer), until
    every wanted Ritz pair's residual |G v - lambda v| is below tol * lambda_max. At a shift test's sizes
    (N ~ 1000, k = 32) it takes half the time of numpy's full eigh, and the projected Gram matrix differs
    from the exact one by ~1e-6 relative, the test's MMD^2 by ~1e-9 (its effect floors are ~1e-3). Small
    matrices, or no convergence within N / 2 dimensions: numpy's full eigh.
    """
    N = len(G)
    block = k + 8
    if N < 16 * block:
        vals, vecs = np.linalg.eigh(G)
        return vals[-k:], vecs[:, -k:]
    # The products in float32 (twice as fast; the residuals it can resolve, ~1e-7, are below tol).
    g = G.astype(np.float32)
    width = (N // 2) // block * block
    A = np.empty((N, width), np.float32)      # the orthonormal Krylov basis, block by block
    GA = np.empty((N, width), np.float32)     # G times it
    A[:, :block] = np.linalg.qr(np.random.default_rng(0).standard_normal((N, block)))[0]
    m = block
    while True:
        GA[:, m - block:m] = g @ A[:, m - block:m]
        if m >= 9 * block:
            T = A[:, :m].T.astype(np.float64) @ GA[:, :m]
            w, Y = np.linalg.eigh((T + T.T) / 2)
            w, Y = w[-k:], Y[:, -k:]
            V = A[:, :m] @ Y
            if np.linalg.norm(GA[:, :m] @ Y - V * w, axis=0).max() <= tol * max(float(w[-1]), 1e-300):
                return w, V
        if m + block > width:
            vals, vecs = np.linalg.eigh(G)
            return vals[-k:], vecs[:, -k:]
        W = GA[:, m - block:m] - A[:, :m] @ (A[:, :m].T @ GA[:, m - block:m])
        W -= A[:, :m] @ (A[:, :m].T @ W)
        A[:, m:m + block] = np.linalg.qr(W)[0]
        m += block


def canonical_rows(rows: np.ndarray) -> np.ndarray:
    """The rows sorted by their bytes: one order whatever order they came in, so a test's result depends only
    on the set of rows (and the seed), not on the order photos were scored or stored."""
    rows = np.ascontiguousarray(rows)
    if rows.ndim != 2 or len(rows) < 2 or rows.shape[1] == 0:
        return rows
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    return rows[np.argsort(keys, kind="stable")]


def _rbf_kernel(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian kernel exp(-|a - b|^2 / (2 sigma^2)) between all rows of x (N, k)."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.exp(d2 * (-1.0 / (2.0 * sigma**2)))


def _median_distance(y: np.ndarray) -> float:
    """Median Euclidean distance between distinct rows of y."""
    sq = np.einsum("ij,ij->i", y, y)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (y @ y.T)
    return float(np.median(np.sqrt(np.maximum(d2[np.triu_indices(len(y), 1)], 0.0))))


def _permutation_null(K: np.ndarray, n: int, n_permutations: int, alpha: float, rng: np.random.Generator
                      ) -> tuple[float, float, float, int]:
    """(MMD^2, its exact permutation-null mean, p-value, permutations drawn) for the first `n` rows of the
    pooled kernel K (N, N) against the rest.

    With the doubly centred kernel Kc, MMD^2 of a split is (N / (n m))^2 z'Kc z for the indicator z of either
    side, and its mean over all splits is trace(Kc) N / (n m (N - 1)): exact, where the permutation draws only
    estimate it. The draws stop as soon as the outcome at `alpha` is settled: once `alpha` is out of reach
    (the full test could no longer give p < alpha; the p-value is then the sequential one of Besag and
    Clifford 1991, never below what the full test would say), or when none of the first SETTLE_DRAWS draws
    reaches the observed statistic (p = 1 / (SETTLE_DRAWS + 1); the full test would give p >= alpha with
    probability below (1 - alpha)^SETTLE_DRAWS, 4e-5 at alpha = 0.05, even for a folder at p = alpha).
    """
    N = len(K)
    m = N - n
    Kc = K - K.mean(axis=0)[None, :] - K.mean(axis=1)[:, None] + K.mean()
    c2 = (N / (n * m)) ** 2
    mmd2 = float(c2 * Kc[:n, :n].sum())
    null_mean = float(np.trace(Kc) * N / (n * m * (N - 1)))
    # Permutations move the smaller side's indicator (the same statistic: Kc 1 = 0); float32 is ample there
    # (the products are sums of a few hundred centred entries) and halves the cost.
    s = min(n, m)
    kc = Kc.astype(np.float32)
    first = np.zeros((1, N), np.float32)
    first[0, :n] = 1.0
    if s != n:
        first = 1.0 - first

    def quad(z: np.ndarray) -> np.ndarray:
        return c2 * np.einsum("bi,bi->b", z @ kc, z, dtype=np.float64)

    observed = float(quad(first)[0])
    threshold = observed - 100 * np.finfo(np.float32).eps * abs(observed)
    # This many draws reaching the observed value settle "not significant": the full test's p would be >= alpha.
    stop_at = max(1, int(np.ceil(alpha * (n_permutations + 1) - 1)))
    exceed, done, batch = 0, 0, 100
    while done < n_permutations:
        b = min(batch, n_permutations - done)
        pick = np.argpartition(rng.random((b, N)), s - 1, axis=1)[:, :s]
        z = np.zeros((b, N), np.float32)
        z[np.arange(b)[:, None], pick] = 1.0
        hits = quad(z) >= threshold
        if exceed == 0 and done < SETTLE_DRAWS <= done + b and not hits[:SETTLE_DRAWS - done].any():
            return mmd2, null_mean, 1.0 / (SETTLE_DRAWS + 1), SETTLE_DRAWS
        if exceed + int(hits.sum()) >= stop_at:
            drawn = done + int(np.flatnonzero(np.cumsum(hits) + exceed >= stop_at)[0]) + 1
            p = max(stop_at / drawn, (stop_at + 1) / (n_permutations + 1))
            return mmd2, null_mean, min(p, 1.0), drawn
        exceed += int(hits.sum())
        done += b
    return mmd2, null_mean, (exceed + 1) / (n_permutations + 1), n_permutations


def shift_test(folder_emb: np.ndarray, reference_emb: np.ndarray, alpha: float = 0.05,
               n_permutations: int = 1000, seed: int = 0, max_folder: int = 500, max_reference: int = 700,
               n_components: int = 32, bandwidth_scale: float = 1.0, min_effect: float | None = None,
               min_photos: int = MIN_PHOTOS, floor_table: dict | None = None) -> ShiftResult:
    """Two-sample MMD permutation test of folder vs reference embeddings (N, D) and (M, D).

    Fewer than `min_photos` folder rows: not run (detected False, p_value None, reason set).
    Large inputs are subsampled (seeded) to `max_folder` / `max_reference` rows. The result depends only on
    the set of rows of each side, `seed` and the settings: rows are put in one canonical order first.
    """
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
    folder, ref = canonical_rows(folder), canonical_rows(ref)
    rng = np.random.default_rng(seed)
    if len(folder) > max_folder:
        folder = folder[np.sort(rng.choice(len(folder), max_folder, replace=False))]
    if len(ref) > max_reference:
        ref = ref[np.sort(rng.choice(len(ref), max_reference, replace=False))]
    x, y = _prepare(folder, ref, n_components)
    nx, ny = len(x), len(y)
    # Bandwidth: median distance between reference points (a property of the model, not the folder).
    sigma = (_median_distance(y) or 1.0) * bandwidth_scale
    K = _rbf_kernel(np.vstack([x, y]), sigma)
    mmd2, null_mean, p, drawn = _permutation_null(K, nx, n_permutations, alpha, rng)
    # Effect: MMD^2 above its permutation-null mean (removes the estimator's 1/n bias).
    effect = mmd2 - null_mean
    floor = effect_floor(n, floor_table) if min_effect is None else float(min_effect)
    return ShiftResult(bool(p < alpha and effect > floor), p, effect, n, n_reference=ny, alpha=alpha,
                       extra={"bandwidth": sigma, "n_permutations": drawn, "n_used": nx,
                              "mmd2": mmd2, "min_effect": floor})


# -- reference embeddings ---------------------------------------------------------------------------------


def read_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An embeddings.npz: `embedding` (N, D), `label`, `source`, `split` (N,) each."""
    from core.models.array_files import read_arrays  # garbage or a missing `embedding` array: one line (ArrayFileError)

    return read_arrays(path, {"embedding": 2})


def reference_embeddings(bundle, splits: tuple[str, ...] = ("train",)) -> np.ndarray | None:
    """The bundle's own training embeddings (float32 (N, D)) from its `embeddings.npz`, or None.

    `bundle` is a core.models.bundle.Bundle or a bundle folder. None when the bundle carries no such file
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


def reference_sets(bundle, splits: tuple[str, ...] = ("train",), min_rows: int = MIN_PHOTOS) -> dict[str, np.ndarray]:
    """The bundle's training embeddings as comparison sets: "all" (every source pooled) and one per source
    with at least `min_rows` rows. Empty when the bundle carries no embeddings.npz. Read once per file version
    (path, size, modification time) and process: the arrays are read-only."""
    folder = getattr(bundle, "path", bundle)
    path = Path(folder) / EMBEDDINGS_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}
    st = path.stat()
    return dict(_reference_sets(str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(splits), int(min_rows)))


@functools.lru_cache(maxsize=8)
def _reference_sets(path: str, _size: int, _mtime_ns: int, splits: tuple[str, ...], min_rows: int
                    ) -> tuple[tuple[str, np.ndarray], ...]:
    sets = _read_reference_sets(Path(path), splits, min_rows)
    for emb in sets.values():
        emb.flags.writeable = False
    return tuple(sets.items())


def _read_reference_sets(path: Path, splits: tuple[str, ...], min_rows: int) -> dict[str, np.ndarray]:
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


def folder_shift(bundle, embeddings, reference: np.ndarray | None = None, alpha: float = 0.05,
                 seed: int = 0) -> ShiftResult:
    """The shift test of a run: `embeddings` of the folder's in-scope photos vs the bundle's training
    embeddings (or an explicit `reference`). Not run, with a reason, when either side is missing.

    With a bundle whose training photos come from several collections, the folder is compared with all of
    them pooled and with each collection alone, and the alarm fires only when every comparison does (an
    intersection-union test: its p-value is the largest, valid at level alpha with no correction). So a
    folder drawn from one of the collections the model learned from, or from their mix, is not a shift;
    a folder unlike each of them is.

    `seed` seeds all of the test's randomness. The result is a function of the SET of embeddings (as float32
    rows; their order does not matter, rows are put in a canonical order inside), the reference, `alpha` and
    `seed`: the same stored set gives the same verdict however the runs that made it went.
    """
    emb = [np.asarray(e, dtype=np.float32) for e in embeddings]
    folder = np.stack(emb) if emb else np.zeros((0, 1), np.float32)
    try:
        sets = {"all": np.asarray(reference, dtype=np.float32)} if reference is not None else reference_sets(bundle)
    except ValueError as exc:  # garbage embeddings.npz (core.models.array_files.ArrayFileError): the test is skipped, said once
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
    return shift_against(folder, list(sets.values()), alpha=alpha, seed=seed, floor_table=table)


def shift_against(folder: np.ndarray, references: Sequence[np.ndarray], alpha: float = 0.05, seed: int = 0,
                  **kwargs) -> ShiftResult:
    """The intersection-union verdict of `folder` against each reference set (folder_shift's rule): every
    comparison must fire; the least significant one gives the p-value and statistic. kwargs: shift_test's."""
    results = [shift_test(folder, ref, alpha=alpha, seed=seed, **kwargs) for ref in references]
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


# -- a stored verdict read back (session audit rows, summaries): typed or refused --------------------------------

_VERDICT_TEXT = ("method", "reason", "model", "model_key", "message", "remedy", "point_message", "source")
_VERDICT_POINTS = ("default", "out_of_collection")


def _finite_or_none(value, low: float = -float("inf"), high: float = float("inf")):
    """(ok, value as float or None): numbers only (not bools, not text), finite, within [low, high]."""
    import math  # here, not at the top: this block stays self-contained

    if value is None:
        return True, None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False, None
    try:
        x = float(value)
    except OverflowError:  # an int of 400 digits
        return False, None
    return (math.isfinite(x) and low <= x <= high), x


def clean_verdict(obj) -> dict | None:
    """A stored shift verdict with well-typed fields, or None when it is malformed (then it is ignored, never
    trusted or crashed on): `detected` a bool; `p_value` in [0, 1] or None (and not None when detected);
    `statistic`, `min_effect` finite or None; `alpha` in (0, 1); `n`, `review_n` whole numbers >= 0; the texts
    (`method`, `reason`, `model`, `message`...) strings; `operating_point` one of the card's point names.
    Other keys are kept when they hold a string, bool or finite number, and dropped otherwise."""
    if not isinstance(obj, dict) or not isinstance(obj.get("detected"), bool):
        return None
    out: dict = {"detected": obj["detected"]}
    inf = float("inf")
    for key, low, high in (("p_value", 0.0, 1.0), ("statistic", -inf, inf), ("min_effect", -inf, inf)):
        ok, value = _finite_or_none(obj.get(key), low, high)
        if not ok:
            return None
        if key in obj:
            out[key] = value
    if out["detected"] and out.get("p_value") is None:
        return None
    if "alpha" in obj:
        ok, alpha = _finite_or_none(obj["alpha"], 0.0, 1.0)
        if not ok or alpha is None or not 0.0 < alpha < 1.0:
            return None
        out["alpha"] = alpha
    for key in ("n", "review_n"):
        value = obj.get(key)
        if value is None:
            if key == "n" and key in obj:
                return None
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 10**12:
            return None
        out[key] = int(value)
    for key in _VERDICT_TEXT:
        if key in obj:
            if not isinstance(obj[key], str):
                return None
            out[key] = obj[key]
    if "operating_point" in obj:
        if obj["operating_point"] not in _VERDICT_POINTS:
            return None
        out["operating_point"] = obj["operating_point"]
    for key, value in obj.items():
        if key in out or key in ("n", "review_n", "alpha", "operating_point"):
            continue
        if isinstance(value, (str, bool)) or (_finite_or_none(value)[0] and value is not None):
            out[key] = value
    return out
