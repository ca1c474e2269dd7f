"""The Keras model of a bundle that ships without `model.keras` (release 1.4.0 on), rebuilt when something needs it.

A bundle of release 1.4.0 on is its LiteRT backbone export, its numpy head (`head-<sha>.npz`) and its card: that
is what scores photos, and what the card's SHA-256 table and core/releases.py pin. The backbone is the frozen
ImageNet backbone cut at the card's feature layer, so the Keras model that training, fine-tuning, export and
TensorFlow Grad-CAM need is rebuilt from the local ImageNet weight file (never downloaded) and the verified head:
in-model scaling, backbone, global average pooling, signed square root, the head's Dense logit. The rebuilt
backbone must carry exactly the weights the card records (`training.backbone.fingerprint_sha256`), or nothing is
rebuilt. A combined bundle's Keras form is its head on the concatenated embedding (core.heads).

Imports TensorFlow; core.bundle calls it lazily, only when a Keras model is asked for.
"""

from __future__ import annotations

from pathlib import Path

from core.bundle import BundleError, ModelCard, runtime_info


def rebuild_keras_model(bundle_dir: str | Path, card: ModelCard, weights_dir: str | Path | None = None):
    """The bundle's end-to-end Keras model ({"logit", "embedding"} out), rebuilt from the ImageNet weights and its
    hash-verified numpy head; BundleError (one line) when it cannot be (no head, other weights, no TensorFlow)."""
    from core.heads import LinearHead, attach_head, embedding_head_model
    from core.tf_runtime import TensorFlowMissing, load_tensorflow

    bundle_dir = Path(bundle_dir)
    info = runtime_info(card)
    name = info.get("head")
    if not name or name not in card.files:
        raise BundleError(f"{bundle_dir}: no model.keras and no numpy head listed in its card; nothing to load")
    try:
        load_tensorflow()
    except TensorFlowMissing:
        raise BundleError(f"{bundle_dir}: rebuilding this model's Keras form (for training, export or "
                          "MPOX_TRIAGE_RUNTIME=keras) needs TensorFlow: pip install 'mpox-triage[train]'") from None
    head = LinearHead.load_npz(bundle_dir / name)
    components = card.extra.get("components") if isinstance(card.extra, dict) else None
    if components:
        dim = sum(int(c.get("dim") or 0) for c in components)
        if dim != len(head.w):
            raise BundleError(f"{bundle_dir}: its head reads {len(head.w)} features but its components give {dim}")
        return embedding_head_model(dim, head)
    return attach_head(_verified_classifier(bundle_dir, card, weights_dir), head)


def _verified_classifier(bundle_dir: Path, card: ModelCard, weights_dir):
    """The frozen ImageNet classifier graph the card's backbone came from, its weights checked by fingerprint."""
    from core.backbones import WeightsNotFoundError, build_backbone, build_classifier
    from core.features import weights_fingerprint

    backbone_rec = card.training.get("backbone") if isinstance(card.training, dict) else None
    backbone_rec = backbone_rec if isinstance(backbone_rec, dict) else {}
    want = backbone_rec.get("fingerprint_sha256")
    if not want:
        raise BundleError(f"{bundle_dir}: its card records no backbone fingerprint, so its Keras form cannot be "
                          "rebuilt and checked; use its LiteRT runtime")
    try:
        backbone = build_backbone(card.architecture, input_size=int(card.input_size), weights_dir=weights_dir,
                                  feature_layer=backbone_rec.get("feature_layer"))
    except WeightsNotFoundError as exc:
        raise BundleError(f"{bundle_dir}: rebuilding its Keras form needs the ImageNet weights: {exc}") from None
    got = weights_fingerprint(backbone)
    if got != want:
        raise BundleError(f"{bundle_dir}: the local ImageNet weights (fingerprint {got[:12]}) are not the ones this "
                          f"model was built on ({want[:12]}); its Keras form cannot be rebuilt from them")
    return build_classifier(card.architecture, backbone=backbone)
