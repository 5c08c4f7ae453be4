"""The ``RunFolder`` port on disk: ``<run_dir>/config.json`` and ``run.json``, each written atomically, and ``.lock``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.atomic import atomic_open
from adapters.run_lock import run_lock


def _write(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(dict(data), fh, indent=2, sort_keys=True)


class JsonRunFolder:
    """Reads ``run.json`` (run id, store URL) and creates a run's folder with its config."""

    def read(self, run_dir: Path) -> dict[str, Any] | None:
        path = Path(run_dir) / "run.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable run.json ({exc})") from None
        if not isinstance(data, dict) or isinstance(data.get("run_id"), bool) or not isinstance(data.get("run_id"), int):
            raise ValueError(f"{path}: field 'run_id' must be an integer")
        return data

    def read_config(self, run_dir: Path) -> dict[str, Any] | None:
        """The run's ``config.json`` as written at its start, or None if absent."""
        path = Path(run_dir) / "config.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: not a readable config.json ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return data

    def create(self, run_dir: Path, config: Mapping[str, Any], run: Mapping[str, Any]) -> None:
        _write(Path(run_dir) / "config.json", config)
        _write(Path(run_dir) / "run.json", run)

    def lock(self, run_dir: Path):
        """One trainer per run folder (an ``flock`` the kernel drops when the process ends)."""
        return run_lock(run_dir)


def _run_json(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """(the run folder holding ``path`` — a run or one of its checkpoints —, its ``run.json``), or None."""
    folder = JsonRunFolder()
    for p in (Path(path), *Path(path).parents):
        data = folder.read(p)
        if data is not None:
            return p, data
    return None


def find_run_id(path: Path) -> int | None:
    """The run id of the run folder holding ``path``, or None."""
    found = _run_json(path)
    return None if found is None else int(found[1]["run_id"])


def find_run_created(path: Path) -> str | None:
    """The creation time of its store record that the run folder holding ``path`` recorded (None if absent)."""
    found = _run_json(path)
    created = None if found is None else found[1].get("created")
    return created if isinstance(created, str) else None


def find_run_location(path: Path) -> tuple[str, str | None] | None:
    """(workdir, store URL named by its ``run.json``, else None) of the run folder holding ``path``; None outside a run."""
    found = _run_json(path)
    if found is None:
        return None
    store = found[1].get("store")
    return str(found[0].resolve().parent), store if isinstance(store, str) and store else None
