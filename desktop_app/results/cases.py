"""Group by case: a tree over the results with one row per case (call, highest p(mpox), counts, why to look) and
its photos under it. What a case says is core.store.cases' (the CLI's case CSV, the PDF and the FHIR export say the
same); this module only presents it.

The tree reads the results proxy, so the filter and the sort the user chose apply to the photos under each case;
a case's own figures are always over all of its photos (a filter never changes a case's call). Cases come in
review order (core.store.cases.review_order). Review stays photo by photo: M / N / U on a photo row label that photo
(the table's own review signals, so undo and the reviewer name work as in the flat table), on a case row they do
nothing, and Up / Down move from photo to photo (case rows are headings).
"""

from __future__ import annotations

import os
import time
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QFont, QKeyEvent
from PySide6.QtWidgets import QAbstractItemView, QTreeView, QWidget

from core.store.cases import CaseResult, Grouping, assign, photo_facts, review_order, summarize
from core.triage.reasons import call_text
from desktop_app.results.keys import review_key_press
from desktop_app.results.model import FLAG_BG, MPOX_BG, ROW_ROLE, SORT_ROLE, ResultsModel

CASE_ROLE = Qt.ItemDataRole.UserRole + 10    # the CaseResult of a case row (None on a photo row)
_TOP = 0                                      # internalId of a case row; a photo row's is its case's index + 1
ROW_HEIGHT, ICON, INDENT = 36, 32, 14         # rows a little lower than the table's: cases keep photos together


class CaseTreeModel(QAbstractItemModel):
    """Case rows over a results proxy (ResultsProxy over a ResultsModel), each with its shown photos as children;
    the columns are the results model's."""

    rebuilt = Signal()

    def __init__(self, proxy, parent=None):
        super().__init__(parent)
        self.proxy = proxy
        self.results: ResultsModel = proxy.sourceModel()
        self.grouping: Grouping | None = None
        self.root = ""
        self.cases: list[CaseResult] = []
        self.children: list[list[int]] = []     # per case: the proxy rows of its shown photos, in the proxy's order
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(80)              # a run inserts photos in chunks: one rebuild per burst
        self._timer.timeout.connect(self.rebuild)
        for signal in (proxy.rowsInserted, proxy.rowsRemoved, proxy.modelReset, proxy.layoutChanged):
            signal.connect(self._schedule)
        proxy.dataChanged.connect(self._on_data_changed)
        self.results.modelReset.connect(self._on_results_reset)   # its columns may have changed

    # --- grouping --------------------------------------------------------------------------------
    def set_grouping(self, grouping: Grouping | None, root: str | os.PathLike | None = None) -> dict[str, str] | None:
        """Group by `grouping` (None: no grouping) with photo names relative to `root`; returns photo -> case id."""
        self.grouping = grouping
        if root is not None:
            self.root = str(root)
        self.rebuild()
        return self.case_of() if grouping is not None else None

    def case_of(self) -> dict[str, str]:
        paths = [r.path for r in self.results.rows]
        root = self.root or (os.path.commonpath(paths) if paths else "")
        return assign(paths, self.grouping, root)

    def _schedule(self, *args) -> None:
        if self.grouping is not None and not self._timer.isActive():
            self._timer.start()

    def _on_results_reset(self) -> None:
        self.rebuild(reset=True)

    def _on_data_changed(self, _top, _bottom, roles=()) -> None:
        if self.grouping is None:
            return
        if list(roles) == [Qt.ItemDataRole.DecorationRole]:   # a thumbnail arrived: repaint, nothing to recount
            self._changed_all()
        else:
            self._schedule()

    def _changed_all(self) -> None:
        if self.cases:
            last = self.columnCount() - 1
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.cases) - 1, last))
            for c in range(len(self.cases)):
                parent = self.index(c, 0)
                if self.children[c]:
                    self.dataChanged.emit(self.index(0, 0, parent), self.index(len(self.children[c]) - 1, last, parent))

    def rebuild(self, reset: bool = False) -> None:
        """Recompute the cases (over all photos) and which photos each shows (the proxy's rows, in its order). When
        only figures changed (a review, a re-decided score) the rows stay where they are and the view keeps its
        place; otherwise the tree is reset (the view restores its current photo)."""
        self._timer.stop()
        cases, children = self._compute()
        same = [c.case_id for c in cases] == [c.case_id for c in self.cases] and children == self.children
        if same and not reset:
            self.cases = cases
            self._changed_all()
        else:
            self.beginResetModel()
            self.cases, self.children = cases, children
            self.endResetModel()
        self.rebuilt.emit()

    def _compute(self) -> tuple[list[CaseResult], list[list[int]]]:
        cases: list[CaseResult] = []
        children: list[list[int]] = []
        if self.grouping is not None:
            res = self.results
            case_of = self.case_of()
            if res.case_of != case_of:
                res.case_of = case_of   # the Case column follows new photos (set_cases resets the table)
            facts = [photo_facts(r.path, case_of.get(r.path, r.path), {k: r.records.get(k) for k, _n in res.models},
                                 res.refs, res.decider, res.reasons(r), bool(r.review_label))
                     for r in res.rows if any(k in r.records for k, _n in res.models)]
            shown: dict[str, list[int]] = {}
            for prow in range(self.proxy.rowCount()):
                row = self.proxy.index(prow, 0).data(ROW_ROLE)
                if row is not None:
                    shown.setdefault(case_of.get(row.path, row.path), []).append(prow)
            for case in review_order(summarize(facts)):
                if shown.get(case.case_id):
                    cases.append(case)
                    children.append(shown[case.case_id])
        return cases, children

    # --- mapping ---------------------------------------------------------------------------------
    def proxy_index(self, index: QModelIndex | QPersistentModelIndex) -> QModelIndex:
        """The results proxy's index of a photo row (invalid for a case row)."""
        if not index.isValid() or index.internalId() == _TOP:
            return QModelIndex()
        case = index.internalId() - 1
        return self.proxy.index(self.children[case][index.row()], index.column())

    def source_row(self, index: QModelIndex | QPersistentModelIndex) -> int | None:
        """The results model's row of a photo row, None for a case row."""
        pidx = self.proxy_index(index)
        return self.proxy.mapToSource(pidx).row() if pidx.isValid() else None

    def index_of_source_row(self, source_row: int, column: int = 1) -> QModelIndex:
        pidx = self.proxy.mapFromSource(self.results.index(source_row, column))
        if not pidx.isValid():
            return QModelIndex()
        for c, rows in enumerate(self.children):
            if pidx.row() in rows:
                return self.index(rows.index(pidx.row()), column, self.index(c, 0))
        return QModelIndex()

    def photo_rows(self) -> list[QModelIndex]:
        """Every photo row in display order (case by case)."""
        return [self.index(i, 1, self.index(c, 0)) for c, rows in enumerate(self.children) for i in range(len(rows))]

    # --- Qt model API ----------------------------------------------------------------------------
    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:
        if column < 0 or column >= self.columnCount():
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, _TOP) if 0 <= row < len(self.cases) else QModelIndex()
        if parent.internalId() != _TOP:
            return QModelIndex()
        case = parent.row()
        if 0 <= case < len(self.children) and 0 <= row < len(self.children[case]):
            return self.createIndex(row, column, case + 1)
        return QModelIndex()

    def parent(self, index=QModelIndex()):   # noqa: D401 - Qt's signature
        if not index.isValid() or index.internalId() == _TOP:
            return QModelIndex()
        return self.createIndex(index.internalId() - 1, 0, _TOP)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        if not parent.isValid():
            return len(self.cases)
        if parent.internalId() == _TOP and parent.column() == 0 and parent.row() < len(self.children):
            return len(self.children[parent.row()])
        return 0

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return self.results.columnCount()

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if not 0 <= section < self.results.columnCount():
            return None
        return self.results.headerData(section, orientation, role)

    def flags(self, index):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.column() >= self.results.columnCount():
            return None
        if role == Qt.ItemDataRole.SizeHintRole:   # one row height, thumbnails included (uniform rows stay fast)
            return QSize(0, ROW_HEIGHT)
        if index.internalId() != _TOP:
            return None if role == CASE_ROLE else self.proxy_index(index).data(role)
        case = self.cases[index.row()]
        kind = self.results.column_kind(index.column())[0]
        if role == CASE_ROLE:
            return case
        if role == Qt.ItemDataRole.DisplayRole:
            return self._case_text(case, kind)
        if role == Qt.ItemDataRole.ToolTipRole:
            n = case.counts()
            return (f"Case {case.case_id}: {n['photos']} photo(s), {n['mpox']} called mpox, {n['out_of_scope']} out "
                    f"of scope, {n['errors']} unreadable, {n['flagged']} flagged, {n['reviewed']} reviewed"
                    + (f"\nNeeds review: {case.review_reason}" if case.needs_review else ""))
        if role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.BackgroundRole:
            if kind == "prediction" and case.call == "mpox":
                return QBrush(MPOX_BG)
            if kind == "needs" and case.needs_review:
                return QBrush(FLAG_BG)
        if role == Qt.ItemDataRole.TextAlignmentRole and kind in ("p", "scores"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == SORT_ROLE:
            return case.score if case.score is not None else -1.0
        return None

    @staticmethod
    def _case_text(case: CaseResult, kind: str) -> str:
        n = case.counts()
        if kind == "file":
            return f"{case.case_id} ({n['photos']} photo{'s' if n['photos'] != 1 else ''})"
        if kind == "case":
            return case.case_id
        if kind == "prediction":
            return call_text(case.call) if case.call else "no call"
        if kind == "p":
            return f"{case.score:.3f}" if case.score is not None else ""
        if kind == "needs":
            return case.review_reason
        if kind == "review":   # photos reviewed of the case's photos (the tooltip says it in words)
            return f"{n['reviewed']}/{n['photos']}"
        if kind == "flag":
            return f"{n['flagged']} flagged" if n["flagged"] else ""
        return ""


class CaseTree(QTreeView):
    """The case tree: M / N / U and Delete act on the current photo through the table's review signals."""

    def __init__(self, model: CaseTreeModel, table, parent: QWidget | None = None):
        super().__init__(parent)
        self.table = table                 # the ResultsTable whose review signals the window listens to
        self.clock = time.monotonic
        self._last_printable = -1e9
        self._last_was_review = True
        self.setModel(model)
        self.setUniformRowHeights(True)
        self.setIndentation(INDENT)
        self.setIconSize(QSize(ICON, ICON))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self._keep: int | None = None
        model.modelAboutToBeReset.connect(self._remember_current)
        model.modelReset.connect(self._restore_current)
        model.rebuilt.connect(self.expandAll)

    def _remember_current(self) -> None:
        self._keep = self.model().source_row(self.currentIndex())

    def _restore_current(self) -> None:
        self.expandAll()
        if self._keep is not None:
            index = self.model().index_of_source_row(self._keep)
            if index.isValid():
                self.setCurrentIndex(index)
        self._keep = None

    def keyPressEvent(self, event: QKeyEvent) -> None:
        row = self.model().source_row(self.currentIndex())
        if not review_key_press(self, event, row, self.table.review_requested, self.table.clear_requested,
                                self.table.ignored_typing):
            super().keyPressEvent(event)

    def keyboardSearch(self, search: str) -> None:
        """Typed letters do not move the selection (as in the table)."""

    def moveCursor(self, action, modifiers):
        """Up / Down, Page Up / Down, Home / End move from photo to photo: case rows are headings, skipped (down to
        the case's first photo, up to the last photo of the case above)."""
        index = super().moveCursor(action, modifiers)
        model = self.model()
        if not index.isValid() or model.source_row(index) is not None:
            return index
        current = self.currentIndex()
        stay = current if model.source_row(current) is not None else index
        Move = QAbstractItemView.CursorAction
        if action == Move.MoveHome:
            photos = model.photo_rows()
            return photos[0] if photos else index
        if action in (Move.MoveUp, Move.MovePageUp, Move.MovePrevious):
            if index.row() == 0:
                return stay
            above = model.index(index.row() - 1, 0)
            n = model.rowCount(above)
            return model.index(n - 1, 1, above) if n else stay
        case = model.index(index.row(), 0)
        return model.index(0, 1, case) if model.rowCount(case) else stay
