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

# What PySide6's platforms/libqxcb.so (and libQt6XcbQpa) load, by Debian / Ubuntu package; from `ldd` on
# them (PySide6 6.x). Qt itself only says "could not load the Qt platform plugin xcb" and aborts.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6",
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-shm.so.0": "libxcb-shm0", "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1", "libEGL.so.1": "libegl1", "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}


def qt_platform(env: dict | None = None) -> str:
    """The platform plugin Qt will try first: QT_QPA_PLATFORM, else wayland in a Wayland session, else xcb."""
    env = os.environ if env is None else env
    chosen = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen
    if sys.platform.startswith("linux"):
        wayland = env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland"
        return "wayland" if wayland else "xcb"
    return ""


def missing_xcb_libraries(loader=None) -> list[tuple[str, str]]:
    """(library, Debian package) for each library the xcb plugin needs that cannot be loaded."""
    import ctypes

    def load(name: str) -> None:
        ctypes.CDLL(name)

    loader = loader or load
    missing = []
    for lib, package in XCB_LIBRARIES.items():
        try:
            loader(lib)
        except OSError:
            missing.append((lib, package))
    return missing


def xcb_problem(env: dict | None = None, loader=None) -> str:
    """A message naming the missing system libraries, or "" (also "" when the platform is not xcb)."""
    if qt_platform(env) != "xcb":
        return ""
    missing = missing_xcb_libraries(loader)
    if not missing:
        return ""
    packages = " ".join(sorted({p for _l, p in missing}))
    return ("mpox-triage-gui cannot open a window: the Qt X11 (xcb) platform needs system libraries that are "
            f"not installed: {', '.join(lib for lib, _p in missing)}.\n"
            f"On Debian / Ubuntu install them with:\n  sudo apt-get install {packages}\n"
            "(or run without a screen with QT_QPA_PLATFORM=offscreen for the smoke test).")


def startup_folder(folder_arg: str | None, settings) -> str:
    """The folder to open at start: the one given, else the last one (if it still exists)."""
    if folder_arg:
        return folder_arg
    last = settings.last_folder
    return last if last and os.path.isdir(last) else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpox-triage-gui", description="Mpox triage desktop app (research use only)")
    parser.add_argument("folder", nargs="?", help="folder of photos to open")
    parser.add_argument("--models-dir", help="folder of model bundles (default: the shipped models/)")
    parser.add_argument("--startup-probe", action="store_true",
                        help="print the seconds until the window is shown, then quit (for packaging checks)")
    parser.add_argument("--smoke-test", metavar="FOLDER",
                        help="open FOLDER, run the selected model, print a summary and quit (packaging check)")
    parser.add_argument("--model", default="",
                        help="with --smoke-test: text in the model picker entry to run (e.g. xception, Both)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    problem = xcb_problem()
    if problem:
        print(problem, file=sys.stderr, flush=True)
        return 3
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
        if args.model:
            window.select_model(args.model)
        return _smoke_test(app, window, args.smoke_test)
    else:
        folder = startup_folder(args.folder, settings)
        if folder:
            QTimer.singleShot(0, lambda: window.open_folder(folder))
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
