"""Shipped releases are pinned in core/models/releases.py: impostors are refused, everything else is a local model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import core.models.bundle as bundle_mod
from core.models import releases
from core.models.bundle import CARD_FILE, BundleError, ModelCard, load_bundle, read_card, verify_bundle
from tests.conftest import REPO

SHIPPED = REPO / "models"


def _shipped_bundles() -> list[Path]:
    return sorted(p for p in SHIPPED.iterdir() if (p / CARD_FILE).is_file()) if SHIPPED.is_dir() else []


def test_every_bundle_in_models_is_a_listed_release_and_verifies():
    bundles = _shipped_bundles()
    if not bundles:
        pytest.skip(f"no bundles in {SHIPPED}")
    for folder in bundles:
        card = verify_bundle(folder)  # hashes every file the card lists
        release = releases.find_release(card.name, card.version)
        assert release is not None, (
            f"{folder} ({card.name} {card.version}) is not in core/models/releases.py RELEASES; add:\n"
            + releases.release_line(card))
        assert card.model_sha256 == release.model_sha256 and card.card_sha256 in release.card_sha256
        assert bundle_mod.bundle_origin(card) == "shipped" and releases.origin_text(card) == "shipped release"


def test_release_list_is_well_formed():
    keys = [(r.name, r.version) for r in releases.RELEASES]
    assert len(keys) == len(set(keys))
    for r in releases.RELEASES:
        assert len(r.model_sha256) == 64 and r.card_sha256 and all(len(d) == 64 for d in r.card_sha256)


def _impostor(folder: Path, name: str, version: str) -> None:
    data = json.loads((folder / CARD_FILE).read_text())
    data.update(name=name, version=version, threshold=0.99)
    data["card_sha256"] = ModelCard.from_dict(data).content_digest()  # a consistent, re-sealed card
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2))


def test_bundle_claiming_a_shipped_name_and_version_is_refused(tiny_bundle):
    folder = tiny_bundle()
    _impostor(folder, "mobilenetv2", "1.1.0")
    with pytest.raises(BundleError, match="claims to be the shipped model mobilenetv2 1.1.0") as info:
        load_bundle(folder)
    assert "\n" not in str(info.value)


def test_edited_and_resealed_shipped_card_is_refused(tmp_path):
    src = SHIPPED / "mobilenetv2"
    if not (src / CARD_FILE).is_file():
        pytest.skip(f"no shipped bundle at {src}")
    folder = shutil.copytree(src, tmp_path / "mobilenetv2")
    data = json.loads((folder / CARD_FILE).read_text())
    data["threshold"] = 0.9  # fewer mpox calls, and a digest anyone can recompute
    data["card_sha256"] = ModelCard.from_dict(data).content_digest()
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2))
    with pytest.raises(BundleError, match="claims to be the shipped model"):
        verify_bundle(folder)


def test_local_bundle_loads_as_local_with_its_parent(tiny_bundle):
    card = read_card(tiny_bundle())
    assert releases.bundle_origin(card) == "local" and releases.origin_text(card) == "local model"
    card.parent = {"name": "mobilenetv2", "version": "1.1.0", "sha256": "ab" * 32}
    assert releases.bundle_parent(card) == "mobilenetv2 1.1.0"
    assert releases.origin_text(card) == "local model (parent mobilenetv2 1.1.0)"
    assert releases.bundle_origin(card.to_dict()) == "local"  # dicts (session rows, JSON) work too


def test_a_shipped_release_is_never_rewritten(tmp_path, tiny_bundle):
    src = SHIPPED / "xception"
    if not (src / CARD_FILE).is_file():
        pytest.skip(f"no shipped bundle at {src}")
    folder = shutil.copytree(src, tmp_path / "xception")
    card = read_card(folder)
    card.extra["note"] = "changed"
    with pytest.raises(BundleError, match="shipped release"):
        bundle_mod.write_card(folder, card)
    assert verify_bundle(folder).card_sha256 == read_card(src).card_sha256
    from tests.helpers import make_tiny_model

    with pytest.raises(BundleError, match="never replaced"):
        bundle_mod.save_bundle(make_tiny_model(32), ModelCard(name="x", version="9", architecture="mobilenetv2",
                                                             input_size=32), folder, replace=True)
