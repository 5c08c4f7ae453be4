"""Anchor sets on the sphere: near-uniform grids, uniform random anchors, galleries from data.

Anchors approximate the integrals of eq. 12 and 15 by the sums of eq. 16 and 17.
"""

from __future__ import annotations

import functools
import math

import torch

from locdiff.core.geo import to_xyz, validate_latlon

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def fibonacci(n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` near-uniform, equal-area points (Fibonacci lattice) as ``[n, 2]`` (lat, lon) degrees."""
    if n < 1:
        raise ValueError(f"anchor count must be >= 1, got {n}")
    i = torch.arange(n, dtype=torch.float64, device=device)
    z = 1.0 - (2.0 * i + 1.0) / n
    lat = torch.rad2deg(torch.asin(z))
    lon = torch.remainder(torch.rad2deg(i * _GOLDEN_ANGLE) + 180.0, 360.0) - 180.0
    return torch.stack((lat, lon), -1).to(dtype)


def uniform_random(
    n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """``n`` i.i.d. uniform points on the sphere (uniform in sin(lat) and lon) as ``[n, 2]``."""
    if n < 1:
        raise ValueError(f"anchor count must be >= 1, got {n}")
    dev = generator.device if generator is not None else device
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64, device=dev)
    lat = torch.rad2deg(torch.asin(2.0 * u[:, 0] - 1.0))
    lon = 360.0 * u[:, 1] - 180.0
    return torch.stack((lat, lon), -1).to(dtype=dtype, device=device if device is not None else dev)


ANCHOR_SAMPLINGS = ("uniform", "importance")  # diffusion.anchor_sampling (README: anchors)
CAP_RADII = (1.0, 4.0, 16.0)  # importance caps, in e-fold radii of a code's peak (:func:`efold_radius`)


@functools.lru_cache(maxsize=64)
def efold_radius(degree: int) -> float:
    """Angle (radians) at which a code's log-density ``f_e`` (eq. 10) has dropped by 1 from its peak.

    The width of the sharpest density a degree-``degree`` code can express (≈ 28 km at L = 47).
    """
    from locdiff.core.harmonics import legendre_kernel

    gamma = torch.linspace(0.0, math.pi, 200_001, dtype=torch.float64)
    drop = legendre_kernel(torch.ones(1, dtype=torch.float64), degree) - legendre_kernel(torch.cos(gamma), degree)
    return float(gamma[int(torch.nonzero(drop >= 1.0)[0])])


def importance(
    targets: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    *,
    degree: int,
    uniform_share: float = 0.5,
    radii: tuple[float, ...] = CAP_RADII,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors for the KL of a batch with sharp targets: ``(anchors [n, 2], log_area [n])``.

    A share of ``n`` is uniform; the rest fall uniformly in spherical caps around the batch's
    ``targets`` [B, 2] (a random target and a random radius from ``radii`` × :func:`efold_radius`
    each). ``log_area`` is ``-log(n · π(a))`` with ``π`` the mixture's density (per steradian), so
    ``Σ exp(log_area) g(a)`` estimates ``∫ g`` without bias (the balance heuristic) and the
    anchor-normalised KL stays consistent (eq. 16 with weights).
    """
    targets = validate_latlon(targets, "targets").to(torch.float64)
    if n < 2 or not 0.0 < uniform_share < 1.0:
        raise ValueError(f"importance anchors need n >= 2 and 0 < uniform_share < 1, got {n}, {uniform_share}")
    dev = generator.device if generator is not None else targets.device
    n_uniform = max(1, min(n - 1, round(n * uniform_share)))
    n_caps = n - n_uniform
    cap = torch.tensor(radii, dtype=torch.float64, device=dev) * efold_radius(degree)
    centre = to_xyz(targets.to(dev))  # [B, 3]
    which = torch.randint(0, centre.shape[0], (n_caps,), generator=generator, device=dev)
    radius = cap[torch.randint(0, cap.numel(), (n_caps,), generator=generator, device=dev)]
    u = torch.rand(n_caps, 2, generator=generator, dtype=torch.float64, device=dev)
    cos_t = 1.0 - u[:, 0] * (1.0 - torch.cos(radius))
    sin_t, phi = torch.sqrt((1.0 - cos_t.square()).clamp_min(0.0)), 2 * math.pi * u[:, 1]
    z = centre[which]
    helper = torch.where(z[:, 2:].abs() < 0.9, torch.tensor([0.0, 0.0, 1.0], dtype=z.dtype, device=dev), torch.tensor([1.0, 0.0, 0.0], dtype=z.dtype, device=dev))
    x = torch.nn.functional.normalize(torch.linalg.cross(helper, z), dim=-1)
    y = torch.linalg.cross(z, x)
    xyz = cos_t[:, None] * z + sin_t[:, None] * (torch.cos(phi)[:, None] * x + torch.sin(phi)[:, None] * y)
    caps = torch.stack((torch.rad2deg(torch.asin(xyz[:, 2].clamp(-1, 1))), torch.rad2deg(torch.atan2(xyz[:, 1], xyz[:, 0]))), -1)
    points = torch.cat((uniform_random(n_uniform, generator, dtype=torch.float64), caps))
    # mixture density at every anchor: uniform part + the caps that contain it
    cos_to = (to_xyz(points) @ centre.T).clamp(-1.0, 1.0)  # [n, B]
    inside = (cos_to[:, :, None] >= torch.cos(cap)[None, None, :]).to(torch.float64)  # [n, B, K]
    cap_density = (inside / (2 * math.pi * (1.0 - torch.cos(cap)))).sum((1, 2)) / (centre.shape[0] * cap.numel())
    density = (n_uniform / n) / (4 * math.pi) + (n_caps / n) * cap_density
    return points.to(dtype), (-torch.log(n * density)).to(dtype)


def draw(
    sampling: str,
    n: int,
    generator: torch.Generator | None = None,
    *,
    targets: torch.Tensor | None = None,
    degree: int,
    uniform_share: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch's KL anchors by ``sampling`` (:data:`ANCHOR_SAMPLINGS`): ``(anchors [n, 2], log_area [n] or None)``.

    ``"uniform"``: :func:`uniform_random` (equal areas, ``None``); ``"importance"``: :func:`importance`
    around the batch's ``targets`` [B, 2].
    """
    if sampling == "uniform":
        return uniform_random(n, generator, dtype=dtype), None
    if sampling != "importance":
        raise ValueError(f"unknown anchor sampling {sampling!r}; expected one of {ANCHOR_SAMPLINGS}")
    if targets is None:
        raise ValueError("importance anchors need the batch's locations")
    return importance(targets, n, generator, degree=degree, uniform_share=uniform_share, dtype=dtype)


def gallery(latlon: torch.Tensor, *, dedupe: bool = True) -> torch.Tensor:
    """Anchors from a gallery of coordinates (e.g. the training set), validated, optionally de-duplicated."""
    latlon = validate_latlon(latlon, "gallery")
    return torch.unique(latlon, dim=0) if dedupe else latlon


def equiangular(n_lat: int, n_lon: int, *, dtype: torch.dtype = torch.float64, device=None):
    """Cell centres of an equiangular grid: ``lat`` [n_lat] (north first), ``lon`` [n_lon] and the
    cell areas ``[n_lat]`` in steradians (identical along a row)."""
    if n_lat < 1 or n_lon < 1:
        raise ValueError(f"grid size must be positive, got {n_lat}x{n_lon}")
    edges = torch.linspace(90.0, -90.0, n_lat + 1, dtype=torch.float64, device=device)
    lat = 0.5 * (edges[1:] + edges[:-1])
    lon = -180.0 + (torch.arange(n_lon, dtype=torch.float64, device=device) + 0.5) * 360.0 / n_lon
    area = (torch.sin(torch.deg2rad(edges[:-1])) - torch.sin(torch.deg2rad(edges[1:]))) * (2 * math.pi / n_lon)
    return lat.to(dtype), lon.to(dtype), area.to(dtype)
