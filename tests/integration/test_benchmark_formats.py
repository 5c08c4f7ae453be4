"""Benchmark readers on tiny files written in each dataset's published layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapters.benchmark_formats import FORMATS, BenchmarkSource
from adapters.csv_source import DatasetError
from locdiff.ports import DatasetSource

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16  # the readers only check that files exist


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


PLACES365 = "IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban\n"


def test_mp16_places365_layout(tmp_path):
    csv = write(tmp_path / "mp16_places365.csv", PLACES365
                + "e2/3a/3398978441.jpg,12345678@N00,48.8584,2.2945,2,9,110,0.1,0.2,0.7\n"
                + "0b/11/8458187869.jpg,87654321@N01,-33.8568,151.2153,1,4,55,0.0,0.9,0.1\n")
    touch(tmp_path / "e2/3a/3398978441.jpg")
    touch(tmp_path / "0b/11/8458187869.jpg")
    src = BenchmarkSource("mp16", csv)
    assert isinstance(src, DatasetSource)
    s = src.load()
    assert s.kind == "image" and s.name == "mp16-mp16_places365"
    assert s.ids == ("e2/3a/3398978441.jpg", "0b/11/8458187869.jpg")
    torch.testing.assert_close(s.latlon, torch.tensor([[48.8584, 2.2945], [-33.8568, 151.2153]], dtype=torch.float64))
    assert s.items[0] == str((tmp_path / "e2/3a/3398978441.jpg").absolute())
    assert s.groups is None


def test_mp16_geoclip_layout(tmp_path):
    csv = write(tmp_path / "MP16_Pro.csv", "IMG_FILE,LAT,LON\nimg/1.jpg,10.5,370.0\n")
    with pytest.raises(DatasetError, match=r"MP16_Pro.csv:2: LON: 370 is outside \[-180, 360\)"):
        BenchmarkSource("mp16", csv).load()
    write(csv, "IMG_FILE,LAT,LON\nimg/1.jpg,10.5,350.0\n")
    touch(tmp_path / "img" / "1.jpg")
    s = BenchmarkSource("mp16", csv).load()
    torch.testing.assert_close(s.latlon, torch.tensor([[10.5, -10.0]], dtype=torch.float64))  # wrapped


def test_im2gps3k_uses_its_image_folder(tmp_path):
    csv = write(tmp_path / "im2gps3k_places365.csv", PLACES365
                + "1_3017843617_6b2e3ff5ac_o.jpg,29863434@N00,40.7128,-74.006,2,9,110,0.1,0.2,0.7\n")
    touch(tmp_path / "im2gps3ktest" / "1_3017843617_6b2e3ff5ac_o.jpg")
    s = BenchmarkSource("im2gps3k", csv).load()
    assert s.items == (str((tmp_path / "im2gps3ktest" / "1_3017843617_6b2e3ff5ac_o.jpg").absolute()),)
    # an explicit image root wins
    other = tmp_path / "elsewhere"
    touch(other / "1_3017843617_6b2e3ff5ac_o.jpg")
    s = BenchmarkSource("im2gps3k", csv, other).load()
    assert s.items[0].startswith(str(other.absolute()))


@pytest.mark.parametrize("kind", ["yfcc4k", "yfcc26k"])
def test_yfcc_variants(tmp_path, kind):
    folder = "yfcc4k" if kind == "yfcc4k" else "yfcc25600"
    a = write(tmp_path / "a.csv", "IMG_ID,LAT,LON,S3_Label\n9573219.jpg,51.5,-0.12,2\n")
    b = write(tmp_path / "b.csv", "photo_id,latitude,longitude,accuracy\n9573219,51.5,-0.12,16\n")
    touch(tmp_path / folder / "9573219.jpg")
    for csv in (a, b):
        s = BenchmarkSource(kind, csv).load()
        assert s.items == (str((tmp_path / folder / "9573219.jpg").absolute()),)
        torch.testing.assert_close(s.latlon, torch.tensor([[51.5, -0.12]], dtype=torch.float64))


def test_osv5m_layout_with_shard_folders(tmp_path):
    header = ("id,latitude,longitude,thumb_original_url,country,sequence,captured_at,lon_bin,lat_bin,cell,region,"
              "sub-region,city,land_cover,road_index,drive_side,climate,soil,dist_sea\n")
    csv = write(tmp_path / "test.csv", header
                + '3859149887465501,-43.804769384023,-176.61409250805,,NZ,x,2019,0,8,"(0, 8)",Chatham Islands,,Waitangi,4,4.6,1,15,3,0.006\n'
                + '512345678901234,48.137,11.575,,DE,y,2020,1,9,"(1, 9)",Bavaria,,Munich,4,4.6,1,15,3,0.3\n')
    touch(tmp_path / "images" / "test" / "3859149887465501.jpg")
    touch(tmp_path / "images" / "test" / "01" / "512345678901234.jpg")  # unpacked shard folder
    s = BenchmarkSource("osv5m", csv).load()
    assert s.ids == ("3859149887465501", "512345678901234")
    assert s.groups == ("NZ", "DE")
    assert s.items[1] == str((tmp_path / "images" / "test" / "01" / "512345678901234.jpg").absolute())
    assert s.name == "osv5m-test"


def test_bad_rows_are_reported_with_file_line_and_field(tmp_path):
    csv = write(tmp_path / "im2gps3k_places365.csv", PLACES365
                + "a.jpg,u,91.0,10,1,1,1,0,0,0\n"       # line 2: latitude out of range
                + "b.jpg,u,10,east,1,1,1,0,0,0\n"       # line 3: longitude not a number
                + ",u,10,10,1,1,1,0,0,0\n"              # line 4: empty id
                + "c.jpg,u,10,10,1,1,1,0,0,0\n"
                + "c.jpg,u,11,11,1,1,1,0,0,0\n")        # line 6: duplicate id
    touch(tmp_path / "c.jpg")
    with pytest.raises(DatasetError) as err:
        BenchmarkSource("im2gps3k", csv).load()
    problems = err.value.problems
    assert any(p.endswith("im2gps3k_places365.csv:2: LAT: 91 is outside [-90, 90]") for p in problems)
    assert any("im2gps3k_places365.csv:3: LON: 'east' is not a number" in p for p in problems)
    assert any("im2gps3k_places365.csv:4: IMG_ID: empty" in p for p in problems)
    assert any("im2gps3k_places365.csv:6: IMG_ID: 'c.jpg' duplicates the id on line 5" in p for p in problems)


def test_bad_header_names_the_expected_columns(tmp_path):
    csv = write(tmp_path / "x.csv", "name,lat,lng\na,1,2\n")
    with pytest.raises(DatasetError, match=r"no id column; a osv5m file has one of \['id'\]"):
        BenchmarkSource("osv5m", csv).load()
    with pytest.raises(DatasetError, match="no lon column"):
        BenchmarkSource("yfcc4k", write(tmp_path / "y.csv", "photo_id,latitude,lng\n1,2,3\n")).load()
    with pytest.raises(DatasetError, match="empty file"):
        BenchmarkSource("mp16", write(tmp_path / "e.csv", "")).load()
    with pytest.raises(DatasetError, match="file not found"):
        BenchmarkSource("mp16", tmp_path / "nope.csv").load()


def test_missing_images_error_or_skip(tmp_path):
    csv = write(tmp_path / "mp16.csv", "IMG_ID,AUTHOR,LAT,LON\nhave.jpg,u,1,2\ngone.jpg,u,3,4\n")
    touch(tmp_path / "have.jpg")
    with pytest.raises(DatasetError, match=r"1 missing image file\(s\)") as err:
        BenchmarkSource("mp16", csv).load()
    assert "mp16.csv:3: IMG_ID: image 'gone.jpg' not found" in err.value.problems[0]
    src = BenchmarkSource("mp16", csv, missing="skip")
    s = src.load()
    assert s.ids == ("have.jpg",) and len(src.skipped) == 1


def test_every_format_is_known():
    assert set(FORMATS) == {"mp16", "im2gps3k", "yfcc4k", "yfcc26k", "osv5m"}
    with pytest.raises(ValueError):
        BenchmarkSource("imagenet", Path("x.csv"))


def test_convert_command_writes_the_generic_csv(tmp_path, capsys):
    import argparse

    from adapters.csv_source import CsvSource
    from locdiff.cli import studies as cli_studies

    csv = write(tmp_path / "test.csv", "id,latitude,longitude,country\n42,48.1,11.5,DE\n43,-33.9,151.2,AU\n")
    touch(tmp_path / "images" / "test" / "42.jpg")
    touch(tmp_path / "images" / "test" / "43.jpg")
    parser = argparse.ArgumentParser()
    cli_studies.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "generic.csv"
    args = parser.parse_args(["convert", "osv5m", str(csv), "--out", str(out)])
    assert args.func(args) == 0
    assert "wrote 2 osv5m samples" in capsys.readouterr().out
    s = CsvSource(out).load()
    assert s.kind == "image" and s.ids == ("42", "43") and s.groups == ("DE", "AU")
    torch.testing.assert_close(s.latlon, torch.tensor([[48.1, 11.5], [-33.9, 151.2]], dtype=torch.float64))
