"""A model's fitted calibration, saved beside its checkpoints as ``<run folder>/calibration.json``.

Written by ``study calibration --run RUN`` (atomically: a temp file, then a rename) and read by the
prediction service, which then draws calibrated credible regions. A file fitted for another
checkpoint of the run (e.g. before training was resumed) is reported and not applied.
"""

from __future__ import annotations

from pathlib import Path

from adapters.run_sidecar import read_sidecar, run_folder, write_sidecar
from locdiff.config import structure
from locdiff.core.calibration import Calibrator

__all__ = ["FILE_NAME", "load_calibration", "run_folder", "save_calibration", "checked_calibrator"]

FILE_NAME = "calibration.json"
FORMAT = 1
MAX_BYTES = 16 << 20
MAX_N_LAT = 720  # grid rows of a map (0.25 degree)
MAX_SUB = 4  # sub-cells per cell side
MAX_CELLS = 720 * 1440 * 4  # fine cells of a map: bounds time and memory of every drawing
MAX_SCORES = 1_000_000


def save_calibration(checkpoint: Path, calibrator: Calibrator) -> Path:
    return write_sidecar(checkpoint, FILE_NAME, FORMAT, "calibrator", calibrator.to_dict())


def load_calibration(checkpoint: Path) -> Calibrator | None:
    """The calibrator fitted for ``checkpoint``, or None (no file, or fitted for another checkpoint: warns)."""
    found = read_sidecar(checkpoint, FILE_NAME, FORMAT, "calibrator", what="a calibration file", max_bytes=MAX_BYTES,
                         made="fitted", stale="credible regions are raw (rerun `study calibration --run`)")
    if found is None:
        return None
    path, body = found
    return checked_calibrator(body, where=f"{path} (field 'calibrator')")


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
