"""Scoring a predicted distribution against a multimodal truth (the name-only benchmark).

A bare name ("Springfield") is carried by several places; its truth is a discrete distribution
over them, uniform or weighted by population (:func:`truth_weights`). A model of degree L cannot
tell apart places closer than its resolution ``π/(L+1)`` of arc (paper A.3: one SHDD peak is
about that wide; :func:`resolution_km`), so places closer than that are merged into one **site**
(:func:`merge_sites`). The predicted distribution — any map of cell masses — is then reduced to
the same support: each cell's mass goes to the nearest site within the radius, the rest to an
**elsewhere** bin (:func:`assign_to_sites`). On that support:

* :func:`total_variation` ``½ (Σ_s |p_s − w_s| + p_elsewhere)`` (the truth puts nothing elsewhere):
  0 for a perfect prediction, 1 when every predicted unit of mass is away from every site;
* :func:`site_recall` — the share of truth sites with weight ≥ 5 % that get ≥ 5 % of the mass;
* :func:`expected_nll` ``−Σ_i w_i log p(x_i)`` over the (unmerged) places, nats per steradian;
* :func:`covered_weight` — the truth weight inside a credible region.
"""

from __future__ import annotations

import math

import attrs
import torch

from locdiff.core import geo

TRUTHS = ("uniform", "population")  # how the truth weighs the places that carry a name
KINDS = ("ambiguous", "control")  # a benchmark name carried by several places, or by one (the control names)
RECALL_THRESHOLD = 0.05


def resolution_km(degree: int) -> float:
    """The resolution ``π/(L+1)`` of arc of a degree-L SHDD, in km (1,251 km at L=15, 417 km at L=47)."""
    return math.pi / (degree + 1) * geo.EARTH_RADIUS_KM


def truth_weights(population: torch.Tensor, scheme: str) -> torch.Tensor:
    """Weights [N] summing to 1: equal (``uniform``) or proportional to ``population``."""
    if scheme not in TRUTHS:
        raise ValueError(f"truth scheme must be one of {TRUTHS}, got {scheme!r}")
    pop = population.double().reshape(-1)
    if pop.numel() == 0:
        raise ValueError("a truth needs at least one place")
    if scheme == "uniform":
        return torch.full_like(pop, 1.0 / pop.numel())
    if not bool((pop > 0).all()) or not bool(torch.isfinite(pop).all()):
        raise ValueError("population weights need finite positive populations")
    return pop / pop.sum()


@attrs.frozen
class TruthSites:
    """Merged truth: site locations [S, 2], their weights [S] (sum 1) and each place's site [N]."""

    latlon: torch.Tensor
    weight: torch.Tensor
    member: torch.Tensor


def merge_sites(latlon: torch.Tensor, weights: torch.Tensor, radius_km: float) -> TruthSites:
    """Merge places closer than ``radius_km`` into sites, closest pair first, until all sites are ≥ ``radius_km`` apart.

    A site sits at the weighted spherical mean of its places and carries their total weight.
    Deterministic (ties: lowest indices first); idempotent: merging the result changes nothing.
    """
    ll = geo.validate_latlon(latlon.double().reshape(-1, 2), "truth latlon")
    w = weights.double().reshape(-1)
    if w.shape[0] != ll.shape[0] or ll.shape[0] == 0:
        raise ValueError(f"need as many weights as places (>= 1), got {w.shape[0]} and {ll.shape[0]}")
    if not bool((w > 0).all()):
        raise ValueError("truth weights must be positive")
    if radius_km < 0:
        raise ValueError(f"radius_km must be >= 0, got {radius_km}")
    groups = [[i] for i in range(ll.shape[0])]
    centres = ll.clone()
    while len(groups) > 1:
        d = geo.pairwise_km(centres, centres)
        d.fill_diagonal_(math.inf)
        best = float(d.min())
        if not best < radius_km:
            break
        flat = int(torch.argmin(d))  # first minimum in row-major order: the lowest (i, j)
        i, j = sorted((flat // d.shape[1], flat % d.shape[1]))
        groups[i] += groups.pop(j)
        members = torch.tensor(groups[i])
        merged = geo.spherical_mean(ll[members], w[members])
        centres = torch.cat([centres[:j], centres[j + 1 :]])
        centres[i] = merged.reshape(2)
    member = torch.empty(ll.shape[0], dtype=torch.long)
    for s, g in enumerate(groups):
        member[g] = s
    weight = torch.zeros(len(groups), dtype=torch.float64).index_add_(0, member, w)
    return TruthSites(latlon=centres, weight=weight / weight.sum(), member=member)


def assign_to_sites(points: torch.Tensor, mass: torch.Tensor, sites: torch.Tensor, radius_km: float) -> tuple[torch.Tensor, float]:
    """Mass of ``points`` [M, 2] (``mass`` [M]) given to its nearest site within ``radius_km`` → (site masses [S], elsewhere).

    Mass with no site within the radius is *elsewhere*; the two parts sum to ``mass.sum()``.
    """
    m = mass.double().reshape(-1)
    pts = points.double().reshape(-1, 2)
    if pts.shape[0] != m.shape[0]:
        raise ValueError(f"need one mass per point, got {m.shape[0]} masses for {pts.shape[0]} points")
    d = geo.pairwise_km(pts, sites.double().reshape(-1, 2).to(pts.device))  # [M, S]
    near, owner = d.min(1)
    inside = near < radius_km
    site_mass = torch.zeros(d.shape[1], dtype=torch.float64, device=m.device).index_add_(0, owner[inside], m[inside])
    return site_mass, float(m[~inside].sum())


def total_variation(site_mass: torch.Tensor, elsewhere: float, truth: torch.Tensor) -> float:
    """``½ (Σ_s |p_s − w_s| + p_elsewhere)`` between predicted masses and truth weights (both sum to 1)."""
    return 0.5 * (float((site_mass.double() - truth.double()).abs().sum()) + float(elsewhere))


def site_recall(site_mass: torch.Tensor, truth: torch.Tensor, threshold: float = RECALL_THRESHOLD) -> float:
    """Share of the sites with truth weight ≥ ``threshold`` that receive predicted mass ≥ ``threshold`` (NaN if none)."""
    big = truth.double() >= threshold
    if not bool(big.any()):
        return math.nan
    return float((site_mass.double()[big] >= threshold).double().mean())


def expected_nll(log_density: torch.Tensor, weights: torch.Tensor) -> float:
    """``−Σ_i w_i log p(x_i)``: the truth-weighted negative log density (nats per steradian)."""
    return float(-(weights.double() * log_density.double()).sum())


def covered_weight(inside: torch.Tensor, weights: torch.Tensor) -> float:
    """Truth weight of the places inside a region (``inside`` [N] bool)."""
    return float((weights.double() * inside.double()).sum())
