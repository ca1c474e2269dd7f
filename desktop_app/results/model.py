"""The results table: one row per photo over core ResultRecords, reviewer labels kept beside them.

Why one row per file (not per file+model): a reviewer labels a photo, not a model output, so a
review belongs on one line; with both models each gets its own sortable p(mpox) column and the
prediction column says "disagree" when they differ, which is itself a reason to look.
Predictions and reviews live in separate fields and never overwrite each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QPixmap

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ROW_ROLE = Qt.ItemDataRole.UserRole + 2
KIND_ROLE = Qt.ItemDataRole.UserRole + 3

REVIEW_TEXT = {"mpox": "mpox", "not_mpox": "not mpox", "unsure": "unsure"}
PRED_TEXT = {"mpox": "mpox", "not_mpox": "not mpox"}
FLAG_TEXT = {"uncertain": "uncertain", "out_of_scope": "out of scope", "disagree": "models disagree"}

# Needs-review tiers: the higher, the sooner a person should look. Errors sort below everything
# (nothing to look at but the file), so "highest risk first" keeps scored photos on top.
RISK_TIER = {"out_of_scope": 4.0, "disagree": 3.0, "uncertain": 2.0, "shift": 1.0, "": 0.0}
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
    # (text, tooltip, risk) of the needs-review column; cached because sorting asks for it often.
    reason_cache: tuple | None = field(default=None, repr=False, compare=False)
    # The model key whose call is the photo's prediction ("Both" with a combined model); "" = all models alike.
    decider: str = ""

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
        if len(self.predictions()) > 1:
            flags.append("disagree")
        return flags

    def combined_prediction(self) -> str:
        """The photo's call: the deciding model's when there is one (its components' disagreement stays a
        flag, a reason to look), else the models' common call or "disagree"."""
        deciding = self.records.get(self.decider) if self.decider else None
        if deciding is not None and deciding.ok and deciding.prediction:
            return deciding.prediction
        preds = self.predictions()
        if not preds:
            return ""
        return "disagree" if len(preds) > 1 else next(iter(preds))


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


def review_reason(row: FileRow, ood_limits: dict[str, float] | None = None,
                  shift_alarm: str = "") -> tuple[str, str, float]:
    """(one reason, every reason, risk) for the needs-review column; risk sorts highest first, errors last."""
    ok = row.ok_records()
    if row.errors() and not ok:
        full = error_text(row)
        return "error: " + short_error(full), "Could not be read: " + full, ERROR_RISK
    reasons: list[tuple[float, str]] = []
    limits = ood_limits or {}
    for key, rec in row.records.items():
        if rec.ok and rec.flag == "out_of_scope":
            limit = limits.get(key)
            score = f"{rec.ood_score:.2f}" if rec.ood_score is not None else "?"
            reasons.append((RISK_TIER["out_of_scope"], f"out of scope {score} > {limit:.2f}"
                            if limit is not None else f"out of scope (score {score})"))
    if len(row.predictions()) > 1:
        reasons.append((RISK_TIER["disagree"], "models disagree"))
    for rec in ok:
        if rec.flag == "uncertain":
            reasons.append((RISK_TIER["uncertain"], f"uncertain (p {rec.p_mpox:.2f})"))
            break
    if shift_alarm:
        reasons.append((RISK_TIER["shift"], "shift alarm"))
    if row.errors():
        reasons.append((0.0, "error in one model: " + error_text(row)))
    top_p = max((r.p_mpox for r in ok if r.p_mpox is not None), default=0.0)
    if not reasons:
        return "", "", top_p
    reasons.sort(key=lambda r: -r[0])
    tooltip = "\n".join(text for _t, text in reasons)
    tooltip = tooltip.replace(" > ", " above the limit ")
    if shift_alarm:
        tooltip += f"\n\nShift alarm: {shift_alarm}"
    return reasons[0][1], tooltip, reasons[0][0] + top_p


def model_key(record) -> str:
    """Rows group a model's records by weights hash (names and versions can repeat across bundles)."""
    return record.model_key


class ResultsModel(QAbstractTableModel):
    """Columns: thumbnail, file, p(mpox) per model, prediction, flag, model + version, review fields."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[FileRow] = []
        self._index: dict[str, int] = {}
        self.models: list[tuple[str, str]] = []   # (model key, display name) in column order
        self.thumbnails = None                    # an ImageLoader, set by the window
        self.ood_limits: dict[str, float] = {}    # model key -> out-of-scope limit (card.ood_threshold)
        self.shift_alarm = ""                     # window-level alarm text; "" = none
        self._columns: list[tuple[str, str]] = []
        self.decider = ""
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
        # The needs-review reason sits right after the file name, so it is visible in a narrow window.
        cols: list[tuple[str, str]] = [("thumb", ""), ("file", ""), ("needs", "")]
        cols += [("p", key) for key, _ in self.models] or [("p", "")]
        # Review columns before the (long) model column, so they stay visible in a narrow window.
        cols += [("prediction", ""), ("flag", ""), ("review", ""), ("reviewer", ""), ("review_time", ""),
                 ("model", "")]
        self._columns = cols

    def column_of(self, kind: str, key: str | None = None) -> int:
        """Index of a column by kind ('thumb', 'file', 'p', 'prediction', ...); 'p' takes a model key."""
        for i, (k, mk) in enumerate(self._columns):
            if k == kind and (key is None or mk == key):
                return i
        raise KeyError(kind)

    def column_kind(self, column: int) -> tuple[str, str]:
        return self._columns[column]

    def _model_name(self, key: str) -> str:
        return dict(self.models).get(key, key[:12])

    def set_cards(self, cards: list) -> None:
        """Take each model's out-of-scope limit from its card (keyed like the records: weights hash)."""
        # Updated in place: the detail pane holds the same dict.
        self.ood_limits.clear()
        self.ood_limits.update({(c.model_sha256 or f"{c.name} {c.version}"): c.ood_threshold
                                for c in cards if getattr(c, "ood_threshold", None) is not None})
        self._invalidate_reasons()

    def set_shift_alarm(self, text: str) -> None:
        """A window-level shift alarm (set by whoever measures drift); rows with no other reason show it."""
        self.shift_alarm = text or ""
        self._invalidate_reasons()

    def _invalidate_reasons(self) -> None:
        for r in self.rows:
            r.reason_cache = None
        if self.rows:
            col = self.column_of("needs")
            self.dataChanged.emit(self.index(0, col), self.index(len(self.rows) - 1, col))

    def reason(self, row: FileRow) -> tuple[str, str, float]:
        if row.reason_cache is None:
            row.reason_cache = review_reason(row, self.ood_limits, self.shift_alarm)
        return row.reason_cache

    def ensure_model(self, key: str, display: str) -> None:
        if key in dict(self.models):
            return
        self.beginResetModel()
        self.models.append((key, display))
        self._rebuild_columns()
        self.endResetModel()

    def set_decider(self, key: str) -> None:
        """The model whose call is each photo's prediction ("" = every model alike; see FileRow)."""
        if key == getattr(self, "decider", ""):
            return
        self.decider = key
        for r in self.rows:
            r.decider = key
        self._invalidate_reasons()
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, self.columnCount() - 1))

    # --- rows ----------------------------------------------------------------------------------
    def clear(self) -> None:
        self._thumb_rows.clear()
        self.beginResetModel()
        self.rows, self._index, self.models = [], {}, []
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
                new[path] = FileRow(path, {key: record}, decider=self.decider)
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
        """All records, row order then model order (what exports write)."""
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
            if kind == "p":
                return "p(mpox)" if len(self.models) <= 1 else f"p(mpox) {self._model_name(key)}"
            return {"thumb": "", "file": "File", "needs": "Needs review", "prediction": "Prediction", "flag": "Flag",
                    "model": "Model", "review": "Review", "reviewer": "Reviewer",
                    "review_time": "Review time"}[kind]
        if role == Qt.ItemDataRole.ToolTipRole:
            return {"p": "Calibrated probability of mpox from the model (not a diagnosis)",
                    "prediction": "Model prediction at the model card's threshold",
                    "needs": "Why a person should look first: error, out of scope (score > limit), models "
                             "disagree, uncertain, shift alarm. Sorted highest risk first, errors last",
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
            if kind == "review_time":
                return row.review_time or None
            return None
        if role == Qt.ItemDataRole.ForegroundRole and kind in ("file", "needs", "prediction", "flag") \
                and row.errors():
            return QBrush(ERROR_FG)
        if role == Qt.ItemDataRole.BackgroundRole:
            if kind == "prediction" and row.combined_prediction() == "mpox":
                return QBrush(MPOX_BG)
            if kind == "flag" and row.flags():
                return QBrush(FLAG_BG)
            if kind == "needs" and self.reason(row)[0] and not row.errors():
                return QBrush(FLAG_BG)
            if kind == "review" and row.review_label:
                return QBrush(REVIEW_BG)
        if role == Qt.ItemDataRole.TextAlignmentRole and kind == "p":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _display(self, row: FileRow, kind: str, key: str):
        if kind == "file":
            return row.name
        if kind == "needs":
            return self.reason(row)[0]
        if kind == "p":
            rec = row.records.get(key) if key else (row.ok_records() or [None])[0]
            if rec is None:
                return ""
            return f"{rec.p_mpox:.3f}" if rec.ok and rec.p_mpox is not None else "—"
        if kind == "prediction":
            errors = row.errors()
            if errors and not row.ok_records():
                return "error: " + short_error(error_text(row))
            pred = row.combined_prediction()
            return {"disagree": "disagree"}.get(pred, PRED_TEXT.get(pred, pred))
        if kind == "flag":
            return ", ".join(FLAG_TEXT.get(f, f) for f in dict.fromkeys(row.flags()))   # each flag once
        if kind == "model":
            return " + ".join(f"{r.model} {r.model_version}".strip() for r in row.records.values())
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
        if kind == "p":
            rec = row.records.get(key) if key else (row.ok_records() or [None])[0]
            # Errors sort below every probability, so "highest first" keeps scored photos on top.
            return float(rec.p_mpox) if rec is not None and rec.ok and rec.p_mpox is not None else -1.0
        value = self._display(row, kind, key)
        return (value or "").lower() if isinstance(value, str) else ""

    def pixmap_for(self, path: str) -> QPixmap | None:
        return self.thumbnails.cached(path) if self.thumbnails is not None else None
