"""Temperature scaling: fitted on validation logits, it lowers calibration error and keeps the ranking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.models.calibration import apply_temperature, binary_nll, fit_temperature
from core.triage.metrics import expected_calibration_error


def _synthetic(n=2000, true_scale=1.0, seed=0):
    """Labels drawn from sigmoid(true logit), so sigmoid(true logit) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return z, y


@pytest.mark.parametrize("overconfidence", [3.0, 0.4])
def test_temperature_scaling_lowers_ece_on_a_miscalibrated_model(overconfidence):
    z, y = _synthetic()
    logits = z * overconfidence  # over- (x3) or under-confident (x0.4) model
    before = expected_calibration_error(y, apply_temperature(logits, 1.0))
    t = fit_temperature(logits, y)
    after = expected_calibration_error(y, apply_temperature(logits, t))
    assert t == pytest.approx(overconfidence, rel=0.15)  # recovers the distortion
    assert after < before / 2 and after < 0.03
    assert binary_nll(logits, y, t) < binary_nll(logits, y, 1.0)
    # Dividing by T > 0 never changes the ranking.
    assert roc_auc_score(y, apply_temperature(logits, t)) == pytest.approx(roc_auc_score(y, logits))


def test_calibrated_model_keeps_temperature_near_one():
    z, y = _synthetic(seed=1)
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.15)


def test_degenerate_inputs_give_temperature_one():
    assert fit_temperature(np.array([1.0, 2.0]), np.array([1, 1])) == 1.0
    assert fit_temperature(np.array([]), np.array([])) == 1.0
