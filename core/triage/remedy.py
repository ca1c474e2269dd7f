"""What a folder under a shift alarm needs: the remedy line (label the labelling sample, then adapt; or review
more for a model already adapted) and the labelling sample's size (the smallest random sample that holds
MIN_PER_CLASS photos of each class with probability SAMPLE_CONFIDENCE at the expected share of mpox)."""

from __future__ import annotations

MIN_PER_CLASS = 10   # adapting needs at least this many labelled photos of each class (core.learning.adapt)


# How likely a labelling sample of the suggested size holds MIN_PER_CLASS photos of each class.
SAMPLE_CONFIDENCE = 0.95
# The lowest share of mpox seen on a collection the models did not learn from (issue 23's held-back photos).
LOWEST_SEEN_PREVALENCE = 0.24


def sample_size(prevalence: float, min_per_class: int = MIN_PER_CLASS, confidence: float = SAMPLE_CONFIDENCE) -> int:
    """The smallest N whose random sample holds >= min_per_class of each class with probability >= confidence,
    at `prevalence` mpox (binomial). 62 at 24% mpox; 50 falls short about a time in five there. Exact sums of
    the 2 * min_per_class tail terms (no SciPy: the shift alarm's remedy asks for it on the classify path)."""
    from math import comb

    p = float(min(max(prevalence, 0.01), 0.99))
    q = 1.0 - p
    k = int(min_per_class)
    n = 2 * k
    while n < 5000:
        # P(k <= X <= n - k) = 1 - P(X < k) - P(X > n - k)
        below = sum(comb(n, i) * p ** i * q ** (n - i) for i in range(k))
        above = sum(comb(n, i) * q ** i * p ** (n - i) for i in range(k))
        if 1.0 - below - above >= confidence:
            return n
        n += 1
    return n


def _card_get(card, name: str, default=None):
    return card.get(name, default) if isinstance(card, dict) else getattr(card, name, default)


def expected_prevalence(card) -> float:
    """The share of mpox to plan a labelling sample for: the lowest of the card's training collections (or
    its site's, for an adapted card) and LOWEST_SEEN_PREVALENCE."""
    data = _card_get(card, "training_data") or {}
    shares = [LOWEST_SEEN_PREVALENCE]
    counts = data.get("counts") if isinstance(data, dict) else None
    if isinstance(counts, dict):
        for split in ("train", "val"):
            c = counts.get(split) or {}
            n = float(c.get("mpox", 0)) + float(c.get("not_mpox", 0))
            if n:
                shares.append(float(c.get("mpox", 0)) / n)
    site = data.get("site") if isinstance(data, dict) else None
    if isinstance(site, dict) and site.get("photos"):
        shares.append(float(site.get("mpox", 0)) / float(site["photos"]))
    return float(min(s for s in shares if s > 0))


def labelling_sample_size(card) -> int:
    """N of `adapt --suggest N` and of the shift alarm's remedy: reaches MIN_PER_CLASS of each class with
    probability SAMPLE_CONFIDENCE at the card's expected prevalence."""
    return sample_size(expected_prevalence(card))


def is_adapted(card) -> bool:
    """A model adapted to a site (core.learning.adapt writes `training_data.site`). A release's parent is the previous
    release, so having a parent does not make a model adapted."""
    data = _card_get(card, "training_data") or {}
    return isinstance(data, dict) and isinstance(data.get("site"), dict)


def remedy(card, adapted: bool | None = None, photos: int | None = None) -> str:
    """The shift alarm's remedy line for a model (core.triage.shift.verdict_entry): label the labelling sample, then
    adapt; for a model already adapted (is_adapted), review more and re-adapt with them. `photos`: how many usable
    photos the folder has; when fewer than the sample, the line asks for all of them (it asked for 62 of 40)."""
    if adapted is None:
        adapted = is_adapted(card)
    if adapted:
        return ("review more of this folder's photos (Review next), then adapt again with them: this model was "
                "adapted to another site, or this site has changed")
    n = labelling_sample_size(card)
    if photos is not None and 0 < int(photos) < n:
        m = int(photos)
        return (f"label all {m} photos of this folder (adapt --suggest {m}; a labelling sample needs {n} to hold "
                f"{MIN_PER_CLASS} of each class with {SAMPLE_CONFIDENCE:.0%} probability, so adapt may ask for "
                "more), then adapt")
    return f"label the {n} photos of the labelling sample (adapt --suggest {n}), then adapt"
