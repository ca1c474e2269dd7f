"""Issue 18, item 6: sessions carry PRAGMA application_id and a foreign SQLite file is refused untouched before any
write; a corruption quick_check misses is one line; a full disk says so; a failed --parquet leaves no folder."""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from pathlib import Path

import pytest

from core.store import session as session_mod
from core.cli import main
from core.store.session import APPLICATION_ID, SessionError, SessionStore
from tests.helpers import make_image_folder, make_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("models") / "alpha", name="alpha")


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_image_folder(tmp_path / "photos", n_per_class=2, size=(40, 32))


def cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def foreign_db(path: Path, app_id: int = 0) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('A. Patient', '555')")
    if app_id:
        conn.execute(f"PRAGMA application_id = {app_id}")
    conn.commit()
    conn.close()
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("app_id", [0, 0x12345678], ids=["unmarked-with-other-tables", "other-application-id"])
def test_classify_refuses_a_foreign_sqlite_file_and_leaves_it_untouched(capsys, photos, bundle, tmp_path, app_id):
    folder = tmp_path / "other-app"
    folder.mkdir()
    db = foreign_db(folder / "session.sqlite", app_id)
    before = snapshot(folder)
    for session in (folder, db):
        code, err = cli(capsys, "classify", photos, "--model", bundle, "--session", session, "--quiet")
        assert code == 2 and "another program" in one_error(err)
    assert snapshot(folder) == before  # no tables added, no WAL switch, no -wal/-shm files


def test_train_refuses_a_foreign_session_before_training(capsys, photos, tmp_path):
    db = foreign_db(tmp_path / "contacts.db")
    before = db.read_bytes()
    code, err = cli(capsys, "train", photos, "--arch", "mobilenetv2", "--out", tmp_path / "new", "--session", db,
                    "--quiet")
    assert code == 2 and "another program" in one_error(err)
    assert db.read_bytes() == before and not (tmp_path / "new").exists()


def test_new_sessions_are_marked_and_unmarked_old_sessions_are_marked_on_open(tmp_path):
    from tests.session_formats import write_old_session

    with SessionStore.open(tmp_path / "s") as store:
        store.log("hello")
    conn = sqlite3.connect(tmp_path / "s" / "session.sqlite")
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()
    # A format-4 session written before the mark existed: recognised by its exact schema, marked when opened.
    db = write_old_session(tmp_path / "old" / "session.sqlite", 4, "/p/a.jpg", "f" * 64, "a" * 64)
    with SessionStore.open(tmp_path / "old") as store:
        assert store.reviews()["/p/a.jpg"]["label"] == "mpox"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def test_text_that_is_not_utf8_past_quick_check_is_one_line(capsys, photos, bundle, tmp_path):
    session = tmp_path / "s"
    code, err = cli(capsys, "classify", photos, "--model", bundle, "--session", session, "--quiet")
    assert code == 0, err
    db = session / "session.sqlite"
    raw = bytearray(db.read_bytes())
    marker = b"mpox_00.jpg"
    at = raw.find(marker)
    assert at > 0
    raw[at] = 0xFF   # one byte: the page structure is intact, so quick_check passes
    db.write_bytes(bytes(raw))
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()
    code, err = cli(capsys, "classify", photos, "--model", bundle, "--session", session, "--resume", "--quiet")
    assert code == 2 and "damaged" in one_error(err)


class _FullDisk:
    """A connection whose schema writes fail as on a full disk (SQLite then rolls back by itself)."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, *args):
        if sql.startswith("CREATE TABLE"):
            raise sqlite3.OperationalError("database or disk is full")
        if sql == "ROLLBACK":
            self._conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __setattr__(self, name, value):
        if name == "_conn":
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


def test_a_full_disk_while_creating_a_session_says_the_disk_is_full(capsys, photos, bundle, tmp_path, monkeypatch):
    real = sqlite3.connect
    monkeypatch.setattr(session_mod.sqlite3, "connect", lambda *a, **k: _FullDisk(real(*a, **k)))
    with pytest.raises(SessionError, match="disk is full") as info:
        SessionStore.open(tmp_path / "s1")
    assert "rollback" not in str(info.value)
    code, err = cli(capsys, "classify", photos, "--model", bundle, "--session", tmp_path / "s2", "--quiet")
    assert code == 2 and "disk is full" in one_error(err)


def test_a_full_disk_leaves_no_parquet_folder_to_block_the_next_run(capsys, photos, bundle, tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    real = pq.write_table

    def full(table, where, *a, **k):
        Path(where).write_bytes(b"PAR1")   # a partial file, as a real full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    out = tmp_path / "shards"
    code, err = cli(capsys, "classify", photos, "--model", bundle, "--parquet", out, "--quiet")
    assert code == 2 and "No space left" in one_error(err)
    assert not out.exists()
    monkeypatch.setattr(pq, "write_table", real)
    code, err = cli(capsys, "classify", photos, "--model", bundle, "--parquet", out, "--quiet")
    assert code == 0, err
    assert list(out.glob("part-*.parquet"))
