"""Bundles without model.keras (release 1.4.0 on): the LiteRT backbone export, the numpy head and the card are the
model; every file is verified; the Keras form is rebuilt from the ImageNet weights and the head, only on demand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.models.bundle import CARD_FILE, MODEL_FILE, BundleError, ModelCard, load_bundle, read_card, runtime_info, save_bundle
from tests.conftest import REPO

SHIPPED = REPO / "models"


def light_copy(tmp_path: Path, name: str = "mobilenetv2") -> Path:
    """A bundle of the 1.4.0 form made from the shipped one's backbone export and head, under a local name."""
    src = SHIPPED / name
    if not (src / CARD_FILE).is_file():
        pytest.skip(f"no shipped bundle at {src}")
    card = read_card(src)
    info = runtime_info(card)
    if info.get("kind") != "backbone":
        pytest.skip(f"{card.display_name} has no LiteRT backbone export")
    card.name, card.version, card.parent = f"{name}-light", "0.1.0", None
    files = {info["file"]: src / info["file"], info["head"]: src / info["head"]}
    card.extra = {**card.extra, "runtime": {**info, "model_sha256": info["head_sha256"]}}
    return save_bundle(None, card, tmp_path / "models" / card.name, extra_files=files)


def test_a_bundle_without_model_keras_is_identified_by_its_head_and_pins_its_backbone_in_the_card(tmp_path):
    folder = light_copy(tmp_path)
    card = read_card(folder)
    info = runtime_info(card)
    assert MODEL_FILE not in card.files and not (folder / MODEL_FILE).exists()
    assert card.model_sha256 == card.files[info["head"]] == info["model_sha256"]
    assert card.files[info["file"]] == info["sha256"]  # the backbone's digest is in the sealed card
    bundle = load_bundle(folder)
    assert bundle.runtime is not None and bundle._model is None


@pytest.mark.parametrize("part", ["file", "head"])
def test_a_changed_backbone_or_head_of_a_bundle_without_model_keras_is_refused(tmp_path, part):
    folder = light_copy(tmp_path)
    victim = folder / runtime_info(read_card(folder))[part]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the model card") as info:
        load_bundle(folder)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_the_keras_form_is_rebuilt_from_the_imagenet_weights_and_agrees_with_litert(tmp_path, shared_weights):
    from core.photos.preprocess import load_model_input
    from tests.helpers import make_photo

    folder = light_copy(tmp_path)
    photos = []
    for i in range(4):
        path = tmp_path / f"p{i}.jpg"
        make_photo((300, 240), seed=i).save(path)
        photos.append(load_model_input(path, 224))
    batch = np.stack(photos)
    fast, rebuilt = load_bundle(folder), load_bundle(folder, runtime="keras")
    assert rebuilt.runtime is None and rebuilt.model is not None
    (lf, ef), (lk, ek) = fast.forward(batch), rebuilt.forward(batch)
    assert np.max(np.abs(fast.calibrate(lf) - rebuilt.calibrate(lk))) <= 1e-4
    assert np.max(np.abs(ef - ek)) <= 1e-2


@pytest.mark.slow
def test_the_keras_form_is_not_rebuilt_from_weights_other_than_the_recorded_ones(tmp_path, shared_weights):
    folder = light_copy(tmp_path)
    data = json.loads((folder / CARD_FILE).read_text())
    data["training"]["backbone"]["fingerprint_sha256"] = "0" * 64
    data["card_sha256"] = ModelCard.from_dict(data).content_digest()
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2))
    with pytest.raises(BundleError, match="not the ones this model was built on") as info:
        load_bundle(folder, runtime="keras")
    assert "\n" not in str(info.value)


def test_shipped_bundles_from_release_1_4_0_carry_no_keras_model(tmp_path):
    from core.models.releases import find_release

    bundles = [p for p in sorted(SHIPPED.iterdir()) if (p / CARD_FILE).is_file()] if SHIPPED.is_dir() else []
    newer = [(p, read_card(p)) for p in bundles]
    newer = [(p, c) for p, c in newer if tuple(int(v) for v in c.version.split(".")[:2]) >= (1, 4)]
    if not newer:
        pytest.skip("no shipped bundle of release 1.4.0 or later")
    for folder, card in newer:
        info = runtime_info(card)
        assert MODEL_FILE not in card.files and not (folder / MODEL_FILE).exists(), folder
        assert card.model_sha256 == card.files[info["head"]], folder
        release = find_release(card.name, card.version)
        assert release is not None and release.model_sha256 == card.model_sha256
        if info.get("kind") == "backbone":
            assert card.files[info["file"]] == info["sha256"]
    copy = shutil.copytree(newer[0][0], tmp_path / newer[0][0].name)
    (copy / MODEL_FILE).write_bytes(b"not listed")  # a file the loader would open, not in the card: refused
    with pytest.raises(BundleError, match="not listed in the model card"):
        load_bundle(copy)


def test_attaching_a_runtime_to_a_bundle_without_model_keras_is_refused_and_changes_nothing(tmp_path):
    from core.models.export import ExportError, attach_light_runtime

    folder = light_copy(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ExportError, match="its LiteRT runtime is the model") as info:
        attach_light_runtime(folder)
    assert "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
