"""Shared e2e fixtures: a tiny image model trained through the CLI with a local random open_clip."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

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
    from PIL import Image

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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(root, run_dir) of a degree-7 model trained for 40 steps on 48 synthetic photos."""
    pytest.importorskip("open_clip")
    from tests.support.tiny_clip import save_tiny_test_model
    from locdiff.cli import main

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
