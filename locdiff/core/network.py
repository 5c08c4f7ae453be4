"""CS-UNet: the conditional SIREN UNet that denoises SHDD vectors (paper §4.5, Fig. 2).

It knows nothing about noise schedules or losses (see :mod:`locdiff.core.diffusion`): it maps a noisy
latent ``x_t`` [B, d], a timestep ``t`` [B] and a condition ``c`` [B, d_I] to a prediction of the
clean SHDD vector ``x_0`` [B, d].
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of integer timesteps, ``[B]`` → ``[B, dim]``."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding dimension must be even and >= 2, got {dim}")
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(half) / max(half - 1, 1)), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angle = t.float()[:, None] * self.freqs[None, :]
        return torch.cat((angle.sin(), angle.cos()), dim=-1)


def siren_init_(layer: nn.Linear, w0: float) -> nn.Linear:
    """SIREN initialisation (Sitzmann et al. 2020): U(-sqrt(6/n)/w0, sqrt(6/n)/w0) keeps sine activations unit-scaled."""
    bound = math.sqrt(6.0 / layer.in_features) / w0
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound)
    return layer


class CSirenBlock(nn.Module):
    """C-Siren (Fig. 2a): ``h = W_x x``; ``h ← (1 + α_t) ⊙ h + ε_t``; ``h ← h + W_c c``; ``out = sin(w0 · FF(h))``."""

    def __init__(self, d_in: int, d_out: int, d_cond: int, d_time: int, *, dropout: float = 0.0, w0: float = 1.0):
        super().__init__()
        self.w0 = w0
        self.proj_x = nn.Linear(d_in, d_out)
        self.proj_c = nn.Linear(d_cond, d_out)
        self.time = nn.Sequential(nn.Linear(d_time, d_time), nn.SiLU(), nn.Linear(d_time, 2 * d_out))
        self.ff = siren_init_(nn.Linear(d_out, d_out), w0)
        self.drop = nn.Dropout(dropout)
        with torch.no_grad():  # start as an unconditional identity-like modulation
            self.time[-1].weight.mul_(0.1)
            self.time[-1].bias.zero_()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, cond: torch.Tensor, cond_proj: torch.Tensor | None = None) -> torch.Tensor:
        """``t_emb`` may be one row for the whole batch (every row at one timestep); ``cond_proj`` = ``W_c c`` if known."""
        h = self.proj_x(x)
        scale, shift = self.time(t_emb).chunk(2, dim=-1)
        h = (1 + scale) * h + shift
        h = h + (self.proj_c(cond) if cond_proj is None else cond_proj)
        return torch.sin(self.w0 * self.ff(self.drop(h)))


class CSUNet(nn.Module):
    """Fig. 2(b): C-Siren blocks narrowing from ``d = (L+1)^2`` through ``widths`` to a bottleneck
    and widening back, each up block fed the matching down block's output (skip connection).
    """

    def __init__(
        self,
        d: int,
        d_cond: int,
        widths: tuple[int, ...] = (512, 256, 128),
        d_time: int = 200,
        dropout: float = 0.3,
        w0: float = 1.0,
    ):
        super().__init__()
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be positive, got {widths}")
        self.d, self.d_cond, self.widths = d, d_cond, tuple(widths)
        self.time_embed = SinusoidalTimeEmbedding(d_time)
        self.cond_norm = nn.LayerNorm(d_cond)
        block = lambda i, o: CSirenBlock(i, o, d_cond, d_time, dropout=dropout, w0=w0)  # noqa: E731
        dims = (d, *widths)
        self.down = nn.ModuleList(block(dims[i], dims[i + 1]) for i in range(len(widths)))
        self.mid = block(widths[-1], widths[-1])
        ups = []
        for i in reversed(range(len(widths))):
            d_out = widths[i - 1] if i > 0 else widths[0]
            ups.append(block(widths[i] * 2, d_out))
        self.up = nn.ModuleList(ups)
        self.out = nn.Linear(widths[0] + d, d)

    def _conditioning(self, cond: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        """The normalised condition and each block's ``W_c c``.

        A sampler calls the network with the same condition tensor at every step; without gradients and in eval
        mode the projections are kept from the first step (keyed on that tensor, its in-place version and the
        versions of the weights that made them), otherwise every block projects the condition itself.
        """
        blocks = (*self.down, self.mid, *self.up)
        if torch.is_grad_enabled() or self.training:
            self._cond_cache = None
            return self.cond_norm(cond), (None,) * len(blocks)
        weights = (self.cond_norm.weight, self.cond_norm.bias, *(b.proj_c.weight for b in blocks), *(b.proj_c.bias for b in blocks))
        key = (cond._version, tuple(w._version for w in weights), tuple(w.data_ptr() for w in weights))
        cached = getattr(self, "_cond_cache", None)
        if cached is not None and cached[0]() is cond and cached[1] == key:
            return cached[2], cached[3]
        c = self.cond_norm(cond)
        projs = tuple(b.proj_c(c) for b in blocks)
        self._cond_cache = (weakref.ref(cond), key, c, projs)
        return c, projs

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # A sampling step puts every row at one timestep: the time MLPs then run on one row (a quarter of the FLOPs).
        same_t = t.ndim == 1 and t.shape[0] > 1 and bool((t == t[0]).all())
        t_emb = self.time_embed(t[:1] if same_t else t)
        c, projs = self._conditioning(cond)
        skips, h = [], x
        for i, blk in enumerate(self.down):
            h = blk(h, t_emb, c, projs[i])
            skips.append(h)
        h = self.mid(h, t_emb, c, projs[len(self.down)])
        for i, blk in enumerate(self.up, start=len(self.down) + 1):
            h = blk(torch.cat((h, skips.pop()), dim=-1), t_emb, c, projs[i])
        return self.out(torch.cat((h, x), dim=-1))
