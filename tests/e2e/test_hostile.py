"""Hostile inputs and injected faults (issue #13): each test is one row of the README's reliability table.

``LOCDIFF_HOSTILE_TABLE=README.md python3 -m pytest -m hostile tests/e2e/test_hostile.py`` reruns them
and rewrites the table between the ``hostile-table`` markers (any other path: the table alone is
written there). A row whose test fails is written as FAILED, never dropped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import torch

from adapters.calibration_file import FILE_NAME as CALIBRATION_FILE
from adapters.calibration_file import load_calibration
from adapters.checkpoints import SafetensorsCheckpointStore
from adapters.compute import TorchCompute
from adapters.csv_source import OUTSIDE_DIRECTIVE, CsvSource, DatasetError
from adapters.embedding_cache import CachedEmbedder
from adapters.files import FileInputError, open_regular
from adapters.images import ImageError, load_rgb
from adapters.run_lock import RunBusyError, run_lock
from locdiff import cli
from locdiff.config import RunConfig
from locdiff.core.bundle import ModelBundle
from locdiff.ports import Embedded, ItemFailure
from storage import SchemaVersionError, SqlExperimentStore, StoreError, sqlite_url

pytestmark = pytest.mark.hostile

ROOT = Path(__file__).resolve().parents[2]
ROWS: list[tuple[str, str, str, str]] = []  # (issue row, input or fault, result, test)
TINY = {"name": "tiny", "device": "cpu", "model": {"degree": 3, "widths": [16, 8], "time_dim": 8, "dropout": 0.0},
        "diffusion": {"steps": 10, "anchors_per_batch": 64},
        "train": {"batch_size": 8, "steps": 8, "checkpoint_every": 4, "log_every": 2, "keep_checkpoints": 2}}


# --------------------------------------------------------------------------- the table
class Row:
    def __init__(self, number: str, what: str, test: str) -> None:
        self.number, self.what, self.test, self.result = number, what, test, None

    def held(self, result: str) -> None:
        self.result = result


@pytest.fixture
def row(request):
    made: list[Row] = []

    def make(number: str, what: str) -> Row:
        r = Row(number, what, request.node.originalname)
        made.append(r)
        return r

    yield make
    for r in made:
        ROWS.append((r.number, r.what, r.result if r.result is not None else "**FAILED**", r.test))


def _table() -> str:
    def key(r):
        n = r[0]
        return (0, int(n), r[1]) if n.isdigit() else (1, 0, n + r[1])

    lines = ["| # | input or fault | result | test |", "|---|---|---|---|"]
    for number, what, result, test in sorted(ROWS, key=key):
        result = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s]+", "<tmp>", result)  # the same every run
        esc = [x.replace("|", "\\|").replace("\n", " ") for x in (number, what, result)]
        lines.append(f"| {esc[0]} | {esc[1]} | {esc[2]} | `{test}` |")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", autouse=True)
def write_table():
    yield
    target = os.environ.get("LOCDIFF_HOSTILE_TABLE")
    if not target or not ROWS:
        return
    path = Path(target)
    start, end = "<!-- hostile-table:start -->", "<!-- hostile-table:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        path.write_text(f"{head}{start}\n{_table()}{end}{tail}", encoding="utf-8")
    else:
        path.write_text(_table(), encoding="utf-8")


# --------------------------------------------------------------------------- helpers
class Letters:
    """Deterministic 8-d text features; images are read (like a real embedder would) and refused."""

    id, dim = "fake:letters", 8

    def embed_texts(self, texts):
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t):
                out[i, (ord(ch) + j) % self.dim] += 1.0
        return Embedded(torch.nn.functional.normalize(out, dim=1), tuple(range(len(texts))))

    def embed_images(self, paths):
        return Embedded(torch.zeros(0, self.dim), (), tuple(ItemFailure(str(p), "fake: no images") for p in paths))


class Alarm:
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self):
        def fire(*_):
            raise TimeoutError(f"hung for {self.seconds} s")

        self.old = signal.signal(signal.SIGALRM, fire)
        signal.alarm(self.seconds)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)
        self.elapsed = time.perf_counter() - self.t0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tiny_checkpoint(tmp_path: Path) -> tuple[Path, dict]:
    """A saved (untrained) tiny model's step folder and its meta."""
    config = RunConfig.from_dict(TINY)
    torch.manual_seed(0)
    bundle = ModelBundle.create(config, 8, Letters.id, torch.device("cpu"))
    path = SafetensorsCheckpointStore().save(tmp_path / "run-0001" / "checkpoints", bundle.tensors(), bundle.meta(4))
    return path, json.loads((path / "meta.json").read_text())


def tamper(path: Path, meta: dict) -> None:
    (path / "meta.json").write_text(json.dumps(meta))


def load(path: Path):
    tensors, meta = SafetensorsCheckpointStore().load(path)
    return ModelBundle.from_checkpoint(tensors, meta, torch.device("cpu"), where=str(path))


# --------------------------------------------------------------------------- 1, 2: pipes and huge files
def test_named_pipe_is_refused_at_once(tmp_path, row):
    r = row("1", "`predict RUN some.fifo.jpg` (a named pipe) — the embedding cache and the image loader")
    fifo = tmp_path / "some.fifo.jpg"
    os.mkfifo(fifo)
    cache = CachedEmbedder(Letters(), tmp_path / "cache", progress=False)
    with Alarm(10) as a:
        out = cache.embed_images([fifo])
    assert out.index == () and "not a regular file (a named pipe)" in out.failures[0].reason
    with Alarm(10), pytest.raises(ImageError, match="not a regular file"):
        load_rgb(fifo)
    with Alarm(10), pytest.raises(FileInputError, match="named pipe"):
        open_regular(fifo)
    r.held(f"refused in {a.elapsed * 1000:.0f} ms: \"not a regular file (a named pipe)\"")


def test_huge_sparse_image_is_refused_before_reading(tmp_path, row):
    r = row("2", "a 3 GB sparse `.jpg`")
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(3 << 30)
    cache = CachedEmbedder(Letters(), tmp_path / "cache", progress=False)
    with Alarm(10) as a:
        out = cache.embed_images([big])
    assert "larger than the 1.0 GiB limit" in out.failures[0].reason
    with pytest.raises(ImageError, match="larger than the 1.0 GiB limit"):
        load_rgb(big)
    assert a.elapsed < 2.0
    r.held(f"refused in {a.elapsed * 1000:.0f} ms (size checked first): \"3.0 GiB, larger than the 1.0 GiB limit\"")


# --------------------------------------------------------------------------- 3, 4: config types
@pytest.mark.parametrize(
    ("number", "toml", "message"),
    [
        ("3", '[data]\nall_places = "no"', "data.all_places: expected true or false, got 'no'"),
        ("4", "[model]\ndegree = true", "model.degree: expected an integer, got True"),
        ("4", "[model]\nwidths = [true]", "model.widths: expected an integer, got True"),
        ("4", 'workdir = ["a"]', "workdir: expected a string, got ['a']"),
        ("4", '[train]\nlr = "1e-3"', "train.lr: expected a number, got '1e-3'"),
        ("4", "[train]\nlr = inf", "train.lr: expected a finite number, got inf"),
        ("4", "[model]\nwidths = \"512\"", "model.widths: expected a list, got '512'"),
        ("4", "[model]\ndgree = 3", "unknown setting(s) model.dgree"),
    ],
)
def test_toml_values_of_the_wrong_type(tmp_path, capsys, monkeypatch, row, number, toml, message):
    r = row(number, f"TOML `{toml.splitlines()[-1]}`")
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml + "\n")
    monkeypatch.chdir(tmp_path)  # the default workdir ./runs is inside tmp_path
    code, _, err = run_cli(capsys, "train", "--config", str(cfg), "--no-eval")
    line = one_error_line(err)
    assert code == 2 and message in line and str(cfg) in line
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("run-*"))
    assert not (tmp_path / "runs" / "locdiff.sqlite").exists()  # nothing recorded
    r.held(f"exit 2 before anything is recorded: `{message}`")


# --------------------------------------------------------------------------- 6, 7: the store
def _valid_store(path: Path) -> Path:
    with SqlExperimentStore(sqlite_url(path)) as store:
        store.start_run("e", {"model": {"degree": 3}}, "v")
    return path


@pytest.mark.parametrize(
    ("what", "make", "expected"),
    [
        ("random bytes", lambda p: p.write_bytes(os.urandom(4096)) and p, "not an SQLite database"),
        ("a truncated SQLite file", lambda p: (_valid_store(p), p.write_bytes(p.read_bytes()[:2048]))[0],
         "the file is damaged"),
        ("a folder", lambda p: p.mkdir() or p, "not a regular file"),
    ],
)
def test_store_file_that_is_not_a_store(tmp_path, capsys, row, what, make, expected):
    r = row("6", f"`--store` on {what}")
    db = tmp_path / "x.sqlite"
    make(db)
    before = sha(db) if db.is_file() else None
    code, _, err = run_cli(capsys, "runs", "--store", sqlite_url(db), "--workdir", str(tmp_path))
    line = one_error_line(err)
    assert code == 2 and str(db) in line and expected in line, line
    assert (sha(db) if db.is_file() else None) == before
    r.held(f"exit 2, file unchanged: `{line[:120]}`")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("foo://bar/baz", "unknown database kind 'foo'"),
        ("postgresql://u:secret@localhost/db", "driver is not installed"),
        ("not a url at all", "cannot parse database URL"),
    ],
)
def test_store_url_that_cannot_work(tmp_path, capsys, row, url, expected):
    r = row("6", f"`--store {url}`")
    code, _, err = run_cli(capsys, "runs", "--store", url, "--workdir", str(tmp_path))
    line = one_error_line(err)
    assert code == 2 and expected in line and "secret" not in line
    r.held(f"exit 2: `{line[:120]}`")


def test_store_folder_cannot_be_created(tmp_path, capsys, row):
    r = row("6", "`--store` below a path that is a file (stands in for a read-only mount: tests run as root)")
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "runs", "--store", sqlite_url(tmp_path / "file" / "db.sqlite"), "--workdir", str(tmp_path))
    line = one_error_line(err)
    assert code == 2 and "cannot create its folder" in line
    r.held(f"exit 2: `{line[:110]}`")


def test_disk_full_while_writing_the_store(tmp_path, row):
    r = row("6", "disk full while writing the store (SQLite `max_page_count` reached)")
    db = _valid_store(tmp_path / "full.sqlite")
    store = SqlExperimentStore(sqlite_url(db))
    with store._engine.connect() as conn:  # the pool's one connection: cap the file at its current size
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
    before = len(store.list_runs())
    with pytest.raises(StoreError) as info:
        store.add_predictions(None, [{"item": "x" * 4000, "lat": 0.0, "lon": 0.0}] * 200)
    message = str(info.value)
    assert "\n" not in message and str(db) in message and "disk is full" in message and "nothing was written" in message
    assert len(store.list_runs()) == before and store.predictions() == []
    store.close()
    r.held(f"one line, transaction rolled back: `{message[-90:]}`")


def test_store_whose_columns_differ(tmp_path, capsys, row):
    r = row("6", "a store whose columns differ under the same schema version")
    db = _valid_store(tmp_path / "odd.sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE metrics DROP COLUMN value")
    before = sha(db)
    code, _, err = run_cli(capsys, "runs", "--store", sqlite_url(db), "--workdir", str(tmp_path))
    line = one_error_line(err)
    assert code == 2 and "table 'metrics' lacks column(s) ['value']" in line and sha(db) == before
    r.held(f"exit 2: `{line[-110:]}`")


def test_foreign_sqlite_database_is_refused(tmp_path, capsys, row):
    r = row("7", "`--store` pointed at an unrelated non-empty SQLite database")
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    before = sha(db)
    code, _, err = run_cli(capsys, "runs", "--store", sqlite_url(db), "--workdir", str(tmp_path))
    line = one_error_line(err)
    assert code == 2 and "already holds other tables (invoices)" in line
    assert sha(db) == before
    with sqlite3.connect(db) as conn:
        assert {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {"invoices"}
    r.held("exit 2, no table added: `already holds other tables (invoices); it is not a LocDiff store`")


# --------------------------------------------------------------------------- migrations
def _schema_v1():
    spec = importlib.util.spec_from_file_location("locdiff_schema_v1", ROOT / "tests" / "data" / "schema_v1.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # SQLAlchemy resolves the annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_store_of_today_is_upgraded_in_place(tmp_path, row):
    r = row("migr.", "a store created by the schema of before migrations (frozen copy of today's `storage/schema.py`)")
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    v1 = _schema_v1()
    db = tmp_path / "old.sqlite"
    engine = create_engine(sqlite_url(db))
    v1.Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(v1.SchemaInfo(id=1, version=1))
        s.add(v1.Experiment(id=1, name="old"))
        s.add(v1.Run(id=1, experiment_id=1, status="finished", config={"model": {"degree": 7}}, code_version="abc"))
        s.add(v1.Metric(run_id=1, step=5, name="loss_ema", value=0.5))
        s.add(v1.Checkpoint(run_id=1, path=str(tmp_path), sha256="a" * 64, degree=7, dims=64, embedder_id="e", step=5))
    engine.dispose()
    with SqlExperimentStore(sqlite_url(db)) as store:
        (run,) = store.list_runs()
        assert run.config == {"model": {"degree": 7}} and run.metrics == {"loss_ema": 0.5} and run.status == "finished"
        assert len(store.checkpoints(1)) == 1
        new = store.start_run("new", {}, "v")  # the new columns are written
        assert store.get_run(new).stale is False
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        assert {c[1] for c in conn.execute("PRAGMA table_info(runs)")} >= {"host", "pid", "heartbeat_at"}
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    r.held("upgraded in place to revision 0002 (runs, metrics, checkpoints kept; integrity_check ok)")


def test_newer_store_is_refused(tmp_path, capsys, row):
    r = row("migr.", "a store written by a newer LocDiff (unknown Alembic revision)")
    db = _valid_store(tmp_path / "new.sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    before = sha(db)
    code, _, err = run_cli(capsys, "runs", "--store", sqlite_url(db), "--workdir", str(tmp_path))
    line = one_error_line(err)
    assert code == 2 and "schema revision 0999, newer than this LocDiff" in line and sha(db) == before
    with pytest.raises(SchemaVersionError):
        SqlExperimentStore(sqlite_url(db))
    r.held(f"exit 2, untouched: `{line[len('error: '):][-100:]}`")


# --------------------------------------------------------------------------- 8, 9: runs that died, two trainers
def test_killed_run_is_detectable_as_stale(tmp_path, row):
    r = row("8", "kill -9 of a training (its run stays `running`)")
    import subprocess

    db = tmp_path / "s.sqlite"
    code = ("import sys, os; from storage import SqlExperimentStore, sqlite_url; "
            "s = SqlExperimentStore(sqlite_url(sys.argv[1])); s.start_run('e', {}, 'v'); os.kill(os.getpid(), 9)")
    subprocess.run([os.sys.executable, "-c", code, str(db)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    with SqlExperimentStore(sqlite_url(db)) as store:
        (run,) = store.list_runs()
        alive = store.start_run("e", {}, "v")
        assert run.status == "running" and run.stale and not store.get_run(alive).stale
        store.reopen_run(run.run_id)  # resumed: running again, by this live process
        assert not store.get_run(run.run_id).stale
    r.held("listed as `running` with `stale=True` (its pid is gone); a live or resumed run is not stale")


def test_second_trainer_of_one_run_is_refused(tmp_path, row):
    r = row("9", "two trainers of one run folder at once (the run lock)")
    import subprocess

    code = ("import sys, time; from adapters.run_lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([os.sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match=rf"being trained by pid {holder.pid} on"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):  # the kernel dropped the killed holder's lock: never stale
        pass
    r.held("the second gets \"this run is being trained by pid N on HOST\" at once; a killed holder's lock is gone")


# --------------------------------------------------------------------------- 10, 11: checkpoint metadata
@pytest.mark.parametrize(
    ("what", "change", "expected"),
    [
        ("cond_dim = 10^9", lambda m: m.update(cond_dim=10**9), "field 'cond_dim' must be an integer in [1, 65536]"),
        ("widths = [65536] * 8", lambda m: m["config"]["model"].update(widths=[65536] * 8), "it needs at least"),
        ("widths = [10^7]", lambda m: m["config"]["model"].update(widths=[10**7]), "must be a list of 1 to 32 integers"),
        ("diffusion steps = 10^10", lambda m: m["config"]["diffusion"].update(steps=10**10), "'steps' must be <= 100000"),
        ("config missing", lambda m: m.pop("config"), "has no 'config'"),
        ("config a string", lambda m: m.update(config="x"), "expected a table of settings, got str"),
        ("degree true", lambda m: m.update(degree=True), "field 'degree' is True"),
    ],
)
def test_checkpoint_meta_is_bounded_before_allocation(tmp_path, row, what, change, expected):
    r = row("10", f"meta.json: {what}")
    import resource

    path, meta = tiny_checkpoint(tmp_path)
    change(meta)
    tamper(path, meta)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Alarm(20) as a, pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("(", r"\(").replace("^", r"\^")):
        load(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mib < 100 and a.elapsed < 5
    r.held(f"ValueError in {a.elapsed * 1000:.0f} ms, peak memory +{grown_mib:.0f} MiB: \"{expected}\"")


def test_deeply_nested_meta_json(tmp_path, row):
    r = row("10", "meta.json nested 100,000 deep")
    path, _ = tiny_checkpoint(tmp_path)
    (path / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        SafetensorsCheckpointStore().load(path)
    r.held("ValueError: \"JSON nested too deeply\" (no RecursionError)")


def test_checkpoint_never_chooses_paths(tmp_path, row):
    r = row("11", "a tampered meta.json naming the store and workdir (`store_url`, `workdir`)")
    path, meta = tiny_checkpoint(tmp_path)
    meta["config"].update(store_url=f"sqlite:///{tmp_path}/evil/x.sqlite", workdir=str(tmp_path / "evil"))
    tamper(path, meta)
    bundle = load(path)
    assert bundle.config.store_url is None and bundle.config.workdir == "runs"
    assert not (tmp_path / "evil").exists()
    r.held("ignored: the loaded config has `store_url=None`, `workdir=runs`; nothing created at the named paths")


# --------------------------------------------------------------------------- 12: calibration
@pytest.mark.parametrize(
    ("what", "calibrator", "expected"),
    [
        ("sub = 25", {"family": "kde", "param": 100.0, "sub": 25}, "field 'sub' must be in [1, 4], got 25"),
        ("sub = 400", {"sub": 400}, "field 'sub' must be in [1, 4], got 400"),
        ("sub = \"x\"", {"sub": "x"}, "sub: expected an integer, got 'x'"),
        ("sub = 2.5", {"sub": 2.5}, "sub: expected an integer, got 2.5"),
        ("param = Infinity", {"family": "kde", "param": float("inf")}, "param: expected a finite number, got inf"),
        ("n_lat = 10^6", {"n_lat": 10**6}, "field 'n_lat' must be in [2, 720]"),
    ],
)
def test_calibration_file_is_validated(tmp_path, row, what, calibrator, expected):
    r = row("12", f"calibration.json: {what}")
    ckpt = tmp_path / "checkpoints" / "step-00000004"
    ckpt.mkdir(parents=True)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"format": 1, "checkpoint": ckpt.name, "calibrator": calibrator}))
    with Alarm(10) as a, pytest.raises(ValueError) as info:
        load_calibration(ckpt)
    assert expected in str(info.value) and "\n" not in str(info.value)
    r.held(f"ValueError in {a.elapsed * 1000:.0f} ms: \"{expected}\"")


# --------------------------------------------------------------------------- 13: CSV paths
@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("../../../../../../etc/passwd", "leaves the dataset folder"),
        ("/etc/passwd", "leaves the dataset folder"),
        ("/proc/self/environ", "system pseudo-file"),
        ("/dev/zero", "system pseudo-file"),
        ("pipe.jpg", "not a regular file (a named pipe)"),
    ],
)
def test_csv_image_paths_stay_in_the_dataset(tmp_path, row, cell, expected):
    r = row("13", f"CSV image path `{cell}`")
    os.mkfifo(tmp_path / "pipe.jpg")
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(f"image,lat,lon\n{cell},1,2\n")
    with Alarm(10), pytest.raises(DatasetError) as info:
        CsvSource(csv_path).load()
    assert expected in str(info.value)
    r.held(f"DatasetError naming line 2: \"{expected}\"")


def test_photos_outside_the_csv_folder_need_the_opt_in(tmp_path, row):
    r = row("13", "`dataset from-photos` with the CSV outside the photo folder (the README flow)")
    from PIL import Image

    from adapters.photos import photos_to_csv

    photos, out = tmp_path / "photos", tmp_path / "elsewhere"
    photos.mkdir()
    out.mkdir()
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    Image.new("RGB", (8, 8), (9, 9, 9)).save(photos / "a.jpg", exif=exif)
    scan = photos_to_csv(photos, out / "photos.csv")
    assert scan.rows == 1 and (out / "photos.csv").read_text().startswith(OUTSIDE_DIRECTIVE + "\n")
    assert [Path(p).resolve() for p in CsvSource(out / "photos.csv").load().items] == [(photos / "a.jpg").resolve()]
    hand_written = out / "hand.csv"
    hand_written.write_text("image,lat,lon\n../photos/a.jpg,48.8,2.3\n")
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        CsvSource(hand_written).load()
    assert len(CsvSource(hand_written, allow_outside=True).load().ids) == 1
    r.held(f"from-photos writes `{OUTSIDE_DIRECTIVE}`, which allows it; a hand-written CSV without it is refused")


# --------------------------------------------------------------------------- 14, 15: training faults
def _prepared(tmp_path: Path):
    from adapters.csv_source import CsvSource
    from locdiff.config import DataConfig
    from locdiff.services.data import prepare

    csv_path = tmp_path / "sites.csv"
    csv_path.write_text("id,lat,lon,text\n" + "".join(f"s{i},{-60 + 3 * i},{-170 + 8.5 * i},site {i}\n" for i in range(40)))
    return prepare(CsvSource(csv_path), Letters(), DataConfig(val_fraction=0.0))


def _train(tmp_path, data, steps, *, store=None, run_id=None, resume=None, out="ck"):
    from locdiff.services.training import train

    config = RunConfig.from_dict({**TINY, "train": {**TINY["train"], "steps": steps}})
    torch.manual_seed(0)
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, torch.device("cpu"))
    if resume is not None:
        bundle.net.load_state_dict({k.removeprefix("model."): v for k, v in resume[0].items() if k.startswith("model.")})
    return train(bundle, data, compute=TorchCompute("cpu"), checkpoints=SafetensorsCheckpointStore(keep_last=2),
                 checkpoint_dir=tmp_path / out, store=store, run_id=run_id, resume=resume)


def test_leftovers_of_a_killed_cleanup_are_removed(tmp_path, one_thread, row):
    r = row("14", "kill -9 during checkpoint cleanup: `.step-*.tmp-*` and empty step folders, store rows of deleted checkpoints")
    data = _prepared(tmp_path)
    store = SqlExperimentStore(sqlite_url(tmp_path / "s.sqlite"))
    run_id = store.start_run("e", {}, "v")
    first = _train(tmp_path, data, 4, store=store, run_id=run_id)
    ck = tmp_path / "ck"
    (ck / ".step-00000008.tmp-x1y2").mkdir()
    (ck / ".step-00000008.tmp-x1y2" / "weights.safetensors").write_bytes(b"half")
    (ck / "step-00000006").mkdir()  # empty: its files were being deleted
    from locdiff.ports import CheckpointRecord

    gone = str(ck / "step-00000002")
    store.add_checkpoint(run_id, CheckpointRecord(path=gone, sha256="b" * 64, degree=3, dims=16, embedder_id="e", step=2))
    tensors, meta = SafetensorsCheckpointStore().load(first.checkpoint)
    _train(tmp_path, data, 8, store=store, run_id=run_id, resume=(tensors, meta))
    assert sorted(p.name for p in ck.iterdir()) == ["step-00000004", "step-00000008"]
    assert sorted(Path(c.path).name for c in store.checkpoints(run_id)) == ["step-00000004", "step-00000008"]
    store.close()
    r.held("removed at the next start; the store's checkpoint rows equal the folders on disk")


def test_resume_restores_loss_ema(tmp_path, one_thread, row):
    r = row("15", "resume: the reported final loss (loss_ema) after an interruption")
    data = _prepared(tmp_path)
    straight = _train(tmp_path, data, 8, out="straight")
    half = _train(tmp_path, data, 4, out="half")
    tensors, meta = SafetensorsCheckpointStore().load(half.checkpoint)
    assert isinstance(meta.get("loss_ema"), float)
    resumed = _train(tmp_path, data, 8, resume=(tensors, meta), out="half")
    assert resumed.final_loss == straight.final_loss
    r.held(f"restored from the checkpoint: final loss {resumed.final_loss:.6f} = uninterrupted {straight.final_loss:.6f}")


# --------------------------------------------------------------------------- held before #13 (kept as rows)
def test_truncated_and_corrupt_images(tmp_path, row):
    r = row("held", "truncated / non-image / empty `.jpg`")
    from PIL import Image

    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:300])
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("cut.jpg", "text.jpg", "empty.jpg"):
        with pytest.raises(ImageError, match=str(tmp_path / name)):
            load_rgb(tmp_path / name)
    r.held("ImageError naming the file for each")


def test_checkpoint_hash_tampering_and_pickles(tmp_path, row):
    r = row("held", "checkpoint weights replaced (hash mismatch); a pickled `.pt` file")
    path, _ = tiny_checkpoint(tmp_path)
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match"):
        SafetensorsCheckpointStore().load(path)
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="pickled .pt/.ckpt files are refused"):
        SafetensorsCheckpointStore().load(tmp_path / "model.pt")
    r.held("refused: sha256 mismatch named; pickles never unpickled")


def test_sql_injection_in_names_is_stored_verbatim(tmp_path, row):
    r = row("held", "SQL injection in a run name (`x'); DROP TABLE runs; --`)")
    with SqlExperimentStore(sqlite_url(tmp_path / "s.sqlite")) as store:
        name = "x'); DROP TABLE runs; --"
        run_id = store.start_run(name, {}, "v")
        assert store.get_run(run_id).experiment == name and len(store.list_runs()) == 1
    r.held("stored verbatim (bound parameters)")


# --------------------------------------------------------------------------- 5, 16, 17, 18, 20: the command line
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A tiny run trained through the CLI on a text CSV (8 steps), with the fake embedder injected."""
    from dependency_injector import providers

    import locdiff.container as container_module

    root = tmp_path_factory.mktemp("clirun")
    real = container_module.build_container

    def build(config):
        container = real(config)
        container.embedder.override(providers.Object(Letters()))
        return container

    container_module.build_container = build
    (root / "tiny.toml").write_text(
        'name = "tiny"\ndevice = "cpu"\n[model]\ndegree = 3\nwidths = [16, 8]\ntime_dim = 8\ndropout = 0.0\n'
        "[diffusion]\nsteps = 10\nanchors_per_batch = 64\n[train]\nbatch_size = 8\nsteps = 4\ncheckpoint_every = 2\n"
        "[eval]\nsamples = 2\nsampler_steps = 2\n")
    data = root / "sites.csv"
    data.write_text("id,lat,lon,text\n" + "".join(f"s{i},{-60 + 3 * i},{-170 + 8.5 * i},site {i}\n" for i in range(40)))
    try:
        assert cli.main(["train", "--config", str(root / "tiny.toml"), "--data", str(data), "--workdir", str(root / "runs"),
                         "--no-eval"]) == 0
        yield root
    finally:
        container_module.build_container = real


def test_eval_max_items_must_be_positive(cli_run, capsys, row):
    r = row("5", "`eval RUN --max-items -5`")
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", str(cli_run / "runs" / "run-0001"), "--max-items", "-5"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --max-items: expected a whole number >= 1, got -5" in err
    with pytest.raises(ValueError, match="'max_items' must be >= 1"):
        RunConfig.from_dict({"eval": {"max_items": -5}})
    r.held("exit 2: `argument --max-items: expected a whole number >= 1, got -5` (and eval.max_items >= 1 in configs)")


def test_options_anywhere(cli_run, capsys, row):
    r = row("16", "`predict RUN --top 1 img.jpg` (an option before the images)")
    from locdiff.cli.main import build_parser

    args = build_parser().parse_args(["predict", "RUN", "--top", "1", "a.jpg", "--samples", "2", "b.jpg"])
    assert args.run == "RUN" and args.images == ["a.jpg", "b.jpg"] and args.top == 1 and args.samples == 2
    r.held("parsed: images `a.jpg b.jpg`, `--top 1`")


def test_flag_errors_name_the_flag(tmp_path, capsys, monkeypatch, row):
    r = row("17", "`train --degree -1`")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--degree", "-1", "--no-eval")
    line = one_error_line(err)
    assert code == 2 and line == "error: --degree (model.degree): 'degree' must be >= 1: -1" and "default.toml" not in line
    code, _, err = run_cli(capsys, "train", "--l2-weight", "-1", "--no-eval")
    assert code == 2 and one_error_line(err) == "error: --l2-weight (diffusion.l2_weight): 'l2_weight' must be >= 0.0: -1.0"
    from locdiff.cli.flags import config_from_args
    from locdiff.cli.main import build_parser

    assert config_from_args(build_parser().parse_args(["train", "--l2-weight", "8"])).diffusion.l2_weight == 8.0
    r.held(f"exit 2: `{line}`")


def test_eval_from_another_directory_finds_the_runs_store(cli_run, capsys, monkeypatch, tmp_path, row):
    r = row("18", "`eval runs/run-0001 …` from another working directory")
    monkeypatch.chdir(tmp_path)
    run = cli_run / "runs" / "run-0001"
    code, out, err = run_cli(capsys, "eval", str(run), "--data", str(cli_run / "sites.csv"), "--max-items", "2",
                             "--samples", "2", "--sampler", "ddim:2")
    assert code == 0, err
    assert not (tmp_path / "runs").exists()  # no store made in the working directory
    with sqlite3.connect(cli_run / "runs" / "locdiff.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM evaluations WHERE run_id = 1").fetchone()[0] > 0
    r.held("stored in the store beside the run folders (`<workdir>/locdiff.sqlite`); nothing created in the cwd")


def test_eval_does_not_read_the_data_a_checkpoint_names(cli_run, capsys, row):
    r = row("11", "`eval RUN` of a model whose checkpoint names its CSV (`data.source`)")
    code, _, err = run_cli(capsys, "eval", str(cli_run / "runs" / "run-0001"), "--max-items", "2")
    line = one_error_line(err)
    assert code == 2 and "give --data CSV" in line
    r.held("exit 2 until `--data` names the file: the user chooses what is read")


def test_runs_lists_study_runs(cli_run, capsys, row):
    r = row("20", "`runs` after a run without a model config (what `eval --compare` stores)")
    with SqlExperimentStore(sqlite_url(cli_run / "runs" / "locdiff.sqlite")) as store:
        store.start_run("compare", {"study": "compare", "samples": 2}, "v")
    code, out, err = run_cli(capsys, "runs", "--workdir", str(cli_run / "runs"))
    assert code == 0 and "Traceback" not in err, err
    lines = [ln for ln in out.splitlines() if ln.startswith("run ")]
    assert len(lines) == 2 and "L=-" in lines[1] and "L=3" in lines[0]
    r.held("every run listed, `L=-` where none is stored")


# --------------------------------------------------------------------------- 19: the install
def test_geoclip_is_installed_without_its_stale_pins(tmp_path, row):
    r = row("19", "the README install: geoclip 1.3.0's `huggingface-hub<2` pin")
    import subprocess
    import zipfile

    spec = importlib.util.spec_from_file_location("install_geoclip", ROOT / "scripts" / "install_geoclip.py")
    installer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installer)
    wheel = tmp_path / "geoclip-1.3.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("geoclip/__init__.py", "")
        z.writestr("geoclip/model/weights/w.pth", b"w")
        z.writestr("geoclip-1.3.0.dist-info/METADATA", "Requires-Dist: huggingface-hub<2")
        z.writestr("geoclip/../../evil.py", "x")
    written = installer.unpack(wheel, tmp_path / "site")
    assert sorted(written) == ["geoclip/__init__.py", "geoclip/model/weights/w.pth"]
    assert not list((tmp_path / "site").glob("*.dist-info")) and not (tmp_path / "evil.py").exists()
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert "geoclip" not in check.stdout + check.stderr, check.stdout
    r.held("unpacked without pip metadata (scripts/install_geoclip.py): `pip check` clean, no resolver ERROR lines")


# --------------------------------------------------------------------------- fuzz: every input works or is one clear error
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SCALARS = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=12), st.none())
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else "-inf" if value == float("-inf") else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return '""'


def _fields() -> list[tuple[str | None, str]]:
    import attrs

    out = []
    for f in attrs.fields(RunConfig):
        if f.name in ("workdir", "store_url", "device"):
            continue  # the command line sets these (--workdir/--store) so the fuzz never writes elsewhere
        if isinstance(f.default, attrs.Factory):
            out += [(f.name, g.name) for g in attrs.fields(type(f.default.factory()))]
        else:
            out.append((None, f.name))
    return out + [(None, "unknown_key"), ("model", "unknown_key")]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(_fields()), value=_VALUES)
def test_fuzz_toml_values(tmp_path_factory, field, value):
    import contextlib
    import io

    wd = tmp_path_factory.mktemp("fz")
    db = _valid_store(wd / "locdiff.sqlite")
    before = sha(db)
    section, name = field
    line = f"{name} = {_toml_value(value)}\n"
    (wd / "f.toml").write_text(f"[{section}]\n{line}" if section else line, encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(["runs", "--config", str(wd / "f.toml"), "--workdir", str(wd), "--store", sqlite_url(db)])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, 2), (field, value, err.getvalue())
    if code == 2:
        one_error_line(err.getvalue())
    assert sha(db) == before


_CELL = st.one_of(st.text(max_size=20), st.sampled_from(["0", "-90", "90.0001", "nan", "inf", "1e308", "../x.jpg", "/etc/passwd",
                                                          "/proc/self/environ", "a.jpg", "", "\x00", "ñ", '"'])) 


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=st.sampled_from(["id,lat,lon,text", "lat,lon,image", "lat,lon", "id,lat,lon,text,text", "lat,lon,image,text"]),
       rows=st.lists(st.lists(_CELL, min_size=0, max_size=5), max_size=6))
def test_fuzz_csv_rows(tmp_path_factory, header, rows):
    import csv as csv_module
    import io

    folder = tmp_path_factory.mktemp("csv")
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff")
    buffer = io.StringIO()
    writer = csv_module.writer(buffer)
    writer.writerow(header.split(","))
    writer.writerows(rows)
    (folder / "d.csv").write_text(buffer.getvalue(), encoding="utf-8")
    try:
        samples = CsvSource(folder / "d.csv").load()
    except DatasetError as exc:
        assert str(exc).startswith(("invalid dataset", "bad header", "cannot read", "1 missing", "2 missing", "3 missing"))
        return
    for item in samples.items if samples.kind == "image" else ():
        assert Path(item).resolve().is_relative_to(folder.resolve())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["cond_dim", "degree", "embedder_id", "kind", "format", "config", "config.model", "config.model.widths",
                            "config.model.degree", "config.diffusion.steps", "config.data.source", "config.eval"]),
       value=_VALUES)
def test_fuzz_checkpoint_meta(tmp_path_factory, key, value):
    path, meta = tiny_checkpoint(tmp_path_factory.mktemp("ck"))
    node, *parts = key.split(".")
    target = meta
    for part in [node, *parts][:-1]:
        target = target[part]
    target[[node, *parts][-1]] = value
    tamper(path, meta)
    try:
        load(path)
    except ValueError as exc:
        assert str(path) in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["family", "param", "n_lat", "n_lon", "sub", "scores", "extra"]), value=_VALUES)
def test_fuzz_calibration_fields(tmp_path_factory, key, value):
    folder = tmp_path_factory.mktemp("cal")
    ckpt = folder / "checkpoints" / "step-00000004"
    ckpt.mkdir(parents=True)
    (folder / CALIBRATION_FILE).write_text(json.dumps({"format": 1, "checkpoint": ckpt.name, "calibrator": {key: value}}))
    try:
        cal = load_calibration(ckpt)
    except ValueError as exc:
        assert "\n" not in str(exc) and CALIBRATION_FILE in str(exc)
        return
    assert cal.n_lat * cal.n_lon * cal.sub**2 <= 720 * 1440 * 4


def test_fuzz_row(row):
    r = row("fuzz", "hypothesis: 60 TOML values, 80 CSV files, 60 checkpoint-meta and 60 calibration fields")
    r.held("each works or fails with one error (CLI: exit 2, one `error:` line, store file hash unchanged); no traceback")


def test_resume_before_the_first_checkpoint_starts_from_step_0(cli_run, tmp_path, capsys, row):
    r = row("8", "kill -9 before the first checkpoint, then `train --resume RUN`")
    import shutil

    wd = tmp_path / "runs"
    assert cli.main(["train", "--config", str(cli_run / "tiny.toml"), "--data", str(cli_run / "sites.csv"), "--workdir", str(wd),
                     "--no-eval"]) == 0
    run = wd / "run-0001"
    shutil.rmtree(run / "checkpoints")  # what a kill before the first checkpoint leaves: config.json, run.json, no step
    with sqlite3.connect(wd / "locdiff.sqlite") as conn:
        conn.execute("UPDATE runs SET status = 'running', finished_at = NULL, pid = 999999999")
        conn.execute("DELETE FROM checkpoints")
    capsys.readouterr()
    code, out, err = run_cli(capsys, "train", "--resume", str(run), "--no-eval")
    assert code == 0, err
    assert "from the start (no checkpoint yet) (step 0)" in out
    assert [p.name for p in SafetensorsCheckpointStore().steps(run / "checkpoints")][-1] == "step-00000004"
    with SqlExperimentStore(sqlite_url(wd / "locdiff.sqlite")) as store:
        assert store.get_run(1).status == "finished"
    r.held("resumed from step 0 with the run's recorded config; the run ends `finished` (was `running` forever)")
