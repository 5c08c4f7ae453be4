"""A study recorded as one run of experiment ``study-<name>``: opened with its settings, closed with every table cell."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from locdiff.config import RunConfig
from locdiff.core.tables import TABLE_SEP, StudyResult
from locdiff.services.studies.settings import StudyEnv, StudySettings

def open_study(env: StudyEnv, name: str, config: RunConfig, settings: StudySettings, extra: Mapping[str, Any] | None = None) -> int | None:
    if env.store is None:
        return None
    payload = {"study": name, "settings": settings.to_dict(), "run_config": config.to_dict()} | dict(extra or {})
    return env.store.start_run(f"study-{name}", payload, env.code_version)


def close_study(env: StudyEnv, result: StudyResult, status: str = "finished") -> StudyResult:
    if env.store is not None and result.run_id is not None:
        for dataset, figures in result.records():
            env.store.add_evaluation(result.run_id, dataset, figures)
        env.store.add_evaluation(result.run_id, f"models{TABLE_SEP}runs", {k: float(v) for k, v in result.model_runs.items()} | {"_order": -1.0})
        env.store.finish_run(result.run_id, status)
    return result


@contextlib.contextmanager
def recording(env: StudyEnv, result: StudyResult) -> Iterator[StudyResult]:
    """Finish the study run as 'failed' / 'interrupted' if the body raises."""
    try:
        yield result
    except KeyboardInterrupt:
        if env.store is not None and result.run_id is not None:
            env.store.finish_run(result.run_id, "interrupted")
        raise
    except Exception:
        if env.store is not None and result.run_id is not None:
            env.store.finish_run(result.run_id, "failed")
        raise

