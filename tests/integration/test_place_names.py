"""adapters.place_names: the packaged name list, its documented choice, and the truth places of each name."""

from __future__ import annotations

import csv

import pytest
import torch

from adapters.place_names import NAMES_FILE, PlaceNameBenchmark, choose_names, fold, read_names
from locdiff.ports import NameBenchmarkSource


def _packaged_rows() -> list[dict[str, str]]:
    lines = [line for line in NAMES_FILE.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_fold_drops_accents_and_case_only():
    assert fold("Córdoba") == fold("CORDOBA") == "cordoba"
    assert fold("São Paulo") == "sao paulo"
    assert fold("Saint-Denis") != fold("Saint Denis")


def test_packaged_list_is_documented_and_well_formed():
    text = NAMES_FILE.read_text(encoding="utf-8")
    assert text.startswith("# LocDiff name-only benchmark") and "Regenerate:" in text
    rows = _packaged_rows()
    kinds = [r["kind"] for r in rows]
    assert kinds.count("ambiguous") == 200 and kinds.count("control") == 30
    assert len({fold(r["query"]) for r in rows}) == len(rows)  # no name twice
    assert all(int(r["places"]) >= 2 for r in rows if r["kind"] == "ambiguous")
    assert all(int(r["places"]) == 1 for r in rows if r["kind"] == "control")
    assert {"Springfield", "Córdoba", "Victoria"} <= {r["query"] for r in rows}
    assert read_names(NAMES_FILE) == [(r["query"], r["kind"]) for r in rows]


def test_bad_name_lists_fail_with_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_names(tmp_path / "missing.csv")
    bad = tmp_path / "names.csv"
    bad.write_text("# comment\nname,type\nParis,control\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header 'query,kind"):
        read_names(bad)
    bad.write_text("query,kind\nParis,famous\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"names.csv:2: field 'kind'"):
        read_names(bad)
    bad.write_text('query,kind\n"Washington, D.C.",control\n', encoding="utf-8")
    assert read_names(bad) == [("Washington, D.C.", "control")]


@pytest.mark.slow
def test_truth_places_match_the_list_and_the_rule_reproduces_it(tmp_path):
    source = PlaceNameBenchmark()
    assert isinstance(source, NameBenchmarkSource)
    queries = source.load()
    rows = _packaged_rows()
    assert [q.query for q in queries] == [r["query"] for r in rows]
    for q, r in zip(queries, rows):
        assert q.latlon.shape == (int(r["places"]), 2) and q.population.shape == (int(r["places"]),)
        assert bool((q.population > 0).all()) and len(q.labels) == int(r["places"])
        assert all(fold(label.split(",")[0]) == fold(q.query) for label in q.labels)
    springfield = next(q for q in queries if q.query == "Springfield")
    assert sum("United States" in label for label in springfield.labels) >= 3
    assert bool((springfield.latlon[:, 1] < 0).all())  # all in the Americas (US / ...)
    # the documented rule regenerates the committed list exactly
    assert [(q, k, str(n)) for q, k, n in choose_names()] == [(r["query"], r["kind"], r["places"]) for r in rows]
    unknown = tmp_path / "names.csv"
    unknown.write_text("query,kind\nNowhere-on-Earth,control\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no place of the truth universe is named 'Nowhere-on-Earth'"):
        PlaceNameBenchmark(unknown).load()
    assert torch.isfinite(springfield.latlon).all()
