"""Use case: train LocDiffusion (DDPM in SHDD space, SHDD-KL loss on fresh anchors; paper §4.6).

Every step's randomness (batch, anchors, timesteps, noise, dropout) is derived from
``(seed, step)`` alone, and checkpoints hold the model, the optimiser and the step: a run resumed
after Ctrl-C or a kill continues from its last checkpoint and ends where an uninterrupted run
with the same seed ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch

from locdiff import anchors
from locdiff.bundle import ModelBundle
from locdiff.ports import CheckpointRecord, CheckpointStore, Compute, ExperimentStore
from locdiff.services.data import PreparedData
from locdiff.services.progress import NullProgress, ProgressFactory


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step: a pure function of (seed, step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919) % (2**63 - 1))


def make_optimizer(bundle: ModelBundle) -> torch.optim.Optimizer:
    t = bundle.config.train
    return torch.optim.Adam(bundle.net.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value if name == "step" else value.to(device)
    sd["state"] = state
    opt.load_state_dict(sd)


@attrs.frozen
class TrainResult:
    step: int
    checkpoint: Path | None
    final_loss: float
    seconds: float
    interrupted: bool = False


def batch_loss(bundle: ModelBundle, data: PreparedData, index: torch.Tensor, g: torch.Generator, device: torch.device) -> torch.Tensor:
    cfg = bundle.config
    n = cfg.diffusion.anchors_per_batch
    a = anchors.uniform_random(n, g, dtype=torch.float32).to(device)
    return bundle.diffusion.loss(
        bundle.net,
        data.latlon[index].to(device=device, dtype=torch.float32),
        data.cond[index].to(device),
        a,
        kind=cfg.diffusion.loss,
        generator=g,
        degree=cfg.model.degree,
    )


def train(
    bundle: ModelBundle,
    data: PreparedData,
    *,
    compute: Compute,
    checkpoints: CheckpointStore,
    checkpoint_dir: Path,
    store: ExperimentStore | None = None,
    run_id: int | None = None,
    resume: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    progress: ProgressFactory | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``bundle.net`` on ``data.splits['train']`` until ``config.train.steps``."""
    cfg = bundle.config.train
    device = compute.device
    opt = make_optimizer(bundle)
    start = 0
    if resume is not None:
        tensors, meta = resume
        load_optimizer(opt, tensors, device)
        start = int(meta["step"])
    train_idx = data.splits["train"]
    if train_idx.numel() == 0:
        raise ValueError(f"dataset {data.name!r} has no training samples after splitting")
    val_idx = data.splits.get("val", torch.empty(0, dtype=torch.long))[:1024]
    bar = (progress or NullProgress)(total=cfg.steps, initial=start, desc="train")
    t0, last_ckpt, loss_ema, step = time.perf_counter(), None, None, start

    def save(at: int) -> Path:
        tensors = bundle.tensors() | optimizer_tensors(opt)
        path = checkpoints.save(checkpoint_dir, tensors, bundle.meta(at))
        if store is not None and run_id is not None:
            record = CheckpointRecord(
                path=str(path), sha256=checkpoints.sha256(path), degree=bundle.degree, dims=bundle.dim, embedder_id=bundle.embedder_id, step=at
            )
            store.add_checkpoint(run_id, record)
        return path

    bundle.net.train()
    try:
        while step < cfg.steps:
            g = step_generator(cfg.seed, step)
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))  # dropout stream
            index = train_idx[torch.randint(0, train_idx.numel(), (cfg.batch_size,), generator=g)]
            loss = batch_loss(bundle, data, index, g, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = float(loss.detach())
            loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}")
            if on_step is not None:
                on_step(step, value)
            if step % cfg.log_every == 0 or step == cfg.steps:
                metrics = {"loss": value, "loss_ema": loss_ema, "steps_per_s": (step - start) / (time.perf_counter() - t0)}
                if val_idx.numel():
                    metrics["val_loss"] = validation_loss(bundle, data, val_idx, device)
                if store is not None and run_id is not None:
                    store.log_metrics(run_id, step, metrics)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                last_ckpt = save(step)
    except KeyboardInterrupt:
        if step > start:
            last_ckpt = save(step)
        bar.close()
        return TrainResult(step, last_ckpt, loss_ema or float("nan"), time.perf_counter() - t0, interrupted=True)
    bar.close()
    bundle.net.eval()
    return TrainResult(step, last_ckpt, loss_ema or float("nan"), time.perf_counter() - t0)


@torch.no_grad()
def validation_loss(bundle: ModelBundle, data: PreparedData, val_idx: torch.Tensor, device: torch.device) -> float:
    """The training loss on validation items with a fixed generator (comparable across steps)."""
    was = bundle.net.training
    bundle.net.eval()
    loss = float(batch_loss(bundle, data, val_idx[:512], torch.Generator().manual_seed(12345), device))
    bundle.net.train(was)
    return loss

