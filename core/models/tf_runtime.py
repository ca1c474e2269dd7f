"""Importing TensorFlow/Keras lazily and quietly, and saying so in one line when they are not installed.

TensorFlow and Keras are the `[train]` extra: the default install classifies, explains, reports and
adapts on LiteRT and numpy. Only training, fine-tuning, exporting from Keras and bundles without a
LiteRT export need them; those paths call load_tensorflow(), which raises TensorFlowMissing (one line,
what to install) where they are absent.

TensorFlow's native code prints start-up lines (oneDNN notice, "no CUDA drivers") straight to file
descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL; on a CPU-only clinic laptop they read like errors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

_loaded = False

TRAIN_EXTRA_HINT = "pip install 'mpox-triage[train]'"


class TensorFlowMissing(ImportError):
    """TensorFlow/Keras are needed for this and are not installed; str(error) is one line for the user."""


def tensorflow_available() -> bool:
    """Whether TensorFlow and Keras can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "keras"))


def require_tensorflow(what: str) -> None:
    """Raise TensorFlowMissing naming `what` (e.g. "training") when TensorFlow/Keras are not installed."""
    if not tensorflow_available():
        raise TensorFlowMissing(f"{what} needs TensorFlow, which this install does not include: {TRAIN_EXTRA_HINT}")


@contextlib.contextmanager
def quiet_native_stderr():
    """Send fd 2 to /dev/null for the duration (Python exceptions still propagate normally)."""
    if os.environ.get("MPOX_TRIAGE_TF_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_tensorflow():
    """Import TensorFlow and Keras once, without native start-up noise; returns (tf, keras)."""
    global _loaded
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not _loaded:
        require_tensorflow("this step (training, exporting from Keras, or a model without a LiteRT export)")
        with quiet_native_stderr():
            import tensorflow as tf
            import keras

            tf.constant(0.0) + 1.0  # first op initialises devices (and prints the cuInit line)
        _loaded = True
    import tensorflow as tf
    import keras

    return tf, keras
