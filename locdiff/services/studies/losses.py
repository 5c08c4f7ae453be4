"""Study ``losses`` (paper Table 8): SHDD-KL vs L1 vs L2 vs cosine with the same budget."""

from __future__ import annotations

from locdiff.config import RunConfig
from locdiff.core.tables import StudyResult
from locdiff.ports import DatasetSource, Embedder
from locdiff.services.data import PreparedData, prepare
from locdiff.services.studies.recording import close_study, open_study, recording
from locdiff.services.studies.settings import StudyEnv, StudySettings, default_settings
from locdiff.services.studies.steps import sweep


def loss_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
               *, data: PreparedData | None = None) -> StudyResult:
    """Table 8 analogue: one model per training loss, same data, steps, batch and seed."""
    settings = settings or default_settings("losses")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("losses", settings=settings.to_dict())
    result.run_id = open_study(env, "losses", config, settings)
    names = {"kl": "SHDD KL-divergence", "l1": "L1", "l2": "L2", "cosine": "cosine"}
    with recording(env, result):
        sweep(result, data, config, env, settings, "diffusion.loss", settings.losses, "training loss", "study-losses-model",
               label=lambda loss: names.get(loss, loss), key=str,
               extra=lambda loss, trained, sampled: {"train_s": trained.seconds, "final_loss": trained.final_loss})
        result.notes.append(f"L={config.model.degree}; reducer '{config.eval.reducer}'; the final_loss column is each loss in its own units.")
    return close_study(env, result)

