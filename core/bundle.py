"""Model bundles: a Keras model, its model card and its out-of-scope statistics, verified on load.

A bundle is a folder `models/<name>/` holding `model.keras`, `model_card.json` and optionally
`ood.npz`. The card records the SHA-256 of every file; loading refuses a bundle whose files do not
match, and Keras loads in safe mode (no arbitrary code such as Lambda layers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import __version__
from core.ood import OODStats
from core.records import FLAG_OUT_OF_SCOPE, FLAG_UNCERTAIN, LABEL_MPOX, LABEL_NOT_MPOX, utc_now

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
OOD_FILE = "ood.npz"
MODELS_ENV = "MPOX_TRIAGE_MODELS_DIR"

INTENDED_USE = (
    "Research and triage support: ranking skin-lesion photos for human review. "
    "Not a medical device. Not a diagnosis."
)


class BundleError(Exception):
    """A bundle is missing, malformed, tampered with or unsafe; the message says which and what to do."""


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
    version = int(data.get("format_version", 0))
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
    return Path(__file__).resolve().parent.parent / "models"


def resolve_bundle_dir(name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> Path:
    candidate = Path(name_or_path).expanduser()
    if (candidate / CARD_FILE).is_file():
        return candidate
    base = Path(models_dir) if models_dir else default_models_dir()
    named = base / str(name_or_path)
    if not named.exists():
        _recover_interrupted_swap(named)
    if (named / CARD_FILE).is_file():
        return named
    available = ", ".join(c.name for c in list_bundles(base)) or "none"
    raise BundleError(
        f"No model bundle {str(name_or_path)!r} (looked in {candidate} and {named}); available in {base}: {available}"
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
    path = Path(bundle_dir) / CARD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: model card missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: model card unreadable ({exc})") from None
    return ModelCard.from_dict(data)


def verify_bundle(bundle_dir: str | os.PathLike, card: ModelCard | None = None) -> ModelCard:
    """Check every file's SHA-256 against the card; raise BundleError naming the first mismatch."""
    bundle_dir = Path(bundle_dir)
    card = card or read_card(bundle_dir)
    if MODEL_FILE not in card.files:
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
    if card.model_sha256 and card.files[MODEL_FILE] != card.model_sha256:
        raise BundleError(f"{bundle_dir}: model card is inconsistent (model_sha256 differs from files table)")
    if card.card_sha256 and card.card_sha256 != card.content_digest():
        raise BundleError(
            f"{bundle_dir / CARD_FILE}: the model card was edited after the bundle was saved (its digest does not "
            "match), so its threshold or calibration cannot be trusted. Reinstall or retrain this model."
        )
    if OOD_FILE not in card.files and (bundle_dir / OOD_FILE).exists():
        raise BundleError(f"{bundle_dir / OOD_FILE}: file is not listed in the model card; refusing an unverified file")
    return card


def scan_bundles(models_dir: str | os.PathLike | None = None) -> list[tuple[Path, ModelCard]]:
    """(folder, card) of every bundle in a folder, sorted by folder name; unreadable cards are skipped.

    Reads JSON only (no TensorFlow), so a GUI can list models at start-up.
    """
    base = Path(models_dir) if models_dir else default_models_dir()
    found = []
    if base.is_dir():
        for sub in sorted(base.iterdir()):
            if (sub / CARD_FILE).is_file():
                try:
                    found.append((sub, read_card(sub)))
                except BundleError:
                    continue
    return found


def list_bundles(models_dir: str | os.PathLike | None = None) -> list[ModelCard]:
    """Cards of all bundles in a folder (unreadable ones are skipped), sorted by name."""
    return [card for _, card in scan_bundles(models_dir)]


@dataclass
class Scored:
    p_mpox: np.ndarray      # calibrated probabilities (N,)
    prediction: list[str]
    flag: list[str]
    ood_score: np.ndarray | None


class Bundle:
    """A loaded, verified model. Not thread-safe: one worker thread should own it.

    `runtime`, when set, is a verified exported model (see core.export.attach_runtime) that computes
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
            self._model = _load_keras_model(self.path)
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
        return "keras" if self.runtime is None else str(self.card.extra.get("runtime", {}).get("format", "exported"))

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits (N,) and embeddings (N, D) for a uint8 or float batch (N, S, S, 3) of 0..255 RGB."""
        if self.runtime is not None:
            return self.runtime(np.asarray(batch))
        return self.forward_keras(batch)

    def forward_keras(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """forward() through the Keras model, whatever runtime is attached (the reference for agreement checks)."""
        if self._predict is None:
            from core.tf_runtime import load_tensorflow

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

    def decide(self, p: np.ndarray, ood_score: np.ndarray | None, threshold: float | None = None) -> Scored:
        thr = self.card.threshold if threshold is None else float(threshold)
        lo, hi = self.card.uncertain_band
        preds = [LABEL_MPOX if pi >= thr else LABEL_NOT_MPOX for pi in p]
        flags = []
        for i, pi in enumerate(p):
            if ood_score is not None and self.card.ood_threshold is not None and ood_score[i] > self.card.ood_threshold:
                flags.append(FLAG_OUT_OF_SCOPE)
            elif lo <= pi < hi:
                flags.append(FLAG_UNCERTAIN)
            else:
                flags.append("")
        return Scored(p, preds, flags, ood_score)

    def score(self, batch: np.ndarray, threshold: float | None = None) -> Scored:
        logits, emb = self.forward(batch)
        ood_score = self.ood.score(emb) if self.ood is not None else None
        return self.decide(self.calibrate(logits), ood_score, threshold)


def _load_keras_model(bundle_dir: Path):
    from core.tf_runtime import load_tensorflow

    _, keras = load_tensorflow()
    from core.heads import register

    register()  # the SignedSqrt layer of 1.2.0+ heads, known to Keras before a safe-mode load

    try:
        return keras.saving.load_model(bundle_dir / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError/TypeError for unsafe or broken files
        raise BundleError(f"{bundle_dir / MODEL_FILE}: cannot load model safely ({exc})") from None


# Exported runtimes are used only when their recorded agreement with the Keras model is this close.
RUNTIME_TOLERANCE = 1e-4
RUNTIME_ENV = "MPOX_TRIAGE_RUNTIME"  # "keras" forces the Keras model even where an export is attached


def _verified_runtime(bundle_dir: Path, card: ModelCard):
    """The bundle's attached exported model, if it is hash-verified, made from this model.keras and agreed
    within RUNTIME_TOLERANCE when it was attached; else None (the Keras model is used)."""
    info = card.extra.get("runtime") if isinstance(card.extra, dict) else None
    if not isinstance(info, dict) or os.environ.get(RUNTIME_ENV, "").lower() == "keras":
        return None
    name = info.get("file")
    agreement = info.get("agreement") or {}
    if (name not in card.files or info.get("model_sha256") != card.model_sha256
            or not float(agreement.get("max_abs_diff_p", 1.0)) <= RUNTIME_TOLERANCE):
        return None
    try:
        from core.export import load_exported

        return load_exported(bundle_dir / name, info.get("format"))
    except Exception:  # no LiteRT/ONNX Runtime installed, or an unreadable file: Keras still works
        return None


def load_bundle(name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None,
                runtime: str = "auto") -> Bundle:
    """Find, verify and load a bundle (Keras safe mode on).

    runtime "auto" runs a verified attached export (LiteRT) when there is one and loads Keras only on
    demand; "keras" always loads the Keras model.
    """
    bundle_dir = resolve_bundle_dir(name_or_path, models_dir)
    card = verify_bundle(bundle_dir)
    if isinstance(card.extra, dict) and card.extra.get("kind") == "combined":
        from core.combined import load_combined  # a head over other bundles' embeddings (core/combined.py)

        return load_combined(bundle_dir, card, models_dir, runtime=runtime)
    runner = _verified_runtime(bundle_dir, card) if runtime == "auto" else None
    model = _load_keras_model(bundle_dir) if runner is None else None
    ood = OODStats.load(bundle_dir / OOD_FILE) if (bundle_dir / OOD_FILE).is_file() else None
    return Bundle(card, model, ood, bundle_dir, runtime=runner)


def save_bundle(model, card: ModelCard, out_dir: str | os.PathLike, ood: OODStats | None = None,
                extra_files: dict[str, bytes | str | os.PathLike] | None = None) -> Path:
    """Write a bundle atomically: build it in a temporary sibling folder, then swap it into place.

    An interrupted save leaves the previous bundle at `out_dir` untouched. `extra_files` ({name:
    bytes or a file to copy}, e.g. embeddings.npz) are written beside the model and hashed in the card.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle folder is as readable as any other folder
    try:
        model.save(tmp / MODEL_FILE)
        files = {MODEL_FILE: sha256_file(tmp / MODEL_FILE)}
        if ood is not None:
            ood.save(tmp / OOD_FILE)
            files[OOD_FILE] = sha256_file(tmp / OOD_FILE)
        for name, content in (extra_files or {}).items():
            target = tmp / Path(name).name
            target.write_bytes(content) if isinstance(content, bytes) else shutil.copyfile(content, target)
            files[target.name] = sha256_file(target)
        card.files = files
        card.model_sha256 = files[MODEL_FILE]
        card.format_version = FORMAT_VERSION
        card.card_sha256 = card.content_digest()
        card_path = tmp / CARD_FILE
        card_path.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False), encoding="utf-8")
        with open(card_path, "rb") as fh:
            os.fsync(fh.fileno())
        old = None
        if out_dir.exists():
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
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
