"""Ray engine and Ray feature extraction give what the local code gives (needs the scale extra).

One local Ray instance (2 CPUs, no dashboard, logs and sockets in a temporary folder) serves the
whole file and is shut down at the end. Every engine run starts its actors (each imports TensorFlow
and loads the bundle once), so the file keeps to a few runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[scale]"); the Ray tests need it')
pytest.importorskip("pyarrow", reason='pyarrow is not installed (pip install -e ".[scale]")')

from core.models.bundle import load_bundle  # noqa: E402
from core.photos.images import discover_images  # noqa: E402
from core.triage.inference import InferenceEngine  # noqa: E402
from core.progress import CancelToken  # noqa: E402
from core.records import ResultRecord  # noqa: E402


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the test session, writing only under a temporary folder."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report attempt
    # Token authentication on, with the token in the environment: Ray writes nothing to ~/.ray.
    if not os.environ.get("RAY_AUTH_MODE"):
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    temp = tempfile.mkdtemp(prefix="mpox-ray-")  # short: Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _assert_same_records(got: list[ResultRecord], want: list[ResultRecord]) -> None:
    assert [r.path for r in got] == [r.path for r in want]
    for g, w in zip(got, want):
        gd, wd = g.to_dict(), w.to_dict()
        for key in ("timestamp", "p_mpox", "ood_score"):
            gd.pop(key), wd.pop(key)
        assert gd == wd, g.path
        for key in ("p_mpox", "ood_score"):
            a, b = getattr(g, key), getattr(w, key)
            assert (a is None) == (b is None), (g.path, key)
            if a is not None:
                assert abs(a - b) <= 1e-5, (g.path, key, a, b)
        # The embedding the folder's shift test needs comes back from the actor (float16, as the local engine's).
        assert (g.embedding is None) == (w.embedding is None), g.path
        if w.embedding is not None:
            assert g.embedding.dtype == np.float16 and np.abs(g.embedding.astype(np.float32)
                                                              - w.embedding.astype(np.float32)).max() <= 2e-3, g.path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The reliability tests' hostile corpus, plus a file name that is not valid UTF-8."""
    from tests.test_hostile import build_hostile_corpus
    from tests.helpers import make_photo

    root = tmp_path_factory.mktemp("hostile-ray") / "corpus"
    build_hostile_corpus(root)
    make_photo((40, 30), seed=3).save(os.fsdecode(bytes(root) + b"/latin1 \xe9t\xe9.jpg"), format="JPEG")
    yield root
    locked = root / "locked.jpg"
    if locked.exists():
        locked.chmod(0o644)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    from tests.helpers import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("ray-models") / "tiny", with_ood=True)


def test_ray_engine_gives_the_local_engines_rows_for_the_hostile_corpus(ray_instance, hostile, bundle_dir):
    from core.scale import RayEngine

    paths = discover_images(hostile)
    want = list(InferenceEngine(load_bundle(bundle_dir), batch_size=8).run(paths))
    seen = []
    engine = RayEngine(bundle_dir, actors=2, batch_size=8)
    got = list(engine.run(paths, progress=seen.append))
    assert len(got) == len(paths) > 80
    assert {r.status for r in got} == {"ok", "error"}
    _assert_same_records(got, want)
    assert engine.card.model_sha256 == got[0].model_sha256
    done = [p.done for p in seen]
    assert done == sorted(done) and done[0] == 0 and done[-1] == len(paths)


def test_ray_engine_cancel_stops_after_what_was_yielded(ray_instance, image_folder, bundle_dir):
    from core.scale import RayEngine

    paths = discover_images(image_folder(n_per_class=12))
    cancel = CancelToken()

    def on_progress(p):
        if p.done >= 4:
            cancel.cancel()

    got = list(RayEngine(bundle_dir, actors=1, batch_size=4).run(paths, progress=on_progress, cancel=cancel))
    assert 4 <= len(got) < len(paths)
    want = list(InferenceEngine(load_bundle(bundle_dir), batch_size=4).run(paths[:len(got)]))
    _assert_same_records(got, want)


def _scorer_pids() -> list[int]:
    """Processes of this machine running a RayEngine scoring actor (Ray titles them after the class)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if b"MapWorker" in cmd and b"_Scorer" in cmd:
                found.append(int(entry))
    return found


def test_an_actor_killed_mid_run_is_restarted_and_the_rows_are_still_the_local_ones(ray_instance, image_folder,
                                                                                    bundle_dir):
    import signal

    from core.scale import RayEngine

    paths = discover_images(image_folder(n_per_class=16))
    killed: list[int] = []

    def kill_one_actor(p):
        if p.done >= 4 and not killed:
            pids = _scorer_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)  # as the OOM killer or a lost node would
                killed.append(pids[0])

    got = list(RayEngine(bundle_dir, actors=1, batch_size=4).run(paths, progress=kill_one_actor))
    assert killed, "no scoring actor process was found to kill"
    want = list(InferenceEngine(load_bundle(bundle_dir), batch_size=4).run(paths))
    _assert_same_records(got, want)


def test_ray_engine_refuses_a_tampered_bundle_before_starting(ray_instance, tmp_path):
    from core.models.bundle import BundleError
    from core.scale import RayEngine
    from tests.helpers import make_tiny_bundle

    folder = make_tiny_bundle(tmp_path / "tiny")
    with open(folder / "model.keras", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="does not match"):
        RayEngine(folder)


def test_a_node_that_sees_another_bundle_fails_the_run_with_one_line(ray_instance, image_folder, bundle_dir):
    from core.scale import RayEngine, RayRunError

    engine = RayEngine(bundle_dir, actors=1, batch_size=4)
    engine.card.model_sha256 = "f" * 64  # as if the driver's copy differed from the one the actors load
    with pytest.raises(RayRunError, match="same bundle at the same path") as info:
        list(engine.run(discover_images(image_folder(n_per_class=2))))
    assert "\n" not in str(info.value)


def test_feature_cache_filled_on_ray_is_what_train_reads(ray_instance, image_folder, tmp_path, monkeypatch):
    from core.learning.datasets import load_folder_dataset, split_dataset
    from core.learning.features import FeatureExtractor
    from core.scale import fill_feature_cache
    from core.learning.training import TrainConfig, train_model

    ds = split_dataset(load_folder_dataset(image_folder(n_per_class=8)), "group", seed=0, fractions=(0.5, 0.25, 0.25))
    config = TrainConfig("mobilenetv2", preset="quick", base_model="tiny:32", views=["identity", "hflip"],
                         cache_dir=str(tmp_path / "cache"), epochs=3, n_bootstrap=0, transfer=False)
    filled = fill_feature_cache(ds, config, actors=1)
    n_train, n_val = len(ds.subset("train")), len(ds.subset("val"))
    assert filled.images == n_train + n_val and filled.embeddings == 2 * n_train + n_val and not filled.errors
    assert len(list(Path(filled.cache_dir).rglob("*.npz"))) == n_train + n_val

    def no_compute(self, batch):
        raise AssertionError("train recomputed an embedding that Ray should have cached")

    monkeypatch.setattr(FeatureExtractor, "forward", no_compute)
    result = train_model(ds, config)
    assert result.card.training["backbone"]["fingerprint_sha256"][:16] in filled.cache_dir
    assert np.isfinite(result.val_logits).all()


def test_ray_engine_gives_the_local_engines_rows_for_the_shared_test_split(ray_instance, shared_data):
    """The shipped bundle on the real test photos (scored here only to compare engines, never to choose)."""
    import csv

    from core.models.bundle import default_models_dir
    from core.scale import RayEngine, read_manifest

    bundle_dir = default_models_dir() / "mobilenetv2"
    if not (bundle_dir / "model_card.json").is_file():
        pytest.skip(f"no shipped bundle at {bundle_dir}")
    with open(shared_data / "manifest.csv", newline="", encoding="utf-8") as fh:
        all_paths = read_manifest(shared_data / "manifest.csv")
        splits = [row["split"] for row in csv.DictReader(fh)]
    paths = [p for p, s in zip(all_paths, splits) if s == "test"]
    want = list(InferenceEngine(load_bundle(bundle_dir)).run(paths))
    got = list(RayEngine(bundle_dir, actors=1).run(paths))
    assert len(got) == len(paths) > 100
    _assert_same_records(got, want)
