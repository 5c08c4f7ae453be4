"""A tiny random open_clip model on disk, for tests: loaded by ``OpenClipEmbedder(pretrained=directory)``
exactly like a downloaded model (``open_clip_config.json`` + safetensors)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from adapters.atomic import atomic_open

#: A tiny ViT CLIP (about 2 M parameters, 32 px images) for tests; random weights.
TINY_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}



def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def tiny_model_cfg(embed_dim: int = 32) -> dict[str, Any]:
    """:data:`TINY_MODEL_CFG` with another output dimension (768 mimics ViT-L/14 for GeoCLIP)."""
    cfg = json.loads(json.dumps(TINY_MODEL_CFG))
    cfg["embed_dim"] = embed_dim
    return cfg


def save_tiny_test_model(directory: str | os.PathLike[str], *, seed: int = 0, embed_dim: int = 32) -> Path:
    """Write a tiny random open_clip model (``open_clip_config.json`` + safetensors) to ``directory``.

    Load it with ``OpenClipEmbedder(pretrained=directory)``: the same path as a downloaded model.
    """
    import open_clip
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_model_cfg(embed_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**cfg)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    weights = out / "open_clip_model.safetensors"
    tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
    try:
        save_file(state, str(tmp))
        os.replace(tmp, weights)
    finally:
        tmp.unlink(missing_ok=True)
    config = {"model_cfg": cfg, "preprocess_cfg": {}}
    _atomic_write_bytes(out / "open_clip_config.json", json.dumps(config, indent=2).encode())
    return out
