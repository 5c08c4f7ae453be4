"""JSON-safe copies of configs and metadata (stored with runs and checkpoints)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def plain_json(value: Any, where: str) -> Any:
    """A JSON-safe copy of ``value`` (tuples become lists); anything else raises naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} cannot be stored as JSON (expected a finite number)")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            out[key] = plain_json(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [plain_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{where}: expected str, int, float, bool, None, list or dict, got {type(value).__name__}")
