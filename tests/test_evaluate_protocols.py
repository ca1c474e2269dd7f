"""cv5 / loco protocols of the training recipe: folds respect groups and collections; figures with intervals."""

from __future__ import annotations

import numpy as np


def data(seed: int = 0):
    """120 photos, 40 groups of 3, two sources; the last column holds each row's index."""
    rng = np.random.default_rng(seed)
    n = 120
    y = np.repeat(rng.integers(0, 2, 40), 3)
    groups = np.repeat([f"g{i}" for i in range(40)], 3)
    sources = np.where(np.arange(n) < 60, "A", "B")
    x = np.abs(rng.normal(size=(n, 2, 6)))
    x[:, :, 0] += 1.5 * y[:, None]
    x[:, :, -1] = np.arange(n)[:, None]
    return x, y, groups, sources


def spying_recipe(log):
    from core.models.heads import fit_logistic

    def fit(x, y):
        trained = set(x[:, 0, -1].astype(int))
        head = fit_logistic(x[:, :, :-1], y, C=1.0)

        def predict(z):
            log.append((trained, set(z[:, -1].astype(int))))
            return head.logits(z[:, :-1])
        return predict
    return fit


def test_cv5_is_group_aware_and_reports_intervals():
    from core.learning.evaluation import recipe_protocol

    x, y, groups, sources = data()
    log = []
    res = recipe_protocol(x, y, groups, sources, "cv5", spying_recipe(log))
    assert len(res["folds"]) == 5 and sum(r["n"] for r in res["folds"]) == 120
    for trained, scored in log:
        assert not trained & scored
        assert not {groups[i] for i in trained} & {groups[i] for i in scored}   # no group on both sides
    m = res["mean"]["roc_auc"]
    assert m["ci95"][0] <= m["mean"] <= m["ci95"][1] and m["n"] == 5 and m["mean"] > 0.8


def test_loco_trains_on_one_collection_and_scores_the_other():
    from core.learning.evaluation import recipe_protocol

    x, y, groups, sources = data()
    log = []
    res = recipe_protocol(x, y, groups, sources, "loco", spying_recipe(log))
    assert [r["fold"] for r in res["folds"]] == ["A -> B", "B -> A"]
    outer = [(t, s) for t, s in log if len(s) == 60]       # the final scoring of each fold
    assert len(outer) == 2
    for trained, scored in outer:
        assert len({sources[i] for i in trained}) == 1 and {sources[i] for i in scored} != {sources[next(iter(trained))]}
