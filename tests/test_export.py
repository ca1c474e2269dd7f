"""Exported models (LiteRT, ONNX): written only when they agree with the Keras model; the export CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.models.bundle import load_bundle
from core.models.export import ExportError, check_agreement, check_inputs, export_model, load_exported


def test_tflite_export_agrees_with_keras_on_generated_images(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle())
    out = tmp_path / "tiny.tflite"
    result = export_model(bundle, "tflite", out)
    assert out.is_file() and result["bytes"] == out.stat().st_size
    assert result["agreement"]["max_abs_diff_p"] <= 1e-4
    # Independently of export_model's own check: the file gives the Keras probabilities for new inputs.
    x = np.random.default_rng(7).integers(0, 256, size=(5, 32, 32, 3)).astype(np.uint8)
    logits, emb = load_exported(out)(x)
    keras_logits, keras_emb = bundle.forward(x)
    np.testing.assert_allclose(bundle.calibrate(logits), bundle.calibrate(keras_logits), atol=1e-4)
    assert emb.shape == keras_emb.shape
    sidecar = json.loads((tmp_path / "tiny.tflite.json").read_text())
    assert sidecar["model_sha256"] == bundle.card.model_sha256 and sidecar["threshold"] == bundle.card.threshold


def test_agreement_check_uses_images_from_a_folder(tiny_bundle, image_folder, tmp_path):
    bundle = load_bundle(tiny_bundle())
    images, source = check_inputs(image_folder(2), bundle.input_size)
    assert images.shape == (4, 32, 32, 3) and "images in" in source
    result = export_model(bundle, "tflite", tmp_path / "m.tflite", check_images=image_folder(2))
    assert result["agreement"]["images"] == 4


def test_agreement_check_refuses_a_different_model(tiny_bundle, tmp_path):
    right = load_bundle(tiny_bundle("right", seed=0))
    wrong = load_bundle(tiny_bundle("wrong", seed=1))
    wrong_file = tmp_path / "wrong.tflite"
    export_model(wrong, "tflite", wrong_file)
    images, _ = check_inputs(None, 32)
    with pytest.raises(ExportError, match="disagrees with the Keras model"):
        check_agreement(right, load_exported(wrong_file), images)


def test_export_leaves_no_file_when_the_converted_model_disagrees(tiny_bundle, tmp_path, monkeypatch):
    import core.models.export as export

    right = load_bundle(tiny_bundle("right", seed=0))
    wrong = load_bundle(tiny_bundle("wrong", seed=1))
    real_convert = export._convert
    # A converter that silently produces another model's weights: the check must catch it.
    monkeypatch.setattr(export, "_convert", lambda model, fmt, path: real_convert(wrong.model, fmt, path))
    out = tmp_path / "m.tflite"
    with pytest.raises(ExportError, match="disagrees"):
        export_model(right, "tflite", out)
    assert not out.exists() and list(tmp_path.glob("*.tflite")) == []


def test_agreement_check_refuses_non_finite_outputs(tiny_bundle):
    bundle = load_bundle(tiny_bundle())
    images, _ = check_inputs(None, 32)

    def nan_runner(batch):
        return np.full(len(batch), np.nan), np.zeros((len(batch), 16), np.float32)

    with pytest.raises(ExportError, match="non-finite"):
        check_agreement(bundle, nan_runner, images)


def test_onnx_export_agrees_when_converter_installed(tiny_bundle, tmp_path):
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx (optional)")
    pytest.importorskip("onnxruntime", reason="running ONNX needs onnxruntime (optional)")
    bundle = load_bundle(tiny_bundle())
    result = export_model(bundle, "onnx", tmp_path / "tiny.onnx")
    assert result["agreement"]["max_abs_diff_p"] <= 1e-4


def test_unknown_format_and_bad_destination_are_user_errors(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle())
    with pytest.raises(ExportError, match="Unknown export format"):
        export_model(bundle, "coreml", tmp_path / "m.mlmodel")
    with pytest.raises(ExportError, match="does not exist"):
        export_model(bundle, "tflite", tmp_path / "missing" / "m.tflite")


def test_cli_export_writes_a_checked_tflite(tiny_bundle, tmp_path):
    bundle_dir = tiny_bundle()
    out = tmp_path / "phone.tflite"
    proc = subprocess.run([sys.executable, "-m", "core.cli", "export", "--model", str(bundle_dir), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "max |dp|" in proc.stderr
    assert json.loads((tmp_path / "phone.tflite.json").read_text())["format"] == "tflite"


def test_cli_export_reports_user_errors(tiny_bundle, tmp_path):
    bundle_dir = tiny_bundle()
    proc = subprocess.run([sys.executable, "-m", "core.cli", "export", "--model", str(bundle_dir),
                           str(tmp_path / "model.bin")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--format" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "core.cli", "export", "--model", str(tmp_path / "nope"),
                           str(tmp_path / "m.tflite")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "No model bundle" in proc.stderr


def _attach(bundle_dir, folder):
    from core.models.export import attach_runtime

    return attach_runtime(bundle_dir, check_images=folder)


def test_attached_runtime_scores_like_keras_without_loading_keras(tiny_bundle, image_folder):
    from core.photos.images import discover_images
    from core.triage.inference import classify_paths

    bundle_dir = tiny_bundle()
    folder = image_folder(3)
    result = _attach(bundle_dir, folder)
    assert result["agreement"]["max_abs_diff_p"] <= 1e-4
    fast = load_bundle(bundle_dir)
    assert fast.runtime is not None and fast.runtime_name == "litert"
    assert fast._model is None  # the Keras model is not loaded until something needs it
    reference = load_bundle(bundle_dir, runtime="keras")
    assert reference.runtime is None
    paths = discover_images(folder)
    got = [r.p_mpox for r in classify_paths(paths, fast)]
    want = [r.p_mpox for r in classify_paths(paths, reference)]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert fast.model is not None  # loaded on demand (Grad-CAM, retraining)


def test_tampered_attached_runtime_is_refused(tiny_bundle, image_folder):
    from core.models.bundle import BundleError

    bundle_dir = tiny_bundle()
    result = _attach(bundle_dir, image_folder(1))
    with open(result["path"], "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match="does not match the model card"):
        load_bundle(bundle_dir)


def test_runtime_of_another_model_or_forced_keras_falls_back(tiny_bundle, image_folder, monkeypatch):
    bundle_dir = tiny_bundle()
    _attach(bundle_dir, image_folder(1))
    monkeypatch.setenv("MPOX_TRIAGE_RUNTIME", "keras")
    assert load_bundle(bundle_dir).runtime is None
    monkeypatch.delenv("MPOX_TRIAGE_RUNTIME")
    from core.models.bundle import read_card

    card = read_card(bundle_dir)
    card.extra["runtime"]["model_sha256"] = "0" * 64  # recorded for a different model.keras
    card.card_sha256 = card.content_digest()
    (bundle_dir / "model_card.json").write_text(json.dumps(card.to_dict()))
    bundle = load_bundle(bundle_dir)
    assert bundle.runtime is None and bundle._model is not None


def test_reattaching_replaces_the_runtime_file(tiny_bundle, image_folder):
    bundle_dir = tiny_bundle()
    first = _attach(bundle_dir, image_folder(1))
    second = _attach(bundle_dir, None)
    assert first["path"] == second["path"]  # same content, same name
    assert len(list(bundle_dir.glob("*.tflite"))) == 1 and load_bundle(bundle_dir).runtime is not None


def test_cli_export_attach(tiny_bundle, image_folder):
    bundle_dir = tiny_bundle()
    proc = subprocess.run([sys.executable, "-m", "core.cli", "export", "--model", str(bundle_dir), "--attach",
                           "--check-images", str(image_folder(1))], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Attached" in proc.stderr and load_bundle(bundle_dir).runtime is not None


def _real_photos(shared_data, split: str, n: int) -> list:
    import csv

    with open(shared_data / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == split]
    return [shared_data / r["path"] for r in rows[:n]]


@pytest.mark.shared_data
def test_tflite_agreement_check_on_real_photos(shared_data, tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle())
    result = export_model(bundle, "tflite", tmp_path / "m.tflite", check_images=_real_photos(shared_data, "test", 24))
    assert result["agreement"]["images"] == 24 and result["agreement"]["max_abs_diff_p"] <= 1e-4


@pytest.mark.shared_data
@pytest.mark.slow
def test_shipped_mobilenetv2_runs_on_litert_only_after_agreeing_on_real_photos(shared_data, tmp_path):
    """The runtime path for the real model: attach on test-split photos, then score other photos alike."""
    import shutil

    from core.models.bundle import default_models_dir
    from core.models.export import attach_runtime
    from core.triage.inference import classify_paths

    shipped = default_models_dir() / "mobilenetv2"
    if not (shipped / "model_card.json").is_file():
        pytest.skip(f"no shipped bundle at {shipped}")
    from core.models.bundle import MODEL_FILE, load_ood, read_card, save_bundle, write_card

    card = read_card(shipped)
    card.version += "-local-copy"  # a shipped release is never rewritten (core.models.releases): a local copy is
    if MODEL_FILE in card.files:
        bundle_dir = shutil.copytree(shipped, tmp_path / "mobilenetv2")  # never modify the shipped bundle
        write_card(bundle_dir, card)
    else:  # release 1.4.0 on: no model.keras; a local copy with the Keras form rebuilt from the ImageNet weights
        model = load_bundle(shipped, runtime="keras").model
        card.extra = {k: v for k, v in card.extra.items() if k != "runtime"}
        bundle_dir = save_bundle(model, card, tmp_path / "mobilenetv2", ood=load_ood(shipped))
    photos = _real_photos(shared_data, "test", 48)
    result = attach_runtime(bundle_dir, check_images=photos[:32])
    assert result["agreement"]["max_abs_diff_p"] <= 1e-4
    fast, reference = load_bundle(bundle_dir), load_bundle(bundle_dir, runtime="keras")
    assert fast.runtime is not None
    got = [r.p_mpox for r in classify_paths(photos[32:], fast)]
    want = [r.p_mpox for r in classify_paths(photos[32:], reference)]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_attaching_to_a_shipped_release_is_refused_and_changes_nothing(tmp_path):
    import shutil

    from core.models.bundle import BundleError, default_models_dir
    from core.models.export import attach_runtime

    shipped = default_models_dir() / "xception"
    if not (shipped / "model_card.json").is_file():
        pytest.skip(f"no shipped bundle at {shipped}")
    bundle_dir = shutil.copytree(shipped, tmp_path / "xception")
    before = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    with pytest.raises(BundleError, match="shipped release"):
        attach_runtime(bundle_dir)
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == before


def test_runtimes_live_below_bundle_and_export():
    import ast
    from pathlib import Path

    import core.models.runtimes as runtimes

    tree = ast.parse(Path(runtimes.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {"core.models.bundle", "core.models.export"} & imported
    bundle_src = Path(runtimes.__file__).with_name("bundle.py").read_text()
    assert "core.models.export" not in bundle_src.replace("core.models.export.attach_runtime", "")
    export_src = Path(runtimes.__file__).with_name("export.py").read_text()
    assert "content_digest" not in export_src and "card_sha256" not in export_src  # sealed by write_card only
