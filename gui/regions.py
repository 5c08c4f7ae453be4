"""Credible regions and contour lines of a density grid (pure numpy, no Qt).

A density grid here is the ``DensityGrid`` layout: ``density`` [n_lat, n_lon] per steradian on cell
centres ``lat`` (descending from north) and ``lon`` (ascending from -180), and ``mass`` [n_lat, n_lon]
the probability of each cell (sums to 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DEFAULT_LEVELS = (0.5, 0.9)


def credible_thresholds(
    density: np.ndarray, mass: np.ndarray, levels: Iterable[float] = DEFAULT_LEVELS
) -> dict[float, float]:
    """For each level ``p``, the density ``t`` such that the cells with ``density >= t`` hold ``>= p``.

    That is the highest-density region of probability ``p``: cells are ranked by density (not by
    mass, which depends on the cell's area) and accumulated until they hold ``p`` of the mass.
    """
    d = np.asarray(density, dtype=np.float64).ravel()
    m = np.asarray(mass, dtype=np.float64).ravel()
    if d.shape != m.shape or d.size == 0:
        raise ValueError(f"density and mass must have the same non-empty shape, got {d.shape} and {m.shape}")
    order = np.argsort(d, kind="stable")[::-1]
    cum = np.cumsum(m[order])
    total = cum[-1]
    out: dict[float, float] = {}
    for level in levels:
        level = float(level)
        if not 0.0 < level <= 1.0:
            raise ValueError(f"credible level must be in (0, 1], got {level}")
        if total <= 0:
            out[level] = float("inf")
            continue
        k = int(np.searchsorted(cum, level * total, side="left"))
        k = min(k, d.size - 1)
        out[level] = float(d[order[k]])
    return out


def mass_above(density: np.ndarray, mass: np.ndarray, threshold: float) -> float:
    """Probability held by the cells whose density is at least ``threshold``."""
    d = np.asarray(density, dtype=np.float64)
    m = np.asarray(mass, dtype=np.float64)
    total = m.sum()
    return float(m[d >= threshold].sum() / total) if total > 0 else 0.0


# Marching squares. Corners of a cell: TL (row i, col j), TR (i, j+1), BR (i+1, j+1), BL (i+1, j);
# case = TL + 2 TR + 4 BR + 8 BL (bit set when the corner is above the level). Edges: T, R, B, L.
_T, _R, _B, _L = range(4)
_CASES: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((_L, _T),),
    2: ((_T, _R),),
    3: ((_L, _R),),
    4: ((_R, _B),),
    6: ((_T, _B),),
    7: ((_L, _B),),
    8: ((_B, _L),),
    9: ((_T, _B),),
    11: ((_R, _B),),
    12: ((_L, _R),),
    13: ((_T, _R),),
    14: ((_L, _T),),
}
# Saddles (5, 10): resolved by the cell's mean value.
_SADDLE_HIGH = {5: ((_T, _R), (_B, _L)), 10: ((_L, _T), (_R, _B))}
_SADDLE_LOW = {5: ((_L, _T), (_R, _B)), 10: ((_T, _R), (_B, _L))}


def contour_segments(
    values: np.ndarray, lat: np.ndarray, lon: np.ndarray, level: float, wrap_lon: bool = True
) -> np.ndarray:
    """Line segments ``[2M, 2]`` of (lon, lat) degrees where ``values`` crosses ``level``.

    ``values`` [n_lat, n_lon] lives on the cell centres ``lat`` x ``lon`` (regularly spaced).
    With ``wrap_lon`` the first column is repeated after the last so that contours close across the
    date line; the returned longitudes may then exceed 180 by up to one cell (callers wrap them).
    Consecutive rows pair up: rows ``2k`` and ``2k+1`` are the ends of segment ``k``.
    """
    v = np.asarray(values, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if v.ndim != 2 or v.shape != (lat.size, lon.size):
        raise ValueError(f"values {v.shape} must be [len(lat), len(lon)] = [{lat.size}, {lon.size}]")
    if v.shape[0] < 2 or v.shape[1] < 2 or not np.isfinite(level):
        return np.zeros((0, 2))
    if wrap_lon:
        v = np.concatenate((v, v[:, :1]), axis=1)
    tl, tr, br, bl = v[:-1, :-1], v[:-1, 1:], v[1:, 1:], v[1:, :-1]
    case = (tl > level) * 1 + (tr > level) * 2 + (br > level) * 4 + (bl > level) * 8
    rows_i, cols_j = np.nonzero((case > 0) & (case < 15))
    if rows_i.size == 0:
        return np.zeros((0, 2))
    c = case[rows_i, cols_j]
    a_tl, a_tr = tl[rows_i, cols_j], tr[rows_i, cols_j]
    a_br, a_bl = br[rows_i, cols_j], bl[rows_i, cols_j]

    def frac(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        den = b - a
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(den != 0, (level - a) / den, 0.5)
        return np.clip(t, 0.0, 1.0)

    fi = rows_i.astype(np.float64)
    fj = cols_j.astype(np.float64)
    # (row, col) of the crossing on each edge
    edge_pts = np.empty((4, rows_i.size, 2))
    edge_pts[_T] = np.stack((fi, fj + frac(a_tl, a_tr)), axis=1)
    edge_pts[_R] = np.stack((fi + frac(a_tr, a_br), fj + 1), axis=1)
    edge_pts[_B] = np.stack((fi + 1, fj + frac(a_bl, a_br)), axis=1)
    edge_pts[_L] = np.stack((fi + frac(a_tl, a_bl), fj), axis=1)

    centre_high = (a_tl + a_tr + a_br + a_bl) / 4.0 > level
    starts, ends = [], []
    for code in range(1, 15):
        sel = c == code
        if not sel.any():
            continue
        if code in (5, 10):
            for high, table in ((True, _SADDLE_HIGH), (False, _SADDLE_LOW)):
                sub = sel & (centre_high == high)
                if sub.any():
                    for e0, e1 in table[code]:
                        starts.append(edge_pts[e0][sub])
                        ends.append(edge_pts[e1][sub])
            continue
        for e0, e1 in _CASES[code]:
            starts.append(edge_pts[e0][sel])
            ends.append(edge_pts[e1][sel])
    p0 = np.concatenate(starts)
    p1 = np.concatenate(ends)
    seg = np.empty((2 * len(p0), 2))
    seg[0::2] = p0
    seg[1::2] = p1
    # index space -> degrees (regular spacing; lat step is negative for north-first grids)
    dlat = (lat[-1] - lat[0]) / (lat.size - 1)
    dlon = (lon[-1] - lon[0]) / (lon.size - 1) if lon.size > 1 else 360.0
    out = np.empty_like(seg)
    out[:, 0] = lon[0] + seg[:, 1] * dlon
    out[:, 1] = lat[0] + seg[:, 0] * dlat
    return out


# --------------------------------------------------------------------------- polygons (GeoJSON export)
def region_polygons(mask: np.ndarray) -> list[list[list[tuple[float, float]]]]:
    """The outline of the cells set in ``mask`` [n_lat, n_lon] (row 0 = north, column 0 = 180 deg W) as
    polygons ``[exterior, *holes]`` of (lon, lat) rings, closed, for GeoJSON (RFC 7946):

    exteriors counterclockwise, holes clockwise; cells that touch only at a corner become separate
    polygons (no self-touching ring); regions reaching the date line are split there (the grid's
    edges at +-180 deg), and a polar region runs along the pole's latitude (+-90 deg).
    """
    m = np.asarray(mask, dtype=bool)
    n_lat, n_lon = m.shape
    pad = np.zeros((n_lat + 2, n_lon + 2), dtype=bool)
    pad[1:-1, 1:-1] = m
    c = pad[1:-1, 1:-1]
    # vertices are grid corners (x = column edge 0..n_lon, y = -row edge, so y grows northwards)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(kind: np.ndarray, start, end) -> None:
        rows, cols = np.nonzero(kind)
        for i, j in zip(rows.tolist(), cols.tolist()):
            a, b = start(i, j), end(i, j)
            edges.setdefault(a, []).append(b)

    # each set cell's boundary edges, counterclockwise (interior on the left)
    add(c & ~pad[2:, 1:-1], lambda i, j: (j, -(i + 1)), lambda i, j: (j + 1, -(i + 1)))  # south side, eastwards
    add(c & ~pad[1:-1, 2:], lambda i, j: (j + 1, -(i + 1)), lambda i, j: (j + 1, -i))  # east side, northwards
    add(c & ~pad[:-2, 1:-1], lambda i, j: (j + 1, -i), lambda i, j: (j, -i))  # north side, westwards
    add(c & ~pad[1:-1, :-2], lambda i, j: (j, -i), lambda i, j: (j, -(i + 1)))  # west side, southwards

    rings: list[list[tuple[int, int]]] = []
    while edges:
        start = next(iter(edges))
        ring = [start]
        prev, cur = start, _pop_edge(edges, start, None)
        while cur != start:
            ring.append(cur)
            nxt = _pop_edge(edges, cur, (cur[0] - prev[0], cur[1] - prev[1]))
            prev, cur = cur, nxt
        rings.append(_drop_collinear(ring))

    def lonlat(v: tuple[int, int]) -> tuple[float, float]:
        return (round(-180.0 + v[0] * 360.0 / n_lon, 6), round(90.0 + v[1] * 180.0 / n_lat, 6))

    outer, holes = [], []
    for ring in rings:
        (outer if _signed_area(ring) > 0 else holes).append(ring)
    polys = [[r] for r in outer]
    for h in holes:
        probe = _vertical_edge_midpoint(h)
        for poly in polys:
            if _contains(poly[0], probe):
                poly.append(h)
                break
    return [[[lonlat(v) for v in r] + [lonlat(r[0])] for r in poly] for poly in polys]


def _pop_edge(edges: dict, at: tuple[int, int], came: tuple[int, int] | None) -> tuple[int, int]:
    """Take the next edge from ``at``: at a corner where two regions touch, turn left (hug the current cell)."""
    outs = edges[at]
    if len(outs) > 1 and came is not None:
        dx, dy = came
        order = [(-dy, dx), (dx, dy), (dy, -dx)]  # left, straight, right
        outs.sort(key=lambda b: order.index((b[0] - at[0], b[1] - at[1])) if (b[0] - at[0], b[1] - at[1]) in order else 9)
    nxt = outs.pop(0)
    if not outs:
        del edges[at]
    return nxt


def _drop_collinear(ring: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    n = len(ring)
    for k in range(n):
        a, b, c = ring[k - 1], ring[k], ring[(k + 1) % n]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) != 0:
            out.append(b)
    return out


def _signed_area(ring: list[tuple[float, float]]) -> float:
    return 0.5 * sum(ring[k - 1][0] * ring[k][1] - ring[k][0] * ring[k - 1][1] for k in range(len(ring)))


def _vertical_edge_midpoint(ring: list[tuple[int, int]]) -> tuple[float, float]:
    for k in range(len(ring)):
        a, b = ring[k - 1], ring[k]
        if a[0] == b[0]:
            return (float(a[0]), (a[1] + b[1]) / 2.0)
    return (float(ring[0][0]), float(ring[0][1]))


def _contains(ring: list[tuple[float, float]], p: tuple[float, float]) -> bool:
    """Even-odd ray casting (open ring, any orientation)."""
    x, y = p
    inside = False
    n = len(ring)
    for k in range(n):
        (x0, y0), (x1, y1) = ring[k - 1], ring[k]
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def point_in_polygon(polygon: list[list[tuple[float, float]]], lon: float, lat: float) -> bool:
    """Whether (lon, lat) is inside a GeoJSON-style polygon ``[exterior, *holes]`` (closed rings)."""
    if not _contains(polygon[0][:-1], (lon, lat)):
        return False
    return not any(_contains(h[:-1], (lon, lat)) for h in polygon[1:])
