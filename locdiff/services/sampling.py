"""Draw K diffusion samples per input and decode them to locations (paper §5.1: K = 16)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence

import torch

from locdiff.core.bundle import ModelBundle
from locdiff.core.decoding import decode, default_radius_km
from locdiff.core.reduction import reduce_samples
from locdiff.core.sampling import SamplingSettings
from locdiff.services.progress import NullProgress, ProgressFactory


class SamplingCancelled(Exception):
    """Raised between diffusion steps when the caller's ``cancelled()`` turns true."""


def input_seed(content: bytes | str, seed: int) -> int:
    """A 63-bit seed for one input: sha256 of its content (a file's bytes, a query's text) and ``seed``.

    The same input with the same user seed always gets the same draw, whatever batch it is in;
    another ``seed`` (the app's *Resample*) gives an independent draw.
    """
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    h = hashlib.sha256(data + b"\x00locdiff-seed\x00" + str(int(seed)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def per_input_noise(seeds: Sequence[int], samples: int) -> Callable[[tuple[int, int]], torch.Tensor]:
    """``noise(shape)`` for :meth:`Diffusion.sample` on ``len(seeds) * samples`` rows (inputs repeated ``samples`` times):
    input ``i``'s ``samples`` rows come from a CPU generator seeded with ``seeds[i]`` alone."""
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def noise(shape: tuple[int, int]) -> torch.Tensor:
        rows, dim = shape
        if rows != len(gens) * samples:
            raise ValueError(f"noise for {rows} rows requested; expected {len(gens)} inputs x {samples} samples")
        return torch.cat([torch.randn((samples, dim), generator=g) for g in gens])

    return noise


def cancel_check(cancelled: Callable[[], bool] | None,
                 progress: Callable[[int, int], None] | None = None) -> Callable[[int, int], None] | None:
    """An ``on_step`` callback: reports progress and raises :class:`SamplingCancelled` once ``cancelled()``."""
    if cancelled is None and progress is None:
        return None

    def on_step(done: int, total: int) -> None:
        if cancelled is not None and cancelled():
            raise SamplingCancelled(f"cancelled after {done} of {total} diffusion steps")
        if progress is not None:
            progress(done, total)

    return on_step


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Run the block with CPU denormals flushed to zero (this thread), then switch flushing off again.

    A trained network whose weight decay drove unused blocks to ~1e-26 multiplies them into denormal
    products (< 1.2e-38), which the CPU's matrix kernels process many times slower: on run-0001's
    CS-UNet a 1024-row forward pass took 2.2x as long. Flushing only changes values below 1.2e-38
    (the network's outputs were bit-identical with and without). Flushing is per thread: intra-op
    worker threads beyond the caller's keep the default.
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


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
    noise: Callable[[tuple[int, int]], torch.Tensor] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``[B, d_I]`` conditions → ``[B, K, (L+1)^2]`` SHDD samples (x0 projection: the diffusion's default if None).

    ``noise`` (e.g. :func:`per_input_noise`) replaces ``generator``; ``on_step`` (e.g. :func:`cancel_check`) runs after each step.
    """
    bundle.net.eval()
    rep = cond.repeat_interleave(samples, 0)
    with flush_denormals():
        e = bundle.diffusion.sample(
            bundle.net, rep, dim=bundle.dim, sampler=sampler, steps=steps, generator=generator, projection=projection,
            noise=noise, on_step=on_step,
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
