"""The main window: open a folder, pick a model, run, review, export, retrain.

Presentation and scheduling only: the window presents a core.store.workspace.Workspace (the folder, its
session, results, reviews, exports; the same object the command line drives) and keeps no domain state
of its own. Every ML step is a core call made in a worker thread. The window never imports TensorFlow;
the model workers do, in their own threads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PySide6.QtCore import QSize, QStandardPaths, Qt, Signal, Slot
from PySide6.QtGui import (QAction, QActionGroup, QDragEnterEvent, QDropEvent, QGuiApplication, QIcon, QKeySequence,
                           QPixmap)
from PySide6.QtWidgets import (QComboBox, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar, QSplitter,
                               QToolBar, QVBoxLayout, QWidget)

from desktop_app.about import ModelCardDialog, show_about
from desktop_app.detail.pane import DISPLAY_SIDE, DetailPane
from desktop_app.elide import ElidingLabel, plural
from desktop_app.notices import APP_NAME, RESEARCH_NOTICE, STATUS_NOTICE
from desktop_app.results.model import ResultsModel
from desktop_app.results.progress import RunProgress
from desktop_app.review.controller import ReviewController
from desktop_app.results.view import ResultsPanel
from desktop_app.settings.store import AppSettings
from desktop_app.workers.images import THUMB_SIZE, ImageLoader, run_in_background
from desktop_app.workers.model_worker import ModelHandle
from desktop_app.workers.run_controller import RunController

ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "mpox-triage.svg"


def scan_bundles(models_dir: str | os.PathLike | None,
                 problems: list[str] | None = None) -> list[tuple[Path, object]]:
    """(bundle folder, ModelCard) for every readable bundle (shipped, then the user's own unless a models folder
    is set); reads JSON only, no TensorFlow. A malformed card is skipped with one line in `problems`."""
    from core.models.bundle import scan_bundles as core_scan_bundles

    return core_scan_bundles(models_dir, problems)


def model_choices(bundles: list[tuple[Path, object]]) -> list[tuple[str, list[str], list]]:
    """Picker entries (label, bundle folders, cards): each bundle, then 'Both'.

    With a combined bundle whose components are installed, 'Both' runs the combined model first (it decides)
    and its two components (their scores are columns beside it); otherwise one bundle per architecture."""
    from core.photos.preprocess import ARCHITECTURES

    def display(card) -> str:
        arch = ARCHITECTURES.get(card.architecture.lower())
        return arch.display_name if arch else card.architecture

    choices = []
    first_per_arch: dict[str, tuple[Path, object]] = {}
    for path, card in bundles:
        choices.append((f"{display(card)} · {card.name} {card.version} · threshold {card.threshold:.2f}",
                        [str(path)], [card]))
        if card.architecture.lower() in ARCHITECTURES:
            first_per_arch.setdefault(card.architecture.lower(), (path, card))
    by_sha = {getattr(c, "model_sha256", ""): (p, c) for p, c in bundles}
    for path, card in bundles:
        extra = getattr(card, "extra", None)
        refs = extra.get("components") if isinstance(extra, dict) else None
        if card.architecture.lower() != "combined" or not refs:
            continue
        parts = [by_sha.get(r.get("sha256")) for r in refs]
        if all(parts):
            names = " and ".join(f"{display(c)} {c.version}" for _p, c in parts)
            choices.append((f"Both · combined {card.version} decides; {names} scores shown",
                            [str(path)] + [str(p) for p, _c in parts], [card] + [c for _p, c in parts]))
            return choices
    if len(first_per_arch) >= 2:
        pairs = list(first_per_arch.values())
        # Name each version: once a retrained bundle exists, "Both" must say which one it uses.
        names = " + ".join(f"{display(c)} {c.version}" for _p, c in pairs)
        choices.append((f"Both · {names}", [str(p) for p, _ in pairs], [c for _, c in pairs]))
    return choices


PREFERRED_SIZE = (1320, 820)
FRAME_ALLOWANCE = (16, 48)   # a window manager's frame and title bar, which resize() does not count


def initial_size(available: QSize, preferred: tuple[int, int] = PREFERRED_SIZE) -> QSize:
    """The window's size on a screen whose available area is `available`: `preferred` where there is room, else
    the available area less a frame (a 1024x700 screen shows the whole window, status bar included)."""
    return QSize(max(320, min(preferred[0], available.width() - FRAME_ALLOWANCE[0])),
                 max(240, min(preferred[1], available.height() - FRAME_ALLOWANCE[1])))


def run_message(summary: dict) -> str:
    """The status line after a run, in photos: what was kept per model when cancelled, and scored photos
    apart from unreadable ones (never "45 photos scored, 3 could not be read")."""
    errors = summary.get("errors", 0)
    per = summary.get("per_model") or []
    if summary.get("cancelled"):
        complete = summary.get("complete", summary["kept"])
        text = f"Cancelled — {complete} of {plural(summary['total'], 'photo')} scored by every model"
        if len(per) > 1:
            text += " (" + ", ".join(f"{name} {kept} of {total}" for name, kept, total in per) + ")"
        return text + "; kept in the session, Run scores the rest"
    readable = summary["kept"] - errors
    text = f"Done — {plural(readable, 'photo')} scored in {summary['elapsed_s']:.1f} s"
    if errors:
        text += f"; {errors} more could not be read (see the 'errors' filter)"
    return text


class MainWindow(QMainWindow):
    """Signals for tests and scripting: run_finished(summary dict), folder_opened(n files)."""

    run_finished = Signal(object)
    folder_opened = Signal(int)
    export_finished = Signal(str)
    print_finished = Signal(bool)     # True: sent to the printer; False: cancelled or failed

    def __init__(self, settings: AppSettings | None = None, models_dir: str | os.PathLike | None = None,
                 sessions_dir: str | os.PathLike | None = None):
        super().__init__()
        self.settings = settings or AppSettings()
        self._models_dir = str(models_dir) if models_dir else (self.settings.models_dir or None)
        self.sessions_dir = Path(sessions_dir) if sessions_dir else Path(
            QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "sessions"
        self.workspace = None                          # core.store.workspace.Workspace of the open folder
        self.handles: dict[str, ModelHandle] = {}      # bundle folder -> handle
        self._key_of_handle: dict[str, str] = {}        # bundle folder -> model key (weights SHA-256)
        self._handle_of_key: dict[str, ModelHandle] = {}
        self.bundles: list = []
        self.choices: list = []
        self._background: list = []
        self.last_summary: dict | None = None
        self.last_warning: QMessageBox | None = None
        self.heatmaps: dict = {}                       # path -> Grad-CAM (H, W) float, for reports
        self._resumed = 0
        self._run_names = ""

        self.setWindowTitle(APP_NAME)
        if ICON_PATH.is_file():
            self.setWindowIcon(QIcon(str(ICON_PATH)))
        self.setAcceptDrops(True)
        screen = self.screen() or QGuiApplication.primaryScreen()
        self.resize(initial_size(screen.availableGeometry().size()) if screen is not None else QSize(*PREFERRED_SIZE))

        self.images = ImageLoader(self)
        self.model = ResultsModel(self)
        self.model.thumbnails = self.images
        self.results = ResultsPanel(self.model)
        self.detail = DetailPane()
        splitter = QSplitter()
        splitter.addWidget(self.results)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([900, 460])
        self.detail.setMinimumWidth(320)
        self.results.heat_for = self.detail.heat_for   # the photo large shows the detail pane's heat map
        self.splitter = splitter
        # The folder's shift alarm: a banner above the table, never hidden once it fired for this folder.
        self.shift_banner = QLabel()
        self.shift_banner.setWordWrap(True)
        self.shift_banner.setStyleSheet("background: #fff1cc; border: 1px solid #d9a400; color: #5a3d00; "
                                        "padding: 6px; font-weight: 600;")
        self.shift_banner.hide()
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.shift_banner)
        column.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.controller = RunController(self)
        self.reviews = ReviewController(self)
        self.run_progress = RunProgress()

        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self._connect()
        self.refresh_models()
        self._update_actions()
        if not self.model_problems:  # else the skipped model card's warning stays in view
            self._set_message("Open a folder of photos (File > Open folder, or drop it here)")
        self.restore_window_state()

    def restore_window_state(self) -> None:
        """The window's size and the table / detail split as the user left them."""
        geometry, split = self.settings.window_state()
        if geometry:
            self.restoreGeometry(geometry)
            self.fit_on_screen()   # saved on a larger screen: never larger than this one
        if split:
            self.splitter.restoreState(split)

    def fit_on_screen(self) -> None:
        """Shrink the window to the screen's available area (less a frame) and move it inside."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        avail = screen.availableGeometry()
        size = initial_size(avail.size(), preferred=(self.width(), self.height()))
        if size != self.size():
            self.resize(size)
        x = min(max(self.x(), avail.left()), avail.right() - size.width())
        y = min(max(self.y(), avail.top()), avail.bottom() - size.height())
        if (x, y) != (self.x(), self.y()):
            self.move(x, y)

    # --- the workspace, presented ------------------------------------------------------------------
    @property
    def folder(self) -> str:
        return str(self.workspace.folder) if self.workspace is not None else ""

    @property
    def paths(self) -> list[str]:
        return self.workspace.paths if self.workspace is not None else []

    @property
    def session(self):
        return self.workspace.session if self.workspace is not None else None

    # --- construction --------------------------------------------------------------------------
    def _build_actions(self) -> None:
        style = self.style()
        from PySide6.QtWidgets import QStyle

        self.act_open = QAction(style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon), "&Open folder…", self)
        self.act_open.setShortcut(QKeySequence.StandardKey.Open)
        self.act_export_pdf = QAction("Export report (&PDF)…", self)
        self.act_export_pdf.setShortcut(QKeySequence("Ctrl+E"))
        self.act_print = QAction("&Print report…", self)
        self.act_print.setShortcut(QKeySequence(QKeySequence.StandardKey.Print))
        self.act_print.setStatusTip("Print the report's counts, every photo's call and reasons, and the sign-off "
                                    "lines (Export report writes the full PDF with photos and charts)")
        self.act_export_csv = QAction("Export &CSV…", self)
        self.act_export_csv.setShortcut(QKeySequence("Ctrl+Shift+E"))
        self.act_export_fhir = QAction("Export &FHIR bundle (JSON)…", self)
        self.act_export_fhir.setToolTip("A FHIR R4 Bundle for a health record: a DiagnosticReport per case, an "
                                        "Observation per scored photo, a Device per model (docs/interop.md)")
        # Exports show what the table shows (the picked model, or Both's models); every model ever run on the
        # folder is an explicit choice.
        self.act_export_all = QAction("Exports include every model stored for this folder", self)
        self.act_export_all.setCheckable(True)
        self.act_export_card = QAction("Export &model card (JSON)…", self)
        self.act_export_card.setToolTip("The full model card of the selected model(s), every field, as JSON")
        self.act_quit = QAction("&Quit", self)
        self.act_quit.setShortcut(QKeySequence.StandardKey.Quit)
        self.act_run = QAction(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "&Run", self)
        self.act_run.setShortcut(QKeySequence("Ctrl+R"))
        self.act_run.setToolTip("Score every photo in the folder with the selected model(s) (Ctrl+R)")
        self.act_cancel = QAction(style.standardIcon(QStyle.StandardPixmap.SP_MediaStop), "&Cancel", self)
        self.act_cancel.setShortcut(QKeySequence("Esc"))
        self.act_cancel.setToolTip("Stop after the current batch; results so far are kept")
        self.act_model_card = QAction("&About this model…", self)
        self.act_retrain = QAction("&Retrain wizard…", self)
        self.act_adapt = QAction("&Adapt to this site…", self)
        self.act_adapt.setToolTip("Train a new head on a model's own training embeddings plus this folder's "
                                  "reviewed photos; you choose where it is saved, nothing is replaced")
        self.act_settings = QAction("&Settings…", self)
        self.act_about = QAction(f"&About {APP_NAME}", self)
        self.act_undo = self.reviews.stack.createUndoAction(self, "&Undo")
        self.act_undo.setShortcut(QKeySequence.StandardKey.Undo)
        self.act_redo = self.reviews.stack.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence.StandardKey.Redo])
        self.act_clear_label = QAction("&Clear label", self)
        self.act_clear_label.setToolTip("Return the current photo to unreviewed (Delete or Backspace in the table)")
        self.act_review_next = QAction("Review &next (likeliest missed mpox)", self)
        self.act_review_next.setShortcut(QKeySequence("Ctrl+J"))
        self.act_review_next.setToolTip("Select the unreviewed photo not called mpox that the current model scores "
                                        "highest: the likeliest missed mpox (Ctrl+J)")
        self.act_label_next = QAction("&Label next for adapting (labelling sample)", self)
        self.act_label_next.setShortcut(QKeySequence("Ctrl+Shift+J"))
        self.act_label_next.setToolTip("Select the next unlabelled photo of this folder's labelling sample: a random "
                                       "sample, the photos that teach an adapted model best (Ctrl+Shift+J)")
        self.act_find = QAction("&Filter by file name", self)
        self.act_find.setShortcut(QKeySequence.StandardKey.Find)
        self.act_find.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)  # the panel's own Ctrl+F acts
        self.act_shortcuts = QAction("&Keyboard shortcuts", self)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        m_file = bar.addMenu("&File")
        m_file.addAction(self.act_open)
        self.menu_recent = m_file.addMenu("Recent folders")
        self.menu_recent.aboutToShow.connect(self._fill_recent)
        m_file.addSeparator()
        m_file.addAction(self.act_export_pdf)
        m_file.addAction(self.act_print)
        m_file.addAction(self.act_export_csv)
        m_file.addAction(self.act_export_fhir)
        m_file.addAction(self.act_export_all)
        m_file.addAction(self.act_export_card)
        m_file.addSeparator()
        m_file.addAction(self.act_quit)
        m_edit = bar.addMenu("&Edit")
        m_edit.addAction(self.act_undo)
        m_edit.addAction(self.act_redo)
        m_edit.addSeparator()
        m_edit.addAction(self.act_clear_label)
        m_edit.addAction(self.act_review_next)
        m_edit.addAction(self.act_label_next)
        m_edit.addAction(self.act_find)
        self.menu_model = bar.addMenu("&Model")
        self.model_group = QActionGroup(self)
        self.model_group.setExclusive(True)
        m_run = bar.addMenu("&Run")
        m_run.addAction(self.act_run)
        m_run.addAction(self.act_cancel)
        m_tools = bar.addMenu("&Tools")
        m_tools.addAction(self.act_adapt)
        m_tools.addAction(self.act_retrain)
        m_tools.addAction(self.act_settings)
        m_help = bar.addMenu("&Help")
        m_help.addAction(self.act_shortcuts)
        m_help.addAction(self.act_about)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addAction(self.act_open)
        tb.addSeparator()
        tb.addWidget(QLabel(" Model: "))
        self.model_combo = QComboBox()
        self.model_combo.setMinimumContentsLength(36)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        tb.addWidget(self.model_combo)
        tb.addSeparator()
        tb.addAction(self.act_run)
        tb.addAction(self.act_cancel)
        tb.addSeparator()
        tb.addWidget(self.results.group_combo)   # cases (core.store.cases): the results panel's grouping
        self.addToolBar(tb)
        # Open folder and Run are reachable with Tab (toolbar buttons take no focus by default).
        for act in (self.act_open, self.act_run):
            tb.widgetForAction(act).setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.toolbar = tb

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        # Status text is never cut silently: too long, it ends in "…" and its tooltip has it whole.
        self.message = ElidingLabel()
        self.message.setMinimumWidth(420)   # the message wins room over the model name beside it
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.eta = QLabel()
        # "showing X of Y" sits above the table, beside the filter it counts (docs/desktop.md).
        self.showing = self.results.count_label
        self.model_in_use = ElidingLabel(max_width=460)
        notice = QLabel(STATUS_NOTICE)
        notice.setToolTip(RESEARCH_NOTICE)
        notice.setStyleSheet("color: #a0301c; font-weight: 600; padding: 0 6px;")
        sb.addWidget(self.message, 1)
        sb.addPermanentWidget(self.model_in_use)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.eta)
        sb.addPermanentWidget(notice)
        self.notice_label = notice

    def _connect(self) -> None:
        self.act_open.triggered.connect(lambda: self.choose_folder())
        self.act_export_csv.triggered.connect(lambda: self.export_csv())
        self.act_export_pdf.triggered.connect(lambda: self.export_pdf())
        self.act_print.triggered.connect(lambda: self.print_report())
        self.act_export_fhir.triggered.connect(lambda: self.export_fhir())
        self.act_quit.triggered.connect(self.close)
        self.act_run.triggered.connect(self.run)
        self.act_cancel.triggered.connect(self.cancel_run)
        self.act_model_card.triggered.connect(self.show_model_card)
        self.act_retrain.triggered.connect(lambda: self.open_retrain_wizard())
        self.act_adapt.triggered.connect(lambda: self.open_adapt())
        self.act_export_card.triggered.connect(lambda: self.export_model_card())
        self.act_settings.triggered.connect(self.open_settings)
        self.act_about.triggered.connect(lambda: show_about(self))
        self.model_combo.currentIndexChanged.connect(self._on_choice_changed)
        self.controller.started.connect(self._on_run_started)
        self.controller.progress.connect(self._on_progress)
        self.controller.records.connect(self._on_records)
        self.controller.finished.connect(self._on_run_finished)
        self.controller.failed.connect(self._on_run_failed)
        self.results.counts_changed.connect(self._on_counts)
        self.results.current_changed.connect(self._on_current_row)
        self.results.table.review_requested.connect(self.review)
        self.results.table.clear_requested.connect(self.reviews.clear)
        self.reviews.message.connect(self._set_message)
        self.folder_opened.connect(lambda _n: self.reviews.reset())
        self.act_clear_label.triggered.connect(self.clear_current_label)
        self.act_review_next.triggered.connect(lambda: self.review_next())
        self.act_label_next.triggered.connect(lambda: self.label_next())
        self.act_find.triggered.connect(self.results.focus_filter)
        self.act_shortcuts.triggered.connect(self.show_shortcuts)
        self.images.loaded.connect(self._on_image_loaded)
        self.detail.gradcam_requested.connect(self._on_gradcam_requested)

    # --- models --------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Rescan the models folder and rebuild the picker (combo and Model menu)."""
        self.model_problems: list[str] = []
        self.bundles = scan_bundles(self._models_dir, self.model_problems)
        if self.model_problems:  # a bad card is skipped with one line; it never stops the app
            more = f" (and {len(self.model_problems) - 1} more)" if len(self.model_problems) > 1 else ""
            self._set_message(f"Warning: {self.model_problems[0]}{more}", error=True)
        self.choices = model_choices(self.bundles)
        self.model.set_cards([c for _p, c in self.bundles])
        self.detail.results_model = self.model
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, dirs, cards in self.choices:
            self.model_combo.addItem(label, dirs)
            self.model_combo.setItemData(self.model_combo.count() - 1, self._choice_tooltip(cards),
                                         Qt.ItemDataRole.ToolTipRole)
        self.model_combo.blockSignals(False)
        self.menu_model.clear()
        for action in self.model_group.actions():
            self.model_group.removeAction(action)
        for i, (label, _dirs, _cards) in enumerate(self.choices):
            act = QAction(label, self, checkable=True)
            act.triggered.connect(lambda _checked=False, i=i: self.model_combo.setCurrentIndex(i))
            self.model_group.addAction(act)
            self.menu_model.addAction(act)
        if not self.choices:
            none = self.menu_model.addAction("No model bundles found — see Tools > Settings")
            none.setEnabled(False)
        self.menu_model.addSeparator()
        self.menu_model.addAction(self.act_model_card)
        index = self.settings.remembered_choice(self.choices)
        if self.choices:
            self.model_combo.setCurrentIndex(index)
            self._on_choice_changed(index)

    @staticmethod
    def _choice_tooltip(cards: list) -> str:
        return "\n".join(f"{c.name} {c.version} ({c.architecture}, {c.input_size}px) — threshold {c.threshold:.3f}, "
                         f"weights {c.short_sha}" for c in cards)

    def selected_cards(self) -> list:
        i = self.model_combo.currentIndex()
        return self.choices[i][2] if 0 <= i < len(self.choices) else []

    def selected_dirs(self) -> list[str]:
        i = self.model_combo.currentIndex()
        return self.choices[i][1] if 0 <= i < len(self.choices) else []

    def select_model(self, label_contains: str) -> None:
        for i, (label, _d, _c) in enumerate(self.choices):
            if label_contains.lower() in label.lower():
                self.model_combo.setCurrentIndex(i)
                return
        raise KeyError(f"No model choice matching {label_contains!r}")

    @Slot(int)
    def _on_choice_changed(self, index: int) -> None:
        if not 0 <= index < len(self.choices):
            return
        actions = self.model_group.actions()
        if index < len(actions):
            actions[index].setChecked(True)
        self.model_combo.setToolTip(self._choice_tooltip(self.choices[index][2]))
        self.settings.remember_model(self.choices[index][1])
        # The table, its reasons and the detail pane follow the picker: the chosen models only, in its order.
        cards = self.choices[index][2]
        self.model.set_models(cards)
        self.model_in_use.setText("Model: " + " + ".join(c.display_name for c in cards))
        self.model_in_use.setToolTip(self._choice_tooltip(cards))
        self.detail.show_row(self.detail.row) if self.detail.row is not None else None
        self.show_shift()   # the banner names the picked models' own verdicts
        # Load in the background now so the first Run does not wait for TensorFlow.
        for path, card in zip(self.choices[index][1], self.choices[index][2]):
            self.handle_for(path, card).load()
        self._update_actions()

    def handle_for(self, bundle_dir: str, card=None) -> ModelHandle:
        """The long-lived worker of a bundle, created on first use."""
        handle = self.handles.get(bundle_dir)
        if handle is None:
            handle = ModelHandle(bundle_dir, batch_size=self.settings.batch_size, parent=self)
            handle.worker.load_failed.connect(self._on_load_failed)
            handle.worker.loaded.connect(self._on_model_loaded)
            handle.worker.explained.connect(self._on_explained)
            handle.worker.explain_failed.connect(self._on_explain_failed)
            handle.worker.attached.connect(self._on_attached)
            self.handles[bundle_dir] = handle
        if card is not None:
            self._key_of_handle[bundle_dir] = card.key
            self._handle_of_key[card.key] = handle
        return handle

    @Slot(object, object)
    def _on_attached(self, workspace, moved) -> None:
        """A model's verdict on the open folder was brought up to date (ModelWorker.attach): its re-decided rows
        replace theirs in the table, and the banner shows the verdicts now stored."""
        if workspace is not self.workspace:
            return   # another folder was opened meanwhile
        if moved:
            self.model.add_records(list(moved))
        self.show_shift()

    @Slot(object)
    def _on_model_loaded(self, card) -> None:
        if not self.controller.running:
            self._set_message(f"Model ready: {card.name} {card.version} (threshold {card.threshold:.2f})")

    @Slot(str)
    def _on_load_failed(self, message: str) -> None:
        self._set_message(message, error=True)

    def show_model_card(self) -> ModelCardDialog:
        dialog = ModelCardDialog(self.selected_cards(), self)
        dialog.open()
        return dialog

    # --- folders -------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of photos", self.settings.last_folder)
        if folder:
            self.open_folder(folder)

    def _fill_recent(self) -> None:
        self.menu_recent.clear()
        for folder in self.settings.recent_folders:
            act = self.menu_recent.addAction(folder)
            act.triggered.connect(lambda _c=False, f=folder: self.open_folder(f))
        if not self.settings.recent_folders:
            self.menu_recent.addAction("(none)").setEnabled(False)

    def session_dir_for(self, folder: str) -> Path:
        """Sessions live in the app's data folder, never beside the photos."""
        digest = hashlib.sha1(os.fsencode(str(Path(folder).resolve()))).hexdigest()[:10]
        return self.sessions_dir / f"{Path(folder).name or 'root'}-{digest}"

    def open_folder(self, folder: str | os.PathLike) -> bool:
        """Show a folder's photos: open its workspace (discover, open or resume its session, restore)."""
        from core.store.workspace import Workspace, WorkspaceError

        if self.controller.running:
            self._set_message("A run is in progress: cancel it before opening another folder", error=True)
            return False
        folder = str(Path(folder).expanduser())
        try:
            found = Workspace.discover(folder)
        except WorkspaceError as exc:
            self.warn(f"Cannot open {folder}: {exc}")
            return False
        self._close_session()
        self.model.clear()
        self.images.clear()
        self.detail.clear_cache()
        self.heatmaps = {}
        self.detail.show_row(None)
        self.shift_banner.hide()
        actor = self.settings.reviewer or None
        try:
            self.workspace = Workspace.open(folder, self.session_dir_for(folder), actor=actor, found=found)
            self.images.cache_dir = self.session.cache_dir("thumbnails")
        except (WorkspaceError, OSError) as exc:  # the app works without a session; say so
            self.workspace = Workspace(folder, None, actor, paths=found.paths, walk_errors=found.errors,
                                       skipped_links=found.skipped_links, unreadable_dirs=found.unreadable_dirs)
            self._set_message(f"Session not available ({exc}); reviews will not be saved", error=True)
        for _dir, card in self.bundles:   # restored results name their model's origin in exports
            self.workspace.cards.setdefault(card.key, card)
        self.results.set_case_root(str(self.workspace.folder))   # its first-level subfolders can be cases
        self.model.add_records(list(self.workspace.records()))
        self.model.apply_reviews(self.workspace.reviews)
        self.show_shift()   # each picked model's stored verdict for this folder
        if self.session is not None:
            # A run killed before it ended left results no verdict covers: each picked model's worker tests what
            # is stored (in its thread) and the table and banner follow (_on_attached).
            for path, card in zip(self.selected_dirs(), self.selected_cards()):
                if self.workspace.results.get(card.key):
                    self.handle_for(path, card).attach(self.workspace)
        self.settings.add_recent(folder)
        self.setWindowTitle(f"{folder} — {APP_NAME}")  # ends with the app name, so Qt does not append it again
        msg = f"{plural(len(self.paths), 'photo')} in {folder}"
        if self.model.rowCount():
            msg += f" — {self.model.rowCount()} restored from the last session"
        if self.workspace.moved:
            n = len(self.workspace.moved)
            msg += f" — {n} renamed or moved photo{'s' if n != 1 else ''} kept {'their' if n != 1 else 'its'} results"
        if found.unreadable_dirs:
            msg += f" ({len(found.unreadable_dirs)} folders unreadable)"
        if found.skipped_links:
            msg += f" ({len(found.skipped_links)} links leading outside the folder not followed)"
        if self.session is not None:
            self._set_message(msg + self._next_step())
        self._update_actions()
        self.folder_opened.emit(len(self.paths))
        return True

    def _next_step(self) -> str:
        """What the folder's status line ends with: "press Run" only when the chosen models have photos left."""
        cards = self.selected_cards()
        if not self.paths or not cards or self.workspace is None:
            return ""
        left = max(len(self.workspace.to_score(card).score) for card in cards)
        if left:
            return f" — {plural(left, 'photo')} to score: press Run"
        return " — nothing left to score"

    def _close_session(self) -> None:
        if self.workspace is not None:
            self.workspace.close()
            self.workspace = None
        self.images.cache_dir = None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls()
        if urls and any(Path(u.toLocalFile()).is_dir() for u in urls):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        for url in event.mimeData().urls():
            if Path(url.toLocalFile()).is_dir():
                self.open_folder(url.toLocalFile())
                event.acceptProposedAction()
                return

    # --- running -------------------------------------------------------------------------------
    def run(self) -> bool:
        if self.controller.running or not self.paths:
            return False
        dirs, cards = self.selected_dirs(), self.selected_cards()
        if not dirs:
            self.warn("No model bundle selected. Put bundles in the models folder "
                                "(Tools > Settings) or train one with Tools > Retrain wizard.")
            return False
        # A combined bundle decides for the photo (core.triage.reasons.deciding_key); the others' scores are shown beside it.
        self.model.set_models(cards)
        jobs = []
        for path, card in zip(dirs, cards):
            handle = self.handle_for(path, card)
            self.model.ensure_model(card.key, card.display_name)
            # The workspace's one resume policy: missing, error rows, changed files (Run after Cancel resumes).
            jobs.append((handle, self.workspace.to_score(card)))
        if all(plan.empty for _h, plan in jobs):
            self._set_message(f"Nothing left to score: all {plural(len(self.paths), 'photo')} were already "
                              "scored by the selected model(s); the results are restored from this folder's session")
            return False
        self._resumed = max(plan.restored for _h, plan in jobs)
        self._run_names = ", ".join(c.display_name for c in cards)
        self.controller.start([(h, plan) for h, plan in jobs if not plan.empty], self.workspace,
                              names={r.key: r.name for r in self.model.refs})
        return True

    def cancel_run(self) -> None:
        if self.controller.running:
            self.controller.cancel()
            self.act_cancel.setEnabled(False)
            self._set_message("Cancelling… (finishing the current batch)")

    @Slot(int)
    def _on_run_started(self, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(0)
        self.progress.show()
        cards = self.selected_cards()
        loading = [f"{c.name} {c.version}" for p, c in zip(self.selected_dirs(), cards)
                   if self.handle_for(p).card is None]
        text, eta = self.run_progress.start(len(cards), loading)
        self.eta.setText(eta)
        resumed = f" (resuming: {self.run_progress.photos(self._resumed)} photos already scored)" \
            if self._resumed else ""
        self._set_message(text + resumed)
        self._update_actions()

    @Slot(int, int)
    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        text, eta = self.run_progress.update(done, total)
        self.eta.setText(eta)
        if self.controller.token is not None and self.controller.token.cancelled:
            return
        self._set_message(text)

    @Slot(object)
    def _on_records(self, records: list) -> None:
        """A bounded chunk of results (see RunController): one insert for the chunk, not one per photo."""
        self.model.add_records(records)
        shown = self.detail.row
        if shown is not None and any(r.path == shown.path for r in records):
            row = self.model.row_of(shown.path)
            if row is not None:
                self.detail.show_row(self.model.row_at(row), self.detail.view.photo)
        if self.results.table.currentIndex().row() < 0 and self.results.proxy.rowCount() >= 1:
            self.results.table.selectRow(0)

    @Slot(object)
    def _on_run_finished(self, summary: dict) -> None:
        self.last_summary = summary
        self.progress.hide()
        self.eta.setText("")
        text = run_message(summary)
        if summary["failures"]:
            text += " — " + "; ".join(summary["failures"])
        self.show_shift(summary.get("shift"))
        self._set_message(text, error=bool(summary["failures"]))
        self._update_actions()
        self.run_finished.emit(summary)

    def show_shift(self, shift: dict | None = None) -> None:
        """Present the shift verdicts of the picked models (each model's own under Both: core.store.workspace keeps one
        per source and model, computed from what the session stores): a banner naming each model whose alarm
        stands, and the reasons the deciding verdict adds; shown again when the folder is reopened."""
        if self.workspace is None:
            return
        keys = [c.key for c in self.selected_cards()] or list(self.workspace.cards)
        cards = {k: self.workspace.cards[k] for k in keys if k in self.workspace.cards}
        self.model.set_shift(self.workspace.deciding_verdict(keys),
                             {k: self.workspace.point_for(c) for k, c in cards.items()})
        alarms = [(k, v) for k, v in ((k, self.workspace.verdict_for(k)) for k in keys) if v and v.get("detected")]
        if not alarms:
            self.shift_banner.hide()
            return
        from core.triage.shift import SHIFT_MEANING

        from core.models.operating_point import card_point, point_message

        parts = []
        for key, shift in alarms:
            text = f"Shift alarm ({shift.get('model') or 'the model'}): " + str(
                shift.get("message") or f"these photos differ from the training photos: {SHIFT_MEANING}.")
            if shift.get("operating_point") == "out_of_collection":
                text += " The review band is widened for this folder, so more photos need review."
            card = cards.get(key)
            if card is not None:   # the text classify prints and the PDF cover carries
                point, default = self.workspace.point_for(card), card_point(card)
                if not point.same_as(default):
                    name = getattr(card, "display_name", "") or f"{card.name} {card.version}"
                    text += f" {point_message(name, point, default)}."
            if shift.get("remedy"):
                from core.learning.adapt import ROUGH_BELOW
                from core.triage.remedy import MIN_PER_CLASS

                # The same numbers the adapt page gives: what adapting needs, and what gives usable figures.
                text += (f" What to do: {str(shift['remedy']).rstrip('.')} (adapting needs at least {MIN_PER_CLASS} "
                         f"mpox and {MIN_PER_CLASS} not-mpox reviews; {ROUGH_BELOW}+ of each give usable site "
                         "figures).")
            parts.append(text)
        self.shift_banner.setText("\n".join(parts))
        self.shift_banner.setToolTip("A two-sample test compared this folder's photos with each model's training "
                                     "photos (core.triage.shift); each verdict is kept with the folder's session and is "
                                     "printed on the report's cover. See docs/shift.md")
        self.shift_banner.show()

    @Slot(str)
    def _on_run_failed(self, message: str) -> None:
        self.warn(f"The run failed: {message}")

    # --- review --------------------------------------------------------------------------------
    @Slot(int, str)
    def review(self, source_row: int, label: str) -> None:
        """Record a reviewer label for a photo (never touches the model's prediction), then move on.
        Undoable (Edit > Undo); see desktop_app/review/controller.py."""
        self.reviews.label(source_row, label)

    def clear_current_label(self) -> None:
        row = self.results.current_source_row()
        if row is not None:
            self.reviews.clear(row)

    def label_next(self) -> str | None:
        """Select the next photo of the folder's labelling sample to label for adapting (review/next.py; no model
        call); returns its path, or None with the reason in the status bar."""
        from core.triage.remedy import labelling_sample_size
        from desktop_app.review.next import pick_for_labelling

        cards = [c for c in self.selected_cards() if self.workspace is not None and self.workspace.results.get(c.key)]
        if self.workspace is None or not cards:
            self._set_message("Label next: open a folder and run a model first (its run records each photo's hash)")
            return None
        card = cards[0]
        n = labelling_sample_size(getattr(card, "card", card))
        pick = pick_for_labelling(self.paths, self.workspace.results[card.key], self.workspace.reviews,
                                  str(self.workspace.folder), n, self.session)
        why = f" {pick.reason}." if pick.reason else ""
        if pick.path is None:
            self._set_message(f"The labelling sample ({pick.size} photos) is labelled: adapt with it.{why}")
            return None
        row = self.model.row_of(pick.path)
        if row is not None:
            self.results.select_source_row(row)
        self._set_message(f"Label next for adapting: {Path(pick.path).name} — photo {pick.position} of the "
                          f"{pick.size}-photo labelling sample, {pick.left} left. M / N to label.{why}")
        return pick.path

    def review_next(self) -> str | None:
        """Select the unreviewed photo the current model would most want labelled next (review/next.py: from
        the stored scores, no model call); returns its path, or None with the reason in the status bar."""
        from desktop_app.review.next import pick_next

        if self.workspace is None or not self.paths:
            self._set_message("Review next: open a folder first")
            return None
        reviewed = set(self.workspace.reviews)
        cards = [c for c in self.selected_cards() if self.workspace.results.get(c.key)]
        if not cards:
            left = sum(p not in reviewed for p in self.paths)
            self._set_message(f"Review next orders photos by the selected model's scores: run it first "
                              f"({left} photos unreviewed)" if left else "Every photo in this folder is reviewed")
            return None
        from core.triage.reasons import deciding_key

        decider = deciding_key(cards)   # under Both, the model whose call is the photo's call
        card = next((c for c in cards if c.key == decider), cards[0])
        pick = pick_next(self.paths, self.workspace.results[card.key], reviewed, card.threshold)
        if pick.path is None:
            more = f"; {pick.unscored} unreviewed photos are not scored yet (Run)" if pick.unscored else ""
            self._set_message(f"Nothing left to review: every photo scored by {card.display_name} is reviewed{more}")
            return None
        source_row = self.model.row_of(pick.path)
        name = Path(pick.path).name
        if source_row is None:
            self._set_message(f"Review next: {name} is not in the table")
            return None
        self.results.select_source_row(source_row)
        if self.results.current_source_row() != source_row:
            self._set_message(f"Review next: {name} (p = {pick.p_mpox:.2f}) is hidden by the current filter; "
                              "clear the filter to see it")
            return pick.path
        self.results.table.setFocus()
        self._set_message(f"Review next: {name} — p(mpox) {pick.p_mpox:.2f}, threshold {pick.threshold:.2f} "
                          f"({card.display_name}); {pick.candidates} scored photos unreviewed. M / N / U to label, "
                          "Ctrl+J for the next")
        return pick.path

    def show_shortcuts(self):
        from desktop_app.review.shortcuts import ShortcutsDialog

        dialog = ShortcutsDialog(self)
        dialog.open()
        return dialog

    # --- detail pane ---------------------------------------------------------------------------
    @Slot(object)
    def _on_current_row(self, row) -> None:
        if row is None:
            self.detail.show_row(None)
            return
        self.detail.show_row(row, self.images.cached(row.path, THUMB_SIZE))
        self.images.request(row.path, DISPLAY_SIDE)

    @Slot(str, int, QPixmap)
    def _on_image_loaded(self, path: str, max_side: int, pixmap: QPixmap) -> None:
        if max_side == THUMB_SIZE:
            self.model.thumbnail_ready(path)
        else:
            self.detail.set_photo(path, pixmap)

    @Slot(str, str)
    def _on_gradcam_requested(self, path: str, key: str) -> None:
        handle = self._handle_of_key.get(key)
        if handle is None:
            for bundle_dir, card in self.bundles:
                if card.key == key:
                    handle = self.handle_for(str(bundle_dir), card)
                    break
        if handle is None:
            self.detail.set_heatmap_error(path, key, "Grad-CAM unavailable: that model's bundle is not in the "
                                                      "models folder any more")
            return
        handle.explain(path)

    @Slot(str, str, object, object)
    def _on_explained(self, path: str, bundle_ref: str, colored, heat) -> None:
        # Kept for the PDF report: the heat maps the reviewer looked at go into it.
        self.heatmaps[path] = heat
        self.detail.set_heatmap(path, self._key_of_handle.get(bundle_ref, bundle_ref), colored)

    @Slot(str, str, str)
    def _on_explain_failed(self, path: str, bundle_ref: str, message: str) -> None:
        self.detail.set_heatmap_error(path, self._key_of_handle.get(bundle_ref, bundle_ref), message)

    # --- exports -------------------------------------------------------------------------------
    def _export_keys(self) -> list[str]:
        """The models an export covers: those the table shows (the picker's), unless the user asked for every
        model stored for this folder (File > Exports include every model...)."""
        if self.workspace is None:
            return []
        stored = self.workspace.model_keys()
        picked = [c.key for c in self.selected_cards()]
        if self.act_export_all.isChecked() or not picked:   # no model installed to pick: the table shows them all
            return stored
        return [k for k in picked if k in stored]

    def export_csv(self, out_path: str | None = None) -> str | None:
        """The workspace's CSV (one row per photo, every model side by side), as `classify --csv` writes it."""
        from core.store.workspace import WorkspaceError

        keys = self._export_keys()
        if not keys:
            self._set_message("Nothing to export yet: run a model first", error=True)
            return None
        if out_path is None:
            out_path, _ = QFileDialog.getSaveFileName(self, "Export CSV",
                                                      self.settings.export_path(self.folder, "results.csv"),
                                                      "CSV files (*.csv)")
            if not out_path:
                return None
        try:
            grouping = self.results.case_grouping()
            if grouping is not None:   # grouped by case: the CSV carries each photo's case_id (core.store.cases)
                from core.store.cases import assign, export_csv

                export_csv(self.workspace, out_path, keys, assign(self.workspace.paths, grouping,
                                                                  self.workspace.folder))
            else:
                self.workspace.export_csv(out_path, keys)
        except (WorkspaceError, OSError, ValueError) as exc:
            self.warn(f"Could not write {out_path}: {exc}")
            return None
        self.settings.remember_export(out_path)
        photos = self.workspace.counts(keys)["with_result"]
        self._set_message(f"Exported {photos} photos to {out_path}")
        self.export_finished.emit(out_path)
        return out_path

    def export_pdf(self, out_path: str | None = None) -> bool:
        """The workspace's PDF report, written in the background (one audit entry, as `classify --report`)."""
        try:
            import core.reports  # noqa: F401
        except ImportError:
            self.warn("PDF reports are not available in this build.")
            return False
        keys = self._export_keys()
        if not keys:
            self._set_message("Nothing to export yet: run a model first", error=True)
            return False
        if out_path is None:
            out_path, _ = QFileDialog.getSaveFileName(self, "Export report (PDF)",
                                                      self.settings.export_path(self.folder, "triage_report.pdf"),
                                                      "PDF files (*.pdf)")
            if not out_path:
                return False
        from core.store.workspace import WorkspaceError

        try:  # the output policy (core.store.outputs) refuses now, not after the report is drawn
            self.workspace.check_output(out_path, "report")
        except WorkspaceError as exc:
            self.warn(f"Could not write {out_path}: {exc}")
            return False
        cards = [c for _p, c in self.bundles if c.key in keys]
        workspace, heatmaps = self.workspace, dict(self.heatmaps)
        view = self._case_view(keys)

        def work(progress):
            from core.reports.workspace_pdf import export_case_pdf, export_pdf

            if view is not None:   # grouped by case: a case summary, photos under their cases (core.store.cases)
                return export_case_pdf(workspace, out_path, view, cards=cards, gradcam=heatmaps or None,
                                       progress=progress)
            return export_pdf(workspace, out_path, keys, cards=cards, gradcam=heatmaps or None, progress=progress)

        self._set_message("Writing the PDF report…")
        self.progress.setRange(0, 0)
        self.progress.show()
        task = run_in_background(work, lambda _r: self._pdf_done(out_path), self._pdf_failed,
                                 lambda d, t: (self.progress.setRange(0, max(1, t)), self.progress.setValue(d)))
        self._background.append(task)
        return True

    def print_report(self, printer=None) -> bool:
        """File > Print: the report's words (core.reports.printable: counts, models, every photo's call and reasons,
        sign-off lines) through Qt's print dialog. The text is made in the background, printed on the GUI thread.
        `printer` (a QPrinter) skips the dialog, e.g. to print to a PDF file in a test."""
        keys = self._export_keys()
        if not keys:
            self._set_message("Nothing to print yet: run a model first", error=True)
            return False
        from core.models.releases import bundle_origin
        from core.reports.printable import printable_html

        workspace = self.workspace
        cards = [c for _p, c in self.bundles if c.key in keys]
        cards += [c for k, c in workspace.cards.items() if k in keys and all(k != x.key for x in cards)]
        origins = {c.key: bundle_origin(c) for c in cards}
        records, reviews = list(workspace.records(keys)), dict(workspace.reviews)
        shift = workspace.deciding_verdict(keys)

        def work(_progress):
            return printable_html(records, folder=str(workspace.folder), cards=cards, reviews=reviews, shift=shift,
                                  origins=origins)

        self._set_message("Preparing the report for printing…")
        task = run_in_background(work, lambda html: self._print_html(html, printer),
                                 lambda message: (self.warn(f"Could not print the report: {message}"),
                                                  self.print_finished.emit(False)))
        self._background.append(task)
        return True

    def _print_html(self, html: str, printer=None) -> None:
        from PySide6.QtGui import QTextDocument
        from PySide6.QtPrintSupport import QPrintDialog, QPrinter

        if printer is None:
            printer = QPrinter(QPrinter.PrinterMode.HighResolution)
            printer.setDocName(f"{Path(self.folder).name} triage report")
            dialog = QPrintDialog(printer, self)
            dialog.setWindowTitle("Print the triage report")
            if dialog.exec() != QPrintDialog.DialogCode.Accepted:
                self._set_message("Printing cancelled")
                self.print_finished.emit(False)
                return
        doc = QTextDocument()
        doc.setHtml(html)
        doc.print_(printer)
        self._set_message("Report sent to the printer" if not printer.outputFileName()
                          else f"Report printed to {printer.outputFileName()}")
        self.print_finished.emit(True)

    def _case_view(self, keys: list[str]):
        """core.store.cases.CaseView of the workspace under the panel's grouping, None when photos are not grouped."""
        grouping = self.results.case_grouping()
        if grouping is None or self.workspace is None:
            return None
        from core.store.cases import workspace_view

        return workspace_view(self.workspace, keys, grouping)

    def export_fhir(self, out_path: str | None = None) -> str | None:
        """File > Export FHIR bundle: one FHIR R4 Bundle (core.reports.fhir_export) of the workspace, a DiagnosticReport per
        case (the panel's grouping; each photo its own case without one), as `classify --fhir` writes it."""
        from core.store.workspace import WorkspaceError

        keys = self._export_keys()
        if not keys:
            self._set_message("Nothing to export yet: run a model first", error=True)
            return None
        if out_path is None:
            out_path, _ = QFileDialog.getSaveFileName(self, "Export FHIR bundle",
                                                      self.settings.export_path(self.folder, "triage_fhir.json"),
                                                      "FHIR JSON (*.json)")
            if not out_path:
                return None
        try:
            from core.store.cases import workspace_view
            from core.reports.fhir_export import FhirExportError, export_workspace

            view = workspace_view(self.workspace, keys, self.results.case_grouping())
            export_workspace(self.workspace, out_path, view)
        except ImportError:
            self.warn("FHIR export needs the fhir.resources package: pip install fhir.resources")
            return None
        except (WorkspaceError, FhirExportError, OSError, ValueError) as exc:
            self.warn(f"Could not write {out_path}: {exc}")
            return None
        self.settings.remember_export(out_path)
        self._set_message(f"Exported {len(view.cases)} case(s), {len(view.photos)} photos to {out_path}")
        self.export_finished.emit(out_path)
        return out_path

    def _pdf_done(self, out_path: str) -> None:
        self.progress.hide()
        self.settings.remember_export(out_path)
        self._set_message(f"Report written to {out_path}")
        self.export_finished.emit(out_path)

    def _pdf_failed(self, message: str) -> None:
        self.progress.hide()
        self.warn(f"Could not write the report: {message}")

    # --- tools ---------------------------------------------------------------------------------
    def open_settings(self):
        from desktop_app.settings.dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.bundles, self)
        dialog.accepted.connect(self._on_settings_saved)
        dialog.open()
        return dialog

    def _on_settings_saved(self) -> None:
        # weights_dir stays in the settings; the wizard passes it to core calls explicitly.
        if self.settings.models_dir and self.settings.models_dir != self._models_dir:
            self._models_dir = self.settings.models_dir
            self.refresh_models()

    @property
    def models_dir(self) -> Path:
        from core.models.bundle import default_models_dir

        return Path(self._models_dir) if self._models_dir else default_models_dir()

    def open_retrain_wizard(self):
        from desktop_app.retrain.wizard import RetrainWizard

        wizard = RetrainWizard(self)
        wizard.bundle_saved.connect(lambda _p: self.refresh_models())
        wizard.open()
        return wizard

    def open_adapt(self):
        """Tools > Adapt to this site…: the adapt steps on their own (base model, honest progress, the verdict on
        the same photos, a save location shown and changeable)."""
        from desktop_app.retrain.wizard import RetrainWizard

        wizard = RetrainWizard(self, adapt_only=True)
        wizard.bundle_saved.connect(lambda _p: self.refresh_models())
        wizard.open()
        return wizard

    def export_model_card(self, out_path: str | None = None) -> str | None:
        """File > Export model card: the selected models' full cards as JSON (one card, or a list)."""
        import json

        cards = self.selected_cards()
        if not cards:
            self._set_message("No model selected", error=True)
            return None
        if out_path is None:
            name = f"{cards[0].name}-{cards[0].version}-model_card.json" if len(cards) == 1 else "model_cards.json"
            out_path, _ = QFileDialog.getSaveFileName(self, "Export model card",
                                                      self.settings.export_path(self.folder or str(Path.home()), name),
                                                      "JSON files (*.json)")
            if not out_path:
                return None
        from core.store.outputs import OutputError, check_output
        from core.store.workspace import WorkspaceError

        try:  # the one output policy (core.store.outputs): never a bundle's own card, a photo, a session, a link
            if self.workspace is not None:
                self.workspace.check_output(out_path, "model card")
            else:
                check_output(out_path, "model card")
        except (OutputError, WorkspaceError) as exc:
            self.warn(f"Could not write {out_path}: {exc}")
            return None
        data = [c.to_dict() for c in cards]
        try:
            from core.reports import publish_atomically

            publish_atomically(out_path, json.dumps(data[0] if len(data) == 1 else data, indent=2).encode())
        except OSError as exc:
            self.warn(f"Could not write {out_path}: {exc}")
            return None
        self.settings.remember_export(out_path)
        self._set_message(f"Model card written to {out_path}")
        return out_path

    def reviewed_items(self) -> list[tuple[str, str]]:
        """(path, label) for photos reviewed as mpox / not mpox: the wizard's 'session labels' source."""
        if self.workspace is None:
            return []
        return [(str(self.workspace.file_of(p)), r["label"]) for p, r in self.workspace.reviews.items()
                if r["label"] in ("mpox", "not_mpox")]

    def reviewed_sha256(self) -> dict[str, str | None]:
        """File path -> SHA-256 of the content each review labelled: core.learning.adapt leaves out stale reviews."""
        if self.workspace is None:
            return {}
        return {str(self.workspace.file_of(p)): r.get("file_sha256") for p, r in self.workspace.reviews.items()}

    # --- status --------------------------------------------------------------------------------
    def warn(self, text: str) -> QMessageBox:
        """A window-modal message that does not block the event loop (workers keep reporting)."""
        self._set_message(text.splitlines()[0], error=True)
        box = QMessageBox(QMessageBox.Icon.Warning, APP_NAME, text, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.last_warning = box
        return box

    def _set_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #b02020;" if error else "")

    @Slot(int, int)
    def _on_counts(self, shown: int, total: int) -> None:
        self.showing.setText(f"showing {shown} of {total}")

    def _update_actions(self) -> None:
        running = self.controller.running
        self.act_run.setEnabled(bool(self.paths) and bool(self.choices) and not running)
        self.act_cancel.setEnabled(running and not (self.controller.token and self.controller.token.cancelled))
        self.act_open.setEnabled(not running)
        self.model_combo.setEnabled(not running)
        has = bool(self._export_keys())
        self.act_export_csv.setEnabled(has)
        self.act_export_pdf.setEnabled(has)
        self.act_print.setEnabled(has)
        self.act_export_fhir.setEnabled(has)
        self.act_export_card.setEnabled(bool(self.choices))
        self.act_adapt.setEnabled(not running)
        self.results.set_hint(self._empty_hint())

    def _empty_hint(self) -> str:
        """What an empty table tells the user to do first."""
        if not self.choices:
            return "No model found. Put model bundles in the models folder (Tools > Settings)."
        if self.workspace is None:
            return "Open a folder of photos to begin: File > Open folder (Ctrl+O), or drop a folder here."
        if not self.paths:
            return f"No photos found in {self.folder}. Open another folder (Ctrl+O)."
        return "Press Run (Ctrl+R) to score the photos with the selected model."

    def closeEvent(self, event) -> None:
        self.controller.cancel()
        for handle in self.handles.values():
            handle.shutdown()
        self.images.shutdown()
        self._close_session()
        self.settings.save_window_state(bytes(self.saveGeometry()), bytes(self.splitter.saveState()))
        self.settings.sync()
        super().closeEvent(event)

