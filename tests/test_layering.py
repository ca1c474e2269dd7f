"""Layering: core/ is the Qt-free engine (napari/Orange-style), and inference never needs training code.

A classify run (and Grad-CAM) on bundles with LiteRT runtimes imports no TensorFlow, no Keras and no
training module: checked in a fresh process through `sys.modules`.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"
REPO = CORE.parent
QT_MODULES = {"PySide6", "PyQt5", "PyQt6", "shiboken6", "qtpy"}
# Modules that train, or that pull TensorFlow/Keras in: a run that only scores photos never imports them.
TRAINING_MODULES = ("core.training", "core.features", "core.backbones", "core.augment", "core.scale.distribute")
HEAVY = ("tensorflow", "keras", "tf_keras")
# Libraries no step of a classify run uses (the shift test is numpy only): each costs start-up time.
UNUSED_BY_CLASSIFY = ("scipy.stats", "sklearn", "pandas")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_core_never_imports_qt():
    offenders = [f"{path.name}: {n}" for path in CORE.rglob("*.py") for n in _imports(path)
                 if n.split(".")[0] in QT_MODULES]
    assert offenders == []


def test_runtime_layer_never_imports_training_code_even_lazily():
    """The modules a classify run loads name no training module anywhere (bundle -> combined -> training
    was a circle; bundle kinds now load through core.runtimes' loader registry)."""
    runtime_layer = ["bundle.py", "runtimes.py", "combined.py", "inference.py", "explain.py"]
    offenders = [f"{name}: {n}" for name in runtime_layer for n in _imports(CORE / name)
                 if n in TRAINING_MODULES or n.split(".")[0] in HEAVY]
    assert offenders == []


def test_nothing_asks_keras_to_download_weights():
    hits = []
    for folder in ("core", "desktop_app"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "weights=\"imagenet\"" in text or "weights='imagenet'" in text:
                hits.append(str(path))
    assert hits == []


PROBE = """
import json, sys
from core.cli import main
rc = main(sys.argv[1:])
unused = sorted(m for m in sys.modules if m in {unused!r} or m.split(".")[0] in {unused!r})
from core.bundle import load_bundle
from core.explain import gradcam
from core.images import load_rgb
import glob, os
bundle = load_bundle("combined")
photo = sorted(glob.glob(os.path.join(sys.argv[2], "**", "*.jpg"), recursive=True))[0]
cam = gradcam(bundle, load_rgb(photo))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r} or m in {training!r})
print(json.dumps({{"rc": rc, "heavy": heavy, "unused": unused, "cam": list(cam.shape)}}))
"""


def _reference_embeddings(bundle_dir: Path, photos: Path) -> None:
    """An embeddings.npz for a fixture bundle (its own embeddings of the photos, two collections), so that a
    classify run performs the shift test."""
    import numpy as np

    from core.bundle import load_bundle
    from core.images import discover_images
    from core.inference import InferenceEngine

    engine = InferenceEngine(load_bundle(bundle_dir))
    list(engine.run(discover_images(photos)))
    emb = np.stack(engine.embeddings).astype(np.float16)
    n = len(emb)
    np.savez_compressed(bundle_dir / "embeddings.npz", embedding=emb, label=np.zeros(n, np.int8),
                        source=np.array(["A", "B"] * (n // 2) + ["A"] * (n % 2)), split=np.array(["train"] * n))


@pytest.mark.slow
def test_a_classify_run_imports_no_tensorflow_keras_or_training_code(tmp_path):
    """Three models (combined and its two components) classified, then one Grad-CAM, in a fresh process. The
    classify run performs the components' shift tests (>= 30 photos, bundles with embeddings.npz) and imports
    neither scipy.stats, scikit-learn nor pandas."""
    from tests.helpers import make_image_folder, make_light_combined

    models = tmp_path / "models"
    photos = make_image_folder(tmp_path / "photos", n_per_class=18)
    for folder in make_light_combined(models, photos):
        if not (folder / "embeddings.npz").exists():  # the combined fixture carries its own (in its card)
            _reference_embeddings(folder, photos)
    env = {**os.environ, "MPOX_TRIAGE_MODELS_DIR": str(models), "PYTHONPATH": str(REPO)}
    code = PROBE.format(heavy=set(HEAVY), training=set(TRAINING_MODULES), unused=set(UNUSED_BY_CLASSIFY))
    summary = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-c", code, "classify", str(photos), "--model", "combined",
                           "--model", "alpha", "--model", "beta", "--csv", str(tmp_path / "out.csv"),
                           "--summary", str(summary)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0 and got["heavy"] == [], got
    assert got["unused"] == [], got
    assert got["cam"][0] > 0
    # The components ran their shift test (a p-value on their line; the combined fixture's embeddings.npz is
    # too small for one), so the check above covers it.
    assert all(any(line.startswith(f"{name} ") and "p = " in line for line in proc.stderr.splitlines())
               for name in ("alpha", "beta")), proc.stderr
