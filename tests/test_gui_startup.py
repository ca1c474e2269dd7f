"""Start-up: a clear message naming missing xcb system libraries (instead of Qt's abort), and the
last folder reopened on relaunch."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from desktop_app.main import XCB_LIBRARIES, qt_platform, startup_folder, xcb_problem
from desktop_app.settings.store import AppSettings


def test_missing_xcb_libraries_are_named_with_their_debian_packages():
    absent = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}

    def loader(name: str) -> None:
        if name in absent:
            raise OSError(f"{name}: cannot open shared object file")

    message = xcb_problem({"QT_QPA_PLATFORM": "xcb"}, loader)
    assert "libxcb-icccm.so.4" in message and "libxcb-keysyms.so.1" in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in message
    assert xcb_problem({"QT_QPA_PLATFORM": "xcb"}, lambda _n: None) == ""
    # Only xcb is checked: offscreen (tests, smoke test) and Wayland sessions never are.
    assert xcb_problem({"QT_QPA_PLATFORM": "offscreen"}, loader) == ""
    assert "libxcb-cursor.so.0" in XCB_LIBRARIES and XCB_LIBRARIES["libxkbcommon-x11.so.0"] == "libxkbcommon-x11-0"


def test_platform_is_read_like_qt_does():
    assert qt_platform({"QT_QPA_PLATFORM": "offscreen"}) == "offscreen"
    assert qt_platform({"QT_QPA_PLATFORM": "xcb;wayland"}) == "xcb"
    assert qt_platform({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}) in ("wayland", "")


def test_relaunch_reopens_the_last_folder_when_it_still_exists(tmp_path):
    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert startup_folder(None, settings) == ""
    settings.add_recent(str(tmp_path))
    assert startup_folder(None, settings) == str(tmp_path)
    assert startup_folder("/given", settings) == "/given"
    settings.add_recent(str(tmp_path / "gone"))
    assert startup_folder(None, settings) == ""
