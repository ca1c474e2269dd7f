"""RayEngine: the local engine's scoring, run by a Ray Data actor pool, streamed back in input order.

Files are listed on the driver (the caller passes paths). Ray Data splits them into batches and
hands each batch to one of N actors; each actor loads and verifies the bundle once and scores its
batch with core.triage.inference.InferenceEngine, the very code the local engine runs, so rows, statuses,
error messages and probabilities are the same. The driver turns the returned columns back into
ResultRecords, in input order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from core.progress import CancelToken, ProgressFn, report
from core.records import STATUS_OK, ResultRecord
from core.scale.cluster import actor_map, connect, shutdown_if_started

MAX_BLOCKS = 10_000  # beyond ~320,000 files a block holds several batches: fewer objects for Ray to track

# Columns an actor sends back for each input row (the driver adds model, threshold and timestamp).
_RESULT_COLUMNS = ("i", "status", "p_mpox", "prediction", "flag", "ood_score", "has_ood", "scope_score", "file_sha256",
                   "error", "embedding", "has_embedding")


class RayRunError(RuntimeError):
    """A Ray run failed (an actor could not start, a batch failed past its retries, the cluster was lost);
    str(error) is one line naming the cause."""


def ray_failure(exc: BaseException) -> RayRunError:
    """One readable line from a Ray exception: the message of the error it wraps (a remote traceback's last
    "SomethingError: message" line), else its own first line."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        inner = getattr(cause, "cause", None)
        cause = inner if isinstance(inner, BaseException) else cause.__cause__
    lines = [ln.strip() for e in chain for ln in str(e).splitlines() if ln.strip()]
    found = [m.group(1) for ln in lines if (m := re.match(r"^[\w.]+(?:Error|Exception): (.+)$", ln))]
    text = found[-1] if found else (lines[0] if lines else type(exc).__name__)
    return RayRunError(f"the Ray run failed: {text}")


class _Scorer:
    """One Ray actor: a verified bundle, loaded once, scoring batches of paths with the local engine's code."""

    def __init__(self, bundle_dir: str, model_sha256: str, threshold: float, batch_size: int, threads: int):
        from core.models.bundle import BundleError, load_bundle
        from core.triage.inference import InferenceEngine

        bundle = load_bundle(bundle_dir)  # verifies every file's SHA-256 and the card's digest
        if bundle.card.model_sha256 != model_sha256:
            raise BundleError(
                f"{bundle_dir} on this node holds model {bundle.card.model_sha256[:12]}…, not the driver's "
                f"{model_sha256[:12]}…; every node must see the same bundle at the same path")
        if bundle.runtime is not None:
            # Same verified runtime, but with the actor's share of the cores instead of all of the machine's.
            from core.models.bundle import verified_runtime

            bundle.runtime = verified_runtime(bundle.path, bundle.card, num_threads=threads) or bundle.runtime
        self.engine = InferenceEngine(bundle, batch_size=batch_size, threshold=threshold)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [os.fsdecode(bytes(p)) for p in batch["path"]]
        records = list(self.engine.run(paths))
        self.engine.embeddings.clear()   # each row carries its own; the actor keeps none (memory stays flat)
        ok = [r.status == STATUS_OK for r in records]
        # The embedding of each photo the scope check kept (float16 bytes: one column type whatever a batch holds),
        # on its way to the driver's session: the folder's shift test covers photos scored on Ray as it covers
        # photos scored here.
        emb = np.asarray([np.asarray(r.embedding, dtype=np.float16).tobytes() if r.embedding is not None else b""
                          for r in records], dtype=object)
        has_emb = np.asarray([r.embedding is not None for r in records], dtype=bool)
        return {
            "i": np.asarray(batch["i"], dtype=np.int64),
            "status": np.asarray([r.status for r in records], dtype=object),
            "p_mpox": np.asarray([r.p_mpox if o else np.nan for r, o in zip(records, ok)], dtype=np.float64),
            "prediction": np.asarray([r.prediction or "" for r in records], dtype=object),
            "flag": np.asarray([r.flag for r in records], dtype=object),
            "ood_score": np.asarray([np.nan if r.ood_score is None else r.ood_score for r in records],
                                    dtype=np.float64),
            "has_ood": np.asarray([r.ood_score is not None for r in records], dtype=bool),
            "scope_score": np.asarray([np.nan if r.scope_score is None else r.scope_score for r in records],
                                      dtype=np.float64),
            "file_sha256": np.asarray([r.file_sha256 or "" for r in records], dtype=object),
            "error": np.asarray([r.error for r in records], dtype=object),
            "embedding": emb,
            "has_embedding": has_emb,
        }


class RayEngine:
    """Streams one ResultRecord per input path, in input order, scored by a pool of Ray actors.

    The same interface as core.triage.inference.InferenceEngine (`run`, `card`, `threshold`). `bundle_ref` is a
    bundle name or folder, resolved and verified on the driver; every node must see it at the same path.
    address None starts (or reuses) a local Ray instance; "auto" or "HOST:PORT" joins a cluster.
    """

    def __init__(self, bundle_ref: str | os.PathLike, models_dir: str | os.PathLike | None = None,
                 address: str | None = None, actors: int = 1, batch_size: int = 32,
                 threshold: float | None = None, cpus_per_actor: float = 1):
        from core.models.bundle import resolve_bundle_dir, verify_bundle
        from core.scale import require_ray

        require_ray()  # fail at construction, with the install hint, not mid-run
        if int(actors) < 1:
            raise ValueError(f"actors must be at least 1, got {actors}")
        self.bundle_dir = Path(os.path.abspath(resolve_bundle_dir(bundle_ref, models_dir)))
        self.card = verify_bundle(self.bundle_dir, models_dir=models_dir)  # a combined model's parts too
        self.address = address
        self.actors = int(actors)
        self.batch_size = max(1, int(batch_size))
        self.cpus_per_actor = cpus_per_actor
        self.threshold = self.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        self._started = False

    @property
    def reference(self):
        """What the driver's shift test reads of this model (core.triage.shift.folder_shift): its card and its
        verified folder, whose embeddings.npz is the training reference. No model is loaded on the driver."""
        from types import SimpleNamespace

        return SimpleNamespace(card=self.card, path=self.bundle_dir)

    @property
    def runtime_name(self) -> str:
        return f"ray ({self.actors} actor{'s' if self.actors != 1 else ''} on {self.address or 'a local instance'})"

    def connect(self) -> None:
        """Join the cluster (or start the local instance) now; `run` does it on first use."""
        self._started = connect(self.address) or self._started

    def close(self) -> None:
        """Shut down a local Ray instance this engine started (a joined cluster keeps running)."""
        shutdown_if_started(self._started)
        self._started = False

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _dataset(self, paths: list[Path]):
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        items = [{"i": i, "path": os.fsencode(p)} for i, p in enumerate(paths)]
        # One inference batch per block (results stream back, cancel is prompt) up to MAX_BLOCKS blocks.
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(MAX_BLOCKS, -(-len(items) // self.batch_size))))
        return actor_map(ds, _Scorer, self.actors, self.batch_size, self.cpus_per_actor,
                         {"bundle_dir": str(self.bundle_dir), "model_sha256": self.card.model_sha256,
                          "threshold": self.threshold, "batch_size": self.batch_size,
                          "threads": max(1, int(round(self.cpus_per_actor)))})

    def _record(self, path: Path, row: dict) -> ResultRecord:
        card = self.card
        ok = row["status"] == STATUS_OK
        return ResultRecord(
            path=str(path), status=str(row["status"]), p_mpox=float(row["p_mpox"]) if ok else None,
            prediction=str(row["prediction"]) if ok else None, flag=str(row["flag"]),
            ood_score=float(row["ood_score"]) if ok and row["has_ood"] else None,
            scope_score=None if np.isnan(row["scope_score"]) else float(row["scope_score"]),
            model=card.name, model_version=card.version, model_sha256=card.model_sha256,
            scoring_digest=card.scoring_digest, threshold=self.threshold,
            file_sha256=str(row["file_sha256"]) or None, error=str(row["error"]),
            embedding=np.frombuffer(bytes(row["embedding"]), dtype=np.float16).copy()
            if ok and row["has_embedding"] else None)

    def run(self, paths: Iterable[str | os.PathLike], progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> Iterator[ResultRecord]:
        """Yield a record per path, in input order. On cancel, stops consuming and shuts the pipeline down."""
        paths = [Path(p) for p in paths]
        total = len(paths)
        report(progress, 0, total, "starting", "classify")
        if not paths:
            return
        self.connect()
        batches = iter(self._dataset(paths).iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2))
        waiting: dict[int, dict] = {}  # rows that arrived ahead of their turn (preserve_order makes it rare)
        done = 0
        try:
            while True:
                if cancel is not None and cancel.cancelled:
                    break
                try:
                    batch = next(batches, None)
                except Exception as exc:  # Ray wraps the cause (e.g. a bundle that differs on one node)
                    raise ray_failure(exc) from exc
                if batch is None:
                    break
                for k in range(len(batch["i"])):
                    waiting[int(batch["i"][k])] = {c: batch[c][k] for c in _RESULT_COLUMNS}
                start = done
                while done in waiting:
                    yield self._record(paths[done], waiting.pop(done))
                    done += 1
                if done > start:
                    report(progress, done, total, paths[done - 1].name, "classify")
                if cancel is not None and cancel.cancelled:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops the streaming executor and releases the actors
        if done < total and not (cancel is not None and cancel.cancelled):
            raise RayRunError(f"the Ray run failed: Ray returned {done} of {total} results")

