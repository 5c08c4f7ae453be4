"""Proper scores: exact mixture densities, NLL, energy score and raw HPD coverage."""

from __future__ import annotations

import math

import pytest
import torch

from locdiff.core import geo, scores, shdd
from locdiff.core.decoding import log_normalizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def vmf_code(mu: torch.Tensor, kappa: float, degree: int) -> torch.Tensor:
    """A code whose logit is exactly ``κ cos γ`` (γ: angle to ``mu``): degree-1 harmonics only."""
    e = torch.zeros((degree + 1) ** 2, dtype=torch.float64)
    e[1:4] = kappa * (4 * math.pi / 3) * shdd.encode(mu.double()[None], 1)[0, 1:4]
    return e


def vmf_log_density(mu: torch.Tensor, kappa: float, x: torch.Tensor) -> torch.Tensor:
    cos = torch.cos(geo.central_angle(x.double(), mu.double()))
    log_z = math.log(2 * math.pi / kappa) + kappa + math.log1p(-math.exp(-2 * kappa))  # log(4π sinh κ / κ)
    return kappa * cos - log_z


def random_points(n: int, gen: torch.Generator) -> torch.Tensor:
    z = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    lon = torch.rand(n, generator=gen, dtype=torch.float64) * 360 - 180
    return torch.stack((torch.rad2deg(torch.asin(z)), lon), -1)


def test_uniform_density_scores_log_4pi():
    """Codes with only the l = 0 entry are uniform whatever that entry is: NLL = log 4π everywhere."""
    coeffs = torch.zeros(3, 4, 16, dtype=torch.float64)
    coeffs[:, :, 0] = torch.tensor([0.0, 1.0, -7.0, 30.0])
    truth = torch.tensor([[10.0, 20.0], [-89.0, 179.0], [45.0, -100.0]])
    assert torch.allclose(scores.nll(coeffs, truth), torch.full((3,), math.log(4 * math.pi), dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("kappa", [2.0, 40.0, 800.0])
def test_single_code_density_matches_von_mises_fisher(kappa):
    """κ cos γ has the closed-form normaliser 4π sinh κ / κ, also for a peak far sharper than a grid cell."""
    mu = torch.tensor([37.0, -122.0])
    gen = torch.Generator().manual_seed(1)
    near = mu + 8.0 / math.sqrt(kappa) * torch.randn(20, 2, generator=gen, dtype=torch.float64)
    near[:, 0] = near[:, 0].clamp(-90, 90)
    x = torch.cat((near, random_points(5, gen)))
    e = vmf_code(mu, kappa, 15)
    got = scores.mixture_log_density(e[None, None].expand(len(x), 1, -1), x)
    assert torch.allclose(got, vmf_log_density(mu, kappa, x), atol=1e-4, rtol=0)  # midpoint cells: ~1e-5 nats


def test_mixture_is_equal_weight_average_of_components():
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([60.0, 90.0])
    e = torch.stack((vmf_code(a, 10.0, 4), vmf_code(b, 300.0, 4)))
    x = torch.tensor([[0.0, 0.0], [60.0, 90.0], [30.0, 45.0], [-50.0, 10.0]], dtype=torch.float64)
    want = torch.logsumexp(torch.stack((vmf_log_density(a, 10.0, x), vmf_log_density(b, 300.0, x))), 0) - math.log(2)
    got = scores.mixture_log_density(e[None].expand(4, 2, -1), x)
    assert torch.allclose(got, want, atol=1e-4)
    # several points per prediction give the same values
    many = scores.mixture_log_density(e[None], x[None])
    assert many.shape == (1, 4) and torch.allclose(many[0], want, atol=1e-4)


@pytest.mark.slow
def test_density_of_a_real_code_integrates_to_one():
    """A degree-15 SHDD code (sharp peak) and a random one: ∫ q = 1 on a fine independent quadrature."""
    gen = torch.Generator().manual_seed(3)
    sharp = 2.0 * shdd.encode(torch.tensor([[48.9, 2.3]]), 15)[0].double()  # twice a valid code
    rough = torch.randn(256, generator=gen, dtype=torch.float64)
    n_lat, n_lon = 360, 720
    lat = 90 - (torch.arange(n_lat, dtype=torch.float64) + 0.5) * 180 / n_lat
    lon = -180 + (torch.arange(n_lon, dtype=torch.float64) + 0.5) * 360 / n_lon
    pts = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    area = (torch.cos(torch.deg2rad(pts[:, 0])) * math.radians(180 / n_lat) * math.radians(360 / n_lon))
    for e in (sharp, rough):
        logq = scores.mixture_log_density(e[None, None], pts[None])[0]
        assert float((logq.exp() * area).sum()) == pytest.approx(1.0, abs=2e-4)
    assert log_normalizer(torch.stack((sharp, rough))).shape == (2,)


def test_nll_prefers_the_right_code():
    truth = torch.tensor([[48.9, 2.3], [-33.9, 151.2]])
    right = shdd.encode(truth, 15)[:, None]
    wrong = shdd.encode(truth.flip(0), 15)[:, None]
    assert bool((scores.nll(right, truth) < scores.nll(wrong, truth)).all())
    assert bool((scores.nll(right, truth) < math.log(4 * math.pi)).all())  # sharper than uniform where it should be


def test_energy_score_is_zero_at_the_truth_and_nonnegative():
    gen = torch.Generator().manual_seed(0)
    truth = random_points(50, gen)
    at = truth[:, None].expand(50, 8, 2)
    assert torch.allclose(scores.energy_score(at, truth), torch.zeros(50, dtype=torch.float64), atol=1e-6)
    spread = random_points(50 * 8, gen).reshape(50, 8, 2)
    es = scores.energy_score(spread, truth)
    assert bool((es >= -1e-9).all()) and bool((es > 0).all())
    one = random_points(50, gen)[:, None]
    assert torch.allclose(scores.energy_score(one, truth), geo.great_circle_km(one[:, 0], truth))


def _offset(points: torch.Tensor, km: torch.Tensor, bearing: torch.Tensor) -> torch.Tensor:
    """Points moved ``km`` along ``bearing`` (radians) on the sphere."""
    p = geo.to_xyz(points.double())
    north = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(p)
    east = torch.nn.functional.normalize(torch.cross(north, p, dim=-1), dim=-1)
    nth = torch.cross(p, east, dim=-1)
    a = km / geo.EARTH_RADIUS_KM
    d = torch.cos(bearing)[..., None] * nth + torch.sin(bearing)[..., None] * east
    return geo.to_latlon(torch.cos(a)[..., None] * p + torch.sin(a)[..., None] * d)


def test_energy_score_is_proper_on_average():
    """Truths drawn around a centre: samples from the same law beat shifted, too sharp and too wide ones."""
    gen = torch.Generator().manual_seed(7)
    n, k = 2000, 16
    centre = torch.tensor([20.0, 30.0], dtype=torch.float64).expand(n, 2)

    def draw(scale_km: float, count: int, base: torch.Tensor) -> torch.Tensor:
        km = scale_km * torch.randn(*base.shape[:-1], count, generator=gen, dtype=torch.float64).abs()
        bearing = torch.rand(*base.shape[:-1], count, generator=gen, dtype=torch.float64) * 2 * math.pi
        return _offset(base[..., None, :].expand(*base.shape[:-1], count, 2), km, bearing)

    truth = draw(500.0, 1, centre)[:, 0]
    same = scores.energy_score(draw(500.0, k, centre), truth).mean()
    shifted = scores.energy_score(draw(500.0, k, _offset(centre, torch.full((n,), 400.0), torch.zeros(n))), truth).mean()
    sharp = scores.energy_score(draw(100.0, k, centre), truth).mean()
    wide = scores.energy_score(draw(1500.0, k, centre), truth).mean()
    assert float(same) < float(shifted) and float(same) < float(sharp) and float(same) < float(wide)


def _draw_from_mixture(e: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Exact draws from the mixture of ``e`` [K, D] by rejection from the uniform law (density from scores)."""
    proposals = random_points(20_000, gen)
    logq = scores.mixture_log_density(e[None], proposals[None])[0]
    bound = float(logq.max()) + 0.05
    keep = torch.rand(len(proposals), generator=gen, dtype=torch.float64).log() < logq - bound
    got = proposals[keep]
    assert len(got) >= n
    return got[:n]


@pytest.mark.slow
def test_raw_coverage_of_truths_drawn_from_the_map_matches_the_levels():
    gen = torch.Generator().manual_seed(11)
    centres = torch.tensor([[40.0, 10.0], [35.0, 25.0], [-20.0, 140.0]])
    e = 0.8 * shdd.encode(centres, 6).double()  # three broad, overlapping peaks of unequal shape
    n = 400
    truth = _draw_from_mixture(e, n, gen)
    inside = scores.hpd_coverage(e[None].expand(n, -1, -1), truth, (0.5, 0.9, 0.95), n_lat=90, n_lon=180)
    freq = inside.double().mean(0)
    for a, f in zip((0.5, 0.9, 0.95), freq.tolist()):
        assert abs(f - a) < 4 * math.sqrt(a * (1 - a) / n) + 0.01, (a, f)
    # a map centred elsewhere covers these truths far less often at 50 %
    other = 0.8 * shdd.encode(torch.tensor([[-40.0, -60.0]]), 6).double()
    assert float(scores.hpd_coverage(other[None].expand(n, -1, -1), truth, (0.5,), n_lat=90, n_lon=180).double().mean()) < 0.4


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="coeffs must be"):
        scores.nll(torch.zeros(16), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="latlon must be"):
        scores.nll(torch.zeros(2, 3, 16), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="energy_score needs"):
        scores.energy_score(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="credible levels"):
        scores.hpd_coverage(torch.zeros(1, 1, 4), torch.zeros(1, 2), (0.5, 1.0))


def test_summaries_have_bootstrap_intervals_around_the_mean():
    gen = torch.Generator().manual_seed(2)
    per_item = {"nll": torch.randn(400, generator=gen, dtype=torch.float64) + 3.0, "covered@50": (torch.arange(400) % 2).double()}
    out = scores.summarize_scores(per_item)
    assert out["nll_lo"] < out["nll"] < out["nll_hi"] and out["nll_hi"] - out["nll_lo"] == pytest.approx(2 * 1.96 / 20, rel=0.25)
    assert out["coverage@50"] == pytest.approx(50.0) and out["coverage@50_lo"] < 50.0 < out["coverage@50_hi"]
    table = scores.format_scores_table({"model": out, "accuracy only": {"acc@1km": 1.0}})
    assert "| model | " in table and "accuracy only" not in table and "[" in table
    with pytest.raises(ValueError, match="at least one"):
        scores.bootstrap_interval(torch.zeros(0))


def test_weighted_energy_score_equals_repeated_atoms_and_rejects_bad_weights():
    """Weights (2/3, 1/3) on atoms (a, b) score as the equal-weight sample (a, a, b); equal weights as no weights."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(20, 1, 2, generator=g, dtype=torch.float64) * 60, torch.rand(20, 1, 2, generator=g, dtype=torch.float64) * 60
    truth = torch.rand(20, 2, generator=g, dtype=torch.float64) * 60
    w = torch.tensor([[2 / 3, 1 / 3]], dtype=torch.float64).expand(20, 2)
    assert torch.allclose(scores.energy_score(torch.cat([a, b], 1), truth, w), scores.energy_score(torch.cat([a, a, b], 1), truth))
    assert torch.allclose(scores.energy_score(torch.cat([a, b], 1), truth, torch.full((20, 2), 0.5, dtype=torch.float64)),
                          scores.energy_score(torch.cat([a, b], 1), truth))
    with pytest.raises(ValueError, match="weights must be"):
        scores.energy_score(torch.cat([a, b], 1), truth, torch.ones(20, 3))


def test_accuracy_intervals_bracket_each_accuracy():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(200, 2, generator=g, dtype=torch.float64) * 40
    points = truth + torch.randn(200, 2, generator=g, dtype=torch.float64) * 2
    out = scores.accuracy_intervals(points, truth)
    for km in (1, 25, 200, 750, 2500):
        assert out[f"acc@{km}km_lo"] <= out[f"acc@{km}km"] <= out[f"acc@{km}km_hi"]
    assert 0 < out["acc@200km"] < 100 and out["acc@200km_hi"] - out["acc@200km_lo"] > 1
