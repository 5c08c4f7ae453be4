"""``eval --hybrid`` / ``predict --hybrid`` / ``eval --compare --hybrid`` on a small text run (MiniLM, training-split gallery)."""

from __future__ import annotations

import json
import math

import pytest

from tests.e2e.test_training import write_text_csv

pytestmark = pytest.mark.slow  # trains a tiny MiniLM text run (~1 min of CPU)

TOML = """\
name = "tiny-text"
device = "cpu"
[model]
degree = 7
widths = [64, 32]
time_dim = 16
dropout = 0.0
[train]
batch_size = 32
steps = 30
checkpoint_every = 30
log_every = 10
[diffusion]
steps = 20
anchors_per_batch = 256
[data]
val_fraction = 0.2
test_fraction = 0.2
[eval]
samples = 4
sampler_steps = 5
max_items = 8
"""


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    from locdiff.cli import main

    root = tmp_path_factory.mktemp("hybrid-cli")
    csv = write_text_csv(root / "sites.csv", n=150)
    (root / "tiny.toml").write_text(TOML)
    mp = pytest.MonkeyPatch()
    mp.setenv("LOCDIFF_CACHE", str(root / "cache"))
    assert main(["train", "--config", str(root / "tiny.toml"), "--data", str(csv), "--workdir", str(root / "runs"), "--no-eval"]) == 0
    yield root, root / "runs" / "run-0001", csv
    mp.undo()


def test_eval_hybrid_chooses_the_rule_on_validation_and_predict_uses_it(text_run, capsys, monkeypatch):
    from locdiff.cli import main

    root, run, csv = text_run
    monkeypatch.setenv("LOCDIFF_CACHE", str(root / "cache"))
    capsys.readouterr()
    args = ["eval", str(run), "--data", str(csv), "--samples", "4", "--sampler", "ddim:5", "--max-items", "12", "--hybrid", "--json"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "LocDiff-H rule chosen on validation" in out
    rows = json.loads(out[out.index("{\n"):])
    hybrid = [v for k, v in rows.items() if k.startswith("LocDiff-H")]
    assert len(hybrid) == 1 and 0.0 <= hybrid[0]["retrieved_pct"] <= 100.0
    assert hybrid[0]["acc@2500km_lo"] <= hybrid[0]["acc@2500km"] <= hybrid[0]["acc@2500km_hi"]
    saved = json.loads((run / "hybrid.json").read_text())
    assert saved["hybrid"]["rule"] in ("radius", "density") and saved["hybrid"]["sweep"]
    assert list((root / "cache" / "galleries").iterdir())  # the training split's gallery, cached

    # a fixed radius: the paper's rule, nothing chosen or saved
    assert main([*args[:-1], "--hybrid-rule", "radius", "--hybrid-radius", "300"]) == 0
    assert "LocDiff-H ddim-5 (gallery: radius, R=300 km)" in capsys.readouterr().out

    assert main(["predict", str(run), "--text", "site 7, 10 degrees north, 20 degrees east", "--hybrid", "--samples", "4",
                 "--sampler-steps", "5", "--json", "--workdir", str(root / "runs")]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["hybrid"] is not None and -90 <= pred["hybrid"]["lat"] <= 90 and math.isfinite(pred["hybrid"]["lon"])


def test_hybrid_flags_refuse_bad_values(text_run, capsys):
    from locdiff.cli import main

    _, run, _ = text_run
    for bad in (["--hybrid", "somewhere"], ["--hybrid", "--hybrid-radius", "-5"], ["--hybrid", "--hybrid-rule", "nearest"]):
        with pytest.raises(SystemExit) as exc:
            main(["eval", str(run), *bad])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'somewhere'" in err and "radius > 0" in err
    assert main(["eval", str(run), "--compare", "--hybrid", "geoclip"]) == 2
    assert "--hybrid gallery" in capsys.readouterr().err
