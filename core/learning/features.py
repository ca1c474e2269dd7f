"""Frozen-backbone embeddings of dataset images and their augmented views, cached on disk.

The embedding of an image is what core.models.backbones.build_classifier computes before its head:
in-model scaling, the backbone in inference mode, global average pooling. With the backbone frozen
it never changes, so it is computed once per (backbone weights, input size, image content, view)
and stored as a small .npz per image under the cache folder ($MPOX_TRIAGE_CACHE, default
~/.cache/mpox-triage). Head-only training then takes seconds instead of hours.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from core.learning.augment import apply_view, parse_view
from core.models.backbones import weights_fingerprint  # noqa: F401 - the feature cache's key
from core.photos.images import ImageDecodeError
from core.photos.preprocess import arch_spec, load_model_input
from core.progress import CancelToken, ProgressFn, report

CACHE_ENV = "MPOX_TRIAGE_CACHE"
TINY_PREFIX = "tiny:"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mpox-triage"


def build_tiny_backbone(input_size: int = 32, seed: int = 0, width: int = 16):
    """A small random conv net with a backbone's interface (image in, feature map out), for tests and demos."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_size, input_size, 3))
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="tiny_conv1")(inputs)
    x = keras.layers.BatchNormalization(name="tiny_bn1")(x)
    x = keras.layers.Conv2D(width * 2, 3, strides=2, padding="same", activation="relu", name="tiny_conv2")(x)
    x = keras.layers.Conv2D(width * 2, 3, padding="same", activation="relu", name="tiny_conv3")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def make_backbone(arch: str, input_size: int | None = None, weights: str | None = "imagenet-local",
                  weights_dir: str | os.PathLike | None = None, base_model: str | None = None, seed: int = 0,
                  feature_layer: str | None = None):
    """The backbone for training: an ImageNet backbone from local weights, or `tiny:<size>` for tests.

    `feature_layer` cuts the backbone after that layer (default: the architecture's choice; "top": whole).
    """
    from core.models.backbones import build_backbone, truncate_backbone

    if base_model and base_model.startswith(TINY_PREFIX):
        size = int(base_model[len(TINY_PREFIX):] or input_size or 32)
        return truncate_backbone(build_tiny_backbone(size, seed), feature_layer or "top")
    return build_backbone(arch, weights=weights, input_size=input_size, weights_dir=weights_dir,
                          feature_layer=feature_layer)


def _key(view_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", lambda m: {"@": "_at_", "#": "_n", ".": "p"}.get(m.group(0), "_"), view_id)


class FeatureExtractor:
    """Computes (and caches) GAP embeddings of a frozen backbone for images and their views."""

    def __init__(self, arch: str, backbone=None, input_size: int | None = None, weights_dir: str | None = None,
                 base_model: str | None = None, cache_dir: str | os.PathLike | None = None, batch_size: int = 32,
                 seed: int = 0, use_cache: bool = True, feature_layer: str | None = None):
        import keras

        self.spec = arch_spec(arch)
        self.backbone = backbone if backbone is not None else make_backbone(
            arch, input_size, weights_dir=weights_dir, base_model=base_model, seed=seed, feature_layer=feature_layer)
        # The layer the embedding is pooled from; part of the cache key because two cuts inside one
        # block share every weight (and so the fingerprint) but not their output.
        self.feature_layer = self.backbone.layers[-1].name
        self.input_size = int(self.backbone.input_shape[1])
        inputs = keras.Input(shape=(self.input_size, self.input_size, 3))
        x = keras.layers.Rescaling(self.spec.scale, offset=self.spec.offset)(inputs)
        x = self.backbone(x, training=False)
        self.model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        self.dim = int(self.model.output_shape[-1])
        self.batch_size = max(1, int(batch_size))
        self.fingerprint = weights_fingerprint(self.backbone)
        self.use_cache = use_cache
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.cache_dir = base / f"{self.spec.name}-{self.input_size}-{self.feature_layer}-{self.fingerprint[:16]}"
        self._fn = None

    # -- cache -----------------------------------------------------------------------------------

    def _cache_path(self, sha: str) -> Path:
        return self.cache_dir / sha[:2] / f"{sha}.npz"

    def _read(self, sha: str) -> dict[str, np.ndarray]:
        path = self._cache_path(sha)
        if not self.use_cache or not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # a truncated or foreign cache file is simply recomputed
            return {}

    def _write(self, sha: str, entries: dict[str, np.ndarray]) -> None:
        if not self.use_cache:
            return
        path = self._cache_path(sha)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            merged = {**self._read(sha), **entries}
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **merged)
            os.replace(tmp, path)  # atomic: readers never see half a file
        except OSError:
            pass  # a read-only or full cache only costs speed

    # -- compute ---------------------------------------------------------------------------------

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) of a batch of uint8 model inputs."""
        if self._fn is None:
            import tensorflow as tf

            model = self.model

            @tf.function(reduce_retracing=True)
            def fn(x):
                return model(tf.cast(x, tf.float32), training=False)

            self._fn = fn
        return np.asarray(self._fn(np.asarray(batch)), dtype=np.float32)

    def embed(self, items, views: Sequence[str] = ("identity",), progress: ProgressFn | None = None,
              cancel: CancelToken | None = None, errors: list[str] | None = None) -> np.ndarray:
        """Embeddings (N, V, D) of N samples (a Dataset, Samples or paths) under V views.

        An unreadable image raises ImageDecodeError, or, when `errors` is given, leaves a NaN row
        and appends its message there.
        """
        from core.photos.images import file_sha256

        views = [parse_view(v).id for v in views]
        samples = list(items.samples if hasattr(items, "samples") else items)
        paths = [Path(getattr(s, "path", s)) for s in samples]
        n, nv = len(paths), len(views)
        out = np.full((n, nv, self.dim), np.nan, dtype=np.float32)
        todo: list[tuple[int, str, list[int]]] = []
        for i, (s, path) in enumerate(zip(samples, paths)):
            sha = s.file_hash() if hasattr(s, "file_hash") else file_sha256(path)
            cached = self._read(sha)
            missing = []
            for j, v in enumerate(views):
                vec = cached.get(_key(v))
                if vec is not None and vec.shape == (self.dim,):
                    out[i, j] = vec
                else:
                    missing.append(j)
            if missing:
                todo.append((i, sha, missing))
        total = sum(len(m) for _, _, m in todo)
        report(progress, 0, total, f"computing {total} embeddings ({n - len(todo)} of {n} images cached)",
               "features")
        buf: list[np.ndarray] = []
        where: list[tuple[int, int, str]] = []
        done = 0

        def flush() -> None:
            nonlocal done
            if not buf:
                return
            emb = self.forward(np.stack(buf))
            per_image: dict[str, dict[str, np.ndarray]] = {}
            for (i, j, sha), vec in zip(where, emb):
                out[i, j] = vec
                per_image.setdefault(sha, {})[_key(views[j])] = vec
            for sha, entries in per_image.items():
                self._write(sha, entries)
            done += len(buf)
            buf.clear()
            where.clear()
            report(progress, done, total, "computing embeddings", "features")

        for i, sha, missing in todo:
            if cancel is not None:
                cancel.raise_if_cancelled()
            try:
                img = load_model_input(paths[i], self.input_size)
            except ImageDecodeError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                continue
            for j in missing:
                buf.append(apply_view(img, views[j], sha))
                where.append((i, j, sha))
                if len(buf) >= self.batch_size:
                    flush()
        flush()
        return out


class RuntimeFeatureExtractor(FeatureExtractor):
    """FeatureExtractor's embeddings through a loaded bundle's verified LiteRT backbone, for installs without
    TensorFlow. The bundle must have been trained on its frozen backbone (preset "quick"), so its embedding is
    the backbone's; cached apart from the Keras embeddings (LiteRT agrees with Keras within ~1e-4, not exactly)."""

    def __init__(self, bundle, cache_dir: str | os.PathLike | None = None, batch_size: int = 32,
                 use_cache: bool = True):
        from core.models.bundle import runtime_info

        info = runtime_info(bundle.card)
        self.spec = arch_spec(bundle.card.architecture)
        self.backbone = None
        self.bundle = bundle
        backbone = bundle.card.training.get("backbone") if isinstance(bundle.card.training, dict) else None
        self.feature_layer = str((backbone or {}).get("feature_layer") or "runtime")
        self.input_size = int(bundle.input_size)
        self.fingerprint = str(info.get("sha256") or bundle.card.files.get(str(info.get("file")), ""))
        self.dim = int(bundle.forward(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))[1].shape[-1])
        self.batch_size = max(1, int(batch_size))
        self.use_cache = use_cache
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.cache_dir = (base / f"{self.spec.name}-{self.input_size}-{self.feature_layer}-litert-"
                                 f"{self.fingerprint[:16]}")
        self._fn = None

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.bundle.forward(np.asarray(batch))[1], dtype=np.float32)


# -- embeddings carried by a bundle ----------------------------------------------------------------

EMBEDDINGS_FILE = "embeddings.npz"


def embeddings_npz_bytes(embedding: np.ndarray, label: Sequence, source: Sequence[str], split: Sequence[str],
                         path_sha: Sequence[str]) -> bytes:
    """The bundle file `embeddings.npz` (np.savez_compressed, no pickles) of its training photos.

    Arrays: `embedding` float16 (N, D) (identity view, what the bundle's model reports as its
    embedding), `label` int8 (1 = mpox, 0 = not mpox), `source` (collection name), `split`
    ("train"/"val") and `path_sha` (SHA-256 of each photo's content; no paths of third-party photos).
    Adapting a bundle to a site and the shift test need only these, not the photos.
    """
    import io

    emb = np.asarray(embedding, dtype=np.float32)
    n = len(emb)
    arrays = {"embedding": emb.astype(np.float16), "label": np.asarray(label).astype(np.int8).reshape(n),
              "source": np.asarray([str(s) for s in source], dtype=str).reshape(n),
              "split": np.asarray([str(s) for s in split], dtype=str).reshape(n),
              "path_sha": np.asarray([str(s) for s in path_sha], dtype=str).reshape(n)}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_embeddings(bundle_or_dir) -> dict[str, np.ndarray]:
    """The arrays of a bundle's embeddings.npz (embedding as float32), or {} when it carries none.

    Takes a loaded Bundle (its folder is read; the file was hash-verified when it was loaded) or a
    bundle folder.
    """
    folder = getattr(bundle_or_dir, "path", None) or bundle_or_dir
    path = Path(folder) / EMBEDDINGS_FILE
    if not path.is_file():
        return {}
    card = getattr(bundle_or_dir, "card", None)
    expected = (card.files or {}).get(EMBEDDINGS_FILE) if card is not None else None
    if card is not None:
        from core.models.bundle import BundleError, sha256_file

        if expected is None or sha256_file(path) != expected:
            raise BundleError(f"{path}: not listed in the model card or changed since the bundle was saved; "
                              "refusing unverified embeddings")
    from core.models.array_files import read_arrays  # garbage or a missing `embedding` array: one line (ArrayFileError)

    out = read_arrays(path, {"embedding": 2})
    out["embedding"] = out["embedding"].astype(np.float32)
    return out


def dataset_embeddings(bundle, dataset, cache_dir: str | os.PathLike | None = None, batch_size: int = 32,
                       progress=None) -> dict[str, np.ndarray]:
    """Embeddings of every photo of a core.learning.datasets.Dataset under a bundle's model, in the embeddings.npz
    format plus `path`; cached (keyed by model and data fingerprints) under the feature cache folder.
    """
    import hashlib

    from core.triage.shift import read_embeddings
    from core.photos.preprocess import load_model_input
    from core.progress import report

    key = hashlib.sha256("\n".join(f"{s.split}\t{s.label}\t{s.source}\t{s.file_hash()}"
                                   for s in dataset.samples).encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = base / "shift" / f"{bundle.card.name}-{bundle.card.model_sha256[:12]}-{key}.npz"
    if path.is_file():
        return read_embeddings(path)
    size = bundle.input_size
    embs, logits = [], []
    samples = list(dataset.samples)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        batch = np.stack([load_model_input(s.path, size) for s in chunk])
        lg, emb = bundle.forward(batch)
        embs.append(emb)
        logits.append(lg)
        report(progress, start + len(chunk), len(samples), "embedding", "shift")
    out = {"embedding": np.concatenate(embs).astype(np.float32),
           "logit": np.concatenate(logits).astype(np.float32),
           "label": np.array([s.label for s in samples]), "source": np.array([s.source for s in samples]),
           "split": np.array([s.split for s in samples]), "path": np.array([str(s.path) for s in samples])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **out)
    os.replace(tmp, path)
    return out
