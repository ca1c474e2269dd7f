"""Thumbnails for the PDF: re-encoded from pixels (no EXIF, no original file), drawn one at a time."""

from __future__ import annotations

import io
import os
from typing import Callable

import numpy as np
from PIL import Image
from reportlab.lib import colors
from reportlab.lib.utils import ImageReader
from reportlab.platypus import Flowable

from core.photos.images import ImageDecodeError, load_rgb


THUMB_MAX_SIDE = 96        # pixels: sharp at the ~34 pt printed size (about 140 dpi)
THUMB_QUALITY = 70
THUMB_PT = 30.0            # printed size of a thumbnail


def _encode_jpeg(im: Image.Image, quality: int = THUMB_QUALITY) -> bytes:
    buf = io.BytesIO()
    # A fresh image built from a pixel array has no info/EXIF; save() is given none either.
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def make_thumbnail(path: str | os.PathLike, max_side: int = THUMB_MAX_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    """A small JPEG of the photo with no metadata at all (re-encoded from pixels; EXIF orientation applied).

    Raises ImageDecodeError when the file cannot be read.
    """
    rgb = load_rgb(path, max_side=max_side)
    im = Image.fromarray(rgb, "RGB")
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _encode_jpeg(im, quality)


def _jet(x: np.ndarray) -> np.ndarray:
    """A jet-like colour map (0 blue .. 1 red) without matplotlib."""
    x = np.clip(x, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def make_gradcam_thumbnail(path: str | os.PathLike, cam: np.ndarray, max_side: int = THUMB_MAX_SIDE,
                           alpha: float = 0.45) -> bytes:
    """Thumbnail of a Grad-CAM: a 2-D heat map (any size, values 0..1) is blended over the photo;
    an (H, W, 3) uint8 array is taken as an already-blended overlay."""
    cam = np.asarray(cam)
    if cam.ndim == 3 and cam.shape[2] == 3:
        im = Image.fromarray(cam.astype(np.uint8), "RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return _encode_jpeg(im)
    if cam.ndim != 2:
        raise ValueError(f"{path}: Grad-CAM must be a 2-D heat map or an RGB overlay, got shape {cam.shape}")
    base = Image.fromarray(load_rgb(path, max_side=max_side), "RGB")
    base.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    heat = cam.astype(np.float32)
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    heat_im = Image.fromarray((heat * 255).astype(np.uint8), "L").resize(base.size, Image.Resampling.BILINEAR)
    colour = _jet(np.asarray(heat_im, dtype=np.float32) / 255.0) * 255.0
    blended = np.asarray(base, dtype=np.float32) * (1 - alpha) + colour * alpha
    return _encode_jpeg(Image.fromarray(blended.clip(0, 255).astype(np.uint8), "RGB"))


class _Thumb(Flowable):
    """Decodes and draws one thumbnail only when its page is drawn, so no photo stays in memory."""

    def __init__(self, make: Callable[[], bytes], on_drawn: Callable[[], None] | None = None):
        super().__init__()
        self._make = make
        self._on_drawn = on_drawn

    def wrap(self, aw, ah):  # noqa: D401 (ReportLab API)
        return THUMB_PT, THUMB_PT

    def draw(self):
        c = self.canv
        try:
            data = self._make()
        except (ImageDecodeError, OSError, ValueError):
            data = None
        if data is None:
            c.setFillColor(colors.HexColor("#eeeeee"))
            c.rect(0, 0, THUMB_PT, THUMB_PT, stroke=0, fill=1)
            c.setFillColor(colors.HexColor("#888888"))
            c.setFont("Helvetica", 6)
            c.drawCentredString(THUMB_PT / 2, THUMB_PT / 2 - 2, "no preview")
        else:
            img = ImageReader(io.BytesIO(data))
            iw, ih = img.getSize()
            s = THUMB_PT / max(iw, ih)
            w, h = iw * s, ih * s
            c.drawImage(img, (THUMB_PT - w) / 2, (THUMB_PT - h) / 2, w, h)
        if self._on_drawn is not None:
            self._on_drawn()
