"""An out-of-scope photo gets no mpox / not-mpox call: one rule (core.records.decide) for the engine, a
re-decision at another threshold and the agreement with reference labels; its p(mpox) is kept."""

from __future__ import annotations

import hashlib

import numpy as np

from core.models.bundle import Bundle, ModelCard
from core.records import (FLAG_OUT_OF_SCOPE, FLAG_UNCERTAIN, LABEL_MPOX, LABEL_NOT_MPOX, PREDICTION_OUT_OF_SCOPE,
                          ResultRecord, decide)
from core.store.workspace import decide as redecide


def _card(ood_threshold=None) -> ModelCard:
    return ModelCard(name="m", version="1.0", architecture="mobilenetv2", input_size=32, threshold=0.5,
                     uncertain_band=[0.4, 0.6], ood_threshold=ood_threshold,
                     model_sha256=hashlib.sha256(b"m").hexdigest())


def test_out_of_scope_wins_over_any_probability():
    for p in (0.0, 0.45, 0.99):
        assert decide(p, 0.5, (0.4, 0.6), True) == (PREDICTION_OUT_OF_SCOPE, FLAG_OUT_OF_SCOPE)
    assert decide(0.99, 0.5, (0.4, 0.6), False) == (LABEL_MPOX, "")
    assert decide(0.55, 0.5, (0.4, 0.6), False) == (LABEL_MPOX, FLAG_UNCERTAIN)
    assert decide(0.1, 0.5, (0.4, 0.6), False) == (LABEL_NOT_MPOX, "")


def test_bundle_decide_withholds_the_call_for_a_high_scope_score_or_a_far_embedding():
    bundle = Bundle(_card(ood_threshold=2.0), None, None)
    p = np.array([0.9, 0.9, 0.1, 0.1])
    scored = bundle.decide(p, np.array([0.5, 0.5, 3.0, 0.5]), scope_score=[0.0, 0.99, 0.0, None], scope_limit=0.5)
    assert scored.prediction == [LABEL_MPOX, PREDICTION_OUT_OF_SCOPE, PREDICTION_OUT_OF_SCOPE, LABEL_NOT_MPOX]
    assert scored.flag == ["", FLAG_OUT_OF_SCOPE, FLAG_OUT_OF_SCOPE, ""]
    np.testing.assert_array_equal(scored.p_mpox, p)  # p(mpox) stays in its column


def test_re_deciding_at_another_threshold_keeps_an_out_of_scope_photo_out_of_scope():
    card = _card()
    rec = ResultRecord(path="x.png", status="ok", p_mpox=0.95, prediction=PREDICTION_OUT_OF_SCOPE,
                       flag=FLAG_OUT_OF_SCOPE, scope_score=1.0, threshold=0.5)
    again = redecide(card, rec, 0.3)
    assert (again.prediction, again.flag, again.p_mpox, again.threshold) == (
        PREDICTION_OUT_OF_SCOPE, FLAG_OUT_OF_SCOPE, 0.95, 0.3)
    photo = ResultRecord(path="y.png", status="ok", p_mpox=0.4, prediction=LABEL_NOT_MPOX, scope_score=0.0)
    assert redecide(card, photo, 0.3).prediction == LABEL_MPOX


def test_agreement_leaves_out_of_scope_photos_out_of_the_confusion_and_says_so():
    from core.triage.agreement import compute_agreement

    recs = [ResultRecord(path=f"{i}.jpg", status="ok", p_mpox=p, prediction=pred, flag=flag)
            for i, (p, pred, flag) in enumerate([(0.9, LABEL_MPOX, ""), (0.2, LABEL_NOT_MPOX, ""),
                                                 (0.1, PREDICTION_OUT_OF_SCOPE, FLAG_OUT_OF_SCOPE)])]
    truth = {"0.jpg": LABEL_MPOX, "1.jpg": LABEL_NOT_MPOX, "2.jpg": LABEL_MPOX}
    ag = compute_agreement(recs, None, truth)
    assert ag.n == 2 and ag.left_out_out_of_scope == 1
    assert ag.confusion == {"tp": 1, "fn": 0, "fp": 0, "tn": 1}  # the out-of-scope mpox photo is no false negative
