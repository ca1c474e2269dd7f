"""A plain verdict for new vs current on the same validation photos.

Decision (documented in docs/desktop.md): McNemar's exact test on the photos both models scored —
b = photos only the new model gets right, c = photos only the current one gets right; two-sided
binomial test of b against b + c at 5%. "Better" / "worse" only when that test says so; otherwise
"not measurably different on these N photos", however the point estimates lean. Paired, because
the two models see the same photos (overlapping bootstrap intervals of unpaired figures would be
weaker and harder to explain).
TODO: the statistics belong in core.learning.evaluation (no Qt here, so it can move as is).
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.05


@dataclass
class Verdict:
    word: str            # "better" | "worse" | "not measurably different" | "no comparison"
    n: int               # photos both models scored
    new_only: int        # right by the new model only
    current_only: int    # right by the current model only
    p_value: float | None
    text: str


def _correct(predictions: list[dict]) -> dict[str, bool]:
    return {p["path"]: p.get("prediction") == p.get("label") for p in predictions
            if p.get("prediction") and p.get("label")}


def paired_verdict(new: dict, current: dict | None, alpha: float = ALPHA, what: str = "validation photos",
                   current_name: str = "the current one") -> Verdict:
    """`what` names the shared photos in the text (the adapt path: cross-validated site photos)."""
    if not current:
        return Verdict("no comparison", int(new.get("n", 0) or 0), 0, 0, None,
                       "No current model of this architecture to compare with.")
    a, b = _correct(new.get("predictions") or []), _correct(current.get("predictions") or [])
    both = sorted(set(a) & set(b))
    if not both:
        return Verdict("no comparison", 0, 0, 0, None, "The two evaluations share no scored photos.")
    new_only = sum(a[p] and not b[p] for p in both)
    current_only = sum(b[p] and not a[p] for p in both)
    from core.learning.evaluation import paired_exact_p

    p_value = paired_exact_p(new_only, current_only)
    if p_value < alpha:
        word = "better" if new_only > current_only else "worse"
    else:
        word = "not measurably different"
    text = (f"The new model is <b>{word}</b> than {current_name} on the same {len(both)} {what} "
            if word != "not measurably different" else
            f"The new model is <b>not measurably different</b> from {current_name} on the same {len(both)} "
            f"{what} ")
    text += (f"(right where {current_name} is wrong: {new_only} photos; wrong where it is right: "
             f"{current_only}; McNemar exact p = {p_value:.3f}).")
    return Verdict(word, len(both), new_only, current_only, p_value, text)


def lean(new: dict, current: dict | None, metrics: list[tuple[str, str]], lower_is_better: set[str]) -> str:
    """How the point estimates lean (context only; the verdict above is the test)."""
    if not current:
        return ""
    better = worse = 0
    for key, _label in metrics:
        x, y = new.get(key), current.get(key)
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or x == y:
            continue
        good = x < y if key in lower_is_better else x > y
        better += good
        worse += not good
    total = better + worse
    return f" Point estimates favour the new model on {better} of {total} metrics and the current one on {worse}." \
        if total else ""
