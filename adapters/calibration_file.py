"""A model's fitted calibration, saved beside its checkpoints as ``<run folder>/calibration.json``.

Written by ``study calibration --run RUN`` (atomically: a temp file, then a rename) and read by the
prediction service, which then draws calibrated credible regions. A file fitted for another
checkpoint of the run (e.g. before training was resumed) is reported and not applied.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from locdiff.core.calibration import Calibrator
from adapters.atomic import atomic_open

FILE_NAME = "calibration.json"
FORMAT = 1


def run_folder(checkpoint: Path) -> Path:
    """``runs/run-0001/checkpoints/step-00001500`` → ``runs/run-0001``; a bare checkpoint folder → its parent."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def save_calibration(checkpoint: Path, calibrator: Calibrator) -> Path:
    path = run_folder(checkpoint) / FILE_NAME
    payload = {"format": FORMAT, "checkpoint": Path(checkpoint).name, "calibrator": calibrator.to_dict()}
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    return path


def load_calibration(checkpoint: Path) -> Calibrator | None:
    """The calibrator fitted for ``checkpoint``, or None (no file, or fitted for another checkpoint: warns)."""
    path = run_folder(checkpoint) / FILE_NAME
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable calibration file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: field 'format' must be {FORMAT}, got {payload.get('format') if isinstance(payload, dict) else payload!r}")
    if payload.get("checkpoint") != Path(checkpoint).name:
        warnings.warn(f"{path}: fitted for checkpoint {payload.get('checkpoint')!r}, not {Path(checkpoint).name!r}; "
                      "credible regions are raw (rerun `study calibration --run`)", stacklevel=2)
        return None
    return Calibrator.from_dict(payload.get("calibrator"), where=f"{path} (field 'calibrator')")
