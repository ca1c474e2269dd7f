"""Typed access to the app's QSettings: weights and models folders, default model, folders, reviewer."""

from __future__ import annotations

import getpass
import os

from PySide6.QtCore import QSettings

from desktop_app.notices import APP_NAME, ORG_NAME

MAX_RECENT = 8


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
        """Empty = the shipped models folder (core.bundle.default_models_dir)."""
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
        try:
            fallback = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name in some containers
            fallback = "reviewer"
        return self._str("review/reviewer", fallback) or fallback

    @reviewer.setter
    def reviewer(self, value: str) -> None:
        self.q.setValue("review/reviewer", value)

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

    def sync(self) -> None:
        self.q.sync()
