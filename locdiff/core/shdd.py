"""The SHDD codec: encoding, the distribution ``q_e`` and the SHDD KL measure (paper §4.2–4.3).

* :func:`encode` — a point becomes the coefficients of a truncated spherical Dirac delta,
  ``C_lm = Y_lm(θ0, φ0)`` (eq. 8–9).
* :func:`logits` — ``f_e(u) = Σ e_lm Y_lm(u)``, the log of the unnormalised ``q_e`` (eq. 11).
* :func:`log_density` — ``log q_e`` at anchors, normalised by log-sum-exp over the anchors (never
  ``exp`` of raw logits: the peak logit of an L=127 encoding is (L+1)²/4π ≈ 1304).
* :func:`kl` — the reverse KL ``KL(q_e || p_target)`` on anchors (eq. 12 approximated by eq. 16).
"""

from __future__ import annotations

import math

import torch

from locdiff.core.geo import to_xyz, validate_latlon
from locdiff.core.harmonics import DEFAULT_CHUNK, degree_from_width, legendre_kernel, real_sh


def encode(latlon: torch.Tensor, degree: int) -> torch.Tensor:
    """SHDD encoding (eq. 8–9): ``[N, 2]`` (lat, lon) degrees → ``[N, (degree+1)^2]``.

    Raises ``ValueError`` for latitudes outside [-90, 90], non-finite values, a wrong shape or a
    negative degree. Longitudes wrap.
    """
    latlon = validate_latlon(latlon)
    return real_sh(latlon, degree, validate=False)


def check_coeffs(e: torch.Tensor, name: str = "coeffs") -> int:
    """Validate a ``[..., (L+1)^2]`` coefficient tensor and return its degree ``L``."""
    if not isinstance(e, torch.Tensor) or e.ndim < 1:
        raise ValueError(f"{name} must be a tensor of shape [..., (L+1)^2]")
    if not e.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {e.dtype}")
    degree = degree_from_width(e.shape[-1])
    bad = ~torch.isfinite(e)
    if bool(bad.any()):
        idx = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(f"{name}{idx} is {e[tuple(idx)].item()}: coefficients must be finite")
    return degree


class _AnchorLogits(torch.autograd.Function):
    """``e @ Y(anchors)^T`` with the harmonics computed chunk by chunk and recomputed in backward,
    so memory holds the ``[B, N]`` logits and one ``[chunk, D]`` block, whatever N is."""

    @staticmethod
    def forward(ctx, e, anchors, chunk):
        degree = degree_from_width(e.shape[-1])
        out = e.new_empty(e.shape[0], anchors.shape[0])
        keep = anchors.shape[0] <= chunk
        for start in range(0, anchors.shape[0], chunk):
            y = real_sh(anchors[start : start + chunk].to(e.dtype), degree, validate=False)
            out[:, start : start + chunk] = e @ y.T
        ctx.save_for_backward(anchors, y if keep else None)
        ctx.chunk, ctx.degree = chunk, degree
        return out

    @staticmethod
    def backward(ctx, grad):
        anchors, y = ctx.saved_tensors
        grad_e = None
        if ctx.needs_input_grad[0]:
            if y is not None:
                grad_e = grad @ y
            else:
                grad_e = grad.new_zeros(grad.shape[0], (ctx.degree + 1) ** 2)
                for start in range(0, anchors.shape[0], ctx.chunk):
                    yc = real_sh(anchors[start : start + ctx.chunk].to(grad.dtype), ctx.degree, validate=False)
                    grad_e = grad_e + grad[:, start : start + ctx.chunk] @ yc
        return grad_e, None, None


def logits(e: torch.Tensor, points: torch.Tensor, *, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``f_e`` at points: ``e`` [B, D], ``points`` [N, 2] (lat, lon) → ``[B, N]``. Differentiable in ``e``."""
    check_coeffs(e)
    points = validate_latlon(points, "points").to(device=e.device)
    squeeze = e.ndim == 1
    out = _AnchorLogits.apply(e.reshape(-1, e.shape[-1]), points, chunk)
    return out[0] if squeeze else out.reshape(*e.shape[:-1], points.shape[0])


def log_density(e: torch.Tensor, anchors: torch.Tensor, log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``log q_e`` (eq. 11) per steradian at anchors ``[N, 2]``, for ``e`` [B, D] → ``[B, N]``.

    ``Z(e)`` is estimated by quadrature over the anchors: uniform anchors (weights 4π/N) unless
    ``log_weights`` [N] gives each anchor's log area. Computed with log-sum-exp, never ``exp(f)``.
    """
    f = logits(e, anchors)
    if log_weights is None:
        log_weights = torch.full((anchors.shape[0],), math.log(4 * math.pi / anchors.shape[0]), dtype=f.dtype, device=f.device)
    return f - torch.logsumexp(f + log_weights.to(f), dim=-1, keepdim=True)


def target_logits(target: torch.Tensor, anchors: torch.Tensor, degree: int) -> torch.Tensor:
    """Logits of ``p_target`` (eq. 10) at anchors: ``[B, 2]`` × ``[N, 2]`` → ``[B, N]`` (float64).

    Uses the addition theorem ``encode(t)·Y(a) = Σ (2l+1)/4π P_l(t·a)``: no harmonics, exact, but
    O(L) elementwise work per pair — :func:`kl` uses a matmul with the anchors' harmonics instead.
    """
    cos_gamma = to_xyz(target.to(torch.float64)) @ to_xyz(anchors.to(torch.float64)).T
    return legendre_kernel(cos_gamma, degree)


def kl(e: torch.Tensor, target_latlon: torch.Tensor, anchors: torch.Tensor, log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """SHDD KL-divergence ``KL(q_e || p_target)`` on anchors (eq. 12 via eq. 16): ``[B]``, ≥ 0.

    ``q`` and ``p`` are the anchor-normalised distributions of ``e`` [B, D] and of the SHDD
    encoding of ``target_latlon`` [B, 2]; it is 0 exactly when ``e`` encodes the target (up to
    terms invisible at the anchors). Differentiable in ``e``; memory bounded in the anchor count.
    ``log_weights`` [N] (each anchor's log area, e.g. from :func:`anchors.importance`) make it the
    self-normalised importance estimate: both distributions become ``∝ exp(f) · area`` on the anchors.
    """
    degree = check_coeffs(e)
    target = validate_latlon(target_latlon, "target_latlon")
    anchors = validate_latlon(anchors, "anchors").to(device=e.device)
    if e.ndim != 2 or target.ndim != 2 or e.shape[0] != target.shape[0]:
        raise ValueError(f"kl needs e [B, D] and target_latlon [B, 2]; got {tuple(e.shape)} and {tuple(target.shape)}")
    target_code = real_sh(target.to(device=e.device, dtype=e.dtype), degree, validate=False)
    if anchors.shape[0] <= DEFAULT_CHUNK:  # one block: share the anchors' harmonics between q and p
        y = real_sh(anchors.to(e.dtype), degree, validate=False)
        f_q, f_p = e @ y.T, target_code @ y.T
    else:
        f_q = _AnchorLogits.apply(e, anchors, DEFAULT_CHUNK)
        f_p = _AnchorLogits.apply(target_code, anchors, DEFAULT_CHUNK)
    if log_weights is not None:
        lw = log_weights.to(device=f_q.device, dtype=f_q.dtype)
        f_q, f_p = f_q + lw, f_p + lw
    log_q = torch.log_softmax(f_q, dim=-1)
    log_p = torch.log_softmax(f_p, dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1).clamp_min(0.0)
