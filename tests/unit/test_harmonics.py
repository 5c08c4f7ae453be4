"""Real spherical harmonics: reference values, orthonormality, the kernel identity to L=255, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import sph_harm_y

from locdiff.core.geo import central_angle
from locdiff.core.harmonics import degree_from_width, legendre_kernel, num_coeffs, real_sh, sh_index

EDGE_POINTS = torch.tensor(
    [
        [90.0, 0.0], [-90.0, 37.0], [89.9999, 179.9999], [-89.99, -179.99], [0.0, 180.0], [0.0, -180.0],
        [45.0, 179.9], [-45.0, -179.9], [12.3, 45.6], [-33.9, 151.2], [64.1, -21.9], [1e-6, 0.0],
    ],
    dtype=torch.float64,
)
# partners near each edge point (same pole, across the antimeridian, ...)
PARTNERS = torch.tensor(
    [
        [89.99, 123.0], [-89.9, -170.0], [89.999, -179.999], [-89.999, 179.0], [0.01, -179.99], [-0.01, 179.99],
        [44.9, -179.95], [-45.1, 179.95], [12.0, 46.0], [-34.0, 151.0], [-64.1, 158.1], [0.0, 0.001],
    ],
    dtype=torch.float64,
)


def scipy_real_sh(latlon: np.ndarray, degree: int) -> np.ndarray:
    """Reference real SH from scipy's complex ones (Condon–Shortley phase removed, as ours)."""
    theta = np.deg2rad(90.0 - latlon[:, 0])
    phi = np.deg2rad(latlon[:, 1])
    cols = []
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            c = sph_harm_y(l, abs(m), theta, phi)
            if m < 0:
                cols.append(math.sqrt(2) * (-1) ** m * c.imag)
            elif m == 0:
                cols.append(c.real)
            else:
                cols.append(math.sqrt(2) * (-1) ** m * c.real)
    return np.stack(cols, 1)


def test_matches_scipy_reference():
    rng = np.random.default_rng(0)
    pts = np.concatenate([EDGE_POINTS.numpy(), np.stack([rng.uniform(-90, 90, 50), rng.uniform(-180, 180, 50)], 1)])
    ours = real_sh(torch.from_numpy(pts), 12).numpy()
    np.testing.assert_allclose(ours, scipy_real_sh(pts, 12), atol=1e-12)


def test_layout_and_widths():
    assert num_coeffs(0) == 1 and num_coeffs(47) == 2304
    assert degree_from_width(2304) == 47 and degree_from_width(1) == 0
    assert sh_index(0, 0) == 0 and sh_index(1, -1) == 1 and sh_index(2, 2) == 8
    for bad in (0, 2, 2303, -4):
        with pytest.raises(ValueError, match="not \\(L\\+1\\)\\^2"):
            degree_from_width(bad)


def test_orthonormal_under_quadrature():
    """Gauss–Legendre in cos θ × uniform φ integrates degree ≤ 2L products exactly."""
    degree = 10
    x, w = np.polynomial.legendre.leggauss(degree + 2)
    n_phi = 2 * degree + 3
    lat = np.rad2deg(np.arcsin(x))
    lon = np.arange(n_phi) * 360.0 / n_phi - 180.0
    grid = np.stack(np.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    weights = torch.from_numpy(np.repeat(w, n_phi) * 2 * np.pi / n_phi)
    y = real_sh(torch.from_numpy(grid), degree)
    gram = y.T @ (y * weights[:, None])
    torch.testing.assert_close(gram, torch.eye(num_coeffs(degree), dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("degree", [1, 2, 15, 47, 127, 255])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_kernel_identity_edges(degree, dtype, tol):
    """encode(p)·encode(q) = Σ (2l+1)/4π P_l(cos γ) at and near the poles and across the antimeridian."""
    p, q = EDGE_POINTS.to(dtype), PARTNERS.to(dtype)
    pts_p = torch.cat([p, p, p])
    pts_q = torch.cat([q, p, q.flip(0)])  # neighbours, identical points, far pairs
    dot = (real_sh(pts_p, degree) * real_sh(pts_q, degree)).sum(-1).double()
    kernel = legendre_kernel(torch.cos(central_angle(pts_p.double(), pts_q.double())), degree)
    peak = (degree + 1) ** 2 / (4 * math.pi)
    assert float((dot - kernel).abs().max()) <= tol * peak


lat_st = st.floats(-90, 90, allow_nan=False)
lon_st = st.floats(-540, 540, allow_nan=False)


@given(
    st.lists(st.tuples(lat_st, lon_st), min_size=1, max_size=6),
    st.lists(st.tuples(lat_st, lon_st), min_size=6, max_size=6),
    st.sampled_from([3, 20, 47, 64]),
)
def test_kernel_identity_property(ps, qs, degree):
    p = torch.tensor(ps, dtype=torch.float32)
    q = torch.tensor(qs[: len(ps)], dtype=torch.float32)
    dot = (real_sh(p, degree) * real_sh(q, degree)).sum(-1).double()
    kernel = legendre_kernel(torch.cos(central_angle(p.double(), q.double())), degree)
    assert float((dot - kernel).abs().max()) <= 1e-4 * (degree + 1) ** 2 / (4 * math.pi)


def test_finite_at_degree_255_float32():
    pts = torch.cat([EDGE_POINTS, PARTNERS]).float()
    y = real_sh(pts, 255)
    assert torch.isfinite(y).all()
    assert float(y.abs().max()) < 10.0  # orthonormal SH stay O(sqrt(l)); eq. 20 would overflow here


def test_differentiable_wrt_points():
    pts = torch.tensor([[12.0, 34.0], [-60.0, 170.0], [89.0, -10.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: real_sh(x, 6), (pts,))
    far = torch.cat([EDGE_POINTS, PARTNERS]).float().requires_grad_()
    real_sh(far, 127).square().sum().backward()
    assert torch.isfinite(far.grad).all()


def test_fast_and_autograd_paths_agree():
    pts = torch.cat([EDGE_POINTS, PARTNERS])
    fast = real_sh(pts, 31)
    slow = real_sh(pts.clone().requires_grad_(), 31)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-13, rtol=0)


def test_chunking_does_not_change_values():
    pts = torch.rand(1000, 2, dtype=torch.float64) * torch.tensor([180.0, 360.0]) - torch.tensor([90.0, 180.0])
    torch.testing.assert_close(real_sh(pts, 9, chunk=7), real_sh(pts, 9), atol=0, rtol=0)


def test_leading_shape_preserved():
    pts = torch.zeros(3, 4, 2)
    assert real_sh(pts, 2).shape == (3, 4, 9)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.tensor([[91.0, 0.0]]), "latitude .* outside \\[-90, 90\\]"),
        (torch.tensor([[-90.5, 0.0]]), "latitude .* outside"),
        (torch.tensor([[float("nan"), 0.0]]), "must be finite"),
        (torch.tensor([[0.0, float("inf")]]), "must be finite"),
        (torch.zeros(3, 3), "shape \\[..., 2\\]"),
    ],
)
def test_bad_points(bad, match):
    with pytest.raises(ValueError, match=match):
        real_sh(bad, 3)


def test_bad_degree():
    with pytest.raises(ValueError, match="degree must be >= 0"):
        real_sh(torch.zeros(1, 2), -1)
