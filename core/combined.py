"""The combined model: one head reading the embeddings of several component bundles together.

A combined bundle stores only its head (`model.keras`: concatenated embedding -> SignedSqrt ->
Dense(1) logit, a few tens of kilobytes), its out-of-scope statistics and its training embeddings.
It does not store backbone weights: its card names each component bundle by name, version and the
SHA-256 of its model file (`card.extra["components"]`), and loading finds those bundles (beside the
combined bundle, then in the given or default models folder), verifies them as any bundle is
verified, and refuses a missing or different component. Backbones are therefore stored once, in
their own bundles, with no weaker verification.

Inference: the engine feeds `CombinedBundle.forward` uint8 batches of `input_size` (the largest
component's, 299). Each component gets the batch resized to its own input size with the same
function as every other model input (core.preprocess.to_model_input), runs its own forward (its
attached verified runtime when it has one), and the head reads the concatenated embeddings. The
embedding a combined bundle reports (for out-of-scope scores and the shift test) is that
concatenation, in component order.

Grad-CAM (core.explain): the combined logit is a sum of one term per component, so each
component's map is computed for its own term, and the maps are averaged (each scaled to [0, 1]).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.bundle import (CARD_FILE, OOD_FILE, Bundle, BundleError, ModelCard, default_models_dir, load_bundle,
                         read_card, save_bundle)
from core.ood import OODStats
from core.preprocess import to_model_input

KIND = "combined"


def component_refs(card: ModelCard) -> list[dict[str, Any]]:
    refs = card.extra.get("components") if isinstance(card.extra, dict) else None
    if not isinstance(refs, list) or not refs:
        raise BundleError(f"{card.display_name}: combined model card lists no component bundles")
    return refs


def resize_batch(batch: np.ndarray, size: int) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.shape[1:3] == (size, size):
        return batch
    return np.stack([to_model_input(np.asarray(img, dtype=np.uint8), size) for img in batch])


class CombinedBundle(Bundle):
    """A Bundle whose forward runs its component bundles and a head on their concatenated embeddings."""

    def __init__(self, card: ModelCard, model, ood: OODStats | None, path: Path | None,
                 components: Sequence[Bundle]):
        super().__init__(card, model, ood, path, runtime=None)
        self.components = list(components)
        self.dims = [int(r.get("dim", 0)) for r in component_refs(card)]

    @property
    def runtime_name(self) -> str:
        return "+".join(f"{c.card.name}:{c.runtime_name}" for c in self.components)

    def component_embeddings(self, batch: np.ndarray, keras_only: bool = False) -> list[np.ndarray]:
        out = []
        for comp in self.components:
            sub = resize_batch(batch, comp.input_size)
            _, emb = comp.forward_keras(sub) if keras_only else comp.forward(sub)
            out.append(np.asarray(emb, dtype=np.float32))
        return out

    def head_forward(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N,), embedding (N, D)) of the head on concatenated embeddings."""
        emb = np.asarray(embedding, dtype=np.float32)
        out = self.model(emb, training=False)
        return np.asarray(out["logit"], dtype=np.float64).reshape(-1), emb

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.head_forward(np.concatenate(self.component_embeddings(batch), axis=1))

    def forward_keras(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.head_forward(np.concatenate(self.component_embeddings(batch, keras_only=True), axis=1))

    def head_weights(self) -> tuple[np.ndarray, float, bool]:
        """(w (D,), b, signed-sqrt?) of the head's logit layer."""
        kernel, bias = self.model.get_layer("logit").get_weights()
        names = {layer.name for layer in self.model.layers}
        return np.asarray(kernel).reshape(-1), float(np.asarray(bias).reshape(-1)[0]), "signed_sqrt" in names


def _candidate_dirs(name: str, bundle_dir: Path, models_dir) -> list[Path]:
    bases = [bundle_dir.parent]
    if models_dir:
        bases.append(Path(models_dir))
    bases.append(default_models_dir())
    seen, out = set(), []
    for base in bases:
        d = (base / name).resolve()
        if d not in seen and d != bundle_dir.resolve():
            seen.add(d)
            out.append(d)
    return out


def find_component(ref: dict[str, Any], bundle_dir: Path, models_dir=None) -> Path:
    """The folder of the component bundle `ref` names (same version and model SHA-256), or BundleError."""
    name, version, sha = str(ref.get("name", "")), str(ref.get("version", "")), str(ref.get("sha256", ""))
    found = []
    for d in _candidate_dirs(name, bundle_dir, models_dir):
        if not (d / CARD_FILE).is_file():
            continue
        try:
            card = read_card(d)
        except BundleError:
            continue
        if card.model_sha256 == sha and card.version == version:
            return d
        found.append(f"{card.name} {card.version} (sha256 {card.model_sha256[:12]}) in {d}")
    have = "; found " + ", ".join(found) if found else "; none found"
    raise BundleError(
        f"{bundle_dir}: the combined model needs component bundle {name} {version} (sha256 {sha[:12]}){have}. "
        "Install the component bundles of the same release beside it. Refusing to load it."
    )


def load_combined(bundle_dir: str | os.PathLike, card: ModelCard, models_dir=None, runtime: str = "auto"
                  ) -> CombinedBundle:
    """Load a verified combined bundle's head and its verified, matching component bundles."""
    from core.bundle import _load_keras_model

    bundle_dir = Path(bundle_dir)
    components = []
    for ref in component_refs(card):
        comp_dir = find_component(ref, bundle_dir, models_dir)
        comp_card = read_card(comp_dir)
        if isinstance(comp_card.extra, dict) and comp_card.extra.get("kind") == KIND:
            raise BundleError(f"{comp_dir}: a combined model cannot be a component of another")
        comp = load_bundle(comp_dir, runtime=runtime)  # verifies every file of the component
        if comp.card.model_sha256 != ref.get("sha256"):
            raise BundleError(f"{comp_dir}: component changed while loading; refusing")
        components.append(comp)
    model = _load_keras_model(bundle_dir)
    ood = OODStats.load(bundle_dir / OOD_FILE) if (bundle_dir / OOD_FILE).is_file() else None
    return CombinedBundle(card, model, ood, bundle_dir, components)


def component_ref(bundle_dir: str | os.PathLike, card: ModelCard | None = None, dim: int | None = None
                  ) -> dict[str, Any]:
    """What a combined card records about one component bundle."""
    card = card or read_card(bundle_dir)
    fl = card.training.get("backbone", {}).get("feature_layer") if isinstance(card.training, dict) else None
    return {"name": card.name, "version": card.version, "sha256": card.model_sha256,
            "card_sha256": card.card_sha256, "architecture": card.architecture, "input_size": int(card.input_size),
            "feature_layer": fl, "dim": int(dim or 0)}


def save_combined(head_model, card: ModelCard, out_dir: str | os.PathLike, components: Sequence[dict[str, Any]],
                  ood: OODStats | None = None, extra_files: dict | None = None) -> Path:
    """Write a combined bundle (head only; components referenced by name, version and SHA-256)."""
    card.extra = {**(card.extra or {}), "kind": KIND, "components": list(components)}
    card.input_size = max(int(c["input_size"]) for c in components)
    return save_bundle(head_model, card, out_dir, ood=ood, extra_files=extra_files)
