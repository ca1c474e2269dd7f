"""The combined model: one head reading the embeddings of several component bundles together.

A combined bundle stores only its head (`model.keras`: concatenated embedding -> SignedSqrt ->
Dense(1) logit, a few tens of kilobytes), its out-of-scope statistics and its training embeddings.
It does not store backbone weights: its card names each component bundle by name, version and the
SHA-256 of its model file (`card.extra["components"]`), and loading finds those bundles (beside the
combined bundle, then in the given or default models folder), verifies them as any bundle is
verified, and refuses a missing or different component. Backbones are therefore stored once, in
their own bundles, with no weaker verification.

Inference: a photo is decoded once per component input size (`input_sizes`, e.g. 224 and 299), exactly
as each component alone decodes it, so each component sees the input it sees when run alone and its
scores equal a standalone run's. `forward` takes those inputs ({size: batch}; a single array is
resized to each size with core.photos.preprocess.to_model_input, the rule before release 1.3.0), runs each
component's forward once (its attached verified LiteRT runtime when it has one) and the head on the
concatenated embeddings; `forward_parts` also returns each component's own logits and embeddings from
that same pass, which the engine turns into the components' rows (core.triage.inference). The embedding a
combined bundle reports (for out-of-scope scores and the shift test) is that concatenation, in
component order.

The head runs in numpy (`head.npz`, core.models.heads.LinearHead) when the card records it as verified
(core.models.export.attach_light_runtime); else it is read from the Keras head model (needs TensorFlow).
Training the head is core.learning.training.train_combined; this module only loads and runs.

Grad-CAM (core.models.explain): the combined logit is a sum of one term per component, so each
component's map is computed for its own term, and the maps are averaged (each scaled to [0, 1]).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.models.bundle import (CARD_FILE, Bundle, BundleError, ModelCard, _candidate_dirs, component_mismatch,
                                component_refs, find_component, load_bundle, read_card, save_bundle, verified_head)
from core.models.ood import OODStats
from core.photos.preprocess import to_model_input
from core.models.runtimes import register_bundle_loader

KIND = "combined"


def resize_batch(batch: np.ndarray, size: int) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.shape[1:3] == (size, size):
        return batch
    return np.stack([to_model_input(np.asarray(img, dtype=np.uint8), size) for img in batch])


def component_batch(batch, size: int) -> np.ndarray:
    """A component's input from what the engine gives: {size: batch} (decoded per size), or one array to resize."""
    if isinstance(batch, dict):
        if size in batch:
            return np.asarray(batch[size])
        batch = batch[max(batch)]
    return resize_batch(batch, size)


class CombinedBundle(Bundle):
    """A Bundle whose forward runs its component bundles and a head on their concatenated embeddings."""

    def __init__(self, card: ModelCard, model, ood: OODStats | None, path: Path | None,
                 components: Sequence[Bundle], head=None):
        super().__init__(card, model, ood, path, runtime=None)
        self.components = list(components)
        self.dims = [int(r.get("dim", 0)) for r in component_refs(card)]
        self._head = head  # core.models.heads.LinearHead (numpy), or None: read from the Keras head on first use

    @property
    def runtime_name(self) -> str:
        head = "numpy" if self._head is not None else "keras"
        return "+".join(f"{c.card.name}:{c.runtime_name}" for c in self.components) + f"; head:{head}"

    @property
    def input_sizes(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(int(c.input_size) for c in self.components))

    @property
    def head(self):
        if self._head is None:
            from core.models.heads import LinearHead

            self._head = LinearHead.from_keras(self.model)
        return self._head

    def component_outputs(self, batch, keras_only: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each component's (logits, embeddings) on its own input, one forward each."""
        out = []
        for comp in self.components:
            sub = component_batch(batch, comp.input_size)
            logits, emb = comp.forward_keras(sub) if keras_only else comp.forward(sub)
            out.append((np.asarray(logits, np.float64).reshape(-1), np.asarray(emb, dtype=np.float32)))
        return out

    def component_embeddings(self, batch, keras_only: bool = False) -> list[np.ndarray]:
        return [emb for _, emb in self.component_outputs(batch, keras_only)]

    def head_forward(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N,), embedding (N, D)) of the head on concatenated embeddings."""
        emb = np.asarray(embedding, dtype=np.float32)
        return self.head.logits(emb), emb

    def forward_parts(self, batch) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """(logits, embedding, [each component's (logits, embedding)]) from one pass of each backbone."""
        parts = self.component_outputs(batch)
        logits, emb = self.head_forward(np.concatenate([e for _, e in parts], axis=1))
        return logits, emb, parts

    def forward(self, batch) -> tuple[np.ndarray, np.ndarray]:
        logits, emb, _ = self.forward_parts(batch)
        return logits, emb

    def forward_keras(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """The reference path: components through Keras, the Keras head model."""
        emb = np.concatenate(self.component_embeddings(batch, keras_only=True), axis=1).astype(np.float32)
        out = self.model(emb, training=False)
        return np.asarray(out["logit"], dtype=np.float64).reshape(-1), emb

    def head_weights(self) -> tuple[np.ndarray, float, bool]:
        """(w (D,), b, signed-sqrt?) of the head's logit layer."""
        head = self.head
        return np.asarray(head.w, np.float64).reshape(-1), float(head.b), bool(head.sqrt)


def load_combined(bundle_dir: str | os.PathLike, card: ModelCard, models_dir=None, runtime: str = "auto"
                  ) -> CombinedBundle:
    """Load a verified combined bundle's head and its verified, matching component bundles."""
    from core.models.bundle import _load_keras_model

    bundle_dir = Path(bundle_dir)
    components = []
    for ref in component_refs(card):
        comp_dir = find_component(ref, bundle_dir, models_dir)
        comp_card = read_card(comp_dir)
        if isinstance(comp_card.extra, dict) and comp_card.extra.get("kind") == KIND:
            raise BundleError(f"{comp_dir}: a combined model cannot be a component of another")
        comp = load_bundle(comp_dir, runtime=runtime)  # verifies every file of the component
        if comp.card.model_sha256 != ref.get("sha256") or component_mismatch(ref, comp.card):
            raise BundleError(f"{comp_dir}: component changed while loading; refusing")
        components.append(comp)
    from core.models.bundle import load_ood

    head = verified_head(bundle_dir, card) if runtime == "auto" else None
    model = _load_keras_model(bundle_dir, card) if head is None else None
    return CombinedBundle(card, model, load_ood(bundle_dir), bundle_dir, components, head=head)


def component_ref(bundle_dir: str | os.PathLike, card: ModelCard | None = None, dim: int | None = None
                  ) -> dict[str, Any]:
    """What a combined card records about one component bundle."""
    card = card or read_card(bundle_dir)
    fl = card.training.get("backbone", {}).get("feature_layer") if isinstance(card.training, dict) else None
    return {"name": card.name, "version": card.version, "sha256": card.model_sha256,
            "card_sha256": card.card_sha256, "architecture": card.architecture, "input_size": int(card.input_size),
            "feature_layer": fl, "dim": int(dim or 0)}


def save_combined(head_model, card: ModelCard, out_dir: str | os.PathLike, components: Sequence[dict[str, Any]],
                  ood: OODStats | None = None, extra_files: dict | None = None, **save_options) -> Path:
    """Write a combined bundle (head only; components referenced by name, version and SHA-256).
    `save_options` (replace, keep_previous_as) go to core.models.bundle.save_bundle."""
    card.extra = {**(card.extra or {}), "kind": KIND, "components": list(components)}
    card.input_size = max(int(c["input_size"]) for c in components)
    return save_bundle(head_model, card, out_dir, ood=ood, extra_files=extra_files, **save_options)


def check_components(card: ModelCard, bundle_dir: Path, models_dir=None) -> None:
    """Part of verifying a combined bundle (core.models.bundle.verify_bundle): each component is found and is what the
    card records (find_component); BundleError otherwise."""
    for ref in component_refs(card):
        find_component(ref, Path(bundle_dir), models_dir)


def record_component_cards(bundle_dir: Path) -> None:
    """A combined bundle whose components were just given their runtimes (new cards: same name, version and
    weights, another card digest) records their current cards again, so that it verifies. Each component
    must verify on its own first; nothing changes for a plain bundle or when the records already match."""
    from core.models.bundle import verify_bundle, write_card
    from core.models.releases import claims_release

    card = read_card(bundle_dir) if (bundle_dir / CARD_FILE).is_file() else None
    if card is None or card.extra.get("kind") != KIND or claims_release(card) is not None:
        return
    refs, changed = [], False
    for ref in card.extra.get("components") or []:
        for d in _candidate_dirs(str(ref.get("name", "")), bundle_dir, None):
            try:
                comp = read_card(d)
            except BundleError:
                continue
            if (comp.name, comp.version, comp.model_sha256) == (ref.get("name"), ref.get("version"), ref.get("sha256")):
                if comp.card_sha256 != ref.get("card_sha256"):
                    verify_bundle(d)
                    ref = component_ref(d, comp, dim=ref.get("dim"))
                    changed = True
                break
        refs.append(ref)
    if changed:
        card.extra = {**card.extra, "components": refs}
        write_card(bundle_dir, card)


register_bundle_loader(KIND, load_combined, check_components)
