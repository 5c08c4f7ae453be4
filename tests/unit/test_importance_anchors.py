"""Importance-sampled anchors for the SHDD KL (issue #11, part 2): areas, unbiasedness, lower spread."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from locdiff.core import anchors as A
from locdiff.core import shdd

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_efold_radius_is_where_the_peak_drops_by_one_and_shrinks_with_degree():
    from locdiff.core.harmonics import legendre_kernel

    radii = [A.efold_radius(L) for L in (15, 31, 47)]
    assert radii[0] > radii[1] > radii[2]
    assert 6371 * radii[2] == pytest.approx(28, abs=1.5)  # the issue's ≈ 28 km at L = 47
    one = torch.ones(1, dtype=torch.float64)
    for L, r in zip((15, 31, 47), radii):
        drop = float(legendre_kernel(one, L) - legendre_kernel(torch.cos(torch.tensor([r], dtype=torch.float64)), L))
        assert drop == pytest.approx(1.0, abs=0.01)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 40), degree=st.sampled_from([7, 15, 47]), share=st.floats(0.1, 0.9))
def test_areas_are_an_unbiased_quadrature(seed, batch, degree, share):
    g = torch.Generator().manual_seed(seed)
    targets = A.uniform_random(batch, g, dtype=torch.float64)
    a, log_area = A.importance(targets, 4096, g, degree=degree, uniform_share=share, dtype=torch.float64)
    assert a.shape == (4096, 2) and log_area.shape == (4096,)
    assert float(a[:, 0].abs().max()) <= 90 and float(a[:, 1].abs().max()) <= 180
    area = log_area.exp()
    # ∫ 1 = 4π and ∫ z² = 4π/3, each within a few standard errors of one draw
    assert float(area.sum()) == pytest.approx(4 * math.pi, rel=0.12)
    z = torch.sin(torch.deg2rad(a[:, 0]))
    assert float((area * z.square()).sum()) == pytest.approx(4 * math.pi / 3, rel=0.2)


def test_cap_anchors_fall_inside_their_caps_and_get_small_areas():
    g = torch.Generator().manual_seed(0)
    target = torch.tensor([[48.85, 2.35]], dtype=torch.float64)
    a, log_area = A.importance(target, 1000, g, degree=47, uniform_share=0.5, dtype=torch.float64)
    caps, uniform = a[500:], a[:500]
    cos = (torch.sin(torch.deg2rad(caps[:, 0])) * math.sin(math.radians(48.85))
           + torch.cos(torch.deg2rad(caps[:, 0])) * math.cos(math.radians(48.85)) * torch.cos(torch.deg2rad(caps[:, 1] - 2.35)))
    assert float(torch.arccos(cos.clamp(-1, 1)).max()) <= 16 * A.efold_radius(47) + 1e-9
    assert float(log_area[500:].max()) < float(log_area[:500].min())  # dense near the target: small areas


def _case(degree: int, g: torch.Generator, far: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and a prediction peaking ~60 km from each, with ``far`` of its weight at another site."""
    targets = A.uniform_random(16, g, dtype=torch.float64).clamp(-80, 80)
    near = targets + torch.tensor([0.4, 0.3], dtype=torch.float64)
    return targets, (1 - far) * shdd.encode(near, degree) + far * shdd.encode(A.uniform_random(16, g, dtype=torch.float64), degree)


@torch.no_grad()
def test_weighted_kl_matches_a_fine_lattice_where_the_lattice_resolves_the_peak():
    g = torch.Generator().manual_seed(2)
    targets, e = _case(7, g)  # e-fold radius ≈ 500 km: 50k lattice points (spacing 100 km) are exact enough
    reference = shdd.kl(e, targets, A.fibonacci(50_000))
    a, lw = A.importance(targets, 32_768, g, degree=7, dtype=torch.float64)
    assert torch.allclose(shdd.kl(e, targets, a, lw), reference, rtol=0.03)


@torch.no_grad()
def test_importance_kl_is_steadier_than_uniform_for_sharp_targets():
    """A late-chain prediction (one peak near the target): the caps resolve both normalisers.

    (Mass at a far site is where caps around the *target* cannot help: benchmarks/anchor_variance.py.)
    """
    degree, g = 47, torch.Generator().manual_seed(3)
    targets, e = _case(degree, g, far=0.0)
    a, lw = A.importance(targets, 32_768, g, degree=degree, dtype=torch.float64)
    reference = shdd.kl(e, targets, a, lw)  # self-normalised importance sampling is consistent
    uniform, weighted = [], []
    for _ in range(10):
        uniform.append(shdd.kl(e, targets, A.uniform_random(1024, g, dtype=torch.float64)))
        a, lw = A.importance(targets, 1024, g, degree=degree, dtype=torch.float64)
        weighted.append(shdd.kl(e, targets, a, lw))
    uniform, weighted = torch.stack(uniform), torch.stack(weighted)
    rel_err = lambda x: float(((x - reference) / reference).abs().mean())  # noqa: E731
    assert rel_err(weighted.mean(0)) < 0.25  # 10 draws of spread ≈ 0.46: consistent (uniform: 0.76 off)
    assert rel_err(weighted) < 0.7 * rel_err(uniform)  # steadier per draw at equal anchor count


def test_constant_log_weights_leave_the_kl_unchanged():
    g = torch.Generator().manual_seed(1)
    targets, e = A.uniform_random(5, g, dtype=torch.float64), torch.randn(5, 64, generator=g, dtype=torch.float64)
    a = A.uniform_random(300, g, dtype=torch.float64)
    assert torch.allclose(shdd.kl(e, targets, a), shdd.kl(e, targets, a, torch.full((300,), -7.0, dtype=torch.float64)))


def test_bad_arguments_are_refused():
    t = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="uniform_share"):
        A.importance(t, 100, degree=15, uniform_share=1.0)
    with pytest.raises(ValueError, match="targets"):
        A.importance(torch.tensor([[95.0, 0.0]]), 100, degree=15)
