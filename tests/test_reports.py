"""PDF reports: one line per photo, counts in photos, needs-review first, sign-off, shift alarm, a readable
model card, the disclaimer and page numbers on every page, privacy, scale and atomic writing."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from pypdf import PdfReader

from core import DISCLAIMER, __version__
from core.triage.agreement import ENGINE_ONE_THRESHOLD, ENGINE_OWN_CALLS
from core.models.bundle import ModelCard
from core.progress import CancelToken, Cancelled
from core.records import ResultRecord
from core.reports import (
    SHIFT_ADVICE,
    ReportWriteError,
    compute_agreement,
    count_records,
    make_gradcam_thumbnail,
    make_thumbnail,
    photo_rows,
    write_pdf_report,
)
from tests.helpers import make_photo

SHA = "ab12" * 16
SHA2 = "cd34" * 16


def make_card(**kw) -> ModelCard:
    defaults = dict(name="mpox-test", version="1.2.3", architecture="mobilenetv2", input_size=224,
                    threshold=0.5, uncertain_band=[0.4, 0.6], model_sha256=SHA, ood_threshold=1.44,
                    metrics={"test": {"auc": 0.9, "sensitivity": 0.85}},
                    training_data={"datasets": ["generated"], "n_train": 10},
                    limitations=["Generated test card; says nothing about real photos."])
    defaults.update(kw)
    return ModelCard(**defaults)


def rec(path: Path | str, p: float | None, flag: str = "", status: str = "ok", error: str = "",
        model: str = "mpox-test", version: str = "1.2.3", sha: str = SHA, threshold: float = 0.5,
        ood: float = 1.0) -> ResultRecord:
    if status != "ok":
        return ResultRecord(path=str(path), status="error", error=error or f"{path}: cannot decode image",
                            model=model, model_version=version, model_sha256=sha)
    return ResultRecord(path=str(path), status="ok", p_mpox=p, prediction="mpox" if p >= threshold else "not_mpox",
                        flag=flag, ood_score=ood, model=model, model_version=version, model_sha256=sha,
                        threshold=threshold)


def second_model(r: ResultRecord, p: float | None = None, flag: str | None = None) -> ResultRecord:
    """The same photo scored by another model, optionally with another score."""
    data = {**r.to_dict(), "model": "other-model", "model_version": "9.9", "model_sha256": SHA2}
    if r.ok:
        p = r.p_mpox if p is None else p
        data.update(p_mpox=p, prediction="mpox" if p >= 0.5 else "not_mpox",
                    flag=r.flag if flag is None else flag)
    return ResultRecord(**data)


def pdf_pages(path: Path) -> list[str]:
    return [re.sub(r"\s+", " ", page.extract_text() or "") for page in PdfReader(str(path)).pages]


def two_cards() -> list[ModelCard]:
    return [make_card(), make_card(name="other-model", version="9.9", model_sha256=SHA2)]


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i in range(6):
        p = folder / f"img_{i:02d}.jpg"
        make_photo((64, 48), seed=i).save(p)
        paths.append(p)
    return paths


def mixed_records(photos: list[Path]) -> list[ResultRecord]:
    ps = [0.91, 0.55, 0.12, 0.47, 0.3]
    flags = ["", "uncertain", "", "uncertain", "out_of_scope"]
    records = [rec(path, p, f, ood=1.9 if f == "out_of_scope" else 1.0) for path, p, f in zip(photos, ps, flags)]
    records.append(rec(photos[5], None, status="error", error=f"{photos[5]}: file is truncated"))
    return records


def two_model_records(photos: list[Path]) -> list[ResultRecord]:
    """Six photos, two models: the second agrees except on img_02 (0.12 -> 0.70: it calls mpox)."""
    first = mixed_records(photos)
    second = [second_model(r, p=0.70 if r.path.endswith("img_02.jpg") else None) for r in first]
    return first + second


# ---------------------------------------------------------------------------------------------- pages


def test_every_page_has_disclaimer_and_page_x_of_y(tmp_path, photos):
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=[make_card()], truth={str(p): "mpox" for p in photos[:3]})
    pages = pdf_pages(out)
    assert len(pages) >= 3
    for number, text in enumerate(pages, start=1):
        assert DISCLAIMER in text, f"page {number} lacks the disclaimer"
        assert f"Page {number} of {len(pages)}" in text


def test_cover_has_counts_model_hash_threshold_and_app_version(tmp_path, photos):
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=[make_card(threshold=0.437)])
    cover = pdf_pages(out)[0]
    assert SHA in cover.replace(" ", "")
    assert "0.437" in cover
    assert f"mpox-triage {__version__}" in cover
    assert "Folder: photos (6 photos" in cover and str(photos[0].parent) not in cover   # no machine path
    assert re.search(r"Photos in this report 6 100\.0%", cover)
    assert re.search(r"Could not be read 1 16\.7%", cover)
    assert re.search(r"Scored 5 83\.3%", cover)
    assert re.search(r"Called mpox 2 40\.0%", cover)       # 0.91 and 0.55, of 5 scored
    assert re.search(r"Called not mpox 3 60\.0%", cover)
    assert re.search(r"Needs review 4 66\.7%", cover)     # the error, out of scope and two uncertain
    assert re.search(r"uncertain 2 50\.0%", cover)
    assert re.search(r"out of scope 1 25\.0%", cover)
    assert "models disagree" not in cover.lower()         # one model: nothing to disagree about


def test_two_model_run_has_one_row_per_photo_with_both_scores_side_by_side(tmp_path, photos):
    out = write_pdf_report(two_model_records(photos), tmp_path / "two.pdf", folder=str(photos[0].parent),
                           cards=two_cards())
    text = " ".join(pdf_pages(out))
    for p in photos:
        assert text.count(p.name) == 1, f"{p.name} should be on exactly one line"
    # Both models' scores on the photo's one line, then why it needs review.
    assert re.search(r"img_02\.jpg 0\.120 not mpox 0\.700 mpox models disagree", text)
    assert re.search(r"img_00\.jpg 0\.910 mpox 0\.910 mpox", text)
    assert re.search(r"img_05\.jpg error error unreadable: file is truncated", text)


def test_cover_counts_photos_not_file_x_model(tmp_path, photos):
    records = two_model_records(photos)
    reviews = {str(photos[0]): {"label": "mpox", "reviewer": "Dr Who", "time": "t"},
               str(photos[2]): {"label": "not_mpox", "reviewer": "Dr Who", "time": "t"}}
    out = write_pdf_report(records, tmp_path / "two.pdf", folder=str(photos[0].parent), cards=two_cards(),
                           reviews=reviews)
    cover = pdf_pages(out)[0]
    assert len(records) == 12
    assert re.search(r"Photos in this report 6 100\.0%", cover)
    assert re.search(r"Could not be read 1 16\.7%", cover)          # one broken file, not one per model
    assert re.search(r"Scored by every model 5 83\.3%", cover)
    assert re.search(r"Models disagree 1 20\.0%", cover)
    assert re.search(r"Reviewed by a person 2 33\.3%", cover)       # two photos, though four records
    # Each model's own results stay separate (not pooled) in the per-model table.
    assert re.search(r"mpox-test 1\.2\.3 5 1 2 \(40\.0%\)", cover)
    assert re.search(r"other-model 9\.9 5 1 3 \(60\.0%\)", cover)


def test_models_disagree_appears_on_cover_and_in_the_photo_row(tmp_path, photos):
    out = write_pdf_report(two_model_records(photos), tmp_path / "two.pdf", folder=str(photos[0].parent),
                           cards=two_cards())
    pages = pdf_pages(out)
    assert "Models disagree 1" in pages[0]
    body = " ".join(pages[1:])
    row = body[body.index("img_02.jpg"):][:120]
    assert "models disagree" in row


def test_photos_needing_review_come_first_in_their_order_then_highest_risk(tmp_path):
    folder = tmp_path / "ph"
    folder.mkdir()
    names = ["neg", "err", "unc", "pos", "ood", "mid", "dis"]
    for i, n in enumerate(names):
        make_photo((32, 32), seed=i).save(folder / f"{n}.jpg")
    f = {n: folder / f"{n}.jpg" for n in names}
    first = [rec(f["neg"], 0.1), rec(f["err"], None, status="error"), rec(f["unc"], 0.45, "uncertain"),
             rec(f["pos"], 0.95), rec(f["ood"], 0.2, "out_of_scope", ood=2.5), rec(f["mid"], 0.7),
             rec(f["dis"], 0.6)]
    # The second model agrees everywhere except on "dis" (0.2: not mpox).
    second = [second_model(r, p=0.2 if r.path.endswith("dis.jpg") else None) for r in first]
    records = second + first  # input order must not matter
    rows = photo_rows(records)
    assert [Path(r.path).stem for r in rows] == ["err", "ood", "dis", "unc", "pos", "mid", "neg"]
    out = write_pdf_report(records, tmp_path / "o.pdf", folder=str(folder), cards=two_cards())
    body = " ".join(pdf_pages(out)[1:])
    at = [body.index(f"{n}.jpg") for n in ("err", "ood", "dis", "unc", "pos", "mid", "neg")]
    assert at == sorted(at)
    assert body.index("Photos that need review (4)") < at[0] and body.index("Other photos (3)") < at[4]


def test_out_of_scope_row_gives_its_true_score_and_limit(tmp_path, photos):
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=[make_card(ood_threshold=1.44)])
    assert "unlike the training photos, embedding distance 1.90 > limit 1.44" in " ".join(pdf_pages(out))
    # The not-a-skin-photo check has its own score and limit; neither is ever printed against the other's.
    records = mixed_records(photos)
    records[2] = ResultRecord(**{**records[2].to_dict(), "flag": "out_of_scope", "scope_score": 1.0, "ood_score": 1.39})
    out = write_pdf_report(records, tmp_path / "s.pdf", folder=str(photos[0].parent),
                           cards=[make_card(ood_threshold=1.44)], scope_limit=0.95)
    text = " ".join(pdf_pages(out))
    assert "Not-a-skin-photo score 1.00 > limit 0.95" in text
    assert "1.39 > 1.44" not in text and "1.39" not in text


def test_sign_off_block_on_the_cover_names_each_reviewer_without_nested_parentheses(tmp_path, photos):
    """Issue 24: the sign-off read "(<reviewer name> (50 photos))"."""
    reviews = {str(photos[0]): {"label": "mpox", "reviewer": "Dr Who", "time": "t"}}
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=[make_card()], reviews=reviews)
    cover = pdf_pages(out)[0]
    assert "Sign-off" in cover
    assert re.search(r"Reviewed by \(name, role\) Date Signature", cover)
    assert "1 of 6 photos carry a reviewer's label, given by Dr Who: 1 photo." in cover
    assert "4 of the 4 photos that need review have none yet" in cover
    assert not re.search(r"\([^()]*\(", cover.split("Sign-off")[1])


def test_shift_alarm_banner_when_detected_only(tmp_path, photos):
    shift = {"detected": True, "p_value": 0.004, "statistic": 0.083, "n": 5}
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=[make_card()], shift=shift)
    cover = pdf_pages(out)[0]
    assert "Shift alarm" in cover and "p = 0.004" in cover
    assert SHIFT_ADVICE in cover
    quiet = write_pdf_report(mixed_records(photos), tmp_path / "q.pdf", folder=str(photos[0].parent),
                             cards=[make_card()], shift={"detected": False, "p_value": 0.41, "statistic": 0.01,
                                                         "n": 5})
    cover = pdf_pages(quiet)[0]
    assert "Shift alarm" not in cover and SHIFT_ADVICE not in cover and "no shift detected (p = 0.41" in cover
    none = write_pdf_report(mixed_records(photos), tmp_path / "n.pdf", folder=str(photos[0].parent),
                            cards=[make_card()])
    assert "Shift alarm" not in pdf_pages(none)[0] and "Shift check" not in pdf_pages(none)[0]


def test_the_cover_names_every_models_standing_alarm_not_only_the_deciding_ones(tmp_path, photos):
    """Two models: the deciding one finds no shift, the other's alarm stands (stderr and the app's banner say so).
    The cover names both; the band is said to be widened only for a model whose point actually moved."""
    cards = [make_card(), make_card(name="other-model", version="9.9", model_sha256=SHA2)]
    keys = [c.key for c in cards]
    quiet = {"detected": False, "p_value": 0.41, "statistic": 0.01, "n": 5, "model": "mpox-test 1.2.3",
             "model_key": keys[0]}
    alarm = {"detected": True, "p_value": 0.004, "statistic": 0.08, "n": 5, "model": "other-model 9.9",
             "model_key": keys[1], "operating_point": "out_of_collection", "remedy": "label the sample"}
    out = write_pdf_report(two_model_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=cards, shift=quiet, shifts={keys[0]: quiet, keys[1]: alarm})
    cover = " ".join(pdf_pages(out)[0].split())
    assert "Shift check (mpox-test 1.2.3): no shift detected (p = 0.41" in cover
    assert "Shift alarm (other-model 9.9)" in cover and "What to do: label the sample." in cover
    # This card has no out-of-collection point of its own, so its point did not move: no "widened" claim.
    assert "review band was widened" not in cover


def test_each_model_origin_is_shown_with_a_local_models_parent(tmp_path, photos):
    cards = [make_card(), make_card(name="other-model", version="9.9", model_sha256=SHA2,
                                    parent={"name": "mpox-test", "version": "1.0.0", "sha256": "00" * 32})]
    out = write_pdf_report(two_model_records(photos), tmp_path / "o.pdf", folder=str(photos[0].parent),
                           cards=cards, origins={SHA: "shipped", SHA2: "local"})
    text = " ".join(pdf_pages(out))
    cover = pdf_pages(out)[0]
    assert "shipped with the app" in cover and "local model, from mpox-test 1.0.0" in cover
    assert "Origin: local model, from mpox-test 1.0.0" in text  # the card summary says it too


# ---------------------------------------------------------------------------------------------- model card


def _metric_set(n, n_mpox, tp, fn, fp, tn, auc):
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    return {"accuracy": (tp + tn) / n, "precision": tp / (tp + fp), "sensitivity": sens, "specificity": spec,
            "f1": 0.9, "roc_auc": auc, "pr_auc": 0.97, "brier": 0.07, "ece": 0.076, "recall": sens, "n": n,
            "n_mpox": n_mpox, "threshold": 0.388,
            "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "matrix": [[tn, fp], [fn, tp]],
                          "rows": "true not_mpox, true mpox", "cols": "predicted not_mpox, predicted mpox"},
            "ci95": {"sensitivity": [sens - 0.08, min(1.0, sens + 0.08)], "specificity": [spec - 0.07, spec + 0.05],
                     "roc_auc": [auc - 0.03, min(1.0, auc + 0.02)]},
            "flags": {"uncertain": 20, "out_of_scope": 2, "n": n},
            "per_source": {"MSID": {"n": 112, "n_mpox": 39, "sensitivity": 0.79, "roc_auc": 0.97},
                           "MSLD v1": {"n": 43, "n_mpox": 27, "sensitivity": 0.89, "roc_auc": 0.91}}}


def realistic_card() -> ModelCard:
    """A card shaped like a shipped one: nested metrics, confusion, intervals, counts, history."""
    return make_card(
        threshold=0.388, threshold_reason="highest threshold with sensitivity >= 0.95 on the validation split",
        metrics={"val": _metric_set(162, 73, 70, 3, 12, 77, 0.973), "test": _metric_set(155, 66, 55, 11, 8, 81, 0.955),
                 "selection": "all choices made on val; test never used in training",
                 "transfer": {"MSID -> MSLD v1": {"roc_auc": 0.843, "sensitivity": 1.0, "specificity": 0.128,
                                                  "n": 184, "n_mpox": 75},
                              "method": "leave-one-collection-out"}},
        training_data={"n_images": 973, "n_groups": 814,
                       "counts": {"val": {"mpox": 73, "not_mpox": 89}, "train": {"mpox": 232, "not_mpox": 424},
                                  "test": {"mpox": 66, "not_mpox": 89}},
                       "sources": {"train": {"MSID/mpox": 173, "MSLD v1/mpox": 59}},
                       "split": {"protocol": "manifest", "manifest": "../shared/data/manifest.csv"},
                       "root": "../shared/data", "unreadable_files": [], "test_used_in_training": False},
        training={"preset": "quick", "config": {"fine_tune_lr": None, "ood_components": 32, "transfer": True},
                  "history": [{"phase": "head", "epoch": e, "loss": 0.5 / e, "accuracy": 0.8, "val_loss": 0.4 / e,
                               "val_accuracy": 0.85} for e in range(1, 6)]},
        parent={"name": "mpox-test", "version": "1.0.0", "sha256": "00" * 32},
        files={"model.keras": SHA}, extra={"runtime": {"format": "tflite", "agreement": {"max_abs_diff_p": 2e-6}}})


def test_model_card_is_one_page_in_words_and_points_to_the_full_card(tmp_path, photos):
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=[realistic_card()])
    pages = pdf_pages(out)
    text = " ".join(pages)
    card_pages = [p for p in pages if "Model card: mpox-test 1.2.3" in p]
    assert len(card_pages) == 1
    summary = card_pages[0]
    # The summary says in words what the model is, what it learned from, how it decides and how well it did.
    assert "MobileNetV2 image classifier (224×224 pixel input)" in summary
    assert "973 photos in 814 independent groups" in summary
    assert "Called mpox when p(mpox) is at least 0.388. Why: highest threshold" in summary
    assert "found 55 of 66 mpox photos (sensitivity 83.3%, 95% interval 75.3%–91.3%)" in summary
    assert "found 70 of 73 mpox photos (sensitivity 95.9%, 95% interval 87.9%–100%)" in summary
    assert "8 false alarms among 89 other photos" in summary
    assert "Trained on MSID only, tried on MSLD v1" in summary
    assert "Generated test card" in summary and "Intended use" in summary
    for row in ("Validation 162 0.907", "Test 155 0.877", "Transfer MSID -> MSLD v1 184"):
        assert row in summary
    # The full card is one command or menu away, not printed raw.
    assert "File > Export model card" in summary and "mpox-triage models --card mpox-test" in summary
    assert "Appendix" not in text
    for raw in ("counts.val", "val.mpox", "confusion", "tn:", "tn 77", "ci95", "n_mpox", "roc_auc", "root ../",
                "test_used_in_training", "fine_tune_lr", "{", "[", "matrix"):
        assert raw not in text, f"raw card text {raw!r} in the report"
    assert not re.search(r"\bNone\b(?! of these)|\bnan\b|\bTrue\b|\bFalse\b", text)


def test_a_card_with_many_limits_still_takes_one_page(tmp_path, photos):
    card = realistic_card()
    card.limitations = [f"Limit number {i}: " + "words " * 30 for i in range(40)]
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent), cards=[card])
    pages = pdf_pages(out)
    card_pages = [k for k, p in enumerate(pages) if "Model card: mpox-test" in p or "Limit number" in p]
    assert len(card_pages) == 1


# ---------------------------------------------------------------------------------------------- atomic


def test_full_disk_raises_one_line_and_leaves_the_previous_report(tmp_path, photos, monkeypatch):
    import core.reports.publish as publish

    target = tmp_path / "out" / "report.pdf"
    target.parent.mkdir()
    target.write_bytes(b"%PDF previous report")

    def half_then_enospc(path, data):
        with open(path, "wb") as fh:
            fh.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publish, "_write_file", half_then_enospc)
    with pytest.raises(ReportWriteError) as info:
        write_pdf_report(mixed_records(photos), target, folder=str(photos[0].parent), cards=[make_card()])
    message = str(info.value)
    assert "\n" not in message and str(target) in message and "no space left" in message
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert target.read_bytes() == b"%PDF previous report"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.pdf"]  # no half-written temp file


def test_a_failure_while_building_leaves_the_previous_report_and_no_new_file(tmp_path, photos, monkeypatch):
    import core.reports.photo_table as photos_section

    target = tmp_path / "report.pdf"
    target.write_bytes(b"%PDF previous report")

    def boom(*_a, **_k):
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr(photos_section, "make_thumbnail", boom)
    with pytest.raises(RuntimeError, match="decoder crashed"):
        write_pdf_report(mixed_records(photos), target, folder=str(photos[0].parent), cards=[make_card()])
    assert target.read_bytes() == b"%PDF previous report"
    with pytest.raises(RuntimeError):
        write_pdf_report(mixed_records(photos), tmp_path / "new.pdf", folder=str(photos[0].parent),
                         cards=[make_card()])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["report.pdf"]


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
def test_the_report_gets_the_usual_file_mode_not_a_temp_files(tmp_path, photos):
    old = os.umask(0o022)
    try:
        out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                               cards=[make_card()])
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_an_unwritable_folder_is_one_clear_error(tmp_path, photos):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(ReportWriteError, match=r"Could not write the report .*not_a_folder"):
        write_pdf_report(mixed_records(photos), blocker / "r.pdf", folder=str(photos[0].parent),
                         cards=[make_card()])


# ---------------------------------------------------------------------------------------------- content


def test_image_table_lists_every_file_and_model_card_section(tmp_path, photos):
    records = mixed_records(photos)
    reviews = {str(photos[2]): {"label": "mpox", "reviewer": "Dr Who", "time": "2026-01-01T00:00:00Z"}}
    out = write_pdf_report(records, tmp_path / "r.pdf", folder=str(photos[0].parent), cards=[make_card()],
                           reviews=reviews)
    text = " ".join(pdf_pages(out))
    for p in photos:
        assert p.name in text
    assert "file is truncated" in text
    assert "Dr Who" in text
    assert "Model card: mpox-test" in text and "Generated test card" in text and "Intended use" in text


def test_one_image_report(tmp_path, photos):
    out = write_pdf_report([rec(photos[0], 0.8)], tmp_path / "one.pdf", folder=str(photos[0].parent),
                           cards=[make_card()])
    pages = pdf_pages(out)
    assert re.search(r"Photos in this report 1 100\.0%", pages[0])
    assert photos[0].name in " ".join(pages)
    assert "Agreement with reference labels" not in " ".join(pages)  # no labels, no metrics page
    assert "Photos that need review None" in " ".join(pages)
    assert all(DISCLAIMER in t for t in pages)


def test_report_of_only_errors_still_builds(tmp_path):
    missing = tmp_path / "gone.jpg"
    out = write_pdf_report([rec(missing, None, status="error")], tmp_path / "err.pdf", folder=str(tmp_path),
                           cards=[])
    text = " ".join(pdf_pages(out))
    assert "No photo could be scored" in text and "no preview" in text


def test_metrics_page_with_truth_reports_confusion_and_intervals(tmp_path, photos):
    records = mixed_records(photos)
    truth = {str(photos[0]): "mpox", str(photos[1]): "not_mpox", str(photos[2]): "not_mpox",
             str(photos[3]): "mpox", str(photos[4]): "not_mpox"}
    out = write_pdf_report(records, tmp_path / "m.pdf", folder=str(photos[0].parent), cards=[make_card()],
                           truth=truth)
    text = " ".join(pdf_pages(out))
    assert "Agreement with reference labels" in text
    assert "5 scored photos have a reference label (5 from ground-truth folders)" in text
    # mpox: 0.91 (tp), 0.47 (fn); not mpox: 0.55 (fp), 0.12, 0.30 (tn) -> sensitivity 0.5, specificity 0.667
    assert "Sensitivity 0.500" in text and "Specificity 0.667" in text


def test_two_models_get_their_own_agreement_sections(tmp_path, photos):
    truth = {str(p): "mpox" for p in photos}
    out = write_pdf_report(two_model_records(photos), tmp_path / "two.pdf", folder=str(photos[0].parent),
                           cards=two_cards(), truth=truth)
    text = " ".join(pdf_pages(out))
    assert "Agreement with reference labels: mpox-test 1.2.3" in text
    assert "Agreement with reference labels: other-model 9.9" in text
    assert SHA2 in text.replace(" ", "") and SHA in text.replace(" ", "")
    # each model's own 5 scored photos, not 10 pooled results
    assert text.count("5 scored photos have a reference label") == 2


# ---------------------------------------------------------------------------------------------- agreement


def test_agreement_prefers_truth_over_review_and_skips_unsure():
    recs = [rec(f"/x/{i}.jpg", p) for i, p in enumerate([0.9, 0.8, 0.2, 0.1, 0.6])]
    truth = {"/x/0.jpg": "mpox"}
    reviews = {"/x/0.jpg": {"label": "not_mpox"}, "/x/1.jpg": {"label": "mpox"},
               "/x/2.jpg": {"label": "not_mpox"}, "/x/3.jpg": {"label": "unsure"}}
    ag = compute_agreement(recs, reviews, truth, resamples=200)
    assert (ag.n, ag.from_truth, ag.from_review, ag.left_out_unsure) == (3, 1, 2, 1)
    assert ag.confusion == {"tp": 2, "fn": 0, "fp": 0, "tn": 1}
    assert compute_agreement(recs, None, None) is None


def test_agreement_uses_core_evaluation_and_sklearn():
    from sklearn.metrics import roc_auc_score

    from core.triage.metrics import bootstrap_ci, evaluate_probabilities

    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.4
    p = np.clip(np.where(y, 0.65, 0.35) + rng.normal(0, 0.2, 300), 0, 1).round(2)  # rounding makes ties
    recs = [rec(f"/x/{i}.jpg", float(pi)) for i, pi in enumerate(p)]
    truth = {f"/x/{i}.jpg": "mpox" if yi else "not_mpox" for i, yi in enumerate(y)}
    ag = compute_agreement(recs, None, truth, resamples=300)
    pred = p >= 0.5
    assert ag.sensitivity == pytest.approx((pred & y).sum() / y.sum())
    assert ag.specificity == pytest.approx((~pred & ~y).sum() / (~y).sum())
    assert ag.auc == pytest.approx(roc_auc_score(y, p))
    # One threshold: the very intervals training and evaluation print.
    assert ag.engine == ENGINE_ONE_THRESHOLD
    ci95 = evaluate_probabilities(y.astype(int), p, threshold=0.5, n_bootstrap=300, seed=0)["ci95"]
    assert ag.ci["sensitivity"] == pytest.approx(tuple(ci95["sensitivity"]))
    assert ag.ci["auc"] == pytest.approx(tuple(ci95["roc_auc"]))
    for key, value in (("sensitivity", ag.sensitivity), ("specificity", ag.specificity), ("auc", ag.auc)):
        lo, hi = ag.ci[key]
        assert lo < value < hi and hi - lo < 0.3

    # Records called at different thresholds: the intervals are of each record's own call.
    thr = np.where(np.arange(300) % 2, 0.5, 0.6)
    mixed = [ResultRecord(**{**r.to_dict(), "threshold": float(t),
                             "prediction": "mpox" if r.p_mpox >= t else "not_mpox"}) for r, t in zip(recs, thr)]
    ag2 = compute_agreement(mixed, None, truth, resamples=300)
    calls = p >= thr
    assert ag2.engine == ENGINE_OWN_CALLS
    assert ag2.sensitivity == pytest.approx((calls & y).sum() / y.sum())
    assert ag2.auc == pytest.approx(roc_auc_score(y, p))
    own = bootstrap_ci(y.astype(int), calls.astype(float), 0.5, 300, 0)
    assert ag2.ci["sensitivity"] == pytest.approx(tuple(own["sensitivity"]))
    assert ag2.ci["auc"][0] < ag2.auc < ag2.ci["auc"][1]


def test_count_records_counts_reviews_by_path():
    records = [rec("/a/1.jpg", 0.9), rec("/a/2.jpg", 0.2, "uncertain"), rec("/a/3.jpg", None, status="error")]
    c = count_records(records, {"/a/2.jpg": {"label": "unsure"}})
    assert (c.total, c.ok, c.errors, c.mpox, c.not_mpox, c.uncertain, c.reviewed) == (3, 2, 1, 1, 1, 1, 1)


def test_a_later_record_of_the_same_model_and_photo_replaces_the_earlier():
    rows = photo_rows([rec("/a/1.jpg", None, status="error"), rec("/a/1.jpg", 0.8)])
    assert len(rows) == 1 and rows[0].ok_results[0].p_mpox == 0.8 and not rows[0].needs_review


# ---------------------------------------------------------------------------------------------- privacy


def _jpeg_with_gps(path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    exif[ExifTags.Base.Model] = "Model-X"
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (51.0, 30.0, 12.5),
                                  ExifTags.GPS.GPSLongitudeRef: "W", ExifTags.GPS.GPSLongitude: (0.0, 7.0, 39.0)}
    make_photo((400, 300), seed=9).save(path, exif=exif)
    with Image.open(path) as im:  # the fixture really carries GPS, or the test proves nothing
        assert im.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert im.getexif()[ExifTags.Base.Make] == "SecretCam"


def test_thumbnail_from_gps_photo_carries_no_exif(tmp_path):
    src = tmp_path / "gps.jpg"
    _jpeg_with_gps(src)
    data = make_thumbnail(src)
    assert b"Exif" not in data and b"SecretCam" not in data
    with Image.open(io.BytesIO(data)) as im:
        assert max(im.size) <= 96
        assert len(im.getexif()) == 0
        assert "exif" not in im.info
    cam = make_gradcam_thumbnail(src, np.random.default_rng(0).random((7, 7)))
    assert b"Exif" not in cam and b"SecretCam" not in cam


def test_pdf_embeds_only_small_metadata_free_thumbnails(tmp_path):
    src = tmp_path / "gps.jpg"
    _jpeg_with_gps(src)
    out = write_pdf_report([rec(src, 0.7)], tmp_path / "gps.pdf", folder=str(tmp_path), cards=[make_card()],
                           gradcam={str(src): np.ones((5, 5))})
    raw = out.read_bytes()
    assert b"Exif" not in raw and b"SecretCam" not in raw
    images = [img for page in PdfReader(str(out)).pages for img in page.images]
    assert len(images) == 2  # photo thumbnail and Grad-CAM thumbnail
    for img in images:
        assert max(img.image.size) <= 96  # never the 400 x 300 original


# ---------------------------------------------------------------------------------------------- progress and scale


def linked_photos(folder: Path, n: int, distinct: int = 6, size=(64, 48)) -> list[Path]:
    """`n` photo paths sharing `distinct` files (hard links, else copies): many rows, few encodes."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(distinct):
        sources.append(folder / f"src_{i}.jpg")
        make_photo(size, seed=i).save(sources[-1])
    paths = []
    for i in range(n):
        p = folder / f"photo_{i:05d}.jpg"
        try:
            os.link(sources[i % distinct], p)
        except OSError:
            p.write_bytes(sources[i % distinct].read_bytes())
        paths.append(p)
    for s in sources:
        s.unlink()
    return paths


def test_progress_counts_photos_and_cancel_leaves_no_file(tmp_path):
    paths = linked_photos(tmp_path / "ph", 30)
    # Two models: progress still counts 30 photos, not 60 results.
    records = [rec(p, 0.03 * i) for i, p in enumerate(paths)] + [second_model(rec(p, 0.03 * i))
                                                                 for i, p in enumerate(paths)]
    seen = []
    write_pdf_report(records, tmp_path / "ok.pdf", folder=str(tmp_path), cards=two_cards(), progress=seen.append)
    drawn = [p.done for p in seen if p.stage == "thumbnails"]
    assert drawn == sorted(drawn) and drawn[-1] == 30 and {p.total for p in seen if p.stage == "thumbnails"} == {30}
    assert seen[-1].stage == "done"

    token = CancelToken()

    def cancel_midway(p):
        if p.stage == "thumbnails" and p.done >= 10:
            token.cancel()

    with pytest.raises(Cancelled):
        write_pdf_report(records, tmp_path / "cancelled.pdf", folder=str(tmp_path), cards=[make_card()],
                         progress=cancel_midway, cancel=token)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".pdf", ".partial")) == ["ok.pdf"]


SCRIPT_NAMES = ["Łódź_病変_01.jpg", "फोटो_रोगी.jpg", "صورة_مريض.jpg", "photo_😀_📷.png", "한국어_사진.jpg"]


def test_file_names_in_any_script_are_drawn_whole_with_fonts_that_have_their_glyphs(tmp_path):
    from core.reports.layout import font_runs

    paths = []
    for k, name in enumerate(SCRIPT_NAMES):
        paths.append(tmp_path / name)
        make_photo((40, 40), seed=k).save(paths[-1])
    out = write_pdf_report([rec(p, 0.6) for p in paths], tmp_path / "u.pdf", folder=str(tmp_path),
                           cards=[make_card()])
    text = " ".join(pdf_pages(out))
    for name in SCRIPT_NAMES:
        # Every character has a font that draws it (no empty boxes): the chain ends in Unifont.
        assert all(font is not None or ord(ch) < 0x250 or ch in "…–" for font, run in font_runs(name)
                   for ch in run), name
    # The whole names are in the PDF's text (ReportLab embeds a ToUnicode map with each font subset; its map
    # for characters above U+FFFF is malformed, so the emoji are checked by their font, below).
    for probe in ("病変", "한국어", "Łódź"):
        assert probe in text, probe
    fonts = {str(f.get_object().get("/BaseFont")) for page in PdfReader(str(out)).pages
             for f in (page["/Resources"].get("/Font") or {}).values()}
    for family in ("Unifont", "NotoSansDevanagari", "NotoSansArabic", "UnifontUpper"):
        assert any(family in f for f in fonts), (family, fonts)


def test_a_long_file_name_is_shown_whole_with_its_extension(tmp_path):
    name = "chart_of_the_patient_left_forearm_lesion_series.png"
    make_photo((40, 40), seed=3).save(tmp_path / name)
    out = write_pdf_report([rec(tmp_path / name, 0.2)], tmp_path / "n.pdf", folder=str(tmp_path),
                           cards=[make_card()])
    body = re.sub(r"\s", "", " ".join(pdf_pages(out)[1:]))
    assert name in body and "…" not in body


_BIG_REPORT_CHILD = r"""
import json, resource, sys
from pathlib import Path
import reportlab.platypus, reportlab.pdfgen.canvas  # imported before the baseline: they are not the report
import sklearn.metrics, core.learning.evaluation  # the agreement's libraries: about 170 MiB of imports, not the report
from core.reports import write_pdf_report
from tests.test_reports import make_card, rec

def rss_mib():
    # Linux: VmHWM belongs to this exec'd image; ru_maxrss would include the forking parent's peak
    # (pytest with TensorFlow loaded), which a child inherits across fork+exec.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux

tmp = Path(sys.argv[1])
photos = sorted((tmp / "photos").glob("*.jpg"))  # made by the test, so making them is not in the peak
records = [rec(p, (i * 37 % 1000) / 1000, "uncertain" if i % 7 == 0 else "") for i, p in enumerate(photos)]
reviews = {str(photos[0]): {"label": "mpox", "reviewer": "R", "time": "t"}}
before = rss_mib()
write_pdf_report(records, tmp / "big.pdf", folder=str(tmp), cards=[make_card()], reviews=reviews)
print(json.dumps({"before": before, "peak": rss_mib()}))
"""


def test_two_thousand_photos_build_within_bounded_memory(tmp_path):
    # A child process so its peak RSS is the report's own (tracemalloc cannot see Pillow's pixel buffers).
    # 2,000 photo paths are hard links to six 1200 x 900 photos, so the test stays quick, yet every row
    # decodes its photo: keeping each row's pixels, even JPEG-draft-reduced to 150 x 113, would add ~100 MiB.
    pytest.importorskip("resource", reason="peak RSS via the resource module is POSIX-only")
    repo = Path(__file__).resolve().parent.parent
    linked_photos(tmp_path / "photos", 2000, size=(1200, 900))
    proc = subprocess.run([sys.executable, "-c", _BIG_REPORT_CHILD, str(tmp_path)], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = mem["peak"] - mem["before"]
    # Measured on Linux: about 75 MiB growth; keeping every row's pixels made it about 175 MiB. The imports
    # before the baseline (ReportLab, scikit-learn, SciPy) take about 250 MiB on their own.
    assert growth < 110, f"building the report grew RSS by {growth:.0f} MiB"
    assert mem["peak"] < 400, f"peak RSS {mem['peak']:.0f} MiB"
    reader = PdfReader(str(tmp_path / "big.pdf"))
    n_pages = len(reader.pages)
    assert n_pages > 2000 // 25  # a paged table, not one endless page
    last = re.sub(r"\s+", " ", reader.pages[-1].extract_text())
    assert DISCLAIMER in last and f"Page {n_pages} of {n_pages}" in last
    assert re.search(r"Photos in this report 2,000 100\.0%", re.sub(r"\s+", " ", reader.pages[0].extract_text()))
    assert "2000" in " ".join(re.sub(r"\s+", " ", pg.extract_text()) for pg in reader.pages[-20:])  # last row


def test_truth_from_class_folders_only_for_labelled_layouts(tmp_path):
    from core.learning.datasets import truth_from_class_folders

    root = tmp_path / "set"
    paths = [root / "Monkeypox" / "a.jpg", root / "chickenpox" / "b.jpg", root / "loose.jpg"]
    truth = truth_from_class_folders(paths, root)
    assert truth == {str(paths[0]): "mpox", str(paths[1]): "not_mpox"}
    assert truth_from_class_folders([root / "visit1" / "a.jpg", root / "visit2" / "b.jpg"], root) is None
    assert truth_from_class_folders([root / "mpox" / "a.jpg"], root) is None  # one class is no ground truth


def test_forty_photos_three_models_fit_twelve_pages_with_overrides_marked_and_counted(tmp_path):
    from core.models.bundle import read_card

    repo = Path(__file__).resolve().parent.parent
    cards = [read_card(repo / "models" / m) for m in ("combined", "mobilenetv2", "xception")]
    folder = tmp_path / "ward"
    folder.mkdir()
    rng = np.random.default_rng(0)
    records, reviews = [], {}
    for i in range(40):
        path = folder / f"IMG_2026_site_A_{i:03d}.jpg"
        make_photo((64, 48), seed=i).save(path)
        base = float(rng.random())
        for k, card in enumerate(cards):
            p = float(np.clip(base + rng.normal(0, 0.15), 0.01, 0.99))
            lo, hi = card.uncertain_band
            records.append(ResultRecord(path=str(path), status="ok", p_mpox=p,
                                        prediction="mpox" if p >= card.threshold else "not_mpox",
                                        flag="uncertain" if lo <= p < hi else "", ood_score=1.0,
                                        model=card.name, model_version=card.version,
                                        model_sha256=card.model_sha256, threshold=card.threshold))
        if i < 6:
            reviews[str(path)] = {"label": "mpox" if i % 2 else "not_mpox", "reviewer": "Dr A", "time": "t"}
    out = write_pdf_report(records, tmp_path / "r.pdf", folder=str(folder), cards=cards, reviews=reviews)
    pages = pdf_pages(out)
    assert len(pages) <= 12, len(pages)
    assert sum("Model card: " in p for p in pages) == 3     # one page per card
    text = " ".join(pages)
    overrides = [path for path, rv in reviews.items()
                 if (rv["label"] == "mpox") != (next(r for r in records if r.path == path and r.model == "combined")
                                                .p_mpox >= cards[0].threshold)]
    assert re.search(rf"against the model's call {len(overrides)}\b", pages[0])
    assert text.count("overrides the model") == len(overrides) > 0
    assert not re.search(r"\{'|\['|\bNone\b(?! of these)|\bnan\b", text)


def test_a_release_card_page_gives_its_out_of_fold_figures_in_words():
    """The defect: 1.4.0 cards carry metrics.out_of_fold (val is training data there) and the card page dropped
    every figure measured before test."""
    from pathlib import Path

    from core.models.bundle import read_card
    from core.reports.cards import card_summary

    card = read_card(Path(__file__).resolve().parent.parent / "models" / "combined")
    if "out_of_fold" not in card.metrics:
        pytest.skip("the shipped combined card has no out-of-fold figures")
    rows = dict(card_summary(card))
    assert "Out of fold" in rows and "sensitivity" in rows["Out of fold"]
