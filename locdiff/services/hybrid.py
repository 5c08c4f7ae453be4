"""LocDiff-H: GeoCLIP retrieval restricted to a radius around the diffusion samples (paper §5.2, "Ours + GeoCLIP")."""

from __future__ import annotations

from pathlib import Path

import torch

from locdiff.ports import Retriever


def refine_with_retrieval(
    retriever: Retriever,
    images: list[Path],
    samples: torch.Tensor,
    fallback: torch.Tensor,
    *,
    radius_km: float = 200.0,
    batch: int = 64,
) -> torch.Tensor:
    """Top retrieved gallery location within ``radius_km`` of some sample, per image: ``[B, 2]``.

    ``samples`` [B, K, 2] are the decoded diffusion candidates; where retrieval returns nothing
    (unreadable image, empty neighbourhood) the ``fallback`` point [B, 2] is kept.
    """
    out = fallback.clone().double()
    for start in range(0, len(images), batch):
        latlon, _ = retriever.retrieve(images[start : start + batch], samples[start : start + batch], radius_km, top_k=1)
        top = latlon[:, 0].double()
        ok = torch.isfinite(top).all(-1)
        out[start : start + batch][ok] = top[ok]
    return out


def evaluate_hybrid(retriever: Retriever, data, split: str, evaluation, *, radius_km: float = 200.0, store=None,
                    run_id: int | None = None) -> dict[str, float]:
    """LocDiff-H metrics on the items an :class:`~locdiff.services.evaluation.Evaluation` covered (an image dataset)."""
    from locdiff.core.metrics import summarize

    index = data.splits[split][: evaluation.truth.shape[0]]
    images = [Path(data.items[i]) for i in index.tolist()]
    if not all(p.suffix for p in images):
        raise ValueError("--hybrid needs an image dataset (GeoCLIP retrieves with image features)")
    refined = refine_with_retrieval(retriever, images, evaluation.samples, evaluation.predictions, radius_km=radius_km)
    metrics = summarize(refined, evaluation.truth)
    if store is not None and run_id is not None:
        store.add_evaluation(run_id, f"{data.name}:{split}:hybrid{radius_km:g}km", metrics)
    return metrics
