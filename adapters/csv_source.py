"""A located dataset from a CSV file: ``lat``, ``lon`` and ``image`` or ``text`` (+ ``id``, ``group``).

Example::

    id,lat,lon,image,group
    p1,48.8584,2.2945,photos/eiffel.jpg,FR

Image paths are relative to the CSV's folder (absolute paths are kept). Longitudes in [180, 360)
are wrapped into [-180, 180). Without an ``id`` column a sample's id is its 1-based data row
number. Other columns are ignored. Every problem in the file is collected and reported at once.

Images must be regular files (never a pipe, device or ``/proc``/``/sys``/``/dev`` pseudo-file) inside
the CSV's folder (after resolving symlinks). Images elsewhere need an explicit opt-in: the line
``# locdiff: images-outside-folder`` before the header (``dataset from-photos`` writes it when the
photos are not below the CSV), or ``CsvSource(path, allow_outside=True)``. Lines starting with
``#`` before the header are comments.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import attrs
import torch

from adapters.files import FileInputError, check_regular_file, inside, special_path
from locdiff.ports import GeoSamples

_SHOW = 10  # problems listed in an error message before "... and N more"
#: The comment line (before the header) that allows image paths outside the CSV's folder.
OUTSIDE_DIRECTIVE = "# locdiff: images-outside-folder"


class DatasetError(ValueError):
    """A dataset file is malformed; ``problems`` lists each one as 'file:line: field: ...'."""

    def __init__(self, path: Path, problems: list[str], what: str = "invalid dataset") -> None:
        self.path = path
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:_SHOW])
        more = f"\n  ... and {len(self.problems) - _SHOW} more" if len(self.problems) > _SHOW else ""
        n = len(self.problems)
        super().__init__(f"{what} {path}: {n} problem{'s' * (n != 1)}:\n  {shown}{more}")


def _parse_coord(raw: str, field: str, lo: float, hi: float, hi_open: bool) -> tuple[float | None, str | None]:
    """Parse one coordinate; return (value, None) or (None, what was wrong)."""
    text = raw.strip()
    if not text:
        return None, f"{field}: empty; expected a number in degrees"
    try:
        value = float(text)
    except ValueError:
        return None, f"{field}: {text!r} is not a number; expected decimal degrees"
    if not math.isfinite(value):
        return None, f"{field}: {text!r} is not finite; expected a number in degrees"
    if value < lo or value > hi or (hi_open and value == hi):
        bracket = ")" if hi_open else "]"
        return None, f"{field}: {value:g} is outside [{lo:g}, {hi:g}{bracket}"
    return value, None


def parse_csv_file(path: Path, parse, what: str = "") -> GeoSamples:
    """Open ``path`` as UTF-8 CSV and hand a ``csv.reader`` to ``parse``; I/O and encoding errors become
    ``DatasetError``s naming the file (``what`` says which file it should have been)."""
    if not path.exists():
        raise DatasetError(path, [f"{path}: file not found{f' ({what})' if what else ''}"], "cannot read dataset")
    try:
        check_regular_file(path, what="a CSV file")
        with open(path, encoding="utf-8-sig", newline="") as f:
            return parse(csv.reader(f))
    except FileInputError as e:
        raise DatasetError(path, [str(e)], "cannot read dataset") from None
    except UnicodeDecodeError as e:
        raise DatasetError(path, [f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    except csv.Error as e:
        raise DatasetError(path, [f"{path}: malformed CSV: {e}"]) from None


@attrs.frozen
class CsvSource:
    """Reads and validates a dataset CSV (see module docstring); raises ``DatasetError``."""

    path: Path = attrs.field(converter=Path)
    allow_outside: bool = False  # image paths may leave the CSV's folder (also: OUTSIDE_DIRECTIVE in the file)

    @property
    def name(self) -> str:
        return self.path.stem

    def load(self) -> GeoSamples:
        return parse_csv_file(self.path, self._parse)

    def _parse(self, reader: Any) -> GeoSamples:
        """``reader`` is a ``csv.reader`` (its ``line_num`` locates problems)."""
        path = self.path
        header = next(reader, None)
        allow_outside = self.allow_outside
        while header is not None and header and header[0].lstrip().startswith("#"):
            allow_outside |= ",".join(header).strip() == OUTSIDE_DIRECTIVE
            header = next(reader, None)
        if header is None:
            raise DatasetError(path, [f"{path}:1: empty file; expected a header with lat, lon and image or text"])
        cols = [h.strip().lower() for h in header]
        col = {name: i for i, name in reversed(list(enumerate(cols)))}
        problems = [f"{path}:1: column {name!r} appears more than once" for name in sorted(set(cols)) if name and cols.count(name) > 1]
        missing = [c for c in ("lat", "lon") if c not in col]
        if missing:
            problems.append(f"{path}:1: missing column(s) {missing}; header is {header}")
        kinds = [k for k in ("image", "text") if k in col]
        if len(kinds) != 1:
            problems.append(
                f"{path}:1: need exactly one of the columns 'image' or 'text', found {kinds or 'neither'}"
            )
        if problems:
            raise DatasetError(path, problems, "bad header in")
        kind = kinds[0]
        has_id, has_group = "id" in col, "group" in col

        ids: list[str] = []
        items: list[str] = []
        groups: list[str] = []
        coords: list[tuple[float, float]] = []
        first_line: dict[str, int] = {}
        missing_files: list[str] = []
        row_no = 0
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank line
            row_no += 1
            where = f"{path}:{line}"
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            lat, err_lat = _parse_coord(row[col["lat"]], "lat", -90.0, 90.0, hi_open=False)
            lon, err_lon = _parse_coord(row[col["lon"]], "lon", -180.0, 360.0, hi_open=True)
            row_problems = [f"{where}: {e}" for e in (err_lat, err_lon) if e]
            item = row[col[kind]].strip()
            if not item:
                row_problems.append(f"{where}: {kind}: empty; expected {'a file path' if kind == 'image' else 'some text'}")
            elif kind == "image" and "\x00" in item:
                row_problems.append(f"{where}: image: {item!r} contains a NUL byte; expected a file path")
            elif kind == "image":
                file = (path.parent / item).absolute()  # an absolute item stays as it is
                if special_path(file):
                    row_problems.append(f"{where}: image: {file} is a system pseudo-file (/proc, /sys, /dev), not an image")
                elif not allow_outside and not inside(file, path.parent):
                    row_problems.append(
                        f"{where}: image: {item!r} leaves the dataset folder {path.parent}; "
                        f"put the line '{OUTSIDE_DIRECTIVE}' before the header to allow it"
                    )
                elif not file.exists():
                    missing_files.append(f"{where}: image: file not found: {file}")
                else:
                    try:
                        check_regular_file(file, what="an image file")
                    except FileInputError as e:
                        row_problems.append(f"{where}: image: {e}")
                item = str(file)
            sid = row[col["id"]].strip() if has_id else str(row_no)
            if not sid:
                row_problems.append(f"{where}: id: empty; expected a unique identifier")
            elif sid in first_line:
                row_problems.append(f"{where}: id: {sid!r} duplicates the id on line {first_line[sid]}")
            else:
                first_line[sid] = line
            problems.extend(row_problems)
            if row_problems or lat is None or lon is None:
                continue
            ids.append(sid)
            items.append(item)
            groups.append(row[col["group"]].strip() if has_group else "")
            coords.append((lat, (lon + 180.0) % 360.0 - 180.0))

        if problems:
            raise DatasetError(path, problems + missing_files)
        if missing_files:
            raise DatasetError(path, missing_files, f"{len(missing_files)} missing image file(s) in")
        if row_no == 0:
            raise DatasetError(path, [f"{path}: no data rows after the header"])
        return GeoSamples(
            name=self.name,
            ids=tuple(ids),
            latlon=torch.tensor(coords, dtype=torch.float64).reshape(-1, 2),
            items=tuple(items),
            kind=kind,
            groups=tuple(groups) if has_group else None,
        )
