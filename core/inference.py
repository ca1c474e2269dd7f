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

from core import scope
from core.bundle import Bundle
from core.images import load_rgb_with_hash
from core.preprocess import to_model_input
from core.progress import CancelToken, ProgressFn, report
from core.records import FLAG_OUT_OF_SCOPE, STATUS_ERROR, STATUS_OK, ResultRecord

# Set by the ws colleague's records change; until then the scope score is only used for the flag.
_HAS_SCOPE_FIELD = "scope_score" in ResultRecord.__dataclass_fields__


def load_input(path: str | os.PathLike, size: int) -> tuple[np.ndarray | None, str | None, str, float | None]:
    """(model input or None, file sha256 or None, error message, scope score); never raises for a bad file.

    The scope score is computed on the decoded image before resizing, so tiny images stay tiny.
    """
    rgb, digest, error = load_rgb_with_hash(path, max_side=size)
    if rgb is None:
        return None, digest, error, None
    return to_model_input(rgb, size), digest, "", scope.scope_score(rgb)


class InferenceEngine:
    """Streams one ResultRecord per input path, in input order."""

    def __init__(self, bundle: Bundle, batch_size: int = 32, decode_workers: int | None = None,
                 threshold: float | None = None):
        self.bundle = bundle
        self.batch_size = max(1, int(batch_size))
        self.decode_workers = decode_workers or max(2, min(8, (os.cpu_count() or 2)))
        self.threshold = bundle.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        self.scope_limit = scope.SCOPE_LIMIT
        # Embeddings (float16) of the photos scored so far that the scope check kept, for the shift test.
        self.embeddings: list[np.ndarray] = []

    def _record(self, path: Path, **fields) -> ResultRecord:
        card = self.bundle.card
        return ResultRecord(path=str(path), model=card.name, model_version=card.version,
                            model_sha256=card.model_sha256, threshold=self.threshold, **fields)

    def score_batch(self, items: Sequence[tuple]) -> list[ResultRecord]:
        """Score decoded inputs [(path, uint8 array, file sha256[, scope score])] in one forward pass."""
        if not items:
            return []
        bundle = self.bundle
        batch = np.stack([item[1] for item in items])
        logits, emb = bundle.forward(batch)
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
        size = self.bundle.input_size
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
                        yield self._record(path, status=STATUS_ERROR, file_sha256=digest, error=error)
                done += len(chunk)
                report(progress, done, total, str(chunk[-1][0].name), "classify")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def classify_paths(paths: Iterable[str | os.PathLike], bundle: Bundle, batch_size: int = 32,
                   threshold: float | None = None, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> list[ResultRecord]:
    """Convenience: run the engine to completion (or cancel) and return the records."""
    engine = InferenceEngine(bundle, batch_size=batch_size, threshold=threshold)
    return list(engine.run(paths, progress=progress, cancel=cancel))
