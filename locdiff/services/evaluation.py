"""Use case: evaluate a trained model on a split (accuracy at 1/25/200/750/2500 km, median km, GeoScore)."""

from __future__ import annotations

import attrs
import torch

from locdiff.core.bundle import ModelBundle
from locdiff.config import EvalConfig
from locdiff.core.metrics import summarize
from locdiff.core.reduction import REDUCERS, reduce_samples
from locdiff.core.decoding import default_radius_km
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
    points, samples, _ = predict_locations(bundle, data.cond[index], settings.sampling(seed), device=device, progress=progress)
    truth = data.latlon[index]
    radius = 2 * default_radius_km(bundle.degree)
    by_reducer = {r: summarize(reduce_samples(samples, r, radius_km=radius), truth) for r in REDUCERS}
    metrics = summarize(points, truth)
    if store is not None and run_id is not None:
        tag = f"{data.name}:{split}:{settings.sampler}{settings.sampler_steps}"
        store.add_evaluation(run_id, tag, metrics)
        for r, m in by_reducer.items():
            store.add_evaluation(run_id, f"{tag}:{r}", m)
    return Evaluation(split, metrics, by_reducer, points, samples, truth)
