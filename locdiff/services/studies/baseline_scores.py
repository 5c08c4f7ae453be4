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

import attrs
import torch

from locdiff.core import geo
from locdiff.core.baseline_densities import (KNNMixture, cell_hpd_level, cell_owners, vmf_hpd_level, vmf_mixture_log_density,
                                             voronoi_areas)
from locdiff.core.calibration import LEVELS
from locdiff.core.scores import energy_score, summarize_scores
from locdiff.services.data import PreparedData

KNN_ROW = "kNN (k=10, weighted)"
GRID_ROW = "grid classifier"


def _covered(levels_u: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"covered@{round(100 * a)}": (levels_u < a).double() for a in LEVELS}


def knn_density_scores(mixture: KNNMixture, cond: torch.Tensor, truth: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
    """Mean scores (with 95 % intervals) of the weighted-kNN mixture on ``cond`` [N, d] against ``truth`` [N, 2]."""
    centres, weights = mixture.components(cond)
    bandwidth = mixture.density.bandwidth_km
    per_item = {"nll": -vmf_mixture_log_density(centres, weights, bandwidth, truth.double()[:, None, :])[:, 0]}
    per_item |= _covered(vmf_hpd_level(centres, weights, bandwidth, truth, seed=seed))
    per_item["energy_km"] = energy_score(centres, truth, weights)
    return summarize_scores(per_item)


@attrs.frozen
class GridDensity:
    """A fitted grid classifier as a density: its cell centroids, their Voronoi areas (sr) and pairwise distances (km)."""

    classifier: Any
    centroids: torch.Tensor  # [C, 2]
    areas: torch.Tensor  # [C]
    between: torch.Tensor  # [C, C]

    @classmethod
    def of(cls, classifier: Any) -> "GridDensity":
        centroids = classifier.centroids.double().cpu()
        return cls(classifier, centroids, voronoi_areas(centroids), geo.great_circle_km(centroids[:, None, :], centroids[None, :, :]))

    def scores(self, cond: torch.Tensor, truth: torch.Tensor, *, chunk: int = 1024) -> dict[str, float]:
        """Mean scores (with 95 % intervals) of the cell density on ``cond`` against ``truth``."""
        parts: dict[str, list[torch.Tensor]] = {}
        for s in range(0, cond.shape[0], chunk):  # [chunk, C] at a time: memory flat in the item count
            y = truth[s : s + chunk].double().cpu()
            cells = cell_owners(y, self.centroids)
            probs = self.classifier.probabilities(cond[s : s + chunk]).double().cpu()
            part = {"nll": -(torch.log(probs.gather(1, cells[:, None])[:, 0]) - torch.log(self.areas[cells]))}
            part |= _covered(cell_hpd_level(probs, self.areas, cells))
            to_truth = geo.great_circle_km(self.centroids[None, :, :], y[:, None, :])  # [chunk, C]
            part["energy_km"] = (probs * to_truth).sum(1) - 0.5 * ((probs @ self.between) * probs).sum(1)
            for key, v in part.items():
                parts.setdefault(key, []).append(v)
        return summarize_scores({key: torch.cat(v) for key, v in parts.items()})


@attrs.frozen
class BaselineDensities:
    """The fitted baselines that are densities, prepared once per study: kNN's mixture (chosen on ``data``'s validation
    split) and the grid classifier's cells (when fitted)."""

    knn: KNNMixture
    grid: GridDensity | None

    @classmethod
    def prepare(cls, data: PreparedData, fitted: dict[str, tuple[Any, float]]) -> "BaselineDensities":
        train, val = data.splits["train"], data.splits.get("val", torch.empty(0, dtype=torch.long))
        if val.numel() == 0:
            raise ValueError(f"dataset {data.name!r} has no validation items to choose the kNN density on")
        knn = KNNMixture.fit(data.cond[train], data.latlon[train], data.cond[val], data.latlon[val])
        return cls(knn, GridDensity.of(fitted[GRID_ROW][0]) if GRID_ROW in fitted else None)

    def rows(self, cond: torch.Tensor, truth: torch.Tensor, *, seed: int = 0) -> dict[str, dict[str, float]]:
        """Proper scores by baseline row name (:func:`locdiff.services.studies.steps.baseline_rows` adds them)."""
        rows = {KNN_ROW: knn_density_scores(self.knn, cond, truth, seed=seed)}
        if self.grid is not None:
            rows[GRID_ROW] = self.grid.scores(cond, truth)
        return rows

    def note(self) -> str:
        d = self.knn.density
        return (f"Proper scores of the baselines: weighted kNN as a von Mises–Fisher mixture over its neighbours (chosen on validation "
                f"by NLL: k={d.k}, T={d.temperature:g}, bandwidth {d.bandwidth_km:.0f} km; HPD coverage by Monte Carlo, 2,000 "
                "draws), the grid classifier's softmax spread over each cell's Voronoi region (exact); energy scores of their "
                "neighbours / cell centroids with their weights. kNN (k=1), regression and LocDiff-H answer with a point: no density.")
