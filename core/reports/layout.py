"""Page layout shared by the sections: styles, fonts (with a fallback chain for any script), grids, numbers."""

from __future__ import annotations

import math
import os
from functools import lru_cache
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
    st = _styles()
    font = _font_for(text)
    body = escape(text)
    if font != "Helvetica":
        body = f"<font name='{font}'>{body}</font>"
    return Paragraph(body, st[style])


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
