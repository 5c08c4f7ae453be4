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
