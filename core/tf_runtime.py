"""Importing TensorFlow/Keras lazily and quietly.

TensorFlow's native code prints start-up lines (oneDNN notice, "no CUDA drivers") straight to file
descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL; on a CPU-only clinic laptop they read like errors.
"""

from __future__ import annotations

import contextlib
import os
import sys

_loaded = False


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
        with quiet_native_stderr():
            import tensorflow as tf
            import keras

            tf.constant(0.0) + 1.0  # first op initialises devices (and prints the cuInit line)
        _loaded = True
    import tensorflow as tf
    import keras

    return tf, keras
