"""The ``EmbeddingRetriever`` port on a training split's own embeddings: a memory-mapped gallery, chunked cosine top-k.

LocDiff-H for any embedder (text MiniLM, CLIP trained on the user's photos): the gallery is the
(embedding, location) pairs the model was trained on. :class:`GalleryCache` (the ``GalleryProvider``
port) writes them once per content, one folder per gallery under ``cache_dir``::

    <cache_dir>/<sanitised embedder id>-<content key>/
        vectors.npy     float32 [N, d] unit rows (L2-normalised once, so search is a dot product)
        latlon.npy      float64 [N, 2] degrees
        meta.json       {"format", "embedder_id", "key", "size", "dim"} — written last: it commits the folder

The key is a sha256 over the embedder id and the exact vector and location bytes, so a changed
training split (other places, other CSV rows, another embedder) opens a new folder and an unchanged
one reuses the files without rewriting them. Every file is written atomically (temp + replace).
:class:`MappedGallery` reads the vectors memory-mapped, ``chunk`` rows at a time, keeping a running
top-k per query: memory stays ``O(queries × (chunk + k))`` however large the gallery.
Old galleries are not deleted (another run may use them); remove ``cache_dir`` to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import numpy as np
import torch

from adapters.atomic import atomic_open

__all__ = ["GalleryCache", "MappedGallery", "content_key"]

FORMAT = 1
_HASH_ROWS = 65_536


def content_key(vectors: torch.Tensor, latlon: torch.Tensor, embedder_id: str) -> str:
    """sha256 (hex) of the gallery's content: embedder id, shapes and the float32 vectors / float64 locations."""
    h = hashlib.sha256(f"locdiff-gallery-v{FORMAT}\0{embedder_id}\0{tuple(vectors.shape)}\0".encode())
    v = vectors.detach().to("cpu", torch.float32).contiguous().numpy()
    for start in range(0, v.shape[0], _HASH_ROWS):
        h.update(np.ascontiguousarray(v[start : start + _HASH_ROWS]).data)
    h.update(latlon.detach().to("cpu", torch.float64).contiguous().numpy().data)
    return h.hexdigest()


def _check(vectors: torch.Tensor, latlon: torch.Tensor) -> None:
    if vectors.ndim != 2 or latlon.ndim != 2 or latlon.shape[1] != 2 or vectors.shape[0] != latlon.shape[0]:
        raise ValueError(f"gallery: need vectors [N, d] and latlon [N, 2] with the same N; got {tuple(vectors.shape)} and {tuple(latlon.shape)}")
    if vectors.shape[0] == 0:
        raise ValueError("gallery: the training split is empty; LocDiff-H needs training items to retrieve")
    if not bool(torch.isfinite(vectors).all()) or not bool(torch.isfinite(latlon).all()):
        raise ValueError("gallery: embeddings or locations contain NaN or inf")


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


class MappedGallery:
    """Cosine top-k over a gallery folder written by :class:`GalleryCache` (vectors memory-mapped)."""

    def __init__(self, directory: str | Path, *, chunk: int = 16_384, query_batch: int = 256) -> None:
        self.directory = Path(directory)
        try:
            meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
            self.vectors = np.load(self.directory / "vectors.npy", mmap_mode="r", allow_pickle=False)
            self.latlon = torch.from_numpy(np.load(self.directory / "latlon.npy", allow_pickle=False).astype(np.float64))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.directory}: unreadable gallery ({exc})") from None
        if meta.get("format") != FORMAT or self.vectors.ndim != 2 or self.vectors.dtype != np.float32 \
                or self.vectors.shape[0] != meta.get("size") or tuple(self.latlon.shape) != (self.vectors.shape[0], 2):
            raise ValueError(f"{self.directory}: gallery files do not match meta.json {meta!r}")
        self.meta = meta
        self.chunk, self.query_batch = int(chunk), int(query_batch)

    @property
    def id(self) -> str:
        return f"gallery:{self.meta['embedder_id']}:{self.meta['key'][:12]}"

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, k] cosine similarities, descending, -inf where the gallery has fewer than k items; [B, k, 2] degrees, NaN there)."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"gallery {self.id}: queries must be [B, {self.dim}], got {tuple(queries.shape)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = torch.nn.functional.normalize(queries.detach().to("cpu", torch.float32), dim=1)
        b, kk = q.shape[0], min(k, len(self))
        best_s = torch.full((b, kk), -torch.inf)  # -inf placeholders lose to every real match (kk <= N of them)
        best_i = torch.zeros((b, kk), dtype=torch.long)
        for start in range(0, len(self), self.chunk):
            block = torch.from_numpy(np.array(self.vectors[start : start + self.chunk]))  # one chunk in memory at a time
            for qs in range(0, b, self.query_batch):
                s, i = torch.topk(q[qs : qs + self.query_batch] @ block.T, min(kk, block.shape[0]), dim=1)
                merged_s = torch.cat((best_s[qs : qs + self.query_batch], s), 1)
                merged_i = torch.cat((best_i[qs : qs + self.query_batch], i + start), 1)
                top_s, pos = torch.topk(merged_s, kk, dim=1)
                best_s[qs : qs + self.query_batch] = top_s
                best_i[qs : qs + self.query_batch] = merged_i.gather(1, pos)
        latlon = self.latlon[best_i]
        if kk < k:  # fewer items than asked: pad
            best_s = torch.cat((best_s, torch.full((b, k - kk), -torch.inf)), 1)
            latlon = torch.cat((latlon, torch.full((b, k - kk, 2), torch.nan, dtype=latlon.dtype)), 1)
        return best_s, latlon


class GalleryCache:
    """The ``GalleryProvider`` port: one gallery folder per content under ``cache_dir`` (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, *, chunk: int = 16_384) -> None:
        self.cache_dir = Path(cache_dir)
        self.chunk = chunk
        self.builds = 0  # galleries written by this object (a reused one is not counted)

    def folder(self, embedder_id: str, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", embedder_id)[:60]
        return self.cache_dir / f"{safe}-{key[:20]}"

    def open(self, vectors: torch.Tensor, latlon: torch.Tensor, *, embedder_id: str) -> MappedGallery:
        _check(vectors, latlon)
        key = content_key(vectors, latlon, embedder_id)
        folder = self.folder(embedder_id, key)
        if (folder / "meta.json").exists():
            try:
                gallery = MappedGallery(folder, chunk=self.chunk)
                if gallery.meta.get("key") == key:
                    return gallery
            except ValueError:
                pass  # a damaged folder: written again below
        folder.mkdir(parents=True, exist_ok=True)
        unit = torch.nn.functional.normalize(vectors.detach().to("cpu", torch.float32), dim=1)
        _save(folder / "vectors.npy", unit.contiguous().numpy())
        _save(folder / "latlon.npy", latlon.detach().to("cpu", torch.float64).contiguous().numpy())
        meta = {"format": FORMAT, "embedder_id": embedder_id, "key": key, "size": int(vectors.shape[0]), "dim": int(vectors.shape[1])}
        with atomic_open(folder / "meta.json", "w", encoding="utf-8") as f:
            f.write(json.dumps(meta, indent=2))
        self.builds += 1
        return MappedGallery(folder, chunk=self.chunk)


class GalleryOnFirstUse:
    """An ``EmbeddingRetriever`` opened on its first search: a model loads at once, and its training split is
    embedded (or read from the embedding cache) only when a query asks for LocDiff-H. Thread-safe (the app
    predicts on worker threads)."""

    def __init__(self, open_gallery):
        self._open, self._gallery, self._lock = open_gallery, None, threading.Lock()

    def _get(self):
        with self._lock:
            if self._gallery is None:
                self._gallery = self._open()
            return self._gallery

    @property
    def id(self) -> str:
        return self._get().id

    def __len__(self) -> int:
        return len(self._get())

    def search(self, queries, k: int):
        return self._get().search(queries, k)
