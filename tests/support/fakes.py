"""In-memory fakes of the ports (the cosmicpython way): use cases run without a database, files or a model download."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from locdiff.core import anchors, geo
from locdiff.ports import CheckpointRecord, Embedded, GeoSamples, ItemFailure, RunRecord


class FakeCompute:
    device = torch.device("cpu")
    dtype = torch.float32

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def describe(self) -> str:
        return "cpu (fake)"


class FakeSource:
    """``n`` places around a few centres; items are ``"lat,lon"`` texts (``FakeEmbedder`` reads them back)."""

    def __init__(self, n: int = 120, name: str = "fake") -> None:
        self.n, self.name = n, name

    def load(self) -> GeoSamples:
        g = torch.Generator().manual_seed(0)
        centres = anchors.uniform_random(6, g, dtype=torch.float64)
        which = torch.randint(0, 6, (self.n,), generator=g)
        latlon = geo.to_latlon(geo.to_xyz(centres[which]) + 0.01 * torch.randn(self.n, 3, generator=g, dtype=torch.float64))
        items = tuple(f"{a:.5f},{b:.5f}" for a, b in latlon.tolist())
        return GeoSamples(self.name, tuple(f"id{i}" for i in range(self.n)), latlon, items, "text")


class FakeEmbedder:
    """A condition that encodes the location; an item ``"bad"`` fails (as an unreadable file would)."""

    id = "fake-location-v1"
    dim = 8

    def __init__(self) -> None:
        self.calls = 0

    def _vector(self, text: str) -> torch.Tensor:
        lat, lon = (float(x) for x in text.split(","))
        v = geo.to_xyz(torch.tensor([[lat, lon]], dtype=torch.float64))[0]
        return torch.cat((v, torch.sin(2 * v), v[:2] * v[2])).float()

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        self.calls += 1
        ok = [i for i, t in enumerate(texts) if t != "bad"]
        vectors = torch.stack([self._vector(texts[i]) for i in ok]) if ok else torch.empty(0, self.dim)
        return Embedded(vectors, tuple(ok), tuple(ItemFailure(t, "unreadable") for t in texts if t == "bad"))

    def embed_images(self, paths: Sequence[Path]) -> Embedded:
        return Embedded(torch.empty(0, self.dim), (), tuple(ItemFailure(str(p), "no images here") for p in paths))


class FakeCheckpoints:
    """Checkpoints in a dict keyed by path (``step-XXXXXXXX`` folders that never touch the disk)."""

    def __init__(self) -> None:
        self.saved: dict[Path, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}

    def save(self, directory: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
        path = Path(directory) / f"step-{int(meta.get('step', 0)):08d}"
        self.saved[path] = ({k: v.detach().clone() for k, v in tensors.items()}, dict(meta))
        return path

    def load(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if Path(path) not in self.saved:
            raise ValueError(f"checkpoint {path} does not exist")
        tensors, meta = self.saved[Path(path)]
        return dict(tensors), dict(meta)

    def latest(self, directory: Path) -> Path | None:
        mine = sorted(p for p in self.saved if p.parent == Path(directory))
        return mine[-1] if mine else None

    def sha256(self, path: Path) -> str:
        return hashlib.sha256(str(path).encode()).hexdigest()

    def clean(self, directory: Path) -> list[Path]:
        return []


class FakeStore:
    """An ``ExperimentStore`` in lists and dicts."""

    def __init__(self) -> None:
        self.runs: dict[int, dict[str, Any]] = {}
        self.evaluations: list[tuple[int, str, dict[str, float]]] = []
        self.predictions_rows: list[dict[str, Any]] = []

    def start_run(self, experiment: str, config: Mapping[str, Any], code_version: str) -> int:
        run_id = len(self.runs) + 1
        self.runs[run_id] = {"experiment": experiment, "config": dict(config), "code_version": code_version, "status": "running",
                             "metrics": {}, "checkpoints": [], "history": ["running"], "created_at": datetime.now(timezone.utc)}
        return run_id

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float]) -> None:
        self.runs[run_id]["metrics"].update(metrics)

    def add_checkpoint(self, run_id: int, record: CheckpointRecord) -> None:
        self.runs[run_id]["checkpoints"].append(record)

    def forget_missing_checkpoints(self, run_id: int) -> int:
        return 0

    def add_evaluation(self, run_id: int, dataset: str, metrics: Mapping[str, float]) -> None:
        self.evaluations.append((run_id, dataset, dict(metrics)))
        self.runs[run_id]["metrics"].update({f"{dataset}/{k}": float(v) for k, v in metrics.items()})

    def add_predictions(self, run_id: int | None, rows: Sequence[Mapping[str, Any]]) -> None:
        self.predictions_rows += [dict(r) for r in rows]

    def finish_run(self, run_id: int, status: str) -> None:
        self.runs[run_id]["status"] = status
        self.runs[run_id]["history"].append(status)

    def reopen_run(self, run_id: int) -> None:
        self.finish_run(run_id, "running")

    def get_run(self, run_id: int) -> RunRecord:
        if run_id not in self.runs:
            raise KeyError(run_id)
        r = self.runs[run_id]
        return RunRecord(run_id, r["experiment"], r["status"], r["created_at"], None, r["config"], r["code_version"], dict(r["metrics"]))

    def list_runs(self) -> list[RunRecord]:
        return [self.get_run(i) for i in self.runs]

    def checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        return list(self.runs[run_id]["checkpoints"])

    def predictions(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.predictions_rows[-limit:]


class FakeRunFolder:
    def __init__(self) -> None:
        self.folders: dict[Path, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.locked: set[Path] = set()

    def read(self, run_dir: Path) -> dict[str, Any] | None:
        entry = self.folders.get(Path(run_dir))
        return None if entry is None else dict(entry[1])

    def read_config(self, run_dir: Path) -> dict[str, Any] | None:
        entry = self.folders.get(Path(run_dir))
        return None if entry is None else dict(entry[0])

    def create(self, run_dir: Path, config: Mapping[str, Any], run: Mapping[str, Any]) -> None:
        self.folders[Path(run_dir)] = (dict(config), dict(run))

    @contextlib.contextmanager
    def lock(self, run_dir: Path):
        if Path(run_dir) in self.locked:
            raise ValueError(f"{run_dir}: this run is being trained by another process")
        self.locked.add(Path(run_dir))
        try:
            yield Path(run_dir) / ".lock"
        finally:
            self.locked.discard(Path(run_dir))


