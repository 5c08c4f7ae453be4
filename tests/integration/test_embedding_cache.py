from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.embedding_cache import CacheError, CachedEmbedder
from locdiff.ports import Embedded, Embedder, ItemFailure

DIM = 8


def _vec(data: bytes) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(data).digest()[:4], "little")
    v = torch.randn(DIM, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


class FakeEmbedder:
    """Deterministic vectors from content; counts what it is asked; can fail after N items."""

    def __init__(self, fail_after: int | None = None, eid: str = "fake:1") -> None:
        self.fail_after = fail_after
        self.eid = eid
        self.seen: list[str] = []

    @property
    def id(self) -> str:
        return self.eid

    @property
    def dim(self) -> int:
        return DIM

    def _run(self, items: Sequence[str], data: Sequence[bytes | None]) -> Embedded:
        if self.fail_after is not None and len(self.seen) + len(items) > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen.extend(items)
        rows, index, fails = [], [], []
        for i, (item, d) in enumerate(zip(items, data)):
            if d is None:
                fails.append(ItemFailure(item, "fake failure"))
            else:
                rows.append(_vec(d))
                index.append(i)
        vectors = torch.stack(rows) if rows else torch.zeros(0, DIM)
        return Embedded(vectors, tuple(index), tuple(fails))

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        return self._run(list(texts), [t.encode() if t.strip() else None for t in texts])

    def embed_images(self, paths: Sequence[Path]) -> Embedded:
        return self._run([str(p) for p in paths], [Path(p).read_bytes() for p in paths])


def test_is_an_embedder_with_inner_identity(tmp_path: Path) -> None:
    c = CachedEmbedder(FakeEmbedder(), tmp_path)
    assert isinstance(c, Embedder)
    assert c.id == "fake:1" and c.dim == DIM


def test_warm_cache_skips_inner_and_returns_identical_vectors(tmp_path: Path) -> None:
    texts = [f"place {i}" for i in range(50)]
    cold_inner = FakeEmbedder()
    cold = CachedEmbedder(cold_inner, tmp_path, shard_size=16, progress=False).embed_texts(texts)
    assert len(cold_inner.seen) == 50
    warm_inner = FakeEmbedder()
    warm = CachedEmbedder(warm_inner, tmp_path, shard_size=16, progress=False).embed_texts(texts[::-1])
    assert warm_inner.seen == []
    assert warm.index == tuple(range(50))
    assert torch.equal(warm.vectors, cold.vectors.flip(0))
    assert torch.equal(cold.vectors[3], _vec(b"place 3"))
    assert warm.vectors.dtype == torch.float32
    shards = sorted(p.name for p in next(tmp_path.iterdir()).glob("shard-*.npy"))
    assert shards[:2] == ["shard-00000.keys.npy", "shard-00000.npy"] and len(shards) == 8  # 4 shards


def test_only_missing_items_are_embedded_and_duplicates_once(tmp_path: Path) -> None:
    inner = FakeEmbedder()
    c = CachedEmbedder(inner, tmp_path, progress=False)
    c.embed_texts(["a", "b"])
    out = c.embed_texts(["b", "c", "a", "c"])
    assert inner.seen == ["a", "b", "c"]
    assert out.index == (0, 1, 2, 3)
    assert torch.equal(out.vectors[1], out.vectors[3])


def test_resume_after_interruption(tmp_path: Path) -> None:
    texts = [f"city {i}" for i in range(100)]
    broken = FakeEmbedder(fail_after=70)
    with pytest.raises(KeyboardInterrupt):
        CachedEmbedder(broken, tmp_path, shard_size=20, progress=False).embed_texts(texts)
    assert len(broken.seen) == 60  # three shards of 20 were written before the failure
    again = FakeEmbedder()
    out = CachedEmbedder(again, tmp_path, shard_size=20, progress=False).embed_texts(texts)
    assert again.seen == texts[60:]
    expected = torch.stack([_vec(t.encode()) for t in texts])
    assert torch.equal(out.vectors, expected)


def test_failures_reported_and_not_cached(tmp_path: Path) -> None:
    inner = FakeEmbedder()
    c = CachedEmbedder(inner, tmp_path, progress=False)
    out = c.embed_texts(["ok", " ", "fine"])
    assert out.index == (0, 2)
    assert out.failures == (ItemFailure(" ", "fake failure"),)
    c.embed_texts([" "])
    assert inner.seen.count(" ") == 2  # retried, not served from cache
    assert len(c) == 2


def test_images_keyed_by_file_bytes(tmp_path: Path) -> None:
    a, b, same_as_a = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "copy.jpg"
    a.write_bytes(b"AAA")
    b.write_bytes(b"BBB")
    same_as_a.write_bytes(b"AAA")
    inner = FakeEmbedder()
    c = CachedEmbedder(inner, tmp_path / "cache", progress=False)
    out = c.embed_images([a, b, same_as_a, tmp_path / "missing.jpg"])
    assert out.index == (0, 1, 2)
    assert inner.seen == [str(a), str(b)]
    assert torch.equal(out.vectors[0], out.vectors[2])
    assert out.failures[0].item == str(tmp_path / "missing.jpg")
    assert "cannot read image file" in out.failures[0].reason
    # the text "AAA" is a different item than an image whose bytes are "AAA"
    c.embed_texts(["AAA"])
    assert inner.seen[-1] == "AAA"


def test_embedders_do_not_share_entries(tmp_path: Path) -> None:
    CachedEmbedder(FakeEmbedder(eid="fake:1"), tmp_path, progress=False).embed_texts(["x"])
    other = FakeEmbedder(eid="fake/2")
    CachedEmbedder(other, tmp_path, progress=False).embed_texts(["x"])
    assert other.seen == ["x"]
    assert len(list(tmp_path.iterdir())) == 2


def _one_shard(tmp_path: Path) -> Path:
    CachedEmbedder(FakeEmbedder(), tmp_path, progress=False).embed_texts(["a", "b"])
    return next(tmp_path.glob("*/shard-00000.npy"))


def test_corrupt_shard_nan_is_named(tmp_path: Path) -> None:
    shard = _one_shard(tmp_path)
    arr = np.load(shard)
    arr[1, 3] = np.nan
    np.save(shard, arr)
    with pytest.raises(CacheError, match=r"shard-00000\.npy has NaN or infinite values \(first at row 1\)"):
        CachedEmbedder(FakeEmbedder(), tmp_path, progress=False).embed_texts(["a"])


def test_corrupt_shard_width_and_garbage_are_named(tmp_path: Path) -> None:
    shard = _one_shard(tmp_path)
    np.save(shard, np.zeros((2, DIM + 1), dtype=np.float32))
    with pytest.raises(CacheError, match=rf"{shard}.*expected float32 \[n, {DIM}\]"):
        CachedEmbedder(FakeEmbedder(), tmp_path, progress=False).embed_texts(["a"])
    shard.write_bytes(b"not numpy")
    with pytest.raises(CacheError, match=rf"{shard} is unreadable"):
        CachedEmbedder(FakeEmbedder(), tmp_path, progress=False).embed_texts(["a"])


def test_uncommitted_shard_is_ignored(tmp_path: Path) -> None:
    shard = _one_shard(tmp_path)
    keys = shard.with_name("shard-00000.keys.npy")
    keys.unlink()  # as if the process died between writing vectors and keys
    inner = FakeEmbedder()
    c = CachedEmbedder(inner, tmp_path, progress=False)
    c.embed_texts(["a", "b"])
    assert inner.seen == ["a", "b"]
    assert (shard.parent / "shard-00001.keys.npy").exists()


def test_meta_mismatch(tmp_path: Path) -> None:
    shard = _one_shard(tmp_path)
    (shard.parent / "meta.json").write_text('{"format": 1, "embedder_id": "fake:1", "dim": 3}')
    with pytest.raises(CacheError, match="meta.json"):
        CachedEmbedder(FakeEmbedder(), tmp_path)


def test_with_real_minilm(tmp_path: Path) -> None:
    from adapters.text_embedder import MiniLMEmbedder

    texts = ["Paris, France", "Tokyo, Japan", "Nairobi, Kenya"]
    inner = MiniLMEmbedder(progress=False)
    cold = CachedEmbedder(inner, tmp_path, progress=False).embed_texts(texts)
    warm = CachedEmbedder(inner, tmp_path, progress=False).embed_texts(texts)
    assert torch.equal(cold.vectors, warm.vectors)
    assert cold.vectors.shape == (3, 384)
