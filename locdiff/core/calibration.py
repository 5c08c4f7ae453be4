"""Credible regions from a prediction's probability map, their coverage, and their calibration.

A prediction's probability map is the mixture of its K samples' SHDD densities ``q_e`` (eq. 11),
integrated into the cells of an equiangular grid (as :func:`locdiff.core.decoding.density_grid`, but
in log space so no cell underflows to zero). Its highest-posterior-density (HPD) region at level
α is the set of densest cells holding α of the mass (:func:`locdiff.core.decoding.credible_thresholds`);
the truth is *covered* when its cell is in that region.

Everything follows from one number per prediction, its **HPD level** ``u`` — the mass of the
cells strictly denser than the truth's cell: the truth is inside the α-region exactly when
``u < α``. A calibrated map has ``u ~ Uniform(0, 1)``: coverage at α equals α for every α, and
the calibration curve (nominal vs empirical coverage) is the diagonal.

A raw map is rarely calibrated (one SHDD peak of degree L is only ~π/L wide, so a confident wrong
prediction covers nothing). :func:`fit_calibration` chooses, on validation data only, one
parameter of one of three families that minimises the mean absolute calibration error over the
levels 5 %, 10 %, ..., 95 %:

* ``sample-temperature`` τ: each sample's density becomes ``q_e^(1/τ) ∝ exp(f_e/τ)`` (τ > 1 widens
  every peak; τ = 1 is the raw map);
* ``mixture-temperature`` τ: the mixture's log-density is divided by τ;
* ``kde`` bandwidth b (km): the map is a von Mises–Fisher kernel density of the K decoded sample
  locations with angular bandwidth b (the samples' spread carries the uncertainty).

A reshaped map can still not fix every curve: when a few confident predictions are wrong by a
continent, coverage is too high at low levels and too low at high ones, and no single parameter
moves both toward the diagonal. The fitted calibrator therefore also keeps the sorted validation
HPD levels and relabels the regions (split conformal prediction with the HPD level as the score):
the region reported at level α is the HPD region at the ⌈(n+1)α⌉-th smallest validation score,
which covers the truth with probability ≥ α for exchangeable data (Vovk et al.; Angelopoulos &
Bates 2021). The map is unchanged; only the mass each region holds is relabelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs
import torch

from locdiff.core import geo
from locdiff.core.anchors import equiangular
from locdiff.core.decoding import credible_area_km2, credible_thresholds, grid_logits
from locdiff.core.results import DensityGrid

FAMILIES = ("sample-temperature", "mixture-temperature", "kde")
LEVELS = (0.5, 0.9, 0.95)
CURVE_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
TEMPERATURES = tuple(2.0 ** (k / 2) for k in range(-2, 17))  # 0.5 .. 256
BANDWIDTHS_KM = tuple(25.0 * 2.0 ** (k / 2) for k in range(0, 17))  # 25 .. 6400 km


# --------------------------------------------------------------------------- HPD levels and coverage
def cell_index(lat_count: int, lon_count: int, latlon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of the equiangular cell (``lat`` north first, ``lon`` from -180) holding each point."""
    ll = geo.validate_latlon(latlon.double())
    i = torch.floor((90.0 - ll[..., 0]) / (180.0 / lat_count)).long().clamp(0, lat_count - 1)
    j = torch.floor((ll[..., 1] + 180.0) / (360.0 / lon_count)).long().clamp(0, lon_count - 1)
    return i, j


def hpd_level(grid: DensityGrid, truth: torch.Tensor) -> float:
    """Mass of the cells strictly denser than the truth's cell: the truth lies in the α-HPD region iff this is < α."""
    i, j = cell_index(grid.lat.shape[0], grid.lon.shape[0], truth.reshape(2))
    d = grid.density
    return float(grid.mass[d > d[i, j]].sum())


def coverage_at(u: torch.Tensor, levels: Iterable[float] = LEVELS) -> dict[float, float]:
    """Empirical coverage (fraction in [0, 1]) of each nominal level, from HPD levels ``u`` [N]."""
    return {float(a): float((u < a).double().mean()) for a in levels}


def calibration_curve(
    u: torch.Tensor, levels: Sequence[float] = CURVE_LEVELS, level: Callable[[float], float] | None = None
) -> tuple[list[float], list[float]]:
    """(nominal, empirical) coverage at ``levels``; the diagonal is perfect calibration.

    ``level`` maps a nominal level to the HPD level of the region reported for it (default: itself;
    see :meth:`Calibrator.level`).
    """
    if level is None:
        cov = coverage_at(u, levels)
        return [float(a) for a in levels], [cov[float(a)] for a in levels]
    return [float(a) for a in levels], [float((u < level(float(a))).double().mean()) for a in levels]


def calibration_error(u: torch.Tensor, levels: Sequence[float] = CURVE_LEVELS, level: Callable[[float], float] | None = None) -> float:
    """Mean absolute gap between empirical and nominal coverage over ``levels``."""
    nominal, empirical = calibration_curve(u, levels, level)
    return sum(abs(e - n) for n, e in zip(nominal, empirical)) / len(nominal)


# --------------------------------------------------------------------------- probability maps
def _areas(n_lat: int, n_lon: int, device, dtype=torch.float64) -> torch.Tensor:
    _, _, area = equiangular(n_lat, n_lon, dtype=torch.float64, device=device)
    return area.to(dtype)[:, None].expand(n_lat, n_lon)


def _mixture_mass(logits: torch.Tensor, n_lat: int, n_lon: int, sub: int) -> torch.Tensor:
    """Coarse cell masses ``[n_lat, n_lon]`` of the equal-weight mixture of ``exp(logits[k])``.

    ``logits`` [K, n_lat*sub, n_lon*sub] on the fine grid's cell centres (midpoint rule); each
    component is normalised on its own, so every sample carries 1/K of the mass.
    """
    k, h, w = logits.shape
    x = torch.exp(logits - logits.amax((1, 2), keepdim=True)) * _areas(h, w, logits.device, logits.dtype)
    x = x / x.sum((1, 2), keepdim=True)
    mass = x.mean(0).reshape(n_lat, sub, n_lon, sub).sum((1, 3)).double()
    return mass / mass.sum()


def _log_mixture_mass(logits: torch.Tensor, n_lat: int, n_lon: int, sub: int) -> torch.Tensor:
    """Log of :func:`_mixture_mass`, in float64 log space: no cell underflows, however sharp the peaks."""
    k, h, w = logits.shape
    x = logits.double() + _areas(h, w, logits.device).log()
    x = x - torch.logsumexp(x.flatten(1), 1)[:, None, None]
    x = torch.logsumexp(x.reshape(k, n_lat, sub, n_lon, sub), dim=(2, 4))
    return torch.logsumexp(x, 0) - math.log(k)


def _tempered_log_mixture(log_mass: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """Divide a map's log-density by each τ: log masses ``[n_lat, n_lon]`` → masses ``[P, n_lat, n_lon]``."""
    log_area = _areas(log_mass.shape[0], log_mass.shape[1], log_mass.device).log()
    log_m = (log_mass - log_area)[None] / temperatures[:, None, None].to(log_mass) + log_area[None]
    return torch.softmax(log_m.flatten(1), -1).reshape(log_m.shape)


def _as_grid(mass: torch.Tensor, n_lat: int, n_lon: int) -> DensityGrid:
    lat, lon, _ = equiangular(n_lat, n_lon, dtype=torch.float64, device=mass.device)
    return DensityGrid(lat=lat, lon=lon, density=mass / _areas(n_lat, n_lon, mass.device), mass=mass)


def _hpd_of_mass(mass: torch.Tensor, i: int, j: int) -> float:
    d = mass / _areas(mass.shape[0], mass.shape[1], mass.device)
    return float(mass[d > d[i, j]].sum())


def sample_logits(e: torch.Tensor, n_lat: int, n_lon: int, sub: int) -> torch.Tensor:
    """``f_e`` of ``e`` [K, D] on the fine grid (``sub`` points per coarse cell side), float64 ``[K, H, W]``."""
    return grid_logits(e.reshape(-1, e.shape[-1]).double(), n_lat * sub, n_lon * sub)


def mixture_grid(e: torch.Tensor, *, temperature: float = 1.0, n_lat: int = 180, n_lon: int = 360, sub: int = 2) -> DensityGrid:
    """The K-sample mixture of ``q_e^(1/τ)`` (``e`` [K, D] or [D]) integrated into ``n_lat × n_lon`` cells.

    With τ = 1 this is :func:`locdiff.core.decoding.density_grid` (midpoint rule on ``sub × sub``
    points per cell instead of its adaptive sub-grid).
    """
    return _as_grid(_mixture_mass(sample_logits(e, n_lat, n_lon, sub) / temperature, n_lat, n_lon, sub), n_lat, n_lon)


def _sample_dots(samples: torch.Tensor, n_lat: int, n_lon: int, sub: int) -> torch.Tensor:
    """Cosine between each fine cell centre and each sample ``[K, 2]`` → ``[K, H, W]``."""
    lat, lon, _ = equiangular(n_lat * sub, n_lon * sub, dtype=torch.float64, device=samples.device)
    cells = geo.to_xyz(torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1))  # [H, W, 3]
    return torch.einsum("hwc,kc->khw", cells, geo.to_xyz(samples.double()))


def _kappa(bandwidth_km: float) -> float:
    return 1.0 / (bandwidth_km / geo.EARTH_RADIUS_KM) ** 2


def kde_grid(samples: torch.Tensor, bandwidth_km: float, *, n_lat: int = 180, n_lon: int = 360, sub: int = 2) -> DensityGrid:
    """von Mises–Fisher kernel density of decoded sample locations ``[K, 2]`` with bandwidth ``bandwidth_km``."""
    f = _kappa(bandwidth_km) * (_sample_dots(samples.reshape(-1, 2), n_lat, n_lon, sub) - 1.0)
    return _as_grid(_mixture_mass(f, n_lat, n_lon, sub), n_lat, n_lon)


@attrs.frozen
class Calibrator:
    """One point of a calibration family: how a prediction's samples become its probability map."""

    family: str = attrs.field(default="sample-temperature", validator=attrs.validators.in_(FAMILIES))
    param: float = attrs.field(default=1.0, converter=float, validator=attrs.validators.gt(0.0))
    n_lat: int = 180
    n_lon: int = 360
    sub: int = 2
    scores: tuple[float, ...] = attrs.field(default=(), converter=lambda v: tuple(sorted(float(x) for x in v)))

    def level(self, alpha: float) -> float:
        """The HPD level whose region is reported as the α-credible region (α itself without conformal scores)."""
        if not self.scores:
            return float(alpha)
        return conformal_level(self.scores, alpha)

    def thresholds(self, grid: DensityGrid, levels: Iterable[float]) -> dict[float, float]:
        """Density threshold of the region reported at each nominal level (the HPD region at :meth:`level`)."""
        used = {float(a): self.level(float(a)) for a in levels}
        at = credible_thresholds(grid, tuple(used.values()))
        return {a: at[h] for a, h in used.items()}

    def grid(self, e: torch.Tensor | None, samples: torch.Tensor | None = None) -> DensityGrid:
        """The map of one prediction from its K SHDD samples ``e`` [K, D] (and decoded ``samples`` [K, 2] for ``kde``)."""
        shape = dict(n_lat=self.n_lat, n_lon=self.n_lon, sub=self.sub)
        if self.family == "kde":
            if samples is None:
                raise ValueError("the kde family needs the decoded sample locations")
            return kde_grid(samples, self.param, **shape)
        if e is None:
            raise ValueError(f"the {self.family} family needs the SHDD sample vectors")
        if self.family == "sample-temperature":
            return mixture_grid(e, temperature=self.param, **shape)
        log_mass = _log_mixture_mass(sample_logits(e, self.n_lat, self.n_lon, self.sub), self.n_lat, self.n_lon, self.sub)
        return _as_grid(_tempered_log_mixture(log_mass, torch.tensor([self.param], dtype=torch.float64))[0], self.n_lat, self.n_lon)

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self, value_serializer=lambda inst, field, value: list(value) if isinstance(value, tuple) else value)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, where: str = "calibration") -> "Calibrator":
        """Rebuild a saved calibrator; ``ValueError`` naming ``where`` and the field on bad content."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
        try:
            cal = cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if any(not 0.0 <= s <= 1.0 for s in cal.scores):
            raise ValueError(f"{where}: field 'scores' must hold HPD levels in [0, 1]")
        return cal

    def describe(self) -> str:
        unit = " km" if self.family == "kde" else ""
        extra = f" + conformal levels (n={len(self.scores)})" if self.scores else ""
        return f"{self.family} {self.param:.3g}{unit}{extra}"


def conformal_level(scores: Sequence[float], alpha: float) -> float:
    """Split-conformal HPD level from sorted validation HPD levels: just above the ⌈(n+1)α⌉-th smallest (1 if none)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"credible level must be in (0, 1), got {alpha}")
    k = math.ceil((len(scores) + 1) * alpha)
    if k > len(scores):
        return 1.0
    return min(math.nextafter(float(scores[k - 1]), math.inf), 1.0)


RAW = Calibrator()


# --------------------------------------------------------------------------- batched HPD levels over a family
def hpd_levels(
    family: str,
    params: Sequence[float],
    coeffs: torch.Tensor,
    samples: torch.Tensor | None,
    truth: torch.Tensor,
    *,
    n_lat: int = 180,
    n_lon: int = 360,
    sub: int = 2,
    on_item: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """HPD level of each truth under each parameter: ``[N, P]``.

    ``coeffs`` [N, K, D] SHDD samples, ``samples`` [N, K, 2] their decoded locations (``kde``),
    ``truth`` [N, 2]. Each item's fine-grid logits are computed once and reused for all params.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown calibration family {family!r}; expected one of {FAMILIES}")
    rows, cols = cell_index(n_lat, n_lon, truth)
    out = torch.empty(truth.shape[0], len(params), dtype=torch.float64)
    p = torch.tensor([float(x) for x in params], dtype=torch.float64)
    for n in range(truth.shape[0]):
        i, j = int(rows[n]), int(cols[n])
        if family == "kde":
            base = (_sample_dots(samples[n].reshape(-1, 2).cpu(), n_lat, n_lon, sub) - 1.0).float()
            scales = [_kappa(b) for b in p.tolist()]
        else:
            base = sample_logits(coeffs[n].cpu(), n_lat, n_lon, sub)
            scales = [1.0 / t for t in p.tolist()]
        if family == "mixture-temperature":
            masses = _tempered_log_mixture(_log_mixture_mass(base, n_lat, n_lon, sub), p)
            out[n] = torch.tensor([_hpd_of_mass(m, i, j) for m in masses], dtype=torch.float64)
        else:  # one parameter at a time bounds memory at [K, H, W]; float32 exp (a cell below e^-87 of its peak holds nothing)
            base = base.float()
            out[n] = torch.tensor([_hpd_of_mass(_mixture_mass(s * base, n_lat, n_lon, sub), i, j) for s in scales], dtype=torch.float64)
        if on_item is not None:
            on_item(n)
    return out


def default_params(family: str) -> tuple[float, ...]:
    return BANDWIDTHS_KM if family == "kde" else TEMPERATURES


@attrs.frozen
class CalibrationFit:
    """The chosen calibrator and the validation search behind it."""

    calibrator: Calibrator
    val_error: float
    raw_val_error: float
    search: dict[str, list[tuple[float, float]]]  # family -> [(param, validation calibration error)]


def fit_calibration(
    coeffs: torch.Tensor,
    samples: torch.Tensor | None,
    truth: torch.Tensor,
    *,
    families: Sequence[str] = FAMILIES,
    params: dict[str, Sequence[float]] | None = None,
    levels: Sequence[float] = CURVE_LEVELS,
    n_lat: int = 180,
    n_lon: int = 360,
    sub: int = 2,
    refine: bool = True,
    conformal: bool = True,
    on_item: Callable[[int], None] | None = None,
) -> CalibrationFit:
    """Choose the family and parameter minimising :func:`calibration_error` on these (validation) items.

    A log-spaced grid per family, then (``refine``) four points between the best one and each
    neighbour. Families needing decoded locations are skipped when ``samples`` is None. With
    ``conformal`` the chosen calibrator also keeps these items' HPD levels under its map (see the
    module docstring); ``val_error`` is the error before that relabelling.
    """
    shape = dict(n_lat=n_lat, n_lon=n_lon, sub=sub)
    search: dict[str, list[tuple[float, float]]] = {}
    best: tuple[float, Calibrator] | None = None
    for family in families:
        if family == "kde" and samples is None:
            continue
        grid = sorted(set((params or {}).get(family, default_params(family))))
        u = hpd_levels(family, grid, coeffs, samples, truth, on_item=on_item, **shape)
        errs = [calibration_error(u[:, k], levels) for k in range(len(grid))]
        tried = list(zip(grid, errs))
        if refine and len(grid) > 1:
            k = min(range(len(grid)), key=errs.__getitem__)
            lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
            extra = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * s / 10) for s in (2, 4, 6, 8)]
            extra = [x for x in extra if all(abs(x - g) > 1e-9 * g for g in grid)]
            if extra:
                u2 = hpd_levels(family, extra, coeffs, samples, truth, **shape)
                tried += [(x, calibration_error(u2[:, i], levels)) for i, x in enumerate(extra)]
        tried.sort()
        search[family] = tried
        param, err = min(tried, key=lambda pe: (pe[1], abs(math.log(pe[0]))))
        if best is None or err < best[0]:
            best = (err, Calibrator(family, param, **shape))
    if best is None:
        raise ValueError(f"no calibration family could be fitted from {list(families)}")
    raw_u = hpd_levels("sample-temperature", [1.0], coeffs, samples, truth, **shape)[:, 0]
    chosen = best[1]
    if conformal:
        u = hpd_levels(chosen.family, [chosen.param], coeffs, samples, truth, **shape)[:, 0]
        chosen = attrs.evolve(chosen, scores=tuple(u.tolist()))
    return CalibrationFit(chosen, best[0], calibration_error(raw_u, levels), search)


# --------------------------------------------------------------------------- evaluation
def evaluate_calibrator(
    calibrator: Calibrator,
    coeffs: torch.Tensor,
    samples: torch.Tensor | None,
    truth: torch.Tensor,
    *,
    levels: Sequence[float] = LEVELS,
    curve_levels: Sequence[float] = CURVE_LEVELS,
    on_item: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Coverage at ``levels``, median/mean HPD area (km²) at each, the calibration curve and error.

    Regions and areas use :func:`locdiff.core.decoding.credible_thresholds` and
    :func:`locdiff.core.decoding.credible_area_km2` on each prediction's map.
    """
    u = torch.empty(truth.shape[0], dtype=torch.float64)
    inside = {float(a): torch.zeros(truth.shape[0], dtype=torch.bool) for a in levels}
    areas = {float(a): torch.empty(truth.shape[0], dtype=torch.float64) for a in levels}
    for n in range(truth.shape[0]):
        grid = calibrator.grid(coeffs[n].cpu() if coeffs is not None else None, None if samples is None else samples[n].cpu())
        u[n] = hpd_level(grid, truth[n])
        i, j = cell_index(grid.lat.shape[0], grid.lon.shape[0], truth[n])
        for a, t in calibrator.thresholds(grid, levels).items():
            inside[a][n] = bool(grid.density[i, j] >= t)
            areas[a][n] = credible_area_km2(grid, t)
        if on_item is not None:
            on_item(n)
    out: dict[str, object] = {
        "calibrator": calibrator.describe(),
        "calibration_error": calibration_error(u, curve_levels, calibrator.level),
        "curve": calibration_curve(u, curve_levels, calibrator.level),
        "hpd_levels": u,
        "n": float(truth.shape[0]),
    }
    for a in levels:
        pct = round(100 * a)
        out[f"coverage@{pct}"] = 100.0 * float(inside[float(a)].double().mean())
        out[f"median_area_km2@{pct}"] = float(torch.quantile(areas[float(a)], 0.5))
        out[f"mean_area_km2@{pct}"] = float(areas[float(a)].mean())
    return out
