"""PDF reports: disclaimer and page numbers on every page, counts, model hash, metrics, privacy, scale."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from pypdf import PdfReader

from core import DISCLAIMER, __version__
from core.bundle import ModelCard
from core.progress import CancelToken, Cancelled
from core.records import ResultRecord
from core.reports import (
    _rank_auc,
    _row_order,
    compute_agreement,
    count_records,
    make_gradcam_thumbnail,
    make_thumbnail,
    write_pdf_report,
)
from tests.helpers import make_photo

SHA = "ab12" * 16


def make_card(**kw) -> ModelCard:
    defaults = dict(name="mpox-test", version="1.2.3", architecture="mobilenetv2", input_size=224,
                    threshold=0.5, uncertain_band=[0.4, 0.6], model_sha256=SHA,
                    metrics={"test": {"auc": 0.9, "sensitivity": 0.85}},
                    training_data={"datasets": ["generated"], "n_train": 10},
                    limitations=["Generated test card; says nothing about real photos."])
    defaults.update(kw)
    return ModelCard(**defaults)


def rec(path: Path | str, p: float | None, flag: str = "", status: str = "ok", error: str = "") -> ResultRecord:
    if status != "ok":
        return ResultRecord(path=str(path), status="error", error=error or f"{path}: cannot decode image",
                            model="mpox-test", model_version="1.2.3", model_sha256=SHA)
    return ResultRecord(path=str(path), status="ok", p_mpox=p, prediction="mpox" if p >= 0.5 else "not_mpox",
                        flag=flag, ood_score=1.0, model="mpox-test", model_version="1.2.3", model_sha256=SHA,
                        threshold=0.5)


def pdf_pages(path: Path) -> list[str]:
    return [re.sub(r"\s+", " ", page.extract_text() or "") for page in PdfReader(str(path)).pages]


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
    records = [rec(path, p, f) for path, p, f in zip(photos, ps, flags)]
    records.append(rec(photos[5], None, status="error", error=f"{photos[5]}: file is truncated"))
    return records


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
    assert str(photos[0].parent) in cover
    assert re.search(r"Images in report 6 100\.0%", cover)
    assert re.search(r"Scored \(ok\) 5 83\.3%", cover)
    assert re.search(r"Errors \(not scored\) 1 16\.7%", cover)
    assert re.search(r"Predicted mpox 2 40\.0%", cover)       # 0.91 and 0.55, of 5 scored
    assert re.search(r"Predicted not mpox 3 60\.0%", cover)
    assert re.search(r"Flagged uncertain 2 40\.0%", cover)
    assert re.search(r"Flagged out of scope 1 20\.0%", cover)


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
    assert "Model card summary" in text and "Generated test card" in text and "Intended use" in text


def test_model_card_page_shows_each_evaluated_set_and_says_what_it_left_out(tmp_path, photos):
    def m(n, acc, auc):
        return {"n": n, "accuracy": acc, "sensitivity": 0.9, "specificity": 0.8, "roc_auc": auc, "ece": 0.05,
                "ci95": {"accuracy": [0.1, 0.2]}, "confusion": {"tn": 1, "fp": 2, "fn": 3, "tp": 4}}

    metrics = {"val": m(162, 0.938, 0.987), "test": m(155, 0.891, 0.946),
               "transfer": {"A -> B": m(184, 0.516, 0.859), "method": "leave-one-collection-out"}}
    # More training-data fields than the page prints: the page must say so rather than drop them silently.
    training_data = {f"field_{i:02d}": i for i in range(60)}
    out = write_pdf_report(mixed_records(photos), tmp_path / "r.pdf", folder=str(photos[0].parent),
                           cards=[make_card(metrics=metrics, training_data=training_data)])
    text = " ".join(pdf_pages(out))
    for row in ("val 162 0.938", "test 155 0.891", "transfer A -> B 184 0.516"):
        assert row in text
    assert "0.946" in text and "0.859" in text
    assert "20 more fields in the bundle's model_card.json" in text


def test_one_image_report(tmp_path, photos):
    out = write_pdf_report([rec(photos[0], 0.8)], tmp_path / "one.pdf", folder=str(photos[0].parent),
                           cards=[make_card()])
    pages = pdf_pages(out)
    assert re.search(r"Images in report 1 100\.0%", pages[0])
    assert photos[0].name in " ".join(pages)
    assert "Agreement with reference labels" not in " ".join(pages)  # no labels, no metrics page
    assert all(DISCLAIMER in t for t in pages)


def test_report_of_only_errors_still_builds(tmp_path):
    missing = tmp_path / "gone.jpg"
    out = write_pdf_report([rec(missing, None, status="error")], tmp_path / "err.pdf", folder=str(tmp_path),
                           cards=[])
    text = " ".join(pdf_pages(out))
    assert "No image could be scored" in text and "no preview" in text


def test_metrics_page_with_truth_reports_confusion_and_intervals(tmp_path, photos):
    records = mixed_records(photos)
    truth = {str(photos[0]): "mpox", str(photos[1]): "not_mpox", str(photos[2]): "not_mpox",
             str(photos[3]): "mpox", str(photos[4]): "not_mpox"}
    out = write_pdf_report(records, tmp_path / "m.pdf", folder=str(photos[0].parent), cards=[make_card()],
                           truth=truth)
    text = " ".join(pdf_pages(out))
    assert "Agreement with reference labels" in text
    assert "5 scored images have a reference label (5 from ground-truth folders)" in text
    # mpox: 0.91 (tp), 0.47 (fn); not mpox: 0.55 (fp), 0.12, 0.30 (tn) -> sensitivity 0.5, specificity 0.667
    assert "Sensitivity 0.500" in text and "Specificity 0.667" in text


def test_agreement_prefers_truth_over_review_and_skips_unsure():
    recs = [rec(f"/x/{i}.jpg", p) for i, p in enumerate([0.9, 0.8, 0.2, 0.1, 0.6])]
    truth = {"/x/0.jpg": "mpox"}
    reviews = {"/x/0.jpg": {"label": "not_mpox"}, "/x/1.jpg": {"label": "mpox"},
               "/x/2.jpg": {"label": "not_mpox"}, "/x/3.jpg": {"label": "unsure"}}
    ag = compute_agreement(recs, reviews, truth, resamples=200)
    assert (ag.n, ag.from_truth, ag.from_review, ag.left_out_unsure) == (3, 1, 2, 1)
    assert ag.confusion == {"tp": 2, "fn": 0, "fp": 0, "tn": 1}
    assert compute_agreement(recs, None, None) is None


def test_agreement_matches_sklearn_and_intervals_cover_estimate():
    from sklearn.metrics import roc_auc_score

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
    for key, value in (("sensitivity", ag.sensitivity), ("specificity", ag.specificity), ("auc", ag.auc)):
        lo, hi = ag.ci[key]
        assert lo < value < hi and hi - lo < 0.3
    assert ag.engine == "core.evaluation"  # one threshold: the shared evaluation code computed it

    # Records from two models with different thresholds: computed here from each record's prediction.
    mixed = [ResultRecord(**{**r.to_dict(), "threshold": 0.5 if i % 2 else 0.6,
                             "prediction": "mpox" if r.p_mpox >= (0.5 if i % 2 else 0.6) else "not_mpox"})
             for i, r in enumerate(recs)]
    ag2 = compute_agreement(mixed, None, truth, resamples=300)
    pred2 = np.array([r.prediction == "mpox" for r in mixed])
    assert ag2.engine == "core.reports"
    assert ag2.sensitivity == pytest.approx((pred2 & y).sum() / y.sum())
    assert ag2.auc == pytest.approx(roc_auc_score(y, p))
    assert ag2.ci["auc"][0] < ag2.auc < ag2.ci["auc"][1]
    draws = rng.integers(0, 300, size=(5, 300))
    fast = _rank_auc(y[draws], p[draws])
    assert fast == pytest.approx([roc_auc_score(y[d], p[d]) for d in draws])


def test_rows_ordered_mpox_and_uncertain_first_errors_last(photos):
    records = [rec("/a/neg.jpg", 0.1), rec("/a/err.jpg", None, status="error"), rec("/a/unc.jpg", 0.45, "uncertain"),
               rec("/a/pos.jpg", 0.95), rec("/a/ood.jpg", 0.2, "out_of_scope")]
    names = [Path(records[i].path).stem for i in _row_order(records)]
    assert names == ["pos", "unc", "ood", "neg", "err"]


def test_count_records_counts_reviews_by_path():
    records = [rec("/a/1.jpg", 0.9), rec("/a/2.jpg", 0.2, "uncertain"), rec("/a/3.jpg", None, status="error")]
    c = count_records(records, {"/a/2.jpg": {"label": "unsure"}})
    assert (c.total, c.ok, c.errors, c.mpox, c.not_mpox, c.uncertain, c.reviewed) == (3, 2, 1, 1, 1, 1, 1)


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


def test_progress_reaches_total_and_cancel_leaves_no_file(tmp_path, photos):
    records = [rec(photos[i % 5], 0.1 * (i % 10)) for i in range(30)]
    seen = []
    write_pdf_report(records, tmp_path / "ok.pdf", folder=str(tmp_path), cards=[make_card()], progress=seen.append)
    drawn = [p.done for p in seen if p.stage == "thumbnails"]
    assert drawn == sorted(drawn) and drawn[-1] == 30
    assert seen[-1].stage == "done"

    token = CancelToken()

    def cancel_midway(p):
        if p.stage == "thumbnails" and p.done >= 10:
            token.cancel()

    with pytest.raises(Cancelled):
        write_pdf_report(records, tmp_path / "cancelled.pdf", folder=str(tmp_path), cards=[make_card()],
                         progress=cancel_midway, cancel=token)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".pdf", ".partial")) == ["ok.pdf"]


def test_unicode_file_names_do_not_break_the_report(tmp_path):
    path = tmp_path / "Łódź_病変_01.jpg"
    make_photo((40, 40), seed=1).save(path)
    out = write_pdf_report([rec(path, 0.6)], tmp_path / "u.pdf", folder=str(tmp_path), cards=[make_card()])
    assert len(pdf_pages(out)) >= 2


_BIG_REPORT_CHILD = r"""
import json, resource, sys
from pathlib import Path
import reportlab.platypus, reportlab.pdfgen.canvas  # imported before the baseline: they are not the report
from core.reports import write_pdf_report
from tests.helpers import make_photo
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
photos = []
for i in range(6):
    photos.append(tmp / f"big_{i}.jpg")
    make_photo((1200, 900), seed=i).save(photos[-1])
records = [rec(photos[i % 6], (i * 37 % 1000) / 1000, "uncertain" if i % 7 == 0 else "") for i in range(2000)]
reviews = {str(photos[0]): {"label": "mpox", "reviewer": "R", "time": "t"}}
before = rss_mib()
write_pdf_report(records, tmp / "big.pdf", folder=str(tmp), cards=[make_card()], reviews=reviews)
print(json.dumps({"before": before, "peak": rss_mib()}))
"""


def test_two_thousand_rows_build_within_bounded_memory(tmp_path):
    # A child process so its peak RSS is the report's own (tracemalloc cannot see Pillow's pixel buffers).
    # 2,000 rows share six 1200 x 900 photos, so the test stays quick, yet every row decodes its photo:
    # keeping each row's pixels, even JPEG-draft-reduced to 150 x 113, would add about 100 MiB.
    pytest.importorskip("resource", reason="peak RSS via the resource module is POSIX-only")
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", _BIG_REPORT_CHILD, str(tmp_path)], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = mem["peak"] - mem["before"]
    # Measured on Linux: about 70 MiB growth; keeping every row's pixels made it about 175 MiB.
    assert growth < 110, f"building the report grew RSS by {growth:.0f} MiB"
    assert mem["peak"] < 300, f"peak RSS {mem['peak']:.0f} MiB"
    reader = PdfReader(str(tmp_path / "big.pdf"))
    n_pages = len(reader.pages)
    assert n_pages > 2000 // 25  # a paged table, not one endless page
    last = re.sub(r"\s+", " ", reader.pages[-1].extract_text())
    assert DISCLAIMER in last and f"Page {n_pages} of {n_pages}" in last
    assert re.search(r"Images in report 2,000 100\.0%", re.sub(r"\s+", " ", reader.pages[0].extract_text()))
    assert "2000" in " ".join(re.sub(r"\s+", " ", pg.extract_text()) for pg in reader.pages[-20:])  # last row


def test_two_models_are_reported_separately_not_pooled(tmp_path, photos):
    first = mixed_records(photos)
    second = [ResultRecord(**{**r.to_dict(), "model": "other-model", "model_version": "9.9",
                              "model_sha256": "cd34" * 16}) for r in first]
    truth = {str(p): "mpox" for p in photos}
    cards = [make_card(), make_card(name="other-model", version="9.9", model_sha256="cd34" * 16, threshold=0.3)]
    out = write_pdf_report(first + second, tmp_path / "two.pdf", folder=str(photos[0].parent), cards=cards,
                           truth=truth)
    text = " ".join(pdf_pages(out))
    assert re.search(r"Distinct images \(2 models\) 6", text)
    assert "Agreement with reference labels: mpox-test 1.2.3" in text
    assert "Agreement with reference labels: other-model 9.9" in text
    assert "cd34" * 16 in text.replace(" ", "") and SHA in text.replace(" ", "")
    # each model's own 5 scored images, not 10 pooled ones
    assert text.count("5 scored images have a reference label") == 2


def test_truth_from_class_folders_only_for_labelled_layouts(tmp_path):
    from core.reports import truth_from_class_folders

    root = tmp_path / "set"
    paths = [root / "Monkeypox" / "a.jpg", root / "chickenpox" / "b.jpg", root / "loose.jpg"]
    truth = truth_from_class_folders(paths, root)
    assert truth == {str(paths[0]): "mpox", str(paths[1]): "not_mpox"}
    assert truth_from_class_folders([root / "visit1" / "a.jpg", root / "visit2" / "b.jpg"], root) is None
    assert truth_from_class_folders([root / "mpox" / "a.jpg"], root) is None  # one class is no ground truth
