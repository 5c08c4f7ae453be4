"""``SqlExperimentStore``: the :class:`locdiff.ports.ExperimentStore` port on SQLAlchemy 2.0.

SQLite by default (WAL journal, foreign keys on, ``BEGIN IMMEDIATE`` transactions); any SQLAlchemy URL
works. Every public method is one transaction: it writes everything or nothing. Bad input raises
``ValueError`` naming the field; unknown run ids raise ``KeyError``. The engine and schema live in
:mod:`storage.engine`, the row checks and conversions in :mod:`storage.rows`, the errors in :mod:`storage.errors`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from locdiff.core.serialization import plain_json
from locdiff.ports import CheckpointRecord, RunRecord
from storage.engine import make_engine, prepare_schema, sqlite_url
from storage.errors import DATABASE_FAILURES, SchemaVersionError, StoreError, guarded, store_error
from storage.rows import (
    checkpoint_fields,
    checkpoint_record,
    figures as checked_figures,
    integer,
    loaded,
    prediction_dict,
    prediction_row,
    stored,
    text,
)
from storage.schema import RUN_STATUSES, Checkpoint, Evaluation, Experiment, Metric, Prediction, Run, utc_now

__all__ = ["STALE_AFTER", "SchemaVersionError", "SqlExperimentStore", "StoreError", "sqlite_url", "store_error"]

_FINAL_STATUSES = tuple(s for s in RUN_STATUSES if s != "running")
STALE_AFTER = timedelta(hours=6)  # a running run on another host with no report for this long is stale


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
        self._engine, self.where = make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._host, self._pid = socket.gethostname()[:255], os.getpid()
        try:
            prepare_schema(self._engine, self.where)
        except DATABASE_FAILURES as exc:
            self._engine.dispose()
            raise store_error(self.where, exc) from None
        except BaseException:
            self._engine.dispose()
            raise

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
        run_id = integer(run_id, "run_id")
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
            figures[run_id][name] = loaded(value)
        rank = func.row_number().over(
            partition_by=(Evaluation.run_id, Evaluation.dataset, Evaluation.name), order_by=Evaluation.id.desc()
        )
        latest = select(Evaluation.run_id, Evaluation.dataset, Evaluation.name, Evaluation.value, rank.label("rank"))
        latest = latest.where(Evaluation.run_id.in_(ids)).subquery()
        for run_id, dataset, name, value in session.execute(
            select(latest.c.run_id, latest.c.dataset, latest.c.name, latest.c.value).where(latest.c.rank == 1)
        ):
            figures[run_id][f"{dataset}/{name}"] = loaded(value)
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
    @guarded
    def start_run(self, experiment: str, config: Mapping[str, Any], code_version: str) -> int:
        """Record a new ``running`` run of ``experiment`` (created if new); returns its id."""
        experiment = text(experiment, "experiment")
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

    @guarded
    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float]) -> None:
        """Append training figures at ``step`` (NaN is kept, stored as NULL)."""
        step = integer(step, "step", minimum=0)
        figures = checked_figures(metrics, "metrics")
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            session.add_all(Metric(run_id=run.id, step=step, name=n, value=stored(v)) for n, v in figures.items())
            run.heartbeat_at = utc_now()

    @guarded
    def add_checkpoint(self, run_id: int, record: CheckpointRecord) -> None:
        """Record a checkpoint; a record with the same path for this run is replaced."""
        fields = {**checkpoint_fields(record), "created_at": utc_now()}
        path = fields["path"]
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            row = session.scalar(select(Checkpoint).where(Checkpoint.run_id == run.id, Checkpoint.path == path))
            if row is None:
                session.add(Checkpoint(run_id=run.id, **fields))
            else:
                for key, value in fields.items():
                    setattr(row, key, value)
            run.heartbeat_at = utc_now()

    @guarded
    def forget_missing_checkpoints(self, run_id: int) -> int:
        """Drop the run's checkpoint rows whose folder is gone from disk (pruned, or lost to a kill); returns how many."""
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            return self._forget_missing(session, run.id)

    @guarded
    def add_evaluation(self, run_id: int, dataset: str, metrics: Mapping[str, float]) -> None:
        """Record evaluation figures of a run on ``dataset`` (shown as ``"<dataset>/<name>"``)."""
        dataset = text(dataset, "dataset")
        figures = checked_figures(metrics, "evaluation metrics")
        now = utc_now()
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            session.add_all(
                Evaluation(run_id=run.id, dataset=dataset, name=n, value=stored(v), created_at=now)
                for n, v in figures.items()
            )

    @guarded
    def add_predictions(self, run_id: int | None, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store predictions: each row has ``item``, ``lat``, ``lon``, optional ``probability``
        and ``payload`` (a JSON dict); any other keys are merged into the payload."""
        if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
            raise ValueError(f"rows: expected a sequence of mappings, got {type(rows).__name__}")
        if run_id is not None:
            run_id = integer(run_id, "run_id")
        prepared = [prediction_row(row, run_id, i) for i, row in enumerate(rows)]
        now = utc_now()
        with self._sessions.begin() as session:
            if run_id is not None:
                self._run(session, run_id)
            for prediction in prepared:
                prediction.created_at = now
            session.add_all(prepared)

    @guarded
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

    @guarded
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
    @guarded
    def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first, with its latest figures."""
        with self._sessions.begin() as session:
            rows = session.execute(select(Run, Experiment.name).join(Experiment).order_by(Run.id)).all()
            return self._records(session, [(run, name) for run, name in rows])

    @guarded
    def get_run(self, run_id: int) -> RunRecord:
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            name = session.scalar(select(Experiment.name).where(Experiment.id == run.experiment_id))
            return self._records(session, [(run, str(name))])[0]

    @guarded
    def checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        """The run's checkpoints by step (then insertion order)."""
        with self._sessions.begin() as session:
            run = self._run(session, run_id)
            rows = session.scalars(
                select(Checkpoint).where(Checkpoint.run_id == run.id).order_by(Checkpoint.step, Checkpoint.id)
            )
            return [checkpoint_record(r) for r in rows]

    @guarded
    def predictions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` predictions, newest first, as plain dicts."""
        limit = integer(limit, "limit", minimum=1)
        with self._sessions.begin() as session:
            rows = session.scalars(select(Prediction).order_by(Prediction.id.desc()).limit(limit))
            return [prediction_dict(r) for r in rows]
