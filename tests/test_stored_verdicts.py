"""Session format 5: a folder's facts are functions of what the session stores for that source and model.

Each model's shift verdict is a test of every in-scope photo stored for it in that source (seeded from that set), so
cancel + resume, resume with new photos, two manifests over one folder and a reopen agree with a one-shot run;
results are keyed by the scoring digest (a card that changes p(mpox) scores again, a threshold only re-decides);
a renamed photo keeps its results and review; every older session format migrates with its reviews."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from core.models.operating_point import DEFAULT, OUT_OF_COLLECTION
from tests.helpers import make_image_folder, make_photo
from tests.test_never_miss import _alarm_bundle


def _cli(*args) -> int:
    from core.cli import main

    return main([str(a) for a in args])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _verdict(photos: Path, session: Path, bdir: Path, source: Path | None = None) -> dict:
    from core.models.bundle import load_bundle
    from core.store.workspace import Workspace

    with Workspace.open(photos, session) as ws:
        if source is not None:
            ws.source = str(source)
        return ws.attach(load_bundle(bdir))


# --- the verdict is a function of the stored set --------------------------------------------------------------
def test_a_cancelled_run_then_a_resume_gives_the_verdict_of_a_one_shot_run(tmp_path, capsys):
    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine
    from core.progress import CancelToken
    from core.store.workspace import STATUS_CANCELLED, Workspace

    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=20, size=(40, 32))
    assert _cli("classify", photos, "--model", bdir, "--session", tmp_path / "one", "--quiet") == 0
    one_shot = _verdict(photos, tmp_path / "one", bdir)
    assert one_shot["detected"] and one_shot["n"] == 40

    # Cancel after 10 photos (too few to test), then resume: the stored set is the same 40 photos.
    bundle = load_bundle(bdir)
    with Workspace.open(photos, tmp_path / "two") as ws:
        ws.attach(bundle)
        cancel = CancelToken()
        run = ws.run(InferenceEngine(bundle, batch_size=5), ws.to_score(bundle.card), cancel=cancel)
        for i, _rec in enumerate(run):
            if i == 9:
                cancel.cancel()
        assert run.status == STATUS_CANCELLED and run.verdict is not None and run.verdict["p_value"] is None
    assert _cli("classify", photos, "--model", bdir, "--session", tmp_path / "two", "--resume", "--quiet") == 0
    resumed = _verdict(photos, tmp_path / "two", bdir)
    capsys.readouterr()
    for field in ("detected", "p_value", "statistic", "n", "fingerprint", "operating_point"):
        assert resumed[field] == one_shot[field], field


def test_a_resume_with_new_photos_tests_every_stored_photo_not_only_the_new_ones(tmp_path, capsys):
    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=16, size=(40, 32))
    session = tmp_path / "s"
    assert _cli("classify", photos, "--model", bdir, "--session", session, "--quiet") == 0
    first = _verdict(photos, session, bdir)
    assert first["detected"] and first["n"] == 32
    for i in range(12):   # 12 new photos: alone they are too few to test
        make_photo((40, 32), seed=500 + i).save(photos / "mpox" / f"new_{i:02d}.jpg")
    summary = tmp_path / "sum.json"
    assert _cli("classify", photos, "--model", bdir, "--session", session, "--resume", "--summary", summary,
                "--quiet") == 0
    capsys.readouterr()
    shift = json.loads(summary.read_text())["shift"]
    assert shift["n"] == 44 and shift["detected"] and shift["operating_point"] == OUT_OF_COLLECTION
    # The same 44 photos in a fresh session give the same verdict.
    assert _cli("classify", photos, "--model", bdir, "--session", tmp_path / "fresh", "--quiet") == 0
    fresh = _verdict(photos, tmp_path / "fresh", bdir)
    capsys.readouterr()
    assert (fresh["p_value"], fresh["n"], fresh["fingerprint"]) == (shift["p_value"], shift["n"], shift["fingerprint"])


def test_two_manifests_over_one_folder_keep_verdicts_of_their_own(tmp_path, capsys):
    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=18, size=(40, 32))
    files = sorted(photos.rglob("*.jpg"))
    big, small = tmp_path / "big.csv", tmp_path / "small.csv"
    big.write_text("path\n" + "\n".join(str(f) for f in files) + "\n")
    small.write_text("path\n" + "\n".join(str(f) for f in files[:12]) + "\n")
    session = tmp_path / "s"
    assert _cli("classify", big, "--model", bdir, "--session", session, "--summary", tmp_path / "b.json",
                "--quiet") == 0
    assert _cli("classify", small, "--model", bdir, "--session", session, "--resume",
                "--summary", tmp_path / "s.json", "--quiet") == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "b.json").read_text())["shift"]["detected"]
    small_shift = json.loads((tmp_path / "s.json").read_text())["shift"]
    assert small_shift["n"] == 12 and not small_shift["detected"]   # its own stored set: too few to test
    # The small manifest's quiet verdict does not un-flag the big one.
    assert _verdict(photos, session, bdir, source=big)["detected"]


def test_a_killed_run_is_tested_again_at_the_next_open(tmp_path, capsys):
    """A run killed before it could end leaves results but no verdict for them: the next open computes it."""
    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine
    from core.store.workspace import Workspace

    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=18, size=(40, 32))
    bundle = load_bundle(bdir)
    session = tmp_path / "s"
    with Workspace.open(photos, session) as ws:
        run = iter(ws.run(InferenceEngine(bundle, batch_size=36), ws.to_score(bundle.card)))
        for _ in range(36):   # the batch is committed; the process "dies" before the run ends (no verdict)
            next(run)
        ws.session.close()
    with Workspace.open(photos, session) as ws:
        assert ws.verdict_for(bundle.card.key) is None          # nothing stored fits the stored set
        verdict = ws.attach(bundle)
        assert verdict["detected"] and verdict["n"] == 36
        assert ws.point_for(bundle.card).name == OUT_OF_COLLECTION


def test_a_malformed_stored_verdict_is_ignored_and_computed_again(tmp_path, capsys):
    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=18, size=(40, 32))
    session = tmp_path / "s"
    assert _cli("classify", photos, "--model", bdir, "--session", session, "--quiet") == 0
    good = _verdict(photos, session, bdir)
    conn = sqlite3.connect(session / "session.sqlite")
    forged = {**good, "p_value": "abc", "detected": False}
    conn.execute("INSERT INTO audit (time, actor, action, details) VALUES ('t', 'x', 'shift_test', ?)",
                 (json.dumps({"source": good["source"], "model_key": good["model_key"],
                              "fingerprint": good["fingerprint"], "verdict": forged}),))
    conn.execute("INSERT INTO audit (time, actor, action, details) VALUES ('t', 'x', 'shift_test', '[1, 2]')")
    conn.commit()
    conn.close()
    from core.store.workspace import Workspace

    with Workspace.open(photos, session) as ws:
        assert ws.verdict_for(good["model_key"]) is None    # not trusted without the model
    again = _verdict(photos, session, bdir)
    assert again["detected"] and again["p_value"] == good["p_value"]
    capsys.readouterr()


def test_the_default_point_decides_a_source_below_thirty_photos(tmp_path, capsys):
    from core.models.bundle import read_card
    from core.store.workspace import Workspace

    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=5, size=(40, 32))
    assert _cli("classify", photos, "--model", bdir, "--session", tmp_path / "s", "--quiet") == 0
    capsys.readouterr()
    with Workspace.open(photos, tmp_path / "s") as ws:
        assert ws.point_for(read_card(bdir)).name == DEFAULT


# --- results belong to what scored them; reviews to a photo's content ------------------------------------------
def test_a_resealed_card_with_another_temperature_scores_again_and_a_threshold_only_redecides(tmp_path, capsys):
    from core.models.bundle import read_card, write_card

    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=4, size=(40, 32))
    session = tmp_path / "s"
    out = tmp_path / "a.csv"
    assert _cli("classify", photos, "--model", bdir, "--session", session, "--csv", out, "--quiet") == 0
    first = _rows(out)
    assert first[0]["scoring_digest"].startswith("sd1-")
    capsys.readouterr()

    assert _cli("classify", photos, "--model", bdir, "--session", session, "--resume", "--threshold", "0.3",
                "--quiet") == 0
    err = capsys.readouterr().err
    assert "8 already scored, 0 to go" in err

    hot = tmp_path / "hot"
    shutil.copytree(bdir, hot)
    card = read_card(hot)
    card.temperature = 8.0
    write_card(hot, card)
    out2 = tmp_path / "b.csv"
    assert _cli("classify", photos, "--model", hot, "--session", session, "--resume", "--csv", out2, "--quiet") == 0
    err = capsys.readouterr().err
    assert "0 already scored, 8 to go" in err
    second = _rows(out2)
    assert {r["scoring_digest"] for r in second} != {r["scoring_digest"] for r in first}
    assert [r["p_mpox"] for r in second] != [r["p_mpox"] for r in first]


def test_a_renamed_photo_keeps_its_result_and_review_with_no_error_row(tmp_path, capsys):
    from core.store.workspace import Workspace

    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=3, size=(40, 32))
    session = tmp_path / "s"
    assert _cli("classify", photos, "--model", bdir, "--session", session, "--quiet") == 0
    old = photos / "mpox" / "mpox_00.jpg"
    with Workspace.open(photos, session) as ws:
        ws.review(str(old), "mpox", "ana")
    renamed = photos / "other" / "renamed.jpg"
    old.rename(renamed)
    copy = photos / "mpox" / "copy_of_01.jpg"
    shutil.copy(photos / "mpox" / "mpox_01.jpg", copy)
    out = tmp_path / "r.csv"
    assert _cli("classify", photos, "--model", bdir, "--session", session, "--resume", "--csv", out,
                "--quiet") == 0
    err = capsys.readouterr().err
    assert f"moved: {old} -> {renamed}" in err and "1 to go" in err   # only the copy is new
    rows = {r["path"]: r for r in _rows(out)}
    assert str(old) not in rows and all(r["status"] == "ok" for r in rows.values())
    assert rows[str(renamed)]["reviewer_label"] == "mpox" and rows[str(copy)]["reviewer_label"] == ""
    with Workspace.open(photos, session) as ws:
        moves = ws.session.audit("moved")
        assert [(m["details"]["from"], m["details"]["to"]) for m in moves] == [(str(old), str(renamed))]


# --- every older format migrates once, with every review -----------------------------------------------------
@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_older_session_format_migrates_to_5_keeping_reviews_and_readable_results(tmp_path, version):
    from core.store.session import APPLICATION_ID, FORMAT_VERSION, SessionStore
    from core.store.workspace import Workspace
    from tests.session_formats import write_old_session

    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo((40, 32), seed=1).save(photos / "a.jpg")
    sha = hashlib.sha256((photos / "a.jpg").read_bytes()).hexdigest()
    db = write_old_session(tmp_path / "s" / "session.sqlite", version, str(photos / "a.jpg"), sha, "c" * 64)
    if version >= 3:   # read-only first: nothing is upgraded
        with SessionStore.open_read_only(tmp_path / "s") as ro:
            assert ro.format_version == version and ro.results()[0].model_key == "c" * 64
    with Workspace.open(photos, tmp_path / "s") as ws:
        assert ws.session.format_version == FORMAT_VERSION == 5
        assert ws.reviews[str(photos / "a.jpg")]["label"] == "mpox"
        assert ws.results["c" * 64][str(photos / "a.jpg")].p_mpox == 0.7
        assert ws.session.audit("migrated")[-1]["details"]["from_format"] == version
        ws.session.log("after")   # the audit guards hold after the migration
        with pytest.raises(sqlite3.DatabaseError):
            ws.session._conn.execute("DELETE FROM audit")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


# --- a database we did not create is never changed ------------------------------------------------------------
@pytest.mark.parametrize("user_version", [0, 4])
def test_a_foreign_database_with_our_table_names_is_refused_untouched(tmp_path, user_version, capsys):
    db = tmp_path / "s" / "session.sqlite"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE runs (a); CREATE TABLE results (b); CREATE TABLE reviews (c); "
                       f"CREATE TABLE audit (d); PRAGMA user_version = {user_version};")
    conn.commit()
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    photos = make_image_folder(tmp_path / "photos", n_per_class=1, size=(40, 32))
    code = _cli("classify", photos, "--session", tmp_path / "s", "--quiet")
    err = capsys.readouterr().err
    assert code == 2 and "another program" in err and "Traceback" not in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (db.parent / "session.sqlite-wal").exists()


def test_a_file_with_our_mark_but_a_foreign_schema_is_refused(tmp_path):
    from core.store.session import APPLICATION_ID, SessionError, SessionStore

    db = tmp_path / "s" / "session.sqlite"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.executescript(f"CREATE TABLE notes (x); PRAGMA application_id = {APPLICATION_ID};")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(SessionError, match="another program"):
        SessionStore.open(tmp_path / "s")
    assert db.read_bytes() == before


# --- one shift test per model when a run ends, never one per photo ----------------------------------------------
def test_a_classify_run_tests_the_stored_set_once_per_model_not_once_per_photo(tmp_path, monkeypatch, capsys):
    """The CSV is streamed row by row while the run goes on; each row names the folder's verdict. That verdict is
    the one of the set stored when the run began until the run ends (a partial set is never tested), then the
    stored set is tested once: 1.4.0's first build tested every partial set (301 tests for 300 photos)."""
    import core.triage.shift

    calls = []
    real = core.triage.shift.folder_shift

    def counting(*args, **kwargs):
        calls.append(len(args[1]) if len(args) > 1 else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(core.triage.shift, "folder_shift", counting)
    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=20, size=(40, 32))
    out = tmp_path / "out.csv"
    assert _cli("classify", photos, "--model", bdir, "--session", tmp_path / "s", "--csv", out, "--quiet") == 0
    capsys.readouterr()
    assert len(calls) <= 2, calls            # the empty set when the run began, the 40 photos when it ended
    assert calls[-1] == 40
    rows = _rows(out)
    assert len(rows) == 40
    # Every row says what the workspace says now, under the alarm the run's end raised (rows streamed before it
    # were written again from what is stored): the same file as an export from the reopened session.
    from core.models.bundle import load_bundle
    from core.store.workspace import Workspace

    with Workspace.open(photos, tmp_path / "s") as ws:
        assert ws.attach(load_bundle(bdir))["detected"]
        ws.export_csv(tmp_path / "again.csv")
    assert rows == _rows(tmp_path / "again.csv")
    assert all("widened review band" in r["needs_review"] for r in rows)


def test_a_streamed_csv_row_that_changed_before_close_is_written_again(tmp_path):
    """CsvStream.close publishes what the workspace says when it closes: a photo reviewed after its row was
    streamed has its review in the published file."""
    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine
    from core.store.workspace import Workspace

    bdir = _alarm_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=4, size=(40, 32))
    out = tmp_path / "out.csv"
    bundle = load_bundle(bdir)
    with Workspace.open(photos, tmp_path / "s") as ws:
        ws.attach(bundle)
        plan = ws.to_score(bundle.card)
        stream = ws.csv_stream(out, [plan.key], [plan])
        for rec in ws.run(InferenceEngine(bundle, batch_size=4), plan):
            stream.add(rec)
        first = ws.paths[0]
        ws.review(first, "mpox", reviewer="dr test")
        stream.close()
    rows = {r["path"]: r for r in _rows(out)}
    assert len(rows) == 8
    assert rows[first]["reviewer_label"] == "mpox"
