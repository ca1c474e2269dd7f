"""Per-photo scope check: is this a photograph of skin at all, or a blank, text, screenshot, chart,
drawing, noise, a tiny image, or something made from a skin photo that is not one (a colour-inverted
photo, a false-colour or heat-map rendering, a screenshot of a gallery or web page of several photos,
blurred noise, a flat fill or plain gradient in skin colours)?

The photo is resized once to a small working image (`scope_image`, WORK_SIDE on its long side), and
every statistic is computed on it (`work_features`): so it is one score per photo whatever size a model
decodes the photo at, and it costs a few milliseconds for a 224 px crop or a 12 MP photo. Statistics:
intensity and colour spread, edges, flat areas, near-white/black and vivid pixels, skin-tone fraction in
YCrCb, colour count, entropy, pixel-to-pixel correlation, high-frequency energy, grain; skin's R > G > B
order and its hue, whether colour follows brightness as in a colour map, straight lines across the image
and their period, the shape of the power spectrum; all of the content inside a uniform frame (an old
slide's mount, a scan's margin), whose share is a statistic of its own. The score is the probability of
"not a photo" from one small logistic regression per family of non-photos (FAMILIES), the highest of
them. Images smaller than TINY_SIDE pixels on a side score 1 by rule. The model is fitted on the shared
train photos and hard variants of them (`generate_hard_in_scope`: frames, colour casts, darker and
lighter renderings, wider views, grain, old slides) against generated non-photos (`generate_non_photos`,
and `generate_from_photos` made from train photos); its limit is chosen on val and train out of fold,
never on test (bench/scope_fit.py refits it; docs/scope.md has the figures). It is independent of the
classifier: the same score for every model.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

PARAMS_FILE = Path(__file__).resolve().parents[2] / "resources" / "scope_model.json"
# A photo this small on its short side cannot show a lesion the model could judge.
TINY_SIDE = 32
WORK_SIDE = 128  # every statistic is computed once, on the photo resized to this many pixels on its long side
BORDER_MAX = 0.3  # a uniform frame (a slide's mount, a scan's margin) up to this share of a side is set aside

FEATURES = (
    "gray_std", "sat_mean", "sat_std", "edge_density", "frac_white", "frac_black", "frac_vivid",
    "frac_skin", "colour_count", "entropy", "flat_fraction", "neighbour_corr", "hf_ratio", "chroma_mean",
    "dominant_colour", "axis_edges", "skin_order", "reverse_order", "hue_far", "hue_entropy", "chroma_fit",
    "coarse_chroma", "chroma_noise",
    "long_lines", "centre_skin_order", "grid_period", "line_peaks", "hue_cos", "hue_sin", "spectrum_slope",
    "spectrum_bend", "border", "grain",
)


def scope_image(rgb: np.ndarray) -> np.ndarray:
    """The working image: `rgb` resized once to WORK_SIDE on its long side (area when shrinking, bilinear when
    enlarging a small image); every statistic is computed on it, so the score does not depend on the size a
    model decodes the photo at, and costs the same for a 224 px crop and a 12 MP photo."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    step = max(rgb.shape[:2]) // (2 * WORK_SIDE)
    if step > 1:  # a strided view first: an area resize of a whole 12 MP photo costs ~35 ms, of this ~1 ms
        rgb = rgb[::step, ::step]
    h, w = rgb.shape[:2]
    scale = WORK_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = np.ascontiguousarray(rgb)
    if size == (w, h):
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def scope_features(rgb: np.ndarray) -> np.ndarray:
    """The image statistics (len(FEATURES),) of an (H, W, 3) uint8 RGB image (of its scope_image)."""
    return work_features(scope_image(rgb))


def _border(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) rows and columns of a uniform frame around the image (each side at most
    BORDER_MAX of it): an old slide's mount, a scan's margin, a letterbox."""
    h, w = gray.shape
    if min(h, w) < 16:
        return 0, 0, 0, 0
    smooth = cv2.blur(gray, (3, 3)).astype(np.float32)
    row_flat = smooth.std(axis=1) < 6.0
    col_flat = smooth.std(axis=0) < 6.0

    def run(lines: np.ndarray, flat: np.ndarray, limit: int) -> int:
        """Uniform lines from the edge in, kept only where the content starts with a step away from their
        colour (a frame's inner edge; a smooth stretch of skin has none)."""
        stop = np.flatnonzero(~flat[:limit])
        n = int(stop[0]) if stop.size else limit
        if n == 0 or n >= len(lines):
            return 0
        return n if float(np.abs(lines[n] - lines[:n].mean()).mean()) > 20.0 else 0

    mh, mw = int(h * BORDER_MAX), int(w * BORDER_MAX)
    return (run(smooth, row_flat, mh), run(smooth[::-1], row_flat[::-1], mh),
            run(smooth.T, col_flat, mw), run(smooth.T[::-1], col_flat[::-1], mw))


_HUE_ANGLE = np.arange(180) * (np.pi / 90.0)
_HUE_COS, _HUE_SIN = np.cos(_HUE_ANGLE), np.sin(_HUE_ANGLE)
_SPEC_SIDE = 64
_yy, _xx = np.mgrid[0:_SPEC_SIDE, 0:_SPEC_SIDE] - _SPEC_SIDE // 2
_SPEC_RADIUS = np.hypot(_xx, _yy).astype(np.int64).ravel()
_SPEC_COUNT = np.maximum(np.bincount(_SPEC_RADIUS), 1)
_SPEC_F = np.arange(2, _SPEC_SIDE // 2)
_SPEC_LF = np.log(_SPEC_F) - np.log(_SPEC_F).mean()
del _yy, _xx


def _all_channels(mask: np.ndarray) -> np.ndarray:
    """mask.all(axis=2) for an (H, W, 3) mask, as two elementwise ANDs (numpy's reduction over an axis of 3 is
    several times slower; the result is the same array)."""
    return mask[..., 0] & mask[..., 1] & mask[..., 2]


def _same_colour(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels of `a` equal to those of `b` in every channel: ~np.any(a - b, axis=2), as elementwise tests."""
    return (a[..., 0] == b[..., 0]) & (a[..., 1] == b[..., 1]) & (a[..., 2] == b[..., 2])


def work_features(full: np.ndarray) -> np.ndarray:
    """The statistics of a working image (scope_image): of its content inside any uniform frame, the frame's
    share of the image, and the straight lines across the whole image."""
    full_gray = cv2.cvtColor(full, cv2.COLOR_RGB2GRAY)
    top, bottom, left, right = _border(full_gray)
    h0, w0 = full_gray.shape
    img = np.ascontiguousarray(full[top: h0 - bottom, left: w0 - right])
    border = 1.0 - img.shape[0] * img.shape[1] / float(h0 * w0)
    gray = full_gray[top: h0 - bottom, left: w0 - right]
    g = gray.astype(np.float32)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0]
    s, v = hsv[..., 1].astype(np.float32) / 255.0, hsv[..., 2].astype(np.float32) / 255.0
    chroma = s * v  # (max - min) / 255
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1], ycc[..., 2]
    skin = (cr >= 135) & (cr <= 180) & (cb >= 85) & (cb <= 135) & (ycc[..., 0] > 40)
    i16 = img.astype(np.int16)
    if min(img.shape[:2]) > 1:
        flat_x = _same_colour(i16[:, 1:], i16[:, :-1])
        flat_y = _same_colour(i16[1:], i16[:-1])
        flat = float((flat_x[:-1, :] & flat_y[:, :-1]).mean())
    else:
        flat = 1.0
    quant = (img >> 4).astype(np.int32)
    codes = (quant[..., 0] << 8) | (quant[..., 1] << 4) | quant[..., 2]
    counts = np.bincount(codes.ravel(), minlength=4096)
    hist = np.bincount((gray >> 2).ravel(), minlength=64) / gray.size
    nz = hist[hist > 0]
    gstd = float(g.std())
    corr = 1.0
    if g.shape[1] > 1 and gstd > 1e-6:
        a, b = g[:, :-1] - g[:, :-1].mean(), g[:, 1:] - g[:, 1:].mean()
        den = float(np.sqrt((a * a).mean() * (b * b).mean()))
        corr = float((a * b).mean()) / den if den > 1e-9 else 1.0
    lap = float(np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean())
    # Grain: what a 3x3 median takes away, against the spread (sensor and scanner noise, film grain; none on
    # a rendering or a gradient).
    grain = float(np.abs(g - cv2.medianBlur(gray, 3)).mean()) / (gstd + 4.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    # numpy, not cv2.magnitude: that one gave other last bits when decode threads called it at once, so one photo
    # could get two scores (tests/test_scope.py checks one score whatever the threads).
    mag = np.sqrt(gx * gx + gy * gy)
    strong = mag > max(20.0, float(np.partition(mag.ravel(), int(0.9 * (mag.size - 1)))[int(0.9 * (mag.size - 1))]))
    # Text, screens, charts and drawings are made of horizontal and vertical strokes; photos are not.
    axis = ((np.minimum(np.abs(gx), np.abs(gy)) < 0.18 * mag) & strong).sum() / max(1, int(strong.sum()))
    return np.r_[np.array([
        gstd / 64.0,
        s.mean(),
        s.std(),
        (cv2.Canny(gray, 50, 150) > 0).mean(),
        _all_channels(img >= 235).mean(),
        _all_channels(img <= 20).mean(),
        ((s > 0.8) & (v > 0.6)).mean(),
        skin.mean(),
        np.log1p(np.count_nonzero(counts)) / np.log(4097),
        float(-(nz * np.log2(nz)).sum() / 6.0),
        flat,
        np.nan_to_num(corr, nan=1.0),
        lap / (gstd + 4.0),
        chroma.mean(),
        counts.max() / codes.size,
        axis,
    ], dtype=np.float64), _colour_stats(img, hue, chroma), _long_lines(full_gray.astype(np.float32)),
        _centre_order(i16, chroma), _grid_stats(full_gray), _mean_hue(hue, chroma), _spectrum(g),
        border, grain]


def _mean_hue(hue: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Chroma-weighted mean hue as a vector (cos, sin): skin is red to orange, inverted skin cyan."""
    w = np.bincount(hue.ravel(), weights=chroma.ravel(), minlength=180)[:180]
    wsum = w.sum() + 1e-9
    return np.array([(w * _HUE_COS).sum() / wsum, (w * _HUE_SIN).sum() / wsum])


def _spectrum(g: np.ndarray) -> np.ndarray:
    """Slope and bend of the radially averaged log power spectrum against log frequency: photos fall
    off as a straight line (1/f^a); blurred noise is flat, then drops steeply (a bend)."""
    if min(g.shape) < 8:
        return np.zeros(2)
    small = cv2.resize(g, (_SPEC_SIDE, _SPEC_SIDE), interpolation=cv2.INTER_AREA)
    power = np.abs(np.fft.fft2(small - small.mean())) ** 2
    radial = np.bincount(_SPEC_RADIUS, np.fft.fftshift(power).ravel()) / _SPEC_COUNT
    lp = np.log(radial[_SPEC_F] + 1e-6)
    bend, slope, _ = np.polyfit(_SPEC_LF, lp, 2)
    return np.array([slope / 4.0, bend / 4.0])


def _colour_stats(img: np.ndarray, hue: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Skin has R > G > B and hues from red to orange, and its colour varies independently of its
    brightness. An inverted photo has B > G > R; a false-colour rendering has hues skin never has, or
    (hot, copper: skin-like hues) colour that is a function of brightness alone."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    coloured = chroma > 0.06
    n = max(1, int(coloured.sum()))
    skin_order = ((r >= g) & (g >= b) & coloured).sum() / n
    reverse_order = ((b >= g) & (g >= r) & coloured).sum() / n
    far = ((hue >= 25) & (hue < 160) & coloured).sum() / n
    hist = np.bincount((hue[coloured] // 10).ravel(), weights=chroma[coloured].ravel(), minlength=18)
    hist = hist / max(hist.sum(), 1e-9)
    nz = hist[hist > 0]
    hue_entropy = float(-(nz * np.log(nz)).sum() / np.log(18)) if nz.size else 0.0
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    lbin = (lab[:, 0] >> 3).astype(np.int64)
    cnt = np.bincount(lbin, minlength=32)
    within, total = 0.0, 0.0
    for c in (1, 2):
        x = lab[:, c].astype(np.float64)
        s1 = np.bincount(lbin, weights=x, minlength=32)
        s2 = np.bincount(lbin, weights=x * x, minlength=32)
        within += float((s2 - s1 ** 2 / np.maximum(cnt, 1)).sum()) / len(lbin)
        total += float(x.var())
    # 1: colour is a function of brightness (a colour map); ~0: independent (a photo, or grey).
    chroma_fit = max(0.0, 1.0 - within / (total + 4.0)) * total / (total + 4.0)
    # Colour that changes over large areas while brightness does not (a heat map's blobs over a photo): the
    # variance of an 8 x 8 block average of a*, b* against that of L.
    coarse = cv2.resize(lab.reshape(img.shape), (8, 8), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(float)
    coarse_chroma = float(coarse[:, 1].var() + coarse[:, 2].var()) / (float(coarse[:, 0].var()) + 16.0)
    # How far colour strays from what brightness alone would give, in a*b* units: a colour map keeps only
    # JPEG's noise; skin's colour varies on its own, however strong or faint its tone.
    chroma_noise = float(np.sqrt(max(within, 0.0))) / 10.0
    return np.array([skin_order, reverse_order, far, hue_entropy, chroma_fit, coarse_chroma, chroma_noise])


def _centre_order(i16: np.ndarray, chroma: np.ndarray) -> float:
    """skin_order of the central half: the subject, whatever colour the backdrop is."""
    h, w = i16.shape[:2]
    c = i16[h // 4: h - h // 4 or h, w // 4: w - w // 4 or w]
    coloured = chroma[h // 4: h - h // 4 or h, w // 4: w - w // 4 or w] > 0.06
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    return float(((r >= g) & (g >= b) & coloured).sum() / max(1, int(coloured.sum())))


def _grid_stats(gray: np.ndarray) -> np.ndarray:
    """Straight edges across the whole image and their repetition: a grid of tiles (a gallery, a web
    page of thumbnails) has many, at a regular spacing; a photo has few (a frame) and no period."""
    g = gray.astype(np.float32)
    if min(g.shape) < 16:
        return np.zeros(2)
    period, peaks = 0.0, 0
    for prof in (np.abs(np.diff(g, axis=1)).mean(axis=0), np.abs(np.diff(g, axis=0)).mean(axis=1)):
        prof = prof.astype(np.float64)
        hp = prof - cv2.GaussianBlur(prof.reshape(1, -1), (0, 0), 3).ravel()  # keep sharp lines only
        med = np.median(prof)
        mad = np.median(np.abs(prof - med)) + 0.5
        peaks += int((prof > med + 6 * mad).sum())
        n = len(hp)
        z = (hp - hp.mean()) / (hp.std() + 1e-9)
        ac = np.correlate(z, z, "full")[n - 1:] / n
        lo, hi = max(4, n // 12), n // 2
        if hi > lo:
            period = max(period, float(ac[lo:hi].max()))
    return np.array([period, min(1.0, peaks / 20.0)])


def _long_lines(g: np.ndarray) -> float:
    """Share of rows and columns along which a straight edge runs for over 40% of the image: the gaps
    between the tiles of a gallery and the bars of a screen; photos have a few at most (a frame)."""
    if min(g.shape) < 3:
        return 0.0
    dy = np.abs(np.diff(g, axis=0)) > 12
    dx = np.abs(np.diff(g, axis=1)) > 12
    rows = (dy.mean(axis=1) > 0.4).sum()
    cols = (dx.mean(axis=0) > 0.4).sum()
    return float(rows + cols) / float(g.shape[0] + g.shape[1])


def expand(feats: np.ndarray) -> np.ndarray:
    """What the logistic regression reads: each statistic and its log (most are fractions near 0 or 1)."""
    f = np.atleast_2d(np.asarray(feats, dtype=np.float64))
    return np.hstack([f, np.log(np.clip(f, 0.0, None) + 1e-3)])


KINDS = ("blank", "gradient", "text", "screenshot", "chart", "drawing", "noise", "tiny")
# Non-photos made from skin photos (generate_from_photos): they share a photo's texture, so they are the hard cases.
DERIVED_KINDS = ("inverted", "false_colour", "gallery", "blurred_noise", "flat")


# -- the fitted model --------------------------------------------------------------------------------------


# Each family of non-photos has its own tell (an inverted photo its hue, a gallery its grid lines), so
# the model is one logistic regression per family against the photos and the score is the highest of
# them: a union of half-spaces, where one hyperplane for all families had to give up the hard ones.
FAMILIES: dict[str, tuple[str, ...]] = {"synthetic": KINDS, **{k: (k,) for k in DERIVED_KINDS}}


@dataclass(frozen=True)
class ScopeModel:
    """Standardise, then one logistic regression per head (coef (H, D), intercept (H,)); the score is the
    highest head's probability; `limit`: flag when the score is above it."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    limit: float
    info: dict
    heads: tuple[str, ...] = ("all",)

    def score_features(self, feats: np.ndarray) -> np.ndarray:
        z = (expand(feats) - self.mean) / self.scale
        logits = z @ np.atleast_2d(self.coef).T + np.atleast_1d(self.intercept)
        return (1.0 / (1.0 + np.exp(-logits))).max(axis=1)

    def to_json(self) -> dict:
        return {"format_version": 2, "features": list(FEATURES), "heads": list(self.heads),
                "mean": _rounded(self.mean), "scale": _rounded(self.scale),
                "coef": [_rounded(c) for c in np.atleast_2d(self.coef)],
                "intercept": _rounded(np.atleast_1d(self.intercept)), "limit": float(self.limit), "info": self.info}

    @classmethod
    def from_json(cls, data: dict) -> "ScopeModel":
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError("scope model was fitted on other features; refit it with bench/scope_fit.py")
        coef = np.atleast_2d(np.asarray(data["coef"], float))
        return cls(np.asarray(data["mean"], float), np.asarray(data["scale"], float), coef,
                   np.atleast_1d(np.asarray(data["intercept"], float)), float(data["limit"]),
                   dict(data.get("info", {})), tuple(data.get("heads", ["all"] * len(coef))))

    def save(self, path: str | Path = PARAMS_FILE) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


def _rounded(values: np.ndarray) -> list[float]:
    # 6 significant digits: far below the scores' noise, and the shipped file stays small.
    return [float(f"{v:.6g}") for v in np.asarray(values, float).ravel()]


def fit_scope_model(in_scope: np.ndarray, non_photo: np.ndarray, limit: float = 0.5, C: float = 1.0,
                    info: dict | None = None, kinds: np.ndarray | None = None) -> ScopeModel:
    """Fit on feature rows of photos (label 0) and non-photos (label 1), classes weighted equally: one
    head for all non-photos, or with `kinds` (each non-photo row's kind) one head per FAMILIES entry."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_in, x_out = expand(in_scope), expand(non_photo)
    scaler = StandardScaler().fit(np.vstack([x_in, x_out]))
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    if kinds is None:
        groups = {"all": np.ones(len(x_out), bool)}
    else:
        kinds = np.asarray(kinds)
        groups = {name: np.isin(kinds, members) for name, members in FAMILIES.items()}
        groups = {name: m for name, m in groups.items() if m.any()}
    coef, intercept = [], []
    for mask in groups.values():
        x = (np.vstack([x_in, x_out[mask]]) - scaler.mean_) / scale
        y = np.r_[np.zeros(len(x_in)), np.ones(int(mask.sum()))]
        lr = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(x, y)
        coef.append(lr.coef_[0])
        intercept.append(float(lr.intercept_[0]))
    return ScopeModel(scaler.mean_, scale, np.array(coef), np.array(intercept), float(limit), dict(info or {}),
                      tuple(groups))


@lru_cache(maxsize=1)
def load_scope_model(path: str | None = None) -> ScopeModel:
    return ScopeModel.from_json(json.loads(Path(path or PARAMS_FILE).read_text(encoding="utf-8")))


def _limit() -> float:
    try:
        return load_scope_model().limit
    except (OSError, ValueError, KeyError):
        return 0.5


SCOPE_LIMIT: float = _limit()


def scope_score(rgb: np.ndarray, model: ScopeModel | None = None) -> float:
    """Probability-like score in [0, 1] that the image is not a skin photo; above SCOPE_LIMIT: out of scope.
    One score per photo: computed on its working image (scope_image), whatever size `rgb` was decoded at."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or min(rgb.shape[:2]) < TINY_SIDE:
        return 1.0
    model = model or load_scope_model()
    return float(model.score_features(scope_features(rgb))[0])


def is_out_of_scope(score: float | None, limit: float | None = None) -> bool:
    return score is not None and score > (SCOPE_LIMIT if limit is None else limit)


def describe(score: float | None, limit: float | None = None) -> str:
    """One line for the detail pane and the PDF: the score, its limit and what it means."""
    limit = SCOPE_LIMIT if limit is None else limit
    if score is None:
        return "Not-a-skin-photo score: not computed"
    verdict = ("above the limit: this does not look like a skin photo (blank, text, screen, gallery, drawing, "
               "chart, inverted or false colour, noise, a flat fill or too small); no mpox / not-mpox call"
               if score > limit
               else "within the limit: looks like a photo")
    return f"Not-a-skin-photo score {score:.2f} (limit {limit:.2f}): {verdict}"


# -- generated non-photos (fit, threshold choice and tests; nothing is downloaded) -------------------------

_WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had "
          "by word but not what all were we when your can said there use an each which she do how their if "
          "will up other about out many then them these so some her would make like him into time has look "
          "two more write go see number no way could people my than first water been call who oil its now "
          "find long down day did get come made may part patient report results table figure page").split()


def _jpeg(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    if rng.random() < 0.5:
        return rgb
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(rng.integers(60, 96)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _size(rng: np.random.Generator) -> tuple[int, int]:
    w = int(rng.choice([224, 256, 320, 400, 480, 640, 800]))
    h = int(w * rng.choice([0.5, 0.75, 1.0, 1.33, 1.5]))
    return w, max(h, 64)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _text(draw, rng, w, h, fg, x0=None, y0=None, x1=None, y1=None, size=None) -> None:
    from PIL import ImageFont

    size = size or int(rng.integers(9, 22))
    font = ImageFont.load_default(size=size)
    x0, y0 = x0 if x0 is not None else int(rng.integers(4, 30)), y0 if y0 is not None else int(rng.integers(4, 30))
    x1, y1 = x1 or w - 4, y1 or h - 4
    y = y0
    while y + size < y1:
        words, line = int(rng.integers(3, 14)), []
        for _ in range(words):
            line.append(str(rng.choice(_WORDS)))
        draw.text((x0, y), " ".join(line)[: max(1, (x1 - x0) // max(1, size // 2))], fill=fg, font=font)
        y += int(size * rng.uniform(1.2, 1.8))
        if rng.random() < 0.1:
            y += size * 2


def _gen_blank(rng, w, h):
    arr = np.empty((h, w, 3), np.float64)
    arr[:] = rng.choice([(0, 0, 0), (255, 255, 255), _colour(rng)]) if rng.random() < 0.5 else _colour(rng)
    arr += rng.normal(0, rng.choice([0, 0.5, 2, 4]), arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _gen_gradient(rng, w, h):
    c0, c1 = np.array(_colour(rng), float), np.array(_colour(rng), float)
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.6:
        a = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(a) + yy * np.sin(a)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    return (c0 + (c1 - c0) * t[..., None]).astype(np.uint8)


def _gen_text(rng, w, h):
    from PIL import Image, ImageDraw

    dark = rng.random() < 0.2
    bg = (int(rng.integers(0, 50)),) * 3 if dark else tuple(int(x) for x in rng.integers(225, 256, 3))
    fg = (int(rng.integers(180, 256)),) * 3 if dark else (int(rng.integers(0, 80)),) * 3
    im = Image.new("RGB", (w, h), bg)
    _text(ImageDraw.Draw(im), rng, w, h, fg)
    return np.asarray(im)


def _gen_screenshot(rng, w, h):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (w, h), tuple(int(x) for x in rng.integers(200, 256, 3)))
    d = ImageDraw.Draw(im)
    bar = int(rng.integers(20, 50))
    d.rectangle([0, 0, w, bar], fill=_colour(rng))
    side = int(rng.integers(0, w // 3))
    if side:
        d.rectangle([0, bar, side, h], fill=tuple(int(x) for x in rng.integers(150, 256, 3)))
        _text(d, rng, side, h, (30, 30, 30), x0=6, y0=bar + 6, x1=side - 4, size=11)
    for _ in range(int(rng.integers(2, 10))):
        x0, y0 = int(rng.integers(side, w - 20)), int(rng.integers(bar, h - 15))
        d.rounded_rectangle([x0, y0, x0 + int(rng.integers(30, 150)), y0 + int(rng.integers(12, 40))],
                            radius=4, fill=_colour(rng), outline=(80, 80, 80))
    _text(d, rng, w, h, (20, 20, 20), x0=side + 10, y0=bar + 10, size=int(rng.integers(10, 16)))
    return np.asarray(im)


def _gen_chart(rng, w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 50
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    kind = int(rng.integers(0, 5))
    k = int(rng.integers(3, 12))
    if kind == 0:
        ax.bar(range(k), rng.uniform(1, 10, k), color=[np.r_[rng.uniform(0, 1, 3)] for _ in range(k)])
    elif kind == 1:
        for _ in range(int(rng.integers(1, 4))):
            ax.plot(np.cumsum(rng.normal(size=k * 5)), lw=rng.uniform(1, 3))
    elif kind == 2:
        ax.scatter(rng.normal(size=k * 10), rng.normal(size=k * 10), s=rng.uniform(5, 40), c=rng.uniform(size=k * 10))
    elif kind == 3:
        ax.pie(rng.uniform(1, 5, min(k, 7)))
    else:
        ax.imshow(rng.uniform(size=(k, k)), cmap=str(rng.choice(["viridis", "hot", "coolwarm", "gray"])))
    ax.set_title(" ".join(rng.choice(_WORDS, 3)))
    if rng.random() < 0.5:
        ax.grid(True)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _gen_drawing(rng, w, h):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (w, h), (255, 255, 255) if rng.random() < 0.7 else _colour(rng))
    d = ImageDraw.Draw(im)
    filled = rng.random() < 0.5
    skin = [(241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]
    for _ in range(int(rng.integers(3, 25))):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(2, 6)))]
        shape = int(rng.integers(0, 3))
        fill = (skin[int(rng.integers(len(skin)))] if rng.random() < 0.4 else _colour(rng)) if filled else None
        width = int(rng.integers(1, 5))
        if shape == 0:
            d.line(pts, fill=(0, 0, 0), width=width)
        elif shape == 1:
            x0, y0 = pts[0]
            r = int(rng.integers(5, max(6, min(w, h) // 3)))
            d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=fill, outline=(0, 0, 0), width=width)
        elif len(pts) >= 3:
            d.polygon(pts, fill=fill, outline=(0, 0, 0))
    return np.asarray(im)


def _gen_noise(rng, w, h):
    kind = int(rng.integers(0, 4))
    if kind == 0:
        arr = rng.integers(0, 256, (h, w, 3))
    elif kind == 1:
        arr = np.repeat(rng.normal(128, rng.uniform(20, 80), (h, w, 1)), 3, axis=2)
    elif kind == 2:
        arr = np.where(rng.random((h, w, 1)) < 0.5, 0, 255) * np.ones(3)
    else:
        arr = rng.normal(_colour(rng), rng.uniform(20, 60), (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _gen_tiny(rng, w, h):
    side = int(rng.integers(1, TINY_SIDE))
    return rng.integers(0, 256, (side, max(1, int(side * rng.uniform(0.5, 2))), 3)).astype(np.uint8)


_GENERATORS = {"blank": _gen_blank, "gradient": _gen_gradient, "text": _gen_text, "screenshot": _gen_screenshot,
               "chart": _gen_chart, "drawing": _gen_drawing, "noise": _gen_noise, "tiny": _gen_tiny}


def generate_non_photos(n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[tuple[str, np.ndarray]]:
    """`n` generated non-photos [(kind, RGB uint8)], the kinds in turn; seeded and offline."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        w, h = _size(rng)
        out.append((kind, _jpeg(_GENERATORS[kind](rng, w, h), rng)))
    return out


# -- non-photos made FROM skin photos (they share a photo's texture, so they are the hard cases) -----------

# Colour maps a false-colour or heat-map rendering uses: OpenCV's and matplotlib's, skin-like ones included
# (hot, copper, pink, Oranges): they keep R > G > B, so only the colour-follows-brightness statistic tells them.
_CV2_MAPS = ("AUTUMN", "CIVIDIS", "COOL", "DEEPGREEN", "HOT", "HSV", "INFERNO", "JET", "MAGMA", "OCEAN",
             "PARULA", "PINK", "PLASMA", "RAINBOW", "SPRING", "SUMMER", "TURBO", "TWILIGHT", "VIRIDIS", "WINTER")
_MPL_MAPS = ("viridis", "plasma", "inferno", "magma", "cividis", "jet", "turbo", "coolwarm", "RdBu_r", "Spectral_r",
             "hot", "afmhot", "gist_heat", "copper", "YlOrRd", "Oranges", "Reds", "seismic", "gnuplot", "rainbow",
             "nipy_spectral", "cubehelix", "Greens", "Blues", "PuRd", "bwr")
# Heat-map overlays (Grad-CAM and the like) use maps that are blue or violet at zero, so the whole photo
# is tinted; a black-at-zero map (hot, inferno) over a photo only darkens it around a glow.
_OVERLAY_MAPS = ("jet", "turbo", "rainbow", "viridis", "plasma", "coolwarm", "Spectral_r", "cividis", "winter")


def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of a matplotlib colour map."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def _rescale(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = int(rng.choice([160, 224, 299, 400, 512]))
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def _colourful(rgb: np.ndarray) -> bool:
    """Whether a photo has colour at all: the negative of a grey photo is a grey photo, which no colour
    statistic can tell (see docs/scope.md), so inverted examples are made from colour photos."""
    small = rgb[::4, ::4].astype(np.int16)
    return float((small.max(axis=2) - small.min(axis=2)).mean()) > 12.0


def _gen_inverted(rng, photos):
    colour = [p for p in photos if _colourful(p)] or photos
    rgb = 255 - colour[int(rng.integers(len(colour)))]
    if rng.random() < 0.3:  # a viewer's "negative" after some contrast or brightness change
        rgb = np.clip(rgb.astype(np.float64) * rng.uniform(0.8, 1.2) + rng.uniform(-25, 25), 0, 255).astype(np.uint8)
    return _rescale(rgb, rng)


def _heat(rng, h, w) -> np.ndarray:
    """A smooth activation map in [0, 1] (what a Grad-CAM or saliency heat map looks like)."""
    heat = np.zeros((h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, 5))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.4) * min(h, w)
        heat += rng.uniform(0.3, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    return heat / (heat.max() + 1e-9)


def _gen_false_colour(rng, photos):
    rgb = photos[int(rng.integers(len(photos)))]
    mode = rng.random()
    if mode < 0.75:  # a colour map applied to brightness or to one channel
        src = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rng.random() < 0.7 else rgb[..., int(rng.integers(3))]
        if rng.random() < 0.5:
            src = cv2.normalize(src, None, 0, 255, cv2.NORM_MINMAX)
        if rng.random() < 0.5:
            name = str(rng.choice(_CV2_MAPS))
            out = cv2.cvtColor(cv2.applyColorMap(src, getattr(cv2, f"COLORMAP_{name}")), cv2.COLOR_BGR2RGB)
        else:
            out = _lut(str(rng.choice(_MPL_MAPS)))[src]
    else:  # a heat map blended over the photo
        h, w = rgb.shape[:2]
        heat = (_heat(rng, h, w) * 255).astype(np.uint8)
        alpha = rng.uniform(0.45, 0.8)
        out = (alpha * _lut(str(rng.choice(_OVERLAY_MAPS)))[heat] + (1 - alpha) * rgb).astype(np.uint8)
    return _rescale(out, rng)


def _thumb(photo: np.ndarray, w: int, h: int) -> np.ndarray:
    """`photo` cropped to the aspect of w x h and resized (a gallery's square or rectangular tile)."""
    ph, pw = photo.shape[:2]
    s = max(w / pw, h / ph)
    big = cv2.resize(photo, (max(w, round(pw * s)), max(h, round(ph * s))), interpolation=cv2.INTER_AREA)
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return big[y0:y0 + h, x0:x0 + w]


def _gen_gallery(rng, photos):
    """A screenshot of a phone gallery or of a web page: a grid of several photos with UI chrome."""
    from PIL import Image, ImageDraw

    phone = rng.random() < 0.5
    dark = rng.random() < 0.35
    bg = tuple(int(x) for x in (rng.integers(0, 40, 3) if dark else rng.integers(235, 256, 3)))
    fg = (230, 230, 230) if dark else (30, 30, 30)
    if phone:
        w = int(rng.choice([360, 412, 540, 720]))
        h = int(w * rng.uniform(1.9, 2.2))
        cols, gap = int(rng.integers(2, 6)), int(rng.integers(1, 7))
        margin = int(rng.integers(0, 12))
    else:
        w = int(rng.choice([800, 1024, 1280, 1366]))
        h = int(w * rng.uniform(0.55, 0.75))
        cols, gap = int(rng.integers(3, 7)), int(rng.integers(4, 24))
        margin = int(rng.integers(10, w // 8))
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    top = 0
    if phone:
        bar = max(12, h // 40)
        _text(d, rng, w, bar, fg, x0=8, y0=2, y1=bar, size=max(9, bar - 6))
        top = bar + int(rng.integers(h // 20, h // 8))
        d.text((margin + 8, bar + 8), str(rng.choice(["Photos", "Gallery", "Recents", "Camera", "Album"])),
               fill=fg, font=_font(max(12, w // 18)))
    else:
        chrome = int(rng.integers(50, 90))
        d.rectangle([0, 0, w, chrome], fill=tuple(int(x) for x in rng.integers(200, 240, 3)))
        d.rounded_rectangle([w // 8, chrome // 2, w * 7 // 8, chrome - 8], radius=8, fill=(255, 255, 255))
        d.text((w // 8 + 12, chrome // 2 + 4), "https://" + "/".join(rng.choice(_WORDS, 3)), fill=(60, 60, 60),
               font=_font(12))
        top = chrome + int(rng.integers(20, 80))
        _text(d, rng, w, top, fg, x0=margin, y0=chrome + 8, y1=top - 4, size=int(rng.integers(14, 24)))
    bottom = h - (int(rng.integers(h // 16, h // 9)) if phone else 0)
    tile = (w - 2 * margin - (cols - 1) * gap) // cols
    tile_h = tile if rng.random() < 0.7 else int(tile * rng.uniform(0.6, 1.3))
    caption = 0 if phone or rng.random() < 0.4 else 20
    y = top
    while y + tile_h // 2 < bottom:
        for c in range(cols):
            x = margin + c * (tile + gap)
            th = min(tile_h, bottom - y)
            im.paste(Image.fromarray(_thumb(photos[int(rng.integers(len(photos)))], tile, th)), (x, y))
            if caption:
                d.text((x, y + tile_h + 3), " ".join(rng.choice(_WORDS, 2)), fill=fg, font=_font(12))
        y += tile_h + gap + caption
    if phone:  # navigation bar with a few icons
        d.rectangle([0, bottom, w, h], fill=bg)
        for i in range(4):
            cx = (2 * i + 1) * w // 8
            r = max(4, (h - bottom) // 6)
            d.ellipse([cx - r, bottom + r, cx + r, bottom + 3 * r], outline=fg, width=2)
    return np.asarray(im)


def _gen_blurred_noise(rng, photos):
    w, h = _size(rng)
    mean = photos[int(rng.integers(len(photos)))].reshape(-1, 3).mean(axis=0) if rng.random() < 0.5 else _colour(rng)
    sd = rng.uniform(15, 90)
    if rng.random() < 0.5:
        arr = rng.normal(np.asarray(mean, float), sd, (h, w, 3))
    else:
        arr = np.asarray(mean, float) + rng.normal(0, sd, (h, w, 1)) * rng.uniform(0.5, 1.2, 3)
    sigma = float(rng.uniform(1, 10))
    arr = cv2.GaussianBlur(arr, (0, 0), sigma)
    # Blurring shrinks the spread; stretch it back so the result is not a flat colour.
    arr = (arr - arr.mean()) * min(8.0, sd / (arr.std() + 1e-6)) * rng.uniform(0.4, 1.0) + arr.mean()
    return np.clip(arr, 0, 255).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _gen_flat(rng, photos):
    """A flat fill or a plain gradient in the colours of a skin photo (two of its pixels), with or without a
    little noise: no texture at all, whatever its colour."""
    rgb = photos[int(rng.integers(len(photos)))].reshape(-1, 3)
    c0, c1 = (rgb[int(rng.integers(len(rgb)))].astype(np.float64) for _ in range(2))
    w, h = _size(rng)
    mode = rng.random()
    if mode < 0.25:
        arr = np.broadcast_to(c0, (h, w, 3)).copy()
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        if mode < 0.7:
            a = rng.uniform(0, 2 * np.pi)
            t = xx * np.cos(a) + yy * np.sin(a)
        else:
            t = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
        if rng.random() < 0.3:  # a smooth (eased) ramp
            t = t * t * (3 - 2 * t)
        arr = c0 + (c1 - c0) * t[..., None]
    arr = arr + rng.normal(0, float(rng.choice([0, 0, 0.5, 1, 2, 3])), arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


_DERIVED = {"inverted": _gen_inverted, "false_colour": _gen_false_colour, "gallery": _gen_gallery,
            "blurred_noise": _gen_blurred_noise, "flat": _gen_flat}


def generate_from_photos(photos: list[np.ndarray], n: int, seed: int = 0,
                         kinds: tuple[str, ...] = DERIVED_KINDS) -> list[tuple[str, np.ndarray]]:
    """`n` non-photos [(kind, RGB uint8)] made from the skin `photos` (inverted, false colour or heat map,
    gallery or web-page screenshot of several, blurred noise of their colours, flat fills and plain gradients
    in their colours), the kinds in turn; seeded."""
    if not photos:
        raise ValueError("generate_from_photos needs at least one photo")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        out.append((kind, _jpeg(_DERIVED[kind](rng, photos), rng)))
    return out


# -- hard photos that ARE in scope (skin photos as other collections hold them) --------------------------------

HARD_KINDS = ("border", "colour_cast", "darker", "lighter", "zoom_out", "grain", "old_slide", "small")


def _f(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64)


def _u8(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, 0, 255).astype(np.uint8)


def _hard_border(rng, rgb, photos=None):
    """A uniform frame (black, white, grey, cream, a slide mount's colour) of 3-20% a side, some with a thin
    inner line and a caption on a light margin."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    fill = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (240, 232, 210), (20, 20, 24), (200, 200, 205)]
    colour = tuple(int(c) for c in fill[int(rng.integers(len(fill)))])
    t, b, l, r = (int(s * rng.uniform(0.03, 0.2)) for s in (h, h, w, w))
    if rng.random() < 0.5:  # an even frame
        b, l, r = t, t, t
    im = Image.new("RGB", (w + l + r, h + t + b), colour)
    im.paste(Image.fromarray(rgb), (l, t))
    d = ImageDraw.Draw(im)
    if rng.random() < 0.3:
        line = tuple(int(c) for c in rng.integers(0, 256, 3))
        d.rectangle([l - 2, t - 2, l + w + 1, t + h + 1], outline=line, width=int(rng.integers(1, 3)))
    if sum(colour) > 500 and b > 14 and rng.random() < 0.5:
        d.text((l, t + h + 2), "Fig. %d %s" % (int(rng.integers(1, 9)), " ".join(rng.choice(_WORDS, 3))),
               fill=(30, 30, 30), font=_font(max(8, b // 2)))
    return np.asarray(im)


def _hard_cast(rng, rgb, photos=None):
    """White balance off, or a tinted scan: channel gains of up to +-25%, or a tint blended in."""
    if rng.random() < 0.5:
        gains = np.clip(1 + rng.normal(0, 0.12, 3), 0.75, 1.25)
        return _u8(_f(rgb) * gains)
    tints = [(112, 66, 20), (60, 90, 200), (60, 160, 80), (200, 60, 160), (230, 210, 60), (0, 150, 170)]
    tint = np.array(tints[int(rng.integers(len(tints)))], float)
    alpha = rng.uniform(0.1, 0.3)
    grey = _f(rgb).mean(axis=2, keepdims=True)
    return _u8((1 - alpha) * _f(rgb) + alpha * tint * grey / 128.0)


def _hard_darker(rng, rgb, photos=None):
    """A darker rendering (dark skin, under-exposure): brightness 30-70% with a gamma, the hue kept."""
    x = _f(rgb) / 255.0
    x = x ** rng.uniform(1.0, 1.8) * rng.uniform(0.3, 0.7)
    if rng.random() < 0.5:  # less saturated, as dark skin under flash often is
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * rng.uniform(0.6, 1.0)
    return _u8(x * 255)


def _hard_lighter(rng, rgb, photos=None):
    """A lighter rendering (pale skin, over-exposure, a washed-out print)."""
    x = _f(rgb) / 255.0
    x = x ** rng.uniform(0.45, 0.85)
    if rng.random() < 0.5:
        x = x * rng.uniform(0.6, 0.9) + rng.uniform(0.1, 0.35)
    return _u8(x * 255)


def _hard_zoom_out(rng, rgb, photos):
    """A wider view: the photo at 40-80% of the frame, around it its own surroundings (mirrored and blurred),
    another skin photo, or a plain cloth backdrop with some texture."""
    h, w = rgb.shape[:2]
    frac = rng.uniform(0.4, 0.8)
    H, W = int(h / frac), int(w / frac)
    mode = rng.random()
    if mode < 0.4:
        ty, tx = (H - h) // 2, (W - w) // 2
        canvas = cv2.copyMakeBorder(rgb, ty, H - h - ty, tx, W - w - tx, cv2.BORDER_REFLECT)
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(1, 5)) * rng.uniform(0.6, 1.1)
    elif mode < 0.7:
        other = photos[int(rng.integers(len(photos)))]
        canvas = _f(_thumb(other, W, H))
    else:
        colour = np.array(rng.choice([(235, 235, 235), (90, 130, 170), (70, 120, 90), (60, 60, 70), (200, 180, 150)]),
                          float)
        canvas = colour + rng.normal(0, rng.uniform(3, 12), (H, W, 1)) + rng.normal(0, 2, (H, W, 3))
        canvas = cv2.GaussianBlur(canvas, (0, 0), 1.0)
    canvas = _f(np.asarray(canvas))
    y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    canvas[y0:y0 + h, x0:x0 + w] = rgb
    return _u8(canvas)


def _hard_grain(rng, rgb, photos=None):
    """A scan or a phone photo of a print: grain, a little blur, heavy JPEG, a few dust specks."""
    x = _f(rgb)
    if rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    sd = rng.uniform(4, 15)
    x = x + (rng.normal(0, sd, x.shape[:2] + (1,)) if rng.random() < 0.5 else rng.normal(0, sd, x.shape))
    h, w = x.shape[:2]
    for _ in range(int(rng.integers(0, 12))):
        y, xx = int(rng.integers(h)), int(rng.integers(w))
        x[max(0, y - 1):y + 1, max(0, xx - 1):xx + 1] = rng.choice([10, 245])
    return _jpeg_q(_u8(x), int(rng.integers(30, 75)))


def _hard_old_slide(rng, rgb, photos=None):
    """An old slide: faded and tinted (yellow, magenta or sepia), a vignette, grain, in a dark or light mount."""
    x = _f(rgb)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.4, 0.9)
    tint = np.array([(1.08, 1.0, 0.8), (1.1, 0.9, 1.05), (1.1, 0.95, 0.75), (0.95, 1.0, 1.08)][int(rng.integers(4))])
    x = x * tint * rng.uniform(0.75, 1.05) + rng.uniform(0, 30)
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    x = x * (1 - rng.uniform(0.1, 0.45) * np.clip(r - 0.5, 0, None) ** 2)[..., None]
    x = x + rng.normal(0, rng.uniform(3, 9), x.shape[:2] + (1,))
    return _hard_border(rng, _u8(x), photos)


def _hard_small(rng, rgb, photos=None):
    """A thumbnail: 32-120 px on its short side (still above TINY_SIDE: a lesion can be seen), half of them
    with the sensor noise of a small camera at that scale."""
    h, w = rgb.shape[:2]
    s = rng.uniform(TINY_SIDE, 120) / min(h, w)
    small = cv2.resize(rgb, (max(TINY_SIDE, round(w * s)), max(TINY_SIDE, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        small = _u8(_f(small) + rng.normal(0, rng.uniform(3, 14), small.shape))
    return _jpeg_q(small, int(rng.integers(60, 95)))


def _jpeg_q(rgb: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


_HARD = {"border": _hard_border, "colour_cast": _hard_cast, "darker": _hard_darker, "lighter": _hard_lighter,
         "zoom_out": _hard_zoom_out, "grain": _hard_grain, "old_slide": _hard_old_slide, "small": _hard_small}


def _aspect_crop(rng, rgb):
    h, w = rgb.shape[:2]
    a = float(rng.choice([4 / 3, 3 / 2, 16 / 9]))
    if rng.random() < 0.5:
        return rgb[: max(1, round(w / a))] if w / a <= h else rgb
    return rgb[:, : max(1, round(h / a))] if h / a <= w else rgb


def generate_hard_in_scope(photos: list[np.ndarray], n: int, seed: int = 0,
                           kinds: tuple[str, ...] = HARD_KINDS) -> list[tuple[str, np.ndarray]]:
    """`n` skin photos as other collections hold them [(kind, RGB uint8)], made from `photos`: framed (slide
    mounts, margins, captions), colour casts and tints, darker and lighter renderings, wider views, scanner
    grain, old slides, thumbnails; 40% cropped to 4:3, 3:2 or 16:9 first, a third get a second change, some enlarged to
    400-1600 px. Seeded; the kinds in turn. They are IN scope: the proxy for photos from other collections."""
    if not photos:
        raise ValueError("generate_hard_in_scope needs at least one photo")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rgb = photos[int(rng.integers(len(photos)))]
        if rng.random() < 0.4:  # photos from elsewhere are rarely square: 4:3, 3:2, 16:9, either way up
            rgb = _aspect_crop(rng, rgb)
        rgb = _HARD[kind](rng, rgb, photos)
        if rng.random() < 0.33:
            other = [k for k in HARD_KINDS if k not in (kind, "old_slide", "border", "small")]
            rgb = _HARD[str(rng.choice(other))](rng, rgb, photos)
        if kind != "small" and rng.random() < 0.3:
            side = int(rng.choice([400, 800, 1600]))
            s = side / max(rgb.shape[:2])
            rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))),
                             interpolation=cv2.INTER_CUBIC)
        out.append((kind, _jpeg(rgb, rng)))
    return out
