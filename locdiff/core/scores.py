"""Proper scores of a predicted location distribution (not only accuracy).

A prediction is K SHDD sample codes ``e_k``; its distribution is the equal-weight mixture of their
densities ``q_e`` (eq. 11) — the map :func:`locdiff.core.decoding.density_grid` draws.

* :func:`mixture_log_density` — ``log (1/K) Σ_k q_{e_k}(x)`` per steradian, exact at the point
  (harmonics at ``x``; each ``Z(e_k)`` by :func:`locdiff.core.decoding.log_normalizer`).
* :func:`nll` — its negative at the truth (nats on the unit sphere; a uniform map scores log 4π ≈ 2.531).
* :func:`energy_score` — ``mean_k d(X_k, y) − ½ mean_{k,k'} d(X_k, X_k')`` in great-circle km on the
  K decoded samples (Gneiting & Raftery 2007); ≥ 0, 0 only when every sample is at the truth.
* :func:`hpd_coverage` — whether the truth lies in the raw (uncalibrated) α-HPD regions of the
  mixture: the HPD level of :func:`locdiff.core.calibration.hpd_levels` (one implementation) below α.

Both NLL and the energy score are strictly proper: their expectation under the truth's law is
minimised by forecasting that law.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from locdiff.core import geo
from locdiff.core.calibration import LEVELS, hpd_levels
from locdiff.core.decoding import log_normalizer
from locdiff.core.harmonics import real_sh
from locdiff.core.metrics import SCALES_KM, random_guess_accuracy, summarize
from locdiff.core.shdd import check_coeffs

LOG_4PI = math.log(4 * math.pi)


def _as_samples(coeffs: torch.Tensor) -> torch.Tensor:
    if coeffs.ndim == 2:  # [B, D]: one code per prediction (e.g. the one-step x0 prediction)
        coeffs = coeffs[:, None, :]
    if coeffs.ndim != 3:
        raise ValueError(f"coeffs must be [B, K, D] (or [B, D]); got shape {tuple(coeffs.shape)}")
    return coeffs


def mixture_log_density(coeffs: torch.Tensor, latlon: torch.Tensor, *, n_lat: int | None = None) -> torch.Tensor:
    """``log (1/K) Σ_k q_{e_k}(x)`` (per sr, float64) of ``coeffs`` [B, K, D] at ``latlon`` [B, 2] → [B].

    ``latlon`` may also be [B, N, 2] (N points per prediction) → [B, N]. ``coeffs`` [B, D] is a
    single code per prediction (K = 1). The normalisers are integrated once per code.
    """
    coeffs = _as_samples(coeffs)
    degree = check_coeffs(coeffs)
    b, k, _ = coeffs.shape
    pts = geo.validate_latlon(latlon.double())
    single = pts.ndim == 2
    if single:
        pts = pts[:, None, :]
    if pts.ndim != 3 or pts.shape[0] != b:
        raise ValueError(f"latlon must be [{b}, 2] or [{b}, N, 2] for {b} predictions; got shape {tuple(latlon.shape)}")
    e = coeffs.double().to(pts.device)
    log_z = log_normalizer(e, n_lat)  # [B, K]
    y = real_sh(pts.reshape(-1, 2), degree, validate=False).reshape(b, pts.shape[1], -1)  # [B, N, D]
    f = torch.einsum("bnd,bkd->bnk", y, e)
    out = torch.logsumexp(f - log_z[:, None, :], dim=-1) - math.log(k)
    return out[:, 0] if single else out


def nll(coeffs: torch.Tensor, truth_latlon: torch.Tensor, *, n_lat: int | None = None) -> torch.Tensor:
    """Negative log-likelihood (nats on the unit sphere) of each truth [B, 2] under its mixture → [B]."""
    return -mixture_log_density(coeffs, truth_latlon, n_lat=n_lat)


def energy_score(samples_latlon: torch.Tensor, truth_latlon: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Energy score (km) of K decoded samples [B, K, 2] against the truth [B, 2] → [B] (lower is better).

    ``weights`` [B, K] (rows summing to 1) scores a discrete forecast whose atoms carry unequal mass — a
    baseline's neighbours or cells: ``Σ_k w_k d(X_k, y) − ½ Σ_{k,k'} w_k w_k' d(X_k, X_k')``."""
    s = geo.validate_latlon(samples_latlon.double(), "samples_latlon")
    y = geo.validate_latlon(truth_latlon.double(), "truth_latlon").to(s.device)
    if s.ndim != 3 or y.shape != (s.shape[0], 2):
        raise ValueError(f"energy_score needs samples [B, K, 2] and truth [B, 2]; got {tuple(s.shape)} and {tuple(y.shape)}")
    if weights is None:
        w = torch.full(s.shape[:2], 1.0 / s.shape[1], dtype=torch.float64, device=s.device)
    elif weights.shape != s.shape[:2]:
        raise ValueError(f"energy_score weights must be [B, K] = {tuple(s.shape[:2])}; got {tuple(weights.shape)}")
    else:
        w = weights.double().to(s.device)
    to_truth = (w * geo.great_circle_km(s, y[:, None, :])).sum(1)
    spread = torch.einsum("bk,bkj,bj->b", w, geo.great_circle_km(s[:, :, None, :], s[:, None, :, :]), w)
    return to_truth - 0.5 * spread


def truth_hpd_level(coeffs: torch.Tensor, truth_latlon: torch.Tensor, *, n_lat: int = 180, n_lon: int = 360, sub: int = 2) -> torch.Tensor:
    """HPD level of each truth under its raw mixture map (mass of the denser cells) → [B] in [0, 1]."""
    coeffs = _as_samples(coeffs)
    return hpd_levels("sample-temperature", [1.0], coeffs, None, truth_latlon, n_lat=n_lat, n_lon=n_lon, sub=sub)[:, 0]


def hpd_coverage(
    coeffs: torch.Tensor,
    truth_latlon: torch.Tensor,
    levels: Sequence[float] = LEVELS,
    *,
    n_lat: int = 180,
    n_lon: int = 360,
    sub: int = 2,
) -> torch.Tensor:
    """Is each truth inside the raw α-HPD region of its mixture map, per level: [B, len(levels)] bool."""
    if any(not 0.0 < a < 1.0 for a in levels):
        raise ValueError(f"credible levels must lie in (0, 1); got {list(levels)}")
    u = truth_hpd_level(coeffs, truth_latlon, n_lat=n_lat, n_lon=n_lon, sub=sub)
    return u[:, None] < torch.tensor([float(a) for a in levels], dtype=u.dtype)[None, :]


def proper_scores(
    coeffs: torch.Tensor | None, samples_latlon: torch.Tensor | None, truth_latlon: torch.Tensor, levels: Sequence[float] = LEVELS
) -> dict[str, torch.Tensor]:
    """Per-item scores [B] for a report: ``nll``, ``energy_km``, ``covered@50`` … (0/1) where inputs allow."""
    out: dict[str, torch.Tensor] = {}
    if coeffs is not None:
        out["nll"] = nll(coeffs, truth_latlon)
        inside = hpd_coverage(coeffs, truth_latlon, levels)
        for i, a in enumerate(levels):
            out[f"covered@{round(100 * a)}"] = inside[:, i].double()
    if samples_latlon is not None:
        out["energy_km"] = energy_score(samples_latlon, truth_latlon)
    return out


SCORE_KEYS = ("nll", "energy_km", "coverage@50", "coverage@90", "coverage@95")


def bootstrap_interval(values: torch.Tensor, *, draws: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item ``values`` [N] (resampling items, i.e. places)."""
    v = values.double().reshape(-1)
    if v.numel() == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    g = torch.Generator().manual_seed(seed)
    means = v[torch.randint(0, v.numel(), (draws, v.numel()), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return float(lo), float(hi)


def accuracy_intervals(points: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """:func:`locdiff.core.metrics.summarize` of ``points`` [N, 2] with 95 % bootstrap intervals of every accuracy
    (``acc@200km_lo`` / ``acc@200km_hi`` …; resampling places)."""
    out = summarize(points, truth)
    d = geo.great_circle_km(points.double(), truth.double())
    for km in SCALES_KM:
        lo, hi = bootstrap_interval(100.0 * (d <= km).double())
        out[f"acc@{km:g}km_lo"], out[f"acc@{km:g}km_hi"] = lo, hi
    return out


def summarize_scores(per_item: dict[str, torch.Tensor], *, intervals: bool = True) -> dict[str, float]:
    """Means of :func:`proper_scores` (coverage in %), with 95 % bootstrap intervals ``<key>_lo`` / ``<key>_hi``."""
    out: dict[str, float] = {}
    for key, v in per_item.items():
        name, scale = (key.replace("covered", "coverage"), 100.0) if key.startswith("covered@") else (key, 1.0)
        out[name] = scale * float(v.double().mean())
        if intervals:
            lo, hi = bootstrap_interval(v)
            out[f"{name}_lo"], out[f"{name}_hi"] = scale * lo, scale * hi
    return out


def format_scores_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table of the proper scores of each row that has them (95 % intervals where present)."""
    head = ["method", "NLL (nats)", "energy score (km)", "raw cover 50 %", "90 %", "95 %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows.items():
        if "nll" not in m and "energy_km" not in m:
            continue
        cells = []
        for key, fmt in zip(SCORE_KEYS, ("{:.3f}", "{:.0f}", "{:.1f}", "{:.1f}", "{:.1f}")):
            if key not in m:
                cells.append("—")
                continue
            cell = fmt.format(m[key])
            if f"{key}_lo" in m:
                cell += f" [{fmt.format(m[key + '_lo'])}, {fmt.format(m[key + '_hi'])}]"
            cells.append(cell)
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def random_row() -> dict[str, float]:
    """A uniform guess as a table row: the cap-area accuracies and the uniform density's NLL log 4π (its HPD regions
    cover exactly, so no coverage is shown)."""
    return random_guess_accuracy() | {"median_km": math.nan, "geoscore": math.nan, "nll": LOG_4PI}
