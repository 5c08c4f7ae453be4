"""The proper scores of the baselines that predict a distribution, for the rows of ``compare`` beside LocDiffusion's.

* weighted kNN → its vMF mixture over the neighbours (:mod:`locdiff.core.baseline_densities`; ``k``, ``T`` and the
  bandwidth chosen on the validation split by NLL): NLL at the truth, energy score of the neighbours with their
  weights, raw coverage of its 50/90/95 % HPD regions (Monte Carlo HPD level).
* grid classifier → its softmax spread uniformly over each cell's Voronoi region: NLL, energy score of the cell
  centroids with their probabilities, raw coverage (exact).

kNN (k = 1) and the regression answer with a point and have no density; neither has LocDiff-H (their rows show
accuracy only).
"""

from __future__ import annotations

from typing import Any

import torch

from locdiff.core import geo
from locdiff.core.baseline_densities import (KNN_KS, KNNDensity, cell_hpd_level, cell_owners, cosine_neighbours, knn_weights, select_knn_density,
                                             vmf_hpd_level, vmf_mixture_log_density, voronoi_areas)
from locdiff.core.calibration import LEVELS
from locdiff.core.scores import energy_score, summarize_scores
from locdiff.services.data import PreparedData

KNN_ROW = "kNN (k=10, weighted)"
GRID_ROW = "grid classifier"


def _covered(levels_u: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"covered@{round(100 * a)}": (levels_u < a).double() for a in LEVELS}


def knn_density_scores(data: PreparedData, cond: torch.Tensor, truth: torch.Tensor, *, seed: int = 0) -> tuple[dict[str, float], KNNDensity]:
    """Mean scores (with 95 % intervals) of the weighted-kNN mixture on ``cond`` [N, d] against ``truth`` [N, 2]."""
    train, val = data.splits["train"], data.splits.get("val", torch.empty(0, dtype=torch.long))
    if val.numel() == 0:
        raise ValueError(f"dataset {data.name!r} has no validation items to choose the kNN density on")
    gallery = torch.nn.functional.normalize(data.cond[train].float(), dim=-1)
    gallery_ll = data.latlon[train].double()
    sims, idx = cosine_neighbours(gallery, data.cond[val], max(KNN_KS))
    knn = select_knn_density(sims, gallery_ll[idx], data.latlon[val])
    q_sims, q_idx = cosine_neighbours(gallery, cond, knn.k)
    weights, centres = knn_weights(q_sims, knn.temperature), gallery_ll[q_idx]
    per_item = {"nll": -vmf_mixture_log_density(centres, weights, knn.bandwidth_km, truth.double()[:, None, :])[:, 0]}
    per_item |= _covered(vmf_hpd_level(centres, weights, knn.bandwidth_km, truth, seed=seed))
    per_item["energy_km"] = energy_score(centres, truth, weights)
    return summarize_scores(per_item), knn


def grid_density_scores(classifier: Any, cond: torch.Tensor, truth: torch.Tensor, *, chunk: int = 1024) -> dict[str, float]:
    """Mean scores (with 95 % intervals) of a fitted grid classifier's cell density on ``cond`` against ``truth``."""
    centroids = classifier.centroids.double().cpu()
    areas = voronoi_areas(centroids)
    between = geo.great_circle_km(centroids[:, None, :], centroids[None, :, :])  # [C, C]
    parts: dict[str, list[torch.Tensor]] = {}
    for s in range(0, cond.shape[0], chunk):  # [chunk, C] at a time: memory flat in the item count
        y = truth[s : s + chunk].double().cpu()
        cells = cell_owners(y, centroids)
        probs = classifier.probabilities(cond[s : s + chunk]).double().cpu()
        part = {"nll": -(torch.log(probs.gather(1, cells[:, None])[:, 0]) - torch.log(areas[cells]))}
        part |= _covered(cell_hpd_level(probs, areas, cells))
        to_truth = geo.great_circle_km(centroids[None, :, :], y[:, None, :])  # [chunk, C]
        part["energy_km"] = (probs * to_truth).sum(1) - 0.5 * ((probs @ between) * probs).sum(1)
        for key, v in part.items():
            parts.setdefault(key, []).append(v)
    return summarize_scores({key: torch.cat(v) for key, v in parts.items()})


def baseline_score_rows(data: PreparedData, fitted: dict[str, tuple[Any, float]], cond: torch.Tensor, truth: torch.Tensor, *,
                        seed: int = 0) -> tuple[dict[str, dict[str, float]], str]:
    """Proper scores of the fitted baselines that are densities, by row name, and a note saying how they were scored."""
    rows: dict[str, dict[str, float]] = {}
    knn_scores, knn = knn_density_scores(data, cond, truth, seed=seed)
    rows[KNN_ROW] = knn_scores
    if GRID_ROW in fitted:
        rows[GRID_ROW] = grid_density_scores(fitted[GRID_ROW][0], cond, truth)
    note = (f"Proper scores of the baselines: weighted kNN as a von Mises–Fisher mixture over its neighbours (chosen on validation "
            f"by NLL: k={knn.k}, T={knn.temperature:g}, bandwidth {knn.bandwidth_km:.0f} km; HPD coverage by Monte Carlo, 2,000 "
            "draws), the grid classifier's softmax spread over each cell's Voronoi region (exact); energy scores of their "
            "neighbours / cell centroids with their weights. kNN (k=1), regression and LocDiff-H answer with a point: no density.")
    return rows, note
