"""core.triage.reasons: each photo's reasons to review are true (the figure really is past its limit), name their
model and are said once; the table, CSV and PDF all read them from here."""

from __future__ import annotations

from core.models.bundle import ModelCard
from core.triage.reasons import (DISAGREE, ERROR, NOT_A_PHOTO, NOT_SCORED, OUT_OF_SCOPE, SHIFT, UNCERTAIN, ModelRef,
                          deciding_key, model_refs, photo_call, photo_reasons, reasons_text)
from core.records import ResultRecord
from core.reports.workspace_pdf import export_pdf

SHA_C, SHA_M, SHA_X = "cc" * 32, "aa" * 32, "bb" * 32


def card(arch: str, sha: str, band=(0.28, 0.74), ood=1.44, **kw) -> ModelCard:
    return ModelCard(name=arch, version="1.2.0", architecture=arch, input_size=224, threshold=0.5,
                     uncertain_band=list(band), model_sha256=sha, ood_threshold=ood, **kw)


def rec(sha: str, p: float | None, flag: str = "", scope: float | None = 0.1, ood: float | None = 1.0,
        status: str = "ok", prediction: str | None = None, error: str = "") -> ResultRecord:
    if status != "ok":
        return ResultRecord(path="/f/a.png", status="error", error=error, model_sha256=sha)
    return ResultRecord(path="/f/a.png", status="ok", p_mpox=p, flag=flag, ood_score=ood, scope_score=scope,
                        prediction=prediction or ("mpox" if p >= 0.5 else "not_mpox"), model_sha256=sha)


BOTH = [card("combined", SHA_C), card("mobilenetv2", SHA_M), card("xception", SHA_X)]


def test_a_chart_is_out_of_scope_by_its_not_a_photo_score_and_its_limit_never_by_another_figure():
    # The bug this replaces: "out of scope 1.39 > 1.44" (the embedding score, under its own limit).
    models = model_refs(BOTH[1:2])
    reasons = photo_reasons({SHA_M: rec(SHA_M, 0.2, "out_of_scope", scope=1.0, ood=1.39)}, models, scope_limit=0.95)
    assert [r.kind for r in reasons] == [NOT_A_PHOTO]
    assert reasons[0].text == "Not-a-skin-photo score 1.00 > limit 0.95"
    assert reasons[0].value > reasons[0].limit


def test_every_figure_stated_is_on_the_stated_side_of_its_limit():
    models = model_refs(BOTH[1:2])
    r = photo_reasons({SHA_M: rec(SHA_M, 0.6, "out_of_scope", scope=0.2, ood=1.62, prediction="out_of_scope")},
                      models, scope_limit=0.95)
    # The flag's trigger is the embedding distance; an out-of-scope record has no band to be uncertain in.
    assert [x.kind for x in r] == [OUT_OF_SCOPE]
    assert r[0].text == "unlike the training photos, embedding distance 1.62 > limit 1.44" and r[0].value > r[0].limit
    r = photo_reasons({SHA_M: rec(SHA_M, 0.6, "uncertain")}, models, scope_limit=0.95)
    assert r[0].text == "uncertain, p(mpox) 0.60 inside 0.28–0.74"
    lo, hi = r[0].limit
    assert lo <= r[0].value < hi


def test_uncertain_names_the_deciding_model_and_disagreement_names_each_call():
    models = model_refs(BOTH)
    decider = deciding_key(BOTH)
    assert decider == SHA_C
    records = {SHA_C: rec(SHA_C, 0.787), SHA_M: rec(SHA_M, 0.81), SHA_X: rec(SHA_X, 0.45, "uncertain")}
    reasons = photo_reasons(records, models, decider=decider)
    # Xception's uncertainty is not the photo's (combined decides); its disagreement is, with both figures.
    assert reasons_text(reasons) == "models disagree: combined mpox 0.79, Xception not mpox 0.45"
    assert photo_call(records, models, decider) == "mpox"
    records[SHA_C] = rec(SHA_C, 0.45, "uncertain")
    texts = [r.text for r in photo_reasons(records, models, decider=decider)]
    assert "combined: uncertain, p(mpox) 0.45 inside 0.28–0.74" in texts


def test_unreadable_is_said_once_whatever_the_number_of_models():
    models = model_refs(BOTH)
    err = "/f/a.png: cannot decode image (file is truncated)"
    reasons = photo_reasons({k: rec(k, None, status="error", error=err) for k in (SHA_C, SHA_M, SHA_X)}, models,
                            decider=SHA_C)
    assert [r.text for r in reasons] == ["unreadable: cannot decode image (file is truncated)"]
    assert [r.kind for r in reasons] == [ERROR]


def test_a_photo_scored_by_only_some_chosen_models_has_no_call_and_says_so():
    models = model_refs(BOTH[1:])
    records = {SHA_M: rec(SHA_M, 0.9)}
    assert photo_call(records, models) == ""
    assert [r.text for r in photo_reasons(records, models)] == ["not scored yet by Xception"]
    assert photo_reasons(records, models)[0].kind == NOT_SCORED


def test_records_of_models_not_chosen_are_ignored():
    models = model_refs(BOTH[1:2])
    records = {SHA_M: rec(SHA_M, 0.9), SHA_X: rec(SHA_X, 0.1)}
    assert photo_reasons(records, models) == []
    assert photo_call(records, models) == "mpox"


def test_out_of_scope_prediction_is_its_own_call_and_not_a_disagreement():
    models = model_refs(BOTH[1:])
    records = {SHA_M: rec(SHA_M, 0.9, "out_of_scope", scope=0.99, prediction="out_of_scope"),
               SHA_X: rec(SHA_X, 0.1, "out_of_scope", scope=0.99, prediction="out_of_scope")}
    reasons = photo_reasons(records, models, scope_limit=0.95)
    assert [r.kind for r in reasons] == [NOT_A_PHOTO]
    assert photo_call(records, models) == "out_of_scope"


def test_a_shifted_folder_widens_the_review_band_of_the_model_that_decides():
    wide = {"operating_points": {"out_of_collection": {"uncertain_band": [0.15, 0.9], "threshold": 0.3}}}
    cards = [card("combined", SHA_C, extra=wide), card("mobilenetv2", SHA_M), card("xception", SHA_X)]
    models = model_refs(cards)
    shift = {"detected": True, "p_value": 0.001, "operating_point": "out_of_collection", "model_key": SHA_C}
    records = {SHA_C: rec(SHA_C, 0.81, "uncertain", prediction="mpox"), SHA_M: rec(SHA_M, 0.85),
               SHA_X: rec(SHA_X, 0.9)}
    records[SHA_C].threshold = 0.3
    reasons = photo_reasons(records, models, decider=SHA_C, shift=shift)
    assert [r.text for r in reasons] == ["combined: folder unlike the training photos: p(mpox) 0.81 inside this "
                                         "folder's widened review band 0.15–0.90"]
    assert reasons[0].kind == SHIFT and reasons[0].limit == (0.15, 0.9)
    # Without the alarm the row would not have been decided at that band: its flag is said, not explained away.
    assert photo_reasons(records, models, decider=SHA_C, shift=None)[0].text.startswith("combined: flagged uncertain")
    # Inside the ordinary band it is "uncertain", with the band the folder is decided at (one band per folder).
    records[SHA_C] = rec(SHA_C, 0.5, "uncertain", prediction="mpox")
    records[SHA_C].threshold = 0.3
    reasons = photo_reasons(records, models, decider=SHA_C, shift=shift)
    assert [r.kind for r in reasons] == [UNCERTAIN]
    assert reasons[0].text == "combined: uncertain, p(mpox) 0.50 inside this folder's widened review band 0.15–0.90"


def test_two_models_of_one_architecture_are_told_apart_by_version():
    a, b = card("mobilenetv2", SHA_M), card("mobilenetv2", SHA_X)
    b.version = "1.3.0"
    names = [m.name for m in model_refs([a, b])]
    assert names == ["mobilenetv2 1.2.0", "mobilenetv2 1.3.0"]
    assert ModelRef(SHA_M, "x").card is None
    assert DISAGREE == "disagree"


# --- the CSV, the PDF and the CLI read the same reasons ----------------------------------------------------

def _workspace_with_results(tmp_path):
    from core.store.workspace import Workspace
    from tests.helpers import make_photo

    folder = tmp_path / "ward"
    folder.mkdir()
    for i in range(3):
        make_photo((32, 32), seed=i).save(folder / f"p{i}.jpg")
    ws = Workspace.open(folder, tmp_path / "session")
    cards = BOTH
    for c in cards:
        ws.cards[c.key] = c
    first = ws.paths[0]
    for c, p, flag in ((BOTH[0], 0.787, ""), (BOTH[1], 0.81, ""), (BOTH[2], 0.45, "uncertain")):
        r = ResultRecord(path=first, status="ok", p_mpox=p, flag=flag, prediction="mpox" if p >= 0.5 else "not_mpox",
                         model=c.name, model_version=c.version, model_sha256=c.model_sha256, threshold=0.5)
        ws.results.setdefault(c.key, {})[first] = r
    return ws, first


def test_the_csv_needs_review_column_says_what_the_table_says(tmp_path):
    import csv

    ws, first = _workspace_with_results(tmp_path)
    keys = [c.key for c in BOTH]
    assert ws.csv_columns(keys)[-1] == "needs_review"
    assert ws.csv_row(first, keys)["needs_review"] == "models disagree: combined mpox 0.79, Xception not mpox 0.45"
    out = ws.export_csv(tmp_path / "out.csv", keys)
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert rows[0]["needs_review"] == "models disagree: combined mpox 0.79, Xception not mpox 0.45"
    ws.close()


def test_a_report_made_later_from_the_session_carries_the_folders_shift_alarm(tmp_path):
    from pypdf import PdfReader

    from core.records import safe_text
    from core.store.workspace import ACTION_SHIFT, Workspace

    ws, first = _workspace_with_results(tmp_path)
    verdict = {"detected": True, "p_value": 0.001, "statistic": 0.08, "n": 60, "model": "combined",
               "model_key": SHA_C, "message": "These photos differ from the model's training photos.",
               "operating_point": "out_of_collection", "remedy": "review about 60 photos with Review next, then adapt",
               "review_n": 60}
    # Stored as a run's end stores it: for this source and model, on the stored set it was computed on.
    fingerprint = ws.stored_set(SHA_C)[2]
    ws.session.log(ACTION_SHIFT, {"source": safe_text(str(ws.folder)), "model_key": SHA_C, "fingerprint": fingerprint,
                                  "verdict": {**verdict, "fingerprint": fingerprint}})
    folder = ws.folder
    ws.close()
    with Workspace.open(folder, tmp_path / "session") as again:   # nothing new scored
        for c in BOTH:
            again.cards[c.key] = c
        assert again.shift["detected"]
        # The results as the session would hold them (this test stores none); nothing is scored now.
        again.results = {c.key: {first: ResultRecord(path=first, status="ok", p_mpox=0.2, prediction="not_mpox",
                                                     model=c.name, model_version=c.version,
                                                     model_sha256=c.model_sha256, threshold=0.5)} for c in BOTH}
        out = export_pdf(again, tmp_path / "later.pdf", [c.key for c in BOTH], cards=BOTH)
    cover = " ".join(PdfReader(str(out)).pages[0].extract_text().split())
    assert "Shift alarm (combined)" in cover and "review about 60 photos with Review next, then adapt" in cover


def test_models_card_prints_the_full_card_as_json(capsys):
    import json

    from core.cli import main

    assert main(["models", "--card", "mobilenetv2"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "mobilenetv2" and "metrics" in card and "training_data" in card
    assert main(["models", "--card", "no-such-model"]) == 2


# --- one reason per fact, true to its printed figures ---------------------------------------------------------

def _numbers(text: str) -> list[float]:
    import re

    return [float(x) for x in re.findall(r"\d+\.\d+", text)]


def test_an_out_of_scope_flag_names_the_score_that_tripped_it_not_another_models_figure():
    # Measured: "MobileNetV2: flagged out of scope (out-of-scope score 1.04; its limit is not known here)" while
    # MobileNetV2's own copy of the photo had a not-a-skin-photo score of 0.871 > 0.86 (the others saw 0.82).
    models = model_refs(BOTH)
    records = {SHA_C: rec(SHA_C, 0.3, scope=0.82, ood=1.0),
               SHA_M: rec(SHA_M, 0.3, "out_of_scope", scope=0.871, ood=1.04, prediction="out_of_scope"),
               SHA_X: rec(SHA_X, 0.3, scope=0.82, ood=1.0)}
    reasons = photo_reasons(records, models, decider=SHA_C, scope_limit=0.86)
    assert [r.text for r in reasons] == ["MobileNetV2: not-a-skin-photo score 0.87 > limit 0.86"]
    assert reasons[0].kind == NOT_A_PHOTO and reasons[0].value == 0.871 and reasons[0].limit == 0.86
    assert "not known" not in reasons_text(reasons) and "1.04" not in reasons_text(reasons)


def test_a_flag_past_its_limit_by_less_than_the_printed_step_is_printed_with_the_digits_that_show_it():
    # Measured: "out of scope 1.50 > 1.50" (an adapted model's embedding distance 1.5003 against its limit 1.5).
    models = model_refs([card("mobilenetv2", SHA_M, ood=1.5)])
    reasons = photo_reasons({SHA_M: rec(SHA_M, 0.3, "out_of_scope", ood=1.5003, prediction="out_of_scope")}, models)
    assert reasons[0].text == "unlike the training photos, embedding distance 1.5003 > limit 1.5000"
    for said in (reasons[0].text, reasons[0].short):
        value, limit = _numbers(said)
        assert value > limit
    near = photo_reasons({SHA_M: rec(SHA_M, 0.7059, "uncertain")}, model_refs([card("mobilenetv2", SHA_M,
                                                                                    band=(0.2, 0.70595))]))
    p, lo, hi = _numbers(near[0].text)
    assert lo <= p < hi


def test_an_out_of_scope_flag_no_limit_here_explains_gives_both_figures_against_their_own_limits():
    models = model_refs(BOTH[1:2])
    reasons = photo_reasons({SHA_M: rec(SHA_M, 0.3, "out_of_scope", scope=0.5, ood=1.04, prediction="out_of_scope")},
                            models, scope_limit=0.86)
    assert reasons[0].text == ("flagged out of scope, though not-a-skin-photo score 0.50 (limit 0.86) and embedding "
                               "distance 1.04 (limit 1.44) are within the limits known here")


def _alarmed_folder(n: int = 40):
    """A combined model's records of a folder under a shift alarm, decided as core.store.workspace.decide decides them
    at Workspace.point_for's point (the card's out-of-collection point with the folder's review floor)."""
    from core.models.operating_point import decided_point, stored_scores
    from core.store.workspace import decide

    points = {"default": {"threshold": 0.51, "uncertain_band": [0.21, 0.74]},
              "out_of_collection": {"threshold": 0.51, "uncertain_band": [0.17, 0.74], "review_share": 0.9}}
    c = card("combined", SHA_C, band=(0.21, 0.74), extra={"operating_points": points})
    c.threshold = 0.51
    raw = [ResultRecord(path=f"/f/{i}.jpg", status="ok", p_mpox=0.01 + 0.9 * i / n, model_sha256=SHA_C, threshold=0.51)
           for i in range(n)]
    point = decided_point(c, True, stored_scores(raw))
    return c, point, [decide(c, r, point) for r in raw]


def test_under_a_shift_alarm_every_uncertain_row_cites_the_one_band_it_was_decided_at():
    from core.models.operating_point import records_point

    c, point, recs = _alarmed_folder()
    assert point.band[0] < 0.17   # the folder's own floor widened the band below the card's
    shift = {"detected": True, "operating_point": "out_of_collection", "model_key": SHA_C}
    models = model_refs([c])
    points = {SHA_C: records_point(c, True, recs)}
    assert points[SHA_C].same_as(point)
    flagged = [r for r in recs if r.flag == "uncertain"]
    assert any(r.p_mpox < 0.17 for r in flagged) and any(0.21 <= r.p_mpox < 0.74 for r in flagged)
    bands = set()
    for r in flagged:
        (reason,) = photo_reasons({SHA_C: r}, models, shift=shift, points=points)
        assert reason.limit == point.band
        bands.add(reason.text.split("band ")[-1])
        p, lo, hi = _numbers(reason.text)
        assert lo <= p < hi
    assert len(bands) == 1 and "0.21" not in bands.pop()
    # Without the folder's point (one photo's records cannot hold its floor), no row cites an edge of its own.
    texts = [photo_reasons({SHA_C: r}, models, shift=shift)[0].text for r in flagged]
    assert all("widened review band (below 0.74; its lower edge is set by this folder's scores)" in t for t in texts)
    assert not any("–" in t for t in texts)   # no lower edge, so no "lo–hi" band


def test_the_csv_agreement_is_the_reports_disagreement():
    """One definition of 'models disagree' (one model calls mpox, another not mpox) for the CSV's agreement column
    and the summary (core.store.csvio.agreement), the PDF's count and the table (PhotoRow.disagree): an
    out-of-scope call beside an mpox call counted as a disagreement in the CSV only (35 against 29 in the PDF)."""
    import itertools

    from core.reports.rows import PhotoRow
    from core.store.csvio import AGREE, DISAGREE, agreement

    kinds = ("mpox", "not_mpox", "out_of_scope")
    for n in (2, 3):
        for preds in itertools.product(kinds, repeat=n):
            recs = [rec(f"s{i}", 0.5, prediction=p) for i, p in enumerate(preds)]
            row = PhotoRow(path="/f/a.png", results={f"s{i}": r for i, r in enumerate(recs)})
            got = agreement(recs)
            assert (got == DISAGREE) == row.disagree, preds
            assert (got == AGREE) == (len(set(preds)) == 1), preds
