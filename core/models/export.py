"""Exporting a bundle's model for phones and other apps (LiteRT `.tflite`, ONNX), with an agreement check.

The exported model has the Keras model's interface: input `image`, float32 (N, S, S, 3) RGB in 0..255
(resized as core.photos.preprocess does; pixel scaling is inside the model), outputs `logit` (N, 1) and
`embedding` (N, D). p(mpox) = sigmoid(logit / temperature), with the temperature and threshold of the
model card, which is written beside the file as `<file>.json`.

An export is kept only when its probabilities agree with the Keras model's within a tolerance
(1e-4 by default) on check images; otherwise the file is removed and ExportError is raised.

Running exported files is core.models.runtimes' job (below core.models.bundle); this module writes and checks them,
and attach_runtime records one in a bundle through core.models.bundle.write_card (the one place cards are sealed).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from core.records import utc_now
from core.models.runtimes import FORMATS, LiteRTRunner, OnnxRunner, Runner, RuntimeLoadError  # noqa: F401 (re-exported)
from core.models.runtimes import check_format as _runtime_check_format
from core.models.runtimes import load_exported as _load_exported

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
    from core.photos.images import ImageDecodeError, discover_images
    from core.photos.preprocess import load_model_input

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
    """core.models.runtimes.load_exported, with its errors as ExportError (what export callers catch)."""
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
    for i in range(0, _count(images), batch_size):
        batch = _take(images, i, i + batch_size)
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
    from core.models.tf_runtime import load_tensorflow, quiet_native_stderr

    load_tensorflow()
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401  (Keras' ONNX export needs it)
        except ImportError:
            raise ExportError("ONNX export needs the tf2onnx and onnxruntime packages: "
                              "pip install tf2onnx onnxruntime") from None
    size = int(model.input_shape[1])
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras notes that a named input got a bare tensor; harmless here
        model(np.zeros((1, size, size, 3), np.float32), training=False)  # ONNX export refuses a never-called model
        model.export(str(path), format="litert" if fmt == "tflite" else "onnx", verbose=False)


def export_model(bundle, fmt: str, out_path: str | os.PathLike, check_images=None,
                 tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Export `bundle`'s model to `out_path` and check it agrees with Keras; returns what was written and checked.

    The file is built under a temporary name and moved into place only after the agreement check
    passes; on disagreement nothing is left at `out_path` and ExportError is raised. A `<out>.json`
    sidecar carries the card fields an app needs (input size, temperature, threshold, class names).
    """
    from core.models.bundle import sha256_file

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


def backbone_model(model):
    """The Keras model from a bundle model's image input to {"feature_map", "embedding"}: everything before
    its head. The bundle's `embedding` layer pools the last feature map, which is its input."""
    from core.models.tf_runtime import load_tensorflow

    _, keras = load_tensorflow()
    try:
        layer = model.get_layer("embedding")
    except ValueError:
        raise ExportError(f"model {model.name!r} has no 'embedding' layer; it was not built by mpox-triage") from None
    fmap = layer.input
    if len(fmap.shape) != 4:
        raise ExportError(f"model {model.name!r}: the embedding does not pool a feature map (input {fmap.shape})")
    return keras.Model(model.inputs, {"feature_map": fmap, "embedding": layer.output}, name=f"{model.name}_backbone")


def _take(images, start: int, stop: int):
    if isinstance(images, dict):
        return {size: arr[start:stop] for size, arr in images.items()}
    return np.asarray(images[start:stop])


def _count(images) -> int:
    return len(next(iter(images.values()))) if isinstance(images, dict) else len(images)


def bundle_check_inputs(bundle, check_images) -> tuple[np.ndarray | dict, str]:
    """check_inputs for every input size of `bundle` ({size: inputs} when it has several, e.g. combined)."""
    sizes = tuple(getattr(bundle, "input_sizes", (bundle.input_size,)))
    if len(sizes) == 1:
        return check_inputs(check_images, sizes[0])
    if check_images is None or isinstance(check_images, np.ndarray):
        # One array for all sizes: resized per component the way core.models.combined does for a single batch.
        arr, source = check_inputs(check_images, max(sizes)) if check_images is None else \
            (np.asarray(check_images), f"{len(check_images)} given arrays")
        return {s: np.stack([to_size(img, s) for img in arr]) for s in sizes}, source
    out, source = {}, ""
    for size in sizes:
        out[size], source = check_inputs(check_images, size)
    return out, source


def to_size(img: np.ndarray, size: int) -> np.ndarray:
    from core.photos.preprocess import to_model_input

    return to_model_input(np.asarray(img, np.uint8), size)


def _staged(bundle_dir: Path, suffix: str) -> Path:
    return bundle_dir / f".runtime.staged-{os.getpid()}{suffix}"


def attach_light_runtime(bundle_dir: str | os.PathLike, photos=None, tolerance: float = DEFAULT_TOLERANCE,
                         backbone_from: str | os.PathLike | None = None) -> dict:
    """Give a bundle its LiteRT runtime, checked against Keras, and record it in the card; the release builder's call.

    A plain bundle gets `backbone-<sha>.tflite` (image -> feature map, embedding) and `head-<sha>.npz` (its
    linear head, run in numpy); a combined bundle gets its head as `head-<sha>.npz` only, and needs its
    components to carry theirs already (attach them first: the combined card then records their current
    card digests). The probabilities of the light path (backbone(s) on LiteRT, head in numpy) must agree with
    the Keras model's within `tolerance` on `photos` (a folder, image paths, or arrays; None: generated
    images; give real photos), or nothing in the bundle changes (ExportError). The card's `extra.runtime`
    records the files' digests and the agreement; other `extra` keys are kept; the card is sealed by
    core.models.bundle.write_card. A previously attached runtime's files are removed once the new card is written.
    load_bundle then runs the bundle without TensorFlow. Returns the runtime record plus "path" and "bytes".
    `backbone_from`: an existing backbone `.tflite` of the same backbone (an adapted bundle's parent's) to use
    instead of converting again; it is checked the same way.
    """
    from core.models.bundle import CARD_FILE, HEAD_FILE, MODEL_FILE, BundleError, load_bundle, read_card, runtime_info
    from core.models.combined import record_component_cards
    from core.models.heads import LinearHead
    from core.models.releases import claims_release

    def refuse_shipped(card) -> None:
        if claims_release(card) is not None:  # write_card would refuse too; say so before converting
            raise BundleError(f"{bundle_dir}: {card.display_name} is a shipped release and is never changed; "
                              "export to a file instead (mpox-triage export OUT)")

    if (Path(bundle_dir) / CARD_FILE).is_file():  # before loading (a bundle without model.keras rebuilds it)
        card = read_card(bundle_dir)
        refuse_shipped(card)
        if MODEL_FILE not in card.files:  # release 1.4.0 on: the runtime is the model
            raise ExportError(f"{bundle_dir}: this model has no {MODEL_FILE}: its LiteRT runtime is the model, so "
                              "there is nothing to attach; export it to a file instead (mpox-triage export OUT)")
    record_component_cards(Path(bundle_dir))  # a combined bundle after its components got their runtimes
    bundle = load_bundle(bundle_dir, runtime="keras")
    bundle_dir = Path(bundle.path)
    card = bundle.card
    refuse_shipped(card)
    images, source = bundle_check_inputs(bundle, photos)
    combined = bool(getattr(bundle, "components", None))
    head = LinearHead.from_keras(bundle.model)
    staged_head = _staged(bundle_dir, ".npz")
    staged_tflite = _staged(bundle_dir, ".tflite")
    new_files: dict[str, Path] = {}
    try:
        head.save_npz(staged_head)
        if combined:
            info = _combined_runtime(bundle, staged_head, images, source, tolerance)
        else:
            info = _backbone_runtime(bundle, staged_tflite, staged_head, images, source, tolerance, backbone_from)
            new_files[info["file"]] = staged_tflite
        info["head"] = f"{Path(HEAD_FILE).stem}-{info['head_sha256'][:12]}.npz"
        new_files[info["head"]] = staged_head
        from core.models.bundle import verify_bundle, write_card

        current = verify_bundle(bundle_dir)  # the card as it is now, checked again just before changing it
        # New names per content: a file the current card lists is never overwritten, so a crash at any
        # point leaves a bundle that verifies (with the old runtime or none).
        for name, staged in new_files.items():
            if name not in current.files:
                os.replace(staged, bundle_dir / name)
        old = runtime_info(current)
        old_names = {old.get("file"), old.get("head")} - {None, *new_files}
        for name in old_names:
            current.files.pop(name, None)
        for name in new_files:
            current.files[name] = ""
        current.extra = {**(current.extra or {}), "runtime": info}
        try:
            write_card(bundle_dir, current)  # save_bundle's rule: hash every listed file, seal, write atomically
        except BaseException:
            listed = read_listed(bundle_dir)
            for name in new_files:  # not listed by the card on disk: leave the bundle as it was
                if name not in listed:
                    (bundle_dir / name).unlink(missing_ok=True)
            raise
        for name in old_names:
            if name:
                (bundle_dir / name).unlink(missing_ok=True)
    finally:
        staged_head.unlink(missing_ok=True)
        staged_tflite.unlink(missing_ok=True)
    main = bundle_dir / (info.get("file") or info["head"])
    return {**info, "path": str(main), "bytes": main.stat().st_size}


def read_listed(bundle_dir: Path) -> set[str]:
    """File names the bundle's card on disk lists (empty when it cannot be read)."""
    try:
        from core.models.bundle import read_card

        return set(read_card(bundle_dir).files)
    except Exception:  # noqa: BLE001 - only used to decide what is safe to remove
        return set()


def _backbone_runtime(bundle, staged_tflite: Path, staged_head: Path, images, source: str, tolerance: float,
                      backbone_from=None) -> dict:
    """Convert the backbone (or copy `backbone_from`), check backbone+numpy head against Keras, return the
    runtime record (kind backbone)."""
    import shutil

    from core.models.bundle import RUNTIME_BACKBONE, sha256_file
    from core.models.runtimes import load_light

    card = bundle.card
    try:
        if backbone_from is not None:
            shutil.copyfile(backbone_from, staged_tflite)
        else:
            _convert(backbone_model(bundle.model), "tflite", staged_tflite)
    except ExportError:
        raise
    except Exception as exc:  # converters raise many types; the user needs the gist
        raise ExportError(f"converting {card.display_name}'s backbone to LiteRT failed: {exc}") from None
    if not staged_tflite.is_file():
        raise ExportError(f"converting to LiteRT wrote no file at {staged_tflite}")
    try:
        runner = load_light(staged_tflite, staged_head)
    except RuntimeLoadError as exc:
        raise ExportError(str(exc)) from None
    agreement = check_agreement(bundle, runner, images, tolerance,
                                what=f"the LiteRT backbone + numpy head of {card.display_name}")
    fmap, emb = runner.features(_take(images, 0, 1))
    digest = sha256_file(staged_tflite)
    return {"format": "tflite", "kind": RUNTIME_BACKBONE, "file": f"backbone-{digest[:12]}.tflite",
            "sha256": digest, "head_sha256": sha256_file(staged_head), "model_sha256": card.model_sha256,
            "outputs": {"feature_map": list(fmap.shape[1:]), "embedding": int(emb.shape[1])},
            "head_features": "signed square root" if bundle.head.sqrt else "embedding",
            "check_images": source, "agreement": agreement, "created": utc_now()}


def _combined_runtime(bundle, staged_head: Path, images, source: str, tolerance: float) -> dict:
    """Check the combined bundle's light path (components' LiteRT runtimes, numpy head) against Keras."""
    from core.models.bundle import RUNTIME_BACKBONE, RUNTIME_HEAD, load_bundle, runtime_info, sha256_file
    from core.models.combined import CombinedBundle
    from core.models.heads import LinearHead

    card = bundle.card
    light_parts = []
    for comp in bundle.components:
        light = load_bundle(comp.path)
        if runtime_info(light.card).get("kind") != RUNTIME_BACKBONE or light.runtime is None:
            raise ExportError(f"{card.display_name}: component {comp.card.display_name} has no verified LiteRT "
                              "runtime; attach its runtime first (components before the combined bundle)")
        light_parts.append(light)
    light = CombinedBundle(card, None, bundle.ood, bundle.path, light_parts, head=LinearHead.load_npz(staged_head))
    agreement = check_agreement(bundle, light.forward, images, tolerance,
                                what=f"the LiteRT components + numpy head of {card.display_name}")
    return {"format": "numpy", "kind": RUNTIME_HEAD, "head_sha256": sha256_file(staged_head),
            "model_sha256": card.model_sha256,
            "components": [{"name": c.card.name, "version": c.card.version, "sha256": c.card.model_sha256,
                            "runtime_sha256": runtime_info(c.card).get("sha256", "")} for c in light_parts],
            "check_images": source, "agreement": agreement, "created": utc_now()}


def attach_runtime(bundle_dir: str | os.PathLike, check_images=None, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """attach_light_runtime under its older name (`mpox-triage export --attach`)."""
    return attach_light_runtime(bundle_dir, check_images, tolerance)
