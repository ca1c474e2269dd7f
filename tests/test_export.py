"""Exported models (LiteRT, ONNX): written only when they agree with the Keras model; the export CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.bundle import load_bundle
from core.export import ExportError, check_agreement, check_inputs, export_model, load_exported


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
    import core.export as export

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
