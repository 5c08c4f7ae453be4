"""Batch prediction's inputs (folder, CSV, JSONL, stdin) and outputs (CSV, JSONL, GeoJSON: parse, resume, torn lines)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from adapters.batch_inputs import open_inputs
from adapters.prediction_writers import format_for, open_sink
from locdiff.ports import BatchInputs, PredictionSink

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def row(i: int, text: str = "", error: str | None = None) -> dict:
    ok = error is None
    return {"index": i, "input": text or f"query {i}", "kind": "text", "lat": 10.0 + i if ok else None, "lon": -20.5 if ok else None,
            "place": "Somewhere, XX" if ok else None,
            "modes": [{"lat": 10.0 + i, "lon": -20.5, "probability": 0.7, "place": None}] if ok else [],
            "credible_km2": {"50": 1e5, "90": 4e5, "95": 6e5} if ok else {}, "truth": {"lat": 11.0, "lon": -20.0},
            "error_km": 12.5 if ok else None, "error": error, "samples": [[1.0, 2.0]]}


# --------------------------------------------------------------------------- inputs
def test_a_folder_is_scanned_recursively_with_exif_truth(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(PHOTOS / "beijing-forbidden-city.jpg", tmp_path / "a" / "b" / "x.JPG")
    shutil.copy(PHOTOS / "bay-area-2.jpg", tmp_path / "a" / "y.jpeg")
    (tmp_path / "notes.txt").write_text("not a photo")
    src = open_inputs(str(tmp_path))
    assert isinstance(src, BatchInputs) and src.count() == 2
    items = list(src)
    assert [Path(i.value).name for i in items] == ["x.JPG", "y.jpeg"] and [i.index for i in items] == [0, 1]
    assert all(i.kind == "image" and i.problem is None for i in items)
    assert items[0].truth == pytest.approx((39.91556, 116.39083), abs=1e-4)


def test_heic_photos_in_a_folder_are_inputs(tmp_path):
    pytest.importorskip("pillow_heif")
    import adapters.images  # noqa: F401  (registers the HEIF plugin)
    from PIL import Image

    Image.new("RGB", (32, 24), (10, 200, 30)).save(tmp_path / "IMG_0001.HEIC", format="HEIF")
    [item] = list(open_inputs(str(tmp_path)))
    assert item.kind == "image" and item.value.endswith("IMG_0001.HEIC") and item.truth is None


def test_a_csv_gives_texts_images_truth_and_bad_rows(tmp_path):
    shutil.copy(PHOTOS / "stockholm-panorama.jpg", tmp_path / "s.jpg")
    (tmp_path / "in.csv").write_text(
        "Text,image,lat,lon\n"
        "\"Paris, France\",,48.85,2.35\n"
        ",s.jpg,,\n"
        ",missing.jpg,,\n"
        "Lyon,,north,4.8\n"
        ",,,\n"
        "\"multi\nline\",,,\n", encoding="utf-8")
    src = open_inputs(str(tmp_path / "in.csv"))
    assert src.count() == 6
    items = list(src)
    assert items[0].kind == "text" and items[0].value == "Paris, France" and items[0].truth == (48.85, 2.35)
    assert items[1].kind == "image" and items[1].truth == pytest.approx((59.33255, 18.06494), abs=1e-4) and items[1].problem is None
    assert "file not found" in items[2].problem
    assert items[3].problem.startswith("lat: expected a number")
    assert "no 'image' or 'text'" in items[4].problem
    assert items[5].value == "multi\nline" and items[5].problem is None


def test_a_csv_image_outside_its_folder_needs_the_directive(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    shutil.copy(PHOTOS / "bay-area-1.jpg", tmp_path / "out.jpg")
    (inner / "in.csv").write_text("image\n../out.jpg\n")
    assert "outside the folder" in next(iter(open_inputs(str(inner / "in.csv")))).problem
    (inner / "in.csv").write_text("# locdiff: images-outside-folder\nimage\n../out.jpg\n")
    assert next(iter(open_inputs(str(inner / "in.csv")))).problem is None


def test_a_csv_without_an_input_column_is_refused_in_one_line(tmp_path):
    (tmp_path / "in.csv").write_text("name,lat\nParis,48\n")
    with pytest.raises(ValueError, match="no 'image' or 'text' column"):
        open_inputs(str(tmp_path / "in.csv"))
    with pytest.raises(ValueError, match="expected a folder of photos"):
        open_inputs(str(tmp_path / "in.txt"))


def test_jsonl_rows_and_bad_lines(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "Tokyo", "lat": 35.7, "lon": 139.7}\n\n{not json\n[1, 2]\n{"text": "Oslo"}\n')
    items = list(open_inputs(str(tmp_path / "in.jsonl")))
    assert [i.index for i in items] == [0, 1, 2, 3]
    assert items[0].truth == (35.7, 139.7) and "not JSON" in items[1].problem and "JSON object" in items[2].problem
    assert items[3].value == "Oslo" and items[3].truth is None


def test_stdin_lines_are_texts_or_existing_photo_paths(tmp_path):
    shutil.copy(PHOTOS / "bay-area-3.jpg", tmp_path / "c.jpg")
    stream = io.StringIO(f"Kyoto, Japan\n\n{tmp_path / 'c.jpg'}\n{tmp_path / 'gone.jpg'}\n")
    items = list(open_inputs("-", stream))
    assert [(i.index, i.kind) for i in items] == [(0, "text"), (1, "image"), (2, "text")]
    assert items[1].truth == pytest.approx((37.77633, -122.41967), abs=1e-4)


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".geojson"])
def test_each_format_parses_with_one_row_per_input(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    sink = open_sink(out, top=2, samples=True)
    assert isinstance(sink, PredictionSink)
    sink.write([row(0, 'a "quoted", text\nwith a break'), row(1, error="cannot read image file: truncated")])
    sink.write([row(2)])
    sink.close()
    text = out.read_text(encoding="utf-8")
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["index"] for r in rows] == ["0", "1", "2"] and rows[0]["input"] == 'a "quoted", text with a break'
        assert rows[0]["mode1_probability"] == "0.7" and rows[0]["credible90_km2"] == "400000.0" and rows[0]["true_lat"] == "11.0"
        assert rows[1]["error"].startswith("cannot read") and rows[1]["lat"] == "" and json.loads(rows[2]["samples"]) == [[1.0, 2.0]]
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert [r["index"] for r in rows] == [0, 1, 2] and rows[0]["input"].endswith("with a break") and rows[1]["error"]
    else:
        doc = json.loads(text)
        assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
        f0, f1 = doc["features"][:2]
        assert f0["type"] == "Feature" and f0["geometry"] == {"type": "Point", "coordinates": [-20.5, 10.0]}
        assert f1["geometry"] is None and f1["properties"]["error"].startswith("cannot read")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".geojson"])
def test_reopening_resumes_after_a_torn_line_without_duplicates(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    sink = open_sink(out)
    sink.write([row(0), row(1)])
    sink._file.write(sink._format(row(2), 2)[:25])  # a kill in the middle of the next write
    sink._file.flush()
    resumed = open_sink(out)
    assert dict(resumed.done()) == {0: "query 0", 1: "query 1"}
    resumed.write([row(2), row(3)])
    resumed.close()
    again = open_sink(out)  # a finished file opens too (GeoJSON: its closing line is taken off, then put back)
    assert sorted(again.done()) == [0, 1, 2, 3]
    again.close()
    text = out.read_text()
    if suffix == ".geojson":
        assert [f["properties"]["index"] for f in json.loads(text)["features"]] == [0, 1, 2, 3]
    elif suffix == ".jsonl":
        assert [json.loads(line)["index"] for line in text.splitlines()] == [0, 1, 2, 3]
    else:
        assert [r["index"] for r in csv.DictReader(io.StringIO(text))] == ["0", "1", "2", "3"]


def test_a_file_that_is_not_this_batchs_output_is_never_overwritten(tmp_path):
    other = tmp_path / "notes.csv"
    other.write_text("name,comment\nx,y\n")
    with pytest.raises(ValueError, match="not written by this batch"):
        open_sink(other)
    assert other.read_text() == "name,comment\nx,y\n"
    (tmp_path / "x.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match="not this batch's output"):
        open_sink(tmp_path / "x.jsonl")
    assert format_for(Path("a.GeoJSON")) == "geojson" and format_for(Path("a.txt"), "csv") == "csv"
    with pytest.raises(ValueError, match="suffix"):
        format_for(Path("a.txt"))


def test_python_values_are_texts_or_photo_paths(tmp_path):
    from adapters.batch_inputs import inputs_from_values

    shutil.copy(PHOTOS / "bay-area-1.jpg", tmp_path / "p.jpg")
    items = inputs_from_values(["Kyoto", str(tmp_path / "p.jpg"), tmp_path / "missing.png", str(tmp_path / "gone.jpg")])
    assert [(i.index, i.kind) for i in items] == [(0, "text"), (1, "image"), (2, "image"), (3, "text")]
    with pytest.raises(TypeError, match="input 0"):
        inputs_from_values([42])
