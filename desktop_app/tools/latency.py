"""Measure event-loop latency of the real window while a folder is scored (offscreen).

    QT_QPA_PLATFORM=offscreen python -m desktop_app.tools.latency --models-dir DIR --photos FOLDER [--runs 3]

A 10 ms QTimer ticks first while the app is idle (baseline), then during a run. For each gap it
records wall time and the GUI thread's own CPU time: a large wall gap with little GUI CPU means the
loop waited for a core or the GIL, not that our code blocked it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--photos", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop_app.mainwindow import MainWindow
    from desktop_app.settings.store import AppSettings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    for run in range(args.runs):
        tmp = Path(tempfile.mkdtemp(prefix="mpox-latency-"))
        settings = AppSettings(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
        settings.batch_size = args.batch_size
        window = MainWindow(settings, models_dir=args.models_dir, sessions_dir=tmp / "sessions")
        window.show()
        handle = window.handle_for(window.selected_dirs()[0])
        loop = QEventLoop()
        handle.ready.connect(loop.quit)
        handle.load()
        loop.exec()

        gaps: list[tuple[float, float]] = []
        last = [time.perf_counter(), time.thread_time()]

        def tick() -> None:
            now, cpu = time.perf_counter(), time.thread_time()
            gaps.append((now - last[0], cpu - last[1]))
            last[:] = [now, cpu]

        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(tick)
        loop = QEventLoop()
        last[:] = [time.perf_counter(), time.thread_time()]
        timer.start()
        QTimer.singleShot(1500, loop.quit)
        loop.exec()
        timer.stop()
        idle_worst = max(w for w, _ in gaps)
        gaps.clear()

        window.open_folder(args.photos)
        loop = QEventLoop()
        window.run_finished.connect(lambda _s: loop.quit())
        last[:] = [time.perf_counter(), time.thread_time()]
        timer.start()
        window.run()
        loop.exec()
        timer.stop()
        walls = sorted(w for w, _ in gaps)
        s = window.last_summary or {}
        print(f"run {run + 1}: {s.get('kept')} photos in {s.get('elapsed_s', 0):.2f} s; idle max gap "
              f"{idle_worst * 1000:.0f} ms; run max gap {walls[-1] * 1000:.0f} ms, p95 "
              f"{walls[int(0.95 * (len(walls) - 1))] * 1000:.0f} ms over {len(walls)} ticks; max GUI-thread CPU "
              f"in a gap {max(c for _, c in gaps) * 1000:.0f} ms", flush=True)
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
