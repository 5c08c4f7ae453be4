from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from locdiff.core.splits import hash_unit, spatial_holdout, split_by_hash


def _assignment(ids: list[str], splits: dict[str, torch.Tensor]) -> dict[str, str]:
    return {ids[i]: name for name, idx in splits.items() for i in idx.tolist()}


# --------------------------------------------------------------------------- split_by_hash
def test_fractions_close_to_requested() -> None:
    ids = [f"place-{i}" for i in range(20_000)]
    s = split_by_hash(ids, val=0.1, test=0.2)
    n = len(ids)
    assert abs(len(s["val"]) / n - 0.1) < 0.01
    assert abs(len(s["test"]) / n - 0.2) < 0.01
    assert len(s["train"]) + len(s["val"]) + len(s["test"]) == n


def test_partition_is_disjoint_sorted_int64() -> None:
    ids = [str(i) for i in range(1000)]
    s = split_by_hash(ids)
    allidx = torch.cat([s["train"], s["val"], s["test"]])
    assert sorted(allidx.tolist()) == list(range(1000))
    for t in s.values():
        assert t.dtype == torch.long
        assert torch.equal(t, torch.sort(t).values)


def test_stable_under_shuffling_and_subsetting() -> None:
    ids = [f"g{i}" for i in range(3000)]
    base = _assignment(ids, split_by_hash(ids))
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    subset = shuffled[:700]
    assert _assignment(shuffled, split_by_hash(shuffled)) == base
    sub = _assignment(subset, split_by_hash(subset))
    assert all(base[k] == v for k, v in sub.items())


def test_salt_changes_assignment() -> None:
    ids = [str(i) for i in range(2000)]
    a = _assignment(ids, split_by_hash(ids, salt="a"))
    b = _assignment(ids, split_by_hash(ids, salt="b"))
    assert sum(a[k] != b[k] for k in ids) > 100


def test_growing_val_does_not_touch_test() -> None:
    ids = [str(i) for i in range(2000)]
    small = split_by_hash(ids, val=0.05, test=0.1)
    big = split_by_hash(ids, val=0.3, test=0.1)
    assert torch.equal(small["test"], big["test"])
    assert set(small["val"].tolist()) <= set(big["val"].tolist())


def test_zero_fractions_and_empty_ids() -> None:
    s = split_by_hash(["a", "b", "c"], val=0.0, test=0.0)
    assert s["train"].tolist() == [0, 1, 2] and len(s["val"]) == 0 and len(s["test"]) == 0
    e = split_by_hash([])
    assert all(len(t) == 0 for t in e.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val": -0.1}, "val must be a fraction"),
        ({"test": 1.0}, "test must be a fraction"),
        ({"val": 0.6, "test": 0.5}, "val \\+ test must be below 1"),
        ({"val": float("nan")}, "val must be a fraction"),
        ({"val": "0.1"}, "val must be a number"),
    ],
)
def test_bad_fractions(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_by_hash(["a"], **kwargs)


def test_duplicate_and_non_string_ids() -> None:
    with pytest.raises(ValueError, match="duplicate id 'x' at positions 0 and 2"):
        split_by_hash(["x", "y", "x"])
    with pytest.raises(ValueError, match=r"ids\[1\] is int"):
        split_by_hash(["x", 5])  # type: ignore[list-item]


@settings(max_examples=50, deadline=None)
@given(
    ids=st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=60),
    val=st.floats(0, 0.45),
    test=st.floats(0, 0.45),
    seed=st.integers(0, 10_000),
)
def test_property_order_independent_partition(ids: list[str], val: float, test: float, seed: int) -> None:
    s = split_by_hash(ids, val=val, test=test)
    got = _assignment(ids, s)
    assert len(got) == len(ids)
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    assert _assignment(shuffled, split_by_hash(shuffled, val=val, test=test)) == got
    for sid, name in got.items():
        u = hash_unit(sid)
        assert name == ("test" if u < test else "val" if u < test + val else "train")


# --------------------------------------------------------------------------- spatial_holdout
LATLON = torch.tensor(
    [[48.85, 2.35], [35.68, 139.69], [-33.87, 151.21], [64.0, -21.9], [-17.7, 178.0], [-14.3, -170.7]],
    dtype=torch.float64,
)
GROUPS = ("FR", "JP", "AU", "IS", "FJ", "AS")


def test_groups_out() -> None:
    m = spatial_holdout(LATLON, GROUPS, groups_out=["JP", "AU"])
    assert m.dtype == torch.bool
    assert m.tolist() == [False, True, True, False, False, False]


def test_lat_band_inclusive() -> None:
    m = spatial_holdout(LATLON, lat_band=(-33.87, 0.0))
    assert m.tolist() == [False, False, True, False, True, True]


def test_lon_band_plain_and_wrapping() -> None:
    assert spatial_holdout(LATLON, lon_band=(0, 10)).tolist() == [True, False, False, False, False, False]
    # crosses the antimeridian: 170E .. 170W
    assert spatial_holdout(LATLON, lon_band=(170, -170)).tolist() == [False, False, False, False, True, True]
    # 0..360 convention is accepted (190 == -170)
    assert spatial_holdout(LATLON, lon_band=(170, 190)).tolist() == [False, False, False, False, True, True]


def test_lon_band_samples_in_0_360() -> None:
    ll = torch.tensor([[0.0, 350.0], [0.0, 10.0]], dtype=torch.float64)
    assert spatial_holdout(ll, lon_band=(-20, -5)).tolist() == [True, False]


def test_union_of_criteria() -> None:
    m = spatial_holdout(LATLON, GROUPS, groups_out=["FR"], lat_band=(60, 90))
    assert m.tolist() == [True, False, False, True, False, False]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((), {}, "at least one of"),
        ((), {"groups_out": ["FR"]}, "no groups"),
        ((GROUPS[:3],), {"groups_out": ["FR"]}, "groups has 3 entries but latlon has 6"),
        ((GROUPS,), {"groups_out": ["FRA"]}, "absent from the data: \\['FRA'\\]"),
        ((), {"lat_band": (10, -10)}, "lo <= hi"),
        ((), {"lat_band": (-100, 0)}, "lat_band bounds"),
        ((), {"lat_band": (0,)}, "pair"),
        ((), {"lon_band": (10, 370)}, "lon_band bounds"),
        ((), {"lon_band": (0, 360)}, "zero width"),
    ],
)
def test_holdout_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spatial_holdout(LATLON, *args, **kwargs)


def test_holdout_bad_latlon() -> None:
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        spatial_holdout(torch.zeros(3), lat_band=(0, 1))
    with pytest.raises(ValueError, match="NaN"):
        spatial_holdout(torch.tensor([[float("nan"), 0.0]]), lat_band=(0, 1))
