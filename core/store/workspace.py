"""One folder of photos and (optionally) its session: what both the command line and the app drive.

A `Workspace` owns the folder's discovered photos, the results and reviews restored from its session,
and every rule about them, so `mpox-triage classify` and the desktop app cannot drift apart:

* what still needs scoring for a model (`to_score`: one resume policy),
* a run (`run`: start, commit, finish with one status vocabulary),
* reviews (`review`, `clear_review`),
* exports (`export_csv`, `csv_stream`; the PDF through core.reports.workspace_pdf, which logs with `log_export`),
  each with exactly one audit entry of one shape,
* counts, always in photos (`counts`, `summary`).

Qt-free and TensorFlow-free: an engine is any object with `.run(paths, progress=None, cancel=None)`
yielding `ResultRecord`s and a `.card` (or `.bundle.card`), e.g. `core.triage.inference.InferenceEngine` or
`core.scale.RayEngine`.

Resume policy (`to_score`): a photo is (re)scored when the model has no result for it, its result is an
error row, or the file changed since it was scored (size or mtime differ and then the SHA-256 differs;
with `verify_hashes=True` the SHA-256 is always compared). A result scored at another threshold is
re-decided, not re-scored: p(mpox) does not depend on the threshold, so prediction (and flag) are
recomputed from the stored p(mpox) and out-of-scope score exactly as the model would.

Commit policy: results are committed to the session once per engine batch (when the engine reports
progress) and at least every `commit_every` results, and whatever is buffered when a run stops for any
reason. A kill -9 loses at most the batch being written; a resume re-scores it.

Run status (written to the session's `runs` table and the `run_finished` audit entry):
  finished     every planned photo has a result
  cancelled    the caller's CancelToken stopped it (or the caller stopped iterating)
  interrupted  the process was interrupted (Ctrl+C / KeyboardInterrupt, SIGTERM turned into one)
  failed       an error stopped it (engine failure, a full disk...); `run.error` says why
A run still `running` in a session was killed before it could write any status.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from core.progress import Cancelled, CancelToken, Progress, ProgressFn
from core.records import ResultRecord, escape_path, safe_text, utc_now

if TYPE_CHECKING:
    from core.photos.images import Discovery
    from core.models.operating_point import OperatingPoint

STATUS_FINISHED = "finished"
STATUS_CANCELLED = "cancelled"
STATUS_INTERRUPTED = "interrupted"
STATUS_FAILED = "failed"
RUN_STATUSES = (STATUS_FINISHED, STATUS_CANCELLED, STATUS_INTERRUPTED, STATUS_FAILED)

ACTION_EXPORTED = "report_exported"   # one audit action for every export; details say the kind
ACTION_SHIFT = "shift_test"           # a model's shift verdict on a source, with the stored set it was computed on
REASON_MISSING, REASON_ERROR, REASON_CHANGED = "missing", "error", "changed"


class WorkspaceError(Exception):
    """A workspace could not be opened or written (session, CSV, PDF); the message is one line for the user."""


def shift_reference(engine: Any) -> Any:
    """What a model's shift test on this workspace reads (its card and its bundle folder's training
    embeddings): the local engine's loaded bundle, or a Ray engine's verified folder (core.scale.RayEngine)."""
    return getattr(engine, "bundle", None) or getattr(engine, "reference", None)


def card_key(card: Any) -> str:
    """ModelCard.key for a card (or a dict with the same fields)."""
    key = getattr(card, "key", None)
    if isinstance(key, str):
        return key
    from core.records import scoring_digest

    get = card.get if isinstance(card, dict) else (lambda n, d="": getattr(card, n, d))
    return scoring_digest(card) or f"{get('name', '')} {get('version', '')}"


def engine_card(engine: Any) -> Any:
    card = getattr(engine, "card", None)
    if card is None and getattr(engine, "bundle", None) is not None:
        card = engine.bundle.card
    if card is None:
        raise TypeError("an engine needs a .card (or .bundle.card) saying which model it runs")
    return card


def decide(card: Any, record: ResultRecord, point: "OperatingPoint | float") -> ResultRecord:
    """`record` with prediction and flag recomputed at an operating point (or a threshold, the card's default
    point moved there) from its stored p(mpox), ood score and
    scope score (an out-of-scope photo stays out of scope at any point)."""
    from core.models.operating_point import OperatingPoint, card_point

    if not isinstance(point, OperatingPoint):
        point = card_point(card, threshold=float(point))
    if not record.ok or record.p_mpox is None:
        return replace(record, threshold=point.threshold)
    import numpy as np

    from core.models.bundle import Bundle

    ood = None if record.ood_score is None else np.array([record.ood_score])
    scored = Bundle(card, None, None).decide(np.array([record.p_mpox]), ood, point=point,
                                             scope_score=[record.scope_score])
    return replace(record, prediction=scored.prediction[0], flag=scored.flag[0], threshold=float(point.threshold))


def _decided_alike(a: ResultRecord, b: ResultRecord) -> bool:
    same_thr = (a.threshold is not None and b.threshold is not None
                and abs(float(a.threshold) - float(b.threshold)) <= 1e-12)
    return same_thr and a.prediction == b.prediction and a.flag == b.flag


def write_error(what: str, path: Any, exc: BaseException) -> WorkspaceError:
    """The one-line WorkspaceError for an output that could not be written (its reason from the OS error)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return WorkspaceError(f"cannot write {what} {path}: {reason}")


@dataclass
class ScorePlan:
    """What a run of one model must do on this workspace (see the module's resume policy)."""

    key: str
    card: Any
    point: "OperatingPoint"
    score: list[str] = field(default_factory=list)        # photos to (re)score
    redecide: list[str] = field(default_factory=list)     # stored results to re-decide at `threshold`
    kept: int = 0                                          # stored results used as they are
    reasons: Counter = field(default_factory=Counter)     # why each photo in `score` is there
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)  # photo -> (size, mtime_ns) before scoring

    @property
    def threshold(self) -> float:
        return self.point.threshold

    @property
    def user_threshold(self) -> float | None:
        """The threshold the user asked for (--threshold), None when the card's point is used."""
        from core.models.operating_point import MANUAL

        return self.point.threshold if self.point.name == MANUAL else None

    @property
    def restored(self) -> int:
        return self.kept + len(self.redecide)

    @property
    def empty(self) -> bool:
        return not self.score and not self.redecide

    def describe(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        text = f"{self.restored} already scored, {len(self.score)} to go"
        if why:
            text += f" ({why})"
        if self.redecide:
            where = ("the out-of-collection operating point" if self.point.name == "out_of_collection"
                     else f"threshold {self.threshold:.3f}")
            text += f"; {len(self.redecide)} re-decided at {where}"
        return text


class Workspace:
    """A folder's photos, their results and reviews, and (optionally) the session that stores them."""

    def __init__(self, folder: str | os.PathLike, session: Any = None, actor: str | None = None,
                 paths: Sequence[os.PathLike | str] | None = None, walk_errors: Sequence[str] = (),
                 skipped_links: Sequence[str] = (), unreadable_dirs: Sequence[str] = ()):
        self.folder = Path(os.path.abspath(Path(folder).expanduser()))
        self.session = session
        self.actor = actor
        self.walk_errors: list[str] = list(walk_errors)
        # Symbolic links leading outside the folder (not followed) and folders that could not be listed:
        # counted in the summary, and each unreadable folder leaves an `error` row in the CSV.
        self.skipped_links: list[str] = [safe_text(str(p)) for p in skipped_links]
        self.unreadable_dirs: list[str] = [safe_text(str(p)) for p in unreadable_dirs]
        if paths is None:
            from core.photos.images import discover

            found = discover(self.folder)
            paths = found.paths
            self.walk_errors += [safe_text(e) for e in found.errors]
            self.skipped_links += [safe_text(p) for p in found.skipped_links]
            self.unreadable_dirs += [safe_text(p) for p in found.unreadable_dirs]
        self._files: dict[str, Path] = {}
        self._keys: dict[str, str] = {}   # str(file) -> its key, to name an engine's results
        for p in paths:
            # A reversible escape (core.records.escape_path): every file on disk keeps its own row.
            key = escape_path(str(p))
            if key in self._files:   # the same file listed twice (a manifest): one row, and say so
                self.walk_errors.append(f"{key}: listed more than once; scored once")
                continue
            self._files[key] = Path(p)
            self._keys[str(p)] = key
        self.paths: list[str] = list(self._files)
        self.results: dict[str, dict[str, ResultRecord]] = {}   # model key -> photo -> latest result
        self.cards: dict[str, Any] = {}                           # model key -> card, as met
        # Each model's shift verdict on this source (core.triage.shift.verdict_entry plus `fingerprint`, the stored set it
        # was computed on): a function of what the session stores for this source and model (refresh_verdict).
        self.source = safe_text(str(self.folder))   # a manifest's path when the photos come from one
        self.verdicts: dict[str, dict] = {}
        self.bundles: dict[str, Any] = {}             # model key -> loaded bundle (attach), for its shift test
        self.moved: list[tuple[str, str]] = []        # (old, new) photos found renamed or moved when opened
        self._changes = 0                              # results remembered so far (a verdict's cache is by it)
        self._changes_of: dict[str, int] = {}          # the same, per model key
        self._verdict_seen: dict[str, int] = {}
        # Models with a run in progress (a count per key): their verdict stays the one of the set stored when
        # the run began until it ends (WorkspaceRun._after_run), so no partial set is ever tested.
        self._running: dict[str, int] = {}
        # Embeddings of photos scored while this workspace is open, by model and content: the stored set of a
        # workspace without a session (with one, the session's `embeddings` table holds them too).
        self._embeddings: dict[str, dict[str, Any]] = {}
        # The folder outputs may not enter (core.store.outputs); None when the photos come from a manifest.
        self.scanned_folder: Path | None = self.folder
        self._origins_from_audit: dict[str, str] | None = None
        self._reviews: dict[str, dict] = {}
        self._lock = threading.RLock()
        if session is not None:
            self._restore()

    # --- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike, session_dir: str | os.PathLike | None = None,
             actor: str | None = None, paths: Sequence[os.PathLike | str] | None = None,
             walk_errors: Sequence[str] = (), found: Any = None) -> "Workspace":
        """Discover the folder's photos (unless `found`, a Workspace.discover result, or `paths` is given) and
        open (or create) its session, restoring results and reviews.

        Raises WorkspaceError with a one-line message for a missing folder or an unusable session."""
        folder = Path(os.path.abspath(Path(folder).expanduser()))
        if not folder.exists():
            raise WorkspaceError(f"no such folder: {folder}")
        if not folder.is_dir():
            raise WorkspaceError(f"not a folder: {folder}")
        session = None
        if session_dir is not None:
            from core.store.session import SessionError, SessionStore

            if Path(session_dir).expanduser().is_file() and Path(session_dir).suffix.lower() not in (
                    ".sqlite", ".db", ".sqlite3"):
                raise WorkspaceError(f"--session {session_dir} is a file; give a session folder")
            try:
                session = SessionStore.open(session_dir)
            except SessionError as exc:
                raise WorkspaceError(safe_text(str(exc))) from None
        try:
            if found is not None:
                return cls(folder, session, actor, paths=found.paths, walk_errors=list(found.errors),
                           skipped_links=found.skipped_links, unreadable_dirs=found.unreadable_dirs)
            return cls(folder, session, actor, paths=paths, walk_errors=walk_errors)
        except RecursionError:
            if session is not None:
                session.close()
            raise WorkspaceError(f"{folder}: folders are nested too deep to search") from None
        except Exception as exc:  # a session damaged past quick_check (core.store.session.SessionError): one line
            from core.store.session import SessionError

            if session is not None:
                session.close()
            if isinstance(exc, SessionError):
                raise WorkspaceError(safe_text(str(exc))) from None
            raise
        except OSError as exc:
            if session is not None:
                session.close()
            raise WorkspaceError(f"cannot open {folder}: {exc.strerror or exc}") from None

    @staticmethod
    def discover(folder: str | os.PathLike) -> "Discovery":
        """core.photos.images.discover (image files; unreadable folders, links leaving the folder), with messages made
        printable; WorkspaceError with one line on failure. Pass it on as Workspace.open(..., found=...)."""
        from core.photos.images import discover

        folder = Path(os.path.abspath(Path(folder).expanduser()))
        if not folder.exists():
            raise WorkspaceError(f"no such folder: {safe_text(str(folder))}")
        if not folder.is_dir():
            raise WorkspaceError(f"not a folder: {safe_text(str(folder))}")
        try:
            found = discover(folder)
        except RecursionError:
            raise WorkspaceError(f"{safe_text(str(folder))}: folders are nested too deep to search") from None
        except OSError as exc:
            raise WorkspaceError(f"cannot open {safe_text(str(folder))}: {exc.strerror or exc}") from None
        found.errors = [safe_text(e) for e in found.errors]
        return found

    def _restore(self) -> None:
        stored, reviews = self.session.results(), self.session.reviews()
        if self._follow_moves(stored, reviews):   # moved rows now stand at their new paths: read them again
            stored, reviews = self.session.results(), self.session.reviews()
        wanted = set(self.paths)
        for rec in stored:
            if rec.path in wanted:
                self.results.setdefault(rec.model_key, {})[rec.path] = rec
        self._reviews = {p: r for p, r in reviews.items() if p in wanted}

    def _follow_moves(self, stored: Sequence[ResultRecord], reviews: dict[str, dict]) -> int:
        """Photos renamed or moved inside the folder since they were stored (the same SHA-256 at a new path, the
        old path gone): their results and reviews follow them (SessionStore.move, one audit entry each), so they
        are neither scored again nor an error row. A copy (both paths present) is two photos. Returns how many
        moved. Only files whose size matches a vanished photo's are hashed."""
        listed = set(self.paths)
        gone: dict[int | None, dict[str, str]] = {}   # size -> {sha: old path}
        known: set[str] = set()
        inside = str(self.folder) + os.sep
        for rec in stored:
            known.add(rec.path)
            if rec.path in listed or not rec.file_sha256 or not rec.ok:
                continue
            if self.scanned_folder is not None and not rec.path.startswith(inside):
                continue
            if os.path.lexists(self.file_of(rec.path)):
                continue
            gone.setdefault(rec.file_size, {})[rec.file_sha256] = rec.path
        if not gone:
            return 0
        known |= set(reviews)
        moved = 0
        for path in self.paths:
            if path in known:
                continue
            st = _stat(self._files[path])
            if st is None or (st[0] not in gone and None not in gone):
                continue
            try:
                with open(self._files[path], "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
            except OSError:
                continue
            old = (gone.get(st[0]) or {}).get(digest) or (gone.get(None) or {}).get(digest)
            if old is None:
                continue
            if self._write("the session", self.session.db_path, self.session.move, old, path, digest, self.actor):
                moved += 1
                self.moved.append((old, path))
                for bucket in gone.values():
                    bucket.pop(digest, None)
        return moved

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def file_of(self, path: str) -> Path:
        """The file on disk behind a photo key (keys are file names made valid UTF-8)."""
        return self._files.get(path, Path(path))

    # --- what to score ---------------------------------------------------------------------------
    def to_score(self, card: Any, threshold: float | None = None, verify_hashes: bool = False,
                 resume: bool = True) -> ScorePlan:
        """What a run of `card`'s model must do; see the resume policy. It decides at the folder's operating
        point (`point_for`: the card's default point, or its out-of-collection point while the folder's shift
        alarm stands), moved to `threshold` when one is given. With resume=False every photo is scored again."""
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        key = card_key(card)
        self.cards.setdefault(key, card)
        point = self.point_for(card, threshold)
        plan = ScorePlan(key, card, point)
        stored = self.results.get(key, {})
        for path in self.paths:
            st = _stat(self._files[path])
            if st is not None:
                plan.stats[path] = st
            rec = stored.get(path) if resume else None
            if rec is None:
                reason = REASON_MISSING
            elif not rec.ok:
                reason = REASON_ERROR
            elif self._changed(path, rec, st, verify_hashes):
                reason = REASON_CHANGED
            else:
                reason = ""
            if reason:
                plan.score.append(path)
                if rec is not None:
                    plan.reasons[reason] += 1
            elif not _decided_alike(rec, decide(card, rec, point)):
                plan.redecide.append(path)
            else:
                plan.kept += 1
        return plan

    def _changed(self, path: str, rec: ResultRecord, st: tuple[int, int] | None, verify_hashes: bool) -> bool:
        if st is None:
            return True  # gone or unreadable: scoring it again gives its error row
        if rec.file_size is not None and rec.file_size != st[0]:
            return True
        if not verify_hashes and (rec.file_size, rec.file_mtime_ns) == st:
            return False
        try:
            with open(self._files[path], "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            return True
        if digest != rec.file_sha256:
            return True
        if not verify_hashes:  # same bytes (touched, or a format-2 row without size/mtime): hash it once only
            self._remember(replace(rec, file_size=st[0], file_mtime_ns=st[1]))
        return False

    # --- running ---------------------------------------------------------------------------------
    def run(self, engine: Any, plan: ScorePlan, progress: ProgressFn | None = None,
            cancel: CancelToken | None = None, commit_every: int | None = None) -> "WorkspaceRun":
        """A run of `plan` with `engine`: iterate it to get each result as it is committed to the workspace;
        afterwards `.status` is one of RUN_STATUSES. Re-decided results come first, then scored ones."""
        key = card_key(engine_card(engine))
        if key != plan.key:
            raise ValueError(f"engine runs model {key!r} but the plan is for {plan.key!r}")
        bundle = shift_reference(engine)
        if bundle is not None and getattr(bundle, "card", None) is not None and card_key(bundle.card) == key:
            self.bundles.setdefault(key, bundle)
        size = commit_every or getattr(engine, "batch_size", None) or 32
        return WorkspaceRun(self, engine, plan, progress, cancel, int(size))

    # --- each model's shift verdict on this source, and its operating point --------------------------
    def attach(self, bundle: Any) -> dict | None:
        """Register a loaded bundle with this workspace (its card, and its training embeddings for the shift test)
        and bring its verdict up to date with what is stored (after a kill, the stored set may have changed since
        the last verdict). Returns the model's verdict (or None)."""
        key = card_key(bundle.card)
        self.cards.setdefault(key, bundle.card)
        self.bundles[key] = bundle
        self._verdict_seen.pop(key, None)
        return self.refresh_verdict(key)

    def stored_set(self, key: str) -> tuple[list[str], dict[str, Any], str]:
        """The photos a model's shift test on this source covers: every photo of the source with an ok result of
        that model and a stored embedding (the scope check kept it), by content. Returns (sorted file SHA-256s,
        their embeddings, fingerprint of the set)."""
        shas = {r.file_sha256 for p, r in self.results.get(key, {}).items()
                if r.ok and r.file_sha256 and p in self._files}
        vectors = self.session.embeddings(key, shas) if self.session is not None and shas else {}
        held = self._embeddings.get(key, {})
        vectors.update({s: held[s] for s in shas if s in held and s not in vectors})
        kept = sorted(vectors)
        fingerprint = hashlib.sha256("\n".join([key, *kept]).encode()).hexdigest()
        return kept, vectors, fingerprint

    def _stored_verdict(self, key: str, fingerprint: str) -> dict | None:
        """The latest verdict stored for this source and model, if it was computed on this very set and is well
        formed (a malformed or forged row is ignored, never trusted)."""
        if self.session is None:
            return None
        for entry in reversed(self.session.audit(ACTION_SHIFT)):
            d = entry.get("details") or {}
            if not isinstance(d, dict) or d.get("source") != self.source or d.get("model_key") != key:
                continue
            from core.triage.shift import clean_verdict

            verdict = clean_verdict(d.get("verdict"))
            if verdict is not None and d.get("fingerprint") == fingerprint == verdict.get("fingerprint"):
                return verdict
            return None
        return None

    def refresh_verdict(self, key: str) -> dict | None:
        """A model's verdict on this source as a function of what is stored: the shift test of its stored set
        (stored_set), seeded from that set, so the same stored set gives the same verdict whatever runs (cancelled,
        resumed, with photos added or renamed) produced it. Reused from the session when it was computed on the
        same set, else computed (with the attached bundle's training embeddings) and stored. None when the model
        is not attached and no stored verdict fits. The test itself runs outside the workspace's lock, so the
        app's GUI thread never waits for it."""
        with self._lock:
            if self._running.get(key):
                return self.verdicts.get(key)   # a run of this model is in progress: the set it began from
            changes = self._changes_of.get(key, 0)
            if self._verdict_seen.get(key) == changes and (key in self.verdicts or key not in self.bundles):
                return self.verdicts.get(key)   # nothing stored for this model has changed since
            shas, vectors, fingerprint = self.stored_set(key)
            current = self.verdicts.get(key)
            if current is not None and current.get("fingerprint") == fingerprint:
                self._verdict_seen[key] = changes
                return current
            verdict = self._stored_verdict(key, fingerprint)
            bundle = self.bundles.get(key)
        if verdict is None and bundle is not None:
            verdict = self._test(bundle, shas, vectors, fingerprint)
            if shas:   # an empty stored set has nothing to keep
                self.store_verdict(key, verdict)
        with self._lock:
            if self._changes_of.get(key, 0) == changes:
                self._verdict_seen[key] = changes
            if verdict is None:
                self.verdicts.pop(key, None)
                return None
            self.verdicts[key] = verdict
            return verdict

    def _hold_verdict(self, key: str) -> None:
        """A run of this model begins: its verdict (refreshed now, on the set stored before the run) stands until
        _release_verdict, so rows written and banners shown during the run never test a partial set."""
        self.refresh_verdict(key)
        with self._lock:
            self._running[key] = self._running.get(key, 0) + 1

    def _release_verdict(self, key: str) -> None:
        with self._lock:
            left = self._running.get(key, 0) - 1
            if left > 0:
                self._running[key] = left
            else:
                self._running.pop(key, None)

    def store_verdict(self, key: str, verdict: dict) -> None:
        """Keep a model's verdict on this source in the session (audit `shift_test`), for the stored set named by
        its `fingerprint`: a reopened folder, a later report and the app's banner read it without the model."""
        if self.session is not None:
            self._write("the session", self.session.db_path, self.session.log, ACTION_SHIFT,
                        {"source": self.source, "model_key": key, "fingerprint": verdict.get("fingerprint"),
                         "verdict": verdict}, self.actor)
        with self._lock:
            self._verdict_seen.pop(key, None)
            self.verdicts.pop(key, None)

    def _test(self, bundle: Any, shas: list[str], vectors: dict[str, Any], fingerprint: str) -> dict:
        """core.triage.shift.folder_shift of a stored set (rows in content order, seeded by the set's fingerprint)."""
        import numpy as np

        from core.triage.shift import folder_shift, verdict_entry

        emb = [vectors[s] for s in shas]
        if len({v.size for v in emb}) > 1:  # a model's embeddings have one width; mixed ones are not its own
            emb = []
        result = folder_shift(bundle, [np.asarray(v, np.float32) for v in emb], seed=int(fingerprint[:8], 16))
        return {**verdict_entry(result, bundle.card), "fingerprint": fingerprint, "source": self.source}

    def verdict_for(self, key: str) -> dict | None:
        """The model's current verdict on this source (refreshed from what is stored), or None."""
        return self.refresh_verdict(key)

    def deciding_verdict(self, keys: Sequence[str] | None = None) -> dict | None:
        """The verdict that speaks for the photos shown with these models (default: every model met): the deciding
        model's (core.triage.reasons.deciding_key) when it has one, else the first alarm, else the first that ran."""
        from core.triage.reasons import deciding_key
        from core.triage.shift import folder_verdict

        keys = list(keys) if keys is not None else list(self.cards) or self.model_keys()
        entries = [v for v in (self.verdict_for(k) for k in keys) if v is not None]
        return folder_verdict(entries, deciding_key([self.cards[k] for k in keys if k in self.cards]))

    @property
    def shift(self) -> dict | None:
        """The deciding verdict over every model met (deciding_verdict); per model, see verdict_for."""
        return self.deciding_verdict()

    @property
    def shift_alarm(self) -> bool:
        """True while any model met has a standing shift alarm on this source."""
        return any((self.verdict_for(k) or {}).get("detected") for k in list(self.cards) or self.model_keys())

    def alarm_for(self, key: str) -> bool:
        return bool((self.verdict_for(key) or {}).get("detected"))

    def point_for(self, card: Any, threshold: float | None = None) -> "OperatingPoint":
        """The operating point this source is decided at for `card` (core.models.operating_point.decided_point): its
        out-of-collection point, with this folder's review floor, while that model's own shift alarm stands, else
        its default point; moved to `threshold` when given."""
        from core.models.operating_point import decided_point, stored_scores

        key = card_key(card)
        alarm = self.alarm_for(key)
        return decided_point(card, alarm, stored_scores(self.results.get(key, {}).values()) if alarm else [],
                             threshold)

    def points(self, keys: Sequence[str]) -> dict[str, "OperatingPoint"]:
        """The point each of these models (with a card met) decides this source at, by key (see point_for)."""
        return {k: self.point_for(self.cards[k]) for k in keys if k in self.cards}

    def redecide(self, card: Any, threshold: float | None = None) -> list[ResultRecord]:
        """Re-decide `card`'s stored results at the folder's current operating point (after the shift verdict
        changed it) and commit the changed ones as a run of their own; returns the changed records."""
        plan = self.to_score(card, threshold)
        plan.score = []  # photos still unscored stay so; only stored results move
        if not plan.redecide:
            return []
        return list(self.run(_Redecider(card), plan))

    def _remember(self, rec: ResultRecord) -> None:
        with self._lock:
            self.results.setdefault(rec.model_key, {})[rec.path] = rec
            self._changes += 1
            self._changes_of[rec.model_key] = self._changes_of.get(rec.model_key, 0) + 1
            if rec.embedding is not None and rec.ok and rec.file_sha256:
                self._embeddings.setdefault(rec.model_key, {})[rec.file_sha256] = rec.embedding

    # --- reviews ---------------------------------------------------------------------------------
    @property
    def reviews(self) -> dict[str, dict]:
        """Latest review per photo: {path: {label, reviewer, time}}."""
        return dict(self._reviews)

    def review(self, path: str, label: str, reviewer: str | None = None) -> dict:
        """Record a human label (mpox / not_mpox / unsure) for a photo; never touches a prediction."""
        from core.store.session import REVIEW_LABELS

        if label not in REVIEW_LABELS:
            raise ValueError(f"review label must be one of {', '.join(REVIEW_LABELS)}, not {label!r}")
        who = reviewer or self.actor
        sha = self._content_sha(path)
        if self.session is not None:
            self._write("the session", self.session.db_path, self.session.set_review, path, label, who, sha)
        from core.store.session import default_actor

        entry = {"label": label, "reviewer": who or default_actor(), "time": utc_now(), "file_sha256": sha}
        self._reviews[path] = entry
        return entry

    def _content_sha(self, path: str) -> str | None:
        """SHA-256 of the photo as it is now (what a review labels): a stored result's hash when the file's size
        and mtime still match it, else hashed now; None when the file cannot be read."""
        st = _stat(self.file_of(path))
        if st is None:
            return None
        for results in self.results.values():
            rec = results.get(path)
            if rec is not None and rec.file_sha256 and (rec.file_size, rec.file_mtime_ns) == st:
                return rec.file_sha256
        try:
            with open(self.file_of(path), "rb") as fh:
                return hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            return None

    def clear_review(self, path: str, reviewer: str | None = None) -> None:
        """Take a label back: the photo is unreviewed again (the audit trail keeps the old label)."""
        if self.session is not None:
            self._write("the session", self.session.db_path, self.session.clear_review, path,
                        reviewer or self.actor)
        self._reviews.pop(path, None)

    @staticmethod
    def _write(what: str, where: Any, fn, *args):
        import sqlite3

        from core.store.session import SessionError

        try:
            return fn(*args)
        except (sqlite3.Error, OSError, SessionError) as exc:
            raise write_error(what, where, exc) from None

    # --- views in photos -------------------------------------------------------------------------
    def model_keys(self) -> list[str]:
        """Models with at least one result in this folder, in the workspace's model order (see ordered)."""
        return self.ordered([k for k, v in self.results.items() if v])

    def ordered(self, keys: Iterable[str]) -> list[str]:
        """Models in one fixed order, by (name, version, key), whatever order they were given or ran in:
        the CSV columns, PDF and summary are the same from the command line and the app."""
        def sort_key(k: str) -> tuple:
            info = self.model_info(k)
            return info["name"], info["version"], k

        return sorted(dict.fromkeys(keys), key=sort_key)

    def records(self, keys: Sequence[str] | None = None) -> list[ResultRecord]:
        """Every result of the given models (default all), photo by photo in discovery order."""
        keys = list(keys) if keys is not None else self.model_keys()
        out = []
        for path in self.paths:
            for k in keys:
                rec = self.results.get(k, {}).get(path)
                if rec is not None:
                    out.append(rec)
        return out

    def photo_records(self, path: str, keys: Sequence[str]) -> list[ResultRecord | None]:
        return [self.results.get(k, {}).get(path) for k in keys]

    def counts(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """Counts in photos (never file x model) over the given models (default: every model with results)."""
        from core.store.csvio import agreement

        keys = list(keys) if keys is not None else self.model_keys()
        photos = len(self.paths)
        with_result = complete = errors = 0
        predictions: Counter = Counter()
        flags: Counter = Counter()
        agree: Counter = Counter()
        for path in self.paths:
            recs = self.photo_records(path, keys)
            present = [r for r in recs if r is not None]
            if not present:
                continue
            with_result += 1
            complete += len(present) == len(keys)
            if any(not r.ok for r in present):
                errors += 1
                if len(keys) > 1:
                    agree[agreement(recs)] += 1
                continue
            labels = {r.prediction for r in present}
            predictions[labels.pop() if len(labels) == 1 else "disagree"] += 1
            for f in {r.flag for r in present if r.flag}:
                flags[f] += 1
            if len(keys) > 1:
                agree[agreement(recs)] += 1
        return {"photos": photos, "with_result": with_result, "scored_by_every_model": complete, "errors": errors,
                "unscored": photos - with_result, "predictions": dict(sorted(predictions.items())),
                "flags": dict(sorted(flags.items())), "reviewed": sum(p in self._reviews for p in self.paths),
                "agreement": dict(sorted(agree.items())) if len(keys) > 1 else None}

    def model_info(self, key: str) -> dict[str, Any]:
        card = self.cards.get(key)
        rec = next(iter(self.results.get(key, {}).values()), None)
        name = getattr(card, "name", None) or (rec.model if rec else key)
        version = getattr(card, "version", None) or (rec.model_version if rec else "")
        sha = getattr(card, "model_sha256", None) if card is not None else (rec.model_sha256 if rec else "")
        return {"key": key, "name": name, "version": version, "sha256": sha or ""}

    # --- exports ---------------------------------------------------------------------------------
    def csv_columns(self, keys: Sequence[str]) -> list[str]:
        from core.store.csvio import CSV_COLUMNS, REVIEW_COLUMNS, wide_columns

        with_reviews = self.session is not None
        if len(keys) == 1:
            return CSV_COLUMNS + (REVIEW_COLUMNS if with_reviews else []) + ["needs_review"]
        return wide_columns(self.slugs(keys), with_reviews) + ["needs_review"]

    def slugs(self, keys: Sequence[str]) -> list[str]:
        from core.store.csvio import model_slugs

        infos = [self.model_info(k) for k in keys]
        return model_slugs([(i["key"], i["name"], i["version"]) for i in infos])

    def csv_row(self, path: str, keys: Sequence[str]) -> dict[str, str] | None:
        """A photo's CSV row (one per photo whatever the number of models), or None if it has no result."""
        from core.store.csvio import review_cells, wide_row
        from core.triage.reasons import reasons_text

        recs = self.photo_records(path, keys)
        if all(r is None for r in recs):
            return None
        review = self._reviews.get(path)
        needs = reasons_text(self.reasons(path, keys))
        if len(keys) == 1:
            row = recs[0].to_row()
            row["model_origin"] = self.origin(keys[0])
            row.update(review_cells(review))
            row["needs_review"] = needs
            return row
        slugs = self.slugs(keys)
        row = wide_row(path, recs, slugs, review)
        for key, slug, rec in zip(keys, slugs, recs):
            if rec is not None:
                row[f"model_origin__{slug}"] = self.origin(key)
        row["needs_review"] = needs
        return row

    def reasons(self, path: str, keys: Sequence[str]) -> list:
        """core.triage.reasons.photo_reasons of one photo over the given models (the CSV's needs_review, the PDF and
        the app's table say the same), with the folder's stored shift result."""
        from core.triage.reasons import ModelRef, deciding_key, model_refs, photo_reasons

        cards = [self.cards[k] for k in keys if k in self.cards]
        named = {r.key: r for r in model_refs(cards)}
        refs = [named.get(k) or ModelRef(k, f"{self.model_info(k)['name']} {self.model_info(k)['version']}")
                for k in keys]
        records = {k: self.results.get(k, {}).get(path) for k in keys}
        return photo_reasons(records, refs, decider=deciding_key(cards), shift=self.deciding_verdict(keys),
                             points=self._points_now(tuple(keys)))

    def _points_now(self, keys: tuple[str, ...]) -> dict:
        """points(keys), kept until a result changes: csv_row asks for it on every row."""
        stamp = (keys, self._changes, tuple(k in self.cards for k in keys),
                 tuple((self.verdict_for(k) or {}).get("fingerprint") for k in keys))
        cached = getattr(self, "_points_cache", None)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        points = self.points(keys)
        self._points_cache = (stamp, points)
        return points

    def origin(self, key: str) -> str:
        """Where a model comes from, for people: "shipped release" (its digests are listed in core.models.releases),
        "local model (parent NAME VERSION)", or "" when this workspace has not met its card."""
        from core.models.releases import origin_text

        card = self.cards.get(key)
        if card is not None:
            return origin_text(card)
        return self._recorded_origins().get(key, "")

    def _recorded_origins(self) -> dict[str, str]:
        """Model key -> the origin its latest run recorded when it started (models met only in earlier runs).
        Read from the audit trail once per workspace: csv_row asks for it on every row."""
        if self._origins_from_audit is None:
            self._origins_from_audit = {}
            if self.session is not None:
                from core.store.session import ACTION_RUN_STARTED

                for entry in self.session.audit(ACTION_RUN_STARTED):   # oldest first: the latest run wins
                    d = entry.get("details") or {}
                    if "model_origin" in d:
                        key = card_key(d | {"name": d.get("model"), "version": d.get("model_version")})
                        self._origins_from_audit[key] = str(d["model_origin"])
        return self._origins_from_audit

    def check_output(self, out: str | os.PathLike, what: str) -> None:
        """The one output policy (core.store.outputs) for an export of this workspace: never a photo, never inside the
        scanned folder, never the session database or its side files, never inside a model bundle, never a
        link or a special file. WorkspaceError (one line) when refused."""
        from core.store.outputs import OutputError, check_output, session_files

        protected = session_files(self.session.db_path) if self.session is not None else []
        inputs = list(self._files.values()) if self.scanned_folder is None else []
        try:
            check_output(out, what, folder=self.scanned_folder, inputs=inputs, protected=protected)
        except OutputError as exc:
            raise WorkspaceError(str(exc)) from None

    def csv_stream(self, out: str | os.PathLike, keys: Sequence[str],
                   plans: Sequence[ScorePlan] = ()) -> "CsvStream":
        """A CSV written while runs go on: each photo's row is written once every model in `keys` has its
        final result for it; `close()` writes what is left and publishes the file atomically."""
        return CsvStream(self, out, self.ordered(keys), plans)

    def export_csv(self, out: str | os.PathLike, keys: Sequence[str] | None = None) -> Path:
        """Write the CSV of the given models (default: all with results); atomic; one audit entry."""
        keys = list(keys) if keys is not None else self.model_keys()
        stream = self.csv_stream(out, keys)
        return stream.close()

    def log_export(self, kind: str, out: str | os.PathLike, keys: Sequence[str]) -> None:
        """The one audit entry of an export: {kind, path, photos, models}."""
        if self.session is None:
            return
        photos = sum(1 for p in self.paths if any(r is not None for r in self.photo_records(p, keys)))
        self._write("the session", self.session.db_path, self.session.log, ACTION_EXPORTED,
                    {"kind": kind, "path": safe_text(str(out)), "photos": photos, "models": list(keys)}, self.actor)

    # --- summary ---------------------------------------------------------------------------------
    def summary(self, keys: Sequence[str], status: str, runs: Sequence["WorkspaceRun"] = (),
                outputs: dict[str, str | None] | None = None) -> dict[str, Any]:
        """The JSON summary of `classify --summary` (counts in photos); "shift" is filled by core.triage.shift later."""
        by_key = {r.plan.key: r for r in runs}
        keys = self.ordered(keys)
        models = []
        for k in keys:
            info = self.model_info(k)
            run = by_key.get(k)
            info.update({
                "threshold": run.plan.threshold if run else None,
                "status": run.status if run else None,
                "scored_now": run.scored if run else 0,
                "redecided": len(run.plan.redecide) if run else 0,
                "kept": run.plan.kept if run else 0,
                "rescored_because": dict(run.plan.reasons) if run else {},
            })
            models.append(info)
        counts = self.counts(keys)
        return {"folder": safe_text(str(self.folder)), "status": status, **counts, "models": models,
                "walk_errors": list(self.walk_errors), "unreadable_folders": list(self.unreadable_dirs),
                "skipped_links": len(self.skipped_links), "outputs": dict(outputs or {}),
                "session": safe_text(str(self.session.session_dir)) if self.session is not None else None,
                "shift": self.deciding_verdict(keys),
                "shifts": {self.model_info(k)["name"] + " " + self.model_info(k)["version"]: self.verdict_for(k)
                           for k in keys},
                "moved": [{"from": a, "to": b} for a, b in self.moved]}


def combined_status(runs: Iterable["WorkspaceRun"]) -> str:
    """One status for several runs: failed > interrupted > cancelled > finished."""
    statuses = {r.status for r in runs}
    for s in (STATUS_FAILED, STATUS_INTERRUPTED, STATUS_CANCELLED):
        if s in statuses:
            return s
    return STATUS_FINISHED


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class _Redecider:
    """An engine with nothing to score: a run of it only re-decides stored results (Workspace.redecide)."""

    batch_size = 256

    def __init__(self, card: Any):
        self.card = card

    def run(self, paths, progress=None, cancel=None):
        return iter(())


class WorkspaceRun:
    """One run of one model on a workspace: iterate it (once) to get each result; see Workspace.run."""

    def __init__(self, ws: Workspace, engine: Any, plan: ScorePlan, progress: ProgressFn | None,
                 cancel: CancelToken | None, commit_every: int):
        self.ws, self.engine, self.plan = ws, engine, plan
        self.progress, self.cancel, self.commit_every = progress, cancel, max(1, commit_every)
        self.status: str | None = None
        self.error = ""
        self.run_id: str | None = None
        self.scored = 0          # results from the engine (photos, since a run is one model)
        self.errors = 0          # of which error rows
        self.scored_paths: list[str] = []
        self.error_paths: list[str] = []
        self.verdict: dict | None = None           # the model's verdict on the stored set when the run ended
        self.redecided: list[ResultRecord] = []    # stored rows that verdict moved to another operating point
        self.point_moved = False                   # the verdict moved the model to another point (reasons change)
        self._buffer: list[ResultRecord] = []
        self._started = False

    @property
    def total(self) -> int:
        return len(self.plan.score)

    def _flush(self) -> None:
        if not self._buffer or self.run_id is None:
            self._buffer = []
            return
        batch, self._buffer = self._buffer, []
        session = self.ws.session
        self.ws._write("the session", session.db_path, session.add_results, self.run_id, batch)

    def _adopt(self, rec: ResultRecord) -> ResultRecord:
        key = self.ws._keys.get(str(rec.path))
        rec = rec.safe() if key is None else replace(rec, path=key, error=safe_text(rec.error or ""))
        size, mtime = self.plan.stats.get(rec.path, (None, None))
        # The run's model is the record's key (its scoring digest), whatever the engine filled in.
        digest = self.plan.key if self.plan.key != rec.model_sha256 else rec.scoring_digest
        rec = replace(rec, file_size=size, file_mtime_ns=mtime, scoring_digest=digest)
        decided = decide(self.plan.card, rec, self.plan.point)
        if not _decided_alike(rec, decided):
            rec = decided  # an engine that decides at another point (its card's default, or no --threshold)
        return rec

    def __iter__(self) -> Iterator[ResultRecord]:
        if self._started:
            raise RuntimeError("a WorkspaceRun can be iterated only once")
        self._started = True
        ws, plan = self.ws, self.plan
        if ws.session is not None:
            self.run_id = ws._write("the session", ws.session.db_path, ws.session.start_run, plan.card,
                                    str(ws.folder), plan.threshold, ws.actor)
        status = STATUS_FAILED
        records_iter = None
        held = False

        def on_progress(p: Progress) -> None:
            self._flush()  # the engine reports progress once per batch: commit that batch
            if self.progress is not None:
                self.progress(p)

        try:
            ws._hold_verdict(plan.key)
            held = True
            if plan.redecide:
                redone = [decide(plan.card, replace(ws.results[plan.key][p], timestamp=utc_now()), plan.point)
                          for p in plan.redecide]
                for rec in redone:
                    ws._remember(rec)
                self._buffer.extend(redone)
                self._flush()
                yield from redone
            files = [ws.file_of(p) for p in plan.score]
            records_iter = iter(self.engine.run(files, progress=on_progress, cancel=self.cancel))
            for rec in records_iter:
                rec = self._adopt(rec)
                self.scored += 1
                self.scored_paths.append(rec.path)
                if not rec.ok:
                    self.errors += 1
                    self.error_paths.append(rec.path)
                ws._remember(rec)
                self._buffer.append(rec)
                if len(self._buffer) >= self.commit_every:
                    self._flush()
                yield rec
            self._flush()
            cancelled = self.cancel is not None and self.cancel.cancelled and self.scored < self.total
            status = STATUS_CANCELLED if cancelled else STATUS_FINISHED
        except Cancelled:
            status = STATUS_CANCELLED
            self._safe_flush()
        except GeneratorExit:  # the caller stopped iterating: what it got is kept
            status = STATUS_CANCELLED
            self._safe_flush()
            raise
        except KeyboardInterrupt:
            status = STATUS_INTERRUPTED
            self.error = "interrupted"
            self._safe_flush()
            raise
        except BaseException as exc:
            status = STATUS_FAILED
            self.error = safe_text(str(exc)) or type(exc).__name__
            self._safe_flush()
            raise
        finally:
            self.status = status
            close = getattr(records_iter, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the engine's own cleanup must not hide our status
                    pass
            if self.run_id is not None:
                try:
                    ws.session.finish_run(self.run_id, status, ws.actor)
                except Exception:  # noqa: BLE001 - e.g. the disk is full; the run stays 'running' (killed)
                    pass
            if held:
                ws._release_verdict(plan.key)
            if not isinstance(self.engine, _Redecider):
                self._after_run()

    def _after_run(self) -> None:
        """However the run ended (finished, cancelled, interrupted, failed): the model's verdict on the stored set
        is recomputed, and stored rows move to the operating point it gives (Workspace.redecide)."""
        ws, plan = self.ws, self.plan
        try:
            self.verdict = ws.refresh_verdict(plan.key)
            if not ws.point_for(plan.card, plan.user_threshold).same_as(plan.point):
                self.point_moved = True
                self.redecided = ws.redecide(plan.card, plan.user_threshold)
        except BaseException as exc:  # noqa: BLE001 - never hides why the run itself ended
            if not self.error:
                self.error = safe_text(str(exc)) or type(exc).__name__

    def _safe_flush(self) -> None:
        try:
            self._flush()
        except Exception:  # noqa: BLE001 - the original error is what the caller must see
            self._buffer = []


def _row_hash(row: dict[str, str] | None) -> int:
    """A CSV row's fingerprint within this process (CsvStream.close compares rows written with rows now)."""
    return hash(tuple(row.items())) if row is not None else 0


class CsvStream:
    """See Workspace.csv_stream."""

    def __init__(self, ws: Workspace, out: str | os.PathLike, keys: list[str], plans: Sequence[ScorePlan]):
        from core.store.csvio import ResultCsvWriter

        ws.check_output(out, "CSV")
        self.ws, self.out, self.keys = ws, Path(out), keys
        self._pending: dict[str, set[str]] = {}
        for plan in plans:
            if plan.key in keys:
                for p in plan.score + plan.redecide:
                    self._pending.setdefault(p, set()).add(plan.key)
        # photo -> a hash of the row written for it (a row of an archive's CSV is not kept in memory)
        self._written: dict[str, int] = {}
        self._index = {p: i for i, p in enumerate(ws.paths)}
        self._order: list[int] = []   # discovery index of each row written, to publish in discovery order
        try:
            self.writer = ResultCsvWriter(out, columns=ws.csv_columns(keys))
        except OSError as exc:
            raise write_error("CSV", out, exc) from None
        self.closed = False
        try:
            for path in ws.paths:
                if path not in self._pending:
                    self._write(path)
        except BaseException:
            self.abort()
            raise

    def _write(self, path: str) -> None:
        row = self.ws.csv_row(path, self.keys)
        if row is None or path in self._written:
            return
        self._write_row(row)
        self._written[path] = _row_hash(row)
        self._order.append(self._index.get(path, len(self._index)))

    def _write_row(self, row: dict[str, str]) -> None:
        try:
            self.writer.write_row(row)
            self.writer.flush()  # row by row: a killed run leaves every row so far in the hidden .partial file
        except OSError as exc:
            self.abort()
            raise write_error("CSV", self.out, exc) from None

    def add(self, record: ResultRecord) -> None:
        """A record has arrived (and been committed): write its photo's row if that photo is complete."""
        waiting = self._pending.get(record.path)
        if waiting is None:
            return
        waiting.discard(record.model_key)
        if not waiting:
            del self._pending[record.path]
            self._write(record.path)

    def close(self) -> Path:
        """Write the photos still waiting (in discovery order), publish atomically, log one audit entry. When a row
        written earlier no longer says what the workspace says now (the runs' end moved the folder's verdict or
        operating point, or re-decided stored results), the whole file is written again from what is stored."""
        try:
            for path in self.ws.paths:
                if path in self._pending:
                    self._write(path)
            if any(_row_hash(self.ws.csv_row(path, self.keys)) != h for path, h in self._written.items()):
                self.abort()
                return CsvStream(self.ws, self.out, self.keys, ()).close()
            if self._order != sorted(self._order):
                # Rows went out as results arrived (a resume writes restored rows first); the published file
                # lists photos in discovery order, as a fresh run would.
                index = self._index
                self.writer.reorder(lambda row: index.get(row.get("path", ""), len(index)))
            for folder in self.ws.unreadable_dirs:
                # A trace of each folder that could not be read: its photos are missing from this CSV.
                self._write_row({"path": folder, "status": "error", "error": "folder could not be read; "
                                 "its photos are not in this list"})
            self.writer.close()
        except OSError as exc:
            self.abort()
            raise write_error("CSV", self.out, exc) from None
        except BaseException:
            self.abort()
            raise
        self.closed = True
        self.ws.log_export("csv", self.out, self.keys)
        return self.out

    @property
    def rows(self) -> int:
        return self.writer.rows

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.abort()
