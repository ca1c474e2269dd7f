"""Where the tool may write: one output policy for every command and the app's exports.

Every file or folder a command or the app writes at a path the user chose (CSV, PDF, JSON summary,
Parquet folder, exported model, evaluation JSON and plots, a new bundle folder) is checked here first,
by `check_output` (one path) or `check_outputs` (a command's outputs together). An output is refused,
with one line (`OutputError`) and before any work, when it is:

* an input (a photo, a manifest, a data folder, a model bundle in use) or lies inside the folder
  being scanned: the originals stay untouched;
* a session database, or its `-wal`, `-shm` or `-journal` file (an existing SQLite file, or a file
  named like a session's): a live session is never turned into a CSV;
* any file inside any model bundle, i.e. below a folder that holds a `model_card.json` (shipped,
  the user's, or a component of the model in use): a bundle is written only by core.models.bundle;
* a FIFO, socket or device (e.g. /dev/null): such a file would be replaced by a regular file.
  To discard an output, leave its option out: every output except `export`'s OUT is optional;
* a symbolic link (even one to a regular file): refused, because an atomic publish (write a
  temporary file, rename it over the path) would replace the link itself; give the real path;
* a folder where a file is expected, or in a folder that does not exist or is not writable;
* the same path as another output of the same command.

`publish(tmp, out)` is the one atomic publish step (fsync, permissions, rename) shared by the writers,
so every file the tool writes gets the same permissions: those of the file it replaces, else
0666 minus the umask (what `open()` would give), never mkstemp's private 0600 for one kind only.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable, Sequence

from core.records import safe_text

CARD_FILE = "model_card.json"          # core.models.bundle.CARD_FILE (not imported: this module stays light)
SESSION_FILE = "session.sqlite"        # core.store.session.SESSION_FILE
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
_SQLITE_HEADER = b"SQLite format 3\x00"
DISCARD_HINT = "to discard an output, leave its option out"


class OutputError(ValueError):
    """An output path is refused by the policy; the message is one line naming the option and the path."""


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


def session_file_problem(target: Path) -> str:
    """Why `target` (a resolved path) is a session database or one of its side files, else ''."""
    name = target.name
    base = name
    for suffix in SQLITE_SIDE_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            break
    if base == SESSION_FILE:
        return "is a session database file"
    if target.is_file() and _is_sqlite(target):
        return "is an SQLite database (a session?)"
    if base != name and _is_sqlite(target.with_name(base)):
        return f"belongs to the SQLite database {base}"
    return ""


def bundle_holding(target: Path) -> Path | None:
    """The model bundle folder (a folder with a model card) that `target` lies in or is, else None."""
    for folder in [target, *target.parents]:
        try:
            if (folder / CARD_FILE).is_file():
                return folder
        except OSError:
            continue
    return None


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _check_file_type(p: Path, what: str, shown: str, kind: str) -> None:
    """Refuse a link, a special file, or a folder where a file is wanted (and the reverse)."""
    if p.is_symlink():
        raise OutputError(f"{what} {shown} is a symbolic link; outputs are never written through links "
                          "(the link itself would be replaced): give the real file's path")
    try:
        st = p.stat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if kind != "dir":
            raise OutputError(f"{what} {shown} is a folder; give a file name")
    elif not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{what} {shown} is {_kind_of(st.st_mode)}, not a regular file; it is never written "
                          f"({DISCARD_HINT})")
    elif kind == "dir":
        raise OutputError(f"{what} {shown} is a file; give a folder")


def check_output(path: str | os.PathLike, what: str, *, folder: str | os.PathLike | None = None,
                 inputs: Iterable[str | os.PathLike] = (), protected: Iterable[str | os.PathLike] = (),
                 kind: str = "file") -> Path:
    """Refuse (OutputError) an output that the policy (module docstring) forbids; return its resolved path.

    `what`: how the user named it (`--csv`, `report`...); `folder`: the folder being scanned; `inputs`:
    input files and folders (an output may be neither, nor lie inside an input folder); `protected`:
    further files or folders never written (e.g. the session database, the model folders in use);
    `kind`: "file", "dir" (a folder the command creates or fills, such as --parquet or --plots), "bundle" (a
    new bundle folder: it may replace a bundle, core.models.bundle.save_bundle decides, but never sit inside one) or
    "session" (a session folder or database: it may exist, be a link or be created with its parents).
    """
    text = str(path)
    shown = safe_text(text)
    if not text.strip():
        raise OutputError(f"{what} needs a {'folder' if kind == 'dir' else 'file'} name, got ''")
    p = Path(text).expanduser()
    try:
        target = _real(p)
        if kind == "session":
            if target.exists() and not (target.is_dir() or target.is_file()):
                raise OutputError(f"{what} {shown} is not a folder or a database file")
        elif kind in ("dir", "bundle"):   # created with its parents; core.models.bundle.check_save_target judges a bundle
            if kind == "dir":
                _check_file_type(p, what, shown, kind)
                # The folder, or the nearest folder above it that exists, must be writable: said before any run.
                near = target
                while not near.exists() and near.parent != near:
                    near = near.parent
                if near.is_dir() and not os.access(near, os.W_OK):
                    raise OutputError(f"cannot write {what} {shown}: folder {safe_text(str(near))} is not writable")
        else:
            _check_file_type(p, what, shown, kind)
            parent = target.parent
            if not parent.is_dir():
                raise OutputError(f"cannot write {what} {shown}: folder {safe_text(str(parent))} does not exist")
            if not os.access(parent, os.W_OK):
                raise OutputError(f"cannot write {what} {shown}: folder {safe_text(str(parent))} is not writable")
    except OSError as exc:
        reason = "the path is too long" if exc.errno == errno.ENAMETOOLONG else (exc.strerror or str(exc))
        raise OutputError(f"cannot write {what} {shown}: {reason}") from None

    if folder is not None:
        root = _real(folder)
        if target == root or target.is_relative_to(root):
            raise OutputError(f"{what} {shown} lies inside the folder being classified ({safe_text(str(folder))}); "
                              "write outputs elsewhere so the originals stay untouched")
    for inp in inputs:
        real = _real(inp)
        if target == real or (target.is_relative_to(real) and real.is_dir()):
            raise OutputError(f"{what} {shown} would overwrite an input ({safe_text(str(inp))}); choose another path")
    for prot in protected:
        real = _real(prot)
        if target == real or target.is_relative_to(real):
            raise OutputError(f"{what} {shown} would write over {safe_text(str(prot))}, which is never written; "
                              "choose another path")
    problem = "" if kind == "session" else session_file_problem(target)
    if problem:
        raise OutputError(f"{what} {shown} {problem}; a session is never written over: choose another path")
    bundle = bundle_holding(target.parent if kind == "bundle" else target)
    if bundle is not None:
        raise OutputError(f"{what} {shown} lies inside the model bundle {safe_text(str(bundle))}; files in a bundle "
                          "are never written over: choose another path")
    return target


def session_files(session: str | os.PathLike | None) -> list[Path]:
    """The database of a --session argument (a folder's session.sqlite, or a .sqlite/.db file) and its side
    files: outputs that must never be written, whether or not the session exists yet."""
    if not session:
        return []
    p = _real(session)
    db = p if p.suffix.lower() in (".sqlite", ".db", ".sqlite3") and not p.is_dir() else p / SESSION_FILE
    return [db] + [db.with_name(db.name + s) for s in SQLITE_SIDE_SUFFIXES]


def check_outputs(outputs: Sequence[tuple[str, str | os.PathLike]], *, folder: str | os.PathLike | None = None,
                  inputs: Iterable[str | os.PathLike] = (), protected: Iterable[str | os.PathLike] = (),
                  dirs: Iterable[str] = (), bundles: Iterable[str] = ()) -> dict[str, Path]:
    """check_output on each (option, path) of one command, and refuse two outputs at one path.

    `dirs`: the options whose value is a folder; `bundles`: those that name a new bundle folder; "--session" is
    checked as a session. Returns option -> resolved path."""
    inputs, protected, dirs, bundles = list(inputs), list(protected), set(dirs), set(bundles)
    seen: dict[Path, str] = {}
    out: dict[str, Path] = {}
    for option, path in outputs:
        session = option == "--session"   # the session itself is the one database this command may write
        target = check_output(path, option, folder=folder, inputs=inputs, protected=() if session else protected,
                              kind="session" if session else "dir" if option in dirs else
                              "bundle" if option in bundles else "file")
        if target in seen:
            raise OutputError(f"{option} {safe_text(str(path))} is the same path as {seen[target]}; "
                              "give each output its own path")
        seen[target] = option
        out[option] = target
    return out


def new_file_mode(out: Path) -> int:
    """The permissions a published file gets: those of the file it replaces, else 0666 minus the umask."""
    try:
        return stat.S_IMODE(out.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def publish(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Atomically put the finished temporary file `tmp` (beside `out`) at `out`: fsync, set the mode
    (new_file_mode), rename. On failure `out` is as it was and the caller removes `tmp`."""
    tmp, out = Path(tmp), Path(out)
    mode = new_file_mode(out)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, out)
    return out


def write_text_atomic(out: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `out` atomically: a hidden temporary file beside it, then publish. On any failure
    `out` is as it was and no temporary file is left; OSError says why."""
    import tempfile

    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return publish(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
