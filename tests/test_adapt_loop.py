"""The adapt loop end to end (issue 23 items 2-4): the review queue is for safety, the labelling sample for
teaching (seeded, class-blind, stable when the folder grows, grown until it reaches adapt's minimum);
adapt learns only from skin photos; an adapted card carries its site's point and an out-of-collection
point, refuses a site point that clears too few photos, and its shift reference holds the site photos."""

from __future__ import annotations

import hashlib
import json

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_adapt import folder_items, make_base_bundle, photos, site_folder


def _shas(n: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(f"photo {i}".encode()).hexdigest() for i in range(start, start + n)]


# -- the review queue ---------------------------------------------------------------------------------------

def test_the_review_queue_puts_the_highest_scored_unreviewed_photo_not_called_mpox_first():
    from core.triage.labelling import review_queue

    p = [0.10, 0.45, 0.92, 0.30, 0.70, 0.44]
    called = [x >= 0.5 for x in p]
    reviewed = [False, False, False, False, False, True]
    assert review_queue(p, called, reviewed) == [1, 3, 0, 2, 4]   # 0.45, 0.30, 0.10, then the called ones


# -- the labelling sample -----------------------------------------------------------------------------------

def test_the_labelling_sample_keeps_its_first_photos_when_the_folder_grows():
    from core.triage.labelling import labelling_sample

    shas = _shas(200)
    first = labelling_sample(shas, 50, "seed-a").order
    grown = labelling_sample(shas + _shas(300, start=200), 50, "seed-a").order
    # The photos of the first sample keep their order among themselves; new photos only slot in between.
    old_in_grown = [i for i in grown if i < 200]
    assert old_in_grown == first[: len(old_in_grown)]
    whole = labelling_sample(shas + _shas(300, 200), 500, "seed-a").order
    assert [i for i in whole if i < 200][:50] == first
    # Another folder draws another sample; the same folder always the same one.
    assert labelling_sample(shas, 50, "seed-b").order != first
    assert labelling_sample(list(reversed(shas)), 50, "seed-a").order == [199 - i for i in first]


def test_the_labelling_sample_is_blind_to_class():
    from core.triage.labelling import labelling_sample

    shas = _shas(100)
    unlabelled = labelling_sample(shas, 30, "s").order
    labels = [i % 2 for i in range(100)]
    assert labelling_sample(shas, 30, "s", labels=[None] * 100).order == unlabelled
    assert labelling_sample(shas, 30, "s", labels=labels).order[:30] == unlabelled


def test_a_labelling_sample_short_of_a_class_asks_for_more_photos_until_it_reaches_the_minimum():
    from core.triage.labelling import labelling_sample
    from core.triage.remedy import MIN_PER_CLASS

    shas = _shas(400)
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.12).astype(int).tolist()    # few mpox: 50 photos hold about 6
    first = labelling_sample(shas, 50, "s", labels=[None] * 400)
    assert first.size == 50 and first.reason == "" and len(first.to_label) == 50
    sample = labelling_sample(shas, 50, "s", labels=labels)
    mpox_in_50 = sum(labels[i] for i in first.order)
    assert mpox_in_50 < MIN_PER_CLASS                          # the case the sample must handle
    assert sample.size > 50 and sample.order[:50] == first.order
    assert sum(labels[i] for i in sample.order) >= MIN_PER_CLASS
    assert "mpox" in sample.reason and "more photos" in sample.reason
    # Labelled as it asks, step by step, from nothing: it only ever asks for photos of the same order.
    known: list = [None] * 400
    while True:
        s = labelling_sample(shas, 50, "s", labels=known)
        if not s.to_label:
            break
        for i in s.to_label:
            known[i] = labels[i]
    assert s.counts["mpox"] >= MIN_PER_CLASS and s.counts["not_mpox"] >= MIN_PER_CLASS
    assert s.order[: len(sample.order)] == sample.order[: len(s.order)]


def test_sample_size_is_the_binomial_rule_and_loads_no_scipy():
    """The smallest N with P(k <= X <= N - k) >= the confidence, X ~ Binomial(N, p): the same N as SciPy's cdf
    gives, computed without SciPy (the shift alarm's remedy asks for it on every classify run that fires)."""
    import subprocess
    import sys

    from scipy.stats import binom

    from core.triage.remedy import sample_size

    for p, k, conf in ((0.24, 10, 0.95), (0.05, 10, 0.95), (0.5, 3, 0.99), (0.9, 10, 0.8), (0.01, 5, 0.95)):
        n = sample_size(p, k, conf)

        def inside(m):
            return binom.cdf(m - k, m, p) - binom.cdf(k - 1, m, p)

        assert inside(n) >= conf - 1e-12 and (n == 2 * k or inside(n - 1) < conf + 1e-12), (p, k, conf, n)
    code = ("import sys; from core.triage.remedy import labelling_sample_size; labelling_sample_size({}); "
            "print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.stdout.strip() == "False"


def test_the_suggested_sample_size_reaches_the_minimum_per_class_with_high_probability():
    from core.triage.labelling import labelling_sample
    from core.triage.remedy import MIN_PER_CLASS, sample_size

    n = sample_size(0.24)
    assert 50 < n < 80
    rng = np.random.default_rng(1)
    shas = _shas(1000)
    short_n, short_50 = 0, 0
    for draw in range(400):
        labels = (rng.random(1000) < 0.24).astype(int)
        order = labelling_sample(shas, n, f"folder {draw}").order
        short_n += min(labels[order].sum(), n - labels[order].sum()) < MIN_PER_CLASS
        o50 = order[:50]
        short_50 += min(labels[o50].sum(), 50 - labels[o50].sum()) < MIN_PER_CLASS
    assert short_n / 400 <= 0.08            # SAMPLE_CONFIDENCE 0.95, with room for 400 draws' noise
    assert short_50 / 400 > 0.12            # 50 photos fall short often at 24% mpox (the case)


def test_the_shift_remedy_names_a_sample_that_reaches_the_minimum_and_review_more_once_adapted():
    from core.triage.remedy import labelling_sample_size, remedy
    from core.triage.shift import ShiftResult, verdict_entry

    card = {"name": "m", "threshold": 0.5, "uncertain_band": [0.3, 0.7],
            "training_data": {"counts": {"train": {"mpox": 40, "not_mpox": 60}}}}
    n = labelling_sample_size(card)
    assert n >= 62                                              # planned at <= 24% mpox, not the card's 40%
    assert remedy(card, adapted=False) == f"label the {n} photos of the labelling sample (adapt --suggest {n}), " \
                                          "then adapt"
    adapted = {**card, "parent": {"name": "base"},
               "training_data": {**card["training_data"], "site": {"photos": 100, "mpox": 24, "not_mpox": 76}}}
    assert remedy(adapted).startswith("review more")
    entry = verdict_entry(ShiftResult(True, 0.001, 0.05, 80), card)
    assert entry["remedy"] == remedy(card) and entry["review_n"] == n
    # A folder with fewer usable photos than the sample: all of them, never more than it has.
    small = verdict_entry(ShiftResult(True, 0.001, 0.05, 40), card)
    assert small["remedy"].startswith("label all 40 photos of this folder (adapt --suggest 40;")
    assert remedy(card, photos=n) == remedy(card) and remedy(card, photos=0) == remedy(card)


def test_suggest_lists_the_same_labelling_sample_each_time(tmp_path, capsys):
    from core.cli import main

    base = make_base_bundle(tmp_path / "base")
    site = tmp_path / "pool"
    site.mkdir()
    for i, img in enumerate(photos(44, False, True, np.random.default_rng(3))):
        Image.fromarray(img).resize((96, 96)).save(site / f"photo_{i:02d}.png")
    out = tmp_path / "s.json"
    assert main(["adapt", "--model", str(base), "--suggest", "20", "--pool", str(site), "--quiet",
                 "--json", str(out)]) == 0
    picks = json.loads(out.read_text())["suggestions"]
    assert len(picks) == 20 and len({p["path"] for p in picks}) == 20
    again = tmp_path / "again.json"
    assert main(["adapt", "--model", str(base), "--suggest", "20", "--pool", str(site), "--quiet",
                 "--json", str(again)]) == 0
    assert json.loads(again.read_text())["suggestions"] == picks   # seeded by the folder: the same sample


# -- scope: adapt learns only from skin photos ---------------------------------------------------------------

def _text_image(path, seed: int) -> None:
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (160, 120), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for row in range(8):
        draw.text((4, 4 + 14 * row), "".join(rng.choice(list("abcdefghij klmnop")) for _ in range(26)), fill=(0, 0, 0))
    img.save(path)


def test_adapt_leaves_out_photos_that_are_not_skin_photos_unless_asked(tmp_path, capsys):
    from core.learning.adapt import adapt_bundle
    from core.models.bundle import load_bundle
    from core.photos.scope import is_out_of_scope, scope_score

    bundle = load_bundle(make_base_bundle(tmp_path / "base"))
    site = site_folder(tmp_path / "site", 20, 20)
    for i in range(4):
        _text_image(site / "mpox" / f"text_{i}.png", i)
        assert is_out_of_scope(scope_score(np.asarray(Image.open(site / "mpox" / f"text_{i}.png").convert("RGB"))))
    paths, labels = folder_items(site)
    result = adapt_bundle(bundle, paths, labels, n_bootstrap=50)
    assert result.report["site"]["mpox"] == 20 and result.report["site"]["photos"] == 40
    assert result.report["site_cv"]["n"] == 40                       # the CV figures count only what was used
    line = [w for w in result.warnings if "not skin photos" in w]
    assert len(line) == 1 and line[0].startswith("4 labelled photo(s)") and "left out" in line[0]
    assert not any("text_" in p for p in result.photos)
    kept = adapt_bundle(bundle, paths, labels, n_bootstrap=50, include_out_of_scope=True)
    assert kept.report["site"]["mpox"] == 24 and kept.report["site_cv"]["n"] == 44
    # The CLI says it in one line and takes --include-out-of-scope.
    from core.cli import main

    assert main(["adapt", "--model", str(tmp_path / "base"), "--labelled", str(site), "--out",
                 str(tmp_path / "a"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert sum("not skin photos" in line and "left out" in line for line in err.splitlines()) == 1
    assert main(["adapt", "--model", str(tmp_path / "base"), "--labelled", str(site), "--out",
                 str(tmp_path / "b"), "--quiet", "--include-out-of-scope"]) == 0
    assert "used anyway" in capsys.readouterr().err


# -- the adapted card's points -------------------------------------------------------------------------------

def _parent_point():
    return {"threshold": 0.45, "uncertain_band": [0.2, 0.7], "from": "parent out_of_collection", "review_share": 0.6}


def test_an_adapted_card_carries_its_sites_point_and_the_parents_out_of_collection_point(tmp_path):
    from core.learning.adapt import adapt_bundle, save_adapted
    from core.models.bundle import load_bundle
    from core.models.card_schema import check_card
    from core.models.operating_point import card_points
    from core.triage.shift import reference_sets

    bundle = load_bundle(make_base_bundle(tmp_path / "base"))
    paths, labels = folder_items(site_folder(tmp_path / "site", 24, 40))
    result = adapt_bundle(bundle, paths, labels, n_bootstrap=200)
    points = result.card.extra["operating_points"]
    assert set(points) == {"default", "out_of_collection"}
    default, ooc = points["default"], points["out_of_collection"]
    assert default["source"] == "site", default["reason"]
    assert default["threshold"] == pytest.approx(result.card.threshold)
    assert default["uncertain_band"] == pytest.approx(result.card.uncertain_band)
    triage = default["triage"]["site_cv"]
    assert triage["n_mpox"] == 24 and triage["triage_sensitivity"] >= 0.95 and triage["triage_specificity"] >= 0.3
    assert "base_val" in default["triage"]
    assert ooc["threshold"] <= default["threshold"] and ooc["uncertain_band"][0] <= default["uncertain_band"][0]
    assert 0 < ooc["uncertain_band"][0] and ooc["uncertain_band"][1] < 1
    check_card(result.card.to_dict())
    pts = card_points(result.card)
    assert pts["default"].review_floor >= pts["out_of_collection"].review_floor
    out = load_bundle(save_adapted(result, tmp_path / "adapted"))
    assert out.card.extra["operating_points"]["out_of_collection"] == ooc
    # The shift reference holds the site photos as their own collection.
    sets = reference_sets(out)
    assert "site" in sets and len(sets["site"]) == 64 and len(sets["all"]) == 45 + 64


def test_a_site_point_that_clears_under_30_percent_of_other_photos_is_refused():
    from core.learning.adapt import MIN_TRIAGE_SPECIFICITY, choose_operating_point

    rng = np.random.default_rng(0)
    y = np.array([1] * 24 + [0] * 70)
    p = np.concatenate([rng.uniform(0.3, 0.99, 23), [0.001], rng.uniform(0.0, 0.6, 70)])
    point = choose_operating_point(y, p, _parent_point(), threshold=0.5, n_bootstrap=300)
    assert point["source"] == "parent" and point["threshold"] == 0.45 and point["uncertain_band"] == [0.2, 0.7]
    assert f"under {MIN_TRIAGE_SPECIFICITY:.2f}" in point["reason"] and "kept the parent's" in point["reason"]
    # With the parent's evidence as a prior, the floor does not collapse to the one low mpox score.
    prior_y = np.array([1] * 70 + [0] * 90)
    prior_p = np.concatenate([rng.uniform(0.4, 1.0, 70), rng.uniform(0.0, 0.5, 90)])
    pooled = choose_operating_point(y, p, _parent_point(), threshold=0.5, n_bootstrap=300,
                                    prior_y=prior_y, prior_p=prior_p)
    assert pooled["source"] == "site" and pooled["uncertain_band"][0] > 0.2
    assert pooled["triage"]["site_cv"]["triage_specificity"] >= MIN_TRIAGE_SPECIFICITY


def test_too_few_site_mpox_keep_the_parents_point_on_the_card():
    from core.learning.adapt import card_operating_points, choose_operating_point

    y = np.array([1] * 12 + [0] * 30)
    p = np.concatenate([np.linspace(0.5, 0.99, 12), np.linspace(0.01, 0.6, 30)])
    point = choose_operating_point(y, p, _parent_point())
    assert point["source"] == "parent" and "only 12 mpox" in point["reason"]
    points = card_operating_points(point, _parent_point())
    assert points["default"]["threshold"] == 0.45 and points["out_of_collection"]["review_share"] == 0.6


def test_after_adapting_the_rest_of_the_site_is_quiet_and_a_third_collection_still_alarms(tmp_path):
    from core.learning.adapt import adapt_bundle, save_adapted
    from core.models.bundle import load_bundle
    from core.triage.shift import folder_shift
    from tests.test_adapt import SIZE

    parent = load_bundle(make_base_bundle(tmp_path / "base"))
    paths, labels = folder_items(site_folder(tmp_path / "site", 24, 40))
    adapted = load_bundle(save_adapted(adapt_bundle(parent, paths, labels, n_bootstrap=50), tmp_path / "adapted"))

    def embeddings(bundle, imgs):
        return list(bundle.forward(np.stack([np.asarray(Image.fromarray(i).resize((SIZE, SIZE))) for i in imgs]))[1])

    rng = np.random.default_rng(7)
    rest = np.concatenate([photos(20, True, True, rng), photos(30, False, True, rng)])        # more of the site
    third = np.concatenate([photos(20, True, False, rng), photos(30, False, False, rng)]).astype(int)
    third = np.clip(third + [-30, 10, 40], 0, 255).astype(np.uint8)                            # a bluer place
    assert folder_shift(parent, embeddings(parent, rest)).detected                 # the site alarmed the parent
    assert not folder_shift(adapted, embeddings(adapted, rest)).detected
    assert folder_shift(adapted, embeddings(adapted, third)).detected


def test_suggest_from_a_session_and_the_apps_label_next_walk_the_same_sample(tmp_path):
    from core.cli import main
    from core.photos.images import file_sha256
    from core.records import ResultRecord
    from core.store.session import SessionStore
    from desktop_app.review.next import pick_for_labelling

    base = make_base_bundle(tmp_path / "base")
    folder = tmp_path / "clinic"
    (folder / "day1").mkdir(parents=True)
    files = []
    for i, img in enumerate(photos(30, False, True, np.random.default_rng(4))):
        files.append(folder / "day1" / f"p{i:02d}.png")
        Image.fromarray(img).resize((96, 96)).save(files[-1])
    records = {str(f): ResultRecord(path=str(f), status="ok", p_mpox=0.3, prediction="not_mpox", model="m",
                                    model_sha256="a" * 64, threshold=0.5, file_sha256=file_sha256(f)) for f in files}
    with SessionStore.open(tmp_path / "sess") as store:
        run = store.start_run({"name": "m", "version": "1", "model_sha256": "a" * 64, "threshold": 0.5}, folder)
        store.add_results(run, list(records.values()))
        store.finish_run(run)
    out = tmp_path / "s.json"
    assert main(["adapt", "--model", str(base), "--suggest", "12", "--session", str(tmp_path / "sess"), "--quiet",
                 "--json", str(out)]) == 0
    cli = [p["path"] for p in json.loads(out.read_text())["suggestions"]]
    app, reviews = [], {}
    while len(app) < 12:
        pick = pick_for_labelling([str(f) for f in files], records, reviews, str(folder), 12)
        app.append(pick.path)
        reviews[pick.path] = {"label": "not_mpox"}
    assert cli == app                          # seeded by the folder the session scored, not the photos' subfolder


def test_a_shipped_release_whose_parent_is_the_previous_release_is_told_to_adapt_not_to_review_more():
    """The defect: combined 1.3.0 (parent: combined 1.2.0) was told 'this model was adapted to another site'."""
    from core.triage.remedy import is_adapted, remedy
    from core.models.bundle import read_card
    from tests.conftest import REPO

    card = read_card(REPO / "models" / "combined")
    assert card.parent and not is_adapted(card)
    assert "then adapt" in remedy(card) and "adapted to another site" not in remedy(card)


def test_with_a_session_the_labelling_sample_keeps_its_photos_when_the_folder_grows(tmp_path):
    """The defect: without memory, a photo added later could rank among the first N and push out one already asked
    for. With a session, the sample drawn before stays first."""
    from core.triage.labelling import labelling_sample, random_order, remember_sample, stored_sample
    from core.store.session import SessionStore

    shas = [f"{i:064x}" for i in range(60)]
    with SessionStore.open(tmp_path / "s") as session:
        first = labelling_sample(shas, 20, "seed", keep=stored_sample(session, "seed"))
        remember_sample(session, "seed", first, shas)
        drawn = [shas[i] for i in first.order]
        grown = shas + [f"{i:064x}" for i in range(1000, 1200)]   # 200 new photos, some rank before old ones
        without = labelling_sample(grown, 20, "seed")
        assert [grown[i] for i in without.order] != drawn          # a fresh draw moves the sample
        again = labelling_sample(grown, 20, "seed", keep=stored_sample(session, "seed"))
        assert [grown[i] for i in again.order] == drawn            # the stored sample keeps its photos
        assert random_order("seed", grown, keep=drawn)[:20] == [grown.index(h) for h in drawn]
