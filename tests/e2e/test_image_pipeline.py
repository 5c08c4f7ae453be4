"""The image path end to end on CPU: a tiny local open_clip checkpoint, a model trained on a small
image CSV through the CLI, then ``predict photo.jpg`` returning locations with probabilities."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("open_clip")
from PIL import Image  # noqa: E402

from locdiff.cli import main  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"

TINY_TOML = """
name = "tiny-images"
[model]
degree = 7
widths = [64, 32]
dropout = 0.0
[train]
batch_size = 32
steps = 40
lr = 2e-3
checkpoint_every = 20
log_every = 10
[diffusion]
steps = 20
anchors_per_batch = 256
[data]
val_fraction = 0.0
test_fraction = 0.2
[eval]
samples = 4
sampler_steps = 5
max_items = 8
"""


def _synthetic_photos(folder: Path, n: int = 48) -> list[tuple[str, float, float]]:
    """Images whose colours encode where they were 'taken' (hue ~ longitude, brightness ~ latitude)."""
    rows = []
    for i in range(n):
        lat = -60 + 120 * ((i * 37) % n) / n
        lon = -180 + 360 * ((i * 17) % n) / n
        r = int(127 + 120 * math.cos(math.radians(lon)))
        g = int(127 + 120 * math.sin(math.radians(lon)))
        b = int(127 + 120 * lat / 90)
        name = f"img{i:03d}.png"
        Image.new("RGB", (40, 40), (r, g, b)).save(folder / name)
        rows.append((name, lat, lon))
    return rows


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from adapters.clip_embedder import save_tiny_test_model

    root = tmp_path_factory.mktemp("imgpipe")
    clip_dir = save_tiny_test_model(root / "tiny_clip")
    photos = root / "photos"
    photos.mkdir()
    rows = _synthetic_photos(photos)
    for p in PHOTOS.glob("*.jpg"):
        shutil.copy(p, photos / p.name)
    csv = root / "photos.csv"
    csv.write_text("image,lat,lon\n" + "\n".join(f"photos/{name},{lat},{lon}" for name, lat, lon in rows) + "\n")
    (root / "tiny.toml").write_text(TINY_TOML)
    args = ["train", "--config", str(root / "tiny.toml"), "--data", str(csv), "--embedder", "clip",
            "--clip-pretrained", str(clip_dir), "--workdir", str(root / "runs")]
    assert main(args) == 0
    run_dir = next((root / "runs").glob("run-*"))
    return root, run_dir


def test_predict_photo_returns_locations_with_probabilities(trained_run, capsys):
    root, run_dir = trained_run
    capsys.readouterr()
    photo = PHOTOS / "beijing-forbidden-city.jpg"
    code = main(["predict", str(run_dir), str(photo), "--json", "--samples", "4", "--sampler-steps", "5",
                 "--workdir", str(root / "runs")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    (result,) = out
    assert result["item"] == str(photo)
    assert -90 <= result["point"]["lat"] <= 90 and -180 <= result["point"]["lon"] <= 180
    probs = [m["probability"] for m in result["modes"]]
    assert probs and all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert probs == sorted(probs, reverse=True)


def test_predict_reports_a_corrupt_photo_and_keeps_going(trained_run, capsys):
    root, run_dir = trained_run
    corrupt = PHOTOS.parent / "corrupt" / "truncated_jpeg.jpg"
    good = PHOTOS / "list-sylt-starfish.jpg"
    capsys.readouterr()
    code = main(["predict", str(run_dir), str(corrupt), str(good), "--json", "--samples", "2", "--sampler-steps", "3",
                 "--workdir", str(root / "runs")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0  # JSON mode reports per-item errors in the payload
    assert "error" in out[0] and "truncated" in out[0]["error"].lower()
    assert "point" in out[1]


def test_checkpoint_refuses_another_embedder(trained_run, tmp_path):
    from adapters.clip_embedder import save_tiny_test_model
    from locdiff.container import build_prediction_service, load_model

    root, run_dir = trained_run
    bundle, _ = load_model(run_dir)
    assert bundle.config.data.embedder == "clip" and bundle.degree == 7
    other = save_tiny_test_model(tmp_path / "other_clip", seed=1)
    from adapters.clip_embedder import OpenClipEmbedder
    from locdiff.services.prediction import PredictionService

    with pytest.raises(ValueError, match="trained on embeddings from"):
        PredictionService(bundle, OpenClipEmbedder("tiny", other, progress=False), bundle.net.parameters().__next__().device)
    assert build_prediction_service(run_dir, workdir=str(root / "runs")).model_info["degree"] == 7
