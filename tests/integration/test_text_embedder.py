from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from adapters.text_embedder import MiniLMEmbedder, packaged_model_path
from locdiff.ports import Embedder


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(progress=False, batch_size=4)


def test_protocol_id_and_dim(embedder: MiniLMEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 384
    assert embedder.id.startswith("minilm-l6-v2:") and len(embedder.id.split(":")[1]) == 12
    assert MiniLMEmbedder(progress=False).id == embedder.id  # stable


def test_vectors_normalised_cpu_float32(embedder: MiniLMEmbedder) -> None:
    texts = [f"Town {i}, Region, Country" for i in range(10)]  # 3 batches of 4
    out = embedder.embed_texts(texts)
    assert out.index == tuple(range(10)) and out.failures == ()
    v = out.vectors
    assert v.shape == (10, 384) and v.dtype == torch.float32 and v.device.type == "cpu"
    assert torch.allclose(v.norm(dim=1), torch.ones(10), atol=1e-5)


def test_semantics(embedder: MiniLMEmbedder) -> None:
    v = embedder.embed_texts(["Paris, France", "Paris, Île-de-France, France", "Tokyo, Japan"]).vectors
    same, other = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert same > 0.8
    assert other < 0.6
    assert same - other > 0.3


def test_batching_does_not_change_vectors(embedder: MiniLMEmbedder) -> None:
    texts = ["Lyon, France", "Osaka, Japan", "Lima, Peru"]
    whole = MiniLMEmbedder(progress=False, batch_size=64).embed_texts(texts).vectors
    one_by_one = torch.cat([embedder.embed_texts([t]).vectors for t in texts])
    assert torch.allclose(whole, one_by_one, atol=1e-5)


def test_empty_strings_are_failures(embedder: MiniLMEmbedder) -> None:
    out = embedder.embed_texts(["Rome, Italy", "", "   ", "Oslo, Norway"])
    assert out.index == (0, 3)
    assert out.vectors.shape == (2, 384)
    assert [f.reason for f in out.failures] == ["empty text", "empty text"]
    none = embedder.embed_texts(["", 3])  # type: ignore[list-item]
    assert none.vectors.shape == (0, 384) and len(none.failures) == 2
    assert "expected a string" in none.failures[1].reason


def test_images_are_failures(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    out = embedder.embed_images([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    assert out.index == () and out.vectors.shape == (0, 384)
    assert [f.reason for f in out.failures] == ["text embedder cannot embed images"] * 2
    assert out.failures[0].item == str(tmp_path / "a.jpg")


def test_hub_env_restored_after_load() -> None:
    before = os.environ.get("HF_HUB_OFFLINE")
    e = MiniLMEmbedder(progress=False)
    e.embed_texts(["Cairo, Egypt"])
    assert os.environ.get("HF_HUB_OFFLINE") == before


def test_model_path_override_and_fingerprint(tmp_path: Path) -> None:
    src = packaged_model_path()
    copy = tmp_path / "model"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(src / "model.safetensors")
    same = MiniLMEmbedder(model_path=copy, progress=False)
    assert same.id == MiniLMEmbedder(progress=False).id  # same bytes -> same id
    cfg = copy / "tokenizer_config.json"
    cfg.write_text(cfg.read_text() + "\n")
    assert MiniLMEmbedder(model_path=copy, progress=False).id != same.id


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a sentence-transformers model directory"):
        MiniLMEmbedder(model_path=tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        MiniLMEmbedder(batch_size=0)
