"""One folder, one story (issue 24, item 3): each reason and figure is said once and the same way from every
entry point. `evaluate` gives out-of-scope photos no call (outside accuracy and the confusion matrix, counted on
their own) and explains each triage figure truly; classify's stderr and --summary print one operating-point text;
a flagged row's reasons in the CSV name the real trigger with figures that are past their limit as printed."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from core.records import CALLS, LABEL_MPOX, LABEL_NOT_MPOX


def _labelled_folder_with_non_photos(root: Path, n: int = 6, odd: int = 3) -> tuple[Path, int]:
    """mpox/ and other/ of generated skin photos, plus `odd` tiny images per class, which the scope check
    (core.photos.scope: below TINY_SIDE pixels) calls out of scope whatever the model says."""
    from PIL import Image

    from tests.helpers import make_image_folder

    folder = make_image_folder(root, n_per_class=n, size=(40, 32))
    for cls in ("mpox", "other"):
        for i in range(odd):
            Image.new("RGB", (12, 12), (40 * i, 90, 200)).save(folder / cls / f"tiny_{i}.png")
    return folder, 2 * odd


def test_evaluate_gives_out_of_scope_photos_no_call_and_explains_each_triage_figure(tmp_path, tiny_bundle, capsys):
    from core.cli import main

    folder, odd = _labelled_folder_with_non_photos(tmp_path / "photos")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(folder), "--model", str(tiny_bundle()), "--json", str(out), "--bootstrap", "0",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    preds = res["predictions"]
    called = [p for p in preds if p["prediction"] in CALLS]
    assert len(preds) == 12 + odd and res["n_scored"] == len(preds)
    # Out-of-scope photos: their own count, outside accuracy and the confusion matrix.
    assert res["no_call"]["out_of_scope"] == len(preds) - len(called) >= odd
    c = res["confusion"]
    assert c["tn"] + c["fp"] + c["fn"] + c["tp"] == res["n"] == len(called)
    right = [(p["prediction"] == LABEL_MPOX) == (p["label"] == LABEL_MPOX) for p in called]
    assert res["accuracy"] == np.mean(right)
    # Triage over every scored photo: sensitivity = mpox photos called mpox or flagged; specificity = other
    # photos cleared (called not mpox, no flag).
    mpox = [p for p in preds if p["label"] == LABEL_MPOX]
    other = [p for p in preds if p["label"] != LABEL_MPOX]
    assert res["triage"]["triage_sensitivity"] == np.mean([p["prediction"] == LABEL_MPOX or bool(p["flag"])
                                                           for p in mpox])
    assert res["triage"]["triage_specificity"] == np.mean([p["prediction"] == LABEL_NOT_MPOX and not p["flag"]
                                                           for p in other])
    assert "triage_sensitivity" in printed and "(share of mpox photos called mpox or flagged for review)" in printed
    assert "(share of other photos cleared: called not mpox with no flag)" in printed
    assert f"no call (out of scope): {res['no_call']['out_of_scope']} photos" in printed


def _alarmed_bundle(tmp_path: Path) -> Path:
    """test_never_miss's bundle whose shift test fires on any folder, with a review share, so the folder's own
    floor (core.models.operating_point.folder_point) sets the review floor, not the card's."""
    from core.models.bundle import read_card, write_card
    from tests.test_never_miss import _alarm_bundle

    bdir = _alarm_bundle(tmp_path)
    card = read_card(bdir)
    card.extra["operating_points"]["out_of_collection"].update(threshold=0.5, uncertain_band=[0.4, 0.99],
                                                              review_share=0.9)
    write_card(bdir, card)
    return bdir


def test_classify_prints_one_operating_point_text_in_stderr_and_the_summary(tmp_path, capsys):
    from core.models.bundle import read_card
    from core.cli import main
    from core.models.operating_point import card_point, point_message
    from core.store.workspace import Workspace
    from tests.helpers import make_image_folder

    bdir = _alarmed_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=18, size=(40, 32))
    session, summary = tmp_path / "session", tmp_path / "s.json"
    out = tmp_path / "out.csv"
    report = tmp_path / "report.pdf"
    assert main(["classify", str(photos), "--model", str(bdir), "--csv", str(out), "--session", str(session),
                 "--summary", str(summary), "--report", str(report), "--quiet"]) == 0
    err = capsys.readouterr().err
    message = json.loads(summary.read_text())["shift"]["point_message"]
    assert message in err.splitlines()
    # Each model's own verdict in the summary says the same (it kept the stored verdict's older text before).
    assert [v["point_message"] for v in json.loads(summary.read_text())["shifts"].values()] == [message]
    from pypdf import PdfReader

    cover = " ".join(PdfReader(str(report)).pages[0].extract_text().split())
    assert message in cover
    card = read_card(bdir)
    with Workspace.open(photos, session) as ws:
        point = ws.point_for(card)
    # The floor is the folder's, below the card's band: the text printed is the point the rows were decided at.
    assert point.review_floor < 0.9 and f">= {point.review_floor:.3f} go to review" in message
    assert message == point_message(card.display_name, point, card_point(card))
    # Every uncertain row of the CSV cites that folder's band (or, without the folder's point, no edge at all).
    rows = [r for r in csv.DictReader(open(out, encoding="utf-8")) if r["flag"] == "uncertain"]
    assert rows
    edges = {m.group(0) for r in rows for m in re.finditer(r"\d\.\d+–\d\.\d+", r["needs_review"])}
    assert edges <= {f"{point.band[0]:.2f}–{point.band[1]:.2f}"}


def test_a_flagged_rows_reasons_in_the_csv_name_its_trigger_with_figures_past_the_limit(tmp_path, tiny_bundle,
                                                                                          capsys):
    from core.cli import main

    folder, _odd = _labelled_folder_with_non_photos(tmp_path / "photos", n=2, odd=2)
    out = tmp_path / "out.csv"
    assert main(["classify", str(folder / "mpox"), "--model", str(tiny_bundle()), "--csv", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    rows = [r for r in csv.DictReader(open(out, encoding="utf-8")) if r["flag"] == "out_of_scope"]
    assert len(rows) >= 2
    for r in rows:
        said = r["needs_review"]
        assert "not known" not in said
        m = re.search(r"score (\d+\.\d+) > limit (\d+\.\d+)", said) or re.search(
            r"distance (\d+\.\d+) > limit (\d+\.\d+)", said)
        assert m and float(m.group(1)) > float(m.group(2)), said
        if said.startswith("Not-a-skin-photo"):
            assert abs(float(r["scope_score"]) - float(m.group(1))) < 0.01   # the row's own score, as printed


def test_the_apps_shift_banner_prints_the_folders_operating_point_as_classify_does(qtbot, tmp_path):
    import pytest

    pytest.importorskip("pytestqt")
    from core.models.bundle import ModelCard
    from core.models.operating_point import card_point, point_message
    from tests.gui_fixtures import window_with_rows

    window, _folder, _recs = window_with_rows(qtbot, tmp_path)
    card = ModelCard(name="m", version="1.0.0", architecture="mobilenetv2", input_size=32, threshold=0.5,
                     uncertain_band=[0.3, 0.7], model_sha256="sha-a", ood_threshold=0.7,
                     extra={"operating_points": {"out_of_collection": {"threshold": 0.5,
                                                                       "uncertain_band": [0.1, 0.7]}}})
    ws = window.workspace
    ws.cards[card.key] = card
    window.model.set_cards([card])
    # The model's verdict as a run's end stores it (for this source, model and stored set), with a stale text.
    ws.store_verdict(card.key, {"detected": True, "p_value": 0.001, "n": 60, "model": "m 1.0.0", "model_key": "sha-a",
                                "operating_point": "out_of_collection", "fingerprint": ws.stored_set(card.key)[2],
                                "point_message": "a stale text from the verdict"})
    window.show_shift()
    text = window.shift_banner.text()
    assert point_message(card.display_name, window.workspace.point_for(card), card_point(card)) in text
    assert "stale" not in text and ">= 0.100 go to review, 0.300 otherwise" in text
    # The table's uncertain row cites that same point's band.
    row = next(r for r in window.model.rows if r.records.get("sha-a") and r.records["sha-a"].flag == "uncertain")
    assert window.model.reason(row)[1].startswith(
        "uncertain, p(mpox) 0.48 inside this folder's widened review band 0.10–0.70")


def test_the_detail_pane_gives_each_models_own_scope_score_when_they_differ(qtbot, tmp_path):
    import pytest

    pytest.importorskip("pytestqt")
    from dataclasses import replace

    from tests.gui_fixtures import record, window_with_rows

    window, _folder, recs = window_with_rows(qtbot, tmp_path)
    window.model.scope_limit = 0.86
    path = recs[0].path
    # Measured: a flag from one model's 0.871 > 0.86 while the pane said "0.82 (limit 0.86): within the limit".
    a = replace(recs[0], scope_score=0.82)
    b = replace(record(path, 0.1, "out_of_scope", ood=0.2, sha="sha-b", model="n"), scope_score=0.871,
                prediction="out_of_scope")
    window.model.add_records([a, b])
    window.results.select_source_row(window.model.row_of(path))
    text = window.detail.scores.text()
    assert "n 1.0.0: Not-a-skin-photo score 0.87 (limit 0.86): above the limit" in text
    assert "m 1.0.0: Not-a-skin-photo score 0.82 (limit 0.86): within the limit" in text


def test_the_summary_gives_each_models_verdict_the_point_text_of_now(tmp_path, capsys):
    """--summary's `shift` and every entry of `shifts` carry the point text of the point the folder is decided at
    now, not the text stored with the verdict (which predates the folder's review floor): the non-deciding
    model's entry kept the stored text before."""
    from core.cli import main
    from core.commands.classify import _summary_point
    from core.models.bundle import load_bundle
    from core.models.operating_point import card_point, point_message
    from core.store.workspace import Workspace
    from tests.helpers import make_image_folder

    bdir = _alarmed_bundle(tmp_path)
    photos = make_image_folder(tmp_path / "photos", n_per_class=18, size=(40, 32))
    session = tmp_path / "session"
    assert main(["classify", str(photos), "--model", str(bdir), "--session", str(session), "--quiet"]) == 0
    capsys.readouterr()
    with Workspace.open(photos, session) as ws:
        card = load_bundle(bdir).card
        ws.attach(load_bundle(bdir))
        stale = {"model_key": card.key, "detected": True, "point_message": "a stale text from the verdict"}
        out = _summary_point({"shift": dict(stale), "shifts": {card.display_name: dict(stale)}}, ws, [card], None)
        want = point_message(card.display_name, ws.point_for(card), card_point(card))
    assert out["shift"]["point_message"] == want
    assert out["shifts"][card.display_name]["point_message"] == want
