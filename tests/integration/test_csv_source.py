from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapters.csv_source import CsvSource, DatasetError
from locdiff.ports import DatasetSource


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _error(path: Path) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        CsvSource(path).load()
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)
    return info.value


def test_text_csv_with_ids_and_groups(tmp_path: Path) -> None:
    p = _write(tmp_path, "id,lat,lon,text,group\na,48.85,2.35,Paris,FR\nb,-33.9,151.2,Sydney,AU\n")
    src = CsvSource(p)
    assert isinstance(src, DatasetSource)
    s = src.load()
    assert s.name == "data" and s.kind == "text"
    assert s.ids == ("a", "b") and s.items == ("Paris", "Sydney") and s.groups == ("FR", "AU")
    assert s.latlon.dtype == torch.float64
    assert torch.allclose(s.latlon, torch.tensor([[48.85, 2.35], [-33.9, 151.2]], dtype=torch.float64))


def test_image_csv_relative_paths_default_ids_and_lon_wrap(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"y")
    p = _write(tmp_path, "LAT , Lon,image,extra\n10,190,img/a.jpg,z\n\n-5,359.5,b.jpg,z\n")
    s = CsvSource(p).load()
    assert s.kind == "image" and s.groups is None
    assert s.ids == ("1", "2")
    assert s.items == (str(tmp_path / "img" / "a.jpg"), str(tmp_path / "b.jpg"))
    assert s.latlon.tolist() == [[10.0, -170.0], [-5.0, -0.5]]


def test_bom_and_boundaries(tmp_path: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_bytes("\ufefflat,lon,text\n90,-180,north pole\n-90,359.999,south\n".encode())
    s = CsvSource(p).load()
    assert s.latlon[0].tolist() == [90.0, -180.0]
    assert s.latlon[1, 1].item() == pytest.approx(-0.001)


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("lat,text", "missing column(s) ['lon']"),
        ("lat,lon", "found neither"),
        ("lat,lon,image,text", "found ['image', 'text']"),
        ("lat,lon,text,lat", "column 'lat' appears more than once"),
    ],
)
def test_bad_headers(tmp_path: Path, header: str, needle: str) -> None:
    err = _error(_write(tmp_path, header + "\n1,2,3,4\n"))
    assert f"{tmp_path / 'data.csv'}:1:" in str(err)
    assert needle in str(err)


def test_empty_file_and_no_rows(tmp_path: Path) -> None:
    assert "empty file" in str(_error(_write(tmp_path, "")))
    assert "no data rows" in str(_error(_write(tmp_path, "lat,lon,text\n", "h.csv")))


def test_missing_file(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.csv")
    assert "file not found" in str(err)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        (",2,x", "lat: empty"),
        ("abc,2,x", "lat: 'abc' is not a number"),
        ("91,2,x", "lat: 91 is outside [-90, 90]"),
        ("nan,2,x", "lat: 'nan' is not finite"),
        ("1,inf,x", "lon: 'inf' is not finite"),
        ("1,360,x", "lon: 360 is outside [-180, 360)"),
        ("1,-180.5,x", "lon: -180.5 is outside"),
        ("1,2,  ", "text: empty"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, row: str, needle: str) -> None:
    p = _write(tmp_path, f"lat,lon,text\n1,1,fine\n{row}\n")
    err = _error(p)
    assert f"{p}:3: {needle}" in str(err), str(err)
    assert len(err.problems) == 1


def test_all_row_problems_collected(tmp_path: Path) -> None:
    rows = "\n".join(f"{100 + i},0,t{i}" for i in range(15))
    err = _error(_write(tmp_path, "lat,lon,text\n" + rows + "\n"))
    assert len(err.problems) == 15
    assert "15 problems" in str(err) and "... and 5 more" in str(err)


def test_duplicate_and_empty_ids(tmp_path: Path) -> None:
    p = _write(tmp_path, "id,lat,lon,text\nx,1,1,a\ny,1,1,b\nx,2,2,c\n,3,3,d\n")
    msg = str(_error(p))
    assert f"{p}:4: id: 'x' duplicates the id on line 2" in msg
    assert f"{p}:5: id: empty" in msg


def test_missing_images_all_collected(tmp_path: Path) -> None:
    (tmp_path / "ok.jpg").write_bytes(b"x")
    rows = ["1,1,ok.jpg"] + [f"1,1,missing{i}.jpg" for i in range(12)]
    p = _write(tmp_path, "lat,lon,image\n" + "\n".join(rows) + "\n")
    err = _error(p)
    assert len(err.problems) == 12
    assert "12 missing image file(s)" in str(err)
    assert f"{p}:3: image: file not found: {tmp_path / 'missing0.jpg'}" in str(err)
    assert "... and 2 more" in str(err)


def test_multiline_quoted_text_line_numbers(tmp_path: Path) -> None:
    p = _write(tmp_path, 'lat,lon,text\n1,1,"two\nlines"\n95,1,bad\n')
    err = _error(p)
    assert f"{p}:4: lat: 95" in str(err)
