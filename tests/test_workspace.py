"""core.store.workspace: one resume policy, one run status vocabulary, one commit policy, exports with one audit
entry each, counts in photos. Uses a fake engine (any object with .card and .run plugs in): no TensorFlow."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from core.models.bundle import ModelCard
from core.progress import CancelToken, report
from core.records import ResultRecord
from core.reports.workspace_pdf import export_pdf
from core.store.session import FORMAT_VERSION, SessionStore
from core.store.workspace import (ACTION_EXPORTED, STATUS_CANCELLED, STATUS_FAILED, STATUS_FINISHED, STATUS_INTERRUPTED,
                            Workspace, WorkspaceError)


def fake_card(name: str = "fake", threshold: float = 0.5) -> ModelCard:
    return ModelCard(name=name, version="1.0", architecture="mobilenetv2", input_size=32, threshold=threshold,
                     uncertain_band=[0.45, 0.55], model_sha256=hashlib.sha256(name.encode()).hexdigest())


class FakeEngine:
    """p(mpox) from the file's bytes; empty files are error rows. Ignores any threshold but the card's,
    as an engine from elsewhere (e.g. core.scale.RayEngine) may."""

    def __init__(self, card: ModelCard, batch_size: int = 2, fail_after: int | None = None,
                 interrupt_after: int | None = None):
        self.card, self.batch_size = card, batch_size
        self.fail_after, self.interrupt_after = fail_after, interrupt_after
        self.calls: list[list[str]] = []

    def run(self, paths, progress=None, cancel=None):
        paths = [str(p) for p in paths]
        self.calls.append(paths)
        for i, path in enumerate(paths):
            if cancel is not None and cancel.cancelled:
                return
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError("engine broke")
            if self.interrupt_after is not None and i >= self.interrupt_after:
                raise KeyboardInterrupt
            data = Path(path).read_bytes() if Path(path).exists() else b""
            common = dict(path=path, model=self.card.name, model_version=self.card.version,
                          model_sha256=self.card.model_sha256, threshold=self.card.threshold)
            if not data:
                yield ResultRecord(status="error", error=f"{Path(path).name}: empty file (0 bytes)", **common)
            else:
                digest = hashlib.sha256(data).hexdigest()
                p = int(digest[:8], 16) / 0xFFFFFFFF
                yield ResultRecord(status="ok", p_mpox=p, prediction="mpox" if p >= self.card.threshold else "not_mpox",
                                   flag="", ood_score=1.0, file_sha256=digest, **common)
            if (i + 1) % self.batch_size == 0 or i + 1 == len(paths):
                report(progress, i + 1, len(paths))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(6):
        (root / f"p{i}.jpg").write_bytes(f"photo {i}".encode() * (i + 1))
    (root / "broken.jpg").write_bytes(b"")
    return root


def run_all(ws: Workspace, engine, threshold=None, cancel=None, **kw):
    plan = ws.to_score(engine.card, threshold, **kw)
    run = ws.run(engine, plan, cancel=cancel)
    records = list(run)
    return plan, run, records


def test_resume_rescores_missing_error_and_changed_files_only(folder, tmp_path):
    card = fake_card()
    with Workspace.open(folder, tmp_path / "s") as ws:
        plan, run, records = run_all(ws, FakeEngine(card))
        assert len(plan.score) == 7 and run.status == STATUS_FINISHED and len(records) == 7
    # Change the world: fix the broken file, rewrite one file (new size), one with the same size but other
    # bytes, only touch another (same bytes, new mtime), add a new file.
    (folder / "broken.jpg").write_bytes(b"now readable")
    (folder / "p1.jpg").write_bytes(b"longer content than before")
    same_size = (folder / "p2.jpg").read_bytes()
    (folder / "p2.jpg").write_bytes(bytes(reversed(same_size)))
    os.utime(folder / "p2.jpg", ns=(1, 1))
    os.utime(folder / "p3.jpg", ns=(2, 2))
    (folder / "p9.jpg").write_bytes(b"new photo")
    with Workspace.open(folder, tmp_path / "s") as ws:
        engine = FakeEngine(card)
        plan = ws.to_score(card)
        assert sorted(Path(p).name for p in plan.score) == ["broken.jpg", "p1.jpg", "p2.jpg", "p9.jpg"]
        assert dict(plan.reasons) == {"error": 1, "changed": 2}
        assert plan.kept == 4 and not plan.redecide
        assert plan.describe().startswith("4 already scored, 4 to go")
        list(ws.run(engine, plan))
        assert sorted(Path(p).name for p in engine.calls[0]) == ["broken.jpg", "p1.jpg", "p2.jpg", "p9.jpg"]
        rec = ws.results[card.key][str(folder / "p1.jpg")]
        assert rec.file_sha256 == hashlib.sha256(b"longer content than before").hexdigest()  # not the old one
        assert ws.results[card.key][str(folder / "broken.jpg")].ok
        assert ws.to_score(card).empty


def test_changed_threshold_re_decides_restored_rows_from_stored_p(folder, tmp_path):
    card = fake_card(threshold=0.5)
    with Workspace.open(folder, tmp_path / "s") as ws:
        run_all(ws, FakeEngine(card))
        before = {p: r for p, r in ws.results[card.key].items()}
    with Workspace.open(folder, tmp_path / "s") as ws:
        engine = FakeEngine(card)
        plan, run, records = run_all(ws, engine, threshold=0.99)
        assert engine.calls == [[str(folder / "broken.jpg")]]  # only the error row is scored again
        assert len(plan.redecide) == 6 and run.status == STATUS_FINISHED
        for rec in records:
            if rec.ok and rec.path in before:
                assert rec.p_mpox == before[rec.path].p_mpox and rec.threshold == 0.99
                assert rec.prediction == ("mpox" if rec.p_mpox >= 0.99 else "not_mpox")
        stored = {r.path: r for r in ws.session.results()}
        assert all(r.threshold == 0.99 for r in stored.values())  # the session says what the output says
    with pytest.raises(ValueError, match="between 0 and 1"):
        ws.to_score(card, 1.5)


def test_an_engine_that_ignores_the_threshold_is_re_decided(folder):
    card = fake_card(threshold=0.5)
    ws = Workspace(folder)
    _plan, _run, records = run_all(ws, FakeEngine(card), threshold=0.0)
    assert all(r.prediction == "mpox" and r.threshold == 0.0 for r in records if r.ok)


@pytest.mark.parametrize("how, status", [("cancel", STATUS_CANCELLED), ("fail", STATUS_FAILED),
                                         ("interrupt", STATUS_INTERRUPTED), ("finish", STATUS_FINISHED)])
def test_one_status_vocabulary_and_results_so_far_are_kept(folder, tmp_path, how, status):
    card = fake_card()
    engine = FakeEngine(card, batch_size=2, fail_after=3 if how == "fail" else None,
                        interrupt_after=3 if how == "interrupt" else None)
    cancel = CancelToken()
    with Workspace.open(folder, tmp_path / "s") as ws:
        run = ws.run(engine, ws.to_score(card), cancel=cancel)
        got = []
        expected_error = {"fail": RuntimeError, "interrupt": KeyboardInterrupt}.get(how)
        try:
            for rec in run:
                got.append(rec)
                if how == "cancel" and len(got) == 2:
                    cancel.cancel()
        except BaseException as exc:  # noqa: BLE001
            assert expected_error is not None and isinstance(exc, expected_error)
        assert run.status == status
        (stored_run,) = ws.session.runs()
        assert stored_run["status"] == status
        assert len(ws.session.results()) == len(got)  # what the caller saw is committed, nothing more
        finished = ws.session.audit("run_finished")
        assert [e["details"]["status"] for e in finished] == [status]


def test_commits_once_per_engine_batch(folder, tmp_path):
    card = fake_card()
    seen = []
    with Workspace.open(folder, tmp_path / "s") as ws:
        for rec in ws.run(FakeEngine(card, batch_size=3), ws.to_score(card)):
            seen.append(len(ws.session.results()))
    # A batch (3, the engine's batch size) is committed when it is complete, before its last record is
    # handed on; the last, short batch when the engine is done.
    assert seen == [0, 0, 3, 3, 3, 6, 6]
    with SessionStore.open(tmp_path / "s") as store:
        assert len(store.results()) == 7


def test_session_write_failure_is_one_line_and_the_run_is_failed(folder, tmp_path, monkeypatch):
    card = fake_card()
    with Workspace.open(folder, tmp_path / "s") as ws:
        def full(*_a, **_k):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(ws.session, "add_results", full)
        run = ws.run(FakeEngine(card), ws.to_score(card))
        with pytest.raises(WorkspaceError, match="cannot write the session .*disk is full"):
            list(run)
        assert run.status == STATUS_FAILED


def test_counts_are_photos_and_multi_model_csv_has_one_row_per_photo(folder, tmp_path):
    a, b = fake_card("alpha"), fake_card("beta", threshold=0.6)
    with Workspace.open(folder, tmp_path / "s") as ws:
        run_all(ws, FakeEngine(a))
        run_all(ws, FakeEngine(b))
        counts = ws.counts()
        assert counts["photos"] == 7 and counts["with_result"] == 7 and counts["errors"] == 1
        assert sum(counts["predictions"].values()) == 6
        assert sum(counts["agreement"].values()) == 7 and counts["agreement"]["n/a"] == 1
        out = ws.export_csv(tmp_path / "wide.csv")
    from core.store.csvio import read_results_csv

    rows = read_results_csv(out)
    assert len(rows) == 7
    assert {"p_mpox__alpha", "p_mpox__beta", "prediction__beta", "agreement", "reviewer_label"} <= set(rows[0])
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert broken["status"] == "error" and broken["agreement"] == "n/a" and "empty" in broken["error"]


def test_each_export_writes_exactly_one_audit_entry_of_one_shape(folder, tmp_path, monkeypatch):
    card = fake_card()
    import core.reports

    def fake_pdf(records, out_path, **kw):
        Path(out_path).write_bytes(b"%PDF-1.4 fake")

    monkeypatch.setattr(core.reports, "write_pdf_report", fake_pdf)
    with Workspace.open(folder, tmp_path / "s") as ws:
        run_all(ws, FakeEngine(card))
        ws.export_csv(tmp_path / "a.csv")
        export_pdf(ws, tmp_path / "a.pdf", cards=[card])
        entries = ws.session.audit(ACTION_EXPORTED)
    assert [e["details"]["kind"] for e in entries] == ["csv", "pdf"]
    for e in entries:
        assert set(e["details"]) == {"kind", "path", "photos", "models"}
        assert e["details"]["photos"] == 7 and e["details"]["models"] == [card.key]


def test_review_and_clear_review_are_stored_and_audited(folder, tmp_path):
    with Workspace.open(folder, tmp_path / "s", actor="alice") as ws:
        path = ws.paths[0]
        ws.review(path, "mpox")
        assert ws.reviews[path]["label"] == "mpox" and ws.reviews[path]["reviewer"] == "alice"
        ws.clear_review(path)
        assert path not in ws.reviews
    with Workspace.open(folder, tmp_path / "s") as ws:
        assert ws.reviews == {}
        audit = [(e["details"]["old_label"], e["details"]["new_label"]) for e in ws.session.audit("review")]
        assert audit == [(None, "mpox"), ("mpox", None)]


def test_non_utf8_file_name_becomes_an_escaped_row_and_resumes(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(str(folder)) + b"/caf\xe9.jpg"
    with open(raw, "wb") as fh:
        fh.write(b"some bytes")
    card = fake_card()
    with Workspace.open(folder, tmp_path / "s") as ws:
        (path,) = ws.paths
        assert path.endswith("caf\\xe9.jpg")
        _p, run, records = run_all(ws, FakeEngine(card))
        assert records[0].ok and records[0].path == path
        ws.export_csv(tmp_path / "out.csv")
    assert "caf\\xe9.jpg" in (tmp_path / "out.csv").read_text(encoding="utf-8")
    with Workspace.open(folder, tmp_path / "s") as ws:
        assert ws.to_score(card).empty  # the stored escaped name matches the file on disk


def test_a_session_that_is_a_file_or_garbage_is_a_one_line_error(folder, tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("not a session")
    with pytest.raises(WorkspaceError, match="is a file"):
        Workspace.open(folder, junk)
    garbage = tmp_path / "g"
    garbage.mkdir()
    (garbage / "session.sqlite").write_bytes(b"garbage" * 1000)
    with pytest.raises(WorkspaceError, match="session"):
        Workspace.open(folder, garbage)


def test_session_format_3_and_later_stores_file_size_and_mtime(folder, tmp_path):
    card = fake_card()
    with Workspace.open(folder, tmp_path / "s") as ws:
        run_all(ws, FakeEngine(card))
    with SessionStore.open(tmp_path / "s") as store:
        assert store.format_version >= 3
        rec = next(r for r in store.results() if r.path.endswith("p0.jpg"))
        st = (folder / "p0.jpg").stat()
        assert (rec.file_size, rec.file_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_csv_is_written_row_by_row_and_published_only_at_the_end(folder, tmp_path):
    card = fake_card()
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    ws = Workspace(folder)
    plan = ws.to_score(card)
    stream = ws.csv_stream(out, [card.key], [plan])
    seen = []
    for rec in ws.run(FakeEngine(card), plan):
        stream.add(rec)
        seen.append(len(stream.writer.partial.read_text().splitlines()) - 1)  # rows on disk, header aside
        assert out.read_text() == "previous\n"
    assert seen == list(range(1, 8))
    stream.close()
    assert len(out.read_text().splitlines()) == 8 and not stream.writer.partial.exists()


def test_format_2_session_is_migrated_and_keeps_results_and_reviews(folder, tmp_path):
    db = tmp_path / "old" / "session.sqlite"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, model TEXT NOT NULL, model_version TEXT NOT NULL,
            model_sha256 TEXT NOT NULL, threshold REAL, app_version TEXT NOT NULL, folder TEXT NOT NULL,
            started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL);
        CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id),
            path TEXT NOT NULL, status TEXT NOT NULL, p_mpox REAL, prediction TEXT, flag TEXT NOT NULL DEFAULT '',
            ood_score REAL, model TEXT NOT NULL DEFAULT '', model_version TEXT NOT NULL DEFAULT '',
            model_sha256 TEXT NOT NULL DEFAULT '', threshold REAL, file_sha256 TEXT, error TEXT NOT NULL DEFAULT '',
            timestamp TEXT NOT NULL, UNIQUE (model_sha256, path));
        CREATE INDEX results_run ON results(run_id);
        CREATE TABLE reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,
            label TEXT NOT NULL CHECK (label IN ('mpox', 'not_mpox', 'unsure')), reviewer TEXT NOT NULL DEFAULT '',
            time TEXT NOT NULL);
        CREATE INDEX reviews_path ON reviews(path);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, details TEXT NOT NULL DEFAULT '{}');
        PRAGMA user_version = 2;
    """)
    card = fake_card()
    p0 = str(folder / "p0.jpg")
    digest = hashlib.sha256((folder / "p0.jpg").read_bytes()).hexdigest()
    conn.execute("INSERT INTO runs VALUES ('r1', 'fake', '1.0', ?, 0.5, '0.1', ?, 't', 't', 'finished')",
                 (card.model_sha256, str(folder)))
    conn.execute("INSERT INTO results (run_id, path, status, p_mpox, prediction, model, model_version, model_sha256,"
                 " threshold, file_sha256, timestamp) VALUES ('r1', ?, 'ok', 0.7, 'mpox', 'fake', '1.0', ?, 0.5, ?, 't')",
                 (p0, card.model_sha256, digest))
    conn.execute("INSERT INTO reviews (path, label, reviewer, time) VALUES (?, 'mpox', 'bob', 't')", (p0,))
    conn.commit()
    conn.close()
    with Workspace.open(folder, db.parent) as ws:
        assert ws.session.format_version == FORMAT_VERSION
        # A card that lists no files is keyed by its weights' SHA-256 alone (core.records.scoring_digest), as the
        # format-2 row is: its result is kept. (A bundle's card is keyed by its scoring digest and scores again:
        # tests/test_stored_verdicts.py.)
        assert ws.results[card.key][p0].p_mpox == 0.7 and ws.reviews[p0]["label"] == "mpox"
        plan = ws.to_score(card)
        assert p0 not in plan.score and plan.kept == 1  # unchanged bytes: kept (hashed, no size/mtime stored)
        ws.clear_review(p0)  # the wider CHECK of format 3
        assert ws.session.audit("migrated")[0]["details"]["from_format"] == 2
