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
    assert saved["hybrid"]["rule"] in ("radius", "density", "consensus") and saved["hybrid"]["sweep"]
    assert list((root / "cache" / "galleries").iterdir())  # the training split's gallery, cached

    # a fixed radius: the paper's rule, nothing chosen or saved
    assert main([*args[:-1], "--hybrid-rule", "radius", "--hybrid-radius", "300"]) == 0
    assert "LocDiff-H ddim-5 (gallery: radius, R=300 km)" in capsys.readouterr().out

    assert main(["predict", str(run), "--text", "site 7, 10 degrees north, 20 degrees east", "--hybrid", "--samples", "4",
                 "--sampler-steps", "5", "--json", "--workdir", str(root / "runs")]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["hybrid"] is not None and -90 <= pred["hybrid"]["lat"] <= 90 and math.isfinite(pred["hybrid"]["lon"])
    # the plain-text answer shows the LocDiff-H point too (it was only in --json)
    assert main(["predict", str(run), "--text", "site 7, 10 degrees north, 20 degrees east", "--hybrid", "--samples", "4",
                 "--sampler-steps", "5", "--workdir", str(root / "runs")]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "LocDiff-H" in x]
    assert line == [f"  LocDiff-H (retrieved near the samples): {pred['hybrid']['lat']:.3f}, {pred['hybrid']['lon']:.3f}"]


def test_eval_of_a_run_folder_copied_away_from_its_store_prints_and_stores_nothing(text_run, capsys, monkeypatch, tmp_path):
    """A run folder copied elsewhere (no experiment store beside it): eval answers, notes it stores nothing, no traceback."""
    import shutil

    from locdiff.cli import main

    root, run, csv = text_run
    monkeypatch.setenv("LOCDIFF_CACHE", str(root / "cache"))
    copy = tmp_path / "elsewhere" / "run-0001"
    shutil.copytree(run, copy)
    capsys.readouterr()
    assert main(["eval", str(copy), "--data", str(csv), "--samples", "4", "--sampler", "ddim:5", "--max-items", "6"]) == 0
    out, err = capsys.readouterr()
    assert "LocDiffusion ddim-5" in out and "Traceback" not in err
    assert "run 1 of" in err and "is not in the experiment store" in err and "not stored" in err



def test_eval_of_another_stores_run_with_the_same_id_records_nothing_under_it(text_run, capsys, monkeypatch):
    """A run folder whose run.json says run 1 but was made beside another store (its record's creation time differs),
    dropped beside this store (which holds a different run 1): eval prints, stores nothing under this store's run 1."""
    import shutil

    from locdiff.cli import main
    from storage import SqlExperimentStore, sqlite_url

    root, run, csv = text_run
    monkeypatch.setenv("LOCDIFF_CACHE", str(root / "cache"))
    meta = json.loads((run / "run.json").read_text())
    assert meta["run_id"] == 1 and meta["created"]  # train records its store record's creation time
    other = root / "runs" / "run-0099"
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree(run, other)
    (other / "run.json").write_text(json.dumps({**meta, "created": "2020-01-01T00:00:00+00:00"}))
    store = SqlExperimentStore(sqlite_url(root / "runs" / "locdiff.sqlite"))
    before = dict(store.get_run(1).metrics)
    capsys.readouterr()
    assert main(["eval", str(other), "--data", str(csv), "--samples", "4", "--sampler", "ddim:3", "--max-items", "5", "--seed", "9"]) == 0
    out, err = capsys.readouterr()
    assert "LocDiffusion ddim-3" in out and "is not in the experiment store" in err
    assert dict(SqlExperimentStore(sqlite_url(root / "runs" / "locdiff.sqlite")).get_run(1).metrics) == before
    shutil.rmtree(other)

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
    # another file evaluated: the training CSV (the gallery) is not read from the checkpoint's config
    other = write_text_csv(run.parent.parent / "other.csv", n=30, seed=3)
    assert main(["eval", str(run), "--data", str(other), "--hybrid", "--max-items", "4", "--samples", "2", "--sampler", "ddim:3"]) == 2
    assert "compare RUN --data" in capsys.readouterr().err


def test_eval_compare_hybrid_saves_its_rule_for_predict(text_run, capsys, monkeypatch):
    """``eval RUN --compare --hybrid --data TRAIN.csv`` on a CSV-trained run: the run's own test split (the file is
    its training data), and the rule chosen on validation kept beside the model, as ``eval --hybrid`` does."""
    import importlib

    cli_main = importlib.import_module("locdiff.cli.main")  # the module (the package exports its `main` function)
    from locdiff.cli import studies as cli_studies
    from locdiff.core.hybrid import HybridRule

    root, run, csv = text_run
    monkeypatch.setenv("LOCDIFF_CACHE", str(root / "cache"))
    (run / "hybrid.json").unlink(missing_ok=True)
    args = cli_main.build_parser().parse_args(["eval", str(run), "--compare", "--hybrid", "--data", str(csv), "--max-items", "10",
                                               "--hybrid-val-items", "10", "--sampler", "dpmpp2m:5", "--samples", "4"])
    opts = cli_main._compare_options(args)
    assert (opts.data, opts.eval_data) == (str(csv), None)
    opts.baseline_steps = 20  # the baselines' training is not what this test is about
    capsys.readouterr()
    assert cli_studies.cmd_compare(opts) == 0
    out = capsys.readouterr().out
    saved = json.loads((run / "hybrid.json").read_text())["hybrid"]
    assert saved["sweep"] and HybridRule.from_dict(saved).describe() in out  # the table's LocDiff-H rule is the one saved


def test_compare_and_spatial_gain_a_locdiff_h_row_chosen_on_validation(tmp_path):
    from adapters.gallery_retriever import GalleryCache
    from locdiff.services import studies
    from tests.e2e.test_studies import LocationEmbedder, SyntheticSource, tiny, tiny_config
    from adapters.checkpoints import SafetensorsCheckpointStore
    from adapters.compute import TorchCompute
    from storage import SqlExperimentStore, sqlite_url

    env = studies.StudyEnv(compute=TorchCompute("cpu"), checkpoints=SafetensorsCheckpointStore(keep_last=1),
                           store=SqlExperimentStore(sqlite_url(tmp_path / "s.sqlite")), workdir=tmp_path,
                           gallery=GalleryCache(tmp_path / "galleries"))
    result = studies.compare(SyntheticSource(300), LocationEmbedder(), tiny_config(), env, tiny("compare", eval_items=30))
    test_table = next(t for t in result.tables if t.startswith("test accuracy"))
    (row,) = [r for r in result.tables[test_table] if r.startswith("LocDiff-H")]
    # the synthetic condition encodes the location: retrieval from the training split is near-perfect at 750 km
    assert result.tables[test_table][row]["acc@750km"] > 80
    sweep = next(t for t in result.tables if t.startswith("LocDiff-H validation sweep"))
    assert any(r.startswith("radius") for r in result.tables[sweep]) and any(r.startswith("density") for r in result.tables[sweep])
    off = studies.compare(SyntheticSource(300), LocationEmbedder(), tiny_config(), env, tiny("compare", eval_items=30, hybrid=False))
    assert not any(r.startswith("LocDiff-H") for rows in off.tables.values() for r in rows)
    spatial = studies.spatial_study(SyntheticSource(300), LocationEmbedder(), tiny_config(), env,
                                    tiny("spatial", eval_items=20, holdout_groups=("C1",)))
    held = next(t for t in spatial.tables if t.startswith("held-out region"))
    assert any(r.startswith("LocDiff-H") for r in spatial.tables[held])


def test_eval_compare_hybrid_passes_the_gallery_row_and_every_item(monkeypatch, capsys):
    from locdiff import cli
    from locdiff.cli import studies as cli_studies

    seen = []
    monkeypatch.setattr(cli_studies, "cmd_compare", lambda a: seen.append(a) or 0)
    assert cli.main(["eval", "runs/run-0001", "--compare", "--hybrid", "--data", "hidden.csv"]) == 0
    assert cli.main(["eval", "runs/run-0001", "--compare", "--hybrid-val-items", "40", "--hybrid"]) == 0
    assert cli.main(["eval", "runs/run-0001", "--compare"]) == 0
    first, second, plain = seen
    assert (first.no_hybrid, first.eval_data, first.eval_items >= 10**9, first.val_items >= 10**9) == (False, "hidden.csv", True, True)
    assert (second.val_items, plain.no_hybrid) == (40, True)
    assert cli.main(["eval", "runs/run-0001", "--compare", "--hybrid", "--hybrid-radius", "50"]) == 2
    assert "chooses LocDiff-H's rule" in capsys.readouterr().err


def test_eval_all_reducers_reports_each_samplers_proper_scores(text_run, capsys, monkeypatch):
    """``eval --all-reducers``: one accuracy row per reducer, and each sampler's NLL / energy / coverage (they belong to
    the sampler's distribution) on its chosen reducer's row — not only the one-step row's."""
    from locdiff.cli import main

    root, run, csv = text_run
    monkeypatch.setenv("LOCDIFF_CACHE", str(root / "cache"))
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(csv), "--samples", "4", "--sampler", "ddim:5,dpmpp2m:5", "--max-items", "8",
                 "--all-reducers", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("{\n"):])
    for sampler in ("ddim-5", "dpmpp2m-5"):
        assert {f"{sampler} {r}" for r in ("centre", "medoid", "mode")} <= set(rows)
        chosen = rows[f"{sampler} mode"]
        assert math.isfinite(chosen["nll"]) and chosen["energy_km"] >= 0 and 0 <= chosen["coverage@90"] <= 100
        assert f"| {sampler} mode | " in out.split("proper scores")[1]
