"""The report as a first-time reader meets it (issue 24): an adapted model is never shown as perfect on the photos
it was adapted on, its card page says what it was adapted on, and no table cell breaks a word or overprints
its neighbour."""

from __future__ import annotations

from pathlib import Path

from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import Paragraph

from core.reports import write_pdf_report
from core.reports.context import build_context
from core.reports.cover import _models_table
from core.reports.photo_table import _PhotoTable
from tests.helpers import make_photo
from tests.test_reports import SHA, SHA2, make_card, pdf_pages, rec

ADAPTED_SHA = "ef56" * 16
PADDING = 12   # ReportLab's default left + right cell padding


def adapted_card(**kw):
    """A card as core.learning.adapt writes it: cross-validated site figures, the site counts, the parent."""
    cv = {"roc_auc": 0.91, "sensitivity": 0.85, "specificity": 0.8, "accuracy": 0.82, "ece": 0.05, "n": 12,
          "n_mpox": 5, "ci95": {"sensitivity": [0.7, 0.95], "specificity": [0.6, 0.93], "roc_auc": [0.8, 0.99],
                                "accuracy": [0.7, 0.9]}}
    return make_card(name="mobilenetv2-site", version="1.3.0+site.2026-12-07", model_sha256=ADAPTED_SHA,
                     created="2026-12-07T17:32:39+00:00",
                     metrics={"site_cv": cv, "site_parent": dict(cv, roc_auc=0.88), "selection": "cv"},
                     training_data={"base": {"from": "mpox-test 1.2.3 embeddings.npz", "train": 656, "val": 162},
                                    "site": {"photos": 12, "mpox": 5, "not_mpox": 7, "unreadable": [],
                                             "from": "session /home/clinic/secret/session"}},
                     parent={"name": "mpox-test", "version": "1.2.3", "sha256": SHA}, **kw)


def site_photos(tmp_path: Path, n: int = 12) -> list[Path]:
    folder = tmp_path / "site"
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"iconlab_clinic_visit_2026_{i:03d}.jpg"
        make_photo((48, 40), seed=i).save(p)
        paths.append(p)
    return paths


def adapted_records(paths: list[Path]) -> tuple[list, dict]:
    """The adapted model scores its own adaptation photos perfectly; reviewers labelled those same photos."""
    records, reviews = [], {}
    for i, p in enumerate(paths):
        mpox = i < 5
        records.append(rec(p, 0.95 if mpox else 0.05, model="mobilenetv2-site", version="1.3.0+site.2026-12-07",
                           sha=ADAPTED_SHA))
        reviews[str(p)] = {"label": "mpox" if mpox else "not_mpox", "reviewer": "Dr A. Okafor", "time": "t"}
    return records, reviews


def test_an_adapted_models_agreement_on_its_adaptation_photos_is_marked_in_sample_beside_its_cv_figures(tmp_path):
    """Issue 24: an adapted model read 1.000 [1.000-1.000] on the 46 photos it was adapted on, with no caveat."""
    paths = site_photos(tmp_path)
    records, reviews = adapted_records(paths)
    out = write_pdf_report(records, tmp_path / "r.pdf", folder=str(paths[0].parent), cards=[adapted_card()],
                           reviews=reviews)
    text = " ".join(pdf_pages(out))
    agreement = text[text.index("Agreement with reference labels"):]
    assert "In-sample: this model was adapted on 12 reviewed photos of one site (5 mpox, 7 not mpox" in agreement
    assert "Cross-validated, its 12 site photos" in agreement and "In-sample, these labels" in agreement
    # The card's cross-validated figures come first, the perfect in-sample ones beside them.
    assert "Sensitivity 0.850 (0.700–0.950) 1.000" in agreement
    assert "ROC AUC 0.910 (0.800–0.990) 1.000" in agreement


def test_a_models_own_figures_on_reviewer_labels_carry_no_in_sample_caveat_when_it_was_not_adapted(tmp_path):
    paths = site_photos(tmp_path)
    records, reviews = adapted_records(paths)
    plain = [rec(r.path, r.p_mpox, sha=SHA) for r in records]
    out = write_pdf_report(plain, tmp_path / "r.pdf", folder=str(paths[0].parent), cards=[make_card()],
                           reviews=reviews)
    text = " ".join(pdf_pages(out))
    assert "Agreement with reference labels" in text and "In-sample" not in text


def test_an_adapted_models_card_page_says_what_it_was_adapted_on(tmp_path):
    """Issue 24: the adapted model's card page said "Trained on: Not recorded in the model card"."""
    paths = site_photos(tmp_path)
    records, reviews = adapted_records(paths)
    out = write_pdf_report(records, tmp_path / "r.pdf", folder=str(paths[0].parent), cards=[adapted_card()],
                           reviews=reviews)
    card_page = pdf_pages(out)[-1]
    assert "Model card: mobilenetv2-site 1.3.0+site.2026-12-07" in card_page
    assert ("Trained on Adapted on 12 reviewed photos of one site (5 mpox, 7 not mpox; labels from a review "
            "session), adapted 2026-12-07 from mpox-test 1.2.3.") in card_page
    assert "656 training embeddings" in card_page
    assert "Not recorded in the model card" not in card_page
    assert "Site photos, cross-validated 12" in card_page     # the figures table names the sets in words
    assert "/home/clinic" not in " ".join(pdf_pages(out))    # where the labels came from, never a machine path


def _cells_fit(table) -> list[str]:
    """Every cell whose longest word (or whole plain text) is wider than its column (or span) less the padding."""
    table.wrap(10_000, 10_000)   # lays out the spans
    bad = []
    for r, row in enumerate(table._cellvalues):
        for c, cell in enumerate(row):
            span = getattr(table, "_spanRanges", {}).get((c, r), (c, r, c, r))
            if span is None:      # covered by another cell's span
                continue
            room = sum(table._colWidths[span[0]:span[2] + 1]) - PADDING + 0.01
            if isinstance(cell, Paragraph):
                if cell.minWidth() > room:
                    bad.append(f"row {r} col {c}: {cell.text!r} needs {cell.minWidth():.1f} of {room:.1f}")
            elif isinstance(cell, str) and cell and stringWidth(cell, "Helvetica-Bold", 8) > room:
                bad.append(f"row {r} col {c}: {cell!r}")
    return bad


def test_long_local_model_names_and_versions_break_no_word_and_overprint_no_cell(tmp_path):
    """Issue 24: "1.3.0+site.2026-12-07" overprinted the Origin column; headers broke as "mobilenetv/2",
    "combine/d"; score cells as "uncertai/n"."""
    paths = site_photos(tmp_path, 4)
    cards = [make_card(name="combined", version="1.3.0", architecture="combined", model_sha256=SHA2),
             adapted_card(), make_card(name="mobilenetv2", version="1.3.0"),
             make_card(name="xception", version="1.3.0", architecture="xception", model_sha256="77" * 32)]
    records = []
    for card in cards:
        records += [rec(p, 0.5, flag="uncertain", model=card.name, version=card.version, sha=card.model_sha256)
                    for p in paths]
    ctx = build_context(records, folder=str(paths[0].parent), cards=cards,
                        origins={c.model_sha256: "local" for c in cards})
    models = _models_table(ctx)
    assert _cells_fit(models) == []
    photo_table = _PhotoTable(ctx)
    tables = photo_table.tables(ctx.photos, start=1)
    assert _cells_fit(tables[0]) == []
    # One rule for narrow places: architecture and short version, the same for every model.
    assert [m.short for m in ctx.models] == ["combined 1.3.0", "MobileNetV2 1.3.0+site", "MobileNetV2 1.3.0",
                                             "Xception 1.3.0"]


def test_each_shipped_font_of_the_chain_loads_from_its_compressed_file_and_draws_its_script():
    """The fonts ship xz-compressed (resources/fonts/*.ttf.xz) and are decompressed in memory: a file that is
    missing, not compressed as named, or not a TrueType font would silently drop its script to a later font
    (or to no font) in every PDF, so each one is loaded here on its own."""
    from core.reports.layout import FONT_CHAIN, FONT_DIR, open_font

    probes = {"NotoSans": "Łд", "NotoSansDevanagari": "फ", "NotoSansArabic": "ص", "Unifont": "病한",
              "UnifontEmoji": "😀"}
    assert [name for name, _ in FONT_CHAIN] == list(probes)
    for name, file in FONT_CHAIN:
        path = FONT_DIR / file
        assert path.is_file() and path.suffix == ".xz", path
        font = open_font(f"Probe{name}", path)
        assert all(ord(ch) in font.face.charToGlyph for ch in probes[name]), name
        assert font.face.name.startswith(b"Noto" if name.startswith("Noto") else b"Unifont"), font.face.name
