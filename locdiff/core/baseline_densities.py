"""The baselines' predictions as densities on the sphere, so they can be scored like LocDiffusion's mixture.

* kNN retrieval → a **von Mises–Fisher mixture** over the k neighbours' locations, neighbour j
  weighted by ``softmax(sim_j / T)`` (the weights :class:`locdiff.core.baselines.KNNRetrieval` uses),
  each kernel ``C(κ) exp(κ (x·μ_j − 1))`` with ``C(κ) = κ / (2π (1 − e^{−2κ}))`` per steradian and
  ``κ = 1 / b²`` for an angular bandwidth ``b`` (as :func:`locdiff.core.calibration.kde_grid`).
  ``(k, T, b)`` are chosen on validation by mean NLL (:func:`select_knn_density`).
* grid classification → **piecewise constant**: the classifier's probability of a cell spread
  uniformly over it, ``p_c / A_c`` per steradian, where ``A_c`` is the area of the cell's spherical
  Voronoi region around its centroid (:func:`voronoi_areas`, by quadrature on a fine grid; :class:`CellDensity`).

Both give a :class:`~locdiff.core.results.DensityGrid` (cell masses, for credible regions and the
mass near each truth site) and an exact log density at points (for the NLL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import torch

from locdiff.core import geo
from locdiff.core.anchors import equiangular
from locdiff.core.results import DensityGrid

#: the candidates of the validation selection (bandwidths as calibration's kde family: 25 .. 6400 km)
KNN_KS = (10, 30)
KNN_TEMPERATURES = (0.01, 0.02, 0.05, 0.1, 0.2, 1.0)
KNN_BANDWIDTHS_KM = tuple(25.0 * 2.0 ** (k / 2) for k in range(0, 17))


def kappa(bandwidth_km: float) -> float:
    """vMF concentration of an angular bandwidth ``b`` (km on the Earth): ``κ = 1 / b²`` (b in radians)."""
    if not bandwidth_km > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_km}")
    return 1.0 / (bandwidth_km / geo.EARTH_RADIUS_KM) ** 2


def _log_norm(k: float) -> float:
    """``log C(κ)``, ``C(κ) = κ / (2π (1 − e^{−2κ}))``: the vMF normaliser on S² for ``exp(κ (x·μ − 1))``."""
    return math.log(k) - math.log(2 * math.pi) - math.log(-math.expm1(-2 * k))


def vmf_mixture_log_density(centres: torch.Tensor, weights: torch.Tensor, bandwidth_km: float, points: torch.Tensor) -> torch.Tensor:
    """Log density (per sr) of the vMF mixture ``Σ_j w_j vMF(μ_j, κ)`` — centres [B, J, 2], weights [B, J], points [B, N, 2] → [B, N]."""
    k = kappa(bandwidth_km)
    mu = geo.to_xyz(centres.double())  # [B, J, 3]
    x = geo.to_xyz(points.double())  # [B, N, 3]
    dots = torch.einsum("bnc,bjc->bnj", x, mu)
    logw = torch.log(weights.double()).clamp_min(-1e300)
    return torch.logsumexp(logw[:, None, :] + k * (dots - 1.0), dim=-1) + _log_norm(k)


def vmf_mixture_grid(centres: torch.Tensor, weights: torch.Tensor, bandwidth_km: float, *, n_lat: int = 180, n_lon: int = 360,
                     sub: int = 2) -> DensityGrid:
    """The vMF mixture of one prediction (centres [J, 2], weights [J]) integrated into grid cells.

    Midpoint rule on a ``sub × sub`` sub-grid per cell; each kernel is normalised on the grid, so
    it carries exactly its weight however narrow it is.
    """
    lat, lon, area = equiangular(n_lat * sub, n_lon * sub, dtype=torch.float64)
    cells = geo.to_xyz(torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1))  # [H, W, 3]
    mu = geo.to_xyz(centres.double().reshape(-1, 2))
    w = weights.double().reshape(-1)
    logits = kappa(bandwidth_km) * (torch.einsum("hwc,jc->jhw", cells, mu) - 1.0) + area.log()[None, :, None]
    per = torch.exp(logits - torch.logsumexp(logits.flatten(1), 1)[:, None, None])  # each kernel sums to 1
    fine = torch.einsum("jhw,j->hw", per, w / w.sum())
    mass = fine.reshape(n_lat, sub, n_lon, sub).sum((1, 3))
    return _grid(mass / mass.sum(), n_lat, n_lon)


def _grid(mass: torch.Tensor, n_lat: int, n_lon: int) -> DensityGrid:
    lat, lon, area = equiangular(n_lat, n_lon, dtype=torch.float64, device=mass.device)
    return DensityGrid(lat=lat, lon=lon, density=mass / area[:, None], mass=mass)


def knn_weights(sims: torch.Tensor, temperature: float) -> torch.Tensor:
    """Neighbour weights ``softmax(sim / T)`` over the last axis."""
    return torch.softmax(sims.double() / temperature, dim=-1)


@attrs.frozen
class KNNDensity:
    """The kNN mixture's settings chosen on validation, with the validation mean NLL (nats/sr) they scored."""

    k: int
    temperature: float
    bandwidth_km: float
    val_nll: float


def cosine_neighbours(gallery: torch.Tensor, query: torch.Tensor, k: int, *, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine top-``k`` of each ``query`` row [N, d] among the unit ``gallery`` rows [M, d] → sims, indices [N, min(k, M)]."""
    q = torch.nn.functional.normalize(query.float(), dim=-1).to(gallery.device)
    parts = [torch.topk(q[s : s + chunk] @ gallery.T, min(k, gallery.shape[0]), dim=1) for s in range(0, q.shape[0], chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def select_knn_density(
    sims: torch.Tensor,
    neighbour_latlon: torch.Tensor,
    truth: torch.Tensor,
    *,
    ks: Sequence[int] = KNN_KS,
    temperatures: Sequence[float] = KNN_TEMPERATURES,
    bandwidths_km: Sequence[float] = KNN_BANDWIDTHS_KM,
) -> KNNDensity:
    """Choose ``(k, T, b)`` minimising the mean NLL of the validation truths [N, 2].

    ``sims`` [N, K] (descending) and ``neighbour_latlon`` [N, K, 2] are each validation item's
    top-K gallery neighbours, K ≥ max(ks).
    """
    if sims.shape[1] < max(ks):
        raise ValueError(f"need at least {max(ks)} neighbours per item, got {sims.shape[1]}")
    best = KNNDensity(0, math.nan, math.nan, math.inf)
    pts = truth.double()[:, None, :]
    for k in ks:
        for t in temperatures:
            w = knn_weights(sims[:, :k], t)
            for b in bandwidths_km:
                score = float(-vmf_mixture_log_density(neighbour_latlon[:, :k], w, b, pts).mean())
                if score < best.val_nll:
                    best = KNNDensity(int(k), float(t), float(b), score)
    return best


@attrs.frozen
class KNNMixture:
    """Weighted kNN as a density: a gallery (unit embeddings, locations) and the :class:`KNNDensity` settings chosen on
    validation; :meth:`components` gives each query's mixture (neighbour locations, ``softmax(sim / T)`` weights)."""

    gallery: torch.Tensor  # [M, d] unit rows
    gallery_latlon: torch.Tensor  # [M, 2]
    density: KNNDensity

    @classmethod
    def fit(cls, train_cond: torch.Tensor, train_latlon: torch.Tensor, val_cond: torch.Tensor, val_latlon: torch.Tensor) -> "KNNMixture":
        """The gallery is the training split; ``(k, T, b)`` minimise the validation NLL (:func:`select_knn_density`)."""
        gallery, gallery_ll = torch.nn.functional.normalize(train_cond.float(), dim=-1), train_latlon.double()
        sims, idx = cosine_neighbours(gallery, val_cond, max(KNN_KS))
        return cls(gallery, gallery_ll, select_knn_density(sims, gallery_ll[idx], val_latlon))

    def components(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's mixture: neighbour locations [N, k, 2] and weights [N, k]."""
        sims, idx = cosine_neighbours(self.gallery, cond, self.density.k)
        return self.gallery_latlon[idx], knn_weights(sims, self.density.temperature)


# --------------------------------------------------------------------------- grid classification
def _owners(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    c = geo.to_xyz(centroids.double())
    x = geo.to_xyz(points.double().reshape(-1, 2))
    return torch.cat([(x[s : s + chunk] @ c.T).argmax(1) for s in range(0, x.shape[0], chunk)])


def _fine_cells(n_lat: int, n_lon: int) -> tuple[torch.Tensor, torch.Tensor]:
    lat, lon, area = equiangular(n_lat, n_lon, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    return pts, area[:, None].expand(n_lat, n_lon).reshape(-1)


def voronoi_areas(centroids: torch.Tensor, *, n_lat: int = 540, n_lon: int = 1080) -> torch.Tensor:
    """Area (sr) of each centroid's spherical Voronoi cell [C], by assigning a fine grid's cells (sum 4π)."""
    pts, area = _fine_cells(n_lat, n_lon)
    owner = _owners(pts, centroids)
    areas = torch.zeros(centroids.shape[0], dtype=torch.float64).index_add_(0, owner, area)
    return areas.clamp_min(float(area.min()))  # a cell the fine grid misses still gets the smallest fine cell


@attrs.frozen
class CellDensity:
    """A grid classifier's cells as a density: centroids [C, 2], Voronoi areas [C] (sr) and the map grid's owners."""

    centroids: torch.Tensor
    areas: torch.Tensor
    n_lat: int
    n_lon: int
    sub: int
    owner: torch.Tensor  # [n_lat*sub * n_lon*sub] the classifier cell of each fine map cell
    fine_area: torch.Tensor

    @classmethod
    def build(cls, centroids: torch.Tensor, *, n_lat: int = 180, n_lon: int = 360, sub: int = 3) -> "CellDensity":
        pts, area = _fine_cells(n_lat * sub, n_lon * sub)
        c = centroids.double().cpu()
        return cls(c, voronoi_areas(c), n_lat, n_lon, sub, _owners(pts, c), area)

    def grid(self, probs: torch.Tensor) -> DensityGrid:
        """The piecewise-constant density ``p_c / A_c`` of one prediction (probs [C]) integrated into map cells."""
        fine = (probs.double().cpu() / self.areas)[self.owner] * self.fine_area
        mass = fine.reshape(self.n_lat, self.sub, self.n_lon, self.sub).sum((1, 3))
        return _grid(mass / mass.sum(), self.n_lat, self.n_lon)

    def log_density(self, probs: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``log (p_c / A_c)`` (per sr) at ``points`` [N, 2] for one prediction's cell probabilities [C] → [N]."""
        owner = _owners(points, self.centroids)
        return torch.log(probs.double().cpu()[owner]) - torch.log(self.areas[owner])


def cell_owners(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The classifier cell (nearest centroid) of each point [N, 2] → [N]."""
    return _owners(points, centroids.double().cpu()).to(points.device)


def cell_hpd_level(probs: torch.Tensor, areas: torch.Tensor, truth_cell: torch.Tensor) -> torch.Tensor:
    """HPD level of each truth under the piecewise-constant density ``p_c / A_c`` (exact): the mass of the cells
    strictly denser than the truth's cell. ``probs`` [B, C], ``areas`` [C] (sr), ``truth_cell`` [B] → [B] in [0, 1]."""
    p = probs.double()
    dens = p / areas.double().to(p.device)[None, :]
    at_truth = dens.gather(1, truth_cell[:, None].to(p.device))
    return (p * (dens > at_truth)).sum(1)


# --------------------------------------------------------------------------- kNN mixture: draws and HPD levels
def vmf_mixture_sample(centres: torch.Tensor, weights: torch.Tensor, bandwidth_km: float, n: int, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws per row of the vMF mixture (centres [B, J, 2], weights [B, J]) → [B, n, 2] degrees.

    A component by its weight, then the cosine to its centre ``w = 1 + log(u + (1 − u) e^{−2κ}) / κ`` (exact inverse
    CDF on S², written as ``1 − w`` so a sharp kernel keeps its precision) and a uniform direction around it."""
    k = kappa(bandwidth_km)
    b = centres.shape[0]
    comp = torch.multinomial(weights.double(), n, replacement=True, generator=generator)  # [B, n]
    mu = torch.gather(geo.to_xyz(centres.double()), 1, comp[..., None].expand(b, n, 3))
    u = 1.0 - torch.rand(b, n, dtype=torch.float64, generator=generator)  # (0, 1]
    one_minus_w = -torch.log(u + (1.0 - u) * math.exp(-2.0 * k)) / k
    sin_t = torch.sqrt((one_minus_w * (2.0 - one_minus_w)).clamp_min(0.0))
    phi = 2.0 * math.pi * torch.rand(b, n, dtype=torch.float64, generator=generator)
    axis = torch.zeros_like(mu)
    axis[..., 2] = 1.0
    axis[mu[..., 2].abs() > 0.9] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    a = torch.nn.functional.normalize(torch.cross(mu, axis, dim=-1), dim=-1)
    c = torch.cross(mu, a, dim=-1)
    x = (1.0 - one_minus_w)[..., None] * mu + sin_t[..., None] * (torch.cos(phi)[..., None] * a + torch.sin(phi)[..., None] * c)
    return geo.to_latlon(x)


def vmf_hpd_level(centres: torch.Tensor, weights: torch.Tensor, bandwidth_km: float, truth: torch.Tensor, *, draws: int = 2000,
                  seed: int = 0, chunk: int = 64) -> torch.Tensor:
    """HPD level of each truth [B, 2] under its vMF mixture, by Monte Carlo: the share of ``draws`` samples whose density
    exceeds the truth's (the mass of the denser region; standard error ≤ 0.5/√draws) → [B]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, centres.shape[0], chunk):
        c, w = centres[s : s + chunk].double().cpu(), weights[s : s + chunk].double().cpu()
        x = vmf_mixture_sample(c, w, bandwidth_km, draws, generator=g)
        at_draws = vmf_mixture_log_density(c, w, bandwidth_km, x)
        at_truth = vmf_mixture_log_density(c, w, bandwidth_km, truth[s : s + chunk].double().cpu()[:, None, :])
        out.append((at_draws > at_truth).double().mean(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
