"""Crash safety: a classify run killed with SIGKILL mid-way resumes and scores only what is missing."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from core.store.session import SESSION_FILE, SessionStore
from tests.conftest import REPO

N_IMAGES = 200
N_BROKEN = 5  # zero-byte files: their error rows are retried on resume (issue 12: one policy, CLI and app)
KILL_AFTER = 20  # results stored before the kill
POLL_LIMIT_S = 300  # generous bound for a slow, shared CI machine; the loop normally ends in seconds


def _make_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(N_IMAGES - N_BROKEN):
        sub = root / f"group_{i % 4}"
        sub.mkdir(exist_ok=True)
        Image.new("RGB", (24, 24), (i % 256, (7 * i) % 256, (13 * i) % 256)).save(sub / f"img_{i:03d}.png")
    for i in range(N_BROKEN):
        (root / f"broken_{i}.jpg").touch()
    return root


def _cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.cli", *args]


def _env() -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))


def _count_results(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


def test_sigkilled_run_resumes_scoring_only_missing_files(tmp_path, tiny_bundle):
    folder = _make_folder(tmp_path / "photos")
    session = tmp_path / "session"
    db = session / SESSION_FILE
    bundle = tiny_bundle()

    proc = subprocess.Popen(_cli_cmd("classify", str(folder), "--model", str(bundle), "--session", str(session),
                                     "--batch-size", "2", "--quiet"),
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    blocker = None
    try:
        deadline = time.monotonic() + POLL_LIMIT_S
        while _count_results(db) < KILL_AFTER:
            if proc.poll() is not None:
                pytest.fail(f"classify ended before it could be killed (status {proc.returncode}): "
                            f"{proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {KILL_AFTER} results in the session after {POLL_LIMIT_S}s")
            time.sleep(0.02)
        # Take the database's write lock so the run blocks on its next commit: the kill then lands
        # at a known point, however fast the machine is.
        blocker = sqlite3.connect(db, timeout=60, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        stored_at_kill = blocker.execute("SELECT count(*) FROM results").fetchone()[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
    assert proc.returncode == -signal.SIGKILL
    assert KILL_AFTER <= stored_at_kill < N_IMAGES

    with SessionStore.open(session) as store:
        before = {r.path: r.to_dict() for r in store.results()}
        (first_run,) = store.runs()
    assert len(before) == stored_at_kill
    assert first_run["status"] == "running"  # killed: never marked finished, results kept anyway
    errors_before = {p for p, r in before.items() if r["status"] == "error"}
    kept = stored_at_kill - len(errors_before)

    out = tmp_path / "all.csv"
    resumed = subprocess.run(_cli_cmd("classify", str(folder), "--model", str(bundle), "--session", str(session),
                                      "--resume", "--csv", str(out), "--quiet"),
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert f"{kept} already scored, {N_IMAGES - kept} to go" in resumed.stderr

    discovered = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in rows) == discovered  # every file exactly once in the output
    assert sum(r["status"] == "error" for r in rows) == N_BROKEN

    with SessionStore.open(session) as store:
        after = {r.path: r.to_dict() for r in store.results()}
        runs = store.runs()
        predictions = store.audit("prediction")
    assert sorted(after) == discovered  # every file exactly once in the session
    for path, row in before.items():
        if path not in errors_before:
            assert after[path] == row  # earlier results untouched, timestamps included
    assert [r["status"] for r in runs] == ["running", "finished"]
    # Each readable file was scored exactly once across both runs: the resumed run skipped what was stored
    # and retried only the error rows.
    scored = [p["details"]["path"] for p in predictions]
    assert sorted(scored) == sorted(discovered + sorted(errors_before))
    second = [p for p in predictions if p["details"]["run_id"] == runs[1]["run_id"]]
    assert len(second) == N_IMAGES - kept


def test_resume_without_session_is_a_clear_error(tmp_path):
    folder = _make_folder(tmp_path / "photos")
    proc = subprocess.run(_cli_cmd("classify", str(folder), "--resume"), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--resume needs --session" in proc.stderr and "Traceback" not in proc.stderr


def test_a_resume_where_combined_has_nothing_left_still_scores_its_component(tmp_path):
    """Day 1: classify with the combined model. Day 2: resume with combined and one of its components. The
    combined pass has nothing to score, so it hands its component no rows: the component scores every photo
    itself (before, it waited for rows that never came, and the run hung at 0/N)."""
    import csv
    import subprocess
    import sys

    from tests.helpers import make_image_folder, make_light_combined

    models = tmp_path / "models"
    photos = make_image_folder(tmp_path / "photos", n_per_class=6)
    combined, alpha, _beta = make_light_combined(models, photos)
    env = {**os.environ, "MPOX_TRIAGE_MODELS_DIR": str(models), "PYTHONPATH": str(REPO)}
    session = tmp_path / "s"
    day1 = [sys.executable, "-m", "core.cli", "classify", str(photos), "--model", str(combined), "--session",
            str(session), "--quiet"]
    assert subprocess.run(day1, env=env, capture_output=True, text=True, timeout=300).returncode == 0
    out = tmp_path / "day2.csv"
    day2 = day1 + ["--resume", "--model", str(alpha), "--csv", str(out)]
    proc = subprocess.run(day2, env=env, capture_output=True, text=True, timeout=120)   # hung forever before
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    slugs = [k[len("p_mpox__"):] for k in rows[0] if k.startswith("p_mpox__")]
    assert len(slugs) == 2 and all(r[f"p_mpox__{s}"] for r in rows for s in slugs)
