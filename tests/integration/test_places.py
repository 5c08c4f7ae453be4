from __future__ import annotations

import pytest
import torch

from adapters.places import DEFAULT_LIMIT, PlacesSource, admin1_names, render_place
from locdiff.ports import DatasetSource, GeoSamples


@pytest.fixture(scope="module")
def top2000() -> GeoSamples:
    return PlacesSource(limit=2000).load()


def test_is_a_dataset_source() -> None:
    src = PlacesSource()
    assert isinstance(src, DatasetSource)
    assert src.limit == DEFAULT_LIMIT and 12_000 <= DEFAULT_LIMIT <= 20_000
    assert src.name == "places-top16000"


def test_shape_types_and_order(top2000: GeoSamples) -> None:
    s = top2000
    assert len(s) == 2000 and s.kind == "text"
    assert s.latlon.shape == (2000, 2) and s.latlon.dtype == torch.float64
    assert len(set(s.ids)) == 2000 and all(i.isdigit() for i in s.ids)
    assert s.groups is not None and len(s.groups) == 2000
    lat, lon = s.latlon[:, 0], s.latlon[:, 1]
    assert bool((lat.abs() <= 90).all() and (lon.abs() <= 180).all())
    assert len(set(s.groups)) > 100  # world-wide


def test_known_cities(top2000: GeoSamples) -> None:
    s = top2000
    by_id = {sid: i for i, sid in enumerate(s.ids)}
    paris = by_id["2988507"]  # GeoNames id of Paris
    assert s.items[paris] == "Paris, Ile-de-France, France"
    assert s.groups[paris] == "FR"
    assert s.latlon[paris].tolist() == pytest.approx([48.853, 2.349], abs=0.01)
    la = by_id["5368361"]
    assert s.items[la] == "Los Angeles, California, United States"
    # admin1 equal to the name is dropped rather than repeated
    assert s.items[by_id["1850147"]] == "Tokyo, Japan"


def test_deterministic_and_prefix_consistent(top2000: GeoSamples) -> None:
    small = PlacesSource(limit=300).load()
    assert small.ids == top2000.ids[:300]
    assert small.items == top2000.items[:300]
    assert torch.equal(small.latlon, top2000.latlon[:300])


def test_min_population_and_template() -> None:
    s = PlacesSource(min_population=5_000_000, limit=None, template="{name} ({country_code})").load()
    assert 20 < len(s) < 200
    assert "Tokyo (JP)" in s.items
    assert s.name == "places-pop5000000"


def test_render_place_handles_missing_fields() -> None:
    t = "{name}, {admin1}, {country}"
    assert render_place(t, name="Monaco", admin1="", country="Monaco", country_code="MC") == "Monaco, Monaco"
    assert render_place("{admin1}, {name}", name="X", admin1="", country="", country_code="") == "X"
    assert render_place(t, name="A", admin1="B", country="C", country_code="") == "A, B, C"


def test_admin1_names_cover_most_places(top2000: GeoSamples) -> None:
    names = admin1_names()
    assert names[("FR", "11")] == "Ile-de-France" and names[("US", "CA")] == "California"
    three_parts = sum(item.count(",") == 2 for item in top2000.items)
    assert three_parts > 0.8 * len(top2000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"template": "{name}, {state}"}, "unknown: \\['state'\\]"),
        ({"template": "no fields"}, "at least one"),
        ({"template": "{name"}, "bad place template"),
        ({"limit": 0}, "limit must be a positive integer"),
        ({"min_population": -1}, "min_population"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PlacesSource(**kwargs)


def test_impossible_population() -> None:
    with pytest.raises(ValueError, match="no GeoNames place has population >= 10000000000"):
        PlacesSource(min_population=10**10).load()
