"""Exporting a bundle's model for phones and other apps (LiteRT `.tflite`, ONNX), with an agreement check.

The exported model has the Keras model's interface: input `image`, float32 (N, S, S, 3) RGB in 0..255
(resized as core.preprocess does; pixel scaling is inside the model), outputs `logit` (N, 1) and
`embedding` (N, D). p(mpox) = sigmoid(logit / temperature), with the temperature and threshold of the
model card, which is written beside the file as `<file>.json`.

An export is kept only when its probabilities agree with the Keras model's within a tolerance
(1e-4 by default) on check images; otherwise the file is removed and ExportError is raised.

Running exported files is core.runtimes' job (below core.bundle); this module writes and checks them,
and attach_runtime records one in a bundle through core.bundle.write_card (the one place cards are sealed).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from core.records import utc_now
from core.runtimes import FORMATS, LiteRTRunner, OnnxRunner, Runner, RuntimeLoadError  # noqa: F401 (re-exported)
from core.runtimes import check_format as _runtime_check_format
from core.runtimes import load_exported as _load_exported

DEFAULT_TOLERANCE = 1e-4
GENERATED_CHECK_IMAGES = 16


class ExportError(Exception):
    """An export could not be written or does not agree with the Keras model; the message says why."""


def _check_format(fmt: str) -> str:
    try:
        return _runtime_check_format(fmt)
    except RuntimeLoadError as exc:
        raise ExportError(str(exc)) from None


def generated_check_images(size: int, n: int = GENERATED_CHECK_IMAGES, seed: int = 0) -> np.ndarray:
    """Deterministic photo-like uint8 images (smooth blobs plus noise), for when no real images are given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.broadcast_to(rng.uniform(80, 230, 3).astype(np.float32), (size, size, 3)).copy()
        for _ in range(4):
            cx, cy, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.05, 0.3) * size]
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            img += blob[..., None] * rng.uniform(-120, 120, 3).astype(np.float32)
        img += rng.normal(0, 8, img.shape).astype(np.float32)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def check_inputs(check_images, size: int) -> tuple[np.ndarray, str]:
    """Model inputs (N, size, size, 3) uint8 for the agreement check and a description of where they came from.

    `check_images` is None (generated images), a folder, a sequence of image paths, or an array of inputs.
    """
    if check_images is None:
        return generated_check_images(size), f"{GENERATED_CHECK_IMAGES} generated images"
    if isinstance(check_images, np.ndarray):
        arr = np.asarray(check_images)
        if arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
            raise ExportError(f"check images have shape {arr.shape}; expected (N, {size}, {size}, 3)")
        return arr, f"{len(arr)} given arrays"
    from core.images import ImageDecodeError, discover_images
    from core.preprocess import load_model_input

    if isinstance(check_images, (str, os.PathLike)):
        folder = Path(check_images)
        if not folder.is_dir():
            raise ExportError(f"check images folder {folder} does not exist or is not a folder")
        paths = discover_images(folder)
        source = f"images in {folder}"
    else:
        paths = [Path(p) for p in check_images]
        source = "given image files"
    if not paths:
        raise ExportError(f"no check images found ({source}); give a folder of photos")
    arrays = []
    for p in paths:
        try:
            arrays.append(load_model_input(p, size))
        except ImageDecodeError as exc:
            raise ExportError(f"check image unreadable: {exc}") from None
    return np.stack(arrays), f"{len(arrays)} {source}"


def load_exported(path: str | os.PathLike, fmt: str | None = None, num_threads: int | None = None) -> Runner:
    """core.runtimes.load_exported, with its errors as ExportError (what export callers catch)."""
    try:
        return _load_exported(path, fmt, num_threads)
    except RuntimeLoadError as exc:
        raise ExportError(str(exc)) from None


def check_agreement(bundle, runner: Runner, images: np.ndarray, tolerance: float = DEFAULT_TOLERANCE,
                    what: str = "exported model", batch_size: int = 16) -> dict:
    """Compare probabilities (and logits, embeddings) of `runner` with the bundle's Keras model.

    Returns the differences; raises ExportError when the largest probability difference exceeds
    `tolerance` or any output is not finite.
    """
    reference = getattr(bundle, "forward_keras", bundle.forward)  # never compare an attached runtime with itself
    ref_logits, ref_emb, got_logits, got_emb = [], [], [], []
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size])
        lk, ek = reference(batch)
        lx, ex = runner(batch)
        ref_logits.append(lk)
        ref_emb.append(ek)
        got_logits.append(np.asarray(lx, np.float64).reshape(-1))
        got_emb.append(np.asarray(ex, np.float32).reshape(ek.shape))
    lk, ek = np.concatenate(ref_logits), np.concatenate(ref_emb)
    lx, ex = np.concatenate(got_logits), np.concatenate(got_emb)
    p_diff = float(np.max(np.abs(bundle.calibrate(lk) - bundle.calibrate(lx))))
    report = {
        "images": int(len(lk)),
        "tolerance": float(tolerance),
        "max_abs_diff_p": p_diff,
        "max_abs_diff_logit": float(np.max(np.abs(lk - lx))),
        "max_abs_diff_embedding": float(np.max(np.abs(ek - ex))),
        "finite": bool(np.isfinite(lx).all() and np.isfinite(ex).all()),
    }
    if not report["finite"]:
        raise ExportError(f"{what} returns non-finite outputs; it does not reproduce the Keras model. Not using it.")
    if not p_diff <= tolerance:
        raise ExportError(
            f"{what} disagrees with the Keras model: largest p(mpox) difference {p_diff:.2e} on "
            f"{report['images']} images is above the tolerance {tolerance:.0e}. Not using it; report this with "
            "the model name and format."
        )
    return report


def _convert(model, fmt: str, path: Path) -> None:
    """Write `model` to `path` in `fmt` with Keras' own exporter (TensorFlow backend)."""
    from core.tf_runtime import load_tensorflow, quiet_native_stderr

    load_tensorflow()
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401  (Keras' ONNX export needs it)
        except ImportError:
            raise ExportError("ONNX export needs the tf2onnx and onnxruntime packages: "
                              "pip install tf2onnx onnxruntime") from None
    size = int(model.input_shape[1])
    model(np.zeros((1, size, size, 3), np.float32), training=False)  # ONNX export refuses a never-called model
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(str(path), format="litert" if fmt == "tflite" else "onnx", verbose=False)


def export_model(bundle, fmt: str, out_path: str | os.PathLike, check_images=None,
                 tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Export `bundle`'s model to `out_path` and check it agrees with Keras; returns what was written and checked.

    The file is built under a temporary name and moved into place only after the agreement check
    passes; on disagreement nothing is left at `out_path` and ExportError is raised. A `<out>.json`
    sidecar carries the card fields an app needs (input size, temperature, threshold, class names).
    """
    from core.bundle import sha256_file

    fmt = _check_format(fmt)
    out_path = Path(out_path).expanduser()
    if out_path.is_dir():
        raise ExportError(f"{out_path} is a folder; give a file name such as model{FORMATS[fmt]}")
    if not out_path.parent.is_dir():
        raise ExportError(f"cannot write {out_path}: folder {out_path.parent} does not exist")
    images, source = check_inputs(check_images, bundle.input_size)
    tmp = out_path.with_name(f".{out_path.stem}.tmp-{os.getpid()}{FORMATS[fmt]}")
    try:
        try:
            _convert(bundle.model, fmt, tmp)
        except ExportError:
            raise
        except Exception as exc:  # converters raise many types; the user needs the gist and the format
            raise ExportError(f"converting {bundle.card.display_name} to {fmt} failed: {exc}") from None
        if not tmp.is_file():
            raise ExportError(f"converting to {fmt} wrote no file at {tmp}")
        agreement = check_agreement(bundle, load_exported(tmp, fmt), images, tolerance,
                                    what=f"the {fmt} export of {bundle.card.display_name}")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    card = bundle.card
    result = {
        "format": fmt,
        "path": str(out_path),
        "sha256": sha256_file(out_path),
        "bytes": out_path.stat().st_size,
        "model": card.name,
        "version": card.version,
        "architecture": card.architecture,
        "model_sha256": card.model_sha256,
        "input": {"name": "image", "shape": [None, card.input_size, card.input_size, 3], "dtype": "float32",
                  "range": "RGB 0..255, whole image resized to input size (scaling is inside the model)"},
        "outputs": {"logit": "(N, 1); p(mpox) = sigmoid(logit / temperature)", "embedding": "(N, D)"},
        "temperature": card.temperature,
        "threshold": card.threshold,
        "uncertain_band": list(card.uncertain_band),
        "class_names": list(card.class_names),
        "check_images": source,
        "agreement": agreement,
        "created": utc_now(),
        "intended_use": card.intended_use,
    }
    sidecar = out_path.with_name(out_path.name + ".json")
    sidecar.write_text(json.dumps(result, indent=2), encoding="utf-8")
    result["sidecar"] = str(sidecar)
    return result


def attach_runtime(bundle_dir: str | os.PathLike, check_images=None, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Export the bundle's model to `model-<sha>.tflite` inside the bundle and record it in the model card.

    load_bundle then runs it with LiteRT instead of Keras (faster, and no TensorFlow import at start),
    but only while its hash matches the card and it was made from the same model.keras; the agreement
    check on `check_images` (use real photos) must pass or nothing in the bundle changes.
    """
    from core.bundle import BundleError, load_bundle, verify_bundle, write_card
    from core.releases import claims_release

    bundle = load_bundle(bundle_dir, runtime="keras")
    bundle_dir = Path(bundle.path)
    if claims_release(bundle.card) is not None:  # write_card would refuse too; say so before converting
        raise BundleError(f"{bundle_dir}: {bundle.card.display_name} is a shipped release and is never changed; "
                          "export to a file instead (mpox-triage export OUT)")
    staged = bundle_dir / f".runtime.staged-{os.getpid()}.tflite"
    try:
        result = export_model(bundle, "tflite", staged, check_images=check_images, tolerance=tolerance)
    finally:
        Path(f"{staged}.json").unlink(missing_ok=True)
    name = f"model-{result['sha256'][:12]}.tflite"
    try:
        card = verify_bundle(bundle_dir)  # the card as it is now, checked again just before changing it
        # A new name per content: the file a current card lists is never overwritten, so a crash at any
        # point leaves a bundle that verifies (with the old runtime or none).
        os.replace(staged, bundle_dir / name)
    finally:
        staged.unlink(missing_ok=True)
    old = (card.extra or {}).get("runtime", {}).get("file")
    if old and old != name:
        card.files.pop(old, None)
    card.files[name] = result["sha256"]
    card.extra = dict(card.extra or {})
    card.extra["runtime"] = {
        "format": "tflite", "file": name, "sha256": result["sha256"],
        "model_sha256": card.model_sha256, "check_images": result["check_images"],
        "agreement": result["agreement"], "created": result["created"],
    }
    try:
        write_card(bundle_dir, card)  # save_bundle's rule: hash every listed file, seal, write atomically
    except BaseException:
        if name != old:
            (bundle_dir / name).unlink(missing_ok=True)  # not listed by any card: leave the bundle as it was
        raise
    if old and old != name:
        (bundle_dir / old).unlink(missing_ok=True)
    result.pop("sidecar", None)
    result["path"] = str(bundle_dir / name)
    return result
