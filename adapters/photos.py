"""Photo folders to located datasets: read the EXIF GPS position and write ``image,lat,lon``.

Only the file header and EXIF block are parsed (no pixel decoding unless ``verify=True`` in
:func:`photos_to_csv`), so scanning is fast and a hostile EXIF block can never hang the scan:
Pillow reads IFDs by offset without following chains, and every value is range-checked here.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path

import attrs

from adapters.images import DEFAULT_MAX_PIXELS, ImageError, load_rgb, open_image
from adapters.atomic import atomic_open

__all__ = [
    "GpsReading",
    "PhotoScan",
    "PHOTO_SUFFIXES",
    "read_gps",
    "read_exif_gps",
    "photos_to_csv",
]

GPS_IFD = 0x8825
_LAT_REF, _LAT, _LON_REF, _LON = 1, 2, 3, 4
_GPS_STATUS = 9

#: File suffixes scanned by :func:`photos_to_csv` (compared case-insensitively).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".png", ".webp", ".avif", ".heic", ".heif")


@attrs.frozen
class GpsReading:
    """What a file's EXIF says about its position: ``latlon`` or, if absent/unusable, ``problem``."""

    latlon: tuple[float, float] | None
    problem: str | None = None  # "no GPS" or "malformed GPS: ..."


@attrs.frozen
class PhotoScan:
    """Result of :func:`photos_to_csv`: rows written and ``(file, reason)`` for each skipped file."""

    csv_path: Path
    rows: int
    skipped: tuple[tuple[str, str], ...] = ()


class _Malformed(ValueError):
    pass


def _number(value: object, what: str) -> float:
    """One EXIF number: an IFDRational, a ``(num, den)`` pair or a plain int/float."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        num, den = value
        if den == 0:
            raise _Malformed(f"{what} has a zero denominator")
        return num / den
    if isinstance(value, Real) and not isinstance(value, bool):
        denominator = getattr(value, "denominator", 1)
        if denominator == 0:
            raise _Malformed(f"{what} has a zero denominator")
        try:
            out = float(value)
        except (ValueError, ZeroDivisionError, OverflowError) as exc:
            raise _Malformed(f"{what} is not a number ({exc})") from None
        if not math.isfinite(out):
            raise _Malformed(f"{what} is not finite")
        return out
    raise _Malformed(f"{what} has type {type(value).__name__}, expected a rational")


def _degrees(value: object, what: str, limit: float) -> float:
    """Degrees from the EXIF (deg, min, sec) triple (or a shorter/plain form)."""
    if isinstance(value, (bytes, str)):
        raise _Malformed(f"{what} has type {type(value).__name__}, expected rationals")
    parts = list(value) if isinstance(value, Iterable) else [value]
    if not 1 <= len(parts) <= 3:
        raise _Malformed(f"{what} has {len(parts)} components, expected 3 (deg, min, sec)")
    numbers = [_number(v, what) for v in parts]
    if any(n < 0 for n in numbers[1:]) or (len(numbers) > 1 and numbers[0] < 0):
        raise _Malformed(f"{what} has a negative component {numbers}")
    if (len(numbers) > 1 and numbers[1] > 60 + 1e-9) or (len(numbers) > 2 and numbers[2] > 60 + 1e-9):
        raise _Malformed(f"{what} minutes/seconds out of range {numbers}")
    deg = sum(n / 60.0**i for i, n in enumerate(numbers))
    if abs(deg) > limit + 1e-9:
        raise _Malformed(f"{what} {deg:.6f} is outside +-{limit:g} degrees")
    return deg


def _ref(value: object, what: str, positive: str, negative: str) -> int:
    if value is None:
        return 1  # no ref: read as N/E (what most readers do)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise _Malformed(f"{what} has type {type(value).__name__}, expected '{positive}' or '{negative}'")
    text = value.strip("\x00 \t").upper()
    if text == positive:
        return 1
    if text == negative:
        return -1
    raise _Malformed(f"{what} is {text!r}, expected '{positive}' or '{negative}'")


def _parse_gps(gps: dict[int, object]) -> tuple[float, float]:
    lat = _degrees(gps[_LAT], "GPSLatitude", 90.0) * _ref(gps.get(_LAT_REF), "GPSLatitudeRef", "N", "S")
    lon = _degrees(gps[_LON], "GPSLongitude", 180.0) * _ref(gps.get(_LON_REF), "GPSLongitudeRef", "E", "W")
    return lat, lon


def read_gps(path: str | os.PathLike[str]) -> GpsReading:
    """Read the EXIF GPS position of ``path``; raises :class:`ImageError` if it is unreadable."""
    p = Path(path)
    with open_image(p, max_pixels=None) as im:  # header only: no pixels decoded here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on corrupt EXIF; we judge it ourselves
            try:
                exif = im.getexif()
                pointer = exif.get(GPS_IFD)
                gps = dict(exif.get_ifd(GPS_IFD)) if pointer is not None else {}
            except Exception as exc:  # noqa: BLE001 - a broken EXIF block is "no usable GPS"
                return GpsReading(None, f"malformed GPS: unreadable EXIF block ({exc})"[:300])
    if pointer is None:
        return GpsReading(None, "no GPS")
    if not isinstance(pointer, int) and not gps:
        return GpsReading(None, f"malformed GPS: GPSInfo tag is a {type(pointer).__name__}, not an IFD offset")
    if not gps:
        return GpsReading(None, "malformed GPS: GPS IFD is empty")
    if _LAT not in gps and _LON not in gps:
        return GpsReading(None, "no GPS")
    if _LAT not in gps or _LON not in gps:
        missing = "GPSLatitude" if _LAT not in gps else "GPSLongitude"
        return GpsReading(None, f"malformed GPS: {missing} is missing")
    status = gps.get(_GPS_STATUS)
    if isinstance(status, bytes):
        status = status.decode("ascii", "replace")
    if isinstance(status, str) and status.strip("\x00 ").upper() == "V":
        return GpsReading(None, "no GPS (GPSStatus says the fix is void)")
    try:
        return GpsReading(_parse_gps(gps))
    except _Malformed as exc:
        return GpsReading(None, f"malformed GPS: {exc}")
    except Exception as exc:  # noqa: BLE001 - anything unexpected inside hostile tags
        return GpsReading(None, f"malformed GPS: {type(exc).__name__}: {exc}"[:300])


def read_exif_gps(path: str | os.PathLike[str]) -> tuple[float, float] | None:
    """``(lat, lon)`` in degrees from the EXIF of ``path``, or ``None`` if missing or malformed.

    Raises :class:`ImageError` (naming the file) when the file is not a readable image.
    """
    return read_gps(path).latlon


def _photo_files(directory: Path, recursive: bool) -> list[Path]:
    pattern = directory.rglob("*") if recursive else directory.glob("*")
    files = [p for p in pattern if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.as_posix())


def _write_csv_atomic(out_csv: Path, rows: Sequence[tuple[str, float, float]]) -> None:
    from adapters.csv_source import OUTSIDE_DIRECTIVE

    buffer = io.StringIO()
    if any(image.startswith("../") or os.path.isabs(image) for image, _, _ in rows):
        buffer.write(OUTSIDE_DIRECTIVE + "\n")  # the photos are not below the CSV: say so explicitly
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "lat", "lon"])
    for image, lat, lon in rows:
        writer.writerow([image, f"{lat:.7f}", f"{lon:.7f}"])
    with atomic_open(out_csv, "w", encoding="utf-8", newline="") as f:
        f.write(buffer.getvalue())


def photos_to_csv(
    directory: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    recursive: bool = True,
    *,
    verify: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> PhotoScan:
    """Scan ``directory`` for photos with EXIF GPS and write ``image,lat,lon`` to ``out_csv``.

    ``image`` is the photo's path relative to the CSV's folder (POSIX separators). Files without
    usable GPS or that cannot be read are skipped with a reason ("no GPS", "malformed GPS: ...",
    "unreadable: ..."); with ``verify`` the pixels are decoded too so that truncated files are
    caught here rather than at embedding time. The CSV is written atomically.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory (expected a folder of photos)")
    out = Path(out_csv)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: folder for the CSV does not exist")
    base = out.parent.resolve()
    rows: list[tuple[str, float, float]] = []
    skipped: list[tuple[str, str]] = []
    files = _photo_files(root, recursive)
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc="photos", unit="file")
    for f in files:
        try:
            if verify:
                load_rgb(f, max_pixels=max_pixels)
            reading = read_gps(f)
        except ImageError as exc:
            skipped.append((str(f), f"unreadable: {exc}"))
            continue
        if reading.latlon is None:
            skipped.append((str(f), reading.problem or "no GPS"))
            continue
        try:
            image = Path(os.path.relpath(f.resolve(), base)).as_posix()
        except ValueError:  # another drive (Windows): keep the absolute path
            image = f.resolve().as_posix()
        rows.append((image, *reading.latlon))
    _write_csv_atomic(out, rows)
    return PhotoScan(csv_path=out, rows=len(rows), skipped=tuple(skipped))
