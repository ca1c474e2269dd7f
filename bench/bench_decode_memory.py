"""Peak memory of decoding hostile images: tiny PNGs that expand to huge 16-bit greyscale or RGB images.

Issue 18, item 9: a 13000x13000 16-bit RGB PNG peaked at 1.74 GB, four of them at 3.4 GB with two decode
threads. `--rgb --count 4 --threads 2` decodes four such photos as a run does (core.photos.images.load_rgb with the
model's input size as max_side, two threads sharing core.photos.images.DECODE_BUDGET); targets: one photo <= 1 GiB
peak, four <= 1.5 GiB.

    python bench/bench_decode_memory.py --rgb --max-side 299                 # one 16-bit RGB photo
    python bench/bench_decode_memory.py --rgb --max-side 299 --count 4 --threads 2

Issue 12, hole 6: a 329 KB, 13000x13000 16-bit greyscale PNG (under the pixel limit) took 4.4 GB in
core.photos.images because of float64 copies in _to_rgb. This writes such a PNG (streamed through zlib, so
writing it needs little memory), then decodes it with core.photos.images.load_rgb in a fresh subprocess per
repetition and prints that subprocess's peak RSS (resource.getrusage(RUSAGE_CHILDREN).ru_maxrss), the
file size and the time. The target: peak RSS under 1 GB.

    python bench/bench_decode_memory.py                 # 13000x13000, 16-bit grey
    python bench/bench_decode_memory.py --side 8000 --repeat 3
    python bench/bench_decode_memory.py --baseline-module /tmp/old_images.py   # an older core/photos/images.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_gray16_png(path: str | os.PathLike, width: int, height: int) -> Path:
    """A width x height, 16-bit greyscale PNG whose row y holds the value (y * 97) % 65536 everywhere.

    Rows are compressed one at a time, so this needs a few hundred KB of memory whatever the size.
    """
    path = Path(path)
    comp = zlib.compressobj(9)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)))
        out = bytearray()
        for y in range(height):
            value = (y * 97) % 65536
            row = b"\x00" + struct.pack(">H", value) * width  # filter type 0, big-endian samples
            out += comp.compress(row)
            if len(out) > 1 << 20:
                fh.write(_chunk(b"IDAT", bytes(out)))
                out.clear()
        out += comp.flush()
        fh.write(_chunk(b"IDAT", bytes(out)))
        fh.write(_chunk(b"IEND", b""))
    return path


def write_rgb16_png(path: str | os.PathLike, width: int, height: int) -> Path:
    """A width x height, 16-bit RGB PNG (row y: red (y * 97) % 65536, green 30000, blue 65535), streamed."""
    path = Path(path)
    comp = zlib.compressobj(9)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)))
        out = bytearray()
        for y in range(height):
            row = b"\x00" + struct.pack(">HHH", (y * 97) % 65536, 30000, 65535) * width
            out += comp.compress(row)
            if len(out) > 1 << 20:
                fh.write(_chunk(b"IDAT", bytes(out)))
                out.clear()
        out += comp.flush()
        fh.write(_chunk(b"IDAT", bytes(out)))
        fh.write(_chunk(b"IEND", b""))
    return path


_CHILD = r"""
import importlib.util, json, resource, sys, time
sys.path.insert(0, {repo!r})
module = {module!r}
if module:
    spec = importlib.util.spec_from_file_location("images_under_test", module)
    images = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = images  # dataclasses look their module up while the module runs
    spec.loader.exec_module(images)
else:
    import core.photos.images as images
from concurrent.futures import ThreadPoolExecutor
t0 = time.perf_counter()
paths = {paths!r}
try:
    with ThreadPoolExecutor({threads}) as pool:   # as core.triage.inference's decode threads
        arrays = list(pool.map(lambda p: images.load_rgb(p, max_side={max_side!r}), paths))
    arr = arrays[0]
    result = {{"shape": list(arr.shape), "dtype": str(arr.dtype), "pixel_0_0": int(arr[0, 0, 0]),
               "pixel_last": int(arr[-1, -1, 0]), "photos": len(arrays)}}
except Exception as exc:
    result = {{"error": str(exc)}}
result["seconds"] = round(time.perf_counter() - t0, 2)
print(json.dumps(result))
"""


def measure(path: Path, module: str | None = None, count: int = 1, threads: int = 1,
            max_side: int | None = None) -> dict:
    """Decode `path` (`count` times, on `threads` threads) in a fresh interpreter; its peak RSS (MiB) and what
    it returned."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    code = _CHILD.format(repo=str(REPO), module=module or "", paths=[str(path)] * count, threads=threads,
                         max_side=max_side)
    proc = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, env=env)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux: max over children so far
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}", "peak_rss_mib": peak_kib / 1024}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_rss_mib"] = round(peak_kib / 1024, 1)
    out["peak_is_new_max"] = peak_kib > before
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=13000, help="width and height in pixels (default 13000)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline-module", help="path of another core/photos/images.py to measure instead (e.g. the old one)")
    ap.add_argument("--rgb", action="store_true", help="a 16-bit RGB PNG instead of 16-bit grey")
    ap.add_argument("--count", type=int, default=1, help="photos decoded in one process (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="decode threads (default 1; a run uses 2 or more)")
    ap.add_argument("--max-side", type=int, default=None,
                    help="the model's input size, as a run passes it (e.g. 299); default: full size")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.rgb:
            png = write_rgb16_png(Path(tmp) / "rgb16.png", args.side, args.side)
        else:
            png = write_gray16_png(Path(tmp) / "gray16.png", args.side, args.side)
        size = png.stat().st_size
        print(f"{png.name}: {args.side}x{args.side} 16-bit {'RGB' if args.rgb else 'grey'}, {size / 1024:.0f} KiB on "
              f"disk, {args.side * args.side * (6 if args.rgb else 2) / 2**20:.0f} MiB as 16-bit samples, "
              f"{args.side * args.side * 3 / 2**20:.0f} MiB as 8-bit RGB; {args.count} photo(s), {args.threads} "
              f"decode thread(s), max_side {args.max_side}")
        for i in range(args.repeat):
            r = measure(png, args.baseline_module, args.count, args.threads, args.max_side)
            # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: one run per process gives its own peak
            # only on the first repetition or when it is a new maximum.
            print(f"run {i + 1}: peak RSS {r['peak_rss_mib']:.0f} MiB"
                  f"{'' if r.get('peak_is_new_max', True) else ' (or less: not above an earlier run)'}, "
                  + (f"error: {r['error']}" if "error" in r else
                     f"decoded {tuple(r['shape'])} {r['dtype']} in {r['seconds']} s; "
                     f"row 0 grey {r['pixel_0_0']}, last row grey {r['pixel_last']}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
