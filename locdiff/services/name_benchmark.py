"""Use case: the name-only benchmark — bare names ("Springfield") against every place that carries them.

For each query of a :class:`~locdiff.ports.NameBenchmarkSource` and each truth variant (uniform or
population-weighted, :data:`locdiff.core.multimodal.TRUTHS`) the places are merged into sites closer
than the model's resolution ``π/(L+1)`` (:func:`~locdiff.core.multimodal.merge_sites`). Every method's
prediction is a density map on the same equiangular grid; each map's cell masses go to the nearest
site within that radius or to *elsewhere*, and are scored by total variation and site recall; the
NLL is the truth-weighted −log density at the places themselves (exact per method), and coverage
the truth weight inside the raw 50 / 90 % HPD regions of the map. Methods:

* **LocDiffusion** — the mixture of the K sample codes' densities (eq. 11), its map
  :func:`~locdiff.core.decoding.density_grid`, its exact log density
  :func:`~locdiff.core.scores.mixture_log_density`;
* **kNN (vMF mixture)** — the training places nearest in embedding space as a von Mises–Fisher
  mixture, (k, T, bandwidth) chosen by NLL on the validation split;
* **grid classifier** — the project's grid classifier (fitted on train, cells and step chosen on
  validation), its softmax spread uniformly over each cell's Voronoi region;
* **uniform map** — the uniform density on the sphere (the floor every method should clear).

The training texts are "name, region, country" of the same places: a bare name is a different
input, but the places themselves were seen (see README).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from locdiff.core import multimodal as mm
from locdiff.core.anchors import equiangular
from locdiff.core.baseline_densities import CellDensity, KNNDensity, KNNMixture, vmf_mixture_grid, vmf_mixture_log_density
from locdiff.core.baselines import baseline_fitters
from locdiff.core.bundle import ModelBundle
from locdiff.core.calibration import hpd_level
from locdiff.core.decoding import density_grid
from locdiff.core.diffusion import DEFAULT_PROJECTION, DEFAULT_SAMPLER, DEFAULT_SAMPLER_STEPS, PROJECTIONS, SAMPLERS
from locdiff.core.results import DensityGrid
from locdiff.core.scores import mixture_log_density
from locdiff.ports import NamedPlaces
from locdiff.services.data import PreparedData
from locdiff.services.sampling import input_seed, per_input_noise, sample_coefficients

METHODS = ("LocDiffusion", "kNN (vMF mixture)", "grid classifier", "uniform map")
METRICS = ("tv", "recall", "nll", "cov50", "cov90")
SUMMARY = ("tv", "recall", "nll", "nll_median", "cov50", "cov90")  # columns of the overall table
LEVELS = (0.5, 0.9)


@attrs.frozen
class NameBenchmarkSettings:
    """Sizes of the benchmark (defaults: ~23 min for 230 names with one thread on a busy 2-core CPU, L=15 model)."""

    samples: int = attrs.field(default=64, validator=attrs.validators.ge(1))  # K diffusion samples per name
    sampler: str = attrs.field(default=DEFAULT_SAMPLER, validator=attrs.validators.in_(SAMPLERS))
    sampler_steps: int = attrs.field(default=DEFAULT_SAMPLER_STEPS, validator=attrs.validators.ge(1))
    projection: str = attrs.field(default=DEFAULT_PROJECTION, validator=attrs.validators.in_(PROJECTIONS))
    seed: int = 0
    n_lat: int = attrs.field(default=90, validator=attrs.validators.ge(4))  # map grid rows (2° cells; columns: twice as many)
    baseline_steps: int = attrs.field(default=1500, validator=attrs.validators.ge(1))
    baseline_cells: tuple[int, ...] = attrs.field(default=(256, 1024), converter=tuple)
    max_names: int | None = None  # the first N names of the list (smoke runs)
    bootstrap: int = attrs.field(default=2000, validator=attrs.validators.ge(0))  # paired resamples of the names

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, value_serializer=lambda i, f, v: list(v) if isinstance(v, tuple) else v)


@attrs.define
class NameBenchmarkResult:
    """Per-name scores ``rows[(query, truth, method)] -> {metric: value}`` and everything needed to read them."""

    names: list[dict[str, Any]]  # query, kind, places, sites per truth
    rows: dict[tuple[str, str, str], dict[str, float]]
    radius_km: float
    model: str
    knn: KNNDensity
    grid_cells: int
    settings: dict[str, Any]
    masses: dict[tuple[str, str, str], list[float]] = attrs.field(factory=dict)  # site masses + elsewhere (last)

    def summary(self, kind: str, truth: str) -> dict[str, dict[str, float]]:
        """Method → mean of each metric over the names of ``kind`` (recall: over names that have a ≥ 5 % site)."""
        queries = [n["query"] for n in self.names if n["kind"] == kind]
        out = {}
        for method in METHODS:
            vals = [self.rows[(q, truth, method)] for q in queries]
            out[method] = {m: _nanmean([v[m] for v in vals]) for m in METRICS} | {"names": float(len(queries))}
            out[method]["nll_median"] = float(torch.quantile(torch.tensor([v["nll"] for v in vals], dtype=torch.float64), 0.5)) if vals else math.nan
        return out

    def paired_interval(self, kind: str, truth: str, metric: str, method: str, reference: str = "LocDiffusion",
                        resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
        """Mean of ``reference − method`` over names of ``kind`` with a 95 % paired bootstrap interval over names."""
        queries = [n["query"] for n in self.names if n["kind"] == kind]
        d = torch.tensor([self.rows[(q, truth, reference)][metric] - self.rows[(q, truth, method)][metric] for q in queries],
                         dtype=torch.float64)
        d = d[torch.isfinite(d)]
        if d.numel() == 0:
            return math.nan, math.nan, math.nan
        g = torch.Generator().manual_seed(seed)
        means = d[torch.randint(0, d.numel(), (max(resamples, 1), d.numel()), generator=g)].mean(1)
        lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        return float(d.mean()), lo, hi

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NameBenchmarkResult":
        """The result :meth:`to_dict` wrote (tables can be re-rendered without recomputing)."""
        keys = ("query", "truth", "method")
        return cls(
            names=list(data["names"]), radius_km=float(data["radius_km"]), model=str(data["model"]),
            knn=KNNDensity(**data["knn"]), grid_cells=int(data["grid_cells"]), settings=dict(data["settings"]),
            rows={tuple(r[k] for k in keys): {m: float(r[m]) for m in METRICS} for r in data["rows"]},
            masses={tuple(r[k] for k in keys): list(r["site_masses_then_elsewhere"]) for r in data.get("masses", [])},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "radius_km": self.radius_km, "settings": self.settings, "names": self.names,
            "knn": attrs.asdict(self.knn), "grid_cells": self.grid_cells,
            "rows": [{"query": q, "truth": t, "method": m} | v for (q, t, m), v in self.rows.items()],
            "masses": [{"query": q, "truth": t, "method": m, "site_masses_then_elsewhere": v} for (q, t, m), v in self.masses.items()],
        }


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _cells(grid: DensityGrid) -> tuple[torch.Tensor, torch.Tensor]:
    pts = torch.stack(torch.meshgrid(grid.lat, grid.lon, indexing="ij"), -1).reshape(-1, 2)
    return pts, grid.mass.reshape(-1)


def score_map(grid: DensityGrid, log_density: torch.Tensor, places: torch.Tensor, weights: torch.Tensor,
              sites: mm.TruthSites, radius_km: float) -> tuple[dict[str, float], list[float]]:
    """All metrics of one prediction against one truth: (metrics, site masses + elsewhere)."""
    pts, mass = _cells(grid)
    site_mass, elsewhere = mm.assign_to_sites(pts, mass, sites.latlon, radius_km)
    levels = torch.tensor([hpd_level(grid, p) for p in places], dtype=torch.float64)
    metrics = {
        "tv": mm.total_variation(site_mass, elsewhere, sites.weight),
        "recall": mm.site_recall(site_mass, sites.weight),
        "nll": mm.expected_nll(log_density, weights),
    } | {f"cov{round(100 * a)}": mm.covered_weight(levels < a, weights) for a in LEVELS}
    return metrics, site_mass.tolist() + [elsewhere]


def run_name_benchmark(
    bundle: ModelBundle,
    queries: Sequence[NamedPlaces],
    query_cond: torch.Tensor,
    data: PreparedData,
    settings: NameBenchmarkSettings,
    *,
    device: torch.device,
    model: str = "",
    log: Callable[[str], None] | None = None,
) -> NameBenchmarkResult:
    """Score LocDiffusion, kNN, the grid classifier and the uniform map on ``queries`` (their embeddings ``query_cond`` [Q, d]).

    ``data`` is the model's own prepared training data: the baselines are fitted on its train split
    and select on its validation split; nothing is selected on the benchmark.
    """
    say = log or (lambda _m: None)
    if query_cond.shape[0] != len(queries):
        raise ValueError(f"need one embedding per query, got {query_cond.shape[0]} for {len(queries)} queries")
    queries = list(queries)
    if settings.max_names is not None:
        queries, query_cond = queries[: settings.max_names], query_cond[: settings.max_names]
    radius = mm.resolution_km(bundle.degree)
    n_lat, n_lon = settings.n_lat, 2 * settings.n_lat
    train, val = data.splits["train"], data.splits["val"]

    # kNN as a vMF mixture, chosen on validation by NLL
    mixture = KNNMixture.fit(data.cond[train], data.latlon[train], data.cond[val], data.latlon[val])
    knn = mixture.density
    say(f"kNN density on validation ({val.numel()} places): k={knn.k}, T={knn.temperature:g}, "
        f"bandwidth {knn.bandwidth_km:.0f} km, NLL {knn.val_nll:.3f}")
    q_centres, q_w = mixture.components(query_cond)

    # the grid classifier: the project's baseline, its softmax spread over Voronoi cells
    fit = baseline_fitters(device=device, seed=settings.seed, steps=settings.baseline_steps, cells=settings.baseline_cells)["grid classifier"]
    classifier = fit(data.cond[train], data.latlon[train], data.cond[val], data.latlon[val])
    cells = CellDensity.build(classifier.centroids.cpu(), n_lat=n_lat, n_lon=n_lon)
    probs = classifier.probabilities(query_cond).cpu()
    say(f"grid classifier: {classifier.centroids.shape[0]} cells, best step {classifier.best_step}")

    # LocDiffusion: K sample codes per name
    bundle.net.to(device)
    coeffs = []
    for start in range(0, query_cond.shape[0], 32):  # each name's draw depends on its text and the seed only
        seeds = [input_seed(q.query, settings.seed) for q in queries[start : start + 32]]
        coeffs.append(sample_coefficients(bundle, query_cond[start : start + 32].to(device), samples=settings.samples,
                                          sampler=settings.sampler, steps=settings.sampler_steps,
                                          noise=per_input_noise(seeds, settings.samples),
                                          projection=settings.projection).double().cpu())
    coeffs = torch.cat(coeffs)
    say(f"LocDiffusion: {settings.samples} samples for each of {len(queries)} names")

    lat, lon, area = equiangular(n_lat, n_lon, dtype=torch.float64)
    cell_area = area[:, None].expand(n_lat, n_lon)
    uniform = DensityGrid(lat=lat, lon=lon, density=torch.full((n_lat, n_lon), 1 / (4 * math.pi), dtype=torch.float64),
                          mass=cell_area / cell_area.sum())
    names, rows, masses = [], {}, {}
    for i, q in enumerate(queries):
        places = q.latlon.double()
        maps = {
            "LocDiffusion": (density_grid(coeffs[i].float(), n_lat, n_lon),
                             mixture_log_density(coeffs[i][None], places[None])[0]),
            "kNN (vMF mixture)": (vmf_mixture_grid(q_centres[i], q_w[i], knn.bandwidth_km, n_lat=n_lat, n_lon=n_lon),
                                  vmf_mixture_log_density(q_centres[i][None], q_w[i][None], knn.bandwidth_km, places[None])[0]),
            "grid classifier": (cells.grid(probs[i]), cells.log_density(probs[i], places)),
            "uniform map": (uniform, torch.full((places.shape[0],), -math.log(4 * math.pi), dtype=torch.float64)),
        }
        entry: dict[str, Any] = {"query": q.query, "kind": q.kind, "places": places.shape[0], "labels": list(q.labels)}
        for truth in mm.TRUTHS:
            w = mm.truth_weights(q.population, truth)
            sites = mm.merge_sites(places, w, radius)
            entry[f"sites_{truth}"] = sites.latlon.shape[0]
            entry[f"site_weights_{truth}"] = sites.weight.tolist()
            for method, (grid, logp) in maps.items():
                rows[(q.query, truth, method)], masses[(q.query, truth, method)] = score_map(grid, logp, places, w, sites, radius)
        names.append(entry)
        if (i + 1) % 25 == 0:
            say(f"scored {i + 1}/{len(queries)} names")
    return NameBenchmarkResult(names=names, rows=rows, radius_km=radius, model=model, knn=knn,
                               grid_cells=int(classifier.centroids.shape[0]), settings=settings.to_dict(), masses=masses)


# --------------------------------------------------------------------------- formatting
_HEAD = {"tv": "TV ↓", "recall": "recall ↑", "nll": "NLL ↓ (mean)", "nll_median": "NLL (median)", "cov50": "cov 50",
         "cov90": "cov 90"}


def format_summary(result: NameBenchmarkResult) -> str:
    """Markdown: overall means per truth and kind, and LocDiffusion − baseline paired intervals."""
    out = [f"model: {result.model}; merge/assignment radius π/(L+1) = {result.radius_km:.0f} km; "
           f"kNN k={result.knn.k}, T={result.knn.temperature:g}, bandwidth {result.knn.bandwidth_km:.0f} km (validation NLL); "
           f"grid classifier {result.grid_cells} cells", ""]
    for kind in mm.KINDS:
        for truth in mm.TRUTHS:
            summ = result.summary(kind, truth)
            n = int(next(iter(summ.values()))["names"])
            if not n:
                continue
            out.append(f"**{kind} names ({n}), {truth} truth**\n")
            out.append("| method | " + " | ".join(_HEAD[m] for m in SUMMARY) + " |")
            out.append("|---|" + "---|" * len(SUMMARY))
            for method, vals in summ.items():
                out.append(f"| {method} | " + " | ".join(_fmt(m, vals[m]) for m in SUMMARY) + " |")
            out.append("")
            if kind == "ambiguous":
                parts = []
                for method in METHODS[1:3]:
                    for metric in ("tv", "nll"):
                        mean, lo, hi = result.paired_interval(kind, truth, metric, method, resamples=result.settings.get("bootstrap", 2000))
                        parts.append(f"{metric.upper()} LocDiffusion − {method}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                out.append("paired 95 % bootstrap over names: " + "; ".join(parts) + "\n")
    return "\n".join(out)


def format_per_name(result: NameBenchmarkResult, truth: str) -> str:
    """Markdown: one row per name — sites and each method's TV / recall / NLL."""
    methods = METHODS[:3]
    out = ["| name | kind | places | sites | " + " | ".join(f"TV {_short(m)}" for m in methods) + " | "
           + " | ".join(f"NLL {_short(m)}" for m in methods) + " | " + " | ".join(f"rec {_short(m)}" for m in methods) + " |"]
    out.append("|---|---|---|---|" + "---|" * (3 * len(methods)))
    for n in result.names:
        r = [result.rows[(n["query"], truth, m)] for m in methods]
        out.append(f"| {n['query']} | {n['kind']} | {n['places']} | {n[f'sites_{truth}']} | "
                   + " | ".join(f"{x['tv']:.2f}" for x in r) + " | " + " | ".join(f"{x['nll']:.2f}" for x in r) + " | "
                   + " | ".join("–" if math.isnan(x["recall"]) else f"{x['recall']:.2f}" for x in r) + " |")
    return "\n".join(out)


def _short(method: str) -> str:
    return {"LocDiffusion": "LD", "kNN (vMF mixture)": "kNN", "grid classifier": "grid", "uniform map": "unif"}[method]


def _fmt(metric: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{100 * value:.1f} %" if metric.startswith("cov") or metric == "recall" else f"{value:.3f}"
