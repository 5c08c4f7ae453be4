"""Data splits: hash-stable train/val/test partitions and spatial hold-out masks.

``split_by_hash`` assigns each sample by a hash of its stable id, so a sample keeps its split
whatever the order or size of the dataset it appears in. ``spatial_holdout`` marks whole regions
(countries, latitude bands, longitude bands) to keep out of training.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import torch

SPLITS = ("train", "val", "test")
HOLDOUT = "holdout"  # the split of the held-out groups / band (data.holdout_groups, data.holdout_lat_band)
EVAL_SPLITS = (*SPLITS, HOLDOUT)  # what `eval --split` can score
_TWO_64 = float(2**64)


def hash_unit(stable_id: str, salt: str = "locdiff") -> float:
    """Map ``stable_id`` to a number in [0, 1), uniform and fixed for a given salt."""
    digest = hashlib.sha256(f"{salt}\x00{stable_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")
    return value


def split_by_hash(
    ids: Sequence[str], val: float = 0.1, test: float = 0.1, salt: str = "locdiff"
) -> dict[str, torch.Tensor]:
    """Split ``ids`` into ``"train"``/``"val"``/``"test"`` index tensors (int64, ascending).

    A sample goes to test when its hash lies below ``test``, to val when below ``test + val``,
    else to train; so changing ``val`` never moves a sample between test and the rest.
    """
    val = _check_fraction("val", val)
    test = _check_fraction("test", test)
    if val + test >= 1.0:
        raise ValueError(f"val + test must be below 1 so that train is not empty, got {val} + {test}")
    if not isinstance(salt, str):
        raise ValueError(f"salt must be a string, got {type(salt).__name__}")
    buckets: dict[str, list[int]] = {name: [] for name in SPLITS}
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if not isinstance(sid, str):
            raise ValueError(f"ids must be strings; ids[{i}] is {type(sid).__name__} {sid!r}")
        if sid in seen:
            raise ValueError(f"duplicate id {sid!r} at positions {seen[sid]} and {i}; ids must be unique")
        seen[sid] = i
        u = hash_unit(sid, salt)
        name = "test" if u < test else "val" if u < test + val else "train"
        buckets[name].append(i)
    return {name: torch.tensor(idx, dtype=torch.long) for name, idx in buckets.items()}


def _wrap_lon(lon: torch.Tensor | float) -> torch.Tensor | float:
    """Wrap longitudes into [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0


def _check_band(name: str, band: Sequence[float], lo_min: float, hi_max: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in band)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lo, hi) of degrees, got {band!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {band!r}")
    if not (lo_min <= lo <= hi_max and lo_min <= hi <= hi_max):
        raise ValueError(f"{name} bounds must lie in [{lo_min}, {hi_max}], got {band!r}")
    return lo, hi


def spatial_holdout(
    latlon: torch.Tensor,
    groups: Sequence[str] | None = None,
    *,
    groups_out: Iterable[str] = (),
    lat_band: tuple[float, float] | None = None,
    lon_band: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Boolean mask [N] of held-out samples: in any of ``groups_out``, or inside a band.

    ``lat_band=(lo, hi)`` holds out ``lo <= lat <= hi``. ``lon_band=(lo, hi)`` holds out the arc
    going east from ``lo`` to ``hi`` (inclusive); ``lo > hi`` after wrapping to [-180, 180)
    crosses the antimeridian, e.g. ``(170, -170)``. Criteria combine by union.
    """
    if not isinstance(latlon, torch.Tensor) or latlon.ndim != 2 or latlon.shape[1] != 2:
        shape = tuple(latlon.shape) if isinstance(latlon, torch.Tensor) else type(latlon).__name__
        raise ValueError(f"latlon must be a tensor of shape [N, 2] (lat, lon), got {shape}")
    if not torch.isfinite(latlon).all():
        raise ValueError("latlon contains NaN or infinite values")
    groups_out = tuple(groups_out) if not isinstance(groups_out, str) else (groups_out,)
    if not groups_out and lat_band is None and lon_band is None:
        raise ValueError("spatial_holdout needs at least one of groups_out, lat_band, lon_band")
    n = latlon.shape[0]
    mask = torch.zeros(n, dtype=torch.bool, device=latlon.device)

    if groups_out:
        if groups is None:
            raise ValueError("groups_out was given but the samples have no groups")
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries but latlon has {n} rows")
        present = set(groups)
        unknown = sorted(set(groups_out) - present)
        if unknown:
            raise ValueError(f"groups_out names groups absent from the data: {unknown[:10]}")
        wanted = set(groups_out)
        flags = [g in wanted for g in groups]
        mask |= torch.tensor(flags, dtype=torch.bool, device=latlon.device)

    if lat_band is not None:
        lo, hi = _check_band("lat_band", lat_band, -90.0, 90.0)
        if lo > hi:
            raise ValueError(f"lat_band must have lo <= hi, got {lat_band!r}")
        lat = latlon[:, 0]
        mask |= (lat >= lo) & (lat <= hi)

    if lon_band is not None:
        lo, hi = _check_band("lon_band", lon_band, -180.0, 360.0)
        lo, hi = float(_wrap_lon(lo)), float(_wrap_lon(hi))
        if lo == hi:
            raise ValueError(f"lon_band {lon_band!r} has zero width after wrapping to [-180, 180)")
        lon = _wrap_lon(latlon[:, 1].to(torch.float64))
        mask |= ((lon >= lo) & (lon <= hi)) if lo < hi else ((lon >= lo) | (lon <= hi))
    return mask
