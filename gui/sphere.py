"""A textured sphere for ``pyqtgraph.opengl``: a UV sphere with real OpenGL texture mapping.

The globe draws the Earth (the Blue Marble, with mipmaps, darkened towards the limb) and the heat
layer (the density grid's RGBA colouring, linear filtering) as two of these; a new prediction only
re-uploads the heat texture (``glTexSubImage2D``).
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import numpy as np
from OpenGL import GL
from OpenGL.GL import shaders
from pyqtgraph.opengl.GLGraphicsItem import GLGraphicsItem, GLOptions
from PySide6 import QtGui
from PySide6.QtOpenGL import QOpenGLBuffer

from gui import assets


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

