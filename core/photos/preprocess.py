"""The one definition of how a decoded photo becomes a model input, for training and inference alike.

Resizing happens here; pixel scaling to the backbone's range is the first layer of every model
(see core.models.backbones), so exported models and the Keras model see identical inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from core.photos.images import load_rgb, load_rgb_with_hash


@dataclass(frozen=True)
class ArchSpec:
    name: str
    display_name: str
    input_size: int
    # Study recipe: layers from this index on are unfrozen in fine-tuning phase 2.
    fine_tune_from: int
    # The backbone layer whose feature map is pooled into the embedding ("top": the backbone's last
    # output). Chosen by val and leave-one-collection-out ROC-AUC (docs/ablation.md, "Feature layer"):
    # for both backbones a layer just below the top generalises across photo collections better than
    # the final ImageNet-specific projection (MobileNetV2's 1x1 Conv_1, Xception's last separable conv).
    feature_layer: str = "top"
    # Keras preprocess_input for both backbones maps 0..255 to -1..1.
    scale: float = 1.0 / 127.5
    offset: float = -1.0


ARCHITECTURES: dict[str, ArchSpec] = {
    "mobilenetv2": ArchSpec("mobilenetv2", "MobileNetV2", 224, 120, "block_16_expand_relu"),
    "xception": ArchSpec("xception", "Xception", 299, 100, "block14_sepconv1_act"),
}

PREPROCESSING_DESCRIPTION = (
    "decode to 8-bit RGB (EXIF orientation applied, alpha on white), resize whole image to "
    "input_size x input_size (area interpolation when shrinking, bilinear when enlarging), "
    "then in-model scaling x/127.5 - 1"
)


def arch_spec(arch: str) -> ArchSpec:
    try:
        return ARCHITECTURES[arch.lower()]
    except KeyError:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def to_model_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (size, size, 3) uint8, keeping the whole field of view."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def load_model_input(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode a file and resize it for a model of input `size` (raises ImageDecodeError)."""
    return to_model_input(load_rgb(path, max_side=size), size)


def load_model_input_with_hash(path: str | os.PathLike, size: int) -> tuple[np.ndarray | None, str | None, str]:
    """Like load_model_input but never raises: (input or None, file sha256 or None, error message)."""
    rgb, digest, error = load_rgb_with_hash(path, max_side=size)
    if rgb is None:
        return None, digest, error
    return to_model_input(rgb, size), digest, ""
