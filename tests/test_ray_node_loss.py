"""Issue 18, item 11: losing a Ray worker node mid-run. A two-node cluster on this machine (`ray start --head`, then
a second `ray start --address` with its own resources), `classify --engine ray --address` over 500 photos, the
worker node's raylet killed mid-run: the run completes, or fails with one line and `--session --resume` completes
it, with every photo exactly once and the local engine's scores.

Everything listens on 127.0.0.1 only. Ray 2.6x turns a second node's `--node-ip-address=127.0.0.1` into the
machine's address (ray-project/ray#59110) and then listens on every interface; so the second `ray start` runs
through Ray's own CLI entry point with that one resolution turned off. The test starts and stops the cluster
itself: on any failure every process it started (found by its private auth token or its temporary folder) is
killed by pid, nothing else.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[scale]")')
pytest.importorskip("pyarrow", reason='pyarrow is not installed (pip install -e ".[scale]")')

from tests.conftest import REPO  # noqa: E402
from tests.helpers import make_image_folder  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds its Ray processes in /proc")]

PHOTOS = 500
KILL_AFTER = 100   # results stored in the session before the worker node is killed
RAY_CLI = (
    "import sys\n"
    "import ray._private.services as services\n"
    "services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1 (ray-project/ray#59110)\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv = ['ray'] + sys.argv[1:]\n"
    "main()\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def our_pids(token: str, temp: str) -> list[int]:
    """Processes this test's cluster started: their environment holds its token, or they hold files in its
    temporary folder (Ray's agents clear their environment)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"RAY_AUTH_TOKEN={token}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
                continue
            if any(os.readlink(fd).startswith(temp) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def raylet_pid(port: int, token: str, temp: str) -> int:
    for pid in our_pids(token, temp):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/raylet") and f"--node_manager_port={port}".encode() in args:
            return pid
    raise AssertionError(f"no raylet on port {port}")


def listening_addresses(pids: list[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on (from /proc/net/tcp{,6})."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:   # 0A: LISTEN
                found.add(cols[1].split(":")[0])
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


@pytest.fixture
def cluster():
    token = secrets.token_hex(32)
    temp = tempfile.mkdtemp(prefix="rn-")   # short: Ray's socket paths must stay under 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    gcs, head_nm, worker_nm = free_port(), free_port(), free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    try:
        subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
                        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
                        f"--node-manager-port={head_nm}", f"--object-manager-port={free_port()}",
                        f"--ray-client-server-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
                       env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, check=True, timeout=180,
                       capture_output=True)
        subprocess.run([sys.executable, "-c", RAY_CLI, "start", f"--address=127.0.0.1:{gcs}",
                        "--node-ip-address=127.0.0.1", "--num-cpus=1", '--resources={"worker_node": 1}',
                        f"--node-manager-port={worker_nm}", f"--object-manager-port={free_port()}",
                        f"--runtime-env-agent-port={free_port()}"],
                       env=env, check=True, timeout=180, capture_output=True)
        yield {"address": f"127.0.0.1:{gcs}", "env": {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
               "token": token, "temp": temp, "worker_port": worker_nm}
    finally:
        for _ in range(3):   # agents started late are found on the next pass
            for pid in our_pids(token, temp):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)
        shutil.rmtree(temp, ignore_errors=True)


def results_stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def classify(*args, env=None, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core.cli", "classify", *map(str, args), "--quiet"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)


def test_losing_a_worker_node_mid_run_loses_and_repeats_no_photo(cluster, tmp_path):
    if not (REPO / "models" / "mobilenetv2" / "model_card.json").is_file():
        pytest.skip("the shipped mobilenetv2 bundle is not installed")
    photos = make_image_folder(tmp_path / "photos", n_per_class=PHOTOS // 2, size=(48, 40))
    env = {**cluster["env"], "PYTHONPATH": str(REPO)}
    assert listening_addresses(our_pids(cluster["token"], cluster["temp"])) <= LOOPBACK
    local = classify(photos, "--model", "mobilenetv2", "--csv", tmp_path / "local.csv", env=env)

    session, out = tmp_path / "session", tmp_path / "ray.csv"
    ray_args = (photos, "--model", "mobilenetv2", "--engine", "ray", "--address", cluster["address"], "--actors", 2,
                "--batch-size", 16, "--session", session, "--csv", out)
    run = classify(*ray_args, env=env)
    deadline = time.monotonic() + 240
    while results_stored(session / "session.sqlite") < KILL_AFTER:
        assert run.poll() is None, run.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the Ray run made no progress"
        time.sleep(0.3)
    os.kill(raylet_pid(cluster["worker_port"], cluster["token"], cluster["temp"]), signal.SIGKILL)
    stored_at_kill = results_stored(session / "session.sqlite")
    _out, err = run.communicate(timeout=300)
    if run.returncode != 0:   # the run may stop with one line; the session resumes it on what is left
        # Ray's own workers log the lost node (with their tracebacks) to stderr; ours is one line, the last.
        ours = [ln for ln in err.splitlines() if ln.startswith("mpox-triage classify:")]
        assert run.returncode == 2 and len(ours) == 1 and "error:" in ours[0], err[-2000:]
        resumed = classify(*ray_args, "--resume", env=env)
        _out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert stored_at_kill < PHOTOS

    _out, err = local.communicate(timeout=300)
    assert local.returncode == 0, err[-2000:]
    with open(tmp_path / "local.csv", newline="") as fh:
        want = {r["path"]: r for r in csv.DictReader(fh)}
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(want) == PHOTOS
    assert sorted(r["path"] for r in got) == sorted(want)    # every photo, exactly once
    for row in got:
        assert row["status"] == "ok" == want[row["path"]]["status"]
        assert abs(float(row["p_mpox"]) - float(want[row["path"]]["p_mpox"])) <= 1e-5, row["path"]
        assert row["prediction"] == want[row["path"]]["prediction"]
