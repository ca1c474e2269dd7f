"""Grad-CAM heat maps: which regions of a photo raised the model's mpox logit.

Without TensorFlow (bundles with a LiteRT runtime, release 1.3.0 on): the runtime's backbone gives the
last feature map A (h, w, C); the head is linear on pooled features, logit = w . f(e) + b with
e_k = mean_ij A_ijk and f the signed square root (or the identity for older heads). Grad-CAM weights
each channel by its mean gradient, and here the gradient is the same at every position:

    d logit / d A_ijk = w_k f'(e_k) / (h w),   f'(x) = 1 / (2 sqrt|x|) for the signed square root

(f(x) = sign(x) sqrt|x|, so f'(x) = 1 / (2 sqrt|x|) on both sides of 0). The map is then
ReLU(sum_k alpha_k A_ijk) with alpha_k = w_k f'(e_k) / (h w): for a linear head on pooled features this
is the class activation map exactly, with no approximation and no autodiff. A channel with e_k = 0 is
zero at every position (the features are ReLU outputs), so it adds nothing whatever its weight; it
is given weight 0 (TensorFlow's autodiff yields 0 * inf there). The map is scaled to [0, 1] by its peak
and resized to the photo, as before.

With only a Keras model (no runtime; needs TensorFlow) the map comes from TensorFlow's gradient tape,
for any bundle built by core.models.backbones.build_classifier (the backbone is a nested Keras model whose 4-D
output is the last convolutional feature map) and for flat test models (the last layer with a 4-D
output is used). Call it from the thread that owns the bundle: models are not thread-safe. A heat map
explains the model, not the lesion; it is not a diagnosis.
"""

from __future__ import annotations

import numpy as np

from core.photos.preprocess import to_model_input


class ExplainError(ValueError):
    """The model's graph has no usable 4-D feature map or is not a simple chain of layers."""


def _is_4d(shape) -> bool:
    return shape is not None and len(shape) == 4


def _layer_output_shape(layer):
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return None
    return tuple(shape) if shape is not None else None


def _chain_layers(model) -> list:
    """The model's layers after the input, checked to form a single chain (each feeds the next)."""
    from core.models.tf_runtime import load_tensorflow

    _, keras = load_tensorflow()

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for prev, layer in zip(layers, layers[1:]):
        inbound = getattr(layer, "_inbound_nodes", None) or []
        parents = {id(t._keras_history[0]) for node in inbound for t in node.input_tensors
                   if hasattr(t, "_keras_history")}
        if parents and id(prev) not in parents:
            raise ExplainError(
                f"Grad-CAM needs a model that is a single chain of layers; {layer.name!r} does not take "
                f"{prev.name!r} as input. Retrain the model with core.models.backbones.build_classifier."
            )
    return layers


def _split_at_last_feature_map(model) -> tuple[list, list]:
    """(layers up to and including the last 4-D output, layers after it)."""
    layers = _chain_layers(model)
    target = None
    for i, layer in enumerate(layers):
        if _is_4d(_layer_output_shape(layer)):
            target = i
    if target is None:
        raise ExplainError(f"Model {model.name!r} has no layer with a 4-D (convolutional) output for Grad-CAM")
    return layers[: target + 1], layers[target + 1:]


def _logit(out):
    if isinstance(out, dict):
        return out["logit"]
    return out


def gradcam(bundle, rgb_uint8: np.ndarray) -> np.ndarray:
    """Grad-CAM of the mpox logit for one (H, W, 3) uint8 photo: float32 (H, W) in [0, 1].

    The feature map is the last 4-D output in the model (for a nested backbone, the backbone's
    output). Regions with high values raised p(mpox); an all-zero map means nothing did.

    A combined bundle (core.models.combined) has one feature map per component: its logit is
    w . f(concat(e_1, e_2)) + b, a sum of one term per component, so each component's map is the
    Grad-CAM of its own term (w_i . f(e_i)) with respect to its own feature map, and the maps,
    each scaled to [0, 1], are averaged.
    """
    rgb = np.asarray(rgb_uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"gradcam expects an (H, W, 3) RGB image, got shape {rgb.shape}")
    components = getattr(bundle, "components", None)
    if components:
        return _combined_gradcam(bundle, rgb)
    if _has_features(bundle):
        head = bundle.head
        return linear_head_cam(bundle, rgb, head.w, head.sqrt)
    return _gradcam_model(bundle.model, rgb, bundle.input_size)


def _has_features(bundle) -> bool:
    return callable(getattr(getattr(bundle, "runtime", None), "features", None))


def signed_sqrt_grad(e: np.ndarray) -> np.ndarray:
    """d/de of sign(e) sqrt|e|: 1 / (2 sqrt|e|), and 0 where e = 0 (see the module docstring)."""
    e = np.abs(np.asarray(e, dtype=np.float64))
    out = np.zeros_like(e)
    np.divide(0.5, np.sqrt(e), out=out, where=e > 0)
    return out


def linear_head_cam(bundle, rgb: np.ndarray, w: np.ndarray, sqrt: bool) -> np.ndarray:
    """Grad-CAM of logit = w . f(mean_ij A_ij) from the bundle's runtime feature map A, in numpy: (H, W) in [0, 1]."""
    fmap, emb = bundle.features(to_model_input(rgb, bundle.input_size)[None])
    fmap, e = np.asarray(fmap[0], np.float64), np.asarray(emb[0], np.float64)
    h, wd = fmap.shape[:2]
    grad = np.asarray(w, np.float64).reshape(-1) * (signed_sqrt_grad(e) if sqrt else 1.0) / (h * wd)
    return _to_heatmap(np.maximum(np.tensordot(fmap, grad, axes=([2], [0])), 0.0), rgb)


def _to_heatmap(cam: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """A class activation map scaled to [0, 1] by its peak and resized to the photo."""
    import cv2

    peak = float(cam.max())
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    heat = cv2.resize(cam.astype(np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def _combined_gradcam(bundle, rgb: np.ndarray) -> np.ndarray:
    w, _, sqrt = bundle.head_weights()
    maps, start = [], 0
    for comp, dim in zip(bundle.components, bundle.dims):
        part = w[start:start + dim].astype("float32")
        start += dim
        if _has_features(comp):
            maps.append(linear_head_cam(comp, rgb, part, sqrt))
            continue
        from core.models.heads import signed_sqrt_layer

        layer = signed_sqrt_layer()() if sqrt else None

        def term(emb, part=part, layer=layer):
            from core.models.tf_runtime import load_tensorflow

            tf, _ = load_tensorflow()
            f = layer(emb) if layer is not None else emb
            return tf.reduce_sum(f * part, axis=-1)

        maps.append(_gradcam_model(comp.model, rgb, comp.input_size, head=term))
    return np.clip(np.mean(maps, axis=0), 0.0, 1.0).astype(np.float32)


def _gradcam_model(model, rgb: np.ndarray, input_size: int, head=None) -> np.ndarray:
    """Grad-CAM for one end-to-end model; `head` (embedding -> logit) replaces the model's own head."""
    from core.models.tf_runtime import load_tensorflow

    tf, _ = load_tensorflow()

    before, after = _split_at_last_feature_map(model)
    x = tf.convert_to_tensor(to_model_input(rgb, input_size)[None].astype("float32"))
    with tf.GradientTape() as tape:
        h = x
        for layer in before:
            h = layer(h, training=False)
        features = h
        tape.watch(features)
        if head is not None:
            logit = tf.reshape(head(tf.reduce_mean(features, axis=(1, 2))), [-1])[0]
        else:
            for layer in after:
                h = layer(h, training=False)
            # The head is a chain ending in the logit; embedding-only chains have no Dense at the end.
            logit = tf.reshape(_logit(h), [-1])[0]
    grads = tape.gradient(logit, features)
    if grads is None:
        raise ExplainError(f"Model {model.name!r}: the logit does not depend on the last feature map")
    fmap = np.asarray(features[0], dtype=np.float32)
    weights = np.asarray(tf.reduce_mean(grads, axis=(0, 1, 2)), dtype=np.float32)
    return _to_heatmap(np.maximum(np.tensordot(fmap, weights, axes=([2], [0])), 0.0), rgb)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] heat map as a (H, W, 3) uint8 RGB 'jet' image (blue = low, red = high)."""
    import cv2

    scaled = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return np.ascontiguousarray(bgr[..., ::-1])


def overlay(rgb_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the colorized heat map over the photo; alpha 0 = photo only, 1 = heat map only."""
    colored = colorize(heatmap).astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(rgb_uint8, dtype=np.float32) + alpha * colored
    return np.clip(blended, 0, 255).astype(np.uint8)
