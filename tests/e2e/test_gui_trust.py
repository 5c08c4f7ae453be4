"""Issue #12 in the window: Cancel that cancels, one message for photos on a text model, the same answer
for the same query (and Resample for a new one), a banner that names mode 1, labels that never overlap,
a legend that only lists what is drawn, and GeoJSON credible regions as valid polygons."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6 import QtCore  # noqa: E402

from gui import regions  # noqa: E402
from gui.demo import DemoPredictionService  # noqa: E402
from gui.jobs import TEXT_MODEL  # noqa: E402
from gui.labels import intersects, place_labels  # noqa: E402
from gui.formats import to_geojson  # noqa: E402
from gui.viewdata import ModeView, from_prediction, visible_modes  # noqa: E402
from gui.window import banner_text  # noqa: E402
from tests.e2e.test_gui import LOCATIONS, drop, make_window, wait_idle  # noqa: E402
from tests.unit.test_prediction_service import service as real_service  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
PHOTOS = sorted((DATA / "photos").glob("*.jpg"))
CORRUPT = DATA / "corrupt" / "truncated_jpeg.jpg"


# --------------------------------------------------------------------------- Cancel
def test_cancel_stops_a_real_ddpm_query_and_nothing_is_drawn(qtbot):
    """The real sampler (untrained model, K=256 DDPM): Cancel ends the job within a step, no result drawn."""
    svc = real_service()
    win = make_window(qtbot, svc)
    wait_idle(qtbot, win)
    win.settings_panel.samples.setValue(256)
    win.settings_panel.sampler.setCurrentText("ddpm")
    win.settings_panel.steps.setValue(100)
    win.run_text("Springfield")
    qtbot.waitUntil(lambda: win.progress.value() >= 2, timeout=60000)  # a few diffusion steps in
    t0 = time.perf_counter()
    qtbot.mouseClick(win.cancel_button, QtCore.Qt.MouseButton.LeftButton)
    wait_idle(qtbot, win, timeout=30000)
    assert time.perf_counter() - t0 < 10.0
    assert win.session == [] and win.current is None  # not drawn
    assert any("cancelled" in m.lower() for m in win.messages.texts())
    assert "cancelled" in win.status_label.text().lower()
    assert "cancelled" in win.flat.plot.titleLabel.text.lower()  # the banner says so too


def test_cancel_of_a_photo_batch_keeps_only_what_finished(qtbot):
    svc = DemoPredictionService(LOCATIONS, delay_s=0.3)
    win = make_window(qtbot, svc)
    wait_idle(qtbot, win)
    drop(win, PHOTOS)
    qtbot.waitUntil(lambda: win.progress.value() >= 1, timeout=10000)
    win.cancel()
    wait_idle(qtbot, win)
    assert 1 <= len(win.session) < len(PHOTOS)
    assert any("cancelled" in m.lower() for m in win.messages.texts())


# --------------------------------------------------------------------------- model / input mismatch
def test_photos_on_a_text_model_give_one_clear_message(qtbot):
    svc = DemoPredictionService(LOCATIONS, reads=("text",))
    win = make_window(qtbot, svc)
    wait_idle(qtbot, win)
    drop(win, [*PHOTOS, CORRUPT])
    wait_idle(qtbot, win)
    errors = win.messages.texts(errors_only=True)
    assert len(errors) == 1 and errors[0].endswith(TEXT_MODEL)  # one line, not one per file
    assert "reads text" in TEXT_MODEL and "Model" in TEXT_MODEL and "CLIP" in TEXT_MODEL
    assert win.flat.plot.titleLabel.text == TEXT_MODEL  # in the banner
    assert win.session == []


def test_the_real_service_on_a_text_model_gives_the_same_one_message(qtbot):
    win = make_window(qtbot, real_service("minilm"))
    wait_idle(qtbot, win)
    drop(win, PHOTOS[:3])
    wait_idle(qtbot, win)
    errors = win.messages.texts(errors_only=True)
    assert len(errors) == 1 and errors[0].endswith(TEXT_MODEL)


def test_a_corrupt_jpeg_is_still_named_on_a_photo_model(qtbot):
    win = make_window(qtbot, DemoPredictionService(LOCATIONS))
    wait_idle(qtbot, win)
    drop(win, [PHOTOS[0], CORRUPT])
    wait_idle(qtbot, win)
    errors = win.messages.texts(errors_only=True)
    assert len(errors) == 1 and CORRUPT.name in errors[0]


# --------------------------------------------------------------------------- same query, same answer
def test_the_same_query_gives_the_same_answer_and_resample_a_new_one(qtbot):
    win = make_window(qtbot, real_service())
    wait_idle(qtbot, win)
    win.settings_panel.samples.setValue(8)
    win.settings_panel.steps.setValue(3)
    win.settings_panel.resolution.setCurrentIndex(0)
    points = []
    for _ in range(2):
        win.run_text("Springfield")
        wait_idle(qtbot, win, timeout=60000)
        points.append(win.current.samples.copy())
    assert np.array_equal(points[0], points[1])
    banners = win.flat.plot.titleLabel.text
    win.resample()
    wait_idle(qtbot, win, timeout=60000)
    assert not np.array_equal(win.current.samples, points[0])
    assert win.settings_panel.settings().seed == 1
    assert banners  # the banner was set for the answer


# --------------------------------------------------------------------------- banner, modes, labels
def _demo_vp(text="stockholm", truth=None):
    from locdiff.core.sampling import PredictSettings

    p = DemoPredictionService(LOCATIONS).predict_text(text, PredictSettings(grid_lat=90, grid_lon=180))
    return from_prediction(p, "text", truth)


def test_the_banner_names_mode_1_as_the_map_does():
    vp = _demo_vp().with_places("Sala, Västmanland, SE", ["Karlholmsbruk, Uppsala, SE", "Oslo, NO"])
    text = banner_text(vp)
    assert "1. Karlholmsbruk" in text and f"{100 * vp.modes[0].mass:.0f} %" in text
    assert "Sala" not in text  # the point estimate's place is in the result panel, labelled as such


def test_modes_under_one_percent_are_hidden():
    modes = (ModeView(0, 0, 0.6), ModeView(1, 1, 0.3), ModeView(2, 2, 0.011), ModeView(3, 3, 0.009), ModeView(4, 4, 0.001))
    assert [m.mass for m in visible_modes(modes)] == [0.6, 0.3, 0.011]
    assert all(m.mass >= 0.01 for m in _demo_vp().modes)


def test_placed_labels_never_intersect_markers_each_other_or_the_edge():
    rng = np.random.default_rng(0)
    bounds = (0.0, 0.0, 400.0, 300.0)
    for _ in range(30):
        pts = rng.uniform([0, 0], [400, 300], size=(6, 2))
        pts[1:4] = pts[0] + rng.normal(0, 12, size=(3, 2))  # a crowded cluster, as nearby modes are
        markers = [(x - 10, y - 10, x + 10, y + 10) for x, y in pts]
        labels = [(x, y, 60.0, 16.0, 8.0) for x, y in pts]
        rects = place_labels(labels, markers, bounds)
        placed = [r for r in rects if r is not None]
        assert len(placed) >= 3
        for i, a in enumerate(placed):
            assert bounds[0] <= a[0] and a[2] <= bounds[2] and bounds[1] <= a[1] and a[3] <= bounds[3]
            assert not any(intersects(a, m) for m in markers)
            assert not any(intersects(a, b) for b in placed[i + 1:])


def test_flat_map_labels_do_not_overlap_and_stay_in_view(qtbot):
    win = make_window(qtbot)
    wait_idle(qtbot, win)
    win.set_view("flat")
    vp = _demo_vp(truth=(59.4, 18.2))
    win.show_prediction(vp)
    qtbot.wait(50)
    flat = win.flat
    flat.layout_labels()
    rects = flat.label_rects
    assert rects, "no label drawn"
    view = flat.plot.vb.sceneBoundingRect()
    for i, a in enumerate(rects):
        assert view.left() <= a[0] and a[2] <= view.right() and view.top() <= a[1] and a[3] <= view.bottom()
        assert not any(intersects(a, b) for b in rects[i + 1:])
    cross = flat.plot.vb.mapViewToScene(QtCore.QPointF(vp.point[1], vp.point[0]))
    cross_rect = (cross.x() - 9, cross.y() - 9, cross.x() + 9, cross.y() + 9)
    assert not any(intersects(a, cross_rect) for a in rects)


def test_the_legend_lists_the_true_location_only_when_there_is_one(qtbot):
    win = make_window(qtbot)
    wait_idle(qtbot, win)

    def names():
        return [label.text for _, label in win.flat.legend.items]

    win.show_prediction(_demo_vp())
    assert "true location (EXIF)" not in names()
    win.show_prediction(_demo_vp(truth=(59.4, 18.2)))
    assert "true location (EXIF)" in names()
    win.show_prediction(_demo_vp())
    assert "true location (EXIF)" not in names()


def test_flat_map_latitude_axis_stops_at_the_poles(qtbot):
    win = make_window(qtbot)
    axis = win.flat.plot.getAxis("left")
    for _, values in axis.tickValues(-130.0, 130.0, 600):
        assert all(abs(v) <= 90 for v in values)
    for _, values in win.flat.plot.getAxis("bottom").tickValues(-250.0, 250.0, 900):
        assert all(abs(v) <= 180 for v in values)


def test_long_boundary_pieces_are_split_so_the_globe_draws_no_chords():
    from gui import assets

    line = np.array([[-123.0, 49.0], [-95.0, 49.0]])  # the 49th parallel as two points
    dense = assets.densify(line)
    assert np.abs(np.diff(dense, axis=0)).max() <= assets.MAX_SEGMENT_DEG + 1e-9
    assert np.allclose(dense[:, 1], 49.0) and dense[0, 0] == -123.0 and dense[-1, 0] == -95.0
    for pts in assets.borders("c") + assets.coastlines("c"):
        d = np.abs(np.diff(pts, axis=0))
        d = d[d[:, 0] <= 180]
        assert len(d) == 0 or d.max() <= assets.MAX_SEGMENT_DEG + 1e-9


def test_place_names_keep_their_accents():
    from gui.geocode import reverse_geocode

    names = reverse_geocode([(60.4858, 15.43714)])
    if not names[0]:
        pytest.skip("reverse_geocoder not available")
    assert names[0].startswith("Borlänge")


# --------------------------------------------------------------------------- GeoJSON credible regions
def _check_ring(ring, exterior: bool):
    assert len(ring) >= 4 and ring[0] == ring[-1]
    assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
    area = 0.5 * sum(ring[k][0] * ring[k + 1][1] - ring[k + 1][0] * ring[k][1] for k in range(len(ring) - 1))
    assert (area > 0) == exterior  # RFC 7946: exteriors counterclockwise, holes clockwise


def _polygons(geom):
    return [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]


def test_geojson_exports_the_credible_regions_as_valid_polygons_containing_the_point(tmp_path):
    vp = _demo_vp("stockholm")
    data = json.loads(json.dumps(to_geojson([vp])))  # through text, as a reader sees it
    regions_ = {f["properties"]["level"]: f for f in data["features"] if f["properties"]["role"] == "credible_region"}
    assert set(regions_) == {0.5, 0.9}
    for level, f in regions_.items():
        for poly in _polygons(f["geometry"]):
            _check_ring(poly[0], True)
            for hole in poly[1:]:
                _check_ring(hole, False)
        lat, lon = vp.point
        assert any(regions.point_in_polygon(p, lon, lat) for p in _polygons(f["geometry"])), level
        # the polygons hold the credible mass: the cells whose centres are inside add up to >= the level
        inside = np.zeros_like(vp.mass, dtype=bool)
        for i, la in enumerate(vp.lat):
            for j, lo in enumerate(vp.lon):
                inside[i, j] = any(regions.point_in_polygon(p, lo, la) for p in _polygons(f["geometry"]))
        assert float(vp.mass[inside].sum()) >= level - 1e-6
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps(data))
    if shutil.which("ogrinfo"):  # GDAL reads it back
        out = subprocess.run(["ogrinfo", "-ro", "-al", "-so", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"Feature Count: {len(data['features'])}" in out.stdout


def test_region_polygons_split_at_the_date_line_and_run_along_the_pole():
    mask = np.zeros((18, 36), dtype=bool)
    mask[4:7, 0:2] = True  # just east of 180 W ...
    mask[4:7, 34:36] = True  # ... and just west of 180 E: one region across the date line
    mask[0:2, :] = True  # a cap around the north pole
    polys = regions.region_polygons(mask)
    lons = sorted({round(min(x for x, _ in p[0]), 3) for p in polys})
    assert len(polys) == 3 and -180.0 in lons
    cap = [p for p in polys if max(y for _, y in p[0]) == 90.0]
    assert len(cap) == 1
    ring = cap[0][0]
    assert min(x for x, _ in ring) == -180.0 and max(x for x, _ in ring) == 180.0
    assert regions.point_in_polygon(cap[0], 0.0, 85.0) and not regions.point_in_polygon(cap[0], 0.0, 65.0)
    for p in polys:
        _check_ring(p[0], True)
    # a hole (an annulus) becomes an interior ring, clockwise
    ann = np.zeros((10, 10), dtype=bool)
    ann[2:8, 2:8] = True
    ann[4:6, 4:6] = False
    (poly,) = regions.region_polygons(ann)
    assert len(poly) == 2
    _check_ring(poly[1], False)
    hole_lon, hole_lat = -180 + 5 * 36, 90 - 5 * 18
    assert not regions.point_in_polygon(poly, hole_lon, hole_lat)
    assert regions.point_in_polygon(poly, -180 + 2.5 * 36, 90 - 2.5 * 18)
    assert math.isclose(hole_lon, 0.0)
