"""Runtimes a bundle can run its exported model with (LiteRT `.tflite`, ONNX Runtime `.onnx`).

This module sits below core.bundle (which loads an attached runtime) and core.export (which writes
and checks exports): it imports neither. A runner is a callable batch -> (logits (N,), embeddings (N, D))
for a float32 or uint8 batch (N, S, S, 3) of 0..255 RGB, with the Keras model's interface.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

FORMATS: dict[str, str] = {"tflite": ".tflite", "onnx": ".onnx"}

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class RuntimeLoadError(Exception):
    """An exported model file cannot be run (missing runtime package, wrong interface, unreadable file);
    str(error) is one line saying which file and what to do."""


def check_format(fmt: str) -> str:
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise RuntimeLoadError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


class LiteRTRunner:
    """Runs a `.tflite` file: LiteRT (ai-edge-litert) when installed, else TensorFlow's bundled interpreter."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # TensorFlow still ships the (deprecated) interpreter
            from core.tf_runtime import load_tensorflow

            tf, _ = load_tensorflow()
            Interpreter = tf.lite.Interpreter
        from core.tf_runtime import quiet_native_stderr

        # The native runtime prints "Created TensorFlow Lite XNNPACK delegate" to fd 2 on a user's console.
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count() or 1)
            self.interpreter.allocate_tensors()
        signatures = self.interpreter.get_signature_list()
        if "serving_default" not in signatures:
            raise RuntimeLoadError(f"{path}: no serving_default signature; re-export it with `mpox-triage export`")
        sig = signatures["serving_default"]
        if set(sig["outputs"]) != {"logit", "embedding"} or len(sig["inputs"]) != 1:
            raise RuntimeLoadError(
                f"{path}: unexpected inputs/outputs {sig}; expected one image in, logit and embedding out")
        self.input_name = sig["inputs"][0]
        with quiet_native_stderr():
            self.runner = self.interpreter.get_signature_runner("serving_default")

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.runner(**{self.input_name: np.asarray(batch, dtype=np.float32)})
        return (np.asarray(out["logit"], dtype=np.float64).reshape(-1),
                np.asarray(out["embedding"], dtype=np.float32))


class OnnxRunner:
    """Runs an `.onnx` file with ONNX Runtime on the CPU."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeLoadError(
                "running ONNX models needs the onnxruntime package: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads or os.cpu_count() or 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in self.session.get_outputs()]
        if set(outputs) != {"logit", "embedding"}:
            raise RuntimeLoadError(f"{path}: unexpected outputs {outputs}; expected logit and embedding")
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit, emb = self.session.run(["logit", "embedding"], {self.input_name: np.asarray(batch, dtype=np.float32)})
        return np.asarray(logit, dtype=np.float64).reshape(-1), np.asarray(emb, dtype=np.float32)


def load_exported(path: str | os.PathLike, fmt: str | None = None, num_threads: int | None = None) -> Runner:
    """A runner for an exported file (format from its suffix unless given); RuntimeLoadError when it cannot run."""
    path = Path(path)
    if fmt is None:
        fmt = next((f for f, suffix in FORMATS.items() if path.suffix.lower() == suffix), "")
        if not fmt:
            raise RuntimeLoadError(f"{path}: cannot tell the format from the suffix; expected .tflite or .onnx")
    fmt = check_format(fmt)
    if not path.is_file():
        raise RuntimeLoadError(f"{path}: exported model file not found")
    return LiteRTRunner(path, num_threads) if fmt == "tflite" else OnnxRunner(path, num_threads)
