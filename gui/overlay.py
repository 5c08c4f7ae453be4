"""The globe's 2D overlay: markers, labels and the colour legend, painted with QPainter.

Also the marker / legend specifications shared with the flat map (:func:`marker_specs`,
:func:`legend_spec`) and their colours.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import math

import numpy as np
from pyqtgraph.opengl.GLGraphicsItem import GLGraphicsItem
from PySide6 import QtCore, QtGui

from gui import assets, heat
from gui.labels import marker_rect, place_labels
from gui.viewdata import ViewPrediction

R_MARKERS = 1.008
COLOR_POINT = (255, 64, 64)
COLOR_TRUTH = (60, 235, 90)
COLOR_MODE = (90, 220, 255)
COLOR_REFINED = (255, 170, 255)
COLOR_SAMPLE = (255, 255, 255)
CONTOUR_STYLE = {0.5: ((1.0, 1.0, 1.0, 0.95), 2.0), 0.9: ((0.55, 0.9, 1.0, 0.85), 1.5)}


class Overlay2D(GLGraphicsItem):
    """Markers, labels and the legend, painted with QPainter over the GL scene (drawn last).

    Markers on the far side of the globe are skipped. ``markers`` are dicts with keys
    ``lat``, ``lon``, ``shape`` (``ring``/``dot``/``star``/``diamond``), ``color``, ``size``, ``label``.
    """

    def __init__(self, parentItem=None) -> None:
        super().__init__(parentItem=parentItem)
        self.setDepthValue(1000)
        self.markers: list[dict] = []
        self.legend: dict | None = None
        self.banner = ""
        self.label_rects: list[tuple[float, float, float, float]] = []  # as last painted (x0, y0, x1, y1)

    def set_markers(self, markers: list[dict]) -> None:
        self.markers = markers
        self.update()

    def set_legend(self, legend: dict | None) -> None:
        self.legend = legend
        self.update()

    def set_banner(self, text: str) -> None:
        self.banner = text
        self.update()

    def _projector(self):
        view = self.view()
        rect = QtCore.QRectF(view.rect())
        ndc = QtGui.QMatrix4x4()
        ndc.viewport(rect.left(), rect.bottom(), rect.width(), -rect.height())
        return ndc * self.mvpMatrix()

    def paint(self) -> None:
        view = self.view()
        if view is None:
            return
        project = self._projector()
        cam = view.cameraPosition()
        cam = np.array([cam.x(), cam.y(), cam.z()])
        painter = QtGui.QPainter(view)
        try:
            painter.setRenderHints(QtGui.QPainter.RenderHint.Antialiasing | QtGui.QPainter.RenderHint.TextAntialiasing)
            rect = QtCore.QRectF(view.rect())
            shown = []
            for m in self.markers:
                p = assets.lonlat_to_xyz(m["lon"], m["lat"], R_MARKERS).astype(np.float64)
                if float(p @ (cam - p)) <= 0.0:  # on the far side
                    continue
                shown.append((project.map(QtGui.QVector3D(*map(float, p))).toPointF(), m))
            reserved = []
            if self.legend:
                reserved.append(_draw_legend(painter, rect, self.legend))
            if self.banner:
                reserved.append(_draw_banner(painter, rect, self.banner))
            for sp, m in shown:
                _draw_marker(painter, sp, m)
            self.label_rects = _draw_labels(painter, rect, shown, reserved)
        finally:
            painter.end()


LABEL_FONT_PT = 10.5


def _label_font() -> QtGui.QFont:
    font = QtGui.QFont()
    font.setPointSizeF(LABEL_FONT_PT)
    font.setBold(True)
    return font


def _draw_labels(painter: QtGui.QPainter, rect: QtCore.QRectF, shown: list, reserved: list) -> list[tuple]:
    """Place and draw the markers' labels clear of every marker, each other, the legend, the banner and the
    view's edges (:func:`gui.labels.place_labels`); returns the drawn label rectangles."""
    font = _label_font()
    fm = QtGui.QFontMetricsF(font)
    obstacles = [marker_rect(sp.x(), sp.y(), float(m.get("size", 12)) / 2) for sp, m in shown]
    obstacles += [(r.left(), r.top(), r.right(), r.bottom()) for r in reserved if r is not None]
    todo = [(sp, m) for sp, m in shown if m.get("label")]
    todo.sort(key=lambda t: t[1].get("priority", 9))
    boxes = [(sp.x(), sp.y(), fm.horizontalAdvance(m["label"]) + 4, fm.height(), float(m.get("size", 12)) / 2)
             for sp, m in todo]
    bounds = (rect.left() + 2, rect.top() + 2, rect.right() - 2, rect.bottom() - 2)
    placed = place_labels(boxes, obstacles, bounds)
    out = []
    for (sp, m), box in zip(todo, placed):
        if box is None:
            continue
        _text(painter, QtCore.QPointF(box[0] + 2, box[1] + fm.ascent()), m["label"], font, outline=True)
        out.append(box)
    return out


def _draw_marker(painter: QtGui.QPainter, pos: QtCore.QPointF, m: dict) -> None:
    color = QtGui.QColor(*m.get("color", (255, 255, 255)))
    size = float(m.get("size", 12))
    shape = m.get("shape", "dot")
    outline = QtGui.QPen(QtGui.QColor(0, 0, 0, 220), 2.0)
    r = size / 2
    if shape == "ring":
        painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        painter.setPen(QtGui.QPen(QtGui.QColor(0, 0, 0, 200), 4.0))
        painter.drawEllipse(pos, r, r)
        painter.setPen(QtGui.QPen(color, 2.2))
        painter.drawEllipse(pos, r, r)
    elif shape == "star":
        pts = []
        for k in range(10):
            ang = math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append(QtCore.QPointF(pos.x() + rr * math.cos(ang), pos.y() - rr * math.sin(ang)))
        painter.setPen(outline)
        painter.setBrush(color)
        painter.drawPolygon(QtGui.QPolygonF(pts))
    elif shape == "diamond":
        pts = [QtCore.QPointF(pos.x(), pos.y() - r), QtCore.QPointF(pos.x() + r, pos.y()),
               QtCore.QPointF(pos.x(), pos.y() + r), QtCore.QPointF(pos.x() - r, pos.y())]
        painter.setPen(outline)
        painter.setBrush(color)
        painter.drawPolygon(QtGui.QPolygonF(pts))
    elif shape == "cross":
        painter.setPen(QtGui.QPen(QtGui.QColor(0, 0, 0, 220), 5.0))
        painter.drawLine(QtCore.QPointF(pos.x() - r, pos.y()), QtCore.QPointF(pos.x() + r, pos.y()))
        painter.drawLine(QtCore.QPointF(pos.x(), pos.y() - r), QtCore.QPointF(pos.x(), pos.y() + r))
        painter.setPen(QtGui.QPen(color, 2.5))
        painter.drawLine(QtCore.QPointF(pos.x() - r, pos.y()), QtCore.QPointF(pos.x() + r, pos.y()))
        painter.drawLine(QtCore.QPointF(pos.x(), pos.y() - r), QtCore.QPointF(pos.x(), pos.y() + r))
    else:
        painter.setPen(outline)
        painter.setBrush(color)
        painter.drawEllipse(pos, r, r)


def _text(painter: QtGui.QPainter, at: QtCore.QPointF, text: str, font: QtGui.QFont,
          color: QtGui.QColor | None = None, outline: bool = False) -> None:
    """Text as a filled path: crisp on every GL paint engine (glyph-cache text is not, on llvmpipe)."""
    path = QtGui.QPainterPath()
    path.addText(at, font, text)
    if outline:
        painter.setPen(QtGui.QPen(QtGui.QColor(0, 0, 0, 230), 3.0))
        painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        painter.drawPath(path)
    painter.setPen(QtCore.Qt.PenStyle.NoPen)
    painter.setBrush(color if color is not None else QtGui.QColor(255, 255, 255))
    painter.drawPath(path)


def _draw_legend(painter: QtGui.QPainter, rect: QtCore.QRectF, legend: dict) -> QtCore.QRectF:
    """Colour bar (with its value labels) and the symbol key, in the bottom-left corner."""
    font = QtGui.QFont()
    font.setPointSizeF(9.5)
    painter.setFont(font)
    fm = QtGui.QFontMetricsF(font)
    rows = legend.get("symbols", [])
    bar_w, bar_h = 16.0, 150.0
    pad = 10.0
    lines = str(legend.get("title", "")).split("\n")
    box_w = max(200.0, max(fm.horizontalAdvance(t) for t in lines) + 2 * pad)
    box_h = pad * 3 + len(lines) * fm.height() + bar_h + len(rows) * (fm.height() + 4)
    box = QtCore.QRectF(rect.left() + 12, rect.bottom() - box_h - 12, box_w, box_h)
    painter.setPen(QtCore.Qt.PenStyle.NoPen)
    painter.setBrush(QtGui.QColor(10, 14, 24, 190))
    painter.drawRoundedRect(box, 8, 8)
    light = QtGui.QColor(235, 235, 235)
    for i, line in enumerate(lines):
        _text(painter, QtCore.QPointF(box.left() + pad, box.top() + pad + fm.ascent() + i * fm.height()), line, font, light)
    bar = QtCore.QRectF(box.left() + pad, box.top() + pad * 2 + len(lines) * fm.height(), bar_w, bar_h)
    grad = QtGui.QLinearGradient(bar.bottomLeft(), bar.topLeft())
    cols = heat.colors(9)
    for k, c in enumerate(cols):
        grad.setColorAt(k / 8, QtGui.QColor(int(c[0]), int(c[1]), int(c[2])))
    painter.setBrush(QtGui.QBrush(grad))
    painter.setPen(QtGui.QPen(QtGui.QColor(220, 220, 220), 1))
    painter.drawRect(bar)
    ticks = legend.get("ticks", [])
    for frac, text in ticks:
        y = bar.bottom() - frac * bar.height()
        painter.setPen(QtGui.QPen(QtGui.QColor(220, 220, 220), 1))
        painter.drawLine(QtCore.QPointF(bar.right(), y), QtCore.QPointF(bar.right() + 4, y))
        _text(painter, QtCore.QPointF(bar.right() + 7, y + fm.ascent() / 2 - 1), text, font, light)
    y = bar.bottom() + pad
    for kind, color, text in rows:
        cy = y + fm.height() / 2
        x0 = box.left() + pad
        qc = QtGui.QColor(*[int(255 * c) if isinstance(c, float) else c for c in color[:3]])
        if kind == "line":
            painter.setPen(QtGui.QPen(qc, 2.0))
            painter.drawLine(QtCore.QPointF(x0, cy), QtCore.QPointF(x0 + 18, cy))
        else:
            _draw_marker(painter, QtCore.QPointF(x0 + 9, cy),
                         {"shape": kind, "color": color, "size": 14 if kind == "star" else 11})
        _text(painter, QtCore.QPointF(x0 + 26, y + fm.ascent()), text, font, light)
        y += fm.height() + 4
    return box


def _draw_banner(painter: QtGui.QPainter, rect: QtCore.QRectF, text: str) -> QtCore.QRectF:
    font = QtGui.QFont()
    font.setPointSizeF(12)
    font.setBold(True)
    painter.setFont(font)
    fm = QtGui.QFontMetricsF(font)
    text = fm.elidedText(text, QtCore.Qt.TextElideMode.ElideMiddle, max(50.0, rect.width() - 60))
    w = fm.horizontalAdvance(text) + 24
    box = QtCore.QRectF(rect.center().x() - w / 2, rect.top() + 12, w, fm.height() + 12)
    painter.setPen(QtCore.Qt.PenStyle.NoPen)
    painter.setBrush(QtGui.QColor(10, 14, 24, 190))
    painter.drawRoundedRect(box, 8, 8)
    _text(painter, QtCore.QPointF(box.left() + 12, box.top() + 6 + fm.ascent()), text, font, QtGui.QColor(240, 240, 240))
    return box


def marker_specs(vp: ViewPrediction) -> list[dict]:
    """The overlay markers for a prediction: modes (rings, numbered), refined point, truth, point.

    ``priority`` orders label placement (mode 1 first); labels are placed clear of every marker."""
    out: list[dict] = []
    for rank, m in enumerate(vp.modes, start=1):
        out.append({"lat": m.lat, "lon": m.lon, "shape": "ring", "color": COLOR_MODE, "size": 16,
                    "label": f"{rank}  {100 * m.mass:.0f}%", "priority": rank})
    if vp.refined is not None:
        out.append({"lat": vp.refined[0], "lon": vp.refined[1], "shape": "diamond", "color": COLOR_REFINED,
                    "size": 12, "label": ""})
    if vp.truth is not None:
        out.append({"lat": vp.truth[0], "lon": vp.truth[1], "shape": "star", "color": COLOR_TRUTH, "size": 20,
                    "label": "true", "priority": 0})
    out.append({"lat": vp.point[0], "lon": vp.point[1], "shape": "cross", "color": COLOR_POINT, "size": 18,
                "label": ""})
    return out


def legend_spec(vp: ViewPrediction, scale: str) -> dict:
    title = heat.legend_title(scale)
    ticks: list[tuple[float, str]] = []
    if vp.has_grid:
        _, lo, hi = heat.scale_values(vp.density, scale)
        span = hi - lo if hi > lo else 1.0
        ticks = [((pos - lo) / span, label) for pos, label in heat.ticks(float(vp.density.max()), scale)
                 if lo - 1e-9 <= pos <= hi + 1e-9]
    symbols = [
        ("cross", COLOR_POINT, f"point estimate ({vp.reducer})" if vp.reducer else "point estimate"),
        ("ring", COLOR_MODE, "modes (rank, mass)"),
        ("dot", (255, 255, 255), "diffusion samples"),
    ]
    if vp.truth is not None:
        symbols.append(("star", COLOR_TRUTH, "true location (EXIF)"))
    for level, (color, _) in CONTOUR_STYLE.items():
        if level in vp.credible:
            symbols.append(("line", color, f"{int(round(100 * level))}% credible region"))
    return {"title": title, "ticks": ticks, "symbols": symbols}

