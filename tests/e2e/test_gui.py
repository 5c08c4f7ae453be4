"""End-to-end tests of the desktop app (pytest-qt): drop photos, watch the heatmap, cancel, export.

Runs headless with ``QT_QPA_PLATFORM=offscreen`` (the flat map; the OpenGL globe is covered by
``tests/gl``). The prediction service is the GUI's demo fake: real ``Prediction`` values with a
von Mises-Fisher-mixture ``DensityGrid`` around a known place per photo, ``ItemFailure`` for
unreadable files.
"""

from __future__ import annotations

import os

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from gui.app import MainWindow  # noqa: E402
from gui.demo import DemoPredictionService, MemoryHistory  # noqa: E402
from gui.viewdata import haversine_km  # noqa: E402
from locdiff.ports import ItemFailure  # noqa: E402
from locdiff.core.sampling import PredictSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _data_dir(name: str) -> Path:
    for base in (ROOT / "tests" / "data", Path("/work/shared/data")):
        d = base / name
        if d.is_dir() and any(d.iterdir()):
            return d
    pytest.skip(f"test data {name}/ not found")


# Where the fake service centres each photo's density, and where each photo "really" was (EXIF).
LOCATIONS = {
    "bay-area": (37.80, -122.35),
    "beijing": (39.916, 116.397),
    "list-sylt": (55.04, 8.42),
    "stockholm": (59.33, 18.07),
    "paris": (48.857, 2.352),
}
TRUTH = {
    "bay-area-1": (37.885, -122.6225),
    "bay-area-2": (37.81467, -122.26417),
    "bay-area-3": (37.77633, -122.41967),
    "beijing-forbidden-city": (39.91556, 116.39083),
    "list-sylt-starfish": (55.03876, 8.45719),
    "stockholm-panorama": (59.33255, 18.06494),
}


def fake_gps(path: Path):
    return TRUTH.get(Path(path).stem)


def fake_geocoder(points):
    return [f"Place@{lat:.1f},{lon:.1f}" for lat, lon in points]


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return sorted(_data_dir("photos").glob("*.jpg"))


@pytest.fixture(scope="module")
def corrupt() -> Path:
    return _data_dir("corrupt") / "truncated_jpeg.jpg"


def make_window(qtbot, service=None, factory=None, store=None, **kw) -> MainWindow:
    service = service if service is not None else DemoPredictionService(LOCATIONS)
    factory = factory if factory is not None else (lambda ckpt: service)
    win = MainWindow(factory, store if store is not None else MemoryHistory(), fake_gps, None,
                     geocoder=fake_geocoder, use_gl=False, flat_texture_width=720, **kw)
    qtbot.addWidget(win)
    win.resize(1100, 700)
    win.show()
    qtbot.waitUntil(lambda: not win.busy(), timeout=10000)
    return win


def drop(win: QtWidgets.QWidget, paths) -> bool:
    """Simulate dragging files from a file manager and dropping them on the window."""
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QtCore.QPointF(win.width() / 3, win.height() / 2)
    enter = QtGui.QDragEnterEvent(pos, QtCore.Qt.DropAction.CopyAction, mime,
                                  QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier)
    QtWidgets.QApplication.sendEvent(win, enter)
    if not enter.isAccepted():
        return False
    ev = QtGui.QDropEvent(pos, QtCore.Qt.DropAction.CopyAction, mime,
                          QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier)
    QtWidgets.QApplication.sendEvent(win, ev)
    return ev.isAccepted()


def wait_idle(qtbot, win, timeout=20000):
    qtbot.waitUntil(lambda: not win.busy(), timeout=timeout)


def expected_centre(name: str) -> tuple[float, float]:
    for key, ll in LOCATIONS.items():
        if name.startswith(key):
            return ll
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
def test_drop_photos_and_a_corrupt_file(qtbot, photos, corrupt):
    win = make_window(qtbot)
    assert drop(win, [*photos, corrupt])
    wait_idle(qtbot, win)

    # every real photo located, the corrupt one reported by name, the app still alive
    assert len(win.session) == len(photos)
    errors = win.messages.texts(errors_only=True)
    assert any("truncated_jpeg.jpg" in e and ("truncated" in e or "cannot read" in e) for e in errors), errors
    assert len(errors) == 1
    assert win.result_panel.session.count() == len(photos)
    assert f"Located {len(photos)} of {len(photos) + 1}" in win.status_label.text()

    # the first result is on display: heatmap peak, markers, top-5 list, truth and error
    vp = win.current
    assert vp is win.session[0]
    centre = expected_centre(Path(vp.item).stem)
    peak = win.flat.heat_peak_latlon()
    assert peak is not None
    assert haversine_km(peak, vp.point) < 160  # within about a grid cell of the predicted point
    assert haversine_km(peak, centre) < 300  # and where the fake put the density
    px, py = win.flat.point.getData()
    assert (py[0], px[0]) == pytest.approx(vp.point)
    tx, ty = win.flat.truth.getData()
    assert (ty[0], tx[0]) == pytest.approx(TRUTH[Path(vp.item).stem])
    assert len(win.flat.samples.getData()[0]) == PredictSettings().samples
    rows = win.result_panel.mode_rows()
    assert len(rows) == 5
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(r[1].startswith("Place@") for r in rows)
    masses = [float(r[2].rstrip("%")) for r in rows]
    assert masses == sorted(masses, reverse=True) and 0 < sum(masses) <= 100.5
    assert "Error:" in win.result_panel.truth.text() and "km" in win.result_panel.truth.text()
    err = haversine_km(vp.point, TRUTH[Path(vp.item).stem])
    assert f"{err:,.1f} km" in win.result_panel.truth.text()
    # credible-region contours drawn; the 90 % region encloses more than the 50 % one
    c50 = win.flat.contours[0.5].getData()[0]
    c90 = win.flat.contours[0.9].getData()[0]
    assert c50 is not None and len(c50) > 0 and len(c90) > len(c50)


def test_clicking_a_session_entry_shows_that_prediction(qtbot, photos):
    win = make_window(qtbot)
    drop(win, photos)
    wait_idle(qtbot, win)
    for row, vp in enumerate(win.session):
        win.result_panel.session.setCurrentRow(row)
        assert win.current is vp
        peak = win.flat.heat_peak_latlon()
        assert haversine_km(peak, expected_centre(Path(vp.item).stem)) < 300
        assert win.result_panel.title.text() == Path(vp.item).name


def test_cancel_stops_a_long_batch_and_the_ui_stays_responsive(qtbot, photos):
    service = DemoPredictionService(LOCATIONS, delay_s=0.4, busy=True)
    win = make_window(qtbot, service)
    ticks: list[float] = []
    timer = QtCore.QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    drop(win, photos * 3)  # 18 items x 0.4 s
    assert win.cancel_button.isEnabled()
    assert win.progress.isVisible()
    qtbot.waitUntil(lambda: win.progress.value() >= 1, timeout=10000)
    qtbot.mouseClick(win.cancel_button, QtCore.Qt.MouseButton.LeftButton)
    t0 = time.perf_counter()
    wait_idle(qtbot, win, timeout=5000)
    timer.stop()
    assert time.perf_counter() - t0 < 2.0  # cancellation is prompt
    assert 1 <= len(win.session) < len(photos) * 3
    assert any(t.startswith("Cancelled:") for t in win.messages.texts())
    assert not win.cancel_button.isVisible() and not win.progress.isVisible()
    gaps = np.diff(ticks)
    assert len(gaps) > 20
    assert gaps.max() < 0.5, f"event loop stalled for {gaps.max():.3f} s"


def test_bad_checkpoint_is_reported_and_drops_fail_per_file(qtbot, photos):
    def factory(ckpt):
        raise ValueError("checkpoint bad.safetensors: SHDD degree 10 does not match the embedder")

    win = make_window(qtbot, factory=factory)
    errors = win.messages.texts(errors_only=True)
    assert any("SHDD degree 10 does not match" in e for e in errors)
    assert "SHDD degree 10" in win.settings_panel.model_label.text()
    drop(win, photos[:2])
    wait_idle(qtbot, win)
    errors = win.messages.texts(errors_only=True)
    assert sum("no model loaded" in e for e in errors) == 2
    assert win.session == [] and win.isVisible()


class FlakyService(DemoPredictionService):
    """Raises for a whole batch that contains a 'poison' file (as a buggy model might)."""

    def __init__(self, poison: str):
        super().__init__(LOCATIONS)
        self.poison = poison

    def predict_images(self, paths, settings, progress=None, cancelled=None):
        if any(Path(p).name == self.poison for p in paths):
            raise RuntimeError("CUDA error: device-side assert triggered")
        return super().predict_images(paths, settings, progress, cancelled)


def test_a_crashing_file_does_not_take_the_batch_down(qtbot, photos):
    win = make_window(qtbot, FlakyService(photos[1].name))
    drop(win, photos)
    wait_idle(qtbot, win)
    assert len(win.session) == len(photos) - 1
    errors = win.messages.texts(errors_only=True)
    assert len(errors) == 1 and photos[1].name in errors[0] and "RuntimeError" in errors[0]


def test_unsupported_and_missing_files_are_listed(qtbot, tmp_path, photos):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    win = make_window(qtbot)
    win.open_paths([notes, tmp_path / "gone.jpg", photos[0]])
    wait_idle(qtbot, win)
    errors = "\n".join(win.messages.texts(errors_only=True))
    assert "notes.txt" in errors and "gone.jpg: file not found" in errors
    assert len(win.session) == 1


def test_dropping_a_folder_locates_the_images_in_it(qtbot, photos):
    win = make_window(qtbot)
    drop(win, [photos[0].parent])
    wait_idle(qtbot, win)
    assert len(win.session) == len(photos)


def test_text_query(qtbot):
    service = DemoPredictionService(LOCATIONS)
    win = make_window(qtbot, service)
    qtbot.keyClicks(win.query, "the Eiffel tower in Paris")
    qtbot.keyClick(win.query, QtCore.Qt.Key.Key_Return)
    wait_idle(qtbot, win)
    assert service.calls[-1][0] == "text"
    assert win.current is not None and win.current.kind == "text"
    assert haversine_km(win.flat.heat_peak_latlon(), LOCATIONS["paris"]) < 300
    assert "No GPS" not in win.result_panel.truth.text()


@pytest.fixture
def clipboard():
    clip = QtGui.QGuiApplication.clipboard()
    yield clip
    # the clipboard owns the QMimeData we gave it; free it while Python is alive (else Qt's
    # exit-time destructors delete a Python-wrapped object after interpreter shutdown)
    clip.clear()
    QtCore.QCoreApplication.processEvents()


def test_paste_image_data_and_file_urls(qtbot, photos, clipboard):
    service = DemoPredictionService(LOCATIONS)
    win = make_window(qtbot, service)
    clip = clipboard
    mime = QtCore.QMimeData()
    mime.setImageData(QtGui.QImage(str(photos[0])))
    clip.setMimeData(mime)
    win.paste()
    wait_idle(qtbot, win)
    assert len(win.session) == 1
    pasted = Path(win.session[0].item)
    assert pasted.suffix == ".png" and pasted.name.startswith("pasted-")
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(p)) for p in photos[:2]])
    clip.setMimeData(mime)
    win.paste()
    wait_idle(qtbot, win)
    assert [Path(v.item).name for v in win.session[1:]] == [p.name for p in photos[:2]]


def test_a_loaded_run_sets_the_sampling_it_was_selected_with(qtbot, photos):
    """A run trained for the old snap default keeps DDIM-20 + snap in the app; the user can still change it."""
    service = DemoPredictionService(LOCATIONS)
    win = make_window(qtbot, service)
    sp = win.settings_panel
    assert (sp.sampler.currentText(), sp.steps.value(), sp.projection.currentText()) == ("dpmpp2m", 15, "none")
    sp.set_model_info({"checkpoint": "runs/run-0001", "degree": 15, "sampler": "ddim", "sampler_steps": 20, "projection": "snap"})
    assert "sampler: ddim" in sp.model_label.text()
    drop(win, photos[:1])
    wait_idle(qtbot, win)
    settings = service.calls[-1][1][1]
    assert (settings.sampler, settings.steps, settings.projection) == ("ddim", 20, "snap")
    sp.set_model_info({"checkpoint": "other", "sampler": "bogus", "projection": 3})  # unknown values change nothing
    assert (sp.sampler.currentText(), sp.projection.currentText()) == ("ddim", "snap")


def test_settings_reach_the_service(qtbot, photos):
    service = DemoPredictionService(LOCATIONS)
    win = make_window(qtbot, service)
    sp = win.settings_panel
    sp.samples.setValue(48)
    sp.sampler.setCurrentText("ddpm")
    assert sp.steps.value() == 100  # the paper's DDPM schedule
    sp.resolution.setCurrentIndex(2)
    sp.hybrid.setChecked(True)
    sp.seed.setValue(7)
    sp.projection.setCurrentText("degree")
    drop(win, photos[:1])
    wait_idle(qtbot, win)
    settings = service.calls[-1][1][1]
    assert settings == PredictSettings(samples=48, sampler="ddpm", steps=100, grid_lat=360, grid_lon=720,
                                       hybrid=True, seed=7, projection="degree")
    assert win.flat.heat.image.shape == (360, 720)
    assert len(win.flat.samples.getData()[0]) == 48
    # display scale changes the colouring, not the data
    sp.scale.setCurrentText("log (3 decades)")
    assert win.flat.heat.image.max() == pytest.approx(math.log10(win.current.density.max()), rel=1e-4)


def test_checkpoint_picker_calls_the_factory(qtbot, monkeypatch, tmp_path):
    seen = []

    def factory(ckpt):
        seen.append(ckpt)
        return DemoPredictionService(LOCATIONS, checkpoint=str(ckpt))

    win = make_window(qtbot, factory=factory)
    ckpt = tmp_path / "locdiff-L20.safetensors"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *a, **k: (str(ckpt), ""))
    qtbot.mouseClick(win.settings_panel.open_button, QtCore.Qt.MouseButton.LeftButton)
    wait_idle(qtbot, win)
    assert seen == [None, ckpt]
    assert "locdiff-L20.safetensors" in win.settings_panel.model_label.text()


def test_history_is_saved_and_reopens(qtbot, photos):
    store = MemoryHistory()
    win = make_window(qtbot, store=store)
    drop(win, photos[:3])
    wait_idle(qtbot, win)
    assert len(store.rows) == 3
    assert win.history_panel.list.count() == 3
    row = store.rows[0]
    assert row["item"] == str(photos[0]) and -90 <= row["lat"] <= 90
    grid = row["payload"]["grid"]
    assert (grid["n_lat"], grid["n_lon"]) == (90, 180)
    json.dumps(row["payload"])  # plain JSON

    # a fresh window on the same store lists and redraws it
    win2 = make_window(qtbot, store=store)
    assert win2.history_panel.list.count() == 3
    first = win2.history_panel.rows[-1]  # newest first: the oldest is last
    assert first["item"] == str(photos[0])
    win2.history_panel.list.setCurrentRow(2)
    win2.history_panel.open_button.click()
    vp = win2.current
    assert vp is not None and vp.item == str(photos[0])
    assert vp.point == pytest.approx(win.session[0].point, abs=1e-5)
    assert haversine_km(win2.flat.heat_peak_latlon(), vp.point) < 250  # 2-degree grid
    assert len(win2.result_panel.mode_rows()) == 5
    assert vp.truth == pytest.approx(TRUTH[photos[0].stem])


def test_history_with_the_sql_store(qtbot, tmp_path, photos):
    sql = pytest.importorskip("storage.sql_store")
    store = sql.SqlExperimentStore(f"sqlite:///{tmp_path / 'exp.sqlite'}")
    win = make_window(qtbot, store=store)
    drop(win, photos[:2])
    wait_idle(qtbot, win)
    assert not win.messages.texts(errors_only=True)
    rows = store.predictions(10)
    assert len(rows) == 2 and rows[0]["payload"]["format"] == "locdiff-gui/1"
    win.history_panel.list.setCurrentRow(0)
    win.history_panel.open_button.click()
    assert win.current.item == rows[0]["item"]


def test_exports(qtbot, tmp_path, photos):
    win = make_window(qtbot)
    drop(win, photos[:3])
    wait_idle(qtbot, win)
    png = win.export_heatmap_png(tmp_path / "heat.png")
    view = win.save_view_png(tmp_path / "view.png")
    gj = win.export_geojson(tmp_path / "p.geojson")
    cs = win.export_csv(tmp_path / "p.csv")
    assert all(p is not None and p.stat().st_size > 0 for p in (png, view, gj, cs))
    img = QtGui.QImage(str(png))
    assert (img.width(), img.height()) == (2048, 1024)
    # the heatmap PNG is brightest/most orange near the predicted point
    data = json.loads(gj.read_text())
    pts = [f for f in data["features"] if f["properties"]["role"] == "point"]
    assert len(pts) == 3
    lon, lat = pts[0]["geometry"]["coordinates"]
    assert (lat, lon) == pytest.approx(win.session[0].point)
    assert {f["properties"]["role"] for f in data["features"]} >= {"point", "mode", "samples", "truth"}
    with open(cs, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and rows[0]["item"] == str(photos[0])
    assert float(rows[0]["error_km"]) == pytest.approx(win.session[0].error_km, abs=1e-3)
    x = int((win.session[0].point[1] + 180) / 360 * img.width())
    y = int((90 - win.session[0].point[0]) / 180 * img.height())
    c = img.pixelColor(x, y)
    from gui import assets

    base = assets.blue_marble(2048)[y, x].astype(int)
    assert c.red() > base[0] + 50 and c.red() > c.blue() + 15  # hot (translucent) colour over the point


def test_closing_while_busy_is_clean(qtbot, photos):
    win = make_window(qtbot, DemoPredictionService(LOCATIONS, delay_s=0.5))
    drop(win, photos)
    qtbot.waitUntil(lambda: any(j.started.is_set() for j in win.jobs.values()), timeout=5000)
    t0 = time.perf_counter()
    win.close()
    assert time.perf_counter() - t0 < 3.0
    assert threading.active_count() < 50


def test_service_returning_failures_only(qtbot, photos):
    class AllFail(DemoPredictionService):
        def predict_images(self, paths, settings, progress=None, cancelled=None):
            return [ItemFailure(str(p), "embedder rejected the image") for p in paths]

    win = make_window(qtbot, AllFail(LOCATIONS))
    drop(win, photos[:2])
    wait_idle(qtbot, win)
    assert len(win.messages.texts(errors_only=True)) == 2
    assert win.current is None and win.flat.heat_peak_latlon() is None


def test_a_large_drop_runs_in_chunks_with_one_progress_bar(qtbot, photos, corrupt, monkeypatch):
    import gui.intake

    monkeypatch.setattr(gui.intake, "CHUNK", 4)
    service = DemoPredictionService(LOCATIONS)
    win = make_window(qtbot, service)
    seen: list[tuple[int, int]] = []
    win.progress.valueChanged.connect(lambda v: seen.append((v, win.progress.maximum())))
    items = [*photos, corrupt, *photos]  # 13 files -> 4 jobs
    drop(win, items)
    wait_idle(qtbot, win)
    assert sum(1 for c in service.calls if c[0] == "images") == 4
    assert len(win.session) == 2 * len(photos)
    assert win.current is win.session[0] and win.current.item == str(photos[0])
    assert {m for _, m in seen} == {len(items)}  # one bar over the whole drop
    assert max(v for v, _ in seen) == len(items)
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)
    status = win.status_label.text()
    assert status.startswith(f"Located {2 * len(photos)} of {len(items)} photos in ")
    assert status.endswith("(1 failed)")
    assert sum("truncated_jpeg.jpg" in t for t in win.messages.texts(errors_only=True)) == 1


def test_a_dropped_web_link_is_refused_politely(qtbot):
    service = DemoPredictionService(LOCATIONS)
    win = make_window(qtbot, service)
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl("https://example.org/photo.jpg")])
    mime.setText("https://example.org/photo.jpg")
    assert win.handle_mime(mime)
    wait_idle(qtbot, win)
    assert service.calls == []
    assert any("Only local files" in t for t in win.messages.texts(errors_only=True))
