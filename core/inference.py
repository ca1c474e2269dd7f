"""Batch inference: decode files in parallel ahead of the model, score them in batches, stream records.

One engine owns one Bundle; Keras models are not thread-safe, so `run` must be called from one
thread at a time (the desktop app keeps one long-lived worker per model).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from core.bundle import Bundle
from core.preprocess import load_model_input_with_hash
from core.progress import CancelToken, ProgressFn, report
from core.records import STATUS_ERROR, STATUS_OK, ResultRecord


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

    def _record(self, path: Path, **fields) -> ResultRecord:
        card = self.bundle.card
        return ResultRecord(path=str(path), model=card.name, model_version=card.version,
                            model_sha256=card.model_sha256, threshold=self.threshold, **fields)

    def score_batch(self, items: Sequence[tuple[Path, np.ndarray, str]]) -> list[ResultRecord]:
        """Score decoded inputs [(path, uint8 array, file sha256)] in one forward pass."""
        if not items:
            return []
        batch = np.stack([arr for _, arr, _ in items])
        scored = self.bundle.score(batch, threshold=self.threshold)
        out = []
        for i, (path, _, digest) in enumerate(items):
            ood = None if scored.ood_score is None else float(scored.ood_score[i])
            out.append(self._record(path, status=STATUS_OK, p_mpox=float(scored.p_mpox[i]),
                                    prediction=scored.prediction[i], flag=scored.flag[i], ood_score=ood,
                                    file_sha256=digest))
        return out

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
                    pending.append((path, pool.submit(load_model_input_with_hash, path, size)))

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
                good = [(p, arr, digest) for p, (arr, digest, _) in chunk if arr is not None]
                scored = iter(self.score_batch(good))
                for path, (arr, digest, error) in chunk:
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
