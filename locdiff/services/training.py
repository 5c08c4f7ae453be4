"""Use case: train LocDiffusion (DDPM in SHDD space, SHDD-KL loss on fresh anchors; paper §4.6).

Every step's randomness (batch, anchors, timesteps, noise, dropout) is derived from
``(seed, step)`` alone, and checkpoints hold the model, the optimiser and the step: a run resumed
after Ctrl-C or a kill continues from its last checkpoint and ends where an uninterrupted run
with the same seed ends. A stop request (``should_stop``, e.g. wired to SIGINT by the CLI) or a
``KeyboardInterrupt`` ends training at a step boundary with a checkpoint of that exact step; an
interrupt that lands inside the optimiser update saves nothing (the weights are half-updated) and
the run resumes from its previous checkpoint instead.

Distributed data parallel (``world > 1``, an initialised ``torch.distributed`` process group):
every rank derives the same *global* batch, anchors, timesteps and noise from ``(seed, step)`` and
computes the loss on its contiguous shard of rows, scaled so that DDP's gradient average equals
the gradient of the global-batch loss; the update is therefore single-process training on the same
global batch (exactly so without dropout; dropout masks are drawn per rank). Only rank 0 writes
checkpoints, metrics and progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch

from locdiff.core import anchors
from locdiff.core.bundle import ModelBundle
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


def shard_rows(batch: int, rank: int, world: int) -> slice:
    """The contiguous rows of a global batch that ``rank`` of ``world`` computes."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} process(es)")
    return slice(rank * batch // world, (rank + 1) * batch // world)


def check_trainable(bundle: ModelBundle, data: PreparedData, *, world: int = 1) -> None:
    """Everything :func:`train` needs, checked up front (``ValueError`` naming what is wrong).

    Entry points call this before recording a run, so bad input never leaves a half-made run.
    """
    cfg = bundle.config.train
    if data.embedder_id != bundle.embedder_id:
        raise ValueError(
            f"dataset {data.name!r} was embedded with {data.embedder_id!r}, but the model is for {bundle.embedder_id!r} embeddings"
        )
    if data.cond_dim != bundle.cond_dim:
        raise ValueError(f"dataset {data.name!r}: embeddings are {data.cond_dim}-dimensional, the model expects {bundle.cond_dim}")
    if data.splits.get("train", torch.empty(0)).numel() == 0:
        raise ValueError(f"dataset {data.name!r} has no training samples after splitting")
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    if cfg.batch_size < world:
        raise ValueError(f"train.batch_size={cfg.batch_size} is smaller than the number of processes ({world})")


def draw_batch(
    bundle: ModelBundle, index_pool: torch.Tensor, g: torch.Generator, batch: int, latlon: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The global batch of one step from its generator: row indices, anchors, timesteps and noise (CPU).

    Draw order (indices, anchors, t, ε) is fixed: it defines the run's randomness. ``latlon`` (every
    item's location) is needed only for importance anchors.
    """
    index = index_pool[torch.randint(0, index_pool.numel(), (batch,), generator=g)]
    return draw_noise(bundle, index, g, None if latlon is None else latlon[index]) | {"index": index}


def draw_noise(bundle: ModelBundle, index: torch.Tensor, g: torch.Generator, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Anchors (shared by the batch; with their log areas when importance-sampled around ``targets``),
    timesteps [B] and noise [B, D] for batch ``index`` (CPU)."""
    cfg = bundle.config
    b = index.shape[0]
    drawn: dict[str, torch.Tensor] = {}
    drawn["anchors"], log_area = anchors.draw(cfg.diffusion.anchor_sampling, cfg.diffusion.anchors_per_batch, g, targets=targets,
                                              degree=cfg.model.degree, uniform_share=cfg.diffusion.uniform_share)
    if log_area is not None:
        drawn["anchor_log_weights"] = log_area
    drawn["t"] = torch.randint(0, bundle.diffusion.schedule.steps, (b,), generator=g, device=g.device)
    drawn["noise"] = torch.randn((b, bundle.dim), generator=g, device=g.device, dtype=torch.float32)
    return drawn


def batch_loss(
    bundle: ModelBundle,
    data: PreparedData,
    index: torch.Tensor,
    g: torch.Generator,
    device: torch.device,
    *,
    rows: slice | None = None,
    model: torch.nn.Module | None = None,
    drawn: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The loss of batch ``index`` (anchors, t and ε drawn from ``g`` for the whole batch), on ``rows`` only."""
    cfg = bundle.config
    drawn = drawn if drawn is not None else draw_noise(bundle, index, g, data.latlon[index])
    rows = rows if rows is not None else slice(0, index.shape[0])
    idx = index[rows]
    cond = data.cond[idx].to(device)
    return bundle.diffusion.loss(
        model if model is not None else bundle.net,
        data.latlon[idx].to(device=device, dtype=torch.float32),
        cond,
        drawn["anchors"].to(device),
        kind=cfg.diffusion.loss,
        l2_weight=cfg.diffusion.l2_weight,
        weighting=cfg.diffusion.weighting,
        anchor_log_weights=drawn.get("anchor_log_weights"),
        snr_max=cfg.diffusion.snr_max,
        degree=cfg.model.degree,
        t=drawn["t"][rows],
        noise=drawn["noise"][rows].to(cond.dtype),
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
    should_stop: Callable[[], bool] | None = None,
    rank: int = 0,
    world: int = 1,
) -> TrainResult:
    """Train ``bundle.net`` on ``data.splits['train']`` until ``config.train.steps``.

    ``should_stop`` is polled after every step; when it returns True (on any rank) training
    stops there with a checkpoint, like a ``KeyboardInterrupt``. With ``world > 1`` the default
    ``torch.distributed`` process group must be initialised; ``store``/``progress``/checkpoints are
    used on rank 0 only.
    """
    check_trainable(bundle, data, world=world)
    cfg = bundle.config.train
    device = compute.device
    lead = rank == 0
    opt = make_optimizer(bundle)
    start = 0
    resumed_ema = None
    if resume is not None:
        tensors, meta = resume
        load_optimizer(opt, tensors, device)
        start = int(meta["step"])
        ema = meta.get("loss_ema")  # restored, so a resumed run reports what an uninterrupted one does
        resumed_ema = float(ema) if isinstance(ema, (int, float)) and not isinstance(ema, bool) else None
    if lead:  # leftovers of a save or prune cut short by a kill; the store then matches the disk again
        checkpoints.clean(checkpoint_dir)
        if store is not None and run_id is not None:
            store.forget_missing_checkpoints(run_id)
    model: torch.nn.Module = bundle.net
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_world_size() != world or dist.get_rank() != rank:
            raise ValueError(f"distributed training as rank {rank} of {world} needs an initialised process group of that size")
        model = torch.nn.parallel.DistributedDataParallel(bundle.net, device_ids=[device.index] if device.type == "cuda" else None)
    train_idx = data.splits["train"]
    rows = shard_rows(cfg.batch_size, rank, world)
    share = (rows.stop - rows.start) * world / cfg.batch_size  # DDP averages: shard sum * world / B
    val_idx = data.splits.get("val", torch.empty(0, dtype=torch.long))[:1024]
    bar = (progress or NullProgress)(total=cfg.steps, initial=start, desc="train") if lead else NullProgress()
    t0, last_ckpt, last_saved, loss_ema, step = time.perf_counter(), None, start, resumed_ema, start
    consistent = True  # the weights and optimiser state are exactly those after ``step`` steps
    stop = should_stop or (lambda: False)

    def save(at: int) -> Path:
        tensors = bundle.tensors() | optimizer_tensors(opt)
        meta = bundle.meta(at) | ({"loss_ema": loss_ema} if loss_ema is not None and loss_ema == loss_ema else {})
        path = checkpoints.save(checkpoint_dir, tensors, meta)
        if store is not None and run_id is not None:
            record = CheckpointRecord(
                path=str(path), sha256=checkpoints.sha256(path), degree=bundle.degree, dims=bundle.dim, embedder_id=bundle.embedder_id, step=at
            )
            store.add_checkpoint(run_id, record)
            store.forget_missing_checkpoints(run_id)  # the ones the save just pruned
        return path

    bundle.net.train()
    try:
        while step < cfg.steps:
            g = step_generator(cfg.seed, step)
            dropout_seed = int(torch.randint(0, 2**62, (1,), generator=g))
            torch.manual_seed(dropout_seed + rank)  # dropout stream (per rank: shards need their own masks)
            drawn = draw_batch(bundle, train_idx, g, cfg.batch_size, data.latlon)
            loss = batch_loss(bundle, data, drawn["index"], g, device, rows=rows, model=model, drawn=drawn)
            if world > 1:
                loss = loss * share
            opt.zero_grad(set_to_none=True)
            loss.backward()
            consistent = False
            opt.step()
            step += 1
            consistent = True
            halt = bool(stop())
            if world > 1:  # one collective per step: the global loss and any rank's stop request
                summary = torch.stack((loss.detach().float(), torch.tensor(float(halt), device=loss.device)))
                dist.all_reduce(summary)
                value, halt = float(summary[0]) / world, bool(summary[1] > 0)
            else:
                value = float(loss.detach())
            loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}")
            if on_step is not None:
                on_step(step, value)
            if lead and (step % cfg.log_every == 0 or step == cfg.steps):
                metrics = {"loss": value, "loss_ema": loss_ema, "steps_per_s": (step - start) / (time.perf_counter() - t0)}
                if val_idx.numel():
                    metrics["val_loss"] = validation_loss(bundle, data, val_idx, device)
                if store is not None and run_id is not None:
                    store.log_metrics(run_id, step, metrics)
            if lead and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                last_ckpt, last_saved = save(step), step
            if halt and step < cfg.steps:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if not consistent:  # interrupted inside the update: the weights are half-updated, save nothing
            step = last_saved
        elif lead and step > last_saved:
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
