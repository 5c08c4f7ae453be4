"""Write located samples as the generic dataset CSV (``id,lat,lon,image,group``) that ``train --data`` reads."""

from __future__ import annotations

import csv
from pathlib import Path

from adapters.atomic import atomic_open
from locdiff.ports import GeoSamples


def write_generic_csv(samples: GeoSamples, out: Path) -> None:
    """One row per sample, coordinates to 7 decimals (~1 cm); written atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "lat", "lon", "image", "group"])
        groups = samples.groups or ("",) * len(samples)
        for sid, (lat, lon), item, group in zip(samples.ids, samples.latlon.tolist(), samples.items, groups):
            w.writerow([sid, f"{lat:.7f}", f"{lon:.7f}", item, group])
