"""CSV export of result records, written row by row so a long run loses nothing already scored."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable

from core.records import CSV_COLUMNS, ResultRecord

REVIEW_COLUMNS = ["reviewer_label", "reviewer", "review_time"]


class ResultCsvWriter:
    """Streams rows to `<path>.partial` and renames it to `path` on close, so a finished CSV is complete.

    If the process dies, the `.partial` file holds every row written so far.
    """

    def __init__(self, path: str | os.PathLike, with_reviews: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.columns = CSV_COLUMNS + (REVIEW_COLUMNS if with_reviews else [])
        self._fh = open(self.partial, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self.rows = 0

    def write(self, record: ResultRecord, review: dict | None = None) -> None:
        row = record.to_row()
        if review:
            row["reviewer_label"] = review.get("label", "")
            row["reviewer"] = review.get("reviewer", "")
            row["review_time"] = review.get("time", "")
        self._writer.writerow(row)
        self.rows += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> Path:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.partial, self.path)
        return self.path

    def __enter__(self) -> "ResultCsvWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._fh.closed:
            self.close()


def write_results_csv(records: Iterable[ResultRecord], path: str | os.PathLike,
                      reviews: dict[str, dict] | None = None) -> Path:
    """Write all records; with `reviews` (path -> {label, reviewer, time}) the reviewer columns are added."""
    with ResultCsvWriter(path, with_reviews=reviews is not None) as writer:
        for record in records:
            writer.write(record, (reviews or {}).get(record.path))
    return Path(path)


def read_results_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
