"""Adapting a bundle to a site: it must help where the base data misleads, refuse too few photos and
never write over a bundle. Tiny generated data: the 'embedding' is a photo's mean colour features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 16


def colour_model():
    """image -> mean of [r, g, b, 1-r, 1-g, 1-b] (the embedding) -> Dense logit."""
    import keras

    inputs = keras.Input(shape=(SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    conv = keras.layers.Conv2D(6, 1, activation="relu", name="colour")
    x = conv(x)
    conv.set_weights([np.concatenate([np.eye(3), -np.eye(3)], axis=1).reshape(1, 1, 3, 6).astype("float32"),
                      np.array([0, 0, 0, 1, 1, 1], dtype="float32")])
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    logit = keras.layers.Dense(1, name="logit")(emb)
    return keras.Model(inputs, {"logit": logit, "embedding": emb}, name="colour")


def colour_features(rgb: np.ndarray) -> np.ndarray:
    c = rgb.reshape(len(rgb), -1, 3).mean(axis=1) / 255.0
    return np.concatenate([c, 1 - c], axis=1)


PHOTO = 48   # the files' side: photos of skin to the scope check (core.photos.scope), resized to SIZE by the model


def photos(n: int, mpox: bool, site: bool, rng) -> np.ndarray:
    """Generated skin photos (tests.helpers.make_photo) with a class tint. Base: mpox photos are redder.
    Site: red says nothing; mpox photos are greener and bluer. A draw the scope check would call not a
    skin photo is drawn again, so adapt leaves none out."""
    from core.photos.scope import is_out_of_scope, scope_score
    from tests.helpers import make_photo

    out = []
    while len(out) < n:
        img = np.asarray(make_photo((PHOTO, PHOTO), seed=int(rng.integers(1 << 30)))).astype(np.float64)
        shift = rng.normal(0, 6, size=3)
        if site:
            shift[1:] += 14 if mpox else -14
            shift[0] += rng.normal(0, 14)
        else:
            shift[0] += 15 if mpox else -15
        img = np.clip(img + shift, 0, 255).astype(np.uint8)
        if not is_out_of_scope(scope_score(img)):
            out.append(img)
    return np.stack(out)


def make_base_bundle(out: Path, seed: int = 0) -> Path:
    from core.models.bundle import ModelCard, save_bundle
    from core.learning.features import EMBEDDINGS_FILE, embeddings_npz_bytes
    from core.models.heads import attach_head, fit_logistic
    from core.models.ood import fit_ood

    rng = np.random.default_rng(seed)
    x = np.concatenate([photos(30, True, False, rng), photos(30, False, False, rng)])
    y = np.array([1] * 30 + [0] * 30)
    emb = colour_features(x)
    split = np.where(np.arange(60) % 4 == 0, "val", "train")
    head = fit_logistic(emb[split == "train"], y[split == "train"], C=1.0)
    model = attach_head(colour_model(), head)
    card = ModelCard(name="base", version="1.0.0", architecture="mobilenetv2", input_size=SIZE, threshold=0.5,
                     ood_threshold=100.0, training={"hyperparameters": {"head": {"C": 1.0}}})
    npz = embeddings_npz_bytes(emb, y, ["gen"] * 60, split, [f"{i:064x}" for i in range(60)])
    return save_bundle(model, card, out, ood=fit_ood(emb, 3), extra_files={EMBEDDINGS_FILE: npz})


def site_folder(root: Path, n_mpox: int, n_other: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    for cls, n, m in (("mpox", n_mpox, True), ("other", n_other, False)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(photos(n, m, True, rng)):
            Image.fromarray(img).save(root / cls / f"{cls}_{i:03d}.png")
    return root


def folder_items(root: Path):
    from core.learning.datasets import load_folder_dataset

    ds = load_folder_dataset(root)
    return [s.path for s in ds.samples], [s.y for s in ds.samples]


def test_adapting_improves_the_sites_cross_validated_auc(tmp_path):
    from core.learning.adapt import adapt_bundle, save_adapted
    from core.models.bundle import load_bundle

    bundle = load_bundle(make_base_bundle(tmp_path / "base"))
    paths, labels = folder_items(site_folder(tmp_path / "site", 20, 20))
    result = adapt_bundle(bundle, paths, labels, n_bootstrap=50)
    rep = result.report
    assert rep["site_parent"]["roc_auc"] < 0.75           # the base model does not transfer
    assert rep["site_cv"]["roc_auc"] > rep["site_parent"]["roc_auc"] + 0.15
    assert rep["site_cv"]["roc_auc"] > 0.85
    assert rep["site"] == {"photos": 40, "mpox": 20, "not_mpox": 20, "unreadable": [], "from": "",
                           "out_of_scope": {"flagged": 0, "used": False}}
    assert result.warnings and "rough" in result.warnings[0]          # fewer than 30 per class
    assert rep["base_val_before"]["roc_auc"] > 0.9 and rep["base_val_after"]["n"] == 15
    curve = rep["learning_curve"]
    assert curve[0]["k_site"] == 0 and curve[-1]["cv_roc_auc"] > curve[0]["cv_roc_auc"]
    assert result.card.parent == {"name": "base", "version": "1.0.0", "sha256": bundle.card.model_sha256}
    assert rep["site_cv"]["sensitivity"] >= 0.9  # threshold set on the cross-validated site predictions

    out = save_adapted(result, tmp_path / "adapted")
    adapted = load_bundle(out)
    assert "embeddings.npz" in adapted.card.files
    # The saved model computes what the report describes: better ranking of the site photos.
    from sklearn.metrics import roc_auc_score
    from core.photos.preprocess import load_model_input

    batch = np.stack([load_model_input(p, SIZE) for p in paths])
    assert roc_auc_score(labels, adapted.forward(batch)[0]) > roc_auc_score(labels, bundle.forward(batch)[0])


def test_too_few_photos_are_refused_with_how_many_more(tmp_path, capsys):
    from core.cli import main

    base = make_base_bundle(tmp_path / "base")
    site = site_folder(tmp_path / "site", 6, 12)
    out = tmp_path / "new"
    assert main(["adapt", "--model", str(base), "--labelled", str(site), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4 more mpox" in err[0] and "6 mpox and 12 not-mpox" in err[0]
    assert not out.exists()


def test_adapt_never_writes_over_a_bundle(tmp_path, monkeypatch, capsys):
    from core.models.bundle import sha256_file
    from core.cli import main

    shipped = tmp_path / "models"
    base = make_base_bundle(shipped / "base")
    monkeypatch.setenv("MPOX_TRIAGE_MODELS_DIR", str(shipped))
    before = {p.name: sha256_file(p) for p in base.iterdir()}
    site = site_folder(tmp_path / "site", 10, 10)
    other = make_base_bundle(tmp_path / "mine")   # an existing folder outside models/
    for out, force in ((base, True), (shipped / "new", True), (other, False)):
        args = ["adapt", "--model", "base", "--labelled", str(site), "--out", str(out), "--quiet"]
        assert main(args + (["--force"] if force else [])) == 2
        assert "shipped models folder" in capsys.readouterr().err or not force
    assert {p.name: sha256_file(p) for p in base.iterdir()} == before
    assert not (shipped / "new").exists()
    # A new folder elsewhere works, and the result is a loadable bundle naming its parent.
    assert main(["adapt", "--model", "base", "--labelled", str(site), "--out", str(tmp_path / "ok"), "--quiet"]) == 0
    from core.models.bundle import read_card

    assert read_card(tmp_path / "ok").parent["name"] == "base"


def test_session_reviews_feed_adapt_and_unsure_is_left_out(tmp_path):
    from core.commands.adapt import _session_items
    from core.store.session import SessionStore

    site = site_folder(tmp_path / "site", 3, 3)
    files = sorted(site.rglob("*.png"))
    with SessionStore.open(tmp_path / "sess") as store:
        store.set_review(files[0], "mpox")
        store.set_review(files[1], "unsure")
        store.set_review(files[2], "not_mpox")
        store.set_review(files[2], "mpox")   # the newest review wins
    labelled, _ = _session_items(str(tmp_path / "sess"))
    assert sorted((p, label) for p, label, _ in labelled) == sorted([(str(files[0]), "mpox"), (str(files[2]), "mpox")])


def test_uncertainty_order_prefers_uncertain_and_diverse():
    from core.triage.labelling import suggest_next

    rng = np.random.default_rng(0)
    emb = np.abs(rng.normal(size=(40, 5)))
    logits = np.linspace(-6, 6, 40)          # index 20 is nearest the boundary (0)
    emb[21] = emb[20]                        # a near-copy of the most uncertain photo
    emb[19] = emb[20] + 1e-6
    picks = suggest_next(logits, emb, 4, order="uncertainty")
    assert picks[0] in (19, 20)
    assert len(set(picks)) == 4 and not {19, 20, 21} <= set(picks)   # not three copies of one photo
    assert all(abs(logits[i]) <= 3.0 for i in picks)                  # all from the uncertain pool
