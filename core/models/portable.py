"""Paths that may leave this machine: what a model card records about its data never names the build
machine's folders. Data is identified by its manifest's SHA-256 and a path relative to the repository."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def is_absolute_path(text: str) -> bool:
    """A POSIX ("/work/...", "~/...") or Windows ("C:\\...", "\\\\server\\...") absolute path."""
    text = str(text)
    return text.startswith(("/", "~")) or PureWindowsPath(text).is_absolute() or PurePosixPath(text).is_absolute()


def portable_path(path: str | os.PathLike, base: str | os.PathLike = REPO_ROOT) -> str:
    """`path` relative to the repository (forward slashes, e.g. "../shared/data/manifest.csv"); a path on
    another drive keeps its last two parts. Never absolute; a relative path is returned as given."""
    text = os.fspath(path)
    if not is_absolute_path(text):
        return text.replace("\\", "/")
    try:
        rel = os.path.relpath(os.path.abspath(os.path.expanduser(text)), os.path.abspath(base))
    except ValueError:   # another drive (Windows): no relative path exists
        parts = PureWindowsPath(text).parts
        rel = "/".join(parts[-2:])
    return rel.replace("\\", "/")


def portable_fields(value: Any, base: str | os.PathLike = REPO_ROOT) -> Any:
    """`value` (a card's dict, list or string) with every absolute path made portable_path; the rest as is.
    core.models.bundle.write_card applies it to every card it seals, so no builder can leak a machine's folders."""
    if isinstance(value, dict):
        return {k: portable_fields(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_fields(v, base) for v in value]
    if isinstance(value, tuple):
        return tuple(portable_fields(v, base) for v in value)
    if isinstance(value, str) and is_absolute_path(value) and "\n" not in value and len(value) < 4096:
        return portable_path(value, base)
    return value
