"""Every use case with in-memory fake ports (tests/support/fakes.py): no database, no files, no model download."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch

from locdiff.config import RunConfig
from locdiff.core.bundle import ModelBundle
from locdiff.core.diffusion import DEFAULT_SAMPLER
from locdiff.core.reduction import REDUCERS
from locdiff.core.sampling import PredictSettings
from locdiff.ports import GeoSamples
from locdiff.services import studies
from locdiff.services.data import prepare
from locdiff.services.evaluation import evaluate
from locdiff.services.prediction import PredictionService
from locdiff.services.training import train
from locdiff.services.training_run import TrainingPorts, read_resume, run_training
from tests.support.fakes import FakeCheckpoints, FakeCompute, FakeEmbedder, FakeRunFolder, FakeSource, FakeStore

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_config(diffusion: dict | None = None, **train) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"degree": 3, "widths": [16, 8], "time_dim": 8}, "diffusion": {"steps": 10, "anchors_per_batch": 64} | (diffusion or {}),
        "train": {"batch_size": 16, "steps": 6, "log_every": 2, "checkpoint_every": 3} | train,
        "data": {"val_fraction": 0.2, "test_fraction": 0.2}, "eval": {"samples": 2, "sampler_steps": 2, "max_items": 8},
        "workdir": "fake-runs",
    })


def ports(store: FakeStore, checkpoints: FakeCheckpoints, folder: FakeRunFolder, progress=None) -> TrainingPorts:
    return TrainingPorts(compute=FakeCompute(), checkpoints=checkpoints, store=lambda: store, embedder=FakeEmbedder,
                         dataset=FakeSource, run_folder=folder, code_version="test")


def trained_bundle(config: RunConfig | None = None):
    config = config or tiny_config()
    data = prepare(FakeSource(), FakeEmbedder(), config.data)
    torch.manual_seed(0)
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, torch.device("cpu"))
    train(bundle, data, compute=FakeCompute(), checkpoints=FakeCheckpoints(), checkpoint_dir=Path("ck"))
    return bundle, data


class OneBadItem(FakeSource):
    def load(self) -> GeoSamples:
        s = super().load()
        return attrs.evolve(s, ids=s.ids[:-1] + ("broken",), items=s.items[:-1] + ("bad",))


def test_prepare_embeds_splits_and_reports_what_failed():
    data = prepare(OneBadItem(60), FakeEmbedder(), tiny_config().data)
    assert [f.item for f in data.failures] == ["bad"] and len(data.ids) == 59 and "broken" not in data.ids
    covered = torch.cat([data.splits[k] for k in ("train", "val", "test")]).sort().values
    assert torch.equal(covered, torch.arange(59)) and data.splits["holdout"].numel() == 0
    assert data.cond.shape == (59, FakeEmbedder.dim) and data.embedder_id == FakeEmbedder.id


def test_train_records_metrics_and_checkpoints_through_the_ports():
    config = tiny_config()
    data = prepare(FakeSource(), FakeEmbedder(), config.data)
    store, checkpoints = FakeStore(), FakeCheckpoints()
    run_id = store.start_run("t", config.to_dict(), "test")
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, torch.device("cpu"))
    result = train(bundle, data, compute=FakeCompute(), checkpoints=checkpoints, checkpoint_dir=Path("run/checkpoints"),
                   store=store, run_id=run_id)
    assert result.step == 6 and not result.interrupted and result.checkpoint == Path("run/checkpoints/step-00000006")
    assert [c.step for c in store.checkpoints(run_id)] == [3, 6]
    assert {"loss", "loss_ema", "val_loss"} <= set(store.get_run(run_id).metrics)


def test_a_run_is_opened_trained_evaluated_and_finished():
    store, checkpoints, folder = FakeStore(), FakeCheckpoints(), FakeRunFolder()
    outcome = run_training(tiny_config(), ports(store, checkpoints, folder))
    assert outcome.run_id == 1 and outcome.run_dir == Path("fake-runs/run-0001") and outcome.result.step == 6
    assert store.runs[1]["history"] == ["running", "finished"] and store.runs[1]["code_version"] == "test"
    config_json, run_json = folder.folders[outcome.run_dir]
    # the record's creation time identifies the run beyond its id (eval of a folder beside another store's run 1)
    assert run_json == {"run_id": 1, "store": None, "created": store.get_run(1).created_at.isoformat()}
    assert config_json["model"]["degree"] == 3
    assert set(outcome.evaluations) == {"test"} and outcome.evaluations["test"].metrics["n"] == 8
    names = [name for r, name, _ in store.evaluations if r == 1]
    label = f"fake:test:{DEFAULT_SAMPLER}2"  # the eval section's sampler (the default) and its 2 steps
    assert {label} | {f"{label}:{r}" for r in REDUCERS} <= set(names)


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one():
    straight = FakeCheckpoints()
    run_training(tiny_config(), ports(FakeStore(), straight, FakeRunFolder()), evaluate_after=False)

    class StopAtStep3:
        def __init__(self, *, total, desc, initial=0):
            self.n = initial

        def update(self, n=1):
            self.n += n
            if self.n == 3:
                raise KeyboardInterrupt

        def set_postfix(self, *a, **k):
            pass

        def close(self):
            pass

    store, checkpoints, folder = FakeStore(), FakeCheckpoints(), FakeRunFolder()
    stopped = run_training(tiny_config(), ports(store, checkpoints, folder), progress=StopAtStep3)
    assert stopped.result.interrupted and stopped.result.step == 3 and store.runs[1]["status"] == "interrupted"
    resume = read_resume(stopped.run_dir, checkpoints, folder)
    assert resume.run_id == 1 and resume.checkpoint.name == "step-00000003" and resume.config.workdir == "fake-runs"
    done = run_training(resume.config, ports(store, checkpoints, folder), resume=resume, evaluate_after=False)
    assert done.run_id == 1 and done.result.step == 6
    assert store.runs[1]["history"] == ["running", "interrupted", "running", "finished"]
    a, _ = straight.load(Path("fake-runs/run-0001/checkpoints/step-00000006"))
    b, _ = checkpoints.load(Path("fake-runs/run-0001/checkpoints/step-00000006"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_importance_anchors_and_snr_weighting_train_reproducibly_and_change_the_update():
    options = {"anchor_sampling": "importance", "uniform_share": 0.25, "weighting": "snr-clamp", "snr_max": 3.0}
    runs = []
    for diffusion in (options, options, None):
        checkpoints = FakeCheckpoints()
        run_training(tiny_config(diffusion), ports(FakeStore(), checkpoints, FakeRunFolder()), evaluate_after=False)
        runs.append(checkpoints.load(Path("fake-runs/run-0001/checkpoints/step-00000006"))[0])
    first, again, uniform = runs
    model_keys = [k for k in first if k.startswith("model.")]
    assert all(torch.equal(first[k], again[k]) for k in model_keys)  # randomness from (seed, step) only
    assert any(not torch.equal(first[k], uniform[k]) for k in model_keys)  # the options reach the loss


def test_a_v_parameterized_model_trains_and_reloads_as_a_v_model_with_its_l0_head():
    checkpoints = FakeCheckpoints()
    config = attrs.evolve(tiny_config({"loss": "kl+l2", "l2_weight": 0.5}),
                          model=attrs.evolve(tiny_config().model, parameterization="v", fix_l0=True))
    run_training(config, ports(FakeStore(), checkpoints, FakeRunFolder()), evaluate_after=False)
    tensors, meta = checkpoints.load(Path("fake-runs/run-0001/checkpoints/step-00000006"))
    bundle = ModelBundle.from_checkpoint(tensors, meta, torch.device("cpu"))
    assert bundle.diffusion.parameterization == "v" and bundle.diffusion.l0 == 1.0
    x, t, c = torch.randn(4, bundle.dim), torch.tensor([0, 3, 6, 9]), torch.randn(4, bundle.cond_dim)
    x0 = bundle.diffusion.predict_x0(bundle.net, x, t, c)
    assert torch.equal(x0[:, 0], torch.ones(4))
    abar = bundle.diffusion.schedule.alphas_cumprod.float()[t][:, None]
    assert torch.allclose(x0[:, 1:], (abar.sqrt() * x - (1 - abar).sqrt() * bundle.net(x, t, c))[:, 1:], atol=1e-6)


def test_a_run_being_trained_is_not_resumed_by_a_second_trainer():
    store, checkpoints, folder = FakeStore(), FakeCheckpoints(), FakeRunFolder()
    first = run_training(tiny_config(), ports(store, checkpoints, folder), evaluate_after=False)
    assert folder.locked == set()  # released when the run ended
    store.reopen_run(first.run_id)
    resume = read_resume(first.run_dir, checkpoints, folder)
    with folder.lock(first.run_dir), pytest.raises(ValueError, match="being trained by another process"):
        run_training(resume.config, ports(store, checkpoints, folder), resume=resume)
    assert store.runs[1]["history"][-1] == "running"  # the refused trainer changed nothing


def test_resume_refuses_a_folder_that_is_no_run():
    with pytest.raises(ValueError, match="not a run folder"):
        read_resume(Path("nowhere"), FakeCheckpoints(), FakeRunFolder())


def test_bad_input_records_no_run():
    class AllBad(FakeSource):
        def load(self) -> GeoSamples:
            s = super().load()
            return attrs.evolve(s, items=("bad",) * len(s))

    store, folder = FakeStore(), FakeRunFolder()
    with pytest.raises(ValueError, match="no item could be embedded"):
        run_training(tiny_config(), attrs.evolve(ports(store, FakeCheckpoints(), folder), dataset=AllBad))
    assert store.runs == {} and folder.folders == {}


def test_evaluate_stores_the_configured_reducer_and_every_other():
    bundle, data = trained_bundle()
    store = FakeStore()
    run_id = store.start_run("e", {}, "test")
    ev = evaluate(bundle, data, "test", bundle.config.eval, device=torch.device("cpu"), store=store, run_id=run_id)
    assert ev.samples.shape == (8, 2, 2) and set(ev.by_reducer) == set(REDUCERS)
    chosen = ev.by_reducer[bundle.config.eval.reducer]
    assert {k: ev.metrics[k] for k in chosen} == chosen  # the configured reducer's figures (plus any the evaluation adds)
    assert bundle.config.eval.scores  # the default: every accuracy and every score with its 95 % interval
    for key in [f"acc@{km}km" for km in (1, 25, 200, 750, 2500)] + ["nll", "energy_km", "coverage@50"]:
        assert ev.metrics[f"{key}_lo"] <= ev.metrics[key] <= ev.metrics[f"{key}_hi"], key
    names = [name for _, name, _ in store.evaluations]
    label = f"fake:test:{DEFAULT_SAMPLER}2"
    assert names[: 1 + len(REDUCERS)] == [label] + [f"{label}:{r}" for r in REDUCERS]
    with pytest.raises(ValueError, match="unknown split"):
        evaluate(bundle, data, "nope", bundle.config.eval, device=torch.device("cpu"))


def test_prediction_is_a_distribution_seeded_by_its_settings():
    bundle, _ = trained_bundle()
    service = PredictionService(bundle, FakeEmbedder(), torch.device("cpu"))
    settings = PredictSettings(samples=4, steps=3, seed=0, grid_lat=18, grid_lon=36, top_modes=2)
    first, again = service.predict_text("48.85,2.35", settings), service.predict_text("48.85,2.35", settings)
    assert first.samples.shape == (4, 2) and torch.equal(first.samples, again.samples) and first.point == again.point
    assert -90 <= first.point[0] <= 90 and 1 <= len(first.modes) <= 2 and first.grid.mass.shape == (18, 36)
    assert float(first.grid.mass.sum()) == pytest.approx(1.0, abs=1e-6) and set(first.credible) == {0.5, 0.9, 0.95}
    with pytest.raises(ValueError, match="cannot embed"):
        service.predict_text("bad", settings)
    other = attrs.evolve(bundle, embedder_id="another-embedder")
    with pytest.raises(ValueError, match="trained on embeddings"):
        PredictionService(other, FakeEmbedder(), torch.device("cpu"))


def test_a_study_is_one_stored_run_whose_cells_rebuild_its_tables():
    store = FakeStore()
    env = studies.StudyEnv(compute=FakeCompute(), checkpoints=FakeCheckpoints(), store=store, workdir=Path("fake"))
    settings = studies.default_settings("compare", quick=True, steps=6, batch_size=16, eval_items=8, samples=2, sampler_steps=2,
                                        baseline_steps=5, baseline_cells=(4,))
    result = studies.compare(FakeSource(), FakeEmbedder(), tiny_config(), env, settings)
    (table,) = result.tables.values()
    assert {"kNN (k=1)", "kNN (k=10, weighted)", "random guess"} <= set(table) and any(r.startswith("LocDiffusion") for r in table)
    record = store.get_run(result.run_id)
    assert record.status == "finished" and record.experiment == "study-compare"
    assert studies.StudyResult.from_run(record).tables == result.tables
    assert store.get_run(result.model_runs["locdiff"]).experiment == "study-compare-model"
