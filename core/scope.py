"""Per-photo scope check: is this a photograph of skin at all, or a blank, text, screenshot, chart,
drawing, noise, a tiny image, or something made from a skin photo that is not one (a colour-inverted
photo, a false-colour or heat-map rendering, a screenshot of a gallery or web page of several photos,
blurred noise)?

The score is the probability of "not a photo" from small logistic regressions over cheap image
statistics of the decoded RGB (intensity and colour spread, edges, flat areas, near-white/black and
vivid pixels, skin-tone fraction in YCrCb, colour count, entropy, pixel-to-pixel correlation,
high-frequency energy; skin's R > G > B order and its hue, whether colour follows brightness as in a
colour map, straight lines across the image and their period, the shape of the power spectrum): one
regression per family of non-photos (FAMILIES), the score the highest. Images smaller than TINY_SIDE
pixels on a side score 1 by rule. The model is fitted on the shared train photos against generated
non-photos (`generate_non_photos`, and `generate_from_photos` made from train photos), and its limit
chosen on val and train out of fold, never on test (bench/scope_fit.py refits it; docs/scope.md has
the figures). It is independent of the classifier: the same score for every model.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

PARAMS_FILE = Path(__file__).resolve().parent.parent / "resources" / "scope_model.json"
# A photo this small on its short side cannot show a lesion the model could judge.
TINY_SIDE = 32
WORK_SIDE = 160  # statistics are computed with the long side resized to this many pixels

FEATURES = (
    "gray_std", "sat_mean", "sat_std", "edge_density", "frac_white", "frac_black", "frac_vivid",
    "frac_skin", "colour_count", "entropy", "flat_fraction", "neighbour_corr", "hf_ratio", "chroma_mean",
    "dominant_colour", "axis_edges", "skin_order", "reverse_order", "hue_far", "hue_entropy", "chroma_fit",
    "long_lines", "centre_skin_order", "grid_period", "line_peaks", "hue_cos", "hue_sin", "spectrum_slope",
    "spectrum_bend",
)


def _work_image(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = WORK_SIDE / max(h, w)
    if scale == 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)


def scope_features(rgb: np.ndarray) -> np.ndarray:
    """The image statistics (len(FEATURES),) of an (H, W, 3) uint8 RGB image."""
    img = np.ascontiguousarray(_work_image(np.asarray(rgb, dtype=np.uint8)))
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    g = gray.astype(np.float64)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    s, v = hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1], ycc[..., 2]
    skin = (cr >= 135) & (cr <= 180) & (cb >= 85) & (cb <= 135) & (ycc[..., 0] > 40)
    i16 = img.astype(np.int16)
    flat_x = np.abs(np.diff(i16, axis=1)).sum(axis=2) == 0
    flat_y = np.abs(np.diff(i16, axis=0)).sum(axis=2) == 0
    flat = (flat_x[:-1, :] & flat_y[:, :-1]).mean() if min(img.shape[:2]) > 1 else 1.0
    quant = (img >> 4).astype(np.int32)
    codes = (quant[..., 0] << 8) | (quant[..., 1] << 4) | quant[..., 2]
    counts = np.bincount(codes.ravel(), minlength=4096)
    hist = np.bincount((gray >> 2).ravel(), minlength=64) / gray.size
    nz = hist[hist > 0]
    if g.shape[1] > 1 and g.std() > 1e-6:
        a, b = g[:, :-1].ravel(), g[:, 1:].ravel()
        corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-6 and b.std() > 1e-6 else 1.0
    else:
        corr = 1.0
    lap = np.abs(cv2.Laplacian(g, cv2.CV_64F)).mean()
    gx = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    strong = mag > max(20.0, np.percentile(mag, 90))
    # Text, screens, charts and drawings are made of horizontal and vertical strokes; photos are not.
    axis = ((np.minimum(np.abs(gx), np.abs(gy)) < 0.18 * mag) & strong).sum() / max(1, strong.sum())
    chroma = (img.max(axis=2).astype(np.float64) - img.min(axis=2)) / 255.0
    return np.r_[np.array([
        g.std() / 64.0,
        s.mean(),
        s.std(),
        (cv2.Canny(gray, 50, 150) > 0).mean(),
        np.all(img >= 235, axis=2).mean(),
        np.all(img <= 20, axis=2).mean(),
        ((s > 0.8) & (v > 0.6)).mean(),
        skin.mean(),
        np.log1p(np.count_nonzero(counts)) / np.log(4097),
        float(-(nz * np.log2(nz)).sum() / 6.0),
        flat,
        np.nan_to_num(corr, nan=1.0),
        lap / (g.std() + 4.0),
        chroma.mean(),
        counts.max() / codes.size,
        axis,
    ], dtype=np.float64), _colour_stats(img, hsv, chroma), _long_lines(g), _centre_order(img, chroma),
        _grid_stats(rgb), _mean_hue(hsv, chroma), _spectrum(g)]


def _mean_hue(hsv: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Chroma-weighted mean hue as a vector (cos, sin): skin is red to orange, inverted skin cyan."""
    ang = hsv[..., 0].astype(np.float64) * (np.pi / 90.0)
    wsum = chroma.sum() + 1e-9
    return np.array([(chroma * np.cos(ang)).sum() / wsum, (chroma * np.sin(ang)).sum() / wsum])


def _spectrum(g: np.ndarray) -> np.ndarray:
    """Slope and bend of the radially averaged log power spectrum against log frequency: photos fall
    off as a straight line (1/f^a); blurred noise is flat, then drops steeply (a bend)."""
    side = 64
    if min(g.shape) < 8:
        return np.zeros(2)
    small = cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA)
    power = np.abs(np.fft.fftshift(np.fft.fft2(small - small.mean()))) ** 2
    yy, xx = np.mgrid[0:side, 0:side] - side // 2
    radius = np.hypot(xx, yy).astype(np.int64)
    radial = np.bincount(radius.ravel(), power.ravel()) / np.maximum(np.bincount(radius.ravel()), 1)
    f = np.arange(2, side // 2)
    lf, lp = np.log(f), np.log(radial[f] + 1e-6)
    bend, slope, _ = np.polyfit(lf - lf.mean(), lp, 2)
    return np.array([slope / 4.0, bend / 4.0])


def _colour_stats(img: np.ndarray, hsv: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Skin has R > G > B and hues from red to orange, and its colour varies independently of its
    brightness. An inverted photo has B > G > R; a false-colour rendering has hues skin never has, or
    (hot, copper: skin-like hues) colour that is a function of brightness alone."""
    r, g, b = (img[..., i].astype(np.int16) for i in range(3))
    coloured = chroma > 0.06
    n = max(1, int(coloured.sum()))
    skin_order = ((r >= g) & (g >= b) & coloured).sum() / n
    reverse_order = ((b >= g) & (g >= r) & coloured).sum() / n
    hue = hsv[..., 0]  # OpenCV: 0..179, red at both ends
    far = ((hue >= 25) & (hue < 160) & coloured).sum() / n
    hist = np.bincount((hue[coloured] // 10).ravel(), weights=chroma[coloured].ravel(), minlength=18)
    hist = hist / max(hist.sum(), 1e-9)
    nz = hist[hist > 0]
    hue_entropy = float(-(nz * np.log(nz)).sum() / np.log(18)) if nz.size else 0.0
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    lbin = (lab[:, 0] // 8).astype(np.int64)
    cnt = np.bincount(lbin, minlength=32)
    within = 0.0
    for c in (1, 2):
        s1 = np.bincount(lbin, weights=lab[:, c], minlength=32)
        s2 = np.bincount(lbin, weights=lab[:, c] ** 2, minlength=32)
        within += float((s2 - s1 ** 2 / np.maximum(cnt, 1)).sum()) / len(lbin)
    total = float(lab[:, 1].var() + lab[:, 2].var())
    # 1: colour is a function of brightness (a colour map); ~0: independent (a photo, or grey).
    chroma_fit = max(0.0, 1.0 - within / (total + 4.0)) * total / (total + 4.0)
    return np.array([skin_order, reverse_order, far, hue_entropy, chroma_fit], dtype=np.float64)


def _centre_order(img: np.ndarray, chroma: np.ndarray) -> float:
    """skin_order of the central half: the subject, whatever colour the backdrop is."""
    h, w = img.shape[:2]
    c = img[h // 4: h - h // 4 or h, w // 4: w - w // 4 or w].astype(np.int16)
    coloured = chroma[h // 4: h - h // 4 or h, w // 4: w - w // 4 or w] > 0.06
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    return float(((r >= g) & (g >= b) & coloured).sum() / max(1, int(coloured.sum())))


GRID_SIDE = 320  # tile gaps of a screenshot survive at this size; at WORK_SIDE they blur away


def _grid_stats(rgb: np.ndarray) -> np.ndarray:
    """Straight edges across the whole image and their repetition: a grid of tiles (a gallery, a web
    page of thumbnails) has many, at a regular spacing; a photo has few (a frame) and no period."""
    h, w = rgb.shape[:2]
    scale = min(1.0, GRID_SIDE / max(h, w))
    small = rgb if scale == 1 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                              interpolation=cv2.INTER_AREA)
    g = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY).astype(np.float64)
    if min(g.shape) < 16:
        return np.zeros(2)
    period, peaks = 0.0, 0
    for prof in (np.abs(np.diff(g, axis=1)).mean(axis=0), np.abs(np.diff(g, axis=0)).mean(axis=1)):
        hp = prof - cv2.GaussianBlur(prof.reshape(1, -1), (0, 0), 4).ravel()  # keep sharp lines only
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
DERIVED_KINDS = ("inverted", "false_colour", "gallery", "blurred_noise")


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
    """Probability-like score in [0, 1] that the image is not a skin photo; above SCOPE_LIMIT: out of scope."""
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
               "chart, inverted or false colour, noise or too small); no mpox / not-mpox call" if score > limit
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


_DERIVED = {"inverted": _gen_inverted, "false_colour": _gen_false_colour, "gallery": _gen_gallery,
            "blurred_noise": _gen_blurred_noise}


def generate_from_photos(photos: list[np.ndarray], n: int, seed: int = 0,
                         kinds: tuple[str, ...] = DERIVED_KINDS) -> list[tuple[str, np.ndarray]]:
    """`n` non-photos [(kind, RGB uint8)] made from the skin `photos` (inverted, false colour or heat map,
    gallery or web-page screenshot of several, blurred noise of their colours), the kinds in turn; seeded."""
    if not photos:
        raise ValueError("generate_from_photos needs at least one photo")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        out.append((kind, _jpeg(_DERIVED[kind](rng, photos), rng)))
    return out
