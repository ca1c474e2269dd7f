"""Why a photo needs a person's look: one rule for the app's table, its tooltip, the side panel, the CSV
(`needs_review`) and the PDF.

Each reason names its model, the figure and the limit it was held against, so what is said is checkable
("Not-a-skin-photo score 1.00 > limit 0.95", "combined: uncertain, p(mpox) 0.45 inside 0.28–0.74").
Reasons are computed from the stored records and cards, never from a cached sentence, so they follow the
models the user chose and stay true after a restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from core.records import (CALLS, FLAG_OUT_OF_SCOPE, FLAG_UNCERTAIN, LABEL_MPOX, LABEL_NOT_MPOX,
                          PREDICTION_OUT_OF_SCOPE, ResultRecord)

# Kinds, most urgent first: the order of the table's sort, the report's groups and the CSV cell.
ERROR = "error"
NOT_A_PHOTO = "not_a_photo"        # core.scope: the image does not look like a skin photo
OUT_OF_SCOPE = "out_of_scope"      # a model's embedding distance above its card's limit
DISAGREE = "disagree"
UNCERTAIN = "uncertain"
SHIFT = "shift"                    # inside the widened review band of a folder that is unlike the training photos
NOT_SCORED = "not_scored"          # a chosen model has no result for the photo yet
ORDER = (ERROR, NOT_A_PHOTO, OUT_OF_SCOPE, DISAGREE, UNCERTAIN, SHIFT, NOT_SCORED)
# A short name per kind, for counts and filters.
KIND_TEXT = {ERROR: "could not be read", NOT_A_PHOTO: "not a skin photo", OUT_OF_SCOPE: "out of scope",
             DISAGREE: "models disagree", UNCERTAIN: "uncertain", SHIFT: "folder unlike the training photos",
             NOT_SCORED: "not scored by every model"}

# What a prediction reads as, wherever it is shown or counted. "out_of_scope" is the call of a photo the scope
# check refused (its p(mpox) is kept but means nothing).
OUT_OF_SCOPE_CALL = PREDICTION_OUT_OF_SCOPE  # core.records.decide gives it
CALL_TEXT = {LABEL_MPOX: "mpox", LABEL_NOT_MPOX: "not mpox", OUT_OF_SCOPE_CALL: "out of scope"}
# CALLS (core.records): mpox and not_mpox, the calls that can agree or disagree


@dataclass(frozen=True)
class Reason:
    """One reason to look at a photo: its kind (ORDER), the model it comes from ("" = the photo itself), the
    figure, the limit it was compared with (a number or a (low, high) band) and the sentence to show."""

    kind: str
    model: str
    value: float | None
    limit: float | tuple[float, float] | None
    text: str
    short: str = ""          # the same reason for a narrow table cell ("not a photo 1.00 > 0.95"); "" = text

    @property
    def brief(self) -> str:
        return self.short or self.text


@dataclass(frozen=True)
class ModelRef:
    """A chosen model as reasons need it: its key (ResultRecord.model_key), display name and card (or None)."""

    key: str
    name: str
    card: Any = None


def short_name(card: Any) -> str:
    """A model's name for a reason or a column: its architecture ("MobileNetV2", "Xception"), "combined"."""
    arch = str(getattr(card, "architecture", "") or "").lower()
    if arch == "combined":
        return "combined"
    from core.preprocess import ARCHITECTURES

    spec = ARCHITECTURES.get(arch)
    return spec.display_name if spec else f"{card.name} {card.version}"


def model_refs(cards: Sequence[Any]) -> list[ModelRef]:
    """ModelRefs of the chosen models' cards, named by short_name unless two would share a name."""
    names = [short_name(c) for c in cards]
    return [ModelRef(c.key, n if names.count(n) == 1 else f"{c.name} {c.version}", c) for c, n in zip(cards, names)]


def call_text(prediction: str | None) -> str:
    """A prediction in words ("not mpox", "out of scope"); "" for none."""
    return CALL_TEXT.get(prediction or "", (prediction or "").replace("_", " "))


def deciding_key(cards: Sequence[Any]) -> str:
    """The model whose call is the photo's call: a combined model run with its components ("Both"); "" when
    every model counts alike."""
    if len(cards) > 1:
        for c in cards:
            if str(getattr(c, "architecture", "")).lower() == "combined":
                return c.key
    return ""


def _band(card: Any) -> tuple[float, float] | None:
    band = getattr(card, "uncertain_band", None)
    if isinstance(band, (list, tuple)) and len(band) >= 2:
        return float(band[0]), float(band[-1])
    return None


def out_of_collection_band(card: Any) -> tuple[float, float] | None:
    """The card's widened review band for folders unlike its training photos, when the card has one."""
    extra = getattr(card, "extra", None)
    try:
        band = extra["operating_points"]["out_of_collection"]["uncertain_band"]
        return float(band[0]), float(band[-1])
    except (KeyError, TypeError, IndexError, ValueError):
        return None


def _inside(p: float, band: tuple[float, float]) -> bool:
    return band[0] <= p < band[1]


def _short_error(rec: ResultRecord) -> str:
    err = rec.error or "unknown error"
    for prefix in (f"{rec.path}: ", f"{rec.path} "):
        if err.startswith(prefix):
            err = err[len(prefix):]
            break
    # The file column names the file; a reason never carries the machine's folders.
    return err.replace(str(rec.path), os.path.basename(str(rec.path)))


def _scope_limit(limit: float | None) -> float:
    if limit is not None:
        return float(limit)
    from core.scope import SCOPE_LIMIT

    return float(SCOPE_LIMIT)


def photo_reasons(records: Mapping[str, ResultRecord | None], models: Sequence[ModelRef], *,
                  decider: str = "", shift: Mapping[str, Any] | None = None,
                  scope_limit: float | None = None) -> list[Reason]:
    """Every reason to look at one photo, most urgent first (ORDER), each said once.

    `records` maps a model key to that model's record of the photo; `models` are the chosen models in
    display order (records of other models are ignored); `decider` is deciding_key's answer; `shift` is the
    folder's stored shift result (Workspace.shift); `scope_limit` the not-a-skin-photo limit (default
    core.scope.SCOPE_LIMIT).
    """
    out: list[Reason] = []
    recs = [(m, records.get(m.key)) for m in models]
    present = [(m, r) for m, r in recs if r is not None]
    ok = [(m, r) for m, r in present if r.ok]
    multi = len(models) > 1

    def who(m: ModelRef) -> str:
        return f"{m.name}: " if multi else ""

    # Unreadable: the file is the problem, whichever model tried.
    errors = list(dict.fromkeys(_short_error(r) for _m, r in present if not r.ok))
    if errors:
        failed = [m.name for m, r in present if not r.ok]
        by = f" by {', '.join(failed)}" if ok and multi else ""
        out.append(Reason(ERROR, "" if not by else failed[0], None, None,
                          f"unreadable{by}: " + "; ".join(errors)))

    # Not a skin photo (core.scope): a property of the image, said once whatever the number of models.
    score = next((float(r.scope_score) for _m, r in ok if r.scope_score is not None), None)
    limit = _scope_limit(scope_limit) if score is not None else None
    if score is not None and score > limit:
        out.append(Reason(NOT_A_PHOTO, "", score, limit, f"Not-a-skin-photo score {score:.2f} > limit {limit:.2f}",
                          f"not a skin photo {score:.2f} > {limit:.2f}"))

    # A model's own out-of-scope check: the embedding is far from its training photos.
    for m, r in ok:
        ood_limit = getattr(m.card, "ood_threshold", None)
        if r.ood_score is not None and ood_limit is not None and float(r.ood_score) > float(ood_limit):
            out.append(Reason(OUT_OF_SCOPE, m.name, float(r.ood_score), float(ood_limit),
                              f"{who(m)}unlike the training photos, out-of-scope score {float(r.ood_score):.2f} > "
                              f"limit {float(ood_limit):.2f}",
                              f"{who(m)}out of scope {float(r.ood_score):.2f} > {float(ood_limit):.2f}"))
        elif r.flag == FLAG_OUT_OF_SCOPE and not any(x.kind == NOT_A_PHOTO for x in out):
            # Flagged with limits this workspace cannot see (an older card, another scope limit): say so.
            figure = "score not recorded" if r.ood_score is None else f"out-of-scope score {float(r.ood_score):.2f}"
            out.append(Reason(OUT_OF_SCOPE, m.name, None if r.ood_score is None else float(r.ood_score), None,
                              f"{who(m)}flagged out of scope ({figure}; its limit is not known here)"))

    # Disagreement: the deciding model's call against each component that calls otherwise.
    calls = [(m, r) for m, r in ok if r.prediction in CALLS]
    if len({r.prediction for _m, r in calls}) > 1:
        first = next(((m, r) for m, r in calls if m.key == decider), calls[0])
        others = [(m, r) for m, r in calls if m is not first[0] and r.prediction != first[1].prediction]
        parts = [f"{m.name} {call_text(r.prediction)} {float(r.p_mpox):.2f}" for m, r in [first] + others]
        short = ", ".join(f"{m.name} {call_text(r.prediction)}" for m, r in others)
        out.append(Reason(DISAGREE, first[0].name, float(first[1].p_mpox), None,
                          "models disagree: " + ", ".join(parts), f"disagree: {short}"))

    # Uncertain: the deciding model's band (every model's when none decides).
    shift_key = ""
    ooc = bool(shift and shift.get("detected") and shift.get("operating_point") == "out_of_collection")
    if ooc:
        keys = {m.key for m in models}
        shift_key = shift.get("model_key") if shift.get("model_key") in keys else (decider or models[0].key)
    for m, r in ok:
        if decider and m.key != decider:
            continue
        if r.p_mpox is None or r.prediction == OUT_OF_SCOPE_CALL:
            continue
        p = float(r.p_mpox)
        band, wide = _band(m.card), out_of_collection_band(m.card)
        if band is not None and _inside(p, band):
            out.append(Reason(UNCERTAIN, m.name, p, band,
                              f"{who(m)}uncertain, p(mpox) {p:.2f} inside {band[0]:.2f}–{band[1]:.2f}",
                              f"{who(m)}uncertain {p:.2f}"))
        elif ooc and m.key == shift_key and wide is not None and _inside(p, wide):
            out.append(Reason(SHIFT, m.name, p, wide,
                              f"folder unlike the training photos (p {p:.2f} inside the widened review band "
                              f"{wide[0]:.2f}–{wide[1]:.2f})", f"shifted folder: p {p:.2f} in wider band"))
        elif r.flag == FLAG_UNCERTAIN:
            out.append(Reason(UNCERTAIN, m.name, p, band,
                              f"{who(m)}flagged uncertain, p(mpox) {p:.2f}" + (
                                  f" (card band {band[0]:.2f}–{band[1]:.2f})" if band else "")))

    # A chosen model that has not scored the photo: its call is not complete.
    missing = [m.name for m, r in recs if r is None]
    if missing and present:
        out.append(Reason(NOT_SCORED, missing[0], None, None, "not scored yet by " + ", ".join(missing)))

    if any(x.kind == NOT_A_PHOTO for x in out):
        # Not a skin photo: the models' scores of it mean nothing, so their flags are no further reasons.
        out = [x for x in out if x.kind in (ERROR, NOT_A_PHOTO, NOT_SCORED)]
    return sorted(out, key=lambda x: ORDER.index(x.kind))


def photo_call(records: Mapping[str, ResultRecord | None], models: Sequence[ModelRef], decider: str = "") -> str:
    """The photo's call over the chosen models: the deciding model's when it scored the photo; else the
    models' common call, "disagree", "out_of_scope", "error", or "" while any chosen model has not scored it."""
    recs = [records.get(m.key) for m in models]
    if decider:
        r = records.get(decider)
        if r is None:
            return ""
        return r.prediction or "" if r.ok else "error"
    if not recs or any(r is None for r in recs):
        return ""
    if any(not r.ok for r in recs):
        return "error"
    preds = {r.prediction for r in recs}
    if OUT_OF_SCOPE_CALL in preds:
        return OUT_OF_SCOPE_CALL
    return preds.pop() if len(preds) == 1 else "disagree"


def reasons_text(reasons: Sequence[Reason]) -> str:
    """The reasons as one cell ("; " between them), e.g. for the CSV's needs_review column."""
    return "; ".join(r.text for r in reasons)
