"""Use cases: the evidence — LocDiffusion beside baselines, and the paper's ablations reproduced.

Every study works on the same embeddings, hash-stable splits and metrics as training
(:mod:`locdiff.services.data`, :mod:`locdiff.core.metrics`); anything chosen (baseline temperatures,
cells, steps, calibration parameters) is chosen on the validation split, never on test.
One module per study:

* :mod:`.comparison` — :func:`compare`: LocDiffusion vs kNN retrieval, grid classification, regression (Table 1's rows).
* :mod:`.anchors` — :func:`anchor_study`: decoding with galleries of 21k … 1M anchors (Table 2).
* :mod:`.losses` — :func:`loss_study`: SHDD-KL vs L1 vs L2 vs cosine (Table 8).
* :mod:`.spatial` — :func:`spatial_study`: whole regions held out of training.
* :mod:`.degrees` — :func:`degree_study`: L = 15 … 47: accuracy, training time, peak memory (Fig. 4a).
* :mod:`.anchor_sampling` — :func:`anchor_sampling_study`: uniform vs importance KL anchors per degree (issue #11).
* :mod:`.calibration` — :func:`calibration_study`: coverage of credible regions, raw and calibrated on validation.
* :mod:`.sampler` — ``study sampler``: every sampler × steps × x0 projection against the exact oracle (no data, no model).

and what they share: :mod:`.settings` (sizes, the ports a study uses), :mod:`.recording` (a study as a
run of the ``ExperimentStore``), :mod:`.models` (the model: given, reused or trained), :mod:`.steps`
(sampling, rows, baselines, sweeps). Results are :class:`~locdiff.core.tables.StudyResult` values whose
every table cell is an evaluation of the study's run, so a report can be rebuilt from the store alone.
"""

from __future__ import annotations

from collections.abc import Callable

from locdiff.core.tables import ACC_KEYS, StudyResult, format_generic_table, format_result
from locdiff.services.data import PreparedData, prepare
from locdiff.services.studies.anchor_sampling import anchor_sampling_study, loss_spread
from locdiff.services.studies.anchors import anchor_study, relative_change
from locdiff.services.studies.calibration import calibration_study
from locdiff.services.studies.comparison import compare
from locdiff.services.studies.degrees import degree_study
from locdiff.services.studies.losses import loss_study
from locdiff.services.studies.models import TrainedModel, reusable_model, train_model
from locdiff.services.studies.settings import (
    DEFAULT_HOLDOUT,
    STUDIES,
    MemoryProbe,
    StudyEnv,
    StudySettings,
    default_settings,
    study_config,
)
from locdiff.services.studies.spatial import spatial_study
from locdiff.services.studies.steps import Sampled, locdiff_metrics, one_step_points, sample_items

RUNNERS: dict[str, Callable[..., StudyResult]] = {
    "compare": compare,
    "anchors": anchor_study,
    "losses": loss_study,
    "spatial": spatial_study,
    "calibration": calibration_study,
    "degrees": degree_study,
    "anchor-sampling": anchor_sampling_study,
}

__all__ = [
    "ACC_KEYS", "DEFAULT_HOLDOUT", "RUNNERS", "STUDIES", "MemoryProbe", "PreparedData", "Sampled", "StudyEnv", "StudyResult",
    "StudySettings", "TrainedModel", "anchor_sampling_study", "anchor_study", "calibration_study", "compare", "default_settings", "degree_study",
    "format_generic_table", "format_result", "locdiff_metrics", "loss_spread", "loss_study", "one_step_points", "prepare", "relative_change",
    "reusable_model", "sample_items", "spatial_study", "study_config", "train_model",
]
