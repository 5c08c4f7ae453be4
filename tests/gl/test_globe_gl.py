"""The OpenGL globe renders the Earth, the heat layer and the window's globe view (needs a display)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("OpenGL")

from PySide6 import QtCore, QtWidgets  # noqa: E402

from tests.gl.conftest import to_array  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "data" / "photos"
if not PHOTOS.is_dir():
    PHOTOS = Path("/work/shared/data/photos")

pytestmark = pytest.mark.gl


def settle(ms=150):
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        QtWidgets.QApplication.processEvents()
        time.sleep(0.01)


def prediction(grid=(180, 360)):
    from gui.demo import DemoPredictionService
    from gui.viewdata import from_prediction
    from locdiff.core.sampling import PredictSettings

    svc = DemoPredictionService({"stockholm": (59.33, 18.07)})
    p = svc.predict_images([PHOTOS / "stockholm-panorama.jpg"], PredictSettings(grid_lat=grid[0], grid_lon=grid[1]))[0]
    return from_prediction(p, "image", (59.33255, 18.06494))


@pytest.fixture
def globe(qtbot, gl_ok):
    from gui.globe import GlobeView

    g = GlobeView(texture_width=2048)
    qtbot.addWidget(g)
    g.resize(480, 360)
    g.show()
    qtbot.waitExposed(g)
    settle()
    return g


def test_globe_shows_the_earth(globe):
    img = to_array(globe.grabFramebuffer())[..., :3].astype(int)
    h, w, _ = img.shape
    assert img.std() > 20  # not blank
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    bg = (img.sum(-1) < 40)
    assert bg[0, 0] and bg[0, -1] and bg[-1, 0] and bg[-1, -1]  # space around the globe
    disc = ~bg
    assert 0.3 < disc.mean() < 0.9
    ocean = disc & (b > r + 15) & (b > 40)
    land = disc & ((g > b + 5) | (r > b + 15))
    assert ocean.sum() > 0.15 * disc.sum(), "no blue ocean"
    assert land.sum() > 0.05 * disc.sum(), "no green/brown land"


def test_heat_layer_is_drawn_at_the_predicted_point(globe):
    vp = prediction()
    from gui import regions

    contours = {lv: regions.contour_segments(vp.density, vp.lat, vp.lon, t) for lv, t in vp.credible.items()}
    globe.overlay.setVisible(False)  # look at the heat itself, not the markers drawn on top
    globe.show_prediction(vp, contours)
    globe.samples.setVisible(False)
    globe.arc.setVisible(False)  # the point→truth arc starts at the centre, in a direction that varies per draw
    globe.zoom_to(2.4)
    settle()
    img = to_array(globe.grabFramebuffer())[..., :3].astype(int)
    h, w, _ = img.shape
    centre = img[h // 2 - 3: h // 2 + 4, w // 2 - 3: w // 2 + 4].reshape(-1, 3).mean(0)
    globe.heat.setVisible(False)
    settle()
    plain = to_array(globe.grabFramebuffer())[..., :3].astype(int)
    base = plain[h // 2 - 3: h // 2 + 4, w // 2 - 3: w // 2 + 4].reshape(-1, 3).mean(0)
    # hot (orange to the colour map's pale-yellow top, (252, 255, 164)) over the point, yet translucent
    # (alpha <= 0.6): the Earth still shows through. The demo draws afresh, so the point sits on the peak or beside it.
    assert centre[0] > base[0] + 60 and centre[0] > centre[2] + 15, (centre, base)
    assert centre[0] < 0.6 * 255 + 0.4 * base[0] + 8  # not opaque
    assert np.abs(plain - img).sum(-1).max() > 100
    globe.heat.setVisible(True)


def test_a_new_grid_only_re_uploads_the_heat_texture(globe):
    vp = prediction()
    globe.show_prediction(vp)
    settle()
    tex = globe.heat._texture
    earth_uploads = globe.earth.uploads
    n = globe.heat.uploads
    globe.set_heat(vp.density[::-1].copy())  # same shape, other values
    settle()
    assert globe.heat.uploads == n + 1 and globe.heat._texture == tex
    assert globe.earth.uploads == earth_uploads
    globe.set_heat(prediction((360, 720)).density)  # new shape: re-allocated, still one texture
    settle()
    assert globe.heat.uploads == n + 2 and globe.heat._tex_shape == (360, 720, 4)


def test_zoom_is_clamped_above_the_surface(globe, qtbot):
    from gui.globe import MAX_DISTANCE, MIN_DISTANCE

    for delta in (12000, -60000):
        ev = QtCore.QPointF(240, 180)
        from PySide6 import QtGui

        wheel = QtGui.QWheelEvent(ev, globe.mapToGlobal(ev), QtCore.QPoint(), QtCore.QPoint(0, delta),
                                  QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier,
                                  QtCore.Qt.ScrollPhase.NoScrollPhase, False)
        globe.wheelEvent(wheel)
        assert MIN_DISTANCE <= globe.opts["distance"] <= MAX_DISTANCE
    assert globe.opts["distance"] == pytest.approx(MAX_DISTANCE)


def test_window_uses_the_globe_and_saves_it(qtbot, gl_ok, tmp_path):
    from gui.app import MainWindow
    from gui.demo import DemoPredictionService, MemoryHistory

    svc = DemoPredictionService({"stockholm": (59.33, 18.07)})
    win = MainWindow(lambda c: svc, MemoryHistory(), None, None, geocoder=None, texture_width=2048,
                     flat_texture_width=720)
    qtbot.addWidget(win)
    win.resize(1000, 650)
    win.show()
    qtbot.waitExposed(win)
    assert win.view_name() == "globe"
    win.open_paths([PHOTOS / "stockholm-panorama.jpg"])
    qtbot.waitUntil(lambda: not win.busy(), timeout=15000)
    settle()
    out = win.save_view_png(tmp_path / "view.png")
    assert out is not None
    from PySide6 import QtGui

    arr = to_array(QtGui.QImage(str(out)))[..., :3].astype(int)
    hot = (arr[..., 0] > 200) & (arr[..., 0] > arr[..., 2] + 80) & (arr[..., 1] > 60)
    assert hot.sum() > 50  # the heat layer (orange/yellow) is in the saved view
    win.set_view("flat")
    assert win.view_name() == "flat"
    win.set_view("globe")
    assert win.view_name() == "globe"


def test_globe_labels_do_not_overlap_each_other_the_markers_or_the_edge(globe):
    from gui.labels import intersects

    vp = prediction()
    globe.show_prediction(vp)
    globe.zoom_to(2.4)
    settle()
    globe.grabFramebuffer()  # paints the overlay
    rects = globe.overlay.label_rects
    assert len(rects) >= 2  # "true" and at least mode 1
    w, h = globe.width(), globe.height()
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= w and 0 <= a[1] and a[3] <= h
        assert not any(intersects(a, b) for b in rects[i + 1:])
