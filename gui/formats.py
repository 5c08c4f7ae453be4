"""What the exports write, from :class:`gui.viewdata.ViewPrediction` values (no Qt): GeoJSON (points, modes,
samples, true location and the credible regions as polygons), CSV, and the heatmap as a PNG."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gui import regions
from gui.viewdata import ViewPrediction


GEOJSON_LEVELS = (0.5, 0.9)


def credible_region_geometry(vp: ViewPrediction, level: float) -> dict[str, Any] | None:
    """The ``level`` credible region (the density grid's cells at or above its threshold) as a GeoJSON
    Polygon / MultiPolygon (RFC 7946: [lon, lat], counterclockwise exteriors, split at the date line)."""
    if not vp.has_grid or level not in vp.credible:
        return None
    polys = regions.region_polygons(np.asarray(vp.density) >= vp.credible[level])
    if not polys:
        return None
    coords = [[[list(p) for p in ring] for ring in poly] for poly in polys]
    if len(coords) == 1:
        return {"type": "Polygon", "coordinates": coords[0]}
    return {"type": "MultiPolygon", "coordinates": coords}


def to_geojson(preds: Sequence[ViewPrediction]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection: per prediction its point, modes, samples, true location and its
    50 % / 90 % credible regions as polygons.

    Coordinates are [lon, lat] (RFC 7946). ``properties.role`` tells the features apart.
    """
    features: list[dict[str, Any]] = []
    for i, vp in enumerate(preds):
        base = {"item": vp.item, "prediction": i}
        for level in GEOJSON_LEVELS:
            geom = credible_region_geometry(vp, level)
            if geom is not None:
                features.append({"type": "Feature", "geometry": geom,
                                 "properties": dict(base, role="credible_region", level=level,
                                                    calibration=str(vp.model.get("calibration", "")))})
        base = {"item": vp.item, "prediction": i}
        props = dict(base, role="point", place=vp.place, reducer=vp.reducer,
                     probability=vp.modes[0].mass if vp.modes else None)
        if vp.truth is not None:
            props.update(true_lat=vp.truth[0], true_lon=vp.truth[1], error_km=vp.error_km)
        features.append(_feature("Point", [vp.point[1], vp.point[0]], props))
        for rank, m in enumerate(vp.modes, start=1):
            features.append(_feature("Point", [m.lon, m.lat],
                                     dict(base, role="mode", rank=rank, mass=m.mass,
                                          radius_km=m.radius_km, place=m.place)))
        if len(vp.samples):
            features.append(_feature("MultiPoint", [[float(b), float(a)] for a, b in vp.samples],
                                     dict(base, role="samples", count=len(vp.samples))))
        if vp.truth is not None:
            features.append(_feature("Point", [vp.truth[1], vp.truth[0]],
                                     dict(base, role="truth", place=vp.truth_place)))
        if vp.refined is not None:
            features.append(_feature("Point", [vp.refined[1], vp.refined[0]], dict(base, role="refined")))
    return {"type": "FeatureCollection", "features": features}


def _feature(geom: str, coords: Any, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": geom, "coordinates": coords}, "properties": props}


CSV_MODES = 5


def csv_header() -> list[str]:
    cols = ["item", "kind", "lat", "lon", "place", "probability", "reducer", "true_lat", "true_lon", "error_km"]
    for k in range(1, CSV_MODES + 1):
        cols += [f"mode{k}_lat", f"mode{k}_lon", f"mode{k}_mass", f"mode{k}_place"]
    return cols


def write_csv(preds: Sequence[ViewPrediction], path: Path) -> None:
    """One row per prediction: the point, the true location and error, and the top modes."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(csv_header())
        for vp in preds:
            row: list[Any] = [vp.item, vp.kind, f"{vp.point[0]:.6f}", f"{vp.point[1]:.6f}", vp.place,
                              f"{vp.modes[0].mass:.6f}" if vp.modes else "", vp.reducer]
            if vp.truth is not None:
                row += [f"{vp.truth[0]:.6f}", f"{vp.truth[1]:.6f}", f"{vp.error_km:.3f}"]
            else:
                row += ["", "", ""]
            for k in range(CSV_MODES):
                if k < len(vp.modes):
                    m = vp.modes[k]
                    row += [f"{m.lat:.6f}", f"{m.lon:.6f}", f"{m.mass:.6f}", m.place]
                else:
                    row += ["", "", "", ""]
            w.writerow(row)


def write_geojson(preds: Sequence[ViewPrediction], path: Path) -> None:
    Path(path).write_text(json.dumps(to_geojson(preds), indent=1), encoding="utf-8")


def write_heatmap_png(vp: ViewPrediction, path: Path, width: int = 2048, scale: str = "linear") -> None:
    """The heatmap over the Blue Marble, equirectangular (``width`` x ``width/2``), as a PNG."""
    from PIL import Image

    from gui import assets, heat

    base = assets.blue_marble(width)
    if vp.has_grid:
        img = heat.composite(base, heat.heat_rgba(vp.density, scale))
    else:
        img = np.array(base)
    Image.fromarray(img).save(path, format="PNG")
