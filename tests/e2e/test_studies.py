"""The evidence studies end to end at tiny sizes: synthetic data, a real store, checkpoints and report."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import attrs
import pytest
import torch

from adapters.checkpoints import SafetensorsCheckpointStore
from adapters.compute import TorchCompute
from locdiff.core.diffusion import DEFAULT_SAMPLER
from locdiff.core import anchors, geo
from locdiff.config import RunConfig
from locdiff.ports import Embedded, GeoSamples
from locdiff.services import studies
from locdiff.services.studies import StudyEnv, StudyResult, default_settings, format_result, relative_change
from storage import SqlExperimentStore, sqlite_url

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class SyntheticSource:
    """Points around a few 'cities' in six 'countries'; items are 'lat,lon' strings."""

    name = "synthetic"

    def __init__(self, n: int = 240):
        self.n = n

    def load(self) -> GeoSamples:
        g = torch.Generator().manual_seed(0)
        centres = anchors.uniform_random(12, g, dtype=torch.float64)
        which = torch.randint(0, 12, (self.n,), generator=g)
        xyz = geo.to_xyz(centres[which]) + 0.01 * torch.randn(self.n, 3, generator=g, dtype=torch.float64)
        latlon = geo.to_latlon(xyz)
        items = tuple(f"{a:.5f},{b:.5f}" for a, b in latlon.tolist())
        groups = tuple(f"C{int(w) % 6}" for w in which)
        return GeoSamples(self.name, tuple(f"id{i}" for i in range(self.n)), latlon, items, "text", groups)


class LocationEmbedder:
    """A condition that encodes the location (plus noise): every method should beat random."""

    id = "synthetic-location-v1"
    dim = 16

    def embed_texts(self, texts):
        pts = torch.tensor([[float(x) for x in t.split(",")] for t in texts], dtype=torch.float64)
        v = geo.to_xyz(pts)
        proj = torch.randn(9, self.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        feats = torch.cat((v, torch.sin(3 * v), torch.cos(3 * v)), 1) @ proj
        return Embedded(feats.float(), tuple(range(len(texts))))

    def embed_images(self, paths):
        raise NotImplementedError


@pytest.fixture
def env(tmp_path):
    store = SqlExperimentStore(sqlite_url(tmp_path / "store.sqlite"))
    return StudyEnv(compute=TorchCompute("cpu"), checkpoints=SafetensorsCheckpointStore(keep_last=1), store=store, workdir=tmp_path)


def tiny(study: str, **changes):
    sizes = dict(steps=8, eval_items=10, val_items=10, samples=2, sampler_steps=3, baseline_steps=10, baseline_cells=(8,),
                 anchor_sizes=(500,), degrees=(5, 7), calibration_grid=(18, 36, 1))
    return default_settings(study, quick=True, **(sizes | changes))


def tiny_config():
    return RunConfig.from_dict({"model": {"degree": 7, "widths": [32, 16], "time_dim": 8}, "diffusion": {"steps": 10},
                                "train": {"batch_size": 32, "log_every": 4},
                                "data": {"val_fraction": 0.15, "test_fraction": 0.15}, "eval": {"samples": 2}})


@pytest.mark.parametrize("study", studies.STUDIES)
def test_every_study_runs_stores_and_rebuilds(env, study):
    settings = tiny(study, holdout_groups=("C1",))
    result = studies.RUNNERS[study](SyntheticSource(), LocationEmbedder(), tiny_config(), env, settings)
    assert result.run_id is not None and result.tables
    record = env.store.get_run(result.run_id)
    assert record.status == "finished" and record.experiment == f"study-{study}"
    assert record.config["settings"]["steps"] == 8 and record.config["run_config"]["model"]["degree"] == 7
    rebuilt = StudyResult.from_run(record)
    assert list(rebuilt.tables) == list(result.tables)
    for table, rows in result.tables.items():
        assert list(rebuilt.tables[table]) == list(rows)
        for row, values in rows.items():
            for k, v in values.items():
                assert rebuilt.tables[table][row][k] == pytest.approx(v, nan_ok=True)
    assert set(rebuilt.curves) == set(result.curves)
    assert rebuilt.model_runs == result.model_runs
    text = format_result(result)
    assert text.startswith("### ")
    if study in ("losses", "degrees", "compare", "spatial"):  # their model rows carry the proper scores, with intervals
        scored = [v for table in result.tables.values() for v in table.values() if "energy_km" in v]
        assert scored and all(v["nll_lo"] <= v["nll"] <= v["nll_hi"] and "coverage@50" in v for v in scored)
        assert "Proper scores" in text
    for run_id in result.model_runs.values():  # models trained for the study are runs of their own, with checkpoints
        assert env.store.checkpoints(run_id)


def test_compare_rows_and_baselines_beat_random(env):
    result = studies.compare(SyntheticSource(400), LocationEmbedder(), tiny_config(), env, tiny("compare", eval_items=40, baseline_steps=80))
    (table,) = result.tables.values()
    assert {"kNN (k=1)", "kNN (k=10, weighted)", "random guess"} <= set(table)
    assert any(r.startswith("grid classifier") for r in table) and any(r.startswith("LocDiffusion") for r in table)
    assert table["kNN (k=1)"]["acc@750km"] > 50 > table["random guess"]["acc@750km"]
    # proper scores beside accuracy: every row with a density, each with its interval; point predictors have none
    grid = next(r for r in table if r.startswith("grid classifier"))
    one_step = next(r for r in table if r.startswith("↳ its one-step prediction"))
    locdiff = [r for r in table if r.startswith("LocDiffusion")]
    for row in [*locdiff, one_step, "kNN (k=10, weighted)", grid]:
        for key in ("nll", "energy_km", "coverage@50", "coverage@90", "coverage@95"):
            assert math.isfinite(table[row][key]) and table[row][f"{key}_lo"] <= table[row][key] <= table[row][f"{key}_hi"], (row, key)
        assert table[row]["acc@200km_lo"] <= table[row]["acc@200km"] <= table[row]["acc@200km_hi"]
    assert "nll" not in table["kNN (k=1)"] and "nll" not in table["regression (unit vector)"]
    assert table["random guess"]["nll"] == pytest.approx(math.log(4 * math.pi))
    assert table["kNN (k=10, weighted)"]["nll"] < math.log(4 * math.pi) and table[grid]["nll"] < math.log(4 * math.pi)
    assert table[locdiff[0]]["nll"] == table[locdiff[1]]["nll"]  # one distribution, reduced two ways
    text = format_result(result)
    assert "Proper scores" in text and "| kNN (k=10, weighted) | " in text.split("Proper scores")[1]


def test_compare_with_a_given_model_trains_nothing(env):
    config = tiny_config()
    data = studies.prepare(SyntheticSource(), LocationEmbedder(), config.data)
    trained = studies.train_model(studies.study_config(config, tiny("compare")), data, env, experiment="m")
    before = len(env.store.list_runs())
    result = studies.compare(SyntheticSource(), LocationEmbedder(), config, env, tiny("compare"), bundle=trained.bundle)
    assert not result.model_runs and len(env.store.list_runs()) == before + 1  # only the study run


def test_a_finished_study_model_is_reused_across_studies_unless_retrain(env):
    config = tiny_config()
    first = studies.compare(SyntheticSource(), LocationEmbedder(), config, env, tiny("compare"))
    (model_run,) = first.model_runs.values()
    models_before = [r.run_id for r in env.store.list_runs() if r.experiment.endswith("-model")]
    # a different study with the same training sizes and a different sampling setting reuses the same weights
    second = studies.calibration_study(SyntheticSource(), LocationEmbedder(), config, env, tiny("calibration", projection="degree"))
    assert second.model_runs == {"locdiff": model_run}
    assert [r.run_id for r in env.store.list_runs() if r.experiment.endswith("-model")] == models_before
    reused = studies.reusable_model(studies.study_config(config, tiny("compare")), env, experiment="x")
    assert reused is not None and reused.run_id == model_run and reused.steps == 8
    assert reused.seconds > 0 and not math.isnan(reused.final_loss)
    # another training config (more steps) is not a match; --retrain trains afresh
    assert studies.reusable_model(studies.study_config(config, tiny("compare", steps=9)), env, experiment="x") is None
    fresh = studies.compare(SyntheticSource(), LocationEmbedder(), config, attrs.evolve(env, reuse_models=False), tiny("compare"))
    assert fresh.model_runs["locdiff"] != model_run


def test_report_renders_markdown_and_plots(env, tmp_path):
    from adapters.report import render_report

    results = [studies.RUNNERS[s](SyntheticSource(), LocationEmbedder(), tiny_config(), env, tiny(s)) for s in ("calibration", "anchors", "degrees", "losses")]
    rebuilt = [StudyResult.from_run(env.store.get_run(r.run_id)) for r in results]
    md = render_report(rebuilt, tmp_path / "reports", "tiny")
    text = md.read_text()
    assert "## Study `calibration`" in text and "## Study `degrees`" in text
    pngs = sorted((tmp_path / "reports" / "tiny-figures").glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 1000 for p in pngs)
    for p in pngs:
        assert f"tiny-figures/{p.name}" in text


def test_relative_change_by_hand():
    rows = {"ref": {k: 50.0 for k in studies.ACC_KEYS}, "other": {k: 40.0 for k in studies.ACC_KEYS}}
    rows["other"]["acc@1km"] = 0.0
    rows["ref"]["acc@2500km"] = 0.0
    out = relative_change(rows, "ref")
    assert list(out) == ["other"]
    assert out["other"]["Δ 25 km (%)"] == pytest.approx(-20.0)
    assert out["other"]["Δ 1 km (%)"] == pytest.approx(-100.0)
    assert math.isnan(out["other"]["Δ 2500 km (%)"])


def test_settings_defaults_and_quick():
    full = default_settings("losses")
    assert full.losses == ("kl", "l1", "l2", "cosine") and full.steps == 1000
    assert default_settings("degrees").degrees == (15, 23, 31, 47)
    quick = default_settings("anchors", quick=True, eval_items=7)
    assert quick.eval_items == 7 and quick.steps < full.steps
    with pytest.raises(ValueError, match="unknown study"):
        default_settings("nope")


def test_cli_registers_its_commands():
    from locdiff.cli import studies as cli_studies

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    cli_studies.register(sub)
    args = parser.parse_args(["study", "anchors", "--run", "runs/run-0001", "--quick", "--threads", "1"])
    assert args.func is cli_studies.cmd_study and args.name == "anchors" and args.run == "runs/run-0001" and args.quick
    args = parser.parse_args(["compare", "runs/run-0001", "--eval-items", "50"])
    assert args.func is cli_studies.cmd_compare and args.eval_items == 50
    args = parser.parse_args(["report", "3", "4", "--out", "reports/"])
    assert args.run_ids == [3, 4] and args.out == "reports/"
    args = parser.parse_args(["study", "spatial", "--data", "x.csv", "--format", "im2gps3k", "--holdout-lat-band", "0,10"])
    assert args.format == "im2gps3k"
    with pytest.raises(SystemExit):
        parser.parse_args(["study", "bogus"])


def test_cli_study_and_report_end_to_end(tmp_path, monkeypatch, capsys):
    """`study compare --quick` on a tiny text CSV through the real container (MiniLM), then `report`."""
    from locdiff import cli
    from locdiff.cli import studies as cli_studies

    pytest.importorskip("matplotlib")
    rows = [("lat", "lon", "text")]
    cities = [("Paris, France", 48.85, 2.35), ("Lyon, France", 45.76, 4.84), ("Berlin, Germany", 52.52, 13.4),
              ("Munich, Germany", 48.14, 11.58), ("Tokyo, Japan", 35.68, 139.69), ("Osaka, Japan", 34.69, 135.5),
              ("Lima, Peru", -12.05, -77.04), ("Cusco, Peru", -13.53, -71.97), ("Nairobi, Kenya", -1.29, 36.82),
              ("Mombasa, Kenya", -4.04, 39.67)]
    for i in range(60):
        name, lat, lon = cities[i % len(cities)]
        rows.append((f"{lat + 0.01 * i:.4f}", f"{lon:.4f}", f"district {i} of {name}"))
    data = tmp_path / "tiny.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    monkeypatch.setenv("LOCDIFF_CACHE", str(tmp_path / "cache"))
    parser = cli.build_parser()
    if "compare" not in parser._subparsers._group_actions[0].choices:
        cli_studies.register(parser._subparsers._group_actions[0])
    work = str(tmp_path / "runs")
    args = parser.parse_args(["study", "compare", "--quick", "--data", str(data), "--workdir", work, "--threads", "1",
                              "--eval-items", "8", "--degree", "7"])
    try:
        assert args.func(args) == 0
    except OSError as exc:  # pragma: no cover - the MiniLM weights are an installed package; skip if absent
        pytest.skip(f"MiniLM unavailable: {exc}")
    out = capsys.readouterr().out
    assert "## study compare (run 1" in out and "kNN (k=1)" in out
    args = parser.parse_args(["report", "1", "--workdir", work, "--out", str(tmp_path / "reports")])
    assert args.func(args) == 0
    assert (tmp_path / "reports" / "compare-1.md").exists()


def test_eval_compare_runs_the_compare_command_with_the_same_settings(monkeypatch, capsys):
    from locdiff import cli
    from locdiff.cli import studies as cli_studies

    seen = []
    monkeypatch.setattr(cli_studies, "cmd_compare", lambda a: seen.append(a) or 0)
    assert cli.main(["eval", "runs/run-0001", "--compare", "--max-items", "50", "--sampler", f"{DEFAULT_SAMPLER}:10",
                     "--projection", "degree", "--data", "other.csv"]) == 0
    (a,) = seen
    assert (a.run, a.eval_items, a.sampler_steps, a.projection, a.samples, a.seed, a.eval_data) == (
        "runs/run-0001", 50, 10, "degree", 16, 0, "other.csv")
    assert cli.main(["eval", "runs/run-0001", "--compare", "--sampler", "ddpm:100"]) == 2
    assert f"--compare samples like the studies ({DEFAULT_SAMPLER})" in capsys.readouterr().err
    assert cli.main(["eval", "runs/run-0001", "--compare", "--split", "val"]) == 2


def test_study_models_depend_on_the_seed_alone(env):
    """Whatever ran before in the process, a study model's weights are a function of its config (seed included)."""
    config = studies.study_config(tiny_config(), tiny("losses"))
    data = studies.prepare(SyntheticSource(), LocationEmbedder(), tiny_config().data)
    fresh = attrs.evolve(env, reuse_models=False)
    torch.manual_seed(123)
    first = studies.train_model(config, data, fresh, experiment="a").bundle.tensors()
    torch.rand(1000)  # consume the global generator differently
    second = studies.train_model(config, data, fresh, experiment="b").bundle.tensors()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_anchor_sampling_study_writes_both_samplings_per_degree(env):
    """Issue #11: one model per degree × anchor sampling, each with accuracy, step time and both estimators' spread."""
    from locdiff.core.anchors import ANCHOR_SAMPLINGS

    settings = tiny("anchor-sampling", degrees=(5, 9), spread_draws=4, spread_levels=(0.0, 0.9))
    result = studies.anchor_sampling_study(SyntheticSource(), LocationEmbedder(), tiny_config(), env, settings)
    accuracy, *_ = result.tables.values()
    expected = [f"L={L}, {s} anchors" for L in (5, 9) for s in ANCHOR_SAMPLINGS]
    assert list(accuracy) == expected
    for values in accuracy.values():
        assert values["s_per_step"] > 0 and 0 <= values["acc@750km"] <= 100
        for s in ANCHOR_SAMPLINGS:
            assert values[f"spread {s} (%)"] >= 0 and values[f"KL {s}"] > 0
    assert set(result.model_runs) == {f"L{L}-{s}" for L in (5, 9) for s in ANCHOR_SAMPLINGS}
    configs = {k: env.store.get_run(r).config for k, r in result.model_runs.items()}
    assert {k: (c["model"]["degree"], c["diffusion"]["anchor_sampling"]) for k, c in configs.items()} == {
        f"L{L}-{s}": (L, s) for L in (5, 9) for s in ANCHOR_SAMPLINGS}
    spread = next(rows for title, rows in result.tables.items() if title.startswith("relative spread (%) of the batch-mean KL"))
    assert len(spread) == 2 * len(expected)  # each model measured with both estimators
    last = tiny_config().diffusion.steps - 1
    assert all(list(v) == ["t ~ U", "t=0", f"t={round(0.9 * last)}"] for v in spread.values())


@pytest.mark.parametrize(("given", "expected"), [([], "snap"), (["--projection", "clip"], "clip")])
def test_a_study_of_a_given_run_keeps_its_x0_projection(tmp_path, monkeypatch, given, expected):
    """`compare RUN` / `study anchors --run RUN`: a run selected with snap is sampled with snap unless told otherwise."""
    from types import SimpleNamespace

    from locdiff import cli
    from locdiff.cli import studies as cli_studies
    from locdiff.services import studies as study_services

    config = RunConfig.from_dict({"eval": {"projection": "snap"}, "workdir": str(tmp_path / "runs")})
    monkeypatch.setattr(cli_studies, "_given_model", lambda study, args, kwargs: SimpleNamespace(config=config))
    monkeypatch.setattr(cli_studies, "_source", lambda container, args: None)
    seen = []

    def runner(source, embedder, config, env, settings, **kwargs):
        seen.append(settings)
        raise SystemExit(0)  # stop before anything is written

    monkeypatch.setitem(study_services.RUNNERS, "compare", runner)
    parser = cli.build_parser()
    if "compare" not in parser._subparsers._group_actions[0].choices:
        cli_studies.register(parser._subparsers._group_actions[0])
    args = parser.parse_args(["compare", "runs/run-0001", "--workdir", str(tmp_path / "runs"), *given])
    with pytest.raises(SystemExit):
        args.func(args)
    assert seen[0].projection == expected


def test_compare_with_an_unreadable_eval_file_fails_before_any_work(env):
    """`eval RUN --compare --data MISSING.csv`: the file's error comes first — no training data embedded, no study run."""
    class Unreadable:
        name = "missing.csv"

        def load(self):
            raise ValueError("cannot read dataset missing.csv: file not found")

    class Counting(LocationEmbedder):
        calls = 0

        def embed_texts(self, texts):
            Counting.calls += 1
            return super().embed_texts(texts)

    runs = len(env.store.list_runs())
    with pytest.raises(ValueError, match="missing.csv"):
        studies.compare(SyntheticSource(), Counting(), tiny_config(), env, tiny("compare"), eval_source=Unreadable())
    assert Counting.calls == 0 and len(env.store.list_runs()) == runs
