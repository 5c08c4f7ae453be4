"""Values a prediction produces: a density grid, its modes, the samples and the point estimate."""

from __future__ import annotations

import attrs
import torch


@attrs.frozen
class DensityGrid:
    """A normalised density of ``q_e`` (paper eq. 11) on an equiangular lat/lon grid.

    ``lat`` [n_lat] and ``lon`` [n_lon] are cell centres in degrees (lat descending from north,
    lon ascending from -180). ``density`` [n_lat, n_lon] is per steradian; ``mass`` [n_lat, n_lon]
    is the probability of each cell and sums to 1.
    """

    lat: torch.Tensor
    lon: torch.Tensor
    density: torch.Tensor
    mass: torch.Tensor


@attrs.frozen
class Mode:
    """A local maximum of ``q_e`` with the probability mass within ``radius_km`` of it."""

    lat: float
    lon: float
    mass: float
    radius_km: float
    logit: float


@attrs.frozen
class Prediction:
    """What LocDiffusion says about one input.

    ``samples`` [K, 2] are the decoded diffusion samples (lat, lon); ``point`` is the reduced
    prediction (spherical centre, medoid or mixture mode, see ``reducer``); ``modes`` are the top
    modes of the samples' mixture density, best first; ``grid`` is that mixture density.
    ``credible`` maps a level (0.5, 0.9, ...) to the density threshold bounding that credible region.
    """

    item: str
    samples: torch.Tensor
    point: tuple[float, float]
    reducer: str
    modes: tuple[Mode, ...]
    grid: DensityGrid | None
    credible: dict[float, float] = attrs.field(factory=dict)
    refined: tuple[float, float] | None = None  # hybrid (GeoCLIP) refinement, if requested
    calibration: str = ""  # how the map and its credible levels were calibrated ("" = raw)
