"""Diffusion in SHDD space: schedules, forward process, x0 projections and both samplers."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from locdiff.core import shdd
from locdiff.core.decoding import decode, grid_argmax
from locdiff.core.diffusion import (
    DEFAULT_PROJECTION, PROJECTIONS, SAMPLERS, Diffusion, Schedule, cosine_betas, linear_betas, log_snr, logsnr_times, project_codes,
    sampling_times,
)
from locdiff.core.geo import great_circle_km
from locdiff.core.sampling import PredictSettings

SCALE = math.sqrt(4 * math.pi)
lats = st.floats(-89.0, 89.0)
lons = st.floats(-179.9, 179.9)


@pytest.mark.parametrize("make", [cosine_betas, linear_betas])
@pytest.mark.parametrize("steps", [10, 100, 1000])
def test_schedules_run_from_clean_to_noise(make, steps: int) -> None:
    betas = make(steps)
    abar = torch.cumprod(1 - betas, 0)
    assert betas.shape == (steps,) and bool((betas > 0).all()) and bool((betas < 1).all())
    assert bool((abar[1:] < abar[:-1]).all())
    assert abar[0] > 0.97 and abar[-1] < 0.01


def test_schedule_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown noise schedule"):
        Schedule.make("quadratic", 10)
    with pytest.raises(ValueError, match="at least 2 steps"):
        Schedule.make("cosine", 1)


def test_q_sample_mixes_signal_and_noise_by_the_schedule() -> None:
    diff = Diffusion(Schedule.make("cosine", 50))
    x0, noise = torch.ones(3, 4), torch.full((3, 4), 2.0)
    t = torch.tensor([0, 25, 49])
    abar = diff.schedule.alphas_cumprod[t].float()[:, None]
    expect = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    torch.testing.assert_close(diff.q_sample(x0, t, noise), expect)


def _codes(latlon: torch.Tensor, degree: int) -> torch.Tensor:
    return shdd.encode(latlon, degree).double() * SCALE


@settings(max_examples=30, deadline=None)
@given(lat=lats, lon=lons, degree=st.integers(1, 20), kind=st.sampled_from(["none", "clip", "norm", "degree"]))
def test_valid_codes_are_fixed_points(lat: float, lon: float, degree: int, kind: str) -> None:
    x = _codes(torch.tensor([[lat, lon]], dtype=torch.float64), degree)
    torch.testing.assert_close(project_codes(x, kind), x, atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), degree=st.integers(1, 15))
def test_degree_projection_gives_every_block_its_code_norm(seed: int, degree: int) -> None:
    x = torch.randn(5, (degree + 1) ** 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 7
    out = project_codes(x, "degree")
    for l in range(degree + 1):
        block = out[:, l * l : (l + 1) ** 2]
        torch.testing.assert_close(block.norm(dim=1), torch.full((5,), math.sqrt(2 * l + 1), dtype=torch.float64))
    assert bool((out[:, 0] == 1).all())  # Y_00 · sqrt(4π) = 1
    torch.testing.assert_close(out.norm(dim=1), torch.full((5,), degree + 1.0, dtype=torch.float64))
    torch.testing.assert_close(project_codes(out, "degree"), out)  # idempotent
    # directions within each degree block are kept
    for l in range(1, degree + 1):
        cos = torch.nn.functional.cosine_similarity(out[:, l * l : (l + 1) ** 2], x[:, l * l : (l + 1) ** 2], dim=1)
        torch.testing.assert_close(cos, torch.ones(5, dtype=torch.float64))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), degree=st.integers(1, 15), sites=st.integers(1, 5))
def test_clip_leaves_every_mixture_of_codes_alone(seed: int, degree: int, sites: int) -> None:
    """What an exact denoiser predicts (a convex mix of codes) is a fixed point of clip; longer blocks shrink to a code's."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.stack([torch.rand(sites, generator=g) * 180 - 90, torch.rand(sites, generator=g) * 360 - 180], 1).double()
    w = torch.rand(3, sites, generator=g, dtype=torch.float64)
    mix = (w / w.sum(1, keepdim=True)) @ _codes(pts, degree)
    torch.testing.assert_close(project_codes(mix, "clip"), mix)
    assert not torch.allclose(project_codes(mix, "degree"), mix) or sites == 1  # degree inflates mixtures
    one = _codes(pts[:1], degree)
    torch.testing.assert_close(project_codes(one * 5 + torch.tensor([7.0] + [0.0] * (one.shape[1] - 1), dtype=one.dtype), "clip"), one)


def test_norm_projection_rescales_to_code_length() -> None:
    x = torch.randn(4, 64, dtype=torch.float64) * 30
    out = project_codes(x, "norm")
    torch.testing.assert_close(out.norm(dim=1), torch.full((4,), 8.0, dtype=torch.float64))
    torch.testing.assert_close(out / out.norm(dim=1, keepdim=True), x / x.norm(dim=1, keepdim=True))


@settings(max_examples=25, deadline=None)
@given(lat=lats, lon=lons, degree=st.integers(3, 20), gain=st.floats(0.05, 40.0))
def test_snap_lands_on_the_code_of_the_grid_point_nearest_the_peak(lat: float, lon: float, degree: int, gain: float) -> None:
    """A blurred, rescaled code (any positive gain, any l=0 offset) snaps to a valid code within one grid cell."""
    truth = torch.tensor([[lat, lon]], dtype=torch.float64)
    x = _codes(truth, degree) * gain
    x[:, 0] += 5.0
    out = project_codes(x, "snap")
    cell_km = 180.0 / (4 * (degree + 1)) * 111.2
    assert float(great_circle_km(decode(out.float()).double(), truth)[0]) <= cell_km  # half a diagonal, really
    assert float(great_circle_km(grid_argmax(x, 4 * (degree + 1)), truth)[0]) <= cell_km
    torch.testing.assert_close(project_codes(out, "degree"), out, atol=1e-5, rtol=1e-5)  # a valid code


def test_projection_errors_are_specific() -> None:
    with pytest.raises(ValueError, match="unknown x0 projection 'clamp'"):
        project_codes(torch.zeros(1, 16), "clamp")
    with pytest.raises(ValueError, match=r"\(L\+1\)\^2 entries; got 15"):
        project_codes(torch.zeros(1, 15), "degree")
    with pytest.raises(ValueError):
        Diffusion(Schedule.make("cosine", 10), projection="clamp")


def test_predict_settings_accepts_exactly_the_projections() -> None:
    assert PredictSettings().projection == DEFAULT_PROJECTION  # prediction.py cannot import diffusion (cycle)
    for kind in PROJECTIONS:
        assert PredictSettings(projection=kind).projection == kind
    with pytest.raises(ValueError):
        PredictSettings(projection="clamp")


class Oracle(torch.nn.Module):
    """A perfect x0 predictor for one location per condition row (cond = [lat, lon])."""

    def __init__(self, degree: int, gain: float = 1.0) -> None:
        super().__init__()
        self.degree, self.gain = degree, gain

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return shdd.encode(cond, self.degree).to(x.dtype) * SCALE * self.gain


@pytest.mark.parametrize("sampler,steps", [("ddim", 20), ("ddim", 1), ("ddpm", 50), ("dpmpp2m", 10), ("dpmpp2m-sde", 10), ("dpmpp2m", 2)])
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_a_perfect_denoiser_is_sampled_back_exactly(sampler: str, steps: int, projection: str) -> None:
    degree = 11
    diff = Diffusion(Schedule.make("cosine", 50), projection=projection)
    truth = torch.tensor([[48.85, 2.35], [-33.9, 151.2], [64.1, -21.9], [0.0, 179.9]])
    e = diff.sample(Oracle(degree), truth, dim=(degree + 1) ** 2, sampler=sampler, steps=steps,
                    generator=torch.Generator().manual_seed(0))
    assert e.shape == (4, (degree + 1) ** 2)
    assert float(great_circle_km(decode(e).double(), truth.double()).max()) < 1.0


def test_projection_removes_the_drift_an_overconfident_denoiser_causes() -> None:
    """x0 predictions 10× too long (the KL barely sees length) blow up the chain unless projected."""
    degree = 7
    truth = torch.tensor([[10.0, 20.0]] * 8)
    base = Diffusion(Schedule.make("cosine", 50), projection="none")
    kw = dict(dim=(degree + 1) ** 2, sampler="ddpm", generator=torch.Generator().manual_seed(1))
    raw = base.sample(Oracle(degree, gain=10.0), truth, **kw)
    code_norm = (degree + 1) / SCALE
    assert float(raw.norm(dim=1).min()) > 5 * code_norm
    for kind in ("degree", "clip"):
        fixed = attrs.evolve(base, projection=kind).sample(Oracle(degree, gain=10.0), truth,
                                                           **(kw | {"generator": torch.Generator().manual_seed(1)}))
        torch.testing.assert_close(fixed.norm(dim=1), torch.full((8,), code_norm), rtol=1e-4, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(total=st.integers(2, 150), count=st.integers(1, 160), kind=st.sampled_from(["cosine", "linear"]))
def test_logsnr_times_are_distinct_descending_and_span_the_chain(total: int, count: int, kind: str) -> None:
    sched = Schedule.make(kind, total)
    times = logsnr_times(sched, count)
    assert len(times) == max(2, min(count, total)) and times[0] == total - 1 and times[-1] == 0
    assert all(a > b for a, b in zip(times, times[1:]))
    lam = log_snr(sched)
    assert bool((lam[1:] < lam[:-1]).all())


def test_logsnr_spacing_spends_calls_at_high_noise() -> None:
    """Cosine, 100 steps: λ moves fastest near t = 99, where modes are decided; DDIM's even grid has 2 steps above 90."""
    sched = Schedule.make("cosine", 100)
    assert logsnr_times(sched, 15) == [99, 98, 97, 96, 94, 90, 81, 65, 43, 24, 12, 5, 2, 1, 0]
    assert sum(t >= 90 for t in sampling_times(sched, "ddim", 20)) == 2
    assert sampling_times(sched, "ddpm", None) == list(range(99, -1, -1))
    assert len(sampling_times(sched, "dpmpp2m", None)) == 20 and sampling_times(sched, "dpmpp2m-sde", 100) == list(range(99, -1, -1))
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sampling_times(sched, "euler", 10)


def test_ddim_with_eta_zero_is_deterministic_and_ddpm_is_not() -> None:
    class Blurry(torch.nn.Module):  # predicts a mixture of two places, weighted by the noisy input
        def forward(self, x, t, cond):
            a = shdd.encode(torch.tensor([[0.0, 0.0]]), 5).to(x.dtype) * SCALE
            b = shdd.encode(torch.tensor([[0.0, 90.0]]), 5).to(x.dtype) * SCALE
            w = torch.sigmoid((x * (a - b)).sum(1, keepdim=True))
            return w * a + (1 - w) * b

    diff = Diffusion(Schedule.make("cosine", 30))
    cond = torch.zeros(16, 3)
    for sampler in ("ddim", "dpmpp2m"):
        one = diff.sample(Blurry(), cond, dim=36, sampler=sampler, generator=torch.Generator().manual_seed(3))
        two = diff.sample(Blurry(), cond, dim=36, sampler=sampler, noise=lambda shape: torch.randn(shape, generator=torch.Generator().manual_seed(3)))
        torch.testing.assert_close(one, two)  # only the start noise matters
    for sampler in ("ddpm", "dpmpp2m-sde"):
        ends = decode(diff.sample(Blurry(), cond, dim=36, sampler=sampler, generator=torch.Generator().manual_seed(4)))
        # both places are reached by some chains: the sampler draws, it does not average
        near_a = great_circle_km(ends.double(), torch.tensor([[0.0, 0.0]]).double()) < 500
        near_b = great_circle_km(ends.double(), torch.tensor([[0.0, 90.0]]).double()) < 500
        assert bool((near_a | near_b).all()) and bool(near_a.any()) and bool(near_b.any())


def test_unknown_sampler() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        Diffusion(Schedule.make("cosine", 10)).sample(Oracle(3), torch.zeros(1, 2), dim=16, sampler="euler")
