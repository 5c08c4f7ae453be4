"""The 3D globe: a textured, rotatable, zoomable Earth with the heatmap, contours and markers.

Built on ``pyqtgraph.opengl``. The Earth and the heat layer are :class:`TexturedSphere` items
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
from OpenGL import GL
from OpenGL.GL import shaders
from pyqtgraph.opengl.GLGraphicsItem import GLGraphicsItem, GLOptions
from PySide6 import QtCore, QtGui
from PySide6.QtOpenGL import QOpenGLBuffer

from gui import assets, heat
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


# --------------------------------------------------------------------------- textured sphere
_VERT_LEGACY = """
uniform mat4 u_mvp;
uniform mat4 u_mv;
attribute vec3 a_position;
attribute vec2 a_texcoord;
uniform float u_shade;
varying vec2 v_texcoord;
varying float v_light;
void main() {
    gl_Position = u_mvp * vec4(a_position, 1.0);
    v_texcoord = a_texcoord;
    float facing = clamp(normalize((u_mv * vec4(a_position, 0.0)).xyz).z, 0.0, 1.0);
    v_light = mix(1.0, 0.38 + 0.62 * pow(facing, 0.55), u_shade);  // darker towards the limb
}
"""
_FRAG_LEGACY = """
#ifdef GL_ES
precision mediump float;
#endif
uniform sampler2D u_texture;
varying vec2 v_texcoord;
varying float v_light;
void main() {
    vec4 c = texture2D(u_texture, v_texcoord);
    if (c.a < 0.004) discard;
    gl_FragColor = vec4(c.rgb * v_light, c.a);
}
"""
_VERT_CORE = (
    _VERT_LEGACY.replace("attribute ", "in ").replace("varying ", "out ")
)
_FRAG_CORE = (
    _FRAG_LEGACY.replace("varying ", "in ")
    .replace("gl_FragColor", "fragColor")
    .replace("texture2D(", "texture(")
    .replace("void main() {", "out vec4 fragColor;\nvoid main() {")
)


def sphere_mesh(rows: int, cols: int, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved vertices ``[(rows+1)(cols+1), 5]`` (x, y, z, u, v) and triangle indices (uint32).

    ``u`` runs 0..1 from 180 W eastwards, ``v`` 0..1 from the north pole: texture row 0 = north.
    """
    v = np.linspace(0.0, 1.0, rows + 1)
    u = np.linspace(0.0, 1.0, cols + 1)
    lat = 90.0 - 180.0 * v
    lon = -180.0 + 360.0 * u
    glat, glon = np.meshgrid(lat, lon, indexing="ij")
    xyz = assets.lonlat_to_xyz(glon, glat, radius)
    gv, gu = np.meshgrid(v, u, indexing="ij")
    verts = np.concatenate((xyz, gu[..., None], gv[..., None]), axis=-1).reshape(-1, 5).astype(np.float32)
    idx = np.arange((rows + 1) * (cols + 1), dtype=np.uint32).reshape(rows + 1, cols + 1)
    a, b = idx[:-1, :-1], idx[:-1, 1:]
    c, d = idx[1:, :-1], idx[1:, 1:]
    faces = np.stack((a, c, b, b, c, d), axis=-1).reshape(-1).astype(np.uint32)
    return np.ascontiguousarray(verts), np.ascontiguousarray(faces)


class TexturedSphere(GLGraphicsItem):
    """A sphere with an equirectangular texture (``[H, W, 3|4]`` uint8, row 0 = north, col 0 = 180 W).

    ``setImage`` with the same shape re-uploads with ``glTexSubImage2D`` on the next paint; ``shade``
    darkens towards the limb (for the Earth; the heat layer keeps its true colours).
    """

    def __init__(self, image: np.ndarray, radius: float = 1.0, rows: int = 180, cols: int = 360,
                 shade: bool = True, mipmap: bool = True, glOptions: str = "opaque", parentItem=None) -> None:
        super().__init__(parentItem=parentItem)
        # the far half of a sphere is hidden anyway: cull it (halves the work of software GL)
        opts = dict(GLOptions[glOptions] if isinstance(glOptions, str) else glOptions)
        opts[GL.GL_CULL_FACE] = True
        opts["glCullFace"] = (GL.GL_BACK,)
        self.setGLOptions(opts)
        self.radius = radius
        self.shade = shade
        self.mipmap = mipmap
        self._verts, self._faces = sphere_mesh(rows, cols, radius)
        self._vbo = QOpenGLBuffer(QOpenGLBuffer.Type.VertexBuffer)
        self._ibo = QOpenGLBuffer(QOpenGLBuffer.Type.IndexBuffer)
        self._program_id = None
        self._texture: int | None = None
        self._tex_shape: tuple[int, ...] | None = None
        self._image: np.ndarray | None = None
        self._dirty_image = False
        self._dirty_mesh = True
        self._rows, self._cols = rows, cols
        self._all_faces = self._faces
        self.uploads = 0  # number of texture uploads (for tests / benchmarks)
        self.setImage(image)

    def setImage(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"texture must be [H, W, 3|4] uint8, got {image.shape} {image.dtype}")
        self._image = np.ascontiguousarray(image)
        self._dirty_image = True
        self.update()

    def image(self) -> np.ndarray | None:
        return self._image

    def set_coverage(self, mask: np.ndarray | None) -> None:
        """Draw only the mesh quads over texture cells where ``mask`` [H, W] is true (plus a margin).

        For a mostly transparent texture (the heat layer) this skips most fragments, which matters
        on software renderers. ``None`` draws the whole sphere.
        """
        if mask is None:
            faces = self._all_faces
        else:
            mask = np.asarray(mask, dtype=bool)
            h, w = mask.shape
            r_idx = (np.arange(self._rows) * h // self._rows)
            r_end = np.maximum(((np.arange(self._rows) + 1) * h + self._rows - 1) // self._rows, r_idx + 1)
            c_idx = (np.arange(self._cols) * w // self._cols)
            c_end = np.maximum(((np.arange(self._cols) + 1) * w + self._cols - 1) // self._cols, c_idx + 1)
            # any() over the texture cells under each quad, via cumulative sums
            cs = np.zeros((h + 1, w + 1), np.int32)
            cs[1:, 1:] = np.cumsum(np.cumsum(mask, 0), 1)
            quad = (cs[r_end][:, c_end] - cs[r_idx][:, c_end] - cs[r_end][:, c_idx] + cs[r_idx][:, c_idx]) > 0
            # one quad of margin (bilinear filtering bleeds into neighbours), wrapping in longitude
            grown = quad.copy()
            grown[1:] |= quad[:-1]
            grown[:-1] |= quad[1:]
            grown |= np.roll(grown, 1, axis=1) | np.roll(grown, -1, axis=1)
            faces = self._all_faces.reshape(self._rows, self._cols, 6)[grown].reshape(-1)
        self._faces = np.ascontiguousarray(faces, dtype=np.uint32)
        self._dirty_mesh = True
        self.update()

    def reset_gl(self) -> None:
        """Forget GL objects (after the widget got a new context): re-created on the next paint."""
        self._program_id = None
        self._texture = None
        self._tex_shape = None
        self._vbo = QOpenGLBuffer(QOpenGLBuffer.Type.VertexBuffer)
        self._ibo = QOpenGLBuffer(QOpenGLBuffer.Type.IndexBuffer)
        self._dirty_mesh = True
        self._dirty_image = self._image is not None

    def _program(self):
        if self._program_id is not None:
            return self._program_id
        ctx = QtGui.QOpenGLContext.currentContext()
        fmt = ctx.format()
        if ctx.isOpenGLES():
            core = fmt.version() >= (3, 0)
            header = "#version 300 es\n" if core else ""
        else:
            core = fmt.version() >= (3, 1)
            header = "#version 140\n" if core else ""
        vsrc, fsrc = (_VERT_CORE, _FRAG_CORE) if core else (_VERT_LEGACY, _FRAG_LEGACY)
        prog = shaders.compileProgram(
            shaders.compileShader([header, vsrc], GL.GL_VERTEX_SHADER),
            shaders.compileShader([header, fsrc], GL.GL_FRAGMENT_SHADER),
        )
        GL.glBindAttribLocation(prog, 0, "a_position")
        GL.glBindAttribLocation(prog, 1, "a_texcoord")
        GL.glLinkProgram(prog)
        self._program_id = prog
        return prog

    def _upload_mesh(self) -> None:
        bufs = ((self._vbo, self._verts), (self._ibo, self._faces))
        if self._vbo.isCreated():
            bufs = bufs[1:]  # the vertices never change
        for buf, arr in bufs:
            if not buf.isCreated():
                buf.create()
            buf.bind()
            buf.allocate(arr, max(arr.nbytes, 4))
            buf.release()
        self._dirty_mesh = False

    def _upload_texture(self) -> None:
        img = self._image
        h, w, ch = img.shape
        fmt = GL.GL_RGBA if ch == 4 else GL.GL_RGB
        if self._texture is None:
            self._texture = int(GL.glGenTextures(1))
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texture)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        if self._tex_shape == img.shape:
            GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, w, h, fmt, GL.GL_UNSIGNED_BYTE, img)
        else:
            internal = GL.GL_RGBA8 if ch == 4 else GL.GL_RGB8
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, internal, w, h, 0, fmt, GL.GL_UNSIGNED_BYTE, img)
            self._tex_shape = img.shape
        minf = GL.GL_LINEAR
        if self.mipmap:
            try:
                GL.glGenerateMipmap(GL.GL_TEXTURE_2D)
                minf = GL.GL_LINEAR_MIPMAP_NEAREST  # bilinear in the nearest level: cheaper than trilinear
            except Exception:  # noqa: BLE001 - very old GL: plain linear filtering
                pass
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, minf)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_S, GL.GL_REPEAT)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        self._dirty_image = False
        self.uploads += 1

    def paint(self) -> None:
        if self._image is None:
            return
        if self._dirty_mesh:
            self._upload_mesh()
        if self._faces.size == 0:
            return
        if self._dirty_image:
            self._upload_texture()
        self.setupGLState()
        mvp = np.array(self.mvpMatrix().data(), dtype=np.float32)
        mv = np.array(self.modelViewMatrix().data(), dtype=np.float32)
        prog = self._program()
        self._vbo.bind()
        GL.glVertexAttribPointer(0, 3, GL.GL_FLOAT, False, 5 * 4, None)
        GL.glVertexAttribPointer(1, 2, GL.GL_FLOAT, False, 5 * 4, GL.GLvoidp(3 * 4))
        self._vbo.release()
        GL.glEnableVertexAttribArray(0)
        GL.glEnableVertexAttribArray(1)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texture)
        try:
            with prog:
                GL.glUniformMatrix4fv(GL.glGetUniformLocation(prog, "u_mvp"), 1, False, mvp)
                GL.glUniformMatrix4fv(GL.glGetUniformLocation(prog, "u_mv"), 1, False, mv)
                GL.glUniform1i(GL.glGetUniformLocation(prog, "u_texture"), 0)
                GL.glUniform1f(GL.glGetUniformLocation(prog, "u_shade"), 1.0 if self.shade else 0.0)
                self._ibo.bind()
                GL.glDrawElements(GL.GL_TRIANGLES, self._faces.size, GL.GL_UNSIGNED_INT, None)
                self._ibo.release()
        finally:
            GL.glDisableVertexAttribArray(0)
            GL.glDisableVertexAttribArray(1)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)


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
