"""Explicit, visible filters over the results: nothing is hidden unless the user chose a filter."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel

from desktop_app.results.model import ROW_ROLE, SORT_ROLE, FileRow

# (key, label): the filter combo's entries, in order.
FILTERS: list[tuple[str, str]] = [
    ("all", "All"),
    ("mpox", "mpox (any model)"),
    ("not_mpox", "not mpox (all models)"),
    ("flagged", "needs review"),
    ("errors", "errors"),
    ("unreviewed", "unreviewed"),
]


def row_matches(row: FileRow, category: str, model=None) -> bool:
    """Whether a row belongs to a filter category, over the chosen models (`model`, the ResultsModel; all of
    the row's records without it). mpox: any chosen model says mpox (a possible positive is never filtered
    away by a second model); not mpox: every chosen model that scored it says not mpox."""
    if category == "all":
        return True
    records = model.shown_records(row) if model is not None else list(row.records.values())
    if category == "errors":
        return any(not r.ok for r in records)
    if category == "unreviewed":
        return not row.review_label
    preds = {r.prediction for r in records if r.ok and r.prediction}
    if category == "mpox":
        return "mpox" in preds
    if category == "not_mpox":
        return preds == {"not_mpox"}
    if category == "flagged":
        return bool(model.reason(row)[0]) if model is not None else bool(row.flags())
    raise ValueError(f"unknown filter {category!r}")


class ResultsProxy(QSortFilterProxyModel):
    """Sorts numerically by p(mpox) (SORT_ROLE) and filters by category and file-name text."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.category = "all"
        self.text = ""
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)

    def set_category(self, category: str) -> None:
        if category not in dict(FILTERS):
            raise ValueError(f"unknown filter {category!r}; choose one of {', '.join(dict(FILTERS))}")
        self.beginFilterChange()
        self.category = category
        self.endFilterChange()

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self.text = text.strip().lower()
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        row: FileRow = self.sourceModel().index(source_row, 0, source_parent).data(ROW_ROLE)
        if row is None:
            return False
        if self.text and self.text not in row.path.lower():
            return False
        return row_matches(row, self.category, self.sourceModel())
