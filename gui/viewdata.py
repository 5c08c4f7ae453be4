"""What the window shows for one prediction, as plain numpy / JSON values (no Qt, no torch import).

:class:`ViewPrediction` is built from a core ``Prediction`` (in the worker thread, so the UI thread
only draws) or from a history payload, and is what the exports write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gui import regions

PAYLOAD_FORMAT = "locdiff-gui/1"
HISTORY_GRID = (90, 180)
EARTH_RADIUS_KM = 6371.0088
#: Modes holding less than this share of the probability are not shown (noise, not an answer).
MIN_MODE_MASS = 0.01


@dataclass(frozen=True)
class ModeView:
    lat: float
    lon: float
    mass: float
    radius_km: float = 0.0
    logit: float = 0.0
    place: str = ""


@dataclass(frozen=True)
class ViewPrediction:
    """One prediction, ready to draw. Grids follow ``DensityGrid``: row 0 = north, column 0 = 180 degW."""

    item: str
    kind: str  # "image" or "text"
    point: tuple[float, float]
    samples: np.ndarray  # [K, 2] (lat, lon)
    modes: tuple[ModeView, ...]
    lat: np.ndarray | None = None  # [n_lat] cell centres, descending
    lon: np.ndarray | None = None  # [n_lon] cell centres, ascending
    density: np.ndarray | None = None  # [n_lat, n_lon] per steradian
    mass: np.ndarray | None = None  # [n_lat, n_lon], sums to 1
    credible: dict[float, float] = field(default_factory=dict)
    reducer: str = ""
    refined: tuple[float, float] | None = None
    truth: tuple[float, float] | None = None
    place: str = ""
    truth_place: str = ""
    created: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def has_grid(self) -> bool:
        return self.density is not None and self.lat is not None and self.lon is not None

    @property
    def error_km(self) -> float | None:
        """Great-circle distance from the predicted point to the true location (EXIF GPS), if known."""
        if self.truth is None:
            return None
        return haversine_km(self.point, self.truth)

    @property
    def name(self) -> str:
        """Short label: the file name of an image, the (clipped) text of a text query."""
        if self.kind == "image":
            return Path(self.item).name
        return self.item if len(self.item) <= 60 else self.item[:57] + "..."

    def with_places(self, place: str, mode_places: Sequence[str], truth_place: str = "") -> ViewPrediction:
        modes = tuple(replace(m, place=p) for m, p in zip(self.modes, mode_places))
        return replace(self, place=place, modes=modes + self.modes[len(modes):], truth_place=truth_place)


# --------------------------------------------------------------------------- geometry
def haversine_km(a: Sequence[float], b: Sequence[float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def great_circle(a: tuple[float, float], b: tuple[float, float], n: int = 64) -> np.ndarray:
    """Points ``[n, 2]`` (lat, lon) along the shorter great-circle arc from ``a`` to ``b``."""
    pa = _xyz(a)
    pb = _xyz(b)
    omega = math.acos(max(-1.0, min(1.0, float(pa @ pb))))
    if omega < 1e-9:
        return np.array([a, b], dtype=np.float64)
    t = np.linspace(0, 1, n)[:, None]
    p = (np.sin((1 - t) * omega) * pa + np.sin(t * omega) * pb) / math.sin(omega)
    lat = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    lon = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    return np.stack((lat, lon), axis=1)


def _xyz(p: Sequence[float]) -> np.ndarray:
    la, lo = math.radians(p[0]), math.radians(p[1])
    return np.array([math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)])


def cell_areas(lat: np.ndarray, n_lon: int) -> np.ndarray:
    """Solid angle (sr) of the cells of an equiangular grid, per row ``[n_lat]``."""
    lat = np.asarray(lat, dtype=np.float64)
    half = 90.0 / lat.size
    top = np.deg2rad(np.clip(lat + half, -90, 90))
    bottom = np.deg2rad(np.clip(lat - half, -90, 90))
    return (2 * np.pi / n_lon) * np.abs(np.sin(top) - np.sin(bottom))


def grid_axes(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of an equiangular grid: lat descending from north, lon ascending from -180."""
    lat = 90.0 - (np.arange(n_lat) + 0.5) * (180.0 / n_lat)
    lon = -180.0 + (np.arange(n_lon) + 0.5) * (360.0 / n_lon)
    return lat, lon


def downsample(lat: np.ndarray, lon: np.ndarray, mass: np.ndarray, shape: tuple[int, int]):
    """Sum ``mass`` into a coarser equiangular grid ``shape``; returns (lat, lon, density, mass).

    Grids already at most ``shape`` are returned unchanged (density recomputed from mass).
    Shapes that do not divide evenly are resampled by nearest source cell, then renormalised.
    """
    mass = np.asarray(mass, dtype=np.float64)
    n_lat, n_lon = mass.shape
    t_lat, t_lon = shape
    if n_lat <= t_lat and n_lon <= t_lon:
        lat2, lon2, m2 = np.asarray(lat, float), np.asarray(lon, float), mass
    elif n_lat % t_lat == 0 and n_lon % t_lon == 0:
        m2 = mass.reshape(t_lat, n_lat // t_lat, t_lon, n_lon // t_lon).sum(axis=(1, 3))
        lat2, lon2 = grid_axes(t_lat, t_lon)
    else:
        lat2, lon2 = grid_axes(t_lat, t_lon)
        rows = np.clip(((np.arange(t_lat) + 0.5) * n_lat / t_lat).astype(int), 0, n_lat - 1)
        cols = np.clip(((np.arange(t_lon) + 0.5) * n_lon / t_lon).astype(int), 0, n_lon - 1)
        m2 = mass[rows][:, cols]
    total = m2.sum()
    if total > 0:
        m2 = m2 / total
    dens = m2 / cell_areas(lat2, len(lon2))[:, None]
    return lat2, lon2, dens, m2


# --------------------------------------------------------------------------- conversion
def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


def from_prediction(
    pred: Any,
    kind: str = "image",
    truth: tuple[float, float] | None = None,
    model: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    levels: Sequence[float] = regions.DEFAULT_LEVELS,
) -> ViewPrediction:
    """Convert a core ``Prediction`` (torch tensors) into a :class:`ViewPrediction`."""
    samples = _array(pred.samples).reshape(-1, 2) if pred.samples is not None else np.zeros((0, 2))
    modes = tuple(
        ModeView(float(m.lat), float(m.lon), float(m.mass), float(getattr(m, "radius_km", 0.0)),
                 float(getattr(m, "logit", 0.0)))
        for m in pred.modes
    )
    modes = visible_modes(modes)
    lat = lon = density = mass = None
    credible: dict[float, float] = {}
    grid = getattr(pred, "grid", None)
    if grid is not None:
        lat, lon = _array(grid.lat), _array(grid.lon)
        density = _array(grid.density).astype(np.float32)
        mass = _array(grid.mass).astype(np.float32)
        given = {float(k): float(v) for k, v in (getattr(pred, "credible", None) or {}).items()}
        missing = [lv for lv in levels if lv not in given]
        credible = dict(given)
        if missing:
            credible.update(regions.credible_thresholds(density, mass, missing))
    refined = getattr(pred, "refined", None)
    return ViewPrediction(
        item=str(pred.item),
        kind=kind,
        point=(float(pred.point[0]), float(pred.point[1])),
        samples=samples,
        modes=modes,
        lat=lat,
        lon=lon,
        density=density,
        mass=mass,
        credible=credible,
        reducer=str(getattr(pred, "reducer", "")),
        refined=(float(refined[0]), float(refined[1])) if refined is not None else None,
        truth=(float(truth[0]), float(truth[1])) if truth is not None else None,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=dict(model or {}),
        settings=dict(settings or {}),
    )


def visible_modes(modes: Sequence[ModeView], min_mass: float = MIN_MODE_MASS) -> tuple[ModeView, ...]:
    """The modes worth showing: those holding at least ``min_mass`` of the probability (always the first)."""
    return tuple(m for i, m in enumerate(modes) if i == 0 or m.mass >= min_mass)


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def to_payload(vp: ViewPrediction, grid_shape: tuple[int, int] = HISTORY_GRID) -> dict[str, Any]:
    """A JSON-able dict with enough to redraw the prediction (grid downsampled to ``grid_shape``)."""
    payload: dict[str, Any] = {
        "format": PAYLOAD_FORMAT,
        "kind": vp.kind,
        "point": [round(vp.point[0], 6), round(vp.point[1], 6)],
        "reducer": vp.reducer,
        "place": vp.place,
        "samples": [[round(float(a), 5), round(float(b), 5)] for a, b in vp.samples],
        "modes": [
            {"lat": round(m.lat, 6), "lon": round(m.lon, 6), "mass": _sig(m.mass, 6),
             "radius_km": m.radius_km, "logit": _sig(m.logit, 6), "place": m.place}
            for m in vp.modes
        ],
        "refined": list(vp.refined) if vp.refined is not None else None,
        "truth": list(vp.truth) if vp.truth is not None else None,
        "truth_place": vp.truth_place,
        "error_km": vp.error_km,
        "created": vp.created,
        "model": _jsonable(vp.model),
        "settings": _jsonable(vp.settings),
        "grid": None,
    }
    if vp.has_grid:
        mass = vp.mass if vp.mass is not None else vp.density * cell_areas(vp.lat, len(vp.lon))[:, None]
        lat, lon, dens, _ = downsample(vp.lat, vp.lon, mass, grid_shape)
        floor = float(dens.max()) * 1e-6
        rows = [[_sig(x) if x > floor else 0.0 for x in row] for row in dens.tolist()]
        payload["grid"] = {"n_lat": len(lat), "n_lon": len(lon), "density": rows}
    return payload


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def from_payload(item: str, payload: Mapping[str, Any], levels: Sequence[float] = regions.DEFAULT_LEVELS) -> ViewPrediction:
    """Rebuild a :class:`ViewPrediction` from :func:`to_payload` output (e.g. a history row)."""
    if payload.get("format") != PAYLOAD_FORMAT:
        raise ValueError(f"not a LocDiff GUI prediction payload (format {payload.get('format')!r})")
    lat = lon = density = mass = None
    credible: dict[float, float] = {}
    grid = payload.get("grid")
    if grid:
        density = np.asarray(grid["density"], dtype=np.float64)
        lat, lon = grid_axes(*density.shape)
        mass = density * cell_areas(lat, len(lon))[:, None]
        total = mass.sum()
        if total > 0:
            mass /= total
            density = density / total
        density = density.astype(np.float32)
        mass = mass.astype(np.float32)
        credible = regions.credible_thresholds(density, mass, levels)
    samples = np.asarray(payload.get("samples") or np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2)
    modes = tuple(
        ModeView(float(m["lat"]), float(m["lon"]), float(m["mass"]), float(m.get("radius_km", 0.0)),
                 float(m.get("logit", 0.0)), str(m.get("place", "")))
        for m in payload.get("modes") or []
    )
    truth = payload.get("truth")
    refined = payload.get("refined")
    return ViewPrediction(
        item=item,
        kind=str(payload.get("kind", "image")),
        point=(float(payload["point"][0]), float(payload["point"][1])),
        samples=samples,
        modes=modes,
        lat=lat,
        lon=lon,
        density=density,
        mass=mass,
        credible=credible,
        reducer=str(payload.get("reducer", "")),
        refined=(float(refined[0]), float(refined[1])) if refined else None,
        truth=(float(truth[0]), float(truth[1])) if truth else None,
        place=str(payload.get("place", "")),
        truth_place=str(payload.get("truth_place", "")),
        created=str(payload.get("created", "")),
        model=dict(payload.get("model") or {}),
        settings=dict(payload.get("settings") or {}),
    )


def store_row(vp: ViewPrediction) -> dict[str, Any]:
    """A row for ``ExperimentStore.add_predictions`` (item, lat, lon, probability, payload)."""
    return {
        "item": vp.item,
        "lat": vp.point[0],
        "lon": vp.point[1],
        "probability": vp.modes[0].mass if vp.modes else None,
        "payload": to_payload(vp),
    }
