"""A small QPainter line chart for live training curves (QtCharts is not in PySide6-Essentials)."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

PALETTE = [QColor(31, 119, 180), QColor(255, 127, 14), QColor(44, 160, 44), QColor(214, 39, 40)]


class LineChart(QWidget):
    """Named series of y values against epoch; redraws as points are appended."""

    def __init__(self, title: str, y_label: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self.y_label = y_label
        self.series: dict[str, list[float]] = {}
        self.dashed: set[str] = set()
        self.empty_text = "waiting for the first epoch…"
        self.setMinimumSize(260, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_empty_text(self, text: str) -> None:
        """What the chart says before it has a point ("waiting for the first epoch…", or why none will come)."""
        self.empty_text = text
        self.update()

    def clear(self) -> None:
        self.series.clear()
        self.update()

    def add_point(self, name: str, value: float | None, dashed: bool = False) -> None:
        """Append one value (None or NaN is kept as a gap so epochs stay aligned)."""
        self.series.setdefault(name, []).append(float("nan") if value is None else float(value))
        if dashed:
            self.dashed.add(name)
        self.update()

    def _range(self) -> tuple[float, float, int]:
        values = [v for s in self.series.values() for v in s if math.isfinite(v)]
        n = max((len(s) for s in self.series.values()), default=0)
        if not values:
            return 0.0, 1.0, n
        lo, hi = min(values), max(values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.08
        return lo - pad, hi + pad, n

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(255, 255, 255))
        fm = p.fontMetrics()
        left, top, right, bottom = 48, fm.height() + 10, 12, fm.height() + 24
        plot = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        p.setPen(QColor(40, 40, 40))
        p.drawText(QRectF(0, 2, self.width(), fm.height() + 4), Qt.AlignmentFlag.AlignHCenter, self.title)
        lo, hi, n = self._range()
        # Enough decimals that the five axis labels differ, even for a loss that moves in the third decimal.
        decimals = min(6, max(2, math.ceil(-math.log10((hi - lo) / 4)) + 1)) if hi > lo else 2
        p.setPen(QPen(QColor(225, 225, 225), 1))
        for i in range(5):
            y = plot.bottom() - plot.height() * i / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(QColor(90, 90, 90))
            p.drawText(QRectF(0, y - fm.height() / 2, left - 6, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{lo + (hi - lo) * i / 4:.{decimals}f}")
            p.setPen(QPen(QColor(225, 225, 225), 1))
        p.setPen(QPen(QColor(120, 120, 120), 1))
        p.drawRect(plot)
        p.setPen(QColor(90, 90, 90))
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height() + 2),
                   Qt.AlignmentFlag.AlignHCenter, f"epoch (1–{n})" if n else self.empty_text)

        def xy(i: int, v: float) -> QPointF:
            x = plot.left() + (plot.width() * (i / (n - 1)) if n > 1 else plot.width() / 2)
            return QPointF(x, plot.bottom() - (v - lo) / (hi - lo) * plot.height())

        legend_x = plot.left() + 6
        for k, (name, values) in enumerate(self.series.items()):
            color = PALETTE[k % len(PALETTE)]
            pen = QPen(color, 2)
            if name in self.dashed:
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            path = QPainterPath()
            started = False
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    started = False
                    continue
                pt = xy(i, v)
                if started:
                    path.lineTo(pt)
                else:
                    path.moveTo(pt)
                    started = True
                if len(values) < 40:
                    p.drawEllipse(pt, 2, 2)
            p.drawPath(path)
            p.drawLine(QPointF(legend_x, top + 8), QPointF(legend_x + 16, top + 8))
            p.setPen(QColor(40, 40, 40))
            p.drawText(QPointF(legend_x + 20, top + 8 + fm.ascent() / 2 - 1), name)
            legend_x += 28 + fm.horizontalAdvance(name)
