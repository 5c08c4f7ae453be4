"""The Python API (``locdiff.load``): the README's example runs, predictions and densities, and ``import locdiff``
loads no adapter (``load`` reaches them through the container only when called)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import locdiff
from locdiff.core.results import DensityGrid, Prediction
from locdiff.ports import ItemFailure
from tests.support.tiny_run import HashEmbedder, make_hash_run

ROOT = Path(__file__).resolve().parents[2]
OUTER = ("adapters", "storage", "gui", "open_clip", "sqlalchemy", "PySide6", "PIL", "safetensors", "sentence_transformers",
         "transformers", "matplotlib", "dependency_injector", "reverse_geocoder")


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    import locdiff.container as container

    monkeypatch.setattr(container, "_embedder", lambda *a, **k: HashEmbedder())
    monkeypatch.chdir(tmp_path)  # the default workdir "runs" (embedding cache) lands here
    return make_hash_run(tmp_path)


def test_importing_locdiff_loads_no_adapter():
    code = "import json, sys, locdiff; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (OUTER,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert callable(locdiff.load) and "load" in locdiff.__all__


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### The Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(run):
    code = readme_example()
    assert 'locdiff.load("runs/run-0001")' in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace('"runs/run-0001"', repr(str(run))), "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Springfield, Illinois, United States: ") and "top mode p=" in lines[0] and "16 samples" in lines[0]
    assert lines[1].startswith("Kyoto, Japan: ")
    assert lines[2] == "map sums to 1.000"


def test_predict_and_density(run, tmp_path):
    model = locdiff.load(run, device="cpu", chunk=2)
    assert model.reads == ("image", "text") and model.device == torch.device("cpu")
    a, b, c = model.predict(["Lima", "Quito", "Lima"], samples=4, steps=3)
    assert all(isinstance(p, Prediction) for p in (a, b, c)) and a.item == "Lima" and a.samples.shape == (4, 2)
    assert a.point == pytest.approx(c.point, abs=1e-4) and a.point != pytest.approx(b.point, abs=1e-3)
    [alone] = model.predict("Lima", samples=4, steps=3)  # another batch, the same answer
    assert alone.point == pytest.approx(a.point, abs=1e-4)
    photo = tmp_path / "x.png"
    photo.write_bytes(b"\x89PNG not really")  # the hash embedder reads bytes; a path object is an image input
    [img] = model.predict([photo], samples=4, steps=3)
    assert img.item == str(photo)
    with pytest.raises(ValueError, match="empty text"):
        model.predict(["ok", " "], samples=4, steps=3)
    ok, bad = model.predict(["ok", " "], samples=4, steps=3, errors="return")
    assert isinstance(ok, Prediction) and isinstance(bad, ItemFailure)
    grids = model.density(["Lima", "Quito"], samples=4, steps=3, grid=(18, 36))
    assert all(isinstance(g, DensityGrid) and g.mass.shape == (18, 36) for g in grids)
    assert float(grids[0].mass.sum()) == pytest.approx(1.0)
    at = model.density(["Lima", "Quito"], torch.tensor([[0.0, 0.0], [45.0, 90.0], [-30.0, -60.0]]), samples=4, steps=3, grid=(18, 36))
    assert at.shape == (2, 3) and bool((at >= 0).all())
