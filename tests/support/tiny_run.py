"""A tiny run folder for tests of prediction entry points: a random degree-5 model over the tiny local CLIP model
(``tiny_clip``), saved as a real checkpoint, so ``predict RUN``, ``locdiff.load(RUN)`` and the batch path load it
exactly as a trained run (texts and images, no downloads, a second to build)."""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT = Path(__file__).resolve().parents[2] / "locdiff" / "default.toml"


def make_tiny_run(root: Path, *, seed: int = 0) -> Path:
    """``root/runs/run-0001`` holding one checkpoint (degree 5, widths [32, 16], 20 diffusion steps, CLIP embedder)."""
    from adapters.checkpoints import SafetensorsCheckpointStore
    from adapters.clip_embedder import OpenClipEmbedder
    from locdiff.config import RunConfig
    from locdiff.core.bundle import ModelBundle
    from tests.support.tiny_clip import save_tiny_test_model

    root = Path(root)
    clip_dir = save_tiny_test_model(root / "tiny_clip")
    embedder = OpenClipEmbedder("ViT-B-32", str(clip_dir), progress=False)
    cfg = RunConfig.load(DEFAULT, {"model.degree": 5, "model.widths": [32, 16], "diffusion.steps": 20, "data.embedder": "clip",
                                   "data.clip_model": "ViT-B-32", "data.clip_pretrained": str(clip_dir)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bundle = ModelBundle.create(cfg, embedder.dim, embedder.id, torch.device("cpu"))
    run = root / "runs" / "run-0001"
    SafetensorsCheckpointStore().save(run / "checkpoints", bundle.tensors(), bundle.meta(1))
    return run


def make_photos(folder: Path, n: int, *, size: int = 24) -> list[Path]:
    """``n`` small PNGs of different colours in ``folder`` (and a sub-folder, for the recursive scan)."""
    from PIL import Image

    out = []
    for i in range(n):
        where = folder / ("sub" if i % 3 == 2 else ".")
        where.mkdir(parents=True, exist_ok=True)
        path = (where / f"p{i:03d}.png").resolve()
        Image.new("RGB", (size, size), ((37 * i) % 256, (91 * i) % 256, (53 * i + 20) % 256)).save(path)
        out.append(path)
    return out


class HashEmbedder:
    """An embedder without a model: a text's or a file's bytes hashed to a fixed vector (fast, deterministic).

    An empty text or an unreadable file fails as with a real embedder. ``use_hash_embedder()`` makes the container
    build it for every run, so the real CLI runs a :func:`make_hash_run` model in-process or in a subprocess.
    """

    id = "hash-16"
    dim = 16

    @staticmethod
    def _vec(data: bytes) -> torch.Tensor:
        import hashlib

        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(data).digest()[:6], "little"))
        return torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)

    def _embed(self, items, read):
        from locdiff.ports import Embedded, ItemFailure

        rows, index, failures = [], [], []
        for i, item in enumerate(items):
            try:
                rows.append(self._vec(read(item)))
                index.append(i)
            except (OSError, ValueError) as exc:
                failures.append(ItemFailure(str(item), f"cannot read: {exc}"))
        return Embedded(torch.stack(rows) if rows else torch.empty(0, 16), tuple(index), tuple(failures))

    def embed_texts(self, texts):
        def read(t: str) -> bytes:
            if not t.strip():
                raise ValueError("empty text")
            return t.encode()

        return self._embed(texts, read)

    def embed_images(self, paths):
        return self._embed(paths, lambda p: Path(p).read_bytes())


def use_hash_embedder() -> None:
    """Every embedder the container builds is a :class:`HashEmbedder` (for the rest of this process)."""
    import locdiff.container as container

    container._embedder = lambda *args, **kwargs: HashEmbedder()


def make_hash_run(root: Path, *, seed: int = 0) -> Path:
    """``root/runs/run-0001``: a random degree-5 model over :class:`HashEmbedder` vectors (reads texts and images)."""
    from adapters.checkpoints import SafetensorsCheckpointStore
    from locdiff.config import RunConfig
    from locdiff.core.bundle import ModelBundle

    cfg = RunConfig.load(DEFAULT, {"model.degree": 5, "model.widths": [32, 16], "diffusion.steps": 20, "data.embedder": "clip"})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bundle = ModelBundle.create(cfg, HashEmbedder.dim, HashEmbedder.id, torch.device("cpu"))
    run = Path(root) / "runs" / "run-0001"
    SafetensorsCheckpointStore().save(run / "checkpoints", bundle.tensors(), bundle.meta(1))
    return run
