"""Training end to end on a tiny generated dataset with a tiny backbone: bundle, inference, cancel, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.models.bundle import load_bundle
from core.learning.datasets import load_folder_dataset, split_dataset
from core.triage.inference import classify_paths
from core.progress import CancelToken, Cancelled
from core.learning.training import TrainConfig, save_trained, train_model

TINY = "tiny:32"


def _lesion_photo(mpox: bool, seed: int, size: int = 40) -> Image.Image:
    """Two visibly different classes under the same soft lighting: reddish skin with dark pocks vs smooth dark
    skin (both photos of skin to the scope check; flat grey-blue noise is not)."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 120, 110] if mpox else [130, 95, 80], dtype=np.float64)
    shade = 0.8 + 0.2 * np.arange(size) / size  # soft lighting, top to bottom
    img = np.ones((size, size, 3)) * base * shade[:, None, None] + rng.normal(0, 12, (size, size, 3))
    if mpox:
        yy, xx = np.mgrid[0:size, 0:size]
        for _ in range(4):
            cx, cy = rng.integers(4, size - 4, 2)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 9] = [60, 30, 30]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def lesion_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lesions")
    seed = 0
    for cls, prefix, mpox in (("Monkey_Pox", "M", True), ("chickenpox", "NM", False)):
        (root / cls).mkdir()
        for patient in range(12):
            for k in range(2):  # two photos per patient: the split must keep them together
                _lesion_photo(mpox, seed).save(root / cls / f"{prefix}{patient:02d}_{k + 1:02d}.png")
                seed += 1
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One feature cache for the module: later tests reuse the embeddings of earlier ones, as users do."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="module")
def split(lesion_folder):
    return split_dataset(load_folder_dataset(lesion_folder), "group", seed=0, fractions=(0.5, 0.25, 0.25))


def _config(cache: Path, **kw) -> TrainConfig:
    base = dict(arch="mobilenetv2", preset="quick", base_model=TINY, batch_size=32, n_bootstrap=50,
                views=["identity", "hflip", "aug#0"], cache_dir=str(cache), name="tiny-mpox",
                version="0.0.1", head_lr=2e-2, epochs=25)
    base.update(kw)
    return TrainConfig(**base)


def _digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_quick_training_saves_a_bundle_that_loads_and_classifies(split, tmp_path, cache_dir, tiny_bundle):
    parent = load_bundle(tiny_bundle("parent"))
    epochs = []
    result = train_model(split, _config(cache_dir), on_epoch=epochs.append, parent=parent.card)
    assert epochs and epochs == result.history and all(e.phase == "head" for e in epochs)
    assert result.val_metrics["roc_auc"] >= 0.9  # the classes are easy; a broken pipeline would be near 0.5
    card = result.card
    assert 0 < card.threshold < 1 and card.uncertain_band[0] < card.threshold < card.uncertain_band[1]
    assert card.temperature > 0 and card.ood_threshold is not None
    assert "sensitivity" in card.threshold_reason
    assert result.val_metrics["sensitivity"] >= 0.9
    assert card.training_data["counts"]["train"] == split.counts()["train"]
    assert card.training_data["split"]["protocol"] == "group"
    assert card.training["hyperparameters"]["head"]["views"] == ["identity", "hflip", "aug#0"]
    assert any("skin" in t.lower() for t in card.limitations) and any("cowpox" in t.lower() for t in card.limitations)
    assert card.parent == {"name": "parent", "version": parent.card.version, "sha256": parent.card.model_sha256}

    out = save_trained(result, tmp_path / "models" / "tiny-mpox")
    bundle = load_bundle(out)
    val = split.subset("val")
    records = classify_paths([s.path for s in val.samples], bundle)
    assert all(r.ok for r in records)
    # The saved end-to-end model reproduces the calibrated validation probabilities of training.
    p_saved = np.array([r.p_mpox for r in records])
    p_train = 1 / (1 + np.exp(-result.val_logits / card.temperature))
    np.testing.assert_allclose(p_saved, p_train, atol=1e-4)
    # Each photo gets the call its score gives, or no call when it is out of scope (core.records.decide).
    assert all(r.prediction == ("mpox" if r.p_mpox >= card.threshold else "not_mpox") for r in records
               if r.flag != "out_of_scope")
    assert all(r.prediction == "out_of_scope" for r in records if r.flag == "out_of_scope")
    assert sum(r.flag == "out_of_scope" for r in records) <= len(records) // 4


def test_feature_cache_is_reused_and_matches_the_model_input(split, tmp_path):
    from core.learning.features import FeatureExtractor
    from core.photos.preprocess import load_model_input

    fx = FeatureExtractor("mobilenetv2", base_model=TINY, cache_dir=tmp_path / "c")
    train = split.subset("train")
    first = fx.embed(train, ["identity", "aug#1"])
    fx.forward = lambda batch: pytest.fail("cached embeddings were recomputed")
    np.testing.assert_array_equal(fx.embed(train, ["identity", "aug#1"]), first)
    fresh = FeatureExtractor("mobilenetv2", base_model=TINY, cache_dir=tmp_path / "c2", use_cache=False)
    direct = fresh.forward(np.stack([load_model_input(s.path, 32) for s in train.samples[:3]]))
    np.testing.assert_allclose(first[:3, 0], direct, rtol=1e-5, atol=1e-5)
    assert not np.allclose(first[:, 0], first[:, 1])  # the augmented view really differs


def test_feature_layer_cuts_the_backbone_and_keys_the_cache(split, tmp_path):
    from core.learning.features import FeatureExtractor

    whole = FeatureExtractor("mobilenetv2", base_model=TINY, cache_dir=tmp_path / "c")
    cut = FeatureExtractor("mobilenetv2", base_model=TINY, cache_dir=tmp_path / "c", feature_layer="tiny_conv2")
    assert (whole.feature_layer, cut.feature_layer) == ("tiny_conv3", "tiny_conv2")
    # Same weights before the cut would share a cache entry if the layer were not part of its key.
    assert cut.cache_dir != whole.cache_dir
    train = split.subset("train")
    a, b = whole.embed(train, ["identity"]), cut.embed(train, ["identity"])
    assert a.shape[-1] == b.shape[-1] == 32 and not np.allclose(a, b)


def test_trained_bundle_records_its_feature_layer(split, tmp_path, cache_dir):
    result = train_model(split, _config(cache_dir, epochs=3, feature_layer="tiny_conv2"))
    backbone = result.card.training["backbone"]
    assert backbone["feature_layer"] == "tiny_conv2"
    out = save_trained(result, tmp_path / "cut")
    bundle = load_bundle(out)
    assert bundle.card.training["config"]["feature_layer"] == "tiny_conv2"
    # The saved model ends at the chosen layer: its embedding is that layer's pooled feature map.
    assert bundle.model.get_layer("embedding").input.shape[-1] == 32
    records = classify_paths([s.path for s in split.subset("test").samples], bundle)
    assert all(r.status == "ok" for r in records)


def test_transfer_estimate_scores_each_collection_with_a_head_trained_on_the_other(split, cache_dir):
    from dataclasses import replace

    from core.learning.datasets import Dataset

    two = Dataset([replace(s, source="siteA" if i % 2 else "siteB") for i, s in enumerate(split.samples)],
                  split.root, dict(split.split_info))
    result = train_model(two, _config(cache_dir, epochs=20))
    transfer = result.card.metrics["transfer"]
    assert set(transfer) == {"siteA -> siteB", "siteB -> siteA", "method"}
    for src, other in (("siteA", "siteB"), ("siteB", "siteA")):
        t = transfer[f"{src} -> {other}"]
        # Scored on the other site's train and val photos only: test is never used.
        assert t["n"] == sum(s.source == other and s.split in ("train", "val") for s in two.samples)
        assert t["roc_auc"] > 0.75  # the synthetic classes differ in colour and pocks at every site
    one_site = train_model(split, _config(cache_dir, epochs=3))
    assert "transfer" not in one_site.card.metrics


def test_study_preset_runs_both_phases(split, tmp_path, cache_dir):
    result = train_model(split, _config(cache_dir, preset="study", epochs=3, fine_tune_epochs=2, head_lr=1e-3))
    phases = [e.phase for e in result.history]
    assert phases[0] == "phase1" and "phase2" in phases
    ft = result.card.training["hyperparameters"]["fine_tune"]
    assert ft["optimizer"] == "RMSprop" and ft["lr"] == 1e-5 and ft["patience"] == 1
    assert ft["batchnorm"] == "inference mode"
    out = save_trained(result, tmp_path / "study")
    assert load_bundle(out).card.training["preset"] == "study"


def test_fine_tuning_batches_are_augmented_reproducibly_and_differ_by_epoch():
    from core.learning.training import _augmented_images

    x = np.stack([np.asarray(_lesion_photo(i % 2 == 0, i, size=32)) for i in range(10)])
    y = np.arange(10, dtype=np.float32)

    def epoch_batches(data):
        out = [data[i] for i in range(len(data))]
        data.on_epoch_end()
        return out

    a, b = _augmented_images(x, y, 4, seed=3, augment="augz"), _augmented_images(x, y, 4, seed=3, augment="augz")
    first_a, first_b = epoch_batches(a), epoch_batches(b)
    for (xa, ya), (xb, yb) in zip(first_a, first_b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert sorted(np.concatenate([yy for _, yy in first_a]).tolist()) == list(range(10))  # every image once
    second = epoch_batches(a)
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(first_a, second))  # re-augmented each epoch
    plain = _augmented_images(x, y, 4, seed=3, augment="none")
    xb0, yb0 = plain[0]
    np.testing.assert_array_equal(xb0, x[yb0.astype(int)])  # "none" passes the images through untouched


def test_fine_tuning_keeps_batchnorm_in_inference_mode():
    import keras

    from core.models.backbones import build_classifier
    from core.learning.features import build_tiny_backbone
    from core.learning.training import prepare_fine_tune

    backbone = build_tiny_backbone(32, seed=0)
    clf = build_classifier("mobilenetv2", backbone=backbone)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    before = np.asarray(clf(x, training=False)["embedding"])
    prepare_fine_tune(backbone, from_layer=2)
    # Training-mode forward passes must see the same features (moving statistics, not batch ones).
    np.testing.assert_allclose(np.asarray(clf(x, training=True)["embedding"]), before, rtol=1e-5, atol=1e-6)
    trainable = {w.path.split("/")[-2] for w in backbone.trainable_weights}
    assert trainable == {"tiny_conv2", "tiny_conv3"}
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in backbone.layers)


def test_cancel_mid_training_leaves_the_existing_bundle_byte_identical(split, cache_dir, tiny_bundle):
    existing = tiny_bundle("tiny-mpox")
    before = _digest_tree(existing.parent)
    token = CancelToken()

    def cancel_after_first_epoch(entry):
        token.cancel()

    with pytest.raises(Cancelled):
        result = train_model(split, _config(cache_dir), cancel=token, on_epoch=cancel_after_first_epoch)
        save_trained(result, existing)  # never reached
    assert _digest_tree(existing.parent) == before  # same files, same bytes, no temporary folders left


def test_cli_train_then_evaluate(lesion_folder, tmp_path, cache_dir, capsys):
    from core.cli import main

    out = tmp_path / "models" / "cli-tiny"
    metrics = tmp_path / "train.json"
    code = main(["train", str(lesion_folder), "--arch", "mobilenetv2", "--base-model", TINY, "--out", str(out),
                 "--views", "identity,hflip", "--epochs", "20", "--lr", "0.02", "--bootstrap", "20",
                 "--cache-dir", str(cache_dir), "--json", str(metrics), "--plots", str(tmp_path / "plots"),
                 "--session", str(tmp_path / "session"), "--quiet"])
    assert code == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["training_data"]["split"]["protocol"] == "group" and "test" in card["metrics"]
    from core.store.session import SessionStore

    with SessionStore.open(tmp_path / "session") as store:
        (retrain,) = store.audit("retrain")
    assert retrain["details"]["manifest_sha256"] == card["training_data"]["manifest_sha256"]
    assert retrain["details"]["split_seed"] == 0 and retrain["details"]["model_sha256"] == card["model_sha256"]
    assert (tmp_path / "plots" / "val" / "training_curves.png").is_file()
    assert json.loads(metrics.read_text())["val"]["n"] == card["metrics"]["val"]["n"]
    report = tmp_path / "eval.json"
    code = main(["evaluate", str(lesion_folder), "--model", str(out), "--json", str(report), "--bootstrap", "20",
                 "--plots", str(tmp_path / "eplots"), "--quiet"])
    assert code == 0
    data = json.loads(report.read_text())
    assert data["n_scored"] == 48 and len(data["predictions"]) == 48  # a folder without a split: every image
    assert data["n"] + data["no_call"]["out_of_scope"] == 48   # metrics over the called ones; no call counted apart
    assert data["model"]["sha256"] == card["model_sha256"]
    assert {"roc_auc", "ece", "ci95", "confusion", "per_fine_label"} <= set(data)
    assert (tmp_path / "eplots" / "reliability.png").is_file()
    assert "roc_auc" in capsys.readouterr().out


# --- training never writes over a bundle; unreadable images are reported (issue 12, holes 1 and 8) ---------
def test_train_result_scores_test_in_core_and_gives_its_bundle(split, cache_dir, tmp_path, monkeypatch):
    from core.models.bundle import USER_MODELS_ENV, BundleExistsError

    monkeypatch.setenv(USER_MODELS_ENV, str(tmp_path / "user-models"))
    result = train_model(split, _config(cache_dir, version="0.0.2"))
    n_test = len(split.subset("test"))
    # Test metrics come from core.learning.training (so the app's retrain gets them too); never used for choosing.
    assert result.test_metrics is not None and result.test_metrics["n_scored"] == n_test
    assert result.card.metrics["test"] == result.test_metrics and len(result.test_report["predictions"]) == n_test
    assert result.bundle_path is None
    path = save_trained(result)  # no folder given: a new one in the user's model folder
    assert path == tmp_path / "user-models" / "tiny-mpox-0.0.2" == result.bundle_path
    assert load_bundle(path).card.metrics["test"]["n_scored"] == n_test
    before = _digest_tree(path)
    with pytest.raises(BundleExistsError):
        save_trained(result)
    assert _digest_tree(path) == before
    no_test = train_model(split, _config(cache_dir, version="0.0.3", score_test=False))
    assert no_test.test_metrics is None and "test" not in no_test.card.metrics


def test_cli_train_writes_a_new_user_bundle_reports_unreadable_images_and_never_overwrites(
        lesion_folder, tmp_path, cache_dir, capsys, monkeypatch):
    import shutil

    from core.models.bundle import USER_MODELS_ENV
    from core.cli import main

    user = tmp_path / "user-models"
    monkeypatch.setenv(USER_MODELS_ENV, str(user))
    shipped = Path(__file__).resolve().parent.parent / "models"
    shipped_before = _digest_tree(shipped) if shipped.is_dir() else {}
    data = shutil.copytree(lesion_folder, tmp_path / "data")
    (data / "Monkey_Pox" / "M90_01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (data / "chickenpox" / "NM90_01.png").write_bytes(b"")
    common = [str(data), "--arch", "mobilenetv2", "--base-model", TINY, "--views", "identity", "--epochs", "10",
              "--lr", "0.02", "--bootstrap", "0", "--cache-dir", str(cache_dir), "--no-transfer", "--quiet"]
    assert main(["train", *common, "--version", "7.0.0"]) == 0
    err = capsys.readouterr().err
    out = user / "mobilenetv2-7.0.0"
    assert (out / "model_card.json").is_file() and str(out) in err
    assert "2 images could not be read and were skipped" in err
    assert "M90_01.png" in err and "NM90_01.png" in err
    assert (shipped_before == _digest_tree(shipped)) if shipped.is_dir() else True  # the install is untouched
    before = _digest_tree(out)

    # The same name and version again: refused before any training, nothing changed.
    assert main(["train", *common, "--version", "7.0.0"]) == 2
    assert "already exists" in capsys.readouterr().err and _digest_tree(out) == before
    # An existing --out without --force: refused too.
    assert main(["train", *common, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and _digest_tree(out) == before
    # A shipped release's name and version can never be trained.
    assert main(["train", *common, "--version", "1.1.0"]) == 2
    assert "shipped release" in capsys.readouterr().err

    # --force replaces it, and keeps the previous bundle whole (an attached .tflite included).
    (out / "model-0123456789ab.tflite").write_bytes(b"attached runtime")
    before = _digest_tree(out)
    assert main(["train", *common, "--out", str(out), "--force", "--version", "7.0.1"]) == 0
    err = capsys.readouterr().err
    (kept,) = [p for p in user.iterdir() if p.name.startswith("mobilenetv2-7.0.0.replaced-")]
    assert _digest_tree(kept) == before and str(kept) in err
    assert load_bundle(out).card.version == "7.0.1"
