"""adapters.photos: EXIF GPS parsing and photo folder -> ``image,lat,lon`` CSV."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from adapters.images import ImageError
from adapters.photos import _Malformed, _parse_gps, photos_to_csv, read_exif_gps, read_gps

DATA = Path(__file__).resolve().parents[1] / "data"
PHOTOS = DATA / "photos"
CORRUPT = DATA / "corrupt"

# values from tests/data/SOURCES.md
EXPECTED = {
    "beijing-forbidden-city.jpg": (39.91556, 116.39083),
    "stockholm-panorama.jpg": (59.33255, 18.06494),
    "bay-area-1.jpg": (37.885, -122.6225),
    "bay-area-2.jpg": (37.81467, -122.26417),
    "bay-area-3.jpg": (37.77633, -122.41967),
    "list-sylt-starfish.jpg": (55.03876, 8.45719),
}
CORRUPT_REASONS = {
    "huge_tag_exif.jpg": "unreadable: ",
    "max_uint32_exif.jpg": "unreadable: ",
    "truncated_jpeg.jpg": "unreadable: ",
    "infinite_loop_exif.jpg": "no GPS",
    "hopper_bad_exif.jpg": "no GPS",
    "empty_gps_ifd.jpg": "malformed GPS: GPS IFD is empty",
    "exif_gps_typeerror.jpg": "malformed GPS: GPSInfo tag is a str",
}


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a written CSV; the ``# locdiff: ...`` directive line before the header is skipped."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("# locdiff:")))


def _jpeg_with_gps(path: Path, gps: dict[int, object]) -> Path:
    exif = Image.Exif()
    exif.get_ifd(0x8825).update(gps)
    Image.new("RGB", (8, 8), (90, 120, 150)).save(path, exif=exif)
    return path


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    deg = int(value)
    minutes = int((value - deg) * 60)
    seconds = round(((value - deg) * 60 - minutes) * 60 * 10000)
    return IFDRational(deg, 1), IFDRational(minutes, 1), IFDRational(seconds, 10000)


def test_real_photos_recover_exact_gps(tmp_path: Path) -> None:
    out = tmp_path / "photos.csv"
    scan = photos_to_csv(PHOTOS, out)
    assert scan.rows == 6 and scan.skipped == () and scan.csv_path == out
    # The photos live outside the CSV's folder, so the file says so before its header.
    assert out.read_text().splitlines()[0] == "# locdiff: images-outside-folder"
    rows = _read_csv(out)
    assert list(rows[0]) == ["image", "lat", "lon"]
    got = {}
    for row in rows:
        image = (out.parent / row["image"]).resolve()
        assert image.is_file() and image.parent == PHOTOS.resolve()
        got[image.name] = (float(row["lat"]), float(row["lon"]))
    assert set(got) == set(EXPECTED)
    for name, (lat, lon) in EXPECTED.items():
        assert got[name] == pytest.approx((lat, lon), abs=1e-4), name
        assert read_exif_gps(PHOTOS / name) == pytest.approx((lat, lon), abs=1e-4)


def test_image_paths_are_relative_to_the_csv_folder(tmp_path: Path) -> None:
    shutil.copytree(PHOTOS, tmp_path / "album" / "2019")
    out = tmp_path / "album" / "index.csv"
    photos_to_csv(tmp_path / "album", out)
    images = sorted(r["image"] for r in _read_csv(out))
    assert images == sorted(f"2019/{name}" for name in EXPECTED)


def test_every_corrupt_file_gets_a_specific_reason_and_the_rest_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(PHOTOS, folder)
    shutil.copytree(CORRUPT, folder / "bad")
    out = tmp_path / "mixed.csv"
    scan = photos_to_csv(folder, out)
    assert scan.rows == 6 and len(_read_csv(out)) == 6
    reasons = {Path(f).name: reason for f, reason in scan.skipped}
    assert set(reasons) == set(CORRUPT_REASONS)
    for name, prefix in CORRUPT_REASONS.items():
        assert reasons[name].startswith(prefix), (name, reasons[name])
        if prefix == "unreadable: ":
            assert name in reasons[name]  # the ImageError message names the file
    assert "truncated" in reasons["truncated_jpeg.jpg"]


def test_non_recursive_scan_and_empty_folder(tmp_path: Path) -> None:
    shutil.copytree(PHOTOS, tmp_path / "a" / "sub")
    shutil.copy(PHOTOS / "bay-area-1.jpg", tmp_path / "a" / "top.JPG")
    (tmp_path / "a" / "readme.txt").write_text("ignored")
    assert photos_to_csv(tmp_path / "a", tmp_path / "r.csv", recursive=False).rows == 1
    assert photos_to_csv(tmp_path / "a", tmp_path / "r.csv").rows == 7
    (tmp_path / "empty").mkdir()
    scan = photos_to_csv(tmp_path / "empty", tmp_path / "e.csv")
    assert scan.rows == 0 and _read_csv(tmp_path / "e.csv") == []


def test_bad_arguments_leave_existing_csv_untouched(tmp_path: Path) -> None:
    out = tmp_path / "keep.csv"
    out.write_text("image,lat,lon\nold.jpg,1,2\n")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        photos_to_csv(tmp_path / "missing", out)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        photos_to_csv(PHOTOS, tmp_path / "no" / "such" / "dir.csv")
    assert out.read_text() == "image,lat,lon\nold.jpg,1,2\n"
    photos_to_csv(PHOTOS, out)
    assert len(_read_csv(out)) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]  # no temp files left behind


def test_south_west_refs_and_bytes_refs(tmp_path: Path) -> None:
    gps = {1: "S", 2: _dms(33.8688), 3: b"W\x00", 4: _dms(70.5)}
    f = _jpeg_with_gps(tmp_path / "sw.jpg", gps)
    assert read_exif_gps(f) == pytest.approx((-33.8688, -70.5), abs=1e-6)


def test_missing_ref_reads_as_north_east(tmp_path: Path) -> None:
    f = _jpeg_with_gps(tmp_path / "noref.jpg", {2: _dms(10.5), 4: _dms(20.25)})
    assert read_exif_gps(f) == pytest.approx((10.5, 20.25), abs=1e-6)


@pytest.mark.parametrize(
    ("gps", "reason"),
    [
        ({1: "N", 2: (IFDRational(1, 0), IFDRational(0, 1), IFDRational(0, 1)), 3: "E", 4: _dms(3.0)},
         "zero denominator"),
        ({1: "N", 2: _dms(10.0), 3: "E", 4: (IFDRational(200, 1), IFDRational(0, 1), IFDRational(0, 1))},
         "outside +-180"),
        ({1: "Q", 2: _dms(10.0), 3: "E", 4: _dms(3.0)}, "GPSLatitudeRef is 'Q'"),
        ({1: "N", 2: _dms(10.0), 3: "E"}, "GPSLongitude is missing"),
        ({1: "N", 2: (IFDRational(10, 1), IFDRational(75, 1), IFDRational(0, 1)), 3: "E", 4: _dms(3.0)},
         "minutes/seconds out of range"),
    ],
)
def test_malformed_gps_is_reported_not_raised(tmp_path: Path, gps: dict, reason: str) -> None:
    f = _jpeg_with_gps(tmp_path / "bad.jpg", gps)
    reading = read_gps(f)
    assert reading.latlon is None and reading.problem is not None
    assert reading.problem.startswith("malformed GPS: ") and reason in reading.problem
    assert read_exif_gps(f) is None


def test_void_fix_and_gps_without_coordinates_are_no_gps(tmp_path: Path) -> None:
    void = _jpeg_with_gps(tmp_path / "void.jpg", {1: "N", 2: _dms(1.0), 3: "E", 4: _dms(2.0), 9: "V"})
    assert read_gps(void).problem.startswith("no GPS")
    alt_only = _jpeg_with_gps(tmp_path / "alt.jpg", {6: IFDRational(120, 1)})
    assert read_gps(alt_only).problem == "no GPS"
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert read_gps(plain).problem == "no GPS"


def test_unreadable_files_raise_image_error_naming_the_file(tmp_path: Path) -> None:
    for name in ("huge_tag_exif.jpg", "max_uint32_exif.jpg"):
        with pytest.raises(ImageError) as err:
            read_exif_gps(CORRUPT / name)
        assert name in str(err.value)
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    with pytest.raises(ImageError, match=r"junk\.jpg"):
        read_exif_gps(tmp_path / "junk.jpg")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lat=st.floats(-89.999, 89.999, allow_nan=False),
    lon=st.floats(-179.999, 179.999, allow_nan=False),
)
def test_gps_round_trips_through_exif(lat: float, lon: float) -> None:
    gps = {1: "N" if lat >= 0 else "S", 2: _dms(abs(lat)), 3: "E" if lon >= 0 else "W", 4: _dms(abs(lon))}
    with tempfile.TemporaryDirectory() as tmp:
        f = _jpeg_with_gps(Path(tmp) / "p.jpg", gps)
        got = read_exif_gps(f)
    assert got is not None
    assert got == pytest.approx((lat, lon), abs=1e-6)


@pytest.mark.parametrize(
    ("lat_value", "reason"),
    [
        ("ten degrees", "GPSLatitude has type str"),
        (b"\x01\x02", "GPSLatitude has type bytes"),
        (None, "GPSLatitude has type NoneType"),
        ((float("nan"), 0.0, 0.0), "not finite"),
        (((1, 0), (0, 1), (0, 1)), "zero denominator"),
        ((1.0, 2.0, 3.0, 4.0), "4 components"),
        ((), "0 components"),
        (((10, 1), (-5, 1), (0, 1)), "negative component"),
        ((10**400, 0, 0), "not a number"),
    ],
)
def test_hostile_tag_values_are_malformed_not_crashes(lat_value: object, reason: str) -> None:
    with pytest.raises(_Malformed, match=reason):
        _parse_gps({1: "N", 2: lat_value, 3: "E", 4: (3.0, 0.0, 0.0)})


def test_plain_number_and_rational_pair_forms() -> None:
    assert _parse_gps({1: "S", 2: 12.5, 3: "E", 4: ((45, 2), (30, 1), (0, 1))}) == pytest.approx((-12.5, 23.0))
    assert _parse_gps({1: "N", 2: (12, 30), 3: "W", 4: (100, 15, 36)}) == pytest.approx((12.5, -100.26))


def test_gps_of_a_huge_photo_is_read_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _jpeg_with_gps(tmp_path / "pano.jpg", {1: "N", 2: _dms(1.5), 3: "E", 4: _dms(2.5)})  # 8x8 px
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 64 px is a "bomb" for decoding, not for EXIF
    assert read_exif_gps(f) == pytest.approx((1.5, 2.5), abs=1e-6)
    scan = photos_to_csv(tmp_path, tmp_path / "out.csv")
    assert scan.rows == 0 and "decompression bomb" in scan.skipped[0][1]
    assert photos_to_csv(tmp_path, tmp_path / "out.csv", verify=False).rows == 1
