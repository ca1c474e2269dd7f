"""CSV export of result records: written row by row into a hidden temporary file, published atomically.

One model: one row per photo with the columns of `core.records.CSV_COLUMNS`. Several models: still one
row per photo, each model's fields side by side (`p_mpox__<model>` ...) plus `agreement`. With a session,
the reviewer columns follow (the same for the command line and the app).

Every cell goes through `neutralise_cell` (formula injection, OWASP): a text cell starting with = + - @, a
tab or a carriage return is written with a leading apostrophe.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from core.records import CALLS, CSV_COLUMNS, ResultRecord, safe_text

# Formula injection (OWASP "CSV Injection"): a spreadsheet runs a cell that starts with = + - @ (or a tab or
# carriage return before one) as a formula, e.g. a model named =HYPERLINK(...) or a reviewer named =cmd|...
# Every text cell the tool writes that starts with one of these gets a leading apostrophe, which spreadsheets
# show as text; numbers (-0.25, 1e-05) are left as they are. This is the one CSV writer of the tool.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def neutralise_cell(text: str) -> str:
    """`text` made safe to open in a spreadsheet (see FORMULA_STARTS); plain numbers are unchanged."""
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text

REVIEW_COLUMNS = ["reviewer_label", "reviewer", "review_time"]
# Per-model columns of a multi-model CSV, each suffixed with `__<model slug>`.
PER_MODEL_FIELDS = ["p_mpox", "prediction", "flag", "ood_score", "scope_score", "threshold", "model", "model_version",
                    "model_sha256", "model_origin"]
AGREE, DISAGREE, AGREEMENT_NA = "agree", "disagree", "n/a"


class ResultCsvWriter:
    """Streams rows to a hidden temporary file beside `path`; `close()` fsyncs it and renames it to `path`.

    On any exception inside the `with` block (or `abort()`), the temporary file is deleted and an existing
    `path` is left exactly as it was: a failed run never publishes a cut-down CSV. If the process is
    killed, the hidden `.<name>.*.partial` file holds the rows written so far.
    """

    def __init__(self, path: str | os.PathLike, with_reviews: bool = False, columns: Sequence[str] | None = None):
        if not str(path).strip():
            raise ValueError("CSV path is empty; give a file name")
        self.path = Path(path)
        self.columns = list(columns) if columns is not None else CSV_COLUMNS + (REVIEW_COLUMNS if with_reviews else [])
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent or ".")
        self.partial = Path(tmp)
        self._fh = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore")
        self.rows = 0
        try:
            self._writer.writeheader()
        except BaseException:
            self.abort()
            raise

    def write_row(self, row: dict[str, str]) -> None:
        self._writer.writerow({k: neutralise_cell(safe_text(str(v))) for k, v in row.items()})
        self.rows += 1

    def write(self, record: ResultRecord, review: dict | None = None) -> None:
        row = record.to_row()
        row.update(review_cells(review))
        self.write_row(row)

    def flush(self) -> None:
        self._fh.flush()

    def reorder(self, key) -> None:
        """Put the rows written so far in `key(row)` order (rows arrive as results do; a resumed run writes its
        restored rows first). Rewrites the hidden file; `path` is untouched until close()."""
        self._fh.flush()
        with open(self.partial, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        rows.sort(key=key)
        self._fh.close()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent or ".")
        old, self.partial = self.partial, Path(tmp)
        old.unlink(missing_ok=True)
        self._fh = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(rows)

    def close(self) -> Path:
        """Publish: flush, fsync and atomically replace `path`. On failure nothing is published."""
        try:
            from core.store.outputs import publish

            self._fh.flush()
            self._fh.close()
            publish(self.partial, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Throw the rows away; `path` keeps its previous content (or stays absent)."""
        try:
            if not self._fh.closed:
                self._fh.close()
        except OSError:
            pass
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "ResultCsvWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._fh.closed:
            self.close()


def review_cells(review: dict | None) -> dict[str, str]:
    if not review:
        return {}
    return {"reviewer_label": review.get("label", ""), "reviewer": review.get("reviewer", ""),
            "review_time": review.get("time", "")}


def model_slugs(models: Sequence[tuple[str, str, str]]) -> list[str]:
    """Column suffixes for models given as (key, name, version): the name, or name_version if names repeat."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"

    names = [clean(name) for _k, name, _v in models]
    slugs = [clean(f"{name}_{version}") if names.count(clean(name)) > 1 else clean(name)
             for _k, name, version in models]
    return [f"{s}_{key[:8]}" if slugs.count(s) > 1 else s for s, (key, _n, _v) in zip(slugs, models)]


def wide_columns(slugs: Sequence[str], with_reviews: bool) -> list[str]:
    cols = ["path", "status"]
    for slug in slugs:
        cols += [f"{f}__{slug}" for f in PER_MODEL_FIELDS]
    cols += ["agreement", "file_sha256", "error", "timestamp"]
    return cols + (REVIEW_COLUMNS if with_reviews else [])


def agreement(records: Sequence[ResultRecord | None]) -> str:
    """One definition with the reasons, the table and the PDF (core.triage.reasons DISAGREE): `disagree` when one
    model calls the photo mpox and another not mpox; `agree` when every model scored it and all gave the same
    call; else n/a (a model could not read it, has no result yet, or has no call: out of scope)."""
    if len(records) < 2 or any(r is None or not r.ok for r in records):
        return AGREEMENT_NA
    calls = {r.prediction for r in records if r.prediction in CALLS}
    if len(calls) > 1:
        return DISAGREE
    return AGREE if len({r.prediction for r in records}) == 1 else AGREEMENT_NA


def photo_status(records: Sequence[ResultRecord | None]) -> str:
    """ok (every model scored it), error (a model could not read it) or partial (a model has no result yet)."""
    if any(r is not None and not r.ok for r in records):
        return "error"
    if any(r is None for r in records):
        return "partial"
    return "ok"


def wide_row(path: str, records: Sequence[ResultRecord | None], slugs: Sequence[str],
             review: dict | None = None) -> dict[str, str]:
    """One photo's row of a multi-model CSV (`records` in the order of `slugs`, None where missing)."""
    row: dict[str, str] = {"path": path, "status": photo_status(records)}
    for rec, slug in zip(records, slugs):
        cells = rec.to_row() if rec is not None else {}
        for f in PER_MODEL_FIELDS:
            row[f"{f}__{slug}"] = cells.get(f, "")
    present = [r for r in records if r is not None]
    row["agreement"] = agreement(records)
    row["file_sha256"] = next((r.file_sha256 for r in present if r.file_sha256), "") or ""
    row["error"] = next((r.error for r in present if r.error), "")
    row["timestamp"] = max((r.timestamp for r in present), default="")
    row.update(review_cells(review))
    return row


def write_results_csv(records: Iterable[ResultRecord], path: str | os.PathLike,
                      reviews: dict[str, dict] | None = None) -> Path:
    """Write all records (one model); with `reviews` (path -> {label, reviewer, time}) the reviewer columns
    are added. Atomic: on failure the previous file at `path` is unchanged."""
    with ResultCsvWriter(path, with_reviews=reviews is not None) as writer:
        for record in records:
            writer.write(record, (reviews or {}).get(record.path))
    return Path(path)


def read_results_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
