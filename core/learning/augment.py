"""Deterministic image augmentation (numpy/OpenCV) on the uint8 model input, as named "views".

A view id names one transformed copy of an image, e.g. `identity`, `hflip`, `crop@0.35#2`,
`zoomout@0.5#0`, `aug#3`. The part after `#` is an instance number: the random parameters come
from a generator seeded by (view id, image hash), so a view is the same every time it is computed
(which is what lets core.learning.features cache its embedding) and different instances differ.

Why these: the training photos are tight 224x224 crops, the photos the app sees are often whole
web photos. Random resized crops and zoom-out (the lesion smaller in the frame, reflected border)
cover both directions of that scale gap; flips, rotation, colour/brightness jitter, blur and JPEG
re-compression cover camera and web-pipeline differences.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("identity", "hflip", "vflip", "crop", "zoomout", "rot", "color", "blur", "jpeg", "aug", "augz")
_VIEW_RE = re.compile(r"^(?P<kind>[a-z]+)(?:@(?P<strength>[0-9.]+))?(?:#(?P<k>\d+))?$")

# Default strengths (see apply_view): crop = smallest area fraction kept; zoomout = smallest size of the
# image inside the canvas; rot = max degrees; color/blur/jpeg/aug = 1.0 nominal strength.
DEFAULT_STRENGTH = {"crop": 0.35, "zoomout": 0.5, "rot": 20.0, "color": 1.0, "blur": 1.0, "jpeg": 1.0,
                    "aug": 1.0, "augz": 1.0}


@dataclass(frozen=True)
class View:
    kind: str
    strength: float | None
    k: int

    @property
    def id(self) -> str:
        s = "" if self.strength is None else f"@{self.strength:g}"
        return f"{self.kind}{s}" + (f"#{self.k}" if self.kind not in ("identity", "hflip", "vflip") else "")


def parse_view(view_id: str) -> View:
    m = _VIEW_RE.match(view_id.strip())
    if not m or m.group("kind") not in KINDS:
        raise ValueError(f"Unknown augmentation view {view_id!r}; use e.g. identity, hflip, crop@0.35#0, "
                         f"zoomout@0.5#0, rot@20#0, color#0, blur#0, jpeg#0, aug#0, augz#0 (kinds: {', '.join(KINDS)})")
    st = m.group("strength")
    return View(m.group("kind"), float(st) if st else None, int(m.group("k") or 0))


def default_views(n_random: int = 8, kind: str = "aug") -> list[str]:
    """identity, hflip and `n_random` instances of a random pipeline (`aug`, or `augz` with zoom-out)."""
    return ["identity", "hflip"] + [f"{kind}#{k}" for k in range(n_random)]


def view_rng(view_id: str, image_key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{view_id}|{image_key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# --- single transforms (all take and return (S, S, 3) uint8 or (H, W, 3) uint8) -------------------


def hflip(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:, ::-1])


def vflip(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[::-1])


def random_resized_crop(img: np.ndarray, rng: np.random.Generator, min_area: float = 0.35,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """A random crop of min_area..1 of the area (log-uniform aspect ratio), resized back to the input size."""
    h, w = img.shape[:2]
    for _ in range(10):
        area = rng.uniform(min_area, 1.0) * h * w
        r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(area * r))), int(round(np.sqrt(area / r)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = img[y:y + ch, x:x + cw]
            return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    return img.copy()


def zoom_out(img: np.ndarray, rng: np.random.Generator, min_scale: float = 0.5) -> np.ndarray:
    """Shrink the image to min_scale..1 of its size inside a reflected-border canvas (lesion smaller in frame)."""
    h, w = img.shape[:2]
    s = rng.uniform(min_scale, 1.0)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    top = int(rng.integers(0, h - nh + 1))
    left = int(rng.integers(0, w - nw + 1))
    return cv2.copyMakeBorder(small, top, h - nh - top, left, w - nw - left, cv2.BORDER_REFLECT_101)


def rotate(img: np.ndarray, rng: np.random.Generator, max_degrees: float = 20.0) -> np.ndarray:
    h, w = img.shape[:2]
    angle = rng.uniform(-max_degrees, max_degrees)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def color_jitter(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness +-25%, contrast +-25%, saturation +-30%, hue +-5 degrees, gamma 0.8..1.25 (x strength)."""
    x = img.astype(np.float32)
    x *= 1 + strength * rng.uniform(-0.25, 0.25)                           # brightness
    mean = x.mean()
    x = (x - mean) * (1 + strength * rng.uniform(-0.25, 0.25)) + mean      # contrast
    x = np.clip(x, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + strength * rng.uniform(-2.5, 2.5)) % 180  # OpenCV hue is 0..180
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + strength * rng.uniform(-0.3, 0.3)), 0, 255)
    x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    gamma = np.exp(strength * rng.uniform(np.log(0.8), np.log(1.25)))
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    return lut[x]


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    sigma = rng.uniform(0.3, 1.8) * strength * img.shape[0] / 224
    return cv2.GaussianBlur(img, (0, 0), sigmaX=max(sigma, 0.1))


def jpeg_recompress(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    quality = int(round(95 - strength * rng.uniform(0, 60)))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return img.copy()
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def random_pipeline(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                    zoom: bool = False) -> np.ndarray:
    """The training pipeline: scale change (crop, or zoom-out with `zoom`), flip, rotation, colour, blur, JPEG."""
    out = img
    u = rng.random()
    if zoom and u < 0.35:
        out = zoom_out(out, rng, 0.5)
    elif u < 0.8:
        out = random_resized_crop(out, rng, 0.35)
    if rng.random() < 0.5:
        out = hflip(out)
    if rng.random() < 0.5:
        out = rotate(out, rng, 20.0 * strength)
    if rng.random() < 0.8:
        out = color_jitter(out, rng, strength)
    if rng.random() < 0.3:
        out = gaussian_blur(out, rng, strength)
    if rng.random() < 0.3:
        out = jpeg_recompress(out, rng, strength)
    return np.ascontiguousarray(out)


def apply_view(img: np.ndarray, view_id: str, image_key: str = "") -> np.ndarray:
    """The view `view_id` of a uint8 image; deterministic for a given (view id, image key)."""
    v = parse_view(view_id)
    if v.kind == "identity":
        return img
    if v.kind == "hflip":
        return hflip(img)
    if v.kind == "vflip":
        return vflip(img)
    rng = view_rng(v.id, image_key)
    st = DEFAULT_STRENGTH[v.kind] if v.strength is None else v.strength
    single = _RANDOM_VIEWS.get(v.kind)
    if single is not None:
        return single(img, rng, st)
    return random_pipeline(img, rng, st, zoom=v.kind == "augz")


# Views that apply one random transform: kind -> function(img, rng, strength).
_RANDOM_VIEWS = {
    "crop": random_resized_crop,
    "zoomout": zoom_out,
    "rot": rotate,
    "color": color_jitter,
    "blur": gaussian_blur,
    "jpeg": jpeg_recompress,
}
