"""What to label or review next, and what to do under a shift alarm: the labelling sample (a seeded,
class-blind random sample of a folder that reaches MIN_PER_CLASS photos of each class with high probability,
kept by the session as the folder grows), the review queue (the app's Review next: safety first), the ordered
candidates the bench compares with random, and the shift alarm's remedy line. No training here: core.learning.adapt
uses these to adapt a model once the photos are labelled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.progress import CancelToken, ProgressFn, report

from core.triage.remedy import MIN_PER_CLASS


def embed_photos(bundle, paths: Sequence[str | os.PathLike], batch_size: int = 16, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None, scope_scores: list | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(logits (N,), embeddings (N, D), ok mask (N,), errors) of photos under the bundle's own model.

    Photos are decoded as the classify engine decodes them (core.triage.inference.load_input: once per input size
    of the bundle), so a site photo's parent logit is the one classify gave it. `scope_scores`, a list,
    receives each photo's not-a-skin-photo score (core.photos.scope; the highest over input sizes; None unread)."""
    from core.triage.inference import load_input, stack_inputs

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
            arr, _, err, scope = load_input(paths[i], sizes)
            if scope_scores is not None:
                vals = list(scope.values()) if isinstance(scope, dict) else [scope]
                vals = [float(v) for v in vals if v is not None]
                scope_scores.append(max(vals) if vals else None)
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


def content_sha256(paths: Sequence[str | os.PathLike]) -> list[str | None]:
    """SHA-256 of each file now (None when it cannot be read)."""
    from core.photos.images import file_sha256

    out: list[str | None] = []
    for p in paths:
        try:
            out.append(file_sha256(p))
        except OSError:
            out.append(None)
    return out


# Two orders, each for its job (docs/adaptation.md):
# - the review queue (the app's Review next) is for safety: review_queue;
# - the labelling sample (`adapt --suggest N`) is for teaching: a seeded, class-blind random sample
#   (labelling_sample), because no order beat it on held-out collections (bench/adaptation.py).
# The other orders stay for the bench.
ORDER_RANDOM = "random"            # the labelling sample: seeded by the folder, class-blind
ORDER_MEDOIDS = "medoids"          # k-means medoids of the embeddings: photos that stand for many others
ORDER_STRATIFIED = "stratified"    # spread over the model's score range: quantiles of p(mpox), widest gap first
ORDER_UNCERTAINTY = "uncertainty"  # nearest the decision boundary, kept diverse (the order before 1.3.0)
REVIEW_ORDERS = (ORDER_RANDOM, ORDER_MEDOIDS, ORDER_STRATIFIED, ORDER_UNCERTAINTY)
DEFAULT_ORDER = ORDER_RANDOM       # the ordered ones taught less than random on photos from elsewhere (issue 23)


def review_queue(p_mpox: Sequence[float | None], called_mpox: Sequence[bool], reviewed: Sequence[bool]) -> list[int]:
    """The review queue, for safety: indices of unreviewed photos, those NOT called mpox first, the one the
    deciding model scores highest first (the likeliest missed mpox); then those called mpox (reviewed as
    positives anyway), highest first. Photos without a score are left to the caller."""
    rows = [(not bool(c), float(p), i) for i, (p, c, r) in enumerate(zip(p_mpox, called_mpox, reviewed))
            if not r and p is not None and np.isfinite(float(p))]
    return [i for _, _, i in sorted(rows, key=lambda t: (not t[0], -t[1], t[2]))]


def folder_seed(folder: str | os.PathLike) -> str:
    """The labelling sample's seed: a hash of the folder's resolved path (so the sample does not change when
    photos are added; a moved folder draws a new sample)."""
    import hashlib

    return hashlib.sha256(str(Path(folder).expanduser().resolve()).encode("utf-8")).hexdigest()[:16]


def sample_rank(seed: str, photo_sha256: str) -> str:
    """A photo's place in the labelling sample: a hash of (folder seed, its content's SHA-256). It depends on
    that photo alone, so photos added later slot in among the others and never push the first ones out of
    the order they had (only past the end of a sample that is already drawn)."""
    import hashlib

    return hashlib.sha256(f"{seed}:{photo_sha256}".encode("ascii")).hexdigest()


def random_order(seed: str, sha256: Sequence[str | None], keep: Sequence[str] = ()) -> list[int]:
    """Indices in labelling-sample order (lowest rank first); photos without a hash (unreadable) last. Photos of
    `keep` (content hashes of a sample drawn before, in its order) come first, so a sample keeps its first photos
    when the folder grows."""
    first = {h: k for k, h in enumerate(dict.fromkeys(keep))}
    known = [((0, first[h], "") if h in first else (1, 0, sample_rank(seed, h)), i) for i, h in enumerate(sha256) if h]
    return [i for _, i in sorted(known)] + [i for i, h in enumerate(sha256) if not h]


ACTION_SAMPLE = "labelling_sample"   # session audit: the labelling sample as drawn (its photos' content hashes)


def stored_sample(session: Any, seed: str) -> list[str]:
    """The content hashes of the latest labelling sample drawn for this folder seed in a session ([] without)."""
    if session is None:
        return []
    for entry in reversed(session.audit(ACTION_SAMPLE)):
        d = entry.get("details") or {}
        if isinstance(d, dict) and d.get("seed") == seed and isinstance(d.get("sha256"), list):
            return [h for h in d["sha256"] if isinstance(h, str)]
    return []


def remember_sample(session: Any, seed: str, sample: "LabellingSample", sha256: Sequence[str | None]) -> None:
    """Keep a labelling sample in the session (one audit entry when it changed), so it keeps its photos later."""
    if session is None or getattr(session, "journal_mode", "") == "read-only":
        return   # adapt opens a session read-only: it reads the sample the app keeps, and writes nothing
    drawn = [sha256[i] for i in sample.order if sha256[i]]
    if drawn != stored_sample(session, seed)[:len(drawn)] or not drawn:
        session.log(ACTION_SAMPLE, {"seed": seed, "sha256": drawn})


@dataclass
class LabellingSample:
    """The labelling sample of a folder: `order` (indices, sample order) of its first `size` photos, those
    still `to_label`, and `reason` when it grew past the size asked for (or cannot reach the minimum)."""
    order: list[int]
    size: int
    to_label: list[int]
    counts: dict
    reason: str = ""


def labelling_sample(sha256: Sequence[str | None], n: int, seed: str,
                     labels: Sequence[int | None] | None = None, min_per_class: int = MIN_PER_CLASS,
                     keep: Sequence[str] = ()) -> LabellingSample:
    """The first `n` photos in random_order, grown until their labels hold `min_per_class` of each class.

    `labels` (1 mpox, 0 not mpox, None not labelled yet) aligned with `sha256`. While every photo of the
    sample is labelled and a class is short, the sample takes the next photos of the same order: as many
    as that class's share so far says will bring it to the minimum. It says why in `reason`. `keep`: the content
    hashes of the sample drawn before for this folder (stored_sample), which stay its first photos."""
    order = random_order(seed, sha256, keep)
    usable = [i for i in order if sha256[i]]
    labels = list(labels) if labels is not None else [None] * len(sha256)
    size = min(max(int(n), 0), len(usable))
    reason = ""
    while True:
        part = usable[:size]
        todo = [i for i in part if labels[i] is None]
        have = {1: sum(labels[i] == 1 for i in part), 0: sum(labels[i] == 0 for i in part)}
        short = {c: min_per_class - have[c] for c in (1, 0) if have[c] < min_per_class}
        if todo or not short:
            break
        names = {1: "mpox", 0: "not-mpox"}
        found = f"the sample's {size} photos hold {have[1]} mpox and {have[0]} not-mpox"
        if size >= len(usable):
            reason = (f"{found}, and the folder has no more photos: adapt needs {min_per_class} of each class "
                      f"({' and '.join(f'{k} more {names[c]}' for c, k in short.items())})")
            break
        more = max(int(np.ceil(k * size / max(have[c], 1))) for c, k in short.items())
        size = min(len(usable), size + max(1, more))
        reason = (f"{found} (adapt needs {min_per_class} of each class), so it asks for {size - n} more photos: "
                  "the next ones of the same random order")
    return LabellingSample(usable[:size], size, todo, {"mpox": have[1], "not_mpox": have[0]}, reason)


def _review_space(embeddings: np.ndarray, labelled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Standardised, square-rooted embeddings (the head's own feature space) of the pool and the labelled."""
    from core.models.heads import signed_sqrt

    f = signed_sqrt(np.asarray(embeddings, dtype=np.float64))
    lab = signed_sqrt(np.asarray(labelled, dtype=np.float64)) if labelled is not None and len(labelled) else \
        np.zeros((0, f.shape[1]))
    both = np.concatenate([f, lab]) if len(lab) else f
    mu, sd = both.mean(axis=0), both.std(axis=0) + 1e-6
    return (f - mu) / sd, (lab - mu) / sd


def medoid_order(embeddings: np.ndarray, k: int, labelled_embeddings: np.ndarray | None = None,
                 seed: int = 0) -> list[int]:
    """Indices of `k` photos that stand for the pool: k-means medoids, biggest cluster first.

    The pool and the photos already labelled are clustered together into (labelled + k) groups; a
    group that holds a labelled photo is covered, every other group gives the photo nearest its
    centre. A lone outlier (a blank, a strip, a screenshot) forms a group of one, so it comes last.
    """
    from sklearn.cluster import KMeans

    f, lab = _review_space(embeddings, labelled_embeddings)
    n = len(f)
    k = int(min(max(k, 0), n))
    if k == 0:
        return []
    both = np.concatenate([f, lab]) if len(lab) else f
    chosen: list[int] = []
    m = min(len(both), k + len(lab))
    while True:
        km = KMeans(n_clusters=m, n_init=3, random_state=seed).fit(both)
        cl_pool, cl_lab = km.labels_[:n], set(km.labels_[n:].tolist())
        groups = []
        for c in range(m):
            members = np.flatnonzero(cl_pool == c)
            if c in cl_lab or not len(members):
                continue
            d = ((f[members] - km.cluster_centers_[c]) ** 2).sum(-1)
            groups.append((-len(members), float(d.min()), int(members[np.argmin(d)])))
        chosen = [i for _, _, i in sorted(groups)]
        if len(chosen) >= k or m >= len(both):
            break
        m = min(len(both), m + (k - len(chosen)))
    if len(chosen) < k:   # every group covered: fill with the rest, farthest from the covered first
        rest = np.setdiff1d(np.arange(n), chosen)
        ref = np.concatenate([lab, f[chosen]]) if len(chosen) else lab
        d = np.min(((f[rest][:, None, :] - ref[None]) ** 2).sum(-1), axis=1) if len(ref) else np.zeros(len(rest))
        chosen += [int(i) for i in rest[np.argsort(-d, kind="stable")]]
    return chosen[:k]


def stratified_order(logits: np.ndarray, k: int, labelled_logits: np.ndarray | None = None) -> list[int]:
    """Indices of `k` photos spread evenly over the score range: each next one fills the widest gap.

    Scores become ranks among the pool and the labelled photos (q in (0, 1)); greedy max-min on q, the
    ends counting double, so from nothing the picks run median, quartiles, octiles ... and photos
    already labelled fill their part of the range. Needs scores only (the app's Review next has no
    embeddings)."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    lab = np.asarray(labelled_logits, dtype=np.float64).reshape(-1) if labelled_logits is not None else np.zeros(0)
    n = len(z)
    k = int(min(max(k, 0), n))
    if k == 0:
        return []
    both = np.concatenate([z, lab])
    q = (np.argsort(np.argsort(both, kind="stable"), kind="stable") + 0.5) / len(both)
    qp = q[:n]
    gap = np.minimum(2 * qp, 2 * (1 - qp))          # distance to the ends, doubled
    for ql in q[n:]:
        gap = np.minimum(gap, np.abs(qp - ql))
    chosen: list[int] = []
    while len(chosen) < k:
        g = gap.copy()
        g[chosen] = -1.0
        nxt = int(np.argmax(g))
        chosen.append(nxt)
        gap = np.minimum(gap, np.abs(qp - qp[nxt]))
    return chosen


def uncertainty_order(logits: np.ndarray, embeddings: np.ndarray, k: int, threshold_logit: float = 0.0,
                      labelled_embeddings: np.ndarray | None = None, pool_factor: int = 4) -> list[int]:
    """Indices of `k` photos nearest the decision boundary, kept diverse (the review order before 1.3.0).

    Among the `pool_factor * k` photos whose logit is nearest the threshold's, greedy k-center on the
    standardised, square-rooted embeddings picks each next photo farthest from those already
    labelled or chosen.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    n = len(z)
    k = int(min(max(k, 0), n))
    if k == 0:
        return []
    order = np.argsort(np.abs(z - threshold_logit), kind="stable")
    pool = order[: min(n, max(k, pool_factor * k))]
    f, lab = _review_space(embeddings, labelled_embeddings)
    cand = f[pool]
    if len(lab):
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


def suggest_next(logits: np.ndarray, embeddings: np.ndarray, k: int, threshold_logit: float = 0.0,
                 labelled_embeddings: np.ndarray | None = None, pool_factor: int = 4,
                 order: str = ORDER_STRATIFIED, seed: int = 0, labelled_logits: np.ndarray | None = None) -> list[int]:
    """Indices of the `k` photos to label next in an ordered (bench) order: stratified, medoids or uncertainty.
    The labelling sample (random) needs the photos' hashes: labelling_sample.

    `labelled_logits`: the scores of the photos already labelled (stratified order); the others use
    `labelled_embeddings`."""
    if order == ORDER_UNCERTAINTY:
        return uncertainty_order(logits, embeddings, k, threshold_logit, labelled_embeddings, pool_factor)
    if order == ORDER_MEDOIDS:
        return medoid_order(embeddings, k, labelled_embeddings, seed)
    if order == ORDER_STRATIFIED:
        return stratified_order(logits, k, labelled_logits)
    raise ValueError(f"review order must be one of {', '.join(REVIEW_ORDERS)}, not {order!r}")


# A photo this small or this elongated is not a skin photo worth a reviewer's first look (a blank 1x1, a
# 6000x50 strip, an icon): it is listed after every usable photo, never first.
REVIEW_MIN_SIDE = 64
REVIEW_MAX_ASPECT = 5.0


def odd_shape(path: str | os.PathLike) -> bool:
    """True for an image under REVIEW_MIN_SIDE pixels a side or longer than REVIEW_MAX_ASPECT times its width
    (read from the header only); False when the header cannot be read (the embedding step reports it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - any unreadable header: left to the decoder's own error row
        return False
    return min(w, h) < REVIEW_MIN_SIDE or max(w, h) > REVIEW_MAX_ASPECT * max(1, min(w, h))


def sample_paths(paths: Sequence[str | os.PathLike], n: int, labelled: dict | None = None,
                 folder: str | os.PathLike | None = None, session: Any = None) -> tuple[list[dict], LabellingSample]:
    """The labelling sample of a folder's photos (`paths`, unlabelled, plus `labelled`: path -> 1 / 0):
    ([{path, rank, p_mpox: None}] of its photos still to label, in order; the LabellingSample). No model
    runs: the sample is class-blind. `folder` seeds it (default: the photos' common folder). Photos of an
    odd shape (odd_shape) and unreadable ones are never in it."""
    labelled = {str(p): int(y) for p, y in (labelled or {}).items()}
    every = list(dict.fromkeys([str(p) for p in paths] + list(labelled)))
    if folder is None:
        folder = os.path.commonpath([str(Path(p).resolve().parent) for p in every]) if every else "."
    shas = [h if h and not odd_shape(p) else None for p, h in zip(every, content_sha256(every))]
    seed = folder_seed(folder)
    sample = labelling_sample(shas, n, seed, [labelled.get(p) for p in every], keep=stored_sample(session, seed))
    remember_sample(session, seed, sample, shas)   # with a session, the sample keeps its photos as the folder grows
    picks = [{"path": every[i], "p_mpox": None, "rank": r + 1} for r, i in enumerate(sample.to_label)]
    return picks, sample


def suggest_paths(bundle, paths: Sequence[str | os.PathLike], k: int,
                  labelled_paths: Sequence[str | os.PathLike] = (), progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None, order: str = DEFAULT_ORDER, seed: int = 0) -> list[dict]:
    """The `k` unlabelled photos to review next under `bundle` ([{path, p_mpox, rank}]), for `adapt --suggest`
    with an ordered (bench) order; the default, random, is sample_paths (no model runs).

    Photos of an odd shape (odd_shape) and photos that cannot be read come after every usable photo."""
    from core.models.calibration import apply_temperature, logit

    if order == ORDER_RANDOM:
        return sample_paths(paths, k)[0]

    z, emb, ok, _ = embed_photos(bundle, paths, progress=progress, cancel=cancel)
    odd = np.array([bool(good) and odd_shape(p) for p, good in zip(paths, ok)], dtype=bool)
    idx = np.flatnonzero(ok & ~odd)
    lab, lab_z = None, None
    t = float(bundle.card.temperature or 1.0)
    if labelled_paths:
        lz, le, lok, _ = embed_photos(bundle, labelled_paths, cancel=cancel)
        lab, lab_z = le[lok], lz[lok] / t
    picks = [int(idx[i]) for i in suggest_next(z[idx] / t, emb[idx], k, float(logit(bundle.card.threshold)), lab,
                                               order=order, seed=seed, labelled_logits=lab_z)] if len(idx) else []
    picks += [int(i) for i in np.flatnonzero(odd)][: max(0, k - len(picks))]
    return [{"path": str(paths[i]), "p_mpox": float(apply_temperature(z[i], t)), "rank": r + 1}
            for r, i in enumerate(picks)]
