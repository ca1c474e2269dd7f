"""Per-photo scope check: non-photos are flagged out_of_scope, photos are not, and the engine sets the flag."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core.photos import scope
from tests.helpers import make_photo


def _text_page() -> np.ndarray:
    im = Image.new("RGB", (600, 800), "white")
    d = ImageDraw.Draw(im)
    for y in range(20, 780, 24):
        d.text((20, y), "Patient report: results of the skin swab, page 2 of 3", fill="black",
               font=ImageFont.load_default(size=16))
    return np.asarray(im)


def _chart() -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    ax.bar(["mpox", "chickenpox", "measles", "normal"], [66, 13, 14, 46], color=["C0", "C1", "C2", "C3"])
    ax.set_title("cases per class")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


NON_PHOTOS = {
    "all black": lambda: np.zeros((480, 640, 3), np.uint8),
    "white page": lambda: np.full((1100, 850, 3), 255, np.uint8),
    "1x1 pixel": lambda: np.full((1, 1, 3), 200, np.uint8),
    "page of text": _text_page,
    "noise": lambda: np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8),
    "chart": _chart,
}


@pytest.mark.parametrize("name", sorted(NON_PHOTOS))
def test_non_photos_score_above_the_limit(name):
    score = scope.scope_score(NON_PHOTOS[name]())
    assert scope.is_out_of_scope(score), f"{name} scored {score:.3f}, limit {scope.SCOPE_LIMIT:.3f}"
    assert "above the limit" in scope.describe(score)


def test_generated_photos_of_skin_like_blobs_are_in_scope():
    for seed in range(6):
        for size in ((64, 48), (224, 224), (640, 480)):
            score = scope.scope_score(np.asarray(make_photo(size, seed)))
            assert not scope.is_out_of_scope(score), f"make_photo({size}, {seed}) scored {score:.3f}"


def test_shared_val_photos_are_mostly_in_scope(shared_data):
    import csv

    from core.photos.images import load_rgb

    rows = [r for r in csv.DictReader(open(shared_data / "manifest.csv")) if r["split"] == "val"][::8]
    flagged = [r["path"] for r in rows if scope.is_out_of_scope(scope.scope_score(load_rgb(shared_data / r["path"])))]
    assert len(flagged) <= max(1, len(rows) // 20), flagged


def test_generator_is_seeded_and_covers_every_kind():
    a = scope.generate_non_photos(16, seed=5)
    b = scope.generate_non_photos(16, seed=5)
    assert [k for k, _ in a] == list(scope.KINDS) * 2
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert not np.array_equal(a[0][1], scope.generate_non_photos(1, seed=6)[0][1])


def test_fresh_generated_non_photos_are_flagged():
    items = scope.generate_non_photos(24, seed=123)
    missed = [k for k, arr in items if not scope.is_out_of_scope(scope.scope_score(arr))]
    assert len(missed) <= 2, missed


def test_model_roundtrips_through_json_and_refuses_other_features(tmp_path):
    rng = np.random.default_rng(0)
    photos = rng.normal(0.3, 0.05, (40, len(scope.FEATURES))).clip(0, 1)
    others = rng.normal(0.7, 0.05, (40, len(scope.FEATURES))).clip(0, 1)
    model = scope.fit_scope_model(photos, others, limit=0.5)
    assert np.all(model.score_features(others) > 0.5) and np.all(model.score_features(photos) < 0.5)
    model.save(tmp_path / "m.json")
    again = scope.load_scope_model(str(tmp_path / "m.json"))
    # The file keeps 6 significant digits (core.photos.scope._rounded): the same scores to far below their noise.
    np.testing.assert_allclose(again.score_features(photos), model.score_features(photos), rtol=1e-4, atol=1e-7)
    data = model.to_json()
    data["features"] = data["features"][:-1]
    with pytest.raises(ValueError, match="refit"):
        scope.ScopeModel.from_json(data)


def test_shipped_scope_model_is_small_and_records_how_to_refit():
    assert scope.PARAMS_FILE.stat().st_size < 16000
    model = scope.load_scope_model()
    assert 0.0 < model.limit < 1.0 and model.limit == scope.SCOPE_LIMIT
    assert "bench/scope_fit.py" in model.info["refit"]


def test_engine_flags_non_photos_out_of_scope_and_keeps_photos(tiny_bundle, image_folder):
    from core.models.bundle import load_bundle
    from core.photos.images import discover_images
    from core.triage.inference import InferenceEngine

    folder = image_folder(3)
    odd = folder / "odd"
    odd.mkdir()
    Image.fromarray(NON_PHOTOS["all black"]()).save(odd / "black.png")
    Image.fromarray(NON_PHOTOS["1x1 pixel"]()).save(odd / "pixel.png")
    buf = io.BytesIO()
    Image.fromarray(_text_page()).save(buf, "JPEG", quality=90)
    (odd / "text.jpg").write_bytes(buf.getvalue())
    engine = InferenceEngine(load_bundle(tiny_bundle()), batch_size=4)
    records = {r.path: r for r in engine.run(discover_images(folder))}
    for name in ("black.png", "pixel.png", "text.jpg"):
        rec = records[str(odd / name)]
        assert rec.ok and rec.flag == "out_of_scope", (name, rec.flag)
        assert rec.p_mpox is not None  # still scored: the flag says not to trust it
    photos = [r for p, r in records.items() if "/odd/" not in p]
    assert len(photos) == 6 and all(r.flag != "out_of_scope" for r in photos)
    assert len(engine.embeddings) == 6  # non-photos are kept out of the folder shift test


def _val_photos(shared_data, step: int = 4) -> list[np.ndarray]:
    import csv

    from core.photos.images import load_rgb

    rows = [r for r in csv.DictReader(open(shared_data / "manifest.csv")) if r["split"] == "val"][::step]
    return [load_rgb(shared_data / r["path"]) for r in rows]


def test_non_photos_made_from_skin_photos_are_seeded_and_cover_every_kind():
    photos = [np.asarray(make_photo((224, 224), seed)) for seed in range(4)]
    a = scope.generate_from_photos(photos, 2 * len(scope.DERIVED_KINDS), seed=3)
    b = scope.generate_from_photos(photos, 2 * len(scope.DERIVED_KINDS), seed=3)
    assert [k for k, _ in a] == list(scope.DERIVED_KINDS) * 2
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert all(arr.ndim == 3 and arr.dtype == np.uint8 and min(arr.shape[:2]) >= scope.TINY_SIDE for _, arr in a)
    with pytest.raises(ValueError):
        scope.generate_from_photos([], 1)


def test_inverted_false_colour_gallery_blurred_noise_and_flat_made_from_real_photos_are_flagged(shared_data):
    # val photos and a seed nothing was fitted on (the fit uses train photos, seed 0)
    items = scope.generate_from_photos(_val_photos(shared_data), 16 * len(scope.DERIVED_KINDS), seed=77)
    missed = [k for k, arr in items if not scope.is_out_of_scope(scope.scope_score(arr))]
    # 16 of each family; false colour is the known shortfall (about 91% flagged, docs/scope.md)
    assert all(missed.count(k) <= 1 for k in scope.DERIVED_KINDS if k != "false_colour"), missed
    assert missed.count("false_colour") <= 4, missed


def test_a_photo_stays_in_scope_and_its_negative_does_not(shared_data):
    photos = [p for p in _val_photos(shared_data, step=10) if scope._colourful(p)]
    kept = [p for p in photos if not scope.is_out_of_scope(scope.scope_score(p))]
    flipped = [p for p in kept if scope.is_out_of_scope(scope.scope_score(255 - p))]
    assert len(kept) >= 0.9 * len(photos) and len(flipped) >= 0.85 * len(kept), (len(photos), len(kept), len(flipped))


def test_one_head_per_family_roundtrips_and_the_score_is_the_highest_head():
    rng = np.random.default_rng(1)
    d = len(scope.FEATURES)
    photos = rng.normal(0.3, 0.05, (60, d)).clip(0, 1)
    inverted = photos[:30].copy()
    inverted[:, 0] = 0.9
    gallery = photos[30:].copy()
    gallery[:, 1] = 0.9
    model = scope.fit_scope_model(photos, np.vstack([inverted, gallery]), limit=0.5,
                                  kinds=np.array(["inverted"] * 30 + ["gallery"] * 30))
    assert model.heads == ("inverted", "gallery") and model.coef.shape == (2, 2 * d)
    assert np.all(model.score_features(np.vstack([inverted, gallery])) > 0.5)
    assert np.mean(model.score_features(photos) < 0.5) > 0.9
    again = scope.ScopeModel.from_json(model.to_json())
    np.testing.assert_allclose(again.score_features(photos), model.score_features(photos), rtol=1e-4)


def test_load_input_computes_one_scope_score_per_photo_whatever_the_model_sizes(tmp_path, monkeypatch):
    from core.triage import inference

    path = tmp_path / "photo.jpg"
    make_photo((640, 480), 3).save(path, quality=90)
    calls = []
    real = scope.scope_score
    monkeypatch.setattr(scope, "scope_score", lambda rgb, *a: calls.append(rgb.shape) or real(rgb, *a))
    inputs, _, error, score = inference.load_input(path, (224, 299))
    assert error == "" and set(inputs) == {224, 299}
    assert isinstance(score, float) and len(calls) == 1  # one score, not one per input size
    assert inference.load_input(path, 224)[3] == score    # the same score a 224 px model alone records


def test_a_photo_and_its_enlargements_get_the_same_score():
    small = np.asarray(make_photo((256, 192), 4))
    double = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    assert np.array_equal(scope.scope_image(double), scope.scope_image(small))  # one working image
    assert scope.scope_image(small).shape == (96, 128, 3)
    huge = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)  # 4096 x 3072, 12.6 MP
    assert abs(scope.scope_score(huge) - scope.scope_score(small)) < 0.05


def test_a_uniform_frame_is_measured_and_set_aside():
    photo = np.asarray(make_photo((200, 160), 5))
    framed = np.zeros((200, 240, 3), np.uint8)  # a black slide mount, 20 px a side
    framed[20:180, 20:220] = photo
    border = scope.work_features(scope.scope_image(framed))[scope.FEATURES.index("border")]
    assert 0.2 < border < 0.42, border  # the frame is a third of the image
    assert scope.work_features(scope.scope_image(photo))[scope.FEATURES.index("border")] < 0.05
    assert not scope.is_out_of_scope(scope.scope_score(framed))


def test_plain_gradients_and_flat_fills_in_skin_colours_are_flagged():
    photos = [np.asarray(make_photo((224, 224), seed)) for seed in range(4)]
    items = scope.generate_from_photos(photos, 20, seed=9, kinds=("flat",))
    scores = [scope.scope_score(arr) for _, arr in items]
    assert sum(scope.is_out_of_scope(s) for s in scores) >= 19, scores


def test_hard_in_scope_variants_are_seeded_and_cover_every_kind():
    photos = [np.asarray(make_photo((224, 224), seed)) for seed in range(4)]
    a = scope.generate_hard_in_scope(photos, 2 * len(scope.HARD_KINDS), seed=3)
    b = scope.generate_hard_in_scope(photos, 2 * len(scope.HARD_KINDS), seed=3)
    assert [k for k, _ in a] == list(scope.HARD_KINDS) * 2
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert all(arr.ndim == 3 and arr.dtype == np.uint8 for _, arr in a)
    with pytest.raises(ValueError):
        scope.generate_hard_in_scope([], 1)


def test_framed_tinted_darker_lighter_wider_grainy_and_old_slide_versions_of_real_photos_stay_in_scope(shared_data):
    # val photos and a seed nothing was fitted on (the fit uses variants of train photos)
    items = scope.generate_hard_in_scope(_val_photos(shared_data), 70, seed=77)
    flagged = [k for k, arr in items if scope.is_out_of_scope(scope.scope_score(arr))]
    assert len(flagged) <= 4, flagged


def test_a_photo_gets_the_same_scope_score_whichever_thread_computes_it(tmp_path):
    """The defect: cv2.magnitude gave other last bits when the decode threads called it at once, so the same photo
    scored 0.189836 in one run and 0.189839 in another (and a CSV differed by the order models were named)."""
    from concurrent.futures import ThreadPoolExecutor

    from core.photos.images import load_rgb
    from tests.helpers import make_image_folder

    folder = make_image_folder(tmp_path / "f", n_per_class=4)
    rgbs = [load_rgb(p) for p in sorted(folder.rglob("*.jpg"))]
    alone = [scope.scope_score(r) for r in rgbs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(20):
            assert list(pool.map(scope.scope_score, rgbs)) == alone


def test_the_channel_tests_are_numpys_reductions_to_the_bit():
    """work_features tests 'every channel' with elementwise ANDs (numpy's reduction over an axis of 3 cost a
    quarter of the scope check): the same arrays as np.all / np.any over the channels, on any image."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    from core.photos.scope import _all_channels, _same_colour

    shapes = st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3))

    @settings(max_examples=200, deadline=None)
    @given(arrays(np.uint8, shapes))
    def check(img):
        for mask in (img >= 235, img <= 20, img > 127):
            assert np.array_equal(_all_channels(mask), np.all(mask, axis=2))
        i16 = img.astype(np.int16)
        if img.shape[1] > 1:
            assert np.array_equal(_same_colour(i16[:, 1:], i16[:, :-1]), ~np.any(np.diff(i16, axis=1), axis=2))
        if img.shape[0] > 1:
            assert np.array_equal(_same_colour(i16[1:], i16[:-1]), ~np.any(np.diff(i16, axis=0), axis=2))

    check()
