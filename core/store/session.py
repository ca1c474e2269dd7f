"""Session store: every result, review and action of a triage session, kept in one SQLite file.

A session is a folder (`<session_dir>/session.sqlite` plus caches such as thumbnails, which never
live beside the original photos). Each finished result and each review is committed as it arrives,
so a crash or `kill -9` loses nothing that was reported as done; reopening shows all of it and a
resumed run asks `done_paths()` what is left to score.

The `audit` table is append-only (SQLite triggers refuse UPDATE and DELETE): who did what, when,
with which model. The schema carries a format version in `PRAGMA user_version`; older files are
migrated in place on open, newer ones are refused with a clear message.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import stat
import threading
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from core import __version__
from core.records import RECORD_FIELDS, ResultRecord, safe_text, utc_now

FORMAT_VERSION = 5
SESSION_FILE = "session.sqlite"
# PRAGMA application_id of every session database ("MPXT"): a foreign SQLite file is refused untouched.
APPLICATION_ID = 0x4D505854
_OUR_TABLES = {"runs", "results", "reviews", "audit"}
_V5_TABLES = {"embeddings"}
CACHE_DIR = "cache"

REVIEW_LABELS = ("mpox", "not_mpox", "unsure")
REVIEW_CLEARED = ""  # a review row with this label takes an earlier label back (the photo is unreviewed again)

# Audit actions written by the app; other modules may log their own action names too.
ACTION_RUN_STARTED = "run_started"
ACTION_PREDICTION = "prediction"
ACTION_REVIEW = "review"
ACTION_RUN_FINISHED = "run_finished"
ACTION_RETRAIN = "retrain"
ACTION_REPORT_EXPORTED = "report_exported"
ACTION_MOVED = "moved"

RUN_RUNNING = "running"

# Columns of `results` that mirror ResultRecord fields (run_id and id are extra).
_RECORD_FIELDS = list(RECORD_FIELDS)

# Current schema. Format 1 (pre-release) lacked results.flag, results.ood_score, reviews.reviewer
# and the audit guard triggers; format 2 lacked results.file_size / file_mtime_ns (what the file looked
# like when it was scored, so a resume notices a changed file), results.scope_score (core.photos.scope) and the ''
# (cleared) review label; format 3 lacked reviews.file_sha256 (the content a review labelled: a photo changed
# since then has a stale review, which adapt never uses); format 4 keyed results by the weights' SHA-256 alone
# and kept no embeddings (format 5: results.scoring_digest, core.records.scoring_digest, is the key, and the
# `embeddings` table keeps each in-scope photo's embedding by model and content, what the folder's shift test is
# computed from). _migrate() adds them.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    model         TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_sha256  TEXT NOT NULL,
    threshold     REAL,
    app_version   TEXT NOT NULL,
    folder        TEXT NOT NULL,
    started       TEXT NOT NULL,
    finished      TEXT,
    status        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL REFERENCES runs(run_id),
    path          TEXT NOT NULL,
    status        TEXT NOT NULL,
    p_mpox        REAL,
    prediction    TEXT,
    flag          TEXT NOT NULL DEFAULT '',
    ood_score     REAL,
    model         TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    model_sha256  TEXT NOT NULL DEFAULT '',
    threshold     REAL,
    file_sha256   TEXT,
    error         TEXT NOT NULL DEFAULT '',
    timestamp     TEXT NOT NULL,
    file_size     INTEGER,
    file_mtime_ns INTEGER,
    scope_score   REAL,
    scoring_digest TEXT NOT NULL DEFAULT '',
    UNIQUE (scoring_digest, path)
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE TABLE IF NOT EXISTS reviews (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    path     TEXT NOT NULL,
    label    TEXT NOT NULL CHECK (label IN ('mpox', 'not_mpox', 'unsure', '')),
    reviewer TEXT NOT NULL DEFAULT '',
    time     TEXT NOT NULL,
    file_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS reviews_path ON reviews(path);
CREATE TABLE IF NOT EXISTS embeddings (
    scoring_digest TEXT NOT NULL,
    file_sha256    TEXT NOT NULL,
    dim            INTEGER NOT NULL,
    vector         BLOB NOT NULL,
    PRIMARY KEY (scoring_digest, file_sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
"""

_AUDIT_GUARDS = """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused'); END;
"""


class SessionError(Exception):
    """A session file is unreadable, too new or otherwise unusable; the message says what to do."""


def default_actor() -> str:
    """The operating-system user name, used as reviewer/actor when none is given."""
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no login name in some containers and services
        return "unknown"


SQLITE_SUFFIXES = (".sqlite", ".db", ".sqlite3")
_SQLITE_HEADER = b"SQLite format 3\x00"


def _session_db_path(p: Path) -> Path:
    """The database file for a session argument: a folder (its session.sqlite) or a .sqlite/.db file.

    Any other existing file is refused: a session never turns a user's file into a database.
    """
    try:
        p.stat()
    except FileNotFoundError:
        pass
    except OSError as exc:  # e.g. a parent folder that may not be entered
        raise SessionError(f"{p}: cannot open the session ({exc.strerror or exc})") from None
    if p.is_dir():
        return p / SESSION_FILE
    if p.suffix.lower() in SQLITE_SUFFIXES:
        return p
    if p.exists() or p.is_symlink():
        raise SessionError(f"{p}: is a file, not a session folder; give a folder (new or existing) for the session")
    return p / SESSION_FILE


def _check_sqlite_header(db_path: Path, advice: str = "") -> None:
    """SessionError (one line, nothing changed) unless the file starts with SQLite's header."""
    try:
        with open(db_path, "rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise SessionError(f"{db_path}: cannot read the session ({exc.strerror or exc})") from None
    if header != _SQLITE_HEADER:
        raise SessionError(f"{db_path}: not a session database (not an SQLite file); nothing was changed." + advice)


def _check_session_file(db_path: Path) -> None:
    """Refuse, before SQLite touches it, a session file that is not a regular SQLite file or is read-only."""
    try:
        st = db_path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SessionError(f"{db_path}: cannot open the session ({exc.strerror or exc})") from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise SessionError(f"{db_path}: is not a regular file; a session database is a file")
        if st.st_size:
            _check_sqlite_header(db_path, " Move it away or choose another session folder")
        if not os.access(db_path, os.W_OK):
            raise SessionError(f"{db_path}: the session database is read-only; make it writable or copy the session "
                               "folder somewhere writable")
    if not os.access(db_path.parent, os.W_OK):
        raise SessionError(f"{db_path.parent}: the session folder is read-only (a session writes its journal "
                           "beside the database); choose a writable folder")


# Columns a session of any format has in each table, and the columns later formats added: a file is one of
# ours only when every table holds at least the first and nothing beyond both (its exact schema, read-only).
_BASE_COLUMNS = {
    "runs": {"run_id", "model", "model_version", "model_sha256", "threshold", "app_version", "folder", "started",
             "finished", "status"},
    "results": {"id", "run_id", "path", "status", "p_mpox", "prediction", "model", "model_version", "model_sha256",
                "threshold", "file_sha256", "error", "timestamp"},
    "reviews": {"id", "path", "label", "time"},
    "audit": {"id", "time", "actor", "action", "details"},
    "embeddings": {"scoring_digest", "file_sha256", "dim", "vector"},
}
_ADDED_COLUMNS = {
    "results": {"flag", "ood_score", "file_size", "file_mtime_ns", "scope_score", "scoring_digest"},
    "reviews": {"reviewer", "file_sha256"},
}


def _schema_problem(conn: sqlite3.Connection, tables: set[str]) -> str:
    """Why the file's tables are not a session's of some format ("" when they are); reads only."""
    extra = tables - _OUR_TABLES - _V5_TABLES - {"reviews_v2"}
    if extra:
        return f"tables {', '.join(sorted(extra)[:5])}"
    if not _OUR_TABLES <= tables:
        return f"tables {', '.join(sorted(tables)[:5])}"
    for table in sorted(tables & set(_BASE_COLUMNS)):
        cols = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        base, added = _BASE_COLUMNS[table], _ADDED_COLUMNS.get(table, set())
        if not base <= cols or not cols <= base | added:
            odd = sorted((cols - base - added) or (base - cols))
            return f"table {table} with columns unlike a session's ({', '.join(odd[:4])})"
    return ""


def _check_identity(conn: sqlite3.Connection, db_path: Path) -> None:
    """Refuse (SessionError), before anything is written, an SQLite file that is not one of our sessions: one
    marked with another PRAGMA application_id, one whose tables are not exactly a session's (whatever its mark),
    or an unmarked one whose format version is not one of ours. An empty file is a new session; an unmarked file
    with exactly a session's schema of formats 1-4 is a session from before the mark (it is marked when opened).
    Reads only: nothing is written before this passes (WAL mode changes the file's header)."""
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                              "AND name NOT LIKE 'sqlite_%'")}
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    problem = ""
    if app_id not in (0, APPLICATION_ID):
        problem = f"application id {app_id:#x}"
    elif tables:
        problem = _schema_problem(conn, tables)
        if not problem and app_id == 0 and not 1 <= version < FORMAT_VERSION:
            problem = f"our table names but format version {version}"
    elif version:
        problem = f"format version {version} with no tables"
    if problem:
        raise SessionError(f"{db_path}: an SQLite database of another program ({problem}), not an mpox-triage "
                           "session; it was not changed. Choose another session folder")


def _database_error_message(db_path: Path, exc: Exception, what: str = "not a usable session database") -> str:
    text = str(exc)
    if "readonly" in text.replace("-", "").replace(" ", "").lower():
        return f"{db_path}: the session database is read-only ({text}); make it writable or choose another folder"
    if "disk is full" in text or "disk full" in text:
        return (f"{db_path}: the disk is full ({text}); free some space (or choose a session folder on another "
                "disk) and run again")
    if "malformed" in text or "not a database" in text or "decode" in text.lower():
        return (f"{db_path}: the session database is damaged ({text}); it was not opened or changed. Restore it "
                "from a backup, or move it away to start a new session")
    return f"{db_path}: {what} ({text}); open another session folder or move this file away"


def _card_value(card: Any, name: str, default: Any = "") -> Any:
    if card is None:
        return default
    if isinstance(card, dict):
        return card.get(name, default)
    return getattr(card, name, default)


class SessionStore:
    """One session's SQLite database. Thread-safe: all calls are serialised by a lock."""

    def __init__(self, db_path: Path, conn: sqlite3.Connection):
        self.db_path = db_path
        self._conn = conn
        self._lock = threading.RLock()
        self.journal_mode = ""

    # --- opening and closing -------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, synchronous: str = "FULL") -> "SessionStore":
        """Open or create a session: `path` is a session folder or a `.sqlite`/`.db` file in one.

        `synchronous="FULL"` (default) makes every commit survive a power cut (about 4 ms per commit
        on an SSD); "NORMAL" survives a crash or kill -9 of the app but may lose the last commits on a
        power cut (about 0.2 ms). Batch results with `batched()` to have both speed and FULL safety.
        """
        synchronous = synchronous.upper()
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        db_path = _session_db_path(Path(path).expanduser())
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionError(
                f"{db_path.parent}: cannot create the session folder ({exc.strerror or exc}); choose a writable folder"
            ) from None
        _check_session_file(db_path)
        conn = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each write is one explicit transaction.
            conn = sqlite3.connect(str(db_path), timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            # Checked before anything writes to the file: a damaged session is refused as it is, never
            # resumed (results would be missing or wrong) and never replaced.
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise SessionError(
                    f"{db_path}: the session database is damaged (quick_check: {problems[0][:120]}); it was not "
                    "opened or changed. Restore it from a backup, or move it away to start a new session"
                )
            _check_identity(conn, db_path)  # before the first write: WAL mode changes the file's header
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            # WAL + FULL: a commit is on disk when it returns; WAL + NORMAL: it survives the app dying.
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except SessionError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise SessionError(_database_error_message(db_path, exc)) from None
        store = cls(db_path, conn)
        store.journal_mode = str(mode).lower()  # not "wal" on some network file systems; still correct
        try:
            store._init_schema()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise SessionError(_database_error_message(db_path, exc, "cannot read or upgrade the session database")
                               ) from None
        except SessionError:
            conn.close()
            raise
        return store

    @classmethod
    def open_read_only(cls, path: str | os.PathLike) -> "SessionStore":
        """Open an existing session for reading only: nothing is written (no schema upgrade, no journal mode
        change), so a session on a read-only disk or folder can be read. Writing through it fails."""
        db_path = _session_db_path(Path(path).expanduser())
        if not db_path.is_file():
            raise SessionError(f"{db_path}: no session database here; give the folder of an existing session")
        _check_sqlite_header(db_path)
        conn, last = None, None
        # mode=ro reads a WAL database when its -shm can be used; immutable=1 when the folder is read-only.
        for query in ("mode=ro", "immutable=1"):
            try:
                conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?{query}", uri=True, timeout=30.0,
                                       isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                _check_identity(conn, db_path)
                problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                break
            except SessionError:
                conn.close()
                raise
            except sqlite3.DatabaseError as exc:
                last = exc
                if conn is not None:
                    conn.close()
                conn = None
        if conn is None:
            raise SessionError(_database_error_message(db_path, last or sqlite3.DatabaseError("cannot open")))
        if problems != ["ok"]:
            conn.close()
            raise SessionError(f"{db_path}: the session database is damaged (quick_check: {problems[0][:120]}); "
                               "restore it from a backup")
        if not 3 <= version <= FORMAT_VERSION:
            conn.close()
            raise SessionError(f"{db_path}: session format {version} cannot be read without upgrading it "
                               f"(this version reads 3 to {FORMAT_VERSION}); open it once with a writable copy")
        store = cls(db_path, conn)
        store.journal_mode = "read-only"
        return store

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fetch(self, sql: str, args: Any = ()) -> list:
        """Rows of a read; a damaged file (e.g. text that is not UTF-8, which quick_check does not see) is a
        SessionError of one line, never an OperationalError traceback."""
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise SessionError(_database_error_message(self.db_path, exc)) from None

    @property
    def session_dir(self) -> Path:
        return self.db_path.parent

    def cache_dir(self, name: str = "thumbnails") -> Path:
        """A folder for derived files (thumbnails, caches) inside the session folder, created on demand."""
        d = self.session_dir / CACHE_DIR / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def format_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # --- schema --------------------------------------------------------------------------
    def _init_schema(self) -> None:
        with self._lock:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > FORMAT_VERSION:
                raise SessionError(
                    f"{self.db_path}: session format {version} is newer than this app understands "
                    f"({FORMAT_VERSION}); update mpox-triage to open it"
                )
            has_tables = self._conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='runs'"
            ).fetchone()[0]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if version == 0 and not has_tables:
                    # Statements one by one: executescript() would commit behind our transaction's back.
                    for stmt in _split_sql(_SCHEMA + _AUDIT_GUARDS):
                        self._conn.execute(stmt)
                else:
                    self._migrate(version)
                self._conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
                self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._conn.execute("COMMIT")
            except BaseException:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back (e.g. the disk is full): the first error is the one to say
                raise

    def _migrate(self, version: int) -> None:
        """Upgrade an older file in place (inside the caller's transaction)."""
        if version < 1:
            raise SessionError(f"{self.db_path}: has tables but no session format version; not a session database")
        if version >= FORMAT_VERSION:
            return
        if version < 3:
            self._migrate_to_3(version)
        # Format 4: the SHA-256 of the photo a review labelled (NULL for older reviews).
        rcols = {r["name"] for r in self._conn.execute("PRAGMA table_info(reviews)")}
        if "file_sha256" not in rcols:
            self._conn.execute("ALTER TABLE reviews ADD COLUMN file_sha256 TEXT")
        if version < 5:
            self._migrate_to_5()
        self._append_audit(
            "migrated", {"from_format": version, "to_format": FORMAT_VERSION, "app_version": __version__}, "mpox-triage"
        )

    def _migrate_to_5(self) -> None:
        """Format 5 (inside the caller's transaction): results keyed by (scoring digest, path), and the
        embeddings table. An older result's scoring digest is unknown (its card's temperature and runtime were not
        recorded): it keeps its weights' SHA-256 as its key, so it stays readable under its own model and a run
        of a current card scores that photo again; reviews are by photo and all kept."""
        cols = [r["name"] for r in self._conn.execute("PRAGMA table_info(results)")]
        self._conn.execute("ALTER TABLE results RENAME TO results_v4")
        self._conn.execute("DROP INDEX IF EXISTS results_run")
        for stmt in _split_sql(_SCHEMA + _AUDIT_GUARDS):   # IF NOT EXISTS: the new results and embeddings tables
            self._conn.execute(stmt)
        keep = [c for c in cols if c != "scoring_digest"]
        self._conn.execute(f"INSERT INTO results ({', '.join(keep)}, scoring_digest) "
                           f"SELECT {', '.join(keep)}, model_sha256 FROM results_v4 ORDER BY id")
        self._conn.execute("DROP TABLE results_v4")

    def _migrate_to_3(self, version: int) -> None:
        """Formats 1 and 2 to 3 (inside the caller's transaction)."""
        cols = {r["name"] for r in self._conn.execute("PRAGMA table_info(results)")}
        if version == 1:
            if "flag" not in cols:
                self._conn.execute("ALTER TABLE results ADD COLUMN flag TEXT NOT NULL DEFAULT ''")
            if "ood_score" not in cols:
                self._conn.execute("ALTER TABLE results ADD COLUMN ood_score REAL")
            rcols = {r["name"] for r in self._conn.execute("PRAGMA table_info(reviews)")}
            if "reviewer" not in rcols:
                self._conn.execute("ALTER TABLE reviews ADD COLUMN reviewer TEXT NOT NULL DEFAULT ''")
        # Format 3: the file's size and mtime when scored, and a review label '' that clears a review.
        for col, kind in (("file_size", "INTEGER"), ("file_mtime_ns", "INTEGER"), ("scope_score", "REAL")):
            if col not in cols:
                self._conn.execute(f"ALTER TABLE results ADD COLUMN {col} {kind}")
        # SQLite cannot alter a CHECK constraint: rebuild the reviews table with the wider one.
        self._conn.execute("ALTER TABLE reviews RENAME TO reviews_v2")
        self._conn.execute("DROP INDEX IF EXISTS reviews_path")
        for stmt in _split_sql(_SCHEMA + _AUDIT_GUARDS):  # IF NOT EXISTS: adds only what is missing
            self._conn.execute(stmt)
        self._conn.execute("INSERT INTO reviews (id, path, label, reviewer, time) "
                           "SELECT id, path, label, reviewer, time FROM reviews_v2")
        self._conn.execute("DROP TABLE reviews_v2")

    # --- audit ---------------------------------------------------------------------------
    def _append_audit(self, action: str, details: dict[str, Any], actor: str | None) -> None:
        self._conn.execute(
            "INSERT INTO audit (time, actor, action, details) VALUES (?, ?, ?, ?)",
            (utc_now(), actor or default_actor(), action, json.dumps(details, sort_keys=True, default=str)),
        )

    def log(self, action: str, details: dict[str, Any] | None = None, actor: str | None = None) -> None:
        """Append one entry to the audit log (committed before returning)."""
        if not action:
            raise ValueError("audit action must be a non-empty string")
        with self._transaction():
            self._append_audit(action, dict(details or {}), actor)

    def audit(self, action: str | None = None) -> list[dict[str, Any]]:
        """The audit log in order, each entry {id, time, actor, action, details (dict)}."""
        sql = "SELECT id, time, actor, action, details FROM audit"
        args: tuple = ()
        if action:
            sql += " WHERE action = ?"
            args = (action,)
        with self._lock:
            rows = self._fetch(sql + " ORDER BY id", args)
        return [
            {"id": r["id"], "time": r["time"], "actor": r["actor"], "action": r["action"],
             "details": json.loads(r["details"] or "{}")}
            for r in rows
        ]

    def export_audit_jsonl(self, path: str | os.PathLike) -> Path:
        """Write the audit log as JSON Lines (one entry per line), atomically, with the permissions every output
        gets (core.store.outputs.write_text_atomic); returns the path."""
        from core.store.outputs import write_text_atomic

        out = Path(path)
        entries = self.audit()
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries))
        return out

    # --- runs and results ----------------------------------------------------------------
    def start_run(self, card: Any, folder: str | os.PathLike, threshold: float | None = None,
                  actor: str | None = None) -> str:
        """Record the start of a run of the model described by `card` (ModelCard or dict); returns run_id."""
        run_id = uuid.uuid4().hex
        folder = safe_text(str(folder))   # a folder name with bytes that are not UTF-8 is stored escaped, as paths are
        thr = float(threshold) if threshold is not None else _card_value(card, "threshold", None)
        model_sha = _card_value(card, "model_sha256", "")
        info = {
            "run_id": run_id,
            "model": _card_value(card, "name", ""),
            "model_version": _card_value(card, "version", ""),
            "model_sha256": model_sha,
            "threshold": thr,
            "app_version": __version__,
            "folder": str(folder),
        }
        if not isinstance(card, dict) or card.get("card_sha256"):
            from core.models.releases import origin_text

            # Recorded so that results restored later still say where their model came from.
            info["model_origin"] = origin_text(card)
        with self._transaction():
            self._conn.execute(
                "INSERT INTO runs (run_id, model, model_version, model_sha256, threshold, app_version, folder,"
                " started, finished, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (run_id, info["model"], info["model_version"], model_sha, thr, __version__, str(folder),
                 utc_now(), RUN_RUNNING),
            )
            self._append_audit(ACTION_RUN_STARTED, info, actor)
        return run_id

    def add_result(self, run_id: str, record: ResultRecord) -> None:
        """Store one finished result and its audit entry in one transaction, durable on return.

        A second result for the same (model SHA-256, path) replaces the first; the audit log keeps both.
        """
        self.add_results(run_id, [record])

    def add_results(self, run_id: str, records: Iterable[ResultRecord]) -> int:
        """Store several results in one transaction (all or none); returns how many were stored."""
        records = list(records)
        if not records:
            return 0
        cols = ", ".join(["run_id"] + _RECORD_FIELDS)
        marks = ", ".join("?" * (len(_RECORD_FIELDS) + 1))
        updates = ", ".join(f"{c} = excluded.{c}" for c in ["run_id"] + _RECORD_FIELDS
                            if c not in ("path", "scoring_digest"))
        sql = (f"INSERT INTO results ({cols}) VALUES ({marks}) "
               f"ON CONFLICT (scoring_digest, path) DO UPDATE SET {updates}")
        with self._transaction():
            for rec in records:
                values = [run_id] + [rec.model_key if f == "scoring_digest" else _db_value(getattr(rec, f))
                                     for f in _RECORD_FIELDS]
                self._conn.execute(sql, values)
                if rec.embedding is not None and rec.ok and rec.file_sha256:
                    vec = np.asarray(rec.embedding, dtype=np.float16).ravel()
                    self._conn.execute("INSERT OR REPLACE INTO embeddings (scoring_digest, file_sha256, dim, vector) "
                                       "VALUES (?, ?, ?, ?)", (rec.model_key, rec.file_sha256, int(vec.size),
                                                               vec.tobytes()))
                self._append_audit(ACTION_PREDICTION, {
                    "run_id": run_id, "path": str(rec.path), "file_sha256": rec.file_sha256, "status": rec.status,
                    "p_mpox": rec.p_mpox, "prediction": rec.prediction, "flag": rec.flag,
                    "model_sha256": rec.model_sha256, "error": rec.error,
                }, "mpox-triage")
        return len(records)

    def batched(self, run_id: str, size: int = 32) -> "ResultBatcher":
        """A sink that stores results `size` at a time (one transaction each) and the rest on close.

        Use it with the engine's batch size: the engine yields a whole batch at once, so nothing waits
        in the buffer, and a kill loses at most the batch being written (a resume re-scores it).
        """
        return ResultBatcher(self, run_id, size)

    def finish_run(self, run_id: str, status: str = "finished", actor: str | None = None) -> None:
        """Mark a run finished (status e.g. 'finished', 'cancelled', 'failed') and log it."""
        with self._transaction():
            cur = self._conn.execute(
                "UPDATE runs SET finished = ?, status = ? WHERE run_id = ?", (utc_now(), status, run_id)
            )
            if cur.rowcount == 0:
                raise SessionError(f"{self.db_path}: no run with id {run_id!r}")
            n = self._conn.execute("SELECT count(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()[0]
            self._append_audit(ACTION_RUN_FINISHED, {"run_id": run_id, "status": status, "results": n}, actor)

    def runs(self) -> list[dict[str, Any]]:
        """All runs, oldest first; a run left 'running' by a crash stays so (its results are kept)."""
        with self._lock:
            rows = self._fetch("SELECT * FROM runs ORDER BY started, rowid")
        return [dict(r) for r in rows]

    def results(self, model_sha256: str | None = None, run_id: str | None = None) -> list[ResultRecord]:
        """Stored results in the order they were first stored, optionally for one model or one run."""
        with self._lock:
            have = {r["name"] for r in self._fetch("PRAGMA table_info(results)")}
        # A format 3-4 file opened read-only has no scoring_digest: its rows keep their weights' SHA-256 as key.
        cols = [c if c in have else ("model_sha256 AS scoring_digest" if c == "scoring_digest" else f"NULL AS {c}")
                for c in _RECORD_FIELDS]
        sql = f"SELECT {', '.join(cols)} FROM results"
        where, args = [], []
        if model_sha256 is not None:
            where.append("model_sha256 = ?")
            args.append(model_sha256)
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._fetch(sql + " ORDER BY id", args)
        out = []
        for r in rows:
            rec = dict(r)
            if rec["scoring_digest"] == rec["model_sha256"]:
                rec["scoring_digest"] = ""   # keyed by its weights' SHA-256 (a row of format 4 or before)
            out.append(ResultRecord(**rec))
        return out

    def done_paths(self, model_key: str, include_errors: bool = True) -> set[str]:
        """Paths this model (its key: ResultRecord.model_key) already has a stored result for."""
        sql = "SELECT path FROM results WHERE scoring_digest = ?"
        if not include_errors:
            sql += " AND status = 'ok'"
        with self._lock:
            return {r[0] for r in self._conn.execute(sql, (model_key,))}

    def embeddings(self, model_key: str, file_sha256s: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored embeddings (float16) of this model for these photo contents: {file sha256: vector}."""
        wanted = sorted(set(file_sha256s))
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                rows = self._fetch(f"SELECT file_sha256, dim, vector FROM embeddings WHERE scoring_digest = ? AND "
                                   f"file_sha256 IN ({', '.join('?' * len(chunk))})", [model_key, *chunk])
                for sha, dim, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float16)
                    if vec.size == dim:   # a truncated or forged blob is left out, never reshaped
                        out[str(sha)] = vec
        return out

    def move(self, old_path: str, new_path: str, file_sha256: str, actor: str | None = None) -> int:
        """A photo renamed or moved (same content, old path gone): its results and reviews follow it to the new
        path, and the audit says so. Returns how many results moved; nothing moves onto a path that has results
        or reviews of its own."""
        with self._transaction():
            taken = self._conn.execute("SELECT 1 FROM results WHERE path = ? UNION SELECT 1 FROM reviews WHERE "
                                       "path = ? LIMIT 1", (new_path, new_path)).fetchone()
            if taken:
                return 0
            n = self._conn.execute("UPDATE results SET path = ? WHERE path = ? AND file_sha256 = ?",
                                   (new_path, old_path, file_sha256)).rowcount
            self._conn.execute("UPDATE reviews SET path = ? WHERE path = ?", (new_path, old_path))
            self._append_audit(ACTION_MOVED, {"from": old_path, "to": new_path, "file_sha256": file_sha256,
                                              "results": n}, actor)
        return n

    # --- reviews -------------------------------------------------------------------------
    def set_review(self, path: str | os.PathLike, label: str, reviewer: str | None = None,
                   file_sha256: str | None = None) -> None:
        """Record a human label for a file; the newest review wins, older ones stay as history.

        `file_sha256` is the content that was labelled (hashed here from `path` when not given and `path`
        is a readable file): a photo whose content differs later has a stale review (core.learning.adapt skips it)."""
        if label not in REVIEW_LABELS:
            raise ValueError(f"review label must be one of {', '.join(REVIEW_LABELS)}, not {label!r}")
        if file_sha256 is None:
            from core.photos.images import file_sha256 as sha256_of

            try:
                file_sha256 = sha256_of(path) if os.path.isfile(path) else None
            except OSError:
                file_sha256 = None
        self._write_review(path, label, reviewer, file_sha256)

    def clear_review(self, path: str | os.PathLike, reviewer: str | None = None) -> None:
        """Take a photo's label back (it is unreviewed again); the history and the audit keep the old one."""
        self._write_review(path, REVIEW_CLEARED, reviewer)

    def _write_review(self, path: str | os.PathLike, label: str, reviewer: str | None,
                      file_sha256: str | None = None) -> None:
        """One review row and its audit entry (old and new label; None = unreviewed). Clearing a photo that
        has no label writes nothing."""
        who = reviewer or default_actor()
        key = str(path)
        with self._transaction():
            prev = self._conn.execute(
                "SELECT label FROM reviews WHERE path = ? ORDER BY id DESC LIMIT 1", (key,)
            ).fetchone()
            old = prev[0] if prev and prev[0] != REVIEW_CLEARED else None   # cleared = unreviewed
            if label == REVIEW_CLEARED and old is None:
                return
            self._conn.execute("INSERT INTO reviews (path, label, reviewer, time, file_sha256) VALUES (?, ?, ?, ?, ?)",
                               (key, label, who, utc_now(), file_sha256))
            self._append_audit(ACTION_REVIEW, {"path": key, "old_label": old, "new_label": label or None,
                                               "reviewer": who}, who)

    def reviews(self) -> dict[str, dict[str, Any]]:
        """Latest review per path: {path: {label, reviewer, time, file_sha256}}; cleared reviews are left out.

        `file_sha256` is the content the review labelled; for reviews stored before format 4 it is the
        content of the latest result of that photo stored at or before the review (None when there is none)."""
        with self._lock:
            rcols = {r["name"] for r in self._fetch("PRAGMA table_info(reviews)")}
            own = "r.file_sha256" if "file_sha256" in rcols else "NULL"
            rows = self._fetch(
                f"SELECT r.path, r.label, r.reviewer, r.time, coalesce({own}, "
                "(SELECT s.file_sha256 FROM results s WHERE s.path = r.path AND s.timestamp <= r.time "
                "AND s.file_sha256 IS NOT NULL ORDER BY s.timestamp DESC LIMIT 1)) AS file_sha256 FROM reviews r "
                "JOIN (SELECT path, max(id) AS id FROM reviews GROUP BY path) last ON last.id = r.id "
                "ORDER BY r.id"
            )
        return {r["path"]: {"label": r["label"], "reviewer": r["reviewer"], "time": r["time"],
                            "file_sha256": r["file_sha256"]} for r in rows if r["label"] != REVIEW_CLEARED}

    def review_history(self, path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """Every review, oldest first, optionally of one file."""
        sql = "SELECT path, label, reviewer, time FROM reviews"
        args: tuple = ()
        if path is not None:
            sql += " WHERE path = ?"
            args = (str(path),)
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql + " ORDER BY id", args)]

    # --- internals -----------------------------------------------------------------------
    def _transaction(self) -> "_Transaction":
        if self._conn is None:
            raise SessionError(f"{self.db_path}: session is closed")
        return _Transaction(self)


class ResultBatcher:
    """Buffers results and stores them with SessionStore.add_results; a context manager that flushes on exit."""

    def __init__(self, store: SessionStore, run_id: str, size: int = 32):
        self.store = store
        self.run_id = run_id
        self.size = max(1, int(size))
        self._buffer: list[ResultRecord] = []
        self.stored = 0

    def add(self, record: ResultRecord) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self.size:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self.stored += self.store.add_results(self.run_id, self._buffer)
            self._buffer = []

    def __enter__(self) -> "ResultBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()  # results already computed are finished results, even if the run stopped early


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's lock; ROLLBACK on any error."""

    def __init__(self, store: SessionStore):
        self.store = store

    def __enter__(self) -> None:
        self.store._lock.acquire()
        try:
            self.store._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._lock.release()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.store._conn.execute("COMMIT")
            else:
                self.store._conn.execute("ROLLBACK")
        finally:
            self.store._lock.release()


def _db_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        return str(value)


def _split_sql(script: str) -> list[str]:
    """Split a schema script into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements, current = [], []
    for line in script.strip().splitlines():
        if not line.strip():
            continue
        current.append(line)
        text = "\n".join(current)
        in_trigger = text.lstrip().upper().startswith("CREATE TRIGGER")
        if text.rstrip().endswith(";") and (not in_trigger or text.rstrip().upper().endswith("END;")):
            statements.append(text)
            current = []
    if current:
        statements.append("\n".join(current))
    return statements
