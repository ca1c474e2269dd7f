"""Beyond one machine: the same engine on a Ray cluster, and training under tf.distribute.

Ray is an optional extra (`pip install -e ".[scale]"`); it is imported only inside the functions
that need it, so `import core.scale` works (and tells how to install Ray) without it. Nothing here
schedules, queues or sends work itself: Ray Data runs the actor pools, tf.distribute the replicas.
"""

from __future__ import annotations

import importlib.util

RAY_MISSING = 'Ray is not installed; install the scale extra: pip install -e ".[scale]"'


class RayMissingError(RuntimeError):
    """Ray (or pyarrow) is needed for this and is not installed; str(error) says how to install it."""


def ray_available() -> bool:
    """True when Ray Data and pyarrow can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("ray", "pyarrow"))


def require_ray():
    """Import and return `ray`, or raise RayMissingError with the one-line install hint."""
    if not ray_available():
        raise RayMissingError(RAY_MISSING)
    import ray

    return ray


from core.scale.engine import RayEngine, RayRunError  # noqa: E402  (the engine imports ray lazily itself)
from core.scale.features import fill_feature_cache  # noqa: E402
from core.scale.sources import ParquetShardWriter, read_manifest, read_parquet_results  # noqa: E402

__all__ = ["RAY_MISSING", "RayEngine", "RayMissingError", "RayRunError", "ParquetShardWriter", "fill_feature_cache",
           "ray_available", "read_manifest", "read_parquet_results", "require_ray"]
