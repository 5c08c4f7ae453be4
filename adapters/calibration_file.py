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
from adapters.files import open_regular
from locdiff.config import structure

FILE_NAME = "calibration.json"
FORMAT = 1
MAX_BYTES = 16 << 20
MAX_N_LAT = 720  # grid rows of a map (0.25 degree)
MAX_SUB = 4  # sub-cells per cell side
MAX_CELLS = 720 * 1440 * 4  # fine cells of a map: bounds time and memory of every drawing
MAX_SCORES = 1_000_000


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
        with open_regular(path, max_bytes=MAX_BYTES, what="a calibration file") as f:
            payload = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable calibration file ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a readable calibration file (JSON nested too deeply)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: field 'format' must be {FORMAT}, got {payload.get('format') if isinstance(payload, dict) else payload!r}")
    if payload.get("checkpoint") != Path(checkpoint).name:
        warnings.warn(f"{path}: fitted for checkpoint {payload.get('checkpoint')!r}, not {Path(checkpoint).name!r}; "
                      "credible regions are raw (rerun `study calibration --run`)", stacklevel=2)
        return None
    return checked_calibrator(payload.get("calibrator"), where=f"{path} (field 'calibrator')")


def checked_calibrator(data: object, *, where: str) -> Calibrator:
    """A calibrator from untrusted JSON: strict field types (no 2.5 for an int, no Infinity) and grid
    sizes bounded so that drawing a map can never take more than about :data:`MAX_CELLS` fine cells."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    cal = structure(Calibrator, data, where=where)
    for name, lo, hi in (("n_lat", 2, MAX_N_LAT), ("n_lon", 2, 2 * MAX_N_LAT), ("sub", 1, MAX_SUB)):
        value = getattr(cal, name)
        if not lo <= value <= hi:
            raise ValueError(f"{where}: field '{name}' must be in [{lo}, {hi}], got {value}")
    if cal.n_lat * cal.n_lon * cal.sub**2 > MAX_CELLS:
        raise ValueError(f"{where}: n_lat * n_lon * sub^2 = {cal.n_lat * cal.n_lon * cal.sub**2} fine cells, more than {MAX_CELLS}")
    if not 1e-6 <= cal.param <= 1e6:
        raise ValueError(f"{where}: field 'param' must be in [1e-06, 1e+06], got {cal.param:g}")
    if len(cal.scores) > MAX_SCORES:
        raise ValueError(f"{where}: field 'scores' holds {len(cal.scores)} levels, more than {MAX_SCORES}")
    return Calibrator.from_dict(cal.to_dict(), where=where)
