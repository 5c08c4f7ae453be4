"""Anchor sets on the sphere: near-uniform grids, uniform random anchors, galleries from data.

Anchors approximate the integrals of eq. 12 and 15 by the sums of eq. 16 and 17.
"""

from __future__ import annotations

import math

import torch

from locdiff.core.geo import validate_latlon

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
