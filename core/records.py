"""Result records: one per discovered file, whatever happened to it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

STATUS_OK = "ok"
STATUS_ERROR = "error"
LABEL_MPOX = "mpox"
LABEL_NOT_MPOX = "not_mpox"
FLAG_UNCERTAIN = "uncertain"
FLAG_OUT_OF_SCOPE = "out_of_scope"
# An out-of-scope photo (not a skin photo, or far from every training photo) gets no mpox / not-mpox
# call: its prediction says out_of_scope, its p(mpox) stays in its column, and it is counted as
# needing review, never as mpox or not mpox.
PREDICTION_OUT_OF_SCOPE = "out_of_scope"
CALLS = (LABEL_MPOX, LABEL_NOT_MPOX)

CSV_COLUMNS = [
    "path",
    "status",
    "p_mpox",
    "prediction",
    "flag",
    "ood_score",
    "scope_score",
    "threshold",
    "model",
    "model_version",
    "model_sha256",
    "scoring_digest",
    "model_origin",
    "file_sha256",
    "error",
    "timestamp",
]


def safe_text(text: str) -> str:
    """`text` as valid UTF-8: file names with bytes that are not UTF-8 (surrogate escapes on POSIX) are
    written with backslash escapes (b"caf\\xe9.jpg" -> "caf\\\\xe9.jpg"), so CSV, SQLite and the console can hold them.
    Text that is already valid is returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
            if _only_surrogate_escapes(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


_BYTE = re.compile("[\udc80-\udcff]")
_RUN_BEFORE_ESCAPE = re.compile("(\\\\+)(?=x[0-9a-fA-F]{2}|[\udc80-\udcff])")
_ESCAPED = re.compile(r"(\\+)x([0-9a-fA-F]{2})")


def escape_path(text: str) -> str:
    """A file name as valid UTF-8 text, reversibly (unescape_path gives it back), so no two files share a key.

    A byte that is not UTF-8 (a surrogate escape on POSIX) becomes `\\xHH`, as safe_text writes it; and so that a
    file literally named `\\xff.jpg` cannot collide with the byte 0xff, a run of backslashes written before
    `xHH` is doubled (the rule Windows uses for backslashes before a quote). Names without undecodable bytes and
    without a literal `\\xHH` (nearly all, Windows paths included) are unchanged. Apply it once, to a raw name.
    """
    if not _BYTE.search(text) and not _ESCAPED.search(text):
        return safe_text(text)
    text = _RUN_BEFORE_ESCAPE.sub(lambda m: m.group(1) * 2, text)
    return safe_text(_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text))


def unescape_path(key: str) -> str:
    """The raw name (with surrogate escapes for non-UTF-8 bytes) that escape_path turned into `key`."""
    def back(m: re.Match) -> str:
        run = len(m.group(1))
        if run % 2:
            return "\\" * (run // 2) + chr(0xDC00 + int(m.group(2), 16))
        return "\\" * (run // 2) + "x" + m.group(2)

    return _ESCAPED.sub(back, key)


def _only_surrogate_escapes(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def console_text(text: str) -> str:
    """`text` on one console line, as one tab-separated cell: control characters in a file name or message
    (a newline, a tab) are written as escapes (\\n, \\t, \\xNN)."""
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return _CONTROL.sub(lambda m: named.get(m.group(), f"\\x{ord(m.group()):02x}"), safe_text(text))


def decide(p_mpox: float, threshold: float, band: tuple[float, float], out_of_scope: bool) -> tuple[str, str]:
    """(prediction, flag) of one scored photo: the one rule the engine, a re-decision at another
    threshold and Ray's rows all use. Out of scope wins; else mpox at p >= threshold, flagged uncertain
    inside the band [lo, hi)."""
    if out_of_scope:
        return PREDICTION_OUT_OF_SCOPE, FLAG_OUT_OF_SCOPE
    lo, hi = band
    return (LABEL_MPOX if p_mpox >= threshold else LABEL_NOT_MPOX), (FLAG_UNCERTAIN if lo <= p_mpox < hi else "")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ResultRecord:
    """What one model said about one file (or why it could not say anything)."""

    path: str
    status: str
    p_mpox: float | None = None
    prediction: str | None = None
    flag: str = ""
    ood_score: float | None = None
    model: str = ""
    model_version: str = ""
    model_sha256: str = ""
    threshold: float | None = None
    file_sha256: str | None = None
    error: str = ""
    timestamp: str = field(default_factory=utc_now)
    # What the file looked like (bytes, st_mtime_ns) just before it was scored: a resume re-scores a file
    # whose size or mtime (and then SHA-256) changed. Not CSV columns.
    file_size: int | None = None
    file_mtime_ns: int | None = None
    # How unlike a skin photo the image is (core.photos.scope: blank, text, screenshot, chart, drawing, noise,
    # tiny); above core.photos.scope.SCOPE_LIMIT the flag is out_of_scope. Independent of the model.
    scope_score: float | None = None
    # The model that made p(mpox): ModelCard.scoring_digest (weights, runtime files, head, preprocessing, input
    # size, temperature). Results are keyed by it, so a card that changes any of those scores again.
    scoring_digest: str = ""
    # The photo's embedding (float16) when the scope check kept it, on its way to the session (the folder's shift
    # test is computed from what is stored). Not a CSV column, not compared.
    embedding: Any = field(default=None, repr=False, compare=False)

    @property
    def model_key(self) -> str:
        """The model's key, as ModelCard.key: its scoring digest, else the weights' SHA-256, else "name version"."""
        return self.scoring_digest or self.model_sha256 or f"{self.model} {self.model_version}"

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict:
        """The persisted fields (not the transient embedding)."""
        return {k: getattr(self, k) for k in RECORD_FIELDS}

    def safe(self) -> "ResultRecord":
        """This record with path and error message as valid UTF-8 (see safe_text); self if already so."""
        path, error = safe_text(str(self.path)), safe_text(self.error or "")
        if path == self.path and error == (self.error or ""):
            return self
        from dataclasses import replace

        return replace(self, path=path, error=error)

    def to_row(self) -> dict[str, str]:
        """CSV-ready strings; probabilities with 6 decimals, missing values empty."""
        row: dict[str, str] = {}
        for key, value in self.to_dict().items():
            if value is None:
                row[key] = ""
            elif key in ("p_mpox", "ood_score", "scope_score", "threshold"):
                row[key] = f"{float(value):.6f}"
            else:
                row[key] = safe_text(str(value))
        return row

    @classmethod
    def from_dict(cls, data: dict) -> "ResultRecord":
        """A record from a dict of its persisted fields (others are ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


# The fields a session, a CSV or a Parquet shard keeps (the embedding travels only to the session's own table).
RECORD_FIELDS = [f for f in ResultRecord.__dataclass_fields__ if f != "embedding"]


# Runtime fields that describe how the runtime was checked, not what it computes.
_RUNTIME_NOTES = ("created", "agreement", "check_images")


def scoring_digest(card: Any) -> str:
    """SHA-256 of what changes p(mpox) for a card (a ModelCard or its dict): the weights and every file a score
    is computed from (runtime backbone and head, the out-of-scope statistics), preprocessing, input size,
    temperature, class names and a combined model's components. A card that changes any of them is another
    model and scores again; a change of threshold, band or operating point only re-decides stored scores.
    "" for a card without weights' SHA-256 (a test double named only by name and version); the weights' SHA-256
    itself for a card that lists no files (no bundle on disk: a hand-made card or test double, whose scores come
    from nothing else)."""
    import hashlib
    import json

    get = card.get if isinstance(card, dict) else (lambda n, d=None: getattr(card, n, d))
    sha = get("model_sha256", "") or ""
    if not sha:
        return ""
    files = get("files", None) or {}
    if not files:
        return sha
    extra = get("extra", None) or {}
    extra = extra if isinstance(extra, dict) else {}
    runtime = extra.get("runtime") if isinstance(extra.get("runtime"), dict) else {}
    parts = {
        "digest_format": 1,
        "model_sha256": sha,
        "architecture": get("architecture", ""),
        "input_size": get("input_size", None),
        "preprocessing": get("preprocessing", ""),
        "temperature": get("temperature", None),
        "class_names": get("class_names", None),
        "files": {k: v for k, v in files.items() if k != "embeddings.npz"} if isinstance(files, dict) else {},
        "runtime": {k: v for k, v in runtime.items() if k not in _RUNTIME_NOTES},
        "components": [{k: c.get(k) for k in ("sha256", "input_size", "feature_layer", "dim")}
                       for c in extra.get("components") or [] if isinstance(c, dict)],
    }
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return "sd1-" + hashlib.sha256(text.encode("utf-8")).hexdigest()
