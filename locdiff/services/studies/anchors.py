"""Study ``anchors`` (paper Table 2): the same diffusion samples decoded with the training gallery, Fibonacci
grids of 21k … 1M anchors (eq. 17) and the continuous decoder; kNN restricted to the same galleries."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch

from locdiff.config import RunConfig
from locdiff.core import anchors as anchor_sets
from locdiff.core.baselines import KNNRetrieval, nearest_points
from locdiff.core.bundle import ModelBundle
from locdiff.core.decoding import anchor_decode, default_radius_km
from locdiff.core.metrics import SCALES_KM, summarize
from locdiff.core.reduction import reduce_samples
from locdiff.core.tables import ACC_KEYS, StudyResult
from locdiff.ports import DatasetSource, Embedder
from locdiff.services.data import PreparedData, prepare
from locdiff.services.progress import NullProgress
from locdiff.services.studies.models import describe, model_for
from locdiff.services.studies.recording import close_study, open_study, recording
from locdiff.services.studies.settings import StudyEnv, StudySettings, default_settings
from locdiff.services.studies.steps import locdiff_metrics, sample_items, split_items


@torch.no_grad()
def relative_change(rows: Mapping[str, Mapping[str, float]], reference: str) -> dict[str, dict[str, float]]:
    """Per-scale relative change (%) of each row's accuracy against ``reference`` (the paper's brackets)."""
    ref = rows[reference]
    out = {}
    for name, values in rows.items():
        if name == reference:
            continue
        out[name] = {f"Δ {s:g} km (%)": (100.0 * (values[k] - ref[k]) / ref[k]) if ref[k] > 0 else math.nan for s, k in zip(SCALES_KM, ACC_KEYS)}
    return out


def anchor_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
                 *, bundle: ModelBundle | None = None, data: PreparedData | None = None) -> StudyResult:
    """Table 2 analogue: one set of diffusion samples decoded with every gallery; kNN restricted to the same galleries."""
    settings = settings or default_settings("anchors")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("anchors", settings=settings.to_dict())
    result.run_id = open_study(env, "anchors", config, settings, {"model_given": bundle is not None})
    with recording(env, result):
        model = model_for(config, data, env, settings, "anchors", bundle, result)
        test = split_items(data, "test", settings.eval_items)
        sampled = sample_items(model, data, test, settings, env)
        reducer = model.config.eval.reducer
        radius = 2 * default_radius_km(model.degree)
        train_gallery = anchor_sets.gallery(data.latlon[data.splits["train"]])
        galleries = {f"training gallery ({train_gallery.shape[0] / 1000:.1f}k)": train_gallery}
        for size in settings.anchor_sizes:
            galleries[f"Fibonacci grid ({size / 1000:g}k)"] = anchor_sets.fibonacci(size)
        reference = next(iter(galleries))
        ours, knn_rows = {}, {}
        knn = KNNRetrieval.fit(data.cond[data.splits["train"]], data.latlon[data.splits["train"]],
                               data.cond[data.splits["val"]], data.latlon[data.splits["val"]], k=10, device=env.compute.device)
        knn_pred = knn.predict(data.cond[test]).double()
        for name, gallery in galleries.items():
            env.say(f"decoding {sampled.coeffs.shape[0] * sampled.coeffs.shape[1]} samples with {name}")
            bar = (env.progress or NullProgress)(total=gallery.shape[0], desc=f"anchors {name}")
            t0 = time.perf_counter()
            dec = anchor_decode(sampled.coeffs, gallery, on_chunk=bar.update).double()
            bar.close()
            point = reduce_samples(dec, reducer, radius_km=radius)
            ours[name] = summarize(point, sampled.truth) | {"decode_s": time.perf_counter() - t0}
            snapped = knn_pred if gallery is train_gallery else gallery[nearest_points(knn_pred, gallery)].double()
            knn_rows[name] = summarize(snapped, sampled.truth)
        ours["continuous decoder (no anchors)"] = locdiff_metrics(model, sampled, reducer)
        t_ours = f"{describe(model)}: decoding anchors ({test.numel()} test items, {reducer} of {settings.samples} samples)"
        t_knn = f"kNN retrieval (k=10) restricted to the gallery ({test.numel()} test items)"
        for row, values in ours.items():
            result.add_row(t_ours, row, values)
        for row, values in knn_rows.items():
            result.add_row(t_knn, row, values)
        for row, values in relative_change(ours, reference).items():
            result.add_row("LocDiffusion: relative change vs training gallery (%)", row, values)
        for row, values in relative_change(knn_rows, reference).items():
            result.add_row("kNN: relative change vs training gallery (%)", row, values)
        result.notes.append(
            "Each of the K samples is decoded with the gallery (eq. 17, window ρ = π/(2(L+1)) of the Earth radius) and "
            f"the K decoded points are reduced with '{reducer}'. kNN predictions are snapped to the nearest gallery point "
            "(a training-gallery prediction is already a gallery point)."
        )
    return close_study(env, result)

