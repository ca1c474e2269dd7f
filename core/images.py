"""Finding image files in a folder and decoding them safely into 8-bit RGB arrays.

Files are only ever opened read-only. Every way a file can be bad becomes an ImageDecodeError whose
message names the file and says what was wrong, so callers can turn it into an `error` row.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
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


def discover_images(folder: str | os.PathLike, errors: list[str] | None = None) -> list[Path]:
    """All image files under `folder`, recursively, in a stable (sorted) order.

    Hidden files and folders are skipped; symlinked folders are followed once (loops are cut);
    unreadable folders are noted in `errors` (when given) instead of stopping the walk.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"No such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"Not a folder: {root}")

    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()

    def walk(directory: Path) -> None:
        try:
            st = directory.stat()
        except OSError as exc:
            if errors is not None:
                errors.append(f"{directory}: cannot open folder ({exc.strerror or exc})")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # symlink loop or a folder reached twice
            return
        seen_dirs.add(key)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            if errors is not None:
                errors.append(f"{directory}: cannot list folder ({exc.strerror or exc})")
            return
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(Path(entry.path))
            elif is_image_name(entry.name):
                found.append(Path(entry.path))
        for sub in subdirs:
            walk(sub)

    walk(root)
    return found


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole file read-only, with user-facing errors."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size == 0:
            raise ImageDecodeError(f"{p}: empty file (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageDecodeError(
                f"{p}: file is {size / 2**20:.0f} MiB, above the {MAX_FILE_BYTES // 2**20} MiB limit for one image"
            )
        with open(p, "rb") as fh:
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


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited onto white."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = np.clip(np.nan_to_num((arr - lo) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
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
            im.load()
            im = ImageOps.exif_transpose(im) or im
            rgb = _to_rgb(im)
            arr = np.asarray(rgb, dtype=np.uint8)
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
