"""Batch inference: decode files in parallel ahead of the model, score them in batches, stream records.

One engine owns one Bundle; Keras models are not thread-safe, so `run` must be called from one
thread at a time (the desktop app keeps one long-lived worker per model).

Two checks ride along. Per photo: core.photos.scope scores "not a skin photo" on the decoded image (in the
decode threads); above core.photos.scope.SCOPE_LIMIT the record's flag and prediction are `out_of_scope`
(Bundle.decide, core.records.decide), as when the model's own embedding-distance check (`ood_score`,
card `ood_threshold`) fires. The scope score goes to
ResultRecord.scope_score where the record has that field. Per folder: the engine keeps the embedding
of every photo it scored that the scope check kept (float16), and `shift()` runs core.triage.shift.shift_test against the bundle's
training embeddings.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

import hashlib
import threading

from core.photos import scope
from core.models.bundle import Bundle
from core.photos.images import ImageDecodeError, decode_rgb, load_rgb_with_hash, read_file_bytes
from core.photos.preprocess import to_model_input
from core.progress import CancelToken, ProgressFn, report
from core.records import STATUS_ERROR, STATUS_OK, ResultRecord

# Set by the ws colleague's records change; until then the scope score is only used for the flag.
_HAS_SCOPE_FIELD = "scope_score" in ResultRecord.__dataclass_fields__


def load_input(path: str | os.PathLike, size: int | Sequence[int]
               ) -> tuple[np.ndarray | dict | None, str | None, str, float | None]:
    """(model input or None, file sha256 or None, error message, scope score); never raises for a bad file.

    The scope score is computed once per photo, on the decoded image before resizing (so tiny images stay
    tiny); core.photos.scope works on its own small working size, so it is one score whatever the model's size.
    With several sizes (a combined bundle's `input_sizes`) the file is read once and decoded once per size,
    exactly as a model of that size alone decodes it; the input is then {size: array}, the score still one.
    """
    sizes = (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(sizes) == 1:
        rgb, digest, error = load_rgb_with_hash(path, max_side=sizes[0])
        if rgb is None:
            return None, digest, error, None
        return to_model_input(rgb, sizes[0]), digest, "", scope.scope_score(rgb)
    try:
        data = read_file_bytes(path)
    except ImageDecodeError as exc:
        return None, None, str(exc), None
    digest = hashlib.sha256(data).hexdigest()
    inputs, score = {}, None
    try:
        for s in sizes:
            rgb = decode_rgb(data, path, max_side=s)
            inputs[s] = to_model_input(rgb, s)
            score = scope.scope_score(rgb) if score is None else score
    except ImageDecodeError as exc:
        return None, digest, str(exc), None
    return inputs, digest, "", score


def stack_inputs(inputs: Sequence) -> np.ndarray | dict:
    """A batch from model inputs of one photo each (arrays, or {size: array} for several sizes)."""
    if inputs and isinstance(inputs[0], dict):
        return {s: np.stack([x[s] for x in inputs]) for s in inputs[0]}
    return np.stack(inputs)


class InferenceEngine:
    """Streams one ResultRecord per input path, in input order."""

    def __init__(self, bundle: Bundle, batch_size: int = 32, decode_workers: int | None = None,
                 threshold: float | None = None, shared: "SharedRows | None" = None):
        self.bundle = bundle
        self.batch_size = max(1, int(batch_size))
        self.decode_workers = decode_workers or max(2, min(8, (os.cpu_count() or 2)))
        self.threshold = bundle.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        self.scope_limit = scope.SCOPE_LIMIT
        self.scoring_digest = bundle.card.scoring_digest   # the key every record of this engine carries
        # Embeddings (float16) of the photos scored so far that the scope check kept, for the shift test.
        self.embeddings: list[np.ndarray] = []
        # A combined bundle's components, scored from the same pass into `shared` (see SharedRows).
        self.shared = shared if hasattr(bundle, "forward_parts") else None
        self.parts: list[InferenceEngine] = []
        if self.shared is not None:
            self.parts = [InferenceEngine(c, self.batch_size, self.decode_workers) for c in bundle.components]

    @property
    def card(self):
        return self.bundle.card

    @property
    def input_sizes(self) -> tuple[int, ...]:
        return tuple(getattr(self.bundle, "input_sizes", (self.bundle.input_size,)))

    def _record(self, path: Path, **fields) -> ResultRecord:
        card = self.bundle.card
        return ResultRecord(path=str(path), model=card.name, model_version=card.version,
                            model_sha256=card.model_sha256, scoring_digest=self.scoring_digest,
                            threshold=self.threshold, **fields)

    def score_batch(self, items: Sequence[tuple]) -> list[ResultRecord]:
        """Score decoded inputs [(path, input, file sha256[, scope score])] in one forward pass.

        An input is an array, or {size: array} for a bundle of several input sizes (the scope score is one).
        """
        if not items:
            return []
        batch = stack_inputs([item[1] for item in items])
        if self.parts:
            logits, emb, parts = self.bundle.forward_parts(batch)
            for i, part in enumerate(self.parts):
                size = part.bundle.input_size
                sub = [(item[0], None, item[2], _at(item[3] if len(item) > 3 else None, size)) for item in items]
                recs = part.records(sub, *parts[i])
                part.embeddings.clear()  # each row carries its own to the component's engine (shift test)
                embs = [None if scope.is_out_of_scope(item[3], part.scope_limit) else
                        np.asarray(parts[i][1][j], dtype=np.float16) for j, item in enumerate(sub)]
                self.shared.put(i, list(zip(recs, embs)))
        else:
            logits, emb = self.bundle.forward(batch)
        main = max(self.input_sizes)
        return self.records([(item[0], None, item[2], _at(item[3], main) if len(item) > 3 else None)
                             for item in items], logits, emb)

    def records(self, items: Sequence[tuple], logits: np.ndarray, emb: np.ndarray) -> list[ResultRecord]:
        """Records of photos [(path, _, file sha256, scope score)] from the model's logits and embeddings."""
        bundle = self.bundle
        ood_score = bundle.ood.score(emb) if bundle.ood is not None else None
        scope_scores = [item[3] if len(item) > 3 else None for item in items]
        scored = bundle.decide(bundle.calibrate(logits), ood_score, self.threshold, scope_score=scope_scores,
                               scope_limit=self.scope_limit)
        out = []
        for i, item in enumerate(items):
            path, _, digest = item[:3]
            scope_score = scope_scores[i]
            flag = scored.flag[i]
            kept = None
            if not scope.is_out_of_scope(scope_score, self.scope_limit):
                # Photos far from the training embeddings stay in: they are what the shift test is for.
                kept = np.asarray(emb[i], dtype=np.float16)
                self.embeddings.append(kept)
            ood = None if scored.ood_score is None else float(scored.ood_score[i])
            extra = {"scope_score": scope_score} if _HAS_SCOPE_FIELD else {}
            out.append(self._record(path, status=STATUS_OK, p_mpox=float(scored.p_mpox[i]),
                                    prediction=scored.prediction[i], flag=flag, ood_score=ood,
                                    file_sha256=digest, embedding=kept, **extra))
        return out

    def shift(self, reference: np.ndarray | None = None, alpha: float = 0.05, seed: int = 0):
        """core.triage.shift.ShiftResult of the in-scope photos scored so far against the bundle's training
        embeddings (or `reference`); not run (detected False, with a reason) below 30 photos or when
        the bundle carries no embeddings. A function of the set of embeddings and `seed` (core.triage.shift.folder_shift)."""
        from core.triage.shift import folder_shift

        return folder_shift(self.bundle, self.embeddings, reference=reference, alpha=alpha, seed=seed)

    def run(self, paths: Iterable[str | os.PathLike], progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> Iterator[ResultRecord]:
        """Yield a record per path. On cancel, stops after the current batch; what was yielded stands."""
        paths = [Path(p) for p in paths]
        total = len(paths)
        size = self.input_sizes
        report(progress, 0, total, "starting", "classify")
        if not paths:
            if self.shared is not None:
                self.shared.close()  # nothing to score here (a resume): its components score their photos themselves
            return
        # Enough decodes in flight to keep the model busy, few enough to bound memory.
        prefetch = self.batch_size * 2 + self.decode_workers
        pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode")
        try:
            pending: deque = deque()
            queue = iter(paths)

            def submit_next() -> None:
                path = next(queue, None)
                if path is not None:
                    pending.append((path, pool.submit(load_input, path, size)))

            for _ in range(prefetch):
                submit_next()
            done = 0
            while pending:
                if cancel is not None and cancel.cancelled:
                    break
                chunk = []
                while pending and len(chunk) < self.batch_size:
                    path, future = pending.popleft()
                    chunk.append((path, future.result()))
                    submit_next()
                good = [(p, arr, digest, sc) for p, (arr, digest, _, sc) in chunk if arr is not None]
                scored = iter(self.score_batch(good))
                for path, (arr, digest, error, _) in chunk:
                    if arr is not None:
                        yield next(scored)
                    else:
                        for i, part in enumerate(self.parts):
                            self.shared.put(i, [(part._record(path, status=STATUS_ERROR, file_sha256=digest,
                                                              error=error), None)])
                        yield self._record(path, status=STATUS_ERROR, file_sha256=digest, error=error)
                done += len(chunk)
                report(progress, done, total, str(chunk[-1][0].name), "classify")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if self.shared is not None:
                self.shared.close()  # components waiting for rows this run did not make score them themselves


def _at(value, size: int):
    """The entry for `size` of a per-size value ({size: value}), or the value itself."""
    return value.get(size) if isinstance(value, dict) else value


class SharedRows:
    """Rows a combined bundle's pass makes for its components, handed to the components' engines (in this
    thread or others: the app runs each model in its own worker). Thread-safe."""

    def __init__(self, n_parts: int):
        self._cond = threading.Condition()
        self._rows: list[dict[str, tuple]] = [{} for _ in range(n_parts)]
        self._closed = False

    def put(self, part: int, rows: Sequence[tuple[ResultRecord, np.ndarray | None]]) -> None:
        """Rows (record, embedding for the shift test or None) the combined pass made for component `part`."""
        with self._cond:
            for rec, emb in rows:
                self._rows[part][str(rec.path)] = (rec, emb)
            self._cond.notify_all()

    def close(self) -> None:
        """The combined run has ended (finished, cancelled or failed): no more rows will come."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, part: int, path: str, cancel: CancelToken | None = None) -> tuple | None:
        """(record, embedding or None) for `path`, waiting for the combined pass to make it; None once the pass
        has ended without it (or on cancel)."""
        with self._cond:
            while True:
                row = self._rows[part].pop(path, None)
                if row is not None or self._closed or (cancel is not None and cancel.cancelled):
                    return row
                self._cond.wait(0.2)

    def has(self, part: int, path: str) -> bool:
        with self._cond:
            return path in self._rows[part]


class ComponentEngine:
    """A component's engine beside its combined bundle: yields the rows the combined pass made for this
    component (SharedRows) and scores any other photo itself, in input order. Same interface as
    InferenceEngine (`run`, `card`, `shift`, `batch_size`, `bundle`, `threshold`)."""

    def __init__(self, engine: InferenceEngine, shared: SharedRows, part: int):
        self.engine, self.shared, self.part = engine, shared, int(part)
        self.bundle, self.batch_size = engine.bundle, engine.batch_size

    @property
    def card(self):
        return self.engine.card

    @property
    def threshold(self) -> float:
        return self.engine.threshold

    @property
    def embeddings(self) -> list:
        return self.engine.embeddings

    def shift(self, reference: np.ndarray | None = None, alpha: float = 0.05, seed: int = 0):
        """The folder test over this component's rows (those from the combined pass and its own)."""
        return self.engine.shift(reference, alpha, seed)

    def run(self, paths: Iterable[str | os.PathLike], progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> Iterator[ResultRecord]:
        paths = [Path(p) for p in paths]
        total = len(paths)
        report(progress, 0, total, "starting", "classify")
        fresh = None
        done = 0
        for i, path in enumerate(paths):
            if cancel is not None and cancel.cancelled:
                break
            row = self.shared.take(self.part, str(path), cancel)
            rec = None
            if row is not None:
                rec, emb = row
                if emb is not None:
                    self.engine.embeddings.append(emb)
                    if rec.embedding is None:
                        rec.embedding = emb
            else:
                if cancel is not None and cancel.cancelled:
                    break
                if fresh is None:  # the combined pass has ended: score what it did not, in order
                    rest = [p for p in paths[i:] if not self.shared.has(self.part, str(p))]
                    fresh = iter(self.engine.run(rest, cancel=cancel))
                rec = next(fresh, None)
                if rec is None:  # cancelled
                    break
            yield rec
            done += 1
            if done % self.batch_size == 0 or done == total:
                report(progress, done, total, path.name, "classify")


def backbone_sharing(cards: Sequence) -> list[tuple | None]:
    """Per card, its role in one pass over the photos: ("combined", SharedRows), ("component", SharedRows,
    index in the combined bundle), or None. A combined model run together with its own components (same model
    SHA-256) scores them in its pass, so each backbone runs once per photo."""
    roles: list[tuple | None] = [None] * len(cards)
    keys = [getattr(c, "key", None) for c in cards]
    for i, card in enumerate(cards):
        extra = getattr(card, "extra", None)
        refs = extra.get("components") if isinstance(extra, dict) and extra.get("kind") == "combined" else None
        if not refs or roles[i] is not None:
            continue
        mates = {j: k for k, ref in enumerate(refs) for j, key in enumerate(keys)
                 if j != i and roles[j] is None and key
                 and getattr(cards[j], "model_sha256", None) == ref.get("sha256")}
        if not mates:
            continue
        shared = SharedRows(len(refs))
        roles[i] = ("combined", shared)
        for j, k in mates.items():
            roles[j] = ("component", shared, k)
    return roles


def shared_engine(bundle: Bundle, role: tuple | None, **kwargs) -> "InferenceEngine | ComponentEngine":
    """The engine for `bundle` in its backbone_sharing role (kwargs: InferenceEngine's)."""
    if role is None:
        return InferenceEngine(bundle, **kwargs)
    if role[0] == "combined":
        return InferenceEngine(bundle, shared=role[1], **kwargs)
    return ComponentEngine(InferenceEngine(bundle, **kwargs), role[1], role[2])


def share_backbones(engines: Sequence) -> list:
    """The engines to run, in the order to run them one after the other, so that each backbone runs once per
    photo: a combined bundle's engine with engines of its own components runs first and hands them its rows
    (backbone_sharing). Engines that are not local InferenceEngines are returned as they are."""
    engines = list(engines)
    local = [isinstance(e, InferenceEngine) for e in engines]
    roles = backbone_sharing([e.card if ok else None for e, ok in zip(engines, local)])
    out = []
    for engine, role in zip(engines, roles):
        if role is None:
            out.append(engine)
            continue
        kw = {"batch_size": engine.batch_size, "decode_workers": engine.decode_workers, "threshold": engine.threshold}
        out.append(shared_engine(engine.bundle, role, **kw))
    first = [e for e, r in zip(out, roles) if r is not None and r[0] == "combined"]
    return first + [e for e in out if not any(e is f for f in first)]


def classify_paths(paths: Iterable[str | os.PathLike], bundle: Bundle, batch_size: int = 32,
                   threshold: float | None = None, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> list[ResultRecord]:
    """Convenience: run the engine to completion (or cancel) and return the records."""
    engine = InferenceEngine(bundle, batch_size=batch_size, threshold=threshold)
    return list(engine.run(paths, progress=progress, cancel=cancel))
