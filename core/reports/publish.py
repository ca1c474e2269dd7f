"""Publishing a report atomically: a hidden sibling file, fsync, rename; a failure leaves the previous file."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path


class ReportWriteError(OSError):
    """The report could not be written (disk full, no permission, ...); the previous file is unchanged."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _write_file(path: str, data: bytes | memoryview) -> None:
    """Write and flush `data` to disk (fsync), so a later rename publishes complete bytes."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _create_sibling(out_path: Path) -> str:
    """A new empty hidden file beside `out_path`, created with mode 0666 less the umask (as a plain save
    would be; mkstemp's 0600 is wrong for a filed report, and changing the umask is not thread-safe)."""
    for _ in range(100):
        name = str(out_path.parent / f".{out_path.name}.{secrets.token_hex(4)}.partial")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(out_path.parent))


def publish_atomically(out_path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write `data` to a temporary sibling and rename it over `out_path`.

    On any failure the temporary file is removed and `out_path` is left exactly as it was; OS errors (a full
    disk, no permission, a missing folder) become a one-line ReportWriteError that names the file.
    """
    out_path = Path(out_path)
    tmp_name = None
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_name = _create_sibling(out_path)
        _write_file(tmp_name, data)
        from core.store.outputs import publish  # the tool's one publish step: the replaced file's permissions kept

        publish(tmp_name, out_path)
        tmp_name = None
    except OSError as exc:
        why = "no space left on the disk" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise ReportWriteError(exc.errno or 0, f"Could not write the report {out_path}: {why}. "
                               "Nothing was changed there; free space or choose another place and export "
                               "again.".replace("\n", " ")) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return out_path
