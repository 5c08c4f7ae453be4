"""Values in and out of the store's rows: checked input (one-line ``ValueError`` naming the field),
NaN stored as NULL, and the records the :class:`locdiff.ports.ExperimentStore` port hands back."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from locdiff.core.serialization import plain_json
from locdiff.ports import CheckpointRecord
from storage.schema import Checkpoint, Prediction

_PREDICTION_FIELDS = ("item", "lat", "lon", "probability", "payload")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def number(value: Any, where: str) -> float:
    """``value`` as a float (numbers, numpy scalars, one-element tensors); NaN and inf are kept."""
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}") from exc


def stored(value: float) -> float | None:
    """SQLite cannot hold NaN: it is stored as NULL and read back as NaN."""
    return None if math.isnan(value) else value


def loaded(value: float | None) -> float:
    return math.nan if value is None else float(value)


def integer(value: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: expected an int >= {minimum}, got {value}")
    return int(value)


def text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def figures(metrics: Any, where: str) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{where}: expected a mapping of name -> number, got {type(metrics).__name__}")
    return {text(name, f"{where} name"): number(v, f"{where}[{name!r}]") for name, v in metrics.items()}


def prediction_row(row: Any, run_id: int | None, index: int) -> Prediction:
    """A checked prediction row: ``item``, ``lat``, ``lon``, optional ``probability`` and ``payload``;
    any other keys are merged into the payload."""
    where = f"predictions row {index}"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(row).__name__}")
    missing = [k for k in ("item", "lat", "lon") if k not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    item = os.fspath(row["item"]) if isinstance(row["item"], os.PathLike) else row["item"]
    item = text(item, f"{where} field 'item'")
    lat = number(row["lat"], f"{where} field 'lat'")
    lon = number(row["lon"], f"{where} field 'lon'")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"{where} field 'lat': expected degrees in [-90, 90], got {lat}")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"{where} field 'lon': expected degrees in [-180, 180], got {lon}")
    probability = row.get("probability")
    if probability is not None:
        probability = number(probability, f"{where} field 'probability'")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"{where} field 'probability': expected a value in [0, 1] or None, got {probability}")
    payload = row.get("payload") or {}
    if not isinstance(payload, Mapping):
        raise ValueError(f"{where} field 'payload': expected a mapping, got {type(payload).__name__}")
    extra = {k: v for k, v in row.items() if k not in _PREDICTION_FIELDS}
    clash = sorted(set(extra) & set(payload))
    if clash:
        raise ValueError(f"{where}: key(s) {clash} given both as fields and inside 'payload'")
    payload = plain_json({**payload, **extra}, f"{where} payload")
    return Prediction(run_id=run_id, item=item, lat=lat, lon=lon, probability=probability, payload=payload)


def checkpoint_fields(record: Any) -> dict[str, Any]:
    """The checked columns of a :class:`CheckpointRecord` (``created_at`` is the caller's)."""
    if not isinstance(record, CheckpointRecord):
        raise ValueError(f"record: expected a CheckpointRecord, got {type(record).__name__}")
    path = text(record.path, "checkpoint path")
    if not isinstance(record.sha256, str) or not _SHA256.fullmatch(record.sha256):
        raise ValueError(f"checkpoint sha256: expected 64 lowercase hex digits, got {record.sha256!r}")
    return dict(
        path=path,
        sha256=record.sha256,
        degree=integer(record.degree, "checkpoint degree", minimum=0),
        dims=integer(record.dims, "checkpoint dims", minimum=1),
        embedder_id=text(record.embedder_id, "checkpoint embedder_id"),
        step=integer(record.step, "checkpoint step", minimum=0),
    )


def checkpoint_record(row: Checkpoint) -> CheckpointRecord:
    return CheckpointRecord(path=row.path, sha256=row.sha256, degree=row.degree, dims=row.dims, embedder_id=row.embedder_id,
                            step=row.step)


def prediction_dict(row: Prediction) -> dict[str, Any]:
    """A stored prediction as a plain dict (``id``, ``run_id``, ``created_at``, the fields and its ``payload``)."""
    return {
        "id": row.id,
        "run_id": row.run_id,
        "created_at": row.created_at,
        "item": row.item,
        "lat": row.lat,
        "lon": row.lon,
        "probability": row.probability,
        "payload": dict(row.payload),
    }
