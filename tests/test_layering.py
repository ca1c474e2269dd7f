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
TRAINING_MODULES = ("core.learning.training", "core.learning.features", "core.models.backbones", "core.learning.augment", "core.learning.distribute")
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


def _contracts() -> list[dict]:
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_name_the_layers_and_ignore_nothing():
    """pyproject.toml's import-linter contracts (docs/design.md): the layers top to bottom, core never imports
    Qt, the scoring path never imports learning, TensorFlow only where a Keras model is built or loaded,
    desktop_app only through core, no circle; none of them ignores an import."""
    contracts = {c["id"]: c for c in _contracts()}
    assert all("ignore_imports" not in c for c in contracts.values())
    assert contracts["layers"]["layers"][:9] == ["core.cli", "core.commands", "core.scale", "core.learning",
                                                 "core.reports", "core.store", "core.triage", "core.models",
                                                 "core.photos"]
    assert {"PySide6", "desktop_app"} <= set(contracts["no-qt-in-core"]["forbidden_modules"])
    assert contracts["scoring-path"]["forbidden_modules"] == ["core.learning"]
    assert set(contracts["scoring-path"]["source_modules"]) == {"core.photos", "core.models", "core.triage",
                                                                 "core.store", "core.reports"}
    assert contracts["tensorflow"]["protected_modules"] == ["tensorflow", "keras"]
    assert contracts["app-on-core"]["layers"] == ["desktop_app", "core"]
    assert contracts["acyclic"]["type"] == "acyclic_siblings"
    # core's root keeps only the modules every layer shares (and the command line).
    assert sorted(p.name for p in CORE.glob("*.py")) == ["__init__.py", "cli.py", "names.py", "progress.py",
                                                        "records.py"]


def test_the_import_contracts_hold():
    """lint-imports (as .ci/run runs it): every contract kept, imports inside functions included."""
    from importlinter.cli import lint_imports

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert lint_imports(no_cache=True, no_logo=True) == 0
    finally:
        os.chdir(cwd)


def test_desktop_app_uses_only_public_names_of_core():
    """desktop_app presents and schedules through core's public names: no `_private` name and no private module
    of core is imported by the app (what it computes lives in core, where the contracts above hold)."""
    offenders = []
    for path in (REPO / "desktop_app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
                names = [a.name for a in node.names]
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]   # __version__ is public
                if any(part.startswith("_") for part in node.module.split(".")) or private:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {names}")
    assert offenders == []


def test_core_modules_name_no_qt_even_in_strings():
    """What a contract cannot see: a Qt module imported by name (importlib) anywhere in core."""
    offenders = [str(path.relative_to(REPO)) for path in CORE.rglob("*.py")
                 if any(f'"{q}' in path.read_text(encoding="utf-8") or f"'{q}" in path.read_text(encoding="utf-8")
                        for q in QT_MODULES)]
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
from core.models.bundle import load_bundle
from core.models.explain import gradcam
from core.photos.images import load_rgb
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

    from core.models.bundle import load_bundle
    from core.photos.images import discover_images
    from core.triage.inference import InferenceEngine

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
