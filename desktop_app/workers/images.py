"""Thumbnails and display images decoded off the GUI thread, cached in memory and in the session folder.

Thumbnails are never written beside the original photos: the disk cache lives in the session's
cache folder (core.store.session.SessionStore.cache_dir), keyed by a hash of the path and file time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage, QImageReader, QPixmap

THUMB_SIZE = 64


def read_scaled(path: str, max_side: int) -> QImage:
    """Decode a photo with EXIF orientation applied, scaled to fit max_side (fast JPEG downscale)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and max(size.width(), size.height()) > max_side:
        size.scale(QSize(max_side, max_side), Qt.AspectRatioMode.KeepAspectRatio)
        reader.setScaledSize(size)
    image = reader.read()
    if image.isNull():
        return QImage()
    if max(image.width(), image.height()) > max_side:
        image = image.scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
    return image


class _Signals(QObject):
    done = Signal(str, int, QImage)   # path, max side, image (null when unreadable)


class _LoadTask(QRunnable):
    def __init__(self, path: str, max_side: int, cache_file: Path | None, signals: _Signals):
        super().__init__()
        self.path, self.max_side, self.cache_file, self.signals = path, max_side, cache_file, signals

    def run(self) -> None:
        from desktop_app.workers.model_worker import lower_thread_priority

        lower_thread_priority()
        image = QImage()
        if self.cache_file is not None and self.cache_file.is_file():
            image = QImage(str(self.cache_file))
        if image.isNull():
            image = read_scaled(self.path, self.max_side)
            if self.cache_file is not None and not image.isNull():
                try:
                    self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                    image.save(str(self.cache_file), "PNG")
                except OSError:
                    pass  # a cache that cannot be written only costs time
        self.signals.done.emit(self.path, self.max_side, image)


class ImageLoader(QObject):
    """Requests thumbnails or display-size images; `loaded(path, max_side, QPixmap)` arrives on the GUI thread."""

    loaded = Signal(str, int, QPixmap)

    def __init__(self, parent: QObject | None = None, threads: int = 1):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        # One decoding thread: the model workers need the CPU more than thumbnails do.
        self.pool.setMaxThreadCount(threads)
        self.cache_dir: Path | None = None
        self._memory: dict[tuple[str, int], QPixmap] = {}
        self._pending: set[tuple[str, int]] = set()
        self._signals = _Signals()
        self._signals.done.connect(self._on_done)

    def cached(self, path: str, max_side: int = THUMB_SIZE) -> QPixmap | None:
        return self._memory.get((path, max_side))

    def _cache_file(self, path: str, max_side: int) -> Path | None:
        if self.cache_dir is None or max_side != THUMB_SIZE:
            return None
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return None
        digest = hashlib.sha1(f"{path}|{mtime}|{max_side}".encode()).hexdigest()
        return self.cache_dir / f"{digest}.png"

    def request(self, path: str, max_side: int = THUMB_SIZE) -> None:
        key = (path, max_side)
        if key in self._memory or key in self._pending:
            return
        self._pending.add(key)
        self.pool.start(_LoadTask(path, max_side, self._cache_file(path, max_side), self._signals))

    def clear(self) -> None:
        self.pool.clear()
        self._memory.clear()
        self._pending.clear()

    @Slot(str, int, QImage)
    def _on_done(self, path: str, max_side: int, image: QImage) -> None:
        key = (path, max_side)
        if key not in self._pending:
            return  # cleared meanwhile (another folder was opened)
        self._pending.discard(key)
        pixmap = QPixmap.fromImage(image) if not image.isNull() else QPixmap()
        # Large display images are not kept: only thumbnails fill the memory cache.
        if max_side == THUMB_SIZE:
            self._memory[key] = pixmap
        self.loaded.emit(path, max_side, pixmap)

    def shutdown(self) -> None:
        self.pool.clear()
        self.pool.waitForDone(5000)


class _TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(str)
    progress = Signal(int, int)


class _FunctionTask(QRunnable):
    def __init__(self, fn, signals: _TaskSignals):
        super().__init__()
        self.fn, self.signals = fn, signals

    def run(self) -> None:
        try:
            result = self.fn(lambda p: self.signals.progress.emit(int(p.done), int(p.total)))
        except Exception as exc:  # reported to the user, never swallowed
            self.signals.failed.emit(str(exc) or type(exc).__name__)
        else:
            self.signals.done.emit(result)


def run_in_background(fn, on_done, on_failed, on_progress=None, pool: QThreadPool | None = None) -> _TaskSignals:
    """Run `fn(progress_callback)` on a pool thread; callbacks arrive on the GUI thread. Keep the return value."""
    signals = _TaskSignals()
    signals.done.connect(on_done)
    signals.failed.connect(on_failed)
    if on_progress is not None:
        signals.progress.connect(on_progress)
    (pool or QThreadPool.globalInstance()).start(_FunctionTask(fn, signals))
    return signals
