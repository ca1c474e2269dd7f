"""ImageNet backbones, built from local weight files only (never downloaded), and the classifier graph."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from core.photos.preprocess import arch_spec

WEIGHTS_ENV = "MPOX_TRIAGE_WEIGHTS_DIR"

# Accepted file names per architecture: the names in ../shared/weights, then the official Keras ones.
WEIGHT_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "mobilenetv2": (
        "mobilenet_v2_1.0_224_imagenet_notop.weights.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    ),
    "xception": (
        "xception_imagenet_notop.weights.h5",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}


class WeightsNotFoundError(FileNotFoundError):
    """No local ImageNet weight file was found for an architecture."""


class FeatureLayerError(ValueError):
    """The requested feature layer does not exist in the backbone or is not a feature map."""


def weights_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where weight files are looked for, in order: the explicit setting, the environment, Keras' cache."""
    dirs: list[Path] = []
    if weights_dir:
        dirs.append(Path(weights_dir).expanduser())
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models")
    return dirs


def resolve_weights(arch: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of the local ImageNet notop weight file for `arch`, or a WeightsNotFoundError saying what to do."""
    spec = arch_spec(arch)
    names = WEIGHT_FILE_NAMES[spec.name]
    if weights_dir and not Path(weights_dir).expanduser().is_dir():
        # An explicit setting that points nowhere is a mistake to report, not a reason to look elsewhere.
        raise WeightsNotFoundError(
            f"Weights folder {weights_dir} does not exist; fix the weights folder setting (or --weights-dir) "
            f"to the folder holding {' or '.join(names)}."
        )
    searched = weights_search_dirs(weights_dir)
    for directory in searched:
        for name in names:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    raise WeightsNotFoundError(
        f"No ImageNet weights for {spec.display_name} found (looked for {' or '.join(names)} in "
        f"{', '.join(str(d) for d in searched)}). Set {WEIGHTS_ENV} (or the app's weights folder setting) "
        "to the folder holding the official Keras notop weight file. Nothing is downloaded."
    )


def build_backbone(arch: str, weights: str | None = "imagenet-local", input_size: int | None = None,
                   weights_dir: str | os.PathLike | None = None, feature_layer: str | None = None):
    """Keras notop backbone; `weights` is "imagenet-local" (resolved file), None (random), or a file path.

    The backbone ends at `feature_layer` (default: the architecture's, see ArchSpec.feature_layer;
    "top" keeps the whole network).
    """
    from core.models.tf_runtime import load_tensorflow

    _, keras = load_tensorflow()
    spec = arch_spec(arch)
    size = input_size or spec.input_size
    if weights == "imagenet-local":
        weights_path: str | None = str(resolve_weights(spec.name, weights_dir))
    elif weights is None:
        weights_path = None
    else:
        weights_path = str(weights)
        if not Path(weights_path).is_file():
            raise WeightsNotFoundError(f"Weights file not found: {weights_path}")
    shape = (size, size, 3)
    if spec.name == "mobilenetv2":
        net = keras.applications.MobileNetV2(input_shape=shape, alpha=1.0, include_top=False, weights=weights_path)
    else:
        net = keras.applications.Xception(input_shape=shape, include_top=False, weights=weights_path)
    return truncate_backbone(net, feature_layer or spec.feature_layer)


def truncate_backbone(net, feature_layer: str):
    """`net` cut after `feature_layer` (a single chain ending in that layer's feature map); "top" keeps it whole."""
    if feature_layer in ("", "top", None) or feature_layer == net.layers[-1].name:
        return net
    from core.models.tf_runtime import load_tensorflow

    _, keras = load_tensorflow()
    try:
        out = net.get_layer(feature_layer).output
    except ValueError:
        raise FeatureLayerError(f"{net.name} has no layer {feature_layer!r}; give a layer name from its summary, "
                         f"or 'top' for the whole backbone") from None
    if len(out.shape) != 4:
        raise FeatureLayerError(f"{net.name} layer {feature_layer!r} is not a feature map (shape {tuple(out.shape)})")
    return keras.Model(net.input, out, name=f"{net.name}_to_{feature_layer}")


def build_classifier(arch: str, backbone=None, dropout: float = 0.2, weights: str | None = "imagenet-local",
                     input_size: int | None = None, weights_dir: str | os.PathLike | None = None,
                     feature_layer: str | None = None):
    """The study's head on a backbone: in-model scaling, backbone (inference-mode BN), GAP, dropout, one logit.

    The model maps raw 0..255 RGB to {"logit": (N, 1), "embedding": (N, D)}; the embedding feeds the
    out-of-scope score.
    """
    from core.models.tf_runtime import load_tensorflow

    _, keras = load_tensorflow()
    spec = arch_spec(arch)
    if backbone is None:
        backbone = build_backbone(spec.name, weights=weights, input_size=input_size, weights_dir=weights_dir,
                                  feature_layer=feature_layer)
    size = backbone.input_shape[1]
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = keras.layers.Rescaling(spec.scale, offset=spec.offset, name="scale")(inputs)
    # training=False is not enough in Keras 3 once the outer model trains: fine-tuning code must also
    # set BatchNorm layers trainable=False (core.learning.training.prepare_fine_tune) so they keep inference
    # statistics (../shared/weights/PROVENANCE.md: MobileNetV2's BN starts from identity statistics).
    x = backbone(x, training=False)
    embedding = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(embedding)
    logit = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, {"logit": logit, "embedding": embedding}, name=f"mpox_{spec.name}")


def weights_fingerprint(model) -> str:
    """SHA-256 over a model's weight values: identifies the backbone whatever file it came from."""
    import numpy as np

    h = hashlib.sha256()
    for w in model.weights:
        arr = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
