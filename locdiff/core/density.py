"""Density grids of an SHDD (paper eq. 11): ``f_e`` and the normalised ``q_e`` on an equiangular lat/lon grid of
any size (heatmaps, credible regions, mode masses), its log-normaliser, and credible regions' thresholds and areas.

Separable evaluation: the harmonic sum factors into per-latitude Legendre rows times per-longitude order
columns, so a grid costs ``n_lat·D + n_lon·(2L+1)`` harmonics instead of ``n_lat·n_lon·D``.
"""

from __future__ import annotations

import functools

import torch

from locdiff.core import geo
from locdiff.core.anchors import equiangular
from locdiff.core.harmonics import legendre_table, real_sh, sh_index
from locdiff.core.results import DensityGrid
from locdiff.core.shdd import check_coeffs

#: a cell whose coarse logit is this far below the maximum holds < e^-30 of the peak's density
_NEGLIGIBLE = 30.0


@functools.lru_cache(maxsize=16)
def _separable_tables(degree: int, n_lat: int, n_lon: int, dtype: torch.dtype, device: str):
    """Tables for ``f(θ_i, φ_j) = Σ_m A[i, m] T[m, j]`` with ``A[i, m] = Σ_l e_lm P[i, m, l]``."""
    lat, lon, _ = equiangular(n_lat, n_lon, dtype=torch.float64)
    table = legendre_table(torch.deg2rad(90.0 - lat), degree)  # [n_lat, D], float64
    width = (degree + 1) ** 2
    index = torch.full((2 * degree + 1, degree + 1), width, dtype=torch.int64)  # width → a zero column
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            index[m + degree, l] = sh_index(l, m)
    padded = torch.cat((table, torch.zeros(n_lat, 1, dtype=table.dtype)), 1)[:, index]  # [n_lat, 2L+1, L+1]
    to = dict(dtype=dtype, device=device)
    return padded.permute(1, 2, 0).contiguous().to(**to), _order_trig(degree, lon).to(**to), index.to(device)


def _order_trig(degree: int, lon_deg: torch.Tensor) -> torch.Tensor:
    """``[2L+1, n]`` float64: row ``m + L`` holds ``sin(|m|φ)`` for m < 0 and ``cos(mφ)`` for m ≥ 0."""
    m = torch.arange(-degree, degree + 1, dtype=torch.float64, device=lon_deg.device)
    angle = m.abs()[:, None] * torch.deg2rad(lon_deg.double())[None, :]
    return torch.where(m[:, None] < 0, torch.sin(angle), torch.cos(angle))


def grid_logits(e: torch.Tensor, n_lat: int, n_lon: int, *, batch: int = 256, out: torch.Tensor | None = None) -> torch.Tensor:
    """``f_e`` on the equiangular grid's cell centres: ``[B, D]`` → ``[B, n_lat, n_lon]``.

    Separable evaluation: O(L²·n_lat + L·n_lat·n_lon) per vector instead of O(L²·n_lat·n_lon).
    ``out`` (optional, contiguous ``[B, n_lat, n_lon]`` of ``e``'s dtype) receives the result (no fresh tensor).
    """
    degree = check_coeffs(e)
    e2 = e.reshape(-1, e.shape[-1])
    p, trig, index = _separable_tables(degree, n_lat, n_lon, e.dtype, str(e.device))
    if out is None:
        out = torch.empty(e2.shape[0], n_lat, n_lon, dtype=e.dtype, device=e.device)
    elif out.shape != (e2.shape[0], n_lat, n_lon) or out.dtype != e.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {e.dtype} tensor of shape {(e2.shape[0], n_lat, n_lon)}, got {out.dtype} "
                         f"{tuple(out.shape)}")
    for start in range(0, e2.shape[0], batch):
        chunk = e2[start : start + batch]
        padded = torch.cat((chunk, chunk.new_zeros(chunk.shape[0], 1)), 1)[:, index]  # [b, 2L+1, L+1]
        a = torch.bmm(padded.transpose(0, 1), p)  # [2L+1, b, n_lat]
        # Σ_m a[m, b, i] trig[m, j], written straight into the result
        torch.matmul(a.permute(1, 2, 0).reshape(-1, a.shape[0]), trig, out=out[start : start + chunk.shape[0]].view(-1, n_lon))
    return out.reshape(*e.shape[:-1], n_lat, n_lon)


@functools.lru_cache(maxsize=16)
def _order_of_columns(degree: int, device: str) -> torch.Tensor:
    """``m + L`` of every SHDD coefficient column (its order, shifted to be an index)."""
    m_of = torch.empty((degree + 1) ** 2, dtype=torch.int64)
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            m_of[sh_index(l, m)] = m + degree
    return m_of.to(device)


def _product_logits(e: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """``f_e`` at every (lat[r], lon[c]) pair, separably: ``[D]``, ``[R]``, ``[C]`` degrees → ``[R, C]``."""
    degree = check_coeffs(e)
    table = legendre_table(torch.deg2rad(90.0 - lat), degree).to(e.dtype)  # [R, D]
    a = torch.zeros(lat.shape[0], 2 * degree + 1, dtype=e.dtype, device=e.device)
    a.index_add_(1, _order_of_columns(degree, str(e.device)), table * e[None, :])  # [R, 2L+1]
    return a @ _order_trig(degree, lon).to(e.dtype)


def _cell_integrals(e: torch.Tensor, f: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor, area: torch.Tensor, sub: int, max_cells: int):
    """``∫_cell exp(f - max f)`` for every cell of one vector's grid ``f`` [n_lat, n_lon].

    Cells within ``_NEGLIGIBLE`` of the maximum are integrated on a ``sub × sub`` sub-grid with
    exact harmonics (a sharp peak can sit between centres); the rest use their centre value.
    """
    degree = check_coeffs(e)
    fmax = f.max()
    vals = torch.exp(f - fmax) * area[:, None]
    hot = (f > fmax - _NEGLIGIBLE).nonzero()
    if hot.shape[0] > max_cells:
        keep = torch.topk(f[hot[:, 0], hot[:, 1]], max_cells).indices
        hot = hot[keep]
    if sub > 1 and hot.shape[0]:
        dlat = 180.0 / lat.shape[0]
        dlon = 360.0 / lon.shape[0]
        frac = (torch.arange(sub, dtype=torch.float64, device=e.device) + 0.5) / sub - 0.5
        rows, row_of = torch.unique(hot[:, 0], return_inverse=True)
        cols, col_of = torch.unique(hot[:, 1], return_inverse=True)
        box = rows.numel() * cols.numel()  # separable cost ~ (2L+1)·box·sub², per-point ~ hot·sub²·(L+1)² (× recurrence)
        if (2 * degree + 1) * box <= 8 * hot.shape[0] * (degree + 1) ** 2 and box * sub * sub <= 16_000_000:
            sub_lat = (lat[rows].double()[:, None] + frac[None, :] * dlat).reshape(-1)
            sub_lon = (lon[cols].double()[:, None] + frac[None, :] * dlon).reshape(-1)
            with torch.no_grad():
                fs = _product_logits(e.double(), sub_lat, sub_lon).reshape(rows.numel(), sub, cols.numel(), sub)
            fs = fs[row_of, :, col_of, :]  # [hot, sub, sub]
            weight = torch.cos(torch.deg2rad(sub_lat)).reshape(rows.numel(), sub)[row_of][:, :, None]
            mean = (torch.exp(fs - fmax.double()) * weight).sum((1, 2)) / (weight.sum((1, 2)) * sub)
        else:  # scattered hot cells: exact harmonics at each cell's sub-points
            sub_lat = lat[hot[:, 0]].double()[:, None, None] + frac[None, :, None] * dlat
            sub_lon = lon[hot[:, 1]].double()[:, None, None] + frac[None, None, :] * dlon
            pts = torch.stack(torch.broadcast_tensors(sub_lat, sub_lon), -1).reshape(-1, 2)
            weight = torch.cos(torch.deg2rad(pts[:, 0])).reshape(hot.shape[0], -1)
            with torch.no_grad():
                fs = (real_sh(pts, degree, validate=False) @ e.double()).reshape(hot.shape[0], -1)
            mean = (torch.exp(fs - fmax.double()) * weight).sum(1) / weight.sum(1)
        vals[hot[:, 0], hot[:, 1]] = (mean * area[hot[:, 0]].double()).to(vals.dtype)
    return vals


def density_grid(e: torch.Tensor, n_lat: int = 180, n_lon: int = 360, *, sub: int = 6, max_cells: int = 4096) -> DensityGrid:
    """Normalised density of ``q_e`` (eq. 11) on an equiangular grid of any size.

    ``e`` [D] gives ``q_e``; ``e`` [K, D] gives the equal-weight mixture of the K densities (the
    distribution of K diffusion samples). Mass per cell is integrated, not point-sampled, so
    sharp peaks keep their mass on coarse grids.
    """
    e2 = e.reshape(-1, e.shape[-1])
    lat, lon, area = equiangular(n_lat, n_lon, dtype=torch.float64, device=e.device)
    f = grid_logits(e2, n_lat, n_lon).double()
    mass = torch.zeros(n_lat, n_lon, dtype=torch.float64, device=e.device)
    for k in range(e2.shape[0]):
        cells = _cell_integrals(e2[k], f[k], lat, lon, area, sub, max_cells)
        mass += cells / cells.sum()
    mass /= e2.shape[0]
    return DensityGrid(lat=lat, lon=lon, density=mass / area[:, None], mass=mass)


def log_normalizer(e: torch.Tensor, n_lat: int | None = None, *, sub: int = 6, max_cells: int = 4096, batch: int = 64) -> torch.Tensor:
    """``log Z(e) = log ∫ exp(f_e) dΩ`` (eq. 11's normaliser, per steradian): ``[..., D]`` → ``[...]`` float64.

    Midpoint rule on an ``n_lat × 2·n_lat`` equiangular grid (default ``max(180, 8(L+1))`` rows;
    ~1e-5 relative error for peaks a few cells wide). A vector whose highest peak is narrower than
    about two cells is integrated as in :func:`density_grid` instead (cells near the peak on a
    ``sub × sub`` sub-grid with exact harmonics), so sharp peaks keep their mass.
    """
    degree = check_coeffs(e)
    e2 = e.reshape(-1, e.shape[-1])
    n_lat = n_lat or max(180, 8 * (degree + 1))
    lat, lon, area = equiangular(n_lat, 2 * n_lat, dtype=torch.float64, device=e.device)
    out = torch.empty(e2.shape[0], dtype=torch.float64, device=e.device)
    for start in range(0, e2.shape[0], batch):
        chunk = e2[start : start + batch].double()
        f = grid_logits(chunk, n_lat, 2 * n_lat)
        out[start : start + chunk.shape[0]] = torch.logsumexp((f + area.log()[:, None]).flatten(1), 1)
        # curvature at each grid maximum, in logit units per cell²: > 0.5 means a peak under ~1.4 cells wide
        idx = f.flatten(1).argmax(1)
        i, j = idx // f.shape[2], idx % f.shape[2]
        b = torch.arange(f.shape[0], device=f.device)
        up, down = f[b, (i - 1).clamp_min(0), j], f[b, (i + 1).clamp_max(n_lat - 1), j]
        left, right = f[b, i, (j - 1) % f.shape[2]], f[b, i, (j + 1) % f.shape[2]]
        top = f[b, i, j]
        sharp = torch.maximum(2 * top - up - down, 2 * top - left - right) > 0.5
        for k in sharp.nonzero()[:, 0].tolist():
            cells = _cell_integrals(chunk[k], f[k], lat, lon, area, sub, max_cells)
            out[start + k] = f[k].max() + cells.sum().log()
    return out.reshape(e.shape[:-1])


def credible_thresholds(grid: DensityGrid, levels=(0.5, 0.9, 0.95)) -> dict[float, float]:
    """Density threshold of each highest-density credible region: cells with density ≥ it hold ``level`` of the mass."""
    d = grid.density.flatten()
    order = torch.argsort(d, descending=True)
    cum = torch.cumsum(grid.mass.flatten()[order], 0)
    out = {}
    for level in levels:
        k = int(torch.searchsorted(cum, torch.tensor(level, dtype=cum.dtype, device=cum.device)))
        out[float(level)] = float(d[order[min(k, d.numel() - 1)]])
    return out


def credible_area_km2(grid: DensityGrid, threshold: float) -> float:
    """Area (km²) of the region where the density is at least ``threshold``."""
    _, _, area = equiangular(grid.lat.shape[0], grid.lon.shape[0], dtype=torch.float64, device=grid.density.device)
    inside = grid.density >= threshold
    return float((inside * area[:, None]).sum() * geo.EARTH_RADIUS_KM**2)
