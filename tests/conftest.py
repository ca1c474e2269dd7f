"""Shared fixtures: offscreen Qt, ../shared data and weights (skipped when absent), tiny bundles."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MPOX_TRIAGE_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights"

# Tests never read or write the real user's model folder (core.models.bundle.user_models_dir).
os.environ.setdefault("MPOX_TRIAGE_USER_MODELS_DIR", tempfile.mkdtemp(prefix="mpox-test-user-models-"))

if SHARED_WEIGHTS.is_dir():
    os.environ.setdefault("MPOX_TRIAGE_WEIGHTS_DIR", str(SHARED_WEIGHTS))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real photos with manifest.csv; skips the test where ../shared/data is absent."""
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"real data not available: {SHARED_DATA}/manifest.csv is absent (only present in CI and dev)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip(f"ImageNet weights not available: {SHARED_WEIGHTS} is absent")
    return SHARED_WEIGHTS


@pytest.fixture
def tiny_bundle(tmp_path):
    """Factory: a small, fast, real Keras bundle saved to disk; returns its folder."""
    from tests.helpers import make_tiny_bundle

    def factory(name: str = "tiny", **kwargs) -> Path:
        return make_tiny_bundle(tmp_path / "models" / name, name=name, **kwargs)

    return factory


@pytest.fixture
def image_folder(tmp_path):
    """Factory: a folder of generated photos (mpox/ and other/ subfolders by default)."""
    from tests.helpers import make_image_folder

    def factory(n_per_class: int = 4, **kwargs) -> Path:
        return make_image_folder(tmp_path / "photos", n_per_class=n_per_class, **kwargs)

    return factory
