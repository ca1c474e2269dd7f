"""Beyond one machine: the same engine on a Ray cluster, and training under tf.distribute.

Ray is an optional extra (`pip install -e ".[scale]"`); it is imported only inside the functions
that need it, so `import core.scale` works (and tells how to install Ray) without it. Nothing here
schedules, queues or sends work itself: Ray Data runs the actor pools, tf.distribute the replicas.
"""

from __future__ import annotations

from core.store.sources import RAY_MISSING, RayMissingError, ray_available  # noqa: F401 - the extra's check


def require_ray():
    """Import and return `ray`, or raise RayMissingError with the one-line install hint."""
    if not ray_available():
        raise RayMissingError(RAY_MISSING)
    import ray

    return ray


from core.scale.engine import RayEngine, RayRunError  # noqa: E402  (the engine imports ray lazily itself)
from core.scale.feature_cache import fill_feature_cache  # noqa: E402
from core.store.sources import ParquetShardWriter, read_manifest, read_parquet_results  # noqa: E402

__all__ = ["RAY_MISSING", "RayEngine", "RayMissingError", "RayRunError", "ParquetShardWriter", "fill_feature_cache",
           "ray_available", "read_manifest", "read_parquet_results", "require_ray"]
