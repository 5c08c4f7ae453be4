"""Draw K diffusion samples per input and decode them to locations (paper §5.1: K = 16)."""

from __future__ import annotations

import torch

from locdiff.core.bundle import ModelBundle
from locdiff.core.decoding import decode, default_radius_km
from locdiff.core.reduction import reduce_samples
from locdiff.core.sampling import SamplingSettings
from locdiff.services.progress import NullProgress, ProgressFactory


@torch.no_grad()
def sample_coefficients(
    bundle: ModelBundle,
    cond: torch.Tensor,
    *,
    samples: int,
    sampler: str,
    steps: int,
    generator: torch.Generator | None = None,
    projection: str | None = None,
) -> torch.Tensor:
    """``[B, d_I]`` conditions → ``[B, K, (L+1)^2]`` SHDD samples (x0 projection: the diffusion's default if None)."""
    bundle.net.eval()
    rep = cond.repeat_interleave(samples, 0)
    e = bundle.diffusion.sample(
        bundle.net, rep, dim=bundle.dim, sampler=sampler, steps=steps, generator=generator, projection=projection
    )
    return e.reshape(cond.shape[0], samples, bundle.dim)


@torch.no_grad()
def predict_locations(
    bundle: ModelBundle,
    cond: torch.Tensor,
    sampling: SamplingSettings,
    *,
    batch: int = 128,
    device: torch.device | None = None,
    progress: ProgressFactory | None = None,
    keep_coefficients: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Point predictions ``[B, 2]`` (``sampling.reducer``), decoded samples ``[B, K, 2]`` (and the coefficients, if asked).

    One generator seeded with ``sampling.seed`` draws every batch (None: unseeded).
    """
    device = device or next(bundle.net.parameters()).device
    g = None
    if device.type != "mps":
        g = torch.Generator(device=device)
        if sampling.seed is None:
            g.seed()  # a fresh, non-deterministic draw
        else:
            g.manual_seed(sampling.seed)
    k = sampling.samples
    points, all_samples, coeffs = [], [], []
    bar = (progress or NullProgress)(total=cond.shape[0], desc=f"sample {sampling.sampler}")
    for start in range(0, cond.shape[0], batch):
        c = cond[start : start + batch].to(device)
        e = sample_coefficients(bundle, c, samples=k, sampler=sampling.sampler, steps=sampling.steps, generator=g,
                                projection=sampling.projection)
        locs = decode(e.reshape(-1, bundle.dim).float()).reshape(c.shape[0], k, 2).double()
        points.append(reduce_samples(locs, sampling.reducer, radius_km=2 * default_radius_km(bundle.degree)).cpu())
        all_samples.append(locs.cpu())
        if keep_coefficients:
            coeffs.append(e.cpu())
        bar.update(c.shape[0])
    bar.close()
    return torch.cat(points), torch.cat(all_samples), (torch.cat(coeffs) if keep_coefficients else None)
