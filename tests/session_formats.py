"""Session databases as each older format wrote them (formats 1-4), for migration tests: the schema SQL of each
format, and a file with one run, one result and one review in it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMAS = {
    1: """
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
    model         TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    model_sha256  TEXT NOT NULL DEFAULT '',
    threshold     REAL,
    file_sha256   TEXT,
    error         TEXT NOT NULL DEFAULT '',
    timestamp     TEXT NOT NULL,
    UNIQUE (model_sha256, path)
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE TABLE IF NOT EXISTS reviews (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    path     TEXT NOT NULL,
    label    TEXT NOT NULL CHECK (label IN ('mpox', 'not_mpox', 'unsure')),
    time     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_path ON reviews(path);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
""",
    2: """
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
    UNIQUE (model_sha256, path)
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE TABLE IF NOT EXISTS reviews (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    path     TEXT NOT NULL,
    label    TEXT NOT NULL CHECK (label IN ('mpox', 'not_mpox', 'unsure')),
    reviewer TEXT NOT NULL DEFAULT '',
    time     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_path ON reviews(path);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
""",
    3: """
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
    UNIQUE (model_sha256, path)
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE TABLE IF NOT EXISTS reviews (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    path     TEXT NOT NULL,
    label    TEXT NOT NULL CHECK (label IN ('mpox', 'not_mpox', 'unsure', '')),
    reviewer TEXT NOT NULL DEFAULT '',
    time     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_path ON reviews(path);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
""",
    4: """
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
    UNIQUE (model_sha256, path)
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
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
""",
}


def write_old_session(db: Path, version: int, photo: str, photo_sha256: str, model_sha256: str,
                      label: str = "mpox", application_id: int = 0) -> Path:
    """A session file of format `version` (1-4) holding one finished run of model `model_sha256` with one ok result
    for `photo` (p 0.7, mpox) and one review `label` of it. Format 4 files written before the mark have no
    application id (`application_id` 0)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMAS[version])
    conn.execute("INSERT INTO runs VALUES ('r1', 'fake', '1.0', ?, 0.5, '0.1', ?, 't', 't', 'finished')",
                 (model_sha256, str(Path(photo).parent)))
    conn.execute("INSERT INTO results (run_id, path, status, p_mpox, prediction, model, model_version, model_sha256,"
                 " threshold, file_sha256, timestamp) VALUES ('r1', ?, 'ok', 0.7, 'mpox', 'fake', '1.0', ?, 0.5, ?, "
                 "'2026-01-01T00:00:00+00:00')", (photo, model_sha256, photo_sha256))
    if version >= 2:
        conn.execute("INSERT INTO reviews (path, label, reviewer, time) VALUES (?, ?, 'bob', "
                     "'2026-01-02T00:00:00+00:00')", (photo, label))
    else:
        conn.execute("INSERT INTO reviews (path, label, time) VALUES (?, ?, '2026-01-02T00:00:00+00:00')",
                     (photo, label))
    conn.execute(f"PRAGMA user_version = {int(version)}")
    if application_id:
        conn.execute(f"PRAGMA application_id = {int(application_id)}")
    conn.commit()
    conn.close()
    return db
