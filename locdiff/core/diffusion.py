"""Diffusion in SHDD space (paper §4.6): schedules, the training loss, DDPM and DDIM samplers.

The network predicts the clean vector ``x_0``; training compares the prediction with the ground
truth through the SHDD KL-divergence (eq. 12/16) on fresh random anchors every batch, or through
L1 / L2 / cosine for the paper's Table 8 ablation. Latents are SHDD encodings multiplied by
``data_scale`` (default sqrt(4π), which gives them unit mean square, like the noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import torch

from locdiff.core import shdd
from locdiff.core.decoding import grid_argmax

LOSSES = ("kl", "kl+l2", "l1", "l2", "cosine")  # "kl": the paper's eq. 16; "kl+l2": KL + l2_weight · L2 (README: objective)
# Per-timestep weight of the loss: "uniform" (the paper's); "snr-clamp": clamp(SNR_t, 1, snr_max), i.e. the
# x0 loss at high noise and the ε-loss (SNR-weighted x0 loss) at low noise, capped (README: objective).
WEIGHTINGS = ("uniform", "snr-clamp")
SCHEDULES = ("cosine", "linear")
SAMPLERS = ("ddpm", "ddim", "dpmpp2m", "dpmpp2m-sde")  # every sampler Diffusion.sample knows (one list: CLI, configs, the app)
PROJECTIONS = ("none", "clip", "norm", "degree", "snap")
# What the network's output means: "x0" the clean latent (the paper's); "v" the velocity
# v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x0 (Salimans & Ho 2022), turned into x0 = sqrt(ᾱ) x_t − sqrt(1−ᾱ) v (README: objective).
PARAMETERIZATIONS = ("x0", "v")
# The defaults every entry point starts from (a run's own eval settings win where it has them): chosen on validation
# by NLL with the accuracy floors beside it, and they keep the oracle's mode weights (README: objective, samplers).
DEFAULT_SAMPLER, DEFAULT_SAMPLER_STEPS = "dpmpp2m", 15
DEFAULT_PROJECTION = "none"


def project_codes(x0: torch.Tensor, kind: str, scale: float = math.sqrt(4 * math.pi)) -> torch.Tensor:
    """Put predicted clean latents back where valid SHDD codes live (used between sampling steps).

    Every encoding ``C = Y(θ0, φ0)`` has, per degree l, ``Σ_m C_lm² = (2l+1)/4π`` (addition theorem),
    so its latent ``scale·C`` has degree-block norms ``sqrt(2l+1)`` (``scale = sqrt(4π)``), total norm
    ``L+1`` and a constant ``l = 0`` entry of 1. The KL (eq. 16) sees neither that entry nor, only
    weakly, the overall length, so an x0-predicting network left alone lets both drift along the
    chain. ``"degree"`` rescales each degree block to its norm and fixes ``l = 0``; ``"norm"`` only
    rescales the whole vector to length ``L+1``; ``"clip"`` fixes ``l = 0`` and only *shrinks* degree
    blocks longer than a code's (every mixture of codes — what an exact denoiser predicts — is left
    unchanged, so it keeps the oracle's frequencies; ``degree``, ``norm`` and ``snap`` inflate or
    quantise mixtures towards their heaviest mode and do not); ``"snap"`` replaces x0 by the encoding of the
    highest point of ``f_e`` on an equiangular grid of spacing 45°/(L+1) (the code manifold
    itself, like clipping x0 to the data range in image diffusion); ``"none"`` returns ``x0``.
    """
    if kind == "none":
        return x0
    if kind not in PROJECTIONS:
        raise ValueError(f"unknown x0 projection {kind!r}; expected one of {PROJECTIONS}")
    dim = x0.shape[-1]
    degree = math.isqrt(dim) - 1
    if (degree + 1) ** 2 != dim:
        raise ValueError(f"SHDD vectors have (L+1)^2 entries; got {dim}")
    unit = scale / math.sqrt(4 * math.pi)
    if kind == "snap":
        return shdd.encode(grid_argmax(x0, 4 * (degree + 1)).to(x0.device), degree).to(x0.dtype) * scale
    if kind == "norm":
        return x0 * ((degree + 1) * unit / x0.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    ls = torch.arange(degree + 1, device=x0.device)
    owner = torch.repeat_interleave(ls, 2 * ls + 1)  # degree of each entry
    block_sq = torch.zeros(x0.shape[:-1] + (degree + 1,), dtype=x0.dtype, device=x0.device)
    block_sq.index_add_(-1, owner, x0.square())
    target = (2 * ls + 1).to(x0.dtype).sqrt() * unit
    gain = target / block_sq.sqrt().clamp_min(1e-12)
    if kind == "clip":
        gain = gain.clamp_max(1.0)
    out = x0 * gain.index_select(-1, owner)
    out[..., 0] = unit  # Y_00 = 1/sqrt(4π) > 0 everywhere
    return out


def linear_betas(steps: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020) linear schedule, rescaled so any ``steps`` spans the same noise range as 1000."""
    scale = 1000.0 / steps
    return torch.linspace(scale * start, min(scale * end, 0.999), steps, dtype=torch.float64)


def cosine_betas(steps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021) cosine schedule."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    abar = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
    abar = abar / abar[0]
    return (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)


@attrs.frozen
class Schedule:
    """Precomputed DDPM quantities for ``steps`` diffusion steps (float64, moved to a device on use)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @classmethod
    def make(cls, kind: str, steps: int) -> "Schedule":
        if kind not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {kind!r}; expected one of {SCHEDULES}")
        if steps < 2:
            raise ValueError(f"diffusion needs at least 2 steps, got {steps}")
        betas = cosine_betas(steps) if kind == "cosine" else linear_betas(steps)
        return cls(betas=betas, alphas_cumprod=torch.cumprod(1 - betas, 0))

    @property
    def steps(self) -> int:
        return self.betas.shape[0]


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device)[t].to(like.dtype)[:, None]


Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def log_snr(schedule: Schedule) -> torch.Tensor:
    """``λ_t = log(sqrt(ᾱ_t) / sqrt(1 − ᾱ_t))`` per timestep (float64, decreasing in t)."""
    abar = schedule.alphas_cumprod
    return 0.5 * (abar.log() - (-abar).log1p())


def logsnr_times(schedule: Schedule, count: int) -> list[int]:
    """``count`` distinct timesteps (descending, first T−1, last 0) spread evenly in log-SNR λ.

    Greedy: the pair of chosen neighbours with the widest λ gap gets the integer timestep nearest
    its λ midpoint, until ``count`` are chosen. Evenly spaced *t* (DDIM's choice) spends few calls
    where the cosine schedule's λ moves fastest — the high-noise end, where the chain decides
    between modes — and that is where coarse samplers lose the prior's weights (README: oracle).
    """
    total = schedule.steps
    count = max(2, min(count, total))
    lam = log_snr(schedule)
    chosen = {total - 1, 0}
    while len(chosen) < count:
        ordered = sorted(chosen, reverse=True)
        gaps = [(float(lam[b] - lam[a]), a, b) for a, b in zip(ordered, ordered[1:]) if a - b > 1]
        _, a, b = max(gaps)
        mid = 0.5 * (lam[a] + lam[b])
        chosen.add(b + 1 + int((lam[b + 1 : a] - mid).abs().argmin()))
    return sorted(chosen, reverse=True)


def sampling_times(schedule: Schedule, sampler: str, steps: int | None) -> list[int]:
    """The timesteps a sampler visits, noisiest first; one network call each.

    ``ddpm``: all T; ``ddim``: ``steps`` (default 20) evenly spaced in t; ``dpmpp2m`` and
    ``dpmpp2m-sde``: ``steps`` (default 20) evenly spaced in log-SNR (:func:`logsnr_times`).
    """
    total = schedule.steps
    if sampler == "ddpm":
        return list(range(total - 1, -1, -1))
    if sampler == "ddim":
        n = min(steps or 20, total)
        return sorted({int(round(v)) for v in torch.linspace(total - 1, 0, n).tolist()}, reverse=True)
    if sampler in ("dpmpp2m", "dpmpp2m-sde"):
        return logsnr_times(schedule, steps or 20)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


def _dpmpp2m_step(x, x0, a_t, a_prev, old_x0, old_h, stochastic: bool, normal):
    """One DPM-Solver++(2M) step (Lu et al. 2022, data prediction), or its SDE variant.

    With ``α = sqrt(ᾱ)``, ``σ = sqrt(1 − ᾱ)``, ``h = λ_prev − λ_t``: ``D = x0 + (x0 − x0_old)/(2r)``
    (``r = h_old / h``; first order, i.e. DDIM, on the first step), then
    ODE: ``x ← (σ_prev/σ_t) x + α_prev (1 − e^{−h}) D``;
    SDE: ``x ← (σ_prev/σ_t) e^{−h} x + α_prev (1 − e^{−2h}) D + σ_prev sqrt(1 − e^{−2h}) z``.
    Returns the new x and the (x0, h) the next step needs.
    """
    al_t, si_t = a_t.sqrt(), (1 - a_t).sqrt()
    al_p, si_p = a_prev.sqrt(), (1 - a_prev).sqrt()
    h = (al_p / si_p).log() - (al_t / si_t).log()
    d = x0 if old_x0 is None else x0 + (x0 - old_x0) * float(h / (2 * old_h))
    if stochastic:
        x = (si_p / si_t * (-h).exp()).to(x.dtype) * x + (al_p * -torch.expm1(-2 * h)).to(x.dtype) * d
        x = x + (si_p * (-torch.expm1(-2 * h)).sqrt()).to(x.dtype) * normal((x.shape[0], x.shape[1]))
    else:
        x = (si_p / si_t).to(x.dtype) * x + (al_p * -torch.expm1(-h)).to(x.dtype) * d
    return x, x0, h


@attrs.frozen
class Diffusion:
    """Forward process, loss and samplers; the network is passed in, never owned."""

    schedule: Schedule
    data_scale: float = math.sqrt(4 * math.pi)
    projection: str = attrs.field(default=DEFAULT_PROJECTION, validator=attrs.validators.in_(PROJECTIONS))
    parameterization: str = attrs.field(default="x0", validator=attrs.validators.in_(PARAMETERIZATIONS))
    l0: float | None = None  # output head: the x0 prediction's l = 0 entry held at this constant (a latent's is 1)

    def predict_x0(self, model: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The network's x0 prediction at ``(x_t, t)`` whatever its output means (:data:`PARAMETERIZATIONS`).

        ``"v"``: ``x0 = sqrt(ᾱ_t) x_t − sqrt(1−ᾱ_t) v̂`` — at low noise x0 stays next to ``x_t`` and the
        network only corrects it (for unit-variance data this is EDM's skip/output scaling); at high noise
        ``x0 ≈ −v̂``, the plain x0 prediction. Losses and samplers see x0 either way.
        """
        out = model(x, t, cond)
        if self.parameterization == "v":
            abar = _at(self.schedule.alphas_cumprod, t, x)
            out = abar.sqrt() * x - (1 - abar).sqrt() * out
        if self.l0 is not None:
            out = torch.cat((out.new_full(out.shape[:-1] + (1,), self.l0), out[..., 1:]), dim=-1)
        return out

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε``."""
        abar = _at(self.schedule.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def loss(
        self,
        model: Denoiser,
        target_latlon: torch.Tensor,
        cond: torch.Tensor,
        anchors: torch.Tensor,
        *,
        kind: str = "kl",
        generator: torch.Generator | None = None,
        degree: int,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        l2_weight: float = 1.0,
        weighting: str = "uniform",
        snr_max: float = 5.0,
        anchor_log_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DDPM training loss: sample t and ε, predict x_0, compare with the truth (mean over the batch).

        ``kl+l2`` adds ``l2_weight`` × the mean squared latent error to the KL: both are minimised by
        ``E[x_0 | x_t]``, but the KL alone is nearly flat in a code's scale and blind to its ``l = 0``
        entry, which the L2 term pins (README: objective).

        ``weighting="snr-clamp"`` multiplies each item's loss by ``clamp(ᾱ_t/(1-ᾱ_t), 1, snr_max)``: the
        posterior mean stays the optimum at every t, but low-noise steps (which place the final point) count
        more. ``anchor_log_weights`` [N]: the anchors' log areas (importance anchors; uniform if None).

        ``t`` [B] and ``noise`` [B, (degree+1)^2] may be given (drawn by the caller, e.g. for the
        global batch of distributed training and sliced per rank); otherwise they are drawn from
        ``generator`` (t first, then ε).
        """
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
        x0 = shdd.encode(target_latlon, degree).to(cond.dtype) * self.data_scale
        b = x0.shape[0]
        gen_device = generator.device if generator is not None else None
        if t is None:
            t = torch.randint(0, self.schedule.steps, (b,), generator=generator, device=gen_device)
        elif t.shape != (b,):
            raise ValueError(f"t must have shape [{b}], got {tuple(t.shape)}")
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise must have shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
        t, noise = t.to(x0.device), noise.to(device=x0.device, dtype=x0.dtype)
        pred = self.predict_x0(model, self.q_sample(x0, t, noise), t, cond)
        per_item = self._per_item_loss(kind, pred, x0, target_latlon, anchors, l2_weight, anchor_log_weights)
        if weighting == "uniform":
            return per_item.mean()
        if weighting != "snr-clamp":
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
        abar = self.schedule.alphas_cumprod.to(x0.device, torch.float64)[t]
        w = (abar / (1 - abar)).clamp(1.0, snr_max).to(per_item.dtype)
        return (w * per_item).mean()

    def _per_item_loss(self, kind, pred, x0, target_latlon, anchors, l2_weight, log_weights=None) -> torch.Tensor:
        """Each item's loss [B] (before the per-timestep weight)."""
        if kind in ("kl", "kl+l2"):
            kl = shdd.kl(pred / self.data_scale, target_latlon, anchors, log_weights)
            return kl if kind == "kl" else kl + l2_weight * (pred - x0).square().mean(-1)
        if kind == "l1":
            return (pred - x0).abs().mean(-1)
        if kind == "l2":
            return (pred - x0).square().mean(-1)
        return 1 - torch.nn.functional.cosine_similarity(pred, x0, dim=-1)

    @torch.no_grad()
    def sample(
        self,
        model: Denoiser,
        cond: torch.Tensor,
        *,
        dim: int,
        sampler: str = "ddim",
        steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        projection: str | None = None,
        noise: Callable[[tuple[int, int]], torch.Tensor] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Draw one SHDD vector per condition row (repeat rows for K samples): ``[B, d_I]`` → ``[B, dim]``.

        ``ddpm`` runs the full ancestral chain (paper: 100 steps); ``ddim`` (Song et al. 2021)
        visits ``steps`` evenly spaced timesteps, deterministic for ``eta = 0``; ``dpmpp2m``
        (DPM-Solver++(2M), deterministic) and ``dpmpp2m-sde`` (its stochastic variant) visit
        ``steps`` timesteps evenly spaced in log-SNR (:func:`sampling_times`). One network call per
        visited timestep. Against the exact oracle (:mod:`locdiff.core.oracle`, README) ``ddim``
        at 20 steps over-weights heavy modes; ``dpmpp2m`` at 15 keeps the weights. Returned vectors
        are in SHDD units (``data_scale`` removed), ready for :func:`locdiff.decode`. Each step's x0
        prediction is projected with :func:`project_codes` (``projection``, default the instance's).

        ``noise(shape)`` (optional) supplies every standard-normal draw of the chain instead of
        ``generator`` (callers use it to seed each input on its own); ``on_step(done, total)`` is
        called after each step and may raise to cancel the chain.
        """
        projection = self.projection if projection is None else projection
        gen_device = generator.device if generator is not None else cond.device

        def normal(shape: tuple[int, int]) -> torch.Tensor:
            if noise is not None:
                return noise(shape).to(device=cond.device, dtype=cond.dtype)
            return torch.randn(shape, generator=generator, device=gen_device, dtype=cond.dtype).to(cond.device)

        times = sampling_times(self.schedule, sampler, steps)
        x = normal((cond.shape[0], dim))
        abar = self.schedule.alphas_cumprod.to(device=cond.device)
        one = torch.ones((), dtype=abar.dtype, device=abar.device)
        old_x0, old_h = None, None  # DPM-Solver++(2M): the previous x0 and log-SNR step
        for i, t in enumerate(times):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            # the last x0 is the answer: keep it continuous (decode refines it); never snap it to the grid
            last_kind = "degree" if projection == "snap" and i + 1 == len(times) else projection
            x0 = project_codes(self.predict_x0(model, x, tt, cond), last_kind, self.data_scale)
            prev = times[i + 1] if i + 1 < len(times) else -1
            a_t, a_prev = abar[t], (abar[prev] if prev >= 0 else one)  # float64 coefficients
            if prev < 0:  # ᾱ = 1: the clean latent is the last x0 prediction
                x = x0
            elif sampler.startswith("dpmpp2m"):
                x, old_x0, old_h = _dpmpp2m_step(x, x0, a_t, a_prev, old_x0, old_h, sampler.endswith("-sde"), normal)
            else:
                eps = (x - a_t.sqrt().to(x.dtype) * x0) / (1 - a_t).sqrt().clamp_min(1e-12).to(x.dtype)
                ratio = 1 - a_t / a_prev  # β of the (sub-)step
                sigma = ((1 - a_prev) / (1 - a_t) * ratio).clamp_min(0).sqrt() * (1.0 if sampler == "ddpm" else eta)
                x = a_prev.sqrt().to(x.dtype) * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt().to(x.dtype) * eps
                if float(sigma) > 0:
                    x = x + sigma.to(x.dtype) * normal((x.shape[0], x.shape[1]))
            if on_step is not None:
                on_step(i + 1, len(times))
        return x / self.data_scale
