"""ImageNet weights come only from local files, found by setting or environment, with clear errors."""

from __future__ import annotations

import pytest

from core.models.backbones import WEIGHT_FILE_NAMES, WEIGHTS_ENV, WeightsNotFoundError, resolve_weights


@pytest.mark.parametrize("arch", ["mobilenetv2", "xception"])
@pytest.mark.parametrize("which", [0, 1])  # ../shared/weights name, official Keras name
def test_both_file_names_are_accepted_from_the_environment(arch, which, tmp_path, monkeypatch):
    name = WEIGHT_FILE_NAMES[arch][which]
    (tmp_path / name).write_bytes(b"h5")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert resolve_weights(arch) == tmp_path / name


def test_explicit_setting_wins_over_environment(tmp_path, monkeypatch):
    env_dir, set_dir = tmp_path / "env", tmp_path / "setting"
    for d in (env_dir, set_dir):
        d.mkdir()
        (d / WEIGHT_FILE_NAMES["xception"][1]).write_bytes(b"h5")
    monkeypatch.setenv(WEIGHTS_ENV, str(env_dir))
    assert resolve_weights("xception", weights_dir=set_dir).parent == set_dir


def test_missing_weights_say_where_they_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("mobilenetv2")
    message = str(info.value)
    assert str(tmp_path) in message and WEIGHTS_ENV in message and "Nothing is downloaded" in message


def test_explicit_weights_folder_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    good = tmp_path / "good"
    good.mkdir()
    (good / WEIGHT_FILE_NAMES["mobilenetv2"][0]).write_bytes(b"h5")
    monkeypatch.setenv(WEIGHTS_ENV, str(good))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights("mobilenetv2", weights_dir=tmp_path / "typo")


def test_real_weights_build_a_backbone_without_network(shared_weights, monkeypatch):
    from core.models.backbones import build_classifier

    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights))
    model = build_classifier("mobilenetv2", input_size=96)
    out = model(__import__("numpy").zeros((1, 96, 96, 3), "float32"))
    # The default embedding is pooled from the last expansion block (960 channels), not the 1280-d top.
    assert out["logit"].shape == (1, 1) and out["embedding"].shape == (1, 960)
    whole = build_classifier("mobilenetv2", input_size=96, feature_layer="top")
    assert whole(__import__("numpy").zeros((1, 96, 96, 3), "float32"))["embedding"].shape == (1, 1280)


def test_unknown_feature_layer_is_a_clear_error(shared_weights, monkeypatch):
    from core.models.backbones import FeatureLayerError, build_backbone

    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights))
    with pytest.raises(FeatureLayerError, match="no layer 'block_99'.*'top'"):
        build_backbone("mobilenetv2", input_size=96, feature_layer="block_99")


def test_core_never_writes_environment_variables_for_settings():
    """The weights folder (and every other setting) is passed explicitly; core only reads its documented fallbacks."""
    import ast
    from pathlib import Path

    core = Path(__file__).resolve().parent.parent / "core"
    writes = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = None
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                target = next((t for t in targets if isinstance(t, ast.Subscript)
                               and ast.unparse(t.value) == "os.environ"), None)
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.putenv", "os.environ.update"):
                target = node
            elif (isinstance(node, ast.Call) and ast.unparse(node.func) == "os.environ.setdefault"
                  and node.args and isinstance(node.args[0], ast.Constant)
                  and str(node.args[0].value).startswith("MPOX_TRIAGE")):
                target = node
            if target is not None:
                writes.append(f"{path.name}:{node.lineno}")
    assert writes == []
