"""Pseudo-collections for the adaptation bench: group-wise halves of the shared train+val photos, one half
seen through a simulated site (crop, zoom-out, colour cast, lower resolution, border), embedded with a
shipped bundle's LiteRT runtime.

A "site" here is one fixed style (a camera, a framing, a light) with a little jitter per photo, so its
photos differ from the training photos the way a third collection's do, while the labels stay the
shared data's. The test split is never read. Embeddings are cached (keyed by the bundle's weights,
the photo's SHA-256 and the style) under --cache, so a rerun of bench/adaptation.py costs seconds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path(os.environ.get("MPOX_TRIAGE_BENCH_CACHE", "/work/wt/_cache/adaptloop"))


@dataclass(frozen=True)
class SiteStyle:
    """One simulated site: how its photos differ from the training photos."""
    name: str
    crop: float          # share of each side kept around a random centre (1 = no crop)
    zoom_out: float      # the photo shrunk to this share of the frame, the rest border (1 = none)
    colour: tuple        # per-channel gain (a colour cast)
    gamma: float         # brightness curve
    resolution: int      # long side the photo passes through (downscaled, then back up)
    border: tuple        # border colour (zoom-out fill)
    jitter: float = 0.05


STYLES = (
    SiteStyle("close-warm-lowres", crop=0.6, zoom_out=1.0, colour=(1.12, 0.98, 0.82), gamma=0.9, resolution=96,
              border=(0, 0, 0)),
    SiteStyle("far-cool-border", crop=1.0, zoom_out=0.65, colour=(0.88, 1.0, 1.15), gamma=1.15, resolution=160,
              border=(235, 235, 235)),
    SiteStyle("dim-green-phone", crop=0.8, zoom_out=0.85, colour=(0.92, 1.1, 0.9), gamma=1.3, resolution=72,
              border=(20, 20, 20)),
)


def apply_style(rgb: np.ndarray, style: SiteStyle, rng: np.random.Generator) -> np.ndarray:
    """`rgb` (H, W, 3) uint8 as the simulated site would have photographed it."""
    import cv2

    img = rgb.astype(np.float32)
    h, w = img.shape[:2]
    j = lambda v: v * (1 + rng.uniform(-style.jitter, style.jitter))  # noqa: E731 - a photo's own variation
    if style.crop < 1:
        keep = min(1.0, j(style.crop))
        ch, cw = max(8, int(h * keep)), max(8, int(w * keep))
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = img[y0:y0 + ch, x0:x0 + cw]
    gain = np.array([j(c) for c in style.colour], dtype=np.float32)
    img = 255.0 * (np.clip(img * gain, 0, 255) / 255.0) ** j(style.gamma)
    h, w = img.shape[:2]
    scale = style.resolution / max(h, w)
    if scale < 1:
        small = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if style.zoom_out < 1:
        z = min(1.0, j(style.zoom_out))
        frame = np.empty_like(img)
        frame[:] = np.array(style.border, dtype=np.float32)
        sh, sw = max(8, int(h * z)), max(8, int(w * z))
        y0, x0 = rng.integers(0, h - sh + 1), rng.integers(0, w - sw + 1)
        frame[y0:y0 + sh, x0:x0 + sw] = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        img = frame
    return np.clip(img, 0, 255).astype(np.uint8)


def group_halves(groups, labels, seed: int) -> np.ndarray:
    """A boolean mask: True for the photos of half the patient groups (stratified by label, by group)."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(2, shuffle=True, random_state=seed)
    first, _ = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[first] = True
    return mask


def _style_key(style: SiteStyle | None) -> str:
    return "identity" if style is None else hashlib.sha256(repr(asdict(style)).encode()).hexdigest()[:12]


def embed(bundle, samples, style: SiteStyle | None, cache: Path = DEFAULT_CACHE, seed: int = 0,
          batch: int = 32) -> np.ndarray:
    """Embeddings (N, D) of `samples` (core.learning.datasets.Sample) through `bundle` (its LiteRT runtime), each photo
    seen through `style` (None: as it is); cached per bundle, style and photo list."""
    from core.photos.images import load_rgb
    from core.photos.preprocess import to_model_input

    key = hashlib.sha256("\n".join(s.file_hash() for s in samples).encode()).hexdigest()[:16]
    path = cache / f"{bundle.card.name}-{bundle.card.model_sha256[:12]}-{_style_key(style)}-{seed}-{key}.npy"
    if path.is_file():
        return np.load(path)
    out = []
    for start in range(0, len(samples), batch):
        arrays = []
        for i, s in enumerate(samples[start:start + batch], start):
            rgb = load_rgb(s.path)
            if style is not None:
                rgb = apply_style(rgb, style, np.random.default_rng([seed, i]))
            arrays.append(to_model_input(rgb, bundle.input_size))
        out.append(np.asarray(bundle.forward(np.stack(arrays))[1], dtype=np.float32))
    emb = np.concatenate(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def pseudo_sites(manifest: str, bundle_name: str, styles=STYLES, halves_seed: int = 0, cache: Path = DEFAULT_CACHE,
                 site_prevalence: float | None = None):
    """Yield (name, base x, base y, site x, site y) per style and half: base = one half of the groups as they are,
    site = the other half through the style; `site_prevalence` drops site mpox photos (seeded) to that share."""
    from core.models.bundle import load_bundle
    from core.learning.datasets import load_manifest_dataset

    bundle = load_bundle(bundle_name)
    ds = load_manifest_dataset(manifest)
    samples = [s for s in ds.samples if s.split in ("train", "val")]
    y = np.array([s.y for s in samples])
    groups = [s.group or str(s.path) for s in samples]
    plain = embed(bundle, samples, None, cache)
    half = group_halves(groups, y, halves_seed)
    for style in styles:
        shifted = embed(bundle, samples, style, cache)
        for side, site in (("A", half), ("B", ~half)):
            keep = site.copy()
            if site_prevalence is not None:
                keep = _at_prevalence(site, y, site_prevalence, halves_seed)
            yield (f"{style.name} {side}", plain[~site], y[~site], shifted[keep], y[keep])


def _at_prevalence(mask: np.ndarray, y: np.ndarray, prevalence: float, seed: int) -> np.ndarray:
    idx_pos, idx_neg = np.flatnonzero(mask & (y == 1)), np.flatnonzero(mask & (y == 0))
    n_pos = min(len(idx_pos), int(round(prevalence / (1 - prevalence) * len(idx_neg))))
    keep = np.zeros(len(y), dtype=bool)
    keep[idx_neg] = True
    keep[np.random.default_rng(seed).choice(idx_pos, size=n_pos, replace=False)] = True
    return keep
