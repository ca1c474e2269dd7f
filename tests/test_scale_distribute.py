"""Fine-tuning under tf.distribute: two logical CPU devices stand in for two GPUs.

Logical devices must be configured before TensorFlow initialises, so the training runs in a fresh
Python process. The quick preset (head on cached embeddings) never takes a strategy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from core.learning.training import TrainConfig
from tests.conftest import REPO

TWO_DEVICE_TRAINING = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from core.learning.datasets import load_folder_dataset, split_dataset
    from core.models.backbones import weights_fingerprint
    from core.learning.training import TrainConfig, train_model
    from tests.helpers import make_image_folder

    tmp = Path(sys.argv[1])
    ds = split_dataset(load_folder_dataset(make_image_folder(tmp / "photos", n_per_class=8)), "group", seed=0,
                       fractions=(0.5, 0.25, 0.25))
    config = TrainConfig("mobilenetv2", preset="full", base_model="tiny:32", views=["identity"],
                         cache_dir=str(tmp / "cache"), epochs=2, fine_tune_epochs=2, fine_tune_lr=1e-2,
                         fine_tune_augment="none", batch_size=8, n_bootstrap=0, transfer=False,
                         strategy="mirrored")
    result = train_model(ds, config)
    backbone = result.model.get_layer(result.extractor.backbone.name)
    print(json.dumps({"fine_tune": result.card.training["hyperparameters"]["fine_tune"],
                      "fingerprint_before": result.card.training["backbone"]["fingerprint_sha256"],
                      "fingerprint_after": weights_fingerprint(backbone),
                      "threshold": result.card.threshold}))
""")


def test_fine_tuning_runs_mirrored_on_two_logical_devices_and_keeps_the_trained_weights(tmp_path):
    out = subprocess.run([sys.executable, "-c", TWO_DEVICE_TRAINING, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    ft = info["fine_tune"]
    assert ft["distribute"]["strategy"] == "MirroredStrategy"
    assert ft["distribute"]["replicas"] == 2
    assert [d.split("/")[-1] for d in ft["distribute"]["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert ft["epochs_run"] >= 1
    # The weights trained on the replicas are the ones the bundle keeps.
    assert info["fingerprint_after"] != info["fingerprint_before"]
    assert 0.0 <= info["threshold"] <= 1.0


def test_quick_preset_refuses_a_strategy_and_names_the_presets_that_take_one():
    with pytest.raises(ValueError, match="preset full or study"):
        TrainConfig("mobilenetv2", preset="quick", strategy="mirrored")
    with pytest.raises(ValueError, match="mirrored, multiworker"):
        TrainConfig("mobilenetv2", preset="full", strategy="ring")
    assert TrainConfig("mobilenetv2", preset="full", strategy="none").strategy is None


def test_multiworker_over_several_machines_is_refused_up_front_with_the_keras_reason(monkeypatch):
    # Two workers on loopback fail inside Keras 3's fit (keras-team/keras#20585); say so before any work.
    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    with pytest.raises(ValueError, match="does not work with Keras 3.*keras-team/keras/issues/20585"):
        TrainConfig("mobilenetv2", preset="full", strategy="multiworker")
    monkeypatch.delenv("TF_CONFIG")
    assert TrainConfig("mobilenetv2", preset="full", strategy="multiworker").strategy == "multiworker"
