"""core/ is the Qt-free engine: no module in it may import Qt (napari/Orange-style layering)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"
QT_MODULES = {"PySide6", "PyQt5", "PyQt6", "shiboken6", "qtpy"}


def test_core_never_imports_qt():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in QT_MODULES]
    assert offenders == []


def test_nothing_asks_keras_to_download_weights():
    root = CORE.parent
    hits = []
    for folder in ("core", "desktop_app"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "weights=\"imagenet\"" in text or "weights='imagenet'" in text:
                hits.append(str(path))
    assert hits == []
