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
from locdiff.core.calibration import LEVELS
from locdiff.core.decoding import (_PRUNE, _coarse_size, _grid_candidates, credible_thresholds, default_radius_km, refine_modes,
                                   window_log_mass)
from locdiff.core.density import grid_logits
from locdiff.core.reduction import reduce_samples
from locdiff.core.results import DensityGrid, Mode, Prediction
from locdiff.core.shdd import check_coeffs


def sub_cells(degree: int, n_lat: int) -> int:
    """Sub-grid points per cell side: the fine grid has at least 4(L+1) rows (≥ 4 points across a peak)."""
    return max(1, math.ceil(4 * (degree + 1) / n_lat))


def _curvature_factor(f: torch.Tensor, work: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Second-order midpoint correction of ``∫_cell exp(f)``: ``1 + Σ_axes (f'' + f'²) / 24`` (derivatives in cells).

    From the Taylor expansion of ``exp(f)`` about the centre; central differences (longitude wraps, the polar rows use
    their one neighbour's side as zero slope). Clamped to [0.5, 2]: a peak narrower than a cell is left to ``sub``.
    Computed in place on one padded copy per axis: element by element the same operations as
    :func:`_curvature_factor_plain`. ``work`` (from :func:`_workspace`) supplies reusable buffers; the result then
    lives in ``work["acc"]`` (valid until the next call).
    """
    c, n, m = f.shape
    w = work if work is not None else _workspace(c, n, m, f.dtype, f.device)
    two_f, acc, tmp, lon, lat = (w[name][:c] for name in ("two_f", "acc", "tmp", "lon", "lat"))
    torch.mul(f, 2, out=two_f)
    lon[..., 1:-1], lon[..., :1], lon[..., -1:] = f, f[..., -1:], f[..., :1]  # longitude wraps
    nxt, prv = lon[..., 2:], lon[..., :-2]
    torch.sub(nxt, two_f, out=acc).add_(prv)  # fxx
    acc.add_(torch.sub(nxt, prv, out=tmp).div_(2).pow_(2))  # + fx²
    lat[:, 1:-1], lat[:, :1], lat[:, -1:] = f, f[:, :1], f[:, -1:]  # beyond a pole: the polar row's own value
    nxt, prv = lat[:, 2:], lat[:, :-2]
    acc.add_(torch.sub(nxt, two_f, out=tmp).add_(prv))  # + fyy
    acc.add_(torch.sub(nxt, prv, out=tmp).div_(2).pow_(2))  # + fy²
    return acc.div_(24).add_(1).clamp_(0.5, 2.0)


def _workspace(c: int, n: int, m: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    """Buffers for ``c`` grids of ``n × m``, reused chunk after chunk: a fresh multi-MB tensor page-faults on first
    touch, which cost more than the arithmetic (each pass ~5x an in-place one)."""
    new = lambda *shape: torch.empty(shape, dtype=dtype, device=device)  # noqa: E731
    return {"f": new(c, n, m), "two_f": new(c, n, m), "acc": new(c, n, m), "tmp": new(c, n, m),
            "lon": new(c, n, m + 2), "lat": new(c, n + 2, m)}


def _curvature_factor_plain(f: torch.Tensor) -> torch.Tensor:
    """:func:`_curvature_factor` written out with rolled and concatenated copies (the reference the tests compare)."""
    lon_next, lon_prev = torch.roll(f, -1, 2), torch.roll(f, 1, 2)
    lat_next = torch.cat((f[:, 1:], f[:, -1:]), 1)
    lat_prev = torch.cat((f[:, :1], f[:, :-1]), 1)
    fx, fxx = (lon_next - lon_prev) / 2, lon_next - 2 * f + lon_prev
    fy, fyy = (lat_next - lat_prev) / 2, lat_next - 2 * f + lat_prev
    return (1 + (fxx + fx**2 + fyy + fy**2) / 24).clamp(0.5, 2.0)


@torch.no_grad()
def mixture_grids(e: torch.Tensor, n_lat: int, n_lon: int, *, sub: int | None = None, chunk: int | None = None) -> list[DensityGrid]:
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
    if chunk is None:  # densities per pass: ~256 kB per buffer, so the six work buffers stay in cache (2.9x faster than 128)
        chunk = max(1, min(128, 2**18 // (8 * n_lat * sub * n_lon * sub)))
    chunk = min(chunk, k)
    # input by input, in the same passes whatever the batch holds (a pass's matrix products round alike only for
    # equal row counts): an input's grid is the same alone as in any batch
    masses = torch.empty(k, n_lat, n_lon, dtype=torch.float64, device=e.device)
    work = _workspace(chunk, n_lat * sub, n_lon * sub, torch.float64, e.device)
    mass = torch.empty(b, n_lat, n_lon, dtype=torch.float64, device=e.device)
    for i in range(b):
        for start in range(0, k, chunk):
            rows = flat[i * k + start : i * k + min(start + chunk, k)]
            f = grid_logits(rows, n_lat * sub, n_lon * sub, out=work["f"][: rows.shape[0]])  # [c, n_lat·sub, n_lon·sub]
            curvature = _curvature_factor(f, work)
            # exp(f - max f) · area · curvature, in place (the same operations in the same order)
            w = f.sub_(f.amax((1, 2), keepdim=True)).exp_().mul_(fine_area[None, :, None]).mul_(curvature)
            cells = w.reshape(-1, n_lat, sub, n_lon, sub).sum((2, 4)) if sub > 1 else w
            torch.div(cells, cells.sum((1, 2), keepdim=True), out=masses[start : start + rows.shape[0]])
        torch.mean(masses[None], 1, out=mass[i : i + 1])
    return [DensityGrid(lat=lat, lon=lon, density=m / area[:, None], mass=m) for m in mass]


@torch.no_grad()
def batch_modes(e: torch.Tensor, grids: list[DensityGrid], *, top: int, radius_km: float) -> list[tuple[Mode, ...]]:
    """Top ``top`` modes of each input's mixture (``e`` [B, K, D], its grid), best mass first.

    Candidates: the ``top + 2`` best local maxima of each sample's ``f_e`` on a coarse grid, Newton-refined all at once.
    Per input they are ranked by the mixture mass within ``radius_km``, merged greedily (a candidate nearer than the
    radius to a better one is dropped), and each kept mode gets the mass of the cells nearest to it within the radius.
    """
    peaks = _refined_peaks(e, top + 2)
    return _modes(peaks, grids, top=top, radius_km=radius_km)


@torch.no_grad()
def samples_and_modes(e: torch.Tensor, grids: list[DensityGrid], *, top: int, radius_km: float,
                      candidates: int = 3) -> tuple[torch.Tensor, list[tuple[Mode, ...]]]:
    """:func:`locdiff.core.decoding.decode` of every sample (``[B, K, 2]``, in ``e``'s dtype) and :func:`batch_modes`,
    sharing one coarse grid search and one Newton refinement.

    Both start from each sample's best coarse-grid peaks: the decoder from the first ``candidates`` of them (the
    one with the most mass within :func:`default_radius_km` wins, eq. 15), the modes from the first ``top + 2``;
    computed apart they refine the same peaks twice.
    """
    degree = check_coeffs(e)
    b, k, d = e.shape
    peaks = _refined_peaks(e, max(top + 2, candidates))
    flat, keep, refined = peaks["flat"], peaks["keep"], peaks["refined"]
    # the decoder: window mass of each kept peak among the first `candidates`, the best one per sample
    mine = keep[:, :candidates]
    pos = (torch.cumsum(keep.reshape(-1), 0) - 1).reshape(keep.shape)[:, :candidates][mine]  # rows of `refined`
    rows = torch.arange(b * k, device=e.device)[:, None].expand(b * k, candidates)[mine]
    mass = torch.full((b * k, candidates), -torch.inf, dtype=torch.float64, device=e.device)
    mass[mine] = window_log_mass(flat[rows], refined[pos], default_radius_km(degree)).double()
    points = torch.zeros(b * k, candidates, 2, dtype=refined.dtype, device=e.device)
    points[mine] = refined[pos]
    samples = points[torch.arange(b * k, device=e.device), mass.argmax(1)].to(e.dtype).reshape(b, k, 2)
    return samples, _modes(_first_peaks(peaks, top + 2), grids, top=top, radius_km=radius_km)


def _refined_peaks(e: torch.Tensor, count: int) -> dict[str, torch.Tensor]:
    """The ``count`` best coarse-grid local maxima of each sample's ``f_e`` (``e`` [B, K, D]) and the Newton-refined
    position and peak logit of those worth refining (``keep``: not a repeat, within ``_PRUNE`` of the sample's best)."""
    degree = check_coeffs(e)
    b, k, d = e.shape
    n_lat, n_lon = _coarse_size(degree)
    clat, clon, _ = equiangular(n_lat, n_lon, dtype=torch.float64, device=e.device)
    flat = e.reshape(b * k, d)
    cand, val = _grid_candidates(grid_logits(flat, n_lat, n_lon).double(), clat, clon, count)  # [B·K, c, 2], [B·K, c]
    c = cand.shape[1]
    # a sample's peak e^-_PRUNE below its best holds a negligible share of its mass; a repeated cell is refined once
    first = torch.ones_like(val, dtype=torch.bool)
    first[:, 1:] = (cand[:, 1:] != cand[:, :1]).any(-1)
    keep = first & (val >= val[:, :1] - _PRUNE)
    refined, peak = refine_modes(flat.repeat_interleave(c, 0)[keep.reshape(-1)], cand[keep])
    return {"flat": flat, "keep": keep, "refined": refined, "peak": peak, "b": b, "k": k}


def _first_peaks(peaks: dict, count: int) -> dict:
    """``peaks`` restricted to each sample's first ``count`` candidates."""
    keep = peaks["keep"]
    if keep.shape[1] == count:
        return peaks
    take = torch.zeros_like(keep)
    take[:, :count] = True
    chosen = take[keep]  # over the refined rows (sample-major, candidate order)
    return {**peaks, "keep": keep[:, :count], "refined": peaks["refined"][chosen], "peak": peaks["peak"][chosen]}


def _cap_entries(xyz: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor, cells: torch.Tensor, n_lat: int, n_lon: int,
                 radius_km: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The grid cells whose centres lie within ``radius_km`` of each point ``xyz`` [M, 3] (at ``lat``, ``lon`` [M]):
    (point, cell, cosine) of every such pair — the pairs that testing every cell finds, at a window's cost.

    A cap spans its radius ρ in latitude and ``2 asin(sin(ρ/2) / cos φ_max)`` in longitude (φ_max: its most poleward
    latitude), so only the cells of that window (plus one cell of margin) are tested, points grouped by window width;
    caps that reach round the pole test whole rows."""
    rho = radius_km / geo.EARTH_RADIUS_KM
    d_lat, d_lon = 180.0 / n_lat, 360.0 / n_lon
    reach = math.ceil(math.degrees(rho) / d_lat + 0.5) + 1
    rows = ((90.0 - lat) / d_lat).floor().long()[:, None] + torch.arange(-reach, reach + 1, device=xyz.device)  # [M, R]
    ok_rows = (rows >= 0) & (rows < n_lat)
    pole = torch.deg2rad((lat.abs() + math.degrees(rho) + d_lat).clamp(max=90.0))
    half = torch.asin((math.sin(rho / 2) / torch.cos(pole).clamp_min(1e-12)).clamp(max=1.0)) * 2  # radians of longitude
    cols_reach = (torch.rad2deg(half) / d_lon + 0.5).ceil().long() + 1
    cols_reach = cols_reach.clamp(max=n_lon // 2 + 1)  # ≥ half the ring: the whole row
    col0 = ((lon + 180.0) / d_lon).floor().long()
    found = []
    for w in torch.unique(cols_reach).tolist():  # points grouped by window width
        m = (cols_reach == w).nonzero()[:, 0]
        if 2 * w + 1 < n_lon:
            cols = torch.remainder(col0[m, None] + torch.arange(-w, w + 1, device=xyz.device), n_lon)  # [m, C]
        else:
            cols = torch.arange(n_lon, device=xyz.device).expand(len(m), n_lon)
        idx = (rows[m].clamp(0, n_lat - 1)[:, :, None] * n_lon + cols[:, None, :]).reshape(len(m), -1)
        ok = ok_rows[m][:, :, None].expand(-1, -1, cols.shape[1]).reshape(len(m), -1)
        cos = (cells[idx] * xyz[m, None, :]).sum(-1)
        inside = (cos >= math.cos(rho)) & ok
        found.append((m[:, None].expand_as(idx)[inside], idx[inside], cos[inside]))
    if not found:
        empty = torch.zeros(0, dtype=torch.long, device=xyz.device)
        return empty, empty, xyz.new_zeros(0)
    point, cell, cos = (torch.cat(parts) for parts in zip(*found))
    return point, cell, cos


def _modes(peaks: dict, grids: list[DensityGrid], *, top: int, radius_km: float) -> list[tuple[Mode, ...]]:
    """Per input: its samples' refined peaks ranked by mixture mass within the radius, merged, masses partitioned."""
    b, k, keep, refined, peak = peaks["b"], peaks["k"], peaks["keep"], peaks["refined"], peaks["peak"]
    c = keep.shape[1]
    device = keep.device
    if not grids:
        return []
    owner_input = torch.arange(b, device=device).repeat_interleave(k * c)[keep.reshape(-1)]
    cos_r = math.cos(radius_km / geo.EARTH_RADIUS_KM)
    n_lat, n_lon = grids[0].lat.shape[0], grids[0].lon.shape[0]
    cells = geo.to_xyz(torch.stack(torch.meshgrid(grids[0].lat, grids[0].lon, indexing="ij"), -1).reshape(-1, 2))
    latlon = refined.to(cells.dtype)
    xyz_all = geo.to_xyz(latlon)
    point, cell, cos = _cap_entries(xyz_all, *latlon.unbind(1), cells, n_lat, n_lon, radius_km)
    by_point = torch.argsort(point, stable=True)  # each peak's cap cells together, in their window order
    point, cell, cos = point[by_point], cell[by_point], cos[by_point]
    ends = torch.cumsum(torch.bincount(point, minlength=len(refined)), 0).tolist()
    masses = torch.stack([g.mass.reshape(-1) for g in grids])  # [B, cells]
    rough_all = torch.zeros(len(refined), dtype=masses.dtype, device=device).index_add_(
        0, point, masses[owner_input[point], cell])  # each peak's mixture mass within the radius
    out = []
    for i in range(len(grids)):
        mine = (owner_input == i).nonzero()[:, 0]
        xyz, rough = xyz_all[mine], rough_all[mine]
        near = ((xyz @ xyz.T) > cos_r).tolist()
        kept: list[int] = []
        for j in torch.argsort(rough, descending=True, stable=True).tolist():
            if not any(near[j][q] for q in kept):
                kept.append(j)
        # each cell within the radius of a kept mode goes to the nearest one (ties: the better-ranked)
        spans = [(ends[g] - (ends[g - 1] if g else 0), ends[g]) for g in mine[kept].tolist()]  # (count, end) of its entries
        rows = torch.cat([torch.arange(end - n, end, device=device) for n, end in spans])
        mode = torch.repeat_interleave(torch.arange(len(kept), device=device), torch.tensor([n for n, _ in spans], device=device))
        cell_k, cos_k = cell[rows], cos[rows]
        best = torch.full((cells.shape[0],), -2.0, dtype=cos_k.dtype, device=device).scatter_reduce_(0, cell_k, cos_k, "amax")
        win = cos_k == best[cell_k]
        first = torch.full((cells.shape[0],), len(kept), device=device).scatter_reduce_(0, cell_k[win], mode[win], "amin")
        take = win & (mode == first[cell_k])
        mass = torch.zeros(len(kept), dtype=masses.dtype, device=device).index_add_(0, mode[take], masses[i, cell_k[take]])
        order = torch.argsort(mass, descending=True, stable=True).tolist()[:top]
        out.append(tuple(
            Mode(lat=float(refined[mine[kept[o]], 0]), lon=float(refined[mine[kept[o]], 1]), mass=float(mass[o]),
                 radius_km=radius_km, logit=float(peak[mine[kept[o]]]))
            for o in order
        ))
    return out


@torch.no_grad()
def predictions(e: torch.Tensor, items: list[str], *, reducer: str, grid_lat: int, grid_lon: int, top_modes: int) -> list[Prediction]:
    """What K samples ``e`` [B, K, D] say about each of B inputs: decoded samples, reduced point, modes, map and its
    credible thresholds, as :class:`Prediction` values — the one summary behind the app, ``predict`` (one input or a
    batch) and the Python API, so an input gets the same answer, bit for bit, on every path."""
    degree = check_coeffs(e)
    radius = default_radius_km(degree)
    grids = mixture_grids(e, grid_lat, grid_lon)
    samples, modes = samples_and_modes(e, grids, top=top_modes, radius_km=radius)
    samples = samples.double()
    points = reduce_samples(samples, reducer, radius_km=2 * radius)
    return [
        Prediction(item=items[i], samples=samples[i], point=(float(points[i, 0]), float(points[i, 1])), reducer=reducer,
                   modes=modes[i], grid=grids[i], credible=credible_thresholds(grids[i], LEVELS))
        for i in range(len(items))
    ]


def density_at(grid: DensityGrid, latlon: torch.Tensor) -> torch.Tensor:
    """The grid's density (per steradian, averaged over the cell) at each point ``latlon`` [M, 2] degrees → [M]."""
    n_lat, n_lon = grid.lat.shape[0], grid.lon.shape[0]
    lat, lon = latlon[:, 0].double(), torch.remainder(latlon[:, 1].double() + 180.0, 360.0)
    row = ((90.0 - lat) / (180.0 / n_lat)).floor().long().clamp(0, n_lat - 1)
    col = (lon / (360.0 / n_lon)).floor().long().clamp(0, n_lon - 1)
    return grid.density[row, col]
