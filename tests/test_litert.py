"""Bundles on LiteRT and numpy: the backbone export + numpy head agree with Keras, combined runs each backbone
once per photo, Grad-CAM needs no TensorFlow, and a missing TensorFlow is said in one line.

The machinery is tested on tiny bundles built here; the shipped bundles (or those in $MPOX_TRIAGE_MODELS_DIR)
are checked on ../shared test photos once they carry their LiteRT export (release 1.3.0 on).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.helpers import make_image_folder, make_light_combined, make_tiny_bundle


def _photos(folder):
    from core.photos.images import discover_images

    return discover_images(folder / "mpox") + discover_images(folder / "other")


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    """(models folder, photos folder, combined, alpha, beta): a tiny combined release with LiteRT runtimes."""
    root = tmp_path_factory.mktemp("light")
    photos = make_image_folder(root / "photos", n_per_class=3)
    combined, a, b = make_light_combined(root / "models", photos)
    return root / "models", photos, combined, a, b


def test_attached_runtime_is_a_litert_backbone_and_a_numpy_head_recorded_in_the_card(light):
    from core.models.bundle import load_bundle, read_card, sha256_file

    _models, photos, _c, a, _b = light
    card = read_card(a)
    info = card.extra["runtime"]
    assert info["kind"] == "backbone" and info["format"] == "tflite" and info["model_sha256"] == card.model_sha256
    assert card.files[info["file"]] == sha256_file(a / info["file"]) == info["sha256"]
    assert card.files[info["head"]] == sha256_file(a / info["head"])
    assert info["agreement"]["max_abs_diff_p"] <= 1e-4 and info["agreement"]["images"] == 6
    assert info["outputs"]["embedding"] == 16 and len(info["outputs"]["feature_map"]) == 3
    fast, keras = load_bundle(a), load_bundle(a, runtime="keras")
    assert fast.runtime_name == "litert" and fast._model is None
    x = np.stack([np.asarray(p, np.uint8) for p in np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3))])
    lf, ef = fast.forward(x)
    lk, ek = keras.forward(x)
    np.testing.assert_allclose(fast.calibrate(lf), keras.calibrate(lk), atol=1e-5)
    np.testing.assert_allclose(ef, ek, atol=1e-4)
    fmap, emb = fast.features(x)
    np.testing.assert_allclose(fmap.mean(axis=(1, 2)), emb, atol=1e-5)  # the embedding pools the feature map


def test_reattaching_keeps_other_card_fields_and_removes_the_old_runtime_files(tmp_path, image_folder):
    from core.models.bundle import read_card, write_card
    from core.models.export import attach_light_runtime

    bundle_dir = make_tiny_bundle(tmp_path / "tiny")
    card = read_card(bundle_dir)
    card.extra["operating_points"] = {"screening": {"threshold": 0.3, "uncertain_band": [0.2, 0.4]}}  # someone else's field: kept
    write_card(bundle_dir, card)
    first = attach_light_runtime(bundle_dir, image_folder(1))
    # A different check set gives the same files (same content, same names): nothing to remove.
    second = attach_light_runtime(bundle_dir, None)
    assert (first["file"], first["head"]) == (second["file"], second["head"])
    card = read_card(bundle_dir)
    assert card.extra["operating_points"] == {"screening": {"threshold": 0.3, "uncertain_band": [0.2, 0.4]}}
    assert card.extra["runtime"]["check_images"].startswith("16 generated")
    assert sorted(p.name for p in bundle_dir.iterdir() if p.suffix in (".tflite", ".npz") and p.name != "ood.npz") \
        == sorted([second["file"], second["head"]])


def test_a_combined_runtime_needs_its_components_runtimes_first(tmp_path, image_folder):
    from core.models.bundle import read_card
    from core.models.export import ExportError, attach_light_runtime
    from tests.test_combined import make_combined

    combined, a, _b, _head = make_combined(tmp_path / "models")
    before = (combined / "model_card.json").read_bytes()
    with pytest.raises(ExportError, match="attach its runtime first"):
        attach_light_runtime(combined, image_folder(1))
    assert (combined / "model_card.json").read_bytes() == before
    assert not list(combined.glob("head-*.npz")) and not list(combined.glob(".runtime*"))
    assert "runtime" not in read_card(a).extra


def test_combined_runs_on_numpy_head_and_records_its_components_runtimes(light):
    from core.models.bundle import load_bundle, read_card

    models, _photos, combined, a, b = light
    card = read_card(combined)
    info = card.extra["runtime"]
    assert info["kind"] == "head" and info["agreement"]["max_abs_diff_p"] <= 1e-4
    comp_cards = [read_card(a), read_card(b)]
    assert [c["runtime_sha256"] for c in info["components"]] == [c.extra["runtime"]["sha256"] for c in comp_cards]
    # the component references name the components' current cards (sealed after their runtimes were attached)
    assert [r["card_sha256"] for r in card.extra["components"]] == [c.card_sha256 for c in comp_cards]
    bundle = load_bundle("combined", models_dir=models)
    assert bundle._model is None and bundle.runtime_name == "alpha:litert+beta:litert; head:numpy"
    assert bundle.input_sizes == (32, 48)


def test_combined_scores_its_components_in_the_same_pass_as_standalone_runs_do(light, monkeypatch):
    """Each backbone runs once per photo; the component rows equal standalone runs of the components."""
    from core.models.bundle import load_bundle
    from core.triage.inference import ComponentEngine, InferenceEngine, share_backbones

    models, photos, *_ = light
    paths = _photos(photos) + [photos / "missing.jpg"]
    alone = {name: list(InferenceEngine(load_bundle(name, models_dir=models)).run(paths)) for name in ("alpha", "beta")}
    combined = load_bundle("combined", models_dir=models)
    calls = {"alpha": 0, "beta": 0}

    class Counting:
        """The component's runtime, counting the photos its backbone sees."""

        def __init__(self, runner, name):
            self.runner, self.name, self.head, self.features = runner, name, runner.head, runner.features

        def __call__(self, batch):
            calls[self.name] += len(batch)
            return self.runner(batch)

    standalone = [load_bundle("alpha", models_dir=models), load_bundle("beta", models_dir=models)]
    for comp in list(combined.components) + standalone:  # every backbone this run could use, counted
        monkeypatch.setattr(comp, "runtime", Counting(comp.runtime, comp.card.name))
    engines = [InferenceEngine(standalone[0]), InferenceEngine(combined), InferenceEngine(standalone[1])]
    order = share_backbones(engines)
    assert order[0].bundle is combined and all(isinstance(e, ComponentEngine) for e in order[1:])
    assert [e.card.name for e in order[1:]] == ["alpha", "beta"]
    rows = {e.card.name: list(e.run(paths)) for e in order}
    assert calls == {"alpha": 6, "beta": 6}  # six readable photos, each backbone once
    for name in ("alpha", "beta"):
        got, want = rows[name], alone[name]
        assert [r.path for r in got] == [r.path for r in want]
        assert [r.status for r in got] == [r.status for r in want] == ["ok"] * 6 + ["error"]
        np.testing.assert_allclose([r.p_mpox for r in got[:6]], [r.p_mpox for r in want[:6]], atol=1e-6)
        assert [r.flag for r in got] == [r.flag for r in want]
        assert [r.prediction for r in got] == [r.prediction for r in want]


def test_cli_both_writes_component_columns_from_one_pass(light, tmp_path, monkeypatch):
    from core.cli import main

    models, photos, *_ = light
    monkeypatch.setenv("MPOX_TRIAGE_MODELS_DIR", str(models))
    out = tmp_path / "both.csv"
    assert main(["classify", str(photos / "mpox"), "--model", "combined", "--model", "alpha", "--model", "beta",
                 "--csv", str(out), "--quiet"]) == 0
    one = tmp_path / "alpha.csv"
    assert main(["classify", str(photos / "mpox"), "--model", "alpha", "--csv", str(one), "--quiet"]) == 0
    both = list(csv.DictReader(out.open(encoding="utf-8")))
    alone = list(csv.DictReader(one.open(encoding="utf-8")))
    col = next(k for k in both[0] if k.startswith("p_mpox__alpha"))
    assert [float(r[col]) for r in both] == pytest.approx([float(r["p_mpox"]) for r in alone], abs=1e-6)


def test_gradcam_without_tensorflow_matches_the_tensorflow_gradcam(light):
    """The numpy class activation map (exact gradient of the linear head on pooled features) against the
    gradient-tape Grad-CAM of the Keras model, on the same photos."""
    from core.models.bundle import load_bundle
    from core.models.explain import gradcam
    from core.photos.images import load_rgb

    models, photos, *_ = light
    for name in ("alpha", "beta", "combined"):
        fast, keras = load_bundle(name, models_dir=models), load_bundle(name, models_dir=models, runtime="keras")
        for path in _photos(photos)[:3]:
            rgb = load_rgb(path)
            a, b = gradcam(fast, rgb), gradcam(keras, rgb)
            assert a.shape == b.shape == rgb.shape[:2]
            if b.std() > 0:
                assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999, name
            np.testing.assert_allclose(a, b, atol=2e-3)


def test_signed_sqrt_gradient_is_finite_and_exact():
    from core.models.explain import signed_sqrt_grad
    from core.models.heads import signed_sqrt

    e = np.array([0.0, 1e-6, 0.25, 4.0, -4.0])
    g = signed_sqrt_grad(e)
    assert g[0] == 0.0 and np.isfinite(g).all()
    h = 1e-9
    numeric = (signed_sqrt(e[1:] + h) - signed_sqrt(e[1:] - h)) / (2 * h)
    np.testing.assert_allclose(g[1:3], numeric[:2], rtol=1e-3)
    np.testing.assert_allclose(g[2:], [1.0, 0.25, 0.25])


def test_without_tensorflow_a_bundle_without_runtime_and_training_say_so_in_one_line(tmp_path, monkeypatch, capsys):
    import core.models.tf_runtime as tfr
    from core.models.bundle import BundleError, load_bundle
    from core.cli import main

    bundle_dir = make_tiny_bundle(tmp_path / "models" / "plain")
    monkeypatch.setattr(tfr, "_loaded", False)
    monkeypatch.setattr(tfr, "tensorflow_available", lambda: False)
    with pytest.raises(BundleError, match=r"no verified LiteRT export.*mpox-triage\[train\]"):
        load_bundle(bundle_dir)
    assert main(["train", str(tmp_path), "--arch", "mobilenetv2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training needs TensorFlow" in err[0] and "[train]" in err[0]
    assert main(["export", "--model", str(bundle_dir), "--attach"]) == 2
    assert "needs TensorFlow" in capsys.readouterr().err


# -- the shipped bundles (or those in $MPOX_TRIAGE_MODELS_DIR) on ../shared test photos ----------------------

SHIPPED = ("mobilenetv2", "xception", "combined")


def _light_bundle_or_skip(name):
    from core.models.bundle import BundleError, default_models_dir, read_card, resolve_bundle_dir, runtime_info

    try:
        folder = resolve_bundle_dir(name, default_models_dir())
    except BundleError:
        pytest.skip(f"no bundle {name} in {default_models_dir()}")
    card = read_card(folder)
    if runtime_info(card).get("kind") not in ("backbone", "head"):
        pytest.skip(f"{card.display_name} in {folder} has no LiteRT export yet (bundles carry one from release 1.3.0; "
                    "core.models.export.attach_light_runtime adds it)")
    return folder, card


def _test_photos(shared_data, n):
    with open(shared_data / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    return [shared_data / r["path"] for r in rows[::max(1, len(rows) // n)][:n]]


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_on_litert_agrees_with_keras_on_shared_test_photos(name, shared_data):
    from core.models.bundle import load_bundle
    from core.triage.inference import classify_paths

    folder, card = _light_bundle_or_skip(name)
    agreement = card.extra["runtime"]["agreement"]
    assert agreement["max_abs_diff_p"] <= 1e-4 and agreement["images"] >= 16  # recorded when it was attached
    photos = _test_photos(shared_data, 16)
    fast, keras = load_bundle(folder), load_bundle(folder, runtime="keras")
    assert fast._model is None
    got = classify_paths(photos, fast)
    want = classify_paths(photos, keras)
    assert [r.status for r in got] == [r.status for r in want] == ["ok"] * len(photos)
    assert max(abs(a.p_mpox - b.p_mpox) for a, b in zip(got, want)) <= 1e-4
    assert [a.prediction for a in got] == [b.prediction for b in want]


@pytest.mark.shared_data
@pytest.mark.slow
def test_shipped_combined_component_rows_equal_standalone_runs(shared_data):
    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine, share_backbones

    folder, _card = _light_bundle_or_skip("combined")
    photos = _test_photos(shared_data, 16)
    combined = load_bundle(folder)
    engines = share_backbones([InferenceEngine(combined)] + [InferenceEngine(load_bundle(c.path))
                                                             for c in combined.components])
    rows = [list(e.run(photos)) for e in engines]
    for comp, got in zip(combined.components, rows[1:]):
        want = list(InferenceEngine(load_bundle(comp.path)).run(photos))
        assert max(abs(a.p_mpox - b.p_mpox) for a, b in zip(got, want)) <= 1e-4
        assert [a.flag for a in got] == [b.flag for b in want]


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("name", ("mobilenetv2", "xception"))
def test_shipped_gradcam_without_tensorflow_matches_the_tensorflow_one(name, shared_data):
    from core.models.bundle import load_bundle
    from core.models.explain import gradcam
    from core.photos.images import load_rgb

    folder, _card = _light_bundle_or_skip(name)
    fast, keras = load_bundle(folder), load_bundle(folder, runtime="keras")
    for path in _test_photos(shared_data, 3):
        rgb = load_rgb(path, max_side=512)
        a, b = gradcam(fast, rgb), gradcam(keras, rgb)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


# -- adaptation on LiteRT and numpy ------------------------------------------------------------------------------

@pytest.fixture
def light_base(tmp_path):
    """(light base bundle folder, site photo paths, labels): the adapt tests' base bundle with its runtime."""
    from core.models.export import attach_light_runtime
    from tests.test_adapt import folder_items, make_base_bundle, site_folder

    base = make_base_bundle(tmp_path / "base")
    paths, labels = folder_items(site_folder(tmp_path / "site", 12, 12))
    attach_light_runtime(base, paths[::3])
    return base, paths, labels


def test_adapting_without_tensorflow_writes_a_bundle_that_runs_on_litert_and_numpy(light_base, tmp_path,
                                                                                    monkeypatch):
    import core.models.tf_runtime as tfr
    from core.learning.adapt import adapt_bundle, save_adapted
    from core.models.bundle import load_bundle, read_card, sha256_file
    from core.photos.preprocess import load_model_input

    base, paths, labels = light_base
    monkeypatch.setattr(tfr, "tensorflow_available", lambda: False)
    parent = load_bundle(base)
    result = adapt_bundle(parent, paths, labels, n_bootstrap=20)
    assert result.model is None
    out = save_adapted(result, tmp_path / "adapted")
    card = read_card(out)
    info = card.extra["runtime"]
    assert "model.keras" not in card.files and card.model_sha256 == card.files[info["head"]]
    parent_backbone = read_card(base).extra["runtime"]["file"]
    assert info["file"] == parent_backbone and sha256_file(out / parent_backbone) == sha256_file(base / parent_backbone)
    adapted = load_bundle(out)
    batch = np.stack([load_model_input(p, 16) for p in paths])
    logits, emb = adapted.forward(batch)
    np.testing.assert_allclose(logits, result.head.logits(parent.forward(batch)[1]), atol=1e-9)
    assert not np.allclose(logits, parent.forward(batch)[0])  # a new head, not the parent's


def test_adapting_with_tensorflow_also_writes_keras_and_checks_the_runtime_against_it(light_base, tmp_path):
    from core.learning.adapt import adapt_bundle, save_adapted
    from core.models.bundle import load_bundle, read_card
    from core.photos.preprocess import load_model_input

    base, paths, labels = light_base
    result = adapt_bundle(load_bundle(base), paths, labels, n_bootstrap=20)
    assert result.model is not None
    out = save_adapted(result, tmp_path / "adapted")
    card = read_card(out)
    info = card.extra["runtime"]
    assert "model.keras" in card.files and info["kind"] == "backbone" and info["agreement"]["max_abs_diff_p"] <= 1e-4
    assert info["file"] == read_card(base).extra["runtime"]["file"]  # the parent's backbone, not converted again
    fast, keras = load_bundle(out), load_bundle(out, runtime="keras")
    assert fast._model is None
    batch = np.stack([load_model_input(p, 16) for p in paths])
    np.testing.assert_allclose(fast.calibrate(fast.forward(batch)[0]), keras.calibrate(keras.forward(batch)[0]),
                               atol=1e-5)


def test_both_in_separate_threads_waits_for_the_combined_pass_and_scores_what_it_missed(light):
    """As in the app (one worker thread per model): the component engines wait for the combined engine's
    rows; a photo the combined run does not score (already in its session) is scored by the component."""
    import threading

    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine, backbone_sharing, shared_engine

    models, photos, *_ = light
    paths = _photos(photos)
    bundles = [load_bundle(n, models_dir=models) for n in ("combined", "alpha", "beta")]
    roles = backbone_sharing([b.card for b in bundles])
    assert [r[0] for r in roles] == ["combined", "component", "component"]
    engines = [shared_engine(b, r, batch_size=2) for b, r in zip(bundles, roles)]
    out: dict = {}

    def work(i, todo):
        out[i] = list(engines[i].run(todo))

    threads = [threading.Thread(target=work, args=(1, paths)), threading.Thread(target=work, args=(2, paths))]
    for t in threads:
        t.start()
    work(0, paths[1:])  # the combined run skips the first photo
    for t in threads:
        t.join(60)
    for i, name in ((1, "alpha"), (2, "beta")):
        want = list(InferenceEngine(load_bundle(name, models_dir=models)).run(paths))
        assert [r.path for r in out[i]] == [r.path for r in want]
        np.testing.assert_allclose([r.p_mpox for r in out[i]], [r.p_mpox for r in want], atol=1e-6)
