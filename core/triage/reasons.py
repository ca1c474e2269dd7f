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
NOT_A_PHOTO = "not_a_photo"        # core.photos.scope: the image does not look like a skin photo
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
    from core.photos.preprocess import ARCHITECTURES

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


# -- figures as printed: a stated comparison must hold between the printed numbers ---------------------------

def above_text(value: float, limit: float, digits: int = 2) -> tuple[str, str]:
    """(value, limit) printed with as few decimals as keep `value > limit` visible ("1.5003 > 1.5000", never
    "1.50 > 1.50"); from `digits` up to 6, then 10 significant digits."""
    for d in range(digits, 7):
        v, lim = f"{value:.{d}f}", f"{limit:.{d}f}"
        if float(v) > float(lim):
            return v, lim
    return f"{value:.10g}", f"{limit:.10g}"


def band_text(p: float, band: tuple[float, float], digits: int = 2) -> tuple[str, str]:
    """(p, "lo–hi") printed with as few decimals as keep lo <= p < hi true of the printed numbers."""
    lo, hi = band
    for d in range(digits, 7):
        ps, los, his = f"{p:.{d}f}", f"{lo:.{d}f}", f"{hi:.{d}f}"
        if float(los) <= float(ps) < float(his):
            return ps, f"{los}–{his}"
    return f"{p:.10g}", f"{lo:.10g}–{hi:.10g}"


def limit_text(label: str, value: float, limit: float) -> str:
    """A figure against its limit for the detail pane: "embedding distance 1.5003 (limit 1.5000): above the limit",
    printed with the digits that keep the side it is on visible."""
    if value > limit:
        v, lim = above_text(value, limit)
        return f"{label} {v} (limit {lim}): above the limit"
    lim, v = above_text(limit, value) if limit > value else (f"{limit:.2f}", f"{value:.2f}")
    return f"{label} {v} (limit {lim}): within the limit"


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
    from core.photos.scope import SCOPE_LIMIT

    return float(SCOPE_LIMIT)


def _alarm(shift: Mapping[str, Any] | None) -> bool:
    return bool(shift and shift.get("detected"))


def _row_point(m: ModelRef, r: ResultRecord, points: Mapping[str, Any] | None,
               shift: Mapping[str, Any] | None) -> tuple[Any, Any, bool] | None:
    """(the point the record was decided at, the card's default point at its threshold, whether the point's
    band is fully known): the caller's point for the model (Workspace.point_for), else derived from the card
    and the folder's shift verdict (core.models.operating_point.decided_point without the folder's scores, so a review
    floor the folder's scores set is not known). None without a card."""
    from core.models.operating_point import DEFAULT, MANUAL, OUT_OF_COLLECTION, card_point, decided_point, review_share

    if m.card is None:
        return None
    if points is not None and points.get(m.key) is not None:
        point = points[m.key]
        return point, card_point(m.card, DEFAULT, point.threshold if point.name == MANUAL else None), True
    alarm = _alarm(shift)
    thr = None if r.threshold is None else float(r.threshold)
    if thr is not None and abs(thr - card_point(m.card, OUT_OF_COLLECTION if alarm else DEFAULT).threshold) <= 1e-9:
        thr = None   # decided at the point's own threshold, not a user's
    point = decided_point(m.card, alarm, [], thr)
    return point, card_point(m.card, DEFAULT, thr), not (alarm and review_share(m.card) is not None)


def _uncertain_reason(m: ModelRef, r: ResultRecord, who: str, points: Mapping[str, Any] | None,
                      shift: Mapping[str, Any] | None) -> Reason | None:
    """Why the deciding record is flagged uncertain, with the one band it was decided at; None when it is not
    flagged (reasons explain the record's own flag, never a band it was not decided with)."""
    from core.records import decide

    if r.flag != FLAG_UNCERTAIN:
        return None
    p = float(r.p_mpox)
    got = _row_point(m, r, points, shift)
    if got is None or _band(m.card) is None:
        return Reason(UNCERTAIN, m.name, p, None, f"{who}flagged uncertain, p(mpox) {p:.2f}")
    point, default, known = got
    band = (float(point.band[0]), float(point.band[1]))
    # Unknown floor (an alarm, a card with a review share, no points given): the band may be widened below the
    # card's; every row of the folder then says so alike rather than cite an edge it was not decided at.
    widened = (not point.same_as(default) and band[0] < default.band[0]) or not known
    kind = UNCERTAIN if (not widened or _inside(p, default.band)) else SHIFT
    consistent = decide(p, point.threshold, band, False) == (r.prediction, r.flag)
    if consistent and known:
        ps, bs = band_text(p, band)
        if not widened:
            return Reason(kind, m.name, p, band, f"{who}uncertain, p(mpox) {ps} inside {bs}", f"{who}uncertain {ps}")
        where = f"this folder's widened review band {bs}"
        if kind == SHIFT:
            return Reason(SHIFT, m.name, p, band, f"{who}folder unlike the training photos: p(mpox) {ps} inside "
                          f"{where}", f"{who}shifted folder: p {ps} in wider band")
        return Reason(UNCERTAIN, m.name, p, band, f"{who}uncertain, p(mpox) {ps} inside {where}",
                      f"{who}uncertain {ps}")
    if widened and not known and p < band[1]:
        # Under a shift alarm the band's lower edge is this folder's review floor (core.models.operating_point.folder_point),
        # set by the folder's scores, which one photo's records do not hold: say only what is known, the same way
        # for every row of the folder.
        ps, hs = above_text(band[1], p)[::-1]
        text = (f"inside this folder's widened review band (below {hs}; its lower edge is set by this folder's "
                "scores)")
        lead = f"{who}folder unlike the training photos: p(mpox) {ps} " if kind == SHIFT else \
            f"{who}uncertain, p(mpox) {ps} "
        return Reason(kind, m.name, p, None, lead + text,
                      f"{who}shifted folder: p {ps} in wider band" if kind == SHIFT else f"{who}uncertain {ps}")
    lo, hi = band
    return Reason(UNCERTAIN, m.name, p, None, f"{who}flagged uncertain, p(mpox) {p:.2f} (decided at another band "
                  f"than the {lo:.2f}–{hi:.2f} it would be decided at here)", f"{who}uncertain {p:.2f}")


def _out_of_scope_reasons(ok: Sequence[tuple[ModelRef, ResultRecord]], who, limit: float) -> list[Reason]:
    """The real trigger of each out-of-scope flag, with its own figure and its own limit: a record's not-a-skin-photo
    score above the scope limit (said once for the photo), a model's embedding distance above its card's limit."""
    out: list[Reason] = []
    scored = [(m, r, float(r.scope_score)) for m, r in ok if r.scope_score is not None]
    over = [(m, r, s) for m, r, s in scored if s > limit]
    if over:
        # Said once: by the photo when every model saw the same score, else naming the models whose copy of the
        # photo (at their input size) was over the limit.
        one = len({round(s, 12) for _m, _r, s in scored}) == 1
        s = min(x for _m, _r, x in over)
        vs, ls = above_text(s, limit)
        names = "" if one or len(scored) == 1 else ", ".join(m.name for m, _r, _s in over) + ": "
        out.append(Reason(NOT_A_PHOTO, "" if not names else over[0][0].name, s, limit,
                          f"{names}{'n' if names else 'N'}ot-a-skin-photo score {vs} > limit {ls}",
                          f"{names}not a skin photo {vs} > {ls}"))
    for m, r in ok:
        ood_limit = getattr(m.card, "ood_threshold", None)
        dist = None if r.ood_score is None else float(r.ood_score)
        if dist is not None and ood_limit is not None and dist > float(ood_limit):
            vs, ls = above_text(dist, float(ood_limit))
            out.append(Reason(OUT_OF_SCOPE, m.name, dist, float(ood_limit),
                              f"{who(m)}unlike the training photos, embedding distance {vs} > limit {ls}",
                              f"{who(m)}out of scope {vs} > {ls}"))
        elif r.flag == FLAG_OUT_OF_SCOPE and not any(m is x[0] for x in over):
            # Flagged with limits this workspace cannot see (an older card, another scope limit): give both figures
            # against the limits known here, so nothing reads as a trigger that is not one.
            parts = []
            if r.scope_score is not None:
                parts.append(f"not-a-skin-photo score {float(r.scope_score):.2f} (limit {limit:.2f})")
            if dist is not None:
                parts.append(f"embedding distance {dist:.2f}" + (
                    f" (limit {float(ood_limit):.2f})" if ood_limit is not None else " (no limit on its card)"))
            figures = " and ".join(parts) or "no score recorded"
            out.append(Reason(OUT_OF_SCOPE, m.name, None, None,
                              f"{who(m)}flagged out of scope, though {figures} "
                              f"{'are' if len(parts) > 1 else 'is'} within the limits known here"
                              if parts else f"{who(m)}flagged out of scope ({figures})",
                              f"{who(m)}flagged out of scope"))
    return out


def photo_reasons(records: Mapping[str, ResultRecord | None], models: Sequence[ModelRef], *,
                  decider: str = "", shift: Mapping[str, Any] | None = None,
                  scope_limit: float | None = None, points: Mapping[str, Any] | None = None) -> list[Reason]:
    """Every reason to look at one photo, most urgent first (ORDER), each said once.

    `records` maps a model key to that model's record of the photo; `models` are the chosen models in
    display order (records of other models are ignored); `decider` is deciding_key's answer; `shift` is the
    folder's stored shift result (Workspace.shift); `scope_limit` the not-a-skin-photo limit (default
    core.photos.scope.SCOPE_LIMIT); `points` the operating point each model decides this folder at
    (Workspace.point_for; core.models.operating_point.records_point), so an uncertain row cites the band it was decided
    at. Without `points` the point is derived from the card and `shift`.
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

    out += _out_of_scope_reasons(ok, who, _scope_limit(scope_limit))

    # Disagreement: the deciding model's call against each component that calls otherwise.
    calls = [(m, r) for m, r in ok if r.prediction in CALLS]
    if len({r.prediction for _m, r in calls}) > 1:
        first = next(((m, r) for m, r in calls if m.key == decider), calls[0])
        others = [(m, r) for m, r in calls if m is not first[0] and r.prediction != first[1].prediction]
        parts = [f"{m.name} {call_text(r.prediction)} {float(r.p_mpox):.2f}" for m, r in [first] + others]
        short = ", ".join(f"{m.name} {call_text(r.prediction)}" for m, r in others)
        out.append(Reason(DISAGREE, first[0].name, float(first[1].p_mpox), None,
                          "models disagree: " + ", ".join(parts), f"disagree: {short}"))

    # Uncertain: the deciding model's flag (every model's when none decides), with the band it was decided at.
    for m, r in ok:
        if decider and m.key != decider:
            continue
        if r.p_mpox is None or r.prediction == OUT_OF_SCOPE_CALL:
            continue
        reason = _uncertain_reason(m, r, who(m), points, shift)
        if reason is not None:
            out.append(reason)

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
