"""Bad input fails early and clearly: exit code 2, a message naming the file, row and field, and
nothing half-written (no run row in the store, no run or checkpoint folder).

The CLI runs in-process (``locdiff.cli.main``). Fake embedders are injected by overriding the
container's ``embedder`` provider, the one seam the CLI composes through.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from adapters.checkpoints import SafetensorsCheckpointStore
from adapters.compute import TorchCompute
from locdiff import cli
from locdiff.core.bundle import ModelBundle
from locdiff.config import DataConfig, RunConfig
from locdiff.ports import Embedded, ItemFailure
from locdiff.services.data import prepare
from locdiff.services.training import train

TINY_TOML = """\
name = "tiny"
device = "cpu"
[model]
degree = 3
widths = [16, 8]
time_dim = 8
dropout = 0.0
[diffusion]
steps = 10
anchors_per_batch = 64
[train]
batch_size = 8
steps = 4
checkpoint_every = 2
[eval]
samples = 2
sampler_steps = 2
"""


# --------------------------------------------------------------------------- fakes and helpers
class FakeEmbedder:
    """Deterministic text features; ``nan_row`` poisons one vector, ``width`` lies about the output."""

    def __init__(self, id: str = "fake:letters", dim: int = 8, *, width: int | None = None, nan_row: int | None = None):
        self.id, self.dim, self.width, self.nan_row = id, dim, width or dim, nan_row

    def embed_texts(self, texts):
        out = torch.zeros(len(texts), self.width)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t):
                out[i, (ord(ch) + j) % self.width] += 1.0
        out = torch.nn.functional.normalize(out, dim=1)
        if self.nan_row is not None:
            out[self.nan_row, self.width // 2] = float("nan")
        return Embedded(out, tuple(range(len(texts))))

    def embed_images(self, paths):
        return Embedded(torch.zeros(0, self.dim), (), tuple(ItemFailure(str(p), "fake embedder: no images") for p in paths))


@pytest.fixture
def inject(monkeypatch):
    """``inject(embedder)``: every container the CLI builds uses this embedder."""
    from dependency_injector import providers

    import locdiff.container as container_module

    real = container_module.build_container

    def use(embedder):
        def build(config):
            container = real(config)
            container.embedder.override(providers.Object(embedder))
            return container

        monkeypatch.setattr(container_module, "build_container", build)

    return use


@pytest.fixture
def work(tmp_path) -> Path:
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    return tmp_path


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def good_rows(n: int = 40) -> list[str]:
    return ["id,lat,lon,text"] + [f"s{i},{-60 + 3 * i},{-170 + 8.5 * i},site number {i}" for i in range(n)]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def train_args(work: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(work / "tiny.toml"), "--data", str(data), "--workdir", str(work / "runs"), "--no-eval", *extra]


def assert_nothing_written(work: Path) -> None:
    runs = work / "runs"
    assert not list(runs.glob("run-*")), "a run folder was created"
    assert not list(runs.rglob("step-*")) and not list(runs.rglob("checkpoints")), "a checkpoint was written"
    db = runs / "locdiff.sqlite"
    if db.exists():
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
            if "runs" in tables:
                assert conn.execute("select count(*) from runs").fetchone()[0] == 0, "a run row was recorded"


# --------------------------------------------------------------------------- CSV
def test_csv_with_missing_columns(work, capsys, inject):
    inject(FakeEmbedder())
    data = write_csv(work / "nolon.csv", ["id,lat,text", "a,10,x"])
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 2
    assert f"{data}:1: missing column(s) ['lon']" in err
    assert_nothing_written(work)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("abc", "lat: 'abc' is not a number"),
        ("95", "lat: 95 is outside [-90, 90]"),
        ("nan", "lat: 'nan' is not finite"),
        ("", "lat: empty"),
    ],
)
def test_csv_with_bad_coordinates(work, capsys, inject, cell, expected):
    inject(FakeEmbedder())
    rows = good_rows(10)
    rows[4] = f"s3,{cell},12.5,site number 3"  # file line 5
    data = write_csv(work / "coords.csv", rows)
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 2
    assert f"{data}:5: {expected}" in err
    assert_nothing_written(work)


def test_csv_with_out_of_range_longitude_names_row_and_field(work, capsys, inject):
    inject(FakeEmbedder())
    rows = good_rows(10)
    rows[7] = "s6,10,400,site number 6"  # line 8
    data = write_csv(work / "lon.csv", rows)
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 2 and f"{data}:8: lon: 400 is outside [-180, 360)" in err
    assert_nothing_written(work)


def test_csv_with_missing_image_files(work, capsys, inject):
    inject(FakeEmbedder())
    (work / "there.jpg").write_bytes(b"not really a jpeg")
    data = write_csv(work / "images.csv", ["lat,lon,image", "10,20,there.jpg", "11,21,missing/gone.jpg"])
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 2
    assert f"{data}:3: image: file not found: {(work / 'missing' / 'gone.jpg').absolute()}" in err
    assert "there.jpg" not in err
    assert_nothing_written(work)


def test_missing_csv_file(work, capsys, inject):
    inject(FakeEmbedder())
    code, _, err = run_cli(capsys, *train_args(work, work / "nope.csv"))
    assert code == 2 and f"{work / 'nope.csv'}: file not found" in err
    assert_nothing_written(work)


# --------------------------------------------------------------------------- embeddings
def test_embedding_with_nan_names_the_row_and_item(work, capsys, inject):
    inject(FakeEmbedder(nan_row=6))
    data = write_csv(work / "sites.csv", good_rows())
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 2
    assert "dataset 'sites': row 7 (id 's6', item 'site number 6'): field 'embedding' has nan at position 4" in err
    assert "'fake:letters'" in err
    assert_nothing_written(work)


def test_embedding_of_the_wrong_width(work, capsys, inject):
    inject(FakeEmbedder(dim=16, width=8))
    data = write_csv(work / "sites.csv", good_rows())
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 2
    assert "dataset 'sites': field 'embedding'" in err and "shape (40, 8)" in err and "expected [40, 16]" in err
    assert_nothing_written(work)


def test_services_reject_bad_embeddings_directly(tmp_path):
    from adapters.csv_source import CsvSource

    source = CsvSource(write_csv(tmp_path / "sites.csv", good_rows(12)))
    with pytest.raises(ValueError, match=r"row 3 \(id 's2', item 'site number 2'\): field 'embedding' has nan"):
        prepare(source, FakeEmbedder(nan_row=2), DataConfig())
    with pytest.raises(ValueError, match=r"shape \(12, 4\).*expected \[12, 8\]"):
        prepare(source, FakeEmbedder(dim=8, width=4), DataConfig())


def test_no_training_samples_is_refused_before_a_run_exists(work, capsys, inject):
    inject(FakeEmbedder())
    rows = ["id,lat,lon,text,group"] + [f"s{i},{i},{i},site number {i},FR" for i in range(20)]
    data = write_csv(work / "france.csv", rows)
    code, _, err = run_cli(capsys, *train_args(work, data, "--holdout-groups", "FR"))  # everything held out
    assert code == 2 and "dataset 'france' has no training samples after splitting" in err
    assert_nothing_written(work)


# --------------------------------------------------------------------------- checkpoints
@pytest.fixture
def fake_run(work, capsys, inject) -> Path:
    """A finished tiny run (through the CLI) whose checkpoint names the fake embedder 'fake:letters'."""
    inject(FakeEmbedder())
    data = write_csv(work / "sites.csv", good_rows())
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 0, err
    return work / "runs" / "run-0001"


def test_checkpoint_for_another_degree_or_embedder(fake_run):
    ckpt = SafetensorsCheckpointStore().latest(fake_run / "checkpoints")
    tensors, meta = SafetensorsCheckpointStore().load(ckpt)
    device = TorchCompute("cpu").device
    with pytest.raises(ValueError, match=rf"{ckpt}: trained for SHDD degree L=3, but L=15 was requested"):
        ModelBundle.from_checkpoint(tensors, meta, device, where=str(ckpt), expect_degree=15)
    with pytest.raises(ValueError, match=rf"{ckpt}: trained on embeddings from 'fake:letters', but the embedder in use is 'minilm"):
        ModelBundle.from_checkpoint(tensors, meta, device, where=str(ckpt), expect_embedder="minilm-l6-v2:abc")
    bad = dict(meta, config={**meta["config"], "model": {**meta["config"]["model"], "degree": "three"}})
    with pytest.raises(ValueError, match=rf"{ckpt} \(meta.config\): model.degree: expected an integer, got 'three'"):
        ModelBundle.from_checkpoint(tensors, bad, device, where=str(ckpt))
    assert ModelBundle.from_checkpoint(tensors, meta, device, expect_degree=3, expect_embedder="fake:letters").degree == 3


def test_checkpoint_weights_that_do_not_fit_the_config(fake_run):
    ckpt = SafetensorsCheckpointStore().latest(fake_run / "checkpoints")
    tensors, meta = SafetensorsCheckpointStore().load(ckpt)
    bigger = dict(meta, config={**meta["config"], "model": {**meta["config"]["model"], "widths": [32, 8]}})
    with pytest.raises(ValueError, match=rf"{ckpt}: weights do not fit the model described by its config"):
        ModelBundle.from_checkpoint(tensors, bigger, TorchCompute("cpu").device, where=str(ckpt))


def test_cli_eval_with_a_mismatching_embedder(fake_run, work, capsys, inject):
    inject(FakeEmbedder(id="fake:other"))
    before = _evaluations(work)
    code, _, err = run_cli(capsys, "eval", str(fake_run), "--data", str(work / "sites.csv"), "--max-items", "2")
    assert code == 2
    assert "trained on 'fake:letters' embeddings, data embedded with 'fake:other'" in err and str(fake_run) in err
    assert _evaluations(work) == before  # nothing stored


def test_cli_predict_with_a_mismatching_embedder(fake_run, work, capsys):
    # predict rebuilds the embedder the checkpoint's config names (MiniLM): its id differs from 'fake:letters'
    code, _, err = run_cli(capsys, "predict", str(fake_run), "--text", "Paris", "--device", "cpu", "--workdir", str(work / "runs"))
    assert code == 2
    assert "trained on embeddings from 'fake:letters'" in err and "minilm" in err


def test_cli_resume_with_a_mismatching_embedder_writes_no_checkpoint(fake_run, work, capsys, inject):
    before = sorted(p.name for p in (fake_run / "checkpoints").iterdir())
    inject(FakeEmbedder(id="fake:other"))
    code, _, err = run_cli(capsys, "train", "--resume", str(fake_run), "--steps", "8", "--no-eval")
    assert code == 2
    assert "trained on embeddings from 'fake:letters', but the embedder in use is 'fake:other'" in err
    assert sorted(p.name for p in (fake_run / "checkpoints").iterdir()) == before


def test_cli_resume_of_a_folder_that_is_not_a_run(work, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", str(work), "--no-eval")
    assert code == 2 and f"{work}: not a run folder" in err


def _evaluations(work: Path) -> int:
    with sqlite3.connect(work / "runs" / "locdiff.sqlite") as conn:
        return conn.execute("select count(*) from evaluations").fetchone()[0]


# --------------------------------------------------------------------------- store
def test_store_of_another_schema_version(work, capsys, inject):
    inject(FakeEmbedder())
    from storage import SqlExperimentStore, sqlite_url

    db = work / "runs" / "locdiff.sqlite"
    SqlExperimentStore(sqlite_url(db)).close()
    with sqlite3.connect(db) as conn:
        conn.execute("update schema_info set version = 99")
    data = write_csv(work / "sites.csv", good_rows())
    code, _, err = run_cli(capsys, *train_args(work, data))
    assert code == 2
    assert f"experiment database {db} has schema version 99, newer than this LocDiff (expected version" in err
    assert_nothing_written(work)


def test_store_error_is_a_schema_version_error(tmp_path):
    from storage import SchemaVersionError, SqlExperimentStore, sqlite_url

    db = tmp_path / "old.sqlite"
    SqlExperimentStore(sqlite_url(db)).close()
    with sqlite3.connect(db) as conn:
        conn.execute("update schema_info set version = 0")
    with pytest.raises(SchemaVersionError) as info:
        SqlExperimentStore(sqlite_url(db))
    assert info.value.found == 0 and str(db) in str(info.value)


# --------------------------------------------------------------------------- services
def test_train_service_refuses_data_from_another_embedder(tmp_path):
    from adapters.csv_source import CsvSource

    source = CsvSource(write_csv(tmp_path / "sites.csv", good_rows(20)))
    data = prepare(source, FakeEmbedder(), DataConfig())
    config = RunConfig.load(_toml(tmp_path))
    compute = TorchCompute("cpu")
    other = ModelBundle.create(config, data.cond_dim, "fake:other", compute.device)
    with pytest.raises(ValueError, match="embedded with 'fake:letters', but the model is for 'fake:other'"):
        train(other, data, compute=compute, checkpoints=SafetensorsCheckpointStore(), checkpoint_dir=tmp_path / "ck")
    wider = ModelBundle.create(config, data.cond_dim + 1, data.embedder_id, compute.device)
    with pytest.raises(ValueError, match="embeddings are 8-dimensional, the model expects 9"):
        train(wider, data, compute=compute, checkpoints=SafetensorsCheckpointStore(), checkpoint_dir=tmp_path / "ck")
    assert not (tmp_path / "ck").exists()


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def test_train_prints_the_proper_scores_and_the_one_step_row(work, capsys, inject):
    """The main job's held-out table: accuracy with intervals, then each distribution's NLL / energy / raw coverage,
    the one-step prediction beside the chain (issue #10: it must be shown where accuracy is)."""
    inject(FakeEmbedder())
    data = write_csv(work / "sites.csv", good_rows())
    code, out, err = run_cli(capsys, *[a for a in train_args(work, data) if a != "--no-eval"])
    assert code == 0, err
    table = out.split("Held-out accuracy")[1]
    assert "proper scores" in table and "one-step x0 (test, mode)" in table
    scores = table.split("proper scores")[1]
    assert "| LocDiffusion (test, mode) | " in scores and "| one-step x0 (test, mode) | " in scores
    uniform = next(line for line in scores.splitlines() if line.startswith("| random guess |"))
    assert "| 2.531 |" in uniform, uniform  # the uniform density's NLL, log 4π, beside the models'
