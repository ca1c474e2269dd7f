"""Datasets: class-folder aliases, patient groups, duplicate grouping and leak-free splits."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from core.learning.datasets import (DatasetError, binary_label, dataset_from_labels, leaking_groups, load_dataset,
                           load_folder_dataset, load_manifest_dataset, merge_duplicate_groups, patient_group,
                           split_dataset)
from tests.helpers import make_photo


def _save(path, seed, size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    make_photo(size, seed).save(path)
    return path


def test_mpox_alias_folders_are_mpox_and_other_folders_keep_fine_labels(tmp_path):
    for i, name in enumerate(["Monkey_Pox", "monkeypox", "mpox", "MPOX", "Chickenpox", "measles", "Normal skin"]):
        _save(tmp_path / name / f"img{i}.jpg", i)
    ds = load_folder_dataset(tmp_path)
    by_folder = {s.path.parent.name: s for s in ds.samples}
    for name in ["Monkey_Pox", "monkeypox", "mpox", "MPOX"]:
        assert by_folder[name].label == "mpox"
        assert by_folder[name].fine_label == "monkeypox"
    assert by_folder["Chickenpox"].label == "not_mpox" and by_folder["Chickenpox"].fine_label == "chickenpox"
    assert by_folder["Normal skin"].fine_label == "normal_skin"
    assert ds.counts() == {"": {"mpox": 4, "not_mpox": 3}}
    assert binary_label("monkey-pox") == "mpox" and binary_label("cowpox") == "not_mpox"


def test_folder_without_mpox_class_is_refused_with_the_folders_named(tmp_path):
    _save(tmp_path / "chickenpox" / "a.jpg", 0)
    _save(tmp_path / "measles" / "b.jpg", 1)
    with pytest.raises(DatasetError, match="chickenpox, measles"):
        load_folder_dataset(tmp_path)


def test_train_val_test_folders_are_read_as_a_split(tmp_path):
    for split in ("train", "val", "test"):
        for k, cls in enumerate(("mpox", "other")):
            _save(tmp_path / split / cls / f"{split}{k}.jpg", k)
    ds = load_folder_dataset(tmp_path)
    assert ds.counts() == {s: {"mpox": 1, "not_mpox": 1} for s in ("train", "val", "test")}


def test_patient_ids_are_parsed_from_file_names():
    assert patient_group("x/M01_02.jpg", "msld") == patient_group("y/M01_07.png", "msld")
    assert patient_group("NM07_01.jpg", "msld") != patient_group("M07_01.jpg", "msld")
    assert patient_group("MKP_17_01.jpg", "s") == patient_group("MKP_17_03.jpg", "s")
    assert patient_group("M01_02.jpg", "a") != patient_group("M01_02.jpg", "b")  # per collection
    assert patient_group("chickenpox12.png") is None
    assert patient_group("photo.jpg") is None


def _patients_folder(tmp_path, n_patients=30, per_patient=(1, 4)):
    rng = np.random.default_rng(0)
    seed = 0
    for cls, prefix in (("monkeypox", "M"), ("other", "NM")):
        for p in range(n_patients):
            for k in range(int(rng.integers(per_patient[0], per_patient[1] + 1))):
                _save(tmp_path / cls / f"{prefix}{p:02d}_{k + 1:02d}.jpg", seed)
                seed += 1
    return tmp_path


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_group_split_never_puts_a_patient_in_two_splits(tmp_path, seed):
    ds = load_folder_dataset(_patients_folder(tmp_path))
    assert len({s.group for s in ds.samples}) == 60
    split = split_dataset(ds, "group", seed=seed, dedupe=False)
    assert leaking_groups(split) == {}
    counts = split.counts()
    assert set(counts) == {"train", "val", "test"}
    for lab in ("mpox", "not_mpox"):
        total = sum(c[lab] for c in counts.values())
        # Stratified: each split holds roughly its share of each class (whole patients move, so not exactly).
        assert abs(counts["train"][lab] / total - 0.7) < 0.15
        assert counts["val"][lab] > 0 and counts["test"][lab] > 0
    # Same seed, same split.
    again = split_dataset(ds, "group", seed=seed, dedupe=False)
    assert [s.split for s in again.samples] == [s.split for s in split.samples]


def test_perceptual_duplicates_join_one_group_and_one_split(tmp_path):
    for i in range(12):
        _save(tmp_path / "mpox" / f"a{i}.png", i, size=(96, 96))
        _save(tmp_path / "other" / f"b{i}.png", 100 + i, size=(96, 96))
    # A resized, re-encoded copy of a0 under another name: a near-duplicate, not an exact one.
    original = Image.open(tmp_path / "mpox" / "a0.png")
    original.resize((80, 80)).save(tmp_path / "mpox" / "copy_of_a0.jpg", quality=85)
    ds = load_folder_dataset(tmp_path)
    by_name = {s.path.name: s for s in ds.samples}
    assert by_name["a0.png"].group != by_name["copy_of_a0.jpg"].group
    merged, pairs = merge_duplicate_groups(ds)
    assert pairs >= 1
    m = {s.path.name: s for s in merged.samples}
    assert m["a0.png"].group == m["copy_of_a0.jpg"].group
    assert m["a1.png"].group != m["a0.png"].group  # different photos stay apart
    for seed in range(5):
        split = {s.path.name: s.split for s in split_dataset(ds, "group", seed=seed).samples}
        assert split["a0.png"] == split["copy_of_a0.jpg"]


def test_study_protocol_is_an_image_level_60_10_30_split(tmp_path):
    ds = load_folder_dataset(_patients_folder(tmp_path, n_patients=20, per_patient=(5, 5)))
    split = split_dataset(ds, "study", seed=3)
    counts = split.counts()
    assert counts["train"] == {"mpox": 60, "not_mpox": 60}
    assert counts["val"] == {"mpox": 10, "not_mpox": 10}
    assert counts["test"] == {"mpox": 30, "not_mpox": 30}
    assert split.split_info["protocol"] == "study"


def _manifest(tmp_path, rows):
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "dataset", "label_binary", "label_fine", "patient_id", "group",
                                           "split"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_manifest_keeps_its_split_groups_and_labels(tmp_path):
    rows = []
    for i in range(6):
        rel = f"imgs/{i}.jpg"
        _save(tmp_path / rel, i)
        rows.append({"path": rel, "dataset": "D", "label_binary": "mpox" if i % 2 else "other",
                     "label_fine": "monkeypox" if i % 2 else "measles", "patient_id": "", "group": f"g{i // 2}",
                     "split": ["train", "val", "test"][i // 2]})
    ds = load_dataset(_manifest(tmp_path, rows))
    assert ds.counts() == {s: {"mpox": 1, "not_mpox": 1} for s in ("train", "val", "test")}
    assert Counter(s.fine_label for s in ds.samples) == {"monkeypox": 3, "measles": 3}
    assert ds.samples[0].group == ds.samples[1].group
    assert split_dataset(ds, "manifest") is ds


def test_manifest_with_missing_images_names_them(tmp_path):
    path = _manifest(tmp_path, [{"path": "nope/missing.jpg", "dataset": "D", "label_binary": "mpox",
                                 "label_fine": "", "patient_id": "", "group": "", "split": ""}])
    with pytest.raises(DatasetError, match="missing.jpg"):
        load_manifest_dataset(path)


def test_dataset_from_reviewed_labels(tmp_path):
    a = _save(tmp_path / "M03_01.jpg", 1)
    b = _save(tmp_path / "x.jpg", 2)
    c = _save(tmp_path / "y.jpg", 3)
    ds = dataset_from_labels([(a, "mpox"), (b, "not_mpox"), (c, "chickenpox")])
    assert [s.label for s in ds.samples] == ["mpox", "not_mpox", "not_mpox"]
    assert [s.fine_label for s in ds.samples] == ["monkeypox", "other", "chickenpox"]
    assert ds.samples[0].group.startswith("patient:")


def test_shared_manifest_split_is_leak_free(shared_data):
    ds = load_manifest_dataset(shared_data / "manifest.csv")
    assert leaking_groups(ds) == {}
    assert set(ds.counts()) == {"train", "val", "test"}


def test_folder_dataset_does_not_follow_links_outside_and_says_so(tmp_path):
    from core.learning.datasets import load_folder_dataset, split_dataset
    from tests.helpers import make_image_folder

    root = make_image_folder(tmp_path / "data", n_per_class=4, classes=("mpox", "other"))
    elsewhere = make_image_folder(tmp_path / "elsewhere", n_per_class=2, classes=("stuff",))
    (root / "mpox" / "linked").symlink_to(elsewhere / "stuff", target_is_directory=True)
    ds = load_folder_dataset(root)
    assert len(ds) == 8 and all("elsewhere" not in str(s.path) for s in ds.samples)
    assert len(ds.warnings) == 1 and "linked" in ds.warnings[0] and "not followed" in ds.warnings[0]
    assert split_dataset(ds, "group", seed=0).warnings == ds.warnings  # carried to the model card
