"""The flat map: an equirectangular 2D pyqtgraph view (also the fallback when OpenGL is unavailable).

x is longitude (-180..180), y latitude (-90..90). Layers, bottom to top: the Blue Marble texture,
coastlines and borders, the heatmap (``ImageItem`` of the density on the chosen scale with an
RGBA lookup table that fades low values out, and a ``ColorBarItem`` legend labelled in density
units), the 50 % / 90 % credible-region contours, samples, modes, the true location and the point.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from gui import assets, heat
from gui.labels import marker_rect, place_labels
from gui.overlay import COLOR_MODE, COLOR_POINT, COLOR_REFINED, COLOR_TRUTH, CONTOUR_STYLE
from gui.viewdata import ViewPrediction, great_circle

TEXTURE_WIDTH = 2700


def _grid_transform(n_rows: int, n_cols: int) -> QtGui.QTransform:
    """Image (row 0 = north, col 0 = 180 W, cells covering the globe) -> (lon, lat)."""
    tr = QtGui.QTransform()
    tr.translate(-180.0, 90.0)
    tr.scale(360.0 / n_cols, -180.0 / n_rows)
    return tr


def _wrap_segments(seg: np.ndarray) -> np.ndarray:
    """Wrap segment longitudes into [-180, 180], dropping segments that would cross the seam."""
    if len(seg) == 0:
        return seg
    s = seg.copy()
    s[:, 0] = (s[:, 0] + 180.0) % 360.0 - 180.0
    a, b = s[0::2], s[1::2]
    keep = np.abs(a[:, 0] - b[:, 0]) <= 180.0
    out = np.empty((2 * int(keep.sum()), 2))
    out[0::2], out[1::2] = a[keep], b[keep]
    return out


class DegreeAxis(pg.AxisItem):
    """An axis that labels only real coordinates: latitudes within ±90°, longitudes within ±180°."""

    def __init__(self, orientation: str, limit: float) -> None:
        super().__init__(orientation)
        self.limit = limit

    def tickValues(self, minVal, maxVal, size):
        out = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            out.append((spacing, [v for v in values if abs(v) <= self.limit + 1e-9]))
        return out


class FlatMapView(pg.GraphicsLayoutWidget):
    """Equirectangular map with the same content as the globe."""

    def __init__(self, parent=None, texture_width: int = TEXTURE_WIDTH) -> None:
        super().__init__(parent)
        self.setBackground(QtGui.QColor(4, 6, 14))
        self.plot: pg.PlotItem = self.addPlot(axisItems={"left": DegreeAxis("left", 90.0),
                                                         "bottom": DegreeAxis("bottom", 180.0)})
        p = self.plot
        p.setAspectLocked(True, ratio=1.0)
        p.showGrid(x=False, y=False)
        p.setLabel("bottom", "longitude (\u00b0)")
        p.setLabel("left", "latitude (\u00b0)")
        p.setLimits(xMin=-200, xMax=200, yMin=-100, yMax=100, minXRange=0.2, minYRange=0.1)
        p.setMenuEnabled(False)
        p.hideButtons()

        tex = assets.blue_marble(texture_width)
        self.texture = pg.ImageItem(tex, axisOrder="row-major")
        self.texture.setTransform(_grid_transform(*tex.shape[:2]))
        self.texture.setZValue(0)
        p.addItem(self.texture)

        self.coast = pg.PlotDataItem(connect="finite", pen=pg.mkPen((235, 235, 215, 140), width=1))
        self.borders = pg.PlotDataItem(connect="finite", pen=pg.mkPen((255, 220, 140, 110), width=1))
        for z, item, lines in ((1, self.coast, assets.coastlines("l")), (1, self.borders, assets.borders("l"))):
            pts = assets.nan_separated(lines)
            if len(pts):
                item.setData(pts[:, 0], pts[:, 1])
            item.setZValue(z)
            p.addItem(item)

        self.heat = pg.ImageItem(axisOrder="row-major")
        self.heat.setZValue(2)
        self.heat.setLookupTable(heat.lut(256))
        self.heat.setVisible(False)
        p.addItem(self.heat)
        rgb = heat.colors(256)
        self.colormap = pg.ColorMap(np.linspace(0, 1, 256), np.round(rgb).astype(np.uint8))
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=self.colormap, interactive=False, width=16)
        self.layout_colorbar()

        self.contours: dict[float, pg.PlotDataItem] = {}
        for level, (color, width) in CONTOUR_STYLE.items():
            c = tuple(int(255 * x) for x in color)
            item = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(c, width=width))
            item.setZValue(3)
            p.addItem(item)
            self.contours[level] = item
        self.arc = pg.PlotDataItem(pen=pg.mkPen(COLOR_TRUTH, width=2, style=QtCore.Qt.PenStyle.DashLine))
        self.arc.setZValue(3)
        p.addItem(self.arc)

        self.samples = pg.ScatterPlotItem(size=6, pen=pg.mkPen((0, 0, 0, 200), width=1), brush=pg.mkBrush(255, 255, 255, 230),
                                          name="diffusion samples")
        self.modes = pg.ScatterPlotItem(size=16, symbol="o", pen=pg.mkPen(COLOR_MODE, width=2.2),
                                        brush=pg.mkBrush(0, 0, 0, 0), name="modes")
        self.truth = pg.ScatterPlotItem(size=20, symbol="star", pen=pg.mkPen((0, 0, 0), width=1.5),
                                        brush=pg.mkBrush(*COLOR_TRUTH), name="true location (EXIF)")
        self.refined = pg.ScatterPlotItem(size=12, symbol="d", pen=pg.mkPen((0, 0, 0), width=1.5),
                                          brush=pg.mkBrush(*COLOR_REFINED), name="LocDiff-H (retrieval)")
        self.point = pg.ScatterPlotItem(size=18, symbol="+", pen=pg.mkPen((0, 0, 0), width=1.2),
                                        brush=pg.mkBrush(*COLOR_POINT), name="point estimate")
        for z, item in enumerate((self.samples, self.modes, self.truth, self.point, self.refined), start=4):
            item.setZValue(z)
            p.addItem(item)
        self.mode_labels: list[pg.TextItem] = []
        self.label_rects: list[tuple[float, float, float, float]] = []  # scene pixels, as last laid out
        self._label_specs: list[tuple[pg.TextItem, float, float, float]] = []  # (item, lon, lat, marker radius)
        self._marker_px: list[tuple[float, float, float]] = []  # (lon, lat, radius) of every marker
        self.legend = p.addLegend(offset=(10, -10), labelTextColor=(230, 230, 230), brush=pg.mkBrush(10, 14, 24, 190))
        for item in (self.point, self.modes, self.samples):
            self.legend.addItem(item, item.name())
        self._in_legend: set[str] = set()  # the optional entries shown now (truth, LocDiff-H)
        for level, item in self.contours.items():
            self.legend.addItem(item, f"{int(round(100 * level))}% credible region")

        self.prediction: ViewPrediction | None = None
        self.scale = "sqrt"
        self.plot.vb.sigRangeChanged.connect(self.layout_labels)
        self.plot.vb.sigResized.connect(self.layout_labels)
        self.reset_view()

    def layout_colorbar(self) -> None:
        self.colorbar.setImageItem([], insert_in=self.plot)

    # ---------------------------------------------------------------- view
    def reset_view(self) -> None:
        self.plot.setRange(xRange=(-180, 180), yRange=(-90, 90), padding=0.0)

    def focus(self, lat: float, lon: float, span_deg: float = 60.0) -> None:
        self.plot.setRange(xRange=(lon - span_deg, lon + span_deg), yRange=(lat - span_deg / 2, lat + span_deg / 2),
                           padding=0.0)

    def set_boundaries(self, coast: bool = True, borders: bool = True) -> None:
        self.coast.setVisible(coast)
        self.borders.setVisible(borders)

    # ---------------------------------------------------------------- content
    def set_heat(self, density: np.ndarray | None, scale: str = "sqrt") -> None:
        if density is None:
            self.heat.setVisible(False)
            return
        values, lo, hi = heat.scale_values(density, scale)
        self.heat.setImage(values, levels=(lo, hi), autoLevels=False)
        self.heat.setTransform(_grid_transform(*values.shape))
        self.heat.setVisible(True)
        self.colorbar.setLevels((lo, hi))
        axis = self.colorbar.axis
        axis.setTicks([heat.ticks(float(np.max(density)), scale)])
        axis.setLabel(heat.legend_label(scale))

    def set_contours(self, contours: dict[float, np.ndarray]) -> None:
        for level, item in self.contours.items():
            seg = _wrap_segments(contours.get(level, np.zeros((0, 2))))
            if len(seg):
                item.setData(seg[:, 0], seg[:, 1])
            else:
                item.setData([], [])

    def show_prediction(self, vp: ViewPrediction | None, contours: dict[float, np.ndarray] | None = None,
                        scale: str = "sqrt", focus: bool = True) -> None:
        self.prediction = vp
        self.scale = scale
        for t in self.mode_labels:
            self.plot.removeItem(t)
        self.mode_labels = []
        if vp is None:
            self._label_specs, self._marker_px, self.label_rects = [], [], []
            self._show_in_legend(self.truth, False)
            self._show_in_legend(self.refined, False)
            self.set_heat(None)
            self.set_contours({})
            for item in (self.samples, self.modes, self.truth, self.refined, self.point):
                item.setData([], [])
            self.arc.setData([], [])
            return
        self.set_heat(vp.density if vp.has_grid else None, scale)
        self.set_contours(contours or {})
        s = vp.samples
        if len(s):
            self.samples.setData(s[:, 1], s[:, 0])
        else:
            self.samples.setData([], [])
        self.modes.setData([m.lon for m in vp.modes], [m.lat for m in vp.modes])
        self._label_specs = []
        self._marker_px = [(m.lon, m.lat, 8.0) for m in vp.modes] + [(vp.point[1], vp.point[0], 9.0)]
        labels = [(f"{rank}  {100 * m.mass:.0f}%", m.lon, m.lat, 8.0) for rank, m in enumerate(vp.modes, start=1)]
        if vp.truth is not None:
            self._marker_px.append((vp.truth[1], vp.truth[0], 10.0))
            labels.insert(0, ("true", vp.truth[1], vp.truth[0], 10.0))
        if vp.refined is not None:
            self._marker_px.append((vp.refined[1], vp.refined[0], 7.0))
            labels.append(("LocDiff-H", vp.refined[1], vp.refined[0], 7.0))
        for text, lon, lat, r in labels:
            t = pg.TextItem(text, color=(255, 255, 255), anchor=(0, 0), border=None, fill=pg.mkBrush(0, 0, 0, 140))
            t.setPos(lon, lat)
            t.setZValue(10)
            self.plot.addItem(t)
            self.mode_labels.append(t)
            self._label_specs.append((t, lon, lat, r))
        self._show_in_legend(self.truth, vp.truth is not None)
        self._show_in_legend(self.refined, vp.refined is not None)
        self.point.setData([vp.point[1]], [vp.point[0]])
        if vp.truth is not None:
            self.truth.setData([vp.truth[1]], [vp.truth[0]])
            arc = great_circle(vp.point, vp.truth)
            lon = arc[:, 1].copy()
            jumps = np.nonzero(np.abs(np.diff(lon)) > 180)[0]
            connect = np.ones(len(lon), dtype=bool)
            connect[jumps] = False
            self.arc.setData(lon, arc[:, 0], connect=connect)
        else:
            self.truth.setData([], [])
            self.arc.setData([], [])
        if vp.refined is not None:
            self.refined.setData([vp.refined[1]], [vp.refined[0]])
        else:
            self.refined.setData([], [])
        if focus:
            self.focus(*vp.point)
        self.layout_labels()

    def _show_in_legend(self, item, show: bool) -> None:
        """An optional marker ("true location (EXIF)", "LocDiff-H") is in the legend only while it is shown."""
        name = item.name()
        if show and name not in self._in_legend:
            self.legend.addItem(item, name)
            self._in_legend.add(name)
        elif not show and name in self._in_legend:
            self.legend.removeItem(item)
            self._in_legend.discard(name)

    def layout_labels(self, *_args) -> None:
        """Put each label where it overlaps no marker, no other label, not the legend, and is not clipped
        by the view (:func:`gui.labels.place_labels`, in scene pixels); a label with no room is hidden."""
        vb = self.plot.vb
        if not self._label_specs:
            self.label_rects = []
            return
        view = vb.sceneBoundingRect()
        bounds = (view.left() + 2, view.top() + 2, view.right() - 2, view.bottom() - 2)
        obstacles = []
        for lon, lat, r in self._marker_px:
            p = vb.mapViewToScene(QtCore.QPointF(lon, lat))
            obstacles.append(marker_rect(p.x(), p.y(), r))
        if self.legend.isVisible():
            lr = self.legend.sceneBoundingRect()
            obstacles.append((lr.left(), lr.top(), lr.right(), lr.bottom()))
        boxes = []
        for t, lon, lat, r in self._label_specs:
            p = vb.mapViewToScene(QtCore.QPointF(lon, lat))
            br = t.boundingRect()
            boxes.append((p.x(), p.y(), br.width(), br.height(), r))
        placed = place_labels(boxes, obstacles, bounds)
        self.label_rects = []
        for (t, _, _, _), box in zip(self._label_specs, placed):
            if box is None:
                t.setVisible(False)
                continue
            t.setVisible(True)
            t.setPos(vb.mapSceneToView(QtCore.QPointF(box[0], box[1])))
            self.label_rects.append(box)

    def set_banner(self, text: str) -> None:
        if text:
            self.plot.setTitle(text, color=(235, 235, 235))
        else:
            self.plot.setTitle(None)

    def export_image(self) -> QtGui.QImage:
        return self.grab().toImage()

    # ---------------------------------------------------------------- test helpers
    def heat_peak_latlon(self) -> tuple[float, float] | None:
        """(lat, lon) of the brightest heat cell currently shown (for tests and sanity checks)."""
        img = self.heat.image
        if img is None or not self.heat.isVisible():
            return None
        r, c = np.unravel_index(int(np.nanargmax(img)), img.shape)
        tr = self.heat.transform()
        p = tr.map(QtCore.QPointF(c + 0.5, r + 0.5))
        return p.y(), p.x()

