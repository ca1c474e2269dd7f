"""Filling the training embedding cache on a Ray actor pool.

Each actor builds the same core.learning.features.FeatureExtractor that train_model builds for a TrainConfig
(same backbone, input size, feature layer, so the same cache folder) and calls its `embed`, which
writes the per-image .npz entries. `train` and `adapt` then find every embedding cached. The cache
folder must be one that every node writes to and the trainer reads (a shared filesystem).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from core.progress import CancelToken, ProgressFn, report
from core.scale.cluster import actor_map, connect, shutdown_if_started


def training_views(config) -> dict[str, list[str]]:
    """The views train_model embeds for each split of a TrainConfig: train under its views, val identity only."""
    from core.learning.training import reuse_views

    train = reuse_views(config.views or (["identity"] if config.preset == "study" else None))
    return {"train": train, "val": ["identity"]}


def _extractor_kwargs(config) -> dict:
    from core.photos.preprocess import arch_spec

    return {"arch": arch_spec(config.arch).name, "input_size": config.input_size, "weights_dir": config.weights_dir,
            "base_model": config.base_model, "cache_dir": config.cache_dir, "batch_size": config.batch_size,
            "seed": config.seed, "feature_layer": config.feature_layer}


class _Embedder:
    """One Ray actor: a FeatureExtractor built once; embeds batches (and so writes the cache)."""

    def __init__(self, extractor_kwargs: dict, cache_dir: str):
        from core.learning.features import FeatureExtractor

        self.fx = FeatureExtractor(**extractor_kwargs)
        if str(self.fx.cache_dir) != cache_dir:
            raise RuntimeError(f"this node's backbone gives cache folder {self.fx.cache_dir}, the driver's "
                               f"{cache_dir}: install the same weights and versions on every node")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [os.fsdecode(bytes(p)) for p in batch["path"]]
        views = [str(v) for v in batch["views"]]
        errors = np.full(len(paths), "", dtype=object)
        for group in sorted(set(views)):
            idx = [k for k, v in enumerate(views) if v == group]
            found: list[str] = []
            out = self.fx.embed([paths[k] for k in idx], group.split(","), errors=found)
            failed = np.isnan(out.reshape(len(idx), -1)).any(axis=1)
            messages = iter(found)  # embed appends one message per unreadable image, in order
            for k, bad in zip(idx, failed):
                if bad:
                    errors[k] = next(messages, "unreadable image")
        return {"i": np.asarray(batch["i"], dtype=np.int64), "error": errors}


@dataclass
class CacheFill:
    """What fill_feature_cache did: the cache folder, image and embedding counts, unreadable images."""

    cache_dir: str
    images: int = 0
    embeddings: int = 0
    errors: list[str] = field(default_factory=list)


def fill_feature_cache(dataset, config, actors: int = 1, address: str | None = None, batch_size: int | None = None,
                       progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> CacheFill:
    """Embed a dataset's train and val images (the views `train_model(dataset, config)` asks for) on Ray.

    `dataset` is a core.learning.datasets.Dataset with a split (train_model makes one when there is none: split
    first with core.learning.datasets.split_dataset and the config's protocol and seed). Returns a CacheFill;
    cancelling stops consuming and shuts the pipeline down (entries already written stay: they are valid).
    """
    from core.learning.features import FeatureExtractor
    from core.scale import require_ray

    require_ray()
    import ray.data

    kwargs = _extractor_kwargs(config)
    # The driver builds the extractor once too: its cache folder (backbone fingerprint) is the one
    # train_model will read, and every actor must land in the same one.
    cache_dir = str(FeatureExtractor(**kwargs).cache_dir)
    views = training_views(config)
    items = []
    for split, split_views in views.items():
        for s in dataset.subset(split).samples:
            items.append({"i": len(items), "path": os.fsencode(s.path), "views": ",".join(split_views)})
    result = CacheFill(cache_dir, images=len(items),
                       embeddings=sum(len(dataset.subset(k)) * len(v) for k, v in views.items()))
    report(progress, 0, len(items), f"embedding {len(items)} images on Ray", "features")
    if not items:
        return result
    size = max(1, int(batch_size or config.batch_size))
    started = connect(address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ds = actor_map(ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // size))), _Embedder,
                       int(actors), size, 1, {"extractor_kwargs": kwargs, "cache_dir": cache_dir})
        batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
        done = 0
        try:
            for batch in batches:
                result.errors.extend(str(e) for e in batch["error"] if e)
                done += len(batch["i"])
                report(progress, done, len(items), "embedding images on Ray", "features")
                if cancel is not None and cancel.cancelled:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
    finally:
        shutdown_if_started(started)
    if cancel is not None:
        cancel.raise_if_cancelled()
    return result
