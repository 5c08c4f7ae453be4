"""Study ``degrees`` (paper Fig. 4a): accuracy per scale, training time and peak memory for each SHDD degree L."""

from __future__ import annotations

from locdiff.config import RunConfig
from locdiff.core.tables import StudyResult
from locdiff.ports import DatasetSource, Embedder
from locdiff.services.data import PreparedData, prepare
from locdiff.services.studies.models import TrainedModel
from locdiff.services.studies.recording import close_study, open_study, recording
from locdiff.services.studies.settings import StudyEnv, StudySettings, default_settings
from locdiff.services.studies.steps import Sampled, sweep


def degree_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
                 *, data: PreparedData | None = None) -> StudyResult:
    """Fig. 4(a) analogue: accuracy per scale, training time and peak memory for each SHDD degree L."""
    settings = settings or default_settings("degrees")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("degrees", settings=settings.to_dict())
    result.run_id = open_study(env, "degrees", config, settings)
    def extra(degree: int, trained: TrainedModel, sampled: Sampled) -> dict[str, float]:
        return {
            "degree": float(degree), "dims": float((degree + 1) ** 2),
            "params_M": sum(p.numel() for p in trained.bundle.net.parameters()) / 1e6,
            "train_s": trained.seconds, "steps_per_s": trained.steps / max(trained.seconds, 1e-9),
            "peak_mem_MB": trained.peak_memory_mb, "sample_s": sampled.seconds,
        }

    with recording(env, result):
        sweep(result, data, config, env, settings, "model.degree", settings.degrees, "SHDD degree", "study-degrees-model",
               label=lambda degree: f"L={degree}", key=lambda degree: f"L{degree}", extra=extra)
        result.notes.append("peak_mem_MB: peak allocated CUDA memory on a GPU; on CPU the peak resident-set growth during training (if a probe is given).")
    return close_study(env, result)

