"""The LocDiffusion model of a study: given, reused (a finished study model with the same training config) or trained."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import torch

from locdiff.config import RunConfig
from locdiff.core.bundle import ModelBundle
from locdiff.core.tables import StudyResult
from locdiff.services.data import PreparedData
from locdiff.services.studies.settings import StudyEnv, StudySettings, study_config
from locdiff.services.training import train

@attrs.frozen
class TrainedModel:
    bundle: ModelBundle
    run_id: int | None
    seconds: float
    steps: int
    peak_memory_mb: float
    final_loss: float


@contextlib.contextmanager
def peak_memory(env: StudyEnv) -> Iterator[dict[str, float]]:
    out = {"mb": math.nan}
    device = env.compute.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    elif env.memory is not None:
        with env.memory() as probe:
            yield out
        out["mb"] = float(probe.peak_bytes) / 2**20
    else:
        yield out


def training_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """What determines the trained weights: the model, diffusion, train and data sections (not eval, paths, device)."""
    full = RunConfig.from_dict(config).to_dict()
    return {k: full[k] for k in ("model", "diffusion", "train", "data")}


def reusable_model(config: RunConfig, env: StudyEnv, *, experiment: str) -> TrainedModel | None:
    """The newest finished study model (any ``study-*-model`` experiment) with the same training config as ``config``.

    Its final checkpoint must exist under ``<workdir>/studies/<experiment>-<run>/checkpoints``.
    Training time comes from the run's logged ``steps_per_s`` and the peak memory from its
    ``peak_mem_MB`` metric (NaN for runs that did not log it).
    """
    if env.store is None or not env.reuse_models:
        return None
    key = training_key(config.to_dict())
    for record in sorted(env.store.list_runs(), key=lambda r: -r.run_id):
        if not (record.experiment.startswith("study-") and record.experiment.endswith("-model")) or record.status != "finished":
            continue
        try:
            if training_key(record.config) != key:
                continue
        except (ValueError, TypeError, KeyError):
            continue
        target = env.checkpoints.latest(env.workdir / "studies" / f"{record.experiment}-{record.run_id}" / "checkpoints")
        if target is None:
            continue
        tensors, meta = env.checkpoints.load(target)
        if int(meta.get("step", -1)) != config.train.steps:
            continue
        bundle = ModelBundle.from_checkpoint(tensors, meta, env.compute.device, where=str(target))
        m = record.metrics
        rate = m.get("steps_per_s", math.nan)
        env.say(f"{experiment}: reusing run {record.run_id} ({target}), trained with the same config")
        return TrainedModel(bundle, record.run_id, config.train.steps / rate if rate > 0 else math.nan, config.train.steps,
                            m.get("peak_mem_MB", math.nan), m.get("loss_ema", math.nan))
    return None


def train_model(config: RunConfig, data: PreparedData, env: StudyEnv, *, experiment: str) -> TrainedModel:
    """Train one LocDiffusion model with :func:`locdiff.services.training.train` (a run of its own), or reuse one."""
    reused = reusable_model(config, env, experiment=experiment)
    if reused is not None:
        if reused.bundle.embedder_id != data.embedder_id:
            raise ValueError(f"run {reused.run_id}: trained on {reused.bundle.embedder_id!r}, data embedded with {data.embedder_id!r}")
        return reused  # from_checkpoint leaves the net in eval mode
    run_id = env.store.start_run(experiment, config.to_dict(), env.code_version) if env.store is not None else None
    torch.manual_seed(config.train.seed)  # the initial weights depend on the seed alone (as `train`)
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, env.compute.device)
    folder = env.workdir / "studies" / f"{experiment}-{run_id if run_id is not None else int(time.time())}"
    env.say(f"training {experiment}: L={config.model.degree}, loss={config.diffusion.loss}, {config.train.steps} steps, batch {config.train.batch_size}")
    try:
        with peak_memory(env) as mem:
            result = train(bundle, data, compute=env.compute, checkpoints=env.checkpoints, checkpoint_dir=folder / "checkpoints",
                           store=env.store, run_id=run_id, progress=env.progress)
    except BaseException:
        if env.store is not None and run_id is not None:
            env.store.finish_run(run_id, "failed")
        raise
    if env.store is not None and run_id is not None:
        env.store.log_metrics(run_id, result.step, {"peak_mem_MB": mem["mb"], "train_s": result.seconds})
        env.store.finish_run(run_id, "interrupted" if result.interrupted else "finished")
    if result.interrupted:
        raise KeyboardInterrupt
    bundle.net.eval()
    return TrainedModel(bundle, run_id, result.seconds, result.step, mem["mb"], result.final_loss)



def model_for(config: RunConfig, data: PreparedData, env: StudyEnv, settings: StudySettings, study: str,
               bundle: ModelBundle | None, result: StudyResult) -> ModelBundle:
    if bundle is not None:
        if bundle.embedder_id != data.embedder_id:
            raise ValueError(f"the model was trained on {bundle.embedder_id!r} embeddings, the data is embedded with {data.embedder_id!r}")
        bundle.net.to(env.compute.device).eval()
        return bundle
    trained = train_model(study_config(config, settings), data, env, experiment=f"study-{study}-model")
    if trained.run_id is not None:
        result.model_runs["locdiff"] = trained.run_id
    return trained.bundle


def describe(bundle: ModelBundle) -> str:
    c = bundle.config
    return f"LocDiffusion (L={bundle.degree}, {c.diffusion.loss}, {c.train.steps} steps)"

