"""Study ``spatial``: whole regions (countries or a latitude band) held out of training; LocDiffusion vs the baselines there."""

from __future__ import annotations

from typing import Any

from locdiff.config import RunConfig, apply_overrides
from locdiff.core.scores import random_row
from locdiff.core.tables import StudyResult
from locdiff.ports import DatasetSource, Embedder
from locdiff.services.data import prepare
from locdiff.services.studies.baseline_scores import BaselineDensities
from locdiff.services.studies.hybrid_rows import choose_hybrid, hybrid_row
from locdiff.services.studies.models import model_for
from locdiff.services.studies.recording import close_study, open_study, recording
from locdiff.services.studies.settings import StudyEnv, StudySettings, default_settings
from locdiff.services.studies.steps import baseline_rows, fit_baselines, locdiff_rows, sample_items, split_items


def spatial_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None) -> StudyResult:
    """Train without whole regions (countries or a latitude band) and evaluate there: LocDiffusion vs the baselines."""
    settings = settings or default_settings("spatial")
    over: dict[str, Any] = {}
    if settings.holdout_lat_band is not None:
        over["data.holdout_lat_band"] = list(settings.holdout_lat_band)
        over["data.holdout_groups"] = []
        region = f"latitudes {settings.holdout_lat_band[0]:g}..{settings.holdout_lat_band[1]:g}"
    else:
        over["data.holdout_groups"] = list(settings.holdout_groups)
        region = "countries " + ",".join(settings.holdout_groups)
    config = RunConfig.from_dict(apply_overrides(config.to_dict(), over))
    data = prepare(source, embedder, config.data)
    result = StudyResult("spatial", settings=settings.to_dict())
    result.run_id = open_study(env, "spatial", config, settings, {"region": region})
    with recording(env, result):
        held = split_items(data, "holdout", settings.eval_items)
        test = split_items(data, "test", settings.eval_items)
        model = model_for(config, data, env, settings, "spatial", None, result)
        fitted = fit_baselines(data, settings, env)
        densities = BaselineDensities.prepare(data, fitted)  # once: both tables score against the same fitted densities
        selection = choose_hybrid(result, model, data, env, settings)  # validation: in-distribution places only
        for split, index in (("held-out region", held), ("in-distribution test", test)):
            table = f"{split}: accuracy (%), {index.numel()} items (training excluded {region})"
            sampled = sample_items(model, data, index, settings, env)
            locdiff_rows(result, table, model, sampled, data.cond[index], env, settings)
            hybrid_row(result, table, model, data, data.cond[index], sampled, env, selection)
            baseline_rows(result, table, fitted, data.cond[index], data.latlon[index],
                          densities.rows(data.cond[index], data.latlon[index], seed=settings.seed))
            result.add_row(table, "random guess", random_row())
        result.notes.append(densities.note())
        result.notes.append(f"Held out: {region} ({int(data.splits['holdout'].numel())} places) — absent from train, val and test.")
    return close_study(env, result)

