"""Cross-fitted heads (core.learning.crossfit): the shipped head scores new photos on the scale its evidence was chosen on."""

from __future__ import annotations

import numpy as np
import pytest

from core.learning.crossfit import cross_fit, loco_evidence, mean_head
from core.models.heads import LinearHead
from core.models.operating_point import floor_for_sensitivity


def photos(n: int, seed: int, shift: float = 0.0, dim: int = 16):
    """Embedding-like rows (non-negative, as ReLU outputs), two classes, groups of 2 photos."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    centre = np.where(y[:, None] == 1, 1.4, 1.0) * np.linspace(0.5, 1.5, dim)
    x = np.abs(centre + shift + rng.normal(0, 0.9, (n, dim)))
    return x[:, None, :].astype(np.float32), y, np.array([f"g{i // 2}-{seed}" for i in range(n)])


def test_the_mean_head_scores_each_photo_as_the_mean_of_its_members():
    rng = np.random.default_rng(0)
    heads = [LinearHead(rng.normal(size=8), float(rng.normal())) for _ in range(5)]
    x = np.abs(rng.normal(size=(10, 8)))
    np.testing.assert_allclose(mean_head(heads).logits(x), np.mean([h.logits(x) for h in heads], axis=0))
    with pytest.raises(ValueError):
        mean_head([heads[0], LinearHead(heads[1].w, heads[1].b, sqrt=False)])


def test_a_floor_chosen_on_cross_fitted_evidence_keeps_its_triage_sensitivity_on_new_photos():
    x, y, groups = photos(400, seed=1)
    fit = cross_fit(x, y, groups, draws=2, C=0.05)
    assert fit.oof_logits.shape == (2, 400) and np.isfinite(fit.oof_logits).all() and fit.members == 10
    floor = floor_for_sensitivity(np.tile(y, 2), fit.oof_probabilities().ravel(), 0.95)
    xn, yn, _ = photos(6000, seed=2)
    sens = np.mean(fit.probabilities(xn[:, 0])[yn == 1] >= floor)
    assert 0.93 <= sens <= 0.985


def test_leave_one_collection_out_evidence_cross_fits_inside_each_collection():
    xa, ya, ga = photos(160, seed=4)
    xb, yb, gb = photos(160, seed=5, shift=0.6)
    x, y, g = np.concatenate([xa, xb]), np.concatenate([ya, yb]), np.concatenate([ga, gb])
    src = np.array(["A"] * 160 + ["B"] * 160)
    folds = loco_evidence(x, y, g, src, C=0.05)
    assert [f[0] for f in folds] == ["A -> B", "B -> A"]
    for _name, tr, te, p, t in folds:
        assert len(set(src[tr])) == 1 and not set(src[tr]) & set(src[te]) and len(p) == len(te) and t > 0
