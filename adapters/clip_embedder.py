"""The ``Embedder`` port on open_clip: CLIP image and text features from hub tags or local weights.

``pretrained`` is resolved in this order:

1. an existing directory: with ``open_clip_config.json`` it defines its own model (open_clip's
   ``local-dir:`` loader, as for a downloaded hub repo); without one, the checkpoint inside it
   (``*.safetensors``, ``*.bin``, ``*.pt``/``*.pth``) is loaded into ``model_name``;
2. an existing file: a checkpoint loaded into ``model_name`` by open_clip's own loader;
3. otherwise a pretrained tag of ``model_name`` (e.g. ``"openai"``), downloaded by open_clip
   (online users only; offline, pass a file or directory).

All three go through ``open_clip.create_model_and_transforms``. (Tests write a tiny random model in the
directory layout of case 1: ``tests/support/tiny_clip.py``.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from adapters.images import DEFAULT_MAX_PIXELS, ImageError, load_rgb
from locdiff.ports import Embedded, ItemFailure

__all__ = ["OpenClipEmbedder", "file_sha256"]

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_CHECKPOINT_PREFERENCE = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors",
    "open_clip_pytorch_model.bin", "pytorch_model.bin", "open_clip_pytorch_model.pth", "model.pt",
)
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _find_checkpoint(directory: Path) -> Path:
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES]
    if not files:
        raise FileNotFoundError(
            f"{directory}: no checkpoint found (expected a {'/'.join(_CHECKPOINT_SUFFIXES)} file)"
        )
    by_name = {p.name: p for p in files}
    for name in _CHECKPOINT_PREFERENCE:
        if name in by_name:
            return by_name[name]
    if len(files) > 1:
        raise ValueError(
            f"{directory}: several checkpoints ({', '.join(sorted(p.name for p in files))}); "
            "pass the file itself as pretrained"
        )
    return files[0]


class OpenClipEmbedder:
    """CLIP image/text embeddings: batched on ``device``, float32 CPU rows, L2-normalised.

    ``quick_gelu``: ``None`` follows the pretrained tag (True for OpenAI weights) or the local
    config; pass ``True`` for a local file of OpenAI weights. ``progress`` shows tqdm bars.
    """

    def __init__(
        self,
        model_name: str = "ViT-L-14",
        pretrained: str | os.PathLike[str] = "openai",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        precision: str = "fp32",
        *,
        quick_gelu: bool | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        num_workers: int = 0,
        progress: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        import open_clip

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.precision = precision
        self.max_pixels = max_pixels
        self.num_workers = num_workers
        self.progress = progress

        name, ckpt, id_weights, force_qg = self._resolve(open_clip, model_name, pretrained, quick_gelu)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=ckpt, precision=precision, device=self.device,
                force_quick_gelu=force_qg, cache_dir=cache_dir, weights_only=True,
            )
        except Exception as exc:  # noqa: BLE001 - safetensors/pickle/hub errors all mean "cannot load"
            raise RuntimeError(
                f"could not load open_clip model {model_name!r} with weights {str(pretrained)!r}: {exc}. "
                "Offline, pass a local checkpoint file or a directory holding one."
            ) from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self._dtype = _PRECISIONS[precision]
        self._dim = int(getattr(self.model.visual, "output_dim", 0)) or self._probe_dim()
        arch = "custom" if name.startswith("local-dir:") else model_name
        self._id = f"open_clip:{arch}{'+quickgelu' if force_qg else ''}:{id_weights}"

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _resolve(
        open_clip: Any, model_name: str, pretrained: str | os.PathLike[str], quick_gelu: bool | None
    ) -> tuple[str, str | None, str, bool]:
        """(open_clip model name, checkpoint or tag, weights id, force quick_gelu)."""
        path = Path(pretrained)
        if path.is_dir():
            config = path / "open_clip_config.json"
            if config.is_file():
                digest = hashlib.sha256(config.read_bytes())
                digest.update(file_sha256(_find_checkpoint(path)).encode())
                return f"local-dir:{path}", None, f"sha256:{digest.hexdigest()[:16]}", bool(quick_gelu)
            ckpt = _find_checkpoint(path)
            return model_name, str(ckpt), f"sha256:{file_sha256(ckpt)[:16]}", bool(quick_gelu)
        if path.is_file():
            return model_name, str(path), f"sha256:{file_sha256(path)[:16]}", bool(quick_gelu)
        tag = str(pretrained)
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if tag not in tags:
            if os.sep in tag or tag.endswith(_CHECKPOINT_SUFFIXES):
                raise FileNotFoundError(f"{tag}: checkpoint file or directory not found")
            raise ValueError(
                f"{tag!r} is neither an existing checkpoint file/directory nor a pretrained tag of "
                f"{model_name!r} (known tags: {', '.join(tags) or 'none'})"
            )
        from open_clip.pretrained import get_pretrained_cfg

        tag_qg = bool(get_pretrained_cfg(model_name, tag).get("quick_gelu", False))
        return model_name, tag, tag, tag_qg if quick_gelu is None else quick_gelu

    @torch.no_grad()
    def _probe_dim(self) -> int:
        tokens = self.tokenizer([""]).to(self.device)
        return int(self.model.encode_text(tokens).shape[-1])

    # ------------------------------------------------------------------ port
    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def embed_images(self, paths: Sequence[Path]) -> Embedded:
        """L2-normalised image embeddings; unreadable files become ``ItemFailure``s."""
        return self._embed_images(paths, normalize=True)

    def embed_images_raw(self, paths: Sequence[Path]) -> Embedded:
        """Un-normalised projected image features (what GeoCLIP's MLP head expects)."""
        return self._embed_images(paths, normalize=False)

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        """L2-normalised text embeddings; non-string items become ``ItemFailure``s."""
        failures: list[ItemFailure] = []
        ok: list[int] = []
        for i, t in enumerate(texts):
            if isinstance(t, str):
                ok.append(i)
            else:
                failures.append(ItemFailure(repr(t)[:80], f"expected a string, got {type(t).__name__}"))
        rows: list[torch.Tensor] = []
        with self._bar(len(texts), "texts") as bar:
            bar.update(len(texts) - len(ok))
            for start in range(0, len(ok), self.batch_size):
                chunk = [texts[i] for i in ok[start : start + self.batch_size]]
                tokens = self.tokenizer(chunk).to(self.device)
                with torch.no_grad():
                    rows.append(self._finish(self.model.encode_text(tokens), normalize=True))
                bar.update(len(chunk))
        return Embedded(self._stack(rows), tuple(ok), tuple(failures))

    # ------------------------------------------------------------------ internals
    def _bar(self, total: int, what: str) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=f"embed {what}", unit=what[:-1], leave=False,
                    disable=not self.progress or total == 0)

    def _finish(self, features: torch.Tensor, normalize: bool) -> torch.Tensor:
        features = features.float()
        if normalize:
            features = F.normalize(features, dim=-1)
        return features.cpu()

    def _stack(self, rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(rows) if rows else torch.empty(0, self._dim, dtype=torch.float32)

    def _load(self, path: Path) -> torch.Tensor | ImageError:
        try:
            return self.preprocess(load_rgb(path, max_pixels=self.max_pixels))
        except ImageError as exc:
            return exc

    def _embed_images(self, paths: Sequence[Path], normalize: bool) -> Embedded:
        failures: list[ItemFailure] = []
        index: list[int] = []
        rows: list[torch.Tensor] = []
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 0 else None
        try:
            with self._bar(len(paths), "images") as bar:
                for start in range(0, len(paths), self.batch_size):
                    chunk = [Path(p) for p in paths[start : start + self.batch_size]]
                    loaded = list(pool.map(self._load, chunk)) if pool else [self._load(p) for p in chunk]
                    pixels: list[torch.Tensor] = []
                    for offset, (p, item) in enumerate(zip(chunk, loaded)):
                        if isinstance(item, ImageError):
                            failures.append(ItemFailure(str(p), str(item)))
                        else:
                            index.append(start + offset)
                            pixels.append(item)
                    if pixels:
                        batch = torch.stack(pixels).to(self.device, self._dtype)
                        with torch.no_grad():
                            rows.append(self._finish(self.model.encode_image(batch), normalize))
                    bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown()
        return Embedded(self._stack(rows), tuple(index), tuple(failures))
