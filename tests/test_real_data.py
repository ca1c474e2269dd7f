"""Integration on the real photos in ../shared/data with the shipped bundles (skipped where absent)."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from core.models.bundle import load_bundle, list_bundles
from core.triage.inference import classify_paths

pytestmark = pytest.mark.shared_data


def _test_split(shared_data):
    with open(shared_data / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    paths = [shared_data / r["path"] for r in rows]
    y = np.array([r["label_binary"] == "mpox" for r in rows])
    return paths, y


def test_shipped_bundles_are_listed_and_verified():
    names = {c.name for c in list_bundles()}
    assert {"mobilenetv2", "xception"} <= names
    for name in ("mobilenetv2", "xception"):
        card = load_bundle(name).card
        assert card.metrics["test"]["accuracy"] >= 0.85 and card.metrics["test"]["roc_auc"] >= 0.92


def test_mobilenetv2_on_shared_test_split_meets_targets(shared_data):
    paths, y = _test_split(shared_data)
    bundle = load_bundle("mobilenetv2")
    records = classify_paths(paths, bundle)
    assert all(r.status == "ok" for r in records)
    p = np.array([r.p_mpox for r in records])
    called = np.array([r.prediction in ("mpox", "not_mpox") for r in records])
    pred = np.array([r.prediction == "mpox" for r in records])
    # Out-of-scope photos get no call (they go to review): accuracy is over the photos that got one.
    assert called.mean() >= 0.95
    # Within the 95% interval the card states for its test figures (measured once, at release).
    assert accuracy_score(np.asarray(y)[called], pred[called]) >= bundle.card.metrics["test"]["ci95"]["accuracy"][0]
    assert roc_auc_score(y, p) >= 0.92
    # Triage sensitivity: mpox photos called mpox or flagged for review.
    review = np.array([r.prediction == "mpox" or bool(r.flag) for r in records])
    assert review[np.asarray(y) == 1].mean() >= 0.90


def test_cli_classifies_a_real_folder_with_xception(shared_data, tmp_path):
    folder = shared_data / "msld_v1" / "monkeypox"
    out = tmp_path / "out.csv"
    proc = subprocess.run([sys.executable, "-m", "core.cli", "classify", str(folder), "--model", "xception",
                           "--csv", str(out), "--quiet"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_files = sum(1 for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    assert len(rows) == n_files > 0
    assert all(r["status"] == "ok" and r["model"] == "xception" for r in rows)
    # The folder holds mpox photos only: most must be called mpox at the sensitivity-first threshold.
    assert np.mean([r["prediction"] == "mpox" for r in rows]) >= 0.8
