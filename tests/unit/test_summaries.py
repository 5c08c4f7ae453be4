"""Vectorised prediction summaries (``locdiff.core.summaries``): the same numbers whatever the batch, agreeing with
the per-input density grid, modes that partition the mass."""

from __future__ import annotations

import math

import pytest
import torch

from locdiff.core import geo
from locdiff.core.decoding import default_radius_km, density_grid
from locdiff.core.shdd import encode
from locdiff.core.summaries import batch_modes, density_at, mixture_grids, sub_cells


def _coefficients(b: int, k: int, degree: int = 7, seed: int = 0) -> torch.Tensor:
    """Sharp SHDDs of random points (two clusters per input) with a little noise: [B, K, D]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.stack([torch.rand(b, generator=g) * 120 - 60, torch.rand(b, generator=g) * 360 - 180], -1).double()
    other = centres + torch.tensor([20.0, 70.0], dtype=torch.float64)
    pick = torch.rand(b, k, generator=g) < 0.3
    pts = torch.where(pick[..., None], other[:, None], centres[:, None]) + torch.randn(b, k, 2, generator=g, dtype=torch.float64)
    pts[..., 0] = pts[..., 0].clamp(-89, 89)
    e = encode(pts.reshape(-1, 2), degree).reshape(b, k, -1).float()
    return 3 * e + 0.05 * torch.randn(e.shape, generator=g)


def test_every_input_gets_the_same_summary_alone_as_in_a_batch(one_thread):
    e = _coefficients(6, 8)
    radius = default_radius_km(7)
    grids = mixture_grids(e, 36, 72)
    modes = batch_modes(e, grids, top=4, radius_km=radius)
    for i in (0, 3, 5):
        alone_grid = mixture_grids(e[i : i + 1], 36, 72)
        assert torch.equal(alone_grid[0].mass, grids[i].mass)
        assert batch_modes(e[i : i + 1], alone_grid, top=4, radius_km=radius)[0] == modes[i]


def test_the_mixture_grid_is_normalised_and_matches_the_per_input_density_grid():
    e = _coefficients(3, 6, seed=1)
    grids = mixture_grids(e, 36, 72)
    for i, g in enumerate(grids):
        assert float(g.mass.sum()) == pytest.approx(1.0, abs=1e-9)
        ref = density_grid(e[i], 36, 72)
        assert 0.5 * float((ref.mass - g.mass).abs().sum()) < 0.01  # total variation between the two integrations
        assert torch.allclose(g.density * _cell_area(36, 72), g.mass)
    assert sub_cells(7, 36) == 1 and sub_cells(47, 90) == 3


def _cell_area(n_lat: int, n_lon: int) -> torch.Tensor:
    from locdiff.core.anchors import equiangular

    return equiangular(n_lat, n_lon, dtype=torch.float64)[2][:, None]


def test_modes_are_separated_sorted_and_hold_at_most_all_the_mass():
    e = _coefficients(4, 10, seed=2)
    radius = default_radius_km(7)
    grids = mixture_grids(e, 36, 72)
    for modes in batch_modes(e, grids, top=3, radius_km=radius):
        assert 1 <= len(modes) <= 3
        masses = [m.mass for m in modes]
        assert masses == sorted(masses, reverse=True) and sum(masses) <= 1 + 1e-9
        assert masses[0] > 0.3  # most samples sit in one cluster
        for a in range(len(modes)):
            for b in range(a):
                d = geo.great_circle_km(torch.tensor([modes[a].lat, modes[a].lon]), torch.tensor([modes[b].lat, modes[b].lon]))
                assert float(d) >= radius * (1 - 1e-9)


def test_the_best_mode_sits_on_the_main_cluster():
    e = _coefficients(1, 12, seed=3)
    grid = mixture_grids(e, 36, 72)
    best = batch_modes(e, grid, top=2, radius_km=default_radius_km(7))[0][0]
    peak = grid[0].mass.flatten().argmax()
    lat, lon = grid[0].lat[peak // 72], grid[0].lon[peak % 72]
    assert float(geo.great_circle_km(torch.tensor([best.lat, best.lon]), torch.stack([lat, lon]).float())) < 1000


def test_density_at_reads_the_cell_holding_each_point():
    grid = mixture_grids(_coefficients(1, 4, seed=4), 18, 36)[0]
    pts = torch.tensor([[89.0, -179.0], [-89.0, 179.0], [0.5, 0.5], [10.0, 540.5]], dtype=torch.float64)
    got = density_at(grid, pts)
    assert got[0] == grid.density[0, 0] and got[1] == grid.density[-1, -1]
    assert got[2] == grid.density[8, 18] and got[3] == grid.density[8, 0]  # 540.5° E is 179.5° W
    assert math.isfinite(float(got.sum()))
