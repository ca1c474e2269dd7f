"""Cases (core/store/cases.py): grouping photos by subfolder, file-name pattern or manifest column, and what a case says;
the CLI's case_id column, case CSV, PDF case summary and FHIR Bundle (core/reports/fhir_export.py) on a folder of case
subfolders. Tiny bundles and generated photos (tests/helpers.py)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.store.cases import CaseError, Grouping, assign, build_view, records_view, summarize
from core.cli import main
from core.records import ResultRecord
from tests.helpers import make_photo, make_tiny_bundle


def rec(path: str, p: float, model: str = "m", pred: str | None = None, flag: str = "", ok: bool = True,
        sha: str = "") -> ResultRecord:
    if not ok:
        return ResultRecord(path=path, status="error", model=model, model_version="1", model_sha256=sha or model,
                            error="cannot decode")
    pred = pred or ("mpox" if p >= 0.5 else "not_mpox")
    return ResultRecord(path=path, status="ok", p_mpox=p, prediction=pred, flag=flag, model=model, model_version="1",
                        model_sha256=sha or model, threshold=0.5, file_sha256="ab" * 32)


def view_of(records, case_of, cards=()):
    return records_view(records, cards, case_of=case_of, root="/r")


# --- grouping ---------------------------------------------------------------------------------------------------
def test_a_grouping_is_parsed_from_its_three_forms_and_a_bad_one_is_refused_in_one_line():
    assert Grouping.parse("subfolder") == Grouping("subfolder")
    assert Grouping.parse(r"regex:^(P\d+)_") == Grouping("regex", r"^(P\d+)_")
    assert Grouping.parse("column:case_id") == Grouping("column", "case_id")
    for bad in ("", "folder", "regex:", "regex:(", "column:", "subfolder:x"):
        with pytest.raises(CaseError) as err:
            Grouping.parse(bad)
        assert "\n" not in str(err.value)


def test_subfolders_pattern_and_column_group_photos_and_a_photo_with_no_case_is_its_own():
    paths = ["/r/P1/a.jpg", "/r/P1/b.jpg", "/r/P2/c.jpg", "/r/loose.jpg"]
    assert assign(paths, Grouping("subfolder"), "/r") == {
        "/r/P1/a.jpg": "P1", "/r/P1/b.jpg": "P1", "/r/P2/c.jpg": "P2", "/r/loose.jpg": "loose.jpg"}
    named = ["/r/P7_1.jpg", "/r/P7_2.jpg", "/r/x/P8_1.jpg", "/r/other.jpg"]
    assert assign(named, Grouping("regex", r"^(P\d+)_"), "/r") == {
        "/r/P7_1.jpg": "P7", "/r/P7_2.jpg": "P7", "/r/x/P8_1.jpg": "P8", "/r/other.jpg": "other.jpg"}
    column = {"/r/a.jpg": "visit-1", "/r/b.jpg": "visit-1", "/r/c.jpg": " "}
    assert assign(list(column), Grouping("column", "case_id"), "/r", column) == {
        "/r/a.jpg": "visit-1", "/r/b.jpg": "visit-1", "/r/c.jpg": "c.jpg"}
    with pytest.raises(CaseError, match="needs a manifest"):
        assign(paths, Grouping("column", "case_id"), "/r")


def test_a_case_id_that_is_not_valid_text_is_escaped_like_a_path():
    raw = "/r/caf\udce9/a.jpg"   # a folder name with a byte that is not UTF-8
    case = assign([raw], Grouping("subfolder"), "/r")[raw]
    case.encode("utf-8")
    assert case == "caf\\xe9"


# --- what a case says -------------------------------------------------------------------------------------------
def test_a_case_is_mpox_when_any_in_scope_photo_is_and_its_score_is_the_highest_in_scope_score():
    recs = [rec("/r/A/1.jpg", 0.2), rec("/r/A/2.jpg", 0.8),
            rec("/r/B/1.jpg", 0.3), rec("/r/B/2.jpg", 0.97, pred="out_of_scope", flag="out_of_scope"),
            rec("/r/C/1.jpg", 0.9, pred="out_of_scope", flag="out_of_scope")]
    view = view_of(recs, assign([r.path for r in recs], Grouping("subfolder"), "/r"))
    by = {c.case_id: c for c in view.cases}
    assert (by["A"].call, by["A"].score) == ("mpox", 0.8)
    # An out-of-scope photo's score means nothing: it neither calls its case mpox nor gives its score.
    assert (by["B"].call, by["B"].score) == ("not_mpox", 0.3)
    assert (by["C"].call, by["C"].score) == ("", None)
    assert by["B"].counts()["out_of_scope"] == 1 and by["B"].counts()["photos"] == 2


def test_a_case_needs_review_with_the_reason_of_its_photo_most_likely_to_be_mpox():
    card = SimpleNamespace(key="m", name="m", version="1", architecture="mobilenetv2", uncertain_band=[0.4, 0.6],
                           ood_threshold=None, extra={}, threshold=0.5)
    recs = [rec("/r/A/1.jpg", 0.45, flag="uncertain"), rec("/r/A/2.jpg", 0.55, flag="uncertain"),
            rec("/r/A/3.jpg", 0.1), rec("/r/B/1.jpg", 0.1), rec("/r/B/2.jpg", 0.0, ok=False)]
    view = view_of(recs, assign([r.path for r in recs], Grouping("subfolder"), "/r"), [card])
    a, b = view.cases
    assert a.needs_review and a.review_photo == "/r/A/2.jpg" and "0.55" in a.review_reason
    assert a.counts()["needing_review"] == 2 and a.counts()["flagged"] == 2
    assert b.needs_review and "cannot decode" in b.review_reason and b.call == "not_mpox"
    clean = view_of([rec("/r/C/1.jpg", 0.1)], {"/r/C/1.jpg": "C"}, [card])
    assert not clean.cases[0].needs_review and clean.cases[0].review_reason == ""


def test_under_several_models_the_deciding_model_calls_each_photo():
    combined = SimpleNamespace(key="comb", name="comb", version="1", architecture="combined",
                               uncertain_band=[0.45, 0.55], ood_threshold=None, extra={}, threshold=0.5)
    part = SimpleNamespace(key="part", name="part", version="1", architecture="mobilenetv2",
                           uncertain_band=[0.45, 0.55], ood_threshold=None, extra={}, threshold=0.5)
    recs = [rec("/r/A/1.jpg", 0.2, model="comb"), rec("/r/A/1.jpg", 0.9, model="part")]
    view = view_of(recs, {"/r/A/1.jpg": "A"}, [combined, part])
    assert view.decider == "comb"
    assert (view.cases[0].call, view.cases[0].score) == ("not_mpox", 0.2)
    assert view.cases[0].needs_review   # the models disagree: a person looks


def test_with_several_models_and_none_deciding_a_disputed_photo_makes_its_case_mpox():
    recs = [rec("/r/A/1.jpg", 0.2, model="a"), rec("/r/A/1.jpg", 0.9, model="b")]
    view = view_of(recs, {"/r/A/1.jpg": "A"})
    assert view.decider == "" and view.cases[0].call == "mpox" and view.cases[0].score == 0.9


def test_summaries_keep_the_order_cases_first_appear_in():
    photos = build_view(["/r/b/1.jpg", "/r/a/1.jpg", "/r/b/2.jpg"], ["m"],
                        lambda p: {"m": rec(p, 0.3)}, {}, {"/r/b/1.jpg": "b", "/r/a/1.jpg": "a", "/r/b/2.jpg": "b"},
                        lambda p: [], lambda p: False, "/r").photos
    assert [c.case_id for c in summarize(photos)] == ["b", "a"]


# --- the command line: a folder of case subfolders --------------------------------------------------------------
@pytest.fixture(scope="module")
def case_run(tmp_path_factory):
    """classify --cases subfolder with every output, once: 3 cases of 2 photos, one loose photo, one broken file."""
    root = tmp_path_factory.mktemp("cases")
    bundle = make_tiny_bundle(root / "models" / "alpha", name="alpha")
    photos = root / "photos"
    seed = 0
    for case in ("P1", "P2", "P3"):
        (photos / case).mkdir(parents=True)
        for i in range(2):
            make_photo((40, 32), seed).save(photos / case / f"{case}_{i}.jpg")
            seed += 1
    make_photo((40, 32), 99).save(photos / "loose.jpg")
    (photos / "P3" / "broken.jpg").write_bytes(b"not a jpeg")
    out = root / "out"
    out.mkdir()
    code = main(["classify", str(photos), "--model", str(bundle), "--cases", "subfolder", "--csv", str(out / "r.csv"),
                 "--case-csv", str(out / "cases.csv"), "--report", str(out / "r.pdf"), "--fhir", str(out / "r.json"),
                 "--summary", str(out / "s.json"), "--session", str(root / "session"), "--quiet"])
    assert code == 0
    return SimpleNamespace(root=root, photos=photos, out=out, bundle=bundle)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_classify_with_case_subfolders_writes_one_case_row_per_case_and_a_case_id_per_photo(case_run):
    cases = rows_of(case_run.out / "cases.csv")
    assert sorted(r["case_id"] for r in cases) == ["P1", "P2", "P3", "loose.jpg"]
    by = {r["case_id"]: r for r in cases}
    assert by["P3"]["photos"] == "3" and by["P3"]["errors"] == "1" and by["P3"]["needs_review"] == "yes"
    assert by["P1"]["photos"] == "2" and by["P1"]["call"] in ("mpox", "not_mpox")
    photos = rows_of(case_run.out / "r.csv")
    assert len(photos) == 8
    for row in photos:
        rel = Path(row["path"]).relative_to(case_run.photos)
        assert row["case_id"] == (rel.parts[0] if len(rel.parts) > 1 else rel.name)
    # The case's score is the highest score of its photos, as the photo CSV gives them.
    scores = [float(r["p_mpox"]) for r in photos if r["case_id"] == "P1"]
    assert float(by["P1"]["score"]) == pytest.approx(max(scores), abs=1e-6)
    summary = json.loads((case_run.out / "s.json").read_text())
    assert summary["cases"]["cases"] == 4 and summary["cases"]["grouping"] == "subfolder"


def test_the_pdf_has_a_case_summary_and_lists_each_photo_once_under_its_case(case_run):
    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(case_run.out / "r.pdf").pages)
    summary, _, listing = text.partition("Photos by case")
    assert "Cases (4)" in summary and listing
    for case in ("P1", "P2", "P3", "loose.jpg"):
        assert f"Case {case}:" in listing
    for name in ("P1_0.jpg", "P1_1.jpg", "P2_0.jpg", "P2_1.jpg", "P3_0.jpg", "P3_1.jpg", "broken.jpg"):
        assert listing.count(name) == 1, name
    # Under its own case: P1's photos come after "Case P1:" and before the next case heading.
    at = listing.index("Case P1:")
    nxt = min(i for c in ("P2", "P3", "loose.jpg") if (i := listing.find(f"Case {c}:")) > at) \
        if any(listing.find(f"Case {c}:") > at for c in ("P2", "P3", "loose.jpg")) else len(listing)
    assert "P1_0.jpg" in listing[at:nxt] and "P2_0.jpg" not in listing[at:nxt]


def fhir_bundle(path: Path):
    from fhir.resources.R4B.bundle import Bundle

    return Bundle.model_validate_json(path.read_text(encoding="utf-8"))


def test_the_fhir_bundle_validates_resolves_every_reference_and_counts_cases_photos_and_models(case_run):
    from core.models.bundle import read_card
    from core.reports.fhir_export import (CARD_SHA256_SYSTEM, CASE_ID_SYSTEM, FHIR_DISCLAIMER, INTERPRETATION_SYSTEM,
                                  WEIGHTS_SHA256_SYSTEM)

    bundle = fhir_bundle(case_run.out / "r.json")
    assert bundle.type == "collection"
    by_url = {e.fullUrl: e.resource for e in bundle.entry}
    assert len(by_url) == len(bundle.entry)
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                refs.append(node["reference"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads((case_run.out / "r.json").read_text()))
    assert refs and all(r in by_url for r in refs)
    kinds = [r.get_resource_type() for r in by_url.values()]
    reports = [r for r in by_url.values() if r.get_resource_type() == "DiagnosticReport"]
    assert sorted(r.identifier[0].value for r in reports) == ["P1", "P2", "P3", "loose.jpg"]
    assert all(r.identifier[0].system == CASE_ID_SYSTEM and r.status == "preliminary" for r in reports)
    assert all(FHIR_DISCLAIMER in r.conclusion for r in reports)
    assert kinds.count("Observation") == 7   # every scored photo; the broken file has no score
    assert kinds.count("Provenance") == 1
    obs = [r for r in by_url.values() if r.get_resource_type() == "Observation"]
    assert sum(len(r.result or []) for r in reports) == len(obs)
    assert all(o.interpretation[0].coding[0].system == INTERPRETATION_SYSTEM for o in obs)
    assert all(0.0 <= o.valueQuantity.value <= 1.0 for o in obs)
    devices = [r for r in by_url.values() if r.get_resource_type() == "Device"]
    card = read_card(case_run.bundle)
    assert len(devices) == 1
    ids = {i.system: i.value for i in devices[0].identifier}
    assert ids[WEIGHTS_SHA256_SYSTEM] == card.model_sha256 and ids[CARD_SHA256_SYSTEM] == card.card_sha256
    assert all(o.device.reference in by_url for o in obs)
    # No image bytes unless asked.
    assert "Media" not in kinds and '"data"' not in (case_run.out / "r.json").read_text()


def test_an_observation_carries_its_photos_sha256_and_relative_path(case_run):
    import hashlib

    from core.reports.fhir_export import FILE_SHA256_SYSTEM, PHOTO_PATH_SYSTEM

    bundle = fhir_bundle(case_run.out / "r.json")
    for e in bundle.entry:
        if e.resource.get_resource_type() != "Observation":
            continue
        ids = {i.system: i.value for i in e.resource.identifier}
        rel = ids[PHOTO_PATH_SYSTEM]
        assert not os.path.isabs(rel)
        assert ids[FILE_SHA256_SYSTEM] == hashlib.sha256((case_run.photos / rel).read_bytes()).hexdigest()


def test_case_outputs_obey_the_output_policy(case_run, capsys):
    inside = case_run.photos / "cases.csv"
    code = main(["classify", str(case_run.photos), "--model", str(case_run.bundle), "--case-csv", str(inside),
                 "--quiet"])
    assert code == 2 and not inside.exists()
    same = case_run.root / "same.json"
    code = main(["classify", str(case_run.photos), "--model", str(case_run.bundle), "--csv", str(same),
                 "--fhir", str(same), "--quiet"])
    assert code == 2 and not same.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the same path" in err


def test_a_column_grouping_on_a_folder_and_a_bad_pattern_are_refused_in_one_line(case_run, capsys):
    for cases in ("column:case_id", "regex:("):
        code = main(["classify", str(case_run.photos), "--model", str(case_run.bundle), "--cases", cases, "--quiet"])
        assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "needs a manifest" in err and "not a valid pattern" in err


def test_a_manifest_column_and_a_file_name_pattern_give_the_cases(case_run, tmp_path):
    files = sorted(p for p in case_run.photos.rglob("*.jpg") if p.name != "broken.jpg")
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "visit"])
        for i, p in enumerate(files):
            w.writerow([str(p), f"V{i % 2}"])
    out = tmp_path / "out"
    out.mkdir()
    assert main(["classify", str(manifest), "--model", str(case_run.bundle), "--cases", "column:visit",
                 "--case-csv", str(out / "c.csv"), "--csv", str(out / "r.csv"), "--quiet"]) == 0
    assert sorted(r["case_id"] for r in rows_of(out / "c.csv")) == ["V0", "V1"]
    assert {r["case_id"] for r in rows_of(out / "r.csv")} == {"V0", "V1"}
    assert main(["classify", str(case_run.photos), "--model", str(case_run.bundle), "--cases", r"regex:^(P\d)_",
                 "--case-csv", str(out / "p.csv"), "--quiet"]) == 0
    assert sorted(r["case_id"] for r in rows_of(out / "p.csv")) == ["P1", "P2", "P3", "P3/broken.jpg", "loose.jpg"]


def test_parquet_rows_carry_the_case_id_and_give_the_same_fhir_cases(case_run, tmp_path):
    pytest.importorskip("pyarrow")
    from core.store.sources import read_parquet_results

    shards = tmp_path / "shards"
    assert main(["classify", str(case_run.photos), "--model", str(case_run.bundle), "--cases", "subfolder",
                 "--parquet", str(shards), "--quiet"]) == 0
    rows = read_parquet_results(shards)
    assert {r["case_id"] for r in rows} == {"P1", "P2", "P3", "loose.jpg"}
    out = tmp_path / "p.json"
    assert main(["fhir", str(shards), str(out), "--model", str(case_run.bundle), "--root", str(case_run.photos)]) == 0
    bundle = fhir_bundle(out)
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds.count("DiagnosticReport") == 4 and kinds.count("Observation") == 7 and kinds.count("Device") == 1
    reports = sorted(e.resource.identifier[0].value for e in bundle.entry
                     if e.resource.get_resource_type() == "DiagnosticReport")
    assert reports == ["P1", "P2", "P3", "loose.jpg"]


def test_fhir_from_parquet_never_writes_over_a_photo_or_into_a_photo_folder(case_run, tmp_path, capsys):
    """`mpox-triage fhir SHARDS OUT` refuses, as classify does, an OUT that is one of the run's photos or lies in a
    folder its photos came from (it wrote JSON over a photo before); the photo is unchanged."""
    pytest.importorskip("pyarrow")
    import hashlib

    shards = tmp_path / "shards"
    assert main(["classify", str(case_run.photos), "--model", str(case_run.bundle), "--parquet", str(shards),
                 "--quiet"]) == 0
    photo = case_run.photos / "P1" / "P1_0.jpg"
    before = hashlib.sha256(photo.read_bytes()).hexdigest()
    capsys.readouterr()
    for out in (photo, case_run.photos / "P2" / "bundle.json", case_run.photos / "bundle.json"):
        assert main(["fhir", str(shards), str(out), "--model", str(case_run.bundle)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "lies inside the folder" in err[0], err
    assert hashlib.sha256(photo.read_bytes()).hexdigest() == before
    assert not (case_run.photos / "P2" / "bundle.json").exists() and not (case_run.photos / "bundle.json").exists()


# --- evaluate: triage per case ----------------------------------------------------------------------------------
def test_case_triage_counts_a_case_as_mpox_when_any_photo_is_and_as_reviewed_when_any_photo_is():
    from core.store.cases import case_triage
    from core.models.operating_point import wilson

    labels = {"a1": 1, "a2": 0, "b1": 0, "b2": 0, "c1": 1, "d1": 0}
    review = {"a1": False, "a2": True, "b1": False, "b2": False, "c1": False, "d1": True}
    case_of = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C", "d1": "D"}
    out = case_triage(labels, review, case_of)
    # Mpox cases A (reviewed through a2) and C (missed); other cases B (not reviewed) and D (reviewed).
    assert (out["n_cases"], out["n_mpox_cases"], out["n_other_cases"]) == (4, 2, 2)
    assert out["triage_sensitivity"] == 0.5 and out["triage_sensitivity_ci95"] == wilson(1, 2)
    assert out["triage_specificity"] == 0.5 and out["triage_specificity_ci95"] == wilson(1, 2)


def test_evaluate_reports_case_level_triage_from_a_pattern_or_a_manifest_column(case_run, tmp_path, capsys):
    from tests.helpers import make_image_folder

    data = make_image_folder(tmp_path / "data", n_per_class=3, size=(40, 32))
    report = tmp_path / "e.json"
    assert main(["evaluate", str(data), "--model", str(case_run.bundle), "--bootstrap", "0", "--quiet",
                 "--cases", r"regex:^([a-z]+)_", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    cases = result["cases"]
    assert (cases["n_cases"], cases["n_mpox_cases"], cases["n_other_cases"]) == (2, 1, 1)
    preds = result["predictions"]
    looked = {p["label"]: False for p in preds}
    for p in preds:
        looked[p["label"]] = looked[p["label"]] or p["prediction"] == "mpox" or bool(p["flag"])
    assert cases["triage_sensitivity"] == float(looked["mpox"])
    assert cases["triage_specificity"] == float(not looked["not_mpox"])
    assert "case_triage_sensitivity" in capsys.readouterr().out

    manifest = tmp_path / "m.csv"
    files = sorted(data.rglob("*.jpg"))
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient"])
        for i, p in enumerate(files):
            w.writerow([str(p.relative_to(tmp_path)), p.parent.name, f"pt{i}"])
    assert main(["evaluate", str(manifest), "--model", str(case_run.bundle), "--bootstrap", "0", "--quiet",
                 "--cases", "column:patient", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["cases"]["n_cases"] == len(files)


def test_evaluate_refuses_subfolder_cases_because_subfolders_are_the_classes(case_run, tmp_path, capsys):
    from tests.helpers import make_image_folder

    data = make_image_folder(tmp_path / "data", n_per_class=2, size=(40, 32))
    assert main(["evaluate", str(data), "--model", str(case_run.bundle), "--cases", "subfolder", "--quiet"]) == 2
    assert main(["evaluate", str(data), "--model", str(case_run.bundle), "--cases", "column:patient",
                 "--bootstrap", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "subfolders are the classes" in err and "manifest" in err


@pytest.mark.slow
def test_the_ray_engine_writes_the_same_case_ids_and_its_parquet_gives_the_fhir_cases(case_run, tmp_path):
    import importlib.util
    import shutil
    import subprocess
    import sys
    import tempfile

    if not all(importlib.util.find_spec(m) for m in ("ray", "pyarrow")):
        pytest.skip('Ray is not installed (pip install -e ".[scale]")')
    from core.store.sources import read_parquet_results

    repo = Path(__file__).resolve().parents[1]
    temp = tempfile.mkdtemp(prefix="mpox-ray-")   # Ray's socket paths must stay short
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(repo), MPOX_TRIAGE_RAY_TEMP=temp,
               RAY_USAGE_STATS_ENABLED="0")
    shards, out = tmp_path / "shards", tmp_path / "ray.csv"
    try:
        proc = subprocess.run([sys.executable, "-m", "core.cli", "classify", str(case_run.photos), "--model",
                               str(case_run.bundle), "--engine", "ray", "--cases", "subfolder", "--parquet",
                               str(shards), "--csv", str(out), "--quiet"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = {r["path"]: r["case_id"] for r in rows_of(case_run.out / "r.csv")}
    assert {r["path"]: r["case_id"] for r in rows_of(out)} == local
    assert {r["path"]: r["case_id"] for r in read_parquet_results(shards)} == local
    fhir = tmp_path / "ray.json"
    assert main(["fhir", str(shards), str(fhir), "--model", str(case_run.bundle), "--root", str(case_run.photos)]) == 0
    kinds = [e.resource.get_resource_type() for e in fhir_bundle(fhir).entry]
    assert kinds.count("DiagnosticReport") == 4 and kinds.count("Observation") == 7


def test_fhir_images_embeds_each_scored_photo_once_only_when_asked(case_run, tmp_path):
    import base64

    from core.reports.fhir_export import PHOTO_PATH_SYSTEM

    out = tmp_path / "img.json"
    assert main(["classify", str(case_run.photos), "--model", str(case_run.bundle), "--cases", "subfolder",
                 "--fhir", str(out), "--fhir-images", "--quiet"]) == 0
    entries = fhir_bundle(out).entry
    media = [e for e in entries if e.resource.get_resource_type() == "Media"]
    obs = [e.resource for e in entries if e.resource.get_resource_type() == "Observation"]
    assert len(media) == len(obs) == 7
    urls = {e.fullUrl for e in media}
    assert all(o.derivedFrom[0].reference in urls for o in obs)
    for e in json.loads(out.read_text())["entry"]:   # the file holds the bytes as FHIR base64Binary text
        res = e["resource"]
        if res["resourceType"] == "Media":
            rel = {i["system"]: i["value"] for i in res["identifier"]}[PHOTO_PATH_SYSTEM]
            assert base64.b64decode(res["content"]["data"]) == (case_run.photos / rel).read_bytes()


def test_a_case_id_that_looks_like_a_formula_is_written_as_text_in_the_case_csv(tmp_path):
    from core.store.cases import write_case_csv

    view = view_of([rec("/r/=HYPERLINK(1)/a.jpg", 0.7)], {"/r/=HYPERLINK(1)/a.jpg": "=HYPERLINK(1)"})
    out = write_case_csv(view, tmp_path / "c.csv")
    assert rows_of(out)[0]["case_id"] == "'=HYPERLINK(1)"


@pytest.mark.shared_data
@pytest.mark.slow
def test_evaluate_on_msld_v1_counts_one_case_per_patient_and_a_patient_as_mpox_when_any_photo_is(shared_data,
                                                                                                 tmp_path):
    """MSLD v1 is the one collection in ../shared with patient ids (its `group`s are duplicate-photo groups, not
    patients): cases by `patient_id` over its test split, with the shipped combined model."""
    rows = [r for r in csv.DictReader(open(shared_data / "manifest.csv", encoding="utf-8"))
            if r["dataset"] == "MSLD v1" and r["split"] == "test" and r["patient_id"]]
    if not rows:
        pytest.skip("no MSLD v1 test photos with patient ids in ../shared/data/manifest.csv")
    manifest = tmp_path / "msld_test.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "path": str((shared_data / r["path"]).resolve())})
    report = tmp_path / "e.json"
    assert main(["evaluate", str(manifest), "--model", "combined", "--split", "all", "--bootstrap", "0", "--quiet",
                 "--cases", "column:patient_id", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    patients = {r["patient_id"] for r in rows}
    mpox_patients = {r["patient_id"] for r in rows if r["label_binary"] == "mpox"}
    scored = {os.path.realpath(p["path"]) for p in result["predictions"]}
    assert len(scored) == len(rows)   # every photo scored: each patient is a case of its own photos
    cases = result["cases"]
    assert (cases["n_cases"], cases["n_mpox_cases"]) == (len(patients), len(mpox_patients))
    # A patient goes to review when any of their photos is called mpox or flagged.
    patient_of = {os.path.realpath(str((shared_data / r["path"]).resolve())): r["patient_id"] for r in rows}
    looked = {patient_of[os.path.realpath(p["path"])] for p in result["predictions"]
              if p["prediction"] == "mpox" or p["flag"]}
    assert cases["triage_sensitivity"] == pytest.approx(len(looked & mpox_patients) / len(mpox_patients))
    others = patients - mpox_patients
    assert cases["triage_specificity"] == pytest.approx(len(others - looked) / len(others))


def test_the_case_csv_of_a_reopened_session_is_the_one_the_run_wrote(case_run, tmp_path):
    """Facts are functions of what the session stores: reopening the folder and its session gives the same cases
    (with the model's card met, as the app adds its bundles' cards when it opens a folder)."""
    from core.models.bundle import read_card
    from core.store.cases import workspace_view
    from core.store.workspace import Workspace

    with Workspace.open(case_run.photos, case_run.root / "session") as ws:
        card = read_card(case_run.bundle)
        ws.cards.setdefault(card.key, card)
        view = workspace_view(ws, None, Grouping.parse("subfolder"))
        out = write_case_csv_again(view, tmp_path / "again.csv")
    assert rows_of(out) == rows_of(case_run.out / "cases.csv")


def write_case_csv_again(view, out):
    from core.store.cases import write_case_csv

    return write_case_csv(view, out)


def test_the_case_csv_and_the_fhir_bundle_each_leave_one_export_entry_in_the_audit_trail(case_run):
    from core.store.workspace import ACTION_EXPORTED, Workspace

    with Workspace.open(case_run.photos, case_run.root / "session") as ws:
        entries = [e["details"] for e in ws.session.audit(ACTION_EXPORTED)]
    kinds = [d["kind"] for d in entries]
    assert kinds.count("case_csv") == 1 and kinds.count("fhir") == 1 and kinds.count("pdf") == 1
    fhir = next(d for d in entries if d["kind"] == "fhir")
    assert fhir["path"] == str(case_run.out / "r.json") and fhir["photos"] == 8
