"""Joining a Ray cluster (or starting a local instance) with settings that leave nothing behind."""

from __future__ import annotations

import os
import secrets

# Worker and actor fault tolerance for our actor pools: an actor that dies (node lost, OOM kill) is
# restarted up to this many times, and the batch it was scoring is retried up to this many times.
# Finite, so that a file that kills its decoder every time fails the run instead of looping forever.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3

TEMP_ENV = "MPOX_TRIAGE_RAY_TEMP"  # where a local instance keeps its logs and sockets (default Ray's)


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray; returns True when this call started the connection.

    address None: reuse a connection already made in this process, else start a local instance;
    "auto": join the cluster started on this machine with `ray start`; "HOST:PORT": join that head.
    """
    from core.scale import require_ray

    # An offline tool: Ray must not try to send usage statistics (set before the first ray.init).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)  # a running cluster keeps its own settings
    else:
        # A private instance for this run: Ray's token authentication stays on, with a fresh token held in
        # the environment (inherited by Ray's processes) instead of the file Ray would write in ~/.ray.
        # Ray's own configuration, not an app setting: Ray reads it from the environment of every process.
        if not os.environ.get("RAY_AUTH_MODE"):
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False}
        temp = os.environ.get(TEMP_ENV)
        if temp:
            kwargs["_temp_dir"] = temp
        ray.init(num_cpus=num_cpus, **kwargs)
    return True


def shutdown_if_started(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


def actor_map(ds, cls, actors: int, batch_size: int, cpus_per_actor: float, constructor_kwargs: dict):
    """`ds.map_batches` through a fixed pool of `actors` instances of `cls`, each built once with the kwargs.

    The pool restarts a dead actor up to MAX_RESTARTS times and retries its batch up to MAX_TASK_RETRIES times.
    """
    import warnings

    import ray.data

    common = dict(batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=int(actors)),
                  num_cpus=cpus_per_actor, fn_constructor_kwargs=constructor_kwargs)
    with warnings.catch_warnings():
        # Ray 2.5x deprecates actor options such as max_restarts as keyword arguments (removal announced
        # for 2.64) without another way to set them. Where they are refused, Ray Data's own defaults
        # apply: unlimited actor restarts and batch retries.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return ds.map_batches(cls, **common, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
        except TypeError:
            return ds.map_batches(cls, **common)
