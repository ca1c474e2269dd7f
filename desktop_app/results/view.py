"""The results panel: filter bar, sortable table and keyboard review (Up/Down, M, N, U)."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QTableView, QVBoxLayout, QWidget)

from desktop_app.results.model import ResultsModel
from desktop_app.results.proxy import FILTERS, ResultsProxy

REVIEW_KEYS = {Qt.Key.Key_M: "mpox", Qt.Key.Key_N: "not_mpox", Qt.Key.Key_U: "unsure"}


class ResultsTable(QTableView):
    """A table that turns M / N / U into review requests for the current row."""

    review_requested = Signal(int, str)   # source row, label

    def keyPressEvent(self, event: QKeyEvent) -> None:
        label = REVIEW_KEYS.get(Qt.Key(event.key()))
        if label is not None and not (event.modifiers() & (Qt.KeyboardModifier.ControlModifier
                                                            | Qt.KeyboardModifier.AltModifier)):
            index = self.currentIndex()
            if index.isValid():
                self.review_requested.emit(self.model().mapToSource(index).row(), label)
            event.accept()
            return
        super().keyPressEvent(event)


class ResultsPanel(QWidget):
    """Owns the source model and the proxy; the table never keeps its own copy of the data."""

    current_changed = Signal(object)   # FileRow or None
    counts_changed = Signal(int, int)  # shown, total

    def __init__(self, model: ResultsModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.proxy = ResultsProxy(self)
        self.proxy.setSourceModel(model)

        self.filter_combo = QComboBox()
        for key, label in FILTERS:
            self.filter_combo.addItem(label, key)
        self.filter_combo.setToolTip("Filters are explicit: 'All' shows every photo")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by file name…")
        self.search.setClearButtonEnabled(True)
        self.count_label = QLabel()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.filter_combo)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.count_label)
        self.count_label.hide()  # the status bar shows it; kept for embedding the panel elsewhere

        self.table = ResultsTable()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setIconSize(QSize(56, 56))
        self.table.verticalHeader().setDefaultSectionSize(60)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setHighlightSections(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # arrival order until the user sorts

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)

        self.filter_combo.currentIndexChanged.connect(
            lambda _i: self.proxy.set_category(self.filter_combo.currentData()))
        self.search.textChanged.connect(self.proxy.set_text)
        for signal in (self.proxy.rowsInserted, self.proxy.rowsRemoved, self.proxy.modelReset,
                       self.proxy.layoutChanged):
            signal.connect(self._update_counts)
        self.model.modelReset.connect(self._fit_columns)
        self._fit_columns()
        self._update_counts()
        self.table.selectionModel().currentRowChanged.connect(self._on_current)

    def _fit_columns(self) -> None:
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        widths = {"thumb": 66, "file": 140, "p": 72 if len(self.model.models) <= 1 else 150, "prediction": 86,
                  "flag": 96, "model": 190, "review": 104, "reviewer": 70, "review_time": 150}
        metrics = header.fontMetrics()
        for col in range(self.model.columnCount()):
            kind = self.model.column_kind(col)[0]
            width = widths.get(kind, 100)
            if kind == "p" and len(self.model.models) > 1:
                # Per-model score columns carry the model's name and version: show it whole.
                title = str(self.model.headerData(col, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) or "")
                width = max(96, metrics.horizontalAdvance(title) + 28)
            header.resizeSection(col, width)

    def _update_counts(self, *args) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count_label.setText(f"showing {shown} of {total}")
        self.counts_changed.emit(shown, total)

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            self.current_changed.emit(None)
            return
        self.current_changed.emit(self.model.row_at(self.proxy.mapToSource(current).row()))

    def set_filter(self, key: str) -> None:
        self.filter_combo.setCurrentIndex([k for k, _ in FILTERS].index(key))

    def select_source_row(self, source_row: int) -> None:
        index = self.proxy.mapFromSource(self.model.index(source_row, 1))
        if index.isValid():
            self.table.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
            self.table.scrollTo(index)

    def current_source_row(self) -> int | None:
        index = self.table.currentIndex()
        return self.proxy.mapToSource(index).row() if index.isValid() else None

    def next_source_row(self, source_row: int) -> int | None:
        """The source row shown just below `source_row`, to move on after a review."""
        index = self.proxy.mapFromSource(self.model.index(source_row, 1))
        if not index.isValid():
            return None
        below = self.proxy.index(index.row() + 1, 1)
        return self.proxy.mapToSource(below).row() if below.isValid() else None
