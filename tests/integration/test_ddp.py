"""Distributed data parallel training (gloo, 2 CPU processes) equals single-process training on the
same global batch.

Every rank draws the global batch, anchors, timesteps and noise from (seed, step) and computes its
contiguous shard of rows, scaled so DDP's gradient average is the global-batch gradient. Without
dropout the weights after N steps must therefore match one process training on the whole batch
(up to float rounding of the gradient all-reduce). Only rank 0 writes checkpoints and store rows.

This file is also the worker script: ``torchrun --nproc_per_node=2 tests/integration/test_ddp.py OUT``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # when run as a torchrun worker script
    sys.path.insert(0, str(ROOT))

from adapters.checkpoints import SafetensorsCheckpointStore
from adapters.compute import TorchCompute, init_distributed
from locdiff.core.bundle import ModelBundle
from locdiff.config import RunConfig
from locdiff.core.geo import to_xyz
from locdiff.services.data import PreparedData
from locdiff.services.training import shard_rows, train
from locdiff.core.splits import split_by_hash

STEPS = 20
TOL = 1e-5
# The SHDD KL is blind to the l=0 coefficient (a constant added to every anchor's logit cancels in the
# softmax), so the output row predicting it gets a gradient that is pure float rounding, which Adam
# rescales to lr-sized steps: there DDP and one process agree only loosely (bounded by lr * steps).
BLIND = {"model.out.weight": 0, "model.out.bias": 0}
BLIND_TOL = 1e-3


def tiny_data() -> PreparedData:
    g = torch.Generator().manual_seed(7)
    n = 300
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    latlon = torch.stack((torch.rad2deg(torch.asin(2 * u[:, 0] - 1)), 360 * u[:, 1] - 180), -1)
    cond = torch.cat((to_xyz(latlon).float(), 0.1 * torch.randn(n, 13, generator=g)), 1)
    ids = tuple(f"p{i}" for i in range(n))
    splits = split_by_hash(ids, val=0.05, test=0.1) | {"holdout": torch.empty(0, dtype=torch.long)}
    return PreparedData("tiny", cond, latlon, ids, ids, splits, "fake:xyz")


def tiny_config(batch: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"degree": 5, "widths": [32, 16], "time_dim": 8, "dropout": 0.0},
            "diffusion": {"steps": 20, "anchors_per_batch": 256},
            "train": {"batch_size": batch, "steps": STEPS, "lr": 1e-3, "seed": 11, "checkpoint_every": 10, "log_every": 5},
        }
    )


class CountingStore:
    """An ExperimentStore stand-in that counts writes."""

    def __init__(self):
        self.writes = 0

    def log_metrics(self, run_id, step, metrics):
        self.writes += 1

    def add_checkpoint(self, run_id, record):
        self.writes += 1

    def forget_missing_checkpoints(self, run_id):
        return 0


def run_training(out: Path, batch: int, rank: int = 0, world: int = 1) -> dict:
    torch.set_num_threads(1)
    data, config = tiny_data(), tiny_config(batch)
    compute = TorchCompute("cpu")
    torch.manual_seed(config.train.seed)
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, compute.device)
    store = CountingStore()
    losses: list[float] = []
    result = train(
        bundle, data, compute=compute, checkpoints=SafetensorsCheckpointStore(), checkpoint_dir=out,
        store=store, run_id=1, rank=rank, world=world, on_step=lambda step, loss: losses.append(loss),
    )
    return {"step": result.step, "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
            "store_writes": store.writes, "losses": losses}


def _worker() -> None:  # torchrun entry
    out, batch = Path(sys.argv[1]), int(sys.argv[2])
    rank, world = init_distributed(torch.device("cpu"))
    info = run_training(out / "ckpt", batch, rank, world)
    (out / f"rank{rank}.json").write_text(json.dumps(info))
    torch.distributed.destroy_process_group()


def _torchrun(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {k: float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Model weights equal within TOL, except the KL-blind l=0 output row (within BLIND_TOL)."""
    a = {k: v.clone() for k, v in a.items() if k.startswith("model.")}
    b = {k: v.clone() for k, v in b.items() if k.startswith("model.")}
    blind = _max_diff({k: a[k][i] for k, i in BLIND.items()}, {k: b[k][i] for k, i in BLIND.items()})
    for k, i in BLIND.items():
        a[k][i] = b[k][i] = 0
    diff = _max_diff(a, b)
    assert max(diff.values()) < TOL, sorted(diff.items(), key=lambda kv: -kv[1])[:5]
    assert max(blind.values()) < BLIND_TOL, blind


# --------------------------------------------------------------------------- tests
def test_shards_cover_the_global_batch_once():
    for batch in (1, 2, 7, 31, 64, 513):
        for world in range(1, min(batch, 5) + 1):
            rows = [shard_rows(batch, r, world) for r in range(world)]
            assert rows[0].start == 0 and rows[-1].stop == batch
            assert all(a.stop == b.start for a, b in itertools.pairwise(rows))
            assert max(s.stop - s.start for s in rows) - min(s.stop - s.start for s in rows) <= 1
    with pytest.raises(ValueError):
        shard_rows(8, 2, 2)


def test_refuses_a_world_without_process_group(tmp_path):
    with pytest.raises(ValueError, match="needs an initialised process group"):
        run_training(tmp_path, 8, rank=0, world=2)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [31])  # uneven shards (15 + 16 rows): the loss scaling must weigh rows equally
def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path, batch):
    single = run_training(tmp_path / "single", batch)
    proc = _torchrun(str(Path(__file__)), str(tmp_path / "ddp"), str(batch))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r0 = json.loads((tmp_path / "ddp" / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "ddp" / "rank1.json").read_text())
    assert r0["step"] == r1["step"] == STEPS
    assert r1["checkpoint"] is None and r1["store_writes"] == 0  # only rank 0 writes
    assert r0["store_writes"] > 0
    steps = [p.name for p in SafetensorsCheckpointStore().steps(tmp_path / "ddp" / "ckpt")]
    assert steps == ["step-00000010", "step-00000020"]
    # the logged loss is the global-batch loss, identical on both ranks and close to single-process
    assert r0["losses"] == r1["losses"]
    assert max(abs(a - b) for a, b in zip(r0["losses"], single["losses"])) < 1e-4

    ddp, _ = SafetensorsCheckpointStore().load(tmp_path / "ddp" / "ckpt" / f"step-{STEPS:08d}")
    one, _ = SafetensorsCheckpointStore().load(tmp_path / "single" / f"step-{STEPS:08d}")
    assert_same_weights(ddp, one)
    # the weights did move far more than the tolerance (the comparison is not trivially true)
    config = tiny_config(batch)
    torch.manual_seed(config.train.seed)
    init = ModelBundle.create(config, tiny_data().cond_dim, "fake:xyz", torch.device("cpu")).tensors()
    assert max(float((one[k] - init[k]).abs().max()) for k in init) > 1000 * TOL


TINY_TOML = """\
name = "ddp"
device = "cpu"
[model]
degree = 5
widths = [32, 16]
time_dim = 8
dropout = 0.0
[diffusion]
steps = 20
anchors_per_batch = 256
[train]
batch_size = 32
steps = 20
lr = 1e-3
seed = 4
checkpoint_every = 10
log_every = 5
[data]
source = "{csv}"
"""


@pytest.mark.slow
def test_cli_under_torchrun_matches_single_process_cli(tmp_path):
    """``torchrun --nproc_per_node=2 -m locdiff.cli train`` (gloo on CPU): one run, written once, same weights."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    try:
        from test_training import write_text_csv
    finally:
        sys.path.pop(0)
    toml = tmp_path / "ddp.toml"
    toml.write_text(TINY_TOML.format(csv=write_text_csv(tmp_path / "sites.csv", n=100).as_posix()))
    env = {**os.environ, "LOCDIFF_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = ["train", "--config", str(toml), "--no-eval"]
    single = subprocess.run([sys.executable, "-m", "locdiff.cli", *args, "--workdir", str(tmp_path / "one")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    proc = _torchrun("-m", "locdiff.cli", *args, "--workdir", str(tmp_path / "two"), env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("LocDiff train:") == 1 and "2 processes" in proc.stdout  # rank 0 prints, once
    assert proc.stdout.count("trained 20 steps") == 1
    assert sorted(p.name for p in (tmp_path / "two").glob("run-*")) == ["run-0001"]

    from storage import SqlExperimentStore, sqlite_url

    with SqlExperimentStore(sqlite_url(tmp_path / "two" / "locdiff.sqlite")) as store:
        runs = store.list_runs()
        assert [(r.run_id, r.status) for r in runs] == [(1, "finished")]
        assert [c.step for c in store.checkpoints(1)] == [10, 20]
    two, _ = SafetensorsCheckpointStore().load(tmp_path / "two" / "run-0001" / "checkpoints" / "step-00000020")
    one, _ = SafetensorsCheckpointStore().load(tmp_path / "one" / "run-0001" / "checkpoints" / "step-00000020")
    assert_same_weights(one, two)


if __name__ == "__main__":
    _worker()
