"""Readable names for model-card fields, one table for every face (the PDF report, the app's model card).

Qt-free: `core.reports` and `desktop_app/about.py` both read it, so a field has one name everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

NAMES: dict[str, str] = {
    "name": "Name", "version": "Version", "architecture": "Architecture", "input_size": "Input size (pixels)",
    "class_names": "Classes", "format_version": "Card format version", "created": "Created",
    "app_version": "Made with app version", "parent": "Fine-tuned from", "model_sha256": "Model SHA-256",
    "card_sha256": "Card SHA-256", "files": "Files and their SHA-256", "sha256": "SHA-256",
    "preprocessing": "Preprocessing", "temperature": "Calibration temperature", "threshold": "Threshold",
    "threshold_reason": "Why this threshold", "uncertain_band": "Uncertain band (p(mpox) from, to)",
    "ood_threshold": "Out-of-scope limit", "intended_use": "Intended use", "limitations": "Limits",
    "val": "Validation photos", "test": "Test photos", "train": "Training photos",
    "transfer": "Transfer to another collection", "selection": "How settings were chosen", "method": "Method",
    "n": "Photos", "n_mpox": "Mpox photos", "accuracy": "Accuracy", "precision": "Precision (PPV)",
    "sensitivity": "Sensitivity", "recall": "Recall (= sensitivity)", "specificity": "Specificity",
    "f1": "F1 score", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "brier": "Brier score",
    "ece": "Calibration error (ECE)", "uncalibrated_ece": "Calibration error before temperature scaling",
    "auc": "ROC-AUC", "flags": "Flags raised", "uncertain": "Uncertain", "out_of_scope": "Out of scope",
    "none": "No flag", "unflagged": "Photos with no flag", "per_source": "By collection",
    "per_fine_label": "By condition", "model": "Model measured", "mpox": "mpox", "not_mpox": "not mpox",
    "n_images": "Photos", "n_groups": "Independent groups (a group's photos stay in one split)",
    "n_train": "Training photos", "datasets": "Data sets",
    "counts": "Photos per split and class", "fine_labels": "Photos per split and condition",
    "sources": "Photos per split and collection", "split": "How photos were split", "protocol": "Protocol",
    "manifest": "Manifest", "root": "Data folder (as given to training)", "unreadable_files": "Unreadable files",
    "test_used_in_training": "Test photos used in training", "manifest_sha256": "Manifest SHA-256",
    "preset": "Preset", "seed": "Random seed", "config": "Settings", "hyperparameters": "Hyperparameters",
    "head": "Classifier head", "fine_tune": "Fine-tuning", "backbone": "Backbone", "history": "Training history",
    "calibration": "Calibration", "uncertain_band_rule": "Uncertain band rule", "ood_rule": "Out-of-scope rule",
    "time_s": "Training time (seconds)", "device": "Device", "host": "Host", "tensorflow": "TensorFlow",
    "keras": "Keras", "extra": "Other fields", "runtime": "Runtime export", "format": "Format", "file": "File",
    "check_images": "Checked on", "agreement": "Agreement with the Keras model", "tolerance": "Tolerance",
    "images": "Photos", "finite": "All outputs finite", "weights": "Weights",
    "fingerprint_sha256": "Fingerprint SHA-256", "feature_layer": "Feature layer", "layers": "Layers",
    "epochs_run": "Epochs run", "max_epochs": "Most epochs", "patience": "Patience (epochs)",
    "lr": "Learning rate", "batch_size": "Batch size", "dropout": "Dropout", "label_smoothing": "Label smoothing",
    "class_weight": "Class weights", "views": "Views per photo", "optimizer": "Optimizer", "arch": "Architecture",
    "n_bootstrap": "Bootstrap resamples", "min_sensitivity": "Minimum sensitivity (on validation)",
    "ci95": "95% intervals", "confusion": "Confusion counts", "matrix": "Confusion matrix", "C": "Regularisation C",
    "head_c": "Classifier head C", "tp": "mpox photos found", "fn": "mpox photos missed", "fp": "false alarms",
    "tn": "other photos cleared",
}
_TOKENS = {"lr": "learning rate", "ood": "out-of-scope", "sha256": "SHA-256", "abs": "absolute", "diff": "difference",
           "p": "p(mpox)", "n": "number of", "min": "minimum", "max": "maximum", "arch": "architecture",
           "auc": "AUC", "roc": "ROC", "ece": "ECE", "id": "ID", "val": "validation", "s": "(s)"}
# Rates and probabilities read best with three decimals; other floats keep four significant digits.
METRIC_ORDER = ("accuracy", "precision", "sensitivity", "recall", "specificity", "f1", "roc_auc", "pr_auc",
                "brier", "ece", "uncalibrated_ece")
_THREE_DECIMALS = set(METRIC_ORDER) | {"threshold", "uncertain_band", "auc", "temperature"}


def readable_key(key: Any, value: Any = None) -> str:
    """A card field's name in words ("roc_auc" -> "ROC-AUC", "fine_tune_lr" -> "Fine tune learning rate")."""
    key = str(key)
    if key == "transfer" and isinstance(value, bool):  # a training setting: whether to measure transfer
        return "Measure transfer to another collection"
    if key in NAMES:
        return NAMES[key]
    if not re.fullmatch(r"[a-z0-9_]+", key):
        return key  # a name from the data ("MSID -> MSLD v1", "MSID/mpox", "model.keras"): keep as written
    text = " ".join(_TOKENS.get(t, t) for t in key.split("_") if t)
    return text[:1].upper() + text[1:]


def readable_value(value: Any, key: Any = "") -> str:
    """A card value in words: yes/no, none, thousands separators, 3 decimals for rates."""
    if value is None:
        return "not set"
    if isinstance(value, str) and not value.strip():
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if str(key) not in ("seed", "format_version") else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "not measured"
        return f"{value:.3f}" if str(key) in _THREE_DECIMALS else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(readable_value(v, key) for v in value) if value else "none"
    return str(value)
