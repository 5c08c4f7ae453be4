"""SqlExperimentStore against real SQLite (file with WAL, and in-memory)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, text

from locdiff.ports import CheckpointRecord, ExperimentStore
from storage import SCHEMA_VERSION, SchemaVersionError, SqlExperimentStore, sqlite_url
from storage.schema import Prediction

SHA = "ab" * 32


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlExperimentStore]:
    url = sqlite_url(tmp_path / "exp.sqlite") if request.param == "file" else "sqlite://"
    with SqlExperimentStore(url) as opened:
        yield opened


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "exp.sqlite"


def _record(step: int, path: str = "") -> CheckpointRecord:
    return CheckpointRecord(
        path=path or f"runs/a/step-{step:08d}", sha256=SHA, degree=10, dims=64, embedder_id="clip:ViT-L", step=step
    )


def test_implements_protocol(store: SqlExperimentStore) -> None:
    assert isinstance(store, ExperimentStore)


def test_run_round_trip(store: SqlExperimentStore) -> None:
    config = {"lr": 1e-3, "steps": 100, "use_ema": True, "tags": ["a", 1, None], "nested": {"k": (1, 2)}, "x": None}
    before = datetime.now(timezone.utc)
    run_id = store.start_run("yfcc-demo", config, "abc123")
    other = store.start_run("yfcc-demo", {}, "abc123")
    third = store.start_run("another", {}, "def")
    rec = store.get_run(run_id)
    assert rec.run_id == run_id and rec.experiment == "yfcc-demo" and rec.code_version == "abc123"
    assert rec.status == "running" and rec.finished_at is None
    assert rec.config == {**config, "nested": {"k": [1, 2]}}
    assert rec.created_at.tzinfo == timezone.utc
    assert before - timedelta(seconds=1) <= rec.created_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert rec.metrics == {}
    assert [r.run_id for r in store.list_runs()] == [run_id, other, third]
    assert [r.experiment for r in store.list_runs()] == ["yfcc-demo", "yfcc-demo", "another"]

    store.finish_run(run_id, "finished")
    done = store.get_run(run_id)
    assert done.status == "finished"
    assert done.finished_at is not None and done.finished_at.tzinfo == timezone.utc
    assert done.finished_at >= done.created_at
    store.finish_run(other, "interrupted")
    store.finish_run(third, "failed")
    assert [r.status for r in store.list_runs()] == ["finished", "interrupted", "failed"]


def test_metrics_latest_and_evaluations(store: SqlExperimentStore) -> None:
    run_id = store.start_run("e", {}, "v")
    other = store.start_run("e", {}, "v")
    store.log_metrics(run_id, 0, {"loss": 2.0, "lr": 0.1})
    store.log_metrics(run_id, 20, {"loss": 0.5})
    store.log_metrics(run_id, 10, {"loss": 1.0})  # logged later but an earlier step
    store.log_metrics(run_id, 20, {"lr": float("nan")})
    store.log_metrics(other, 5, {"loss": 9.0})
    store.add_evaluation(run_id, "im2gps3k", {"acc@1km": 0.1, "acc@25km": 0.3})
    store.add_evaluation(run_id, "im2gps3k", {"acc@1km": 0.12})
    metrics = store.get_run(run_id).metrics
    assert metrics["loss"] == 0.5
    assert math.isnan(metrics["lr"])
    assert metrics["im2gps3k/acc@1km"] == pytest.approx(0.12)
    assert metrics["im2gps3k/acc@25km"] == pytest.approx(0.3)
    assert set(metrics) == {"loss", "lr", "im2gps3k/acc@1km", "im2gps3k/acc@25km"}
    by_id = {r.run_id: r.metrics for r in store.list_runs()}
    assert by_id[other] == {"loss": 9.0}
    assert by_id[run_id]["loss"] == 0.5


def test_checkpoints_round_trip_and_replace(store: SqlExperimentStore) -> None:
    run_id = store.start_run("e", {}, "v")
    store.add_checkpoint(run_id, _record(20))
    store.add_checkpoint(run_id, _record(10))
    assert store.checkpoints(run_id) == [_record(10), _record(20)]
    replaced = CheckpointRecord(path=_record(20).path, sha256="cd" * 32, degree=12, dims=64, embedder_id="x", step=20)
    store.add_checkpoint(run_id, replaced)  # the same step folder re-saved
    assert store.checkpoints(run_id) == [_record(10), replaced]
    assert store.checkpoints(store.start_run("e", {}, "v")) == []


def test_predictions_round_trip(store: SqlExperimentStore) -> None:
    run_id = store.start_run("e", {}, "v")
    store.add_predictions(
        run_id,
        [
            {"item": "a.jpg", "lat": 48.85, "lon": 2.35, "probability": 0.7, "payload": {"top": [[1.0, 2.0]]}},
            {"item": Path("b.jpg"), "lat": -33.9, "lon": 151.2, "country": "AU"},
        ],
    )
    store.add_predictions(None, [{"item": "the eiffel tower", "lat": 48.0, "lon": 2.0}])
    store.add_predictions(None, [])
    rows = store.predictions()
    assert [r["item"] for r in rows] == ["the eiffel tower", "b.jpg", "a.jpg"]
    newest, second, oldest = rows
    assert newest["run_id"] is None and newest["probability"] is None and newest["payload"] == {}
    assert second["payload"] == {"country": "AU"} and second["run_id"] == run_id
    assert oldest == {
        "id": oldest["id"],
        "run_id": run_id,
        "created_at": oldest["created_at"],
        "item": "a.jpg",
        "lat": 48.85,
        "lon": 2.35,
        "probability": 0.7,
        "payload": {"top": [[1.0, 2.0]]},
    }
    assert oldest["created_at"].tzinfo == timezone.utc
    assert [r["item"] for r in store.predictions(limit=1)] == ["the eiffel tower"]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.log_metrics(99, 0, {"loss": 1.0}),
        lambda s: s.add_checkpoint(99, _record(1)),
        lambda s: s.add_evaluation(99, "d", {"a": 1.0}),
        lambda s: s.add_predictions(99, [{"item": "a", "lat": 0, "lon": 0}]),
        lambda s: s.finish_run(99, "finished"),
        lambda s: s.get_run(99),
        lambda s: s.checkpoints(99),
    ],
)
def test_unknown_run_is_key_error(store: SqlExperimentStore, call) -> None:
    with pytest.raises(KeyError, match="no run with id 99"):
        call(store)
    assert store.predictions() == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, r: s.start_run("", {}, "v"), "experiment"),
        (lambda s, r: s.start_run("e", {"a": {1, 2}}, "v"), r"config\['a'\]: expected str"),
        (lambda s, r: s.start_run("e", {"a": [1.0, float("nan")]}, "v"), r"config\['a'\]\[1\]"),
        (lambda s, r: s.start_run("e", {3: 1}, "v"), "keys must be strings"),
        (lambda s, r: s.log_metrics(r, -1, {"a": 1.0}), "step"),
        (lambda s, r: s.log_metrics(r, 1, {"a": "1.0"}), r"metrics\['a'\]: expected a number"),
        (lambda s, r: s.add_evaluation(r, "d", {"a": None}), "expected a number"),
        (lambda s, r: s.add_checkpoint(r, CheckpointRecord("p", "nothex", 1, 2, "e", 3)), "sha256"),
        (lambda s, r: s.finish_run(r, "done"), "status"),
        (lambda s, r: s.predictions(limit=0), "limit"),
        (lambda s, r: s.add_predictions(r, [{"item": "a", "lat": 0}]), "row 0: missing field.*lon"),
        (lambda s, r: s.add_predictions(r, [{"item": "a", "lat": 0, "lon": 0, "probability": 2}]), "probability"),
        (lambda s, r: s.add_predictions(r, [{"item": "a", "lat": 0, "lon": 0, "x": 1, "payload": {"x": 2}}]), "both"),
    ],
)
def test_bad_input_is_rejected_clearly(store: SqlExperimentStore, call, message: str) -> None:
    run_id = store.start_run("e", {}, "v")
    runs_before = len(store.list_runs())
    with pytest.raises(ValueError, match=message):
        call(store, run_id)
    assert len(store.list_runs()) == runs_before
    assert store.get_run(run_id).metrics == {} and store.checkpoints(run_id) == []
    assert store.get_run(run_id).status == "running" and store.predictions() == []


def test_finish_twice_is_rejected(store: SqlExperimentStore) -> None:
    run_id = store.start_run("e", {}, "v")
    store.finish_run(run_id, "finished")
    with pytest.raises(ValueError, match="already 'finished'"):
        store.finish_run(run_id, "failed")
    assert store.get_run(run_id).status == "finished"


def test_add_predictions_is_all_or_nothing(store: SqlExperimentStore) -> None:
    good = {"item": "a", "lat": 1.0, "lon": 2.0}
    with pytest.raises(ValueError, match=r"row 2 field 'lat'.*\[-90, 90\]"):
        store.add_predictions(None, [good, good, {"item": "c", "lat": 100.0, "lon": 0.0}, good])
    assert store.predictions() == []

    # A failure inside the database transaction (after validation) also leaves nothing behind.
    inserted: list[str] = []

    def explode(_mapper, _connection, target: Prediction) -> None:
        inserted.append(target.item)
        if len(inserted) == 3:
            raise RuntimeError("disk full (simulated)")

    event.listen(Prediction, "before_insert", explode)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            store.add_predictions(None, [{**good, "item": f"i{k}"} for k in range(5)])
    finally:
        event.remove(Prediction, "before_insert", explode)
    assert len(inserted) == 3
    assert store.predictions() == []
    store.add_predictions(None, [good])
    assert len(store.predictions()) == 1


def test_log_metrics_is_all_or_nothing(store: SqlExperimentStore) -> None:
    run_id = store.start_run("e", {}, "v")
    with pytest.raises(ValueError, match="'bad'"):
        store.log_metrics(run_id, 1, {"loss": 1.0, "bad": object()})
    assert store.get_run(run_id).metrics == {}


def test_sqlite_file_uses_wal_and_foreign_keys(db_file: Path) -> None:
    with SqlExperimentStore(sqlite_url(db_file)) as store:
        store.start_run("e", {}, "v")
        with store._engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    with sqlite3.connect(db_file) as raw:  # WAL is a property of the file itself
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]


def test_data_persists_and_is_shared_between_stores(db_file: Path) -> None:
    url = sqlite_url(db_file)
    with SqlExperimentStore(url) as writer, SqlExperimentStore(url) as reader:
        run_id = writer.start_run("e", {"seed": 1}, "v")
        writer.log_metrics(run_id, 3, {"loss": 0.25})
        assert reader.get_run(run_id).metrics == {"loss": 0.25}
    with SqlExperimentStore(url) as reopened:
        rec = reopened.get_run(run_id)
        assert rec.config == {"seed": 1} and rec.metrics == {"loss": 0.25}


def test_schema_version_mismatch_is_refused(db_file: Path) -> None:
    SqlExperimentStore(sqlite_url(db_file)).close()
    with sqlite3.connect(db_file) as raw:
        raw.execute("UPDATE schema_info SET version = 99")
    with pytest.raises(SchemaVersionError) as info:
        SqlExperimentStore(sqlite_url(db_file))
    message = str(info.value)
    assert str(db_file) in message and "version 99" in message and f"expected version {SCHEMA_VERSION}" in message
    assert isinstance(info.value, ValueError) and info.value.found == 99
    with sqlite3.connect(db_file) as raw:  # refused without touching the file
        assert raw.execute("SELECT version FROM schema_info").fetchall() == [(99,)]


def test_missing_version_row_is_refused(db_file: Path) -> None:
    SqlExperimentStore(sqlite_url(db_file)).close()
    with sqlite3.connect(db_file) as raw:
        raw.execute("DELETE FROM schema_info")
    with pytest.raises(SchemaVersionError, match=f"has no schema version, expected version {SCHEMA_VERSION}"):
        SqlExperimentStore(sqlite_url(db_file))


def test_bad_url_is_value_error() -> None:
    with pytest.raises(ValueError, match="cannot parse database URL"):
        SqlExperimentStore("not a url")


def test_reopen_interrupted_run(tmp_path):
    from storage import SqlExperimentStore, sqlite_url

    store = SqlExperimentStore(sqlite_url(tmp_path / "s.sqlite"))
    run = store.start_run("e", {"a": 1}, "v")
    store.finish_run(run, "interrupted")
    store.reopen_run(run)
    assert store.get_run(run).status == "running" and store.get_run(run).finished_at is None
    store.finish_run(run, "finished")
    with pytest.raises(ValueError, match="already finished"):
        store.reopen_run(run)
