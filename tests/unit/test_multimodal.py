"""Multimodal truth scoring: site merging, mass assignment, TV, recall, NLL; the baselines' densities."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from locdiff.core import geo
from locdiff.core import multimodal as mm
from locdiff.core.anchors import equiangular
from locdiff.core.baseline_densities import (CellDensity, cell_hpd_level, cosine_neighbours, kappa, select_knn_density,
                                             vmf_hpd_level, vmf_mixture_grid, vmf_mixture_log_density, vmf_mixture_sample,
                                             voronoi_areas)
from locdiff.core.results import DensityGrid

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

latlons = st.lists(st.tuples(st.floats(-85, 85), st.floats(-180, 179.9)), min_size=1, max_size=7)


def _tensor(points) -> torch.Tensor:
    return torch.tensor(points, dtype=torch.float64).reshape(-1, 2)


# --------------------------------------------------------------------------- merging
@given(latlons, st.floats(0, 5000))
def test_merging_respects_the_radius_keeps_weight_and_is_idempotent(points, radius):
    ll = _tensor(points)
    w = torch.arange(1, ll.shape[0] + 1, dtype=torch.float64)
    sites = mm.merge_sites(ll, w / w.sum(), radius)
    s = sites.latlon.shape[0]
    assert 1 <= s <= ll.shape[0]
    assert math.isclose(float(sites.weight.sum()), 1.0, rel_tol=1e-12)
    # every site carries exactly the weight of its members
    expected = torch.zeros(s, dtype=torch.float64).index_add_(0, sites.member, w / w.sum())
    assert torch.allclose(sites.weight, expected)
    if s > 1:  # all sites at least the radius apart
        d = geo.pairwise_km(sites.latlon, sites.latlon) + torch.diag(torch.full((s,), math.inf, dtype=torch.float64))
        assert float(d.min()) >= radius - 1e-6
    again = mm.merge_sites(sites.latlon, sites.weight, radius)
    assert again.latlon.shape == sites.latlon.shape
    assert torch.allclose(again.latlon, sites.latlon) and torch.allclose(again.weight, sites.weight)
    assert torch.equal(again.member, torch.arange(s))


def test_merging_joins_near_places_only_and_centres_them_by_weight():
    ll = _tensor([[0.0, 0.0], [0.0, 2.0], [40.0, -100.0]])  # 222 km apart, then another continent
    sites = mm.merge_sites(ll, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64), 500.0)
    assert sites.latlon.shape[0] == 2 and sites.member.tolist() == [0, 0, 1]
    assert torch.allclose(sites.weight, torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert abs(float(sites.latlon[0, 1]) - 2 / 3) < 0.01  # the weighted mean, nearer the heavier place
    assert mm.merge_sites(ll, torch.full((3,), 1 / 3, dtype=torch.float64), 100.0).latlon.shape[0] == 3


def test_merge_rejects_bad_weights():
    with pytest.raises(ValueError, match="positive"):
        mm.merge_sites(_tensor([[0, 0]]), torch.tensor([0.0]), 10.0)
    with pytest.raises(ValueError, match="as many weights"):
        mm.merge_sites(_tensor([[0, 0], [1, 1]]), torch.tensor([1.0]), 10.0)


def test_truth_weights():
    pop = torch.tensor([100.0, 300.0])
    assert mm.truth_weights(pop, "uniform").tolist() == [0.5, 0.5]
    assert mm.truth_weights(pop, "population").tolist() == [0.25, 0.75]
    with pytest.raises(ValueError, match="one of"):
        mm.truth_weights(pop, "area")
    with pytest.raises(ValueError, match="positive"):
        mm.truth_weights(torch.tensor([0.0, 1.0]), "population")


def test_resolution_is_pi_over_l_plus_one():
    assert math.isclose(mm.resolution_km(15), math.pi / 16 * geo.EARTH_RADIUS_KM)
    assert 1250 < mm.resolution_km(15) < 1252


# --------------------------------------------------------------------------- assignment and scores
def _point_grid(points: torch.Tensor, weights: torch.Tensor, n_lat: int = 90) -> DensityGrid:
    """A map that puts ``weights`` into the cells holding ``points``."""
    from locdiff.core.calibration import cell_index

    lat, lon, area = equiangular(n_lat, 2 * n_lat, dtype=torch.float64)
    mass = torch.zeros(n_lat, 2 * n_lat, dtype=torch.float64)
    i, j = cell_index(n_lat, 2 * n_lat, points)
    mass.index_put_((i, j), weights.double(), accumulate=True)
    return DensityGrid(lat=lat, lon=lon, density=mass / area[:, None], mass=mass)


def _cells(grid):
    return torch.stack(torch.meshgrid(grid.lat, grid.lon, indexing="ij"), -1).reshape(-1, 2), grid.mass.reshape(-1)


def test_perfect_prediction_scores_tv_zero_and_full_recall():
    ll = _tensor([[40.0, -89.0], [-32.0, -64.0], [37.9, -4.8]])
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    sites = mm.merge_sites(ll, w, 1251.0)
    grid = _point_grid(sites.latlon, sites.weight)
    site_mass, elsewhere = mm.assign_to_sites(*_cells(grid), sites.latlon, 1251.0)
    assert elsewhere == pytest.approx(0.0, abs=1e-12)
    assert mm.total_variation(site_mass, elsewhere, sites.weight) == pytest.approx(0.0, abs=1e-12)
    assert mm.site_recall(site_mass, sites.weight) == 1.0


def test_mass_far_from_every_site_is_elsewhere_and_scores_tv_one():
    sites = _tensor([[40.0, -89.0], [-32.0, -64.0]])
    w = torch.tensor([0.6, 0.4], dtype=torch.float64)
    grid = _point_grid(_tensor([[60.0, 90.0], [0.0, 20.0]]), torch.tensor([0.7, 0.3]))
    site_mass, elsewhere = mm.assign_to_sites(*_cells(grid), sites, 1251.0)
    assert elsewhere == pytest.approx(1.0) and float(site_mass.sum()) == 0.0
    assert mm.total_variation(site_mass, elsewhere, w) == pytest.approx(1.0)
    assert mm.site_recall(site_mass, w) == 0.0


def test_partial_prediction_tv_and_recall_by_hand():
    sites = _tensor([[0.0, 0.0], [0.0, 90.0], [45.0, -90.0]])
    w = torch.tensor([0.5, 0.46, 0.04], dtype=torch.float64)  # the third is below the 5 % recall threshold
    # 0.6 near site 0 (within the radius, off centre), 0.1 on site 1, 0.3 far from all
    pts = _tensor([[3.0, 3.0], [0.0, 90.0], [-60.0, 150.0]])
    site_mass, elsewhere = mm.assign_to_sites(pts, torch.tensor([0.6, 0.1, 0.3]), sites, 1000.0)
    assert site_mass.tolist() == pytest.approx([0.6, 0.1, 0.0]) and elsewhere == pytest.approx(0.3)
    assert mm.total_variation(site_mass, elsewhere, w) == pytest.approx(0.5 * (0.1 + 0.36 + 0.04 + 0.3))
    assert mm.site_recall(site_mass, w) == 1.0  # both ≥ 5 % sites get ≥ 5 %
    assert mm.site_recall(torch.tensor([0.6, 0.04, 0.0]), w) == 0.5
    assert math.isnan(mm.site_recall(torch.zeros(30), torch.full((30,), 1 / 30)))


def test_mass_goes_to_the_nearest_site_within_the_radius():
    sites = _tensor([[0.0, 0.0], [0.0, 10.0]])  # 1,112 km apart
    site_mass, elsewhere = mm.assign_to_sites(_tensor([[0.0, 4.0], [0.0, 6.0]]), torch.tensor([0.25, 0.75]), sites, 1000.0)
    assert site_mass.tolist() == pytest.approx([0.25, 0.75]) and elsewhere == 0.0


@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=6), st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7))
def test_tv_is_a_distance_in_zero_one(truth, pred):
    w = torch.tensor(truth, dtype=torch.float64)
    w = w / w.sum()
    p = torch.tensor(pred[: w.numel() + 1], dtype=torch.float64) + 1e-9
    p = p / p.sum()
    tv = mm.total_variation(p[:-1], float(p[-1]), w)
    assert -1e-12 <= tv <= 1 + 1e-12
    assert mm.total_variation(w, 0.0, w) == pytest.approx(0.0, abs=1e-12)


def test_expected_nll_and_coverage_weigh_by_truth():
    w = torch.tensor([0.25, 0.75], dtype=torch.float64)
    assert mm.expected_nll(torch.tensor([-1.0, -3.0]), w) == pytest.approx(2.5)
    assert mm.covered_weight(torch.tensor([True, False]), w) == pytest.approx(0.25)


# --------------------------------------------------------------------------- baseline densities
def test_vmf_mixture_density_is_normalised_and_matches_its_grid():
    centres = _tensor([[10.0, 20.0], [-40.0, 120.0]])
    w = torch.tensor([0.7, 0.3], dtype=torch.float64)
    lat, lon, area = equiangular(360, 720, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(1, -1, 2)
    logp = vmf_mixture_log_density(centres[None], w[None], 800.0, pts)[0]
    total = float((logp.exp().reshape(360, 720) * area[:, None]).sum())
    assert total == pytest.approx(1.0, rel=1e-3)
    grid = vmf_mixture_grid(centres, w, 800.0, n_lat=90, n_lon=180)
    assert float(grid.mass.sum()) == pytest.approx(1.0)
    near = geo.pairwise_km(_cells(grid)[0], centres[:1])[:, 0] < 2000
    assert float(grid.mass.reshape(-1)[near].sum()) == pytest.approx(0.7 * (1 - math.exp(-kappa(800.0) * (1 - math.cos(2000 / geo.EARTH_RADIUS_KM)))), abs=0.02)


def test_knn_density_selection_prefers_the_true_spread():
    g = torch.Generator().manual_seed(0)
    n, k = 200, 30
    truth = torch.stack((torch.rand(n, generator=g) * 100 - 50, torch.rand(n, generator=g) * 300 - 150), -1).double()
    # neighbours scattered ~300 km around the truth, the first (most similar) one nearest
    off = torch.randn(n, k, 2, generator=g).double() * 2.7
    neighbours = truth[:, None, :] + off
    sims = torch.linspace(0.9, 0.5, k).expand(n, k)
    chosen = select_knn_density(sims, neighbours, truth, ks=(10, 30), temperatures=(0.05, 1.0), bandwidths_km=(25.0, 400.0, 6400.0))
    assert chosen.bandwidth_km == 400.0
    assert math.isfinite(chosen.val_nll)


def test_grid_classifier_density_is_piecewise_constant_and_normalised():
    centroids = _tensor([[0.0, 0.0], [0.0, 180.0]])  # two hemispheres
    areas = voronoi_areas(centroids, n_lat=90, n_lon=180)
    assert areas.tolist() == pytest.approx([2 * math.pi, 2 * math.pi], rel=1e-6)
    cells = CellDensity.build(centroids, n_lat=18, n_lon=36, sub=2)
    probs = torch.tensor([0.8, 0.2], dtype=torch.float64)
    grid = cells.grid(probs)
    assert float(grid.mass.sum()) == pytest.approx(1.0)
    east = _cells(grid)[0][:, 1].abs() < 90
    assert float(grid.mass.reshape(-1)[east].sum()) == pytest.approx(0.8, abs=1e-9)
    logp = cells.log_density(probs, _tensor([[10.0, 5.0], [-20.0, 170.0]]))
    assert logp.tolist() == pytest.approx([math.log(0.8 / (2 * math.pi)), math.log(0.2 / (2 * math.pi))], rel=1e-6)


# --------------------------------------------------------------------------- draws and HPD levels of the baselines' densities
@pytest.mark.parametrize("bandwidth", [25.0, 400.0, 3000.0])
def test_vmf_draws_follow_the_kernel_and_the_weights(bandwidth):
    """Mean cosine to the centre = coth κ − 1/κ (the vMF on S²); components drawn by weight."""
    k = kappa(bandwidth)
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([[[80.0, 10.0]]], dtype=torch.float64)
    x = vmf_mixture_sample(centre, torch.ones(1, 1, dtype=torch.float64), bandwidth, 20_000, generator=g)[0]
    cos = (geo.to_xyz(x) * geo.to_xyz(centre[0, 0])).sum(-1)
    expected = 1 / math.tanh(k) - 1 / k
    assert abs(float(1 - cos.mean()) - (1 - expected)) < 0.03 * (1 - expected)
    centres = torch.tensor([[[80.0, 10.0], [-30.0, 120.0]]], dtype=torch.float64)
    x = vmf_mixture_sample(centres, torch.tensor([[0.7, 0.3]], dtype=torch.float64), min(bandwidth, 400.0), 20_000, generator=g)[0]
    near_first = geo.great_circle_km(x, centres[0, :1].expand_as(x)) < geo.great_circle_km(x, centres[0, 1:].expand_as(x))
    assert abs(float(near_first.double().mean()) - 0.7) < 0.015


def test_vmf_hpd_level_matches_the_cap_mass_of_one_kernel():
    """For one kernel the region denser than a point θ away is the cap of radius θ: mass (1 − e^{−κ(1−cos θ)}) / (1 − e^{−2κ})."""
    b = 800.0
    k = kappa(b)
    centre = torch.tensor([[[10.0, 20.0]]], dtype=torch.float64).expand(4, 1, 2)
    dist = torch.tensor([100.0, 600.0, 1200.0, 2500.0], dtype=torch.float64)
    truth = torch.stack([10.0 + torch.rad2deg(dist / geo.EARTH_RADIUS_KM), torch.full((4,), 20.0, dtype=torch.float64)], 1)
    u = vmf_hpd_level(centre, torch.ones(4, 1, dtype=torch.float64), b, truth, draws=4000, seed=1)
    theta = dist / geo.EARTH_RADIUS_KM
    exact = -torch.expm1(-k * (1 - torch.cos(theta))) / -math.expm1(-2 * k)
    assert torch.allclose(u, exact, atol=0.03), (u, exact)


def test_cell_hpd_level_by_hand():
    """Densities p/A: cell 0 = 0.5/1, cell 1 = 0.3/3 = 0.1, cell 2 = 0.2/0.5 = 0.4 → denser than cell 1: 0.7; than 2: 0.5; than 0: 0."""
    probs = torch.tensor([[0.5, 0.3, 0.2]] * 3, dtype=torch.float64)
    areas = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    u = cell_hpd_level(probs, areas, torch.tensor([1, 2, 0]))
    assert torch.allclose(u, torch.tensor([0.7, 0.5, 0.0], dtype=torch.float64))


def test_cosine_neighbours_are_the_top_k_by_cosine():
    g = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    q = torch.randn(7, 8, generator=torch.Generator().manual_seed(1)) * 3.0
    sims, idx = cosine_neighbours(g, q, 5, chunk=3)
    expected = torch.topk(torch.nn.functional.normalize(q, dim=-1) @ g.T, 5, dim=1)
    assert torch.equal(idx, expected.indices) and torch.allclose(sims, expected.values)


def test_grid_density_scores_by_hand():
    """Two cells (north / south hemisphere, 2π sr each), p = (0.8, 0.2): NLL −log(p/2π); the south truth lies outside the
    50 % region (the denser north holds 0.8) but inside 90 / 95 %; energy = Σ p d(c, y) − ½ Σ p p' d(c, c')."""
    from locdiff.services.studies.baseline_scores import GridDensity

    class Fake:
        centroids = torch.tensor([[90.0, 0.0], [-90.0, 0.0]])

        def probabilities(self, cond):
            return torch.tensor([[0.8, 0.2]]).expand(cond.shape[0], 2)

    truth = torch.tensor([[90.0, 0.0], [-90.0, 0.0]], dtype=torch.float64)
    out = GridDensity.of(Fake()).scores(torch.zeros(2, 3), truth, chunk=1)
    nll = [-math.log(0.8 / (2 * math.pi)), -math.log(0.2 / (2 * math.pi))]
    assert out["nll"] == pytest.approx(sum(nll) / 2, rel=2e-3)  # Voronoi areas by quadrature
    assert (out["coverage@50"], out["coverage@90"], out["coverage@95"]) == (50.0, 100.0, 100.0)
    pole = math.pi * geo.EARTH_RADIUS_KM
    energy = [0.2 * pole - 0.5 * 2 * 0.8 * 0.2 * pole, 0.8 * pole - 0.5 * 2 * 0.8 * 0.2 * pole]
    assert out["energy_km"] == pytest.approx(sum(energy) / 2, rel=1e-6)
