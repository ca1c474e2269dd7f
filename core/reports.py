"""PDF reports of a classified folder, for filing: one line per photo, needs-review first, a sign-off block.

A report is a list of section builders (`SECTIONS`), each a function from one `ReportContext` to the
flowables of its section: cover, sign-off, photos, score distributions, agreement, model card summaries
and the full model cards. Records may hold several models per photo; every count and every table row is
a photo, with each model's score side by side.

Every page carries the disclaimer and "Page x of y". Thumbnails are decoded one at a time while the page
is drawn and re-encoded as small JPEGs from pixel arrays, so no EXIF (GPS, camera) and no original file
ever reaches the PDF. The PDF is built in memory and published atomically: a failure leaves the previous
file as it was.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Sequence
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
)

from core import DISCLAIMER, __version__
from core.agreement import (  # noqa: F401  (compute_agreement, truth_from_class_folders: public via reports)
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    REVIEW_UNSURE,
    Agreement,
    compute_agreement,
    lookup,
    reference_labels,
    truth_from_class_folders,
)
from core.images import ImageDecodeError, load_rgb
from core.progress import CancelToken, ProgressFn, report
from core.records import (
    FLAG_OUT_OF_SCOPE,
    FLAG_UNCERTAIN,
    LABEL_MPOX,
    LABEL_NOT_MPOX,
    ResultRecord,
)

DEFAULT_TITLE = "Mpox triage report"
THUMB_MAX_SIDE = 96        # pixels: sharp at the ~34 pt printed size (about 140 dpi)
THUMB_QUALITY = 70
THUMB_PT = 30.0            # printed size of a thumbnail
ROWS_PER_TABLE = 40        # table chunks keep ReportLab's page splitting linear in the number of rows
MARGIN = 15 * mm
FRAME_W = A4[0] - 2 * MARGIN

SHIFT_ADVICE = ("Predictions on this folder are less reliable than the model card's figures; review more "
                "photos, or adapt the model to this site's reviewed photos.")

# Why a photo needs review, in the order the report lists them.
REASON_ERROR = "error"
REASON_OUT_OF_SCOPE = "out_of_scope"
REASON_UNCERTAIN = "uncertain"
REASON_DISAGREE = "disagree"
REASON_ORDER = (REASON_ERROR, REASON_OUT_OF_SCOPE, REASON_UNCERTAIN, REASON_DISAGREE)
REASON_TEXT = {REASON_ERROR: "could not be read", REASON_OUT_OF_SCOPE: "out of scope",
               REASON_UNCERTAIN: "uncertain", REASON_DISAGREE: "models disagree"}
ORIGIN_TEXT = {"shipped": "shipped with the app", "local": "local model (not a shipped release)"}

# Colours: red for mpox, blue for not mpox, grey for errors / unlabelled, amber for flags.
_C_MPOX = "#c0392b"
_C_NOT = "#2e86c1"
_C_GREY = "#95a5a6"
_BG_MPOX = "#fbeeee"
_BG_FLAG = "#fef5e7"
_BG_ERROR = "#f2f3f4"


class ReportWriteError(OSError):
    """The report could not be written (disk full, no permission, ...); the previous file is unchanged."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# ---------------------------------------------------------------------------------------------- thumbnails


def _encode_jpeg(im: Image.Image, quality: int = THUMB_QUALITY) -> bytes:
    buf = io.BytesIO()
    # A fresh image built from a pixel array has no info/EXIF; save() is given none either.
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def make_thumbnail(path: str | os.PathLike, max_side: int = THUMB_MAX_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    """A small JPEG of the photo with no metadata at all (re-encoded from pixels; EXIF orientation applied).

    Raises ImageDecodeError when the file cannot be read.
    """
    rgb = load_rgb(path, max_side=max_side)
    im = Image.fromarray(rgb, "RGB")
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _encode_jpeg(im, quality)


def _jet(x: np.ndarray) -> np.ndarray:
    """A jet-like colour map (0 blue .. 1 red) without matplotlib."""
    x = np.clip(x, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def make_gradcam_thumbnail(path: str | os.PathLike, cam: np.ndarray, max_side: int = THUMB_MAX_SIDE,
                           alpha: float = 0.45) -> bytes:
    """Thumbnail of a Grad-CAM: a 2-D heat map (any size, values 0..1) is blended over the photo;
    an (H, W, 3) uint8 array is taken as an already-blended overlay."""
    cam = np.asarray(cam)
    if cam.ndim == 3 and cam.shape[2] == 3:
        im = Image.fromarray(cam.astype(np.uint8), "RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return _encode_jpeg(im)
    if cam.ndim != 2:
        raise ValueError(f"{path}: Grad-CAM must be a 2-D heat map or an RGB overlay, got shape {cam.shape}")
    base = Image.fromarray(load_rgb(path, max_side=max_side), "RGB")
    base.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    heat = cam.astype(np.float32)
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    heat_im = Image.fromarray((heat * 255).astype(np.uint8), "L").resize(base.size, Image.Resampling.BILINEAR)
    colour = _jet(np.asarray(heat_im, dtype=np.float32) / 255.0) * 255.0
    blended = np.asarray(base, dtype=np.float32) * (1 - alpha) + colour * alpha
    return _encode_jpeg(Image.fromarray(blended.clip(0, 255).astype(np.uint8), "RGB"))




class _Thumb(Flowable):
    """Decodes and draws one thumbnail only when its page is drawn, so no photo stays in memory."""

    def __init__(self, make: Callable[[], bytes], on_drawn: Callable[[], None] | None = None):
        super().__init__()
        self._make = make
        self._on_drawn = on_drawn

    def wrap(self, aw, ah):  # noqa: D401 (ReportLab API)
        return THUMB_PT, THUMB_PT

    def draw(self):
        c = self.canv
        try:
            data = self._make()
        except (ImageDecodeError, OSError, ValueError):
            data = None
        if data is None:
            c.setFillColor(colors.HexColor("#eeeeee"))
            c.rect(0, 0, THUMB_PT, THUMB_PT, stroke=0, fill=1)
            c.setFillColor(colors.HexColor("#888888"))
            c.setFont("Helvetica", 6)
            c.drawCentredString(THUMB_PT / 2, THUMB_PT / 2 - 2, "no preview")
        else:
            img = ImageReader(io.BytesIO(data))
            iw, ih = img.getSize()
            s = THUMB_PT / max(iw, ih)
            w, h = iw * s, ih * s
            c.drawImage(img, (THUMB_PT - w) / 2, (THUMB_PT - h) / 2, w, h)
        if self._on_drawn is not None:
            self._on_drawn()


# ---------------------------------------------------------------------------------------------- one line per photo


def model_key(record: Any) -> str:
    """How results of one model are told apart: ResultRecord.model_key / ModelCard.key (the weights' SHA-256,
    else "name version"); the same rule for other objects with those fields."""
    key = getattr(record, "model_key", None) or getattr(record, "key", None)
    if isinstance(key, str) and key:
        return key
    sha = getattr(record, "model_sha256", "")
    if sha:
        return sha
    name = getattr(record, "model", None) or getattr(record, "name", "")
    version = getattr(record, "model_version", None) or getattr(record, "version", "")
    return f"{name} {version}"


@dataclass
class ModelInfo:
    """One model that produced some of the records, with its card (when supplied) and origin."""

    key: str
    name: str
    version: str
    sha256: str
    card: Any | None = None
    origin: str | None = None          # "shipped" | "local" | None (not stated)
    thresholds: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name or '?'} {self.version}".strip()

    @property
    def threshold(self) -> float | None:
        if self.card is not None:
            return float(self.card.threshold)
        return self.thresholds[0] if self.thresholds else None


def _card_for(key: str, name: str, version: str, cards: Sequence[Any]) -> Any | None:
    for c in cards:
        if c.model_sha256 and c.model_sha256 == key:
            return c
    for c in cards:
        if not c.model_sha256 and (c.name, c.version) == (name, version):
            return c
    return None


def models_of(records: Sequence[ResultRecord], cards: Sequence[Any] = (),
              origins: dict[str, str] | None = None) -> list[ModelInfo]:
    """The models behind `records`, in order of first appearance, each with its card and origin."""
    found: dict[str, ModelInfo] = {}
    for r in records:
        key = model_key(r)
        info = found.get(key)
        if info is None:
            info = found[key] = ModelInfo(key, r.model, r.model_version, r.model_sha256)
        if r.threshold is not None and float(r.threshold) not in info.thresholds:
            info.thresholds.append(float(r.threshold))
    for info in found.values():
        info.card = _card_for(info.key, info.name, info.version, cards)
        info.origin = (origins or {}).get(info.key)
    return list(found.values())


@dataclass
class PhotoRow:
    """Everything the report says about one photo: each model's result, the review, why to look at it."""

    path: str
    results: dict[str, ResultRecord]            # model key -> record
    review: dict | None = None
    truth: str | None = None
    reasons: list[tuple[str, str]] = field(default_factory=list)   # (REASON_*, text), most urgent first

    @property
    def ok_results(self) -> list[ResultRecord]:
        return [r for r in self.results.values() if r.ok]

    @property
    def has_error(self) -> bool:
        return any(not r.ok for r in self.results.values())

    @property
    def calls(self) -> set[str]:
        return {r.prediction for r in self.ok_results if r.prediction}

    @property
    def disagree(self) -> bool:
        return len(self.calls) > 1

    @property
    def needs_review(self) -> bool:
        return bool(self.reasons)

    @property
    def reason(self) -> str:
        """The first reason (REASON_*), or "" when nothing calls for a look."""
        return self.reasons[0][0] if self.reasons else ""

    @property
    def risk(self) -> float:
        """The highest p(mpox) any model gave the photo (0 when none scored it)."""
        return max((float(r.p_mpox) for r in self.ok_results if r.p_mpox is not None), default=0.0)

    @property
    def reviewed(self) -> bool:
        return bool(self.review and self.review.get("label"))


def _short_error(r: ResultRecord) -> str:
    err = r.error or "unknown error"
    if err.startswith(f"{r.path}: "):  # the file name is already in the row
        err = err[len(r.path) + 2:]
    return err


def _reasons(results: dict[str, ResultRecord], models: dict[str, ModelInfo],
             scope_limit: float | None) -> list[tuple[str, str]]:
    """Why a photo needs review, most urgent first (REASON_ORDER), each with the figures behind it."""
    multi = len(models) > 1
    names = [m.name for m in models.values()]

    def who(key: str) -> str:
        if not multi or key not in models:
            return ""
        m = models[key]
        return m.name if names.count(m.name) == 1 else m.label

    out: list[tuple[str, str]] = []
    errors = list(dict.fromkeys(_short_error(r) for r in results.values() if not r.ok))
    if errors:
        out.append((REASON_ERROR, "could not be read: " + "; ".join(errors)))
    ood, unsure = [], []
    for key, r in results.items():
        if not r.ok:
            continue
        card = models[key].card if key in models else None
        if r.flag == FLAG_OUT_OF_SCOPE:
            limit = scope_limit if scope_limit is not None else getattr(card, "ood_threshold", None)
            score = "score not recorded" if r.ood_score is None else f"score {float(r.ood_score):.3g}"
            text = f"{score}, limit {'not recorded' if limit is None else f'{float(limit):.3g}'}"
            ood.append(f"{who(key)}: {text}" if multi else text)
        elif r.flag == FLAG_UNCERTAIN:
            band = getattr(card, "uncertain_band", None)
            unsure.append(who(key) if multi else (f"p(mpox) in the band {band[0]:.2f}–{band[1]:.2f}" if band
                                                  else "p(mpox) in the uncertain band"))
    if ood:
        out.append((REASON_OUT_OF_SCOPE, "out of scope (" + "; ".join(ood) + ")"))
    if unsure:
        out.append((REASON_UNCERTAIN, ("uncertain: " if not multi else "uncertain by ") + ", ".join(unsure)))
    calls = {r.prediction for r in results.values() if r.ok and r.prediction}
    if len(calls) > 1:
        out.append((REASON_DISAGREE, "models disagree"))
    return out


def photo_rows(records: Sequence[ResultRecord], models: Sequence[ModelInfo] | None = None,
               reviews: dict[str, dict] | None = None, truth: dict[str, str] | None = None,
               scope_limit: float | None = None) -> list[PhotoRow]:
    """One row per photo (records of several models for one path are merged), needs-review first.

    Order: photos that could not be read, out of scope, uncertain, models disagree (each highest risk
    first), then every other photo by its highest p(mpox). A later record of the same model and path
    replaces an earlier one (a resumed run lists the newest result last).
    """
    models = list(models) if models is not None else models_of(records)
    by_key = {m.key: m for m in models}
    merged: dict[str, dict[str, ResultRecord]] = {}
    shown: dict[str, str] = {}
    for r in records:
        norm = os.path.normpath(str(r.path))
        shown.setdefault(norm, r.path)
        merged.setdefault(norm, {})[model_key(r)] = r
    rows = []
    for norm, results in merged.items():
        path = shown[norm]
        ordered = {m.key: results[m.key] for m in models if m.key in results}
        rows.append(PhotoRow(path, ordered, lookup(reviews, path), lookup(truth, path),
                             _reasons(ordered, by_key, scope_limit)))

    def order(row: PhotoRow) -> tuple[int, float, str]:
        group = REASON_ORDER.index(row.reason) if row.reason else len(REASON_ORDER)
        return group, -row.risk, row.path

    return sorted(rows, key=order)


@dataclass
class PhotoCounts:
    """The cover's figures, in photos (never file x model)."""

    photos: int = 0
    errors: int = 0                  # at least one model could not read it
    scored: int = 0
    partly_scored: int = 0           # scored, but not by every model in the report
    mpox: int = 0                    # scored photos every model called mpox
    not_mpox: int = 0
    disagree: int = 0
    needs_review: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)   # reason -> photos (a photo may have several)
    reviewed: int = 0
    review_labels: dict[str, int] = field(default_factory=dict)
    needs_review_unreviewed: int = 0


def count_photos(rows: Sequence[PhotoRow], n_models: int = 1) -> PhotoCounts:
    c = PhotoCounts(photos=len(rows), by_reason={k: 0 for k in REASON_ORDER})
    labels: Counter[str] = Counter()
    for row in rows:
        if row.has_error or not row.ok_results:
            c.errors += 1
        else:
            c.scored += 1
            c.partly_scored += len(row.ok_results) < n_models
            calls = row.calls
            c.disagree += len(calls) > 1
            c.mpox += calls == {LABEL_MPOX}
            c.not_mpox += calls == {LABEL_NOT_MPOX}
        if row.needs_review:
            c.needs_review += 1
            for reason in dict.fromkeys(k for k, _text in row.reasons):
                c.by_reason[reason] += 1
            c.needs_review_unreviewed += not row.reviewed
        if row.reviewed:
            c.reviewed += 1
            labels[row.review["label"]] += 1
    c.review_labels = dict(labels)
    return c


@dataclass
class Counts:
    """One model's results per status, prediction and flag (each model has one result per photo)."""

    total: int = 0
    ok: int = 0
    errors: int = 0
    mpox: int = 0
    not_mpox: int = 0
    uncertain: int = 0
    out_of_scope: int = 0
    unflagged: int = 0
    reviewed: int = 0


def count_records(records: Sequence[ResultRecord], reviews: dict[str, dict] | None = None) -> Counts:
    """Counts of one model's records; for a report's cover use count_photos (records may be file x model)."""
    c = Counts(total=len(records))
    for r in records:
        if not r.ok:
            c.errors += 1
            continue
        c.ok += 1
        c.mpox += r.prediction == LABEL_MPOX
        c.not_mpox += r.prediction == LABEL_NOT_MPOX
        c.uncertain += r.flag == FLAG_UNCERTAIN
        c.out_of_scope += r.flag == FLAG_OUT_OF_SCOPE
        c.unflagged += not r.flag
    if reviews:
        c.reviewed = sum(1 for r in records if lookup(reviews, r.path))
    return c


# ---------------------------------------------------------------------------------------------- context


@dataclass
class ReportContext:
    """Everything a section builder may read: the inputs, one row per photo, per-model agreement."""

    records: list[ResultRecord]
    folder: str
    cards: list[Any]
    models: list[ModelInfo]
    photos: list[PhotoRow]
    counts: PhotoCounts
    agreements: dict[str, Agreement | None]
    reviews: dict[str, dict] | None = None
    truth: dict[str, str] | None = None
    gradcam: dict[str, np.ndarray] | None = None
    shift: dict | None = None
    origins: dict[str, str] | None = None
    scope_limit: float | None = None
    title: str = DEFAULT_TITLE
    when: str = ""
    progress: ProgressFn | None = None
    cancel: CancelToken | None = None
    drawn: int = 0

    @property
    def multi(self) -> bool:
        return len(self.models) > 1

    def records_of(self, key: str) -> list[ResultRecord]:
        return [r for r in self.records if model_key(r) == key]

    def origin_of(self, card: Any) -> str | None:
        return (self.origins or {}).get(model_key(card))

    def photo_drawn(self) -> None:
        """Called as each photo's thumbnail is drawn: progress per photo and a cancel point."""
        self.drawn += 1
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        n = len(self.photos)
        if self.drawn % max(1, n // 100) == 0 or self.drawn == n:
            report(self.progress, self.drawn, max(n, 1), f"Drawing photo {self.drawn:,} of {n:,}", "thumbnails")


# ---------------------------------------------------------------------------------------------- sections


def cover_section(ctx: ReportContext) -> list[Any]:
    """Title, disclaimer, folder, the shift alarm, counts in photos and the models that scored them."""
    st = _styles()
    out: list[Any] = [
        Paragraph(f"<font name='{_font_for(ctx.title, 'Helvetica-Bold')}'>{escape(ctx.title)}</font>", st["title"]),
        Paragraph(f"Generated {escape(ctx.when)} · mpox-triage {escape(__version__)}", st["body"]),
        Paragraph(escape(DISCLAIMER) + " A clinician must review every photo; the model ranks photos for "
                  "attention and can be wrong, especially on skin tones, body sites, cameras and conditions "
                  "unlike its training data.", st["warn"]),
        Paragraph(f"<b>Folder:</b> <font name='{_font_for(ctx.folder)}'>{escape(str(ctx.folder))}</font>",
                  st["body"]),
    ]
    out += _shift_paragraphs(ctx.shift)
    out += [Paragraph("Summary (counts are photos)", st["h2"]), _counts_block(ctx)]
    out += [Paragraph("Models", st["h2"]), _models_table(ctx),
            Spacer(1, 3),
            Paragraph(f"App version {escape(__version__)}. Thresholds are each model's own; the CSV export "
                      "records the model SHA-256 behind every score.", st["small"])]
    if ctx.multi:
        out += [Spacer(1, 6), _per_model_table(ctx)]
    return out


def _shift_paragraphs(shift: dict | None) -> list[Any]:
    st = _styles()
    if not shift:
        return []
    p, n, stat = shift.get("p_value"), shift.get("n"), shift.get("statistic")
    figures = ", ".join(x for x in (f"p = {p:.3g}" if p is not None else "",
                                    f"statistic {stat:.3g}" if stat is not None else "",
                                    f"{int(n):,} photos" if n is not None else "") if x)
    if shift.get("detected"):
        return [Paragraph(f"<b>Shift alarm: these photos differ from the photos the model learned from</b> "
                          f"({escape(figures)}). {escape(SHIFT_ADVICE)}", st["alarm"])]
    if p is None:
        why = shift.get("reason") or "not enough photos"
        return [Paragraph(f"Shift check not run: {escape(str(why))}.", st["small"])]
    return [Paragraph(f"Shift check: no shift detected ({escape(figures)}). That does not show these photos "
                      "are like the training photos; it found no evidence that they differ.", st["small"])]


def _counts_block(ctx: ReportContext) -> Table:
    st = _styles()
    c = ctx.counts

    def row(label: str, value: int, base: int | None) -> list[str]:
        return [label, f"{value:,}", _pct(value, base) if base is not None else ""]

    scored_label = "Scored by every model" if ctx.multi else "Scored"
    every = " by every model" if ctx.multi else ""
    rows = [["", "photos", "share"],
            row("Photos in this report", c.photos, c.photos),
            row("Could not be read", c.errors, c.photos),
            row(scored_label if not c.partly_scored else "Scored", c.scored, c.photos)]
    if c.partly_scored:
        rows.append(row("  not by every model", c.partly_scored, c.scored))
    rows += [row(f"Called mpox{every}", c.mpox, c.scored),
             row(f"Called not mpox{every}", c.not_mpox, c.scored)]
    if ctx.multi:
        rows.append(row("Models disagree", c.disagree, c.scored))
    needs_at = len(rows)
    rows.append(row("Needs review", c.needs_review, c.photos))
    for reason in REASON_ORDER:
        if reason == REASON_DISAGREE and not ctx.multi:
            continue
        rows.append(row(f"  {REASON_TEXT[reason]}", c.by_reason.get(reason, 0), c.needs_review))
    if ctx.reviews is not None:
        rows.append(row("Reviewed by a person", c.reviewed, c.photos))
        for lab, text in ((LABEL_MPOX, "  reviewer: mpox"), (LABEL_NOT_MPOX, "  reviewer: not mpox"),
                          (REVIEW_UNSURE, "  reviewer: unsure")):
            rows.append(row(text, c.review_labels.get(lab, 0), c.reviewed))
        rows.append(row("Needs review, not yet reviewed", c.needs_review_unreviewed, c.needs_review))
    tint = [("FONT", (0, needs_at), (-1, needs_at), "Helvetica-Bold", 8),
            ("LINEABOVE", (0, needs_at), (-1, needs_at), 0.6, colors.HexColor("#8a99a8"))]
    for k, r_ in enumerate(rows):
        if r_[0].startswith("Called mpox"):
            tint.append(("TEXTCOLOR", (0, k), (-1, k), colors.HexColor(_C_MPOX)))
        if r_[0] == "Reviewed by a person":
            tint.append(("LINEABOVE", (0, k), (-1, k), 0.6, colors.HexColor("#8a99a8")))
    table = Table(rows, colWidths=[150, 45, 45], hAlign="LEFT")
    table.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT"), ("TOPPADDING", (0, 0), (-1, -1), 1.2),
                                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.2)] + tint))
    note = Paragraph(
        "Every figure counts photos, whatever the number of models. Shares of calls are of scored photos; "
        "reasons and reviewer labels are shares of the photos needing review or reviewed. Why a photo needs "
        "review (a photo can have several reasons): it could not be read; it is <i>out of scope</i> (unlike "
        "the photos the model was trained on, so its score should not be trusted); it is <i>uncertain</i> "
        "(p(mpox) inside the model's uncertain band)"
        + ("; the <i>models disagree</i> (one calls it mpox, another not)." if ctx.multi else ".")
        + " The photo list starts with these photos.", st["small"])
    return Table([[table, note]], colWidths=[250, FRAME_W - 250],
                 style=[("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)])


def _models_table(ctx: ReportContext) -> Table:
    st = _styles()
    show_origin = any(m.origin for m in ctx.models) or any(ctx.origin_of(c) for c in ctx.cards)
    header = ["Name", "Version"] + (["Origin"] if show_origin else []) + ["Architecture", "Threshold",
                                                                          "Model SHA-256"]
    rows: list[list[Any]] = [header]
    listed = []
    for m in ctx.models:
        c = m.card
        arch = f"{c.architecture} ({c.input_size}px)" if c is not None else "(card not supplied)"
        thr = ", ".join(_fmt_p(t) for t in m.thresholds) if c is None or len(m.thresholds) > 1 \
            else _fmt_p(m.threshold)
        rows.append([m.name or "?", m.version or "?"] + ([_cell(_origin_text(m.origin, c))] if show_origin else [])
                    + [arch, thr, Paragraph(escape(m.sha256 or "(not recorded)"), st["mono"])])
        listed.append(c)
    for c in ctx.cards:  # cards supplied for models with no records here: still say what they are
        if any(c is x for x in listed):
            continue
        rows.append([c.name, c.version] + ([_cell(_origin_text(ctx.origin_of(c), c))] if show_origin else [])
                    + [f"{c.architecture} ({c.input_size}px)", _fmt_p(c.threshold),
                       Paragraph(escape(c.model_sha256 or "(not recorded)"), st["mono"])])
    widths = [70, 38] + ([62] if show_origin else []) + [78, 44]
    widths.append(FRAME_W - sum(widths))
    t = Table(rows, colWidths=widths, hAlign="LEFT")
    t.setStyle(_grid_style())
    return t


def _origin_text(origin: str | None, card: Any | None) -> str:
    if not origin:
        return "not stated"
    text = ORIGIN_TEXT.get(origin, origin)
    parent = getattr(card, "parent", None)
    if origin == "local" and parent:
        text = f"local model, from {parent.get('name', '?')} {parent.get('version', '')}".strip()
    return text


def _per_model_table(ctx: ReportContext) -> Table:
    per = [["Model", "scored", "errors", "mpox", "not mpox", "uncertain", "out of scope"]]
    for m in ctx.models:
        c = count_records(ctx.records_of(m.key))
        per.append([m.label, f"{c.ok:,}", f"{c.errors:,}", f"{c.mpox:,} ({_pct(c.mpox, c.ok)})",
                    f"{c.not_mpox:,}", f"{c.uncertain:,}", f"{c.out_of_scope:,}"])
    t = Table(per, colWidths=[140, 50, 45, 75, 55, 55, 60], hAlign="LEFT")
    t.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT")]))
    return t


def sign_off_section(ctx: ReportContext) -> list[Any]:
    """Who reviewed the photos, when, and a line to sign: what makes the report fileable."""
    st = _styles()
    c = ctx.counts
    who = Counter(str(r.review.get("reviewer") or "unnamed") for r in ctx.photos if r.reviewed)
    recorded = ", ".join(f"{name} ({n:,} photo{'s' if n != 1 else ''})" for name, n in who.most_common())
    text = (f"{c.reviewed:,} of {c.photos:,} photos carry a reviewer's label"
            + (f" ({escape(recorded)})" if recorded else "")
            + f"; {c.needs_review_unreviewed:,} of the {c.needs_review:,} photos that need review have none yet.")
    lines = [["Reviewed by (name, role)", ""], ["Date", ""], ["Signature", ""]]
    table = Table(lines, colWidths=[130, FRAME_W - 130], rowHeights=[22, 22, 30], hAlign="LEFT")
    table.setStyle([("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9),
                    ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                    ("LINEBELOW", (1, 0), (1, -1), 0.8, colors.black),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 2)])
    return [KeepTogether([
        Paragraph("Sign-off", st["h2"]),
        Paragraph(text + " To be completed by the clinician responsible for this review; the model's scores "
                  "are not a diagnosis.", st["small"]),
        table])]


def photos_section(ctx: ReportContext) -> list[Any]:
    """One row per photo: photos that need review first, then the rest, highest risk first."""
    st = _styles()
    out: list[Any] = [CondPageBreak(0.6 * (A4[1] - 2 * MARGIN))]  # a new page unless this one is mostly free
    if not ctx.photos:
        return out + [Paragraph("Photos", st["h1"]), Paragraph("The folder held no photos.", st["body"])]
    layout = _PhotoTable(ctx)
    needing = [r for r in ctx.photos if r.needs_review]
    rest = [r for r in ctx.photos if not r.needs_review]
    if needing:
        out += [Paragraph(f"Photos that need review ({len(needing):,})", st["h1"]),
                Paragraph("In this order: could not be read, out of scope (with its score and limit), uncertain"
                          + (", models disagree" if ctx.multi else "") + "; within each, highest p(mpox) first. "
                          "Thumbnails are re-encoded previews without metadata.", st["small"]),
                Spacer(1, 4)]
        out += layout.tables(needing, start=1)
    else:
        out += [Paragraph("Photos that need review", st["h1"]),
                Paragraph("None: every photo was read, and no score was out of scope or uncertain"
                          + (", and the models agree on every photo." if ctx.multi else "."), st["body"])]
    if rest:
        out += [CondPageBreak(120), Paragraph(f"Other photos ({len(rest):,}), highest p(mpox) first", st["h1"])]
        out += layout.tables(rest, start=len(needing) + 1)
    return out


class _PhotoTable:
    """Columns and rows of the photo table: thumbnail, file, each model's score side by side, why to look,
    the reviewer's label."""

    def __init__(self, ctx: ReportContext):
        self.ctx = ctx
        self.has_cam = bool(ctx.gradcam)
        model_w = 62 if len(ctx.models) <= 3 else 52
        cam = [Paragraph("Grad-CAM", _styles()["colhead"])] if self.has_cam else []
        self.cols = (["#", "Photo"] + cam + ["File"]
                     + [Paragraph("p(mpox)<br/>" + escape(_truncate_middle(m.name or "?", model_w - 6, "Helvetica-Bold",
                                                                            7))
                                  + "<br/>" + escape(_truncate_middle(m.version, model_w - 6, "Helvetica-Bold", 7)),
                                  _styles()["colhead"]) for m in ctx.models]
                     + ["Needs review", "Reviewer"])
        widths = [24, THUMB_PT + 6] + ([THUMB_PT + 14] if self.has_cam else []) + [0] \
            + [model_w] * len(ctx.models) + [96, 66]
        self.file_col = 3 if self.has_cam else 2
        widths[self.file_col] = FRAME_W - sum(widths)
        self.widths = widths
        self.first_model = self.file_col + 1
        self.reason_col = self.first_model + len(ctx.models)

    def tables(self, rows: Sequence[PhotoRow], start: int) -> list[Table]:
        out = []
        for at in range(0, len(rows), ROWS_PER_TABLE):
            chunk = rows[at:at + ROWS_PER_TABLE]
            data: list[list[Any]] = [self.cols]
            cmds: list[tuple] = [("ALIGN", (0, 0), (0, -1), "RIGHT"),
                                 ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
                                 ("FONT", (0, 1), (0, -1), "Helvetica", 7),
                                 ("FONT", (-1, 1), (-1, -1), "Helvetica", 7.5),
                                 ("FONT", (self.first_model, 0), (self.reason_col - 1, 0), "Helvetica-Bold", 7),
                                 ("LEADING", (0, 0), (-1, -1), 9),
                                 ("LEFTPADDING", (1, 0), (self.file_col - 1, -1), 3),
                                 ("RIGHTPADDING", (1, 0), (self.file_col - 1, -1), 3)]
            for k, row in enumerate(chunk, start=1):
                cells, style = self.row(start + at + k - 1, row)
                data.append(cells)
                for cmd in style:
                    name_, (c0, _), (c1, _), *rest = cmd
                    cmds.append((name_, (c0, k), (c1, k), *rest))
            t = Table(data, colWidths=self.widths, repeatRows=1)
            t.setStyle(_grid_style(cmds))
            out.append(t)
        return out

    def row(self, rank: int, row: PhotoRow) -> tuple[list[Any], list[tuple]]:
        ctx, st = self.ctx, _styles()
        path = row.path
        cells: list[Any] = [str(rank), _Thumb(partial(make_thumbnail, path), ctx.photo_drawn)]
        if self.has_cam:
            cam = lookup(ctx.gradcam, path)
            cells.append(_Thumb(partial(make_gradcam_thumbnail, path, cam)) if cam is not None else "")
        name = _display_name(path, ctx.folder)
        font = _font_for(name)
        cells.append(_truncate_middle(name, self.widths[self.file_col] - 6, font, 7.5))
        style: list[tuple] = [("FONT", (self.file_col, 0), (self.file_col, 0), font, 7.5)]
        for j, m in enumerate(ctx.models):
            col = self.first_model + j
            r = row.results.get(m.key)
            if r is None:
                cells.append("not run")
                style.append(("TEXTCOLOR", (col, 0), (col, 0), colors.HexColor("#7f8c8d")))
            elif not r.ok:
                cells.append("error")
                style.append(("TEXTCOLOR", (col, 0), (col, 0), colors.HexColor("#7f8c8d")))
            else:
                call = {LABEL_MPOX: "mpox", LABEL_NOT_MPOX: "not mpox"}.get(r.prediction or "", r.prediction or "")
                flag = {FLAG_UNCERTAIN: "uncertain", FLAG_OUT_OF_SCOPE: "out of scope"}.get(r.flag, r.flag)
                cells.append(f"{_fmt_p(r.p_mpox)} {call}" + (f"\n{flag}" if flag else ""))
                if r.prediction == LABEL_MPOX:
                    style += [("TEXTCOLOR", (col, 0), (col, 0), colors.HexColor(_C_MPOX)),
                              ("FONT", (col, 0), (col, 0), "Helvetica-Bold", 8)]
        if row.reasons:
            first, *more = [text for _k, text in row.reasons]
            html = f"<b>{escape(first)}</b>" + "".join(f"<br/>also {escape(t)}" for t in more)
            cells.append(Paragraph(html, st["reason"]))
        else:
            cells.append("")
        cells.append(self._reviewer_cell(row, style))
        if row.has_error:
            style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(_BG_ERROR)),
                      ("TEXTCOLOR", (self.file_col, 0), (self.file_col, 0), colors.HexColor("#7f8c8d"))]
        elif row.needs_review:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(_BG_FLAG)))
        elif LABEL_MPOX in row.calls:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(_BG_MPOX)))
        return cells, style

    def _reviewer_cell(self, row: PhotoRow, style: list[tuple]) -> str:
        col = len(self.cols) - 1
        if row.reviewed:
            rv = row.review or {}
            lab = {LABEL_MPOX: "mpox", LABEL_NOT_MPOX: "not mpox"}.get(rv.get("label", ""), rv.get("label", ""))
            who = _truncate_middle(str(rv.get("reviewer", "") or ""), 60, "Helvetica", 6.5)
            return lab + (f"\n{who}" if who else "")
        if row.truth:
            style.append(("TEXTCOLOR", (col, 0), (col, 0), colors.HexColor("#7f8c8d")))
            return f"folder: {row.truth.replace('_', ' ')}"
        return ""


def distribution_section(ctx: ReportContext) -> list[Any]:
    """A histogram of p(mpox) per model, stacked by reference label, with threshold and uncertain band."""
    st = _styles()
    out: list[Any] = [PageBreak(), Paragraph("Scores", st["h1"])]
    for m in ctx.models:
        subset = ctx.records_of(m.key)
        band = m.card.uncertain_band if m.card is not None else None
        out.append(CondPageBreak(230))
        out.append(Paragraph("Distribution of p(mpox)" + (f": {escape(m.label)}" if ctx.multi else ""), st["h2"]))
        if any(r.ok for r in subset):
            refs = reference_labels(subset, ctx.reviews, ctx.truth)
            out.append(_histogram_drawing(subset, refs, m.threshold, band, FRAME_W))
        else:
            out.append(Paragraph("No photo could be scored, so there is no distribution to show.", st["body"]))
    if not ctx.models:
        out.append(Paragraph("No photo could be scored, so there is no distribution to show.", st["body"]))
    return out


def agreement_section(ctx: ReportContext) -> list[Any]:
    """Per model: its calls against reference labels (ground truth, else reviewers), with intervals."""
    out: list[Any] = []
    for m in ctx.models:
        ag = ctx.agreements.get(m.key)
        if ag is None:
            continue
        out.append(CondPageBreak(340))  # a block needs about 330 pt; it shares a page when there is room
        out += _agreement_block(ag, m.label if ctx.multi else "")
    return out


def _agreement_block(ag: Agreement, label: str) -> list[Any]:
    st = _styles()
    out: list[Any] = [Paragraph("Agreement with reference labels" + (f": {escape(label)}" if label else ""),
                                st["h1"])]
    srcs = []
    if ag.from_truth:
        srcs.append(f"{ag.from_truth:,} from ground-truth folders")
    if ag.from_review:
        srcs.append(f"{ag.from_review:,} from reviewers")
    left_out = []
    if ag.left_out_unsure:
        left_out.append(f"{ag.left_out_unsure:,} reviewed as unsure")
    if ag.left_out_error:
        left_out.append(f"{ag.left_out_error:,} labelled but not scored (error)")
    out.append(Paragraph(
        f"{ag.n:,} scored photos have a reference label ({', '.join(srcs) or 'none'}). "
        + (f"Left out: {', '.join(left_out)}. " if left_out else "")
        + "Ground truth is used where known, otherwise the reviewer's label. Calls use the model's own "
        "threshold.", st["body"]))
    out.append(Spacer(1, 6))
    cm = ag.confusion
    pos, neg = cm["tp"] + cm["fn"], cm["fp"] + cm["tn"]
    cm_rows = [["", "called\nmpox", "called\nnot mpox", "total"],
               ["reference mpox", f"{cm['tp']:,}", f"{cm['fn']:,}", f"{pos:,}"],
               ["reference not mpox", f"{cm['fp']:,}", f"{cm['tn']:,}", f"{neg:,}"],
               ["total", f"{cm['tp'] + cm['fp']:,}", f"{cm['fn'] + cm['tn']:,}", f"{ag.n:,}"]]
    cmt = Table(cm_rows, colWidths=[86, 60, 60, 50])
    cmt.setStyle(_grid_style([
        ("ALIGN", (1, 0), (-1, -1), "CENTER"),
        ("FONT", (0, 1), (0, -1), "Helvetica-Bold", 8),
        ("BACKGROUND", (1, 1), (1, 1), colors.HexColor("#d5f5e3")),
        ("BACKGROUND", (2, 2), (2, 2), colors.HexColor("#d5f5e3")),
        ("BACKGROUND", (2, 1), (2, 1), colors.HexColor("#fadbd8")),
        ("BACKGROUND", (1, 2), (1, 2), colors.HexColor("#fdebd0")),
        ("FONT", (1, 1), (2, 2), "Helvetica-Bold", 10),
        ("TOPPADDING", (1, 1), (2, 2), 7), ("BOTTOMPADDING", (1, 1), (2, 2), 7),
    ]))
    ci = ag.ci
    met_rows = [["Measure", "Value (95% interval)"],
                ["Sensitivity", _fmt_metric(ag.sensitivity, ci.get("sensitivity"))],
                ["Specificity", _fmt_metric(ag.specificity, ci.get("specificity"))],
                ["ROC AUC", _fmt_metric(ag.auc, ci.get("auc"))],
                ["PPV (precision)", _fmt_metric(ag.ppv)],
                ["NPV", _fmt_metric(ag.npv)],
                ["Accuracy", _fmt_metric(ag.accuracy)]]
    mtab = Table(met_rows, colWidths=[82, 174])
    mtab.setStyle(_grid_style())
    left_col = [cmt, Spacer(1, 10), mtab, Spacer(1, 6),
                Paragraph(f"Intervals: 95% percentile bootstrap over photos ({ag.resamples:,} resamples, seed "
                          f"{ag.seed}; {escape(ag.engine)}). Photos of the same patient are not independent, "
                          "so true uncertainty can be wider. The dot on the ROC curve is the operating point.",
                          st["small"])]
    out.append(Table([[left_col, _roc_drawing(ag)]], colWidths=[266, FRAME_W - 266],
                     style=[("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return out


def model_card_section(ctx: ReportContext) -> list[Any]:
    """Each model card as a short summary in words; the full card follows as an appendix."""
    st = _styles()
    out: list[Any] = [PageBreak(), Paragraph("Model card summary", st["h1"])]
    if not ctx.cards:
        return out + [Paragraph("No model card was supplied with these results.", st["body"])]
    for k, c in enumerate(ctx.cards):
        if k:
            out.append(CondPageBreak(300))
        out.append(Paragraph(f"{escape(c.name)} {escape(c.version)}", st["h2"]))
        rows = [[Paragraph(f"<b>{escape(a)}</b>", st["cell"]), Paragraph(b, st["cell"])]
                for a, b in card_summary(c, ctx.origin_of(c), ctx.scope_limit)]
        t = Table(rows, colWidths=[92, FRAME_W - 92], hAlign="LEFT")
        t.setStyle(_grid_style([("BACKGROUND", (0, 0), (-1, 0), colors.white),
                                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#dddddd")),
                                ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        out.append(t)
        out.append(Paragraph(escape(FIGURES_NOTE), st["small"]))
        headline = _headline_metrics(c.metrics)
        if headline:
            out.append(Paragraph("Figures from the model card", st["h2"]))
            mt = Table([list(_HEADLINE_HEADER)] + headline, hAlign="LEFT",
                       colWidths=[FRAME_W - 6 * 58] + [58] * 6, repeatRows=1)
            mt.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT")]))
            out.append(mt)
            if any(r[0].startswith("Transfer") for r in headline):
                out.append(Paragraph(
                    "Transfer rows: a head trained on one collection only, its threshold set on that collection, "
                    "scored on another collection's photos: what to expect on photos from elsewhere.",
                    st["small"]))
        out.append(Paragraph(f"The whole card is in the appendix (Appendix {k + 1}).", st["small"]))
    return out


def card_appendix_section(ctx: ReportContext) -> list[Any]:
    """Every field of each model card, with readable names, grouped by what it is about."""
    st = _styles()
    out: list[Any] = []
    for k, c in enumerate(ctx.cards):
        out += [PageBreak(), Paragraph(f"Appendix {k + 1}: model card of {escape(c.name)} {escape(c.version)}",
                                       st["h1"]),
                Paragraph("Every field of the bundle's model_card.json, with readable names. The training "
                          "history is summarised per phase.", st["small"])]
        out += card_appendix(c, ctx.origin_of(c))
    return out


SECTIONS: tuple[Callable[[ReportContext], list[Any]], ...] = (
    cover_section,
    sign_off_section,
    photos_section,
    distribution_section,
    agreement_section,
    model_card_section,
    card_appendix_section,
)


# ---------------------------------------------------------------------------------------------- model card in words

_ARCH_NAMES = {"mobilenetv2": "MobileNetV2", "xception": "Xception", "efficientnetb0": "EfficientNet-B0",
               "resnet50": "ResNet-50", "densenet121": "DenseNet-121"}
_SET_NAMES = {"val": "Validation", "test": "Test", "train": "Training"}

_LABELS = {
    "name": "Name", "version": "Version", "architecture": "Architecture", "input_size": "Input size (pixels)",
    "class_names": "Classes", "format_version": "Card format version", "created": "Created",
    "app_version": "Made with app version", "parent": "Fine-tuned from", "model_sha256": "Model SHA-256",
    "card_sha256": "Card SHA-256", "files": "Files and their SHA-256", "sha256": "SHA-256",
    "preprocessing": "Preprocessing", "temperature": "Calibration temperature", "threshold": "Threshold",
    "threshold_reason": "Why this threshold", "uncertain_band": "Uncertain band (p(mpox) from, to)",
    "ood_threshold": "Out-of-scope limit", "intended_use": "Intended use", "limitations": "Limits",
    "val": "Validation photos", "test": "Test photos", "train": "Training photos",
    "transfer": "Transfer to another collection", "selection": "How settings were chosen", "method": "Method",
    "n": "Photos", "n_mpox": "Mpox photos", "accuracy": "Accuracy", "precision": "Precision (PPV)",
    "sensitivity": "Sensitivity", "recall": "Recall (= sensitivity)", "specificity": "Specificity",
    "f1": "F1 score", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "brier": "Brier score",
    "ece": "Calibration error (ECE)", "uncalibrated_ece": "Calibration error before temperature scaling",
    "auc": "ROC-AUC", "flags": "Flags raised", "uncertain": "Uncertain", "out_of_scope": "Out of scope",
    "none": "No flag", "unflagged": "Photos with no flag", "per_source": "By collection",
    "per_fine_label": "By condition", "model": "Model measured", "mpox": "mpox", "not_mpox": "not mpox",
    "n_images": "Photos", "n_groups": "Independent groups (a group's photos stay in one split)",
    "n_train": "Training photos", "datasets": "Data sets",
    "counts": "Photos per split and class", "fine_labels": "Photos per split and condition",
    "sources": "Photos per split and collection", "split": "How photos were split", "protocol": "Protocol",
    "manifest": "Manifest", "root": "Data folder (as given to training)", "unreadable_files": "Unreadable files",
    "test_used_in_training": "Test photos used in training", "manifest_sha256": "Manifest SHA-256",
    "preset": "Preset", "seed": "Random seed", "config": "Settings", "hyperparameters": "Hyperparameters",
    "head": "Classifier head", "fine_tune": "Fine-tuning", "backbone": "Backbone", "history": "Training history",
    "calibration": "Calibration", "uncertain_band_rule": "Uncertain band rule", "ood_rule": "Out-of-scope rule",
    "time_s": "Training time (seconds)", "device": "Device", "host": "Host", "tensorflow": "TensorFlow",
    "keras": "Keras", "extra": "Other fields", "runtime": "Runtime export", "format": "Format", "file": "File",
    "check_images": "Checked on", "agreement": "Agreement with the Keras model", "tolerance": "Tolerance",
    "images": "Photos", "finite": "All outputs finite", "weights": "Weights",
    "fingerprint_sha256": "Fingerprint SHA-256", "feature_layer": "Feature layer", "layers": "Layers",
    "epochs_run": "Epochs run", "max_epochs": "Most epochs", "patience": "Patience (epochs)",
    "lr": "Learning rate", "batch_size": "Batch size", "dropout": "Dropout", "label_smoothing": "Label smoothing",
    "class_weight": "Class weights", "views": "Views per photo", "optimizer": "Optimizer", "arch": "Architecture",
    "n_bootstrap": "Bootstrap resamples", "min_sensitivity": "Minimum sensitivity (on validation)",
    "tp": "mpox photos found", "fn": "mpox photos missed", "fp": "false alarms", "tn": "other photos cleared",
}
_TOKENS = {"lr": "learning rate", "ood": "out-of-scope", "sha256": "SHA-256", "abs": "absolute", "diff": "difference",
           "p": "p(mpox)", "n": "number of", "min": "minimum", "max": "maximum", "arch": "architecture",
           "auc": "AUC", "roc": "ROC", "ece": "ECE", "id": "ID", "val": "validation", "s": "(s)"}
_METRIC_ORDER = ("accuracy", "precision", "sensitivity", "recall", "specificity", "f1", "roc_auc", "pr_auc",
                 "brier", "ece", "uncalibrated_ece")
_THREE_DECIMALS = set(_METRIC_ORDER) | {"threshold", "uncertain_band", "auc", "temperature"}
_HEADLINE_HEADER = ("Photos", "n", "accuracy", "sensitivity", "specificity", "ROC-AUC", "ECE")
_HEADLINE_KEYS = ("n", "accuracy", "sensitivity", "specificity", "roc_auc", "ece")


def readable_key(key: Any, value: Any = None) -> str:
    """A card field's name in words ("roc_auc" -> "ROC-AUC", "fine_tune_lr" -> "Fine tune learning rate")."""
    key = str(key)
    if key == "transfer" and isinstance(value, bool):  # a training setting: whether to measure transfer
        return "Measure transfer to another collection"
    if key in _LABELS:
        return _LABELS[key]
    if not re.fullmatch(r"[a-z0-9_]+", key):
        return key  # a name from the data ("MSID -> MSLD v1", "MSID/mpox", "model.keras"): keep as written
    text = " ".join(_TOKENS.get(t, t) for t in key.split("_") if t)
    return text[:1].upper() + text[1:]


def readable_value(value: Any, key: Any = "") -> str:
    """A card value in words: yes/no, none, thousands separators, 3 decimals for rates."""
    if value is None:
        return "not set"
    if isinstance(value, str) and not value.strip():
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if str(key) not in ("seed", "format_version") else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "not measured"
        return f"{value:.3f}" if str(key) in _THREE_DECIMALS else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(readable_value(v, key) for v in value) if value else "none"
    return str(value)


def _pct(a: int, b: int | None) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "–"


def _pct1(x: float) -> str:
    return "100%" if x >= 1.0 else f"{100.0 * x:.1f}%"


def _ci_words(ci: Any, percent: bool = True) -> str:
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
            and all(math.isfinite(v) for v in ci)):
        return ""
    lo, hi = ci
    return f", 95% interval {_pct1(lo)}–{_pct1(hi)}" if percent else f", 95% interval {lo:.3f}–{hi:.3f}"


def _fmt_p(x: float | None) -> str:
    return "" if x is None else f"{float(x):.3f}"


def _fmt_metric(value: float | None, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if ci:
        text += f"  ({ci[0]:.3f}–{ci[1]:.3f})"
    return text


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def metrics_in_words(m: dict, kind: str = "") -> str:
    """One evaluated set of a card as a sentence: what was found, missed and falsely alarmed, with intervals."""
    ci = m.get("ci95") if isinstance(m.get("ci95"), dict) else {}
    conf = m.get("confusion") if isinstance(m.get("confusion"), dict) else {}
    bits = []
    if _num(m.get("sensitivity")):
        s = f"sensitivity {_pct1(m['sensitivity'])}{_ci_words(ci.get('sensitivity'))}"
        if all(_num(conf.get(k)) for k in ("tp", "fn")):
            s = f"found {conf['tp']:,} of {conf['tp'] + conf['fn']:,} mpox photos ({s})"
        bits.append(s)
    if _num(m.get("specificity")):
        s = f"specificity {_pct1(m['specificity'])}{_ci_words(ci.get('specificity'))}"
        if all(_num(conf.get(k)) for k in ("fp", "tn")):
            s = f"{conf['fp']:,} false alarms among {conf['fp'] + conf['tn']:,} other photos ({s})"
        bits.append(s)
    if _num(m.get("roc_auc")):
        bits.append(f"ROC-AUC {m['roc_auc']:.3f}{_ci_words(ci.get('roc_auc'), percent=False)}")
    head = ""
    if _num(m.get("n")):
        head = f"{int(m['n']):,} {kind + ' ' if kind else ''}photos"
        if _num(m.get("n_mpox")):
            head += f" ({int(m['n_mpox']):,} mpox)"
        head += ": "
    return head + ("; ".join(bits) if bits else "no figures recorded") + "."


def _training_in_words(td: Any) -> str:
    if not isinstance(td, dict) or not td:
        return "Not recorded in the model card."
    parts = []
    if _num(td.get("n_images")):
        text = f"{int(td['n_images']):,} photos"
        if _num(td.get("n_groups")):
            text += f" in {int(td['n_groups']):,} independent groups (a group's photos stay in one split)"
        parts.append(text)
    sources = td.get("sources")
    if isinstance(sources, dict):
        names = sorted({str(k).split("/")[0] for split in sources.values() if isinstance(split, dict) for k in split})
        if names:
            parts.append("from the " + ", ".join(names) + " collection" + ("s" if len(names) > 1 else ""))
    counts = td.get("counts")
    if isinstance(counts, dict):
        splits = []
        for key in ("train", "val", "test"):
            c = counts.get(key)
            if isinstance(c, dict) and all(_num(v) for v in c.values()):
                total = int(sum(c.values()))
                splits.append(f"{_SET_NAMES[key].lower()} {total:,} ({int(c.get(LABEL_MPOX, 0)):,} mpox)")
        if splits:
            parts.append("split into " + ", ".join(splits))
    fine = td.get("fine_labels")
    if isinstance(fine, dict):
        names = sorted({str(k) for split in fine.values() if isinstance(split, dict) for k in split})
        if names:
            parts.append("conditions: " + ", ".join(n.replace("_", " ") for n in names))
    text = "; ".join(parts)
    if td.get("test_used_in_training") is False:
        text += ". The test photos were not used to train the model or to choose any of its settings"
    if not text:  # a card with other fields: say them in words rather than print nothing
        text = "; ".join(f"{readable_key(k)}: {readable_value(v, k)}" for k, v in td.items()
                         if not isinstance(v, dict))
    return (text + ".") if text else "Not recorded in the model card."


def card_summary(card: Any, origin: str | None = None, scope_limit: float | None = None) -> list[tuple[str, str]]:
    """(topic, text) pairs saying in words what the model is, what it learned from, how it decides and how
    well it did; texts are escaped for ReportLab paragraphs."""
    arch = _ARCH_NAMES.get(str(card.architecture).lower(), str(card.architecture))
    what = (f"{arch} image classifier ({card.input_size}×{card.input_size} pixel input) that gives each photo a "
            f"probability of mpox, p(mpox). Version {card.version}, created {str(card.created)[:10]}.")
    if origin:
        what += f" Origin: {_origin_text(origin, card)}."
    elif card.parent:
        what += f" Fine-tuned from {card.parent.get('name', '?')} {card.parent.get('version', '')}.".replace(" .", ".")
    rows = [("What it is", escape(what)), ("Intended use", escape(card.intended_use)),
            ("Trained on", escape(_training_in_words(card.training_data)))]
    decide = f"Called mpox when p(mpox) is at least {float(card.threshold):.3f}."
    if card.threshold_reason:
        decide += f" Why: {card.threshold_reason}."
    rows.append(("Threshold and why", escape(decide)))
    flags = []
    if card.uncertain_band:
        lo, hi = card.uncertain_band
        flags.append(f"Uncertain when p(mpox) is between {lo:.2f} and {hi:.2f}.")
    limit = scope_limit if scope_limit is not None else card.ood_threshold
    if limit is not None:
        flags.append(f"Out of scope when the photo's out-of-scope score is above {float(limit):.3g}: the photo is "
                     "unlike the training photos, so its score should not be trusted.")
    rows.append(("Flags for review", escape(" ".join(flags) if flags else "No flags set in this card.")))
    metrics = card.metrics if isinstance(card.metrics, dict) else {}
    if isinstance(metrics.get("val"), dict):
        rows.append(("Validation", escape(metrics_in_words(metrics["val"], "validation")
                                          + " The threshold and flags were chosen on these photos, so these "
                                            "figures flatter the model a little.")))
    if isinstance(metrics.get("test"), dict):
        note = (" None of these photos was used to train the model or choose its settings."
                if (card.training_data or {}).get("test_used_in_training") is False else "")
        rows.append(("Test", escape(metrics_in_words(metrics["test"], "held-out test") + note)))
    transfer = metrics.get("transfer")
    if isinstance(transfer, dict):
        lines = []
        for direction, m in transfer.items():
            if not isinstance(m, dict):
                continue
            src, _, dst = str(direction).partition(" -> ")
            where = f"Trained on {src} only, tried on {dst}" if dst else str(direction)
            lines.append(escape(f"{where}: " + metrics_in_words(m)))
        if lines:
            rows.append(("Photos from elsewhere", "<br/>".join(lines) + escape(
                " Expect figures nearer these than the test figures on photos from a new site or camera.")))
    if not any(k in metrics for k in ("val", "test")):
        rows.append(("Measured", escape("No validation or test figures in the model card.")))
    limits = [str(x) for x in card.limitations] or [
        "No limitations recorded in the model card; treat this as unknown, not as absent."]
    rows.append(("Limits", "<br/>".join("• " + escape(x) for x in limits)))
    return rows


FIGURES_NOTE = ("Sensitivity: the share of mpox photos the model calls mpox. Specificity: the share of other photos "
                "it calls not mpox. ROC-AUC: how well its scores rank mpox photos above others (1 is perfect, 0.5 "
                "is chance). Intervals are 95% bootstrap intervals over photos; photos of one patient are not "
                "independent, so the true uncertainty can be wider.")


def _headline_metrics(metrics: Any) -> list[list[str]]:
    """One row per evaluated set of a card (validation, test, each transfer direction) with its headline figures."""
    if not isinstance(metrics, dict):
        return []
    sets = [(_SET_NAMES.get(name, readable_key(name)), m) for name, m in metrics.items() if name != "transfer"]
    transfer = metrics.get("transfer")
    if isinstance(transfer, dict):
        sets += [(f"Transfer {k}", v) for k, v in transfer.items()]
    rows = []
    for name, m in sets:
        if isinstance(m, dict) and "roc_auc" in m:
            rows.append([name] + [readable_value(m[k], k) if k in m else "—" for k in _HEADLINE_KEYS])
    return rows


# ---------------------------------------------------------------------------------------------- the full card

_APPENDIX_GROUPS = (
    ("Identity", ("name", "version", "architecture", "input_size", "class_names", "format_version", "created",
                  "app_version", "parent", "model_sha256", "card_sha256", "files")),
    ("How a photo is scored", ("preprocessing", "temperature", "threshold", "threshold_reason", "uncertain_band",
                               "ood_threshold")),
    ("Intended use and limits", ("intended_use", "limitations")),
    ("Measured performance", ("metrics",)),
    ("Training data", ("training_data",)),
    ("Training", ("training",)),
)
_MAX_MATRIX_COLS = 8
_SHORT_LABELS = {"ece": "ECE", "uncalibrated_ece": "ECE before calibration", "n": "Photos", "n_mpox": "Mpox photos",
                 "recall": "Recall", "precision": "Precision", "f1": "F1", "brier": "Brier"}


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _is_flat(v: Any) -> bool:
    return _is_scalar(v) or (isinstance(v, (list, tuple)) and all(_is_scalar(x) for x in v))


def _is_record(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(_is_flat(x) for x in v.values())


def _is_metric_set(v: Any) -> bool:
    return isinstance(v, dict) and sum(k in v for k in _METRIC_ORDER) >= 3


def _is_confusion(v: Any) -> bool:
    return isinstance(v, dict) and all(_num(v.get(k)) for k in ("tp", "fn", "fp", "tn"))


def _confusion_words(c: dict) -> str:
    return (f"At the threshold: {c['tp']:,} mpox photos found and {c['fn']:,} missed; {c['tn']:,} other photos "
            f"cleared and {c['fp']:,} false alarms.")


def _history_words(rows: list[dict]) -> str:
    phases: dict[str, list[dict]] = {}
    for r in rows:
        phases.setdefault(str(r.get("phase", "training")), []).append(r)
    out = []
    for phase, items in phases.items():
        text = f"{phase}: {len(items):,} epochs"
        with_val = [r for r in items if _num(r.get("val_loss"))]
        if with_val:
            best = min(with_val, key=lambda r: r["val_loss"])
            text += f"; lowest validation loss {best['val_loss']:.3f} at epoch {best.get('epoch', '?')}"
        last = items[-1]
        ends = [f"{readable_key(k).lower()} {last[k]:.3f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                if _num(last.get(k))]
        if ends:
            text += "; at the last epoch " + ", ".join(ends)
        out.append(text + ".")
    return " ".join(out) + " (Per-epoch values are in model_card.json.)"


def _cell(text: str, style: str = "cell") -> Paragraph:
    st = _styles()
    font = _font_for(text)
    body = escape(text)
    if font != "Helvetica":
        body = f"<font name='{font}'>{body}</font>"
    return Paragraph(body, st[style])


def _value_cell(value: Any, key: Any) -> Paragraph:
    text = readable_value(value, key)
    is_hash = isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value)
    return _cell(text, "mono" if is_hash else "cell")


def _kv_table(pairs: list[tuple[Any, Any]]) -> list[Table]:
    """Name/value rows; a long list of short settings goes two pairs to a line, long values below it."""
    def is_short(k: Any, v: Any) -> bool:
        return len(readable_value(v, k)) <= 26 and len(readable_key(k, v)) <= 32

    short = [(k, v) for k, v in pairs if is_short(k, v)]
    if len(short) <= 8:
        short = []
    long_ = [(k, v) for k, v in pairs if not any(k == s for s, _ in short)]
    out = []
    if short:
        half = (len(short) + 1) // 2
        cells = [[_cell(readable_key(k, v), "cellb"), _value_cell(v, k)] for k, v in short]
        left, right = cells[:half], cells[half:] + [["", ""]] * (2 * half - len(cells))
        out.append(_kv_grid([a + b for a, b in zip(left, right)], [FRAME_W / 4 + 30, FRAME_W / 4 - 30] * 2))
    if long_:
        out.append(_kv_grid([[_cell(readable_key(k, v), "cellb"), _value_cell(v, k)] for k, v in long_],
                            [150, FRAME_W - 150]))
    return out


def _kv_grid(rows: list[list[Any]], widths: list[float]) -> Table:
    t = Table(rows, colWidths=widths, hAlign="LEFT")
    t.setStyle(_grid_style([("BACKGROUND", (0, 0), (-1, 0), colors.white),
                            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#dddddd")),
                            ("VALIGN", (0, 0), (-1, -1), "TOP"),
                            ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return t


def _matrix_table(items: list[tuple[Any, dict]]) -> Table:
    cols: list[str] = []
    for _k, v in items:
        cols += [c for c in v if c not in cols]
    header = [""] + [_cell(_SHORT_LABELS.get(c) or readable_key(c), "colhead") for c in cols]
    rows = [header] + [[_cell(readable_key(k), "cellb")] + [_value_cell(v[c], c) if c in v else "—" for c in cols]
                       for k, v in items]
    first = max(90, min(150, FRAME_W - 56 * len(cols)))
    t = Table(rows, colWidths=[first] + [(FRAME_W - first) / len(cols)] * len(cols), hAlign="LEFT", repeatRows=1)
    t.setStyle(_grid_style([("VALIGN", (0, 0), (-1, -1), "TOP"),
                            ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return t


def _metric_set_flowables(m: dict, depth: int) -> list[Any]:
    ci = m.get("ci95") if isinstance(m.get("ci95"), dict) else {}
    rows: list[list[Any]] = [["Measure", "Value", "95% interval"]]
    for k in _METRIC_ORDER:
        if k in m:
            lo_hi = ci.get(k)
            interval = (f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}" if isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2
                        and all(_num(x) for x in lo_hi) else "")
            rows.append([readable_key(k), readable_value(m[k], k), interval])
    t = Table(rows, colWidths=[180, 70, 100], hAlign="LEFT")
    t.setStyle(_grid_style([("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                            ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    out: list[Any] = [t]
    conf = m.get("confusion")
    if _is_confusion(conf):
        out.append(Paragraph(escape(_confusion_words(conf)), _styles()["body"]))
    rest = {k: v for k, v in m.items() if k not in _METRIC_ORDER and k not in ("ci95", "confusion")}
    out += _render_dict(rest, depth)
    return out


def _render_dict(d: dict, depth: int) -> list[Any]:
    """A card dictionary: plain fields as a name/value table, alike sub-records as one matrix, the rest nested."""
    flat = [(k, v) for k, v in d.items() if _is_flat(v)]
    records = [(k, v) for k, v in d.items() if _is_record(v) and not _is_confusion(v)]
    columns = {c for _k, v in records for c in v}
    shared = set.intersection(*(set(v) for _k, v in records)) if records else set()
    # Alike records (the same fields: photos per split, figures per collection) read best as one table.
    as_matrix = len(records) >= 2 and len(columns) <= _MAX_MATRIX_COLS and 2 * len(shared) >= len(columns)
    out: list[Any] = []
    if flat:
        out += _kv_table(flat)
    if as_matrix:
        out.append(_matrix_table(records))
    for k, v in d.items():
        if _is_flat(v) or (as_matrix and any(k == r for r, _ in records)):
            continue
        out.append(Paragraph(escape(readable_key(k, v)), _heading_style(depth)))
        out += _render_value(k, v, depth + 1)
    return out


def _render_value(key: Any, value: Any, depth: int) -> list[Any]:
    st = _styles()
    if isinstance(value, dict):
        if _is_metric_set(value):
            return _metric_set_flowables(value, depth)
        if _is_confusion(value):
            return [Paragraph(escape(_confusion_words(value)), st["body"])]
        return _render_dict(value, depth) or [Paragraph("none", st["body"])]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        if str(key) == "history":
            return [Paragraph(escape(_history_words(list(value))), st["body"])]
        return [_matrix_table([(str(i + 1), v) for i, v in enumerate(value)])]
    if isinstance(value, (list, tuple)) and str(key) == "limitations":
        return [Paragraph("• " + escape(str(v)), st["body"]) for v in value] or [Paragraph("none", st["body"])]
    return [Paragraph(escape(readable_value(value, key)), st["body"])]


def card_appendix(card: Any, origin: str | None = None) -> list[Any]:
    """Every field of a model card, grouped and named in words (no dotted keys, no raw dumps)."""
    st = _styles()
    data = card.to_dict() if hasattr(card, "to_dict") else dict(card)
    if origin:
        data = {"origin": ORIGIN_TEXT.get(origin, origin), **data}
    shown: set[str] = set()
    out: list[Any] = []
    for title, keys in _APPENDIX_GROUPS:
        present = [k for k in keys if k in data]
        if title == "Identity" and "origin" in data:
            present.insert(0, "origin")
        if not present:
            continue
        shown.update(present)
        out.append(Paragraph(escape(title), st["h2"]))
        if len(present) == 1 and isinstance(data[present[0]], dict):
            out += _render_dict(data[present[0]], 1) or [Paragraph("Not recorded.", st["body"])]
        elif present == ["intended_use", "limitations"]:
            out += [Paragraph(escape(str(data["intended_use"])), st["body"])]
            out += _render_value("limitations", data["limitations"], 1)
        else:
            out += _render_dict({k: data[k] for k in present}, 1)
    rest = {k: v for k, v in data.items() if k not in shown and v not in (None, {}, [], "")}
    if list(rest) == ["extra"] and isinstance(rest["extra"], dict):
        rest = rest["extra"]  # the card's own "extra" needs no second heading
    if rest:
        out.append(Paragraph("Other fields", st["h2"]))
        out += _render_dict(rest, 1)
    return out


# ---------------------------------------------------------------------------------------------- drawing helpers


def _truncate_middle(text: str, width: float, font: str, size: float) -> str:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    if stringWidth(text, font, size) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest kept length whose "head…tail" fits
        mid = (lo + hi + 1) // 2
        cand = text[: mid // 2] + "…" + text[len(text) - (mid - mid // 2):]
        if stringWidth(cand, font, size) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[: lo // 2] + "…" + text[len(text) - (lo - lo // 2):]


_UNICODE_FONT: str | None = None


def _unicode_font() -> str | None:
    """A TrueType font for names outside Latin-1 (Helvetica cannot draw them), when one is installed."""
    global _UNICODE_FONT
    if _UNICODE_FONT is None:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        _UNICODE_FONT = ""
        for cand in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                     "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                     "C:/Windows/Fonts/arial.ttf", "/Library/Fonts/Arial Unicode.ttf"):
            if os.path.isfile(cand):
                try:
                    pdfmetrics.registerFont(TTFont("ReportUnicode", cand))
                    _UNICODE_FONT = "ReportUnicode"
                    break
                except Exception:  # a broken system font must not stop the report
                    continue
    return _UNICODE_FONT or None


def _font_for(text: str, default: str = "Helvetica") -> str:
    try:
        text.encode("latin-1")
        return default
    except UnicodeEncodeError:
        return _unicode_font() or default


def _display_name(path: str, folder: str) -> str:
    try:
        rel = os.path.relpath(path, folder)
        if not rel.startswith(".."):
            return rel
    except ValueError:  # different drive on Windows
        pass
    return os.path.basename(path) or str(path)


def _histogram_drawing(records: Sequence[ResultRecord], refs: dict[int, str], threshold: float | None,
                       band: Sequence[float] | None, width: float, height: float = 170, bins: int = 20):
    """Stacked histogram of p(mpox): reference mpox / not mpox / unlabelled, with threshold and uncertain band."""
    from reportlab.graphics.shapes import Drawing, Group, Line, Rect, String
    from reportlab.lib import colors

    groups = {"mpox": np.zeros(bins, int), "not_mpox": np.zeros(bins, int), "none": np.zeros(bins, int)}
    for i, r in enumerate(records):
        if not r.ok or r.p_mpox is None:
            continue
        b = min(bins - 1, max(0, int(float(r.p_mpox) * bins)))
        groups[refs.get(i, "none")][b] += 1
    total = groups["mpox"] + groups["not_mpox"] + groups["none"]
    ymax = max(1, int(total.max()))
    step = 10 ** math.floor(math.log10(ymax)) if ymax >= 10 else 1
    while ymax / step > 5:
        step *= 2
    ytop = int(math.ceil(ymax / step) * step)

    d = Drawing(width, height)
    left, bottom, right, top = 40, 30, 10, 34
    pw, ph = width - left - right, height - bottom - top
    if band:
        lo, hi = float(band[0]), float(band[1])
        d.add(Rect(left + lo * pw, bottom, (hi - lo) * pw, ph, fillColor=colors.HexColor("#fdf2e0"),
                   strokeColor=None))
    for k in range(0, ytop + 1, step):
        y = bottom + ph * k / ytop
        d.add(Line(left, y, left + pw, y, strokeColor=colors.HexColor("#e5e5e5"), strokeWidth=0.5))
        d.add(String(left - 4, y - 3, str(k), fontSize=7, textAnchor="end"))
    bw = pw / bins
    palette = [("mpox", _C_MPOX), ("not_mpox", _C_NOT), ("none", _C_GREY)]
    for b in range(bins):
        y0 = bottom
        for name, col in palette:
            h = ph * groups[name][b] / ytop
            if h > 0:
                d.add(Rect(left + b * bw + 0.5, y0, bw - 1, h, fillColor=colors.HexColor(col),
                           strokeColor=colors.white, strokeWidth=0.3))
                y0 += h
    d.add(Line(left, bottom, left + pw, bottom, strokeWidth=0.8))
    d.add(Line(left, bottom, left, bottom + ph, strokeWidth=0.8))
    for k in range(0, 11, 2):
        x = left + pw * k / 10
        d.add(Line(x, bottom, x, bottom - 3, strokeWidth=0.8))
        d.add(String(x, bottom - 12, f"{k / 10:.1f}", fontSize=7, textAnchor="middle"))
    d.add(String(left + pw / 2, 3, "p(mpox), calibrated", fontSize=8, textAnchor="middle"))
    label = Group(String(0, 0, "photos", fontSize=8, textAnchor="middle"))
    label.transform = (0, 1, -1, 0, 10, bottom + ph / 2)  # rotated 90 degrees
    d.add(label)
    if threshold is not None:
        x = left + float(threshold) * pw
        d.add(Line(x, bottom, x, bottom + ph, strokeColor=colors.black, strokeWidth=1, strokeDashArray=[3, 2]))
        d.add(String(x + 3, bottom + ph - 4, f"threshold {float(threshold):.2f}", fontSize=7))
    # Legend
    lx = left + 4
    items = [("reference mpox", _C_MPOX), ("reference not mpox", _C_NOT),
             ("no reference label" if refs else "all photos", _C_GREY)]
    if not refs:
        items = [items[2]]
    elif not groups["none"].any():
        items = items[:2]
    if band:
        items.append(("uncertain band", "#fdf2e0"))
    for text, col in items:
        d.add(Rect(lx, height - 10, 7, 7, fillColor=colors.HexColor(col), strokeColor=colors.HexColor("#999999"),
                   strokeWidth=0.3))
        d.add(String(lx + 10, height - 9, text, fontSize=7))
        lx += 18 + len(text) * 3.6
    return d


def _roc_drawing(ag: Agreement, size: float = 230):
    from reportlab.graphics.shapes import Circle, Drawing, Group, Line, PolyLine, String
    from reportlab.lib import colors

    d = Drawing(size, size)
    left, bottom, pad = 36, 28, 8
    pw = ph = size - left - pad
    d.add(Line(left, bottom, left + pw, bottom + ph, strokeColor=colors.HexColor("#bbbbbb"), strokeDashArray=[2, 2]))
    d.add(Line(left, bottom, left + pw, bottom, strokeWidth=0.8))
    d.add(Line(left, bottom, left, bottom + ph, strokeWidth=0.8))
    for k in range(0, 11, 2):
        v = k / 10
        d.add(String(left + v * pw, bottom - 11, f"{v:.1f}", fontSize=6.5, textAnchor="middle"))
        d.add(String(left - 3, bottom + v * ph - 2, f"{v:.1f}", fontSize=6.5, textAnchor="end"))
    d.add(String(left + pw / 2, 2, "1 - specificity", fontSize=7.5, textAnchor="middle"))
    label = Group(String(0, 0, "sensitivity", fontSize=7.5, textAnchor="middle"))
    label.transform = (0, 1, -1, 0, 8, bottom + ph / 2)  # rotated 90 degrees
    d.add(label)
    if ag.roc is not None:
        fpr, tpr = ag.roc
        if len(fpr) > 400:  # thin the polyline; the curve's shape does not need every step
            keep = np.unique(np.linspace(0, len(fpr) - 1, 400).astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        pts: list[float] = []
        for x, y in zip(fpr, tpr):
            pts += [left + float(x) * pw, bottom + float(y) * ph]
        d.add(PolyLine(pts, strokeColor=colors.HexColor(_C_MPOX), strokeWidth=1.4))
        if ag.auc is not None:
            d.add(String(left + pw - 2, bottom + 6, f"AUC {ag.auc:.3f}", fontSize=8, textAnchor="end"))
    else:
        d.add(String(left + pw / 2, bottom + ph / 2, "ROC needs both classes", fontSize=8, textAnchor="middle"))
    if ag.sensitivity is not None and ag.specificity is not None:
        d.add(Circle(left + (1 - ag.specificity) * pw, bottom + ag.sensitivity * ph, 3,
                     fillColor=colors.black, strokeColor=colors.white))
    return d




class _NumberedCanvas(rl_canvas.Canvas):
    """Holds pages until the end so each can say "Page x of y"; adds the disclaimer footer and a header."""

    def __init__(self, *args, footer: str = DISCLAIMER, header: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._footer = footer
        self._header = header
        self._pages: list[dict] = []

    def showPage(self):  # noqa: N802 (ReportLab's name)
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self):
        total = len(self._pages)
        for state in self._pages:
            self.__dict__.update(state)
            self._decorate(total)
            rl_canvas.Canvas.showPage(self)
        rl_canvas.Canvas.save(self)

    def _decorate(self, total: int) -> None:
        w, h = self._pagesize
        self.saveState()
        self.setStrokeColor(colors.HexColor("#999999"))
        self.setLineWidth(0.5)
        self.line(36, 34, w - 36, 34)
        self.setFillColor(colors.HexColor("#333333"))
        self.setFont("Helvetica-Bold", 7.5)
        self.drawString(36, 24, self._footer)
        self.setFont("Helvetica", 7.5)
        self.drawRightString(w - 36, 24, f"Page {self._pageNumber} of {total}")
        if self._pageNumber > 1 and self._header:
            self.setFont(_font_for(self._header), 7)
            self.setFillColor(colors.HexColor("#777777"))
            self.drawString(36, h - 26, self._header)
        self.restoreState()


@lru_cache(maxsize=1)
def _styles() -> dict[str, Any]:
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    ss = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("t", parent=ss["Title"], fontSize=20, leading=24, alignment=0, spaceAfter=4),
        "h1": ParagraphStyle("h1", parent=ss["Heading1"], fontSize=14, leading=17, spaceBefore=6, spaceAfter=6),
        "h2": ParagraphStyle("h2", parent=ss["Heading2"], fontSize=11, leading=14, spaceBefore=8, spaceAfter=4),
        "h3": ParagraphStyle("h3", parent=ss["Heading3"], fontSize=9.5, leading=12, spaceBefore=6, spaceAfter=3),
        "h4": ParagraphStyle("h4", parent=ss["Heading4"], fontSize=8.5, leading=11, spaceBefore=4, spaceAfter=2,
                             textColor="#444444"),
        "body": ParagraphStyle("b", parent=ss["BodyText"], fontSize=9, leading=12),
        "small": ParagraphStyle("s", parent=ss["BodyText"], fontSize=7.5, leading=9.5, textColor="#444444"),
        "warn": ParagraphStyle("w", parent=ss["BodyText"], fontSize=9.5, leading=12.5, textColor="#7b241c",
                               borderColor="#c0392b", borderWidth=0.8, borderPadding=6, backColor="#fbeeee",
                               spaceBefore=6, spaceAfter=10),
        "alarm": ParagraphStyle("a", parent=ss["BodyText"], fontSize=10, leading=13, textColor="#6e2c00",
                                borderColor="#d35400", borderWidth=1.5, borderPadding=7, backColor="#fdebd0",
                                spaceBefore=8, spaceAfter=12),
        "cell": ParagraphStyle("c", parent=ss["BodyText"], fontSize=8, leading=10),
        "cellb": ParagraphStyle("cb", parent=ss["BodyText"], fontName="Helvetica-Bold", fontSize=8, leading=10),
        "reason": ParagraphStyle("r", parent=ss["BodyText"], fontSize=7, leading=8.5),
        "colhead": ParagraphStyle("ch", parent=ss["BodyText"], fontName="Helvetica-Bold", fontSize=7, leading=8.5),
        # 6.5 pt Courier fits a whole SHA-256 (64 hex digits) on one line in the model table.
        "mono": ParagraphStyle("m", parent=ss["BodyText"], fontName="Courier", fontSize=6.5, leading=8.5),
    }


def _heading_style(depth: int) -> Any:
    return _styles()["h3" if depth <= 1 else "h4"]


def _grid_style(extra: list | None = None) -> Any:
    from reportlab.platypus import TableStyle

    base = [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eaeef2")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#8a99a8")),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#dddddd")),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
    ]
    return TableStyle(base + (extra or []))


# ---------------------------------------------------------------------------------------------- writing


def write_pdf_report(
    records: list[ResultRecord],
    out_path: str | os.PathLike,
    *,
    folder: str,
    cards: list[Any],
    reviews: dict[str, dict] | None = None,
    truth: dict[str, str] | None = None,
    gradcam: dict[str, np.ndarray] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    title: str = DEFAULT_TITLE,
    generated: datetime | None = None,
    shift: dict | None = None,
    origins: dict[str, str] | None = None,
    scope_limit: float | None = None,
    sections: Sequence[Callable[[ReportContext], list[Any]]] = SECTIONS,
) -> Path:
    """Write the PDF report of one classified folder and return its path.

    `records` may hold several models per photo (same path, different model); the report has one line
    per photo. `cards` are the models' ModelCards; `reviews` maps a path to {"label": "mpox"|"not_mpox"|
    "unsure", "reviewer", "time"}; `truth` maps a path to "mpox"/"not_mpox" (e.g. from class folders);
    `gradcam` maps a path to a heat map or overlay; `shift` is a folder's shift test ({"detected",
    "p_value", "statistic", "n"}, e.g. core.shift's ShiftResult.to_dict()); `origins` maps a model key
    (model SHA-256, else "name version") to "shipped" or "local"; `scope_limit` is the limit out-of-scope
    scores were compared with (default: each card's ood_threshold); it is printed beside the score, while
    the record's flag decides whether a photo is out of scope.

    The PDF is published atomically: on any failure the previous file at `out_path` stays as it was and
    nothing half-written is left. Raises ReportWriteError (one line) when the file cannot be written,
    core.progress.Cancelled when `cancel` fires.
    """
    out_path = Path(out_path)
    ctx = build_context(records, folder=folder, cards=cards, reviews=reviews, truth=truth, gradcam=gradcam,
                        shift=shift, origins=origins, scope_limit=scope_limit, title=title, generated=generated,
                        progress=progress, cancel=cancel)
    story: list[Any] = []
    for section in sections:
        story += section(ctx)
    header = f"{title} · {ctx.when} · {folder}"
    if len(header) > 140:
        header = header[:139] + "…"
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN + 4,
                            bottomMargin=MARGIN + 8, title=title, author=f"mpox-triage {__version__}",
                            subject=DISCLAIMER, creator=f"mpox-triage {__version__}")
    doc.build(story, canvasmaker=partial(_NumberedCanvas, footer=DISCLAIMER, header=header))
    n = max(len(ctx.photos), 1)
    report(progress, n, n, f"Saving {out_path.name}", "saving")
    publish_atomically(out_path, buf.getbuffer())
    report(progress, n, n, f"Report written: {out_path}", "done")
    return out_path


def build_context(records: Sequence[ResultRecord], *, folder: str, cards: Sequence[Any] = (),
                  reviews: dict[str, dict] | None = None, truth: dict[str, str] | None = None,
                  gradcam: dict[str, np.ndarray] | None = None, shift: dict | None = None,
                  origins: dict[str, str] | None = None, scope_limit: float | None = None,
                  title: str = DEFAULT_TITLE, generated: datetime | None = None,
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> ReportContext:
    """Everything the sections need, computed once: models, one row per photo, counts, agreement per model."""
    records = list(records)
    cards = list(cards or [])
    report(progress, 0, 1, "Computing summary", "summary")
    models = models_of(records, cards, origins)
    photos = photo_rows(records, models, reviews, truth, scope_limit)
    has_refs = bool(reference_labels(records, reviews, truth))
    agreements = {m.key: compute_agreement([r for r in records if model_key(r) == m.key], reviews, truth)
                  if has_refs else None for m in models}
    if cancel is not None:
        cancel.raise_if_cancelled()
    generated = generated or datetime.now(timezone.utc)
    return ReportContext(records=records, folder=str(folder), cards=cards, models=models, photos=photos,
                         counts=count_photos(photos, len(models)), agreements=agreements, reviews=reviews,
                         truth=truth, gradcam=gradcam, shift=shift, origins=origins, scope_limit=scope_limit,
                         title=title,
                         when=generated.astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(), progress=progress,
                         cancel=cancel)


def _write_file(path: str, data: bytes | memoryview) -> None:
    """Write and flush `data` to disk (fsync), so a later rename publishes complete bytes."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _create_sibling(out_path: Path) -> str:
    """A new empty hidden file beside `out_path`, created with mode 0666 less the umask (as a plain save
    would be; mkstemp's 0600 is wrong for a filed report, and changing the umask is not thread-safe)."""
    for _ in range(100):
        name = str(out_path.parent / f".{out_path.name}.{secrets.token_hex(4)}.partial")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(out_path.parent))


def publish_atomically(out_path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write `data` to a temporary sibling and rename it over `out_path`.

    On any failure the temporary file is removed and `out_path` is left exactly as it was; OS errors (a full
    disk, no permission, a missing folder) become a one-line ReportWriteError that names the file.
    """
    out_path = Path(out_path)
    tmp_name = None
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_name = _create_sibling(out_path)
        _write_file(tmp_name, data)
        os.replace(tmp_name, out_path)
        tmp_name = None
    except OSError as exc:
        why = "no space left on the disk" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise ReportWriteError(exc.errno or 0, f"Could not write the report {out_path}: {why}. "
                               "Nothing was changed there; free space or choose another place and export "
                               "again.".replace("\n", " ")) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return out_path
