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
