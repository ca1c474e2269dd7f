"""Originals are never modified: a whole photo folder hashes the same before and after each step.

Each step (classify, review, report, retrain) runs on a fresh folder, and the folder's fingerprint
(every file's content hash, size, mode and mtime, every folder's listing and mtime) must not change.
A folder's mtime changes when anything is created or deleted in it, so a stray thumbnail, cache or
temporary file written beside the originals fails the test too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.store.session import SessionStore
from tests.conftest import REPO
from tests.helpers import make_image_folder, make_photo


def fingerprint(root: Path) -> dict[str, tuple]:
    """Content hash, size, mode and mtime of every file and listing and mtime of every folder under root."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        st = d.stat()
        out[d.relative_to(root).as_posix() + "/"] = ("dir", st.st_mtime_ns, st.st_mode, tuple(sorted(os.listdir(d))))
        for name in sorted(filenames):
            p = d / name
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[p.relative_to(root).as_posix()] = ("file", digest, st.st_size, st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def photos(tmp_path) -> Path:
    """Class subfolders of JPEGs plus the awkward cases: EXIF-rotated, PNG with alpha, a broken file."""
    root = make_image_folder(tmp_path / "originals", n_per_class=4)
    stored = make_photo((40, 20), seed=99)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(root / "mpox" / "rotated.jpg", exif=exif.tobytes())
    make_photo((30, 30), seed=98, mode="RGBA").save(root / "other" / "alpha.png")
    (root / "other" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    # Old mtimes, so a rewrite within the same second would still show.
    for p in root.rglob("*"):
        os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return root


def _classify_records(folder: Path, bundle_dir: Path):
    from core.models.bundle import load_bundle
    from core.photos.images import discover_images
    from core.triage.inference import classify_paths

    bundle = load_bundle(bundle_dir)
    return bundle, classify_paths(discover_images(folder), bundle, batch_size=4)


def test_classify_cli_with_session_csv_and_report_leaves_originals_untouched(photos, tiny_bundle, tmp_path):
    before = fingerprint(photos)
    work = tmp_path / "work"
    work.mkdir()
    args = ["classify", str(photos), "--model", str(tiny_bundle()), "--csv", str(work / "out.csv"),
            "--session", str(work / "session"), "--quiet"]
    if importlib.util.find_spec("core.reports") is not None:
        args += ["--report", str(work / "report.pdf")]
    proc = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (work / "out.csv").is_file()
    assert fingerprint(photos) == before


def test_reviews_leave_originals_untouched(photos, tmp_path):
    before = fingerprint(photos)
    with SessionStore.open(tmp_path / "session") as store:
        for i, path in enumerate(sorted(photos.rglob("*.jpg"))):
            store.set_review(str(path), ("mpox", "not_mpox", "unsure")[i % 3], reviewer="tester")
            store.set_review(str(path), "mpox", reviewer="second opinion")
        store.cache_dir("thumbnails")
        assert len(store.reviews()) == len(list(photos.rglob("*.jpg")))
    assert fingerprint(photos) == before


def test_pdf_report_leaves_originals_untouched(photos, tiny_bundle, tmp_path):
    reports = pytest.importorskip("core.reports", reason="core.reports (PDF reports, issue 5) is not built yet")
    bundle, records = _classify_records(photos, tiny_bundle())
    before = fingerprint(photos)
    reviews = {records[0].path: {"label": "mpox", "reviewer": "tester", "time": "2026-01-01T00:00:00+00:00"}}
    out = reports.write_pdf_report(records, tmp_path / "report.pdf", folder=str(photos), cards=[bundle.card],
                                   reviews=reviews)
    assert Path(out).is_file() and Path(out).stat().st_size > 0
    assert fingerprint(photos) == before


def test_retrain_leaves_originals_untouched(tmp_path):
    training = pytest.importorskip("core.learning.training", reason="core.learning.training (retraining, issue 3) is not built yet")
    from core.learning.datasets import load_folder_dataset

    # Enough photos per class that a group-aware split has both classes in train and val.
    photos = make_image_folder(tmp_path / "originals", n_per_class=12)
    for p in photos.rglob("*"):
        os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = fingerprint(photos)
    config = training.TrainConfig(arch="mobilenetv2", base_model="tiny:32", epochs=2, batch_size=8,
                                  views=["identity"], n_bootstrap=20, cache_dir=str(tmp_path / "cache"),
                                  name="retrained", version="0.0.2")
    result = training.train_model(load_folder_dataset(photos), config)
    out = training.save_trained(result, tmp_path / "models" / "retrained")
    assert (Path(out) / "model_card.json").is_file()
    assert fingerprint(photos) == before
