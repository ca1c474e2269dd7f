"""Cases: photos grouped by patient or visit, and what a case says (one definition for the CLI, the app, the PDF,
the FHIR export and the Ray engine's Parquet rows).

A clinician decides per case, not per photo. Photos are grouped one of three ways (`Grouping.parse`):

* `subfolder`: the first-level subfolder of the scanned folder (or of a manifest's folder) a photo lies in;
* `regex:PATTERN`: a pattern searched in the photo's file name; its first group (else the whole match) is the case;
* `column:NAME`: a column of the manifest that lists the photos.

A photo with no case (at the top level, not matching, an empty cell) is its own case, named by its relative path.
A case id is text from the user's files: made valid UTF-8 like a path (core.records.safe_text) and never used as
a path.

What a case says (`summarize`), from its photos' facts (`PhotoFacts`, built from ResultRecords by `photo_facts`):

* call: `mpox` if any in-scope photo is called mpox (by the deciding model when one decides, core.triage.reasons; with
  several models and none deciding, a photo the models disagree on counts as mpox: triage errs towards a look);
  `not_mpox` when it has in-scope photos and none is called mpox; `""` (no call) when no photo is in scope;
* score: the highest calibrated p(mpox) of its in-scope photos (the deciding model's, else the highest model's);
* needs review: any photo needs review (core.triage.reasons), with the reasons of the photo most likely to be mpox
  among those (in-scope photos by score first, then the others);
* counts of photos, calls, flags, errors, photos needing review and photos reviewed by a person.

Qt-free and TensorFlow-free; no I/O except `manifest_column` (reads a manifest) and `write_case_csv` (atomic).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from core.records import (FLAG_OUT_OF_SCOPE, LABEL_MPOX, LABEL_NOT_MPOX, PREDICTION_OUT_OF_SCOPE, ResultRecord,
                          safe_text)

SUBFOLDER, REGEX, COLUMN = "subfolder", "regex", "column"
CASES_HELP = ("group photos into cases: 'subfolder' (first-level subfolders), 'regex:PATTERN' (a pattern on the "
              "file name; its first group is the case) or 'column:NAME' (a column of the manifest)")
NO_CALL = ""
DISAGREE = "disagree"
CASE_CSV_COLUMNS = ["case_id", "call", "score", "needs_review", "review_reason", "review_photo", "photos",
                    "scored", "mpox", "not_mpox", "out_of_scope", "errors", "flagged", "needing_review", "reviewed"]


class CaseError(ValueError):
    """A grouping cannot be used (a bad pattern, a missing column); the message is one line for the user."""


@dataclass(frozen=True)
class Grouping:
    """How photos are grouped into cases: kind (SUBFOLDER, REGEX, COLUMN) and its argument."""

    kind: str
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> "Grouping":
        """`subfolder`, `regex:PATTERN` or `column:NAME`; CaseError (one line) otherwise."""
        text = (text or "").strip()
        kind, _, value = text.partition(":")
        kind = kind.strip().lower()
        if kind == SUBFOLDER and not value:
            return cls(SUBFOLDER)
        if kind == REGEX and value:
            try:
                re.compile(value)
            except re.error as exc:
                raise CaseError(f"--cases regex:{value}: not a valid pattern ({exc})") from None
            return cls(REGEX, value)
        if kind == COLUMN and value.strip():
            return cls(COLUMN, value.strip())
        raise CaseError(f"--cases {text!r}: use 'subfolder', 'regex:PATTERN' or 'column:NAME'")

    @property
    def text(self) -> str:
        return self.kind if not self.value else f"{self.kind}:{self.value}"


def relative_name(path: str, root: str | os.PathLike | None) -> str:
    """A photo key relative to `root` ('/' separated) when it lies inside it, else the key itself."""
    if root is None:
        return path.replace(os.sep, "/")
    base = safe_text(str(root)).rstrip("/\\")
    if path.startswith(base) and path[len(base):len(base) + 1] in ("/", "\\", os.sep):
        return path[len(base) + 1:].replace(os.sep, "/")
    return path.replace(os.sep, "/")


def assign(paths: Sequence[str], grouping: Grouping | None, root: str | os.PathLike | None,
           column: Mapping[str, str] | None = None) -> dict[str, str]:
    """Photo key -> case id for every photo (keys as Workspace.paths); a photo with no case is its own case, named
    by its relative path. `column` (COLUMN grouping) maps a photo key to its manifest cell."""
    if grouping is not None and grouping.kind == COLUMN and column is None:
        raise CaseError(f"--cases {grouping.text} needs a manifest (CSV, TSV or Parquet) that lists the photos")
    pattern = re.compile(grouping.value) if grouping is not None and grouping.kind == REGEX else None
    out: dict[str, str] = {}
    for path in paths:
        rel = relative_name(path, root)
        case = ""
        if grouping is None:
            case = ""
        elif grouping.kind == SUBFOLDER:
            parts = rel.split("/")
            case = parts[0] if len(parts) > 1 and rel != path.replace(os.sep, "/") else ""
        elif pattern is not None:
            m = pattern.search(rel.rsplit("/", 1)[-1])
            if m is not None:
                case = next((g for g in m.groups() if g), None) or m.group(0)
        else:
            case = (column or {}).get(path, "")
        out[path] = safe_text(str(case).strip()) or rel
    return out


def manifest_column(manifest: str | os.PathLike, name: str) -> dict[str, str]:
    """Photo key (core.records.escape_path of the resolved path, as a Workspace names it) -> the manifest's `name`
    cell; CaseError (one line) when the column is missing."""
    from core.records import escape_path
    from core.store.sources import ManifestError, read_manifest_columns

    try:
        rows = read_manifest_columns(manifest, [name])
    except ManifestError as exc:
        raise CaseError(str(exc)) from None
    return {escape_path(path): "" if cells[name] is None else str(cells[name]) for path, cells in rows}


# --- what a photo and a case say ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoFacts:
    """One photo as a case needs it: its call over the chosen models (core.triage.reasons.photo_call), its score, whether it
    is in scope, its flags and reasons, and the records behind them."""

    path: str
    case_id: str
    call: str                         # mpox, not_mpox, out_of_scope, disagree, error, "" (not scored by every model)
    p_mpox: float | None              # the deciding model's p(mpox), else the highest of the models
    in_scope: bool                    # scored and not out of scope: its call counts for its case
    flags: tuple[str, ...]
    reasons: tuple[Any, ...]          # core.triage.reasons.Reason, most urgent first
    reviewed: bool
    records: Mapping[str, ResultRecord] = field(default_factory=dict)   # model key -> record (present ones)

    @property
    def scored(self) -> bool:
        return any(r.ok for r in self.records.values())

    @property
    def errors(self) -> bool:
        return any(not r.ok for r in self.records.values())

    @property
    def needs_review(self) -> bool:
        return bool(self.reasons)

    @property
    def file_sha256(self) -> str:
        return next((r.file_sha256 for r in self.records.values() if r.file_sha256), "") or ""

    @property
    def votes_mpox(self) -> bool:
        return self.in_scope and self.call in (LABEL_MPOX, DISAGREE)


@dataclass
class CaseResult:
    """What one case says (see the module docstring)."""

    case_id: str
    photos: list[PhotoFacts]
    call: str
    score: float | None
    needs_review: bool
    review_reason: str = ""
    review_photo: str = ""

    def counts(self) -> dict[str, int]:
        ps = self.photos
        return {"photos": len(ps), "scored": sum(p.scored for p in ps),
                "mpox": sum(p.in_scope and p.call == LABEL_MPOX for p in ps),
                "not_mpox": sum(p.in_scope and p.call == LABEL_NOT_MPOX for p in ps),
                "out_of_scope": sum(p.call == PREDICTION_OUT_OF_SCOPE for p in ps),
                "errors": sum(p.errors for p in ps), "flagged": sum(bool(p.flags) for p in ps),
                "needing_review": sum(p.needs_review for p in ps), "reviewed": sum(p.reviewed for p in ps)}

    def row(self, root: str | os.PathLike | None = None) -> dict[str, str]:
        """The case CSV's row (CASE_CSV_COLUMNS)."""
        return {"case_id": self.case_id, "call": self.call,
                "score": "" if self.score is None else f"{self.score:.6f}",
                "needs_review": "yes" if self.needs_review else "no", "review_reason": self.review_reason,
                "review_photo": relative_name(self.review_photo, root) if self.review_photo else "",
                **{k: str(v) for k, v in self.counts().items()}}


def photo_facts(path: str, case_id: str, records: Mapping[str, ResultRecord | None], models: Sequence[Any],
                decider: str, reasons: Sequence[Any], reviewed: bool) -> PhotoFacts:
    """PhotoFacts of one photo from its records (model key -> record) over `models` (core.triage.reasons.ModelRef)."""
    from core.triage.reasons import photo_call

    present = {k: r for k, r in records.items() if r is not None}
    call = photo_call(records, models, decider)
    scored = [r for r in present.values() if r.ok and r.p_mpox is not None]
    if decider:
        scored = [r for k, r in present.items() if k == decider and r.ok and r.p_mpox is not None]
    p = max((float(r.p_mpox) for r in scored), default=None)
    in_scope = p is not None and call not in (PREDICTION_OUT_OF_SCOPE, "error", "") and not any(
        r.flag == FLAG_OUT_OF_SCOPE for r in scored)
    flags = tuple(sorted({r.flag for r in present.values() if r.ok and r.flag}))
    return PhotoFacts(path, case_id, call, p, in_scope, flags, tuple(reasons), reviewed, present)


def summarize(photos: Iterable[PhotoFacts]) -> list[CaseResult]:
    """One CaseResult per case, in the order cases first appear; each case's photos in their given order."""
    from core.triage.reasons import reasons_text

    by_case: dict[str, list[PhotoFacts]] = {}
    for p in photos:
        by_case.setdefault(p.case_id, []).append(p)
    out = []
    for case_id, ps in by_case.items():
        in_scope = [p for p in ps if p.in_scope]
        if any(p.votes_mpox for p in in_scope):
            call = LABEL_MPOX
        elif in_scope:
            call = LABEL_NOT_MPOX
        else:
            call = NO_CALL
        score = max((p.p_mpox for p in in_scope), default=None)
        needing = [p for p in ps if p.needs_review]
        worst = max(needing, key=lambda p: (p.in_scope, -1.0 if p.p_mpox is None else p.p_mpox), default=None)
        out.append(CaseResult(case_id, ps, call, score, bool(needing),
                              reasons_text(worst.reasons) if worst else "", worst.path if worst else ""))
    return out


def review_order(cases: Sequence[CaseResult]) -> list[CaseResult]:
    """Cases as a reviewer takes them: needing review first, then called mpox, each by highest score first."""
    return sorted(cases, key=lambda c: (not c.needs_review, c.call != LABEL_MPOX,
                                        -(c.score if c.score is not None else -1.0)))


@dataclass
class CaseView:
    """A folder's photos grouped into cases over chosen models: what the CSV, PDF, app and FHIR export read."""

    root: str                                  # the folder photos are named relative to
    keys: list[str]                            # the chosen models, in the workspace's order
    cards: dict[str, Any]                      # model key -> card (those known)
    decider: str                               # core.triage.reasons.deciding_key
    photos: list[PhotoFacts]
    cases: list[CaseResult]
    grouping: Grouping | None = None

    @property
    def case_of(self) -> dict[str, str]:
        return {p.path: p.case_id for p in self.photos}

    def relative(self, path: str) -> str:
        return relative_name(path, self.root)


def build_view(paths: Sequence[str], keys: Sequence[str], results: Callable[[str], Mapping[str, ResultRecord | None]],
               cards: Mapping[str, Any], case_of: Mapping[str, str], reasons: Callable[[str], Sequence[Any]],
               reviewed: Callable[[str], bool], root: str, grouping: Grouping | None = None) -> CaseView:
    """A CaseView from plain views: `results(path)` -> model key -> record, `reasons(path)`, `reviewed(path)`."""
    from core.triage.reasons import ModelRef, deciding_key, model_refs

    known = [cards[k] for k in keys if k in cards]
    named = {r.key: r for r in model_refs(known)}
    refs = [named.get(k) or ModelRef(k, k) for k in keys]
    decider = deciding_key(known)
    photos = []
    for path in paths:
        recs = results(path)
        if all(r is None for r in recs.values()):
            continue
        photos.append(photo_facts(path, case_of.get(path, path), recs, refs, decider, reasons(path), reviewed(path)))
    return CaseView(root, list(keys), dict(cards), decider, photos, summarize(photos), grouping)


def records_view(records: Iterable[ResultRecord], cards: Sequence[Any] = (), case_of: Mapping[str, str] | None = None,
                 root: str | os.PathLike | None = None, grouping: Grouping | None = None,
                 reviews: Mapping[str, dict] | None = None) -> CaseView:
    """The CaseView of plain ResultRecords (e.g. the Ray engine's Parquet rows), photos in their first order, models
    by (name, version, key); reasons from core.triage.reasons over the given cards (no folder shift verdict)."""
    from core.triage.reasons import ModelRef, deciding_key, model_refs, photo_reasons

    by_photo: dict[str, dict[str, ResultRecord]] = {}
    names: dict[str, tuple[str, str]] = {}
    for rec in records:
        by_photo.setdefault(rec.path, {})[rec.model_key] = rec
        names.setdefault(rec.model_key, (rec.model, rec.model_version))
    keys = sorted(names, key=lambda k: (*names[k], k))
    known = {c.key: c for c in cards}
    named = {r.key: r for r in model_refs([known[k] for k in keys if k in known])}
    refs = [named.get(k) or ModelRef(k, f"{names[k][0]} {names[k][1]}".strip()) for k in keys]
    decider = deciding_key([known[k] for k in keys if k in known])
    paths = list(by_photo)
    root_text = safe_text(str(root)) if root is not None else os.path.commonpath(paths) if paths else ""
    case_of = case_of if case_of is not None else assign(paths, grouping, root_text)
    return build_view(paths, keys, lambda p: {k: by_photo[p].get(k) for k in keys}, known, case_of,
                      lambda p: photo_reasons({k: by_photo[p].get(k) for k in keys}, refs, decider=decider),
                      lambda p: p in (reviews or {}), root_text, grouping)


def workspace_view(ws: Any, keys: Sequence[str] | None = None, grouping: Grouping | None = None,
                   case_of: Mapping[str, str] | None = None, root: str | os.PathLike | None = None) -> CaseView:
    """The CaseView of a core.store.workspace.Workspace over `keys` (default: every model with results), through its
    public views (paths, results, cards, reasons, reviews). Photos with no result are left out (as in the CSV).
    `case_of` (photo key -> case id) overrides `grouping`; `root`: where relative names start (default the
    workspace's folder)."""
    keys = ws.ordered(keys) if keys is not None else ws.model_keys()
    root = safe_text(str(root if root is not None else ws.folder))
    if case_of is None:
        case_of = assign(ws.paths, grouping, root)
    reviews = ws.reviews
    with_result = [p for p in ws.paths if any(r is not None for r in ws.photo_records(p, keys))]
    return build_view(with_result, keys, lambda p: dict(zip(keys, ws.photo_records(p, keys))), ws.cards, case_of,
                      lambda p: ws.reasons(p, keys), lambda p: p in reviews, root, grouping)


def case_counts(view: CaseView) -> dict[str, Any]:
    """Counts in cases for a summary: grouping, cases, called mpox, not mpox, no call, needing review."""
    cs = view.cases
    return {"grouping": view.grouping.text if view.grouping is not None else None, "cases": len(cs),
            "mpox": sum(c.call == LABEL_MPOX for c in cs), "not_mpox": sum(c.call == LABEL_NOT_MPOX for c in cs),
            "no_call": sum(c.call == NO_CALL for c in cs), "needs_review": sum(c.needs_review for c in cs)}


def case_triage(labels: Mapping[str, int], review: Mapping[str, bool], case_of: Mapping[str, str]) -> dict[str, Any]:
    """Case-level triage (core.models.operating_point.triage_from_review, with 95% Wilson intervals): a case is mpox when any
    of its photos is labelled mpox (`labels`: photo -> 1/0) and goes to review when any of its photos does
    (`review`: photo -> called mpox or flagged, core.models.operating_point.records_review)."""
    from core.models.operating_point import triage_from_review

    y: dict[str, int] = {}
    looked: dict[str, bool] = {}
    for path, label in labels.items():
        case = case_of.get(path, path)
        y[case] = max(y.get(case, 0), int(label))
        looked[case] = looked.get(case, False) or bool(review.get(path, False))
    cases = list(y)
    out = triage_from_review([y[c] for c in cases], [looked[c] for c in cases])
    return {"n_cases": len(cases), "n_mpox_cases": out.pop("n_mpox"), "n_other_cases": out.pop("n_other"), **out}


def evaluation_cases(predictions: Sequence[Mapping[str, Any]], grouping: Grouping, data: str | os.PathLike
                     ) -> dict[str, Any]:
    """Case-level triage of `evaluate`'s per-photo predictions ({path, label, prediction, flag}). Its data's
    first-level subfolders are the classes, so cases come from a pattern (`regex:`) or a manifest column
    (`column:`, DATA being the manifest CSV or a folder with manifest.csv). CaseError (one line) otherwise."""
    from core.models.operating_point import records_review

    if grouping.kind == SUBFOLDER:
        raise CaseError("--cases subfolder: in evaluate the first-level subfolders are the classes; group cases with "
                        "'regex:PATTERN' or 'column:NAME'")
    data = Path(data).expanduser()
    real = [os.path.realpath(str(p["path"])) for p in predictions]
    column = None
    if grouping.kind == COLUMN:
        manifest = data if data.is_file() else data / "manifest.csv"
        if not manifest.is_file():
            raise CaseError(f"--cases {grouping.text} needs a manifest: {safe_text(str(data))} is a folder without "
                            "manifest.csv")
        from core.store.sources import ManifestError, read_manifest_columns

        try:
            rows = read_manifest_columns(manifest, [grouping.value])
        except ManifestError as exc:
            raise CaseError(str(exc)) from None
        column = {os.path.realpath(p): "" if c[grouping.value] is None else str(c[grouping.value]) for p, c in rows}
    root = data.parent if data.is_file() else data
    case_of = assign(real, grouping, os.path.realpath(root), column)
    review = records_review([p.get("prediction") for p in predictions], [p.get("flag") or "" for p in predictions])
    labels = {r: int(p["label"] == LABEL_MPOX) for r, p in zip(real, predictions)}
    out = case_triage(labels, dict(zip(real, review.tolist())), case_of)
    return {"grouping": grouping.text, **out}


# --- outputs --------------------------------------------------------------------------------------------------
class WithCaseColumn:
    """A Workspace whose CSV rows carry a `case_id` column after `path` (everything else is the workspace's own).
    core.store.workspace.CsvStream writes through it: `CsvStream(WithCaseColumn(ws, case_of), out, keys, plans)`."""

    def __init__(self, ws: Any, case_of: Mapping[str, str]):
        self._ws = ws
        self._case_of = dict(case_of)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def csv_columns(self, keys: Sequence[str]) -> list[str]:
        cols = list(self._ws.csv_columns(keys))
        at = cols.index("path") + 1 if "path" in cols else 0
        return cols[:at] + ["case_id"] + cols[at:]

    def csv_row(self, path: str, keys: Sequence[str]) -> dict[str, str] | None:
        row = self._ws.csv_row(path, keys)
        if row is not None:
            row["case_id"] = self._case_of.get(path, path)
        return row


def csv_stream(ws: Any, out: str | os.PathLike, keys: Sequence[str], plans: Sequence[Any],
               case_of: Mapping[str, str]) -> Any:
    """Workspace.csv_stream with a `case_id` column (see WithCaseColumn)."""
    from core.store.workspace import CsvStream

    return CsvStream(WithCaseColumn(ws, case_of), out, ws.ordered(keys), plans)


def export_csv(ws: Any, out: str | os.PathLike, keys: Sequence[str], case_of: Mapping[str, str]):
    """Workspace.export_csv with a `case_id` column; atomic, one audit entry."""
    return csv_stream(ws, out, keys, (), case_of).close()


def write_case_csv(view: CaseView, out: str | os.PathLike, ws: Any = None) -> Path:
    """One row per case (CASE_CSV_COLUMNS) in the order cases first appear, published atomically by the one CSV
    writer (core.store.csvio: formula cells neutralised). With `ws`, the output policy is the workspace's and the export
    gets its one audit entry (kind `case_csv`)."""
    from core.store.csvio import ResultCsvWriter
    from core.store.workspace import write_error

    if ws is not None:
        ws.check_output(out, "case CSV")
    try:
        writer = ResultCsvWriter(out, columns=CASE_CSV_COLUMNS)
    except OSError as exc:
        raise write_error("case CSV", out, exc) from None
    try:
        for case in view.cases:
            writer.write_row(case.row(view.root))
        writer.close()
    except OSError as exc:
        writer.abort()
        raise write_error("case CSV", out, exc) from None
    except BaseException:
        writer.abort()
        raise
    if ws is not None:
        ws.log_export("case_csv", out, view.keys)
    return Path(out)
