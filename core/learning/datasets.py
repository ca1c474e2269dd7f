"""Labelled photo collections for training and evaluation, and group-aware splits.

A Dataset is a list of Samples: a file, its binary label (`mpox` / `not_mpox`), a fine label
(`chickenpox`, `measles`, ...), a group and a source. Images of one group (the same patient, or
the same photograph found twice) always land in the same split, so no patient or photo crosses
train/val/test. Groups come from a manifest's `group` column, else from a patient id in the file
name (`M01_02`, `NM07_01`, `MKP_17_01`), else one group per file; `split_dataset` then merges
groups that hold perceptual-hash duplicates before splitting.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from core.photos.images import discover, file_sha256, load_rgb
from core.models.portable import portable_path
from core.progress import CancelToken, ProgressFn, report
from core.records import LABEL_MPOX, LABEL_NOT_MPOX

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", "holdout": "test"}

# Folder / label names meaning mpox, compared after lower-casing and dropping non-letters/digits,
# so `Monkey_Pox`, `monkey-pox`, `MPOX` and `Monkeypox` all match.
MPOX_ALIASES = frozenset({"mpox", "monkeypox", "mpx", "monkeypoxvirus", "mpxv", "1", "positive"})
NOT_MPOX_ALIASES = frozenset({"notmpox", "nonmpox", "other", "others", "nonmonkeypox", "notmonkeypox",
                              "othersmonkeypox", "0", "negative"})
MPOX_FINE_LABEL = "monkeypox"

# Patient ids in file names: letters, a number, then an image number: M01_02, NM07_01, MKP_17_01.
PATIENT_RE = re.compile(r"^(?P<prefix>[A-Za-z]{1,4})[_-]?(?P<patient>\d{1,4})[_-](?P<image>\d{1,4})(?:[_\-. ].*)?$")

# Protocol names: "group" (group-aware, label-stratified), "study" (image-level random 60/10/30,
# the original study's split, for comparison only), "manifest" (keep the manifest's own split).
PROTOCOLS = ("group", "study", "manifest")
DEFAULT_FRACTIONS = {"group": (0.7, 0.15, 0.15), "study": (0.6, 0.1, 0.3)}


class DatasetError(ValueError):
    """A dataset folder or manifest cannot be used; the message names the file and what to fix."""


@dataclass
class Sample:
    path: Path
    label: str          # "mpox" | "not_mpox"
    fine_label: str     # e.g. "monkeypox", "chickenpox", "measles", "normal"
    group: str          # samples sharing a group never cross splits
    source: str         # dataset / collection name
    split: str = ""     # "train" | "val" | "test" | "" (unsplit)
    sha256: str = ""    # file content hash, filled lazily by file_hash()

    @property
    def y(self) -> int:
        return 1 if self.label == LABEL_MPOX else 0

    def file_hash(self) -> str:
        if not self.sha256:
            self.sha256 = file_sha256(self.path)
        return self.sha256


@dataclass
class Dataset:
    samples: list[Sample]
    root: Path | None = None
    # How the split was made (protocol, seed, fractions, duplicates merged); recorded in model cards.
    split_info: dict = field(default_factory=dict)
    # What reading the folder left out: unreadable folders, links leading outside a class folder (not
    # followed, as everywhere in core.photos.images.discover). One user-facing line each, for the console.
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    @property
    def labels(self) -> np.ndarray:
        """Binary targets, 1 = mpox."""
        return np.array([s.y for s in self.samples], dtype=np.int64)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> label -> number of images (split "" = unsplit)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.samples:
            per = out.setdefault(s.split, {LABEL_MPOX: 0, LABEL_NOT_MPOX: 0})
            per[s.label] = per.get(s.label, 0) + 1
        return out

    def subset(self, split: str) -> "Dataset":
        return Dataset([s for s in self.samples if s.split == split], self.root, dict(self.split_info),
                       list(self.warnings))

    def has_splits(self) -> bool:
        return any(s.split in SPLITS for s in self.samples)

    def fingerprint(self) -> str:
        """SHA-256 of the data manifest (split, label and content hash of every image): what a retrain saw."""
        import hashlib

        lines = sorted(f"{s.split}\t{s.label}\t{s.file_hash()}" for s in self.samples)
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()

    def summary(self) -> dict:
        """Counts per split, class, fine label and source, for model cards and reports."""
        by_fine: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        by_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for s in self.samples:
            by_fine[s.split or "all"][s.fine_label] += 1
            by_source[s.split or "all"][f"{s.source}/{s.label}"] += 1
        return {
            "n_images": len(self.samples),
            "n_groups": len({s.group for s in self.samples}),
            "counts": self.counts(),
            "fine_labels": {k: dict(sorted(v.items())) for k, v in sorted(by_fine.items())},
            "sources": {k: dict(sorted(v.items())) for k, v in sorted(by_source.items())},
            "split": dict(self.split_info),
        }


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def binary_label(name: str) -> str:
    """`mpox` for any mpox alias (mpox, monkeypox, Monkey_Pox, ...), else `not_mpox`."""
    return LABEL_MPOX if _norm(name) in MPOX_ALIASES else LABEL_NOT_MPOX


def fine_label_for(name: str) -> str:
    """A stable fine label: mpox aliases become `monkeypox`, others are lower-cased with underscores."""
    if _norm(name) in MPOX_ALIASES:
        return MPOX_FINE_LABEL
    text = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return text or "unknown"


def patient_group(path: str | os.PathLike, source: str = "") -> str | None:
    """Group id from a patient id in the file name (`M01_02` -> patient M01), or None if there is none."""
    m = PATIENT_RE.match(Path(path).stem)
    if not m:
        return None
    # Patient numbers are per collection, so the same id in two sources names two people.
    return f"patient:{source}:{m.group('prefix').upper()}{int(m.group('patient')):03d}"


def _file_group(path: Path, root: Path | None) -> str:
    try:
        rel = path.relative_to(root) if root else path
    except ValueError:
        rel = path
    return f"file:{rel.as_posix()}"


def _make_sample(path: Path, class_name: str, source: str, root: Path | None, split: str = "") -> Sample:
    group = patient_group(path, source) or _file_group(path, root)
    return Sample(Path(path), binary_label(class_name), fine_label_for(class_name), group, source, split)


def load_folder_dataset(folder: str | os.PathLike) -> Dataset:
    """A folder of class subfolders (images found recursively inside each class).

    Mpox aliases (`mpox`, `monkeypox`, `Monkey_Pox`, ...) are mpox; every other class is non-mpox
    with its folder name kept as the fine label. A top level of `train/`, `val/`, `test/` folders,
    each holding class subfolders, is read as a ready-made split.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give a folder with one subfolder per class (e.g. mpox/, other/)")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    source = root.name
    samples: list[Sample] = []
    warnings: list[str] = []

    def images_in(cd: Path) -> list[Path]:
        found = discover(cd)
        warnings.extend(found.errors)
        warnings.extend(f"{link}: symbolic link leading outside {cd} not followed" for link in found.skipped_links)
        return found.paths

    if subdirs and len(split_dirs) == len(subdirs):
        for sd in split_dirs:
            split = SPLIT_ALIASES[sd.name.lower()]
            for cd in sorted(d for d in sd.iterdir() if d.is_dir() and not d.name.startswith(".")):
                samples += [_make_sample(p, cd.name, source, root, split) for p in images_in(cd)]
    else:
        for cd in subdirs:
            samples += [_make_sample(p, cd.name, source, root) for p in images_in(cd)]
    if not samples:
        raise DatasetError(
            f"{root}: no images found in class subfolders; expected e.g. {root}/mpox/*.jpg and {root}/other/*.jpg"
        )
    labels = {s.label for s in samples}
    if labels != {LABEL_MPOX, LABEL_NOT_MPOX}:
        names = ", ".join(d.name for d in subdirs) or "none"
        raise DatasetError(
            f"{root}: need both an mpox class (a folder named mpox or monkeypox) and at least one other class; "
            f"found subfolders: {names}"
        )
    return Dataset(samples, root, {"protocol": "folder"} if any(s.split for s in samples) else {}, warnings)


def load_manifest_dataset(csv_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Dataset:
    """A manifest CSV: `path` plus `label_binary` (or `label`), optional `label_fine`, `group`,
    `patient_id`, `dataset`, `sha256` and `split`. Paths are relative to `root` (default: the CSV's folder).

    The manifest's own `split` column is kept (it is the fixed split every reported figure uses).
    """
    csv_path = Path(csv_path).expanduser()
    base = Path(root).expanduser() if root else csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read manifest ({exc.strerror or exc})") from None
    if not rows:
        raise DatasetError(f"{csv_path}: manifest has no rows")
    cols = set(rows[0])
    label_col = next((c for c in ("label_binary", "label", "class") if c in cols), None)
    if "path" not in cols or label_col is None:
        raise DatasetError(
            f"{csv_path}: manifest needs a `path` column and a `label_binary` (or `label`) column; "
            f"found: {', '.join(sorted(cols))}"
        )
    samples: list[Sample] = []
    missing: list[str] = []
    for i, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        if not rel:
            raise DatasetError(f"{csv_path}: line {i}: empty path")
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        if not path.is_file():
            missing.append(rel)
            continue
        raw_label = (row.get(label_col) or "").strip()
        if not raw_label:
            raise DatasetError(f"{csv_path}: line {i}: empty {label_col} for {rel}")
        label = binary_label(raw_label)
        fine = (row.get("label_fine") or "").strip()
        fine = fine_label_for(fine) if fine else (MPOX_FINE_LABEL if label == LABEL_MPOX else fine_label_for(raw_label))
        source = (row.get("dataset") or row.get("source") or csv_path.stem).strip()
        group = (row.get("group") or "").strip()
        if group:
            group = f"group:{group}"
        elif (row.get("patient_id") or "").strip():
            group = f"patient:{source}:{row['patient_id'].strip()}"
        else:
            group = patient_group(path, source) or f"file:{rel}"
        split_raw = (row.get("split") or "").strip().lower()
        split = SPLIT_ALIASES.get(split_raw, "")
        if split_raw and not split:
            raise DatasetError(f"{csv_path}: line {i}: unknown split {split_raw!r}; use train, val or test")
        samples.append(Sample(path, label, fine, group, source, split, (row.get("sha256") or "").strip().lower()))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"{csv_path}: {len(missing)} listed image(s) not found under {base}: {shown}. "
                           "Fix the paths or pass the image folder as root.")
    # The card records the manifest by digest (Dataset.fingerprint) and a repository-relative path.
    info = {"protocol": "manifest", "manifest": portable_path(csv_path)} if any(s.split for s in samples) else {}
    return Dataset(samples, base, info)


def load_dataset(source: str | os.PathLike) -> Dataset:
    """A manifest CSV or a folder of class subfolders, whichever `source` is."""
    p = Path(source).expanduser()
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return load_manifest_dataset(p)
    if p.is_dir() and (p / "manifest.csv").is_file() and not any(
            d.is_dir() and binary_label(d.name) == LABEL_MPOX for d in p.iterdir()):
        return load_manifest_dataset(p / "manifest.csv")
    if p.is_dir():
        return load_folder_dataset(p)
    raise DatasetError(f"{p}: not found; give a folder of class subfolders or a manifest CSV")


def dataset_from_labels(items: Iterable[tuple[str | os.PathLike, str]], source: str = "reviewed") -> Dataset:
    """A dataset from (path, label) pairs, e.g. the labels a reviewer confirmed in the app.

    A label may be binary (`mpox` / `not_mpox`) or a fine label (`chickenpox`, ...: non-mpox).
    """
    samples = []
    for path, label in items:
        p = Path(path)
        # Generic non-mpox labels (not_mpox, other, ...) keep the fine label "other".
        fine = "other" if _norm(label) in NOT_MPOX_ALIASES else fine_label_for(label)
        samples.append(Sample(p, binary_label(label), fine, patient_group(p, source) or f"file:{p.as_posix()}",
                              source))
    return Dataset(samples, None)


# ---------------------------------------------------------------------------------------------
# Duplicates


def perceptual_hashes(ds: Dataset, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None) -> np.ndarray:
    """64-bit pHash (ImageHash) of every sample as uint64; unreadable images get a unique sentinel."""
    import imagehash
    from PIL import Image

    out = np.zeros(len(ds.samples), dtype=np.uint64)
    for i, s in enumerate(ds.samples):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            # pHash works on a 32x32 reduction, so a modest decode size is exact enough and fast.
            rgb = load_rgb(s.path, max_side=256)
            bits = imagehash.phash(Image.fromarray(rgb)).hash.flatten()
            out[i] = np.uint64(int("".join("1" if b else "0" for b in bits), 2))
        except Exception:  # an unreadable image is nobody's duplicate; training reports it later
            out[i] = np.uint64(0xFFFFFFFFFFFFFFFF - i)
        if i % 50 == 0 or i == len(ds.samples) - 1:
            report(progress, i + 1, len(ds.samples), "hashing images for duplicates", "duplicates")
    return out


def duplicate_pairs(hashes: np.ndarray, max_distance: int = 4) -> list[tuple[int, int]]:
    """Index pairs whose perceptual hashes differ in at most `max_distance` of 64 bits."""
    h = np.asarray(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    for i in range(len(h) - 1):
        d = np.bitwise_count(h[i + 1:] ^ h[i])
        for j in np.nonzero(d <= max_distance)[0]:
            pairs.append((i, i + 1 + int(j)))
    return pairs


def merge_duplicate_groups(ds: Dataset, max_distance: int = 4, progress: ProgressFn | None = None,
                           cancel: CancelToken | None = None) -> tuple[Dataset, int]:
    """Put perceptual-hash duplicates (and exact copies) into one group; returns (dataset, pairs merged)."""
    hashes = perceptual_hashes(ds, progress, cancel)
    pairs = duplicate_pairs(hashes, max_distance)
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            parent[g] = parent.get(parent[g], parent[g])
            g = parent[g]
        return g

    for i, j in pairs:
        a, b = find(ds.samples[i].group), find(ds.samples[j].group)
        if a != b:
            parent[max(a, b)] = min(a, b)
    samples = [replace(s, group=find(s.group)) for s in ds.samples]
    return Dataset(samples, ds.root, dict(ds.split_info), list(ds.warnings)), len(pairs)


# ---------------------------------------------------------------------------------------------
# Splits


def _group_split(ds: Dataset, fractions: Sequence[float], seed: int) -> list[str]:
    """Assign whole groups to splits, stratified by label: greedy, largest groups first."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(ds.samples):
        groups[s.group].append(i)
    names = list(groups)
    rng.shuffle(names)
    # Largest groups first, so the small ones can even out the counts at the end.
    names.sort(key=lambda g: -len(groups[g]))
    frac = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    totals = Counter(s.label for s in ds.samples)
    target = {lab: frac * n for lab, n in totals.items()}
    have = {lab: np.zeros(len(frac)) for lab in totals}
    assign = [""] * len(ds.samples)
    for g in names:
        idx = groups[g]
        labs = Counter(ds.samples[i].label for i in idx)
        # Deficit of each split after adding this group, summed over the labels it carries.
        cost = np.zeros(len(frac))
        for lab, n in labs.items():
            cost += (have[lab] + n - target[lab]) / max(totals[lab], 1) * n
        k = int(np.argmin(cost))
        for lab, n in labs.items():
            have[lab][k] += n
        for i in idx:
            assign[i] = SPLITS[k]
    return assign


def _image_split(ds: Dataset, fractions: Sequence[float], seed: int) -> list[str]:
    """Image-level random split stratified by label (the study's protocol; groups are ignored)."""
    rng = np.random.default_rng(seed)
    frac = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    assign = [""] * len(ds.samples)
    for lab in sorted({s.label for s in ds.samples}):
        idx = np.array([i for i, s in enumerate(ds.samples) if s.label == lab])
        rng.shuffle(idx)
        n = len(idx)
        cuts = np.round(np.cumsum(frac) * n).astype(int)
        start = 0
        for k, end in enumerate(cuts):
            for i in idx[start:end]:
                assign[int(i)] = SPLITS[k]
            start = end
    return assign


def split_dataset(ds: Dataset, protocol: str = "group", seed: int = 0,
                  fractions: Sequence[float] | None = None, dedupe: bool = True, max_distance: int = 4,
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Dataset:
    """Assign train/val/test: `group` keeps every group (patient, photo, duplicates) in one split and
    stratifies by label; `study` is the original study's image-level random 60/10/30 split;
    `manifest` keeps the existing split (an error if there is none)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown split protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "manifest":
        if not ds.has_splits() or any(s.split not in SPLITS for s in ds.samples):
            raise DatasetError("protocol 'manifest' needs every sample to carry a train/val/test split")
        return ds
    fractions = tuple(fractions or DEFAULT_FRACTIONS[protocol])
    if len(fractions) != 3:
        raise ValueError("fractions must be three numbers: train, val, test (test may be 0)")
    merged = 0
    work = ds
    if protocol == "group" and dedupe:
        work, merged = merge_duplicate_groups(ds, max_distance, progress, cancel)
    assign = _group_split(work, fractions, seed) if protocol == "group" else _image_split(work, fractions, seed)
    samples = [replace(s, split=a) for s, a in zip(work.samples, assign)]
    info = {"protocol": protocol, "seed": seed, "fractions": list(fractions),
            "n_groups": len({s.group for s in samples})}
    if protocol == "group":
        info["duplicate_pairs_merged"] = merged
        info["phash_max_distance"] = max_distance if dedupe else None
    return Dataset(samples, ds.root, info, list(ds.warnings))


def leaking_groups(ds: Dataset) -> dict[str, set[str]]:
    """Groups found in more than one split (empty when the split is clean)."""
    where: dict[str, set[str]] = defaultdict(set)
    for s in ds.samples:
        where[s.group].add(s.split)
    return {g: sp for g, sp in where.items() if len(sp) > 1}


def truth_from_class_folders(paths: Sequence[str | os.PathLike], folder: str | os.PathLike) -> dict[str, str] | None:
    """path -> "mpox"/"not_mpox" from each file's first sub-folder under `folder`, when the folder is laid out
    as a labelled set (a class folder named mpox/monkeypox/... and at least one other class); else None.

    Meant for an explicit option (a clinic's own "mpox" folder is not ground truth by itself).
    """
    root = Path(folder)
    classes: dict[str, str] = {}
    for p in paths:
        try:
            parts = Path(p).relative_to(root).parts
        except ValueError:
            continue
        if len(parts) >= 2:
            classes[str(p)] = parts[0]
    labels = {name: binary_label(name) for name in set(classes.values())}
    if LABEL_MPOX not in labels.values() or len(labels) < 2:
        return None
    return {path: labels[name] for path, name in classes.items()}
