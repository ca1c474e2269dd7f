"""Per-photo scope check: is this a photograph of skin at all, or a blank, text, screenshot, chart,
drawing, noise or a tiny image?

The score is the probability of "not a photo" from a small logistic regression over cheap image
statistics of the decoded RGB (intensity and colour spread, edges, flat areas, near-white/black and
vivid pixels, skin-tone fraction in YCrCb, colour count, entropy, pixel-to-pixel correlation,
high-frequency energy). Images smaller than TINY_SIDE pixels on a side score 1 by rule. The model is
fitted on the shared train photos against generated non-photos (`generate_non_photos`), and its
limit chosen on val, leave-one-collection-out and a second generated set, never on test
(bench/scope_fit.py refits it; docs/shift.md has the figures). It is independent of the
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

PARAMS_FILE = Path(__file__).resolve().parent.parent / "resources" / "scope_model.json"
# A photo this small on its short side cannot show a lesion the model could judge.
TINY_SIDE = 32
WORK_SIDE = 160  # statistics are computed with the long side resized to this many pixels

FEATURES = (
    "gray_std", "sat_mean", "sat_std", "edge_density", "frac_white", "frac_black", "frac_vivid",
    "frac_skin", "colour_count", "entropy", "flat_fraction", "neighbour_corr", "hf_ratio", "chroma_mean",
    "dominant_colour", "axis_edges",
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
    return np.array([
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
    ], dtype=np.float64)


def expand(feats: np.ndarray) -> np.ndarray:
    """What the logistic regression reads: each statistic and its log (most are fractions near 0 or 1)."""
    f = np.atleast_2d(np.asarray(feats, dtype=np.float64))
    return np.hstack([f, np.log(np.clip(f, 0.0, None) + 1e-3)])


# -- the fitted model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeModel:
    """Standardise, then logistic regression; `limit`: flag when the score is above it."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    limit: float
    info: dict

    def score_features(self, feats: np.ndarray) -> np.ndarray:
        z = (expand(feats) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))

    def to_json(self) -> dict:
        return {"format_version": 1, "features": list(FEATURES), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": float(self.intercept),
                "limit": float(self.limit), "info": self.info}

    @classmethod
    def from_json(cls, data: dict) -> "ScopeModel":
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError("scope model was fitted on other features; refit it with bench/scope_fit.py")
        return cls(np.asarray(data["mean"], float), np.asarray(data["scale"], float), np.asarray(data["coef"], float),
                   float(data["intercept"]), float(data["limit"]), dict(data.get("info", {})))

    def save(self, path: str | Path = PARAMS_FILE) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


def fit_scope_model(in_scope: np.ndarray, non_photo: np.ndarray, limit: float = 0.5, C: float = 1.0,
                    info: dict | None = None) -> ScopeModel:
    """Fit on feature rows of photos (label 0) and non-photos (label 1); classes weighted equally."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = expand(np.vstack([in_scope, non_photo]))
    y = np.r_[np.zeros(len(in_scope)), np.ones(len(non_photo))]
    scaler = StandardScaler().fit(x)
    lr = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(scaler.transform(x), y)
    return ScopeModel(scaler.mean_, np.where(scaler.scale_ > 0, scaler.scale_, 1.0), lr.coef_[0],
                      float(lr.intercept_[0]), float(limit), dict(info or {}))


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
    verdict = ("above the limit: this does not look like a skin photo (blank, text, screen, drawing, chart, "
               "noise or too small); the prediction is meaningless" if score > limit
               else "within the limit: looks like a photo")
    return f"Not-a-skin-photo score {score:.2f} (limit {limit:.2f}): {verdict}"


# -- generated non-photos (fit, threshold choice and tests; nothing is downloaded) -------------------------

KINDS = ("blank", "gradient", "text", "screenshot", "chart", "drawing", "noise", "tiny")
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
