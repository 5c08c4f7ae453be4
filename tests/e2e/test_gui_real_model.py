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
