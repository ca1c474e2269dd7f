"""The results panel: filter bar, sortable table and keyboard review (Up/Down, M, N, U, Delete).

Safe labelling: M / N / U reach the table only when it has focus (the filter box keeps its own
keys), and a review key is ignored when it comes within TYPING_BURST_S of a printable key that was
not itself an accepted review, so typing a word ("other_NM") into the table labels nothing. A
deliberate M, N or U (alone, or after another review) acts at once.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QItemSelectionModel, QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QInputDialog, QLabel, QLineEdit,
                               QMenu, QStackedWidget, QTableView, QVBoxLayout, QWidget)

from desktop_app.elide import ElideDelegate
from desktop_app.results.keys import review_key_press
from desktop_app.results.model import ROW_ROLE, ResultsModel
from desktop_app.results.proxy import FILTERS, ResultsProxy

FILE_MIN, FILE_MAX = 130, 380
NEEDS_MIN, NEEDS_PREF, NEEDS_MAX = 150, 200, 420
CALL_WORDS = ("out of scope", "not mpox", "disagree", "mpox")
# What an empty filtered view says (the table shows it over the empty rows).
EMPTY_FILTER_TEXT = {
    "mpox": "No photo is called mpox by any chosen model.",
    "not_mpox": "No photo is called not mpox by every chosen model.",
    "flagged": "No photo needs review: every photo was read, and none is out of scope, uncertain or disputed.",
    "errors": "No errors: every photo in this folder could be read.",
    "unreviewed": "Every photo is reviewed.",
}
# Columns whose first click sorts highest first (risk and probability read top-down).
DESCENDING_FIRST = {"needs", "p"}
# A focus frame that shows where the keyboard is (M/N/U act only here).
FOCUS_STYLE = "QTableView { border: 2px solid transparent; } QTableView:focus { border: 2px solid palette(highlight); }"


class ResultsTable(QTableView):
    """A table that turns M / N / U into review requests and Delete / Backspace into clear requests."""

    review_requested = Signal(int, str)   # source row, label
    clear_requested = Signal(int)         # source row
    ignored_typing = Signal(str)          # a review key swallowed as part of a typing burst

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.clock = time.monotonic       # replaceable in tests
        self._last_printable = -1e9
        self._last_was_review = True
        self.setTabKeyNavigation(False)   # Tab leaves the table for the next widget

    def _source_row(self) -> int | None:
        index = self.currentIndex()
        return self.model().mapToSource(index).row() if index.isValid() else None

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if not review_key_press(self, event, self._source_row(), self.review_requested, self.clear_requested,
                                self.ignored_typing):
            super().keyPressEvent(event)

    def keyboardSearch(self, search: str) -> None:
        """Typed letters do not move the selection; Ctrl+F filters by name instead."""

    def moveCursor(self, action, modifiers):
        # Home / End move between rows (first / last photo), never sideways to the first / last column.
        if action in (QAbstractItemView.CursorAction.MoveHome, QAbstractItemView.CursorAction.MoveEnd):
            model = self.model()
            if model is None or model.rowCount() == 0:
                return QModelIndex()
            column = max(0, self.currentIndex().column())
            row = 0 if action == QAbstractItemView.CursorAction.MoveHome else model.rowCount() - 1
            return model.index(row, column)
        return super().moveCursor(action, modifiers)


class ResultsPanel(QWidget):
    """Owns the source model and the proxy; the table never keeps its own copy of the data."""

    current_changed = Signal(object)   # FileRow or None
    counts_changed = Signal(int, int)  # shown, total
    photo_requested = Signal(str)      # path: double-click or context menu "Open photo large"

    def __init__(self, model: ResultsModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.proxy = ResultsProxy(self)
        self.proxy.setSourceModel(model)
        self.photo_dialog = None
        # path -> (heat map pixmap or None, model name): set by the window from the detail pane's Grad-CAM.
        self.heat_for = None

        self.filter_combo = QComboBox()
        for key, label in FILTERS:
            self.filter_combo.addItem(label, key)
        self.filter_combo.setToolTip("Filters are explicit: 'All' shows every photo")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by file name… (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.count_label = QLabel()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.filter_combo)
        bar.addWidget(self.search, 1)
        # Cases (core.store.cases): a folder's first-level subfolders or a pattern on the file name (docs/desktop.md).
        self.group_combo = QComboBox()
        for label, key in (("No cases", ""), ("Cases: subfolders", "subfolder"),
                           ("Cases: file-name pattern…", "regex")):
            self.group_combo.addItem(label, key)
        self.group_combo.setToolTip("Group photos into cases (patient or visit): each case shows its call, highest "
                                    "p(mpox) and counts, with its photos under it")
        # The window puts it in its toolbar (which folds into a menu when narrow): in this bar it would widen the
        # window's minimum.
        bar.addWidget(self.count_label)
        # "showing X of Y" sits above the table, beside the filter it counts (docs/desktop.md).

        self.table = ResultsTable()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setIconSize(QSize(44, 44))
        self.table.verticalHeader().setDefaultSectionSize(48)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        # Two columns elide their own way (the tooltip has the whole text): a file name keeps its distinguishing end
        # ("iconla…sit_2026_129.jpg"), a reason its beginning ("shifted folder: p 0.81 in…"). The other columns keep
        # Qt's own middle elision: a Python delegate costs the GUI thread ~0.2 ms per painted cell, so only these
        # two have one.
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.file_delegate = ElideDelegate("file", self.table)
        self.reason_delegate = ElideDelegate("right", self.table)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setStyleSheet(FOCUS_STYLE)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(36)
        self._sorted_section = -1
        self._fitting = False
        self._user_widths: dict[str, int] = {}   # column kind -> width the user dragged it to
        self.sort_by_risk()

        self._hint_text = ""
        self.hint = QLabel(self.table.viewport())
        self.hint.setWordWrap(True)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setStyleSheet("color: #555; font-size: 14px;")
        self.hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hint.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        from desktop_app.results.cases import CaseTree, CaseTreeModel

        self.case_model = CaseTreeModel(self.proxy, self)
        self.case_tree = CaseTree(self.case_model, self.table)
        self.case_tree.setStyleSheet(FOCUS_STYLE.replace("QTableView", "QTreeView"))
        self.stack = QStackedWidget()
        self.stack.addWidget(self.table)
        self.stack.addWidget(self.case_tree)
        layout.addWidget(self.stack, 1)
        self.case_pattern = ""
        self.group_combo.activated.connect(self._on_group_chosen)
        self.case_tree.doubleClicked.connect(self._on_double_click)
        self.case_tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.case_tree.customContextMenuRequested.connect(self._tree_context_menu)

        self.find_shortcut = QShortcut(QKeySequence(QKeySequence.StandardKey.Find), self)
        self.find_shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
        self.find_shortcut.activated.connect(self.focus_filter)
        self.filter_combo.currentIndexChanged.connect(
            lambda _i: self.proxy.set_category(self.filter_combo.currentData()))
        self.search.textChanged.connect(self.proxy.set_text)
        for signal in (self.proxy.rowsInserted, self.proxy.rowsRemoved, self.proxy.modelReset,
                       self.proxy.layoutChanged):
            signal.connect(self._update_counts)
        self.filter_combo.currentIndexChanged.connect(lambda _i: self._update_counts())
        self.search.textChanged.connect(lambda _t: self._update_counts())
        self.model.modelReset.connect(self._fit_columns)
        header.sectionClicked.connect(self._on_header_clicked)
        header.sectionResized.connect(self._on_resized)
        self.table.doubleClicked.connect(self._on_double_click)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self._fit_columns()
        self.table.viewport().installEventFilter(self)
        self._update_counts()
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        self.case_tree.selectionModel().currentRowChanged.connect(self._on_tree_current)

    # --- cases ---------------------------------------------------------------------------------
    @property
    def grouped(self) -> bool:
        return self.case_model.grouping is not None

    def _on_group_chosen(self, _i: int) -> None:
        key = self.group_combo.currentData()
        if key == "regex":
            pattern, ok = QInputDialog.getText(self, "Cases from file names",
                                               "A pattern on the file name; its first group is the case "
                                               "(e.g. ^(P\\d+)_ groups P12_left.jpg and P12_right.jpg):",
                                               text=self.case_pattern or r"^([^_]+)_")
            if not ok or not pattern.strip():
                self.group_combo.setCurrentIndex(self._group_index())
                return
            key = f"regex:{pattern}"
        self.set_grouping(key or None)

    def _group_index(self) -> int:
        grouping = self.case_model.grouping
        return 0 if grouping is None else 1 if grouping.kind == "subfolder" else 2

    def set_grouping(self, text: str | None, root: str | None = None) -> bool:
        """Group by `text` ('subfolder' or 'regex:PATTERN', core.store.cases.Grouping; None: no cases): a Case column in
        the table and the case tree in its place. A bad pattern is said in the hint line and changes nothing."""
        from core.store.cases import CaseError, Grouping

        try:
            grouping = Grouping.parse(text) if text else None
        except CaseError as exc:
            self.count_label.setText(str(exc))
            return False
        if grouping is not None and grouping.kind == "column":
            self.count_label.setText("cases from a manifest column: use the command line (classify --cases)")
            return False
        keep = self.current_source_row()
        if grouping is not None and grouping.kind == "regex":
            self.case_pattern = grouping.value
        case_of = self.case_model.set_grouping(grouping, root)
        self.model.set_cases(case_of)
        self.sort_by_risk()
        self._fit_columns()
        self.case_model.rebuild()
        self.stack.setCurrentWidget(self.case_tree if grouping is not None else self.table)
        self.group_combo.setCurrentIndex(self._group_index())
        if grouping is not None:
            header = self.case_tree.header()
            for col in range(self.model.columnCount()):
                header.resizeSection(col, self.table.horizontalHeader().sectionSize(col))
            header.resizeSection(0, 2 * self.case_tree.indentation() + self.case_tree.iconSize().width() + 6)
        if keep is not None:
            self.select_source_row(keep)
        return True

    def set_case_root(self, folder: str | None) -> None:
        """The folder whose first-level subfolders are cases (the open folder)."""
        self.case_model.root = str(folder or "")
        if self.grouped:
            self.set_grouping(self.case_model.grouping.text)

    def case_grouping(self):
        """The grouping shown (core.store.cases.Grouping), None without cases."""
        return self.case_model.grouping

    def _tree_context_menu(self, pos) -> None:
        index = self.case_tree.indexAt(pos)
        menu = self.context_menu_for(self.case_model.proxy_index(index))   # a photo's menu; none on a case row
        if menu is not None:
            self.case_tree.setCurrentIndex(index)
            menu.popup(self.case_tree.viewport().mapToGlobal(pos))

    def _on_tree_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = self.case_model.source_row(current) if current.isValid() else None
        self.current_changed.emit(self.model.row_at(row) if row is not None else None)

    # --- sorting and layout --------------------------------------------------------------------
    def sort_by_risk(self) -> None:
        """The default order: highest risk first (errors last), see results.model.review_reason."""
        column = self.model.column_of("needs")
        self._sorted_section = column
        self.table.sortByColumn(column, Qt.SortOrder.DescendingOrder)

    def _on_header_clicked(self, section: int) -> None:
        # The first click on a score or risk column shows the highest first (Qt's default is lowest first).
        kind = self.model.column_kind(section)[0] if 0 <= section < self.model.columnCount() else ""
        if section != self._sorted_section and kind in DESCENDING_FIRST:
            self.table.sortByColumn(section, Qt.SortOrder.DescendingOrder)
        self._sorted_section = section

    def _fit_columns(self) -> None:
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        # Narrow enough that file, call, review, needs review, score and reviewer fit beside the detail pane in
        # a 1024 px window; the file column takes what is left (names elide in the middle, keeping the end and
        # the extension; the tooltip has the full path). A width the user chose is kept (see _on_resized).
        widths = {"thumb": 48, "file": 140, "case": 80, "prediction": 70, "review": 64, "needs": 150, "p": 58,
                  "reviewer": 72, "scores": 96, "flag": 90, "model": 190, "review_time": 130}
        # The call column fits its longest word whole ("out of scope"), in the table's own font.
        cells = self.table.fontMetrics()
        widths["prediction"] = max(widths["prediction"], max(cells.horizontalAdvance(t) for t in CALL_WORDS) + 22)
        for kind, delegate in (("file", self.file_delegate), ("needs", self.reason_delegate)):
            self.table.setItemDelegateForColumn(self.model.column_of(kind), delegate)
        metrics = header.fontMetrics()
        self._fitting = True
        try:
            for col in range(self.model.columnCount()):
                kind, key = self.model.column_kind(col)
                width = widths.get(kind, 100)
                if kind in ("p", "scores") and len(self.model.models) > 1:
                    title = str(self.model.headerData(col, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole))
                    longest = max(metrics.horizontalAdvance(line) for line in title.splitlines() or [""])
                    width = max(width, min(150, longest + 20))
                header.resizeSection(col, self._user_widths.get(kind, width))
        finally:
            self._fitting = False
        self._fit_file_column()

    def _on_resized(self, section: int, _old: int, new: int) -> None:
        """A column the user resized keeps its width through filters, sorting, runs and model changes."""
        if self._fitting or not 0 <= section < self.model.columnCount():
            return
        self._user_widths[self.model.column_kind(section)[0]] = new

    def _fit_file_column(self) -> None:
        """The file column, then the needs-review column, take the room the columns up to Reviewer leave (file
        at least FILE_MIN px), so those stay on screen in a 1024 px window and reasons read whole in a wide
        one; the columns after them scroll. A column the user sized is left as it is."""
        header = self.table.horizontalHeader()
        file_col, needs_col, last = (self.model.column_of("file"), self.model.column_of("needs"),
                                     self.model.column_of("reviewer"))
        room = self.table.viewport().width() - 2 - sum(header.sectionSize(c) for c in range(last + 1)
                                                        if c not in (file_col, needs_col))
        self._fitting = True
        try:
            if "file" not in self._user_widths:
                # Reasons first get room enough to read ("disagree: Xception not mpox"), then the file name.
                needs = self._user_widths.get("needs", max(NEEDS_MIN, min(NEEDS_PREF, room - FILE_MIN)))
                header.resizeSection(file_col, max(FILE_MIN, min(FILE_MAX, room - needs)))
            if "needs" not in self._user_widths:
                header.resizeSection(needs_col, max(NEEDS_MIN, min(NEEDS_MAX, room - header.sectionSize(file_col))))
        finally:
            self._fitting = False

    def eventFilter(self, obj, event) -> bool:
        if obj is self.table.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_file_column()
            self._place_hint()
        return super().eventFilter(obj, event)

    # --- keyboard ------------------------------------------------------------------------------
    def focus_filter(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    # --- photo large and context menu ----------------------------------------------------------
    def _on_double_click(self, index: QModelIndex) -> None:
        row = index.data(ROW_ROLE)
        if row is not None:
            self.open_photo(row.path)

    def open_photo(self, path: str):
        """A simple dialog with the full-size photo scaled to the screen."""
        from desktop_app.results.photo_dialog import PhotoDialog

        if self.photo_dialog is not None:
            self.photo_dialog.close()
        heat, model = self.heat_for(path) if self.heat_for is not None else (None, "")
        self.photo_dialog = PhotoDialog(path, self, heat=heat, heat_model=model)
        self.photo_dialog.show()
        self.photo_requested.emit(path)
        return self.photo_dialog

    def context_menu_for(self, index: QModelIndex) -> QMenu | None:
        if not index.isValid():
            return None
        source = self.proxy.mapToSource(index).row()
        row = self.model.row_at(source)
        menu = QMenu(self)
        for key, label, text in (("M", "mpox", "Label mpox"), ("N", "not_mpox", "Label not mpox"),
                                 ("U", "unsure", "Label unsure")):
            act = menu.addAction(f"{text}\t{key}")
            act.triggered.connect(lambda _c=False, lab=label: self.table.review_requested.emit(source, lab))
        clear = menu.addAction("Clear label\tDelete")
        clear.setEnabled(bool(row.review_label))
        clear.triggered.connect(lambda _c=False: self.table.clear_requested.emit(source))
        menu.addSeparator()
        menu.addAction("Open photo large\tdouble-click").triggered.connect(lambda _c=False: self.open_photo(row.path))
        return menu

    def _context_menu(self, pos) -> None:
        index = self.table.indexAt(pos)
        menu = self.context_menu_for(index)
        if menu is not None:
            self.table.setCurrentIndex(index)
            menu.popup(self.table.viewport().mapToGlobal(pos))

    # --- rows ----------------------------------------------------------------------------------
    def _update_counts(self, *args) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count_label.setText(f"showing {shown} of {total}")
        if hasattr(self, "hint"):
            self._place_hint()
        self.counts_changed.emit(shown, total)

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            self.current_changed.emit(None)
            return
        self.current_changed.emit(self.model.row_at(self.proxy.mapToSource(current).row()))

    def set_hint(self, text: str) -> None:
        """The text an empty table shows: what to do first."""
        self._hint_text = text
        self._place_hint()

    def _place_hint(self) -> None:
        """Over an empty table: what to do first (no rows at all), or why the filter shows nothing."""
        self.hint.setGeometry(self.table.viewport().rect().adjusted(24, 24, -24, -24))
        if self.model.rowCount() == 0:
            self.hint.setText(self._hint_text)
            self.hint.setVisible(bool(self._hint_text))
            return
        if self.proxy.rowCount() == 0:
            self.hint.setText(self.filter_hint())
            self.hint.setVisible(True)
            return
        self.hint.setVisible(False)

    def filter_hint(self) -> str:
        """Why the filtered view is empty, and how to see the photos again."""
        total = self.model.rowCount()
        text = self.search.text().strip()
        if text:
            why = f"No photo name contains \u201c{text}\u201d"
            if self.proxy.category != "all":
                why += f" among the photos shown by \u201c{self.filter_combo.currentText()}\u201d"
            return f"{why}. Clear the name filter to see all {total:,} photos."
        why = EMPTY_FILTER_TEXT.get(self.proxy.category, "No photo matches this filter.")
        return f"{why} Show: All lists all {total:,} photos."

    def set_filter(self, key: str) -> None:
        self.filter_combo.setCurrentIndex([k for k, _ in FILTERS].index(key))

    def select_source_row(self, source_row: int) -> None:
        if self.grouped:
            index = self.case_model.index_of_source_row(source_row)
            if index.isValid():
                self.case_tree.selectionModel().setCurrentIndex(
                    index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
                self.case_tree.scrollTo(index)
            return
        index = self.proxy.mapFromSource(self.model.index(source_row, 1))
        if index.isValid():
            self.table.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
            self.table.scrollTo(index)

    def current_source_row(self) -> int | None:
        if self.grouped:
            return self.case_model.source_row(self.case_tree.currentIndex())
        index = self.table.currentIndex()
        return self.proxy.mapToSource(index).row() if index.isValid() else None

    def next_source_row(self, source_row: int) -> int | None:
        """The source row shown just below `source_row`, to move on after a review (by case, the next photo in
        case order, over case rows)."""
        if self.grouped:
            photos = [self.case_model.source_row(i) for i in self.case_model.photo_rows()]
            at = photos.index(source_row) if source_row in photos else -1
            return photos[at + 1] if 0 <= at < len(photos) - 1 else None
        index = self.proxy.mapFromSource(self.model.index(source_row, 1))
        if not index.isValid():
            return None
        below = self.proxy.index(index.row() + 1, 1)
        return self.proxy.mapToSource(below).row() if below.isValid() else None
