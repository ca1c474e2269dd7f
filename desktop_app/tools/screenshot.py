"""Render the main window with real results to a PNG (docs/screenshot_*.png), offscreen or under Xvfb.

    QT_QPA_PLATFORM=offscreen python -m desktop_app.tools.screenshot PHOTOS_DIR OUT.png --models-dir DIR
    DISPLAY=:77 QT_QPA_PLATFORM=xcb python -m desktop_app.tools.screenshot ... --size 1024x700 --max-kb 400
    (--size screen: the size the window gives itself, e.g. under `Xvfb :78 -screen 0 1024x700x24`)

Opens the folder, runs the first model choice (or --model), keeps the default order (highest risk
first), reviews a few rows, selects one with its Grad-CAM and grabs the window. Uses a throw-away
settings file and session. --max-kb re-encodes with an adaptive palette when the PNG is larger.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos")
    parser.add_argument("out")
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--model", default="", help="text in the model picker entry to choose (e.g. Both)")
    parser.add_argument("--size", default="1400x860", help="WxH, or 'screen' for the window's own first size")
    parser.add_argument("--select", type=int, default=1, help="row (in sorted order) to show in the detail pane")
    parser.add_argument("--max-kb", type=int, default=0, help="re-encode with a 256-colour palette above this size")
    parser.add_argument("--sort", choices=("risk", "p"), default="risk", help="table order in the picture")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop_app.mainwindow import MainWindow
    from desktop_app.settings.store import AppSettings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    tmp = Path(tempfile.mkdtemp(prefix="mpox-shot-"))
    settings = AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    settings.reviewer = "j.doe"
    window = MainWindow(settings, models_dir=args.models_dir, sessions_dir=tmp / "sessions")
    if args.size != "screen":   # "screen": the size the window gives itself on this screen
        w, h = (int(v) for v in args.size.split("x"))
        window.resize(w, h)
    window.show()
    if args.model:
        window.select_model(args.model)

    def wait(signal, timeout_ms: int = 600_000) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()

    window.open_folder(args.photos)
    window.run()
    wait(window.run_finished)
    if args.sort == "p":
        window.results.table.sortByColumn(window.model.column_of("p"), Qt.SortOrder.DescendingOrder)
    proxy = window.results.proxy
    # A few reviews, as a reviewer would leave them.
    for proxy_row, label in ((0, "mpox"), (2, "mpox"), (3, "unsure")):
        if proxy_row < proxy.rowCount():
            window.review(proxy.mapToSource(proxy.index(proxy_row, 1)).row(), label)
    target = proxy.mapToSource(proxy.index(min(args.select, proxy.rowCount() - 1), 1)).row()
    wanted = window.model.row_at(target).path
    loop = QEventLoop()
    window.detail.heatmap_ready.connect(lambda p, _k: loop.quit() if p == wanted else None)
    QTimer.singleShot(120_000, loop.quit)
    window.results.select_source_row(target)
    loop.exec()
    for _ in range(20):
        app.processEvents()
    window.grab().save(args.out)
    size_kb = Path(args.out).stat().st_size / 1024
    if args.max_kb and size_kb > args.max_kb:
        from PIL import Image

        Image.open(args.out).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
        size_kb = Path(args.out).stat().st_size / 1024
    print(f"saved {args.out} ({size_kb:.0f} KB)")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
