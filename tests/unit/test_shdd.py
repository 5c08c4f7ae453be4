"""SHDD encoding, log-density and the KL measure (paper eq. 8–12, 16)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import locdiff
from locdiff.core import anchors
from locdiff.core.shdd import encode, kl, log_density, logits, target_logits

ANCHORS = anchors.fibonacci(4096)


def test_encode_shape_and_public_api():
    e = locdiff.encode(torch.tensor([[48.85, 2.35], [-33.9, 151.2]]), 15)
    assert e.shape == (2, 256) and e.dtype == torch.float32


def test_longitudes_wrap():
    a = encode(torch.tensor([[10.0, 190.0]], dtype=torch.float64), 20)
    b = encode(torch.tensor([[10.0, -170.0]], dtype=torch.float64), 20)
    c = encode(torch.tensor([[10.0, 910.0]], dtype=torch.float64), 20)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-11, rtol=0)


@pytest.mark.parametrize(
    "latlon,degree,match",
    [
        ([[95.0, 0.0]], 5, "latitude .*= 95.0 is outside \\[-90, 90\\]"),
        ([[0.0, float("nan")]], 5, "is nan: coordinates must be finite"),
        ([[1.0, 2.0, 3.0]], 5, "shape \\[..., 2\\]"),
        ([[0.0, 0.0]], -2, "degree must be >= 0, got -2"),
    ],
)
def test_encode_rejects_bad_input(latlon, degree, match):
    with pytest.raises(ValueError, match=match):
        encode(torch.tensor(latlon), degree)


def test_bad_coefficient_widths_and_values():
    with pytest.raises(ValueError, match="width 10 is not \\(L\\+1\\)\\^2"):
        locdiff.decode(torch.zeros(2, 10))
    bad = torch.zeros(1, 16)
    bad[0, 3] = float("inf")
    with pytest.raises(ValueError, match="coeffs\\[0, 3\\] is inf"):
        locdiff.decode(bad)


def test_log_density_normalised_and_stable_at_l127():
    target = torch.tensor([[40.0, -100.0]])
    e = encode(target, 127)
    f = logits(e, torch.cat([target.double(), ANCHORS]))
    assert float(f.max()) == pytest.approx(128**2 / (4 * math.pi), rel=1e-5)  # ≈ 1304: exp overflows float32
    lq = log_density(e, ANCHORS)
    assert torch.isfinite(lq).all()
    total = torch.logsumexp(lq + math.log(4 * math.pi / ANCHORS.shape[0]), -1)
    assert abs(float(total)) < 1e-5


def test_target_logits_are_the_encoding_dot_products():
    t = torch.tensor([[12.0, 34.0], [-80.0, 179.0]], dtype=torch.float64)
    a = anchors.fibonacci(300)
    direct = encode(t, 23) @ encode(a, 23).T
    torch.testing.assert_close(target_logits(t, a, 23), direct, atol=1e-10, rtol=0)


def test_kl_zero_at_target_and_positive_elsewhere():
    t = torch.tensor([[10.0, 20.0], [-45.0, 170.0], [89.0, 0.0]])
    e = encode(t, 31)
    assert float(kl(e, t, ANCHORS).abs().max()) < 1e-4
    moved = encode(t + torch.tensor([-3.0, 3.0]), 31)
    assert bool((kl(moved, t, ANCHORS) > 1.0).all())


@given(st.integers(0, 2**31 - 1), st.sampled_from([3, 15, 47]), st.floats(0.01, 30.0))
def test_kl_non_negative_for_any_vector(seed, degree, scale):
    g = torch.Generator().manual_seed(seed)
    e = scale * torch.randn(4, (degree + 1) ** 2, generator=g)
    t = anchors.uniform_random(4, g)
    value = kl(e, t, anchors.uniform_random(512, g))
    assert torch.isfinite(value).all() and bool((value >= 0).all())


def test_kl_gradients_finite_at_l127_float32():
    t = torch.tensor([[10.0, 20.0], [89.99, -179.0]])
    e = (encode(t, 127) + 0.3 * torch.randn(2, 128**2)).requires_grad_()
    kl(e, t, anchors.uniform_random(2048, torch.Generator().manual_seed(0))).sum().backward()
    assert torch.isfinite(e.grad).all() and float(e.grad.abs().sum()) > 0


def test_no_nan_or_inf_at_l255_float32():
    t = torch.tensor([[90.0, 0.0], [-89.9, 179.99], [0.0, -180.0]])
    e = (encode(t, 255) * 3.0).requires_grad_()
    a = anchors.uniform_random(1024, torch.Generator().manual_seed(1))
    value = kl(e, t, a)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(e.grad).all()
    assert torch.isfinite(log_density(e.detach(), a)).all()


def test_chunked_logits_match_and_backprop(monkeypatch):
    """The anchor chunking (memory bound) gives the same values and gradients as one block."""
    import locdiff.core.shdd as shdd

    t = torch.tensor([[5.0, 5.0], [-20.0, 100.0]], dtype=torch.float64)
    a = anchors.uniform_random(700, torch.Generator().manual_seed(2), dtype=torch.float64)
    e1 = (encode(t, 9) * 0.7).requires_grad_()
    full = kl(e1, t, a)
    full.sum().backward()
    monkeypatch.setattr(shdd, "DEFAULT_CHUNK", 64)
    e2 = e1.detach().clone().requires_grad_()
    chunked = kl(e2, t, a)
    chunked.sum().backward()
    torch.testing.assert_close(full, chunked)
    torch.testing.assert_close(e1.grad, e2.grad)


def test_kl_shape_errors():
    with pytest.raises(ValueError, match="kl needs e \\[B, D\\] and target_latlon \\[B, 2\\]"):
        kl(torch.zeros(3, 16), torch.zeros(2, 2), ANCHORS)
