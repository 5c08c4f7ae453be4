"""Geometry on the sphere: lat/lon <-> unit vectors, great-circle distance, spherical mean.

Every public function takes and returns (lat, lon) in degrees, in that order.
"""

from __future__ import annotations

import math

import torch

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def validate_latlon(latlon: torch.Tensor, name: str = "latlon") -> torch.Tensor:
    """Check a ``[..., 2]`` (lat, lon) tensor; return it as floating point with lon wrapped to [-180, 180).

    Raises ``ValueError`` naming the offending value: wrong shape, non-finite entries, or a
    latitude outside [-90, 90]. Longitudes of any magnitude wrap.
    """
    if not isinstance(latlon, torch.Tensor):
        latlon = torch.as_tensor(latlon)
    if latlon.ndim < 1 or latlon.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [..., 2] of (lat, lon) in degrees, got {tuple(latlon.shape)}")
    if not latlon.is_floating_point():
        latlon = latlon.to(torch.get_default_dtype())
    finite = torch.isfinite(latlon)
    if not bool(finite.all()):
        idx = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(f"{name}{list(idx)} is {latlon[idx].item()}: coordinates must be finite")
    lat = latlon[..., 0]
    bad = (lat < -90) | (lat > 90)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"latitude {name}{list(idx) + [0]} = {lat[idx].item()} is outside [-90, 90]")
    lon = latlon[..., 1]
    if bool(((lon < -180.0) | (lon >= 180.0)).any()):  # wrap in float64: no rounding of in-range values
        lon = (torch.remainder(lon.double() + 180.0, 360.0) - 180.0).to(lon.dtype)
    return torch.stack((lat, lon), dim=-1)


def to_xyz(latlon: torch.Tensor) -> torch.Tensor:
    """Unit vectors ``[..., 3]`` for (lat, lon) degrees ``[..., 2]``; z points to the north pole."""
    lat = torch.deg2rad(latlon[..., 0])
    lon = torch.deg2rad(latlon[..., 1])
    c = torch.cos(lat)
    return torch.stack((c * torch.cos(lon), c * torch.sin(lon), torch.sin(lat)), dim=-1)


def to_latlon(xyz: torch.Tensor) -> torch.Tensor:
    """(lat, lon) degrees ``[..., 2]`` of vectors ``[..., 3]`` (need not be unit length)."""
    x, y, z = xyz.unbind(-1)
    lat = torch.rad2deg(torch.atan2(z, torch.hypot(x, y)))
    lon = torch.rad2deg(torch.atan2(y, x))
    return torch.stack((lat, lon), dim=-1)


def central_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (radians) between (lat, lon) points; broadcasts. Stable for tiny and antipodal angles."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    va, vb = to_xyz(a.to(dtype)), to_xyz(b.to(dtype))
    cross = torch.linalg.vector_norm(torch.cross(*torch.broadcast_tensors(va, vb), dim=-1), dim=-1)
    dot = (va * vb).sum(-1)
    return torch.atan2(cross, dot)


def great_circle_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Great-circle distance in km between (lat, lon) degree points ``[..., 2]``; broadcasts."""
    return EARTH_RADIUS_KM * central_angle(a, b)


def pairwise_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distances ``[N, M]`` between ``a`` [N, 2] and ``b`` [M, 2]."""
    return great_circle_km(a[:, None, :], b[None, :, :])


def spherical_mean(latlon: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Spherical centre of K points ``[..., K, 2]``: the normalised (weighted) mean unit vector.

    This is the "geographical centre" the paper takes of its 16 samples (§5.1).
    """
    v = to_xyz(latlon)
    if weights is not None:
        v = v * weights[..., None]
    return to_latlon(v.sum(-2))


def cap_area_km2(radius_km: torch.Tensor | float) -> torch.Tensor:
    """Area of a spherical cap of the given great-circle radius."""
    r = torch.as_tensor(radius_km, dtype=torch.float64)
    return 2 * math.pi * EARTH_RADIUS_KM**2 * (1 - torch.cos(r / EARTH_RADIUS_KM))
