"""services.name_benchmark: the whole workflow on a tiny untrained model and synthetic data (fast, CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from locdiff.config import RunConfig
from locdiff.core import geo
from locdiff.core import multimodal as mm
from locdiff.core.anchors import equiangular
from locdiff.core.bundle import ModelBundle
from locdiff.core.results import DensityGrid
from locdiff.core.splits import split_by_hash
from locdiff.ports import NamedPlaces
from locdiff.services.data import PreparedData
from locdiff.services.name_benchmark import METHODS, NameBenchmarkResult, NameBenchmarkSettings, format_per_name, \
    format_summary, run_name_benchmark, score_map

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _data(n: int = 240) -> PreparedData:
    g = torch.Generator().manual_seed(3)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    latlon = torch.stack((torch.rad2deg(torch.asin(2 * u[:, 0] - 1)), 360 * u[:, 1] - 180), -1)
    cond = torch.cat((geo.to_xyz(latlon).float(), 0.1 * torch.randn(n, 5, generator=g)), 1)
    ids = tuple(f"p{i}" for i in range(n))
    splits = split_by_hash(ids, val=0.2, test=0.1) | {"holdout": torch.empty(0, dtype=torch.long)}
    return PreparedData("tiny", cond, latlon, ids, ids, splits, "fake:xyz")


def _point_map(points: torch.Tensor, weights: torch.Tensor, n_lat: int = 45) -> DensityGrid:
    from locdiff.core.calibration import cell_index

    lat, lon, area = equiangular(n_lat, 2 * n_lat, dtype=torch.float64)
    mass = torch.zeros(n_lat, 2 * n_lat, dtype=torch.float64)
    i, j = cell_index(n_lat, 2 * n_lat, points)
    mass.index_put_((i, j), weights.double(), accumulate=True)
    return DensityGrid(lat=lat, lon=lon, density=mass / area[:, None], mass=mass)


def test_score_map_perfect_and_hopeless_predictions():
    places = torch.tensor([[40.0, -89.0], [-32.0, -64.0]], dtype=torch.float64)
    w = torch.tensor([0.6, 0.4], dtype=torch.float64)
    sites = mm.merge_sites(places, w, 1251.0)
    good, masses = score_map(_point_map(places, w), torch.tensor([3.0, 2.0]), places, w, sites, 1251.0)
    assert good["tv"] == pytest.approx(0.0, abs=1e-12) and good["recall"] == 1.0
    assert masses == pytest.approx([0.6, 0.4, 0.0])
    assert good["nll"] == pytest.approx(-(0.6 * 3.0 + 0.4 * 2.0))
    assert good["cov50"] == pytest.approx(0.6) and good["cov90"] == pytest.approx(1.0)  # the densest cell first
    bad, masses = score_map(_point_map(torch.tensor([[60.0, 90.0]]), torch.ones(1)), torch.full((2,), -9.0), places, w, sites, 1251.0)
    assert bad["tv"] == pytest.approx(1.0) and bad["recall"] == 0.0 and masses[-1] == pytest.approx(1.0)
    assert bad["cov90"] == 0.0


def test_workflow_on_a_tiny_model():
    data = _data()
    config = RunConfig.from_dict({"model": {"degree": 5, "widths": [16, 8], "time_dim": 8, "dropout": 0.0},
                                  "diffusion": {"steps": 10}})
    torch.manual_seed(0)
    bundle = ModelBundle.create(config, data.cond_dim, "fake:xyz", torch.device("cpu"))
    queries = [
        NamedPlaces("twin", "ambiguous", data.latlon[:2], torch.tensor([1e5, 3e5], dtype=torch.float64), ("a", "b")),
        NamedPlaces("single", "control", data.latlon[2:3], torch.tensor([5e4], dtype=torch.float64), ("c",)),
    ]
    cond = data.cond[:3][[0, 2]]
    settings = NameBenchmarkSettings(samples=3, sampler_steps=3, n_lat=18, baseline_steps=20, baseline_cells=(8,), bootstrap=50)
    result = run_name_benchmark(bundle, queries, cond, data, settings, device=torch.device("cpu"), model="tiny")
    assert result.radius_km == pytest.approx(mm.resolution_km(5))
    assert len(result.rows) == len(queries) * len(mm.TRUTHS) * len(METHODS)
    for (query, truth, method), row in result.rows.items():
        assert 0.0 <= row["tv"] <= 1.0 + 1e-9
        assert 0.0 <= row["cov50"] <= row["cov90"] <= 1.0 + 1e-9
        assert math.isfinite(row["nll"])
        assert sum(result.masses[(query, truth, method)]) == pytest.approx(1.0, abs=1e-6)  # sites + elsewhere
    uniform = result.rows[("single", "uniform", "uniform map")]
    assert uniform["nll"] == pytest.approx(math.log(4 * math.pi))
    assert uniform["cov50"] == 1.0  # a flat map: every cell is in every HPD region
    # the uniform map's TV is 1 minus the cap area fraction around the single site (cell-centre rule)
    cap = float(geo.cap_area_km2(result.radius_km)) / (4 * math.pi * geo.EARTH_RADIUS_KM**2)
    assert uniform["tv"] == pytest.approx(1 - cap, abs=0.03)
    twin = next(n for n in result.names if n["query"] == "twin")
    far = float(geo.great_circle_km(data.latlon[0], data.latlon[1])) >= result.radius_km
    assert twin["site_weights_population"] == (pytest.approx([0.25, 0.75]) if far else pytest.approx([1.0]))
    text = format_summary(result)
    assert "ambiguous names (1), uniform truth" in text and "paired 95 % bootstrap" in text
    assert "| single | control | 1 | 1 |" in format_per_name(result, "uniform")
    summary = result.summary("ambiguous", "uniform")["uniform map"]
    assert summary["nll_median"] == pytest.approx(math.log(4 * math.pi)) and summary["names"] == 1
    again = NameBenchmarkResult.from_dict(json.loads(json.dumps(result.to_dict(), default=float)))
    assert again.rows == result.rows and format_summary(again) == text
    with pytest.raises(ValueError, match="one embedding per query"):
        run_name_benchmark(bundle, queries, cond[:1], data, settings, device=torch.device("cpu"))
