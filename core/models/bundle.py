"""Model bundles: a Keras model, its model card and its out-of-scope statistics, verified on load.

A bundle is a folder `models/<name>/` holding `model.keras`, `model_card.json` and optionally
`ood.npz` and an attached runtime (`model-<sha>.tflite`). From release 1.4.0 a bundle holds no `model.keras`:
its LiteRT backbone export and numpy head are the model (the head's SHA-256 is `model_sha256`; the backbone's is
in the sealed card), and the Keras form is rebuilt from the ImageNet weights only when asked for (rebuild_keras_model).
The card records the SHA-256 of every file; loading refuses a bundle whose files do not match, whose card was edited (its own digest, which must be
present), whose fields are malformed, or which claims the name and version of a shipped release without
that release's digests (core.models.releases). Keras loads in safe mode (no arbitrary code such as Lambda layers).

Where bundles live:
- shipped bundles: `default_models_dir()` ($MPOX_TRIAGE_MODELS_DIR, else `models/` of the install);
- the user's own (trained) bundles: `user_models_dir()` ($MPOX_TRIAGE_USER_MODELS_DIR, else the platform's
  per-user data folder + `mpox-triage/models`). Training writes there by default, always to a new folder.
Bundles are looked up by name in both, shipped first.

A card is sealed and written in one place, `write_card` (save_bundle and core.models.export.attach_runtime use
it); nothing writes over an existing bundle unless explicitly told to, and then the previous bundle is
kept beside it, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core import __version__
from core.models.ood import OODStats
from core.models.releases import bundle_origin, bundle_parent, claims_release, is_genuine_release, origin_text  # noqa: F401
from core.records import LABEL_MPOX, LABEL_NOT_MPOX, decide, utc_now

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
OOD_FILE = "ood.npz"
MODELS_ENV = "MPOX_TRIAGE_MODELS_DIR"
USER_MODELS_ENV = "MPOX_TRIAGE_USER_MODELS_DIR"
APP_DIR_NAME = "mpox-triage"
# Files the loader opens by fixed name: refused when present in the folder but not listed in the card.
LOADED_FILES = (MODEL_FILE, OOD_FILE)
# Card field bounds checked at load (a bad value is refused naming the field, not hit mid-run).
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024
MAX_TEMPERATURE = 1000.0

INTENDED_USE = (
    "Research and triage support: ranking skin-lesion photos for human review. "
    "Not a medical device. Not a diagnosis."
)


class BundleError(Exception):
    """A bundle is missing, malformed, tampered with or unsafe; the message (one line) says which and what to do."""


class BundleExistsError(BundleError):
    """A save was refused because something already exists at the destination (see save_bundle's `replace`)."""


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclass
class ModelCard:
    """Everything needed to trust, trace and reproduce one model bundle."""

    name: str
    version: str
    architecture: str
    input_size: int
    format_version: int = FORMAT_VERSION
    preprocessing: str = ""
    class_names: list[str] = field(default_factory=lambda: [LABEL_NOT_MPOX, LABEL_MPOX])
    threshold: float = 0.5
    threshold_reason: str = ""
    temperature: float = 1.0
    uncertain_band: list[float] = field(default_factory=lambda: [0.35, 0.65])
    ood_threshold: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    intended_use: str = INTENDED_USE
    limitations: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    model_sha256: str = ""
    created: str = field(default_factory=utc_now)
    parent: dict[str, str] | None = None
    app_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)
    # SHA-256 of the card's own canonical JSON without this field: a hand-edited threshold is noticed.
    card_sha256: str = ""

    @property
    def display_name(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def key(self) -> str:
        """How results, sessions and the app name this model: its scoring digest (core.records.scoring_digest),
        else "name version"."""
        return self.scoring_digest or f"{self.name} {self.version}"

    @property
    def scoring_digest(self) -> str:
        from core.records import scoring_digest

        return scoring_digest(self)

    @property
    def short_sha(self) -> str:
        return self.model_sha256[:12]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def content_digest(self) -> str:
        data = self.to_dict()
        data.pop("card_sha256", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        data = migrate_card(dict(data))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        missing = [k for k in ("name", "version", "architecture", "input_size") if k not in known]
        if missing:
            raise BundleError(f"Model card lacks required fields: {', '.join(missing)}")
        return cls(**known)


def migrate_card(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a card of an older format version up to FORMAT_VERSION.

    Format 0 (pre-release) cards had `arch`, `sha256` and `decision_threshold` instead of
    `architecture`, `model_sha256` and `threshold`, and no `files` table.
    """
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise BundleError(f"model card field 'format_version' is {version!r}; it must be a whole number")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"Model card format {version} is newer than this app understands ({FORMAT_VERSION}); update mpox-triage"
        )
    if version == 0:
        if "arch" in data:
            data["architecture"] = data.pop("arch")
        if "sha256" in data:
            data["model_sha256"] = data.pop("sha256")
        if "decision_threshold" in data:
            data["threshold"] = data.pop("decision_threshold")
        if "files" not in data and data.get("model_sha256"):
            data["files"] = {MODEL_FILE: data["model_sha256"]}
        data["format_version"] = FORMAT_VERSION
    return data


def _frozen_root() -> Path | None:
    base = getattr(sys, "_MEIPASS", None)
    return Path(base) if base else None


def default_models_dir() -> Path:
    """The folder of shipped bundles: $MPOX_TRIAGE_MODELS_DIR, else `models/` beside the packages."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    frozen = _frozen_root()
    if frozen is not None:
        return frozen / "models"
    return Path(__file__).resolve().parents[2] / "models"


def user_data_dir() -> Path:
    """The platform's per-user data folder for this app (what Qt's AppLocalDataLocation gives, without Qt).

    Linux and other Unix: $XDG_DATA_HOME/mpox-triage (default ~/.local/share/mpox-triage); macOS:
    ~/Library/Application Support/mpox-triage; Windows: %LOCALAPPDATA%\\mpox-triage.
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / APP_DIR_NAME


def user_models_dir() -> Path:
    """The user's own model folder (trained bundles go here, never into the install's `models/`).

    $MPOX_TRIAGE_USER_MODELS_DIR when set, else user_data_dir() / "models". Not created here.
    """
    env = os.environ.get(USER_MODELS_ENV)
    return Path(env).expanduser() if env else user_data_dir() / "models"


def model_search_dirs(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for bundles by name: `models_dir` alone when given, else shipped then user's."""
    if models_dir:
        return [Path(models_dir).expanduser()]
    dirs = [default_models_dir()]
    user = user_models_dir()
    if user not in dirs:
        dirs.append(user)
    return dirs


def safe_folder_name(text: str) -> str:
    """`text` as a single, portable folder name (letters, digits, . _ - kept; others become -)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip(".-")
    return name or "model"


def new_bundle_dir(name: str, version: str, base: str | os.PathLike | None = None) -> Path:
    """Where a new bundle `name version` goes: `<base or user_models_dir()>/<name>-<version>`."""
    root = Path(base).expanduser() if base else user_models_dir()
    return root / safe_folder_name(f"{name}-{version}")


def resolve_bundle_dir(name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> Path:
    candidate = Path(name_or_path).expanduser()
    if (candidate / CARD_FILE).is_file():
        return candidate
    bases = model_search_dirs(models_dir)
    looked = [str(candidate)]
    for base in bases:
        named = base / str(name_or_path)
        if not named.exists():
            _recover_interrupted_swap(named)
        if (named / CARD_FILE).is_file():
            return named
        looked.append(str(named))
    available = ", ".join(sorted({p.name for p, _ in scan_bundles(models_dir)})) or "none"
    raise BundleError(
        f"No model bundle {str(name_or_path)!r} (looked in {', '.join(looked)}); available in "
        f"{', '.join(str(b) for b in bases)}: {available}"
    )


def _recover_interrupted_swap(bundle_dir: Path) -> None:
    """Put back a previous bundle that save_bundle moved aside just before being killed."""
    leftovers = sorted(bundle_dir.parent.glob(f".{bundle_dir.name}.old-*")) if bundle_dir.parent.is_dir() else []
    for old in leftovers:
        if (old / CARD_FILE).is_file():
            try:
                os.replace(old, bundle_dir)
            except OSError:
                continue
            return


def read_card(bundle_dir: str | os.PathLike) -> ModelCard:
    """The bundle's card, parsed within bounds and validated (core.models.card_schema.load_card_json); BundleError, one
    line, for a card that is missing, too large, nested too deep, not UTF-8, not JSON or not well formed."""
    from core.models.card_schema import CardError, load_card_json

    path = Path(bundle_dir) / CARD_FILE
    try:
        data = load_card_json(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: model card missing") from None
    except OSError as exc:
        raise BundleError(f"{path}: model card unreadable ({exc.strerror or exc})") from None
    except CardError as exc:
        raise BundleError(str(exc)) from None
    try:
        card = ModelCard.from_dict(data)
    except TypeError as exc:  # a field the dataclass cannot take: still the card's fault, one line
        raise BundleError(f"{path}: model card is malformed ({exc})") from None
    validate_card(card, path)
    return card


def validate_card(card: ModelCard, where: str | os.PathLike = "model card") -> ModelCard:
    """Refuse malformed fields now, naming the field, instead of failing mid-run (OpenCV, division, the PDF...).

    The rules are the one card schema, core.models.card_schema (pydantic): name/version/architecture non-empty text;
    input_size a whole number in [MIN_INPUT_SIZE, MAX_INPUT_SIZE]; threshold in [0, 1]; temperature in
    (0, MAX_TEMPERATURE]; uncertain_band [lo, hi] in [0, 1]; files plain names to SHA-256 digests; extra's
    runtime, components and operating_points well formed... Raises BundleError (one line); returns the card.
    """
    from core.models.card_schema import CardError, check_card

    try:
        check_card(card.to_dict(), str(where))
    except CardError as exc:
        raise BundleError(str(exc)) from None
    return card


def check_release(card: ModelCard, where: str | os.PathLike = "model card") -> None:
    """Refuse a card that claims a shipped release's name and version without that release's digests."""
    release = claims_release(card)
    if release is not None and not is_genuine_release(card):
        raise BundleError(
            f"{where}: claims to be the shipped model {release.name} {release.version} but its digests are not "
            "that release's (core.models.releases); it was modified or is an impostor. Reinstall the app's models, or "
            "give a retrained model another version. Refusing to load it."
        )


def verify_bundle(bundle_dir: str | os.PathLike, card: ModelCard | None = None,
                  models_dir: str | os.PathLike | None = None) -> ModelCard:
    """Check every file's SHA-256 against the card, and a combined model's components against what its card
    records about them (core.models.combined.find_component); raise BundleError naming the first mismatch."""
    bundle_dir = Path(bundle_dir)
    card_path = bundle_dir / CARD_FILE
    card = validate_card(card, card_path) if card is not None else read_card(bundle_dir)
    if not isinstance(card.card_sha256, str) or not card.card_sha256.strip():
        raise BundleError(
            f"{card_path}: the model card carries no digest (card_sha256), so an edited threshold or calibration "
            "could not be noticed. Reinstall or retrain this model. Refusing to load it."
        )
    if model_file(card) not in card.files:
        raise BundleError(f"{bundle_dir}: model card lists no hash for {MODEL_FILE}; refusing an unverifiable model")
    for name, expected in card.files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path}: file listed in the model card is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{path}: SHA-256 {actual[:12]}… does not match the model card ({expected[:12]}…). The file was "
                "modified or corrupted; reinstall or retrain this model. Refusing to load it."
            )
    if card.files[model_file(card)] != card.model_sha256:
        raise BundleError(f"{bundle_dir}: model card is inconsistent (model_sha256 differs from files table)")
    if card.card_sha256 != card.content_digest():
        raise BundleError(
            f"{bundle_dir / CARD_FILE}: the model card was edited after the bundle was saved (its digest does not "
            "match), so its threshold or calibration cannot be trusted. Reinstall or retrain this model."
        )
    for name in LOADED_FILES:
        if name not in card.files and (bundle_dir / name).exists():
            raise BundleError(f"{bundle_dir / name}: file is not listed in the model card; refusing an unverified file")
    check_release(card, card_path)
    kind = card.extra.get("kind") if isinstance(card.extra, dict) else None
    if kind:
        from core.models.runtimes import bundle_check  # the kind's own step: a combined model is trusted only whole

        check = bundle_check(str(kind))
        if check is not None:
            check(card, bundle_dir, models_dir)
    return card


def scan_bundles(models_dir: str | os.PathLike | None = None,
                 problems: list[str] | None = None) -> list[tuple[Path, ModelCard]]:
    """(folder, card) of every bundle in a folder (default: shipped, then the user's), sorted by folder name
    within each; unreadable or malformed cards (core.models.card_schema) and hidden folders (saves in progress) are
    skipped, each with one line appended to `problems` when given (the model list shows them as warnings), and
    a card's legal but unusual values (core.models.card_schema.unusual_values) add one line each, once per process.

    Reads JSON only (no TensorFlow), so a GUI can list models at start-up.
    """
    found = []
    for base in model_search_dirs(models_dir):
        if not base.is_dir():
            continue
        try:
            subs = sorted(base.iterdir())
        except OSError:
            continue
        for sub in subs:
            if sub.name.startswith("."):
                continue
            if (sub / CARD_FILE).is_file():
                try:
                    found.append((sub, read_card(sub)))
                except (BundleError, ValueError, TypeError) as exc:  # one bad card never hides the others
                    if problems is not None:
                        problems.append(f"skipped the model bundle {sub}: {' '.join(str(exc).split())}")
                    continue
                if problems is not None:  # legal but unusual values: said once per process (card_schema.warn_once)
                    from core.models.card_schema import warn_once

                    problems.extend(warn_once(found[-1][1].to_dict(), str(sub)))
    return found


def replaced_on(bundle_dir: str | os.PathLike) -> str:
    """For a backup kept by save_bundle(replace=True), the UTC time it was replaced ("2026-12-07 17:35 UTC");
    '' for any other folder."""
    m = re.search(r"\.replaced-(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z(?:-\d+)?$", Path(bundle_dir).name)
    return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]} UTC" if m else ""


def _runnable(card: ModelCard) -> str:
    """'' when this install can run the (verified) bundle, else why not: a verified LiteRT/numpy runtime, or
    Keras with TensorFlow installed, is needed (load_bundle's choice, without loading anything)."""
    from importlib.util import find_spec

    from core.models.tf_runtime import TRAIN_EXTRA_HINT, tensorflow_available

    info = runtime_info(card)
    forced = os.environ.get(RUNTIME_ENV, "").lower() == "keras"
    listed = all(info.get(k) in card.files for k in ("file", "head") if info.get(k))
    light = bool(info) and listed and runtime_agrees(card, info) and not forced and (
        info.get("kind") == RUNTIME_HEAD or find_spec("ai_edge_litert") is not None or tensorflow_available())
    # With TensorFlow, a bundle without model.keras (release 1.4.0 on) runs through its rebuilt Keras form.
    if light or tensorflow_available():
        return ""
    if forced:
        return (f"{RUNTIME_ENV}=keras is set, which needs TensorFlow; this install does not include it. Unset "
                f"{RUNTIME_ENV} to run on LiteRT")
    if MODEL_FILE not in card.files:
        return "this model exists only as its LiteRT runtime, which cannot run here"
    return f"this model has no verified LiteRT export and needs TensorFlow to run: {TRAIN_EXTRA_HINT}"


def refusal(bundle_dir: str | os.PathLike, card: ModelCard, models_dir: str | os.PathLike | None = None,
            memo: dict | None = None) -> str:
    """'' when classify would load this bundle here, else its one-line reason: every file's SHA-256, the card's
    digest, the release pins (verify_bundle), a combined model's components (each verified whole), and a runtime
    this install can run. `memo` ({folder: reason}) saves hashing a component twice in one listing."""
    memo = {} if memo is None else memo
    key = str(Path(bundle_dir).resolve())
    if key in memo:
        return memo[key]
    try:
        verify_bundle(bundle_dir, card, models_dir)
        reason = ""
        if card.extra.get("kind") == "combined":
            for ref in component_refs(card):
                comp = find_component(ref, Path(bundle_dir), models_dir)
                problem = refusal(comp, read_card(comp), models_dir, memo)
                if problem and not reason:
                    reason = f"its component {ref.get('name')} {ref.get('version')} is refused: {problem}"
        reason = reason or _runnable(card)
    except BundleError as exc:
        reason = " ".join(str(exc).split())
    memo[key] = reason
    return reason


# --- a combined model's components ----------------------------------------------------------------------------
def component_refs(card: ModelCard) -> list[dict[str, Any]]:
    refs = card.extra.get("components") if isinstance(card.extra, dict) else None
    if not isinstance(refs, list) or not refs:
        raise BundleError(f"{card.display_name}: combined model card lists no component bundles")
    return refs


def _candidate_dirs(name: str, bundle_dir: Path, models_dir) -> list[Path]:
    bases = [bundle_dir.parent]
    if models_dir:
        bases.append(Path(models_dir))
    bases.append(default_models_dir())
    seen, out = set(), []
    for base in bases:
        d = (base / name).resolve()
        if d not in seen and d != bundle_dir.resolve():
            seen.add(d)
            out.append(d)
    return out


def component_mismatch(ref: dict[str, Any], card: ModelCard) -> str:
    """'' when `card` is the component `ref` records (name, version, model SHA-256 and card digest), else what
    differs. A card digest may differ only between two published cards of one shipped release (e.g. re-issued
    with a runtime attached: core.models.releases lists both)."""
    from core.models.releases import find_release

    diffs = [f"{what} {getattr(card, attr)!r} (recorded {ref.get(key)!r})"
             for what, attr, key in (("name", "name", "name"), ("version", "version", "version"),
                                     ("model SHA-256", "model_sha256", "sha256"))
             if str(getattr(card, attr)) != str(ref.get(key, ""))]
    recorded = ref.get("card_sha256")
    if not diffs and recorded and card.card_sha256 != recorded:
        release = find_release(card.name, card.version)
        same_release = (release is not None and card.model_sha256 == release.model_sha256
                        and {card.card_sha256, recorded} <= set(release.card_sha256))
        if not same_release:
            diffs.append(f"card digest {card.card_sha256[:12]} (recorded {str(recorded)[:12]})")
    return ", ".join(diffs)


def find_component(ref: dict[str, Any], bundle_dir: Path, models_dir=None) -> Path:
    """The folder of the component bundle `ref` names, verified against what the combined card records about it
    (name, version, model SHA-256, card digest: component_mismatch), or BundleError.

    A candidate with other weights is passed over (another model of that name); one with the same weights but
    another name, version or card (an edited input size, threshold...) is refused: a tampered component is
    never used, and never silently replaced by another copy either."""
    name, version, sha = str(ref.get("name", "")), str(ref.get("version", "")), str(ref.get("sha256", ""))
    found = []
    for d in _candidate_dirs(name, bundle_dir, models_dir):
        if not (d / CARD_FILE).is_file():
            continue
        try:
            card = read_card(d)
        except BundleError:
            continue
        if card.model_sha256 == sha:
            problem = component_mismatch(ref, card)
            if problem:
                raise BundleError(
                    f"{d}: component {name} {version} of the combined model {bundle_dir} differs from what its card "
                    f"records: {problem}. It was modified; reinstall the release's bundles. Refusing to load it.")
            return d
        found.append(f"{card.name} {card.version} (sha256 {card.model_sha256[:12]}) in {d}")
    have = "; found " + ", ".join(found) if found else "; none found"
    raise BundleError(
        f"{bundle_dir}: the combined model needs component bundle {name} {version} (sha256 {sha[:12]}){have}. "
        "Install the component bundles of the same release beside it. Refusing to load it."
    )


def list_bundles(models_dir: str | os.PathLike | None = None) -> list[ModelCard]:
    """Cards of all bundles in a folder (unreadable ones are skipped), sorted by name."""
    return [card for _, card in scan_bundles(models_dir)]


@dataclass
class Scored:
    p_mpox: np.ndarray      # calibrated probabilities (N,)
    prediction: list[str]
    flag: list[str]
    ood_score: np.ndarray | None


def uncertain_band_at(card: ModelCard, threshold: float) -> tuple[float, float]:
    """The card's uncertain band moved with the threshold (core.models.operating_point.OperatingPoint.at_threshold: the
    same distances in logit units), so --threshold never leaves the band behind."""
    from core.models.operating_point import card_point

    return card_point(card, threshold=threshold).band


class Bundle:
    """A loaded, verified model. Not thread-safe: one worker thread should own it.

    `runtime`, when set, is a verified exported model (core.models.runtimes; attached by core.models.export.attach_runtime) that computes
    the same outputs faster; the Keras model is then loaded only when something asks for `model`.
    """

    def __init__(self, card: ModelCard, model, ood: OODStats | None, path: Path | None = None, runtime=None):
        self.card = card
        self._model = model
        self.ood = ood
        self.path = path
        self.runtime = runtime
        self._predict = None

    @property
    def model(self):
        if self._model is None and self.path is not None:
            self._model = _load_keras_model(self.path, self.card)
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value
        self._predict = None

    @property
    def input_size(self) -> int:
        return int(self.card.input_size)

    @property
    def runtime_name(self) -> str:
        if self.runtime is None:
            return "keras"
        info = runtime_info(self.card)
        return "litert" if info.get("kind") == RUNTIME_BACKBONE else str(info.get("format", "exported"))

    @property
    def input_sizes(self) -> tuple[int, ...]:
        """The input sizes a photo is decoded to for this model (one; a combined bundle has its components')."""
        return (self.input_size,)

    @property
    def head(self):
        """The model's head as a core.models.heads.LinearHead (numpy): the attached runtime's, else read from Keras."""
        head = getattr(self.runtime, "head", None)
        if head is None:
            from core.models.heads import LinearHead

            head = LinearHead.from_keras(self.model)
        return head

    def features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(feature map (N, h, w, C), embedding (N, C)) from the attached LiteRT backbone, or None without one."""
        fn = getattr(self.runtime, "features", None)
        return None if fn is None else fn(np.asarray(batch))

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits (N,) and embeddings (N, D) for a uint8 or float batch (N, S, S, 3) of 0..255 RGB."""
        if self.runtime is not None:
            return self.runtime(np.asarray(batch))
        return self.forward_keras(batch)

    def forward_keras(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """forward() through the Keras model, whatever runtime is attached (the reference for agreement checks)."""
        if self._predict is None:
            from core.models.tf_runtime import load_tensorflow

            tf, _ = load_tensorflow()

            model = self.model
            shape = tuple(model.input_shape)[1:] if getattr(model, "input_shape", None) else (None, None, 3)

            # One trace for every batch size (the last, partial batch of a folder does not retrace).
            @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32)])
            def predict(x):
                out = model(x, training=False)
                return out["logit"], out["embedding"]

            self._predict = predict
        logits, emb = self._predict(np.asarray(batch, dtype=np.float32))
        return np.asarray(logits, dtype=np.float64).reshape(-1), np.asarray(emb, dtype=np.float32)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64) / float(self.card.temperature or 1.0)
        return 1.0 / (1.0 + np.exp(-z))

    def decide(self, p: np.ndarray, ood_score: np.ndarray | None, threshold: float | None = None,
               point=None, scope_score: Sequence[float | None] | None = None,
               scope_limit: float | None = None) -> Scored:
        """Calls and flags at an operating point (core.models.operating_point): the card's default point, moved to
        `threshold` when given (its uncertain band moves along), or an explicit `point`. One rule per photo
        (core.records.decide): out of scope when the embedding is farther than the card's ood_threshold or
        the image's scope score (core.photos.scope) is above its limit."""
        from core.photos import scope
        from core.models.operating_point import card_point

        if point is None:
            point = card_point(self.card, threshold=threshold)
        thr = point.threshold
        band = tuple(point.band)
        ood_thr = self.card.ood_threshold
        preds, flags = [], []
        for i, pi in enumerate(p):
            far = ood_score is not None and ood_thr is not None and ood_score[i] > ood_thr
            odd = scope_score is not None and scope.is_out_of_scope(scope_score[i], scope_limit)
            pred, flag = decide(float(pi), thr, band, bool(far or odd))
            preds.append(pred)
            flags.append(flag)
        return Scored(p, preds, flags, ood_score)

    def score(self, batch: np.ndarray, threshold: float | None = None) -> Scored:
        logits, emb = self.forward(batch)
        ood_score = self.ood.score(emb) if self.ood is not None else None
        return self.decide(self.calibrate(logits), ood_score, threshold)


def _load_keras_model(bundle_dir: Path, card: ModelCard | None = None):
    """The bundle's Keras model: model.keras (safe mode), or for a bundle without one (release 1.4.0 on) the
    model rebuilt from the ImageNet weights and its numpy head (rebuild_keras_model)."""
    from core.models.tf_runtime import TensorFlowMissing, load_tensorflow

    if card is not None and MODEL_FILE not in card.files:
        return rebuild_keras_model(bundle_dir, card)

    try:
        _, keras = load_tensorflow()
    except TensorFlowMissing:
        if os.environ.get(RUNTIME_ENV, "").lower() == "keras":
            raise BundleError(
                f"{bundle_dir}: {RUNTIME_ENV}=keras is set, which runs models through Keras and needs TensorFlow; "
                f"this install does not include it. Unset {RUNTIME_ENV} to run on LiteRT, or pip install "
                "'mpox-triage[train]'") from None
        raise BundleError(
            f"{bundle_dir}: this model has no verified LiteRT export, and running it through Keras needs "
            "TensorFlow, which this install does not include: pip install 'mpox-triage[train]' (or use a model "
            "of release 1.3.0 or later, which runs without it)"
        ) from None
    from core.models.heads import register

    register()  # the SignedSqrt layer of 1.2.0+ heads, known to Keras before a safe-mode load

    try:
        return keras.saving.load_model(bundle_dir / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError/TypeError for unsafe or broken files
        raise BundleError(f"{bundle_dir / MODEL_FILE}: cannot load model safely ({exc})") from None


# Exported runtimes are used only when their recorded agreement with the Keras model is this close.
RUNTIME_TOLERANCE = 1e-4
RUNTIME_ENV = "MPOX_TRIAGE_RUNTIME"  # "keras" forces the Keras model even where an export is attached
# card.extra["runtime"]["kind"] of a LiteRT backbone export with the head in numpy (release 1.3.0 on); a
# runtime without "kind" is a whole-model export (logit and embedding out), as attached before.
RUNTIME_BACKBONE = "backbone"
RUNTIME_HEAD = "head"  # a combined bundle: its head in numpy, its components' own runtimes for the rest
HEAD_FILE = "head.npz"


# --- the Keras form of a bundle without model.keras (release 1.4.0 on) -------------------------------------------
# A bundle of release 1.4.0 on is its LiteRT backbone export, its numpy head (`head-<sha>.npz`) and its card: that
# is what scores photos, and what the card's SHA-256 table and core/models/releases.py pin. The backbone is the
# frozen ImageNet backbone cut at the card's feature layer, so the Keras model that training, fine-tuning, export
# and TensorFlow Grad-CAM need is rebuilt from the local ImageNet weight file (never downloaded) and the verified
# head: in-model scaling, backbone, global average pooling, signed square root, the head's Dense logit. The rebuilt
# backbone must carry exactly the weights the card records (`training.backbone.fingerprint_sha256`), or nothing is
# rebuilt. A combined bundle's Keras form is its head on the concatenated embedding (core.models.heads). TensorFlow
# is imported only inside these functions, when a Keras model is asked for.

def rebuild_keras_model(bundle_dir: str | Path, card: ModelCard, weights_dir: str | Path | None = None):
    """The bundle's end-to-end Keras model ({"logit", "embedding"} out), rebuilt from the ImageNet weights and its
    hash-verified numpy head; BundleError (one line) when it cannot be (no head, other weights, no TensorFlow)."""
    from core.models.heads import LinearHead, attach_head, embedding_head_model
    from core.models.tf_runtime import TensorFlowMissing, load_tensorflow

    bundle_dir = Path(bundle_dir)
    info = runtime_info(card)
    name = info.get("head")
    if not name or name not in card.files:
        raise BundleError(f"{bundle_dir}: no model.keras and no numpy head listed in its card; nothing to load")
    try:
        load_tensorflow()
    except TensorFlowMissing:
        raise BundleError(f"{bundle_dir}: rebuilding this model's Keras form (for training, export or "
                          "MPOX_TRIAGE_RUNTIME=keras) needs TensorFlow: pip install 'mpox-triage[train]'") from None
    head = LinearHead.load_npz(bundle_dir / name)
    components = card.extra.get("components") if isinstance(card.extra, dict) else None
    if components:
        dim = sum(int(c.get("dim") or 0) for c in components)
        if dim != len(head.w):
            raise BundleError(f"{bundle_dir}: its head reads {len(head.w)} features but its components give {dim}")
        return embedding_head_model(dim, head)
    return attach_head(_verified_classifier(bundle_dir, card, weights_dir), head)


def _verified_classifier(bundle_dir: Path, card: ModelCard, weights_dir):
    """The frozen ImageNet classifier graph the card's backbone came from, its weights checked by fingerprint."""
    from core.models.backbones import WeightsNotFoundError, build_backbone, build_classifier
    from core.models.backbones import weights_fingerprint

    backbone_rec = card.training.get("backbone") if isinstance(card.training, dict) else None
    backbone_rec = backbone_rec if isinstance(backbone_rec, dict) else {}
    want = backbone_rec.get("fingerprint_sha256")
    if not want:
        raise BundleError(f"{bundle_dir}: its card records no backbone fingerprint, so its Keras form cannot be "
                          "rebuilt and checked; use its LiteRT runtime")
    try:
        backbone = build_backbone(card.architecture, input_size=int(card.input_size), weights_dir=weights_dir,
                                  feature_layer=backbone_rec.get("feature_layer"))
    except WeightsNotFoundError as exc:
        raise BundleError(f"{bundle_dir}: rebuilding its Keras form needs the ImageNet weights: {exc}") from None
    got = weights_fingerprint(backbone)
    if got != want:
        raise BundleError(f"{bundle_dir}: the local ImageNet weights (fingerprint {got[:12]}) are not the ones this "
                          f"model was built on ({want[:12]}); its Keras form cannot be rebuilt from them")
    return build_classifier(card.architecture, backbone=backbone)


def runtime_info(card: ModelCard) -> dict[str, Any]:
    """The card's record of its attached runtime (`extra.runtime`), or {}."""
    info = card.extra.get("runtime") if isinstance(card.extra, dict) else None
    return info if isinstance(info, dict) else {}


def model_file(card: ModelCard) -> str:
    """The file whose SHA-256 is the model's identity (`model_sha256`): model.keras, or, for a bundle without
    one (release 1.4.0 on; adapted where TensorFlow is not installed: core.learning.adapt), the numpy head of its LiteRT
    runtime (its backbone export is pinned by the card's files table and digest)."""
    if MODEL_FILE in card.files:
        return MODEL_FILE
    info = runtime_info(card)
    head = info.get("head")
    if info.get("kind") in (RUNTIME_BACKBONE, RUNTIME_HEAD) and isinstance(head, str) and head in card.files:
        return head
    return MODEL_FILE


def runtime_agrees(card: ModelCard, info: dict[str, Any] | None = None) -> bool:
    """Whether the card's runtime record was made from this model.keras and agreed within RUNTIME_TOLERANCE
    (a bundle without model.keras has nothing to disagree with: its runtime is the model)."""
    info = runtime_info(card) if info is None else info
    if MODEL_FILE not in card.files:
        return bool(info) and info.get("model_sha256") == card.model_sha256 == card.files.get(model_file(card))
    agreement = info.get("agreement") if isinstance(info.get("agreement"), dict) else {}
    try:
        diff = float(agreement.get("max_abs_diff_p", 1.0))
    except (TypeError, ValueError):
        return False
    return info.get("model_sha256") == card.model_sha256 and diff <= RUNTIME_TOLERANCE


def verified_head(bundle_dir: Path, card: ModelCard):
    """The numpy head (core.models.heads.LinearHead) recorded in the card's runtime, hash-verified and agreed; else None."""
    info = runtime_info(card)
    name = info.get("head")
    if (not name or name not in card.files or not runtime_agrees(card, info)
            or os.environ.get(RUNTIME_ENV, "").lower() == "keras"):
        return None
    from core.models.heads import LinearHead

    try:
        return LinearHead.load_npz(bundle_dir / name)
    except (OSError, KeyError, ValueError):
        return None


def verified_runtime(bundle_dir: Path, card: ModelCard, num_threads: int | None = None):
    """The bundle's attached exported model, if it is hash-verified, made from this model.keras and agreed
    within RUNTIME_TOLERANCE when it was attached; else None (the Keras model is used).

    A backbone export (kind "backbone") runs with its head in numpy (core.models.runtimes.LightRunner); an older
    whole-model export runs as it is (LiteRTRunner)."""
    info = runtime_info(card)
    if not info or os.environ.get(RUNTIME_ENV, "").lower() == "keras":
        return None
    name = info.get("file")
    if name not in card.files or not runtime_agrees(card, info):
        return None
    try:
        from core.models.runtimes import load_exported, load_light

        if info.get("kind") == RUNTIME_BACKBONE:
            head = info.get("head")
            if head not in card.files:
                return None
            return load_light(bundle_dir / name, bundle_dir / head, num_threads)
        return load_exported(bundle_dir / name, info.get("format"), num_threads)
    except Exception:  # no LiteRT/ONNX Runtime installed, or an unreadable file: Keras still works
        return None


def load_bundle(name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None,
                runtime: str = "auto") -> Bundle:
    """Find, verify and load a bundle (Keras safe mode on).

    runtime "auto" runs a verified attached export (LiteRT) when there is one and loads Keras only on
    demand; "keras" always loads the Keras model. Kinds other than a plain model (card `extra.kind`,
    e.g. "combined") load through the loader registered for them (core.models.runtimes.bundle_loader).
    """
    bundle_dir = resolve_bundle_dir(name_or_path, models_dir)
    card = verify_bundle(bundle_dir, models_dir=models_dir)
    kind = card.extra.get("kind") if isinstance(card.extra, dict) else None
    if kind:
        from core.models.runtimes import bundle_loader

        loader = bundle_loader(str(kind))
        if loader is None:
            raise BundleError(f"{bundle_dir}: unknown kind of model bundle {kind!r}; update mpox-triage")
        return loader(bundle_dir, card, models_dir, runtime=runtime)
    runner = verified_runtime(bundle_dir, card) if runtime == "auto" else None
    if runner is None and MODEL_FILE not in card.files and not _tensorflow_available():
        if os.environ.get(RUNTIME_ENV, "").lower() == "keras":
            raise BundleError(f"{bundle_dir}: {RUNTIME_ENV}=keras is set, which runs models through Keras and needs "
                              f"TensorFlow; this install does not include it. Unset {RUNTIME_ENV} to run on LiteRT")
        raise BundleError(f"{bundle_dir}: this model exists only as its LiteRT runtime (no {MODEL_FILE}), which "
                          "cannot run here (is ai-edge-litert installed?)")
    model = _load_keras_model(bundle_dir, card) if runner is None else None
    ood = load_ood(bundle_dir)
    return Bundle(card, model, ood, bundle_dir, runtime=runner)


def _tensorflow_available() -> bool:
    from core.models.tf_runtime import tensorflow_available

    return tensorflow_available()


def load_ood(bundle_dir: Path) -> OODStats | None:
    """The bundle's out-of-scope statistics (None without ood.npz); BundleError (one line) when malformed."""
    if not (bundle_dir / OOD_FILE).is_file():
        return None
    try:
        return OODStats.load(bundle_dir / OOD_FILE)
    except ValueError as exc:
        raise BundleError(str(exc)) from None


def write_card(bundle_dir: str | os.PathLike, card: ModelCard) -> ModelCard:
    """Seal `card` and write it into `bundle_dir`: the one place a model card is written.

    Every file the card lists (`card.files` keys; the digests given are ignored) is hashed from disk, so
    the table is always what is in the folder, whatever files a bundle has; `model_sha256` becomes
    model.keras's, `format_version` the current one and `card_sha256` the content digest. The card goes
    to a temporary file, is fsynced and renamed into place (a crash leaves the old card or the new one).
    Refuses (BundleError) a card that claims a shipped release's name and version: releases never change.
    """
    bundle_dir = Path(bundle_dir)
    release = claims_release(card)
    if release is not None:
        raise BundleError(
            f"{bundle_dir}: {release.name} {release.version} is a shipped release (core.models.releases); its card is "
            "never rewritten. Give the new or changed model another version (or name)."
        )
    files = {}
    for name in card.files:
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the model card but missing; cannot seal the card")
        files[name] = sha256_file(path)
    if model_file(card) not in files:
        raise BundleError(f"{bundle_dir}: a model card must list {MODEL_FILE} (or, without one, its LiteRT runtime)")
    card.files = files
    # No machine's folders in a card that may be shipped: data paths become relative to the repository.
    from core.models.portable import portable_fields

    for name in ("training_data", "training", "metrics", "extra"):
        setattr(card, name, portable_fields(getattr(card, name)))
    card.model_sha256 = files[model_file(card)]
    card.format_version = FORMAT_VERSION
    validate_card(card, bundle_dir / CARD_FILE)
    card.card_sha256 = card.content_digest()
    tmp = bundle_dir / f".{CARD_FILE}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(card.to_dict(), indent=2, sort_keys=False))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, bundle_dir / CARD_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return card


def replaced_bundle_dir(out_dir: str | os.PathLike) -> Path:
    """Where save_bundle(replace=True) keeps the bundle it replaces: `<out>.replaced-<UTC time>` beside it."""
    from datetime import datetime, timezone

    out_dir = Path(out_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = out_dir.with_name(f"{out_dir.name}.replaced-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = out_dir.with_name(f"{out_dir.name}.replaced-{stamp}-{n}")
    return candidate


def save_bundle(model, card: ModelCard, out_dir: str | os.PathLike, ood: OODStats | None = None, *,
                replace: bool = False, keep_previous_as: str | os.PathLike | None = None,
                extra_files: dict[str, bytes | str | os.PathLike] | None = None) -> Path:
    """Write a bundle atomically: build it in a temporary sibling folder, then move it into place.

    Never writes over anything by default: when `out_dir` exists (a bundle, an empty folder or a file)
    BundleExistsError is raised before any work. With `replace=True` an existing bundle folder is
    swapped out, and kept whole (every file, an attached .tflite included) at `keep_previous_as`
    (default: replaced_bundle_dir(out_dir)); nothing is deleted. A shipped release is never replaced.
    An interrupted save leaves the previous bundle at `out_dir` untouched. Returns `out_dir`.
    `extra_files` ({name in the bundle: source path}) are copied in and listed (hashed) like the others.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        check_save_target(out_dir, replace)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle folder is as readable as any other folder
    try:
        card.files = {}
        if model is not None:  # None: a model that exists only as its LiteRT runtime (see model_file)
            model.save(tmp / MODEL_FILE)
            card.files[MODEL_FILE] = ""
        if ood is not None:
            ood.save(tmp / OOD_FILE)
            card.files[OOD_FILE] = ""
        for name, source in (extra_files or {}).items():
            if name in card.files or name == CARD_FILE or Path(name).name != name or name.startswith("."):
                raise BundleError(f"{name!r}: not a usable extra file name for a bundle")
            if isinstance(source, bytes):
                (tmp / name).write_bytes(source)
            else:
                shutil.copyfile(source, tmp / name)
            card.files[name] = ""
        write_card(tmp, card)
        old = None
        if out_dir.exists() or out_dir.is_symlink():
            check_save_target(out_dir, replace)  # again: something may have appeared while we worked
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None and not out_dir.exists():
                os.replace(old, out_dir)  # put the previous bundle back: never leave no current model
            raise
        if old is not None:
            keep = Path(keep_previous_as) if keep_previous_as else replaced_bundle_dir(out_dir)
            try:
                os.replace(old, keep)
            except OSError:
                pass  # still kept, as the hidden .old folder; never deleted
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def check_save_target(out_dir: str | os.PathLike, replace: bool = False) -> None:
    """Raise BundleExistsError unless a bundle may be saved at `out_dir` (see save_bundle); call it before
    long work (training) so a refusal comes first, not after hours. A free path always passes."""
    out_dir = Path(out_dir)
    if not (out_dir.exists() or out_dir.is_symlink()):
        return
    if not replace:
        raise BundleExistsError(
            f"{out_dir} already exists; a model bundle is never written over. Choose a new folder or version "
            "(or replace it explicitly: --force)"
        )
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise BundleExistsError(f"{out_dir} exists and is not a bundle folder; refusing to replace it")
    if (out_dir / CARD_FILE).is_file():
        from core.models.card_schema import load_card_json

        try:
            existing = load_card_json(out_dir / CARD_FILE)
        except (OSError, ValueError):  # CardError is a ValueError
            existing = {}
        if isinstance(existing, dict) and claims_release(existing) is not None:
            raise BundleExistsError(
                f"{out_dir} holds the shipped model {existing.get('name')} {existing.get('version')}; it is never "
                "replaced. Save the new model to another folder."
            )
    elif any(out_dir.iterdir()):
        raise BundleExistsError(f"{out_dir} exists and is not a model bundle (no {CARD_FILE}); refusing to replace it")
