"""The inference engine and the classify CLI: one record per file, in order, cancel keeps what is done."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from core.models.bundle import load_bundle
from core.photos.images import discover_images
from core.triage.inference import InferenceEngine, classify_paths
from core.progress import CancelToken
from core.records import CSV_COLUMNS

REQUIRED_CSV_COLUMNS = ["path", "status", "p_mpox", "prediction", "model", "model_version", "model_sha256", "error"]


def test_one_record_per_file_in_order_with_errors_kept(tiny_bundle, image_folder):
    folder = image_folder(3)
    (folder / "other" / "broken.jpg").write_bytes(b"not a jpeg")
    paths = discover_images(folder)
    bundle = load_bundle(tiny_bundle())
    records = classify_paths(paths, bundle, batch_size=2)
    assert [r.path for r in records] == [str(p) for p in paths]
    broken = [r for r in records if r.path.endswith("broken.jpg")]
    assert broken[0].status == "error" and "broken.jpg" in broken[0].error and broken[0].p_mpox is None
    ok = [r for r in records if r.ok]
    assert len(ok) == 6
    for r in ok:
        assert 0.0 <= r.p_mpox <= 1.0
        assert r.prediction == ("mpox" if r.p_mpox >= bundle.card.threshold else "not_mpox")
        assert r.model_sha256 == bundle.card.model_sha256 and len(r.file_sha256) == 64


def test_batching_does_not_change_scores(tiny_bundle, image_folder):
    paths = discover_images(image_folder(4))
    bundle = load_bundle(tiny_bundle())
    one = [r.p_mpox for r in classify_paths(paths, bundle, batch_size=1)]
    many = [r.p_mpox for r in classify_paths(paths, bundle, batch_size=8)]
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_threshold_override_changes_prediction_not_probability(tiny_bundle, image_folder):
    paths = discover_images(image_folder(2))
    bundle = load_bundle(tiny_bundle())
    low = classify_paths(paths, bundle, threshold=0.0)
    high = classify_paths(paths, bundle, threshold=1.0)
    assert all(r.prediction == "mpox" for r in low)
    assert all(r.prediction == "not_mpox" for r in high if r.p_mpox < 1.0)
    assert [r.p_mpox for r in low] == [r.p_mpox for r in high]
    with pytest.raises(ValueError):
        InferenceEngine(bundle, threshold=1.5)


def test_cancel_mid_run_keeps_results_so_far(tiny_bundle, image_folder):
    paths = discover_images(image_folder(10))
    bundle = load_bundle(tiny_bundle())
    cancel = CancelToken()
    seen = []

    def progress(p):
        seen.append(p.done)
        if p.done >= 4:
            cancel.cancel()

    records = list(InferenceEngine(bundle, batch_size=2).run(paths, progress=progress, cancel=cancel))
    assert 4 <= len(records) < len(paths)
    assert [r.path for r in records] == [str(p) for p in paths[: len(records)]]
    assert all(r.status == "ok" for r in records)


def test_cli_classify_writes_csv_contract(tiny_bundle, image_folder, tmp_path):
    """classify --csv writes the record columns, then needs_review (docs/reports.md, CSV): the photo's
    core.triage.reasons sentences, with the figure and the card's limit, and no machine folders."""
    folder = image_folder(3)
    (folder / "mpox" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "results.csv"
    bundle = tiny_bundle()
    lo, hi = json.loads((bundle / "model_card.json").read_text())["uncertain_band"]
    proc = subprocess.run([sys.executable, "-m", "core.cli", "classify", str(folder), "--model", str(bundle),
                           "--csv", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        assert set(REQUIRED_CSV_COLUMNS) <= set(reader.fieldnames)
        assert reader.fieldnames == CSV_COLUMNS + ["needs_review"]   # no session: no reviewer columns
    assert len(rows) == len(discover_images(folder)) == 7
    for row in rows:
        assert row["status"] in ("ok", "error")
        if row["status"] == "ok":
            assert 0.0 <= float(row["p_mpox"]) <= 1.0 and row["prediction"] in ("mpox", "not_mpox")
            assert row["error"] == "" and len(row["model_sha256"]) == 64
            p = float(row["p_mpox"])
            expected = f"uncertain, p(mpox) {p:.2f} inside {lo:.2f}–{hi:.2f}" if row["flag"] == "uncertain" else ""
            assert row["needs_review"] == expected, row
        else:
            assert row["p_mpox"] == "" and "bad.png" in row["error"]
            # The reason names the file's problem, not the machine's folders (the path column does that).
            assert row["needs_review"] == "unreadable: " + row["error"].removeprefix(row["path"] + ": ")
            assert row["needs_review"].startswith("unreadable: cannot decode image") and str(folder) not in row[
                "needs_review"]
    assert any(row["needs_review"].startswith("uncertain, p(mpox)") for row in rows)   # the band's rows say so
    assert not (tmp_path / "results.csv.partial").exists()


@pytest.mark.parametrize("args, message", [
    (["classify", "/definitely/not/here"], "no such folder"),
    (["classify", "{folder}", "--model", "no-such-model"], "No model bundle"),
    (["classify", "{folder}", "--csv", "/definitely/not/here/out.csv"], "does not exist"),
    (["classify", "{folder}", "--threshold", "2"], "between 0 and 1"),
])
def test_cli_refuses_bad_arguments_with_one_line(args, message, image_folder):
    folder = image_folder(1)
    argv = [a.format(folder=folder) for a in args]
    proc = subprocess.run([sys.executable, "-m", "core.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
