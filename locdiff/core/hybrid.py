"""LocDiff-H's choice rules: a retrieved gallery location, restricted to a radius around the diffusion samples.

The paper's hybrid (§5.2, "Ours + GeoCLIP") keeps the best-matching gallery location within ``R`` km
of any of the K diffusion samples, and the LocDiffusion point where none is in reach. Here the gallery
matches of a query are its top-``depth`` neighbours by cosine similarity (from an ``EmbeddingRetriever``),
and two rules choose among them:

* ``radius`` — the paper's rule: the most similar match within ``R`` of a sample (fallback: the LocDiffusion point);
* ``density`` — the match maximising ``cos + λ · log q(x)``, ``q`` the K-sample SHDD mixture density (eq. 11)
  at the match (per steradian), among matches within ``R`` (``R = inf``: all of them); same fallback.

``R`` (and ``λ``) are chosen on the validation split by :func:`select_rule` with the baselines' criterion
(mean accuracy over 1/25/200/750/2500 km), never on test. Pure torch; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import torch

from locdiff.core import geo
from locdiff.core.baselines import selection_score

#: The rules, the one source of ``--hybrid-rule``'s choices (plus ``auto``: chosen on validation).
HYBRID_RULES = ("radius", "density")
#: Radii (km) and density weights swept on validation.
SWEEP_RADII_KM: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 750.0, 1500.0)
SWEEP_LAMBDAS: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)


@attrs.frozen
class HybridRule:
    """One way of choosing: ``rule`` of :data:`HYBRID_RULES`, radius ``R`` km (may be inf for ``density``), weight ``λ``."""

    rule: str = attrs.field(default="radius", validator=attrs.validators.in_(HYBRID_RULES))
    radius_km: float = attrs.field(default=200.0, converter=float)
    lam: float = attrs.field(default=0.0, converter=float)

    @radius_km.validator
    def _radius(self, _attr, value: float) -> None:
        if not value > 0:
            raise ValueError(f"hybrid radius must be > 0 km, got {value}")

    def describe(self) -> str:
        r = "any distance" if math.isinf(self.radius_km) else f"R={self.radius_km:g} km"
        return f"{self.rule}, {r}" + (f", λ={self.lam:g}" if self.rule == "density" else "")

    def to_dict(self) -> dict[str, float | str]:
        return {"rule": self.rule, "radius_km": self.radius_km, "lam": self.lam}

    @classmethod
    def from_dict(cls, data) -> "HybridRule":
        try:
            return cls(str(data["rule"]), float(data["radius_km"]), float(data.get("lam", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"hybrid rule: expected {{rule, radius_km, lam}}, got {data!r} ({exc})") from None


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
    if rule.rule == "density":
        if log_density is None:
            raise ValueError("the density rule needs the samples' log density at the matches")
        score = score + rule.lam * log_density.double().to(score.device)
        ok &= torch.isfinite(score)
    score = score.masked_fill(~ok, -math.inf)
    best = score.argmax(1)
    rows = torch.arange(best.shape[0], device=best.device)
    used = ok.any(1)
    picked = matches.latlon.double()[rows, best]
    out = torch.where(used[:, None], picked, fallback.double().to(picked.device))
    return out, used


def candidate_rules(rules: Sequence[str] = HYBRID_RULES, radii: Sequence[float] = SWEEP_RADII_KM,
                    lambdas: Sequence[float] = SWEEP_LAMBDAS) -> list[HybridRule]:
    """The validation sweep: every radius for ``radius``; every (radius or inf) × λ for ``density``."""
    out: list[HybridRule] = []
    if "radius" in rules:
        out += [HybridRule("radius", r) for r in radii]
    if "density" in rules:
        out += [HybridRule("density", r, lam) for r in (*radii, math.inf) for lam in lambdas]
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
        if rule.rule == "density" and log_density is None:
            continue
        points, used = choose(matches, samples, fallback, rule, log_density)
        table.append((rule, selection_score(points, truth), float(used.double().mean())))
    if not table:
        raise ValueError("no hybrid rule could be scored (the density rule needs the samples' codes)")
    best = max(table, key=lambda row: row[1])  # max keeps the first of equal scores
    return best[0], table
