"""A model's LocDiff-H rule chosen on validation, saved beside its checkpoints as ``<run folder>/hybrid.json``.

Written by ``eval RUN --hybrid`` when the radius is chosen on validation (``--hybrid-radius auto``), atomically;
read by ``predict --hybrid`` (which otherwise uses the paper's rule, 200 km). A file chosen for another
checkpoint of the run is reported and not applied.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from adapters.atomic import atomic_open
from adapters.calibration_file import run_folder
from adapters.files import open_regular
from locdiff.core.hybrid import HybridRule

FILE_NAME = "hybrid.json"
FORMAT = 1
MAX_BYTES = 1 << 20


def save_hybrid_rule(checkpoint: Path, chosen: dict[str, Any]) -> Path:
    """``chosen``: a :class:`HybridRule`'s fields plus what it was chosen on (the sweep)."""
    path = run_folder(checkpoint) / FILE_NAME
    HybridRule.from_dict(chosen)  # refuse to write what could not be read back
    payload = {"format": FORMAT, "checkpoint": Path(checkpoint).name, "hybrid": dict(chosen)}
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=float)
    return path


def load_hybrid_rule(checkpoint: Path) -> HybridRule | None:
    """The rule chosen for ``checkpoint``, or None (no file, or chosen for another checkpoint: warns)."""
    path = run_folder(checkpoint) / FILE_NAME
    if not path.exists():
        return None
    try:
        with open_regular(path, max_bytes=MAX_BYTES, what="a hybrid rule file") as f:
            payload = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable hybrid rule file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: field 'format' must be {FORMAT}")
    if payload.get("checkpoint") != Path(checkpoint).name:
        warnings.warn(f"{path}: chosen for checkpoint {payload.get('checkpoint')!r}, not {Path(checkpoint).name!r}; "
                      "using the paper's rule (rerun `eval RUN --hybrid`)", stacklevel=2)
        return None
    return HybridRule.from_dict(payload.get("hybrid") or {})
