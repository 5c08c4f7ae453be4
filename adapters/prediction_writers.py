"""Batch prediction rows to a file (``PredictionSink`` port): CSV, JSONL or GeoJSON, appended chunk by chunk.

Each chunk is appended, flushed and fsynced before the next is predicted, every row on one physical line. Opening an
existing file resumes it: a torn last line (a run killed mid-write) is cut off, GeoJSON's closing line is removed (and
written again by :meth:`close`), and :meth:`done` lists the rows already there, so a rerun appends only the missing
ones: the file ends with every input once. A file whose header is not this writer's is refused, never overwritten.

GeoJSON is one ``FeatureCollection``: a point feature per input (its point estimate; ``null`` geometry for a row with
an error), the row's fields as properties. The file is valid JSON once :meth:`close` has run.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "format_for", "open_sink"]

FORMATS = ("csv", "jsonl", "geojson")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".geojson": "geojson", ".json": "geojson"}
_GEO_HEAD = '{"type": "FeatureCollection", "features": ['
_GEO_TAIL = "]}"


def format_for(path: Path, fmt: str | None = None) -> str:
    """The output format: ``fmt`` if given, else from the suffix (.csv, .jsonl, .geojson)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
        return fmt
    found = _SUFFIXES.get(Path(path).suffix.lower())
    if found is None:
        raise ValueError(f"{path}: cannot tell the output format from the suffix; use .csv, .jsonl or .geojson, or give --format")
    return found


def open_sink(path: Path, fmt: str | None = None, *, top: int = 5, samples: bool = False):
    """A resumable writer for ``path`` (format from ``fmt`` or the suffix)."""
    kind = format_for(path, fmt)
    cls = {"csv": CsvSink, "jsonl": JsonlSink, "geojson": GeoJsonSink}[kind]
    return cls(Path(path), top=top, samples=samples)


class _LineSink:
    """Shared machinery: one row per line, appended with flush + fsync; resume by reading the lines already there."""

    head: str | None = None  # first line of the file (CSV header, GeoJSON opening)
    tail: str | None = None  # last line of a finished file (GeoJSON closing)

    def __init__(self, path: Path, *, top: int = 5, samples: bool = False) -> None:
        self.path, self.top, self.samples = path, top, samples
        self._setup()
        self._done: dict[int, str] = {}
        self._count = 0
        lines = self._recover()
        for n, line in enumerate(lines):
            index, value = self._parse(line, n)
            self._done[index] = value
        self._count = len(lines)
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        if self.head is not None and not lines and self._fresh:
            self._append([self.head])

    def _setup(self) -> None:
        pass

    def _recover(self) -> list[str]:
        """The complete row lines already in the file, after cutting a torn last line and a closing line."""
        self._fresh = True
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise ValueError(f"{self.path}: not a regular file; --out must name a file")
        data = self.path.read_bytes()
        if not data:
            return []
        keep = data[: data.rfind(b"\n") + 1]  # a last line without its newline was torn by a kill
        text = keep.decode("utf-8", errors="strict")
        lines = text.splitlines()
        if self.tail is not None and lines and lines[-1] == self.tail:
            lines.pop()
            keep = keep[: len(keep) - len(self.tail) - 1]
        if len(keep) != len(data):
            os.truncate(self.path, len(keep))
        if self.head is not None:
            if not lines:
                os.truncate(self.path, 0)
                return []
            if lines[0] != self.head:
                raise ValueError(f"{self.path}: exists and was not written by this batch (first line {lines[0][:80]!r}, "
                                 f"expected {self.head[:80]!r}); choose another --out")
            lines = lines[1:]
        self._fresh = False
        return lines

    def done(self) -> Mapping[int, str]:
        return dict(self._done)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        lines = []
        for row in rows:
            lines.append(self._format(row, self._count))
            self._count += 1
            self._done[int(row["index"])] = str(row["input"])
        self._append(lines)

    def _append(self, lines: list[str]) -> None:
        self._file.write("".join(line + "\n" for line in lines))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        if self.tail is not None:
            self._append([self.tail])
        self._file.close()

    def _bad(self, n: int, why: str) -> ValueError:
        return ValueError(f"{self.path}: row {n + 1} cannot be read ({why}); the file is not this batch's output, choose another --out")

    def _parse(self, line: str, n: int) -> tuple[int, str]:
        raise NotImplementedError

    def _format(self, row: Mapping[str, Any], n: int) -> str:
        raise NotImplementedError


class JsonlSink(_LineSink):
    """One JSON object per line (the row as the use case made it)."""

    def _format(self, row: Mapping[str, Any], n: int) -> str:
        return json.dumps(row, ensure_ascii=False, allow_nan=False)

    def _parse(self, line: str, n: int) -> tuple[int, str]:
        try:
            row = json.loads(line)
            return int(row["index"]), str(row["input"])
        except (ValueError, KeyError, TypeError) as exc:
            raise self._bad(n, str(exc)) from None


class GeoJsonSink(_LineSink):
    """A FeatureCollection, one feature per line (a leading comma from the second on)."""

    head, tail = _GEO_HEAD, _GEO_TAIL

    def _format(self, row: Mapping[str, Any], n: int) -> str:
        geometry = None if row.get("lat") is None else {"type": "Point", "coordinates": [row["lon"], row["lat"]]}
        feature = {"type": "Feature", "geometry": geometry, "properties": dict(row)}
        return ("," if n else "") + json.dumps(feature, ensure_ascii=False, allow_nan=False)

    def _parse(self, line: str, n: int) -> tuple[int, str]:
        try:
            props = json.loads(line.removeprefix(","))["properties"]
            return int(props["index"]), str(props["input"])
        except (ValueError, KeyError, TypeError) as exc:
            raise self._bad(n, str(exc)) from None


class CsvSink(_LineSink):
    """Flat columns: the point, ``top`` modes (lat, lon, probability, place), credible areas, truth, error."""

    def _setup(self) -> None:
        cols = ["index", "input", "kind", "lat", "lon", "place"]
        for i in range(1, self.top + 1):
            cols += [f"mode{i}_lat", f"mode{i}_lon", f"mode{i}_probability", f"mode{i}_place"]
        cols += ["credible50_km2", "credible90_km2", "credible95_km2", "true_lat", "true_lon", "error_km"]
        cols += ["samples"] if self.samples else []
        self.columns = cols + ["error"]
        self.head = self._line(self.columns)

    @staticmethod
    def _line(values: list[Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(["" if v is None else v for v in values])
        return buf.getvalue()

    def _format(self, row: Mapping[str, Any], n: int) -> str:
        flat: dict[str, Any] = {k: row.get(k) for k in ("index", "kind", "lat", "lon", "place", "error_km", "error")}
        flat["input"] = one_line(str(row["input"]))
        for i, mode in enumerate(row.get("modes") or [], 1):
            if i <= self.top:
                flat.update({f"mode{i}_lat": mode["lat"], f"mode{i}_lon": mode["lon"],
                             f"mode{i}_probability": mode["probability"], f"mode{i}_place": mode.get("place")})
        for level, area in (row.get("credible_km2") or {}).items():
            flat[f"credible{level}_km2"] = area
        if row.get("truth"):
            flat["true_lat"], flat["true_lon"] = row["truth"]["lat"], row["truth"]["lon"]
        if self.samples and row.get("samples") is not None:
            flat["samples"] = json.dumps(row["samples"])
        if flat.get("error"):
            flat["error"] = one_line(str(flat["error"]))
        return self._line([flat.get(c) for c in self.columns])

    def _parse(self, line: str, n: int) -> tuple[int, str]:
        fields = next(csv.reader([line]), [])
        try:
            return int(fields[0]), fields[1]
        except (ValueError, IndexError):
            raise self._bad(n, "no index and input") from None


def one_line(text: str) -> str:
    """Line breaks as spaces: a CSV row stays one physical line (so a torn last line can be recognised)."""
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
