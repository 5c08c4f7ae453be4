"""Decoders: continuous mode seeking, the paper's anchor decoder, density grids and modes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import locdiff
from locdiff.core import anchors, geo
from locdiff.core.decoding import _logits_at, anchor_decode, credible_thresholds, default_radius_km, density_grid, find_modes, grid_logits
from locdiff.core.harmonics import real_sh

SPECIAL = torch.tensor([[90.0, 0.0], [-90.0, 0.0], [0.0, 180.0], [-0.5, -179.9], [89.99, 45.0], [37.77, -122.42]])


@pytest.mark.slow
def test_round_trip_every_degree_1_to_127():
    """decode(encode(p)) within 0.1 km of p for every L from 1 to 127."""
    g = torch.Generator().manual_seed(7)
    for degree in range(1, 128):
        pts = torch.cat([SPECIAL[degree % len(SPECIAL)][None], anchors.uniform_random(1, g)]).double()
        out = locdiff.decode(locdiff.encode(pts.float(), degree))
        err = geo.great_circle_km(out.double(), pts)
        assert float(err.max()) < 0.1, (degree, pts, out)


@given(st.lists(st.tuples(st.floats(-90, 90), st.floats(-180, 180)), min_size=1, max_size=4), st.sampled_from([4, 15, 31]))
def test_round_trip_property(points, degree):
    pts = torch.tensor(points, dtype=torch.float64)
    out = locdiff.decode(locdiff.encode(pts, degree))
    assert float(geo.great_circle_km(out, pts).max()) < 0.1


def test_noise_drift_table7_analogue():
    """Gaussian noise of variance 0.01 on an L=47 encoding moves the decoded point ≤ 3 km (median)."""
    g = torch.Generator().manual_seed(3)
    pts = anchors.uniform_random(100, g).double()
    e = locdiff.encode(pts, 47).float()
    noisy = e + 0.1 * torch.randn(e.shape, generator=g)
    drift = geo.great_circle_km(locdiff.decode(noisy).double(), pts)
    assert float(drift.median()) <= 3.0


def test_multimodal_vector_decodes_to_heavier_mode():
    a, b = torch.tensor([[40.0, -100.0]]), torch.tensor([[-20.0, 30.0]])
    e = locdiff.encode(a, 23) + 0.8 * locdiff.encode(b, 23)
    out = locdiff.decode(e)
    assert float(geo.great_circle_km(out, a)) < 50


def test_grid_logits_match_direct_evaluation():
    e = torch.randn(3, 100, dtype=torch.float64)
    lat, lon, _ = anchors.equiangular(12, 20)
    pts = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    direct = (e @ real_sh(pts, 9).T).reshape(3, 12, 20)
    torch.testing.assert_close(grid_logits(e, 12, 20), direct, atol=1e-12, rtol=0)


def test_anchor_decoder_on_fibonacci_grid():
    pts = torch.tensor([[10.0, 20.0], [-60.0, -170.0], [0.0, 179.9]])
    grid = anchors.fibonacci(100_000)
    spacing_km = math.sqrt(4 * math.pi / grid.shape[0]) * geo.EARTH_RADIUS_KM
    out = anchor_decode(locdiff.encode(pts, 31), grid, chunk=20_000)
    assert float(geo.great_circle_km(out.double(), pts.double()).max()) < spacing_km


def eq17_by_brute_force(e: torch.Tensor, gallery: torch.Tensor, rho_km: float) -> torch.Tensor:
    """Eq. 17 literally: every anchor's window sum of exp(f) over every anchor within ρ; ties to the densest."""
    f = e.double() @ real_sh(gallery.double(), math.isqrt(e.shape[-1]) - 1).T  # [B, N]
    near = (geo.pairwise_km(gallery.double(), gallery.double()) < rho_km).double()  # [N, N]
    out = []
    for fb in f:
        window = near @ torch.exp(fb - fb.max())
        ties = window >= window.max() * (1 - 1e-12)
        out.append(gallery[torch.where(ties, fb, -torch.inf).argmax()])
    return torch.stack(out)


def test_anchor_decoder_is_eq17_whatever_the_chunking():
    g = torch.Generator().manual_seed(4)
    pts = anchors.uniform_random(6, g, dtype=torch.float64)
    e = locdiff.encode(pts, 9).double()
    e = torch.cat((e, e[:3] + 0.6 * e[3:], e + 0.05 * torch.randn(e.shape, generator=g, dtype=torch.float64)))
    rho = default_radius_km(9)
    for gallery in (anchors.fibonacci(1500), anchors.uniform_random(500, g, dtype=torch.float64)):
        ref = eq17_by_brute_force(e, gallery, rho)
        for kw in (dict(cap=gallery.shape[0], chunk=499, batch=5), dict(cap=gallery.shape[0]), dict(chunk=97, batch=1)):
            out = anchor_decode(e, gallery, **kw)
            assert float(geo.great_circle_km(out.double(), ref.double()).max()) < 1e-6, kw
    seen = []
    anchor_decode(e[:2], anchors.fibonacci(1000), chunk=300, on_chunk=seen.append)
    assert seen == [300, 300, 300, 100]


def test_density_grid_is_normalised_and_peaks_at_point():
    p = torch.tensor([[35.0, 139.0]])
    g = density_grid(locdiff.encode(p, 47)[0], 90, 180)
    assert abs(float(g.mass.sum()) - 1) < 1e-9
    i = int(g.mass.flatten().argmax())
    cell = torch.tensor([[g.lat[i // 180], g.lon[i % 180]]])
    assert float(geo.great_circle_km(cell, p.double())) < 150
    # a sharp L=47 peak keeps its mass on a coarse grid: most within 300 km
    cells = torch.stack(torch.meshgrid(g.lat, g.lon, indexing="ij"), -1).reshape(-1, 2)
    near = geo.great_circle_km(cells, p.double()) < 300
    assert float(g.mass.flatten()[near].sum()) > 0.95


def test_mixture_modes_and_credible_regions():
    pts = torch.tensor([[48.85, 2.35], [48.85, 2.35], [40.7, -74.0], [-33.9, 151.2]])
    e = locdiff.encode(pts, 31)
    modes = find_modes(e, top=3)
    assert len(modes) == 3
    assert float(geo.great_circle_km(torch.tensor([modes[0].lat, modes[0].lon]), pts[0].double())) < 5
    assert modes[0].mass == pytest.approx(0.5, abs=0.05)
    assert modes[1].mass == pytest.approx(0.25, abs=0.05)
    assert sum(m.mass for m in modes) <= 1 + 1e-9  # masses are disjoint
    grid = density_grid(e, 90, 180)
    t = credible_thresholds(grid, (0.5, 0.9))
    assert t[0.5] >= t[0.9]
    assert float(grid.mass[grid.density >= t[0.9]].sum()) >= 0.9


@pytest.mark.parametrize("degree,gain", [(31, 1.0), (15, 0.3)])  # sharp peaks; broad lobes (all cells hot)
def test_product_logits_match_direct_harmonics_and_both_integration_paths_agree(monkeypatch, degree, gain):
    from locdiff.core import density

    g = torch.Generator().manual_seed(2)
    e = torch.randn(24**2, generator=g, dtype=torch.float64)
    lat = torch.rand(7, generator=g, dtype=torch.float64) * 180 - 90
    lon = torch.rand(5, generator=g, dtype=torch.float64) * 360 - 180
    pts = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    torch.testing.assert_close(density._product_logits(e, lat, lon), (real_sh(pts, 23) @ e).reshape(7, 5), atol=1e-11, rtol=0)
    # a mixture of sharp peaks (one across the antimeridian): the separable sub-grid path and the per-point path agree
    codes = gain * locdiff.encode(torch.tensor([[35.0, 139.0], [-10.0, 179.9], [70.0, -20.0]]), degree).double()
    calls = []
    product = density._product_logits
    monkeypatch.setattr(density, "_product_logits", lambda *a: calls.append(1) or product(*a))
    fast = density_grid(codes, 90, 180)
    assert len(calls) == 3  # one separable sub-grid per sample
    real_unique = torch.unique

    def scattered(x, **kw):  # make every hot set look scattered, forcing the per-point path
        out = real_unique(x, **kw)
        return (torch.arange(10**4), *out[1:]) if kw.get("return_inverse") else out

    monkeypatch.setattr(density.torch, "unique", scattered)
    slow = density_grid(codes, 90, 180)
    assert len(calls) == 3
    torch.testing.assert_close(fast.mass, slow.mass, atol=1e-12, rtol=1e-9)


def test_pruning_weak_grid_peaks_never_changes_the_decoded_mode(monkeypatch):
    from locdiff.core import decoding

    g = torch.Generator().manual_seed(5)
    cases = []
    for degree in (3, 9, 23):
        pts = anchors.uniform_random(16, g, dtype=torch.float64)
        e = locdiff.encode(pts, degree).double()
        cases += [e, 0.55 * e[:8] + 0.45 * e[8:], torch.randn(12, (degree + 1) ** 2, generator=g, dtype=torch.float64)]
    pruned = [decoding.decode(x) for x in cases]
    monkeypatch.setattr(decoding, "_PRUNE", math.inf)
    for x, p in zip(cases, pruned):
        assert float(geo.great_circle_km(decoding.decode(x).double(), p.double()).max()) < 1e-6


def test_logits_at_points_equal_the_full_harmonic_product():
    """``_logits_at``: each row's code against the harmonics at its own points, Y(points) · e."""
    g = torch.Generator().manual_seed(3)
    e = torch.randn(5, 64, generator=g, dtype=torch.float64)
    pts = torch.stack([torch.rand(5, 9, generator=g) * 180 - 90, torch.rand(5, 9, generator=g) * 360 - 180], -1).double()
    want = torch.einsum("mkd,md->mk", real_sh(pts, 7), e)
    assert torch.allclose(_logits_at(pts, e, 7), want, rtol=1e-12, atol=1e-12)
    assert torch.equal(_logits_at(pts[2:3], e[2:3], 7), _logits_at(pts, e, 7)[2:3])  # a row's value does not depend on the others
