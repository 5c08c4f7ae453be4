"""A model's LocDiff-H rule chosen on validation, saved beside its checkpoints as ``<run folder>/hybrid.json``.

Written by ``eval RUN --hybrid`` when the radius is chosen on validation (``--hybrid-radius auto``), atomically;
read by ``predict --hybrid`` (which otherwise uses the paper's rule, 200 km). A file chosen for another
checkpoint of the run is reported and not applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.run_sidecar import read_sidecar, write_sidecar
from locdiff.core.hybrid import HybridRule

FILE_NAME = "hybrid.json"
FORMAT = 1
MAX_BYTES = 1 << 20


def save_hybrid_rule(checkpoint: Path, chosen: dict[str, Any]) -> Path:
    """``chosen``: a :class:`HybridRule`'s fields plus what it was chosen on (the sweep)."""
    HybridRule.from_dict(chosen)  # refuse to write what could not be read back
    return write_sidecar(checkpoint, FILE_NAME, FORMAT, "hybrid", dict(chosen))


def load_hybrid_rule(checkpoint: Path) -> HybridRule | None:
    """The rule chosen for ``checkpoint``, or None (no file, or chosen for another checkpoint: warns)."""
    found = read_sidecar(checkpoint, FILE_NAME, FORMAT, "hybrid", what="a hybrid rule file", max_bytes=MAX_BYTES,
                         made="chosen", stale="using the paper's rule (rerun `eval RUN --hybrid`)")
    return None if found is None else HybridRule.from_dict(found[1] or {})
