"""The model card's schema: the one place that says what a well-formed `model_card.json` holds (pydantic v2).

core.models.bundle validates every card it reads or seals here (`check_card`), so a malformed card is refused
with one line naming the field before anything uses it: the model list (`models`, the app) skips it with
a warning, `classify` and the app never crash on it, and the PDF never meets a malformed extra.

Strict types (a number is not a string, a bool is not a number), finite numbers, bounded sizes.
Unknown top-level keys and unknown keys inside `extra` (and inside its known parts) are allowed, so
newer cards with more fields still load; the known parts of `extra` are checked:
`kind`, `runtime` (an attached exported model), `components` (a combined model's parts) and
`operating_points` (named thresholds).

Beyond types, cards must make sense (rules across fields): each operating point calls both classes with its band
inside (0, 1), the out-of-collection point is no stricter than the default, effect floors, temperatures and metrics
lie in their ranges. A card file is read within bounds (load_card_json: size and nesting checked before parsing).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Annotated, Any, Optional

from pydantic import (BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError,
                      field_validator, model_validator)

FORMAT_VERSION = 1          # core.models.bundle.FORMAT_VERSION (kept equal by tests/test_card_schema.py)
CARD_FILE = "model_card.json"
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024
MAX_TEMPERATURE = 1000.0
# Temperatures a calibration can give (core.models.calibration.MIN_T, MAX_T); a card outside them was not fitted by us.
MIN_CARD_TEMPERATURE, MAX_CARD_TEMPERATURE = 0.05, 20.0
MAX_EFFECT_FLOOR = 0.5          # an MMD effect floor above this could never be reached: the alarm would never fire
MAX_FOLDER_N = 10_000_000       # folder sizes in an effect-floor table: whole numbers of photos, not 10**400
MAX_CARD_BYTES = 1_000_000      # a card is a few tens of kB; anything above 1 MB is refused before parsing
MAX_CARD_DEPTH = 32             # nesting of [ and { in a card; deeper is refused before parsing (no RecursionError)

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
    """extra.runtime: an exported model attached to the bundle (core.models.export.attach_light_runtime).

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
    """One entry of extra.components: a component bundle a combined model reads (core.models.combined)."""

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
    """One entry of extra.operating_points (core.models.operating_point): a threshold, its uncertain band, and for the
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
        problem = point_problem(self.threshold, self.uncertain_band)
        if problem:
            raise ValueError(problem)
        return self


class EffectFloor(_Open):
    """extra.shift_alarm.effect_floor (core.triage.shift.effect_floor): folder sizes and the floor at each."""

    n: Annotated[list[Annotated[StrictInt, Field(ge=1, le=MAX_FOLDER_N)]], Field(min_length=1, max_length=1000)]
    effect: Annotated[list[Annotated[Number, Field(ge=0.0, le=MAX_EFFECT_FLOOR)]], Field(min_length=1,
                                                                                        max_length=1000)]

    @model_validator(mode="after")
    def _same_length(self):
        if len(self.n) != len(self.effect):
            raise ValueError("n and effect differ in length")
        if any(b <= a for a, b in zip(self.n, self.n[1:])):
            raise ValueError("folder sizes n must increase")
        if not all(math.isfinite(e) for e in self.effect):
            raise ValueError("effect floors must be finite numbers")
        return self


class ShiftAlarm(_Open):
    effect_floor: Optional[EffectFloor] = None


class Extra(_Open):
    kind: Optional[StrictStr] = None
    runtime: Optional[Runtime] = None
    components: Optional[Annotated[list[Component], Field(min_length=1)]] = None
    # Named operating points ("default", "out_of_collection"; core.models.operating_point).
    operating_points: Optional[dict[StrictStr, OperatingPointSpec]] = None
    shift_alarm: Optional[ShiftAlarm] = None


class SplitMetrics(_Open):
    """metrics.test / metrics.val: any figures, but the ones the model list and the report show are numbers."""

    accuracy: Optional[Probability] = None
    precision: Optional[Probability] = None
    recall: Optional[Probability] = None
    sensitivity: Optional[Probability] = None
    specificity: Optional[Probability] = None
    f1: Optional[Probability] = None
    roc_auc: Optional[Probability] = None
    pr_auc: Optional[Probability] = None
    brier: Optional[Probability] = None
    ece: Optional[Probability] = None
    uncalibrated_ece: Optional[Probability] = None
    n: Optional[Annotated[StrictInt, Field(ge=0)]] = None
    n_mpox: Optional[Annotated[StrictInt, Field(ge=0)]] = None


class Metrics(_Open):
    test: Optional[SplitMetrics] = None
    val: Optional[SplitMetrics] = None


class CardSchema(BaseModel):
    """A model card (format FORMAT_VERSION, after core.models.bundle.migrate_card)."""

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
        # The range a calibration fit can give (core.models.calibration), with room for rounding.
        if not MIN_CARD_TEMPERATURE * (1 - 1e-9) <= _finite(v) <= MAX_CARD_TEMPERATURE * (1 + 1e-9):
            raise ValueError(f"must be from {MIN_CARD_TEMPERATURE:g} to {MAX_CARD_TEMPERATURE:g} (a calibration "
                             "temperature)")
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

    @model_validator(mode="after")
    def _points_make_sense(self) -> "CardSchema":
        problem = point_problem(self.threshold, self.uncertain_band)
        if problem:
            raise ValueError(f"the default operating point (threshold, uncertain_band): {problem}")
        ooc = (self.extra.operating_points or {}).get("out_of_collection")
        if ooc is not None:
            default_floor = min(self.uncertain_band[0], self.threshold)
            floor = min(ooc.uncertain_band[0], ooc.threshold)
            if ooc.threshold > self.threshold + 1e-12:
                raise ValueError(f"extra.operating_points.out_of_collection threshold {ooc.threshold:g} is above the "
                                 f"default's {self.threshold:g}: a folder unlike the training photos would be called "
                                 "mpox less often; that point must be no stricter than the default")
            if floor > default_floor + 1e-12:
                raise ValueError(f"extra.operating_points.out_of_collection review floor {floor:g} is above the "
                                 f"default's {default_floor:g}: a folder unlike the training photos would have fewer "
                                 "photos reviewed; that point must be no stricter than the default")
        return self


def point_problem(threshold: float, band) -> str:
    """'' when an operating point can call both classes (0 < threshold < 1) and its uncertain band lies inside
    (0, 1), else why not (one phrase)."""
    lo, hi = band
    if not 0.0 < threshold < 1.0:
        return (f"threshold {threshold:g} can only ever call one class; it must lie strictly between 0 and 1")
    if not 0.0 < lo <= hi < 1.0:
        return f"uncertain_band [{lo:g}, {hi:g}] must lie strictly between 0 and 1"
    return ""


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
        if isinstance(value, dict):  # a rule across fields: the rule names them, the whole object says nothing
            text = (f"{where}: model card: {msg}" if field == "card" else
                    f"{where}: model card field {field!r}: {msg}")
        else:
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


_TOKEN = re.compile(rb'[\[\]{}"\\]')


def nesting_depth(raw: bytes) -> int:
    """How deep `[` and `{` nest in JSON text (brackets inside strings do not count), without parsing it;
    one pass over the brackets, quotes and backslashes."""
    depth = deepest = 0
    in_string, skip = False, -1
    for m in _TOKEN.finditer(raw):
        i, c = m.start(), m.group()
        if i == skip:           # the character after a backslash inside a string
            continue
        if in_string:
            if c == b"\\":
                skip = i + 1
            elif c == b'"':
                in_string = False
        elif c == b'"':
            in_string = True
        elif c in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest


def parse_card_bytes(raw: bytes, where: str = "model card") -> dict:
    """A card's bytes as a dict, within bounds checked BEFORE parsing: at most MAX_CARD_BYTES, nested at most
    MAX_CARD_DEPTH deep, UTF-8, JSON, an object. CardError (one line) otherwise: never RecursionError,
    UnicodeDecodeError or a parser's ValueError."""
    if len(raw) > MAX_CARD_BYTES:
        raise CardError(f"{where}: model card is {len(raw):,} bytes; a card is at most {MAX_CARD_BYTES:,} bytes, "
                        "so this is not a model card. Refusing it.")
    if raw.count(b"[") + raw.count(b"{") > MAX_CARD_DEPTH and nesting_depth(raw) > MAX_CARD_DEPTH:
        raise CardError(f"{where}: model card nests lists or objects more than {MAX_CARD_DEPTH} deep; a model card "
                        "never does. Refusing it.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardError(f"{where}: model card is not UTF-8 text (byte 0x{raw[exc.start]:02X} at offset "
                        f"{exc.start}); it was damaged or is not a card. Refusing it.") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer too long to convert
        reason = " ".join(str(exc).split())[:120]
        raise CardError(f"{where}: model card is not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise CardError(f"{where}: model card is not a JSON object")
    return data


def load_card_json(path: str | os.PathLike) -> dict:
    """The card file at `path` as a dict (parse_card_bytes); reads at most MAX_CARD_BYTES + 1 bytes.
    OSError (FileNotFoundError...) as raised; CardError for a file that is not a card."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_CARD_BYTES + 1)
    return parse_card_bytes(raw, str(path))


def unusual_values(data: dict) -> list[str]:
    """Values a well-formed card may hold but that deserve a warning (each one phrase); [] for a usual card."""
    notes = []
    if not isinstance(data, dict):
        return notes
    t = data.get("temperature")
    if isinstance(t, (int, float)) and not 0.2 <= t <= 5.0:
        notes.append(f"temperature {t:g} is unusual (fitted temperatures are usually 0.2 to 5): its probabilities "
                     "are stretched or squashed far from the raw model's")
    thr = data.get("threshold")
    if isinstance(thr, (int, float)) and not 0.02 <= thr <= 0.98:
        notes.append(f"threshold {thr:g} is unusual: almost every photo gets the same call")
    band = data.get("uncertain_band")
    if isinstance(band, list) and len(band) == 2 and band[0] == band[1]:
        notes.append("uncertain_band is empty: no photo is flagged uncertain for review")
    extra = data.get("extra") if isinstance(data.get("extra"), dict) else {}
    ooc = (extra.get("operating_points") or {}).get("out_of_collection") if isinstance(
        extra.get("operating_points"), dict) else None
    share = ooc.get("review_share") if isinstance(ooc, dict) else None
    if isinstance(share, (int, float)) and share > 0.9:
        notes.append(f"out-of-collection review_share {share:g} is unusual: nearly the whole folder is reviewed")
    floor = (extra.get("shift_alarm") or {}).get("effect_floor") if isinstance(extra.get("shift_alarm"), dict) else None
    effects = floor.get("effect") if isinstance(floor, dict) else None
    if isinstance(effects, list) and any(isinstance(e, (int, float)) and e > 0.1 for e in effects):
        notes.append("shift_alarm.effect_floor holds floors above 0.1: the shift alarm will hardly ever fire")
    return notes


_WARNED: set[tuple[str, str]] = set()


def warn_once(data: dict, where: str) -> list[str]:
    """The unusual_values of a card not yet reported for `where` in this process (each reported once)."""
    fresh = []
    for note in unusual_values(data):
        if (where, note) not in _WARNED:
            _WARNED.add((where, note))
            fresh.append(f"{where}: {note}")
    return fresh


__all__ = ["CardError", "CardSchema", "card_problem", "check_card", "FORMAT_VERSION", "load_card_json",
           "parse_card_bytes", "point_problem", "unusual_values", "warn_once"]
