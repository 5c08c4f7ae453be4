"""On-disk embedding cache: memory-mapped ``.npy`` shards, keyed by embedder id + content hash.

Layout, one folder per embedder id under ``cache_dir``::

    <cache_dir>/<sanitised id>-<hash of id>/
        meta.json                    {"format": 1, "embedder_id": ..., "dim": ...}
        shard-00000.npy              float32 [n, dim] vectors
        shard-00000.keys.npy         uint8 [n, 32]   sha256 of each row's content

A shard is written after every ``shard_size`` new items (temp file + ``os.replace``; the vectors
first, then its keys file, which commits it), so an interrupted embedding loses at most one shard
of work and the next call embeds only what is missing. Shard numbers are reserved with an
exclusive create, so two processes filling the same cache never overwrite each other. Failures
are not cached: they are retried next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from locdiff.ports import Embedded, Embedder, ItemFailure
from adapters.atomic import atomic_open
from adapters.files import MAX_IMAGE_BYTES, open_regular

FORMAT = 1
_KEYS_SUFFIX = ".keys.npy"


class CacheError(ValueError):
    """The cache folder holds something unusable (names the file and what is wrong)."""


def content_key(kind: str, data: bytes) -> bytes:
    """32-byte key of one item: sha256 over its kind and content bytes."""
    return hashlib.sha256(kind.encode() + b"\x00" + data).digest()


def _file_key(path: Path) -> bytes:
    """Key of an image file, checked first (a regular file of at most :data:`MAX_IMAGE_BYTES`): a pipe,
    device, pseudo-file or huge file is refused at once instead of being read. ``ValueError`` names the file."""
    h = hashlib.sha256(b"image\x00")
    with open_regular(path, max_bytes=MAX_IMAGE_BYTES, what="an image file") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


class CachedEmbedder:
    """``Embedder`` that serves vectors from disk and asks ``inner`` only for unseen items."""

    def __init__(self, inner: Embedder, cache_dir: str | Path, shard_size: int = 1024, progress: bool = True) -> None:
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        self.inner = inner
        self.shard_size = shard_size
        self.progress = progress
        eid = inner.id
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", eid)[:80]
        self.directory = Path(cache_dir) / f"{safe}-{hashlib.sha256(eid.encode()).hexdigest()[:8]}"
        self._dim = int(inner.dim)
        self._shards: dict[int, np.ndarray] = {}  # shard number -> mmap [n, dim]
        self._index: dict[bytes, tuple[int, int]] = {}  # key -> (shard, row)
        self._check_meta()

    # ------------------------------------------------------------------ Embedder
    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        self._refresh()
        return len(self._index)

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        keys: list[bytes | ItemFailure] = []
        for t in texts:
            if isinstance(t, str):
                keys.append(content_key("text", t.encode("utf-8", "surrogatepass")))
            else:
                keys.append(ItemFailure(repr(t), f"expected a string, got {type(t).__name__}"))
        return self._embed(list(texts), keys, self.inner.embed_texts)

    def embed_images(self, paths: Sequence[Path]) -> Embedded:
        keys: list[bytes | ItemFailure] = []
        for p in paths:
            try:
                keys.append(_file_key(Path(p)))
            except OSError as e:
                keys.append(ItemFailure(str(p), f"cannot read image file: {e.strerror or e}"))
            except ValueError as e:  # FileInputError: "<path>: <why>"
                keys.append(ItemFailure(str(p), f"cannot read image file: {str(e).removeprefix(f'{p}: ')}"))
        return self._embed([Path(p) for p in paths], keys, self.inner.embed_images)

    # ------------------------------------------------------------------ core
    def _embed(self, items: list, keys: list[bytes | ItemFailure], call: Callable[[list], Embedded]) -> Embedded:
        self._refresh()
        failed: dict[int, ItemFailure] = {i: k for i, k in enumerate(keys) if isinstance(k, ItemFailure)}
        todo: dict[bytes, int] = {}  # missing key -> first position holding it
        for i, k in enumerate(keys):
            if isinstance(k, bytes) and k not in self._index and k not in todo:
                todo[k] = i
        reasons: dict[bytes, str] = {}
        if todo:
            pending = list(todo.items())
            cached = sum(1 for k in keys if isinstance(k, bytes) and k in self._index)
            bar = tqdm(total=len(pending), desc=f"embedding ({cached} cached)", unit="item",
                       disable=not self.progress, leave=False)
            with bar:
                for s in range(0, len(pending), self.shard_size):
                    chunk = pending[s : s + self.shard_size]
                    reasons.update(self._embed_chunk(chunk, items, call))
                    bar.update(len(chunk))

        rows: list[int] = []
        row_keys: list[bytes] = []
        for i, k in enumerate(keys):
            if isinstance(k, ItemFailure):
                continue
            if k in self._index:
                rows.append(i)
                row_keys.append(k)
            else:
                failed[i] = ItemFailure(str(items[i]), reasons.get(k, "embedder returned no vector"))
        return Embedded(self._gather(row_keys), tuple(rows), tuple(failed[i] for i in sorted(failed)))

    def _embed_chunk(self, chunk: list[tuple[bytes, int]], items: list, call: Callable[[list], Embedded]) -> dict[bytes, str]:
        """Embed one shard's worth of missing items, store the good rows; return failure reasons."""
        result = call([items[i] for _, i in chunk])
        vecs = result.vectors.detach().to("cpu", torch.float32).numpy()
        if vecs.ndim != 2 or vecs.shape != (len(result.index), self._dim):
            raise ValueError(
                f"embedder {self.id!r} returned vectors of shape {tuple(vecs.shape)} for "
                f"{len(result.index)} items; expected [{len(result.index)}, {self._dim}]"
            )
        ok = set(result.index)
        failed_keys = [k for j, (k, _) in enumerate(chunk) if j not in ok]
        given = [f.reason for f in result.failures]
        reasons = dict(zip(failed_keys, given)) if len(given) == len(failed_keys) else {}
        finite = np.isfinite(vecs).all(axis=1)
        keep = [j for j, good in zip(result.index, finite) if good]
        for j, good in zip(result.index, finite):
            if not good:
                reasons[chunk[j][0]] = "embedder returned NaN or infinite values"
        if keep:
            self._write_shard([chunk[j][0] for j in keep], vecs[finite])
        return reasons

    def _gather(self, keys: list[bytes]) -> torch.Tensor:
        out = np.empty((len(keys), self._dim), dtype=np.float32)
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for pos, k in enumerate(keys):
            shard, row = self._index[k]
            dest, src = by_shard.setdefault(shard, ([], []))
            dest.append(pos)
            src.append(row)
        for shard, (dest, src) in by_shard.items():
            out[dest] = self._shards[shard][src]
        return torch.from_numpy(out)

    # ------------------------------------------------------------------ disk
    def _check_meta(self) -> None:
        meta = self.directory / "meta.json"
        if not meta.exists():
            return
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CacheError(f"cache metadata {meta} is unreadable ({e}); delete the folder {self.directory} to rebuild it") from None
        expected = {"format": FORMAT, "embedder_id": self.id, "dim": self._dim}
        if {k: info.get(k) for k in expected} != expected:
            raise CacheError(f"cache metadata {meta} says {info}, expected {expected}; delete the folder {self.directory} to rebuild it")

    def _write_meta(self) -> None:
        meta = self.directory / "meta.json"
        if meta.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".meta.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "embedder_id": self.id, "dim": self._dim}, f)
        os.replace(tmp, meta)

    def _write_shard(self, keys: list[bytes], vectors: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_meta()
        number = max(self._numbers_on_disk(), default=-1) + 1
        while True:  # reserve a shard number no other writer holds
            path = self.directory / f"shard-{number:05d}.npy"
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                number += 1
        _atomic_save(path, np.ascontiguousarray(vectors, dtype=np.float32))
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        _atomic_save(path.with_name(path.stem + _KEYS_SUFFIX), key_array)
        self._load_shard(number)

    def _numbers_on_disk(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        found = (re.fullmatch(r"shard-(\d+)\.npy", p.name) for p in self.directory.iterdir())
        return [int(m.group(1)) for m in found if m]

    def _refresh(self) -> None:
        """Pick up shards committed since the last look (by this or another process)."""
        if not self.directory.is_dir():
            return
        for p in sorted(self.directory.glob("shard-*" + _KEYS_SUFFIX)):
            m = re.fullmatch(r"shard-(\d+)" + re.escape(_KEYS_SUFFIX), p.name)
            if m and int(m.group(1)) not in self._shards:
                self._load_shard(int(m.group(1)))

    def _load_shard(self, number: int) -> None:
        vec_path = self.directory / f"shard-{number:05d}.npy"
        key_path = self.directory / f"shard-{number:05d}{_KEYS_SUFFIX}"
        fix = f"; delete {vec_path.name} and {key_path.name} to re-embed its items"
        try:
            vecs = np.load(vec_path, mmap_mode="r", allow_pickle=False)
            keys = np.load(key_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise CacheError(f"cache shard {vec_path} is unreadable ({e}){fix}") from None
        if vecs.dtype != np.float32 or vecs.ndim != 2 or vecs.shape[1] != self._dim:
            raise CacheError(f"cache shard {vec_path} holds {vecs.dtype} {vecs.shape}, expected float32 [n, {self._dim}]{fix}")
        if keys.dtype != np.uint8 or keys.shape != (vecs.shape[0], 32):
            raise CacheError(f"cache keys {key_path} hold {keys.dtype} {keys.shape}, expected uint8 [{vecs.shape[0]}, 32]{fix}")
        if not np.isfinite(vecs).all():
            bad = int(np.flatnonzero(~np.isfinite(vecs).all(axis=1))[0])
            raise CacheError(f"cache shard {vec_path} has NaN or infinite values (first at row {bad}){fix}")
        self._shards[number] = vecs
        for row, key in enumerate(keys):
            self._index.setdefault(key.tobytes(), (number, row))
