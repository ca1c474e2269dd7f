"""Result records: one per discovered file, whatever happened to it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

STATUS_OK = "ok"
STATUS_ERROR = "error"
LABEL_MPOX = "mpox"
LABEL_NOT_MPOX = "not_mpox"
FLAG_UNCERTAIN = "uncertain"
FLAG_OUT_OF_SCOPE = "out_of_scope"

CSV_COLUMNS = [
    "path",
    "status",
    "p_mpox",
    "prediction",
    "flag",
    "ood_score",
    "threshold",
    "model",
    "model_version",
    "model_sha256",
    "file_sha256",
    "error",
    "timestamp",
]


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

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict:
        return asdict(self)

    def to_row(self) -> dict[str, str]:
        """CSV-ready strings; probabilities with 6 decimals, missing values empty."""
        row: dict[str, str] = {}
        for key, value in asdict(self).items():
            if value is None:
                row[key] = ""
            elif key in ("p_mpox", "ood_score", "threshold"):
                row[key] = f"{float(value):.6f}"
            else:
                row[key] = str(value)
        return row

    @classmethod
    def from_dict(cls, data: dict) -> "ResultRecord":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)
