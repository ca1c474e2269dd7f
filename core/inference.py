"""Batch inference: decode files in parallel ahead of the model, score them in batches, stream records.

One engine owns one Bundle; Keras models are not thread-safe, so `run` must be called from one
thread at a time (the desktop app keeps one long-lived worker per model).

Two checks ride along. Per photo: core.scope scores "not a skin photo" on the decoded image (in the
decode threads); above core.scope.SCOPE_LIMIT the record's flag is `out_of_scope`, whatever the
model's own embedding-distance check (`ood_score`, card `ood_threshold`) says. The scope score goes to
ResultRecord.scope_score where the record has that field. Per folder: the engine keeps the embedding
of every photo it scored that the scope check kept (float16), and `shift()` runs core.shift.shift_test against the bundle's
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

from core import scope
from core.bundle import Bundle
from core.images import ImageDecodeError, decode_rgb, load_rgb_with_hash, read_file_bytes
from core.preprocess import to_model_input
from core.progress import CancelToken, ProgressFn, report
from core.records import FLAG_OUT_OF_SCOPE, STATUS_ERROR, STATUS_OK, ResultRecord

# Set by the ws colleague's records change; until then the scope score is only used for the flag.
_HAS_SCOPE_FIELD = "scope_score" in ResultRecord.__dataclass_fields__


def load_input(path: str | os.PathLike, size: int | Sequence[int]
               ) -> tuple[np.ndarray | dict | None, str | None, str, float | dict | None]:
    """(model input or None, file sha256 or None, error message, scope score); never raises for a bad file.

    The scope score is computed on the decoded image before resizing, so tiny images stay tiny.
    With several sizes (a combined bundle's `input_sizes`) the file is read once and decoded once per size,
    exactly as a model of that size alone decodes it; input and scope score are then {size: ...}.
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
    inputs, scores = {}, {}
    try:
        for s in sizes:
            rgb = decode_rgb(data, path, max_side=s)
            inputs[s], scores[s] = to_model_input(rgb, s), scope.scope_score(rgb)
    except ImageDecodeError as exc:
        return None, digest, str(exc), None
    return inputs, digest, "", scores


def stack_inputs(inputs: Sequence) -> np.ndarray | dict:
    """A batch from model inputs of one photo each (arrays, or {size: array} for several sizes)."""
    if inputs and isinstance(inputs[0], dict):
        return {s: np.stack([x[s] for x in inputs]) for s in inputs[0]}
    return np.stack(inputs)


class InferenceEngine:
    """Streams one ResultRecord per input path, in input order."""

    def __init__(self, bundle: Bundle, batch_size: int = 32, decode_workers: int | None = None,
                 threshold: float | None = None, with_components: bool = False):
        self.bundle = bundle
        self.batch_size = max(1, int(batch_size))
        self.decode_workers = decode_workers or max(2, min(8, (os.cpu_count() or 2)))
        self.threshold = bundle.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        self.scope_limit = scope.SCOPE_LIMIT
        # Embeddings (float16) of the photos scored so far that the scope check kept, for the shift test.
        self.embeddings: list[np.ndarray] = []
        # A combined bundle's components, scored from the same pass (see component_engines).
        self.parts: list[InferenceEngine] = []
        self.part_records: list[dict[str, ResultRecord]] = []
        if with_components and hasattr(bundle, "forward_parts"):
            self.parts = [InferenceEngine(c, self.batch_size, self.decode_workers) for c in bundle.components]
            self.part_records = [{} for _ in self.parts]

    @property
    def card(self):
        return self.bundle.card

    @property
    def input_sizes(self) -> tuple[int, ...]:
        return tuple(getattr(self.bundle, "input_sizes", (self.bundle.input_size,)))

    def component_engines(self) -> list["ComponentEngine"]:
        """Engines for the combined bundle's components that hand out the rows this engine made for them in
        its own pass (each backbone runs once per photo), scoring only photos it did not see."""
        return [ComponentEngine(part, kept) for part, kept in zip(self.parts, self.part_records)]

    def _record(self, path: Path, **fields) -> ResultRecord:
        card = self.bundle.card
        return ResultRecord(path=str(path), model=card.name, model_version=card.version,
                            model_sha256=card.model_sha256, threshold=self.threshold, **fields)

    def score_batch(self, items: Sequence[tuple]) -> list[ResultRecord]:
        """Score decoded inputs [(path, input, file sha256[, scope score])] in one forward pass.

        An input is an array, or {size: array} for a bundle of several input sizes (scope score likewise).
        """
        if not items:
            return []
        batch = stack_inputs([item[1] for item in items])
        if self.parts:
            logits, emb, parts = self.bundle.forward_parts(batch)
            for i, (part, kept) in enumerate(zip(self.parts, self.part_records)):
                size = part.bundle.input_size
                sub = [(item[0], None, item[2], _at(item[3] if len(item) > 3 else None, size)) for item in items]
                for rec in part.records(sub, *parts[i]):
                    kept[str(rec.path)] = rec
        else:
            logits, emb = self.bundle.forward(batch)
        main = max(self.input_sizes)
        return self.records([(item[0], None, item[2], _at(item[3], main) if len(item) > 3 else None)
                             for item in items], logits, emb)

    def records(self, items: Sequence[tuple], logits: np.ndarray, emb: np.ndarray) -> list[ResultRecord]:
        """Records of photos [(path, _, file sha256, scope score)] from the model's logits and embeddings."""
        bundle = self.bundle
        ood_score = bundle.ood.score(emb) if bundle.ood is not None else None
        scored = bundle.decide(bundle.calibrate(logits), ood_score, self.threshold)
        out = []
        for i, item in enumerate(items):
            path, _, digest = item[:3]
            scope_score = item[3] if len(item) > 3 else None
            flag = scored.flag[i]
            if scope.is_out_of_scope(scope_score, self.scope_limit):
                flag = FLAG_OUT_OF_SCOPE
            else:
                # Photos far from the training embeddings stay in: they are what the shift test is for.
                self.embeddings.append(np.asarray(emb[i], dtype=np.float16))
            ood = None if scored.ood_score is None else float(scored.ood_score[i])
            extra = {"scope_score": scope_score} if _HAS_SCOPE_FIELD else {}
            out.append(self._record(path, status=STATUS_OK, p_mpox=float(scored.p_mpox[i]),
                                    prediction=scored.prediction[i], flag=flag, ood_score=ood,
                                    file_sha256=digest, **extra))
        return out

    def shift(self, reference: np.ndarray | None = None, alpha: float = 0.05):
        """core.shift.ShiftResult of the in-scope photos scored so far against the bundle's training
        embeddings (or `reference`); not run (detected False, with a reason) below 30 photos or when
        the bundle carries no embeddings."""
        from core.shift import folder_shift

        return folder_shift(self.bundle, self.embeddings, reference=reference, alpha=alpha)

    def run(self, paths: Iterable[str | os.PathLike], progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> Iterator[ResultRecord]:
        """Yield a record per path. On cancel, stops after the current batch; what was yielded stands."""
        paths = [Path(p) for p in paths]
        total = len(paths)
        size = self.input_sizes
        report(progress, 0, total, "starting", "classify")
        if not paths:
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
                        for part, kept in zip(self.parts, self.part_records):
                            kept[str(path)] = part._record(path, status=STATUS_ERROR, file_sha256=digest, error=error)
                        yield self._record(path, status=STATUS_ERROR, file_sha256=digest, error=error)
                done += len(chunk)
                report(progress, done, total, str(chunk[-1][0].name), "classify")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _at(value, size: int):
    """The entry for `size` of a per-size value ({size: value}), or the value itself."""
    return value.get(size) if isinstance(value, dict) else value


class ComponentEngine:
    """A component's engine inside a combined run: yields the rows the combined pass made for this component
    (InferenceEngine.component_engines) and scores any other photo itself, in input order. Same interface
    as InferenceEngine (`run`, `card`, `shift`, `batch_size`, `bundle`)."""

    def __init__(self, engine: InferenceEngine, kept: dict[str, ResultRecord]):
        self.engine, self.kept = engine, kept
        self.bundle, self.batch_size = engine.bundle, engine.batch_size

    @property
    def card(self):
        return self.engine.card

    @property
    def threshold(self) -> float:
        return self.engine.threshold

    def shift(self, reference: np.ndarray | None = None, alpha: float = 0.05):
        return self.engine.shift(reference, alpha)

    def run(self, paths: Iterable[str | os.PathLike], progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> Iterator[ResultRecord]:
        paths = [Path(p) for p in paths]
        total = len(paths)
        missing = [p for p in paths if str(p) not in self.kept]
        fresh = iter(self.engine.run(missing, cancel=cancel)) if missing else iter(())
        report(progress, 0, total, "starting", "classify")
        done = 0
        for path in paths:
            if cancel is not None and cancel.cancelled:
                break
            rec = self.kept.pop(str(path), None)
            if rec is None:
                rec = next(fresh, None)
                if rec is None:  # the scoring engine stopped (cancelled)
                    break
            yield rec
            done += 1
            if done % self.batch_size == 0 or done == total:
                report(progress, done, total, path.name, "classify")


def share_backbones(engines: Sequence) -> list:
    """The engines to run, in the order to run them, so that each backbone runs once per photo.

    A combined bundle's engine given together with engines of its own components (same model SHA-256) scores
    the components in its own pass: it runs first, and those engines become its component_engines(), which
    hand out the rows it made. Other engines are returned as they are, in their order."""
    engines = list(engines)
    out = list(engines)
    for i, engine in enumerate(engines):
        bundle = getattr(engine, "bundle", None)
        comps = getattr(bundle, "components", None)
        if not isinstance(engine, InferenceEngine) or not comps:
            continue
        keys = [c.card.key for c in comps]
        mates = {j: keys.index(e.card.key) for j, e in enumerate(engines)
                 if j != i and getattr(getattr(e, "card", None), "key", None) in keys}
        if not mates:
            continue
        shared = InferenceEngine(bundle, engine.batch_size, engine.decode_workers, engine.threshold,
                                 with_components=True)
        parts = shared.component_engines()
        for j, k in mates.items():
            parts[k].engine.threshold = engines[j].threshold
            out[j] = parts[k]
        out[i] = shared
        # the combined engine first, then everything else in the given order
        out = [shared] + [e for e in out if e is not shared]
    return out


def classify_paths(paths: Iterable[str | os.PathLike], bundle: Bundle, batch_size: int = 32,
                   threshold: float | None = None, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> list[ResultRecord]:
    """Convenience: run the engine to completion (or cancel) and return the records."""
    engine = InferenceEngine(bundle, batch_size=batch_size, threshold=threshold)
    return list(engine.run(paths, progress=progress, cancel=cancel))
