"""The inputs of a batch prediction (``BatchInputs`` port): a photo folder, a CSV or JSONL file, or lines on stdin.

* a folder: every photo below it (recursive, :data:`PHOTO_SUFFIXES`, HEIC included), sorted by path; ground truth
  from each photo's EXIF GPS;
* a CSV with an ``image`` or ``text`` column (``image`` wins where both are filled), optional ``lat``,``lon`` (ground
  truth; else an image's EXIF GPS). Image paths are relative to the CSV's folder and must lie inside it unless the
  line ``# locdiff: images-outside-folder`` comes before the header (as for ``train --data``);
* a JSONL file: one object per line with ``image`` or ``text`` and optional ``lat``, ``lon`` (same rules);
* ``-``: one input per line of stdin: a path to an existing photo file is an image, anything else a text.

Inputs are read lazily in order (memory does not grow with the input count); a bad row (no value, a bad ``lat``,
a missing image, bad JSON) becomes an input with a ``problem``, reported in its output row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from adapters.csv_source import OUTSIDE_DIRECTIVE
from adapters.files import FileInputError, check_regular_file, inside, open_regular
from adapters.images import ImageError
from adapters.photos import PHOTO_SUFFIXES, read_gps
from locdiff.ports import BatchInput

__all__ = ["open_inputs", "inputs_from_values", "FolderInputs", "TableInputs", "LineInputs"]

MAX_TABLE_BYTES = 4 << 30  # a CSV/JSONL of inputs larger than this is refused (far above 10 M rows of paths)


def open_inputs(source: str, stdin: TextIO | None = None):
    """The ``BatchInputs`` for ``source``: ``-`` (stdin), a folder, a ``.csv`` or a ``.jsonl`` file."""
    if source == "-":
        return LineInputs(stdin if stdin is not None else sys.stdin)
    path = Path(source)
    if path.is_dir():
        return FolderInputs(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ValueError(f"{path}: expected a folder of photos, a .csv or .jsonl file of inputs, or '-' for stdin")
    check_regular_file(path, max_bytes=MAX_TABLE_BYTES, what="a CSV or JSONL file of inputs")
    return TableInputs(path, "csv" if suffix == ".csv" else "jsonl")


def inputs_from_values(values) -> list[BatchInput]:
    """Inputs from Python values (the API): a ``PathLike`` or a string naming an existing photo file is an image,
    any other string a text."""
    out = []
    for i, value in enumerate(values):
        if isinstance(value, os.PathLike) or (isinstance(value, str) and _photo_file(Path(value)) and Path(value).is_file()):
            out.append(BatchInput(i, "image", os.fspath(value)))
        elif isinstance(value, str):
            out.append(BatchInput(i, "text", value))
        else:
            raise TypeError(f"input {i}: expected a text or an image path, got {type(value).__name__}")
    return out


def _gps(path: Path) -> tuple[float, float] | None:
    try:
        return read_gps(path).latlon
    except (ImageError, OSError, ValueError):
        return None  # the embedder reports an unreadable photo in its row


def _photo_file(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_SUFFIXES


class FolderInputs:
    """Every photo below ``folder`` (recursive), sorted by path, with its EXIF GPS as ground truth."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.name = str(self.folder)

    def _files(self) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(self.folder):
            dirs.sort()
            found.extend(Path(root) / f for f in files if _photo_file(Path(f)))
        return sorted(found, key=lambda p: p.as_posix())

    def count(self) -> int:
        return len(self._files())

    def __iter__(self) -> Iterator[BatchInput]:
        for i, path in enumerate(self._files()):
            yield BatchInput(i, "image", str(path), truth=_gps(path))


class LineInputs:
    """One input per non-empty line of a text stream: an existing photo file's path is an image, else a text."""

    name = "stdin"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def count(self) -> None:
        return None

    def __iter__(self) -> Iterator[BatchInput]:
        index = 0
        for line in self.stream:
            value = line.rstrip("\r\n")
            if not value.strip():
                continue
            path = Path(value)
            if _photo_file(path) and path.is_file():
                yield BatchInput(index, "image", value, truth=_gps(path))
            else:
                yield BatchInput(index, "text", value)
            index += 1


def _coordinate(raw: Any, field: str, limit: float) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: expected a number, got {str(raw)[:40]!r}") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise ValueError(f"{field}: expected a number in [-{limit:g}, {limit:g}], got {str(raw)[:40]!r}")
    return value


class TableInputs:
    """Rows of a CSV (header with ``image`` or ``text``) or JSONL file (objects with ``image`` or ``text``)."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind, self.name = Path(path), kind, str(path)
        self._outside_ok = False
        if kind == "csv":
            header = self._csv_header()
            if "image" not in header and "text" not in header:
                raise ValueError(f"{self.path}: the header {','.join(header)[:200]!r} has no 'image' or 'text' column")

    def _open(self) -> TextIO:
        return io.TextIOWrapper(open_regular(self.path, max_bytes=MAX_TABLE_BYTES, what="a CSV or JSONL file of inputs"),
                                encoding="utf-8-sig", errors="replace", newline="")

    def _csv_rows(self) -> Iterator[dict[str, Any]]:
        with self._open() as f:
            lines = iter(f)
            for line in lines:  # comment lines before the header (the outside-folder directive among them)
                if not line.startswith("#"):
                    break
                self._outside_ok = self._outside_ok or line.strip() == OUTSIDE_DIRECTIVE
            else:
                return
            reader = csv.DictReader(_prepend(line, lines))
            reader.fieldnames = [(h or "").strip().lower() for h in reader.fieldnames or []]
            yield from reader

    def _csv_header(self) -> list[str]:
        with self._open() as f:
            for line in f:
                if not line.startswith("#"):
                    return [h.strip().lower() for h in next(csv.reader([line]), [])]
        return []

    def _jsonl_rows(self) -> Iterator[dict[str, Any] | str]:
        with self._open() as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{self.path}:{n}: not JSON ({exc.msg})"
                    continue
                yield row if isinstance(row, dict) else f"{self.path}:{n}: expected a JSON object, got {type(row).__name__}"

    def _rows(self) -> Iterator[dict[str, Any] | str]:
        return self._csv_rows() if self.kind == "csv" else self._jsonl_rows()

    def count(self) -> int:
        return sum(1 for _ in self._rows())

    def __iter__(self) -> Iterator[BatchInput]:
        for i, row in enumerate(self._rows()):
            yield self._input(i, row)

    def _input(self, index: int, row: dict[str, Any] | str) -> BatchInput:
        if isinstance(row, str):
            return BatchInput(index, "text", "", problem=row)
        image, text = row.get("image"), row.get("text")
        kind, value = ("image", image) if isinstance(image, str) and image.strip() else ("text", text)
        if not isinstance(value, str) or not value.strip():
            return BatchInput(index, kind, "" if value is None else str(value), problem="no 'image' or 'text' value in this row")
        truth, problem = None, None
        has_lat, has_lon = row.get("lat") not in (None, ""), row.get("lon") not in (None, "")
        try:
            if has_lat or has_lon:
                truth = (_coordinate(row.get("lat"), "lat", 90), _coordinate(row.get("lon"), "lon", 180))
        except ValueError as exc:
            problem = str(exc)
        if kind == "text":
            return BatchInput(index, kind, value, truth=truth, problem=problem)
        path = Path(value) if Path(value).is_absolute() else self.path.parent / value
        if problem is None and not self._outside_ok and not inside(path, self.path.parent):
            problem = f"image {value!r} is outside the folder of {self.path.name} (add the line {OUTSIDE_DIRECTIVE!r} before the header)"
        if problem is None:
            try:
                check_regular_file(path, what="an image file")
            except FileInputError as exc:
                problem = str(exc)
        if truth is None and problem is None:
            truth = _gps(path)
        return BatchInput(index, kind, str(path), truth=truth, problem=problem)


def _prepend(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
