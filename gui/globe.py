"""The 3D globe: a textured, rotatable, zoomable Earth with the heatmap, contours and markers.

Built on ``pyqtgraph.opengl``. The Earth and the heat layer are :class:`gui.sphere.TexturedSphere` items
(a UV sphere with real OpenGL texture mapping: the Blue Marble at its native 5400x2700 with
mipmaps, and the density grid's RGBA colouring at its own resolution with linear filtering), so a
new prediction only re-uploads the small heat texture (``glTexSubImage2D``) instead of rebuilding
a mesh. Coastlines, borders and contours are ``GLLinePlotItem`` segments; samples are a
``GLScatterPlotItem``; the predicted point, modes, true location, labels and the colour legend are
drawn by :class:`Overlay2D` with QPainter (hidden when on the far side of the globe).

Coordinates: unit sphere, z to the north pole, x to (0 N, 0 E), y to (0 N, 90 E). The camera's
azimuth/elevation then equal the longitude/latitude it looks down on.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import functools
import os

import numpy as np
import pyqtgraph.opengl as gl
from PySide6 import QtCore, QtGui

from gui import assets, heat
from gui.sphere import TexturedSphere
from gui.overlay import CONTOUR_STYLE, R_MARKERS, Overlay2D, legend_spec, marker_specs
from gui.viewdata import ViewPrediction, great_circle

R_HEAT = 1.0015
R_LINES = 1.003
R_CONTOUR = 1.004

DEFAULT_DISTANCE = 3.6
LOD_DISTANCE = 3.0  # camera distance (earth radii) above which boundaries are drawn at crude resolution
MIN_DISTANCE = 1.2
MAX_DISTANCE = 12.0
FOV = 35.0



def gl_available() -> bool:
    """Whether an OpenGL >= 2.1 context can be made (not under ``offscreen``, or ``LOCDIFF_GUI_NO_GL=1``)."""
    if os.environ.get("LOCDIFF_GUI_NO_GL", "").strip() not in ("", "0"):
        return False
    if QtGui.QGuiApplication.instance() is None:
        return False
    if QtGui.QGuiApplication.platformName() in ("offscreen", "minimal", "minimalegl", "vnc"):
        return False
    ctx = QtGui.QOpenGLContext()
    if not ctx.create():
        return False
    surface = QtGui.QOffscreenSurface()
    surface.setFormat(ctx.format())
    surface.create()
    try:
        if not surface.isValid() or not ctx.makeCurrent(surface):
            return False
        fmt = ctx.format()
        ok = ctx.isOpenGLES() or (fmt.majorVersion(), fmt.minorVersion()) >= (2, 1)
        ctx.doneCurrent()
        return ok
    finally:
        surface.destroy()


# --------------------------------------------------------------------------- view
@functools.lru_cache(maxsize=8)
def _boundary_xyz(kind: str, resolution: str) -> np.ndarray:
    lines = assets.coastlines(resolution) if kind == "coast" else assets.borders(resolution)
    seg = assets.line_segments(lines)
    if len(seg) == 0:
        return np.zeros((0, 3), np.float32)
    return assets.lonlat_to_xyz(seg[:, 0], seg[:, 1], R_LINES)


class GlobeView(gl.GLViewWidget):
    """The rotatable, zoomable Earth. Drag to rotate, wheel to zoom (panning is disabled)."""

    glFailed = QtCore.Signal(str)

    def __init__(self, parent=None, texture_width: int | None = None, mesh: tuple[int, int] = (180, 360)) -> None:
        super().__init__(parent)
        self.setMinimumSize(200, 200)
        self.setBackgroundColor(QtGui.QColor(4, 6, 14))
        self.opts["fov"] = FOV
        self.setCameraPosition(distance=DEFAULT_DISTANCE, elevation=20, azimuth=10)
        rows, cols = mesh
        self.earth = TexturedSphere(assets.blue_marble(texture_width), 1.0, rows, cols, shade=True, mipmap=True)
        self.earth.setDepthValue(0)
        self.addItem(self.earth)
        blank = np.zeros((2, 4, 4), np.uint8)
        self.heat = TexturedSphere(blank, R_HEAT, rows, cols, shade=False, mipmap=False, glOptions="translucent")
        self.heat.setDepthValue(1)
        self.heat.setVisible(False)
        self.addItem(self.heat)
        self.coast = gl.GLLinePlotItem(mode="lines", color=(0.92, 0.92, 0.85, 0.55), width=1.0, antialias=True,
                                       glOptions="translucent")
        self.borders = gl.GLLinePlotItem(mode="lines", color=(1.0, 0.86, 0.55, 0.45), width=1.0, antialias=True,
                                         glOptions="translucent")
        for item in (self.coast, self.borders):
            item.setDepthValue(2)
            self.addItem(item)
        self._lod: str | None = None
        self._lod_initialised = False
        self._update_lod()
        self.contours: dict[float, gl.GLLinePlotItem] = {}
        for level, (color, width) in CONTOUR_STYLE.items():
            item = gl.GLLinePlotItem(mode="lines", color=color, width=width, antialias=True, glOptions="translucent")
            item.setDepthValue(3)
            item.setVisible(False)
            self.addItem(item)
            self.contours[level] = item
        self.arc = gl.GLLinePlotItem(mode="line_strip", color=(0.3, 1.0, 0.45, 0.9), width=2.0, antialias=True,
                                     glOptions="translucent")
        self.arc.setDepthValue(3)
        self.arc.setVisible(False)
        self.addItem(self.arc)
        self.samples = gl.GLScatterPlotItem(pos=np.zeros((1, 3)), size=6.0, color=(1, 1, 1, 0.9), pxMode=True)
        self.samples.setGLOptions("translucent")
        self.samples.setDepthValue(4)
        self.samples.setVisible(False)
        self.addItem(self.samples)
        self.overlay = Overlay2D()
        self.addItem(self.overlay)
        self.prediction: ViewPrediction | None = None
        self.scale = "sqrt"
        self.heat_uploads = 0

    # ---------------------------------------------------------------- GL lifecycle
    def initializeGL(self) -> None:
        # a (re)created context: our own GL objects from an earlier one are gone
        self.earth.reset_gl()
        self.heat.reset_gl()
        ctx = self.context()
        if ctx is not None and not QtGui.QOpenGLContext.areSharing(ctx, QtGui.QOpenGLContext.globalShareContext()):
            # pyqtgraph caches shader programs per class, valid only within one share group
            for cls in (gl.GLLinePlotItem, gl.GLScatterPlotItem):
                cls._shaderProgram = None
        try:
            super().initializeGL()
            # compile every shader now, not when the first prediction arrives (a visible hitch)
            self.earth._program()
            self.heat._program()
            gl.GLLinePlotItem.getShaderProgram()
            gl.GLScatterPlotItem.getShaderProgram()
        except Exception as exc:  # noqa: BLE001 - fall back to the flat map
            self.glFailed.emit(f"OpenGL unavailable: {exc}")

    # ---------------------------------------------------------------- camera
    def _update_lod(self) -> None:
        """Crude boundaries when the whole globe is in view, low-resolution ones when zoomed in."""
        lod = "c" if self.opts["distance"] >= LOD_DISTANCE else "l"
        if lod == self._lod:
            return
        self._lod = lod
        coast_vis, borders_vis = self.coast.visible(), self.borders.visible()
        self._set_lines(self.coast, _boundary_xyz("coast", lod), None)
        self._set_lines(self.borders, _boundary_xyz("borders", lod), None)
        if self._lod_initialised:
            self.coast.setVisible(coast_vis)
            self.borders.setVisible(borders_vis)
        self._lod_initialised = True

    def setCameraPosition(self, *args, **kwargs) -> None:
        super().setCameraPosition(*args, **kwargs)
        if hasattr(self, "_lod"):
            self._update_lod()

    def orbit(self, azim: float, elev: float) -> None:
        # slower rotation when zoomed in, so a drag moves the surface about as far as the mouse
        f = min(1.5, max(0.04, (self.opts["distance"] - 1.0) / (DEFAULT_DISTANCE - 1.0)))
        super().orbit(azim * f, elev * f)
        self.opts["elevation"] = max(-89.9, min(89.9, self.opts["elevation"]))

    def pan(self, *args, **kwargs) -> None:  # keep the globe centred
        return

    def wheelEvent(self, ev) -> None:
        delta = ev.angleDelta().y() or ev.angleDelta().x()
        d = self.opts["distance"]
        # zoom towards the surface: scale the height above the ground, not the distance to the centre
        h = max(1e-3, d - 1.0) * 0.999 ** delta
        self.opts["distance"] = min(MAX_DISTANCE, max(MIN_DISTANCE, 1.0 + h))
        self._update_lod()
        self.update()

    def focus(self, lat: float, lon: float, distance: float | None = None) -> None:
        self.setCameraPosition(azimuth=lon, elevation=max(-89.0, min(89.0, lat)),
                               distance=distance if distance is not None else self.opts["distance"])

    def zoom_to(self, distance: float) -> None:
        self.setCameraPosition(distance=min(MAX_DISTANCE, max(MIN_DISTANCE, distance)))

    def reset_view(self) -> None:
        self.setCameraPosition(distance=DEFAULT_DISTANCE, elevation=20, azimuth=10)

    # ---------------------------------------------------------------- content
    @staticmethod
    def _set_lines(item: gl.GLLinePlotItem, seg: np.ndarray, radius: float | None) -> None:
        """Segments as (lon, lat) degrees on a sphere of ``radius``, or xyz already (``radius`` None)."""
        if len(seg) == 0:
            item.setVisible(False)
            return
        pos = seg if radius is None else assets.lonlat_to_xyz(seg[:, 0], seg[:, 1], radius)
        item.setData(pos=pos)
        item.setVisible(True)

    def set_boundaries(self, coast: bool = True, borders: bool = True) -> None:
        self.coast.setVisible(coast and self.coast.pos is not None and len(self.coast.pos) > 0)
        self.borders.setVisible(borders and self.borders.pos is not None and len(self.borders.pos) > 0)

    def set_heat(self, density: np.ndarray | None, scale: str = "sqrt") -> None:
        """Colour and upload a new density grid (row 0 = north); ``None`` hides the layer."""
        if density is None:
            self.heat.setVisible(False)
            return
        rgba = heat.heat_rgba(density, scale)
        self.heat.setImage(rgba)
        self.heat.set_coverage(rgba[..., 3] > 0)
        self.heat.setVisible(True)
        self.heat_uploads += 1

    def set_contours(self, contours: dict[float, np.ndarray]) -> None:
        for level, item in self.contours.items():
            seg = contours.get(level)
            if seg is None or len(seg) == 0:
                item.setVisible(False)
            else:
                self._set_lines(item, seg, R_CONTOUR)

    def show_prediction(self, vp: ViewPrediction | None, contours: dict[float, np.ndarray] | None = None,
                        scale: str = "sqrt", focus: bool = True) -> None:
        self.prediction = vp
        self.scale = scale
        if vp is None:
            self.set_heat(None)
            self.set_contours({})
            self.samples.setVisible(False)
            self.arc.setVisible(False)
            self.overlay.set_markers([])
            self.overlay.set_legend(None)
            return
        self.set_heat(vp.density if vp.has_grid else None, scale)
        self.set_contours(contours or {})
        if len(vp.samples):
            self.samples.setData(pos=assets.lonlat_to_xyz(vp.samples[:, 1], vp.samples[:, 0], R_MARKERS))
            self.samples.setVisible(True)
        else:
            self.samples.setVisible(False)
        if vp.truth is not None:
            arc = great_circle(vp.point, vp.truth)
            self.arc.setData(pos=assets.lonlat_to_xyz(arc[:, 1], arc[:, 0], R_CONTOUR))
            self.arc.setVisible(True)
        else:
            self.arc.setVisible(False)
        self.overlay.set_markers(marker_specs(vp))
        self.overlay.set_legend(legend_spec(vp, scale))
        if focus:
            self.focus(*vp.point)

    def set_banner(self, text: str) -> None:
        self.overlay.set_banner(text)

    def export_image(self) -> QtGui.QImage:
        return self.grabFramebuffer()
