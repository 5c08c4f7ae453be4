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


def _embedder(compute, workdir: str, kind: str, model: str, pretrained: str):
    """The one place the embedder is chosen (``data.embedder``): for training, evaluation, studies and prediction."""
    if kind == "minilm":
        return _minilm(compute, workdir)
    if kind == "clip":
        return _clip(compute, workdir, model, pretrained)
    raise ValueError(f"unknown embedder {kind!r}; expected 'minilm' or 'clip'")


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


def _gallery(workdir: str):
    """LocDiff-H's gallery for any embedder: a training split's embeddings, cached memory-mapped under the cache dir."""
    from adapters.gallery_retriever import GalleryCache

    return GalleryCache(_cache_dir(workdir) / "galleries")


def _run_folder():
    from adapters.run_folder import JsonRunFolder

    return JsonRunFolder()


class Container(containers.DeclarativeContainer):
    """Providers for every port; configure with :func:`build_container`."""

    config = providers.Configuration()

    compute = providers.Singleton(_compute, device=config.device)
    store = providers.Singleton(_store, url=config.store_url, workdir=config.workdir)
    checkpoints = providers.Singleton(_checkpoints, keep_last=config.train.keep_checkpoints)
    embedder = providers.Singleton(
        _embedder, compute=compute, workdir=config.workdir, kind=config.data.embedder, model=config.data.clip_model,
        pretrained=config.data.clip_pretrained,
    )
    dataset = providers.Factory(
        _source,
        source=config.data.source,
        limit=config.data.places_limit,
        all_places=config.data.all_places,
        template=config.data.template,
    )
    retriever = providers.Singleton(_retriever, compute=compute, workdir=config.workdir, pretrained=config.data.clip_pretrained)
    gallery = providers.Singleton(_gallery, workdir=config.workdir)
    run_folder = providers.Singleton(_run_folder)


def build_container(config: RunConfig) -> Container:
    container = Container()
    container.config.from_dict(config.to_dict())
    return container


def name_benchmark(path: Path | None = None):
    """The name-only benchmark's queries and truth places (GeoNames; the packaged name list by default)."""
    from adapters.place_names import NAMES_FILE, PlaceNameBenchmark

    return PlaceNameBenchmark(Path(path) if path is not None else NAMES_FILE)


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


def _training_gallery(bundle, embedder, workdir: str):
    """LocDiff-H's gallery for a model: its own training split (its config's data, embedded with its embedder),
    opened on first use."""
    from adapters.gallery_retriever import GalleryOnFirstUse
    from locdiff.services.data import prepare
    from locdiff.services.hybrid import gallery_of

    d = bundle.config.data
    return GalleryOnFirstUse(
        lambda: gallery_of(_gallery(workdir), prepare(_source(d.source, d.places_limit, d.all_places, d.template), embedder, d)))


def build_prediction_service(checkpoint: Path | None, *, device: str = "auto", hybrid: bool | str = False, workdir: str = "runs"):
    """A ``PredictionService`` for a checkpoint: its embedder rebuilt from the checkpoint's config.

    ``hybrid``: ``"gallery"`` retrieves from the model's training split (rule from ``eval --hybrid``'s
    ``hybrid.json``, else the paper's); ``"geoclip"`` (or True) from GeoCLIP's gallery; False: none."""
    from locdiff.services.prediction import PredictionService

    if checkpoint is None:
        raise ValueError("no model loaded: choose a checkpoint (a run folder or a step-XXXXXXXX folder)")
    compute = _compute(device)
    bundle, target = load_model(checkpoint, compute.device)
    cfg = bundle.config.data
    embedder = _embedder(compute, workdir, cfg.embedder, cfg.clip_model, cfg.clip_pretrained)
    retriever = _retriever(compute, workdir, cfg.clip_pretrained) if hybrid in (True, "geoclip") else None
    gallery = _training_gallery(bundle, embedder, workdir) if hybrid == "gallery" else None
    return PredictionService(bundle, embedder, compute.device, retriever, source=str(target), calibrator=load_calibration(target),
                             gallery=gallery, hybrid_rule=load_hybrid_rule(target) if gallery is not None else None)


def build_batch_predictor(checkpoint: Path | None, *, device: str = "auto", workdir: str = "runs", places: bool = True,
                          chunk: int = 64, image_workers: int = 0, workers: int = 2):
    """A ``BatchPredictor`` (many inputs per model call, ``workers`` summary threads) for a checkpoint; place names
    from the offline geocoder; photos decoded by ``image_workers`` DataLoader processes (a CLIP model)."""
    from adapters.image_loader import decode_in_workers
    from locdiff.services.batch_prediction import BatchPredictor

    service = build_prediction_service(checkpoint, device=device, workdir=workdir)
    service.embedder.progress = False  # the batch's own bar counts the items
    decode_in_workers(service.embedder, image_workers)
    return BatchPredictor(service, geocoder() if places else None, chunk=chunk, workers=workers)


def geocoder():
    """Place names for coordinates (nearest town of the offline GeoNames table, loaded on first use)."""
    from adapters.geocoder import NearestTown

    return NearestTown()


def inputs_from_values(values):
    """Batch inputs from Python values (the API): paths of existing photo files are images, other strings texts."""
    from adapters.batch_inputs import inputs_from_values as inputs

    return inputs(values)


def batch_inputs(source: str, stdin=None):
    """The inputs of a batch prediction: a photo folder, a CSV/JSONL file or ``-`` (stdin lines)."""
    from adapters.batch_inputs import open_inputs

    return open_inputs(source, stdin)


def prediction_sink(path: Path, fmt: str | None = None, *, top: int = 5, samples: bool = False):
    """A resumable CSV / JSONL / GeoJSON writer of batch prediction rows (format from ``fmt`` or the suffix)."""
    from adapters.prediction_writers import open_sink

    return open_sink(Path(path), fmt, top=top, samples=samples)


def prediction_formats() -> tuple[str, ...]:
    from adapters.prediction_writers import FORMATS

    return tuple(FORMATS)


def save_hybrid_rule(checkpoint: Path, chosen: dict) -> Path:
    """Save the LocDiff-H rule chosen on validation beside the model's checkpoints (used by ``predict --hybrid``)."""
    from adapters.hybrid_file import save_hybrid_rule as save

    return save(checkpoint, chosen)


def load_hybrid_rule(checkpoint: Path):
    from adapters.hybrid_file import load_hybrid_rule as load

    return load(checkpoint)


def save_calibration(checkpoint: Path, calibrator) -> Path:
    """Save a fitted calibrator beside the model's checkpoints (used by later predictions)."""
    from adapters.calibration_file import save_calibration as save

    return save(checkpoint, calibrator)


def load_calibration(checkpoint: Path):
    from adapters.calibration_file import load_calibration as load

    return load(checkpoint)


# --------------------------------------------------------------------------- the entry points' other adapters
def code_version() -> str:
    """The git commit of the code (``-dirty`` with local changes), recorded with every run."""
    from adapters.code_version import code_version as version

    return version()


def run_id_of(path: Path) -> int | None:
    """The run id of the run folder holding ``path``, if any."""
    from adapters.run_folder import find_run_id

    return find_run_id(Path(path))


def run_created(path: Path) -> str | None:
    """The store record's creation time that the run folder holding ``path`` recorded (None: an older run.json, or none)."""
    from adapters.run_folder import find_run_created

    return find_run_created(Path(path))


def run_location(path: Path) -> tuple[str, str | None] | None:
    """(workdir, store URL) of the run folder holding ``path``: the store is the one its ``run.json`` names,
    else ``<workdir>/locdiff.sqlite`` beside the run folders (the convention ``train`` uses). None outside a run."""
    from adapters.run_folder import find_run_location

    return find_run_location(Path(path))


def launch_config(config: RunConfig) -> RunConfig:
    """Under torchrun each process drives the GPU of its LOCAL_RANK (``auto`` already does)."""
    import attrs

    from adapters.compute import distributed_env

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if distributed_env() is not None and config.device == "cuda":
        return attrs.evolve(config, device=f"cuda:{local_rank}")
    return config


def read_resume(run_dir: Path, steps: int | None = None):
    """The interrupted run in ``run_dir`` (config, run id, last checkpoint), ready for :func:`training_ports`."""
    from locdiff.services.training_run import read_resume as read

    return read(Path(run_dir), _checkpoints(1), _run_folder(), steps=steps)


def training_ports(config: RunConfig):
    """Everything ``locdiff.services.training_run.run_training`` needs, wired for ``config`` (and torchrun)."""
    import torch

    from adapters.compute import init_distributed
    from locdiff.services.training_run import TrainingPorts

    container = build_container(launch_config(config))
    compute = container.compute()
    if compute.device.type == "cuda":
        torch.cuda.set_device(compute.device)
    return TrainingPorts(compute=compute, checkpoints=container.checkpoints(), store=container.store, embedder=container.embedder,
                         dataset=container.dataset, run_folder=container.run_folder(), distributed=init_distributed,
                         code_version=code_version())


def benchmark_source(path: str, fmt: str | None, image_root: str | None = None, skip_missing: bool = False):
    """A benchmark's published layout (``fmt``: mp16, im2gps3k, …) or, without ``fmt``, a generic CSV."""
    if fmt:
        from adapters.benchmark_formats import BenchmarkSource

        return BenchmarkSource(fmt, Path(path), Path(image_root) if image_root else None, missing="skip" if skip_missing else "error")
    from adapters.csv_source import CsvSource

    return CsvSource(Path(path))


def benchmark_formats() -> tuple[str, ...]:
    from adapters.benchmark_formats import FORMATS

    return tuple(FORMATS)


def write_dataset_csv(samples, out: Path) -> None:
    """Write located samples as the generic ``id,lat,lon,image,group`` CSV that ``train --data`` reads (atomically)."""
    from adapters.dataset_csv import write_generic_csv

    write_generic_csv(samples, Path(out))


def photos_to_csv(directory: Path, out: Path):
    """Scan a photo folder's EXIF GPS into an ``image,lat,lon`` CSV."""
    from adapters.photos import photos_to_csv as scan

    return scan(Path(directory), Path(out))


def memory_probe():
    """The host peak-memory probe the degree study uses (resident-set growth while a block runs)."""
    from adapters.memory import RssProbe

    return RssProbe


def render_report(results, out_dir: Path, name: str) -> Path:
    """Markdown + PNG report of study results (matplotlib lives in the adapter)."""
    from adapters.report import render_report as render

    return render(results, Path(out_dir), name)


def study_env(container: Container, config: RunConfig, *, progress=None, log=None, reuse_models: bool = True):
    """The ports a study uses (``locdiff.services.studies.StudyEnv``), from ``container``."""
    from locdiff.services.studies import StudyEnv

    return StudyEnv(compute=container.compute(), checkpoints=container.checkpoints(), store=container.store(),
                    workdir=Path(config.workdir), progress=progress, code_version=code_version(), memory=memory_probe(),
                    log=log, reuse_models=reuse_models, gallery=container.gallery())


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON, atomically (numbers that are not JSON-native become floats)."""
    import json

    from adapters.atomic import atomic_open

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(Path(path), "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, default=float))
