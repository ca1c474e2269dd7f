"""The model bundles this app ships, pinned by SHA-256: the one place to add a release.

Anyone who can write to a model folder can also recompute a card's own digest, so the digest alone
proves only that a card was not edited *by accident*. For the bundles we ship, the app therefore
knows the digests itself: a bundle whose card claims the name and version of a release listed here
must carry exactly that release's model SHA-256 and one of its card digests, or it is refused
(core.models.bundle.verify_bundle). Every other bundle loads as a *local* model and is shown as such, with
its parent, in the CSV (`model_origin`), the app and the PDF report.

Adding a release (e.g. 1.2.0): build the bundle completely first (train, calibrate, attach its LiteRT
runtime: every later change rewrites the card and its digest), then add one `Release(...)` line below
with the card's `name`, `version`, `model_sha256` and `card_sha256` (`python -m core.models.releases models/X`
prints the line). tests/test_releases.py checks that every bundle in models/ is listed here and verifies.
A release's name and version can then never be written again by save_bundle / attach_runtime.

From release 1.4.0 a bundle has no model.keras: its model SHA-256 is its numpy head's, and its LiteRT backbone
export is pinned through the card digest (the card lists every file's SHA-256).

This module imports nothing from core.models.bundle: it works on any object (or dict) with the card's fields.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

ORIGIN_SHIPPED = "shipped"
ORIGIN_LOCAL = "local"


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    model_sha256: str                 # SHA-256 of model.keras; from 1.4.0 (no model.keras) of the numpy head
    card_sha256: tuple[str, ...]      # accepted card digests (a release re-issued with a runtime attached has two)
    notes: str = ""


RELEASES: tuple[Release, ...] = (
    Release("mobilenetv2", "1.0.0", "012aef475a518a851862d8c18c8e14e90a7d2fab724f6ce16f238d81dc911e73",
            ("6d0176c52b84a281ae226f817c578120f4f98381110591b7232070bb19ca96c5",
             "cdf0ce00151742544623c66e3f6c6fdc66a5b2c36c5bfcd0e349caa84c8ad478"),
            "first release; second digest: the same model with its LiteRT runtime attached"),
    Release("xception", "1.0.0", "b62b0d602857e5c515880fa62e4cf46a24096ca847769a50ba05e9f04bbbe018",
            ("149e0d8f8adc1a1dcb36d41873722a61b05406ec36ecac57b7dee36564b34a4f",)),
    Release("mobilenetv2", "1.1.0", "91d00a0f4bfbc09ff031deabdbef047a9a1321c7e3879a195b9f838b0eef1e40",
            ("98d9c87853f5353345ba9001d7e69a745c04683b38b69b213bdea4e67c5b0983",)),
    Release("xception", "1.1.0", "cde93858358a4226a55dbb53f3a8e9031723136f9f8c84252b241aa0c445b530",
            ("7fc7bc4af60b76da2fbc238060d8fcd8737f0e316ed9a004b34672b7392e53f0",)),
    Release("mobilenetv2", "1.2.0", "5c5533eb2dcfd623cef17075f5f2441f10623fde61154fcd2d08d983fff547f5",
            ("633cfa024a9101bb226493154241b60bbd4fc0bd83915d246317f823a73a45c2",)),
    Release("xception", "1.2.0", "88704d93e3e3da587178ebb38ae9ab2afc6bf738baa92b562893a0a5668795f7",
            ("021e3fcefe000afd358c10bd42678249a312e3432e30fd4d99b53190e5d731a8",)),
    Release("combined", "1.2.0", "b36ad2813484609bce5834c414dd2eb266541ca9c590502b6ec357cb84759efa",
            ("a0463edf90c415d96f37286a9383ef6739072bd4e78b2592373eaca78c756ee5",)),
    # 1.3.0 (parents: the 1.2.0 bundles, same weights and heads): operating points chosen out of collection, the
    # shift alarm's floor by folder size, LiteRT backbones and numpy heads (bench/retune_release.py).
    Release("mobilenetv2", "1.3.0", "5c5533eb2dcfd623cef17075f5f2441f10623fde61154fcd2d08d983fff547f5",
            ("a32b203268d5d8bb34e4fc96358732b51fdcace4d1c2d44c4581e72896d0b26c",)),
    Release("xception", "1.3.0", "88704d93e3e3da587178ebb38ae9ab2afc6bf738baa92b562893a0a5668795f7",
            ("1f3a9665a34783b849b92b34755a7e4ea6b2e323c67043cc3f51d2c4ad139a02",)),
    Release("combined", "1.3.0", "b36ad2813484609bce5834c414dd2eb266541ca9c590502b6ec357cb84759efa",
            ("62e3164cddb70de66d8aff695a65abee029f8c3debdea74c238767a2c1b40eda",)),
    # 1.4.0 (parents: the 1.3.0 bundles, same LiteRT backbone exports): cross-fitted heads (core.learning.crossfit), points
    # chosen again on their out-of-fold evidence, no model.keras: model SHA-256 = the numpy head's, the backbone
    # pinned through the card digest (bench/crossfit_release.py).
    Release("mobilenetv2", "1.4.0", "207c84cb7097bfe236c034f17ccb7ed1353a9425a10e2ab1c363f4d8d789d6fe",
            ("35a738b8aeef8de04092839593daa4260251885e6fb67f00437619d326e8e361",)),
    Release("xception", "1.4.0", "64566c2de50aca1d82001ba4401504da7a0b2098f6226e3445ca21b31b4c62dd",
            ("d804104ef9d73cfa8093650bf22662b264aae3f82a30e792770a89168d405170",)),
    Release("combined", "1.4.0", "993aba3ea2e2682455c52f7b84b5eae36a2e311ff55ab30133f4b4866ae59923",
            ("8229070d7b4b406d968bf9045e6ea233073c5a0a9951b6021372c0671d4c9947",)),
)


def _field(card: Any, name: str) -> str:
    value = card.get(name, "") if isinstance(card, dict) else getattr(card, name, "")
    return "" if value is None else str(value)


def find_release(name: str, version: str) -> Release | None:
    """The listed release with this exact name and version, or None."""
    for release in RELEASES:
        if release.name == name and release.version == version:
            return release
    return None


def claims_release(card: Any) -> Release | None:
    """The release whose name and version `card` claims (whether or not its digests match), or None."""
    return find_release(_field(card, "name"), _field(card, "version"))


def is_genuine_release(card: Any) -> bool:
    """True when `card` claims a listed release and carries its model SHA-256 and one of its card digests."""
    release = claims_release(card)
    return (release is not None and _field(card, "model_sha256") == release.model_sha256
            and _field(card, "card_sha256") in release.card_sha256)


def components_genuine(card: Any) -> bool:
    """True when every component a combined card records (extra.components: name, version, sha256, card_sha256)
    is a genuine listed release; True for a card without components."""
    extra = card.get("extra") if isinstance(card, dict) else getattr(card, "extra", None)
    refs = extra.get("components") if isinstance(extra, dict) else None
    if refs is None:
        return True
    if not isinstance(refs, list) or not refs:
        return False
    for ref in refs:
        if not isinstance(ref, dict):
            return False
        release = find_release(str(ref.get("name", "")), str(ref.get("version", "")))
        if (release is None or ref.get("sha256") != release.model_sha256
                or ref.get("card_sha256") not in release.card_sha256):
            return False
    return True


def bundle_origin(card: Any) -> str:
    """"shipped" for a genuine listed release whose every part (a combined model's components) is a genuine
    release too, else "local" (trained or imported by a user).

    A card that claims a release but does not match it is refused by core.models.bundle.verify_bundle before
    anything scores with it, and a combined model's components are verified against its card
    (core.models.combined.find_component); called on such a card anyway, this says "local".
    """
    return ORIGIN_SHIPPED if is_genuine_release(card) and components_genuine(card) else ORIGIN_LOCAL


def bundle_parent(card: Any) -> str:
    """The card's parent as "name version" (empty when it records none)."""
    parent = card.get("parent") if isinstance(card, dict) else getattr(card, "parent", None)
    if not isinstance(parent, dict):
        return ""
    return " ".join(str(parent.get(k, "")).strip() for k in ("name", "version") if parent.get(k)).strip()


def origin_text(card: Any) -> str:
    """One line for people: "shipped release" or "local model (parent mobilenetv2 1.1.0)" / "local model"."""
    if bundle_origin(card) == ORIGIN_SHIPPED:
        return "shipped release"
    parent = bundle_parent(card)
    return f"local model (parent {parent})" if parent else "local model"


def release_line(card: Any) -> str:
    """The `Release(...)` line to paste into RELEASES for a finished bundle's card."""
    return (f'    Release("{_field(card, "name")}", "{_field(card, "version")}", "{_field(card, "model_sha256")}",\n'
            f'            ("{_field(card, "card_sha256")}",)),')


if __name__ == "__main__":  # python -m core.models.releases models/mobilenetv2 ...: print the lines to add
    from pathlib import Path

    for folder in sys.argv[1:]:
        print(release_line(json.loads((Path(folder) / "model_card.json").read_text(encoding="utf-8"))))
