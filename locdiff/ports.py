"""Ports: the small protocols through which the core talks to the outside world.

The core (``locdiff``) depends only on these; ``adapters/``, ``storage/`` and ``gui/`` implement
or drive them, and ``locdiff.container`` wires concrete classes in. Records that cross a port are
frozen attrs values defined here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import torch


# --------------------------------------------------------------------------- records
@attrs.frozen
class ItemFailure:
    """An input that could not be used, and why (shown to the user, never raised mid-batch)."""

    item: str
    reason: str


@attrs.frozen
class Embedded:
    """Result of embedding a batch: rows for the items that worked, failures for the rest.

    ``index`` holds the positions (into the requested sequence) of the rows of ``vectors``.
    """

    vectors: torch.Tensor  # [n_ok, dim] float32 on CPU
    index: tuple[int, ...]
    failures: tuple[ItemFailure, ...] = ()


@attrs.frozen
class GeoSamples:
    """A located dataset: stable ids, (lat, lon) in degrees and the item to embed.

    ``kind`` is ``"text"`` (items are strings) or ``"image"`` (items are file paths).
    ``groups`` optionally names a region per sample (e.g. a country code) for spatial hold-outs.
    """

    name: str
    ids: tuple[str, ...]
    latlon: torch.Tensor  # [N, 2] float64
    items: tuple[str, ...]
    kind: str
    groups: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@attrs.frozen
class BatchInput:
    """One input of a batch prediction: its position in the input, a text or an image path, and ground truth if known.

    ``problem`` says why the input cannot be used (a bad CSV row, a file that is missing); it is reported in the
    input's output row and the batch goes on.
    """

    index: int
    kind: str  # "text" | "image"
    value: str
    truth: tuple[float, float] | None = None
    problem: str | None = None


@attrs.frozen
class RunRecord:
    run_id: int
    experiment: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    config: Mapping[str, Any]
    code_version: str
    metrics: Mapping[str, float]  # latest value of each metric / evaluation figure
    stale: bool = False  # "running", but the process that recorded it is gone (killed): resume it


@attrs.frozen
class NamedPlaces:
    """A bare place-name query and every place that carries the name (the name-only benchmark's truth).

    ``kind`` is ``"ambiguous"`` or ``"control"`` (a name carried by one place only).
    """

    query: str
    kind: str
    latlon: torch.Tensor  # [N, 2] float64 degrees
    population: torch.Tensor  # [N] float64
    labels: tuple[str, ...]  # each place as "name, region, country"


@attrs.frozen
class CheckpointRecord:
    path: str
    sha256: str
    degree: int
    dims: int
    embedder_id: str
    step: int


# --------------------------------------------------------------------------- ports
@runtime_checkable
class Compute(Protocol):
    """Where tensors live. The core never names a device; it asks this port."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def generator(self, seed: int) -> torch.Generator: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts or images into condition vectors. ``id`` names the model and weights exactly."""

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed_texts(self, texts: Sequence[str]) -> Embedded: ...

    def embed_images(self, paths: Sequence[Path]) -> Embedded: ...


@runtime_checkable
class NameBenchmarkSource(Protocol):
    """Yields the name-only benchmark: bare-name queries with the places that carry each."""

    @property
    def name(self) -> str: ...

    def load(self) -> tuple[NamedPlaces, ...]: ...


@runtime_checkable
class DatasetSource(Protocol):
    """Yields a located dataset (places, a CSV, a photo folder, a benchmark's file layout)."""

    @property
    def name(self) -> str: ...

    def load(self) -> GeoSamples: ...


@runtime_checkable
class Retriever(Protocol):
    """Gallery retrieval (GeoCLIP), restricted to a radius around given candidates."""

    @property
    def id(self) -> str: ...

    def retrieve(
        self,
        images: Sequence[Path],
        candidates: torch.Tensor,  # [B, K, 2] (lat, lon) degrees
        radius_km: float,
        top_k: int = 5,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # ([B, top_k, 2] latlon, [B, top_k] probabilities)
        ...


@runtime_checkable
class EmbeddingRetriever(Protocol):
    """A gallery of (embedding, location) pairs searched by cosine similarity (LocDiff-H for any embedder)."""

    @property
    def id(self) -> str: ...

    def __len__(self) -> int: ...

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, k] cosine similarities, descending, and [B, k, 2] (lat, lon) degrees) of each query's top-k."""
        ...


@runtime_checkable
class GalleryProvider(Protocol):
    """Opens the gallery of given embeddings and locations, cached on disk (rebuilt when they change)."""

    def open(self, vectors: torch.Tensor, latlon: torch.Tensor, *, embedder_id: str) -> EmbeddingRetriever: ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Model weights + JSON config on disk (safetensors; never pickle); writes are atomic."""

    def save(self, directory: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path: ...

    def load(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def latest(self, directory: Path) -> Path | None: ...

    def sha256(self, path: Path) -> str: ...

    def clean(self, directory: Path) -> list[Path]: ...


@runtime_checkable
class ExperimentStore(Protocol):
    """Runs, their configs, metrics, checkpoints, evaluations and predictions."""

    def start_run(self, experiment: str, config: Mapping[str, Any], code_version: str) -> int: ...

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float]) -> None: ...

    def add_checkpoint(self, run_id: int, record: CheckpointRecord) -> None: ...

    def forget_missing_checkpoints(self, run_id: int) -> int: ...

    def add_evaluation(self, run_id: int, dataset: str, metrics: Mapping[str, float]) -> None: ...

    def add_predictions(self, run_id: int | None, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def finish_run(self, run_id: int, status: str) -> None: ...

    def reopen_run(self, run_id: int) -> None: ...

    def list_runs(self) -> list[RunRecord]: ...

    def get_run(self, run_id: int) -> RunRecord: ...

    def checkpoints(self, run_id: int) -> list[CheckpointRecord]: ...

    def predictions(self, limit: int = 100) -> list[dict[str, Any]]: ...


@runtime_checkable
class PredictionService(Protocol):
    """The prediction use case as entry points drive it (``locdiff.services.prediction``; the app, ``predict``).

    ``cancelled()`` is polled between diffusion steps (a cancelled call raises); ``progress(done, total)``
    reports files (images) or steps (text). ``reads`` names the inputs the model takes.
    """

    @property
    def model_info(self) -> dict[str, Any]: ...

    @property
    def reads(self) -> tuple[str, ...]: ...

    def predict_images(self, paths: Sequence[Path], settings: Any, progress: Any = None,
                       cancelled: Any = None) -> list[Any]: ...

    def predict_text(self, text: str, settings: Any, cancelled: Any = None, progress: Any = None) -> Any: ...


@runtime_checkable
class BatchInputs(Protocol):
    """The inputs of a batch prediction (a folder, a CSV/JSONL file, stdin lines), read lazily in order."""

    @property
    def name(self) -> str: ...

    def count(self) -> int | None: ...  # how many inputs (for progress), None if unknown

    def __iter__(self) -> Iterator[BatchInput]: ...


@runtime_checkable
class PredictionSink(Protocol):
    """Where batch prediction rows go (CSV, JSONL, GeoJSON): appended in chunks, each flushed to disk before the next.

    ``done()`` maps the index of every row already in the output (an interrupted run's) to its input; the rerun skips
    those. ``close()`` finishes the file (GeoJSON's closing bracket).
    """

    def done(self) -> Mapping[int, str]: ...

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Geocoder(Protocol):
    """Place names for coordinates (reverse geocoding): ``"name, region, CC"`` or None where none is known."""

    def names(self, latlon: Sequence[tuple[float, float]]) -> list[str | None]: ...


# --------------------------------------------------------------------------- driving-side ports (progress, memory, run folders)
class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, *args: Any, **kwargs: Any) -> Any: ...

    def close(self) -> Any: ...


class ProgressFactory(Protocol):
    """Progress reporting: entry points pass ``tqdm`` (or a Qt signal adapter); use cases never print."""

    def __call__(self, *, total: int, desc: str, initial: int = 0) -> ProgressBar: ...


class MemoryProbe(Protocol):
    """Measures peak memory while a block runs: ``with probe() as m: ...; m.peak_bytes``."""

    def __call__(self) -> contextlib.AbstractContextManager[Any]: ...


@runtime_checkable
class RunFolder(Protocol):
    """A training run's folder: ``config.json`` and ``run.json`` (run id, store URL), written atomically, and its lock."""

    def read(self, run_dir: Path) -> Mapping[str, Any] | None: ...  # run.json, or None if this is no run folder

    def read_config(self, run_dir: Path) -> Mapping[str, Any] | None: ...  # config.json as written at the start

    def create(self, run_dir: Path, config: Mapping[str, Any], run: Mapping[str, Any]) -> None: ...

    def lock(self, run_dir: Path) -> contextlib.AbstractContextManager[Any]:
        """Held while one process trains the run; a second trainer gets a ``ValueError`` at once."""
        ...
