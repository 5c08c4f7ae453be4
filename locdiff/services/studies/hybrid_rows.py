"""LocDiff-H rows of the studies: the gallery is the study data's training split; the rule, R and λ are chosen on its
validation split (the sweep recorded as a table of its own) and applied to the evaluated items."""

from __future__ import annotations

import torch

from locdiff.core.bundle import ModelBundle
from locdiff.core.tables import StudyResult
from locdiff.services.data import PreparedData
from locdiff.services.hybrid import HybridSelection, gallery_of, hybrid_metrics, refine_with_gallery, select_on_validation
from locdiff.services.studies.settings import StudyEnv, StudySettings
from locdiff.services.studies.steps import Sampled, model_points


def choose_hybrid(result: StudyResult, model: ModelBundle, data: PreparedData, env: StudyEnv,
                  settings: StudySettings) -> HybridSelection | None:
    """The rule chosen on ``data``'s validation split (None when the study has no gallery or ``settings.hybrid`` is off)."""
    if env.gallery is None or not settings.hybrid:
        return None
    if data.splits.get("val", torch.empty(0)).numel() == 0:
        env.say("LocDiff-H skipped: no validation items to choose its radius on")
        return None
    env.say("LocDiff-H: choosing the rule, R and λ on validation")
    selection = select_on_validation(gallery_of(env.gallery, data), model, data, settings.sampling(), device=env.compute.device,
                                     max_items=settings.val_items, progress=env.progress)
    table = f"LocDiff-H validation sweep ({selection.items} validation items; mean accuracy over the five scales; density and consensus: best λ (and vote) per R)"
    best: dict[tuple[str, float], tuple] = {}
    for rule, score, used in selection.sweep:
        key = (rule.rule, rule.radius_km)
        if key not in best or score > best[key][1]:
            best[key] = (rule, score, used)
    for rule, score, used in best.values():
        result.add_row(table, rule.describe(), {"mean_acc": score, "retrieved_pct": 100.0 * used})
    result.notes.append(f"LocDiff-H: gallery = the training split's own embeddings; rule chosen on validation: {selection.rule.describe()}.")
    return selection


def hybrid_row(result: StudyResult, table: str, model: ModelBundle, data: PreparedData, cond: torch.Tensor, sampled: Sampled,
               env: StudyEnv, selection: HybridSelection | None) -> None:
    """The LocDiff-H row of ``table``: ``sampled`` items refined with ``data``'s training-split gallery."""
    if selection is None:
        return
    fallback = model_points(model, sampled.samples, "mode")
    points, used = refine_with_gallery(gallery_of(env.gallery, data), cond, sampled.samples, fallback, selection.rule, sampled.coeffs)
    name = f"LocDiff-H ({selection.rule.describe()})"
    result.add_row(table, name, hybrid_metrics(points, sampled.truth, used))
