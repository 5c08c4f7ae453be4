"""Use case: turn a located dataset into condition vectors and splits (embedding via the ``Embedder`` port)."""

from __future__ import annotations

import attrs
import torch

from locdiff.config import DataConfig
from locdiff.ports import DatasetSource, Embedder, ItemFailure
from locdiff.core.splits import HOLDOUT, spatial_holdout, split_by_hash


@attrs.frozen
class PreparedData:
    """Embedded samples and index splits. ``cond`` [N, d_I] float32, ``latlon`` [N, 2] float64.

    ``holdout`` indexes the spatially held-out samples (never trained on); empty without a hold-out.
    """

    name: str
    cond: torch.Tensor
    latlon: torch.Tensor
    items: tuple[str, ...]
    ids: tuple[str, ...]
    splits: dict[str, torch.Tensor]
    embedder_id: str
    failures: tuple[ItemFailure, ...] = ()

    @property
    def cond_dim(self) -> int:
        return int(self.cond.shape[1])


def prepare(source: DatasetSource, embedder: Embedder, config: DataConfig) -> PreparedData:
    """Load, embed (items that fail are dropped and reported), validate and split a dataset."""
    samples = source.load()
    if len(samples) == 0:
        raise ValueError(f"dataset {samples.name!r} is empty")
    embed = embedder.embed_texts if samples.kind == "text" else embedder.embed_images
    result = embed(list(samples.items))
    keep = torch.tensor(result.index, dtype=torch.long)
    cond = result.vectors.float()
    where = f"dataset {samples.name!r}"
    if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= len(samples)):
        raise ValueError(f"{where}: embedder {embedder.id!r} returned row indices outside [0, {len(samples)})")
    if cond.ndim != 2 or cond.shape[0] != keep.shape[0] or cond.shape[1] != embedder.dim:
        raise ValueError(
            f"{where}: field 'embedding': embedder {embedder.id!r} returned vectors of shape {tuple(cond.shape)} "
            f"for {keep.shape[0]} item(s); expected [{keep.shape[0]}, {embedder.dim}] (its declared width is {embedder.dim})"
        )
    bad = ~torch.isfinite(cond)
    if bool(bad.any()):
        rows = bad.any(1).nonzero()[:, 0]
        row, col = int(rows[0]), int(bad[rows[0]].nonzero()[0])
        i = int(keep[row])
        raise ValueError(
            f"{where}: row {i + 1} (id {samples.ids[i]!r}, item {samples.items[i]!r}): field 'embedding' has "
            f"{cond[row, col].item()} at position {col}; {rows.numel()} embedding(s) contain NaN or inf "
            f"(embedder {embedder.id!r})"
        )
    if keep.numel() == 0:
        first = f"{result.failures[0].item}: {result.failures[0].reason}" if result.failures else "no reason given"
        raise ValueError(f"{where}: no item could be embedded by {embedder.id!r}; first failure: {first}")
    ids = tuple(samples.ids[i] for i in keep.tolist())
    latlon = samples.latlon[keep].double()
    groups = tuple(samples.groups[i] for i in keep.tolist()) if samples.groups is not None else None
    splits = split_by_hash(ids, val=config.val_fraction, test=config.test_fraction)
    held = torch.zeros(len(ids), dtype=torch.bool)
    if config.holdout_groups or config.holdout_lat_band:
        held = spatial_holdout(latlon, groups, groups_out=config.holdout_groups, lat_band=config.holdout_lat_band)
    splits = {k: v[~held[v]] for k, v in splits.items()}
    splits[HOLDOUT] = held.nonzero()[:, 0]
    return PreparedData(
        name=samples.name,
        cond=cond,
        latlon=latlon,
        items=tuple(samples.items[i] for i in keep.tolist()),
        ids=ids,
        splits=splits,
        embedder_id=embedder.id,
        failures=tuple(result.failures),
    )
