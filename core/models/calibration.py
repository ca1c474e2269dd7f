"""Temperature scaling: one scalar T fitted on validation logits so that sigmoid(logit / T) is calibrated.

Dividing by T never changes the ranking (ROC-AUC is unchanged), only how confident the
probabilities are; the bundle stores T and core.models.bundle.Bundle.calibrate applies it.
"""

from __future__ import annotations

import numpy as np

MIN_T, MAX_T = 0.05, 20.0


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def binary_nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of binary labels under sigmoid(logits / T), computed stably."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(y, dtype=np.float64)
    # log(1 + e^z) - y z, written with logaddexp so large |z| does not overflow.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.05, 20] minimising validation NLL (1.0 when there is nothing to fit)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(logits) == 0 or len(np.unique(y)) < 2 or np.allclose(logits, 0.0):
        return 1.0
    # Optimise log T: the NLL is smooth and unimodal in it over this range.
    res = minimize_scalar(lambda lt: binary_nll(logits, y, float(np.exp(lt))),
                          bounds=(np.log(MIN_T), np.log(MAX_T)), method="bounded", options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    return t if binary_nll(logits, y, t) <= binary_nll(logits, y, 1.0) else 1.0


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated p(mpox) = sigmoid(logit / T)."""
    return sigmoid(np.asarray(logits, dtype=np.float64) / float(temperature or 1.0))


def logit(p: np.ndarray | float, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)
