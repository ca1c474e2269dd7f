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

from core.bundle import (CARD_FILE, Bundle, BundleError, ModelCard, default_models_dir, load_bundle,
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


def component_mismatch(ref: dict[str, Any], card: ModelCard) -> str:
    """'' when `card` is the component `ref` records (name, version, model SHA-256 and card digest), else what
    differs. A card digest may differ only between two published cards of one shipped release (e.g. re-issued
    with a runtime attached: core.releases lists both)."""
    from core.releases import find_release

    diffs = [f"{what} {getattr(card, attr)!r} (recorded {ref.get(key)!r})"
             for what, attr, key in (("name", "name", "name"), ("version", "version", "version"),
                                     ("model SHA-256", "model_sha256", "sha256"))
             if str(getattr(card, attr)) != str(ref.get(key, ""))]
    recorded = ref.get("card_sha256")
    if not diffs and recorded and card.card_sha256 != recorded:
        release = find_release(card.name, card.version)
        same_release = (release is not None and card.model_sha256 == release.model_sha256
                        and {card.card_sha256, recorded} <= set(release.card_sha256))
        if not same_release:
            diffs.append(f"card digest {card.card_sha256[:12]} (recorded {str(recorded)[:12]})")
    return ", ".join(diffs)


def find_component(ref: dict[str, Any], bundle_dir: Path, models_dir=None) -> Path:
    """The folder of the component bundle `ref` names, verified against what the combined card records about it
    (name, version, model SHA-256, card digest: component_mismatch), or BundleError.

    A candidate with other weights is passed over (another model of that name); one with the same weights but
    another name, version or card (an edited input size, threshold...) is refused: a tampered component is
    never used, and never silently replaced by another copy either."""
    name, version, sha = str(ref.get("name", "")), str(ref.get("version", "")), str(ref.get("sha256", ""))
    found = []
    for d in _candidate_dirs(name, bundle_dir, models_dir):
        if not (d / CARD_FILE).is_file():
            continue
        try:
            card = read_card(d)
        except BundleError:
            continue
        if card.model_sha256 == sha:
            problem = component_mismatch(ref, card)
            if problem:
                raise BundleError(
                    f"{d}: component {name} {version} of the combined model {bundle_dir} differs from what its card "
                    f"records: {problem}. It was modified; reinstall the release's bundles. Refusing to load it.")
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
        if comp.card.model_sha256 != ref.get("sha256") or component_mismatch(ref, comp.card):
            raise BundleError(f"{comp_dir}: component changed while loading; refusing")
        components.append(comp)
    model = _load_keras_model(bundle_dir)
    from core.bundle import load_ood

    ood = load_ood(bundle_dir)
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


def train_combined(dataset, component_dirs: Sequence[str | os.PathLike], *, views: Sequence[str] = ("identity",),
                   C: float | None = None, min_sensitivity: float = 0.90, sensitivity_margin: float = 0.0,
                   name: str = "combined", version: str | None = None, cache_dir=None, weights_dir=None,
                   n_bootstrap: int = 1000, seed: int = 0, progress=None, cancel=None) -> dict[str, Any]:
    """Fit a combined head on the cached embeddings of `dataset`'s train split (val: calibration, threshold).

    Each component's embedding is the cached frozen-backbone embedding at that component's feature
    layer (core.features), i.e. what the component bundle's model reports as its embedding.
    Returns {"model", "card", "ood", "embeddings_npz", "components", "val_logits", "val_labels"}.
    """
    import time

    from core.calibration import apply_temperature, fit_temperature, logit, sigmoid
    from core.datasets import DatasetError
    from core.evaluation import choose_threshold, evaluate_probabilities, to_jsonable
    from core.features import FeatureExtractor, embeddings_npz_bytes
    from core.heads import DEFAULT_C, embedding_head_model, fit_logistic
    from core.ood import fit_ood
    from core.preprocess import PREPROCESSING_DESCRIPTION
    from core.training import LIMITATIONS, TrainConfig, transfer_estimate

    started = time.monotonic()
    C = float(C or DEFAULT_C)
    views = list(views)
    if "identity" not in views:
        views = ["identity"] + views
    ident = views.index("identity")
    train_ds, val_ds = dataset.subset("train"), dataset.subset("val")
    if not len(train_ds) or not len(val_ds):
        raise DatasetError("the combined head needs a dataset with train and val splits")
    cards = [read_card(d) for d in component_dirs]
    xs_tr, xs_va, refs, fps = [], [], [], []
    for d, card in zip(component_dirs, cards):
        layer = card.training.get("backbone", {}).get("feature_layer")
        fx = FeatureExtractor(card.architecture, input_size=int(card.input_size), weights_dir=weights_dir,
                              cache_dir=cache_dir, feature_layer=layer)
        fp = card.training.get("backbone", {}).get("fingerprint_sha256")
        if fp and fp != fx.fingerprint:
            raise BundleError(f"{d}: its backbone fingerprint differs from the local weights; cannot reuse embeddings")
        xs_tr.append(fx.embed(train_ds, views, progress, cancel))
        xs_va.append(fx.embed(val_ds, ["identity"], progress, cancel)[:, 0])
        refs.append(component_ref(d, card, fx.dim))
        fps.append(fx.fingerprint)
    x_tr, x_va = np.concatenate(xs_tr, axis=-1), np.concatenate(xs_va, axis=-1)
    ok_tr = ~np.isnan(x_tr.reshape(len(x_tr), -1)).any(axis=1)
    ok_va = ~np.isnan(x_va).any(axis=1)
    x_tr, x_va = x_tr[ok_tr], x_va[ok_va]
    s_tr = [s for s, ok in zip(train_ds.samples, ok_tr) if ok]
    s_va = [s for s, ok in zip(val_ds.samples, ok_va) if ok]
    y_tr, y_va = np.array([s.y for s in s_tr]), np.array([s.y for s in s_va])

    head = fit_logistic(x_tr, y_tr, C=C)
    z_va = head.logits(x_va)
    temperature = fit_temperature(z_va, y_va)
    p_va = apply_temperature(z_va, temperature)
    threshold, reason = choose_threshold(y_va, p_va, min(1.0, min_sensitivity + sensitivity_margin))
    centre = float(logit(threshold))
    band = [float(sigmoid(centre - 1.0)), float(sigmoid(centre + 1.0))]
    train_emb = x_tr[:, ident]
    ood = fit_ood(train_emb, n_components=32)
    ood_threshold = float(np.percentile(ood.score(x_va), 99.0))
    val_metrics = evaluate_probabilities(y_va, p_va, threshold, n_bootstrap=n_bootstrap, seed=seed)
    cfg = TrainConfig("mobilenetv2", head="logistic", head_c=C, min_sensitivity=min_sensitivity,
                      sensitivity_margin=sensitivity_margin, seed=seed)
    transfer = transfer_estimate(x_tr, y_tr, [s.source for s in s_tr], x_va, y_va, [s.source for s in s_va], ident,
                                 cfg, progress, cancel)
    npz = embeddings_npz_bytes(np.concatenate([train_emb, x_va]), np.concatenate([y_tr, y_va]),
                               [s.source for s in s_tr + s_va], [s.split for s in s_tr + s_va],
                               [s.file_hash() for s in s_tr + s_va])
    summary = dataset.summary()
    summary["test_used_in_training"] = False
    summary["manifest_sha256"] = dataset.fingerprint()
    card = ModelCard(
        name=name, version=version or "0.0.0", architecture=KIND,
        input_size=max(int(c.input_size) for c in cards),
        preprocessing=PREPROCESSING_DESCRIPTION + "; then resized again (same function) to each component's "
        "input size inside the combined bundle",
        threshold=float(threshold), threshold_reason=reason, temperature=float(temperature), uncertain_band=band,
        ood_threshold=ood_threshold,
        metrics=to_jsonable({"val": val_metrics, "transfer": transfer,
                             "selection": "all choices made on val and leave-one-collection-out; test never used "
                                          "in training"}),
        training_data=to_jsonable(summary),
        training=to_jsonable({
            "preset": "combined", "seed": seed,
            "hyperparameters": {"head": {"type": "logistic (core.heads)", "C": C, "views": views,
                                         "features": "concatenated component embeddings, signed square root, "
                                                     "standardised (folded into the weights)",
                                         "class_weight": True}},
            "components": refs, "backbone_fingerprints": fps,
            "calibration": "temperature scaling fitted on val (minimise NLL)",
            "uncertain_band_rule": "calibrated logit within +-1 of the threshold's",
            "ood_rule": "99th percentile of val out-of-scope scores (whitened distance to the concatenated train "
                        "embeddings, 32 components)",
            "time_s": round(time.monotonic() - started, 1)}),
        limitations=list(LIMITATIONS),
    )
    return {"model": embedding_head_model(x_tr.shape[-1], head), "card": card, "ood": ood, "embeddings_npz": npz,
            "components": refs, "val_logits": z_va, "val_labels": y_va, "val_samples": s_va}
