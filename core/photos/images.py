"""Finding image files in a folder and decoding them safely into 8-bit RGB arrays.

Files are only ever opened read-only. Every way a file can be bad becomes an ImageDecodeError whose
message names the file and says what was wrong, so callers can turn it into an `error` row.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Refuse images above this many pixels before decoding them (PIL's own bomb limit is 2x its
# 89 MP warning level; we use the same figure but check it ourselves so the message is clear).
MAX_PIXELS = 178_956_970
# Refuse files larger than this before reading them into memory.
MAX_FILE_BYTES = 512 * 1024 * 1024


class ImageDecodeError(ValueError):
    """A file could not be turned into an RGB image; str(error) is a user-facing message."""


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class Discovery:
    """What a folder walk found.

    paths: image files, in a stable order (each folder's files sorted by name, then its subfolders).
    unreadable_dirs: folders that could not be opened or listed (their images are missing from `paths`).
    skipped_links: symbolic links (to files or folders) whose target lies outside the scanned folder;
      they are not followed (a broken link inside it is kept: it becomes a "file not found" row).
    errors: one user-facing line per unreadable folder (for a log, the summary or the CSV).
    """

    root: Path
    paths: list[Path] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def n_skipped_links(self) -> int:
        return len(self.skipped_links)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def discover(folder: str | os.PathLike) -> Discovery:
    """Walk `folder` for image files without recursion (any depth), never leaving the folder.

    Hidden files and folders are skipped. A symbolic link is followed only when its target lies inside
    `folder` (a linked folder reached twice is walked once); links leading outside it are counted in
    `skipped_links`. Folders that cannot be opened or listed are recorded in
    `unreadable_dirs` and `errors` and the walk goes on. Raises FileNotFoundError / NotADirectoryError
    for a missing `folder` or a file.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"No such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"Not a folder: {root}")
    real_root = os.path.realpath(root)
    result = Discovery(root=root)
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[Path] = [root]
    while stack:
        directory = stack.pop()
        try:
            st = directory.stat()
        except OSError as exc:
            result.unreadable_dirs.append(str(directory))
            result.errors.append(f"{directory}: cannot open folder ({exc.strerror or exc})")
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # symlink loop or a folder reached twice
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.unreadable_dirs.append(str(directory))
            result.errors.append(f"{directory}: cannot list folder ({exc.strerror or exc})")
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not _inside(target, real_root):
                        result.skipped_links.append(entry.path)
                        continue
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(Path(entry.path))
            elif is_image_name(entry.name):
                result.paths.append(Path(entry.path))
        stack.extend(reversed(subdirs))  # depth first, in name order, like the recursive walk it replaces
    return result


def discover_images(folder: str | os.PathLike, errors: list[str] | None = None) -> list[Path]:
    """discover(folder).paths; unreadable folders are also appended to `errors` when given.

    Kept for callers that need only the paths; use discover() for the skipped links and unreadable folders.
    """
    found = discover(folder)
    if errors is not None:
        errors.extend(found.errors)
    return found.paths


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def _not_regular(p: Path, mode: int) -> ImageDecodeError:
    kind = next((text for test, text in _FILE_KINDS if test(mode)), "a special file")
    if kind == "a folder":
        return ImageDecodeError(f"{p}: is a folder, not an image file")
    return ImageDecodeError(f"{p}: not a regular file ({kind}); only image files are read")


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole file read-only, with user-facing errors.

    Only regular files are read: a FIFO, socket or device is refused as "not a regular file" without
    being opened for a blocking read (it is opened non-blocking and checked with fstat).
    """
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(p, st.st_mode)
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as fh:
            st = os.fstat(fh.fileno())  # the file actually opened (it may have been swapped since stat)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(p, st.st_mode)
            if st.st_size == 0:
                raise ImageDecodeError(f"{p}: empty file (0 bytes)")
            if st.st_size > MAX_FILE_BYTES:
                raise ImageDecodeError(
                    f"{p}: file is {st.st_size / 2**20:.0f} MiB, above the {MAX_FILE_BYTES // 2**20} MiB limit "
                    "for one image"
                )
            return fh.read()
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{p}: file not found (moved or deleted during the run?)") from None
    except PermissionError:
        raise ImageDecodeError(f"{p}: permission denied; check that the file is readable") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{p}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageDecodeError(f"{p}: cannot read file ({exc.strerror or exc})") from None


# Wide greyscale modes (16/32-bit integer, 32-bit float) are scaled to 8 bits in strips of about this
# many pixels, so converting never holds more than one float/int64 strip besides the image itself.
STRIP_PIXELS = 1 << 20
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _strips(height: int, width: int):
    rows = max(1, STRIP_PIXELS // max(1, width))
    for y0 in range(0, height, rows):
        yield y0, min(height, y0 + rows)


def _gray_to_uint8(im: Image.Image) -> np.ndarray:
    """A wide greyscale image as (H, W) uint8, converted strip by strip (no full-size float64 copy).

    16-bit: round(v * 255 / 65535); 32-bit integer: the same when any value exceeds 255, else v itself
    (clipped to 0..255); float: min..max stretched to 0..255 (NaN -> 0).
    """
    width, height = im.size
    out = np.empty((height, width), np.uint8)
    mode = im.mode

    def strip(y0: int, y1: int) -> np.ndarray:
        return np.asarray(im.crop((0, y0, width, y1)))

    if mode == "F":
        lo, hi = np.inf, -np.inf
        for y0, y1 in _strips(height, width):
            a = strip(y0, y1)
            if np.isnan(a).all():
                continue
            lo, hi = min(lo, float(np.nanmin(a))), max(hi, float(np.nanmax(a)))
        scale = 255.0 / (hi - lo) if np.isfinite(lo) and hi > lo else 0.0
        lo = lo if np.isfinite(lo) else 0.0
        for y0, y1 in _strips(height, width):
            a = strip(y0, y1).astype(np.float64)
            out[y0:y1] = np.clip(np.nan_to_num((a - lo) * scale), 0, 255).astype(np.uint8)
        return out
    wide = mode.startswith("I;16")
    if not wide:  # mode "I": 8-bit data stored in 32 bits, unless some value needs more
        wide = any(int(strip(y0, y1).max(initial=0)) > 255 for y0, y1 in _strips(height, width))
    for y0, y1 in _strips(height, width):
        a = strip(y0, y1)
        if mode == "I":
            a = np.clip(a, 0, 65535 if wide else 255)
        if wide:
            # round(v * 255 / 65535) exactly, in integers (v / 257 is never halfway between integers)
            a = (a.astype(np.uint32) * 255 + 32767) // 65535
        out[y0:y1] = a
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited onto white (decode_rgb avoids this copy)."""
    mode = im.mode
    if mode in _WIDE_GRAY:
        return Image.fromarray(_gray_to_uint8(im), mode="L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return im.convert("RGB")
    return im


def _rgb_strips(im: Image.Image, factor: int = 1) -> np.ndarray:
    """Any PIL mode as (H, W, 3) uint8, converted strip by strip into one array (the whole-image route,
    np.asarray(im.convert("RGB")), held two or three full copies at once: 1.7 GB for a 13000x13000 16-bit RGB
    PNG). With `factor` > 1 each strip is also box-reduced by it (reduce_factor: huge images scored by a
    small model)."""
    width, height = im.size
    rows = max(factor, (STRIP_PIXELS // max(1, width)) // factor * factor)
    out = np.empty((-(-height // factor), -(-width // factor), 3), np.uint8)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        strip = _to_rgb(im.crop((0, y0, width, y1)))
        if factor > 1:
            strip = strip.reduce(factor)
        out[y0 // factor: y0 // factor + strip.size[1]] = np.asarray(strip, dtype=np.uint8)
    return out


# Images above this many pixels, decoded for a model whose input is `max_side` (core.photos.preprocess), are
# box-reduced while they are converted (by a whole factor that keeps the short side at least 2 x max_side):
# a 169 MP photo never becomes a 480 MiB array to be resized to 299 x 299. Smaller photos (phone cameras,
# 12-48 MP) are converted at full size, exactly as before.
REDUCE_ABOVE_PIXELS = 64_000_000


def reduce_factor(width: int, height: int, max_side: int | None) -> int:
    if not max_side or width * height <= REDUCE_ABOVE_PIXELS:
        return 1
    return max(1, min(width, height) // (2 * int(max_side)))


class DecodeBudget:
    """Bytes of decoded pixels the decode threads of this process may hold at once (shared by all of them).

    A decode waits until its need fits beside the others'; a decode larger than the whole budget runs alone.
    So a folder of huge photos is decoded one at a time however many decode threads there are, and the
    memory of a run's decoding stays near one huge photo's. Set by $MPOX_TRIAGE_DECODE_BUDGET_MB.
    """

    def __init__(self, capacity: int):
        import threading

        self.capacity = int(capacity)
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    def acquire(self, need: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + need <= self.capacity)
            self.used += need
            self.peak = max(self.peak, self.used)

    def release(self, need: int) -> None:
        with self._cond:
            self.used -= need
            self._cond.notify_all()

    def hold(self, need: int):
        import contextlib

        @contextlib.contextmanager
        def held():
            self.acquire(need)
            try:
                yield
            finally:
                if need >= TRIM_ABOVE_BYTES:
                    _return_freed_memory()   # before the next decode may start, in whichever thread
                self.release(need)
        return held()


# After a decode this large, freed memory is handed back to the system (glibc's malloc_trim): else each
# decode thread's malloc arena keeps the last huge photo's pixels and a run's memory grows with its threads
# (four 13000x13000 photos on two threads: 1.34 GiB instead of 0.69).
TRIM_ABOVE_BYTES = 128 * 2**20


def _return_freed_memory() -> None:
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes
            import ctypes.util

            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):   # not glibc (macOS, Windows, musl): nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


DECODE_BUDGET = DecodeBudget(int(float(os.environ.get("MPOX_TRIAGE_DECODE_BUDGET_MB", "768")) * 2**20))


def decode_memory(width: int, height: int, mode: str, factor: int = 1) -> int:
    """What decoding needs: PIL's pixels (RGB is held as 4 bytes a pixel) and the (reduced) RGB array."""
    pil = int(width) * int(height) * (4 if mode in ("RGB", "YCbCr", "LAB", "HSV") else _MODE_BYTES.get(mode, 4))
    out = -(-int(width) // factor) * -(-int(height) // factor) * 3
    return pil + out


# Bytes per pixel of decoded PIL modes (anything unlisted counts as 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
               "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4,
               "I": 4, "F": 4}
# Refuse images whose decoded pixels (pixel count x bytes per pixel of the mode) exceed this, before
# decoding: with the RGB result beside them, peak memory for one image stays near 1 GB at most.
MAX_DECODED_BYTES = 512 * 2**20


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Memory the decoder needs for an image's pixels: pixel count x bytes per pixel of its mode."""
    return int(width) * int(height) * _MODE_BYTES.get(mode, 4)


def decode_rgb(data: bytes, name: str | os.PathLike = "<bytes>", max_side: int | None = None) -> np.ndarray:
    """Decode encoded image bytes into an (H, W, 3) uint8 array.

    `max_side` lets JPEG decoding downscale on the fly (PIL draft mode) when the model needs
    far fewer pixels than the photo has; the result is still at least `max_side` on its short side.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageDecodeError(f"{name}: image has no pixels ({width}x{height})")
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(
                    f"{name}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels), above the "
                    f"{MAX_PIXELS / 1e6:.0f} MP safety limit (possible decompression bomb); downscale it to review it"
                )
            if max_side and im.format == "JPEG":
                im.draft("RGB", (max_side, max_side))
            im.seek(0)  # first frame of animated GIF/WebP/TIFF
            need = decoded_bytes(width, height, im.mode)
            if need > MAX_DECODED_BYTES:
                raise ImageDecodeError(
                    f"{name}: image is {width}x{height} in mode {im.mode}, {need / 2**20:.0f} MiB once decoded, "
                    f"above the {MAX_DECODED_BYTES // 2**20} MiB safety limit; downscale it to review it"
                )
            factor = reduce_factor(*im.size, max_side)   # im.size: after a JPEG draft
            with DECODE_BUDGET.hold(decode_memory(*im.size, im.mode, factor)):
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # no copy of the whole image when nothing turns
                if im.mode in _WIDE_GRAY:
                    gray = _gray_to_uint8(im)
                    im.close()  # free the 16/32-bit pixels before the RGB array is made
                    arr = np.empty((*gray.shape, 3), np.uint8)
                    arr[...] = gray[..., None]
                    del gray
                else:
                    arr = _rgb_strips(im, factor)
                    im.close()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"{name}: refused before decoding: above the {MAX_PIXELS / 1e6:.0f} MP safety limit "
            f"(possible decompression bomb; {exc})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            text = "file is truncated (incomplete download or copy?)"
        raise ImageDecodeError(f"{name}: cannot decode image: {text}") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageDecodeError(f"{name}: unexpected decoded shape {arr.shape}")
    return arr


def load_rgb(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Read and decode one file into an (H, W, 3) uint8 array, or raise ImageDecodeError."""
    return decode_rgb(read_file_bytes(path), path, max_side=max_side)


def load_rgb_with_hash(path: str | os.PathLike, max_side: int | None = None) -> tuple[np.ndarray | None, str | None, str]:
    """(array or None, file SHA-256 or None, error message or ""); never raises for a bad file."""
    try:
        data = read_file_bytes(path)
    except ImageDecodeError as exc:
        return None, None, str(exc)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return decode_rgb(data, path, max_side=max_side), digest, ""
    except ImageDecodeError as exc:
        return None, digest, str(exc)
