"""Readers for the standard image-geolocation benchmarks, in the layouts their authors publish.

``BenchmarkSource(kind, csv, image_root)`` implements the :class:`locdiff.ports.DatasetSource`
port and returns :class:`~locdiff.ports.GeoSamples` of kind ``"image"`` (items are image paths).

============  ==========================================================  ===========================================
kind          metadata file (columns read; others are ignored)            images (default ``image_root``)
============  ==========================================================  ===========================================
``mp16``      ``mp16_places365.csv``: ``IMG_ID,AUTHOR,LAT,LON,...``;      ``<root>/<IMG_ID>`` (IMG_ID is a relative
              GeoCLIP's ``IMG_FILE,LAT,LON`` also works                   path such as ``e2/3a/123.jpg``); root: the
                                                                          CSV's folder
``im2gps3k``  ``im2gps3k_places365.csv``: ``IMG_ID,AUTHOR,LAT,LON,...``   ``<root>/<IMG_ID>``; root: ``im2gps3ktest/``
                                                                          next to the CSV if present, else its folder
``yfcc4k``    ``IMG_ID,LAT,LON,...`` or ``photo_id,latitude,longitude``    ``<root>/<IMG_ID>`` (``<photo_id>.jpg``);
              (``lat``/``lon`` also accepted)                             root: ``yfcc4k/`` next to the CSV if present
``yfcc26k``   ``yfcc25600_places365.csv``: ``IMG_ID,LAT,LON,...`` (or     root: ``yfcc25600/`` or ``yfcc26k/`` next
              the ``photo_id,latitude,longitude`` variant)                to the CSV if present
``osv5m``     ``train.csv`` / ``test.csv``: ``id,latitude,longitude,       ``<root>/images/<split>/<id>.jpg`` with split
              ...,country,...`` (group = ``country``)                     = the CSV's stem; root: the CSV's folder
============  ==========================================================  ===========================================

An image not at its expected path is looked up by file name anywhere under the image folder
(published archives unpack into shard folders such as ``images/test/00/``). Coordinates are
validated (latitude in [-90, 90], longitude in [-180, 360), wrapped to [-180, 180)); ids must be
unique. Every problem is collected and raised at once as a :class:`DatasetError` naming the file,
line and field. Missing images are errors unless ``missing="skip"`` (then ``skipped`` lists them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch

from adapters.csv_source import DatasetError, _parse_coord, parse_csv_file
from locdiff.ports import GeoSamples

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")


@attrs.frozen
class Layout:
    """Where a format keeps ids, coordinates and images."""

    id_columns: tuple[str, ...]
    lat_columns: tuple[str, ...]
    lon_columns: tuple[str, ...]
    group_columns: tuple[str, ...] = ()
    default_dirs: tuple[str, ...] = ()  # image folders tried next to the CSV, in order
    osv: bool = False  # images under images/<split>/


LAYOUTS: dict[str, Layout] = {
    "mp16": Layout(("IMG_ID", "IMG_FILE"), ("LAT",), ("LON",)),
    "im2gps3k": Layout(("IMG_ID", "IMG_FILE"), ("LAT",), ("LON",), default_dirs=("im2gps3ktest", "im2gps3k")),
    "yfcc4k": Layout(("IMG_ID", "photo_id", "IMG_FILE"), ("LAT", "latitude", "lat"), ("LON", "longitude", "lon"), default_dirs=("yfcc4k",)),
    "yfcc26k": Layout(("IMG_ID", "photo_id", "IMG_FILE"), ("LAT", "latitude", "lat"), ("LON", "longitude", "lon"),
                      default_dirs=("yfcc25600", "yfcc26k")),
    "osv5m": Layout(("id",), ("latitude",), ("longitude",), group_columns=("country",), osv=True),
}
FORMATS = tuple(LAYOUTS)

_SHOW = 10


def _find(header: list[str], names: Sequence[str]) -> int | None:
    low = [h.strip().lower() for h in header]
    for name in names:
        if name.lower() in low:
            return low.index(name.lower())
    return None


@attrs.define
class BenchmarkSource:
    """A benchmark's metadata CSV (``kind`` in :data:`FORMATS`) and its image folder."""

    kind: str = attrs.field(validator=attrs.validators.in_(FORMATS))
    csv: Path = attrs.field(converter=Path)
    image_root: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    missing: str = attrs.field(default="error", validator=attrs.validators.in_(("error", "skip")))
    limit: int | None = None
    skipped: list[str] = attrs.field(factory=list, init=False)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.csv.stem}"

    # ..................................................................... images
    def images_dir(self) -> Path:
        layout = LAYOUTS[self.kind]
        root = self.image_root if self.image_root is not None else self.csv.parent
        if layout.osv:
            return root / "images" / self.csv.stem
        if self.image_root is None:
            for d in layout.default_dirs:
                if (self.csv.parent / d).is_dir():
                    return self.csv.parent / d
        return root

    def _expected(self, folder: Path, sid: str) -> Path:
        name = sid if sid.lower().endswith(_IMAGE_EXT) else f"{sid}.jpg"
        return folder / name

    # ..................................................................... parsing
    def load(self) -> GeoSamples:
        return parse_csv_file(self.csv, self._parse, f"the {self.kind} metadata CSV")

    def _parse(self, reader) -> GeoSamples:
        path, layout = self.csv, LAYOUTS[self.kind]
        header = next(reader, None)
        if header is None:
            raise DatasetError(path, [f"{path}:1: empty file; expected a {self.kind} header with {layout.id_columns[0]}, "
                                      f"{layout.lat_columns[0]}, {layout.lon_columns[0]}"])
        cols = {"id": _find(header, layout.id_columns), "lat": _find(header, layout.lat_columns), "lon": _find(header, layout.lon_columns)}
        wanted = {"id": layout.id_columns, "lat": layout.lat_columns, "lon": layout.lon_columns}
        problems = [
            f"{path}:1: no {role} column; a {self.kind} file has one of {list(wanted[role])}; header is {header}"
            for role, i in cols.items() if i is None
        ]
        if problems:
            raise DatasetError(path, problems, f"bad {self.kind} header in")
        group_col = _find(header, layout.group_columns) if layout.group_columns else None
        folder = self.images_dir()
        index: dict[str, Path] | None = None

        ids: list[str] = []
        items: list[str] = []
        groups: list[str] = []
        coords: list[tuple[float, float]] = []
        first_line: dict[str, int] = {}
        missing: list[str] = []
        rows = 0
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            rows += 1
            if self.limit is not None and rows > self.limit:
                break
            where = f"{path}:{line}"
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            lat_name, lon_name, id_name = header[cols["lat"]].strip(), header[cols["lon"]].strip(), header[cols["id"]].strip()
            lat, err_lat = _parse_coord(row[cols["lat"]], lat_name, -90.0, 90.0, hi_open=False)
            lon, err_lon = _parse_coord(row[cols["lon"]], lon_name, -180.0, 360.0, hi_open=True)
            row_problems = [f"{where}: {e}" for e in (err_lat, err_lon) if e]
            sid = row[cols["id"]].strip()
            if not sid:
                row_problems.append(f"{where}: {id_name}: empty; expected an image id")
            elif sid in first_line:
                row_problems.append(f"{where}: {id_name}: {sid!r} duplicates the id on line {first_line[sid]}")
            else:
                first_line[sid] = line
            if row_problems:
                problems.extend(row_problems)
                continue
            file = self._expected(folder, sid)
            if not file.is_file():
                if index is None:
                    index = _index(folder)
                found = index.get(file.name)
                if found is None:
                    missing.append(f"{where}: {id_name}: image {sid!r} not found (expected {file})")
                    continue
                file = found
            ids.append(sid)
            items.append(str(file.absolute()))
            groups.append(row[group_col].strip() if group_col is not None and group_col < len(row) else "")
            coords.append((lat, (lon + 180.0) % 360.0 - 180.0))
        if problems:
            raise DatasetError(path, problems + missing)
        if missing and self.missing == "error":
            raise DatasetError(path, missing, f"{len(missing)} missing image file(s) (under {folder}) in")
        self.skipped = missing
        if not ids:
            raise DatasetError(path, [f"{path}: no usable rows" + (f" ({len(missing)} images missing under {folder})" if missing else " after the header")])
        return GeoSamples(
            name=self.name,
            ids=tuple(ids),
            latlon=torch.tensor(coords, dtype=torch.float64).reshape(-1, 2),
            items=tuple(items),
            kind="image",
            groups=tuple(groups) if group_col is not None else None,
        )


def _index(folder: Path) -> dict[str, Path]:
    """File name → path for every image under ``folder`` (archives unpack into shard sub-folders)."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for root, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(_IMAGE_EXT):
                out.setdefault(name, Path(root) / name)
    return out
