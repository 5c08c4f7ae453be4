"""Geolocation metrics: accuracy at 1/25/200/750/2500 km, median error, GeoScore, coverage."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from locdiff.core.geo import great_circle_km

#: the standard scales (street, city, region, country, continent), paper Table 1
SCALES_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)
GEOSCORE_SCALE_KM = 1492.7


def geoscore(distance_km: torch.Tensor) -> torch.Tensor:
    """GeoGuessr-style score ``5000 exp(-d / 1492.7)`` per prediction."""
    return 5000.0 * torch.exp(-distance_km / GEOSCORE_SCALE_KM)


def accuracy_at(distance_km: torch.Tensor, scales: Sequence[float] = SCALES_KM) -> dict[str, float]:
    """Percentage of predictions within each scale: ``{"acc@200km": 53.3, ...}``."""
    d = distance_km.double()
    return {f"acc@{s:g}km": float((d <= s).double().mean() * 100) for s in scales}


def summarize(pred_latlon: torch.Tensor, true_latlon: torch.Tensor, scales: Sequence[float] = SCALES_KM) -> dict[str, float]:
    """All headline metrics for ``[N, 2]`` predictions against ``[N, 2]`` ground truth."""
    if pred_latlon.shape != true_latlon.shape or pred_latlon.ndim != 2 or pred_latlon.shape[-1] != 2:
        raise ValueError(f"need two [N, 2] tensors, got {tuple(pred_latlon.shape)} and {tuple(true_latlon.shape)}")
    if pred_latlon.shape[0] == 0:
        raise ValueError("cannot summarise zero predictions")
    d = great_circle_km(pred_latlon.double(), true_latlon.double())
    out = accuracy_at(d, scales)
    out["median_km"] = float(torch.quantile(d, 0.5))  # torch.median would return the lower middle value
    out["mean_km"] = float(d.mean())
    out["geoscore"] = float(geoscore(d).mean())
    out["n"] = float(d.shape[0])
    return out


def random_guess_accuracy(scales: Sequence[float] = SCALES_KM) -> dict[str, float]:
    """Expected accuracy of a uniformly random guess on the sphere: the cap area fraction ``(1 - cos(d/R))/2``."""
    from locdiff.core.geo import EARTH_RADIUS_KM

    return {f"acc@{s:g}km": 100.0 * (1 - math.cos(min(s / EARTH_RADIUS_KM, math.pi))) / 2 for s in scales}


def format_table(rows: Mapping[str, Mapping[str, float]], scales: Sequence[float] = SCALES_KM) -> str:
    """Markdown table: one row per method, columns = accuracies (with ``[lo, hi]`` where the row has its interval),
    median km, GeoScore."""
    head = ["method"] + [f"{s:g} km" for s in scales] + ["median km", "GeoScore"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows.items():
        cells = [_with_interval(m, f"acc@{s:g}km") for s in scales] + [_number(m["median_km"], "{:.0f}"), _number(m["geoscore"], "{:.0f}")]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


def _number(v: float, fmt: str) -> str:
    return "–" if math.isnan(v) else fmt.format(v)


def _with_interval(m: Mapping[str, float], key: str) -> str:
    cell = f"{m[key]:.1f}"
    if f"{key}_lo" in m and f"{key}_hi" in m:
        cell += f" [{m[key + '_lo']:.1f}, {m[key + '_hi']:.1f}]"
    return cell


def coverage(inside: torch.Tensor) -> float:
    """Fraction of ground truths that fall inside their credible region (``inside`` is boolean [N])."""
    return float(inside.double().mean())
