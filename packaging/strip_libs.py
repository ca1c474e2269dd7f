"""Strip the symbol tables and debug sections from the shared libraries of a built one-folder app (Linux).

Called by packaging/mpox-triage.spec after COLLECT (PyInstaller's own strip=True cannot skip a file, and it breaks
the OpenBLAS and libgfortran copies of numpy.libs/ and scipy.libs/: auditwheel's patchelf gave them a layout
that `strip` rewrites into segments the loader refuses with "ELF load command address/offset not page-aligned").
Each library is stripped into a copy; the copy replaces it only when `strip` succeeded, the copy is smaller, and
every loadable segment of the copy still satisfies the loader's rule, so a library is either stripped and loadable
or left as it was.
Usage: python packaging/strip_libs.py DIST_INTERNAL_DIR   (prints what it saved and what it left unstripped)
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

PAGE = 4096   # x86-64 and aarch64 Linux both accept 4 KiB-aligned segments; glibc checks this against its page size
PT_LOAD = 1


def elf_segments_ok(path: Path) -> bool | None:
    """None for a file that is not a 64-bit little-endian ELF; else whether each PT_LOAD segment keeps
    (p_vaddr - p_offset) a multiple of the page size (glibc refuses to map it otherwise)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return None
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr = struct.unpack_from("<IIQQ", table, i * phentsize)
        if p_type == PT_LOAD and (p_vaddr - p_offset) % PAGE:
            return False
    return True


def strip_tree(root: Path, strip: str = "strip") -> tuple[int, int, list[str]]:
    """Strip every ELF file under `root` in place where it is safe; returns (files stripped, bytes saved,
    files left unstripped with the reason)."""
    if shutil.which(strip) is None:
        return 0, 0, [f"{strip} not found: nothing stripped"]
    done, saved, kept = 0, 0, []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or elf_segments_ok(path) is None:
            continue
        tmp = path.with_name(path.name + ".stripping")
        result = subprocess.run([strip, "--strip-unneeded", "-o", str(tmp), str(path)], capture_output=True)
        if result.returncode != 0 or not tmp.is_file() or not elf_segments_ok(tmp):
            why = "strip failed" if result.returncode != 0 else "would not load once stripped"
            kept.append(f"{path.relative_to(root)} ({why})")
            tmp.unlink(missing_ok=True)
            continue
        before, after = path.stat().st_size, tmp.stat().st_size
        if after >= before:   # nothing to strip (some of auditwheel's libraries even grow a little)
            tmp.unlink()
            continue
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
        done, saved = done + 1, saved + before - after
    return done, saved, kept


def main(argv: list[str]) -> int:
    root = Path(argv[1])
    done, saved, kept = strip_tree(root)
    print(f"strip_libs: {done} libraries stripped under {root}, {saved / 2**20:.1f} MiB saved; "
          f"{len(kept)} left as they were" + "".join(f"\n  {k}" for k in kept))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
