"""Session store: results and reviews survive reopening, the audit log is append-only, formats migrate."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from core import __version__
from core.models.bundle import ModelCard
from core.records import ResultRecord
from core.store.session import FORMAT_VERSION, SESSION_FILE, SessionError, SessionStore


def _card(sha: str = "a" * 64) -> ModelCard:
    return ModelCard(name="tiny", version="1.2.3", architecture="mobilenetv2", input_size=32,
                     threshold=0.4, model_sha256=sha)


def _record(path: str, p: float = 0.7, sha: str = "a" * 64, status: str = "ok") -> ResultRecord:
    if status == "error":
        return ResultRecord(path=path, status="error", model="tiny", model_version="1.2.3", model_sha256=sha,
                            threshold=0.4, error=f"{path}: empty file (0 bytes)")
    return ResultRecord(path=path, status="ok", p_mpox=p, prediction="mpox" if p >= 0.4 else "not_mpox",
                        flag="uncertain" if 0.35 <= p < 0.65 else "", ood_score=1.5, model="tiny",
                        model_version="1.2.3", model_sha256=sha, threshold=0.4, file_sha256="f" * 64)


def test_folder_path_creates_session_file_in_wal_mode_with_format_version(tmp_path):
    with SessionStore.open(tmp_path / "s") as store:
        assert store.db_path == tmp_path / "s" / SESSION_FILE
        assert store.format_version == FORMAT_VERSION
        assert store.journal_mode == "wal"
        thumbs = store.cache_dir()
        assert thumbs.is_dir() and (tmp_path / "s") in thumbs.parents


def test_results_round_trip_all_fields_and_survive_reopen(tmp_path):
    records = [_record("/photos/a.jpg", 0.9), _record("/photos/b.jpg", 0.5), _record("/photos/c.jpg", status="error")]
    store = SessionStore.open(tmp_path)
    run = store.start_run(_card(), "/photos", threshold=0.4)
    for rec in records:
        store.add_result(run, rec)
    store.finish_run(run, "finished")
    store.close()

    store = SessionStore.open(tmp_path)
    assert [r.to_dict() for r in store.results()] == [r.to_dict() for r in records]
    assert [r.path for r in store.results(model_sha256="a" * 64)] == [r.path for r in records]
    assert store.results(model_sha256="b" * 64) == []
    assert store.done_paths("a" * 64) == {"/photos/a.jpg", "/photos/b.jpg", "/photos/c.jpg"}
    assert store.done_paths("a" * 64, include_errors=False) == {"/photos/a.jpg", "/photos/b.jpg"}
    (info,) = store.runs()
    assert info["model"] == "tiny" and info["model_version"] == "1.2.3" and info["model_sha256"] == "a" * 64
    assert info["threshold"] == pytest.approx(0.4) and info["app_version"] == __version__
    assert info["folder"] == "/photos" and info["status"] == "finished" and info["finished"]
    store.close()


def test_same_model_and_path_is_stored_once_and_other_models_separately(tmp_path):
    with SessionStore.open(tmp_path) as store:
        run = store.start_run(_card(), "/photos")
        store.add_result(run, _record("/photos/a.jpg", 0.2))
        store.add_result(run, _record("/photos/a.jpg", 0.8))
        store.add_result(run, _record("/photos/a.jpg", 0.3, sha="b" * 64))
        assert [r.p_mpox for r in store.results("a" * 64)] == [0.8]
        assert len(store.results()) == 2
        # The audit log keeps both predictions even though the table keeps the newest.
        assert [e["details"]["p_mpox"] for e in store.audit("prediction")] == [0.2, 0.8, 0.3]


def test_batched_results_are_all_or_nothing(tmp_path):
    with SessionStore.open(tmp_path) as store:
        run = store.start_run(_card(), "/photos")
        bad = _record("/photos/b.jpg")
        bad.status = None  # NOT NULL constraint fails inside the batch
        with pytest.raises(sqlite3.IntegrityError):
            store.add_results(run, [_record("/photos/a.jpg"), bad])
        assert store.results() == []
        assert store.add_results(run, [_record("/photos/a.jpg"), _record("/photos/b.jpg")]) == 2


def test_audit_records_runs_predictions_and_reviews_with_provenance(tmp_path):
    with SessionStore.open(tmp_path) as store:
        run = store.start_run(_card(), "/photos", threshold=0.4, actor="alice")
        store.add_result(run, _record("/photos/a.jpg", 0.9))
        store.finish_run(run, "cancelled", actor="alice")
        store.log("retrain", {"manifest_sha256": "m" * 64, "seed": 7, "parent": "tiny 1.2.3"}, actor="bob")
        actions = [e["action"] for e in store.audit()]
        assert actions == ["run_started", "prediction", "run_finished", "retrain"]
        started = store.audit("run_started")[0]
        assert started["actor"] == "alice"
        assert started["details"]["model_sha256"] == "a" * 64 and started["details"]["app_version"] == __version__
        assert started["details"]["threshold"] == pytest.approx(0.4)
        pred = store.audit("prediction")[0]["details"]
        assert pred["file_sha256"] == "f" * 64 and pred["prediction"] == "mpox" and pred["p_mpox"] == 0.9
        assert store.audit("run_finished")[0]["details"] == {"run_id": run, "status": "cancelled", "results": 1}
        assert store.audit("retrain")[0]["details"]["seed"] == 7


def test_audit_log_refuses_update_and_delete_even_through_raw_sql(tmp_path):
    with SessionStore.open(tmp_path) as store:
        store.log("report_exported", {"path": "/tmp/r.pdf"}, actor="alice")
    conn = sqlite3.connect(tmp_path / SESSION_FILE)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()
    with SessionStore.open(tmp_path) as store:
        assert [(e["actor"], e["action"]) for e in store.audit()] == [("alice", "report_exported")]


def test_reviews_latest_wins_history_kept_and_audited(tmp_path):
    with SessionStore.open(tmp_path) as store:
        store.set_review("/photos/a.jpg", "mpox", reviewer="alice")
        store.set_review("/photos/b.jpg", "unsure", reviewer="alice")
        store.set_review("/photos/a.jpg", "not_mpox", reviewer="bob")
        with pytest.raises(ValueError, match="review label"):
            store.set_review("/photos/a.jpg", "maybe", reviewer="bob")
    with SessionStore.open(tmp_path) as store:
        latest = store.reviews()
        assert {p: r["label"] for p, r in latest.items()} == {"/photos/a.jpg": "not_mpox", "/photos/b.jpg": "unsure"}
        assert latest["/photos/a.jpg"]["reviewer"] == "bob"
        assert [h["label"] for h in store.review_history("/photos/a.jpg")] == ["mpox", "not_mpox"]
        audits = [e["details"] for e in store.audit("review")]
        assert [(d["old_label"], d["new_label"]) for d in audits] == [(None, "mpox"), (None, "unsure"), ("mpox", "not_mpox")]


def test_export_audit_jsonl_writes_one_json_object_per_entry(tmp_path):
    with SessionStore.open(tmp_path / "s") as store:
        store.set_review("/photos/ünïcode 写真.jpg", "mpox", reviewer="alice")
        store.log("report_exported", {"path": "r.pdf"})
        out = store.export_audit_jsonl(tmp_path / "out" / "audit.jsonl")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["review", "report_exported"]
    assert json.loads(lines[0])["details"]["path"] == "/photos/ünïcode 写真.jpg"
    # The permissions every output gets (core.store.outputs.publish), not a temporary file's private 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in out.parent.iterdir()] == ["audit.jsonl"]   # no temporary file left


def _make_format1_session(db) -> None:
    """A session file as the pre-release format 1 wrote it (no flag/ood_score/reviewer, no audit guards)."""
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, model TEXT NOT NULL, model_version TEXT NOT NULL,
            model_sha256 TEXT NOT NULL, threshold REAL, app_version TEXT NOT NULL, folder TEXT NOT NULL,
            started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL);
        CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, path TEXT NOT NULL,
            status TEXT NOT NULL, p_mpox REAL, prediction TEXT, model TEXT NOT NULL DEFAULT '',
            model_version TEXT NOT NULL DEFAULT '', model_sha256 TEXT NOT NULL DEFAULT '', threshold REAL,
            file_sha256 TEXT, error TEXT NOT NULL DEFAULT '', timestamp TEXT NOT NULL, UNIQUE (model_sha256, path));
        CREATE TABLE reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, label TEXT NOT NULL,
            time TEXT NOT NULL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, details TEXT NOT NULL DEFAULT '{}');
        INSERT INTO runs VALUES ('r1', 'tiny', '0.9', 'c', 0.5, '0.0.9', '/old', '2025-01-01T00:00:00+00:00',
            '2025-01-01T00:01:00+00:00', 'finished');
        INSERT INTO results (run_id, path, status, p_mpox, prediction, model, model_version, model_sha256,
            threshold, file_sha256, timestamp) VALUES ('r1', '/old/a.jpg', 'ok', 0.75, 'mpox', 'tiny', '0.9', 'c',
            0.5, 'd', '2025-01-01T00:00:30+00:00');
        INSERT INTO reviews (path, label, time) VALUES ('/old/a.jpg', 'mpox', '2025-01-01T00:02:00+00:00');
        INSERT INTO audit (time, actor, action, details) VALUES ('2025-01-01T00:00:00+00:00', 'carol',
            'run_started', '{"run_id": "r1"}');
        PRAGMA user_version = 1;
    """)
    conn.commit()
    conn.close()


def test_format1_session_is_migrated_in_place_and_keeps_its_data(tmp_path):
    _make_format1_session(tmp_path / SESSION_FILE)
    with SessionStore.open(tmp_path) as store:
        assert store.format_version == FORMAT_VERSION
        (old,) = store.results()
        assert (old.path, old.p_mpox, old.prediction, old.flag, old.ood_score) == ("/old/a.jpg", 0.75, "mpox", "", None)
        assert store.reviews()["/old/a.jpg"]["label"] == "mpox"
        assert store.done_paths("c") == {"/old/a.jpg"}
        assert [e["action"] for e in store.audit()] == ["run_started", "migrated"]
        run = store.start_run(_card("c"), "/old")
        store.add_result(run, _record("/old/b.jpg", 0.6, sha="c"))
        store.set_review("/old/a.jpg", "not_mpox", reviewer="dave")
    conn = sqlite3.connect(tmp_path / SESSION_FILE)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")  # the migration installed the guards
    conn.close()


def test_newer_format_is_refused_with_a_clear_message(tmp_path):
    db = tmp_path / SESSION_FILE
    SessionStore.open(tmp_path).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    conn.close()
    with pytest.raises(SessionError, match=r"newer than this app understands.*update"):
        SessionStore.open(tmp_path)


def test_garbage_file_is_refused_as_session(tmp_path):
    db = tmp_path / "session.sqlite"
    db.write_bytes(b"<html>not a database</html>" * 100)
    with pytest.raises(SessionError, match="session.sqlite"):
        SessionStore.open(db)


def test_results_written_are_visible_to_a_second_connection_before_close(tmp_path):
    # What a crash leaves: another process opening the file sees every committed result.
    store = SessionStore.open(tmp_path)
    run = store.start_run(_card(), "/photos")
    store.add_result(run, _record("/photos/a.jpg"))
    other = SessionStore.open(tmp_path)
    try:
        assert other.done_paths("a" * 64) == {"/photos/a.jpg"}
        assert other.runs()[0]["status"] == "running"
    finally:
        other.close()
        store.close()


def test_batched_sink_stores_full_batches_at_once_and_the_rest_on_exit(tmp_path):
    with SessionStore.open(tmp_path) as store:
        run = store.start_run(_card(), "/photos")
        with store.batched(run, size=3) as sink:
            for i in range(7):
                sink.add(_record(f"/photos/{i}.jpg"))
                # Visible in the database after each full batch, not before.
                assert len(store.results()) == (i + 1) // 3 * 3
        assert [r.path for r in store.results()] == [f"/photos/{i}.jpg" for i in range(7)]
        assert sink.stored == 7


def test_batched_sink_keeps_finished_results_when_the_run_fails(tmp_path):
    with SessionStore.open(tmp_path, synchronous="normal") as store:
        run = store.start_run(_card(), "/photos")
        with pytest.raises(RuntimeError):
            with store.batched(run, size=32) as sink:
                sink.add(_record("/photos/a.jpg"))
                raise RuntimeError("model crashed")
        assert store.done_paths("a" * 64) == {"/photos/a.jpg"}


# --- a session is checked when opened (issue 12, hole 5) ------------------------------------------------
def _session_with_rows(folder, n: int = 300):
    with SessionStore.open(folder) as store:
        for i in range(n):
            store.log("note", {"i": i, "pad": "x" * 300})
    return folder / SESSION_FILE


def test_damaged_session_database_is_refused_and_left_as_it_was(tmp_path):
    import numpy as np

    db = _session_with_rows(tmp_path / "s")
    data = bytearray(db.read_bytes())
    assert len(data) > 8 * 4096
    junk = np.random.default_rng(0).integers(0, 256, 4 * 4096, dtype=np.uint8).tobytes()
    data[3 * 4096:7 * 4096] = junk  # damaged pages, intact header: SQLite opens it without complaint
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(SessionError, match="damaged") as info:
        SessionStore.open(tmp_path / "s")
    assert "\n" not in str(info.value) and str(db) in str(info.value)
    assert db.read_bytes() == before  # never resumed, repaired or replaced
    assert sorted(p.name for p in db.parent.iterdir()) == [SESSION_FILE]


@pytest.mark.parametrize("content", [b"", b"my notes\n"])
def test_session_path_pointing_at_a_file_is_refused_and_the_file_untouched(tmp_path, content):
    target = tmp_path / "notes.txt"
    target.write_bytes(content)
    with pytest.raises(SessionError, match="is a file, not a session folder"):
        SessionStore.open(target)
    assert target.read_bytes() == content  # an empty file used to become a session database


def test_garbage_with_a_database_name_is_refused_before_sqlite_touches_it(tmp_path):
    db = tmp_path / "s" / SESSION_FILE
    db.parent.mkdir()
    db.write_bytes(b"\x00\x01garbage" * 500)
    with pytest.raises(SessionError, match="not a session database"):
        SessionStore.open(tmp_path / "s")
    assert db.read_bytes() == b"\x00\x01garbage" * 500


def test_read_only_session_is_refused_with_one_line(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="ro-session-"))  # pytest's tmp_path is not enterable by others
    os.chmod(tmp_path, 0o755)
    db = _session_with_rows(tmp_path / "s", n=3)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from core.store.session import SessionStore, SessionError\n"
            "try:\n    SessionStore.open(sys.argv[2])\nexcept SessionError as e:\n    print('REFUSED', e)\n"
            "else:\n    print('OPENED')\n")
    repo = str(Path(__file__).resolve().parent.parent)
    cmd = [sys.executable, "-c", code, repo, str(tmp_path / "s")]
    if os.geteuid() == 0:  # root writes anything: run as an unprivileged user instead
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root without setpriv: a read-only file cannot be simulated")
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    os.chmod(db, 0o444)
    os.chmod(db.parent, 0o555)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(db.parent, 0o755)
        os.chmod(db, 0o644)
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert proc.stdout.startswith("REFUSED"), proc.stdout + proc.stderr
    assert "read-only" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1
