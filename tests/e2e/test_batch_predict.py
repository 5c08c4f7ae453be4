"""``predict RUN FOLDER|CSV|JSONL|- --out FILE`` end to end: every input format, every output format, bad rows,
batched == one at a time, the experiment store, and a SIGKILL halfway then a rerun (complete, no duplicates).

Most tests run a random degree-5 model over a hashing embedder (``tests/support/tiny_run.py``: no model to load);
the last runs the tiny local CLIP model on real image files (PNG, HEIC, a corrupt JPEG).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from locdiff.cli.main import main
from tests.support.tiny_run import make_hash_run, make_photos, use_hash_embedder

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "data" / "photos"
CORRUPT = ROOT / "tests" / "data" / "corrupt"
FAST = ["--samples", "4", "--sampler-steps", "3", "--top", "2", "--no-places"]


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    import locdiff.container as container
    from tests.support.tiny_run import HashEmbedder

    monkeypatch.setattr(container, "_embedder", lambda *a, **k: HashEmbedder())
    return make_hash_run(tmp_path)


def predict(tmp_path, run, source, out, *extra) -> int:
    return main(["predict", str(run), str(source), "--out", str(out), "--workdir", str(tmp_path / "wd"), *FAST, *extra])


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_photo_folder_to_csv_with_exif_truth_and_a_bad_file(tmp_path, run, capsys):
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for name in ("beijing-forbidden-city.jpg", "stockholm-panorama.jpg"):
        shutil.copy(PHOTOS / name, photos / "trip" / name)
    shutil.copy(PHOTOS / "bay-area-1.jpg", photos / "car.jpg")
    (photos / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # listed, unreadable
    (photos / "readme.txt").write_text("not an input")
    out = tmp_path / "out.csv"
    assert predict(tmp_path, run, photos, out) == 0
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["input"]).name for r in rows] == ["car.jpg", "gone.jpg", "beijing-forbidden-city.jpg", "stockholm-panorama.jpg"]
    assert rows[1]["error"].startswith("cannot read") and rows[1]["lat"] == ""
    good = [r for r in rows if not r["error"]]
    assert len(good) == 3 and all(-90 <= float(r["lat"]) <= 90 and r["mode1_probability"] for r in good)
    assert float(good[1]["true_lat"]) == pytest.approx(39.91556, abs=1e-4) and float(good[1]["error_km"]) >= 0
    assert float(good[0]["credible50_km2"]) < float(good[0]["credible95_km2"])
    assert "wrote 4 row(s)" in capsys.readouterr().out


def test_a_csv_of_texts_to_jsonl_and_the_store(tmp_path, run):
    src = tmp_path / "q.csv"
    src.write_text('text,lat,lon\n"Paris, France",48.85,2.35\nKyoto,,\n,,\nOslo,999,10\n')
    out = tmp_path / "out.jsonl"
    assert predict(tmp_path, run, src, out, "--save-samples") == 0
    rows = jsonl(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["truth"] == {"lat": 48.85, "lon": 2.35} and rows[0]["error_km"] > 0 and len(rows[0]["samples"]) == 4
    assert rows[1]["error"] is None and rows[1]["truth"] is None
    assert "no 'image' or 'text'" in rows[2]["error"] and rows[3]["error"].startswith("lat: expected a number in [-90, 90]")
    from locdiff.container import history_store

    stored = history_store(str(tmp_path / "wd")).predictions(limit=10)
    assert sorted(p["item"] for p in stored) == ["Kyoto", "Paris, France"]


def test_jsonl_to_geojson_is_a_valid_feature_collection(tmp_path, run):
    src = tmp_path / "q.jsonl"
    src.write_text('{"text": "Lima"}\n{"text": "Cairo", "lat": 30.04, "lon": 31.24}\nnot json\n')
    out = tmp_path / "out.geojson"
    assert predict(tmp_path, run, src, out) == 0
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    for f in doc["features"][:2]:
        lon, lat = f["geometry"]["coordinates"]
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Point" and -180 <= lon <= 180 and -90 <= lat <= 90
    assert doc["features"][2]["geometry"] is None and "not JSON" in doc["features"][2]["properties"]["error"]


def test_stdin_lines_and_batched_equals_one_at_a_time(tmp_path, run, monkeypatch):
    lines = "".join(f"query number {i}\n" for i in range(5))
    outs = {}
    for chunk in ("1", "5"):
        monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
        outs[chunk] = tmp_path / f"out{chunk}.jsonl"
        assert predict(tmp_path, run, "-", outs[chunk], "--chunk", chunk) == 0
    one, batched = jsonl(outs["1"]), jsonl(outs["5"])
    assert [r["input"] for r in batched] == [f"query number {i}" for i in range(5)]
    for a, b in zip(one, batched):  # float32 rounding of this tiny network only (see tests/unit/test_batch_prediction.py)
        assert a["lat"] == pytest.approx(b["lat"], abs=1e-4) and a["lon"] == pytest.approx(b["lon"], abs=1e-4)
        assert len(a["modes"]) == len(b["modes"])


def test_a_rerun_skips_what_is_written_and_single_predict_is_unchanged(tmp_path, run, capsys):
    src = tmp_path / "q.csv"
    src.write_text("text\n" + "".join(f"place {i}\n" for i in range(5)))
    out = tmp_path / "out.csv"
    assert predict(tmp_path, run, src, out) == 0
    first = out.read_text()
    capsys.readouterr()
    assert predict(tmp_path, run, src, out) == 0
    assert out.read_text() == first
    printed = capsys.readouterr().out
    assert "wrote 0 row(s)" in printed and "5 already there" in printed
    src.write_text("text\n" + "".join(f"other {i}\n" for i in range(5)))
    assert predict(tmp_path, run, src, out) == 2 and "other inputs" in capsys.readouterr().err
    assert main(["predict", str(run), "--text", "Lisbon", "--workdir", str(tmp_path / "wd"), "--samples", "4"]) == 0
    assert capsys.readouterr().out.startswith("Lisbon: point")
    assert main(["predict", str(run), str(src), "--workdir", str(tmp_path / "wd")]) == 2
    assert "needs --out" in capsys.readouterr().err


DRIVER = ("import sys; from tests.support.tiny_run import use_hash_embedder; use_hash_embedder(); "
          "from locdiff.cli.main import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".geojson"])
def test_sigkill_halfway_then_rerun_gives_every_row_once(tmp_path, suffix):
    run = make_hash_run(tmp_path)
    n = 48
    src = tmp_path / "q.csv"
    src.write_text("text\n" + "".join(f"town {i}\n" for i in range(n)))
    out = tmp_path / f"out{suffix}"
    args = [sys.executable, "-c", DRIVER, "predict", str(run), str(src), "--out", str(out), "--workdir", str(tmp_path / "wd"),
            *FAST, "--chunk", "3", "--sampler-steps", "20"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 3 + (suffix == ".geojson"):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]  # still running: kill it halfway
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = out.read_bytes().count(b"\n")
    assert 3 <= partial < n
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already there" in done.stdout
    if suffix == ".geojson":
        rows = [f["properties"] for f in json.loads(out.read_text())["features"]]
    else:
        rows = jsonl(out)
    assert sorted(r["index"] for r in rows) == list(range(n))  # complete, no duplicate, none missing
    assert all(r["input"] == f"town {r['index']}" and r["error"] is None for r in rows)


@pytest.mark.slow
def test_real_images_with_the_tiny_clip_model(tmp_path):
    """The real photo readers and CLIP embedder: PNGs in sub-folders, a HEIC, a corrupt JPEG (reported, not fatal)."""
    pytest.importorskip("open_clip")
    from tests.support.tiny_run import make_tiny_run

    run = make_tiny_run(tmp_path)
    photos = tmp_path / "photos"
    make_photos(photos, 4)
    shutil.copy(CORRUPT / "truncated_jpeg.jpg", photos / "broken.jpg")
    try:
        import pillow_heif  # noqa: F401
        from PIL import Image

        import adapters.images  # noqa: F401  (registers the HEIF plugin)

        Image.new("RGB", (40, 30), (200, 30, 90)).save(photos / "IMG_1.HEIC", format="HEIF")
    except ImportError:
        pass
    out = tmp_path / "out.jsonl"
    assert predict(tmp_path, run, photos, out, "--workers", "2") == 0
    rows = {Path(r["input"]).name: r for r in jsonl(out)}
    assert rows["broken.jpg"]["error"] and rows["broken.jpg"]["lat"] is None
    assert all(r["error"] is None and r["modes"] for name, r in rows.items() if name != "broken.jpg")
    assert len(rows) == 5 + (photos / "IMG_1.HEIC").exists()


@pytest.mark.slow
def test_dataloader_decoding_gives_the_clip_embedders_vectors(tmp_path):
    """Photos decoded by DataLoader worker processes embed to exactly the vectors of the in-process embedder."""
    pytest.importorskip("open_clip")
    from adapters.clip_embedder import OpenClipEmbedder
    from adapters.image_loader import LoaderImageEmbedder
    from tests.support.tiny_clip import save_tiny_test_model

    clip = OpenClipEmbedder("ViT-B-32", str(save_tiny_test_model(tmp_path / "clip")), batch_size=3, progress=False)
    paths = make_photos(tmp_path / "photos", 7)
    shutil.copy(CORRUPT / "truncated_jpeg.jpg", tmp_path / "broken.jpg")
    paths.insert(2, tmp_path / "broken.jpg")
    ref = clip.embed_images(paths)
    got = LoaderImageEmbedder(clip, workers=2).embed_images(paths)
    assert got.index == ref.index == (0, 1, 3, 4, 5, 6, 7) and torch.equal(got.vectors, ref.vectors)
    assert [f.item for f in got.failures] == [str(tmp_path / "broken.jpg")] and got.failures[0].reason == ref.failures[0].reason
