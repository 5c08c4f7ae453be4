"""Use case: evaluate a trained model on a split.

Accuracy at 1/25/200/750/2500 km, median km, GeoScore — and the proper scores of the predicted
distribution (:mod:`locdiff.core.scores`): NLL of the truth under the K-sample mixture, energy score
of the K samples, raw coverage of the 50/90/95 % HPD regions, each with a 95 % bootstrap interval
over places. The one-step prediction (the network's x0 from pure noise, K draws, decoded as a
density) is scored the same way: the chain has to beat it.
"""

from __future__ import annotations

import attrs
import torch

from locdiff.core.bundle import ModelBundle
from locdiff.config import EvalConfig
from locdiff.core.metrics import summarize
from locdiff.core.reduction import REDUCERS, reduce_samples
from locdiff.core.decoding import decode, default_radius_km
from locdiff.core.scores import accuracy_intervals, proper_scores, summarize_scores
from locdiff.ports import ExperimentStore
from locdiff.services.data import PreparedData
from locdiff.services.progress import ProgressFactory
from locdiff.services.sampling import predict_locations


@attrs.frozen
class Evaluation:
    split: str
    metrics: dict[str, float]
    by_reducer: dict[str, dict[str, float]]
    predictions: torch.Tensor  # [N, 2] with the configured reducer
    samples: torch.Tensor  # [N, K, 2]
    truth: torch.Tensor  # [N, 2]
    one_step: dict[str, float] | None = None  # the one-step x0 prediction's accuracy and scores
    coefficients: torch.Tensor | None = None  # [N, K, D] SHDD samples (with scores)


@torch.no_grad()
def one_step_coefficients(bundle: ModelBundle, cond: torch.Tensor, *, samples: int, seed: int, device: torch.device, batch: int = 128) -> torch.Tensor:
    """The network's x0 prediction from pure noise at the last timestep, K draws per condition: [B, K, D] (SHDD units)."""
    bundle.net.eval()
    g = torch.Generator().manual_seed(seed)
    t_last = bundle.diffusion.schedule.steps - 1
    out = []
    for start in range(0, cond.shape[0], batch):
        c = cond[start : start + batch].to(device).repeat_interleave(samples, 0)
        x = torch.randn(c.shape[0], bundle.dim, generator=g).to(device=device, dtype=c.dtype)
        t = torch.full((c.shape[0],), t_last, dtype=torch.long, device=device)
        out.append((bundle.diffusion.predict_x0(bundle.net, x, t, c) / bundle.diffusion.data_scale).reshape(-1, samples, bundle.dim).cpu())
    return torch.cat(out)


def scored(coeffs: torch.Tensor, samples: torch.Tensor, points: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Accuracy of ``points`` and the proper scores of the K samples (``coeffs`` [N, K, D], ``samples`` [N, K, 2]),
    each with its 95 % bootstrap interval over items."""
    return accuracy_intervals(points, truth) | summarize_scores(proper_scores(coeffs.double(), samples, truth))


def one_step_scored(bundle: ModelBundle, cond: torch.Tensor, truth: torch.Tensor, *, samples: int, reducer: str, seed: int,
                    device: torch.device) -> dict[str, float]:
    """The one-step prediction (K x0 draws from noise, decoded as the same mixture) scored as :func:`scored`: the row the
    chain must beat."""
    first = one_step_coefficients(bundle, cond, samples=samples, seed=seed, device=device)
    locs = decode(first.reshape(-1, bundle.dim).float()).reshape(first.shape[0], samples, 2).double()
    return scored(first, locs, reduce_samples(locs, reducer, radius_km=2 * default_radius_km(bundle.degree)), truth)


def evaluate(
    bundle: ModelBundle,
    data: PreparedData,
    split: str,
    settings: EvalConfig,
    *,
    device: torch.device,
    seed: int = 0,
    store: ExperimentStore | None = None,
    run_id: int | None = None,
    progress: ProgressFactory | None = None,
) -> Evaluation:
    """Sample K locations per item of ``split``, reduce them with every reducer, report the configured one."""
    if split not in data.splits:
        raise ValueError(f"unknown split {split!r}; have {sorted(data.splits)}")
    index = data.splits[split]
    if settings.max_items is not None:
        index = index[: settings.max_items]
    if index.numel() == 0:
        raise ValueError(f"split {split!r} of dataset {data.name!r} is empty")
    points, samples, coeffs = predict_locations(bundle, data.cond[index], settings.sampling(seed), device=device, progress=progress,
                                                keep_coefficients=settings.scores)
    truth = data.latlon[index]
    radius = 2 * default_radius_km(bundle.degree)
    by_reducer = {r: summarize(reduce_samples(samples, r, radius_km=radius), truth) for r in REDUCERS}
    metrics = scored(coeffs, samples, points, truth) if settings.scores else summarize(points, truth)
    one_step = None
    if settings.scores and settings.one_step:
        one_step = one_step_scored(bundle, data.cond[index], truth, samples=settings.samples, reducer=settings.reducer, seed=seed,
                                   device=device)
    if store is not None and run_id is not None:
        tag = f"{data.name}:{split}:{settings.sampler}{settings.sampler_steps}"
        store.add_evaluation(run_id, tag, metrics)
        for r, m in by_reducer.items():
            store.add_evaluation(run_id, f"{tag}:{r}", m)
        if one_step is not None:
            store.add_evaluation(run_id, f"{data.name}:{split}:one-step", one_step)
    return Evaluation(split, metrics, by_reducer, points, samples, truth, one_step, coeffs)
