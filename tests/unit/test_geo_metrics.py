"""Geometry and metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from locdiff.core import geo, metrics


def test_great_circle_known_distances():
    assert float(geo.great_circle_km(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 90.0]))) == pytest.approx(
        math.pi / 2 * geo.EARTH_RADIUS_KM
    )
    assert float(geo.great_circle_km(torch.tensor([90.0, 0.0]), torch.tensor([-90.0, 0.0]))) == pytest.approx(
        math.pi * geo.EARTH_RADIUS_KM
    )


def test_antimeridian_neighbours_are_close():
    d = geo.great_circle_km(torch.tensor([0.0, 179.95], dtype=torch.float64), torch.tensor([0.0, -179.95], dtype=torch.float64))
    assert float(d) == pytest.approx(0.1 * math.pi / 180 * geo.EARTH_RADIUS_KM, rel=1e-6)


def test_geoscore_hand_values():
    s = metrics.geoscore(torch.tensor([0.0, 1492.7, 20000.0], dtype=torch.float64))
    assert s.tolist() == pytest.approx([5000.0, 5000.0 / math.e, 5000.0 * math.exp(-20000 / 1492.7)])


def test_accuracy_and_summary():
    truth = torch.zeros(4, 2, dtype=torch.float64)
    deg = 1 / (math.pi / 180 * geo.EARTH_RADIUS_KM)  # degrees per km along the equator
    pred = torch.tensor([[0.0, 0.5 * deg], [0.0, 20 * deg], [0.0, 700 * deg], [0.0, 3000 * deg]], dtype=torch.float64)
    s = metrics.summarize(pred, truth)
    assert s["acc@1km"] == 25.0 and s["acc@25km"] == 50.0 and s["acc@200km"] == 50.0
    assert s["acc@750km"] == 75.0 and s["acc@2500km"] == 75.0
    assert s["median_km"] == pytest.approx(360.0, rel=1e-6)


def test_spherical_mean():
    pts = torch.tensor([[0.0, 10.0], [0.0, -10.0], [10.0, 0.0], [-10.0, 0.0]], dtype=torch.float64)
    centre = geo.spherical_mean(pts)
    assert float(geo.great_circle_km(centre, torch.zeros(2, dtype=torch.float64))) < 1e-6
    across = geo.spherical_mean(torch.tensor([[0.0, 179.0], [0.0, -179.0]], dtype=torch.float64))
    assert abs(float(across[1])) == pytest.approx(180.0)


def test_random_guess_baseline_matches_monte_carlo():
    from locdiff.core.anchors import uniform_random

    g = torch.Generator().manual_seed(0)
    d = geo.great_circle_km(uniform_random(200_000, g, dtype=torch.float64), uniform_random(200_000, g, dtype=torch.float64))
    expected = metrics.random_guess_accuracy()["acc@2500km"]
    assert float((d <= 2500).double().mean() * 100) == pytest.approx(expected, abs=0.2)


def test_summary_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="need two \\[N, 2\\] tensors"):
        metrics.summarize(torch.zeros(3, 2), torch.zeros(2, 2))
