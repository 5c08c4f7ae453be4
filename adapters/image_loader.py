"""Image decoding in worker processes for batch prediction: a torch ``DataLoader`` in front of the CLIP embedder.

:class:`LoaderImageEmbedder` wraps an :class:`~adapters.clip_embedder.OpenClipEmbedder`: photos are opened, decoded
(HEIC included), made upright and preprocessed by ``workers`` processes while the model encodes, in the same groups
of ``batch_size`` paths as the wrapped embedder (so the vectors are the same); unreadable files become
``ItemFailure`` s with the reader's reason. Texts go straight to the wrapped embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from adapters.images import ImageError
from locdiff.ports import Embedded, ItemFailure

__all__ = ["LoaderImageEmbedder"]


class _Decoded(Dataset):
    """Item ``i``: ``(i, pixels)`` or ``(i, reason)`` for ``paths[i]``."""

    def __init__(self, paths: Sequence[Path], load: Any) -> None:
        self.paths, self.load = [Path(p) for p in paths], load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | str]:
        try:
            out = self.load(self.paths[i])
        except (OSError, ValueError) as exc:  # anything the readers raise for a bad file
            return i, str(exc)
        return i, (str(out) if isinstance(out, ImageError) else out)


def _as_list(batch: list) -> list:
    return batch


class LoaderImageEmbedder:
    """An ``Embedder`` whose image decoding runs in ``workers`` DataLoader processes (0: in this process)."""

    def __init__(self, clip: Any, workers: int = 2) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.clip, self.workers = clip, workers

    @property
    def id(self) -> str:
        return self.clip.id

    @property
    def dim(self) -> int:
        return self.clip.dim

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        return self.clip.embed_texts(texts)

    def embed_images(self, paths: Sequence[Path]) -> Embedded:
        clip = self.clip
        loader = DataLoader(_Decoded(paths, clip._load), batch_size=clip.batch_size, shuffle=False,
                            num_workers=min(self.workers, max(1, len(paths) // clip.batch_size + 1)) if self.workers else 0,
                            collate_fn=_as_list)
        rows: list[torch.Tensor] = []
        index: list[int] = []
        failures: list[ItemFailure] = []
        for batch in loader:
            pixels = []
            for i, item in batch:
                if isinstance(item, str):
                    failures.append(ItemFailure(str(paths[i]), item))
                else:
                    index.append(i)
                    pixels.append(item)
            if pixels:
                with torch.no_grad():
                    features = clip.model.encode_image(torch.stack(pixels).to(clip.device, clip._dtype))
                rows.append(clip._finish(features, True))
        vectors = torch.cat(rows) if rows else torch.empty(0, clip.dim, dtype=torch.float32)
        return Embedded(vectors, tuple(index), tuple(failures))


def decode_in_workers(embedder: Any, workers: int) -> bool:
    """Give a (cached) CLIP embedder DataLoader decoding in place; False (nothing done) for any other embedder."""
    from adapters.clip_embedder import OpenClipEmbedder

    holder = embedder if hasattr(embedder, "inner") else None
    target = holder.inner if holder is not None else embedder
    if workers < 1 or not isinstance(target, OpenClipEmbedder) or holder is None:
        return False
    holder.inner = LoaderImageEmbedder(target, workers)
    return True
