"""Issue 18, item 1: a combined bundle verifies each component against what its card records (name, version,
model SHA-256, card digest), refuses a mismatch with one line from every entry point, and says "shipped release"
only when every part is the release."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.models.bundle import CARD_FILE, BundleError, ModelCard, load_bundle, verify_bundle
from core.cli import main
from core.models.combined import component_mismatch
from core.models.releases import bundle_origin, components_genuine, origin_text
from tests.conftest import REPO
from tests.helpers import make_image_folder

SHIPPED = REPO / "models"


def reseal(folder: Path, **changes) -> None:
    data = json.loads((folder / CARD_FILE).read_text())
    data.update(changes)
    data["card_sha256"] = ModelCard.from_dict(dict(data)).content_digest()
    (folder / CARD_FILE).write_text(json.dumps(data, indent=2))


@pytest.fixture
def tampered(tmp_path) -> Path:
    """A copy of the shipped combined bundle beside a copy of mobilenetv2 whose card was edited and re-sealed
    (the issue's repro: name mobilenetv2-x, input size 96); returns the copied combined bundle."""
    if not (SHIPPED / "combined" / CARD_FILE).is_file():
        pytest.skip("the shipped combined bundle is not installed")
    root = tmp_path / "copy"
    for name in ("combined", "mobilenetv2"):
        shutil.copytree(SHIPPED / name, root / name)
    reseal(root / "mobilenetv2", name="mobilenetv2-x", input_size=96)
    return root / "combined"


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_tampered_component_is_refused_by_load_and_verify(tampered):
    for check in (lambda: load_bundle(tampered), lambda: verify_bundle(tampered)):
        with pytest.raises(BundleError) as info:
            check()
        message = str(info.value)
        assert "\n" not in message and "mobilenetv2-x" in message and "differs from what its card records" in message


def test_classify_refuses_a_tampered_component_locally(tampered, tmp_path, capsys):
    photos = make_image_folder(tmp_path / "photos", n_per_class=1, size=(32, 32))
    code = main(["classify", str(photos), "--model", str(tampered), "--csv", str(tmp_path / "o.csv"), "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "differs from what its card records" in line
    assert not (tmp_path / "o.csv").exists()


def test_the_ray_engine_refuses_a_tampered_component_before_starting(tampered):
    pytest.importorskip("ray")
    from core.scale import RayEngine

    with pytest.raises(BundleError, match="differs from what its card records"):
        RayEngine(tampered)


def test_evaluate_and_export_refuse_a_tampered_component(tampered, tmp_path, capsys):
    photos = make_image_folder(tmp_path / "photos", n_per_class=2, size=(32, 32))
    code = main(["evaluate", str(photos), "--model", str(tampered), "--quiet"])
    assert code == 2 and "differs from what" in one_error_line(capsys.readouterr().err)
    code = main(["adapt", "--model", str(tampered), "--suggest", "2", "--pool", str(photos), "--quiet"])
    assert code == 2 and "differs from what" in one_error_line(capsys.readouterr().err)


def test_a_component_with_other_weights_is_passed_over_not_trusted(tampered):
    ref = json.loads((tampered / CARD_FILE).read_text())["extra"]["components"][0]
    card = ModelCard.from_dict(json.loads((SHIPPED / "mobilenetv2" / CARD_FILE).read_text()))
    assert component_mismatch(ref, card) == ""
    edited = ModelCard.from_dict({**card.to_dict(), "card_sha256": "0" * 64})
    assert "card digest" in component_mismatch(ref, edited)
    renamed = ModelCard.from_dict({**card.to_dict(), "name": "mobilenetv2-x"})
    assert "name" in component_mismatch(ref, renamed)


def test_shipped_release_only_when_every_part_is_the_release():
    data = json.loads((SHIPPED / "combined" / CARD_FILE).read_text())
    assert bundle_origin(data) == "shipped" and origin_text(data) == "shipped release"
    fake = json.loads(json.dumps(data))
    fake["extra"]["components"][0]["card_sha256"] = "0" * 64
    assert not components_genuine(fake)
    assert bundle_origin(fake) == "local"
