"""The desktop app driving the real prediction service (a tiny trained model, real harmonics,
real decoder, real density grid): drop the real photos and a corrupt file, wait for the workers."""

from __future__ import annotations

import os

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from functools import partial
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")
pytest.importorskip("open_clip")

from gui.app import MainWindow  # noqa: E402
from gui.demo import MemoryHistory  # noqa: E402
from gui.viewdata import haversine_km  # noqa: E402
from locdiff.container import build_prediction_service, gps_reader  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


def test_real_model_in_the_window(qtbot, trained_run):
    root, run_dir = trained_run
    factory = partial(build_prediction_service, workdir=str(root / "runs"))
    win = MainWindow(factory, MemoryHistory(), gps_reader(), run_dir,
                     geocoder=lambda pts: [f"{lat:.1f},{lon:.1f}" for lat, lon in pts], use_gl=False, flat_texture_width=720)
    qtbot.addWidget(win)
    win.resize(1100, 700)
    win.show()
    qtbot.waitUntil(lambda: not win.busy(), timeout=60000)
    photos = sorted((DATA / "photos").glob("*.jpg"))
    win.open_paths([*photos, DATA / "corrupt" / "truncated_jpeg.jpg"])
    qtbot.waitUntil(lambda: not win.busy(), timeout=240000)

    # every real photo located, the corrupt one reported by name, the app alive
    assert len(win.session) == len(photos)
    errors = win.messages.texts(errors_only=True)
    assert len(errors) == 1 and "truncated_jpeg.jpg" in errors[0]
    vp = win.current
    assert vp.has_grid and abs(float(vp.mass.sum()) - 1) < 1e-6
    assert len(vp.samples) == 16 and len(vp.modes) >= 1
    # the heatmap peaks near one of the decoded modes of the real mixture density
    peak = win.flat.heat_peak_latlon()
    assert min(haversine_km(peak, (m.lat, m.lon)) for m in vp.modes) < 1500
    rows = win.result_panel.mode_rows()
    masses = [float(r[2].rstrip("%")) for r in rows]
    assert 1 <= len(rows) <= 5 and masses == sorted(masses, reverse=True) and sum(masses) <= 100.5
    # EXIF GPS read through the real adapter: the true location and the error in km are shown
    assert vp.truth is not None and "Error:" in win.result_panel.truth.text()


def test_the_locdiff_h_box_refines_with_the_models_training_split(qtbot, trained_run):
    """The panel's LocDiff-H box, wired as the app wires it: the gallery (the model's training split) opens on
    the first query that asks, and the refined point is a training example's location, drawn on the map."""
    import csv

    from gui.app import service_factory

    root, run_dir = trained_run
    win = MainWindow(service_factory("cpu", str(root / "runs")), MemoryHistory(), gps_reader(), run_dir,
                     geocoder=lambda pts: [f"{lat:.1f},{lon:.1f}" for lat, lon in pts], use_gl=False, flat_texture_width=360)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: not win.busy(), timeout=60000)
    service = win.holder.service
    assert service is not None and service.gallery is not None and service.gallery._gallery is None  # not opened at load
    photos = sorted((DATA / "photos").glob("*.jpg"))[:1]
    win.open_paths(photos)
    qtbot.waitUntil(lambda: not win.busy(), timeout=120000)
    assert win.current.refined is None and service.gallery._gallery is None  # box unticked: no retrieval

    win.settings_panel.hybrid.setChecked(True)
    win.settings_panel.hybrid_radius.setValue(5000.0)  # the paper's rule; a tiny model's samples are far apart
    win.settings_panel.seed.setValue(1)  # a fresh answer, not the session's
    win.open_paths(photos)
    qtbot.waitUntil(lambda: not win.busy(), timeout=120000)
    refined = win.current.refined
    assert refined is not None and service.gallery._gallery is not None
    with open(root / "photos.csv") as f:
        places = [(float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]
    assert min(haversine_km(refined, p) for p in places) < 1e-3  # a training example's location
    xs, ys = win.flat.refined.getData()
    assert len(xs) == 1 and abs(ys[0] - refined[0]) < 1e-9 and abs(xs[0] - refined[1]) < 1e-9
    assert "LocDiff-H" in win.result_panel.point.text()  # said in words too, and named in the map's legend
    assert "LocDiff-H (retrieval)" in [label.text for _, label in win.flat.legend.items]
