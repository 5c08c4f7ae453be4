"""The Fourier/GEMM evaluator of ``real_sh`` against the recurrence: values, kernel identity to L=255,
path selection, blocks, layout."""

from __future__ import annotations

import math

import pytest
import torch

from locdiff.core import harmonics
from locdiff.core.anchors import uniform_random
from locdiff.core.geo import central_angle, validate_latlon
from locdiff.core.harmonics import legendre_kernel, legendre_table, real_sh

EDGE_POINTS = torch.tensor(
    [
        [90.0, 0.0], [-90.0, 37.0], [89.9999, 179.9999], [-89.99, -179.99], [0.0, 180.0], [0.0, -180.0],
        [45.0, 179.9], [-45.0, -179.9], [12.3, 45.6], [-33.9, 151.2], [64.1, -21.9], [1e-6, 0.0],
        [90.0, -180.0], [-90.0, 179.999], [89.0, 0.0], [-89.5, 90.0],
    ],
    dtype=torch.float64,
)
PARTNERS = torch.tensor(
    [
        [89.99, 123.0], [-89.9, -170.0], [89.999, -179.999], [-89.999, 179.0], [0.01, -179.99], [-0.01, 179.99],
        [44.9, -179.95], [-45.1, 179.95], [12.0, 46.0], [-34.0, 151.0], [-64.1, 158.1], [0.0, 0.001],
        [89.9, 0.0], [-89.99, -179.99], [88.9, 0.5], [-89.4, 91.0],
    ],
    dtype=torch.float64,
)
DEGREES = [0, 1, 2, 3, 15, 47, 127, 191, 255]


def _points(dtype: torch.dtype) -> torch.Tensor:
    rand = uniform_random(200, torch.Generator().manual_seed(11), dtype=torch.float64)
    return torch.cat([EDGE_POINTS, PARTNERS, rand]).to(dtype)


def _recurrence(points: torch.Tensor, degree: int, monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setattr(harmonics, "_use_fourier", lambda flat, degree: False)
        return real_sh(points, degree)


@pytest.fixture
def fourier_everywhere(monkeypatch):
    """Force the Fourier/GEMM evaluator for float32 and float64 at every degree."""
    monkeypatch.setattr(harmonics, "FOURIER_MAX_DEGREE", {torch.float32: 10**6, torch.float64: 10**6})


@pytest.mark.parametrize("degree", DEGREES)
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fourier_matches_recurrence(degree, dtype, atol, fourier_everywhere, monkeypatch):
    pts = _points(dtype)
    assert harmonics._use_fourier(pts, degree)
    fast = real_sh(pts, degree)
    slow = _recurrence(pts, degree, monkeypatch)
    assert fast.dtype == dtype and fast.shape == slow.shape
    assert float((fast.double() - slow.double()).abs().max()) <= atol


@pytest.mark.parametrize("degree", [1, 2, 15, 47, 127, 191, 255])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_fourier_kernel_identity_edges(degree, dtype, tol, fourier_everywhere):
    """encode(p)·encode(q) = Σ (2l+1)/4π P_l(cos γ) at/near the poles and across the antimeridian."""
    p, q = EDGE_POINTS.to(dtype), PARTNERS.to(dtype)
    pts_p = torch.cat([p, p, p])
    pts_q = torch.cat([q, p, q.flip(0)])  # neighbours, identical points, far pairs
    dot = (real_sh(pts_p, degree) * real_sh(pts_q, degree)).sum(-1).double()
    # the points really evaluated (float32 inputs are rounded and their longitudes wrapped in float32)
    eff_p, eff_q = validate_latlon(pts_p).double(), validate_latlon(pts_q).double()
    kernel = legendre_kernel(torch.cos(central_angle(eff_p, eff_q)), degree)
    peak = (degree + 1) ** 2 / (4 * math.pi)
    assert float((dot - kernel).abs().max()) <= tol * peak


def test_fourier_tables_reproduce_legendre_table():
    """The cosine/sine series coefficients are exact projections (float64), up to L=255."""
    degree = 255
    wc, ws = harmonics._fourier_tables(degree, torch.float64, "cpu")
    edges = torch.tensor([0.0, math.pi, 1e-9, math.pi - 1e-7], dtype=torch.float64)
    theta = torch.cat([edges, torch.rand(60, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * math.pi])
    table = legendre_table(theta, degree).T  # [(L+1)^2, n]
    k = torch.arange(degree + 1, dtype=torch.float64)
    cos_t, sin_t = torch.cos(k[:, None] * theta), torch.sin(k[:, None] * theta)
    for l in range(degree + 1):
        even, odd = harmonics._fourier_rows(l)
        par = l % 2
        torch.testing.assert_close(wc[l] @ cos_t[par : l + 1 : 2], table[even], atol=5e-11, rtol=0)
        if l:
            torch.testing.assert_close(ws[l] @ sin_t[2 - par : l + 1 : 2], table[odd], atol=5e-11, rtol=0)


def test_path_selection():
    f32 = torch.zeros(3, 2)
    assert harmonics._use_fourier(f32, 47)
    assert harmonics._use_fourier(f32, harmonics.FOURIER_MAX_DEGREE[torch.float32])
    assert not harmonics._use_fourier(f32, 255)  # the recurrence is faster there
    assert not harmonics._use_fourier(f32.double(), 47)  # float64 keeps the recurrence
    assert not harmonics._use_fourier(f32.half(), 47)
    leaf = f32.clone().requires_grad_()
    assert not harmonics._use_fourier(leaf, 47)  # autograd: the differentiable recurrence
    with torch.no_grad():
        assert harmonics._use_fourier(leaf, 47)


def test_grad_mode_values_agree_with_fourier():
    pts = _points(torch.float32)
    fast = real_sh(pts, 47)
    leaf = pts.clone().requires_grad_()
    slow = real_sh(leaf, 47)
    assert float((fast - slow.detach()).abs().max()) <= 1e-5
    slow.square().sum().backward()
    assert torch.isfinite(leaf.grad).all()


def test_blocks_and_chunk_do_not_change_values():
    """Values do not depend on the block a point falls in, nor on ``chunk`` (ignored by this path)."""
    n = harmonics.FOURIER_CHUNK + 37
    pts = uniform_random(n, torch.Generator().manual_seed(5))
    pts[harmonics.FOURIER_CHUNK - 1] = torch.tensor([90.0, 0.0])
    pts[harmonics.FOURIER_CHUNK] = torch.tensor([0.0, -180.0])
    y = real_sh(pts, 31)
    idx = torch.tensor([0, 1, harmonics.FOURIER_CHUNK - 1, harmonics.FOURIER_CHUNK, n - 1])
    alone = real_sh(pts[idx], 31)
    torch.testing.assert_close(y[idx], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(real_sh(pts, 31, chunk=7), y, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layout_is_transposed_coefficient_major(dtype):
    pts = _points(dtype)[:50]
    y = real_sh(pts, 9)
    assert y.shape == (50, 100) and y.T.is_contiguous()
    assert real_sh(torch.zeros(0, 2, dtype=dtype), 5).shape == (0, 36)
    assert real_sh(torch.zeros(3, 4, 2, dtype=dtype), 2).shape == (3, 4, 9)
