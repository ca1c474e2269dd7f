"""Folder shift alarm: quiet on a random split of one source, fires on a shifted one, skips small folders."""

from __future__ import annotations

import numpy as np
import pytest

from core.triage.shift import MIN_PHOTOS, folder_shift, reference_embeddings, shift_test


def _source(rng: np.random.Generator, n: int, centre: np.ndarray, dim: int = 64) -> np.ndarray:
    # Two classes, like photos of two conditions from one collection.
    y = rng.random(n) < 0.4
    return rng.normal(size=(n, dim)) + centre + np.outer(y, np.r_[2.0, np.zeros(dim - 1)])


def test_quiet_on_random_splits_of_one_source():
    rng = np.random.default_rng(0)
    data = _source(rng, 900, np.zeros(64))
    fired = 0
    for i in range(20):
        idx = rng.permutation(len(data))
        fired += shift_test(data[idx[:60]], data[idx[200:]], n_permutations=200, seed=i).detected
    # 20 draws at alpha 0.05: 3 or more false alarms happen with probability < 8%.
    assert fired <= 3


def test_fires_on_a_shifted_source():
    rng = np.random.default_rng(1)
    ref = _source(rng, 600, np.zeros(64))
    other = _source(rng, 40, np.r_[np.zeros(32), np.full(32, 0.4)])
    result = shift_test(other, ref, n_permutations=200)
    assert result.detected and result.p_value < 0.01 and result.n == 40


def test_result_dict_is_the_summary_contract():
    rng = np.random.default_rng(2)
    d = shift_test(rng.normal(size=(35, 8)), rng.normal(size=(100, 8)), n_permutations=99).to_dict()
    assert set(d) == {"detected", "p_value", "statistic", "n", "method"}
    assert isinstance(d["detected"], bool) and 0 < d["p_value"] <= 1 and d["n"] == 35


def test_below_thirty_photos_the_test_does_not_run():
    rng = np.random.default_rng(3)
    result = shift_test(rng.normal(size=(MIN_PHOTOS - 1, 8)) + 10, rng.normal(size=(200, 8)))
    assert not result.detected and result.p_value is None and str(MIN_PHOTOS) in result.reason
    assert result.to_dict()["reason"] and "not run" in result.message()


def test_same_seed_same_answer_and_large_folders_are_subsampled():
    rng = np.random.default_rng(4)
    folder, ref = rng.normal(size=(3000, 16)), rng.normal(size=(2000, 16))
    a = shift_test(folder, ref, n_permutations=99, seed=7)
    b = shift_test(folder, ref, n_permutations=99, seed=7)
    assert a.p_value == b.p_value and a.n == 3000 and a.extra["n_used"] <= 500


def test_mismatched_dimensions_say_what_is_wrong():
    with pytest.raises(ValueError, match="same model"):
        shift_test(np.zeros((40, 8)), np.ones((100, 9)))


def test_reference_embeddings_come_from_the_bundle_file(tmp_path):
    assert reference_embeddings(tmp_path) is None
    emb = np.arange(12, dtype=np.float16).reshape(4, 3)
    np.savez_compressed(tmp_path / "embeddings.npz", embedding=emb, label=np.array(["mpox"] * 4),
                        source=np.array(["A"] * 4), split=np.array(["train", "val", "train", "test"]))
    got = reference_embeddings(tmp_path)
    assert got.dtype == np.float32 and got.tolist() == emb[[0, 2]].astype(np.float32).tolist()


def test_folder_shift_without_reference_explains_why():
    result = folder_shift(None, [np.zeros(4)] * 40)
    assert not result.detected and "embeddings" in result.reason and result.n == 40


def test_engine_collects_in_scope_embeddings_for_the_shift_test(tiny_bundle, image_folder):
    from core.models.bundle import load_bundle
    from core.photos.images import discover_images
    from core.triage.inference import InferenceEngine

    bundle = load_bundle(tiny_bundle())
    engine = InferenceEngine(bundle, batch_size=4)
    records = list(engine.run(discover_images(image_folder(20))))
    assert len(engine.embeddings) == sum(r.flag != "out_of_scope" for r in records) == 40
    rng = np.random.default_rng(0)
    ref = np.stack(engine.embeddings).astype(np.float32)
    # Noise relative to each dimension's spread: a unit that is 0 for every photo (a dead ReLU of the tiny model on
    # these alike skin photos) stays 0, as it does in stored embeddings; absolute noise there is a real difference.
    quiet = engine.shift(reference=ref + rng.normal(0, 1e-3, ref.shape) * ref.std(axis=0))
    assert quiet.ran and quiet.n == 40 and not quiet.detected
    assert engine.shift(reference=ref + 5.0).detected
    assert not engine.shift().ran  # tiny bundle carries no embeddings.npz


@pytest.mark.shared_data
def test_real_collections_shift_fires_and_val_is_quiet(shared_data):
    """Uses cached embeddings from bench/shift_alarm.py only; skips when they were never computed."""
    import glob
    import os

    from core.triage.shift import read_embeddings

    cache = os.environ.get("MPOX_SHIFT_CACHE", "/tmp/mpox-shift-cache")
    files = sorted(glob.glob(f"{cache}/shift/mobilenetv2-*.npz"))
    if not files:
        pytest.skip(f"no cached shared-data embeddings under {cache}/shift (run bench/shift_alarm.py once)")
    d = read_embeddings(files[-1])
    emb, split, source = d["embedding"], d["split"], d["source"]
    msld_ref = emb[(split == "train") & (source == "MSLD v1")]
    msid = emb[(split == "val") & (source == "MSID")]
    assert shift_test(msid[:50], msld_ref, n_permutations=200).detected
    assert not shift_test(emb[split == "val"][:50], emb[split == "train"], n_permutations=200).detected


def test_a_folder_from_one_training_collection_or_their_mix_is_no_shift_but_a_new_one_is(tmp_path):
    """A model trained on two collections: a folder from either collection alone, or from both, is what it
    learned from (quiet); a folder unlike each of them fires (the intersection-union rule of folder_shift)."""
    rng = np.random.default_rng(3)
    a = _source(rng, 500, np.zeros(64))
    b = _source(rng, 500, np.r_[np.full(32, 1.5), np.zeros(32)])
    ref = np.concatenate([a[:400], b[:400]])
    np.savez_compressed(tmp_path / "embeddings.npz", embedding=ref.astype(np.float16),
                        label=np.zeros(800, np.int8), source=np.array(["A"] * 400 + ["B"] * 400),
                        split=np.array(["train"] * 800))
    only_b = b[400:480]
    mixed = np.concatenate([a[400:440], b[440:480]])
    new = _source(rng, 80, np.r_[np.zeros(32), np.full(32, 0.8)])
    # Against the pooled reference alone, a folder of one collection differs from the mix...
    assert shift_test(only_b, ref.astype(np.float32)).detected
    # ...but it is one of the collections the model learned from: no alarm.
    assert not folder_shift(tmp_path, list(only_b)).detected
    assert not folder_shift(tmp_path, list(mixed)).detected
    fired = folder_shift(tmp_path, list(new))
    assert fired.detected and fired.p_value < 0.05 and fired.n == 80


def test_a_run_of_several_models_reports_the_first_alarm_else_the_first_test_that_ran():
    from core.triage.shift import folder_verdict

    not_run = {"detected": False, "p_value": None, "reason": "too few", "model": "a"}
    quiet = {"detected": False, "p_value": 0.4, "model": "b"}
    fired = {"detected": True, "p_value": 0.001, "model": "c"}
    assert folder_verdict([not_run, quiet, fired])["model"] == "c"
    assert folder_verdict([not_run, quiet])["model"] == "b"
    assert folder_verdict([not_run])["reason"] == "too few"
    assert folder_verdict([]) is None


def test_a_verdict_depends_on_the_set_of_photos_and_the_seed_not_their_order(tmp_path):
    """The lead derives the seed from the stored set: the same set in any order must give the same verdict."""
    rng = np.random.default_rng(5)
    ref = _source(rng, 400, np.zeros(64))
    np.savez_compressed(tmp_path / "embeddings.npz", embedding=ref.astype(np.float16), label=np.zeros(400, np.int8),
                        source=np.array(["A", "B"] * 200), split=np.array(["train"] * 400))
    folder = list(_source(rng, 60, np.zeros(64)).astype(np.float16))  # quiet: p is a Monte Carlo estimate
    first = folder_shift(tmp_path, folder, seed=11)
    shuffled = [folder[i] for i in rng.permutation(len(folder))]
    assert folder_shift(tmp_path, shuffled, seed=11).to_dict() == first.to_dict()
    assert folder_shift(tmp_path, folder, seed=11).to_dict() == first.to_dict()


def test_the_effect_is_the_statistic_above_its_exact_permutation_mean():
    """The null mean is the average of MMD^2 over every split of the pooled rows (here all 70 of 8 rows)."""
    from itertools import combinations

    from core.triage.shift import _permutation_null, _rbf_kernel

    x = np.random.default_rng(6).normal(size=(8, 3))
    K = _rbf_kernel(x, 1.0)

    def mmd2(idx):
        rest = [i for i in range(8) if i not in idx]
        return K[np.ix_(idx, idx)].mean() + K[np.ix_(rest, rest)].mean() - 2 * K[np.ix_(idx, rest)].mean()

    observed, null_mean, p, _drawn = _permutation_null(K, 4, 99, 0.05, np.random.default_rng(0))
    assert observed == pytest.approx(mmd2([0, 1, 2, 3]))
    assert null_mean == pytest.approx(np.mean([mmd2(list(c)) for c in combinations(range(8), 4)]))
    assert 0 < p <= 1
