"""``SqlExperimentStore``: the :class:`locdiff.ports.ExperimentStore` port on SQLAlchemy 2.0.

SQLite by default (WAL journal, foreign keys on, ``BEGIN IMMEDIATE`` transactions); any SQLAlchemy URL
works. Every public method is one transaction: it writes everything or nothing. Bad input raises
``ValueError`` naming the field; unknown run ids raise ``KeyError``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import functools
import socket
import sqlite3
from datetime import timedelta

from sqlalchemy import Engine, create_engine, event, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from locdiff.ports import CheckpointRecord, RunRecord
from locdiff.core.serialization import plain_json
from storage.schema import (
    RUN_STATUSES,
    SCHEMA_VERSION,
    TABLE_NAMES,
    Base,
    Checkpoint,
    Evaluation,
    Experiment,
    Metric,
    Prediction,
    Run,
    SchemaInfo,
    utc_now,
)

_FINAL_STATUSES = tuple(s for s in RUN_STATUSES if s != "running")
_PREDICTION_FIELDS = ("item", "lat", "lon", "probability", "payload")
_SHA256 = re.compile(r"[0-9a-f]{64}")


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
STALE_AFTER = timedelta(hours=6)  # a running run on another host with no report for this long is stale
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(ValueError):
    """The experiment database cannot be used; a one-line message names it and says what to do."""


class SchemaVersionError(StoreError):
    """The database was written by a schema this code cannot upgrade (newer, or unknown)."""

    def __init__(self, where: str, found: int | str | None, expected: int | str = SCHEMA_VERSION, *, newer: bool = False) -> None:
        self.where, self.found, self.expected = where, found, expected
        if newer:
            kind = "version" if isinstance(found, int) else "revision"
            text = (f"experiment database {where} has schema {kind} {found}, newer than this LocDiff (expected {kind} "
                    f"{expected} or older); upgrade LocDiff, or pass another --store")
        else:
            found_text = "no schema version" if found is None else f"schema version {found}"
            text = (f"experiment database {where} has {found_text}, expected version {expected}; "
                    "it was not written by LocDiff's migrations: pass another --store")
        super().__init__(text)


_HINTS = (
    ("readonly", "the file or its folder is read-only: make it writable, or pass another --store"),
    ("unable to open", "check that the folder exists and is writable, or pass another --store"),
    ("not a database", "the file is not an SQLite database: move it away, or pass another --store"),
    ("malformed", "the file is damaged: restore a backup, or pass another --store"),
    ("disk is full", "free some disk space and retry (nothing was written)"),
    ("disk i/o", "the disk reported an I/O error (nothing was written); check it and retry"),
    ("locked", "another process holds the database lock for too long; retry when it is done"),
    ("no such column", "its tables differ from its recorded schema version: restore a backup, or pass another --store"),
    ("no such table", "its tables differ from its recorded schema version: restore a backup, or pass another --store"),
)


def store_error(where: str, exc: BaseException) -> StoreError:
    """One line for any failure of the database: what happened and what to do."""
    if isinstance(exc, StoreError):
        return exc
    raw = getattr(exc, "orig", None) or exc
    text = " ".join(str(raw).split()) or type(raw).__name__
    hint = next((h for key, h in _HINTS if key in text.lower()), "check the database, or pass another --store")
    return StoreError(f"experiment database {where}: {text[:200]}; {hint}")


def _guarded(method):
    """Turn database failures of a public method into a one-line :class:`StoreError` (the transaction is rolled back)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise store_error(self.where, exc) from None

    return wrapper


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path`` (made absolute)."""
    return "sqlite:///" + str(Path(path).expanduser().resolve())


# --------------------------------------------------------------------------- input checks
def _number(value: Any, where: str) -> float:
    """``value`` as a float (numbers, numpy scalars, one-element tensors); NaN and inf are kept."""
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}") from exc


def _stored(value: float) -> float | None:
    """SQLite cannot hold NaN: it is stored as NULL and read back as NaN."""
    return None if math.isnan(value) else value


def _loaded(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _integer(value: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: expected an int >= {minimum}, got {value}")
    return int(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _figures(metrics: Any, where: str) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{where}: expected a mapping of name -> number, got {type(metrics).__name__}")
    return {_text(name, f"{where} name"): _number(v, f"{where}[{name!r}]") for name, v in metrics.items()}


def _prediction(row: Any, run_id: int | None, index: int) -> Prediction:
    where = f"predictions row {index}"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(row).__name__}")
    missing = [k for k in ("item", "lat", "lon") if k not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    item = os.fspath(row["item"]) if isinstance(row["item"], os.PathLike) else row["item"]
    item = _text(item, f"{where} field 'item'")
    lat = _number(row["lat"], f"{where} field 'lat'")
    lon = _number(row["lon"], f"{where} field 'lon'")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"{where} field 'lat': expected degrees in [-90, 90], got {lat}")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"{where} field 'lon': expected degrees in [-180, 180], got {lon}")
    probability = row.get("probability")
    if probability is not None:
        probability = _number(probability, f"{where} field 'probability'")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"{where} field 'probability': expected a value in [0, 1] or None, got {probability}")
    payload = row.get("payload") or {}
    if not isinstance(payload, Mapping):
        raise ValueError(f"{where} field 'payload': expected a mapping, got {type(payload).__name__}")
    extra = {k: v for k, v in row.items() if k not in _PREDICTION_FIELDS}
    clash = sorted(set(extra) & set(payload))
    if clash:
        raise ValueError(f"{where}: key(s) {clash} given both as fields and inside 'payload'")
    payload = plain_json({**payload, **extra}, f"{where} payload")
    return Prediction(run_id=run_id, item=item, lat=lat, lon=lon, probability=probability, payload=payload)


# --------------------------------------------------------------------------- engine
def _is_memory_sqlite(database: str | None) -> bool:
    return not database or database == ":memory:" or database.startswith("file::memory:")


def _make_engine(url: str) -> tuple[Engine, str]:
    """An engine for ``url`` and a human-readable name of the database (file path or URL)."""
    if not isinstance(url, str) or not url.strip():
        raise StoreError(f"experiment store: expected a database URL such as sqlite:///runs/locdiff.sqlite, got {url!r}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"experiment store: cannot parse database URL {url!r}; expected e.g. sqlite:///runs/locdiff.sqlite") from None
    where = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed), where
        except NoSuchModuleError:
            raise StoreError(f"experiment store {where}: unknown database kind {parsed.drivername!r}; "
                             "expected an SQLAlchemy URL such as sqlite:///runs/locdiff.sqlite") from None
        except ImportError as exc:
            raise StoreError(f"experiment store {where}: the database driver is not installed ({exc.name or exc}); "
                             "install it (e.g. pip install psycopg2-binary for PostgreSQL)") from None
    if _is_memory_sqlite(parsed.database):
        engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        path = Path(parsed.database or "")
        where = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"experiment database {where}: cannot create its folder ({exc.strerror or exc}); "
                             "pass another --store or --workdir") from None
        _check_sqlite_file(path)
        engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself (see "begin")
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks

    return engine, where


def _check_sqlite_file(path: Path) -> None:
    """An existing store file must be a regular file starting with SQLite's header (else: one-line error)."""
    if not path.exists():
        return
    where = str(path)
    if not path.is_file():
        raise StoreError(f"experiment database {where}: not a regular file; pass another --store")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"experiment database {where}: cannot read it ({exc.strerror or exc}); pass another --store") from None
    if head and head != _SQLITE_MAGIC:
        raise StoreError(f"experiment database {where}: not an SQLite database; move the file away, or pass another --store")
    if not head:
        return
    try:  # read-only look first: a damaged or foreign file is refused before anything (even WAL mode) is written
        probe = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            tables = {name for (name,) in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            probe.close()
    except sqlite3.Error as exc:
        raise store_error(where, exc) from None
    ours = set(TABLE_NAMES) | {"alembic_version", "sqlite_sequence"}
    if tables and not tables & ours:
        shown = ", ".join(sorted(tables)[:5])
        raise StoreError(f"experiment database {where} already holds other tables ({shown}); "
                         "it is not a LocDiff store: pass another --store")


def _alembic_config(connection: Any):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def _column_differences(conn: Any) -> str | None:
    """How the database's tables differ from the ORM's (None if they match)."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in present:
            return f"table {table.name!r} is missing"
        have = {c["name"] for c in inspector.get_columns(table.name)}
        want = {c.name for c in table.columns}
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            parts = ([f"lacks column(s) {missing}"] if missing else []) + ([f"has unknown column(s) {extra}"] if extra else [])
            return f"table {table.name!r} " + " and ".join(parts)
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# --------------------------------------------------------------------------- store
class SqlExperimentStore:
    """Runs, metrics, checkpoints, evaluations and predictions in one SQL database."""

    sqlite_url = staticmethod(sqlite_url)

    def __init__(self, url: str) -> None:
        self._engine, self.where = _make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._host, self._pid = socket.gethostname()[:255], os.getpid()
        try:
            self._prepare_schema()
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            self._engine.dispose()
            raise store_error(self.where, exc) from None
        except BaseException:
            self._engine.dispose()
            raise

    # ..................................................................... lifecycle
    def _prepare_schema(self) -> None:
        """Create a new store, upgrade an older one in place (one transaction), refuse anything else.

        Older: a store stamped with an earlier Alembic revision, or one from before migrations
        (``schema_info.version = 1`` and no ``alembic_version``), which is stamped ``0001`` first.
        Refused: a newer revision, an unknown version, a foreign non-empty database, or tables whose
        columns differ from the recorded revision.
        """
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        script = _script()
        head = script.get_current_head()
        known = {rev.revision for rev in script.walk_revisions()}
        with self._engine.begin() as conn:
            present = set(inspect(conn).get_table_names())
            current = MigrationContext.configure(conn).get_current_revision() if "alembic_version" in present else None
            config = _alembic_config(conn)
            versions = list(conn.execute(select(SchemaInfo.version)).scalars()) if "schema_info" in present else []
            if "schema_info" in present and (len(versions) != 1 or not isinstance(versions[0], int) or versions[0] < 1
                                             or versions[0] > SCHEMA_VERSION):
                found = versions[-1] if versions else None
                newer = isinstance(found, int) and found > SCHEMA_VERSION
                raise SchemaVersionError(self.where, found, SCHEMA_VERSION, newer=newer)
            if current is not None:
                if current not in known:
                    raise SchemaVersionError(self.where, current, head, newer=True)
            elif versions:
                if versions != [1]:  # only version 1 existed before migrations
                    raise SchemaVersionError(self.where, versions[0], SCHEMA_VERSION)
                command.stamp(config, "0001")  # the schema from before migrations is revision 0001
            elif present & set(TABLE_NAMES):
                raise SchemaVersionError(self.where, None)
            elif present - {"sqlite_sequence"}:
                shown = ", ".join(sorted(present)[:5])
                raise StoreError(f"experiment database {self.where} already holds other tables ({shown}); "
                                 "it is not a LocDiff store: pass another --store")
            command.upgrade(config, "head")
            problem = _column_differences(conn)
            if problem is not None:
                revision = MigrationContext.configure(conn).get_current_revision()
                raise StoreError(f"experiment database {self.where}: {problem} for schema revision {revision}; "
                                 "restore a backup, or pass another --store")

    def close(self) -> None:
        """Release every pooled connection (the store must not be used afterwards)."""
        self._engine.dispose()

    def __enter__(self) -> SqlExperimentStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlExperimentStore({self.where!r})"

    # ..................................................................... helpers
    @staticmethod
    def _forget_missing(session: Session, run_id: int) -> int:
        """Drop the rows of the run's checkpoints that are no longer on disk (pruned, or lost to a kill)."""
        gone = [row for row in session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id)) if not os.path.exists(row.path)]
        for row in gone:
            session.delete(row)
        return len(gone)

    def _stale(self, run: Run) -> bool:
        """A ``running`` run whose process is gone: same host and a dead pid, or silent for :data:`STALE_AFTER`."""
        if run.status != "running":
            return False
        if run.host == self._host and run.pid is not None:
            return run.pid != self._pid and not _process_alive(run.pid)
        last = run.heartbeat_at or run.created_at
        return utc_now() - last > STALE_AFTER

    def _run(self, session: Session, run_id: Any) -> Run:
        run_id = _integer(run_id, "run_id")
        run = session.get(Run, run_id)
        if run is None:
            raise KeyError(f"no run with id {run_id} in experiment database {self.where}")
        return run

    def _records(self, session: Session, runs: Sequence[tuple[Run, str]]) -> list[RunRecord]:
        ids = [run.id for run, _ in runs]
        figures: dict[int, dict[str, float]] = {i: {} for i in ids}
        rank = func.row_number().over(
            partition_by=(Metric.run_id, Metric.name), order_by=(Metric.step.desc(), Metric.id.desc())
        )
        latest = select(Metric.run_id, Metric.name, Metric.value, rank.label("rank"))
        latest = latest.where(Metric.run_id.in_(ids)).subquery()
        for run_id, name, value in session.execute(
            select(latest.c.run_id, latest.c.name, latest.c.value).where(latest.c.rank == 1)
        ):
            figures[run_id][name] = _loaded(value)
        rank = func.row_number().over(
            partition_by=(Evaluation.run_id, Evaluation.dataset, Evaluation.name), order_by=Evaluation.id.desc()
        )
        latest = select(Evaluation.run_id, Evaluation.dataset, Evaluation.name, Evaluation.value, rank.label("rank"))
        latest = latest.where(Evaluation.run_id.in_(ids)).subquery()
        for run_id, dataset, name, value in session.execute(
            select(latest.c.run_id, latest.c.dataset, latest.c.name, latest.c.value).where(latest.c.rank == 1)
        ):
            figures[run_id][f"{dataset}/{name}"] = _loaded(value)
        return [
            RunRecord(
                run_id=run.id,
                experiment=experiment,
                status=run.status,
                created_at=run.created_at,
                finished_at=run.finished_at,
                config=dict(run.config),
                code_version=run.code_version,
                metrics=figures[run.id],
                stale=self._stale(run),
            )
            for run, experiment in runs
        ]

    # ..................................................................... writes
    @_guarded
    def start_run(self, experiment: str, config: Mapping[str, Any], code_version: str) -> int:
        """Record a new ``running`` run of ``experiment`` (created if new); returns its id."""
        experiment = _text(experiment, "experiment")
        if not isinstance(config, Mapping):
            raise ValueError(f"config: expected a mapping, got {type(config).__name__}")
        plain = plain_json(config, "config")
        if not isinstance(code_version, str):
            raise ValueError(f"code_version: expected a string, got {code_version!r}")
        with self._sessions.begin() as session:
            found = session.scalar(select(Experiment).where(Experiment.name == experiment))
            if found is None:
                found = Experiment(name=experiment, created_at=utc_now())
                session.add(found)
                session.flush()
            now = utc_now()
            run = Run(
                experiment_id=found.id, status="running", config=plain, code_version=code_version, created_at=now,
                host=self._host, pid=self._pid, heartbeat_at=now,
            )
            session.add(run)
            session.flush()
            return run.id

    @_guarded
    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float]) -> None:
        """Append training figures at ``step`` (NaN is kept, stored as NULL)."""
        step = _integer(step, "step", minimum=0)
        figures = _figures(metrics, "metrics")
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            session.add_all(Metric(run_id=run.id, step=step, name=n, value=_stored(v)) for n, v in figures.items())
            run.heartbeat_at = utc_now()

    @_guarded
    def add_checkpoint(self, run_id: int, record: CheckpointRecord) -> None:
        """Record a checkpoint; a record with the same path for this run is replaced."""
        if not isinstance(record, CheckpointRecord):
            raise ValueError(f"record: expected a CheckpointRecord, got {type(record).__name__}")
        path = _text(record.path, "checkpoint path")
        if not isinstance(record.sha256, str) or not _SHA256.fullmatch(record.sha256):
            raise ValueError(f"checkpoint sha256: expected 64 lowercase hex digits, got {record.sha256!r}")
        fields = dict(
            path=path,
            sha256=record.sha256,
            degree=_integer(record.degree, "checkpoint degree", minimum=0),
            dims=_integer(record.dims, "checkpoint dims", minimum=1),
            embedder_id=_text(record.embedder_id, "checkpoint embedder_id"),
            step=_integer(record.step, "checkpoint step", minimum=0),
            created_at=utc_now(),
        )
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            row = session.scalar(select(Checkpoint).where(Checkpoint.run_id == run.id, Checkpoint.path == path))
            if row is None:
                session.add(Checkpoint(run_id=run.id, **fields))
            else:
                for key, value in fields.items():
                    setattr(row, key, value)
            run.heartbeat_at = utc_now()

    @_guarded
    def forget_missing_checkpoints(self, run_id: int) -> int:
        """Drop the run's checkpoint rows whose folder is gone from disk (pruned, or lost to a kill); returns how many."""
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            return self._forget_missing(session, run.id)

    @_guarded
    def add_evaluation(self, run_id: int, dataset: str, metrics: Mapping[str, float]) -> None:
        """Record evaluation figures of a run on ``dataset`` (shown as ``"<dataset>/<name>"``)."""
        dataset = _text(dataset, "dataset")
        figures = _figures(metrics, "evaluation metrics")
        now = utc_now()
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            session.add_all(
                Evaluation(run_id=run.id, dataset=dataset, name=n, value=_stored(v), created_at=now)
                for n, v in figures.items()
            )

    @_guarded
    def add_predictions(self, run_id: int | None, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store predictions: each row has ``item``, ``lat``, ``lon``, optional ``probability``
        and ``payload`` (a JSON dict); any other keys are merged into the payload."""
        if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
            raise ValueError(f"rows: expected a sequence of mappings, got {type(rows).__name__}")
        if run_id is not None:
            run_id = _integer(run_id, "run_id")
        prepared = [_prediction(row, run_id, i) for i, row in enumerate(rows)]
        now = utc_now()
        with self._sessions.begin() as session:
            if run_id is not None:
                self._run(session, run_id)
            for prediction in prepared:
                prediction.created_at = now
            session.add_all(prepared)

    @_guarded
    def finish_run(self, run_id: int, status: str) -> None:
        """Mark a running run ``finished``, ``failed`` or ``interrupted`` and stamp ``finished_at``."""
        if status not in _FINAL_STATUSES:
            raise ValueError(f"status: expected one of {', '.join(_FINAL_STATUSES)}, got {status!r}")
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            if run.status != "running":
                raise ValueError(f"run {run.id} is already {run.status!r}; only a running run can be finished")
            run.status = status
            run.finished_at = utc_now()

    @_guarded
    def reopen_run(self, run_id: int) -> None:
        """Mark an ``interrupted`` or ``failed`` run ``running`` again (it is being resumed)."""
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            if run.status == "finished":
                raise ValueError(f"run {run.id} already finished; it cannot be resumed")
            run.status = "running"
            run.finished_at = None
            run.host, run.pid, run.heartbeat_at = self._host, self._pid, utc_now()

    # ..................................................................... reads
    @_guarded
    def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first, with its latest figures."""
        with self._sessions.begin() as session:
            rows = session.execute(select(Run, Experiment.name).join(Experiment).order_by(Run.id)).all()
            return self._records(session, [(run, name) for run, name in rows])

    @_guarded
    def get_run(self, run_id: int) -> RunRecord:
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            name = session.scalar(select(Experiment.name).where(Experiment.id == run.experiment_id))
            return self._records(session, [(run, str(name))])[0]

    @_guarded
    def checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        """The run's checkpoints by step (then insertion order)."""
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            rows = session.scalars(
                select(Checkpoint).where(Checkpoint.run_id == run.id).order_by(Checkpoint.step, Checkpoint.id)
            )
            return [
                CheckpointRecord(
                    path=r.path, sha256=r.sha256, degree=r.degree, dims=r.dims, embedder_id=r.embedder_id, step=r.step
                )
                for r in rows
            ]

    @_guarded
    def predictions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` predictions, newest first, as plain dicts."""
        limit = _integer(limit, "limit", minimum=1)
        with self._sessions.begin() as session:
            rows = session.scalars(select(Prediction).order_by(Prediction.id.desc()).limit(limit))
            return [
                {
                    "id": r.id,
                    "run_id": r.run_id,
                    "created_at": r.created_at,
                    "item": r.item,
                    "lat": r.lat,
                    "lon": r.lon,
                    "probability": r.probability,
                    "payload": dict(r.payload),
                }
                for r in rows
            ]
