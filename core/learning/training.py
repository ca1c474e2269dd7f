"""Training: from a labelled Dataset to a calibrated, thresholded, documented model bundle.

Presets
- `quick`: train the head (Dropout + Dense(1)) on cached frozen-backbone embeddings of augmented
  views (core.learning.features), then put the head on the backbone with core.models.backbones.build_classifier so
  the result is an ordinary end-to-end Keras model. Seconds once the embeddings are cached.
- `study`: the original study's recipe. Phase 1: frozen base, Adam 1e-4, early stopping (patience 5,
  best weights), computed on cached identity embeddings (identical maths: the base is frozen and
  its BatchNorm is in inference mode). Phase 2: unfreeze from layer 120 (MobileNetV2) / 100
  (Xception), RMSprop 1e-5, early stopping (patience 1), BatchNorm kept in inference mode.
- `full`: the quick head, then fine-tuning of the same top blocks on augmented images (Adam 1e-5,
  early stopping patience 3, best weights).

After training, on `val` only: temperature scaling, a threshold for sensitivity >= 0.90, an
uncertain band around it, and out-of-scope statistics. When the data has a test split (both classes)
the finished model is then scored on it once, for the card (`metrics.test`); test never chooses anything.
Nothing is written until save_trained(), which writes a new bundle folder and never over an existing
one (unless told to replace it, and then the previous bundle is kept beside it); a cancelled run raises
core.progress.Cancelled and leaves every existing bundle untouched.

Images that cannot be read are skipped and named in TrainResult.unreadable (all of them) and in the
card (`training_data.unreadable_files`, the first 50, with `unreadable_count`).
The ImageNet weights folder is passed explicitly (TrainConfig.weights_dir); nothing here reads or
writes environment variables for it except core.models.backbones' documented fallback.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.learning.augment import default_views, random_pipeline
from core.models.bundle import Bundle, ModelCard, new_bundle_dir, replaced_bundle_dir, save_bundle
from core.models.calibration import apply_temperature, fit_temperature, logit, sigmoid
from core.learning.datasets import Dataset, DatasetError, split_dataset
from core.learning.evaluation import choose_threshold, evaluate_bundle, to_jsonable
from core.triage.metrics import evaluate_probabilities, expected_calibration_error
from core.learning.features import TINY_PREFIX, FeatureExtractor
from core.models.ood import OODStats, fit_ood
from core.models.portable import portable_path
from core.photos.preprocess import PREPROCESSING_DESCRIPTION, arch_spec, load_model_input
from core.progress import CancelToken, Cancelled, ProgressFn, report

PRESETS = ("quick", "full", "study")

LIMITATIONS = [
    "Trained on public web-collected photos (MSLD v1, MSID): mostly tight 224x224 crops of lesions; whole "
    "photos, other cameras and lighting may score differently. Photos belong to third parties (research use).",
    "Skin-tone coverage of the training photos is unknown and probably skewed towards lighter skin; "
    "performance on darker skin is not established.",
    "Cowpox, smallpox and other orthopox look-alikes were never seen in training and are out of scope; such "
    "images may be scored as mpox or not, and should be flagged for review rather than trusted.",
    "Non-mpox classes seen in training: chickenpox, measles, normal skin and unspecified other rashes; any "
    "other condition is out of scope.",
    "Research and triage support only; not a medical device and not a diagnosis. A negative result does not "
    "rule out mpox.",
]


@dataclass
class TrainConfig:
    arch: str
    preset: str = "quick"
    epochs: int | None = None            # head / phase-1 epochs (an upper bound: early stopping decides)
    batch_size: int = 32
    seed: int = 0
    input_size: int | None = None        # default: the architecture's native size (224 / 299)
    feature_layer: str | None = None     # backbone layer pooled into the embedding; default the arch's; "top"
    weights_dir: str | None = None
    name: str | None = None
    version: str | None = None
    base_model: str | None = None        # "tiny:<size>" builds a small random backbone (tests)
    # What generalises (chosen on val): augmentation views, class weighting, label smoothing, ...
    views: list[str] | None = None       # train views for quick/full; default identity, hflip, aug#0..7
    head_lr: float | None = None         # quick/full: 1e-3; study: 1e-4
    label_smoothing: float = 0.0
    class_weight: bool = True
    dropout: float = 0.2
    patience: int | None = None          # head early stopping (default 5)
    fine_tune_epochs: int | None = None  # study phase 2 (default 20) / full fine-tuning (default 10)
    fine_tune_lr: float | None = None    # study: 1e-5 RMSprop; full: 1e-5 Adam
    fine_tune_from: int | None = None    # default: the architecture's (120 / 100)
    fine_tune_patience: int | None = None  # study: 1; full: 3
    fine_tune_augment: str = "aug"       # full: on-the-fly pipeline "aug", "augz" (with zoom-out) or "none"
    min_sensitivity: float = 0.90
    sensitivity_margin: float = 0.0      # aim for min_sensitivity + margin on val, so test/new data keep >= target
    uncertain_logit_width: float = 1.0   # uncertain band: calibrated logit within +-width of the threshold's
    ood_components: int = 32
    ood_percentile: float = 99.0
    n_bootstrap: int = 1000
    cache_dir: str | None = None
    protocol: str = "group"              # used only when the dataset has no split yet
    parent_name: str | None = None
    transfer: bool = True                # quick preset: leave-one-collection-out estimate in the card
    score_test: bool = True              # score the finished model on the test split (reported, never chosen on)
    strategy: str | None = None          # full/study fine-tuning under tf.distribute: mirrored, multiworker
    # Head recipe (quick preset): "dense" (Dropout + Dense, Adam, early stopping on val) or "logistic"
    # (core.models.heads: L2 logistic regression on signed-square-rooted embeddings, C = head_c; release 1.2.0).
    head: str = "dense"
    head_c: float | None = None

    def __post_init__(self) -> None:
        arch_spec(self.arch)  # fails early with the list of architectures
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.strategy is not None:
            from core.learning.distribute import check_strategy

            self.strategy = check_strategy(self.strategy)
            if self.strategy and self.preset == "quick":
                raise ValueError("a distribution strategy applies to fine-tuning (preset full or study); "
                                 "the quick preset trains the head on cached embeddings only")
        if self.head not in ("dense", "logistic"):
            raise ValueError(f"Unknown head {self.head!r}; choose dense or logistic")
        if self.head == "logistic" and self.preset != "quick":
            raise ValueError("the logistic head is trained on cached embeddings: use it with the quick preset")


@dataclass
class EpochLog:
    phase: str
    epoch: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None


@dataclass
class TrainResult:
    model: Any
    card: ModelCard
    ood: OODStats
    history: list[EpochLog]
    val_metrics: dict
    # Extras for experiments: the head alone (quick preset) and validation outputs.
    head: Any = None
    val_logits: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    extractor: Any = field(default=None, repr=False)
    # Every image that could not be read (train, val and test), one user-facing line each.
    unreadable: list[str] = field(default_factory=list)
    # evaluate_bundle on the test split (with per-image predictions), when there was one to score.
    test_report: dict | None = None
    # Set by save_trained: the bundle folder written, and where a replaced bundle was kept (replace=True).
    bundle_path: Path | None = None
    replaced_path: Path | None = None

    @property
    def test_metrics(self) -> dict | None:
        """The test metrics recorded in the card (None when there was no test split to score)."""
        return self.card.metrics.get("test")
    # The bytes of embeddings.npz (train and val embeddings, labels, sources), saved with the bundle.
    embeddings_npz: bytes | None = field(default=None, repr=False)


def _hook(phase: str, steps: int, epochs: int, history: list[EpochLog], progress, cancel, on_epoch):
    """A Keras callback: progress per batch, cancel between batches, an EpochLog per epoch."""
    import keras

    class Hook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if cancel is not None and cancel.cancelled:
                raise Cancelled()
            if progress is not None and (batch % 5 == 0 or batch == steps - 1):
                report(progress, batch + 1, steps, f"{phase}: epoch {self.epoch + 1}/{epochs}", phase)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            entry = EpochLog(phase, epoch + 1, float(logs.get("loss", np.nan)),
                             float(logs.get("accuracy", np.nan)),
                             _opt(logs.get("val_loss")), _opt(logs.get("val_accuracy")))
            history.append(entry)
            if on_epoch is not None:
                on_epoch(entry)
            report(progress, epoch + 1, epochs,
                   f"{phase}: epoch {epoch + 1} loss {entry.loss:.4f} val_loss {entry.val_loss or float('nan'):.4f}",
                   phase)
            if cancel is not None and cancel.cancelled:
                raise Cancelled()

    h = Hook()
    h.epoch = 0
    return h


def _opt(v) -> float | None:
    return None if v is None else float(v)


def _class_weights(y: np.ndarray, enabled: bool) -> dict[int, float] | None:
    if not enabled:
        return None
    n = len(y)
    counts = np.bincount(y.astype(int), minlength=2)
    if counts.min() == 0:
        return None
    # Balanced weights: each class contributes equally to the loss.
    return {k: float(n / (2 * counts[k])) for k in (0, 1)}


def _loss(label_smoothing: float):
    import keras

    return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)


def _metrics():
    import keras

    return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]  # on logits: 0 = p 0.5


def build_head(dim: int, dropout: float = 0.2):
    """The classifier head alone: embedding (D,) -> Dropout -> Dense(1) logit (same layers as build_classifier)."""
    import keras

    inputs = keras.Input(shape=(dim,), name="embedding")
    x = keras.layers.Dropout(dropout, name="dropout")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="logit")(x), name="head")


def train_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
               lr: float = 1e-3, epochs: int = 200, batch_size: int = 32, patience: int = 5, dropout: float = 0.2,
               label_smoothing: float = 0.0, class_weight: bool = True, seed: int = 0, phase: str = "head",
               optimizer: str = "adam", history: list[EpochLog] | None = None, progress: ProgressFn | None = None,
               cancel: CancelToken | None = None, on_epoch: Callable[[EpochLog], None] | None = None):
    """Fit the head on embeddings with early stopping on val loss (best weights kept).

    `x_train` is (N, D) or (N, V, D) (every view becomes a training row with its image's label);
    `x_val` is (M, D) or (M, 1, D). Returns (head model, history, val logits (M,)).
    """
    import keras

    keras.utils.set_random_seed(seed)
    xt = np.asarray(x_train, dtype=np.float32)
    yt = np.asarray(y_train, dtype=np.float32)
    if xt.ndim == 3:
        yt = np.repeat(yt, xt.shape[1])
        xt = xt.reshape(-1, xt.shape[-1])
    xv = np.asarray(x_val, dtype=np.float32).reshape(-1, xt.shape[-1])
    yv = np.asarray(y_val, dtype=np.float32)
    history = [] if history is None else history
    head = build_head(xt.shape[-1], dropout)
    opt = keras.optimizers.Adam(lr) if optimizer == "adam" else keras.optimizers.RMSprop(lr)
    head.compile(optimizer=opt, loss=_loss(label_smoothing), metrics=_metrics())
    steps = int(np.ceil(len(xt) / batch_size))
    head.fit(xt, yt, validation_data=(xv, yv), epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
             class_weight=_class_weights(yt.astype(int), class_weight),
             callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                      restore_best_weights=True),
                        _hook(phase, steps, epochs, history, progress, cancel, on_epoch)])
    val_logits = np.asarray(head(xv, training=False), dtype=np.float64).reshape(-1)
    return head, history, val_logits


# ---------------------------------------------------------------------------------------------


def _prepare_splits(dataset: Dataset, config: TrainConfig, progress, cancel) -> Dataset:
    if not dataset.has_splits():
        dataset = split_dataset(dataset, config.protocol, seed=config.seed, progress=progress, cancel=cancel)
    counts = dataset.counts()
    for split in ("train", "val"):
        c = counts.get(split, {})
        if c.get("mpox", 0) < 1 or c.get("not_mpox", 0) < 1:
            raise DatasetError(
                f"the {split} split needs at least one mpox and one non-mpox image (has {c or 'none'}); add "
                "images or use a dataset without a fixed split so one can be made"
            )
    return dataset


def _load_images(ds: Dataset, size: int, progress, cancel, stage: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decoded model inputs (N, S, S, 3) uint8 and labels; unreadable files are skipped and named."""
    arrays, ys, errors = [], [], []
    for i, s in enumerate(ds.samples):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            arrays.append(load_model_input(s.path, size))
            ys.append(s.y)
        except Exception as exc:  # ImageDecodeError carries the file name
            errors.append(str(exc))
        if i % 25 == 0 or i == len(ds.samples) - 1:
            report(progress, i + 1, len(ds.samples), f"loading {stage} images", "load")
    return np.stack(arrays), np.asarray(ys, dtype=np.float32), errors


def _augmented_images(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: str):
    """Keras PyDataset of (augmented) image batches, reshuffled and re-augmented every epoch, deterministic."""
    import keras

    class Seq(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.order = np.arange(len(x))
            self.on_epoch_end()

        def __len__(self):
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, idx):
            sel = self.order[idx * batch_size:(idx + 1) * batch_size]
            if augment == "none":
                return x[sel].astype(np.float32), y[sel]
            rng = np.random.default_rng([seed, self.epoch, idx])
            batch = np.stack([random_pipeline(x[i], rng, zoom=augment == "augz") for i in sel]).astype(np.float32)
            return batch, y[sel]

        def on_epoch_end(self):
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(x))
            self.epoch += 1

    return Seq()


def prepare_fine_tune(backbone, from_layer: int) -> None:
    """Unfreeze the backbone's layers from `from_layer` on, keeping every BatchNormalization in inference mode.

    Keras 3 does not honour the nested `backbone(x, training=False)` when the outer model trains:
    only a non-trainable BatchNormalization layer is sure to use its moving statistics. Without
    this, batch statistics replace the ImageNet ones and the features the head learnt on shift.
    """
    import keras

    backbone.trainable = True
    for layer in backbone.layers[:from_layer]:
        layer.trainable = False
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _fine_tune(clf, backbone, x_tr, y_tr, x_va, y_va, *, from_layer: int, optimizer, epochs: int, patience: int,
               batch_size: int, seed: int, augment: str, class_weight: bool, label_smoothing: float, phase: str,
               history, progress, cancel, on_epoch, strategy=None) -> None:
    import keras

    if strategy is not None:
        # Variables must be created under the strategy: fine-tune a copy made in its scope, keep its weights.
        with strategy.scope():
            replica = keras.models.clone_model(clf)
            replica.set_weights(clf.get_weights())
            _fine_tune(replica, replica.get_layer(backbone.name), x_tr, y_tr, x_va, y_va, from_layer=from_layer,
                       optimizer=type(optimizer).from_config(optimizer.get_config()), epochs=epochs,
                       patience=patience, batch_size=batch_size, seed=seed, augment=augment,
                       class_weight=class_weight, label_smoothing=label_smoothing, phase=phase, history=history,
                       progress=progress, cancel=cancel, on_epoch=on_epoch)
        clf.set_weights(replica.get_weights())
        return
    prepare_fine_tune(backbone, from_layer)
    # The logit is the training target; the embedding output is for inference only.
    net = keras.Model(clf.inputs, clf.get_layer("logit").output)
    net.compile(optimizer=optimizer, loss=_loss(label_smoothing), metrics=_metrics())
    data = _augmented_images(x_tr, y_tr, batch_size, seed, augment)
    net.fit(data, validation_data=(x_va.astype(np.float32), y_va), epochs=epochs, verbose=0,
            batch_size=batch_size, class_weight=_class_weights(y_tr.astype(int), class_weight),
            callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                     restore_best_weights=True),
                       _hook(phase, len(data), epochs, history, progress, cancel, on_epoch)])
    backbone.trainable = False


def _forward(clf, x: np.ndarray, batch_size: int, cancel) -> tuple[np.ndarray, np.ndarray]:
    logits, embs = [], []
    for i in range(0, len(x), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        out = clf(x[i:i + batch_size].astype(np.float32), training=False)
        logits.append(np.asarray(out["logit"]).reshape(-1))
        embs.append(np.asarray(out["embedding"]))
    return np.concatenate(logits).astype(np.float64), np.concatenate(embs)


def _drop_failed(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = ~np.isnan(x).reshape(len(x), -1).any(axis=1)
    return x[ok], y[ok]


def train_model(dataset: Dataset, config: TrainConfig, progress: ProgressFn | None = None,
                cancel: CancelToken | None = None, on_epoch: Callable[[EpochLog], None] | None = None,
                parent: ModelCard | None = None) -> TrainResult:
    """Train, calibrate and document a model; writes nothing (see save_trained). Raises Cancelled."""
    import keras

    started = time.monotonic()
    strategy = None
    if config.strategy:
        from core.learning.distribute import make_strategy

        strategy = make_strategy(config.strategy)  # first: multi-worker TensorFlow must be set up before other work
    spec = arch_spec(config.arch)
    keras.utils.set_random_seed(config.seed)
    ds = _prepare_splits(dataset, config, progress, cancel)
    train_ds, val_ds = ds.subset("train"), ds.subset("val")
    history: list[EpochLog] = []

    fx = FeatureExtractor(spec.name, input_size=config.input_size, weights_dir=config.weights_dir,
                          base_model=config.base_model, cache_dir=config.cache_dir, batch_size=config.batch_size,
                          seed=config.seed, feature_layer=config.feature_layer)
    size = fx.input_size
    views = list(config.views or (["identity"] if config.preset == "study" else default_views(8)))
    if "identity" not in views:
        views = ["identity"] + views  # the OOD statistics need the plain view of every training image
    errors: list[str] = []
    x_tr = fx.embed(train_ds, views, progress, cancel, errors)
    x_va = fx.embed(val_ds, ["identity"], progress, cancel, errors)[:, 0]
    y_tr, y_va = train_ds.labels, val_ds.labels
    x_tr_all, x_va_all = x_tr, x_va
    x_tr, y_tr_f = _drop_failed(x_tr, y_tr)
    x_va, y_va_f = _drop_failed(x_va, y_va)

    study = config.preset == "study"
    head_lr = config.head_lr or (1e-4 if study else 1e-3)
    head_epochs = config.epochs or (100 if study else 200)
    patience = config.patience or 5
    phase1 = "phase1" if study else "head"
    train_views = x_tr if not study else x_tr[:, views.index("identity")]
    from core.models.backbones import build_classifier

    clf = build_classifier(spec.name, backbone=fx.backbone, dropout=config.dropout)
    if config.head == "logistic":
        from core.models.heads import DEFAULT_C, attach_head, fit_logistic

        report(progress, 0, 1, "fitting the logistic head", "head")
        head = fit_logistic(x_tr, y_tr_f, C=config.head_c or DEFAULT_C, class_weight=config.class_weight)
        val_logits = head.logits(x_va)
        clf = attach_head(clf, head, name=clf.name)
        hyper: dict[str, Any] = {"head": {"type": "logistic (core.models.heads)", "C": head.C,
                                          "features": "signed square root, standardised (folded into the weights)",
                                          "class_weight": config.class_weight, "views": views}}
    else:
        head, _, val_logits = train_head(
            train_views, y_tr_f, x_va, y_va_f, lr=head_lr, epochs=head_epochs, batch_size=config.batch_size,
            patience=patience, dropout=config.dropout, label_smoothing=config.label_smoothing,
            class_weight=config.class_weight, seed=config.seed, phase=phase1, history=history, progress=progress,
            cancel=cancel, on_epoch=on_epoch)
        clf.get_layer("logit").set_weights(head.get_layer("logit").get_weights())
        hyper = {"head": {"optimizer": "Adam", "lr": head_lr, "max_epochs": head_epochs,
                          "patience": patience, "epochs_run": sum(h.phase == phase1 for h in history),
                          "batch_size": config.batch_size, "dropout": config.dropout,
                          "label_smoothing": config.label_smoothing,
                          "class_weight": config.class_weight,
                          "views": views if not study else ["identity"]}}
    train_emb = x_tr[:, views.index("identity")]

    if config.preset in ("study", "full"):
        default_from = spec.fine_tune_from
        if config.base_model and config.base_model.startswith(TINY_PREFIX):
            default_from = len(fx.backbone.layers) // 2
        from_layer = config.fine_tune_from if config.fine_tune_from is not None else default_from
        ft_lr = config.fine_tune_lr or 1e-5
        ft_epochs = config.fine_tune_epochs or (20 if study else 10)
        ft_patience = config.fine_tune_patience or (1 if study else 3)
        optimizer = keras.optimizers.RMSprop(ft_lr) if study else keras.optimizers.Adam(ft_lr)
        xi_tr, yi_tr, e1 = _load_images(train_ds, size, progress, cancel, "train")
        xi_va, yi_va, e2 = _load_images(val_ds, size, progress, cancel, "val")
        errors += e1 + e2
        phase2 = "phase2" if study else "finetune"
        _fine_tune(clf, fx.backbone, xi_tr, yi_tr, xi_va, yi_va, from_layer=from_layer, optimizer=optimizer,
                   epochs=ft_epochs, patience=ft_patience, batch_size=config.batch_size, seed=config.seed,
                   augment="none" if study else config.fine_tune_augment, class_weight=config.class_weight, label_smoothing=config.label_smoothing,
                   phase=phase2, history=history, progress=progress, cancel=cancel, on_epoch=on_epoch,
                   strategy=strategy)
        report(progress, 0, 1, "scoring train and val images with the fine-tuned model", "calibrate")
        val_logits, val_emb = _forward(clf, xi_va, config.batch_size, cancel)
        _, train_emb = _forward(clf, xi_tr, config.batch_size, cancel)
        y_va_f = yi_va
        hyper["fine_tune"] = {"optimizer": "RMSprop" if study else "Adam", "lr": ft_lr, "max_epochs": ft_epochs,
                              "patience": ft_patience, "unfrozen_from_layer": from_layer,
                              "epochs_run": sum(h.phase == phase2 for h in history),
                              "augmentation": "none" if study else
                              f"core.learning.augment.random_pipeline ({config.fine_tune_augment})",
                              "batchnorm": "inference mode"}
        if strategy is not None:
            from core.learning.distribute import describe

            hyper["fine_tune"]["distribute"] = describe(strategy)
    else:
        val_emb = x_va
        _check_assembled(clf, val_ds, val_logits, size, cancel)

    if cancel is not None:
        cancel.raise_if_cancelled()
    report(progress, 0, 1, "calibrating on val", "calibrate")
    y_va_i = np.asarray(y_va_f, dtype=np.int64)
    temperature = fit_temperature(val_logits, y_va_i)
    p_val = apply_temperature(val_logits, temperature)
    target = min(1.0, config.min_sensitivity + config.sensitivity_margin)
    threshold, reason = choose_threshold(y_va_i, p_val, target)
    centre = float(logit(threshold))
    band = [float(sigmoid(centre - config.uncertain_logit_width)), float(sigmoid(centre + config.uncertain_logit_width))]
    ood = fit_ood(train_emb, n_components=config.ood_components)
    val_ood = ood.score(val_emb)
    ood_threshold = float(np.percentile(val_ood, config.ood_percentile))
    val_metrics = evaluate_probabilities(y_va_i, p_val, threshold, n_bootstrap=config.n_bootstrap, seed=config.seed)
    in_band = (p_val >= band[0]) & (p_val < band[1])
    val_metrics["uncalibrated_ece"] = expected_calibration_error(y_va_i, sigmoid(val_logits))
    val_metrics["flags"] = {"uncertain": int(in_band.sum()), "out_of_scope": int((val_ood > ood_threshold).sum()),
                            "n": int(len(p_val))}

    if config.transfer and config.preset == "quick":
        train_src = [s.source for s, ok in zip(train_ds.samples, _ok_rows(x_tr_all)) if ok]
        val_src = [s.source for s, ok in zip(val_ds.samples, _ok_rows(x_va_all)) if ok]
        transfer = transfer_estimate(x_tr, y_tr_f, train_src, x_va, y_va_i, val_src, views.index("identity"),
                                     config, progress, cancel)
    else:
        transfer = {}

    ok_tr, ok_va = _ok_rows(x_tr_all), _ok_rows(x_va_all)
    kept = [s for s, ok in zip(train_ds.samples, ok_tr) if ok] + [s for s, ok in zip(val_ds.samples, ok_va) if ok]
    from core.learning.features import embeddings_npz_bytes

    embeddings_npz = embeddings_npz_bytes(
        np.concatenate([x_tr[:, views.index("identity")], x_va]) if config.preset == "quick"
        else np.concatenate([train_emb, val_emb]),
        [s.y for s in kept], [s.source for s in kept], [s.split for s in kept], [s.file_hash() for s in kept])

    elapsed = time.monotonic() - started
    card = _make_card(config, spec, size, ds, fx, hyper, temperature, threshold, reason, band, ood_threshold,
                      val_metrics, history, errors, elapsed, parent)
    if transfer:
        card.metrics["transfer"] = to_jsonable(transfer)
    result = TrainResult(clf, card, ood, history, val_metrics, head=head, val_logits=val_logits,
                         val_labels=y_va_i, extractor=fx, unreadable=list(errors), embeddings_npz=embeddings_npz)
    if config.score_test:
        score_test_split(result, ds, n_bootstrap=config.n_bootstrap, progress=progress, cancel=cancel)
    report(progress, 1, 1, "done", "done")
    return result


def score_test_split(result: TrainResult, dataset: Dataset, n_bootstrap: int = 1000,
                     progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> dict | None:
    """Score the trained model once on the test split and record it in the card (`metrics.test`).

    Only when `dataset` has test images of both classes; every choice was already made on val, so test
    is reported, never used. Returns the full report (with per-image predictions) or None.
    """
    test = dataset.subset("test")
    if not len(test) or len({s.label for s in test.samples}) < 2:
        return None
    report(progress, 0, 1, "scoring the test split (reported only)", "test")
    full = evaluate_bundle(Bundle(result.card, result.model, result.ood), test, progress=progress, cancel=cancel,
                           n_bootstrap=n_bootstrap)
    result.card.metrics["test"] = to_jsonable({k: v for k, v in full.items() if k not in ("predictions", "errors")})
    result.test_report = full
    result.unreadable.extend(e["error"] for e in full.get("errors", []))
    return full


def _ok_rows(x: np.ndarray) -> np.ndarray:
    """Rows _drop_failed keeps (images that decoded)."""
    return ~np.isnan(x.reshape(len(x), -1)).any(axis=1)


def transfer_estimate(x_tr: np.ndarray, y_tr: np.ndarray, src_tr: Sequence[str], x_va: np.ndarray,
                      y_va: np.ndarray, src_va: Sequence[str], identity: int, config: TrainConfig,
                      progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> dict:
    """Leave-one-collection-out: how the recipe transfers to photos from a collection it never saw.

    For each source with both classes in its train and val images: a head trained on that source's
    train embeddings (same views and settings as the bundle), its temperature and threshold set on
    that source's val, then scored on the train and val photos of every other source (identity view).
    Test photos are not used. Empty when the data holds fewer than two such sources (e.g. a reviewed
    folder from one clinic).
    """
    src_tr, src_va = np.asarray(src_tr), np.asarray(src_va)
    y_tr, y_va = np.asarray(y_tr, dtype=np.int64), np.asarray(y_va, dtype=np.int64)
    sources = sorted(set(src_tr) | set(src_va))
    out: dict[str, Any] = {}
    target = min(1.0, config.min_sensitivity + config.sensitivity_margin)
    for src in sources:
        a_tr, a_va = src_tr == src, src_va == src
        b_x = np.concatenate([x_tr[~a_tr, identity], x_va[~a_va]])
        b_y = np.concatenate([y_tr[~a_tr], y_va[~a_va]])
        if any(len(set(v)) < 2 for v in (y_tr[a_tr], y_va[a_va], b_y)):
            continue
        if cancel is not None:
            cancel.raise_if_cancelled()
        report(progress, 0, 1, f"transfer estimate: head on {src} only", "transfer")
        if getattr(config, "head", "dense") == "logistic":
            from core.models.heads import DEFAULT_C, fit_logistic

            lin = fit_logistic(x_tr[a_tr], y_tr[a_tr], C=config.head_c or DEFAULT_C, class_weight=config.class_weight)
            z_va, score_b = lin.logits(x_va[a_va]), lin.logits
        else:
            head, _, z_va = train_head(
                x_tr[a_tr], y_tr[a_tr], x_va[a_va], y_va[a_va], lr=config.head_lr or 1e-3,
                epochs=config.epochs or 200, batch_size=config.batch_size, patience=config.patience or 5,
                dropout=config.dropout, label_smoothing=config.label_smoothing, class_weight=config.class_weight,
                seed=config.seed, phase="transfer", cancel=cancel)

            def score_b(x, head=head):
                return np.asarray(head(x.astype(np.float32), training=False), dtype=np.float64).reshape(-1)
        t = fit_temperature(z_va, y_va[a_va])
        threshold, _ = choose_threshold(y_va[a_va], apply_temperature(z_va, t), target)
        z_b = score_b(b_x)
        m = evaluate_probabilities(b_y, apply_temperature(z_b, t), threshold, n_bootstrap=0)
        others = ", ".join(o for o in sources if o != src)
        out[f"{src} -> {others}"] = {k: m[k] for k in ("roc_auc", "sensitivity", "specificity", "accuracy",
                                                         "ece", "n", "n_mpox")}
    if out:
        out["method"] = ("leave-one-collection-out: head trained on one source's train photos, temperature and "
                         "threshold on its val photos, scored on the train and val photos of the other sources "
                         "(test unused). An estimate of how the model behaves on photos from elsewhere.")
    return out


def _check_assembled(clf, val_ds: Dataset, head_logits: np.ndarray, size: int, cancel) -> None:
    """The end-to-end model must reproduce the head-on-cached-features logits (same preprocessing)."""
    n = min(4, len(val_ds.samples))
    try:
        batch = np.stack([load_model_input(s.path, size) for s in val_ds.samples[:n]])
    except Exception:
        return  # an unreadable val image was already reported; nothing to compare
    logits, _ = _forward(clf, batch, n, cancel)
    if not np.allclose(logits, head_logits[:n], atol=1e-2 + 1e-2 * np.abs(head_logits[:n]).max()):
        raise RuntimeError(
            f"assembled model disagrees with the head on cached features ({logits} vs {head_logits[:n]}); "
            "the feature cache may be stale: clear it (see core.learning.features.default_cache_dir) and retrain"
        )


def _make_card(config: TrainConfig, spec, size: int, ds: Dataset, fx: FeatureExtractor, hyper: dict,
               temperature: float, threshold: float, reason: str, band: list[float], ood_threshold: float,
               val_metrics: dict, history: list[EpochLog], errors: list[str], elapsed: float,
               parent: ModelCard | None) -> ModelCard:
    import keras
    import tensorflow as tf

    from core.models.heads import DEFAULT_C

    now = datetime.now(timezone.utc)
    summary = ds.summary()
    summary["root"] = portable_path(ds.root) if ds.root else None
    summary["unreadable_files"] = errors[:50]
    summary["unreadable_count"] = len(errors)
    if ds.warnings:  # folders that could not be read, links leading outside the data (not followed)
        summary["left_out_while_reading"] = list(ds.warnings[:50])
    summary.setdefault("split", {})
    if not summary["split"]:
        summary["split"] = {"protocol": "given"}
    if summary["split"].get("protocol") not in ("manifest", "folder", "given"):
        summary["split"].setdefault("seed", config.seed)
    summary["test_used_in_training"] = False
    summary["manifest_sha256"] = ds.fingerprint()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    training = {
        "preset": config.preset,
        "seed": config.seed,
        # head_c as used: None in the config means the default C, which a reader should see as its value.
        "config": {**{k: v for k, v in asdict(config).items() if k not in ("weights_dir", "cache_dir")},
                   "head_c": (config.head_c or DEFAULT_C) if config.head == "logistic" else config.head_c},
        "hyperparameters": hyper,
        "backbone": {"weights": "random tiny test backbone" if (config.base_model or "").startswith(TINY_PREFIX)
                     else "ImageNet (Keras applications, local file)", "fingerprint_sha256": fx.fingerprint,
                     "feature_layer": fx.feature_layer, "layers": len(fx.backbone.layers)},
        "history": [asdict(h) for h in history],
        "calibration": "temperature scaling fitted on val (minimise NLL)",
        "uncertain_band_rule": f"calibrated logit within +-{config.uncertain_logit_width} of the threshold's",
        "ood_rule": f"{config.ood_percentile:g}th percentile of val out-of-scope scores "
                    f"(whitened distance to train embeddings, {config.ood_components} components)",
        "time_s": round(elapsed, 1),
        "device": gpus[0] if gpus else f"CPU ({os.cpu_count()} cores)",
        "host": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    metrics = to_jsonable({"val": val_metrics, "selection": "all choices made on val; test never used in training"})
    return ModelCard(
        name=config.name or spec.name,
        version=config.version or now.strftime("%Y.%m.%d-%H%M"),
        architecture=spec.name,
        input_size=size,
        preprocessing=PREPROCESSING_DESCRIPTION,
        threshold=float(threshold),
        threshold_reason=reason,
        temperature=float(temperature),
        uncertain_band=band,
        ood_threshold=ood_threshold,
        metrics=metrics,
        training_data=to_jsonable(summary),
        training=to_jsonable(training),
        limitations=list(LIMITATIONS),
        parent=({"name": parent.name, "version": parent.version, "sha256": parent.model_sha256}
                if parent is not None else None),
    )


def retrain_audit_details(card: ModelCard, out_dir: str | os.PathLike) -> dict:
    """What the audit trail records for a retrain: data manifest hash, split protocol and seed, parent, result."""
    split = card.training_data.get("split", {}) if isinstance(card.training_data, dict) else {}
    return {
        "model": card.name, "version": card.version, "model_sha256": card.model_sha256, "out": str(out_dir),
        "manifest_sha256": card.training_data.get("manifest_sha256", ""),
        "split_protocol": split.get("protocol", ""), "split_seed": split.get("seed", card.training.get("seed")),
        "parent": card.parent, "preset": card.training.get("preset", ""),
    }


def save_trained(result: TrainResult, out_dir: str | os.PathLike | None = None, *, replace: bool = False) -> Path:
    """Write the trained bundle atomically and return its folder (also set as `result.bundle_path`).

    `out_dir` None: a new folder `<name>-<version>` in the user's model folder (core.models.bundle.user_models_dir),
    never the install's models/. An existing `out_dir` raises core.models.bundle.BundleExistsError unless
    `replace=True`; the replaced bundle is then kept whole at `result.replaced_path` (nothing is deleted,
    an attached .tflite included). A shipped release is never replaced.
    """
    out = Path(out_dir).expanduser() if out_dir else new_bundle_dir(result.card.name, result.card.version)
    keep = replaced_bundle_dir(out) if replace and out.exists() else None
    from core.learning.features import EMBEDDINGS_FILE

    # The bundle carries its train/val embeddings (embeddings.npz), so adapt and the shift test need no photos.
    extra = {EMBEDDINGS_FILE: result.embeddings_npz} if result.embeddings_npz else None
    path = save_bundle(result.model, result.card, out, ood=result.ood, replace=replace, keep_previous_as=keep,
                       extra_files=extra)
    result.bundle_path = path
    result.replaced_path = keep if keep is not None and keep.exists() else None
    return path


def head_logits(result: TrainResult, embeddings: np.ndarray) -> np.ndarray:
    """Raw logits of the trained head for cached embeddings (N, D) or (N, V, D) -> (N,) or (N, V)."""
    x = np.asarray(embeddings, dtype=np.float32)
    shape = x.shape[:-1]
    out = np.asarray(result.model.get_layer("logit")(x.reshape(-1, x.shape[-1])), dtype=np.float64)
    return out.reshape(shape)


def reuse_views(views: Sequence[str] | None) -> list[str]:
    """The views train_model will use for a given setting (identity always included)."""
    v = list(views or default_views(8))
    return v if "identity" in v else ["identity"] + v


# -- the combined model's head (core.models.combined loads and runs it) ---------------------------------------

def train_combined(dataset, component_dirs: Sequence[str | os.PathLike], *, views: Sequence[str] = ("identity",),
                   C: float | None = None, min_sensitivity: float = 0.90, sensitivity_margin: float = 0.0,
                   name: str = "combined", version: str | None = None, cache_dir=None, weights_dir=None,
                   n_bootstrap: int = 1000, seed: int = 0, progress=None, cancel=None) -> dict[str, Any]:
    """Fit a combined head on the cached embeddings of `dataset`'s train split (val: calibration, threshold).

    Each component's embedding is the cached frozen-backbone embedding at that component's feature
    layer (core.learning.features), i.e. what the component bundle's model reports as its embedding.
    Returns {"model", "card", "ood", "embeddings_npz", "components", "val_logits", "val_labels"}.
    """
    from core.models.bundle import BundleError, read_card
    from core.models.combined import KIND, component_ref
    from core.learning.features import embeddings_npz_bytes
    from core.models.heads import DEFAULT_C, embedding_head_model, fit_logistic

    started = time.monotonic()
    C = float(C or DEFAULT_C)
    views = list(views)
    if "identity" not in views:
        views = ["identity"] + views
    ident = views.index("identity")
    train_ds, val_ds = dataset.subset("train"), dataset.subset("val")
    if not len(train_ds) or not len(val_ds):
        raise DatasetError("the combined head needs a dataset with train and val splits")
    cards = [read_card(d) for d in component_dirs]
    xs_tr, xs_va, refs, fps = [], [], [], []
    for d, card in zip(component_dirs, cards):
        layer = card.training.get("backbone", {}).get("feature_layer")
        fx = FeatureExtractor(card.architecture, input_size=int(card.input_size), weights_dir=weights_dir,
                              cache_dir=cache_dir, feature_layer=layer)
        fp = card.training.get("backbone", {}).get("fingerprint_sha256")
        if fp and fp != fx.fingerprint:
            raise BundleError(f"{d}: its backbone fingerprint differs from the local weights; cannot reuse embeddings")
        xs_tr.append(fx.embed(train_ds, views, progress, cancel))
        xs_va.append(fx.embed(val_ds, ["identity"], progress, cancel)[:, 0])
        refs.append(component_ref(d, card, fx.dim))
        fps.append(fx.fingerprint)
    x_tr, x_va = np.concatenate(xs_tr, axis=-1), np.concatenate(xs_va, axis=-1)
    ok_tr = ~np.isnan(x_tr.reshape(len(x_tr), -1)).any(axis=1)
    ok_va = ~np.isnan(x_va).any(axis=1)
    x_tr, x_va = x_tr[ok_tr], x_va[ok_va]
    s_tr = [s for s, ok in zip(train_ds.samples, ok_tr) if ok]
    s_va = [s for s, ok in zip(val_ds.samples, ok_va) if ok]
    y_tr, y_va = np.array([s.y for s in s_tr]), np.array([s.y for s in s_va])

    head = fit_logistic(x_tr, y_tr, C=C)
    z_va = head.logits(x_va)
    temperature = fit_temperature(z_va, y_va)
    p_va = apply_temperature(z_va, temperature)
    threshold, reason = choose_threshold(y_va, p_va, min(1.0, min_sensitivity + sensitivity_margin))
    centre = float(logit(threshold))
    band = [float(sigmoid(centre - 1.0)), float(sigmoid(centre + 1.0))]
    train_emb = x_tr[:, ident]
    ood = fit_ood(train_emb, n_components=32)
    ood_threshold = float(np.percentile(ood.score(x_va), 99.0))
    val_metrics = evaluate_probabilities(y_va, p_va, threshold, n_bootstrap=n_bootstrap, seed=seed)
    cfg = TrainConfig("mobilenetv2", head="logistic", head_c=C, min_sensitivity=min_sensitivity,
                      sensitivity_margin=sensitivity_margin, seed=seed)
    transfer = transfer_estimate(x_tr, y_tr, [s.source for s in s_tr], x_va, y_va, [s.source for s in s_va], ident,
                                 cfg, progress, cancel)
    npz = embeddings_npz_bytes(np.concatenate([train_emb, x_va]), np.concatenate([y_tr, y_va]),
                               [s.source for s in s_tr + s_va], [s.split for s in s_tr + s_va],
                               [s.file_hash() for s in s_tr + s_va])
    summary = dataset.summary()
    summary["test_used_in_training"] = False
    summary["manifest_sha256"] = dataset.fingerprint()
    card = ModelCard(
        name=name, version=version or "0.0.0", architecture=KIND,
        input_size=max(int(c.input_size) for c in cards),
        preprocessing=PREPROCESSING_DESCRIPTION + "; then resized again (same function) to each component's "
        "input size inside the combined bundle",
        threshold=float(threshold), threshold_reason=reason, temperature=float(temperature), uncertain_band=band,
        ood_threshold=ood_threshold,
        metrics=to_jsonable({"val": val_metrics, "transfer": transfer,
                             "selection": "all choices made on val and leave-one-collection-out; test never used "
                                          "in training"}),
        training_data=to_jsonable(summary),
        training=to_jsonable({
            "preset": "combined", "seed": seed,
            "hyperparameters": {"head": {"type": "logistic (core.models.heads)", "C": C, "views": views,
                                         "features": "concatenated component embeddings, signed square root, "
                                                     "standardised (folded into the weights)",
                                         "class_weight": True}},
            "components": refs, "backbone_fingerprints": fps,
            "calibration": "temperature scaling fitted on val (minimise NLL)",
            "uncertain_band_rule": "calibrated logit within +-1 of the threshold's",
            "ood_rule": "99th percentile of val out-of-scope scores (whitened distance to the concatenated train "
                        "embeddings, 32 components)",
            "time_s": round(time.monotonic() - started, 1)}),
        limitations=list(LIMITATIONS),
    )
    return {"model": embedding_head_model(x_tr.shape[-1], head), "card": card, "ood": ood, "embeddings_npz": npz,
            "components": refs, "val_logits": z_va, "val_labels": y_va, "val_samples": s_va}
