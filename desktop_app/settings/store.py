"""Typed access to the app's QSettings: weights and models folders, default model, folders, reviewer."""

from __future__ import annotations

import os

from pathlib import Path

from PySide6.QtCore import QSettings

from desktop_app.notices import APP_NAME, ORG_NAME

MAX_RECENT = 8


def user_models_dir() -> Path:
    """The user's own model folder (where retrained and adapted models go): core's one rule
    (core.models.bundle.user_models_dir: $MPOX_TRIAGE_USER_MODELS_DIR, else the platform's per-user data folder)."""
    from core.models.bundle import user_models_dir as core_user_models_dir

    return core_user_models_dir()


class AppSettings:
    """Wraps a QSettings (an INI file in tests) so keys and defaults live in one place."""

    def __init__(self, qsettings: QSettings | None = None):
        self.q = qsettings if qsettings is not None else QSettings(ORG_NAME, APP_NAME)

    def _str(self, key: str, default: str = "") -> str:
        value = self.q.value(key, default)
        return "" if value is None else str(value)

    @property
    def weights_dir(self) -> str:
        return self._str("paths/weights_dir", os.environ.get("MPOX_TRIAGE_WEIGHTS_DIR", ""))

    @weights_dir.setter
    def weights_dir(self, value: str) -> None:
        self.q.setValue("paths/weights_dir", value)

    @property
    def models_dir(self) -> str:
        """Empty = the shipped models folder (core.models.bundle.default_models_dir)."""
        return self._str("paths/models_dir", "")

    @models_dir.setter
    def models_dir(self, value: str) -> None:
        self.q.setValue("paths/models_dir", value)

    @property
    def default_model(self) -> str:
        return self._str("model/default", "")

    @default_model.setter
    def default_model(self, value: str) -> None:
        self.q.setValue("model/default", value)

    @property
    def last_folder(self) -> str:
        return self._str("paths/last_folder", "")

    @last_folder.setter
    def last_folder(self, value: str) -> None:
        self.q.setValue("paths/last_folder", value)

    @property
    def reviewer(self) -> str:
        """The name stored with every label; "" until the reviewer gives it (never the OS login)."""
        return self._str("review/reviewer", "").strip()

    @reviewer.setter
    def reviewer(self, value: str) -> None:
        self.q.setValue("review/reviewer", value)

    @property
    def last_export_dir(self) -> str:
        return self._str("paths/last_export_dir", "")

    @last_export_dir.setter
    def last_export_dir(self, value: str) -> None:
        self.q.setValue("paths/last_export_dir", value)

    def export_path(self, fallback_folder: str, file_name: str) -> str:
        """Where an export dialog starts: the last export folder, else the folder that holds the photo folder
        (outputs never go inside the scanned folder: core.store.workspace refuses that, as classify does)."""
        folder = self.last_export_dir if self.last_export_dir and os.path.isdir(self.last_export_dir) \
            else (os.path.dirname(os.path.abspath(fallback_folder)) if fallback_folder else "")
        return os.path.join(folder or os.path.expanduser("~"), file_name)

    def remember_export(self, out_path: str) -> None:
        self.last_export_dir = os.path.dirname(os.path.abspath(out_path))

    def remember_model(self, bundle_dirs: list[str]) -> None:
        """The chosen picker entry, by bundle folder(s), restored on the next launch."""
        self.default_model = os.pathsep.join(bundle_dirs)

    def remembered_choice(self, choices: list) -> int:
        """Index of the remembered entry among (label, bundle folders, cards) choices; 0 if gone."""
        saved = self.default_model
        for i, (_label, dirs, _cards) in enumerate(choices):
            if os.pathsep.join(dirs) == saved:
                return i
        return 0

    @property
    def batch_size(self) -> int:
        try:
            return max(1, int(self.q.value("run/batch_size", 16)))
        except (TypeError, ValueError):
            return 16

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.q.setValue("run/batch_size", int(value))

    @property
    def recent_folders(self) -> list[str]:
        value = self.q.value("paths/recent", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def add_recent(self, folder: str) -> None:
        folders = [f for f in self.recent_folders if f != folder]
        self.q.setValue("paths/recent", ([folder] + folders)[:MAX_RECENT])
        self.last_folder = folder

    def window_state(self) -> tuple[bytes | None, bytes | None]:
        """(window geometry, splitter state) saved when the window last closed, or None each."""
        geometry, splitter = self.q.value("window/geometry"), self.q.value("window/splitter")
        return (bytes(geometry) if geometry else None), (bytes(splitter) if splitter else None)

    def save_window_state(self, geometry: bytes, splitter: bytes) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/splitter", splitter)

    def sync(self) -> None:
        self.q.sync()
