"""Runtimes a bundle can run its exported model with (LiteRT `.tflite`, ONNX Runtime `.onnx`), and the
registry of bundle loaders by kind.

This module sits below core.models.bundle (which loads an attached runtime) and core.models.export (which writes
and checks exports): it imports neither, and nothing here imports TensorFlow unless LiteRT is missing.
A runner is a callable batch -> (logits (N,), embeddings (N, D)) for a float32 or uint8 batch
(N, S, S, 3) of 0..255 RGB, with the Keras model's interface. Two kinds are attached to bundles:
- release 1.3.0 on: a backbone export (image -> feature map, embedding) plus the head in numpy
  (`head.npz`, core.models.heads.LinearHead): LightRunner;
- before: the whole model as one `.tflite` (image -> logit, embedding): LiteRTRunner.

Bundle loaders: core.models.bundle.load_bundle loads a plain bundle itself and asks `bundle_loader(kind)` for
any other kind named in a card's `extra.kind` (e.g. "combined"). The module implementing a kind
registers its loader on import; KIND_MODULES says which module that is, so the bundle layer never
imports a kind's module (nor what that imports, such as training code) by name.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

FORMATS: dict[str, str] = {"tflite": ".tflite", "onnx": ".onnx"}

# Bundle kinds other than a plain model, and the module that registers each one's loader when imported.
KIND_MODULES: dict[str, str] = {"combined": "core.models.combined"}
_LOADERS: dict[str, Callable] = {}
_CHECKS: dict[str, Callable] = {}


def register_bundle_loader(kind: str, loader: Callable, check: Callable | None = None) -> None:
    """Make `loader(bundle_dir, card, models_dir, runtime=...) -> Bundle` load bundles whose card says `kind`;
    `check(card, bundle_dir, models_dir)`, if given, is part of verifying such a bundle (raises BundleError)."""
    _LOADERS[str(kind)] = loader
    if check is not None:
        _CHECKS[str(kind)] = check


def _import_kind(kind: str) -> None:
    if kind not in _LOADERS and kind in KIND_MODULES:
        import importlib

        importlib.import_module(KIND_MODULES[kind])


def bundle_loader(kind: str) -> Callable | None:
    """The loader registered for `kind` (importing its module first, see KIND_MODULES), or None if unknown."""
    _import_kind(kind)
    return _LOADERS.get(kind)


def bundle_check(kind: str) -> Callable | None:
    """The verification step registered for `kind` (e.g. a combined model's components), or None."""
    _import_kind(kind)
    return _CHECKS.get(kind)

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class RuntimeLoadError(Exception):
    """An exported model file cannot be run (missing runtime package, wrong interface, unreadable file);
    str(error) is one line saying which file and what to do."""


def check_format(fmt: str) -> str:
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise RuntimeLoadError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _litert_interpreter(path: str | os.PathLike, num_threads: int | None):
    """A LiteRT interpreter for `path`: ai-edge-litert when installed, else TensorFlow's bundled one."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow still ships the (deprecated) interpreter
        from core.models.tf_runtime import load_tensorflow

        tf, _ = load_tensorflow()
        Interpreter = tf.lite.Interpreter
    from core.models.tf_runtime import quiet_native_stderr

    # The native runtime prints "Created TensorFlow Lite XNNPACK delegate" to fd 2 on a user's console.
    with warnings.catch_warnings(), quiet_native_stderr():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count() or 1)
        interpreter.allocate_tensors()
    return interpreter


class _SignatureRunner:
    """Runs the `serving_default` signature of a `.tflite` file: one image input, the named outputs."""

    OUTPUTS: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        from core.models.tf_runtime import quiet_native_stderr

        self.path = Path(path)
        self.interpreter = _litert_interpreter(path, num_threads)
        signatures = self.interpreter.get_signature_list()
        if "serving_default" not in signatures:
            raise RuntimeLoadError(f"{path}: no serving_default signature; re-export it with `mpox-triage export`")
        sig = signatures["serving_default"]
        if set(sig["outputs"]) != set(self.OUTPUTS) or len(sig["inputs"]) != 1:
            raise RuntimeLoadError(
                f"{path}: unexpected inputs/outputs {sig}; expected one image in, {' and '.join(self.OUTPUTS)} out")
        self.input_name = sig["inputs"][0]
        with quiet_native_stderr():
            self.runner = self.interpreter.get_signature_runner("serving_default")

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner(**{self.input_name: np.asarray(batch, dtype=np.float32)})


class LiteRTRunner(_SignatureRunner):
    """Runs a whole-model `.tflite` (image -> logit, embedding): exports by `mpox-triage export` and the
    runtimes attached to bundles before release 1.3.0."""

    OUTPUTS = ("logit", "embedding")

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.outputs(batch)
        return (np.asarray(out["logit"], dtype=np.float64).reshape(-1),
                np.asarray(out["embedding"], dtype=np.float32))


class BackboneRunner(_SignatureRunner):
    """Runs a backbone `.tflite` (image -> feature_map (N, h, w, C), embedding (N, C) = its spatial mean).

    The bundle's head is not inside: it runs in numpy (LightRunner), and the feature map is what
    core.models.explain needs for Grad-CAM without TensorFlow.
    """

    OUTPUTS = ("feature_map", "embedding")

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.outputs(batch)
        return np.asarray(out["feature_map"], dtype=np.float32), np.asarray(out["embedding"], dtype=np.float32)


class LightRunner:
    """A bundle's model without Keras: its LiteRT backbone and its linear head (core.models.heads.LinearHead) in numpy.

    Called like any Runner (batch -> logits (N,), embeddings (N, D)); `features` also gives the
    feature map, and `head` the head itself (Grad-CAM, adaptation).
    """

    def __init__(self, backbone: BackboneRunner, head):
        self.backbone = backbone
        self.head = head

    def features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(feature map (N, h, w, C), embedding (N, C)) of a batch."""
        return self.backbone(batch)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, emb = self.backbone(batch)
        return self.head.logits(emb), emb


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


def load_light(backbone_path: str | os.PathLike, head_path: str | os.PathLike,
               num_threads: int | None = None) -> LightRunner:
    """A LightRunner from a bundle's backbone `.tflite` and `head.npz`; RuntimeLoadError when it cannot run."""
    from core.models.heads import LinearHead

    for p in (backbone_path, head_path):
        if not Path(p).is_file():
            raise RuntimeLoadError(f"{p}: file of the bundle's LiteRT runtime not found")
    try:
        head = LinearHead.load_npz(head_path)
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeLoadError(f"{head_path}: unreadable head ({exc})") from None
    return LightRunner(BackboneRunner(backbone_path, num_threads), head)


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
