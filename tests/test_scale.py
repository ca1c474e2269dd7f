"""core.scale without a cluster: manifests, Parquet shards, and what happens when Ray is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from core.records import CSV_COLUMNS, ResultRecord
from tests.conftest import REPO


def test_import_core_scale_works_without_ray_and_says_how_to_install_it():
    # A subprocess in which `ray` and `pyarrow` cannot be found, as on a machine without the extra.
    code = textwrap.dedent("""
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name in ("ray", "pyarrow") else real(name, *a)
        import core.scale as s
        assert not s.ray_available()
        assert "ray" not in sys.modules
        try:
            s.RayEngine("anything")
        except s.RayMissingError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'Ray is not installed; install the scale extra: pip install -e ".[scale]"'


def test_csv_manifest_paths_are_read_in_order_relative_to_the_manifest(tmp_path):
    from core.scale import read_manifest

    (tmp_path / "m.csv").write_text(f"label,path\nmpox,a/1.jpg\nother,{tmp_path}/abs.png\nx,\nmpox,b.jpg\n")
    assert read_manifest(tmp_path / "m.csv") == [str(tmp_path / "a/1.jpg"), str(tmp_path / "abs.png"),
                                                 str(tmp_path / "b.jpg")]


def test_manifest_without_a_path_column_is_refused_with_its_name(tmp_path):
    from core.store.sources import ManifestError, read_manifest

    (tmp_path / "m.csv").write_text("file,label\na.jpg,mpox\n")
    with pytest.raises(ManifestError, match=r"m\.csv: no 'path' column"):
        read_manifest(tmp_path / "m.csv")


def _records(n: int) -> list[ResultRecord]:
    out = []
    for i in range(n):
        if i % 7 == 3:
            out.append(ResultRecord(f"/photos/{i}.jpg", "error", error=f"/photos/{i}.jpg: empty file (0 bytes)"))
        else:
            out.append(ResultRecord(f"/photos/{i}.jpg", "ok", p_mpox=i / n, prediction="mpox", flag="",
                                    ood_score=None if i % 2 else 1.5, model="m", model_version="1",
                                    model_sha256="ab" * 32, threshold=0.5, file_sha256="cd" * 32))
    return out


def test_parquet_shards_hold_every_row_and_a_reopened_folder_adds_shards(tmp_path):
    pytest.importorskip("pyarrow", reason='pyarrow is not installed (pip install -e ".[scale]")')
    from core.scale import ParquetShardWriter, read_parquet_results

    records = _records(25)
    odd = ResultRecord(os.fsdecode(b"/photos/\xe9t\xe9.jpg"), "error", error="x")
    with ParquetShardWriter(tmp_path / "out", rows_per_shard=10) as writer:
        writer.extend(records)
    assert [p.name for p in writer.shards] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    with ParquetShardWriter(tmp_path / "out", rows_per_shard=10) as again:
        again.add(odd)
    assert [p.name for p in again.shards] == ["part-00003.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"part-0000{i}.parquet" for i in range(4)]
    rows = read_parquet_results(tmp_path / "out")
    assert [list(r) for r in rows[:1]] == [CSV_COLUMNS]
    for row, record in zip(rows, records):
        # Every record field, plus the model's origin (empty: this writer was given no origins).
        assert row.pop("model_origin") == "" and row == {k: v for k, v in record.to_dict().items() if k in row}
        assert set(record.to_dict()) - set(row) <= {"file_size", "file_mtime_ns"}
    assert rows[-1]["path"] == "/photos/\\xe9t\\xe9.jpg"


def test_a_failed_shard_write_leaves_no_partial_file(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow", reason='pyarrow is not installed (pip install -e ".[scale]")')
    import pyarrow.parquet as pq

    from core.scale import ParquetShardWriter

    writer = ParquetShardWriter(tmp_path / "out", rows_per_shard=100)
    writer.extend(_records(5))

    def full_disk(table, where, *a, **k):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError):
        writer.flush()
    assert list((tmp_path / "out").iterdir()) == []
