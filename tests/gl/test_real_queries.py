"""The real window answers queries the embedder has never seen, with the real service (issue #12).

Each scenario runs in a fresh process (``tests/gl/real_app.py``) with its own empty embedding cache:
the globe is drawn with Mesa's software OpenGL *before* the embedder stack is first imported by the
worker — the order in which a user's first uncached query used to kill the app (exit 139: triton's
LLVM colliding with llvmpipe's). Models are trained in subprocesses too, so this pytest process
never imports sentence-transformers or open_clip itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gl, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "photos" / "stockholm-panorama.jpg"

TEXT_TOML = """
name = "tiny-places"
[model]
degree = 7
widths = [64, 32]
dropout = 0.0
[train]
batch_size = 64
steps = 30
lr = 2e-3
checkpoint_every = 30
log_every = 10
[diffusion]
steps = 20
anchors_per_batch = 256
[data]
source = "places"
places_limit = 300
val_fraction = 0.0
test_fraction = 0.1
[eval]
samples = 4
sampler_steps = 5
max_items = 4
"""

CLIP_SETUP = """
import shutil, sys
from pathlib import Path
from tests.support.tiny_clip import save_tiny_test_model
from tests.e2e.conftest import TINY_TOML, _synthetic_photos
from locdiff.cli import main
root = Path(sys.argv[1])
clip = save_tiny_test_model(root / "tiny_clip")
photos = root / "photos"; photos.mkdir()
rows = _synthetic_photos(photos, 24)
(root / "photos.csv").write_text("image,lat,lon\\n" + "".join(f"photos/{n},{a},{b}\\n" for n, a, b in rows))
(root / "tiny.toml").write_text(TINY_TOML)
sys.exit(main(["train", "--config", str(root / "tiny.toml"), "--data", str(root / "photos.csv"), "--embedder", "clip",
               "--clip-pretrained", str(clip), "--workdir", str(root / "runs"), "--no-eval", "--device", "cpu"]))
"""


def _env(cache: Path) -> dict:
    env = dict(os.environ, LOCDIFF_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.setdefault("QT_QPA_PLATFORM", "xcb")
    return env


def _run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("textmodel")
    (root / "tiny.toml").write_text(TEXT_TOML)
    r = _run(["-m", "locdiff.cli", "train", "--config", str(root / "tiny.toml"), "--workdir", str(root / "runs"),
              "--no-eval", "--device", "cpu"], _env(root / "train-cache"), 600)
    assert r.returncode == 0, r.stderr[-2000:]
    return root, next((root / "runs").glob("run-*"))


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    pytest.importorskip("open_clip")
    root = tmp_path_factory.mktemp("clipmodel")
    r = _run(["-c", CLIP_SETUP, str(root)], _env(root / "train-cache"), 600)
    assert r.returncode == 0, r.stderr[-2000:]
    return root, next((root / "runs").glob("run-*"))


def _drive(run_dir: Path, workdir: Path, cache: Path, *extra: str) -> dict:
    r = _run(["-m", "tests.gl.real_app", str(run_dir), "--workdir", str(workdir), *extra], _env(cache), 300)
    assert r.returncode == 0, f"the app exited with {r.returncode} (-11/139: segmentation fault)\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_an_uncached_text_query_typed_into_the_window_is_answered_and_drawn(text_run, tmp_path, gl_ok):
    root, run_dir = text_run
    cache = tmp_path / "empty-cache"  # nothing embedded yet: the worker loads MiniLM after the globe is up
    out = _drive(run_dir, root / "runs", cache, "--text", "a fishing harbour on a fjord")
    assert out["drawn"] and out["gl"], out
    assert out["item"] == "a fishing harbour on a fjord"
    assert len(out["modes"]) >= 1 and out["peak"] is not None
    assert not out["errors"], out["errors"]
    assert any((cache / "embeddings").rglob("*")), "the query was not embedded by the real (cached) embedder"


def test_a_photo_through_a_tiny_clip_model_is_answered_and_drawn(clip_run, tmp_path, gl_ok):
    root, run_dir = clip_run
    out = _drive(run_dir, root / "runs", tmp_path / "empty-cache", "--photo", str(PHOTO))
    assert out["drawn"] and out["gl"], out
    assert Path(out["item"]).name == PHOTO.name
    assert out["truth"] is not None  # EXIF GPS of the photo: the true location is known
    assert not out["errors"], out["errors"]


def test_the_cli_answers_a_query_draws_it_saves_a_png_and_exits_0(text_run, tmp_path, gl_ok):
    """``python -m locdiff.cli gui --run RUN --text QUERY --screenshot OUT.png`` with the real model."""
    root, run_dir = text_run
    out = tmp_path / "shot.png"
    r = _run(["-m", "locdiff.cli", "gui", "--run", str(run_dir), "--workdir", str(root / "runs"), "--text",
              "a mountain village", "--screenshot", str(out), "--size", "900x600"], _env(tmp_path / "cache"), 300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "1 prediction(s)" in r.stdout  # answered by the real model before the PNG was saved
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[1] == 900 and img.shape[0] >= 600  # --size (the window may not go below its minimum height)
    assert img.std() > 20  # a drawn window, not a blank frame
