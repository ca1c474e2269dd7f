"""Grad-CAM (core/models/explain.py): shape, range, localisation and both architectures."""

from __future__ import annotations

import numpy as np
import pytest

from core.models.bundle import Bundle, ModelCard, load_bundle
from core.models.explain import ExplainError, colorize, gradcam, overlay


def _red_detector(size: int = 32):
    """A model whose logit is the mean 'redness' of the image: Grad-CAM must light up red regions."""
    import keras

    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    conv = keras.layers.Conv2D(1, 1, use_bias=False, activation="relu", name="red")
    x = conv(x)
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    dense = keras.layers.Dense(1, name="logit")
    logit = dense(emb)
    model = keras.Model(inputs, {"logit": logit, "embedding": emb})
    conv.set_weights([np.array([1.0, -1.0, -1.0], dtype="float32").reshape(1, 1, 3, 1)])
    dense.set_weights([np.ones((1, 1), "float32"), np.zeros(1, "float32")])
    card = ModelCard(name="red", version="0", architecture="mobilenetv2", input_size=size)
    return Bundle(card, model, None)


def test_gradcam_highlights_the_region_that_raises_the_logit():
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[10:30, 40:70, 0] = 255  # a red patch in the top right
    heat = gradcam(_red_detector(), rgb)
    assert heat.shape == (60, 80) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert heat[15:25, 45:65].mean() > 0.8
    assert heat[40:, :30].mean() < 0.1


def test_gradcam_on_tiny_bundle_has_the_photo_shape(tiny_bundle):
    bundle = load_bundle(tiny_bundle())
    rgb = np.random.default_rng(1).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    heat = gradcam(bundle, rgb)
    assert heat.shape == (45, 61)
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0


@pytest.mark.parametrize("arch", ["mobilenetv2", "xception"])
def test_gradcam_uses_the_nested_backbone_feature_map(arch):
    from core.models.backbones import build_classifier

    model = build_classifier(arch, weights=None, input_size=71)
    bundle = Bundle(ModelCard(name=arch, version="0", architecture=arch, input_size=71), model, None)
    rgb = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    heat = gradcam(bundle, rgb)
    assert heat.shape == (40, 50)
    assert heat.max() <= 1.0 and heat.min() >= 0.0


def test_gradcam_refuses_a_model_without_feature_maps():
    import keras

    inputs = keras.Input(shape=(8, 8, 3))
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(inputs)
    model = keras.Model(inputs, {"logit": keras.layers.Dense(1, name="logit")(emb), "embedding": emb})
    bundle = Bundle(ModelCard(name="flat", version="0", architecture="mobilenetv2", input_size=8), model, None)
    with pytest.raises(ExplainError, match="4-D"):
        gradcam(bundle, np.zeros((8, 8, 3), np.uint8))


def test_overlay_blends_between_photo_and_heat_map():
    rgb = np.full((4, 4, 3), 100, np.uint8)
    heat = np.ones((4, 4), np.float32)
    assert (overlay(rgb, heat, 0.0) == rgb).all()
    assert (overlay(rgb, heat, 1.0) == colorize(heat)).all()
    assert tuple(colorize(heat)[0, 0]) == (128, 0, 0)  # jet's top is dark red, in RGB order
