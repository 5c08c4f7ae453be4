"""JSON files kept beside a run's checkpoints (``<run folder>/<name>.json``): written atomically, read
as untrusted input, and applied only to the checkpoint they were made for.

Each holds ``{"format": N, "checkpoint": "<step folder name>", "<key>": {...}}``; the calibration and
the LocDiff-H rule files are both of this kind.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from adapters.atomic import atomic_open
from adapters.files import open_regular


def run_folder(checkpoint: Path) -> Path:
    """``runs/run-0001/checkpoints/step-00001500`` → ``runs/run-0001``; a bare checkpoint folder → its parent."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def write_sidecar(checkpoint: Path, file_name: str, fmt: int, key: str, body: Any) -> Path:
    """Write ``body`` under ``key`` for ``checkpoint`` (temp file, then rename); returns the path."""
    path = run_folder(checkpoint) / file_name
    payload = {"format": fmt, "checkpoint": Path(checkpoint).name, key: body}
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=float)
    return path


def read_sidecar(checkpoint: Path, file_name: str, fmt: int, key: str, *, what: str, max_bytes: int, stale: str, made: str = "made") -> tuple[Path, Any] | None:
    """``(path, body under key)`` for ``checkpoint``; None when there is no file, or when it was made for
    another checkpoint (then warns: "<made> for checkpoint …; <stale>", what happens instead). Bad files raise a
    one-line ``ValueError`` naming the path (``what``: e.g. "a calibration file")."""
    path = run_folder(checkpoint) / file_name
    if not path.exists():
        return None
    try:
        with open_regular(path, max_bytes=max_bytes, what=what) as f:
            payload = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable {what.removeprefix('a ')} ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a readable {what.removeprefix('a ')} (JSON nested too deeply)") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{path}: field 'format' must be {fmt}, got {payload.get('format') if isinstance(payload, dict) else payload!r}")
    if payload.get("checkpoint") != Path(checkpoint).name:
        warnings.warn(f"{path}: {made} for checkpoint {payload.get('checkpoint')!r}, not {Path(checkpoint).name!r}; {stale}", stacklevel=3)
        return None
    return path, payload.get(key)
