"""tf.distribute strategies for fine-tuning and full-model training (`train --strategy mirrored|multiworker`).

- mirrored: synchronous data parallelism over this machine's devices: every GPU, or, without GPUs,
  every logical CPU device (tests configure two with tf.config.set_logical_device_configuration).
- multiworker: tf.distribute.MultiWorkerMirroredStrategy, made before any other TensorFlow work in the
  process (train_model creates it first thing). With Keras 3 it works only as a single worker: with a
  TF_CONFIG of two or more workers, Keras 3's fit fails inside its data handling ("Attempt to convert a
  value (PerReplica...)", keras-team/keras#20585, still open; reproduced here with two workers on
  loopback, Keras 3.15 / TensorFlow 2.21), so such a configuration is refused up front with that reason.

The strategy is made once per process and reused. Head-only training (the quick preset) is seconds on
cached embeddings and does not use one.
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("mirrored", "multiworker")

_made: dict[str, object] = {}


KERAS_MULTIWORKER_ISSUE = "https://github.com/keras-team/keras/issues/20585"


def _tf_config_workers() -> int:
    """How many tasks TF_CONFIG's cluster lists (0 when unset or unreadable)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("cluster", {})
        return sum(len(tasks) for tasks in cluster.values())
    except (ValueError, AttributeError, TypeError):
        return 0


def check_strategy(name: str | None) -> str | None:
    """The strategy name normalised (None for none), or ValueError saying what is possible."""
    if name in (None, "", "none", "default"):
        return None
    key = str(name).lower()
    if key not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if key == "multiworker" and _tf_config_workers() > 1:
        raise ValueError(
            f"multi-worker training across {_tf_config_workers()} machines (TF_CONFIG) does not work with Keras 3: "
            f"its fit fails on the distributed batches ({KERAS_MULTIWORKER_ISSUE}). Use --strategy mirrored on "
            "one machine with several GPUs, or train on one machine from a feature cache filled on Ray")
    return key


def make_strategy(name: str | None):
    """The tf.distribute strategy for `name` (made once per process), or None for no strategy."""
    key = check_strategy(name)
    if key is None:
        return None
    if key not in _made:
        from core.models.tf_runtime import quiet_native_stderr

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
