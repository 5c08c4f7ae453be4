"""Reduce K decoded samples per input to one prediction (paper §5.1 uses the spherical centre of 16)."""

from __future__ import annotations

import torch

from locdiff.core import geo

REDUCERS = ("centre", "medoid", "mode")


def reduce_samples(samples: torch.Tensor, how: str = "mode", radius_km: float = 400.0) -> torch.Tensor:
    """``[B, K, 2]`` decoded samples → ``[B, 2]``.

    * ``centre`` — normalised mean unit vector (the paper's "geographical centre").
    * ``medoid`` — the sample with the smallest summed great-circle distance to the others.
    * ``mode`` — the densest sample of the mixture: the one with the most samples within
      ``radius_km`` (ties: smaller summed distance), refined to the centre of that neighbourhood.
      Unlike the centre it never lands between two distant clusters (e.g. in an ocean).
    """
    if samples.ndim != 3 or samples.shape[-1] != 2:
        raise ValueError(f"samples must be [B, K, 2], got {tuple(samples.shape)}")
    if how == "centre":
        return geo.spherical_mean(samples)
    d = geo.great_circle_km(samples[:, :, None, :].double(), samples[:, None, :, :].double())  # [B, K, K]
    if how == "medoid":
        best = d.sum(-1).argmin(-1)
        return samples[torch.arange(samples.shape[0]), best]
    if how == "mode":
        near = d <= radius_km
        score = near.sum(-1).double() - d.sum(-1) / (d.sum(-1).max() + 1.0)  # count, then tie-break
        best = score.argmax(-1)
        weights = near[torch.arange(samples.shape[0]), best].to(samples.dtype)
        return geo.spherical_mean(samples, weights)
    raise ValueError(f"unknown reducer {how!r}; expected one of {REDUCERS}")
