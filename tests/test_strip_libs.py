"""packaging/strip_libs.py (the light app's strip step): a library is stripped only when the result still loads."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("strip_libs", ROOT / "packaging" / "strip_libs.py")
strip_libs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(strip_libs)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("strip") is None,
                                reason="Linux with binutils' strip only")


def _extension() -> Path:
    import _lzma   # a small C extension (a shared library in CPython's usual builds)

    if not getattr(_lzma, "__file__", None):
        pytest.skip("_lzma is built into this Python")
    return Path(_lzma.__file__)


def test_a_stripped_library_is_smaller_or_equal_and_still_loads(tmp_path):
    lib = tmp_path / "lib" / _extension().name
    lib.parent.mkdir()
    shutil.copy2(_extension(), lib)
    (tmp_path / "lib" / "notes.txt").write_text("not an ELF file")
    before = lib.stat().st_size
    done, saved, kept = strip_libs.strip_tree(tmp_path)
    assert kept == [] and done in (0, 1) and saved == before - lib.stat().st_size >= 0
    assert strip_libs.elf_segments_ok(lib) is True
    ctypes.CDLL(str(lib))   # the loader maps it
    assert (tmp_path / "lib" / "notes.txt").read_text() == "not an ELF file"
    assert not list(tmp_path.rglob("*.stripping"))


def test_a_library_whose_segments_the_loader_would_refuse_is_told_apart(tmp_path):
    data = bytearray(_extension().read_bytes())
    assert strip_libs.elf_segments_ok(_extension()) is True
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from("<I", data, at)[0] == strip_libs.PT_LOAD:
            (vaddr,) = struct.unpack_from("<Q", data, at + 16)
            struct.pack_into("<Q", data, at + 16, vaddr + 0x10)   # p_vaddr - p_offset no longer page-aligned
            break
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(data))
    assert strip_libs.elf_segments_ok(bad) is False
    assert strip_libs.elf_segments_ok(ROOT / "packaging" / "strip_libs.py") is None
