"""Text that never gets cut silently: a one-line label that elides with "…" (the tooltip has the whole text), a
file-name elision that keeps the distinguishing end, and the table delegate that applies both."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QLabel, QSizePolicy, QStyledItemDelegate, QWidget

HEAD_CHARS = 6     # a file name keeps at most this much of its start when it must be shortened
TAIL_FIRST = 10    # ... unless that leaves less than this much of its end


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 photo', '2 photos' (`many` for an irregular plural)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def elide_file_name(name: str, metrics: QFontMetrics, width: int) -> str:
    """`name` shortened to `width` pixels in the middle, keeping a few characters of its start and as much of its
    end as fits: the end (a number, the extension) is what usually tells photos of one folder apart."""
    if width <= 0 or metrics.horizontalAdvance(name) <= width:
        return name
    def longest_tail(head: str) -> int:
        lo, hi = 0, len(name) - len(head)
        while lo < hi:   # the longest tail that fits after head + "…"
            mid = (lo + hi + 1) // 2
            if metrics.horizontalAdvance(head + "…" + name[len(name) - mid:]) <= width:
                lo = mid
            else:
                hi = mid - 1
        return lo

    head = name[:min(HEAD_CHARS, max(1, len(name) // 4))]
    tail = longest_tail(head)
    if tail < min(TAIL_FIRST, len(name) - len(head)):   # little room: the end first, one character of the start
        head = name[:1]
        tail = longest_tail(head)
    if tail == 0:
        return metrics.elidedText(name, Qt.TextElideMode.ElideMiddle, width)
    return head + "…" + name[len(name) - tail:]


class ElideDelegate(QStyledItemDelegate):
    """A column's elision: "file" keeps the start and the distinguishing end of a name (elide_file_name); "right"
    keeps the beginning of a sentence ("shifted folder: p 0.81 in…"). The tooltip role has the whole text."""

    def __init__(self, kind: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.kind = kind

    def initStyleOption(self, option, index) -> None:  # noqa: N802 (Qt's name)
        super().initStyleOption(option, index)
        if self.kind == "right":
            option.textElideMode = Qt.TextElideMode.ElideRight
            return
        icon = option.decorationSize.width() + 6 if not option.icon.isNull() else 0
        option.text = elide_file_name(option.text, option.fontMetrics, option.rect.width() - icon - 10)


class ElidingLabel(QLabel):
    """A one-line label whose text is never cut without a sign: when it does not fit it ends in "…" and the
    tooltip holds the whole text. text() returns the whole text."""

    def __init__(self, text: str = "", parent: QWidget | None = None, max_width: int | None = None):
        super().__init__(parent)
        self._full = ""
        self._tip = ""
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        if max_width:
            self.setMaximumWidth(max_width)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = str(text)
        self.updateGeometry()
        self._refit()

    def text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        """What is drawn (the whole text, or its elided form)."""
        return super().text()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = super().sizeHint()
        return QSize(min(self.fontMetrics().horizontalAdvance(self._full) + 8, self.maximumWidth()), hint.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(min(60, self.sizeHint().width()), super().minimumSizeHint().height())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._refit()

    def setToolTip(self, tip: str) -> None:  # noqa: N802 (Qt's name)
        """A tooltip of its own, shown after the whole text when the text is elided."""
        self._tip = str(tip or "")
        self._refit()

    def _refit(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(0, self.width() - 4))
        QLabel.setText(self, shown)
        QLabel.setToolTip(self, "\n\n".join(t for t in (self._full if shown != self._full else "", self._tip) if t))
