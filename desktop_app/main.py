"""Entry point of the desktop app (`mpox-triage-gui`): shows the main window at once, loads models later.

TensorFlow is never imported here or on the GUI thread; model workers import it in their threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

_T0 = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpox-triage-gui", description="Mpox triage desktop app (research use only)")
    parser.add_argument("folder", nargs="?", help="folder of photos to open")
    parser.add_argument("--models-dir", help="folder of model bundles (default: the shipped models/)")
    parser.add_argument("--startup-probe", action="store_true",
                        help="print the seconds until the window is shown, then quit (for packaging checks)")
    parser.add_argument("--smoke-test", metavar="FOLDER",
                        help="open FOLDER, run the selected model, print a summary and quit (packaging check)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop_app.notices import APP_NAME, ORG_NAME
    from desktop_app.mainwindow import ICON_PATH, MainWindow
    from desktop_app.settings.store import AppSettings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName("mpox-triage")
    settings = AppSettings()  # weights_dir stays in the settings and is passed to core calls explicitly
    # A smoke test gets a fresh session, so earlier results are not restored and skipped.
    sessions = tempfile.mkdtemp(prefix="mpox-smoke-") if args.smoke_test else None
    window = MainWindow(settings, models_dir=args.models_dir, sessions_dir=sessions)
    if ICON_PATH.is_file():
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(ICON_PATH)))
    window.show()
    if args.startup_probe:
        def probe() -> None:
            print(f"window shown after {time.perf_counter() - _T0:.2f} s", flush=True)
            window.close()
            app.quit()

        QTimer.singleShot(0, probe)
    elif args.smoke_test:
        return _smoke_test(app, window, args.smoke_test)
    elif args.folder:
        QTimer.singleShot(0, lambda: window.open_folder(args.folder))
    return app.exec()


def _smoke_test(app, window, folder: str) -> int:
    """Score a folder through the real window and workers; exit 0 when results came back."""
    from PySide6.QtCore import QTimer

    outcome: dict = {}

    def done(summary: dict) -> None:
        outcome.update(summary)
        cards = ", ".join(f"{c.name} {c.version}" for c in window.selected_cards())
        print(f"smoke test: {summary['kept']} of {summary['total']} scored by {cards} in "
              f"{summary['elapsed_s']:.1f} s, {summary['errors']} unreadable, failures: {summary['failures']}",
              flush=True)
        window.close()
        app.quit()

    def start() -> None:
        if not (window.open_folder(folder) and window.run()):
            print(f"smoke test: nothing to run ({window.message.text()})", flush=True)
            window.close()
            app.quit()

    window.run_finished.connect(done)
    QTimer.singleShot(0, start)
    app.exec()
    return 0 if outcome.get("kept") and not outcome.get("failures") else 1


if __name__ == "__main__":
    sys.exit(main())
