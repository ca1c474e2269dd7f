"""Where an archive's paths come from (a CSV or Parquet manifest) and where millions of rows go (Parquet shards)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from core.records import CSV_COLUMNS, ResultRecord

RAY_MISSING = 'Ray is not installed; install the scale extra: pip install -e ".[scale]"'


class RayMissingError(RuntimeError):
    """Ray (or pyarrow) is needed for this and is not installed; str(error) says how to install it."""


def ray_available() -> bool:
    """True when Ray Data and pyarrow can be imported (without importing them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("ray", "pyarrow"))


def _require_scale_extra() -> None:
    """Parquet needs pyarrow, which comes with the scale extra: RayMissingError (one line) without it."""
    if not ray_available():
        raise RayMissingError(RAY_MISSING)

PATH_COLUMN = "path"
CASE_COLUMN = "case_id"    # core.store.cases: the case a photo belongs to (with --cases)
SHARD_GLOB = "part-*.parquet"
_SHARD_RE = re.compile(r"^part-(\d+)\.parquet$")


class ManifestError(ValueError):
    """A manifest cannot be read or has no `path` column; the message names the file."""


def read_manifest(path: str | os.PathLike) -> list[str]:
    """The `path` column of a CSV or Parquet manifest, in file order; relative paths are taken from its folder."""
    return [p for p, _cells in read_manifest_columns(path)]


def read_manifest_columns(path: str | os.PathLike, columns: Sequence[str] = ()) -> list[tuple[str, dict]]:
    """(path, {column: cell}) per row of a CSV or Parquet manifest with a path, in file order (read_manifest's
    paths); each named column must exist (ManifestError names the file and the columns it has)."""
    path = Path(path).expanduser()
    base = path.resolve().parent
    suffix = path.suffix.lower()
    wanted = [PATH_COLUMN, *[c for c in columns if c != PATH_COLUMN]]
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            _require_scale_extra()
            table = pq.read_table(path)
            names = table.column_names
            _require(path, wanted, names, "columns")
            data = {c: table.column(c).to_pylist() for c in wanted}
        elif suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                _require(path, wanted, reader.fieldnames or [], "header")
                rows = list(reader)
            data = {c: [row[c] for row in rows] for c in wanted}
        else:
            raise ManifestError(f"{path}: a manifest must be .csv, .tsv or .parquet")
    except ManifestError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    except Exception as exc:  # pyarrow's ArrowInvalid for a broken Parquet file
        raise ManifestError(f"{path}: cannot read manifest ({type(exc).__name__}: {exc})") from None
    out = []
    for row, value in enumerate(data[PATH_COLUMN], start=1):
        if value is None:
            continue
        if isinstance(value, bytes):
            value = os.fsdecode(value)
        if not isinstance(value, str):  # an int, float or list column: say so in one line, never a traceback
            raise ManifestError(f"{path}: row {row}: '{PATH_COLUMN}' is {type(value).__name__} {str(value)[:40]!r}, "
                                "not a file path; the column must hold text")
        text = value.strip()
        if "\x00" in text:
            raise ManifestError(f"{path}: row {row}: '{PATH_COLUMN}' contains a NUL byte, which no file name can "
                                "hold; fix the manifest")
        if text:
            p = Path(text).expanduser()
            out.append((str(p if p.is_absolute() else base / p), {c: data[c][row - 1] for c in wanted[1:]}))
    return out


def _require(path: Path, wanted: Sequence[str], names: Sequence[str], what: str) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        shown = ", ".join(names) if what == "columns" else names
        raise ManifestError(f"{path}: no '{missing[0]}' column ({what}: {shown})")


def _schema(with_cases: bool = False):
    import pyarrow as pa

    floats = {"p_mpox", "ood_score", "scope_score", "threshold"}
    names = CSV_COLUMNS[:1] + [CASE_COLUMN] + CSV_COLUMNS[1:] if with_cases else CSV_COLUMNS
    return pa.schema([(c, pa.float64() if c in floats else pa.string()) for c in names])


def _text(value: str) -> str:
    # A file name that is not valid UTF-8 (surrogate-escaped by Python) is kept readable, not dropped.
    return os.fsencode(value).decode("utf-8", "backslashreplace") if isinstance(value, str) else value


class ParquetShardWriter:
    """Writes result rows as `part-NNNNN.parquet` shards of `rows_per_shard` rows into a folder.

    Each shard is written to a hidden temporary file and renamed into place, so a reader (or a run
    killed mid-write) only ever sees whole shards. Reopening a folder continues after its last shard,
    so a resumed run adds shards. Columns are those of the CSV (core.records.CSV_COLUMNS); `origins` maps a
    model key to its `model_origin` text (core.store.workspace.Workspace.origin); `cases` (photo path -> case id,
    core.store.cases.assign) adds a `case_id` column after `path`.
    """

    def __init__(self, out_dir: str | os.PathLike, rows_per_shard: int = 100_000,
                 origins: dict[str, str] | None = None, cases: dict[str, str] | None = None):
        _require_scale_extra()
        if rows_per_shard < 1:
            raise ValueError("rows_per_shard must be at least 1")
        self.out_dir = Path(out_dir).expanduser()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rows_per_shard = int(rows_per_shard)
        self.origins = dict(origins or {})
        self.cases = None if cases is None else dict(cases)
        existing = [int(m.group(1)) for p in self.out_dir.iterdir() if (m := _SHARD_RE.match(p.name))]
        self._next = max(existing, default=-1) + 1
        self._rows: list[ResultRecord] = []
        self.shards: list[Path] = []
        self.rows_written = 0

    def add(self, record: ResultRecord) -> None:
        self._rows.append(record)
        if len(self._rows) >= self.rows_per_shard:
            self.flush()

    def extend(self, records: Iterable[ResultRecord]) -> None:
        for record in records:
            self.add(record)

    def flush(self) -> None:
        """Write the rows held so far as one shard (nothing when there are none)."""
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _schema(self.cases is not None)
        columns = {c: [getattr(r, c) for r in self._rows] for c in CSV_COLUMNS if c != "model_origin"}
        columns["model_origin"] = [self.origins.get(r.model_key, "") for r in self._rows]
        if self.cases is not None:
            columns[CASE_COLUMN] = [self.cases.get(r.path, r.path) for r in self._rows]
        for c in ("path", "error", "file_sha256") + ((CASE_COLUMN,) if self.cases is not None else ()):
            columns[c] = [None if v is None else _text(v) for v in columns[c]]
        table = pa.table({c: pa.array(columns[c], type=schema.field(c).type) for c in schema.names}, schema=schema)
        final = self.out_dir / f"part-{self._next:05d}.parquet"
        tmp = self.out_dir / f".{final.name}.tmp-{os.getpid()}"
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.shards.append(final)
        self.rows_written += len(self._rows)
        self._next += 1
        self._rows = []

    def close(self) -> None:
        """Write the last, partial shard. Rows already handed over are whole results, so they are kept even
        when the run stopped early (a resumed run writes the rest into new shards)."""
        self.flush()

    def __enter__(self) -> "ParquetShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_parquet_results(out_dir: str | os.PathLike) -> list[dict]:
    """Every row of a shard folder, shards in order (for tests and small checks; use pyarrow for millions)."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for shard in sorted(Path(out_dir).glob(SHARD_GLOB)):
        rows.extend(pq.read_table(shard).to_pylist())
    return rows


def read_parquet_records(out_dir: str | os.PathLike) -> tuple[list[ResultRecord], dict[str, str] | None]:
    """The ResultRecords of a shard folder (core.records fields; `model_origin` dropped) and, when the shards carry
    a `case_id` column (classify --cases), photo path -> case id (else None): what core.reports.fhir_export needs."""
    records: list[ResultRecord] = []
    cases: dict[str, str] | None = None
    for row in read_parquet_results(out_dir):
        if CASE_COLUMN in row:
            cases = {} if cases is None else cases
            cases[row["path"]] = row[CASE_COLUMN] or row["path"]
        data = {k: v for k, v in row.items() if k in ResultRecord.__dataclass_fields__}
        data["error"] = data.get("error") or ""
        data["flag"] = data.get("flag") or ""
        records.append(ResultRecord.from_dict(data))
    return records, cases
