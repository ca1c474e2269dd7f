"""One row per photo and the cover's counts, in photos; the models behind the records."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from core.triage.agreement import lookup
from core.triage.reasons import (
    CALLS, ORDER, OUT_OF_SCOPE_CALL, ModelRef, Reason, deciding_key, model_refs, photo_call, photo_reasons,
)
from core.records import FLAG_OUT_OF_SCOPE, FLAG_UNCERTAIN, LABEL_MPOX, LABEL_NOT_MPOX, ResultRecord


ORIGIN_TEXT = {"shipped": "shipped with the app", "local": "local model (not a shipped release)"}


def model_key(record: Any) -> str:
    """How results of one model are told apart: ResultRecord.model_key / ModelCard.key (the scoring digest,
    else the weights' SHA-256, else "name version"); the same rule for other objects with those fields."""
    key = getattr(record, "model_key", None) or getattr(record, "key", None)
    if isinstance(key, str) and key:
        return key
    sha = getattr(record, "model_sha256", "")
    if sha:
        return sha
    name = getattr(record, "model", None) or getattr(record, "name", "")
    version = getattr(record, "model_version", None) or getattr(record, "version", "")
    return f"{name} {version}"


@dataclass
class ModelInfo:
    """One model that produced some of the records, with its card (when supplied) and origin."""

    key: str
    name: str
    version: str
    sha256: str
    card: Any | None = None
    origin: str | None = None          # "shipped" | "local" | None (not stated)
    thresholds: list[float] = field(default_factory=list)
    short: str = ""                    # the name in narrow places (short_labels); the Models table has it whole

    @property
    def label(self) -> str:
        return f"{self.name or '?'} {self.version}".strip()

    @property
    def threshold(self) -> float | None:
        if self.card is not None:
            return float(self.card.threshold)
        return self.thresholds[0] if self.thresholds else None


def _card_for(key: str, name: str, version: str, cards: Sequence[Any]) -> Any | None:
    for c in cards:   # the card whose key (its scoring digest, core.records.scoring_digest) the results carry
        if model_key(c) == key:
            return c
    for c in cards:
        if not c.model_sha256 and (c.name, c.version) == (name, version):
            return c
    return None


def models_of(records: Sequence[ResultRecord], cards: Sequence[Any] = (),
              origins: dict[str, str] | None = None) -> list[ModelInfo]:
    """The models behind `records`, in order of first appearance, each with its card and origin."""
    found: dict[str, ModelInfo] = {}
    for r in records:
        key = model_key(r)
        info = found.get(key)
        if info is None:
            info = found[key] = ModelInfo(key, r.model, r.model_version, r.model_sha256)
        if r.threshold is not None and float(r.threshold) not in info.thresholds:
            info.thresholds.append(float(r.threshold))
    for info in found.values():
        info.card = _card_for(info.key, info.name, info.version, cards)
        info.origin = (origins or {}).get(info.key)
    models = list(found.values())
    for info, short in zip(models, short_labels(models)):
        info.short = short
    return models


def short_version(version: str) -> str:
    """A version for a narrow place: build metadata cut after its first word ("1.3.0+site.2026-12-07" ->
    "1.3.0+site"); the Models table and the card page print it whole."""
    head, plus, meta = str(version or "").partition("+")
    return head + (plus + meta.split(".")[0] if plus else "")


def short_labels(models: Sequence[ModelInfo]) -> list[str]:
    """One short name per model, used alike by the photo table, the per-model counts and the charts: the
    architecture as core.triage.reasons names it ("MobileNetV2", "combined") and the short version; the model's own
    name instead when two would read the same."""
    from core.triage.reasons import short_name

    def short(m: ModelInfo, own_name: bool) -> str:
        name = m.name or "?"
        if not own_name and m.card is not None:
            arch = short_name(m.card)   # "name version" when the architecture is not a known one
            name = name if arch == f"{m.card.name} {m.card.version}" else arch
        return f"{name} {short_version(m.version)}".strip()

    first = [short(m, False) for m in models]
    return [s if first.count(s) == 1 else short(m, True) for s, m in zip(first, models)]


@dataclass
class PhotoRow:
    """Everything the report says about one photo: each model's result, the review, why to look at it."""

    path: str
    results: dict[str, ResultRecord]            # model key -> record
    review: dict | None = None
    truth: str | None = None
    reasons: list[Reason] = field(default_factory=list)   # core.triage.reasons, most urgent first
    call: str = ""                                        # core.triage.reasons.photo_call: the photo's call

    @property
    def ok_results(self) -> list[ResultRecord]:
        return [r for r in self.results.values() if r.ok]

    @property
    def has_error(self) -> bool:
        return any(not r.ok for r in self.results.values())

    @property
    def calls(self) -> set[str]:
        """The mpox / not-mpox calls of the models that scored it (an out-of-scope photo has none)."""
        return {r.prediction for r in self.ok_results if r.prediction in CALLS}

    @property
    def disagree(self) -> bool:
        return len(self.calls) > 1

    @property
    def needs_review(self) -> bool:
        return bool(self.reasons)

    @property
    def reason(self) -> str:
        """The first reason's kind (core.triage.reasons.ORDER), or "" when nothing calls for a look."""
        return self.reasons[0].kind if self.reasons else ""

    @property
    def risk(self) -> float:
        """The highest p(mpox) any model gave the photo (0 when none scored it)."""
        return max((float(r.p_mpox) for r in self.ok_results if r.p_mpox is not None), default=0.0)

    @property
    def reviewed(self) -> bool:
        return bool(self.review and self.review.get("label"))

    @property
    def overridden(self) -> bool:
        """A reviewer's mpox / not-mpox label contradicts the model's call."""
        label = (self.review or {}).get("label")
        return label in CALLS and self.call in CALLS and label != self.call


def photo_rows(records: Sequence[ResultRecord], models: Sequence[ModelInfo] | None = None,
               reviews: dict[str, dict] | None = None, truth: dict[str, str] | None = None,
               scope_limit: float | None = None, shift: dict | None = None,
               points: dict[str, Any] | None = None) -> list[PhotoRow]:
    """One row per photo (records of several models for one path are merged), needs-review first.

    Reasons come from core.triage.reasons (the app's table and the CSV say the same). Order: by the first reason
    (core.triage.reasons.ORDER: unreadable, not a skin photo, out of scope, disagree, uncertain, ...; each highest
    risk first), then every other photo by its highest p(mpox). A later record of the same model and path
    replaces an earlier one (a resumed run lists the newest result last). `points`: the operating point each
    model decides this folder at (folder_points), so an uncertain row cites the band it was decided at.
    """
    models = list(models) if models is not None else models_of(records)
    refs = model_refs_of(models)
    decider = deciding_key([m.card for m in models if m.card is not None])
    merged: dict[str, dict[str, ResultRecord]] = {}
    shown: dict[str, str] = {}
    for r in records:
        norm = os.path.normpath(str(r.path))
        shown.setdefault(norm, r.path)
        merged.setdefault(norm, {})[model_key(r)] = r
    rows = []
    for norm, results in merged.items():
        path = shown[norm]
        ordered = {m.key: results[m.key] for m in models if m.key in results}
        rows.append(PhotoRow(path, ordered, lookup(reviews, path), lookup(truth, path),
                             photo_reasons(ordered, refs, decider=decider, shift=shift, scope_limit=scope_limit,
                                           points=points),
                             photo_call(ordered, refs, decider)))

    def order(row: PhotoRow) -> tuple[int, float, str]:
        group = ORDER.index(row.reason) if row.reason else len(ORDER)
        return group, -row.risk, row.path

    return sorted(rows, key=order)


def folder_points(records: Sequence[ResultRecord], models: Sequence[ModelInfo], shift: dict | None) -> dict[str, Any]:
    """The operating point each model with a card decides these records' folder at (the workspace's rule,
    core.models.operating_point.records_point, over the records the report holds), by model key."""
    from core.models.operating_point import records_point

    alarm = bool(shift and shift.get("detected"))
    return {m.key: records_point(m.card, alarm, [r for r in records if model_key(r) == m.key])
            for m in models if m.card is not None}


def model_refs_of(models: Sequence[ModelInfo]) -> list[ModelRef]:
    """core.triage.reasons' view of the report's models: short names from the cards, else "name version"."""
    with_cards = [m for m in models if m.card is not None]
    named = {r.key: r for r in model_refs([m.card for m in with_cards])}
    return [named.get(m.key) or ModelRef(m.key, m.label, m.card) for m in models]


@dataclass
class PhotoCounts:
    """The cover's figures, in photos (never file x model)."""

    photos: int = 0
    errors: int = 0                  # at least one model could not read it
    scored: int = 0
    partly_scored: int = 0           # scored, but not by every model in the report
    mpox: int = 0                    # scored photos whose call (core.triage.reasons.photo_call) is mpox
    not_mpox: int = 0
    out_of_scope: int = 0            # called out of scope: not a skin photo, no mpox call made
    overrides: int = 0               # a reviewer labelled it against the model's call
    disagree: int = 0
    needs_review: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)   # reason -> photos (a photo may have several)
    reviewed: int = 0
    review_labels: dict[str, int] = field(default_factory=dict)
    needs_review_unreviewed: int = 0


def count_photos(rows: Sequence[PhotoRow], n_models: int = 1) -> PhotoCounts:
    c = PhotoCounts(photos=len(rows), by_reason={k: 0 for k in ORDER})
    labels: Counter[str] = Counter()
    for row in rows:
        if row.has_error or not row.ok_results:
            c.errors += 1
        else:
            c.scored += 1
            c.partly_scored += len(row.ok_results) < n_models
            c.disagree += len(row.calls) > 1
            c.mpox += row.call == LABEL_MPOX
            c.not_mpox += row.call == LABEL_NOT_MPOX
            c.out_of_scope += row.call == OUT_OF_SCOPE_CALL
        if row.needs_review:
            c.needs_review += 1
            for reason in dict.fromkeys(x.kind for x in row.reasons):
                c.by_reason[reason] += 1
            c.needs_review_unreviewed += not row.reviewed
        c.overrides += row.overridden
        if row.reviewed:
            c.reviewed += 1
            labels[row.review["label"]] += 1
    c.review_labels = dict(labels)
    return c


@dataclass
class Counts:
    """One model's results per status, prediction and flag (each model has one result per photo)."""

    total: int = 0
    ok: int = 0
    errors: int = 0
    mpox: int = 0
    not_mpox: int = 0
    uncertain: int = 0
    out_of_scope: int = 0
    unflagged: int = 0
    reviewed: int = 0


def count_records(records: Sequence[ResultRecord], reviews: dict[str, dict] | None = None) -> Counts:
    """Counts of one model's records; for a report's cover use count_photos (records may be file x model)."""
    c = Counts(total=len(records))
    for r in records:
        if not r.ok:
            c.errors += 1
            continue
        c.ok += 1
        c.mpox += r.prediction == LABEL_MPOX
        c.not_mpox += r.prediction == LABEL_NOT_MPOX
        c.uncertain += r.flag == FLAG_UNCERTAIN
        c.out_of_scope += r.flag == FLAG_OUT_OF_SCOPE
        c.unflagged += not r.flag
    if reviews:
        c.reviewed = sum(1 for r in records if lookup(reviews, r.path))
    return c


def _origin_text(origin: str | None, card: Any | None) -> str:
    if not origin:
        return "not stated"
    text = ORIGIN_TEXT.get(origin, origin)
    parent = getattr(card, "parent", None)
    if origin == "local" and parent:
        text = f"local model, from {parent.get('name', '?')} {parent.get('version', '')}".strip()
    return text
