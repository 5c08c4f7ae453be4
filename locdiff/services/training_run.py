"""Use case: a training run's whole lifecycle, around the loop of :mod:`locdiff.services.training`.

Open a run (experiment store + ``<workdir>/run-NNNN/{config,run}.json``, the folder locked: one
trainer per run) or reopen one to resume from its last checkpoint; train with Ctrl-C / SIGTERM
stopping at a step boundary with a checkpoint (twice: at once); evaluate on test and hold-out;
finish the run as ``finished``, ``interrupted`` or ``failed``. Under ``torchrun`` every rank runs this: rank 0 records, embeds first and evaluates;
a failure on any rank stops every rank (:class:`PeerFailed` on the others).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch

from locdiff.config import RunConfig, apply_overrides
from locdiff.core.bundle import ModelBundle
from locdiff.ports import CheckpointStore, Compute, DatasetSource, Embedder, ExperimentStore, ProgressFactory, RunFolder
from locdiff.services.data import PreparedData, prepare
from locdiff.services.evaluation import Evaluation, evaluate
from locdiff.services.training import TrainResult, check_trainable, train

Say = Callable[[str], None]


class PeerFailed(Exception):
    """Another rank failed (and reports it); this one stops quietly."""


@attrs.frozen
class Resume:
    """An interrupted run to continue: its folder, id, last checkpoint and config (``train.steps`` may be raised)."""

    run_dir: Path
    run_id: int
    checkpoint: Path | None  # None: the run died before its first checkpoint (it restarts from step 0)
    config: RunConfig


@attrs.frozen
class TrainingPorts:
    """What a run needs. ``store``/``embedder``/``dataset`` are opened when needed (the store on rank 0 only);
    ``distributed(device)`` joins torchrun's process group and returns (rank, world), or None alone."""

    compute: Compute
    checkpoints: CheckpointStore
    store: Callable[[], ExperimentStore]
    embedder: Callable[[], Embedder]
    dataset: Callable[[], DatasetSource]
    run_folder: RunFolder
    distributed: Callable[[torch.device], tuple[int, int] | None] = lambda device: None
    code_version: str = "unknown"


@attrs.frozen
class RunOutcome:
    """How the run ended on this rank; ``evaluations`` holds the lead rank's test / hold-out evaluations."""

    run_id: int | None
    run_dir: Path | None
    result: TrainResult | None
    evaluations: dict[str, Evaluation] = attrs.field(factory=dict)
    lead: bool = True
    seconds: float = 0.0


def read_resume(run_dir: Path, checkpoints: CheckpointStore, run_folder: RunFolder, *, steps: int | None = None) -> Resume:
    """The run in ``run_dir`` ready to resume (``ValueError`` if it is not a run folder or has no checkpoint).

    The workdir and store come from the run folder (a checkpoint never chooses where anything is written).
    """
    run_dir = Path(run_dir)
    meta_run = run_folder.read(run_dir)
    if meta_run is None:
        raise ValueError(f"{run_dir}: not a run folder (no run.json); --resume takes the folder a run was created in")
    target = checkpoints.latest(run_dir / "checkpoints")
    if target is None:  # killed before its first checkpoint: start again from step 0 with the run's recorded config
        recorded = run_folder.read_config(run_dir)
        if recorded is None:
            raise ValueError(f"{run_dir}: no checkpoint and no config.json to resume from")
        config = RunConfig.from_dict(recorded, where=str(run_dir / "config.json"))
    else:
        tensors, meta = checkpoints.load(target)
        config = ModelBundle.from_checkpoint(tensors, meta, torch.device("cpu"), where=str(target)).config
    config = attrs.evolve(config, workdir=str(run_dir.parent), store_url=meta_run.get("store"))
    if steps:
        config = RunConfig.from_dict(apply_overrides(config.to_dict(), {"train.steps": steps}))
    return Resume(run_dir, int(meta_run["run_id"]), target, config)


class _Ranks:
    """This process's rank of ``world``; :meth:`together` makes one rank's failure every rank's."""

    def __init__(self, rank: int, world: int, device: torch.device) -> None:
        self.rank, self.world, self.lead = rank, world, rank == 0
        self.device = device if device.type == "cuda" else torch.device("cpu")

    def together(self, fn: Callable[[], Any], on_this_rank: bool = True) -> Any:
        """Run ``fn`` (here, if ``on_this_rank``); if it fails on any rank, every rank stops."""
        out, err = None, None
        if on_this_rank:
            try:
                out = fn()
            except Exception as exc:  # re-raised below, after the other ranks have heard of it
                err = exc
        if self.world > 1:
            import torch.distributed as dist

            flag = torch.tensor([float(err is not None)], device=self.device)
            dist.all_reduce(flag)
            if err is None and float(flag) > 0:
                raise PeerFailed
        if err is not None:
            raise err
        return out

    def share(self, values: list[Any]) -> list[Any]:
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(values, src=0)
        return values


@contextlib.contextmanager
def stop_requests(say: Say | None) -> Iterator[list[int]]:
    """While open, SIGINT / SIGTERM ask training to stop after this step (a second one stops at once)."""
    requests: list[int] = []

    def request_stop(signum: int, frame: Any) -> None:
        if requests:
            raise KeyboardInterrupt
        requests.append(signum)
        if say is not None:
            say("\nstopping after this step (Ctrl-C again to stop at once)")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _make_bundle(config: RunConfig, data: PreparedData, ports: TrainingPorts, resume: Resume | None, world: int):
    if resume is not None and resume.checkpoint is not None:
        tensors, meta = ports.checkpoints.load(resume.checkpoint)
        loaded = ModelBundle.from_checkpoint(tensors, meta, ports.compute.device, where=str(resume.checkpoint),
                                             expect_embedder=data.embedder_id)
        loaded = attrs.evolve(loaded, config=config)  # e.g. a larger train.steps given with --resume
        check_trainable(loaded, data, world=world)
        return loaded, (tensors, meta)
    torch.manual_seed(config.train.seed)  # the initial weights depend on the seed alone
    created = ModelBundle.create(config, data.cond_dim, data.embedder_id, ports.compute.device)
    check_trainable(created, data, world=world)  # before a run is recorded: bad input leaves nothing behind
    return created, None


def _open_run(config: RunConfig, store: ExperimentStore, ports: TrainingPorts, resume: Resume | None,
              held: contextlib.ExitStack) -> tuple[int, Path]:
    """Record the run (or reopen it) and hold its folder's lock (``held``) until the run ends."""
    if resume is not None:
        held.enter_context(ports.run_folder.lock(resume.run_dir))  # before anything changes: one trainer per run
        record = store.get_run(resume.run_id)
        if record.status != "running" or record.stale:
            store.reopen_run(resume.run_id)  # interrupted, failed or killed before: running again, by this process
        return resume.run_id, resume.run_dir
    run_id = store.start_run(config.name, config.to_dict(), ports.code_version)
    run_dir = Path(config.workdir) / f"run-{run_id:04d}"
    # the record's creation time identifies the run beyond its id (a folder copied beside another store's run N)
    created = store.get_run(run_id).created_at.isoformat()
    ports.run_folder.create(run_dir, config.to_dict(), {"run_id": run_id, "store": config.store_url, "created": created})
    held.enter_context(ports.run_folder.lock(run_dir))
    return run_id, run_dir


def _evaluate_all(bundle: ModelBundle, data: PreparedData, config: RunConfig, ports: TrainingPorts, store: ExperimentStore,
                  run_id: int, progress: ProgressFactory | None) -> dict[str, Evaluation]:
    out = {}
    for split in ("test", "holdout"):
        if data.splits.get(split, torch.empty(0)).numel():
            out[split] = evaluate(bundle, data, split, config.eval, device=ports.compute.device, store=store, run_id=run_id,
                                  progress=progress)
    return out


def run_training(config: RunConfig, ports: TrainingPorts, *, resume: Resume | None = None, evaluate_after: bool = True,
                 say: Say | None = None, progress: ProgressFactory | None = None) -> RunOutcome:
    """Train one run from start (or ``resume``) to a finished, interrupted or failed record; see the module doc."""
    compute = ports.compute
    rank, world = ports.distributed(compute.device) or (0, 1)
    ranks = _Ranks(rank, world, compute.device)
    tell: Say = (say or (lambda m: None)) if ranks.lead else (lambda m: None)
    held = contextlib.ExitStack()
    try:
        store = ranks.together(ports.store, ranks.lead)
        embedder, source = ports.embedder(), ports.dataset()
        tell(f"LocDiff train: L={config.model.degree}, data={config.data.source}, embedder={config.data.embedder}, "
             f"device={compute.describe() if hasattr(compute, 'describe') else compute.device}"
             + (f", {world} processes" if world > 1 else ""))
        t0 = time.perf_counter()
        # rank 0 embeds first (filling the embedding cache), then the others read it
        data = ranks.together(lambda: prepare(source, embedder, config.data), ranks.lead)
        data = ranks.together(lambda: prepare(source, embedder, config.data), not ranks.lead) or data
        if data.failures:
            tell(f"skipped {len(data.failures)} item(s) that could not be embedded, e.g. {data.failures[0].item}: {data.failures[0].reason}")
        sizes = {k: int(v.numel()) for k, v in data.splits.items()}
        tell(f"data: {data.name}, {len(data.ids)} samples {sizes}, embedder {data.embedder_id} ({time.perf_counter() - t0:.0f} s)")
        bundle, state = ranks.together(lambda: _make_bundle(config, data, ports, resume, world))
        run_id, run_dir = ranks.together(lambda: _open_run(config, store, ports, resume, held), ranks.lead) or (None, None)
        run_id, shared_dir = ranks.share([run_id, None if run_dir is None else str(run_dir)])
        run_dir = Path(shared_dir)
        tell(f"resuming run {run_id} from {resume.checkpoint or 'the start (no checkpoint yet)'} (step {state[1]['step'] if state else 0})"
             if resume is not None else f"run {run_id}: {run_dir}")
        result = _train(bundle, data, ports, store, run_id, run_dir, state, ranks, say if ranks.lead else None, progress)
        outcome = RunOutcome(run_id, run_dir, result, lead=ranks.lead, seconds=time.perf_counter() - t0)
        if not ranks.lead or result.interrupted:
            if ranks.lead:
                store.finish_run(run_id, "interrupted")
            return outcome
        evaluations = {}
        if evaluate_after:
            with _finishing_on_error(store, run_id):
                evaluations = _evaluate_all(bundle, data, config, ports, store, run_id, progress)
        store.finish_run(run_id, "finished")
        return attrs.evolve(outcome, evaluations=evaluations, seconds=time.perf_counter() - t0)
    finally:
        held.close()
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


@contextlib.contextmanager
def _finishing_on_error(store: ExperimentStore, run_id: int) -> Iterator[None]:
    """The weights are saved: if the body fails, record why the run did not finish."""
    try:
        yield
    except BaseException as exc:
        store.finish_run(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise


def _train(bundle, data, ports: TrainingPorts, store, run_id, run_dir: Path, state, ranks: _Ranks, say: Say | None,
           progress: ProgressFactory | None) -> TrainResult:
    with stop_requests(say) as requests:
        if ranks.lead:
            with _finishing_on_error(store, run_id):
                return _loop(bundle, data, ports, store, run_id, run_dir, state, ranks, requests, progress)
        return _loop(bundle, data, ports, None, None, run_dir, state, ranks, requests, None)


def _loop(bundle, data, ports, store, run_id, run_dir, state, ranks, requests, progress) -> TrainResult:
    return train(bundle, data, compute=ports.compute, checkpoints=ports.checkpoints, checkpoint_dir=run_dir / "checkpoints",
                 store=store, run_id=run_id, resume=state, progress=progress, should_stop=lambda: bool(requests),
                 rank=ranks.rank, world=ranks.world)
