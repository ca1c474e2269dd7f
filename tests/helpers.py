"""Builders for test fixtures: tiny model bundles and generated photo folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_tiny_model(input_size: int = 32, seed: int = 0):
    """A few-kilobyte classifier with the same inputs/outputs as the real ones."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    logit = keras.layers.Dense(1, name="logit")(emb)
    return keras.Model(inputs, {"logit": logit, "embedding": emb}, name="tiny")


def make_tiny_bundle(out_dir: Path, name: str = "tiny", input_size: int = 32, threshold: float = 0.5,
                     version: str = "0.0.1", with_ood: bool = True, seed: int = 0) -> Path:
    from core.models.bundle import ModelCard, save_bundle
    from core.models.ood import fit_ood

    model = make_tiny_model(input_size, seed)
    ood = None
    if with_ood:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, size=(40, input_size, input_size, 3)).astype("float32")
        ood = fit_ood(np.asarray(model(x)["embedding"]), n_components=4)
    card = ModelCard(name=name, version=version, architecture="mobilenetv2", input_size=input_size,
                     threshold=threshold, uncertain_band=[0.45, 0.55], ood_threshold=50.0,
                     training_data={"note": "untrained test fixture"})
    return save_bundle(model, card, out_dir, ood=ood)


def make_photo(size=(64, 48), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small generated photo of skin: a varied skin tone under soft lighting with a few darker red lesions and
    sensor noise, so JPEG compression behaves as on photos and the scope check (core.photos.scope) sees it in scope."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.array([205, 150, 125]) * (0.85 + 0.15 * rng.random())   # a skin tone, varied per photo
    shade = 0.85 + 0.15 * (yy / h)                                      # soft lighting
    arr = base[None, None, :] * shade[..., None]
    for _ in range(3):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), min(w, h) / rng.uniform(5, 9)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2))
        arr = arr * (1 - 0.5 * blob[..., None]) + blob[..., None] * np.array([150, 60, 50]) * 0.5
    # Skin grain at the scale of a 160-pixel photo whatever the size (the scope check looks at the photo resized to
    # 160 pixels, where fine noise on a large photo averages out into a too-smooth rendering), plus sensor noise;
    # strong enough that JPEG on a 32-pixel photo keeps it (weaker grain is smoothed into a rendering).
    step = max(1, round(max(w, h) / 160))
    grain = rng.normal(0, 10, (-(-h // step), -(-w // step), 3))
    arr = arr + np.repeat(np.repeat(grain, step, 0), step, 1)[:h, :w]
    if step > 1:
        arr = arr + rng.normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").convert(mode)


def make_image_folder(root: Path, n_per_class: int = 4, classes=("mpox", "other"), size=(64, 48),
                      ext: str = ".jpg") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    seed = 0
    for cls in classes:
        (root / cls).mkdir(exist_ok=True)
        for i in range(n_per_class):
            make_photo(size, seed).save(root / cls / f"{cls}_{i:02d}{ext}")
            seed += 1
    return root


def make_light_combined(models: Path, photos: Path):
    """A tiny combined bundle and its two components, each with its LiteRT runtime attached (checked on
    `photos`), as a 1.3.0+ release ships them; returns (combined, alpha, beta) folders."""
    from core.models.export import attach_light_runtime
    from tests.test_combined import make_combined

    out, a, b, _head = make_combined(models)
    for folder in (a, b, out):  # components first: the combined card records their runtimes
        attach_light_runtime(folder, photos)
    return out, a, b
