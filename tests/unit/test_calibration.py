"""Credible regions, coverage, calibration curves and fitted temperatures."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

import locdiff
from locdiff.core import anchors, geo
from locdiff.core.anchors import equiangular
from locdiff.core.calibration import (
    Calibrator,
    calibration_curve,
    calibration_error,
    cell_index,
    coverage_at,
    evaluate_calibrator,
    fit_calibration,
    hpd_level,
    hpd_levels,
    kde_grid,
    mixture_grid,
)
from locdiff.core.decoding import credible_area_km2, credible_thresholds, density_grid
from locdiff.core.results import DensityGrid


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def grid_from_mass(mass: torch.Tensor) -> DensityGrid:
    n_lat, n_lon = mass.shape
    lat, lon, area = equiangular(n_lat, n_lon)
    mass = mass.double() / mass.sum()
    return DensityGrid(lat=lat, lon=lon, density=mass / area[:, None], mass=mass)


def test_cell_index_of_known_points():
    i, j = cell_index(18, 36, torch.tensor([[89.0, -179.0], [-89.0, 179.0], [0.5, 0.5], [90.0, 180.0]]))
    assert i.tolist() == [0, 17, 8, 0]
    assert j.tolist() == [0, 35, 18, 0]  # lon 180 wraps to -180


def test_density_on_one_known_cell_covers_it_at_every_level_and_nothing_else():
    mass = torch.full((18, 36), 1e-12)
    i, j = cell_index(18, 36, torch.tensor([48.0, 11.0]))
    mass[i, j] = 1.0
    grid = grid_from_mass(mass)
    inside = hpd_level(grid, torch.tensor([48.0, 11.0]))
    outside = hpd_level(grid, torch.tensor([-30.0, -60.0]))
    assert inside == 0.0
    assert outside == pytest.approx(float(grid.mass[i, j]), abs=1e-9)  # only the hot cell is denser, ~all the mass
    assert coverage_at(torch.tensor([inside, outside]), (0.5, 0.9, 0.95)) == {0.5: 0.5, 0.9: 0.5, 0.95: 0.5}


def test_hpd_level_agrees_with_credible_thresholds():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        grid = grid_from_mass(torch.rand(12, 24, generator=g, dtype=torch.float64) ** 4)
        truth = anchors.uniform_random(1, g, dtype=torch.float64)[0]
        u = hpd_level(grid, truth)
        i, j = cell_index(12, 24, truth)
        for level, threshold in credible_thresholds(grid, (0.3, 0.5, 0.9, 0.95)).items():
            assert (u < level) == bool(grid.density[i, j] >= threshold), (trial, level, u)


def test_coverage_curve_and_error_by_hand():
    u = torch.tensor([0.1, 0.3, 0.6, 0.95])
    assert coverage_at(u, (0.5, 0.9, 0.95)) == {0.5: 0.5, 0.9: 0.75, 0.95: 0.75}
    nominal, empirical = calibration_curve(u, (0.2, 0.5, 1.0))
    assert nominal == [0.2, 0.5, 1.0] and empirical == [0.25, 0.5, 1.0]
    assert calibration_error(u, (0.2, 0.5, 1.0)) == pytest.approx((0.05 + 0 + 0) / 3)
    # a uniform u is calibrated
    assert calibration_error(torch.linspace(0.0005, 0.9995, 1000)) < 0.002


def test_mixture_grid_matches_density_grid_at_temperature_one():
    pts = torch.tensor([[48.0, 11.0], [48.5, 12.0], [-10.0, -60.0]])
    e = locdiff.encode(pts, 15).double()
    mine = mixture_grid(e, n_lat=36, n_lon=72, sub=4)
    ref = density_grid(e, 36, 72)
    assert float(mine.mass.sum()) == pytest.approx(1.0)
    assert float((mine.mass - ref.mass).abs().sum()) < 0.03


def test_temperature_widens_the_region():
    e = locdiff.encode(torch.tensor([[10.0, 20.0]]), 15).double()
    areas = []
    for t in (1.0, 4.0, 16.0):
        grid = mixture_grid(e, temperature=t, n_lat=36, n_lon=72, sub=2)
        areas.append(credible_area_km2(grid, credible_thresholds(grid, (0.9,))[0.9]))
    assert areas[0] < areas[1] < areas[2]


def test_encoded_truth_is_covered_and_a_far_truth_is_not():
    truth = torch.tensor([[35.0, 139.0], [35.0, 139.0]])
    e = locdiff.encode(torch.tensor([[35.0, 139.0], [-35.0, -60.0]]), 15)[:, None, :].double()  # [2, K=1, D]
    u = hpd_levels("sample-temperature", [1.0], e, None, truth, n_lat=36, n_lon=72, sub=2)[:, 0]
    assert float(u[0]) < 0.5 and float(u[1]) > 0.99


def test_kde_grid_is_a_normalised_bump_at_the_samples():
    grid = kde_grid(torch.tensor([[0.0, 0.0], [0.0, 1.0]]), 300.0, n_lat=36, n_lon=72, sub=2)
    assert float(grid.mass.sum()) == pytest.approx(1.0)
    i, j = cell_index(36, 72, torch.tensor([0.5, 0.5]))
    flat = int(grid.density.flatten().argmax())
    assert (flat // 72, flat % 72) in {(int(i), int(j)), (int(i) - 1, int(j)), (int(i), int(j) - 1), (int(i) - 1, int(j) - 1)}


def test_batched_levels_match_single_maps():
    g = torch.Generator().manual_seed(1)
    pts = anchors.uniform_random(6, g, dtype=torch.float64)
    e = locdiff.encode(pts, 11).double().reshape(2, 3, -1)
    samples = pts.reshape(2, 3, 2)
    truth = anchors.uniform_random(2, g, dtype=torch.float64)
    shape = dict(n_lat=18, n_lon=36, sub=2)
    for family, params in (("sample-temperature", [1.0, 3.0]), ("mixture-temperature", [0.5, 2.0]), ("kde", [200.0, 2000.0])):
        batched = hpd_levels(family, params, e, samples, truth, **shape)
        for n in range(2):
            for k, p in enumerate(params):
                single = hpd_level(Calibrator(family, p, **shape).grid(e[n], samples[n]), truth[n])
                assert float(batched[n, k]) == pytest.approx(single, abs=1e-5), (family, p, n)


def overconfident(n: int, seed: int, degree: int = 11, k: int = 4, offset_km: float = 1500.0):
    """Each item's K samples are sharp SHDD peaks scattered ~offset_km around a centre that is itself ~offset_km off the truth."""
    g = torch.Generator().manual_seed(seed)
    truth = anchors.uniform_random(n, g, dtype=torch.float64)
    rad = offset_km / geo.EARTH_RADIUS_KM

    def jitter(p, m):
        x = geo.to_xyz(p) + rad * torch.randn(*p.shape[:-1], 3, generator=g, dtype=torch.float64) / math.sqrt(2)
        return geo.to_latlon(x)

    centre = jitter(truth, n)
    samples = jitter(centre[:, None, :].expand(n, k, 2), n)
    coeffs = locdiff.encode(samples.reshape(-1, 2), degree).double().reshape(n, k, -1)
    return coeffs, samples, truth


def test_fitted_temperature_moves_coverage_toward_nominal():
    shape = dict(n_lat=24, n_lon=48, sub=2)
    val = overconfident(80, seed=3)
    test = overconfident(80, seed=4)
    raw = evaluate_calibrator(Calibrator(**shape), *test)
    fit = fit_calibration(*val, families=("sample-temperature",), **shape)
    assert fit.calibrator.family == "sample-temperature" and fit.calibrator.param > 1.0  # overconfident: widen
    assert fit.val_error < fit.raw_val_error
    cal = evaluate_calibrator(fit.calibrator, *test)
    assert raw["coverage@90"] < 75  # the raw maps are overconfident
    assert abs(cal["coverage@90"] - 90) < abs(raw["coverage@90"] - 90)
    assert cal["calibration_error"] < raw["calibration_error"]
    assert cal["median_area_km2@90"] > raw["median_area_km2@90"]


def test_fit_chooses_among_families_and_reports_the_search():
    shape = dict(n_lat=18, n_lon=36, sub=1)
    val = overconfident(30, seed=5)
    fit = fit_calibration(*val, params={"sample-temperature": [1, 4, 16], "mixture-temperature": [1, 4], "kde": [300, 3000]}, refine=False, **shape)
    assert set(fit.search) == {"sample-temperature", "mixture-temperature", "kde"}
    best = min(err for tried in fit.search.values() for _, err in tried)
    assert fit.val_error == pytest.approx(best)
    fit2 = fit_calibration(val[0], None, val[2], families=("kde", "sample-temperature"), params={"sample-temperature": [1, 4]}, refine=False, **shape)
    assert set(fit2.search) == {"sample-temperature"}  # kde needs decoded samples


def test_bad_family_is_rejected():
    with pytest.raises(ValueError):
        Calibrator("bogus", 1.0)
    with pytest.raises(ValueError, match="family"):
        hpd_levels("bogus", [1.0], torch.zeros(1, 1, 4), None, torch.zeros(1, 2))


def test_batched_levels_match_single_maps_for_very_sharp_maps():
    """Diverged samples (coefficients 30x a code) make maps that underflow: the fit and evaluation paths must agree."""
    g = torch.Generator().manual_seed(2)
    pts = anchors.uniform_random(8, g, dtype=torch.float64)
    e = 30 * locdiff.encode(pts, 11).double().reshape(2, 4, -1)
    truth = anchors.uniform_random(2, g, dtype=torch.float64)
    shape = dict(n_lat=18, n_lon=36, sub=2)
    for family, params in (("sample-temperature", [1.0, 40.0]), ("mixture-temperature", [1.0, 50.0, 200.0])):
        batched = hpd_levels(family, params, e, pts.reshape(2, 4, 2), truth, **shape)
        for n in range(2):
            for k, p in enumerate(params):
                single = hpd_level(Calibrator(family, p, **shape).grid(e[n]), truth[n])
                assert float(batched[n, k]) == pytest.approx(single, abs=1e-4), (family, p, n)


def sometimes_wrong(n: int, seed: int, degree: int = 11, k: int = 4, wrong: float = 0.25):
    """Sharp samples near the truth (~150 km) for most items, near a random far place for a ``wrong`` fraction."""
    g = torch.Generator().manual_seed(seed)
    truth = anchors.uniform_random(n, g, dtype=torch.float64)
    far = anchors.uniform_random(n, g, dtype=torch.float64)
    centre = torch.where((torch.rand(n, 1, generator=g, dtype=torch.float64) < wrong), far, truth)
    rad = 150.0 / geo.EARTH_RADIUS_KM
    xyz = geo.to_xyz(centre)[:, None, :] + rad * torch.randn(n, k, 3, generator=g, dtype=torch.float64)
    samples = geo.to_latlon(xyz)
    coeffs = locdiff.encode(samples.reshape(-1, 2), degree).double().reshape(n, k, -1)
    return coeffs, samples, truth


def test_conformal_level_by_hand():
    from locdiff.core.calibration import conformal_level

    scores = [0.1 * i for i in range(1, 10)]  # n = 9
    assert conformal_level(scores, 0.5) == pytest.approx(0.5) and conformal_level(scores, 0.5) > 0.5  # ⌈10·0.5⌉ = 5th
    assert conformal_level(scores, 0.1) > 0.1 and conformal_level(scores, 0.1) == pytest.approx(0.1)  # 1st
    assert conformal_level(scores, 0.95) == 1.0  # ⌈9.5⌉ = 10 > n: the whole sphere
    assert Calibrator().level(0.9) == 0.9  # no scores: the nominal level
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="credible level must be in"):
            conformal_level(scores, bad)


def test_conformal_levels_fix_coverage_that_no_temperature_can():
    """A quarter of the predictions confidently wrong: coverage@90 ≈ 75 % raw; conformal levels bring it to 90 ± 5 %."""
    shape = dict(n_lat=24, n_lon=48, sub=1)
    val, test = sometimes_wrong(200, seed=7), sometimes_wrong(200, seed=8)
    fit = fit_calibration(*val, families=("sample-temperature",), params={"sample-temperature": [0.5, 1, 2, 4, 8]},
                          refine=False, **shape)
    assert len(fit.calibrator.scores) == 200 and "conformal" in fit.calibrator.describe()
    plain = evaluate_calibrator(attrs.evolve(fit.calibrator, scores=()), *test)
    conformal = evaluate_calibrator(fit.calibrator, *test)
    assert plain["coverage@90"] < 85
    assert abs(conformal["coverage@90"] - 90) <= 5
    assert conformal["coverage@50"] >= 45  # ≥ α is the guarantee; ties at the peak cell (u = 0) make it conservative
    assert conformal["calibration_error"] < plain["calibration_error"]
    assert conformal["median_area_km2@90"] > plain["median_area_km2@90"]  # honesty costs area
    no_conformal = fit_calibration(*val, families=("sample-temperature",), params={"sample-temperature": [1, 2]},
                                   refine=False, conformal=False, **shape)
    assert no_conformal.calibrator.scores == ()


def test_calibrator_round_trips_through_a_dict_and_rejects_bad_content():
    cal = Calibrator("kde", 250.0, n_lat=36, n_lon=72, sub=1, scores=(0.3, 0.1, 0.2))
    assert cal.scores == (0.1, 0.2, 0.3)  # kept sorted
    again = Calibrator.from_dict(cal.to_dict(), where="x.json")
    assert again == cal and again.level(0.5) == cal.level(0.5)
    with pytest.raises(ValueError, match=r"x.json: unknown field\(s\) \['tau'\]"):
        Calibrator.from_dict({"family": "kde", "tau": 2}, where="x.json")
    with pytest.raises(ValueError, match="x.json: .*family"):
        Calibrator.from_dict({"family": "magic"}, where="x.json")
    with pytest.raises(ValueError, match="x.json: field 'scores' must hold HPD levels"):
        Calibrator.from_dict({"scores": [0.5, 1.5]}, where="x.json")
    with pytest.raises(ValueError, match="x.json: expected a JSON object"):
        Calibrator.from_dict([1, 2], where="x.json")
