"""What a batch of predictions says, vectorised over the inputs: mixture density grids, credible thresholds, top modes.

For B inputs with K SHDD samples each (``e`` [B, K, D]) this computes, per input, the equal-weight mixture of the K
densities ``q_e`` (paper eq. 11) on an equiangular grid, its highest-density credible thresholds, and its top modes
with their masses, in a few large tensor operations instead of B·K small ones (the batch ``predict`` path and the
Python API use it). Every row is computed by the same operations whatever the batch holds, so an input's summary does
not depend on its neighbours (tests check batched == one at a time, bit for bit).

The grid integrates each cell on a ``sub × sub`` sub-grid (:func:`sub_cells`: fine enough to resolve a degree-L peak,
about π/L wide), so coarse grids keep a sharp peak's mass; modes are Newton-refined maxima of the samples' ``f_e``
(:func:`locdiff.core.decoding.refine_modes`), merged within ``radius_km``, each holding the mass of the cells nearer
to it than to any other mode (masses never overlap and sum to at most 1), as :func:`locdiff.core.decoding.find_modes`.
"""

from __future__ import annotations

import math

import torch

from locdiff.core import geo
from locdiff.core.anchors import equiangular
from locdiff.core.decoding import _PRUNE, _coarse_size, _grid_candidates, refine_modes
from locdiff.core.density import grid_logits
from locdiff.core.results import DensityGrid, Mode
from locdiff.core.shdd import check_coeffs


def sub_cells(degree: int, n_lat: int) -> int:
    """Sub-grid points per cell side: the fine grid has at least 4(L+1) rows (≥ 4 points across a peak)."""
    return max(1, math.ceil(4 * (degree + 1) / n_lat))


def _curvature_factor(f: torch.Tensor) -> torch.Tensor:
    """Second-order midpoint correction of ``∫_cell exp(f)``: ``1 + Σ_axes (f'' + f'²) / 24`` (derivatives in cells).

    From the Taylor expansion of ``exp(f)`` about the centre; central differences (longitude wraps, the polar rows use
    their one neighbour's side as zero slope). Clamped to [0.5, 2]: a peak narrower than a cell is left to ``sub``.
    """
    lon_next, lon_prev = torch.roll(f, -1, 2), torch.roll(f, 1, 2)
    lat_next = torch.cat((f[:, 1:], f[:, -1:]), 1)
    lat_prev = torch.cat((f[:, :1], f[:, :-1]), 1)
    fx, fxx = (lon_next - lon_prev) / 2, lon_next - 2 * f + lon_prev
    fy, fyy = (lat_next - lat_prev) / 2, lat_next - 2 * f + lat_prev
    return (1 + (fxx + fx**2 + fyy + fy**2) / 24).clamp(0.5, 2.0)


@torch.no_grad()
def mixture_grids(e: torch.Tensor, n_lat: int, n_lon: int, *, sub: int | None = None, chunk: int = 128) -> list[DensityGrid]:
    """``e`` [B, K, D] → B normalised mixture densities (eq. 11, equal weights over K) on an ``n_lat × n_lon`` grid.

    Each of the B·K densities is evaluated separably on the ``(sub·n_lat) × (sub·n_lon)`` fine grid in float64,
    normalised on its own (midpoint rule, area-weighted), summed into its cells and averaged over K.
    """
    degree = check_coeffs(e)
    b, k, d = e.shape
    sub = sub_cells(degree, n_lat) if sub is None else sub
    lat, lon, area = equiangular(n_lat, n_lon, dtype=torch.float64, device=e.device)
    _, _, fine_area = equiangular(n_lat * sub, n_lon * sub, dtype=torch.float64, device=e.device)
    flat = e.reshape(b * k, d).double()
    masses = []
    for start in range(0, b * k, chunk):
        f = grid_logits(flat[start : start + chunk], n_lat * sub, n_lon * sub)  # [c, n_lat·sub, n_lon·sub]
        w = torch.exp(f - f.amax((1, 2), keepdim=True)) * fine_area[None, :, None] * _curvature_factor(f)
        cells = w.reshape(-1, n_lat, sub, n_lon, sub).sum((2, 4))
        masses.append(cells / cells.sum((1, 2), keepdim=True))
    mass = torch.cat(masses).reshape(b, k, n_lat, n_lon).mean(1)
    return [DensityGrid(lat=lat, lon=lon, density=m / area[:, None], mass=m) for m in mass]


@torch.no_grad()
def batch_modes(e: torch.Tensor, grids: list[DensityGrid], *, top: int, radius_km: float) -> list[tuple[Mode, ...]]:
    """Top ``top`` modes of each input's mixture (``e`` [B, K, D], its grid), best mass first.

    Candidates: the ``top + 2`` best local maxima of each sample's ``f_e`` on a coarse grid, Newton-refined all at once.
    Per input they are ranked by the mixture mass within ``radius_km``, merged greedily (a candidate nearer than the
    radius to a better one is dropped), and each kept mode gets the mass of the cells nearest to it within the radius.
    """
    degree = check_coeffs(e)
    b, k, d = e.shape
    n_lat, n_lon = _coarse_size(degree)
    clat, clon, _ = equiangular(n_lat, n_lon, dtype=torch.float64, device=e.device)
    flat = e.reshape(b * k, d)
    cand, val = _grid_candidates(grid_logits(flat, n_lat, n_lon).double(), clat, clon, top + 2)  # [B·K, c, 2], [B·K, c]
    c = cand.shape[1]
    # a sample's peak e^-_PRUNE below its best holds a negligible share of its mass; a repeated cell is refined once
    first = torch.ones_like(val, dtype=torch.bool)
    first[:, 1:] = (cand[:, 1:] != cand[:, :1]).any(-1)
    keep = first & (val >= val[:, :1] - _PRUNE)
    refined, peak = refine_modes(flat.repeat_interleave(c, 0)[keep.reshape(-1)], cand[keep])
    owner_input = torch.arange(b, device=e.device).repeat_interleave(k * c)[keep.reshape(-1)]
    cos_r = math.cos(radius_km / geo.EARTH_RADIUS_KM)
    cells = geo.to_xyz(torch.stack(torch.meshgrid(grids[0].lat, grids[0].lon, indexing="ij"), -1).reshape(-1, 2)) if grids else None
    out = []
    for i, grid in enumerate(grids):
        mine = (owner_input == i).nonzero()[:, 0]
        cell_mass = grid.mass.reshape(-1)
        xyz = geo.to_xyz(refined[mine].to(cells.dtype))
        rough = ((xyz @ cells.T) >= cos_r).to(cell_mass.dtype) @ cell_mass  # mixture mass within the radius
        near = ((xyz @ xyz.T) > cos_r).tolist()
        kept: list[int] = []
        for j in torch.argsort(rough, descending=True, stable=True).tolist():
            if not any(near[j][q] for q in kept):
                kept.append(j)
        cos_kept = xyz[kept] @ cells.T  # [n_kept, cells]
        best, owner = cos_kept.max(0)
        inside = best >= cos_r
        mass = torch.zeros(len(kept), dtype=cell_mass.dtype).index_add_(0, owner[inside], cell_mass[inside])
        order = torch.argsort(mass, descending=True, stable=True).tolist()[:top]
        out.append(tuple(
            Mode(lat=float(refined[mine[kept[o]], 0]), lon=float(refined[mine[kept[o]], 1]), mass=float(mass[o]),
                 radius_km=radius_km, logit=float(peak[mine[kept[o]]]))
            for o in order
        ))
    return out


def density_at(grid: DensityGrid, latlon: torch.Tensor) -> torch.Tensor:
    """The grid's density (per steradian, averaged over the cell) at each point ``latlon`` [M, 2] degrees → [M]."""
    n_lat, n_lon = grid.lat.shape[0], grid.lon.shape[0]
    lat, lon = latlon[:, 0].double(), torch.remainder(latlon[:, 1].double() + 180.0, 360.0)
    row = ((90.0 - lat) / (180.0 / n_lat)).floor().long().clamp(0, n_lat - 1)
    col = (lon / (360.0 / n_lon)).floor().long().clamp(0, n_lon - 1)
    return grid.density[row, col]
