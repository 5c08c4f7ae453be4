"""iPhone photos (HEIC / HEIF): read with their EXIF GPS, listed by ``dataset from-photos``, located in the app.

The HEIC file is written by the test itself (pillow-heif's encoder) with a GPS block for Stockholm.
"""

from __future__ import annotations

import os

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from functools import partial
from pathlib import Path

import pytest

pytest.importorskip("pillow_heif")

STOCKHOLM = (59.33283, 18.06494)


def write_heic(path: Path, size=(96, 64)) -> Path:
    import adapters.images  # noqa: F401  (registers the HEIF plugin)
    from PIL import Image

    im = Image.new("RGB", size, (30, 90, 200))
    for x in range(size[0]):
        im.putpixel((x, size[1] // 2), (250, 250, 250))
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (59.0, 19.0, 58.2), 3: "E", 4: (18.0, 3.0, 53.8)}  # GPS IFD
    im.save(path, format="HEIF", exif=exif.tobytes())
    assert path.read_bytes()[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix", b"ftypmsf1")
    return path


def test_a_heic_photo_opens_with_its_gps(tmp_path):
    from adapters.images import load_rgb
    from adapters.photos import read_exif_gps

    p = write_heic(tmp_path / "IMG_0001.HEIC")
    lat, lon = read_exif_gps(p)
    assert (lat, lon) == pytest.approx(STOCKHOLM, abs=1e-4)
    im = load_rgb(p)
    assert im.size == (96, 64) and im.mode == "RGB"
    r, g, b = im.getpixel((5, 5))
    assert b > r + 80  # the pixels, not just the header


def test_dataset_from_photos_lists_heic_files(tmp_path):
    from adapters.photos import photos_to_csv

    folder = tmp_path / "trip"
    folder.mkdir()
    write_heic(folder / "IMG_0001.heic")
    write_heic(folder / "IMG_0002.HEIF")
    scan = photos_to_csv(folder, folder / "locations.csv")
    rows = (folder / "locations.csv").read_text().splitlines()
    assert scan.rows == 2 and len([r for r in rows if "IMG_000" in r]) == 2
    assert "59.3328" in "".join(rows)


def test_the_app_locates_a_heic_photo_with_the_real_model(qtbot, trained_run, tmp_path):
    pytest.importorskip("pytestqt")
    from gui.app import MainWindow
    from gui.demo import MemoryHistory
    from locdiff.container import build_prediction_service, gps_reader

    root, run_dir = trained_run
    photo = write_heic(tmp_path / "IMG_0003.heic")
    factory = partial(build_prediction_service, workdir=str(root / "runs"))
    win = MainWindow(factory, MemoryHistory(), gps_reader(), run_dir, geocoder=None, use_gl=False, flat_texture_width=720)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: not win.busy(), timeout=60000)
    win.open_paths([photo])
    qtbot.waitUntil(lambda: not win.busy(), timeout=120000)
    assert win.messages.texts(errors_only=True) == []
    assert len(win.session) == 1 and win.current.truth == pytest.approx(STOCKHOLM, abs=1e-4)
    assert win.current.has_grid and win.result_panel.thumb.pixmap() is not None
