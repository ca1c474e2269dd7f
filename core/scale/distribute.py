"""tf.distribute strategies for fine-tuning and full-model training (`train --strategy mirrored|multiworker`).

- mirrored: synchronous data parallelism over this machine's devices: every GPU, or, without GPUs,
  every logical CPU device (tests configure two with tf.config.set_logical_device_configuration).
- multiworker: the same over several machines, each running the same `mpox-triage train` command with
  its own TF_CONFIG (cluster addresses and this worker's index). TensorFlow needs it created before
  any other TensorFlow work in the process, so train_model creates it first thing.

The strategy is made once per process and reused. Head-only training (the quick preset) is seconds on
cached embeddings and does not use one.
"""

from __future__ import annotations

STRATEGIES = ("mirrored", "multiworker")

_made: dict[str, object] = {}


def check_strategy(name: str | None) -> str | None:
    """The strategy name normalised (None for none), or ValueError listing the choices."""
    if name in (None, "", "none", "default"):
        return None
    key = str(name).lower()
    if key not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return key


def make_strategy(name: str | None):
    """The tf.distribute strategy for `name` (made once per process), or None for no strategy."""
    key = check_strategy(name)
    if key is None:
        return None
    if key not in _made:
        from core.tf_runtime import quiet_native_stderr

        with quiet_native_stderr():
            import tensorflow as tf  # no warm-up op: a multi-worker strategy must come before any
        if key == "mirrored":
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
            _made[key] = tf.distribute.MirroredStrategy(devices=devices)
        else:
            _made[key] = tf.distribute.MultiWorkerMirroredStrategy()
    return _made[key]


def describe(strategy) -> dict:
    """What the model card records about a strategy."""
    if strategy is None:
        return {}
    extended = getattr(strategy, "extended", None)
    devices = list(getattr(extended, "worker_devices", []) or [])
    return {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync),
            "devices": [str(d) for d in devices]}
