"""Adapt's guards, operating point and review order (issue 17 items 4-5, issue 18 items 4, 7, 10).

Refusals are one line with exit 2 and nothing written; the operating point keeps triage sensitivity at
its bootstrap lower bound or falls back to the parent's out-of-collection point; --force keeps the model
it replaces; a read-only session is read, never written; odd-shaped images are never suggested first.
Tiny generated data: the base bundle of tests/test_adapt.py (embedding = mean colour features).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_adapt import folder_items, make_base_bundle, photos, site_folder


def _run(args: list[str], capsys) -> tuple[int, list[str], str]:
    from core.cli import main

    code = main(args)
    cap = capsys.readouterr()
    return code, cap.err.strip().splitlines(), cap.out


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return make_base_bundle(tmp_path_factory.mktemp("models") / "base")


# -- operating point -------------------------------------------------------------------------------------------

def test_the_review_floor_keeps_triage_sensitivity_at_its_bootstrap_lower_bound():
    from core.learning.adapt import choose_operating_point, review_floor_lower_bound

    rng = np.random.default_rng(0)
    y = np.array([1] * 60 + [0] * 60)
    p = np.concatenate([rng.beta(5, 2, 60), rng.beta(2, 5, 60)])
    plain = np.sort(p[y == 1])[60 - 57]            # the highest floor keeping 57 of 60 (0.95) on this sample
    floor = review_floor_lower_bound(p[y == 1], 0.95, n_bootstrap=500)
    assert floor < plain                           # the bound is more careful than the sample itself
    point = choose_operating_point(y, p, None, n_bootstrap=500)
    assert point["source"] == "site"
    lo, hi = point["uncertain_band"]
    assert lo <= floor + 1e-12 and lo < point["threshold"] < hi
    assert point["triage_sensitivity"] >= 0.95 and 0 < point["triage_specificity"] < 1
    # Fresh photos from the same site: triage sensitivity at that floor holds in most of them.
    fresh = [(rng.beta(5, 2, 200) >= min(lo, point["threshold"])).mean() for _ in range(50)]
    assert np.mean(np.array(fresh) >= 0.93) > 0.9


def test_too_few_mpox_photos_keep_the_parents_out_of_collection_point():
    from core.learning.adapt import choose_operating_point, parent_out_of_collection_point
    from core.models.bundle import ModelCard

    card = ModelCard(name="p", version="1", architecture="mobilenetv2", input_size=16, threshold=0.6,
                     uncertain_band=[0.4, 0.8])
    assert parent_out_of_collection_point(card)["threshold"] == 0.6          # no 1.3.0 point: the top-level one
    card.extra = {"operating_points": {"out_of_collection": {"threshold": 0.3, "uncertain_band": [0.1, 0.5]}}}
    parent = parent_out_of_collection_point(card)
    assert parent["threshold"] == 0.3 and parent["uncertain_band"] == [0.1, 0.5]
    y = np.array([1] * 12 + [0] * 30)
    p = np.linspace(0.01, 0.99, 42)
    point = choose_operating_point(y, p, parent)
    assert point["source"] == "parent" and point["threshold"] == 0.3 and point["uncertain_band"] == [0.1, 0.5]
    assert "12 mpox" in point["reason"]


# -- guards on the site photos ------------------------------------------------------------------------------------

def test_a_photo_under_both_labels_is_refused_in_one_line(tmp_path, base_dir, capsys):
    site = site_folder(tmp_path / "site", 12, 12)
    twin = sorted((site / "mpox").glob("*.png"))[0]
    shutil.copyfile(twin, site / "other" / "copy_of_an_mpox_photo.png")
    out = tmp_path / "new"
    code, err, _ = _run(["adapt", "--model", str(base_dir), "--labelled", str(site), "--out", str(out), "--quiet"],
                        capsys)
    assert code == 2 and len(err) == 1 and "the same photo" in err[0] and "copy_of_an_mpox_photo" in err[0]
    assert not out.exists()


def test_a_class_folder_outside_the_documented_names_is_refused(tmp_path, base_dir, capsys):
    from core.learning.adapt import class_name_problem
    from core.learning.datasets import load_folder_dataset

    site = site_folder(tmp_path / "site", 12, 12)
    (site / "suspected_mpox").mkdir()
    Image.fromarray(photos(1, True, True, np.random.default_rng(5))[0]).save(site / "suspected_mpox" / "s.png")
    out = tmp_path / "new"
    code, err, _ = _run(["adapt", "--model", str(base_dir), "--labelled", str(site), "--out", str(out), "--quiet"],
                        capsys)
    assert code == 2 and len(err) == 1 and "suspected_mpox" in err[0] and "docs/adaptation.md" in err[0]
    assert not out.exists()
    shutil.rmtree(site / "suspected_mpox")
    for name in ("Chickenpox", "normal", "not_mpox"):     # documented not-mpox names pass
        (site / "other").rename(site / name)
        assert class_name_problem(load_folder_dataset(site)) is None
        (site / name).rename(site / "other")


def test_an_adapted_model_worse_than_chance_or_the_parent_is_refused_unless_accepted(tmp_path, base_dir):
    from core.learning.adapt import AdaptError, adapt_bundle
    from core.models.bundle import load_bundle

    bundle = load_bundle(base_dir)
    paths, labels = folder_items(site_folder(tmp_path / "site", 15, 15))
    shuffled = list(np.random.default_rng(3).permutation(labels))   # labels that mean nothing
    with pytest.raises(AdaptError, match="--accept-worse") as err:
        adapt_bundle(bundle, paths, shuffled, n_bootstrap=20)
    assert "\n" not in str(err.value) and "ROC-AUC" in str(err.value)
    result = adapt_bundle(bundle, paths, shuffled, n_bootstrap=20, accept_worse=True)
    assert any("--accept-worse" in w for w in result.warnings)


def test_stale_reviews_are_left_out(tmp_path, base_dir):
    from core.learning.adapt import adapt_bundle
    from core.models.bundle import load_bundle
    from core.photos.images import file_sha256

    paths, labels = folder_items(site_folder(tmp_path / "site", 12, 12))
    recorded = [file_sha256(p) for p in paths]
    changed = paths[0]                                   # an mpox photo edited after it was reviewed
    Image.fromarray(photos(1, False, True, np.random.default_rng(9))[0]).save(changed)
    result = adapt_bundle(load_bundle(base_dir), paths, labels, review_sha256=recorded, n_bootstrap=20)
    assert result.stale == [str(changed)]
    assert result.report["site"]["photos"] == 23 and result.report["site"]["mpox"] == 11
    assert any("stale" in w for w in result.warnings)


def test_a_session_review_records_the_content_it_labelled(tmp_path):
    from core.store.session import SessionStore
    from core.photos.images import file_sha256

    site = site_folder(tmp_path / "site", 2, 2)
    f = sorted(site.rglob("*.png"))[0]
    with SessionStore.open(tmp_path / "s") as store:
        store.set_review(f, "mpox")
        assert store.reviews()[str(f)]["file_sha256"] == file_sha256(f)


def test_adapt_reads_a_read_only_session_and_writes_nothing_to_it(tmp_path, base_dir, capsys, monkeypatch):
    from core.store.session import SessionStore

    site = site_folder(tmp_path / "site", 12, 12)
    files = sorted(site.rglob("*.png"))
    with SessionStore.open(tmp_path / "sess") as store:
        for f in files:
            store.set_review(f, "mpox" if f.parent.name == "mpox" else "not_mpox")
    changed = files[0]                                   # edited after its review: stale, left out
    Image.fromarray(photos(1, False, True, np.random.default_rng(9))[0]).save(changed)
    before = {p.name: p.read_bytes() for p in (tmp_path / "sess").iterdir() if p.is_file()}
    # A read-only disk: tests may run as root, for whom chmod is no barrier, so W_OK is refused here.
    real = os.access
    monkeypatch.setattr("core.store.session.os.access", lambda p, mode, **kw: False if mode & os.W_OK else real(p, mode))
    with pytest.raises(Exception, match="read-only"):
        SessionStore.open(tmp_path / "sess")
    out = tmp_path / "adapted"
    code, err, stdout = _run(["adapt", "--model", str(base_dir), "--session", str(tmp_path / "sess"), "--out",
                              str(out), "--quiet"], capsys)
    assert code == 0, err
    assert any("stale" in line for line in err)
    assert "operating point:" in stdout and "out-of-collection point (photos from a third place" in stdout
    after = {p.name: p.read_bytes() for p in (tmp_path / "sess").iterdir() if p.is_file()}
    # The database is not changed by a byte; SQLite may leave its WAL index files where the folder allows.
    assert after["session.sqlite"] == before["session.sqlite"]
    assert set(after) - set(before) <= {"session.sqlite-wal", "session.sqlite-shm"}
    assert not after.get("session.sqlite-wal")
    from core.models.bundle import read_card

    assert read_card(out).training_data["site"]["photos"] == 23


# -- --force, --suggest ---------------------------------------------------------------------------------------------

def test_force_replaces_an_adapted_model_and_keeps_the_old_one(tmp_path, base_dir, capsys):
    from core.models.bundle import read_card

    site = site_folder(tmp_path / "site", 12, 12)
    out = make_base_bundle(tmp_path / "adapted", seed=4)      # a model the user made earlier
    old_card = (out / "model_card.json").read_bytes()
    args = ["adapt", "--model", str(base_dir), "--labelled", str(site), "--out", str(out), "--quiet"]
    code, err, _ = _run(args + ["--version", "2", "--force"], capsys)
    assert code == 0, err
    assert read_card(out).version == "2"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("adapted.replaced-")]
    assert len(kept) == 1 and (kept[0] / "model_card.json").read_bytes() == old_card
    assert any(str(kept[0]) in line for line in err)


def test_suggest_from_a_missing_pool_is_one_line(tmp_path, base_dir, capsys):
    code, err, _ = _run(["adapt", "--model", str(base_dir), "--suggest", "5", "--pool", "/nonexistent"], capsys)
    assert code == 2 and len(err) == 1 and "/nonexistent" in err[0]
    code, err, _ = _run(["adapt", "--model", str(base_dir), "--suggest", "0", "--pool", str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1


def test_suggest_never_ranks_a_tiny_or_strip_image_first(tmp_path, base_dir, capsys):
    import json

    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(2)
    for i, img in enumerate(photos(8, True, True, rng)):
        Image.fromarray(img).resize((96, 96)).save(pool / f"photo_{i}.png")
    Image.new("RGB", (1, 1), (120, 90, 80)).save(pool / "a_1x1.png")
    Image.new("RGB", (6000, 50), (120, 90, 80)).save(pool / "a_strip.png")
    for order in ("stratified", "medoids", "uncertainty"):
        code, err, out = _run(["adapt", "--model", str(base_dir), "--suggest", "10", "--pool", str(pool), "--quiet",
                               "--order", order, "--json", str(tmp_path / f"{order}.json")], capsys)
        assert code == 0, err
        ranked = [Path(s["path"]).name for s in json.loads((tmp_path / f"{order}.json").read_text())["suggestions"]]
        assert len(ranked) == 10 and set(ranked[:8]) == {f"photo_{i}.png" for i in range(8)}
        assert set(ranked[8:]) == {"a_1x1.png", "a_strip.png"}
    # The labelling sample (the default order) never holds them at all.
    code, err, out = _run(["adapt", "--model", str(base_dir), "--suggest", "10", "--pool", str(pool), "--quiet",
                           "--json", str(tmp_path / "random.json")], capsys)
    ranked = [Path(s["path"]).name for s in json.loads((tmp_path / "random.json").read_text())["suggestions"]]
    assert code == 0 and sorted(ranked) == sorted(f"photo_{i}.png" for i in range(8))


# -- the review order --------------------------------------------------------------------------------------------

def test_medoid_order_takes_the_biggest_groups_first_and_skips_covered_ones():
    from core.triage.labelling import medoid_order, suggest_next

    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [40, 0, 0], [0, 40, 0]], dtype=float)
    sizes = [30, 20, 10]
    emb = np.concatenate([c + rng.normal(0, 1, (n, 3)) for c, n in zip(centres, sizes)] + [[[0, 0, 400.0]]]) ** 2
    group = np.repeat([0, 1, 2, 3], sizes + [1])
    picks = medoid_order(emb, 4)
    assert group[picks[0]] == 0 and set(group[picks[:3]]) == {0, 1, 2}   # biggest group first
    assert group[picks[-1]] == 3                       # the lone outlier is a group of one: last
    labelled = emb[group == 0][:2]                     # group 0 already reviewed
    assert list(group[medoid_order(emb, 2, labelled)]) == [1, 2]
    assert suggest_next(np.zeros(len(emb)), emb, 4, order="medoids") == picks


def test_the_stratified_order_spreads_over_the_score_range_and_fills_gaps_left_by_reviews():
    from core.triage.labelling import suggest_next

    z = np.linspace(-5, 5, 101)                        # index 50 is the median score
    emb = np.ones((101, 2))
    first = suggest_next(z, emb, 3)
    assert first[0] == 50 and sorted(z[first[1:]] < 0) == [False, True]   # then one from each half
    picks = suggest_next(z, emb, 7)
    assert np.ptp(z[picks]) > 6                        # spread, not bunched at the boundary
    # Photos already reviewed at the low end: the next one comes from the high end.
    nxt = suggest_next(z[50:], emb[50:], 1, labelled_logits=z[:50])[0]
    assert z[50:][nxt] > 2
