"""Issue 18, items 5, 7, 8 and 10: rows never silently dropped, one line never a traceback, CSV cells that a
spreadsheet cannot run, and the small ones (threshold and band, console lines, duplicate manifest rows).

The CLI runs in-process (core.cli.main) on tiny bundles (tests/helpers.py)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.models.bundle import CARD_FILE, ModelCard, read_card, write_card
from core.cli import main
from core.records import escape_path, unescape_path
from tests.helpers import make_image_folder, make_tiny_bundle


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_tiny_bundle(root / "alpha", name="alpha")
    make_tiny_bundle(root / "formula", name='=HYPERLINK("http://evil","x")', version="+1.2.0", seed=1)
    return root


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_image_folder(tmp_path / "photos", n_per_class=2, size=(40, 32))


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code in (0, 2), (code, err)
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- 5: every file keeps its own row -----------------------------------------------------------------
def test_a_non_utf8_name_and_its_literal_escape_are_two_rows(capsys, photos, models, tmp_path):
    jpg = (photos / "mpox" / "mpox_00.jpg").read_bytes()
    with open(os.fsencode(str(photos)) + b"/\xff.jpg", "wb") as fh:
        fh.write(jpg)
    (photos / "\\xff.jpg").write_bytes(jpg)
    code, _out, err = cli(capsys, "classify", photos, "--model", models / "alpha", "--csv", tmp_path / "o.csv",
                          "--session", tmp_path / "s", "--quiet")
    assert code == 0 and "once escaped" not in err
    found = [r["path"] for r in rows(tmp_path / "o.csv")]
    assert len(found) == len(set(found)) == 6
    ff = [p for p in found if "xff" in p]
    assert len(ff) == 2 and all(r["status"] == "ok" for r in rows(tmp_path / "o.csv") if r["path"] in ff)
    # The keys give the files back (a reversible escape), also after a resume from the session.
    on_disk = {os.fsdecode(os.fsencode(str(photos)) + b"/\xff.jpg"), str(photos / "\\xff.jpg")}
    assert {unescape_path(p) for p in ff} == on_disk
    code, _out, err = cli(capsys, "classify", photos, "--model", models / "alpha", "--csv", tmp_path / "o.csv",
                          "--session", tmp_path / "s", "--resume", "--quiet")
    assert code == 0 and "6 already scored, 0 to go" in err


def test_escape_path_is_reversible_and_leaves_ordinary_names_alone():
    names = ["/a/b.jpg", "C:\\photos\\a.jpg", "\\\\server\\share\\x.jpg", "/a/café.jpg", "/a/\\xff.jpg",
             "/a/\\\\xff.jpg", os.fsdecode(b"/a/\xff.jpg"), os.fsdecode(b"/a/\\\xff.jpg"), "/a/\\x4g.jpg"]
    keys = [escape_path(n) for n in names]
    assert len(set(keys)) == len(names)
    assert all(unescape_path(k) == n for k, n in zip(keys, names))
    assert keys[:4] == names[:4]
    assert all(k.encode("utf-8") for k in keys)


# --- 7: one line, never a traceback --------------------------------------------------------------------
@pytest.mark.parametrize("values", [[1, 2], [1.5, 2.5], [["a"], ["b"]]], ids=["int", "float", "list"])
def test_a_parquet_manifest_with_a_non_text_path_column_is_one_line(capsys, models, tmp_path, values):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": values}), manifest)
    code, _out, err = cli(capsys, "classify", manifest, "--model", models / "alpha", "--quiet")
    assert code == 2 and len(error_lines(err)) == 1 and "not a file path" in err


def test_a_csv_manifest_with_a_nul_byte_is_one_line(capsys, photos, models, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path\n" + str(photos / "mpox" / "mpox_00.jpg").encode() + b"\x00x\n")
    code, _out, err = cli(capsys, "classify", manifest, "--model", models / "alpha", "--quiet")
    assert code == 2 and len(error_lines(err)) == 1 and "NUL" in err


def test_a_2300_deep_folder_with_csv_is_a_warning_not_a_traceback(capsys, models, tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(2300):
            os.mkdir("a", dir_fd=fd)
            inner = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    shutil.copy(make_image_folder(tmp_path / "one", n_per_class=1) / "mpox" / "mpox_00.jpg", root / "top.jpg")
    try:
        code, _out, err = cli(capsys, "classify", root, "--model", models / "alpha", "--csv", tmp_path / "o.csv",
                              "--quiet")
        assert code == 0 and [r["path"] for r in rows(tmp_path / "o.csv")][0].endswith("top.jpg")
        assert any(line.startswith("warning:") and "too long" in line for line in err.splitlines())
    finally:
        _remove_chain(root)


def _remove_chain(root: Path) -> None:
    """Remove the nested a/a/a... folders without recursion (shutil.rmtree recurses once per level)."""
    fds = [os.open(root, os.O_RDONLY)]
    try:
        while True:
            try:
                fds.append(os.open("a", os.O_RDONLY, dir_fd=fds[-1]))
            except FileNotFoundError:
                break
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("a", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)
    shutil.rmtree(root, ignore_errors=True)


def _reseal_with(bundle: Path, name: str, content) -> None:
    if callable(content):
        content(bundle / name)
    else:
        (bundle / name).write_bytes(content)
    card = read_card(bundle)
    card.files[name] = ""
    write_card(bundle, card)


def _ood_too_short(path: Path) -> None:
    data = dict(np.load(path))
    np.savez(path, **{k: (v[:2] if v.ndim else v) for k, v in data.items()})


def _embeddings_too_narrow(path: Path) -> None:
    np.savez(path, embedding=np.zeros((40, 3), np.float32), split=np.array(["train"] * 40))


@pytest.mark.parametrize("name,content,fatal", [
    ("ood.npz", b"garbage", True), ("ood.npz", _ood_too_short, True),
    ("embeddings.npz", b"garbage", False), ("embeddings.npz", _embeddings_too_narrow, False),
], ids=["ood-garbage", "ood-shape", "embeddings-garbage", "embeddings-shape"])
def test_garbage_or_misshapen_bundle_arrays_are_one_line(capsys, tmp_path, name, content, fatal):
    bundle = make_tiny_bundle(tmp_path / "models" / "odd", name="odd")
    _reseal_with(bundle, name, content)
    photos = make_image_folder(tmp_path / "photos", n_per_class=16, size=(32, 32))
    code, _out, err = cli(capsys, "classify", photos, "--model", bundle, "--csv", tmp_path / "o.csv", "--quiet")
    if fatal:
        assert code == 2 and len(error_lines(err)) == 1 and "ood.npz" in err
    else:
        assert code == 0 and "Shift check not run" in err and "embeddings.npz" in err


# --- 8: CSV formula injection ------------------------------------------------------------------------
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _no_formula_cells(path: Path) -> list[dict[str, str]]:
    found = rows(path)
    for row in found:
        for col, cell in row.items():
            if cell and cell.startswith(FORMULA):
                float(cell)  # only a plain number may start with + or -
    return found


def test_classify_csv_never_starts_a_text_cell_with_a_formula_character(capsys, photos, models, tmp_path):
    code, _out, err = cli(capsys, "classify", photos, "--model", models / "formula", "--csv", tmp_path / "o.csv",
                          "--quiet")
    assert code == 0, err
    found = _no_formula_cells(tmp_path / "o.csv")
    assert found[0]["model"] == "'=HYPERLINK(\"http://evil\",\"x\")" and found[0]["model_version"] == "'+1.2.0"


def test_multi_model_csv_and_the_reviewer_column_are_neutralised_too(capsys, photos, models, tmp_path):
    from core.store.workspace import Workspace

    code, _out, err = cli(capsys, "classify", photos, "--model", models / "formula", "--model", models / "alpha",
                          "--session", tmp_path / "s", "--csv", tmp_path / "wide.csv", "--quiet")
    assert code == 0, err
    _no_formula_cells(tmp_path / "wide.csv")
    with Workspace.open(photos, tmp_path / "s", actor="=cmd|' /C calc'!A0") as ws:
        ws.review(ws.paths[0], "mpox", "=cmd|' /C calc'!A0")
        ws.export_csv(tmp_path / "reviewed.csv")
    found = _no_formula_cells(tmp_path / "reviewed.csv")
    assert any(r.get("reviewer", "").startswith("'=cmd") for r in found)


# --- 10: small ones ---------------------------------------------------------------------------------
def test_threshold_moves_the_uncertain_band_with_it(capsys, photos, models, tmp_path):
    from core.models.bundle import Bundle, uncertain_band_at

    card = read_card(models / "alpha")   # threshold 0.5, band [0.45, 0.55]
    lo, hi = uncertain_band_at(card, 0.9)
    assert lo < 0.9 < hi and hi - lo < 0.1
    assert uncertain_band_at(card, card.threshold) == tuple(card.uncertain_band)
    scored = Bundle(card, None, None).decide(np.array([0.89, 0.5]), None, threshold=0.9)
    assert scored.flag == ["uncertain", ""] and scored.prediction == ["not_mpox", "not_mpox"]


def test_console_output_keeps_one_line_per_photo_whatever_the_names_hold(capsys, photos, models):
    jpg = (photos / "mpox" / "mpox_00.jpg").read_bytes()
    (photos / "two\nlines.jpg").write_bytes(jpg)
    (photos / "tab\there.jpg").write_bytes(jpg)
    code = main(["classify", str(photos), "--model", str(models / "alpha"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 6 and all(len(line.split("\t")) == 6 for line in lines)
    assert any("two\\nlines.jpg" in line for line in lines) and any("tab\\there.jpg" in line for line in lines)


def test_duplicate_manifest_rows_are_reported_and_each_photo_scored_once(capsys, photos, models, tmp_path):
    files = sorted(str(p) for p in photos.rglob("*.jpg"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "\n".join(files + files[:2]) + "\n")
    code, _out, err = cli(capsys, "classify", manifest, "--model", models / "alpha", "--csv", tmp_path / "o.csv",
                          "--summary", tmp_path / "s.json", "--quiet")
    assert code == 0
    assert any(line.startswith("warning:") and "2 row(s) repeat" in line for line in err.splitlines()), err
    assert len(rows(tmp_path / "o.csv")) == len(files)
    assert any("repeat" in e for e in json.loads((tmp_path / "s.json").read_text())["walk_errors"])


def test_adapt_on_a_bundle_with_garbage_embeddings_is_one_line(capsys, tmp_path):
    bundle = make_tiny_bundle(tmp_path / "models" / "odd", name="odd")
    _reseal_with(bundle, "embeddings.npz", b"garbage")
    photos = make_image_folder(tmp_path / "photos", n_per_class=10, size=(32, 32))
    code, _out, err = cli(capsys, "adapt", "--model", bundle, "--labelled", photos, "--out", tmp_path / "site",
                          "--quiet")
    assert code == 2 and len(error_lines(err)) == 1 and "embeddings.npz" in err, err
    assert not (tmp_path / "site").exists()
