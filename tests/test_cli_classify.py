"""`classify` through the workspace: the holes of issue 12 (3, 4, 8, full disk), several models with one
row per photo, --summary, --engine, resume semantics. Runs the CLI in-process (core.cli.main) so failures
can be injected with monkeypatch; tiny bundles from tests/helpers.py."""

from __future__ import annotations

import csv
import errno
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from core.cli import main
from tests.helpers import make_image_folder, make_tiny_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return (make_tiny_bundle(root / "alpha", name="alpha", seed=0),
            make_tiny_bundle(root / "beta", name="beta", seed=1))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = make_image_folder(tmp_path / "photos", n_per_class=3, size=(40, 32))
    (root / "other" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def cli(capsys, *args) -> tuple[int, str]:
    code = main(["classify", *[str(a) for a in args], "--quiet"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


# --- hole 3: no cut-down CSV, odd names ----------------------------------------------------------------
def test_csv_writer_keeps_the_previous_file_when_writing_fails(tmp_path):
    from core.store.csvio import ResultCsvWriter
    from core.records import ResultRecord

    out = tmp_path / "out.csv"
    out.write_text("previous,complete\n")
    with pytest.raises(RuntimeError):
        with ResultCsvWriter(out) as writer:
            writer.write(ResultRecord(path="a.jpg", status="ok", p_mpox=0.5))
            raise RuntimeError("disk pulled out")
    assert out.read_text() == "previous,complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no partial file left behind


def test_engine_failure_mid_run_leaves_the_previous_csv_as_it_was(capsys, folder, bundles, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    from core.triage.inference import InferenceEngine

    real_run = InferenceEngine.run

    def breaks(self, paths, progress=None, cancel=None):
        for i, rec in enumerate(real_run(self, paths, progress, cancel)):
            if i == 3:
                raise RuntimeError("GPU fell off")
            yield rec

    monkeypatch.setattr(InferenceEngine, "run", breaks)
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", out, "--batch-size", "2")
    assert code == 2 and "GPU fell off" in err and len(error_lines(err)) == 1
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.csv")] == []


def test_non_utf8_file_name_is_an_escaped_row_also_with_session_and_resume(capsys, folder, bundles, tmp_path):
    raw = os.fsencode(str(folder)) + b"/caf\xe9.jpg"
    with open(raw, "wb") as fh:
        fh.write((folder / "mpox" / "mpox_00.jpg").read_bytes())
    out, session = tmp_path / "out.csv", tmp_path / "session"
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", out, "--session", session)
    assert code == 0, err
    row = next(r for r in rows_of(out) if "caf" in r["path"])
    assert row["path"].endswith("caf\\xe9.jpg") and row["status"] == "ok"
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", out, "--session", session, "--resume")
    assert code == 0, err
    assert "Resuming: 7 already scored, 1 to go" in err  # only broken.jpg (an error row) is retried
    assert len(rows_of(out)) == 8


# --- hole 4: outputs never overwrite inputs or each other -------------------------------------------
@pytest.mark.parametrize("case", ["csv_is_a_photo", "report_in_folder", "csv_equals_report", "session_in_folder",
                                  "summary_in_bundle"])
def test_outputs_that_are_inputs_or_collide_are_refused(capsys, folder, bundles, tmp_path, case):
    photo = folder / "mpox" / "mpox_00.jpg"
    before = photo.read_bytes()
    args = {
        "csv_is_a_photo": ["--csv", photo],
        "report_in_folder": ["--report", folder / "other" / "b.pdf"],
        "csv_equals_report": ["--csv", tmp_path / "x", "--report", tmp_path / "x"],
        "session_in_folder": ["--session", folder / "sess"],
        "summary_in_bundle": ["--summary", bundles[0] / "model_card.json"],
    }[case]
    code, err = cli(capsys, folder, "--model", bundles[0], *args)
    assert code == 2 and len(error_lines(err)) == 1, err
    assert any(w in err for w in ("inside the folder", "overwrite an input", "same path as", "inside the model bundle")), err
    assert photo.read_bytes() == before
    assert not (folder / "sess").exists() and not (folder / "other" / "b.pdf").exists()
    assert not (tmp_path / "x").exists()


# --- hole 8: empty output names ----------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--csv", "--report", "--summary", "--session"])
def test_empty_output_name_is_an_error(capsys, folder, bundles, option):
    code, err = cli(capsys, folder, "--model", bundles[0], option, "")
    assert code == 2 and f"{option} needs a" in err


# --- full disk: one line, exit 2, nothing half-published ---------------------------------------------
def test_sqlite_full_disk_is_one_line_and_keeps_the_previous_csv(capsys, folder, bundles, tmp_path, monkeypatch):
    from core.store.session import SessionStore

    out = tmp_path / "out.csv"
    out.write_text("previous\n")

    def full(self, run_id, records):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SessionStore, "add_results", full)
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", out, "--session", tmp_path / "s")
    assert code == 2 and "disk is full" in err and len(error_lines(err)) == 1
    assert out.read_text() == "previous\n"


def test_csv_full_disk_is_one_line_and_keeps_the_previous_csv(capsys, folder, bundles, tmp_path, monkeypatch):
    from core.store.csvio import ResultCsvWriter

    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    real = ResultCsvWriter.write_row

    def write_row(self, row):
        if self.rows >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, row)

    monkeypatch.setattr(ResultCsvWriter, "write_row", write_row)
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", out)
    assert code == 2 and "No space left on device" in err and len(error_lines(err)) == 1
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pdf_full_disk_is_one_line_and_keeps_the_previous_report(capsys, folder, bundles, tmp_path, monkeypatch):
    import core.reports

    report = tmp_path / "r.pdf"
    report.write_bytes(b"%PDF previous")

    def half_written(records, out_path, **kw):
        Path(out_path).write_bytes(b"%PDF-1.4 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(core.reports, "write_pdf_report", half_written)
    code, err = cli(capsys, folder, "--model", bundles[0], "--report", report)
    assert code == 2 and "No space left on device" in err and len(error_lines(err)) == 1
    assert report.read_bytes() == b"%PDF previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- several models: one row per photo ---------------------------------------------------------------
def test_two_models_write_one_row_per_photo_side_by_side(capsys, folder, bundles, tmp_path):
    out, summary = tmp_path / "wide.csv", tmp_path / "summary.json"
    code, err = cli(capsys, folder, "--model", bundles[0], "--model", bundles[1], "--csv", out,
                    "--summary", summary)
    assert code == 0, err
    rows = rows_of(out)
    assert len(rows) == 7 and len({r["path"] for r in rows}) == 7
    cols = list(rows[0])
    assert cols[:2] == ["path", "status"]
    for name in ("alpha", "beta"):
        for f in ("p_mpox", "prediction", "flag", "ood_score", "model", "model_version", "model_sha256"):
            assert f"{f}__{name}" in cols
    assert "reviewer_label" not in cols  # no session, no reviewer columns
    for r in rows:
        if r["status"] == "ok":
            same = r["prediction__alpha"] == r["prediction__beta"]
            assert r["agreement"] == ("agree" if same else "disagree")
        else:
            assert r["agreement"] == "n/a" and "broken.jpg" in r["error"]
    data = json.loads(summary.read_text())
    assert data["photos"] == 7 and data["errors"] == 1 and data["status"] == "finished"
    # 6 scored photos are too few for the shift test: it says so instead of guessing.
    assert data["shift"]["detected"] is False and data["shift"]["p_value"] is None and data["shift"]["reason"]
    assert [m["name"] for m in data["models"]] == ["alpha", "beta"]
    assert sum(data["agreement"].values()) == 7
    assert "Done: 7 photos" in err


def test_comma_list_of_models_is_the_same_as_repeating_in_any_order(capsys, folder, bundles, tmp_path):
    code, err = cli(capsys, folder, "--model", f"{bundles[1]},{bundles[0]}", "--csv", tmp_path / "w.csv")
    assert code == 0, err
    code, err = cli(capsys, folder, "--model", bundles[0], "--model", bundles[1], "--csv", tmp_path / "r.csv")
    assert code == 0, err
    cols = list(rows_of(tmp_path / "w.csv")[0])
    assert cols.index("p_mpox__alpha") < cols.index("p_mpox__beta")  # one fixed model order (name, version)
    strip = lambda rows: [dict(r, timestamp="") for r in rows]  # noqa: E731
    assert strip(rows_of(tmp_path / "w.csv")) == strip(rows_of(tmp_path / "r.csv"))


# --- resume semantics --------------------------------------------------------------------------------
def test_resume_with_another_threshold_re_decides_stored_rows(capsys, folder, bundles, tmp_path):
    session, out = tmp_path / "s", tmp_path / "out.csv"
    code, err = cli(capsys, folder, "--model", bundles[0], "--session", session, "--csv", out)
    assert code == 0, err
    first = {r["path"]: r for r in rows_of(out)}
    code, err = cli(capsys, folder, "--model", bundles[0], "--session", session, "--resume", "--threshold", "0",
                    "--csv", out)
    assert code == 0, err
    assert "threshold 0.000" in err and "re-decided at threshold 0.000" in err
    for r in rows_of(out):
        if r["status"] == "ok":
            assert r["p_mpox"] == first[r["path"]]["p_mpox"]  # the same score, not re-scored
            assert r["threshold"] == "0.000000" and r["prediction"] == "mpox"


def test_resume_retries_error_rows(capsys, folder, bundles, tmp_path):
    session, out = tmp_path / "s", tmp_path / "out.csv"
    assert cli(capsys, folder, "--model", bundles[0], "--session", session)[0] == 0
    broken = folder / "other" / "broken.jpg"
    broken.write_bytes((folder / "other" / "other_00.jpg").read_bytes())
    code, err = cli(capsys, folder, "--model", bundles[0], "--session", session, "--resume", "--csv", out)
    assert code == 0 and "6 already scored, 1 to go (1 error)" in err
    assert all(r["status"] == "ok" for r in rows_of(out))
    # A session: reviewer columns, then why the photo needs review (core.triage.reasons).
    assert list(rows_of(out)[0])[-4:] == ["reviewer_label", "reviewer", "review_time", "needs_review"]


# --- engines -----------------------------------------------------------------------------------------
def test_ray_engine_without_the_scale_extra_is_one_line(capsys, folder, bundles, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, err = cli(capsys, folder, "--model", bundles[0], "--engine", "ray")
    assert code == 2
    assert err.strip().endswith('--engine ray needs the scale extra: pip install -e ".[scale]"')
    assert len(err.strip().splitlines()) == 1


def test_another_engine_plugs_in_through_the_workspace(capsys, folder, bundles, tmp_path, monkeypatch):
    """--engine ray builds core.scale.RayEngine(bundle_ref, models_dir=None, address=None, actors=1, batch_size=32)
    and drives it like the local engine; here a stand-in that ignores --threshold (the workspace re-decides)."""
    import types

    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine

    made = {}

    class RayEngine:
        def __init__(self, bundle_ref, models_dir=None, address=None, actors=1, batch_size=32):
            made.update(bundle_ref=bundle_ref, address=address, actors=actors, batch_size=batch_size)
            self._local = InferenceEngine(load_bundle(bundle_ref), batch_size=batch_size)
            self.card = self._local.bundle.card
            self.batch_size = batch_size

        def run(self, paths, progress=None, cancel=None):
            return self._local.run(paths, progress=progress, cancel=cancel)

    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))
    scale = types.ModuleType("core.scale")
    scale.RayEngine = RayEngine
    monkeypatch.setitem(sys.modules, "core.scale", scale)
    out = tmp_path / "ray.csv"
    code, err = cli(capsys, folder, "--model", bundles[0], "--engine", "ray", "--address", "auto", "--actors", "3",
                    "--batch-size", "4", "--threshold", "0", "--csv", out)
    assert code == 0, err
    assert made == {"bundle_ref": str(bundles[0]), "address": "auto", "actors": 3, "batch_size": 4}
    assert "runtime ray" in err
    rows = rows_of(out)
    assert len(rows) == 7
    assert all(r["prediction"] == "mpox" and r["threshold"] == "0.000000" for r in rows if r["status"] == "ok")


# --- hole 7 and the origin of each model, as the CSV and summary show them --------------------------------
def test_links_leaving_the_folder_are_counted_and_an_unreadable_folder_leaves_a_csv_row(tmp_path, capsys, bundles,
                                                                                       folder, monkeypatch):
    import core.photos.images as images

    outside = make_image_folder(tmp_path / "elsewhere", n_per_class=2)
    (folder / "linked_outside").symlink_to(outside, target_is_directory=True)
    (folder / "photo_outside.jpg").symlink_to(next(outside.rglob("*.jpg")))
    locked = folder / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path):  # root reads chmod 000 folders, so the unreadable folder is simulated
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    out, summary = tmp_path / "out.csv", tmp_path / "summary.json"
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", out, "--summary", summary)
    assert code == 0
    rows = rows_of(out)
    assert not any("elsewhere" in r["path"] or "outside" in r["path"] for r in rows)  # not followed
    trace = [r for r in rows if r["path"] == str(locked)]
    assert len(trace) == 1 and trace[0]["status"] == "error" and "could not be read" in trace[0]["error"]
    data = json.loads(summary.read_text())
    assert data["skipped_links"] == 2 and data["unreadable_folders"] == [str(locked)]
    assert data["photos"] == 7  # the trace row is not a photo
    assert "2 symbolic link(s)" in err


def test_every_row_names_its_models_origin(tmp_path, capsys, bundles, folder):
    out = tmp_path / "one.csv"
    assert cli(capsys, folder, "--model", bundles[0], "--csv", out)[0] == 0
    assert {r["model_origin"] for r in rows_of(out)} == {"local model"}
    wide = tmp_path / "two.csv"
    assert cli(capsys, folder, "--model", bundles[0], "--model", bundles[1], "--csv", wide)[0] == 0
    row = rows_of(wide)[0]
    assert row["model_origin__alpha"] == row["model_origin__beta"] == "local model"


def test_a_shipped_release_is_named_as_such(tmp_path, capsys, folder):
    from core.models.bundle import default_models_dir

    if not (default_models_dir() / "mobilenetv2" / "model_card.json").is_file():
        pytest.skip("the shipped mobilenetv2 bundle is not in this checkout")
    out = tmp_path / "shipped.csv"
    assert cli(capsys, folder, "--model", "mobilenetv2", "--csv", out)[0] == 0
    assert {r["model_origin"] for r in rows_of(out)} == {"shipped release"}


# --- the shift alarm, end to end through classify ------------------------------------------------------------
def _photos(folder: Path, n: int, seed: int, bright: bool) -> Path:
    """Generated photos of skin (tests.helpers.make_photo); `bright` ones are overexposed by 40 grey levels, a
    different look that is still a skin photo to the not-a-skin-photo check (a blurred look no longer is)."""
    import numpy as np
    from PIL import Image

    from tests.helpers import make_photo

    folder.mkdir(parents=True)
    for i in range(n):
        img = make_photo((64, 48), seed * 1000 + i)
        if bright:
            img = Image.fromarray(np.clip(np.asarray(img).astype(float) + 40, 0, 255).astype(np.uint8))
        img.save(folder / f"p{i:03d}.png")
    return folder


def test_the_shift_alarm_fires_on_a_shifted_folder_and_stays_quiet_on_a_like_one(tmp_path, capsys):
    """A bundle that carries its training embeddings (embeddings.npz): classify's summary says whether the
    folder differs from them (core.triage.shift), as the PDF cover and the app's banner do."""
    import numpy as np

    from core.models.bundle import load_bundle
    from core.photos.images import load_rgb
    from core.photos.preprocess import to_model_input
    from tests.helpers import make_tiny_bundle

    base = make_tiny_bundle(tmp_path / "plain" / "tiny")
    ref_folder = _photos(tmp_path / "reference", 120, seed=1, bright=False)
    bundle = load_bundle(base)
    batch = np.stack([to_model_input(load_rgb(p), 32) for p in sorted(ref_folder.iterdir())])
    emb = np.asarray(bundle.forward(batch)[1], dtype=np.float16)
    npz = tmp_path / "embeddings.npz"
    np.savez_compressed(npz, embedding=emb, label=np.zeros(len(emb), np.int8),
                        source=np.array(["ref"] * len(emb)), split=np.array(["train"] * len(emb)))
    from core.models.bundle import ModelCard, save_bundle
    from tests.helpers import make_tiny_model

    card = ModelCard(name="tiny-emb", version="0.0.1", architecture="mobilenetv2", input_size=32, threshold=0.5,
                     uncertain_band=[0.45, 0.55])
    with_emb = save_bundle(make_tiny_model(32, 0), card, tmp_path / "models" / "tiny-emb",
                           extra_files={"embeddings.npz": npz})

    like, shifted = _photos(tmp_path / "like", 40, seed=2, bright=False), _photos(tmp_path / "shifted", 40, seed=3,
                                                                                    bright=True)
    verdicts = {}
    for name, folder in (("like", like), ("shifted", shifted)):
        summary = tmp_path / f"{name}.json"
        code, err = cli(capsys, folder, "--model", with_emb, "--summary", summary)
        assert code == 0
        verdicts[name] = json.loads(summary.read_text())["shift"]
        assert verdicts[name]["n"] == 40 and verdicts[name]["p_value"] is not None
    assert verdicts["shifted"]["detected"] is True and verdicts["shifted"]["p_value"] < 0.05
    assert verdicts["like"]["detected"] is False


def test_an_interrupt_while_writing_the_outputs_says_which_were_written(tmp_path, folder, bundles, capsys,
                                                                       monkeypatch):
    """Ctrl+C after the CSV was published but before the PDF: the CSV is the new file, the earlier PDF and summary
    are as they were, and two lines say which outputs this run wrote and which it did not (a late Ctrl+C left new
    and old files side by side without a word)."""
    import core.reports.workspace_pdf as workspace_pdf

    out = tmp_path / "out"
    out.mkdir()
    csv_path, pdf, summary = out / "r.csv", out / "r.pdf", out / "s.json"
    pdf.write_bytes(b"%PDF earlier")
    summary.write_text("{}", encoding="utf-8")

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(workspace_pdf, "export_pdf", interrupted)
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", csv_path, "--report", pdf, "--summary", summary)
    assert code == 130
    assert len(rows_of(csv_path)) == 7
    assert pdf.read_bytes() == b"%PDF earlier" and summary.read_text(encoding="utf-8") == "{}"
    lines = err.strip().splitlines()
    assert f"Interrupted after writing: CSV {csv_path}." in lines
    assert f"Not written (any earlier file there is unchanged): Report {pdf}; Summary {summary}." in lines


def test_a_folder_name_that_is_not_utf8_classifies_with_a_session(tmp_path, bundles, capsys):
    """A folder whose name holds a byte that is not UTF-8 and a newline: the run with --session finishes (the
    session stored the raw name and failed: "surrogates not allowed", blamed on the model), the folder is
    recorded escaped, and the header line is one line."""
    folder = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/dir\xff\nname"))
    make_image_folder(folder, n_per_class=3, size=(40, 32))
    session = tmp_path / "s"
    code, err = cli(capsys, folder, "--model", bundles[0], "--session", session, "--csv", tmp_path / "r.csv")
    assert code == 0, err
    header = err.splitlines()[0]
    assert "photos in " in header and "\\n" in header and header.endswith("Not a diagnosis.")
    with sqlite3.connect(session / "session.sqlite") as conn:
        folders = [r[0] for r in conn.execute("SELECT folder FROM runs")]
    assert folders and all("\\xff" in f for f in folders), folders   # escaped as the photo paths are
    assert len(rows_of(tmp_path / "r.csv")) == 6


def test_an_unwritable_parquet_folder_is_refused_before_any_photo_is_scored(tmp_path, folder, bundles, capsys,
                                                                             monkeypatch):
    """--parquet names a folder the run cannot write: one line, exit 2, before scoring (it was said only after
    the whole run). Tests may run as root, for whom chmod is no barrier, so W_OK is refused here."""
    pytest.importorskip("pyarrow")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr("core.store.outputs.os.access",
                        lambda p, mode, **kw: False if mode & os.W_OK and str(p).startswith(str(locked))
                        else real(p, mode, **kw))
    session = tmp_path / "s"
    code, err = cli(capsys, folder, "--model", bundles[0], "--parquet", locked / "shards", "--session", session)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--parquet" in err and "is not writable" in err
    assert not (session / "session.sqlite").exists()      # refused before anything ran


def test_an_empty_folder_says_no_photos_were_found_and_engine_options_without_ray_are_named(tmp_path, bundles,
                                                                                           capsys):
    """An empty folder (often the wrong one) says so in one line naming the extensions looked for; --actors
    without --engine ray is said to be ignored rather than silently dropped."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = cli(capsys, empty, "--model", bundles[0], "--model", bundles[1], "--actors", "2")
    assert code == 0
    lines = err.splitlines()
    assert sum(ln.startswith("No photos found in ") and ".jpg" in ln for ln in lines) == 1
    assert "warning: --actors and --address apply to --engine ray only; this run scores locally" in lines


def test_a_full_disk_while_writing_the_outputs_says_which_were_written(tmp_path, folder, bundles, capsys,
                                                                       monkeypatch):
    """The disk fills up after the CSV was published, while the PDF is written: the error line says the report
    could not be written, and the line before it says the CSV is this run's and the summary was not written."""
    import errno

    import core.reports as reports

    out = tmp_path / "out"
    out.mkdir()
    csv_path, pdf, summary = out / "r.csv", out / "r.pdf", out / "s.json"

    def full(_records, path, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(reports, "write_pdf_report", full)
    code, err = cli(capsys, folder, "--model", bundles[0], "--csv", csv_path, "--report", pdf, "--summary", summary)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-3] == f"Stopped by an error after writing: CSV {csv_path}."
    assert lines[-2] == f"Not written (any earlier file there is unchanged): Report {pdf}; Summary {summary}."
    assert lines[-1].startswith("mpox-triage classify: error: ") and "report" in lines[-1], lines[-1]
    assert len(rows_of(csv_path)) == 7 and not pdf.exists() and not summary.exists()
