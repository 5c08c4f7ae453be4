"""Vectorised prediction summaries (``locdiff.core.summaries``): the same numbers whatever the batch, agreeing with
the per-input density grid, modes that partition the mass."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from locdiff.core import geo
from locdiff.core.decoding import default_radius_km, density_grid
from locdiff.core.shdd import encode
from locdiff.core.anchors import equiangular
from locdiff.core.summaries import _cap_entries, batch_modes, density_at, mixture_grids, sub_cells


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


# ---------------------------------------------------------------- the fast paths equal the plain computations
def test_the_in_place_curvature_equals_the_rolled_copies_bit_for_bit():
    from locdiff.core.summaries import _curvature_factor, _curvature_factor_plain, _workspace

    g = torch.Generator().manual_seed(5)
    for shape in ((3, 18, 36), (2, 2, 3), (1, 5, 2), (4, 1, 7)):
        f = 4 * torch.randn(shape, generator=g, dtype=torch.float64)
        assert torch.equal(_curvature_factor(f), _curvature_factor_plain(f))
    f = 4 * torch.randn(3, 9, 12, generator=g, dtype=torch.float64)
    work = _workspace(5, 9, 12, torch.float64, "cpu")  # a larger workspace, reused
    assert torch.equal(_curvature_factor(f, work), _curvature_factor_plain(f))
    assert torch.equal(_curvature_factor(f[:1], work), _curvature_factor_plain(f[:1]))
    assert not torch.equal(_curvature_factor_plain(f), torch.ones_like(f))  # a real correction, not a constant


def test_mixture_grids_are_batch_independent_for_any_chunk_and_agree_across_chunks(one_thread):
    e = _coefficients(5, 6, seed=6)
    ref = mixture_grids(e, 36, 72)
    for chunk in (None, 1, 4, 128):
        got = mixture_grids(e, 36, 72, chunk=chunk)
        for i in (0, 4):  # alone == in the batch, bit for bit, with this chunk
            assert torch.equal(mixture_grids(e[i : i + 1], 36, 72, chunk=chunk)[0].mass, got[i].mass)
        # other chunks: other matrix shapes, the same numbers to rounding
        assert all(torch.allclose(a.mass, b.mass, rtol=1e-12, atol=1e-15) for a, b in zip(ref, got))
    fine = mixture_grids(e[:2], 9, 18)  # sub = 4: the sub-grid sum path
    assert sub_cells(7, 9) == 4
    assert torch.equal(fine[1].mass, mixture_grids(e[1:2], 9, 18)[0].mass)
    assert all(float(g.mass.sum()) == pytest.approx(1.0, abs=1e-9) for g in fine)


def test_samples_and_modes_equal_decode_and_batch_modes_bit_for_bit(one_thread):
    from locdiff.core.decoding import decode
    from locdiff.core.summaries import samples_and_modes

    e = _coefficients(4, 6, seed=7)
    grids = mixture_grids(e, 36, 72)
    radius = default_radius_km(7)
    for top in (1, 3, 5):
        samples, modes = samples_and_modes(e, grids, top=top, radius_km=radius)
        assert samples.dtype == e.dtype and samples.shape == (4, 6, 2)
        assert torch.equal(samples, decode(e.reshape(-1, e.shape[-1])).reshape(4, 6, 2))
        assert modes == batch_modes(e, grids, top=top, radius_km=radius)
    # one input alone: the same
    alone_s, alone_m = samples_and_modes(e[2:3], grids[2:3], top=3, radius_km=radius)
    samples, modes = samples_and_modes(e, grids, top=3, radius_km=radius)
    assert torch.equal(alone_s[0], samples[2]) and alone_m[0] == modes[2]


def test_grid_logits_into_a_given_tensor_and_grid_argmax_match_the_plain_forms(one_thread):
    from locdiff.core.decoding import grid_argmax
    from locdiff.core.density import grid_logits
    from locdiff.core.anchors import equiangular

    e = _coefficients(3, 4, seed=8).reshape(12, -1)
    out = torch.empty(12, 16, 32)
    got = grid_logits(e, 16, 32, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(got, grid_logits(e, 16, 32))
    assert torch.allclose(got, grid_logits(e, 16, 32, batch=5), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="out must be"):
        grid_logits(e, 16, 32, out=torch.empty(12, 16, 31))
    lat, lon, _ = equiangular(16, 32, dtype=torch.float64)
    flat_idx = grid_logits(e.float(), 16, 32).flatten(1).argmax(1)  # the first maximum in row-major order
    expect = torch.stack([lat[flat_idx // 32], lon[flat_idx % 32]], 1)
    assert torch.equal(grid_argmax(e, 16, batch=5), expect)
    flat = torch.zeros(2, e.shape[1])
    flat[:, 0] = 1.0  # a constant field: every cell ties, the first cell wins
    assert grid_argmax(flat, 16)[0].tolist() == [lat[0].item(), lon[0].item()]


@settings(max_examples=40, deadline=None)
@given(points=st.lists(st.tuples(st.floats(-90, 90), st.floats(-180, 180)), min_size=1, max_size=12),
       radius=st.sampled_from([20.0, 300.0, 900.0, 2500.0]), size=st.sampled_from([(18, 36), (45, 90), (90, 180)]))
def test_the_cap_window_finds_every_cell_a_test_of_all_cells_finds(points, radius, size):
    """The windowed cap search (latitude rows, longitude window, whole rows round a pole) loses and adds no pair."""
    n_lat, n_lon = size
    lat, lon, _ = equiangular(n_lat, n_lon)
    cells = geo.to_xyz(torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2))
    latlon = torch.tensor(points, dtype=torch.float64)
    xyz = geo.to_xyz(latlon)
    point, cell, cos = _cap_entries(xyz, latlon[:, 0], latlon[:, 1], cells, n_lat, n_lon, radius)
    every = (cells[None] * xyz[:, None]).sum(-1)  # the same products, every cell
    want = (every >= math.cos(radius / geo.EARTH_RADIUS_KM)).nonzero()
    assert sorted(zip(point.tolist(), cell.tolist())) == sorted(map(tuple, want.tolist()))
    assert torch.equal(cos, every[point, cell])
