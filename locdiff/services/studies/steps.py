"""Steps the studies share: items of a split, K samples per item, LocDiffusion and baseline rows, a one-value sweep."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from locdiff.config import RunConfig
from locdiff.core.baselines import baseline_fitters
from locdiff.core.bundle import ModelBundle
from locdiff.core.decoding import decode, default_radius_km
from locdiff.core.metrics import summarize
from locdiff.core.reduction import reduce_samples
from locdiff.core.scores import accuracy_intervals, proper_scores, summarize_scores
from locdiff.core.tables import StudyResult
from locdiff.services.data import PreparedData
from locdiff.services.evaluation import one_step_scored, scored
from locdiff.services.sampling import predict_locations
from locdiff.services.studies.models import TrainedModel, describe, train_model
from locdiff.services.studies.settings import StudyEnv, StudySettings, study_config

def split_items(data: PreparedData, split: str, limit: int) -> torch.Tensor:
    if split not in data.splits or data.splits[split].numel() == 0:
        raise ValueError(f"dataset {data.name!r} has no {split!r} items")
    return data.splits[split][:limit]


@attrs.frozen
class Sampled:
    """K diffusion samples per item: decoded locations [N, K, 2] and SHDD vectors [N, K, D]."""

    samples: torch.Tensor
    coeffs: torch.Tensor
    truth: torch.Tensor
    seconds: float


def sample_items(bundle: ModelBundle, data: PreparedData, index: torch.Tensor, settings: StudySettings, env: StudyEnv) -> Sampled:
    t0 = time.perf_counter()
    _, samples, coeffs = predict_locations(bundle, data.cond[index], settings.sampling(), device=env.compute.device,
                                           progress=env.progress, keep_coefficients=True)
    return Sampled(samples, coeffs.float(), data.latlon[index].double(), time.perf_counter() - t0)


def model_points(bundle: ModelBundle, samples: torch.Tensor, reducer: str) -> torch.Tensor:
    """Each item's K decoded samples [N, K, 2] reduced to one point [N, 2] (merge radius as ``eval``)."""
    return reduce_samples(samples, reducer, radius_km=2 * default_radius_km(bundle.degree))


def locdiff_metrics(bundle: ModelBundle, sampled: Sampled, reducer: str) -> dict[str, float]:
    return summarize(model_points(bundle, sampled.samples, reducer), sampled.truth)


def distribution_scores(coeffs: torch.Tensor, samples: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """NLL, energy score and raw 50/90/95 % coverage of K samples per item (means with 95 % intervals), as ``eval``."""
    return summarize_scores(proper_scores(coeffs.double(), samples, truth))


@torch.no_grad()
def one_step_points(bundle: ModelBundle, cond: torch.Tensor, *, device: torch.device, seed: int = 0, batch: int = 512) -> torch.Tensor:
    """Diagnostic: the denoiser's x0 prediction from pure noise at t = T−1 (≈ E[x0 | c]), decoded, ``[N, 2]``.

    It shows what the network learned independently of the sampling chain: if it is much better
    than the sampled predictions, the chain (not the conditional model) is what loses accuracy.
    """
    bundle.net.eval()
    g = torch.Generator().manual_seed(seed)
    last = bundle.diffusion.schedule.steps - 1
    out = []
    for start in range(0, cond.shape[0], batch):
        c = cond[start : start + batch].to(device)
        x = torch.randn(c.shape[0], bundle.dim, generator=g).to(device=device, dtype=c.dtype)
        x0 = bundle.diffusion.predict_x0(bundle.net, x, torch.full((c.shape[0],), last, dtype=torch.long, device=device), c) / bundle.diffusion.data_scale
        out.append(decode(x0.float()).double().cpu())
    return torch.cat(out)


def locdiff_rows(result: StudyResult, table: str, model: ModelBundle, sampled: Sampled, cond: torch.Tensor, env: StudyEnv,
                  settings: StudySettings, reducers: Sequence[str] = ("mode", "centre"), extra: Mapping[str, float] | None = None) -> None:
    """A row per reducer and one for the one-step prediction, each with accuracy and the proper scores of its distribution
    (NLL, energy score, raw 50/90/95 % coverage, all with 95 % intervals, as ``eval``): the K samples' mixture for the
    reducer rows (one distribution, so the same scores on each), K x0 draws from noise for the one-step row."""
    truth = sampled.truth
    dist = distribution_scores(sampled.coeffs, sampled.samples, truth)
    for reducer in reducers:
        accuracy = accuracy_intervals(model_points(model, sampled.samples, reducer), truth)
        result.add_row(table, f"{describe(model)}, {reducer}", accuracy | dist | dict(extra or {}))
    result.add_row(table, f"↳ its one-step prediction ({settings.samples} x0 draws from noise, {reducers[0]})",
                   one_step_scored(model, cond, truth, samples=settings.samples, reducer=reducers[0], seed=settings.seed,
                                   device=env.compute.device))


def fit_baselines(data: PreparedData, settings: StudySettings, env: StudyEnv) -> dict[str, tuple[Any, float]]:
    """Each baseline of :func:`locdiff.core.baselines.baseline_fitters` fitted on train (selection on val), with its fit time."""
    tr, va = data.splits["train"], data.splits.get("val", torch.empty(0, dtype=torch.long))
    args = (data.cond[tr], data.latlon[tr], data.cond[va], data.latlon[va])
    fitters = baseline_fitters(device=env.compute.device, seed=settings.seed, steps=settings.baseline_steps, cells=settings.baseline_cells)
    out: dict[str, tuple[Any, float]] = {}
    for name, fit in fitters.items():
        env.say(f"fitting baseline {name}")
        t0 = time.perf_counter()
        out[name] = (fit(*args), time.perf_counter() - t0)
    return out


def baseline_rows(result: StudyResult, table: str, fitted, cond: torch.Tensor, truth: torch.Tensor,
                  scores: Mapping[str, Mapping[str, float]]) -> None:
    """A row per fitted baseline: accuracy with 95 % intervals, fit time, and ``scores[name]`` for those with a density."""
    for name, (model, seconds) in fitted.items():
        row = accuracy_intervals(model.predict(cond), truth) | {"fit_s": seconds}
        result.add_row(table, model.name, row | dict(scores.get(name, {})))


def sweep(result: StudyResult, data: PreparedData, config: RunConfig, env: StudyEnv, settings: StudySettings, override: str,
           values: Sequence[Any], what: str, experiment: str, *, label: Callable[[Any], str], key: Callable[[Any], str],
           extra: Callable[[Any, TrainedModel, Sampled], Mapping[str, float]]) -> None:
    """One model per value of config field ``override`` (same data, steps, batch, seed): test accuracy (with intervals),
    the proper scores of its K samples (as ``eval``) + extra columns per model, and each denoiser's one-step-from-noise
    accuracy as a diagnostic table."""
    test = split_items(data, "test", settings.eval_items)
    table = f"test accuracy (%) by {what} ({settings.steps} steps each, {test.numel()} items)"
    for value in values:
        trained = train_model(study_config(config, settings, **{override: value}), data, env, experiment=experiment)
        if trained.run_id is not None:
            result.model_runs[key(value)] = trained.run_id
        sampled = sample_items(trained.bundle, data, test, settings, env)
        point = model_points(trained.bundle, sampled.samples, trained.bundle.config.eval.reducer)
        metrics = scored(sampled.coeffs, sampled.samples, point, sampled.truth)
        result.add_row(table, label(value), metrics | dict(extra(value, trained, sampled)))
        one = one_step_points(trained.bundle, data.cond[test], device=env.compute.device, seed=settings.seed)
        result.add_row(f"diagnostic: each model's denoiser, one step from noise ({test.numel()} items)", label(value),
                       summarize(one, sampled.truth))

