"""The logistic head: L2-regularised logistic regression on signed-square-rooted embeddings.

Release 1.2.0 replaced the Dropout + Dense head trained with Adam by this head, chosen by
leave-one-collection-out ROC-AUC (docs/training.md, "Head recipe"): on photos from a collection it
never saw it ranks better, because stronger regularisation on a compressed (square-rooted) embedding
fits the two training collections less tightly. It is fitted with scikit-learn in well under a second
on cached embeddings, then written into the Keras model as `SignedSqrt -> Dense(1)` with the
feature standardisation folded into the Dense weights, so a bundle stays one end-to-end Keras model
(exportable, Grad-CAM-able). `SignedSqrt` is a registered Keras layer: loading in safe mode needs no
arbitrary code, only this module imported (core.models.bundle does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The regularisation strength (scikit-learn's C: smaller is stronger) of the shipped recipe, chosen by
# leave-one-collection-out ROC-AUC on train+val (never test); see docs/training.md.
DEFAULT_C = 0.01


def signed_sqrt(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.sqrt(np.abs(x))


def _register_layer():
    import keras

    @keras.saving.register_keras_serializable(package="mpox_triage", name="SignedSqrt")
    class SignedSqrt(keras.layers.Layer):
        """sign(x) * sqrt(|x|), elementwise (the embeddings are ReLU outputs, so sqrt(x) in practice)."""

        def call(self, inputs):
            from keras import ops

            return ops.sign(inputs) * ops.sqrt(ops.abs(inputs))

        def compute_output_shape(self, input_shape):
            return input_shape

    return SignedSqrt


_LAYER = None


def signed_sqrt_layer():
    """The registered SignedSqrt layer class (registering it on first use)."""
    global _LAYER
    if _LAYER is None:
        _LAYER = _register_layer()
    return _LAYER


def register() -> None:
    """Make the custom layer known to Keras before a bundle that uses it is loaded."""
    signed_sqrt_layer()


@dataclass
class LinearHead:
    """logit = w . signed_sqrt(x) + b (standardisation already folded into w and b)."""

    w: np.ndarray  # (D,)
    b: float
    C: float = DEFAULT_C
    sqrt: bool = True

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        f = signed_sqrt(x) if self.sqrt else x
        return f @ self.w + self.b

    def save_npz(self, path) -> None:
        """Write the head as `head.npz` (w, b, sqrt) to a path or binary file: what a bundle's numpy runtime
        reads, no Keras needed."""
        arrays = {"w": np.asarray(self.w, np.float64), "b": np.float64(self.b), "sqrt": np.bool_(self.sqrt),
                  "C": np.float64(self.C)}
        if hasattr(path, "write"):
            np.savez(path, **arrays)
            return
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load_npz(cls, path) -> "LinearHead":
        with np.load(path, allow_pickle=False) as data:
            w = np.asarray(data["w"], np.float64).reshape(-1)
            return cls(w, float(data["b"]), C=float(data["C"]) if "C" in data else DEFAULT_C,
                       sqrt=bool(data["sqrt"]))

    @classmethod
    def from_keras(cls, model) -> "LinearHead":
        """The head of a Keras bundle model: its Dense `logit` layer, on signed-sqrt features when the model
        has a `signed_sqrt` layer (1.2.0+ heads), else on the embedding itself (older heads; dropout is
        inactive at inference)."""
        kernel, bias = model.get_layer("logit").get_weights()
        sqrt = any(layer.name == "signed_sqrt" for layer in model.layers)
        return cls(np.asarray(kernel, np.float64).reshape(-1), float(np.asarray(bias).reshape(-1)[0]), sqrt=sqrt)


def fit_logistic(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, C: float = DEFAULT_C,
                 sqrt: bool = True, class_weight: bool = True, max_iter: int = 2000) -> LinearHead:
    """Fit the logistic head on embeddings (N, D) or (N, V, D) (every view a row with its image's label).

    Features are signed-square-rooted, then standardised (scaler fitted on these rows); balanced
    class weights multiply `sample_weight`. Returns the head in embedding space.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(int)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if x.ndim == 3:
        v = x.shape[1]
        y, sw = np.repeat(y, v), np.repeat(sw, v)
        x = x.reshape(-1, x.shape[-1])
    f = signed_sqrt(x) if sqrt else x
    scaler = StandardScaler().fit(f, sample_weight=sw)
    z = scaler.transform(f)
    if class_weight:
        totals = np.array([sw[y == k].sum() for k in (0, 1)])
        if (totals > 0).all():
            sw = sw * (totals.sum() / (2 * totals))[y]
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(z, y, sample_weight=sw)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    w = clf.coef_[0] / scale
    b = float(clf.intercept_[0] - np.sum(clf.coef_[0] * scaler.mean_ / scale))
    return LinearHead(w.astype(np.float64), b, C=C, sqrt=sqrt)


def head_layers(head: LinearHead, embedding, name: str = "logit"):
    """Keras graph from an embedding tensor to the head's logit (N, 1)."""
    import keras

    x = signed_sqrt_layer()(name="signed_sqrt")(embedding) if head.sqrt else embedding
    dense = keras.layers.Dense(1, name=name)
    out = dense(x)
    dense.set_weights([head.w.reshape(-1, 1).astype(np.float32), np.array([head.b], dtype=np.float32)])
    return out


def attach_head(model, head: LinearHead, name: str | None = None):
    """A new end-to-end model: `model`'s inputs and embedding output, with `head` computing the logit.

    `model` maps images (or, for a combined head, embeddings) to {"logit", "embedding"}.
    """
    import keras

    emb = model.outputs[1] if not isinstance(model.output, dict) else model.output["embedding"]
    logit = head_layers(head, emb)
    return keras.Model(model.inputs, {"logit": logit, "embedding": emb}, name=name or model.name)


def embedding_head_model(dim: int, head: LinearHead, name: str = "combined_head"):
    """A model from a (concatenated) embedding (N, D) to {"logit", "embedding"}: the combined bundle's model."""
    import keras

    inputs = keras.Input(shape=(dim,), name="embedding_in")
    emb = keras.layers.Identity(name="embedding")(inputs)
    return keras.Model(inputs, {"logit": head_layers(head, emb), "embedding": emb}, name=name)
