"""Model integrity: tampered or unsafe bundles are refused, saves are atomic, old card formats load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import core.bundle as bundle_mod
from core.bundle import CARD_FILE, MODEL_FILE, OOD_FILE, BundleError, ModelCard, load_bundle, save_bundle
from tests.conftest import REPO
from tests.helpers import make_tiny_model


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _card(**kw) -> ModelCard:
    base = dict(name="tiny", version="2.0.0", architecture="mobilenetv2", input_size=32, threshold=0.3)
    base.update(kw)
    return ModelCard(**base)


@pytest.mark.parametrize("victim", [MODEL_FILE, OOD_FILE])
def test_modified_bundle_file_is_refused_naming_the_file(tiny_bundle, victim):
    folder = tiny_bundle()
    load_bundle(folder)  # intact: loads
    path = folder / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    message = str(info.value)
    assert victim in message and "does not match the model card" in message and "Refusing" in message


def test_missing_model_file_and_unlisted_model_hash_are_refused(tiny_bundle):
    folder = tiny_bundle()
    card = json.loads((folder / CARD_FILE).read_text())
    card["files"].pop(MODEL_FILE)
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="unverifiable"):
        load_bundle(folder)
    (folder / MODEL_FILE).unlink()
    card["files"][MODEL_FILE] = card["model_sha256"]
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="missing"):
        load_bundle(folder)


def test_cli_refuses_tampered_model_with_one_clear_line(tiny_bundle, tmp_path):
    folder = tiny_bundle()
    with open(folder / MODEL_FILE, "ab") as fh:
        fh.write(b"\0")
    photos = tmp_path / "photos"
    photos.mkdir()
    from tests.helpers import make_photo

    make_photo().save(photos / "a.jpg")
    proc = subprocess.run([sys.executable, "-m", "core.cli", "classify", str(photos), "--model", str(folder),
                           "--csv", str(tmp_path / "out.csv")], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 2
    assert "does not match the model card" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.csv").exists()


def test_lambda_layer_bundle_is_refused_by_safe_mode(tmp_path):
    import keras

    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="arbitrary_code")(inputs)  # arbitrary Python on load
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    logit = keras.layers.Dense(1, name="logit")(emb)
    model = keras.Model(inputs, {"logit": logit, "embedding": emb})
    folder = save_bundle(model, _card(), tmp_path / "evil")
    with pytest.raises(BundleError, match="cannot load model safely") as info:
        load_bundle(folder)  # the hashes match: only safe mode stands in the way
    assert MODEL_FILE in str(info.value)


class _FailingSave:
    """Wraps a model so save() writes half a file and then fails, like a full disk or a crash."""

    def __init__(self, model):
        self.model = model

    def save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")


def test_interrupted_model_save_leaves_previous_bundle_byte_identical(tiny_bundle, monkeypatch):
    folder = tiny_bundle()
    before = _snapshot(folder)
    model = make_tiny_model(32, seed=1)
    monkeypatch.setattr(model, "save", _FailingSave(model).save)
    with pytest.raises(OSError, match="No space"):
        save_bundle(model, _card(), folder)
    assert _snapshot(folder) == before
    assert load_bundle(folder).card.version == "0.0.1"
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary leftovers


def test_failure_while_swapping_in_the_new_bundle_keeps_a_loadable_current_bundle(tiny_bundle, monkeypatch):
    folder = tiny_bundle()
    before = _snapshot(folder)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if Path(src).name.startswith(f".{folder.name}.tmp-"):  # the step that puts the new bundle in place
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", replace)
    with pytest.raises(OSError):
        save_bundle(make_tiny_model(32, seed=1), _card(), folder)
    monkeypatch.setattr(bundle_mod.os, "replace", real_replace)
    assert calls, "save_bundle no longer swaps with os.replace; update this test"
    assert folder.is_dir() and _snapshot(folder) == before
    assert load_bundle(folder).card.version == "0.0.1"


def test_successful_save_replaces_bundle_and_verifies(tiny_bundle):
    folder = tiny_bundle()
    save_bundle(make_tiny_model(32, seed=1), _card(version="2.0.0"), folder)
    loaded = load_bundle(folder)
    assert loaded.card.version == "2.0.0" and loaded.card.files[MODEL_FILE] == loaded.card.model_sha256
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def _format0(folder: Path, sha: str) -> None:
    card = {"name": "legacy", "version": "0.1", "arch": "mobilenetv2", "input_size": 32, "sha256": sha,
            "decision_threshold": 0.42}
    (folder / CARD_FILE).write_text(json.dumps(card))


def test_format0_card_still_loads(tiny_bundle):
    folder = tiny_bundle(with_ood=False)
    sha = json.loads((folder / CARD_FILE).read_text())["model_sha256"]
    _format0(folder, sha)
    loaded = load_bundle(folder)
    card = loaded.card
    assert (card.name, card.architecture, card.threshold, card.model_sha256) == ("legacy", "mobilenetv2", 0.42, sha)
    assert card.files == {MODEL_FILE: sha} and card.format_version == bundle_mod.FORMAT_VERSION
    assert loaded.ood is None


def test_format0_card_with_wrong_hash_is_refused(tiny_bundle):
    folder = tiny_bundle(with_ood=False)
    _format0(folder, "0" * 64)
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(folder)


def test_migrate_card_maps_format0_fields_and_refuses_newer_formats():
    migrated = bundle_mod.migrate_card({"name": "x", "arch": "xception", "sha256": "ab", "decision_threshold": 0.6})
    assert migrated["architecture"] == "xception" and migrated["threshold"] == 0.6
    assert migrated["model_sha256"] == "ab" and migrated["files"] == {MODEL_FILE: "ab"}
    with pytest.raises(BundleError, match="newer"):
        bundle_mod.migrate_card({"format_version": bundle_mod.FORMAT_VERSION + 1})


def test_hand_edited_threshold_in_card_is_refused(tiny_bundle):
    folder = tiny_bundle()
    card_path = folder / CARD_FILE
    data = json.loads(card_path.read_text())
    data["threshold"] = 0.99
    card_path.write_text(json.dumps(data, indent=2))
    with pytest.raises(BundleError, match="edited after the bundle was saved"):
        load_bundle(folder)


def test_bundle_moved_aside_by_a_killed_save_is_recovered(tiny_bundle):
    folder = tiny_bundle("tiny")
    before = _snapshot(folder)
    os.replace(folder, folder.parent / f".{folder.name}.old-12345")  # state after a kill between the renames
    bundle = load_bundle("tiny", models_dir=folder.parent)
    assert bundle.card.name == "tiny" and _snapshot(folder) == before
