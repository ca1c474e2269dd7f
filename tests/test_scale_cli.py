"""`mpox-triage classify SOURCE --engine ray`: the same CSV as the local engine, and a resume after the driver dies.

These drive the command line that issue 14 describes. `--engine` is wired into classify by the
workspace rewrite (issue 12), so each test skips until classify's parser has it.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO


def _classify_options() -> set[str]:
    from core.commands import classify

    parser = argparse.ArgumentParser()
    classify.add_parser(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices["classify"]._option_string_actions)


HAS_ENGINE = "--engine" in _classify_options()
needs_engine_flag = pytest.mark.skipif(
    not HAS_ENGINE, reason="classify has no --engine option yet (wired by the workspace rewrite, issue 12)")
needs_ray = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("ray", "pyarrow")),
    reason='Ray is not installed (pip install -e ".[scale]")')

POLL_LIMIT_S = 300


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.cli", *args]


@pytest.fixture
def ray_env():
    """The CLI's environment; a local Ray instance it starts keeps its files in a short temporary folder
    (Ray's socket paths must stay under 107 bytes, so not under pytest's long tmp_path)."""
    temp = tempfile.mkdtemp(prefix="mpox-ray-")
    yield dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), MPOX_TRIAGE_RAY_TEMP=temp,
               RAY_USAGE_STATS_ENABLED="0")
    shutil.rmtree(temp, ignore_errors=True)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _assert_same_csv(got: Path, want: Path) -> None:
    a, b = _rows(got), _rows(want)
    assert [r["path"] for r in a] == [r["path"] for r in b]
    # A run with --session adds the reviewer columns; every column both have must agree.
    for x, y in zip(a, b):
        for key in x.keys() & y.keys():
            if key == "timestamp":
                continue
            if key in ("p_mpox", "ood_score") and x[key] and y[key]:
                assert abs(float(x[key]) - float(y[key])) <= 1e-5, (x["path"], key)
            else:
                assert x[key] == y[key], (x["path"], key)


@needs_engine_flag
@needs_ray
def test_classify_engine_ray_writes_the_local_csv_for_the_hostile_corpus(tmp_path, tiny_bundle, ray_env):
    from tests.test_hostile import build_hostile_corpus

    folder = tmp_path / "corpus"
    build_hostile_corpus(folder)
    bundle = tiny_bundle()
    local, ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    for extra, out in (([], local), (["--engine", "ray", "--actors", "2"], ray)):
        proc = subprocess.run(_cli("classify", str(folder), "--model", str(bundle), "--csv", str(out), "--quiet",
                                   *extra), cwd=REPO, env=ray_env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_csv(ray, local)


@needs_engine_flag
def test_engine_ray_without_ray_exits_2_with_the_install_line(tmp_path, image_folder, tiny_bundle, ray_env):
    code = textwrap.dedent(f"""
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name in ("ray", "pyarrow") else real(name, *a)
        from core.cli import main
        sys.exit(main(["classify", {str(image_folder())!r}, "--model", {str(tiny_bundle())!r}, "--engine", "ray",
                       "--csv", {str(tmp_path / "out.csv")!r}, "--quiet"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ray_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and 'pip install -e ".[scale]"' in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _count_results(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@needs_engine_flag
@needs_ray
def test_engine_ray_run_whose_driver_is_killed_resumes_to_the_local_csv(tmp_path, tiny_bundle, ray_env):
    from PIL import Image

    from core.store.session import SESSION_FILE

    folder = tmp_path / "photos"
    folder.mkdir()
    n = 240
    for i in range(n - 4):
        Image.new("RGB", (24, 24), (i % 256, (7 * i) % 256, (13 * i) % 256)).save(folder / f"img_{i:03d}.png")
    for i in range(4):
        (folder / f"broken_{i}.jpg").touch()
    bundle = tiny_bundle()
    session = tmp_path / "session"
    env = ray_env
    proc = subprocess.Popen(_cli("classify", str(folder), "--model", str(bundle), "--engine", "ray", "--session",
                                 str(session), "--batch-size", "4", "--quiet"),
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + POLL_LIMIT_S
        while _count_results(session / SESSION_FILE) < 8:
            if proc.poll() is not None:
                pytest.fail(f"classify ended before it could be killed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no results in the session after {POLL_LIMIT_S}s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # the driver only: its Ray processes share its fate
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stored = _count_results(session / SESSION_FILE)
    assert stored < n

    resume = ["--resume"] if "--resume" in _classify_options() else []
    ray_csv, local_csv = tmp_path / "ray.csv", tmp_path / "local.csv"
    resumed = subprocess.run(_cli("classify", str(folder), "--model", str(bundle), "--engine", "ray", "--session",
                                  str(session), *resume, "--csv", str(ray_csv), "--quiet"),
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    local = subprocess.run(_cli("classify", str(folder), "--model", str(bundle), "--csv", str(local_csv), "--quiet"),
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    _assert_same_csv(ray_csv, local_csv)
    assert _count_results(session / SESSION_FILE) == n  # each file once in the session


@needs_engine_flag
@needs_ray
def test_a_folder_scored_on_ray_gets_the_shift_verdict_of_a_local_run(tmp_path, ray_env):
    """Each Ray row carries its photo's embedding back to the driver's session, so the folder's shift test
    covers photos scored on Ray: the same alarm, p-value and CSV as the local engine (before, a Ray-only folder
    had no embeddings stored and so no verdict)."""
    from tests.helpers import make_image_folder
    from tests.test_never_miss import _alarm_bundle

    bundle = _alarm_bundle(tmp_path)
    folder = make_image_folder(tmp_path / "photos", n_per_class=20, size=(40, 32))
    lines = {}
    for name, extra in (("local", []), ("ray", ["--engine", "ray", "--actors", "1"])):
        proc = subprocess.run(_cli("classify", str(folder), "--model", str(bundle), "--session", str(tmp_path / name),
                                   "--csv", str(tmp_path / f"{name}.csv"), "--quiet", *extra),
                              cwd=REPO, env=ray_env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines[name] = [ln for ln in proc.stderr.splitlines() if "shift test p =" in ln or ln.startswith("Shift alarm")]
    assert lines["ray"] and lines["ray"] == lines["local"], lines
    _assert_same_csv(tmp_path / "ray.csv", tmp_path / "local.csv")
