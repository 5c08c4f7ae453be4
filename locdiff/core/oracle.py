"""Exact denoisers for finite priors on the sphere, and scores of decoded samples against the truth.

A sampler can only be trusted once it reproduces a known distribution when handed the *exact*
denoiser instead of a network. For a finite prior ``{(w_j, c_j)}`` of SHDD latents (codes of the
sites, eq. 8–9, times ``data_scale``), the forward process ``q(x_t | x_0 = c_j) = N(sqrt(ᾱ_t) c_j,
(1 - ᾱ_t) I)`` (paper §4.6, Ho et al. 2020) gives the posterior mean in closed form::

    E[x_0 | x_t] = Σ_j softmax_j( log w_j − |x_t − sqrt(ᾱ_t) c_j|² / (2 (1 − ᾱ_t)) ) c_j

API
---
* :class:`FinitePriors` — ``P`` finite priors of up to ``M`` sites each: ``latlon [P, M, 2]`` and
  ``weights [P, M]`` (each row sums to 1; a zero weight pads a prior with fewer sites). Build one
  with :meth:`FinitePriors.single` or :meth:`FinitePriors.stack`.
* :class:`ExactDenoiser` — ``ExactDenoiser(priors, schedule, degree)`` is a callable with the
  network's signature ``model(x, t, cond) -> x0`` and plugs straight into
  :meth:`locdiff.core.diffusion.Diffusion.sample`. **Condition API:** ``cond[:, 0]`` holds the index
  (as a float, e.g. ``2.0``) of the prior each row is drawn from; further columns are ignored, so a
  synthetic conditional task can pass ``[index, embedding...]`` rows. :meth:`FinitePriors.cond`
  builds such rows. With a single prior the condition is ignored entirely.
  :meth:`ExactDenoiser.posterior` returns the per-site responsibilities ``p(j | x_t)``.
* :func:`score_samples` — per-mode frequency (each decoded sample goes to its nearest site if it is
  within ``radius_km``), off-mode mass, spread (median km to the assigned site) and the total
  variation distance between the empirical (sites + "off") distribution and the prior.
"""

from __future__ import annotations

import math

import attrs
import torch

from locdiff.core import geo, shdd


def _check_priors(latlon: torch.Tensor, weights: torch.Tensor) -> None:
    if latlon.ndim != 3 or latlon.shape[-1] != 2:
        raise ValueError(f"prior latlon must have shape [P, M, 2], got {tuple(latlon.shape)}")
    if weights.shape != latlon.shape[:2]:
        raise ValueError(f"prior weights must have shape {tuple(latlon.shape[:2])}, got {tuple(weights.shape)}")
    geo.validate_latlon(latlon, "prior latlon")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("prior weights must be finite and non-negative")
    sums = weights.sum(-1)
    if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-6)):
        raise ValueError(f"each prior's weights must sum to 1, got sums {[round(float(s), 6) for s in sums]}")


@attrs.frozen
class FinitePriors:
    """``P`` finite priors on the sphere: ``latlon [P, M, 2]`` degrees, ``weights [P, M]`` (float64)."""

    latlon: torch.Tensor = attrs.field(converter=lambda v: torch.as_tensor(v, dtype=torch.float64))
    weights: torch.Tensor = attrs.field(converter=lambda v: torch.as_tensor(v, dtype=torch.float64))

    def __attrs_post_init__(self) -> None:
        _check_priors(self.latlon, self.weights)

    @classmethod
    def single(cls, latlon, weights) -> "FinitePriors":
        """One prior from ``[M, 2]`` sites and ``[M]`` weights (normalised here)."""
        w = torch.as_tensor(weights, dtype=torch.float64)
        return cls(torch.as_tensor(latlon, dtype=torch.float64)[None], (w / w.sum())[None])

    @classmethod
    def stack(cls, priors: list[tuple[object, object]]) -> "FinitePriors":
        """Several priors ``[(latlon [M_i, 2], weights [M_i]), ...]``, padded with zero-weight sites."""
        width = max(len(w) for _, w in priors)
        lat = torch.zeros(len(priors), width, 2, dtype=torch.float64)
        wts = torch.zeros(len(priors), width, dtype=torch.float64)
        for i, (ll, w) in enumerate(priors):
            w = torch.as_tensor(w, dtype=torch.float64)
            lat[i, : w.shape[0]] = torch.as_tensor(ll, dtype=torch.float64)
            wts[i, : w.shape[0]] = w / w.sum()
        return cls(lat, wts)

    @property
    def count(self) -> int:
        return self.latlon.shape[0]

    def cond(self, index: torch.Tensor | int, width: int = 1) -> torch.Tensor:
        """Condition rows ``[B, width]`` selecting prior ``index`` (column 0; the rest zero)."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if bool(((index < 0) | (index >= self.count)).any()):
            raise ValueError(f"prior index out of range 0..{self.count - 1}")
        out = torch.zeros(index.shape[0], width, dtype=torch.float32)
        out[:, 0] = index.float()
        return out


class ExactDenoiser:
    """``E[x_0 | x_t]`` for finite priors, with the network's signature ``model(x, t, cond)``.

    ``schedule`` is the :class:`~locdiff.core.diffusion.Schedule` the sampler uses; latents are
    SHDD codes of degree ``degree`` times ``data_scale``. Computed in float64, returned in
    ``x.dtype``; ``calls`` counts the evaluations (the network calls a sampler spends).
    """

    def __init__(self, priors: FinitePriors, schedule, degree: int, data_scale: float = math.sqrt(4 * math.pi)) -> None:
        self.priors = priors
        self.degree = degree
        self.alphas_cumprod = schedule.alphas_cumprod.to(torch.float64)
        p, m = priors.weights.shape
        codes = shdd.encode(priors.latlon.reshape(-1, 2), degree).to(torch.float64) * data_scale
        self.codes = codes.reshape(p, m, -1)  # [P, M, D]
        self.log_w = torch.where(priors.weights > 0, priors.weights.log(), torch.full_like(priors.weights, -math.inf))
        self.calls = 0

    def _rows(self, cond: torch.Tensor, batch: int) -> torch.Tensor:
        if self.priors.count == 1:
            return torch.zeros(batch, dtype=torch.long)
        idx = cond[:, 0].detach().to("cpu", torch.float64)
        rows = idx.round().long()
        if bool(((rows - idx).abs() > 1e-6).any()) or bool(((rows < 0) | (rows >= self.priors.count)).any()):
            raise ValueError(f"cond[:, 0] must hold a prior index 0..{self.priors.count - 1}")
        return rows

    def _logits(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``log w_j − |x − sqrt(ᾱ) c_j|² / 2(1 − ᾱ)`` up to a per-row constant: ``[B, M]`` float64."""
        codes, log_w = self.codes.to(x.device), self.log_w.to(x.device)
        a = self.alphas_cumprod.to(x.device)[t.long()][:, None]  # [B, 1]
        xd = x.double()
        out = torch.empty(x.shape[0], codes.shape[1], dtype=torch.float64, device=x.device)
        for p in rows.unique().tolist():  # one matmul per prior present in the batch
            sel = (rows == p).nonzero()[:, 0]
            cross = xd[sel] @ codes[p].T  # [b, M]
            norms = codes[p].square().sum(-1)  # [M]
            a_p = a[sel]
            out[sel] = log_w[p] + (a_p.sqrt() * cross - 0.5 * a_p * norms) / (1 - a_p)
        return out

    def posterior(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``p(site j | x_t)``: ``[B, M]`` (float64, on ``x``'s device)."""
        return torch.softmax(self._logits(x, t, self._rows(cond, x.shape[0]).to(x.device)), dim=-1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        rows = self._rows(cond, x.shape[0]).to(x.device)
        post = torch.softmax(self._logits(x, t, rows), dim=-1)
        codes = self.codes.to(x.device)
        out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
        for p in rows.unique().tolist():
            sel = (rows == p).nonzero()[:, 0]
            out[sel] = post[sel] @ codes[p]
        return out.to(x.dtype)


@attrs.frozen
class ModeScore:
    """How decoded samples distribute over a prior's sites (see :func:`score_samples`)."""

    frequencies: tuple[float, ...]  # share of samples assigned to each site, prior order
    off_mode: float  # share within radius_km of no site
    spread_km: float  # median distance of assigned samples to their site (nan if none)
    tv: float  # total variation between (frequencies, off_mode) and (weights, 0)
    count: int  # samples scored

    def max_error(self, weights) -> float:
        """Largest |frequency − weight| over the sites."""
        return max(abs(f - float(w)) for f, w in zip(self.frequencies, weights))


def score_samples(points: torch.Tensor, sites: torch.Tensor, weights: torch.Tensor, radius_km: float = 300.0) -> ModeScore:
    """Score decoded samples ``[N, 2]`` against a finite prior (``sites [M, 2]``, ``weights [M]``).

    Each sample is assigned to its nearest site if that is within ``radius_km``, else counted off-mode.
    """
    points = geo.validate_latlon(points, "points").double()
    sites = geo.validate_latlon(sites, "sites").double()
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must have shape [N, 2] with N ≥ 1, got {tuple(points.shape)}")
    d = geo.pairwise_km(points, sites)  # [N, M]
    best, owner = d.min(1)
    inside = best < radius_km
    n = points.shape[0]
    freq = torch.bincount(owner[inside], minlength=sites.shape[0]).double() / n
    off = float((~inside).double().mean())
    spread = float(best[inside].median()) if bool(inside.any()) else math.nan
    tv = 0.5 * (float((freq - weights / weights.sum()).abs().sum()) + off)
    return ModeScore(tuple(float(f) for f in freq), off, spread, tv, n)
