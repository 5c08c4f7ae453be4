"""The one composition root: wires every port to its adapter from the run configuration.

Swapping an adapter is one config value (``data.embedder = "minilm" | "clip"``, ``device``,
``store_url``). Entry points (CLI, GUI) get use cases and adapters from here and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from dependency_injector import containers, providers

from locdiff.config import RunConfig


def _cache_dir(workdir: str) -> Path:
    return Path(os.environ.get("LOCDIFF_CACHE", Path(workdir) / "cache"))


def _store(url: str | None, workdir: str):
    from storage import SqlExperimentStore, sqlite_url

    return SqlExperimentStore(url or sqlite_url(Path(workdir) / "locdiff.sqlite"))


def _checkpoints(keep_last: int):
    from adapters.checkpoints import SafetensorsCheckpointStore

    return SafetensorsCheckpointStore(keep_last=keep_last)


def _compute(device: str):
    from adapters.compute import TorchCompute

    return TorchCompute(device)


def _minilm(compute, workdir: str):
    from adapters.embedding_cache import CachedEmbedder
    from adapters.text_embedder import MiniLMEmbedder

    return CachedEmbedder(MiniLMEmbedder(device=str(compute.device), progress=False), _cache_dir(workdir) / "embeddings")


def _clip(compute, workdir: str, model: str, pretrained: str):
    from adapters.clip_embedder import OpenClipEmbedder
    from adapters.embedding_cache import CachedEmbedder

    inner = OpenClipEmbedder(model, pretrained, device=compute.device, progress=False)
    return CachedEmbedder(inner, _cache_dir(workdir) / "embeddings")


def _source(source: str, limit: int, all_places: bool, template: str):
    if source == "places":
        from adapters.places import PlacesSource

        return PlacesSource(template=template, limit=limit, all_places=all_places)
    from adapters.csv_source import CsvSource

    return CsvSource(Path(source))


def _retriever(compute, workdir: str, pretrained: str):
    from adapters.clip_embedder import OpenClipEmbedder
    from adapters.geoclip_retriever import GeoClipRetriever

    embedder = OpenClipEmbedder("ViT-L-14", pretrained, device=compute.device, quick_gelu=True, progress=False)
    return GeoClipRetriever(embedder, device=compute.device, cache_dir=_cache_dir(workdir) / "geoclip")


class Container(containers.DeclarativeContainer):
    """Providers for every port; configure with :func:`build_container`."""

    config = providers.Configuration()

    compute = providers.Singleton(_compute, device=config.device)
    store = providers.Singleton(_store, url=config.store_url, workdir=config.workdir)
    checkpoints = providers.Singleton(_checkpoints, keep_last=config.train.keep_checkpoints)
    embedder = providers.Selector(
        config.data.embedder,
        minilm=providers.Singleton(_minilm, compute=compute, workdir=config.workdir),
        clip=providers.Singleton(
            _clip, compute=compute, workdir=config.workdir, model=config.data.clip_model, pretrained=config.data.clip_pretrained
        ),
    )
    dataset = providers.Factory(
        _source,
        source=config.data.source,
        limit=config.data.places_limit,
        all_places=config.data.all_places,
        template=config.data.template,
    )
    retriever = providers.Singleton(_retriever, compute=compute, workdir=config.workdir, pretrained=config.data.clip_pretrained)


def build_container(config: RunConfig) -> Container:
    container = Container()
    container.config.from_dict(config.to_dict())
    return container


def history_store(workdir: str = "runs", url: str | None = None):
    """The experiment store whose prediction history the app shows (``workdir``'s SQLite unless ``url``)."""
    return _store(url, workdir)


def gps_reader():
    """The EXIF GPS reader the GUI uses for ground truth."""
    from adapters.photos import read_exif_gps

    def read(path: Path):
        try:
            return read_exif_gps(path)
        except ValueError:
            return None

    return read


def load_model(checkpoint: Path, device=None):
    """(bundle, meta) from a checkpoint folder/file or a run folder (its latest checkpoint)."""
    from locdiff.core.bundle import ModelBundle

    checkpoint = Path(checkpoint)
    store = _checkpoints(1)
    target = checkpoint
    if checkpoint.is_dir() and not (checkpoint / "weights.safetensors").exists():
        target = store.latest(checkpoint / "checkpoints") or store.latest(checkpoint)
        if target is None:
            raise ValueError(f"{checkpoint}: no checkpoint found (expected a step-XXXXXXXX folder or a run folder)")
    if not target.exists():
        raise ValueError(f"checkpoint {target} does not exist")
    tensors, meta = store.load(target)
    if device is None:
        device = _compute("auto").device
    return ModelBundle.from_checkpoint(tensors, meta, device, where=str(target)), target


def build_prediction_service(checkpoint: Path | None, *, device: str = "auto", hybrid: bool = False, workdir: str = "runs"):
    """A ``PredictionService`` for a checkpoint: its embedder rebuilt from the checkpoint's config."""
    from locdiff.services.prediction import PredictionService

    if checkpoint is None:
        raise ValueError("no model loaded: choose a checkpoint (a run folder or a step-XXXXXXXX folder)")
    compute = _compute(device)
    bundle, target = load_model(checkpoint, compute.device)
    cfg = bundle.config.data
    embedder = _minilm(compute, workdir) if cfg.embedder == "minilm" else _clip(compute, workdir, cfg.clip_model, cfg.clip_pretrained)
    retriever = _retriever(compute, workdir, cfg.clip_pretrained) if hybrid else None
    return PredictionService(bundle, embedder, compute.device, retriever, source=str(target), calibrator=load_calibration(target))


def save_calibration(checkpoint: Path, calibrator) -> Path:
    """Save a fitted calibrator beside the model's checkpoints (used by later predictions)."""
    from adapters.calibration_file import save_calibration as save

    return save(checkpoint, calibrator)


def load_calibration(checkpoint: Path):
    from adapters.calibration_file import load_calibration as load

    return load(checkpoint)
