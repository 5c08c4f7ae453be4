"""LocDiff-H's choice rules: a retrieved gallery location, restricted to a radius around the diffusion samples.

The paper's hybrid (§5.2, "Ours + GeoCLIP") keeps the best-matching gallery location within ``R`` km
of any of the K diffusion samples, and the LocDiffusion point where none is in reach. Here the gallery
matches of a query are its top-``depth`` neighbours by cosine similarity (from an ``EmbeddingRetriever``),
and three rules choose among them:

* ``radius`` — the paper's rule: the most similar match within ``R`` of a sample (fallback: the LocDiffusion point);
* ``density`` — the match maximising ``cos + λ · log q(x)``, ``q`` the K-sample SHDD mixture density (eq. 11)
  at the match (per steradian), among matches within ``R`` (``R = inf``: all of them); same fallback.
* ``consensus`` — among the ``k`` most similar matches within ``R``, the one maximising
  ``log Σ_{i ≤ k, d(i, j) ≤ r} softmax_i(cos / T) + λ · log q(x_j)``: the retrieval neighbours' agreement on a place
  (kNN-k's weighted vote: ``λ = 0``, ``R = inf`` is exactly the weighted kNN baseline) times the diffusion
  density; same fallback.

``R`` (and ``λ``) are chosen on the validation split by :func:`select_rule` with the baselines' criterion
(mean accuracy over 1/25/200/750/2500 km), never on test. Pure torch; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import torch

from locdiff.core import geo
from locdiff.core.baselines import KNN_RADII_KM, KNN_TEMPERATURES, selection_score

#: The rules, the one source of ``--hybrid-rule``'s choices (plus ``auto``: chosen on validation).
HYBRID_RULES = ("radius", "density", "consensus")
#: The rules that read the samples' mixture density at the matches.
DENSITY_RULES = ("density", "consensus")
#: Radii (km) and density weights swept on validation.
SWEEP_RADII_KM: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 750.0, 1500.0)
SWEEP_LAMBDAS: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
#: The consensus rule's sweep: neighbours voting, softmax temperature, agreement radius (km), outer radius R (km).
SWEEP_CONSENSUS = {"k": (10, 50), "temperature": KNN_TEMPERATURES, "consensus_km": KNN_RADII_KM, "radius_km": (750.0, math.inf)}


@attrs.frozen
class HybridRule:
    """One way of choosing: ``rule`` of :data:`HYBRID_RULES`, radius ``R`` km (may be inf for ``density``), weight ``λ``."""

    rule: str = attrs.field(default="radius", validator=attrs.validators.in_(HYBRID_RULES))
    radius_km: float = attrs.field(default=200.0, converter=float)
    lam: float = attrs.field(default=0.0, converter=float)
    k: int = attrs.field(default=10, converter=int, validator=attrs.validators.ge(1))  # consensus: neighbours voting
    temperature: float = attrs.field(default=0.03, converter=float, validator=attrs.validators.gt(0.0))  # consensus: softmax T
    consensus_km: float = attrs.field(default=25.0, converter=float, validator=attrs.validators.gt(0.0))  # consensus: agreement radius

    @radius_km.validator
    def _radius(self, _attr, value: float) -> None:
        if not value > 0:
            raise ValueError(f"hybrid radius must be > 0 km, got {value}")

    @property
    def reads_density(self) -> bool:
        """Whether choosing needs the samples' mixture density at the matches (a density-weighted rule with λ ≠ 0)."""
        return self.rule in DENSITY_RULES and self.lam != 0.0

    def describe(self) -> str:
        r = "any distance" if math.isinf(self.radius_km) else f"R={self.radius_km:g} km"
        out = f"{self.rule}, {r}" + (f", λ={self.lam:g}" if self.rule in DENSITY_RULES else "")
        if self.rule == "consensus":
            out += f", k={self.k}, T={self.temperature:g}, r={self.consensus_km:g} km"
        return out

    def to_dict(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"rule": self.rule, "radius_km": self.radius_km, "lam": self.lam}
        if self.rule == "consensus":
            out.update(k=self.k, temperature=self.temperature, consensus_km=self.consensus_km)
        return out

    @classmethod
    def from_dict(cls, data) -> "HybridRule":
        try:
            extra = {key: data[key] for key in ("k", "temperature", "consensus_km") if key in data}
            return cls(str(data["rule"]), float(data["radius_km"]), float(data.get("lam", 0.0)), **extra)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"hybrid rule: expected {{rule, radius_km, lam[, k, temperature, consensus_km]}}, got {data!r} ({exc})") from None


@attrs.frozen
class Matches:
    """The top-``depth`` gallery matches of B queries: cosine ``sims`` [B, k] (descending; -inf pads) and ``latlon`` [B, k, 2]."""

    sims: torch.Tensor
    latlon: torch.Tensor

    def __attrs_post_init__(self) -> None:
        if self.sims.ndim != 2 or self.latlon.shape != (*self.sims.shape, 2):
            raise ValueError(f"matches: need sims [B, k] and latlon [B, k, 2]; got {tuple(self.sims.shape)} and {tuple(self.latlon.shape)}")

    def __len__(self) -> int:
        return int(self.sims.shape[0])


def within_radius(latlon: torch.Tensor, samples: torch.Tensor, radius_km: float) -> torch.Tensor:
    """[B, k] bool: match ``latlon`` [B, k, 2] lies within ``radius_km`` of at least one of ``samples`` [B, K, 2]."""
    if math.isinf(radius_km):
        return torch.ones(latlon.shape[:2], dtype=torch.bool, device=latlon.device)
    a = geo.to_xyz(latlon.double())
    b = geo.to_xyz(samples.double().to(latlon.device))
    closest = torch.einsum("bkc,bsc->bks", a, b).amax(-1)  # cosine of the smallest central angle
    return closest >= math.cos(min(radius_km / geo.EARTH_RADIUS_KM, math.pi))


def choose(matches: Matches, samples: torch.Tensor, fallback: torch.Tensor, rule: HybridRule,
           log_density: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(points [B, 2], used [B] bool): each query's chosen match under ``rule``, or ``fallback`` [B, 2] where none qualifies.

    ``log_density`` [B, k] (the samples' mixture log density at each match) is needed by the ``density`` rule.
    """
    ok = within_radius(matches.latlon, samples, rule.radius_km) & torch.isfinite(matches.sims)
    score = matches.sims.double()
    if rule.rule == "consensus":
        score = consensus_log_weight(matches, rule.k, rule.temperature, rule.consensus_km)
        ok[:, rule.k :] = False
    if rule.reads_density:
        if log_density is None:
            raise ValueError(f"the {rule.rule} rule needs the samples' log density at the matches")
        score = score + rule.lam * log_density.double().to(score.device)
    ok &= torch.isfinite(score)
    score = score.masked_fill(~ok, -math.inf)
    best = score.argmax(1)
    rows = torch.arange(best.shape[0], device=best.device)
    used = ok.any(1)
    picked = matches.latlon.double()[rows, best]
    out = torch.where(used[:, None], picked, fallback.double().to(picked.device))
    return out, used


def consensus_log_weight(matches: Matches, k: int, temperature: float, radius_km: float) -> torch.Tensor:
    """[B, depth]: for each of the first ``k`` matches, the log of the ``softmax(cos / T)`` weight (over the first ``k``)
    of the matches within ``radius_km`` of it — kNN-k's weighted vote for that place; -inf beyond the first ``k``."""
    b, depth = matches.sims.shape
    k = min(k, depth)
    sims = matches.sims[:, :k].double()
    log_w = torch.log_softmax((sims / temperature).masked_fill(~torch.isfinite(sims), -math.inf), dim=1)
    xyz = geo.to_xyz(matches.latlon[:, :k].double().nan_to_num(0.0))
    near = torch.einsum("bic,bjc->bij", xyz, xyz) >= math.cos(min(radius_km / geo.EARTH_RADIUS_KM, math.pi))
    vote = torch.logsumexp(log_w[:, None, :].masked_fill(~near, -math.inf), dim=2)  # [B, k]: weight near match j
    out = torch.full((b, depth), -math.inf, dtype=torch.float64, device=vote.device)
    out[:, :k] = vote.masked_fill(~torch.isfinite(sims), -math.inf)
    return out


def candidate_rules(rules: Sequence[str] = HYBRID_RULES, radii: Sequence[float] | None = None,
                    lambdas: Sequence[float] = SWEEP_LAMBDAS) -> list[HybridRule]:
    """The validation sweep: every radius for ``radius``; every (radius or inf) × λ for ``density``; for ``consensus``
    :data:`SWEEP_CONSENSUS` with λ = 0 too (its kNN special case). ``radii`` given: R is fixed to those."""
    out: list[HybridRule] = []
    if "radius" in rules:
        out += [HybridRule("radius", r) for r in (radii or SWEEP_RADII_KM)]
    if "density" in rules:
        out += [HybridRule("density", r, lam) for r in (*(radii or SWEEP_RADII_KM), math.inf) for lam in lambdas]
    if "consensus" in rules:
        c = SWEEP_CONSENSUS
        out += [HybridRule("consensus", big, lam, k, temp, small) for big in (radii or c["radius_km"]) for lam in (0.0, *lambdas)
                for k in c["k"] for temp in c["temperature"] for small in c["consensus_km"]]
    if not out:
        raise ValueError(f"no hybrid rule to sweep; expected some of {HYBRID_RULES}, got {tuple(rules)}")
    return out


def select_rule(matches: Matches, samples: torch.Tensor, fallback: torch.Tensor, truth: torch.Tensor,
                candidates: Sequence[HybridRule], log_density: torch.Tensor | None = None
                ) -> tuple[HybridRule, list[tuple[HybridRule, float, float]]]:
    """The candidate with the best validation :func:`selection_score` (ties: the earlier one), and every
    (rule, score, share of queries answered by retrieval) of the sweep."""
    table = []
    for rule in candidates:
        if rule.reads_density and log_density is None:
            continue
        points, used = choose(matches, samples, fallback, rule, log_density)
        table.append((rule, selection_score(points, truth), float(used.double().mean())))
    if not table:
        raise ValueError("no hybrid rule could be scored (the density rule needs the samples' codes)")
    best = max(table, key=lambda row: row[1])  # max keeps the first of equal scores
    return best[0], table
