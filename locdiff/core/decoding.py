"""Learning-free SHDD decoders (paper §4.4, eq. 15 and 17).

* :func:`decode` — continuous mode seeking at arbitrary resolution: a coarse separable grid
  search finds candidate peaks of ``f_e = Σ e_lm Y_lm``, Newton steps on the harmonic expansion
  refine them in float64, and the candidate with the largest mass in a window of radius ρ wins
  (eq. 15).
* :func:`anchor_decode` — the paper's decoder over any anchor set (eq. 17, window ρ), chunked so
  memory stays bounded at a million anchors.

The density grids (``grid_logits``, ``density_grid``, ``log_normalizer``, credible regions) live in
:mod:`locdiff.core.density`; the ones this module uses are importable from here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from locdiff.core import geo
from locdiff.core.anchors import equiangular
from locdiff.core.density import (  # noqa: F401  (credible_*, log_normalizer: re-exported, the decoding API offers them)
    _NEGLIGIBLE,
    credible_area_km2,
    credible_thresholds,
    density_grid,
    grid_logits,
    log_normalizer,
)
from locdiff.core.harmonics import real_sh
from locdiff.core.results import DensityGrid, Mode
from locdiff.core.shdd import check_coeffs

_PRUNE = 10.0  # decode: grid peaks this far (in f) below the best are not refined


def default_radius_km(degree: int) -> float:
    """Half the resolution scale π/L of a degree-L SHDD (paper A.3), in km: 208 km at L=47."""
    return 0.5 * math.pi / (degree + 1) * geo.EARTH_RADIUS_KM


# --------------------------------------------------------------------------- continuous decoder
def grid_argmax(coeffs: torch.Tensor, n_lat: int, *, batch: int = 256) -> torch.Tensor:
    """Highest point of ``f_e`` on an equiangular ``n_lat × 2·n_lat`` grid: ``[N, d]`` → ``[N, 2]`` degrees.

    A cheap, grid-limited decoder for intermediate use (e.g. :func:`locdiff.core.diffusion.project_codes`);
    :func:`decode` is the arbitrary-resolution one.
    """
    check_coeffs(coeffs, "coeffs")
    lat, lon, _ = equiangular(n_lat, 2 * n_lat, dtype=torch.float64, device=coeffs.device)
    out = []
    for start in range(0, coeffs.shape[0], batch):
        f = grid_logits(coeffs[start : start + batch].float(), n_lat, 2 * n_lat)  # [b, n_lat, 2·n_lat]
        # the first maximum in row-major order (as flatten(1).argmax(1)): the first grid row holding the highest
        # value, then its first column holding it (row maxima first: ~4x faster than one argmax over the grid)
        i = f.amax(2).argmax(1)
        j = f[torch.arange(f.shape[0], device=f.device), i].argmax(1)
        out.append(torch.stack([lat[i], lon[j]], 1))
    return torch.cat(out) if out else coeffs.new_zeros(0, 2, dtype=torch.float64)


def _coarse_size(degree: int) -> tuple[int, int]:
    n_lat = max(16, 2 * (degree + 1))
    return n_lat, 2 * n_lat


def _grid_candidates(f: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``count`` local maxima of each grid ``f`` [B, n_lat, n_lon] as (lat, lon) [B, count, 2] and logits."""
    padded = torch.cat((f[..., -1:], f, f[..., :1]), -1)  # lon wraps
    padded = torch.nn.functional.pad(padded, (0, 0, 1, 1), value=-torch.inf)
    n, m = f.shape[-2:]
    pooled = padded[:, :n, :m].clone()  # the 3×3 neighbourhood's maximum (a max-pool; shifted maxima are faster on CPU)
    for a in range(3):
        for b in range(3):
            if a or b:
                torch.maximum(pooled, padded[:, a : a + n, b : b + m], out=pooled)
    peaks = torch.where(f >= pooled, f, torch.full_like(f, -torch.inf))
    count = min(count, f.shape[-1] * f.shape[-2])
    val, idx = torch.topk(peaks.flatten(1), count, dim=1)
    best = f.flatten(1).argmax(1, keepdim=True)
    idx = torch.where(torch.isfinite(val), idx, best)  # fewer peaks than asked: repeat the best cell
    i, j = idx // f.shape[-1], idx % f.shape[-1]
    return torch.stack((lat[i], lon[j]), -1), f.flatten(1).gather(1, idx)


def _tangent_basis(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ref = torch.zeros_like(p)
    ref[..., 2] = 1.0
    polar = p[..., 2].abs() > 0.9
    ref[polar] = torch.tensor([1.0, 0.0, 0.0], dtype=p.dtype, device=p.device)
    u = torch.nn.functional.normalize(torch.cross(ref, p, dim=-1), dim=-1)
    return u, torch.cross(p, u, dim=-1)


@torch.no_grad()
def _logits_at(pts: torch.Tensor, e: torch.Tensor, degree: int) -> torch.Tensor:
    """``f_e`` of row m's own code at its points: ``pts`` [M, P, 2] degrees, ``e`` [M, (L+1)²] float64 → [M, P]."""
    m, n = pts.shape[:2]
    y = real_sh(pts.reshape(-1, 2), degree, validate=False).reshape(m, n, -1)
    return torch.einsum("mkd,md->mk", y, e)


# tangent-plane offsets (a, b): centre, ±a, ±b and (1, 1) — six values fit the quadratic model exactly
_STENCIL = torch.tensor([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1, 1]], dtype=torch.float64)


def refine_modes(e: torch.Tensor, start: torch.Tensor, *, steps: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton ascent of ``f_e`` on the sphere from ``start`` [M, 2], for vectors ``e`` [M, D].

    Each step fits value, gradient and Hessian from a six-point tangent-plane stencil (central
    differences along each axis, one diagonal point for the cross term; float64 exact harmonics)
    and moves to the quadratic model's maximum; the stencil shrinks as it converges.
    Returns refined (lat, lon) [M, 2] and the peak logit [M].
    """
    degree = check_coeffs(e)
    e64 = e.double()
    p = geo.to_xyz(start.double())
    spacing = math.pi / (2 * (degree + 1))
    scales = [0.5, 0.2, 0.05, 0.01, 0.002, 0.0005, 0.0001]
    stencil = _STENCIL.to(p.device)
    f0 = None
    for k in range(steps):
        h = spacing * scales[min(k, len(scales) - 1)]
        u, v = _tangent_basis(p)
        off = stencil[None, :, :1] * u[:, None, :] + stencil[None, :, 1:] * v[:, None, :]
        pts = geo.to_latlon(p[:, None, :] + h * off)  # [M, 6, 2]
        f0, fa, fa_, fb, fb_, fab = _logits_at(pts, e64, degree).unbind(1)
        g = torch.stack(((fa - fa_) / (2 * h), (fb - fb_) / (2 * h)), -1)
        hxx = (fa - 2 * f0 + fa_) / h**2
        hyy = (fb - 2 * f0 + fb_) / h**2
        hxy = (fab - fa - fb + f0) / h**2
        det = hxx * hyy - hxy**2
        concave = (hxx < 0) & (det > 0)
        safe_det = torch.where(concave, det, torch.ones_like(det))
        newton = -torch.stack((hyy * g[:, 0] - hxy * g[:, 1], hxx * g[:, 1] - hxy * g[:, 0]), -1) / safe_det[:, None]
        gnorm = g.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        step = torch.where(concave[:, None], newton, g / gnorm * h)
        limit = 2 * spacing * scales[min(k, len(scales) - 1)] * 4
        step = step * (limit / step.norm(dim=-1, keepdim=True).clamp_min(limit)).clamp_max(1.0)
        p = torch.nn.functional.normalize(p + step[:, :1] * u + step[:, 1:] * v, dim=-1)
    return geo.to_latlon(p), f0


def _disc_offsets(rings: int = 3, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-disc quadrature: centre + ``rings`` rings of 6k points; returns offsets [n, 2] and area weights [n]."""
    pts, w = [torch.zeros(1, 2, dtype=dtype)], [torch.ones(1, dtype=dtype)]
    for k in range(1, rings + 1):
        ang = torch.arange(6 * k, dtype=dtype) * (2 * math.pi / (6 * k))
        pts.append(k / rings * torch.stack((torch.cos(ang), torch.sin(ang)), -1))
        w.append(torch.full((6 * k,), 1.0, dtype=dtype))
    weights = torch.cat(w)
    return torch.cat(pts).to(device), (weights / weights.sum()).to(device)


def window_log_mass(e: torch.Tensor, centres: torch.Tensor, radius_km: float) -> torch.Tensor:
    """``log ∫_{|u - c| < ρ} exp(f_e(u)) du`` (eq. 15's window, a spherical cap) for ``e`` [M, D], ``centres`` [M, 2].

    Quadrature on a centre-plus-rings disc in the tangent plane; used to choose between peaks.
    """
    degree = check_coeffs(e)
    rho = radius_km / geo.EARTH_RADIUS_KM
    off, w = _disc_offsets(device=e.device)
    p = geo.to_xyz(centres.double())
    u, v = _tangent_basis(p)
    pts = geo.to_latlon(p[:, None, :] + math.tan(rho) * (off[None, :, :1] * u[:, None, :] + off[None, :, 1:] * v[:, None, :]))
    f = _logits_at(pts, e.double(), degree)
    return torch.logsumexp(f + torch.log(w), dim=-1) + math.log(float(geo.cap_area_km2(radius_km)))


def decode(
    coeffs: torch.Tensor, *, candidates: int = 3, steps: int = 5, radius_km: float | None = None, batch: int = 512
) -> torch.Tensor:
    """Continuous mode-seeking decoder: ``[N, (L+1)^2]`` → ``[N, 2]`` (lat, lon) degrees.

    L is inferred from the width. The ``candidates`` highest local maxima of a coarse grid are
    refined by Newton steps to the exact maxima of ``f_e`` (resolution is not tied to any anchor
    set: well below 0.1 km), and the one with the largest mass within ``radius_km`` wins (eq. 15).
    """
    degree = check_coeffs(coeffs, "coeffs")
    e = coeffs.reshape(-1, coeffs.shape[-1])
    if e.shape[0] == 0:
        return coeffs.new_zeros(*coeffs.shape[:-1], 2)
    n_lat, n_lon = _coarse_size(degree)
    lat, lon, _ = equiangular(n_lat, n_lon, dtype=torch.float64, device=e.device)
    radius = default_radius_km(degree) if radius_km is None else radius_km
    out = []
    for start in range(0, e.shape[0], batch):
        chunk = e[start : start + batch]
        f = grid_logits(chunk, n_lat, n_lon).double()
        cand, val = _grid_candidates(f, lat, lon, candidates)  # [b, c, 2], [b, c]
        b, c = cand.shape[:2]
        # a peak e^-_PRUNE below the best on the grid cannot hold more window mass (equal windows, each
        # at least a peak wide): refine only the rest; a repeated cell (fewer peaks than asked) once
        first = torch.ones_like(val, dtype=torch.bool)
        first[:, 1:] = (cand[:, 1:] != cand[:, :1]).any(-1)
        keep = first & (val >= val[:, :1] - _PRUNE)
        rows = torch.arange(b, device=e.device)[:, None].expand(b, c)[keep]
        refined, _ = refine_modes(chunk[rows], cand[keep], steps=steps)
        mass = torch.full((b, c), -torch.inf, dtype=torch.float64, device=e.device)
        mass[keep] = window_log_mass(chunk[rows], refined, radius).double()
        points = torch.zeros(b, c, 2, dtype=refined.dtype, device=e.device)
        points[keep] = refined
        out.append(points[torch.arange(b, device=e.device), mass.argmax(1)])
    return torch.cat(out).to(coeffs.dtype).reshape(*coeffs.shape[:-1], 2)


def find_modes(
    e: torch.Tensor, *, top: int = 5, radius_km: float | None = None, n_lat: int | None = None, grid: DensityGrid | None = None
) -> tuple[Mode, ...]:
    """Top modes of ``q_e`` (``e`` [D]) or of a K-sample mixture (``e`` [K, D]), best mass first.

    Each mode is a refined local maximum with the probability mass within ``radius_km`` of it
    (default :func:`default_radius_km`) that is nearer to it than to any other mode, so masses
    never overlap and sum to at most 1; modes closer than the radius to a better one are merged.
    """
    from locdiff.core.summaries import batch_modes  # the one mode search (summaries builds on this module)

    e2 = e.reshape(-1, e.shape[-1])
    degree = check_coeffs(e2)
    radius_km = default_radius_km(degree) if radius_km is None else radius_km
    if grid is None:
        size = n_lat or _coarse_size(degree)[0]
        grid = density_grid(e2, size, 2 * size)
    return batch_modes(e2[None], [grid], top=top, radius_km=radius_km)[0]


# --------------------------------------------------------------------------- anchor decoder (eq. 17)
def anchor_decode(
    coeffs: torch.Tensor,
    anchors: torch.Tensor,
    *,
    rho_km: float | None = None,
    cap: int = 2048,
    chunk: int = 16_384,
    batch: int = 2048,
    on_chunk: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The paper's mode-seeking decoder over an anchor set (eq. 17): ``[..., D]`` → ``[..., 2]``.

    Returns the anchor maximising ``Σ_{|a_i - a| < ρ} exp(f_e(a_i))`` (ρ: the resolution radius by
    default). Built for thousands of vectors and millions of anchors: each anchor chunk's harmonics
    are evaluated once for all vectors and a streaming top-k keeps each vector's ``cap`` best
    anchors (memory ``[B, cap]`` + one chunk, never ``[B, N]``); only those within ``_NEGLIGIBLE``
    of the best logit enter the window sums (anchors beyond carry < e^-30 of the peak or, with
    dense anchors, a negligible share of the window). Windows are tested on unit vectors; equal
    windows (ρ much wider than the peak) are broken by density.
    """
    degree = check_coeffs(coeffs, "coeffs")
    e = coeffs.reshape(-1, coeffs.shape[-1])
    pts = geo.validate_latlon(anchors, "anchors").to(e.device)
    rho_km = default_radius_km(degree) if rho_km is None else rho_km
    n, b_total = pts.shape[0], e.shape[0]
    cap = min(cap, n)
    top_val = torch.full((b_total, cap), -math.inf, dtype=e.dtype, device=e.device)
    top_idx = torch.zeros((b_total, cap), dtype=torch.long, device=e.device)
    with torch.no_grad():
        for start in range(0, n, chunk):
            y = real_sh(pts[start : start + chunk].to(e.dtype), degree, validate=False)
            ids = torch.arange(start, start + y.shape[0], device=e.device)
            for b0 in range(0, b_total, batch):
                f = e[b0 : b0 + batch] @ y.T
                vals = torch.cat((top_val[b0 : b0 + batch], f), 1)
                idx = torch.cat((top_idx[b0 : b0 + batch], ids.expand(f.shape[0], -1)), 1)
                v, k = torch.topk(vals, cap, dim=1)
                top_val[b0 : b0 + batch], top_idx[b0 : b0 + batch] = v, idx.gather(1, k)
            if on_chunk is not None:
                on_chunk(y.shape[0])
        xyz = geo.to_xyz(pts.double())
        cos_rho = math.cos(rho_km / geo.EARTH_RADIUS_KM)
        out = torch.empty(b_total, 2, dtype=pts.dtype, device=e.device)
        for b in range(b_total):
            v = top_val[b]
            hot = int((v > v[0] - _NEGLIGIBLE).sum())
            p = xyz[top_idx[b, :hot]]
            window = ((p @ p.T) > cos_rho).double() @ torch.exp((v[:hot] - v[0]).double())
            ties = window >= window.max() * (1 - 1e-12)
            out[b] = pts[int(top_idx[b, int(torch.where(ties, v[:hot].double(), -torch.inf).argmax())])]
    return out.reshape(*coeffs.shape[:-1], 2)
