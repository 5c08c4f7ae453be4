"""Study ``compare``: LocDiffusion and LocDiff-H vs kNN retrieval (k = 1, weighted k = 10), grid classification and
unit-vector regression on the test split (paper Table 1's rows, on our data)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from locdiff.config import RunConfig
from locdiff.core.bundle import ModelBundle
from locdiff.core.scores import random_row
from locdiff.core.tables import StudyResult
from locdiff.ports import DatasetSource, Embedder
from locdiff.services.data import PreparedData, prepare
from locdiff.services.hybrid import HybridSelection
from locdiff.services.studies.baseline_scores import BaselineDensities
from locdiff.services.studies.hybrid_rows import choose_hybrid, hybrid_row
from locdiff.services.studies.models import model_for
from locdiff.services.studies.recording import close_study, open_study, recording
from locdiff.services.studies.settings import StudyEnv, StudySettings, default_settings
from locdiff.services.studies.steps import baseline_rows, fit_baselines, locdiff_rows, sample_items, split_items


def compare(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
            *, bundle: ModelBundle | None = None, data: PreparedData | None = None,
            eval_source: DatasetSource | None = None, on_hybrid: Callable[[HybridSelection], None] | None = None) -> StudyResult:
    """LocDiffusion (given, or trained with ``settings.steps``) vs the four baselines on the test split.

    With ``eval_source`` (e.g. Im2GPS3k after training on MP16) every model is fitted on
    ``source`` as usual and evaluated on the first ``eval_items`` items of ``eval_source``, all splits.
    ``on_hybrid`` receives LocDiff-H's rule chosen on validation (``eval RUN --compare --hybrid`` saves it beside the model).
    """
    settings = settings or default_settings("compare")
    target = None if eval_source is None else prepare(eval_source, embedder, config.data)  # a bad file fails before any work
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("compare", settings=settings.to_dict())
    extra = {"model_given": bundle is not None, "eval_data": getattr(eval_source, "name", None)}
    result.run_id = open_study(env, "compare", config, settings, extra)
    with recording(env, result):
        model = model_for(config, data, env, settings, "compare", bundle, result)
        if eval_source is None:
            target, index = data, split_items(data, "test", settings.eval_items)
            table = f"test accuracy (%), {data.name}, {index.numel()} items"
        else:
            index = torch.arange(len(target.ids))[: settings.eval_items]
            table = f"{target.name}: accuracy (%), {index.numel()} items (all splits; models fitted on {data.name})"
        selection = choose_hybrid(result, model, data, env, settings)
        if selection is not None and on_hybrid is not None:
            on_hybrid(selection)
        sampled = sample_items(model, target, index, settings, env)
        locdiff_rows(result, table, model, sampled, target.cond[index], env, settings, extra={"predict_s": sampled.seconds})
        hybrid_row(result, table, model, data, target.cond[index], sampled, env, selection)
        fitted = fit_baselines(data, settings, env)
        env.say("scoring the baselines' densities")
        densities = BaselineDensities.prepare(data, fitted)
        baseline_rows(result, table, fitted, target.cond[index], target.latlon[index],
                      densities.rows(target.cond[index], target.latlon[index], seed=settings.seed))
        result.add_row(table, "random guess", random_row())
        result.notes.append(densities.note())
        result.notes.append(
            f"{settings.samples} samples per item ({settings.sampler}-{settings.sampler_steps}); kNN k=10 returns the "
            "best-weighted neighbour (softmax weights, temperature and cluster radius chosen on validation); the grid "
            "classifier predicts its cell's training centroid (cells: spherical k-means on training locations, count "
            "chosen on validation); all selection on validation only."
        )
    return close_study(env, result)

