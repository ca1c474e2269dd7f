"""Page layout shared by the sections: styles, fonts (with a fallback chain for any script), grids, numbers."""

from __future__ import annotations

import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import Paragraph

from core import DISCLAIMER


MARGIN = 15 * mm
FRAME_W = A4[0] - 2 * MARGIN
# The height a flowable may take: the page less the margins writer.py sets (top + 4, bottom + 8) and the
# frame's own padding (6 pt each side), with a little to spare.
PAGE_FRAME_H = A4[1] - 2 * MARGIN - 12 - 12 - 6


# Colours: red for mpox, blue for not mpox, grey for errors / unlabelled, amber for flags.
_C_MPOX = "#c0392b"
_C_NOT = "#2e86c1"
_C_GREY = "#95a5a6"
_C_OVERRIDE = "#7d3c98"      # purple: a reviewer overrode the model's call
_BG_MPOX = "#fbeeee"
_BG_FLAG = "#fef5e7"
_BG_ERROR = "#f2f3f4"


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


def _cell(text: str, style: str = "cell") -> Paragraph:
    return Paragraph(markup(text), _styles()[style])


def fit_size(text: str, width: float, font: str = "Helvetica", size: float = 8.0, floor: float = 5.0) -> float:
    """The largest font size up to `size` at which the longest word of `text` fits `width`: cells wrap at
    spaces only, so no word is ever broken ("combine/d")."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    longest = max((stringWidth(w, font, 1.0) for w in str(text).split()), default=0.0)
    return size if longest * size <= width else max(floor, width / longest)


@lru_cache(maxsize=64)
def _sized(style: str, size: float) -> Any:
    from reportlab.lib.styles import ParagraphStyle

    base = _styles()[style]
    return ParagraphStyle(f"{base.name}{size:.2f}", parent=base, fontSize=size,
                          leading=round(size * base.leading / base.fontSize, 2))


def fit_cell(html: str, words: str, width: float, style: str = "cell", font: str | None = None) -> Paragraph:
    """A Paragraph of `html` whose font shrinks (not below 5 pt) until each word of `words` (its plain text,
    measured in `font`, default the style's) fits `width`; wrapped at spaces only."""
    base = _styles()[style]
    size = round(fit_size(words, width, font or base.fontName, base.fontSize) - 0.05, 1)
    return Paragraph(html, base if size >= base.fontSize else _sized(style, size))


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


# Fonts for text outside Latin-1 (Helvetica draws only Latin-1), tried in this order for each character:
# shipped in resources/fonts (licences beside them), then a system font. Noto covers Latin, Greek, Cyrillic,
# Devanagari and Arabic; Unifont (converted to TrueType outlines, which ReportLab needs) covers the rest of the
# Basic Multilingual Plane (CJK, Hangul, ...) and emoji. ReportLab does not shape: Arabic letters are drawn in
# their isolated forms and Devanagari without conjuncts, but never as empty boxes.
# The shipped fonts are xz-compressed (11.4 MB of TrueType in 1.9 MB; Unifont alone is 10 MB) and decompressed
# in memory when first needed (ReportLab reads a whole font file into memory anyway).
FONT_DIR = Path(__file__).resolve().parents[2] / "resources" / "fonts"
FONT_CHAIN: tuple[tuple[str, str], ...] = (
    ("NotoSans", "NotoSans-Regular.ttf.xz"),
    ("NotoSansDevanagari", "NotoSansDevanagari-Regular.ttf.xz"),
    ("NotoSansArabic", "NotoSansArabic-Regular.ttf.xz"),
    ("Unifont", "unifont-bmp.ttf.xz"),
    ("UnifontEmoji", "unifont-upper-emoji.ttf.xz"),
)
SYSTEM_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "C:/Windows/Fonts/arial.ttf",
                "/Library/Fonts/Arial Unicode.ttf")
# Invisible format characters (joiners, variation selectors, direction marks) are left out of the drawing:
# a fallback font would draw them as visible boxes.
_INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u206f\ufe00-\ufe0f\U000e0100-\U000e01ef]")


_LOADED: list[tuple[str, frozenset[int]]] = []   # fonts of the chain loaded so far, in chain order
_TRIED: set[str] = set()


def _candidates() -> list[tuple[str, Path]]:
    return [(name, FONT_DIR / file) for name, file in FONT_CHAIN] + \
        [(f"System{k}", Path(p)) for k, p in enumerate(SYSTEM_FONTS)]


def open_font(name: str, path: Path) -> Any:
    """A ReportLab TTFont named `name` from a .ttf file, or from an xz-compressed one (.ttf.xz, decompressed in
    memory); raises when the file is missing or not a font."""
    import io
    import lzma

    from reportlab.pdfbase.ttfonts import TTFont

    if path.suffix == ".xz":
        data = io.BytesIO(lzma.decompress(path.read_bytes()))
        data.name = str(path)   # ReportLab names the file in its messages
        return TTFont(name, data)
    return TTFont(name, str(path))


def _load(name: str, path: Path) -> None:
    """Register one font of the chain (once); a missing or broken file is skipped, the next one is tried."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics

    _TRIED.add(name)
    if not path.is_file():
        return
    try:
        font = open_font(name, path)
        pdfmetrics.registerFont(font)
    except Exception:  # a broken font file must not stop the report
        return
    for bold in (0, 1):   # <b> inside a run keeps the regular face rather than failing
        for italic in (0, 1):
            addMapping(name, bold, italic, name)
    _LOADED.append((name, frozenset(font.face.charToGlyph)))


def _base_draws(ch: str) -> bool:
    """Helvetica and the other standard fonts draw Windows-1252 (Latin-1 plus dashes, quotes, €, …)."""
    try:
        ch.encode("cp1252")
        return True
    except UnicodeEncodeError:
        return False


def _font_of(ch: str) -> str | None:
    """The first font of the chain that draws `ch` (loaded only when an earlier one lacks it); None when the
    base font draws it, or when no font has it."""
    if _base_draws(ch):
        return None
    code = ord(ch)
    for name, cmap in _LOADED:
        if code in cmap:
            return name
    for name, path in _candidates():
        if name in _TRIED:
            continue
        _load(name, path)
        if _LOADED and _LOADED[-1][0] == name and code in _LOADED[-1][1]:
            return name
    return None


def font_runs(text: str) -> list[tuple[str | None, str]]:
    """`text` cut into runs of one font each: (font name or None for the base font, text)."""
    runs: list[tuple[str | None, str]] = []
    for ch in _INVISIBLE.sub("", text):
        font = _font_of(ch)
        if runs and runs[-1][0] == font:
            runs[-1] = (font, runs[-1][1] + ch)
        else:
            runs.append((font, ch))
    return runs


def markup(text: str) -> str:
    """`text` escaped for a ReportLab Paragraph, each script in a font that has its glyphs."""
    return "".join(escape(t) if font is None else f"<font name='{font}'>{escape(t)}</font>"
                   for font, t in font_runs(str(text)))


def draw_text(canvas: Any, x: float, y: float, text: str, font: str, size: float) -> None:
    """canvas.drawString with the fallback chain (page headers hold file and folder names)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    for run_font, t in font_runs(text):
        name = run_font or font
        canvas.setFont(name, size)
        canvas.drawString(x, y, t)
        x += stringWidth(t, name, size)


def folder_label(folder: str) -> str:
    """The folder as the report names it: its own name, never the machine's absolute path (the CSV and the
    session keep the full path; a filed report travels)."""
    name = os.path.basename(os.path.normpath(str(folder)))
    return name or "(the root folder)"


def _display_name(path: str, folder: str) -> str:
    try:
        rel = os.path.relpath(path, folder)
        if not rel.startswith(".."):
            return rel
    except ValueError:  # different drive on Windows
        pass
    return os.path.basename(path) or str(path)


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
            self.setFillColor(colors.HexColor("#777777"))
            draw_text(self, 36, h - 26, self._header, "Helvetica", 7)
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
        # A file name has no spaces to break at: CJK wrapping breaks it anywhere, so the whole name shows.
        "filename": ParagraphStyle("fn", parent=ss["BodyText"], fontSize=7.5, leading=9, wordWrap="CJK"),
        # Cells wrap at spaces only (splitLongWords=0): a narrow cell shrinks its font (fit_cell) rather than
        # break a word in two.
        "cell": ParagraphStyle("c", parent=ss["BodyText"], fontSize=8, leading=10, splitLongWords=0),
        "cellb": ParagraphStyle("cb", parent=ss["BodyText"], fontName="Helvetica-Bold", fontSize=8, leading=10,
                                splitLongWords=0),
        "score": ParagraphStyle("sc", parent=ss["BodyText"], fontSize=7.5, leading=9, splitLongWords=0),
        "reason": ParagraphStyle("r", parent=ss["BodyText"], fontSize=7, leading=8.5, splitLongWords=0),
        "colhead": ParagraphStyle("ch", parent=ss["BodyText"], fontName="Helvetica-Bold", fontSize=7, leading=8.5,
                                  splitLongWords=0),
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
