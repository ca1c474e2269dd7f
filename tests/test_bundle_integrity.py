"""Model integrity: tampered or unsafe bundles are refused, saves are atomic, old card formats load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import core.models.bundle as bundle_mod
from core.models.bundle import CARD_FILE, MODEL_FILE, OOD_FILE, BundleError, ModelCard, load_bundle, save_bundle
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
        save_bundle(model, _card(), folder, replace=True)
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
        save_bundle(make_tiny_model(32, seed=1), _card(), folder, replace=True)
    monkeypatch.setattr(bundle_mod.os, "replace", real_replace)
    assert calls, "save_bundle no longer swaps with os.replace; update this test"
    assert folder.is_dir() and _snapshot(folder) == before
    assert load_bundle(folder).card.version == "0.0.1"


def test_save_never_writes_over_an_existing_bundle_unless_told(tiny_bundle):
    folder = tiny_bundle()
    (folder / "model-0123456789ab.tflite").write_bytes(b"an attached runtime")  # not deleted either way
    before = _snapshot(folder)
    with pytest.raises(bundle_mod.BundleExistsError, match="never written over"):
        save_bundle(make_tiny_model(32, seed=1), _card(version="2.0.0"), folder)
    assert _snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary leftovers


def test_explicit_replace_swaps_in_the_new_bundle_and_keeps_the_previous_one_whole(tiny_bundle):
    folder = tiny_bundle()
    (folder / "model-0123456789ab.tflite").write_bytes(b"an attached runtime")
    before = _snapshot(folder)
    save_bundle(make_tiny_model(32, seed=1), _card(version="2.0.0"), folder, replace=True)
    loaded = load_bundle(folder)
    assert loaded.card.version == "2.0.0" and loaded.card.files[MODEL_FILE] == loaded.card.model_sha256
    (kept,) = [p for p in folder.parent.iterdir() if p != folder]
    assert kept.name.startswith(f"{folder.name}.replaced-") and _snapshot(kept) == before
    assert load_bundle(kept).card.version == "0.0.1"


def test_save_refuses_a_file_or_a_non_bundle_folder_even_with_replace(tmp_path):
    (tmp_path / "afile").write_text("notes")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"jpeg")
    for target in ("afile", "photos"):
        with pytest.raises(bundle_mod.BundleExistsError):
            save_bundle(make_tiny_model(32), _card(), tmp_path / target, replace=True)
    assert (tmp_path / "afile").read_text() == "notes" and (tmp_path / "photos" / "a.jpg").read_bytes() == b"jpeg"


def _format0(folder: Path, sha: str) -> None:
    card = {"name": "legacy", "version": "0.1", "arch": "mobilenetv2", "input_size": 32, "sha256": sha,
            "decision_threshold": 0.42}
    (folder / CARD_FILE).write_text(json.dumps(card))


def test_format0_card_is_read_but_refused_for_lack_of_a_digest(tiny_bundle):
    # Format-0 cards carried no card digest: an edited threshold could not be noticed (issue 12, hole 2).
    folder = tiny_bundle(with_ood=False)
    sha = json.loads((folder / CARD_FILE).read_text())["model_sha256"]
    _format0(folder, sha)
    card = bundle_mod.read_card(folder)
    assert (card.name, card.architecture, card.threshold, card.model_sha256) == ("legacy", "mobilenetv2", 0.42, sha)
    assert card.files == {MODEL_FILE: sha} and card.format_version == bundle_mod.FORMAT_VERSION
    with pytest.raises(BundleError, match="no digest"):
        load_bundle(folder)


@pytest.mark.parametrize("how", ["blank", "missing"])
def test_card_without_its_digest_is_refused(tiny_bundle, how):
    folder = tiny_bundle()
    data = json.loads((folder / CARD_FILE).read_text())
    data["threshold"] = 0.99  # the edit the digest would have caught
    if how == "blank":
        data["card_sha256"] = ""
    else:
        data.pop("card_sha256")
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2))
    with pytest.raises(BundleError, match="no digest") as info:
        load_bundle(folder)
    assert "\n" not in str(info.value)


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


def _edit_and_reseal(folder: Path, **changes) -> None:
    """Change card fields and recompute the card's own digest, as anyone with write access could."""
    data = json.loads((folder / CARD_FILE).read_text())
    data.update(changes)
    data["card_sha256"] = ModelCard.from_dict(data).content_digest()
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize("field,value", [
    ("input_size", -5), ("input_size", 0), ("input_size", 100_000), ("input_size", 32.5), ("input_size", "32"),
    ("threshold", 1.5), ("threshold", -0.1), ("threshold", float("nan")), ("threshold", "0.5"),
    ("temperature", "abc"), ("temperature", 0), ("temperature", -1.0), ("temperature", float("inf")),
    ("uncertain_band", [0.7, 0.3]), ("uncertain_band", [0.2]), ("uncertain_band", "wide"),
    ("ood_threshold", "high"), ("class_names", ["only_one"]), ("name", ""), ("version", 3),
    ("files", {"../outside.bin": "0" * 64}), ("files", []), ("metrics", "good"), ("parent", "someone"),
])
def test_malformed_card_field_is_refused_at_load_naming_the_field(tiny_bundle, field, value):
    folder = tiny_bundle()
    _edit_and_reseal(folder, **{field: value})
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    message = str(info.value)
    assert repr(field) in message and "model card field" in message and "\n" not in message


def test_malformed_cards_are_left_out_of_the_model_list(tiny_bundle):
    good, bad = tiny_bundle("good"), tiny_bundle("bad")
    _edit_and_reseal(bad, input_size=-1)
    assert [c.name for c in bundle_mod.list_bundles(good.parent)] == ["good"]


def test_unlisted_loaded_file_is_refused(tiny_bundle):
    folder = tiny_bundle(with_ood=False)
    from tests.helpers import make_tiny_bundle

    other = make_tiny_bundle(folder.parent / "other")
    (folder / OOD_FILE).write_bytes((other / OOD_FILE).read_bytes())
    with pytest.raises(BundleError, match="not listed in the model card"):
        load_bundle(folder)


def test_user_model_folder_rule(monkeypatch, tmp_path):
    monkeypatch.setenv(bundle_mod.USER_MODELS_ENV, str(tmp_path / "mine"))
    assert bundle_mod.user_models_dir() == tmp_path / "mine"
    assert bundle_mod.new_bundle_dir("my model", "2026.12.01-1500") == tmp_path / "mine" / "my-model-2026.12.01-1500"
    monkeypatch.delenv(bundle_mod.USER_MODELS_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert bundle_mod.user_models_dir() == tmp_path / "xdg" / "mpox-triage" / "models"
    assert bundle_mod.user_models_dir() != bundle_mod.default_models_dir()


def test_bundles_in_the_user_folder_are_found_by_name_and_listed(tiny_bundle, monkeypatch, tmp_path):
    folder = tiny_bundle("mine-0.0.1")
    monkeypatch.setenv(bundle_mod.MODELS_ENV, str(tmp_path / "shipped"))
    monkeypatch.setenv(bundle_mod.USER_MODELS_ENV, str(folder.parent))
    assert bundle_mod.resolve_bundle_dir("mine-0.0.1") == folder
    (folder.parent / ".mine.tmp-123").mkdir()  # a save in progress is not a model
    assert [p for p, _ in bundle_mod.scan_bundles()] == [folder]


def test_write_card_is_the_one_sealing_rule(tiny_bundle):
    folder = tiny_bundle()
    card = bundle_mod.read_card(folder)
    (folder / "extra.bin").write_bytes(b"a new file the card lists")
    card.files["extra.bin"] = ""  # digest filled in from disk
    card.threshold = 0.25
    sealed = bundle_mod.write_card(folder, card)
    assert sealed.files["extra.bin"] == bundle_mod.sha256_file(folder / "extra.bin")
    loaded = load_bundle(folder).card
    assert loaded.threshold == 0.25 and loaded.card_sha256 == loaded.content_digest()
    (folder / "extra.bin").write_bytes(b"changed")  # every listed file is verified, whatever its name
    with pytest.raises(BundleError, match="extra.bin"):
        load_bundle(folder)


def test_cli_refuses_a_malformed_card_field_before_scoring(tiny_bundle, tmp_path):
    folder = tiny_bundle()
    _edit_and_reseal(folder, input_size=-32)  # failed mid-run in OpenCV with a traceback
    photos = tmp_path / "photos"
    photos.mkdir()
    from tests.helpers import make_photo

    make_photo().save(photos / "a.jpg")
    proc = subprocess.run([sys.executable, "-m", "core.cli", "classify", str(photos), "--model", str(folder),
                           "--csv", str(tmp_path / "out.csv")], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "'input_size'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.csv").exists()


def test_extra_files_are_saved_listed_and_verified(tmp_path):
    src = tmp_path / "embeddings.npz"
    src.write_bytes(b"reference embeddings")
    folder = save_bundle(make_tiny_model(32), _card(), tmp_path / "models" / "with-extra",
                         extra_files={"embeddings.npz": src})
    card = load_bundle(folder).card
    assert card.files["embeddings.npz"] == bundle_mod.sha256_file(src)
    (folder / "embeddings.npz").write_bytes(b"swapped")
    with pytest.raises(BundleError, match="embeddings.npz"):
        load_bundle(folder)
