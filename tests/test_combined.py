"""The combined bundle: a head over two component bundles' embeddings, components verified by hash."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import make_image_folder, make_tiny_bundle


def make_combined(models, head_seed: int = 0):
    """Two tiny components (input 32 and 48 px) and a combined head over their 16 + 16 embeddings."""
    from core.models.bundle import ModelCard, read_card
    from core.models.combined import component_ref, save_combined
    from core.learning.features import EMBEDDINGS_FILE, embeddings_npz_bytes
    from core.models.heads import LinearHead, embedding_head_model

    a = make_tiny_bundle(models / "alpha", name="alpha", input_size=32, seed=1)
    b = make_tiny_bundle(models / "beta", name="beta", input_size=48, seed=2)
    rng = np.random.default_rng(head_seed)
    head = LinearHead(rng.normal(size=32), 0.1)
    refs = [component_ref(a, read_card(a), 16), component_ref(b, read_card(b), 16)]
    emb = np.abs(rng.normal(size=(20, 32)))
    npz = embeddings_npz_bytes(emb, [0, 1] * 10, ["gen"] * 20, ["train"] * 20, [f"{i:064x}" for i in range(20)])
    card = ModelCard(name="combined", version="1.0.0", architecture="combined", input_size=0, threshold=0.5,
                     uncertain_band=[0.45, 0.55])
    out = save_combined(embedding_head_model(32, head), card, models / "combined", refs,
                        extra_files={EMBEDDINGS_FILE: npz})
    return out, a, b, head


def test_combined_loads_verifies_components_and_classifies(tmp_path):
    from core.models.bundle import load_bundle
    from core.models.combined import CombinedBundle
    from core.models.explain import gradcam
    from core.triage.inference import classify_paths
    from core.photos.preprocess import load_model_input, to_model_input

    models = tmp_path / "models"
    out, a, b, head = make_combined(models)
    bundle = load_bundle("combined", models_dir=models)
    assert isinstance(bundle, CombinedBundle) and bundle.input_size == 48
    assert [c.card.name for c in bundle.components] == ["alpha", "beta"]
    photos = make_image_folder(tmp_path / "photos", n_per_class=2)
    paths = sorted(photos.rglob("*.jpg"))
    records = classify_paths(paths, bundle)
    assert [r.status for r in records] == ["ok"] * 4
    # The decision is the head on the concatenated component embeddings, each component's input decoded
    # from the file at its own size, exactly as the component alone decodes it.
    x = np.stack([load_model_input(p, 48) for p in paths])
    ea = load_bundle(a).forward(np.stack([load_model_input(p, 32) for p in paths]))[1]
    eb = load_bundle(b).forward(x)[1]
    want = 1 / (1 + np.exp(-head.logits(np.concatenate([ea, eb], axis=1))))
    got = np.array([r.p_mpox for r in records])
    np.testing.assert_allclose(got, want, atol=1e-5)
    cam = gradcam(bundle, x[0])
    assert cam.shape == (48, 48) and 0.0 <= cam.min() and cam.max() <= 1.0


def test_combined_refuses_a_missing_or_mismatched_component(tmp_path):
    import shutil

    from core.models.bundle import BundleError, load_bundle

    models = tmp_path / "models"
    make_combined(models)
    shutil.rmtree(models / "beta")  # bundles are never written over: replace the component by hand
    make_tiny_bundle(models / "beta", name="beta", input_size=48, seed=3)  # same name and version, other weights
    with pytest.raises(BundleError, match="needs component bundle beta"):
        load_bundle("combined", models_dir=models)
    shutil.rmtree(models / "beta")
    with pytest.raises(BundleError, match="none found"):
        load_bundle("combined", models_dir=models)


def test_embeddings_are_hash_covered(tmp_path):
    from core.models.bundle import BundleError, load_bundle
    from core.learning.features import load_embeddings

    models = tmp_path / "models"
    out, *_ = make_combined(models)
    bundle = load_bundle(out)
    data = load_embeddings(bundle)
    assert data["embedding"].shape == (20, 32) and set(data) >= {"label", "source", "split", "path_sha"}
    np.savez_compressed(out / "embeddings.npz", **{**data, "label": 1 - data["label"]})  # flip the labels
    with pytest.raises(BundleError, match="embeddings.npz"):
        load_bundle(out)
    with pytest.raises(BundleError, match="embeddings"):
        load_embeddings(bundle)  # a bundle loaded before the change still refuses the changed file


def test_a_logistic_head_bundle_loads_in_a_fresh_process(tmp_path):
    """Safe-mode loading must register the SignedSqrt layer itself (as in a new process, not via training)."""
    import keras

    import core.models.heads
    from core.models.bundle import load_bundle
    from core.models.heads import LinearHead, attach_head
    from core.models.bundle import ModelCard, save_bundle
    from tests.helpers import make_tiny_model

    model = attach_head(make_tiny_model(), LinearHead(np.ones(16), 0.0))
    out = save_bundle(model, ModelCard(name="t", version="1", architecture="mobilenetv2", input_size=32), tmp_path / "b")
    keras.saving.get_custom_objects().pop("mpox_triage>SignedSqrt", None)   # forget the registration
    core.models.heads._LAYER = None
    bundle = load_bundle(out, runtime="keras")
    assert any(layer.name == "signed_sqrt" for layer in bundle.model.layers)


def test_both_in_the_app_decides_with_the_combined_model_and_shows_each_backbone_score(qtbot, tmp_path):
    """'Both' runs the combined bundle (its call is the photo's prediction, its p(mpox) has its own column) and
    its two components (their scores side by side in one compact column, docs/desktop.md "Layout"); the CSV
    export has one row per photo with every model side by side."""
    import csv

    from PySide6.QtCore import QSettings, Qt

    from core.triage.reasons import call_text
    from desktop_app.mainwindow import MainWindow
    from desktop_app.settings.store import AppSettings

    models = tmp_path / "models"
    out, a, b, _head = make_combined(models)
    photos = make_image_folder(tmp_path / "photos", n_per_class=3)
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    settings.reviewer = "tester"
    window = MainWindow(settings, models_dir=models, sessions_dir=tmp_path / "sessions")
    qtbot.addWidget(window)
    window.select_model("Both")
    assert [c.name for c in window.selected_cards()] == ["combined", "alpha", "beta"]
    assert "combined 1.0.0 decides" in window.model_combo.currentText()
    assert window.open_folder(photos)
    with qtbot.waitSignal(window.run_finished, timeout=120_000) as blocker:
        assert window.run()
    assert blocker.args[0]["kept"] == 6 and blocker.args[0]["results"] == 18
    keys = [k for k, _name in window.model.models]
    combined_key = window.selected_cards()[0].key
    assert keys[0] == combined_key and len(keys) == 3
    model = window.model
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert sum(1 for h in headers if h and h.startswith("p(mpox)")) == 1
    p_col, scores_col = model.column_of("p"), model.column_of("scores")
    assert model.column_kind(p_col) == ("p", combined_key)
    names = dict(model.models)
    assert headers[p_col] == f"p(mpox)\n{names[combined_key]}"
    assert headers[scores_col] == " ·\n".join(names[k] for k in keys[1:])   # the components, in picker order
    for row in model.rows:
        assert model.call(row) == row.records[combined_key].prediction   # the combined model decides
        r = model.row_of(row.path)
        assert model.index(r, model.column_of("prediction")).data() == call_text(row.records[combined_key].prediction)
        assert model.index(r, p_col).data() == f"{row.records[combined_key].p_mpox:.3f}"
        assert model.index(r, scores_col).data() == " · ".join(f"{row.records[k].p_mpox:.3f}" for k in keys[1:])
    csv_path = window.export_csv(str(tmp_path / "both.csv"))
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert {"p_mpox__combined", "p_mpox__alpha", "p_mpox__beta", "agreement"} <= set(rows[0])
    assert list(rows[0])[-1] == "needs_review"
    window.close()
