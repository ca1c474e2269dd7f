"""The results table: one row per photo over core ResultRecords, reviewer labels kept beside them.

Why one row per file (not per file+model): a reviewer labels a photo, not a model output, so a
review belongs on one line. The table shows the models chosen in the picker only (set_models), in the
picker's fixed order: the deciding model's p(mpox) in one column, the other models' scores in one compact
column. Why a photo needs review comes from core.triage.reasons (the CSV and the PDF say the same words).
Predictions and reviews live in separate fields and never overwrite each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QPixmap

from core.triage.reasons import ModelRef, call_text

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ROW_ROLE = Qt.ItemDataRole.UserRole + 2
KIND_ROLE = Qt.ItemDataRole.UserRole + 3

REVIEW_TEXT = {"mpox": "mpox", "not_mpox": "not mpox", "unsure": "unsure"}
PRED_TEXT = {"mpox": "mpox", "not_mpox": "not mpox"}
FLAG_TEXT = {"uncertain": "uncertain", "out_of_scope": "out of scope", "disagree": "models disagree"}
# Predictions read as core.triage.reasons.call_text says ("out of scope" for a photo the scope check refused).

# Needs-review tiers by the first reason's kind (core.triage.reasons): the higher, the sooner a person should look.
# Errors sort below everything (nothing to look at but the file), so "highest risk first" keeps scored photos on top.
RISK_TIER = {"not_a_photo": 5.0, "out_of_scope": 4.0, "disagree": 3.0, "uncertain": 2.0, "shift": 1.5,
             "shift_alarm": 1.0, "not_scored": 0.5, "": 0.0}
ERROR_RISK = -1.0

_ROLES = frozenset({ROW_ROLE, KIND_ROLE, SORT_ROLE, Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.DecorationRole,
                    Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.BackgroundRole,
                    Qt.ItemDataRole.TextAlignmentRole})

MPOX_BG = QColor(253, 226, 222)
FLAG_BG = QColor(255, 241, 204)
ERROR_FG = QColor(176, 32, 32)
REVIEW_BG = QColor(225, 239, 252)


@dataclass
class FileRow:
    """Everything shown for one photo: each model's record plus the human review."""

    path: str
    records: dict[str, Any] = field(default_factory=dict)   # model key -> ResultRecord
    review_label: str = ""
    reviewer: str = ""
    review_time: str = ""
    # (text, tooltip, risk, reasons, call) of the chosen models; cached because sorting asks for it often.
    reason_cache: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def ok_records(self) -> list:
        return [r for r in self.records.values() if r.ok]

    def errors(self) -> list[str]:
        return [r.error for r in self.records.values() if not r.ok]

    def predictions(self) -> set[str]:
        return {r.prediction for r in self.ok_records() if r.prediction}

    def flags(self) -> list[str]:
        flags = [r.flag for r in self.ok_records() if r.flag]
        if len(self.predictions() & {"mpox", "not_mpox"}) > 1:
            flags.append("disagree")
        return flags


def error_text(row: FileRow) -> str:
    """The first error without the file's path in front (the path is in the file column and its tooltip)."""
    errors = row.errors()
    if not errors:
        return ""
    text = errors[0]
    for prefix in (row.path, row.name):
        if text.startswith(prefix):
            text = text[len(prefix):].lstrip(" :-—")
            break
    return text or "could not be read"


def short_error(text: str) -> str:
    """The gist of an error for a narrow cell ("file is truncated"); the tooltip keeps the whole message."""
    gist = text.split(": ")[-1].split(" (")[0].strip()
    return gist or text


def model_key(record) -> str:
    """Rows group a model's records by weights hash (names and versions can repeat across bundles)."""
    return record.model_key


class ResultsModel(QAbstractTableModel):
    """Columns: thumbnail, file, call, review, needs review, p(mpox), reviewer, other models' scores, flag,
    review time, model. One row per photo; only the chosen models' results are shown and counted."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[FileRow] = []
        self._index: dict[str, int] = {}
        self.models: list[tuple[str, str]] = []   # (model key, display name) of the chosen models, in order
        self.refs: list[ModelRef] = []            # the same models for core.triage.reasons (with their cards)
        self.decider = ""                         # core.triage.reasons.deciding_key of the chosen models
        self.chosen = False                       # set_models called: records of other models stay hidden
        self.thumbnails = None                    # an ImageLoader, set by the window
        self.cards: dict[str, Any] = {}           # model key -> card, for limits and bands
        self.shift: dict | None = None            # the folder's stored shift result (Workspace.shift)
        self.scope_limit: float | None = None     # None: core.photos.scope.SCOPE_LIMIT
        self.points: dict | None = None            # model key -> the point the folder is decided at (point_for)
        self.case_of: dict[str, str] | None = None  # photo -> case id (core.store.cases) while photos are grouped
        self._columns: list[tuple[str, str]] = []
        self._rebuild_columns()
        # Thumbnails arrive one by one from the decoder; their repaints are coalesced into one
        # dataChanged per short interval instead of one per photo.
        self._thumb_rows: set[int] = set()
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setSingleShot(True)
        self._thumb_timer.setInterval(60)
        self._thumb_timer.timeout.connect(self._flush_thumbnails)

    # --- columns -------------------------------------------------------------------------------
    def _rebuild_columns(self) -> None:
        # The call and the review come right after the file, so they stay on screen in a narrow window;
        # the other models' scores share one compact column.
        primary = self.primary_key()
        cols: list[tuple[str, str]] = [("thumb", ""), ("file", "")] + ([("case", "")] if self.case_of is not None
                                                                       else []) + [
            ("prediction", ""), ("review", ""), ("needs", ""), ("p", primary), ("reviewer", "")]
        if len(self.models) > 1:
            cols.append(("scores", ""))
        cols += [("flag", ""), ("review_time", ""), ("model", "")]
        self._columns = cols

    def primary_key(self) -> str:
        """The model whose p(mpox) has its own column: the deciding model, else the first chosen."""
        return self.decider or (self.models[0][0] if self.models else "")

    def others(self) -> list[tuple[str, str]]:
        primary = self.primary_key()
        return [(k, n) for k, n in self.models if k != primary]

    def column_of(self, kind: str, key: str | None = None) -> int:
        """Index of a column by kind ('thumb', 'file', 'p', 'prediction', ...)."""
        for i, (k, mk) in enumerate(self._columns):
            if k == kind and (key is None or mk == key):
                return i
        raise KeyError(kind)

    def column_kind(self, column: int) -> tuple[str, str]:
        return self._columns[column]

    def _model_name(self, key: str) -> str:
        return dict(self.models).get(key, key[:12])

    def set_models(self, cards: list) -> None:
        """Show the chosen models' results only, in this order (the picker's choice): their columns, calls and
        reasons. Records of other models stay in the rows, hidden, and come back when they are chosen again."""
        from core.triage.reasons import deciding_key, model_refs

        refs = model_refs(cards)
        models = [(r.key, r.name) for r in refs]
        decider = deciding_key(cards)
        self.cards.update({c.key: c for c in cards})
        if self.chosen and models == self.models and decider == self.decider:
            return
        self.beginResetModel()
        self.chosen = True
        self.refs, self.models, self.decider = refs, models, decider
        self._rebuild_columns()
        for r in self.rows:
            r.reason_cache = None
        self.endResetModel()

    def set_cases(self, case_of: dict[str, str] | None) -> None:
        """Photo -> case id (core.store.cases.assign) to show in a Case column after the file; None hides the column."""
        self.beginResetModel()
        self.case_of = dict(case_of) if case_of is not None else None
        self._rebuild_columns()
        self.endResetModel()

    def set_cards(self, cards: list) -> None:
        """Cards met (every bundle in the models folder): their limits and bands for the reasons."""
        self.cards.update({(getattr(c, "model_sha256", "") or f"{c.name} {c.version}"): c for c in cards})
        self.refs = [ModelRef(k, n, self.cards.get(k)) for k, n in self.models]
        self._invalidate_reasons()

    def set_shift(self, shift: dict | None, points: dict | None = None) -> None:
        """The folder's stored shift result: its reasons ("folder unlike the training photos") and tooltip; `points`
        the operating point each model decides the folder at (Workspace.point_for), for the band a row cites."""
        self.shift = dict(shift) if shift else None
        self.points = dict(points) if points else None
        self._invalidate_reasons()

    def _invalidate_reasons(self) -> None:
        for r in self.rows:
            r.reason_cache = None
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, self.columnCount() - 1))

    def _analysis(self, row: FileRow) -> tuple:
        if row.reason_cache is None:
            from core.triage.reasons import ERROR, photo_call, photo_reasons

            records = {k: row.records.get(k) for k, _n in self.models}
            reasons = photo_reasons(records, self.refs, decider=self.decider, shift=self.shift,
                                    scope_limit=self.scope_limit, points=self.points)
            call = photo_call(records, self.refs, self.decider)
            scored = [r for r in records.values() if r is not None and r.ok and r.p_mpox is not None]
            top_p = max((float(r.p_mpox) for r in scored), default=0.0)
            if reasons and reasons[0].kind == ERROR and not scored:
                risk = ERROR_RISK
            elif reasons:
                risk = RISK_TIER.get(reasons[0].kind, 0.0) + top_p
            else:
                risk = top_p
            text = reasons[0].brief if reasons else ""   # the cell; the tooltip and side panel say it in full
            tooltip = "\n".join(r.text for r in reasons)
            if self.shift and self.shift.get("detected"):
                tooltip += ("\n\n" if tooltip else "") + "Shift alarm for this folder: " + str(
                    self.shift.get("message") or "these photos differ from the training photos")
            row.reason_cache = (text, tooltip, risk, reasons, call)
        return row.reason_cache

    def reason(self, row: FileRow) -> tuple[str, str, float]:
        """(the first reason in brief, every reason in full one per line, risk) for the needs-review column."""
        return self._analysis(row)[:3]

    def reasons(self, row: FileRow) -> list:
        """core.triage.reasons.Reason list of the chosen models for this photo (the side panel lists them)."""
        return self._analysis(row)[3]

    def call(self, row: FileRow) -> str:
        """core.triage.reasons.photo_call over the chosen models ("" while not every needed model scored it)."""
        return self._analysis(row)[4]

    def shown_records(self, row: FileRow) -> list:
        """The row's records of the chosen models, in column order."""
        return [row.records[k] for k, _n in self.models if k in row.records]

    def ensure_model(self, key: str, display: str) -> None:
        """A model met in the records before any choice was made (restored sessions, tests): shown as well."""
        if self.chosen or key in dict(self.models):
            return
        self.beginResetModel()
        self.models.append((key, display))
        self.refs.append(ModelRef(key, display, self.cards.get(key)))
        self._rebuild_columns()
        self.endResetModel()

    # --- rows ----------------------------------------------------------------------------------
    def clear(self) -> None:
        self._thumb_rows.clear()
        self.beginResetModel()
        self.rows, self._index = [], {}
        if not self.chosen:
            self.models, self.refs = [], []
        self.shift = self.points = None
        self._rebuild_columns()
        self.endResetModel()

    def row_of(self, path: str) -> int | None:
        return self._index.get(str(path))

    def row_at(self, row: int) -> FileRow:
        return self.rows[row]

    def add_record(self, record) -> int:
        """Add or update the row for record.path with this model's record; returns the row."""
        self.add_records([record])
        return self._index[str(record.path)]

    def add_records(self, records: list) -> None:
        """Add or update rows for several records with one insert and one change notice (not one per photo)."""
        for record in records:
            key = model_key(record)
            if key not in dict(self.models):
                self.ensure_model(key, f"{record.model} {record.model_version}".strip())
        new: dict[str, FileRow] = {}
        changed: list[int] = []
        for record in records:
            key, path = model_key(record), str(record.path)
            row = self._index.get(path)
            if row is not None:
                self.rows[row].records[key] = record
                self.rows[row].reason_cache = None
                changed.append(row)
            elif path in new:
                new[path].records[key] = record
            else:
                new[path] = FileRow(path, {key: record})
        if changed:
            self.dataChanged.emit(self.index(min(changed), 0), self.index(max(changed), self.columnCount() - 1))
        if new:
            first = len(self.rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            for offset, (path, file_row) in enumerate(new.items()):
                self.rows.append(file_row)
                self._index[path] = first + offset
            self.endInsertRows()
            if self.thumbnails is not None:
                for path in new:
                    self.thumbnails.request(path)

    def set_review(self, row: int, label: str, reviewer: str, time: str) -> None:
        r = self.rows[row]
        r.review_label, r.reviewer, r.review_time = label, reviewer, time
        self.dataChanged.emit(self.index(row, self.column_of("review")), self.index(row, self.column_of("review_time")))

    def apply_reviews(self, reviews: dict[str, dict]) -> None:
        """Load stored reviews ({path: {label, reviewer, time}}) onto existing rows."""
        for path, rev in reviews.items():
            row = self._index.get(str(path))
            if row is not None:
                self.set_review(row, rev.get("label", ""), rev.get("reviewer", ""), rev.get("time", ""))

    def records(self) -> list:
        """The chosen models' records, row order then model order."""
        out = []
        for r in self.rows:
            for key, _ in self.models:
                if key in r.records:
                    out.append(r.records[key])
        return out

    def reviews(self) -> dict[str, dict]:
        return {r.path: {"label": r.review_label, "reviewer": r.reviewer, "time": r.review_time}
                for r in self.rows if r.review_label}

    def thumbnail_ready(self, path: str) -> None:
        row = self._index.get(path)
        if row is not None:
            self._thumb_rows.add(row)
            if not self._thumb_timer.isActive():
                self._thumb_timer.start()

    def _flush_thumbnails(self) -> None:
        rows, self._thumb_rows = self._thumb_rows, set()
        rows = {r for r in rows if r < len(self.rows)}
        if rows:
            self.dataChanged.emit(self.index(min(rows), 0), self.index(max(rows), 0),
                                  [Qt.ItemDataRole.DecorationRole])

    # --- Qt model API --------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._columns)

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        kind, key = self._columns[section]
        if role == Qt.ItemDataRole.DisplayRole:
            if kind == "p":   # two lines, so a named score column stays narrow
                return "p(mpox)" if len(self.models) <= 1 else f"p(mpox)\n{self._model_name(key)}"
            if kind == "scores":
                return " ·\n".join(n for _k, n in self.others())
            return {"thumb": "", "file": "File", "needs": "Needs review", "prediction": "Call", "flag": "Flags",
                    "model": "Model", "review": "Review", "reviewer": "Reviewer", "case": "Case",
                    "review_time": "Review time"}[kind]
        if role == Qt.ItemDataRole.ToolTipRole:
            decides = f"; {self._model_name(self.decider)} decides" if self.decider else ""
            return {"p": f"Calibrated probability of mpox from {self._model_name(key) or 'the model'} "
                         "(not a diagnosis)",
                    "scores": "The other chosen models' p(mpox), in the order of the header" + decides,
                    "prediction": "The photo's call at the model card's threshold" + decides,
                    "needs": "Why a person should look first, with the model, the figure and its limit. "
                             "Sorted highest risk first, errors last",
                    "review": "Your label: M = mpox, N = not mpox, U = unsure; Delete clears it"}.get(kind)
        return None

    def flags(self, index):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # The view asks for a dozen roles per visible cell on every repaint; answer the others at once.
        if role not in _ROLES or not index.isValid() or index.row() >= len(self.rows):
            return None
        row = self.rows[index.row()]
        kind, key = self._columns[index.column()]
        if role == ROW_ROLE:
            return row
        if role == KIND_ROLE:
            return kind
        if role == SORT_ROLE:
            return self._sort_value(row, kind, key)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(row, kind, key)
        if role == Qt.ItemDataRole.DecorationRole and kind == "thumb":
            if self.thumbnails is not None:
                pix = self.thumbnails.cached(row.path)
                if pix is not None and not pix.isNull():
                    return pix
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            if kind in ("file", "thumb"):
                errors = row.errors()
                return row.path + ("\n" + "\n".join(errors) if errors else "")
            if kind in ("needs", "prediction"):
                return self.reason(row)[1] or None
            if kind == "scores":
                return "\n".join(f"{n}: {self._p_text(row, k) or 'not scored'}" for k, n in self.models) or None
            if kind == "review_time":
                return row.review_time or None
            return None
        unreadable = self.call(row) == "error"
        if role == Qt.ItemDataRole.ForegroundRole and kind in ("file", "needs", "prediction", "flag") and unreadable:
            return QBrush(ERROR_FG)
        if role == Qt.ItemDataRole.BackgroundRole:
            if kind == "prediction" and self.call(row) == "mpox":
                return QBrush(MPOX_BG)
            if kind == "flag" and row.flags():
                return QBrush(FLAG_BG)
            if kind == "needs" and self.reason(row)[0] and not unreadable:
                return QBrush(FLAG_BG)
            if kind == "review" and row.review_label:
                return QBrush(REVIEW_BG)
        if role == Qt.ItemDataRole.TextAlignmentRole and kind in ("p", "scores"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _p_text(self, row: FileRow, key: str) -> str:
        rec = row.records.get(key)
        if rec is None:
            return ""
        return f"{rec.p_mpox:.3f}" if rec.ok and rec.p_mpox is not None else "—"

    def _display(self, row: FileRow, kind: str, key: str):
        if kind == "file":
            return row.name
        if kind == "case":
            return (self.case_of or {}).get(row.path, row.name)
        if kind == "needs":
            return self.reason(row)[0]
        if kind == "p":
            return self._p_text(row, key)
        if kind == "scores":
            return " · ".join(self._p_text(row, k) or "–" for k, _n in self.others())
        if kind == "prediction":
            call = self.call(row)
            if call == "error":
                return "error: " + short_error(error_text(row))
            return {"disagree": "disagree"}.get(call, call_text(call))
        if kind == "flag":
            flags = [r.flag for r in self.shown_records(row) if r.ok and r.flag]
            return ", ".join(FLAG_TEXT.get(f, f) for f in dict.fromkeys(flags))   # each flag once
        if kind == "model":
            return " + ".join(f"{r.model} {r.model_version}".strip() for r in self.shown_records(row))
        if kind == "review":
            return REVIEW_TEXT.get(row.review_label, row.review_label)
        if kind == "reviewer":
            return row.reviewer
        if kind == "review_time":
            # Minutes are enough on screen; the tooltip, CSV and session keep the full ISO time.
            return row.review_time.replace("T", " ")[:16] + (" UTC" if row.review_time.endswith("+00:00") else "")
        return None

    def _sort_value(self, row: FileRow, kind: str, key: str):
        if kind == "needs":
            return self.reason(row)[2]
        if kind in ("p", "scores"):
            keys = [key] if kind == "p" else [k for k, _n in self.others()]
            values = [float(r.p_mpox) for r in (row.records.get(k) for k in keys)
                      if r is not None and r.ok and r.p_mpox is not None]
            # Errors and photos not scored sort below every probability, so "highest first" keeps scores on top.
            return max(values, default=-1.0)
        value = self._display(row, kind, key)
        return (value or "").lower() if isinstance(value, str) else ""

    def pixmap_for(self, path: str) -> QPixmap | None:
        return self.thumbnails.cached(path) if self.thumbnails is not None else None
