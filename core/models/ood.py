"""Out-of-scope score: how far an image's embedding lies from the training distribution.

A whitened distance in the top principal components of the training embeddings, scaled so that
typical training images score about 1. Images far above the card's threshold are flagged for review
rather than confidently cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class OODStats:
    mean: np.ndarray        # (D,)
    components: np.ndarray  # (k, D)
    scales: np.ndarray      # (k,) standard deviation along each component
    residual_scale: float   # RMS norm of the training embeddings outside the k components

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings, dtype=np.float64)
        self.check_dim(embeddings.shape[-1])
        centred = embeddings - self.mean
        proj = centred @ self.components.T
        z = proj / self.scales
        residual = np.linalg.norm(centred - proj @ self.components, axis=1) / self.residual_scale
        return np.sqrt((np.sum(z * z, axis=1) + residual**2) / (len(self.scales) + 1))

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, components=self.components, scales=self.scales,
                 residual_scale=np.float64(self.residual_scale))

    @classmethod
    def load(cls, path: str | Path) -> "OODStats":
        """Read and check (core.models.array_files.ArrayFileError, one line, on garbage or inconsistent shapes)."""
        from core.models.array_files import ArrayFileError, read_arrays

        data = read_arrays(path, {"mean": 1, "components": 2, "scales": 1, "residual_scale": 0})
        d, (k, dc), ks = data["mean"].shape[0], data["components"].shape, data["scales"].shape[0]
        if dc != d or ks != k:
            raise ArrayFileError(f"{path}: out-of-scope statistics do not fit together (mean {d}, components "
                                 f"{k}x{dc}, scales {ks})")
        for name in ("mean", "components", "scales", "residual_scale"):
            if not np.isfinite(data[name]).all():
                raise ArrayFileError(f"{path}: out-of-scope statistics hold a number that is not finite (in "
                                     f"{name!r}); the out-of-scope check could never fire. Refusing them.")
        if not (data["scales"] > 0).all() or not float(data["residual_scale"]) > 0:
            raise ArrayFileError(f"{path}: out-of-scope statistics hold a scale that is zero or negative; every "
                                 "distance would divide by it. Refusing them.")
        return cls(data["mean"], data["components"], data["scales"], float(data["residual_scale"]))

    def check_dim(self, dim: int) -> None:
        """Refuse (ValueError, one line) scoring embeddings of another size than these statistics'."""
        if int(dim) != self.mean.shape[0]:
            raise ValueError(f"the out-of-scope statistics (ood.npz) are for {self.mean.shape[0]}-wide embeddings; "
                             f"the model gives {int(dim)}")


def fit_ood(embeddings: np.ndarray, n_components: int = 32) -> OODStats:
    """Fit the statistics on training-set embeddings (N, D)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    mean = emb.mean(axis=0)
    centred = emb - mean
    k = int(min(n_components, emb.shape[0] - 1, emb.shape[1]))
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    scales = s[:k] / np.sqrt(max(emb.shape[0] - 1, 1))
    scales = np.maximum(scales, 1e-6)
    comps = vt[:k]
    residual = centred - (centred @ comps.T) @ comps
    residual_scale = float(np.sqrt(np.mean(np.sum(residual**2, axis=1)))) or 1e-6
    return OODStats(mean.astype(np.float32), comps.astype(np.float32), scales.astype(np.float32), residual_scale)
