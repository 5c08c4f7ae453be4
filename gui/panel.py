"""Side-panel widgets: the result (top modes, true location, error), settings, model, history, messages."""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from locdiff.core.diffusion import PROJECTIONS, SAMPLERS
from locdiff.core.reduction import REDUCERS
from locdiff.core.sampling import PredictSettings

from gui.heat import SCALE_LABELS
from gui.viewdata import ViewPrediction

RESOLUTIONS = {"90 \u00d7 180 (2\u00b0)": (90, 180), "180 \u00d7 360 (1\u00b0)": (180, 360), "360 \u00d7 720 (0.5\u00b0)": (360, 720)}
SCALES = {label: scale for scale, label in SCALE_LABELS.items()}  # label shown -> gui.heat scale


def fmt_latlon(lat: float, lon: float) -> str:
    return f"{abs(lat):.3f}\u00b0{'N' if lat >= 0 else 'S'}, {abs(lon):.3f}\u00b0{'E' if lon >= 0 else 'W'}"


def _default_first(choices: tuple[str, ...], default: str) -> list[str]:
    """A choice list from its one source (core), the default on top."""
    return [default] + [c for c in choices if c != default]

class ResultPanel(QtWidgets.QWidget):
    """The prediction on display, and the list of this session's predictions (click to show)."""

    selected = QtCore.Signal(int)  # index into the session list

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        top = QtWidgets.QHBoxLayout()
        self.thumb = QtWidgets.QLabel()
        self.thumb.setFixedSize(112, 84)
        self.thumb.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.thumb.setStyleSheet("background:#111; border:1px solid #333;")
        top.addWidget(self.thumb)
        info = QtWidgets.QVBoxLayout()
        self.title = QtWidgets.QLabel("Drop photos here, or type a place description")
        self.title.setWordWrap(True)
        f = self.title.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.1)
        self.title.setFont(f)
        self.point = QtWidgets.QLabel("")
        self.point.setWordWrap(True)
        self.point.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.truth = QtWidgets.QLabel("")
        self.truth.setWordWrap(True)
        self.truth.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        info.addWidget(self.title)
        info.addWidget(self.point)
        info.addWidget(self.truth)
        info.addStretch(1)
        top.addLayout(info, 1)
        lay.addLayout(top)

        lay.addWidget(QtWidgets.QLabel("Top modes"))
        self.modes = QtWidgets.QTreeWidget()
        self.modes.setRootIsDecorated(False)
        self.modes.setColumnCount(4)
        self.modes.setHeaderLabels(["#", "place", "mass", "lat, lon"])
        self.modes.setUniformRowHeights(True)
        self.modes.setAlternatingRowColors(True)
        hdr = self.modes.header()
        hdr.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        hdr.setSectionResizeMode(2, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(3, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.modes.setMinimumHeight(130)
        lay.addWidget(self.modes, 2)

        lay.addWidget(QtWidgets.QLabel("This session"))
        self.session = QtWidgets.QListWidget()
        self.session.currentRowChanged.connect(self._row_changed)
        lay.addWidget(self.session, 1)

    def _row_changed(self, row: int) -> None:
        if row >= 0:
            self.selected.emit(row)

    def add_session_item(self, vp: ViewPrediction) -> None:
        err = f"  \u2022  {vp.error_km:,.0f} km off" if vp.error_km is not None else ""
        if vp.modes:  # as the banner and the map's label "1": the most probable mode
            m = vp.modes[0]
            where = f"1. {m.place or fmt_latlon(m.lat, m.lon)} ({100 * m.mass:.0f} %)"
        else:
            where = vp.place or fmt_latlon(*vp.point)
        it = QtWidgets.QListWidgetItem(f"{vp.name}  \u2192  {where}{err}")
        it.setToolTip(vp.item)
        self.session.addItem(it)

    def select_row(self, row: int) -> None:
        self.session.blockSignals(True)
        self.session.setCurrentRow(row)
        self.session.blockSignals(False)

    def show_prediction(self, vp: ViewPrediction | None) -> None:
        self.modes.clear()
        self.thumb.clear()
        if vp is None:
            self.title.setText("Drop photos here, or type a place description")
            self.point.setText("")
            self.truth.setText("")
            return
        self.title.setText(vp.name)
        self.title.setToolTip(vp.item)
        where = f" \u2014 {vp.place}" if vp.place else ""
        how = f" ({vp.reducer} of the samples; red cross)" if vp.reducer else " (red cross)"
        refined = (f"\nLocDiff-H (the most similar training example near the samples; diamond): {fmt_latlon(*vp.refined)}"
                   if vp.refined is not None else "")
        self.point.setText(f"Point estimate{how}: {fmt_latlon(*vp.point)}{where}{refined}")
        if vp.truth is not None:
            tp = f" \u2014 {vp.truth_place}" if vp.truth_place else ""
            self.truth.setText(f"True (EXIF GPS): {fmt_latlon(*vp.truth)}{tp}\n"
                               f"Error: {vp.error_km:,.1f} km")
        elif vp.kind == "image":
            self.truth.setText("No GPS position in the photo's EXIF data.")
        else:
            self.truth.setText("")
        for rank, m in enumerate(vp.modes, start=1):
            it = QtWidgets.QTreeWidgetItem([str(rank), m.place or "\u2014", f"{100 * m.mass:.1f}%",
                                            f"{m.lat:.2f}, {m.lon:.2f}"])
            it.setToolTip(2, f"probability within {m.radius_km:.0f} km")
            self.modes.addTopLevelItem(it)
        if vp.kind == "image":
            reader = QtGui.QImageReader(vp.item)
            reader.setAutoTransform(True)
            img = reader.read()
            if img.isNull():
                img = _pillow_thumbnail(vp.item)
            if not img.isNull():
                self.thumb.setPixmap(QtGui.QPixmap.fromImage(img).scaled(
                    self.thumb.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                    QtCore.Qt.TransformationMode.SmoothTransformation))
        else:
            self.thumb.setText("text")

    def mode_rows(self) -> list[list[str]]:
        return [[self.modes.topLevelItem(i).text(c) for c in range(4)] for i in range(self.modes.topLevelItemCount())]


class SettingsPanel(QtWidgets.QWidget):
    """Sampling settings (-> ``PredictSettings``), display options and the model picker."""

    displayChanged = QtCore.Signal()
    openCheckpoint = QtCore.Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)

        model_box = QtWidgets.QGroupBox("Model")
        ml = QtWidgets.QVBoxLayout(model_box)
        self.model_label = QtWidgets.QLabel("no model loaded")
        self.model_label.setWordWrap(True)
        self.model_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QtWidgets.QPushButton("Open checkpoint\u2026")
        self.open_button.clicked.connect(self.openCheckpoint)
        ml.addWidget(self.model_label)
        ml.addWidget(self.open_button)
        lay.addWidget(model_box)

        box = QtWidgets.QGroupBox("Sampling")
        form = QtWidgets.QFormLayout(box)
        d = PredictSettings()
        self.samples = QtWidgets.QSpinBox()
        self.samples.setRange(1, 4096)
        self.samples.setValue(d.samples)
        self.samples.setToolTip("K: number of diffusion samples per input")
        self.sampler = QtWidgets.QComboBox()
        self.sampler.addItems(_default_first(SAMPLERS, d.sampler))
        self.sampler.setCurrentText(d.sampler)
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(d.steps)
        self.sampler.currentTextChanged.connect(self._sampler_changed)
        self.reducer = QtWidgets.QComboBox()
        self.reducer.addItems(_default_first(REDUCERS, d.reducer))
        self.reducer.setCurrentText(d.reducer)
        self.projection = QtWidgets.QComboBox()
        self.projection.addItems(_default_first(PROJECTIONS, d.projection))
        self.projection.setCurrentText(d.projection)
        self.projection.setToolTip("what happens to each step's x0 prediction while sampling: 'none' is the plain chain (default: "
                                   "keeps a multi-modal answer's weights); 'snap' re-encodes its peak and 'degree' restores the "
                                   "code norms (both distort mode weights; for older models trained for them)")
        self.resolution = QtWidgets.QComboBox()
        self.resolution.addItems(list(RESOLUTIONS))
        self.resolution.setCurrentIndex(list(RESOLUTIONS.values()).index((180, 360)))
        self.hybrid = QtWidgets.QCheckBox("refine by retrieval near the samples (LocDiff-H)")
        self.hybrid.setToolTip("the most similar training example near the samples (a diamond on the map); the first "
                               "such query opens the model's training split as the gallery")
        self.hybrid.setChecked(d.hybrid)
        self.hybrid_radius = QtWidgets.QDoubleSpinBox()
        self.hybrid_radius.setRange(1.0, 5000.0)
        self.hybrid_radius.setSuffix(" km")
        self.hybrid_radius.setValue(d.hybrid_radius_km)
        self.hybrid_radius.setEnabled(d.hybrid)
        self.hybrid_radius.setToolTip("the paper's rule: the best match within this distance of any sample (a model "
                                      "with a rule chosen by `eval --hybrid` uses that rule instead)")
        self.hybrid.toggled.connect(self.hybrid_radius.setEnabled)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setValue(0)  # each input is seeded from its content + this: the same input, the same answer
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("each input's draw is seeded from its content and this number "
                             "(Model \u2192 Resample: the next seed; \u201crandom\u201d: a new draw every time)")
        form.addRow("samples K", self.samples)
        form.addRow("sampler", self.sampler)
        form.addRow("steps", self.steps)
        form.addRow("x0 projection", self.projection)
        form.addRow("point estimate", self.reducer)
        form.addRow("heatmap grid", self.resolution)
        form.addRow(self.hybrid)
        form.addRow("hybrid radius", self.hybrid_radius)
        form.addRow("seed", self.seed)
        lay.addWidget(box)

        disp = QtWidgets.QGroupBox("Display")
        dl = QtWidgets.QFormLayout(disp)
        self.scale = QtWidgets.QComboBox()
        self.scale.addItems(list(SCALES))
        self.scale.currentIndexChanged.connect(self.displayChanged)
        self.coast = QtWidgets.QCheckBox("coastlines")
        self.coast.setChecked(True)
        self.borders = QtWidgets.QCheckBox("country borders")
        self.borders.setChecked(True)
        self.coast.toggled.connect(self.displayChanged)
        self.borders.toggled.connect(self.displayChanged)
        dl.addRow("colour scale", self.scale)
        dl.addRow(self.coast)
        dl.addRow(self.borders)
        lay.addWidget(disp)
        lay.addStretch(1)

    def use_run_sampling(self, info: Mapping[str, Any]) -> None:
        """Start from the sampler, steps and x0 projection the loaded run was selected with (a run trained for
        ``snap`` keeps it; the user may still change them)."""
        if info.get("sampler") in SAMPLERS:
            self.sampler.setCurrentText(str(info["sampler"]))
        if isinstance(info.get("sampler_steps"), int):
            self.steps.setValue(int(info["sampler_steps"]))
        if info.get("projection") in PROJECTIONS:
            self.projection.setCurrentText(str(info["projection"]))

    def _sampler_changed(self, name: str) -> None:
        # the paper samples with DDPM over 100 steps; DDIM gets by with ~20
        if name == "ddpm" and self.steps.value() < 50:
            self.steps.setValue(100)
        elif name == "ddim" and self.steps.value() >= 100:
            self.steps.setValue(20)

    def settings(self) -> PredictSettings:
        n_lat, n_lon = RESOLUTIONS[self.resolution.currentText()]
        seed = self.seed.value()
        return PredictSettings(
            samples=self.samples.value(),
            sampler=self.sampler.currentText(),
            steps=self.steps.value(),
            reducer=self.reducer.currentText(),
            projection=self.projection.currentText(),
            grid_lat=n_lat,
            grid_lon=n_lon,
            hybrid=self.hybrid.isChecked(),
            hybrid_radius_km=self.hybrid_radius.value(),
            seed=None if seed < 0 else seed,
        )

    def next_seed(self) -> PredictSettings:
        """Advance the seed (Resample) and return the settings with it."""
        if self.seed.value() >= 0:
            self.seed.setValue(self.seed.value() + 1)
        return self.settings()

    def display_scale(self) -> str:
        return SCALES[self.scale.currentText()]

    def set_model_info(self, info: Mapping[str, Any] | None, error: str | None = None) -> None:
        if error:
            self.model_label.setText(f"<span style='color:#ff6b6b'>No model: {error}</span>")
            return
        if not info:
            self.model_label.setText("no model loaded")
            return
        self.use_run_sampling(info)
        ckpt = str(info.get("checkpoint", ""))
        lines = [f"<b>{Path(ckpt).name or ckpt}</b>"] if ckpt else []
        lines += [f"{k}: {v}" for k, v in info.items() if k != "checkpoint"]
        self.model_label.setText("<br>".join(lines))
        self.model_label.setToolTip(ckpt)


class HistoryPanel(QtWidgets.QWidget):
    """Past predictions from the experiment store; double-click (or Open) to show one again."""

    reopen = QtCore.Signal(dict)
    refreshRequested = QtCore.Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.list = QtWidgets.QListWidget()
        self.list.itemActivated.connect(self._activated)
        self.list.itemDoubleClicked.connect(self._activated)
        lay.addWidget(self.list, 1)
        row = QtWidgets.QHBoxLayout()
        self.open_button = QtWidgets.QPushButton("Open")
        self.open_button.clicked.connect(lambda: self._activated(self.list.currentItem()))
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refreshRequested)
        row.addWidget(self.open_button)
        row.addWidget(self.refresh_button)
        lay.addLayout(row)
        self.rows: list[dict] = []

    def set_rows(self, rows: list[dict]) -> None:
        self.rows = list(rows)
        self.list.clear()
        for r in self.rows:
            payload = r.get("payload") or {}
            when = r.get("created_at") or payload.get("created") or ""
            if hasattr(when, "astimezone") and getattr(when, "tzinfo", None) is not None:
                when = when.astimezone()  # stored in UTC, shown in local time
            when = when.strftime("%Y-%m-%d %H:%M") if hasattr(when, "strftime") else str(when)[:16].replace("T", " ")
            item = str(r.get("item", "?"))
            name = Path(item).name if payload.get("kind", "image") == "image" else item[:50]
            place = payload.get("place") or (f"{float(r['lat']):.2f}, {float(r['lon']):.2f}" if "lat" in r else "")
            it = QtWidgets.QListWidgetItem(f"{when}  {name}  \u2192  {place}")
            it.setToolTip(item)
            if not payload:
                it.setForeground(QtGui.QColor(140, 140, 140))
            self.list.addItem(it)

    def _activated(self, item: QtWidgets.QListWidgetItem | None) -> None:
        if item is None:
            return
        row = self.list.row(item)
        if 0 <= row < len(self.rows):
            self.reopen.emit(self.rows[row])


class MessageList(QtWidgets.QListWidget):
    """Errors and notices (newest last); errors in red."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setAlternatingRowColors(False)

    def add(self, text: str, error: bool = False) -> None:
        it = QtWidgets.QListWidgetItem(("\u26a0 " if error else "") + text)
        it.setData(QtCore.Qt.ItemDataRole.UserRole, "error" if error else "info")
        if error:
            it.setForeground(QtGui.QColor(255, 110, 110))
        self.addItem(it)
        self.scrollToBottom()

    def texts(self, errors_only: bool = False) -> list[str]:
        out = []
        for i in range(self.count()):
            it = self.item(i)
            if errors_only and it.data(QtCore.Qt.ItemDataRole.UserRole) != "error":
                continue
            out.append(it.text())
        return out


def _pillow_thumbnail(path: str, size: int = 256) -> QtGui.QImage:
    """A thumbnail through Pillow for formats Qt cannot read (HEIC / HEIF via pillow-heif)."""
    try:
        from PIL import Image, ImageOps

        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except ImportError:
            pass
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
            data = im.tobytes()
            return QtGui.QImage(data, im.width, im.height, 3 * im.width, QtGui.QImage.Format.Format_RGB888).copy()
    except Exception:  # noqa: BLE001 - no thumbnail is fine
        return QtGui.QImage()
