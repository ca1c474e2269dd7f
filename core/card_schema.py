"""The model card's schema: the one place that says what a well-formed `model_card.json` holds (pydantic v2).

core.bundle validates every card it reads or seals here (`check_card`), so a malformed card is refused
with one line naming the field before anything uses it: the model list (`models`, the app) skips it with
a warning, `classify` and the app never crash on it, and the PDF never meets a malformed extra.

Strict types (a number is not a string, a bool is not a number), finite numbers, bounded sizes.
Unknown top-level keys and unknown keys inside `extra` (and inside its known parts) are allowed, so
newer cards with more fields still load; the known parts of `extra` are checked:
`kind`, `runtime` (an attached exported model), `components` (a combined model's parts) and
`operating_points` (named thresholds).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

from pydantic import (BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError,
                      field_validator, model_validator)

FORMAT_VERSION = 1          # core.bundle.FORMAT_VERSION (kept equal by tests/test_card_schema.py)
CARD_FILE = "model_card.json"
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024
MAX_TEMPERATURE = 1000.0

Hex64 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
Number = float   # the models are strict: an int is a number, "0.5" and True are not
Text = Annotated[StrictStr, Field(min_length=1)]


class CardError(ValueError):
    """A card does not match the schema; the message is one line naming the field (`'extra.runtime'`)."""


def _finite(value: float, what: str = "a finite number") -> float:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"must be {what}")
    return float(value)


class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Agreement(_Open):
    max_abs_diff_p: Optional[Number] = None


class Runtime(_Open):
    """extra.runtime: an exported model attached to the bundle (core.export.attach_light_runtime).

    Release 1.3.0 on: kind "backbone" (a LiteRT backbone `file` and a numpy `head`) or "head" (a combined
    model's numpy `head`; its components bring their backbones). Before: a whole-model `file`, no kind."""

    file: Optional[Text] = None
    format: Text
    kind: Optional[StrictStr] = None
    head: Optional[Text] = None
    model_sha256: StrictStr = ""
    agreement: Optional[Agreement] = None

    @model_validator(mode="after")
    def _has_a_file(self):
        if not self.file and not self.head:
            raise ValueError("names no file (file, or head)")
        if self.kind == "backbone" and not (self.file and self.head):
            raise ValueError("a backbone runtime names its file and its head")
        return self


class Component(_Open):
    """One entry of extra.components: a component bundle a combined model reads (core.combined)."""

    name: Text
    version: Text
    sha256: Hex64
    card_sha256: Optional[Hex64] = None
    architecture: StrictStr = ""
    input_size: Annotated[StrictInt, Field(ge=MIN_INPUT_SIZE, le=MAX_INPUT_SIZE)]
    feature_layer: Optional[StrictStr] = None
    dim: Annotated[StrictInt, Field(ge=0)] = 0


Probability = Annotated[Number, Field(ge=0.0, le=1.0)]


class OperatingPointSpec(_Open):
    """One entry of extra.operating_points (core.operating_point): a threshold, its uncertain band, and for the
    out-of-collection point the share of a folder reviewed by rank and the photos to review before adapting."""

    threshold: Probability
    uncertain_band: Annotated[list[Probability], Field(min_length=2, max_length=2)]
    review_share: Optional[Annotated[Number, Field(gt=0.0, lt=1.0)]] = None
    review_n: Optional[Annotated[StrictInt, Field(ge=1)]] = None

    @model_validator(mode="after")
    def _ordered(self):
        lo, hi = self.uncertain_band
        if lo > hi:
            raise ValueError(f"uncertain_band {self.uncertain_band} runs backwards")
        return self


class EffectFloor(_Open):
    """extra.shift_alarm.effect_floor (core.shift.effect_floor): folder sizes and the floor at each."""

    n: Annotated[list[Annotated[StrictInt, Field(ge=1)]], Field(min_length=1)]
    effect: Annotated[list[Annotated[Number, Field(ge=0.0)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _same_length(self):
        if len(self.n) != len(self.effect):
            raise ValueError("n and effect differ in length")
        return self


class ShiftAlarm(_Open):
    effect_floor: Optional[EffectFloor] = None


class Extra(_Open):
    kind: Optional[StrictStr] = None
    runtime: Optional[Runtime] = None
    components: Optional[Annotated[list[Component], Field(min_length=1)]] = None
    # Named operating points ("default", "out_of_collection"; core.operating_point).
    operating_points: Optional[dict[StrictStr, OperatingPointSpec]] = None
    shift_alarm: Optional[ShiftAlarm] = None


class SplitMetrics(_Open):
    """metrics.test / metrics.val: any figures, but the ones the model list and the report show are numbers."""

    accuracy: Optional[Number] = None
    roc_auc: Optional[Number] = None
    sensitivity: Optional[Number] = None
    specificity: Optional[Number] = None


class Metrics(_Open):
    test: Optional[SplitMetrics] = None
    val: Optional[SplitMetrics] = None


class CardSchema(BaseModel):
    """A model card (format FORMAT_VERSION, after core.bundle.migrate_card)."""

    model_config = ConfigDict(strict=True, extra="allow")

    name: Text
    version: Text
    architecture: Text
    input_size: StrictInt
    format_version: StrictInt = FORMAT_VERSION
    preprocessing: StrictStr = ""
    class_names: list[StrictStr] = ["not_mpox", "mpox"]
    threshold: Number = 0.5
    threshold_reason: StrictStr = ""
    temperature: Number = 1.0
    uncertain_band: list[Number] = [0.35, 0.65]
    ood_threshold: Optional[Number] = None
    metrics: Metrics = Metrics()
    training_data: dict[StrictStr, Any] = {}
    training: dict[StrictStr, Any] = {}
    intended_use: StrictStr = ""
    limitations: list[StrictStr] = []
    files: dict[StrictStr, StrictStr] = {}
    model_sha256: StrictStr = ""
    created: StrictStr = ""
    parent: Optional[dict[StrictStr, Any]] = None
    app_version: StrictStr = ""
    extra: Extra = Extra()
    card_sha256: StrictStr = ""

    @field_validator("name", "version", "architecture")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be non-empty text")
        return v

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: int) -> int:
        if not MIN_INPUT_SIZE <= v <= MAX_INPUT_SIZE:
            raise ValueError(f"must be a whole number of pixels from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
        return v

    @field_validator("format_version")
    @classmethod
    def _format(cls, v: int) -> int:
        if not 0 <= v <= FORMAT_VERSION:
            raise ValueError(f"must be from 0 to {FORMAT_VERSION} (a newer card needs a newer mpox-triage)")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if not 0.0 <= _finite(v) <= 1.0:
            raise ValueError("must be a number from 0 to 1")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if not 0.0 < _finite(v) <= MAX_TEMPERATURE:
            raise ValueError(f"must be above 0 and at most {MAX_TEMPERATURE:g}")
        return v

    @field_validator("ood_threshold")
    @classmethod
    def _ood(cls, v):
        return v if v is None else _finite(v)

    @field_validator("uncertain_band")
    @classmethod
    def _band(cls, v: list) -> list:
        if len(v) != 2 or not 0.0 <= _finite(v[0]) <= _finite(v[1]) <= 1.0:
            raise ValueError("must be [low, high] with 0 <= low <= high <= 1")
        return v

    @field_validator("class_names")
    @classmethod
    def _classes(cls, v: list) -> list:
        if len(v) != 2 or not all(v):
            raise ValueError("must be two class names")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict) -> dict:
        import re

        for fname, digest in v.items():
            if not fname or fname in (".", "..") or "/" in fname or "\\" in fname or fname == CARD_FILE:
                raise ValueError(f"lists {fname!r}, which is not a plain file name inside the bundle")
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"has no valid SHA-256 for {fname!r}")
        return v

    @model_validator(mode="after")
    def _combined_has_components(self) -> "CardSchema":
        if self.extra.kind == "combined" and not self.extra.components:
            raise ValueError("a combined model card must list its components in extra.components")
        return self


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts) or "card"


def check_card(data: Any, where: str = "model card") -> None:
    """Raise CardError (one line: `<where>: model card field 'x.y' ...`) unless `data` (a card as a dict, after
    migration) matches the schema."""
    if not isinstance(data, dict):
        raise CardError(f"{where}: model card is not a JSON object")
    try:
        CardSchema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = _where(err["loc"])
        msg = str(err.get("msg", "is malformed")).removeprefix("Value error, ")
        value = err.get("input")
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        text = f"{where}: model card field {field!r} is {shown}: {msg}"
        raise CardError(" ".join(text.split())) from None


def card_problem(card: Any) -> str:
    """'' for a card (a ModelCard, or a dict) that matches the schema, else the one-line reason."""
    data = card if isinstance(card, dict) else getattr(card, "to_dict", lambda: None)()
    try:
        check_card(data, str(getattr(card, "name", "") or (data or {}).get("name", "") or "model card"))
    except CardError as exc:
        return str(exc)
    return ""


__all__ = ["CardError", "CardSchema", "card_problem", "check_card", "FORMAT_VERSION"]
