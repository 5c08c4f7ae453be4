"""How to draw and reduce diffusion samples: the one :class:`SamplingSettings` value.

Evaluation, prediction, the studies and the app all sample with these six choices; their choice
lists have one source each (``SAMPLERS`` and ``PROJECTIONS`` in :mod:`locdiff.core.diffusion`,
``REDUCERS`` in :mod:`locdiff.core.reduction`). Paper §5.1: K = 16 samples reduced to one point.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

from locdiff.core.diffusion import DEFAULT_PROJECTION, DEFAULT_SAMPLER, DEFAULT_SAMPLER_STEPS, PROJECTIONS, SAMPLERS
from locdiff.core.reduction import REDUCERS

DEFAULT_STEPS = {"ddpm": 100}  # a sampler's default step count; 20 for any sampler not named here


def default_steps(sampler: str) -> int:
    """The step count a sampler uses when none is given (DDPM runs its whole chain of 100)."""
    return DEFAULT_STEPS.get(sampler, 20)


def _count(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _seed(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"seed must be an integer or None, got {value!r}")


@attrs.frozen
class SamplingSettings:
    """``samples`` (K) draws with ``sampler`` in ``steps`` steps, x0 ``projection`` between steps, reduced by ``reducer``.

    ``seed`` None: an unseeded draw (the app's default); an integer: a reproducible one.
    """

    sampler: str = attrs.field(default=DEFAULT_SAMPLER, validator=v.in_(SAMPLERS))
    steps: int = attrs.field(default=DEFAULT_SAMPLER_STEPS, validator=_count)
    projection: str = attrs.field(default=DEFAULT_PROJECTION, validator=v.in_(PROJECTIONS))
    samples: int = attrs.field(default=16, validator=_count)
    reducer: str = attrs.field(default="mode", validator=v.in_(REDUCERS))
    seed: int | None = attrs.field(default=0, validator=_seed)

    def replace(self, **changes: Any) -> "SamplingSettings":
        """A copy with ``changes`` (every key must be a field; ``seed`` may be set to None)."""
        return attrs.evolve(self, **changes)

    @property
    def label(self) -> str:
        """``ddim-20``: the sampler and its steps, as tables name them."""
        return f"{self.sampler}-{self.steps}"


def parse_samplers(spec: str) -> list[tuple[str, int]]:
    """``"ddpm:100,ddim"`` → ``[("ddpm", 100), ("ddim", 20)]`` (a ``ValueError`` naming a bad entry)."""
    out = []
    for part in spec.split(","):
        name, _, steps = part.strip().partition(":")
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r} in {spec!r}; expected one of {SAMPLERS}")
        try:
            count = int(steps) if steps else default_steps(name)
        except ValueError:
            raise ValueError(f"sampler {part!r}: steps must be an integer") from None
        if count < 1:
            raise ValueError(f"sampler {part!r}: steps must be >= 1")
        out.append((name, count))
    return out


_UNSEEDED = SamplingSettings(seed=None)


@attrs.frozen(init=False)
class PredictSettings:
    """One prediction: its :class:`SamplingSettings` plus the map grid, the modes listed and hybrid refinement.

    The sampling choices may also be given flat (``PredictSettings(samples=48, sampler="ddpm", steps=100)``);
    they change ``sampling`` (default: :class:`SamplingSettings` unseeded) and are readable flat too.
    """

    sampling: SamplingSettings = attrs.field(validator=v.instance_of(SamplingSettings))
    grid_lat: int = attrs.field(default=180, validator=v.ge(4))
    grid_lon: int = attrs.field(default=360, validator=v.ge(8))
    top_modes: int = attrs.field(default=5, validator=v.ge(1))
    hybrid: bool = False
    hybrid_radius_km: float = 200.0

    def __init__(self, sampling: SamplingSettings | None = None, *, grid_lat: int = 180, grid_lon: int = 360, top_modes: int = 5,
                 hybrid: bool = False, hybrid_radius_km: float = 200.0, **sampling_changes: Any) -> None:
        base = _UNSEEDED if sampling is None else sampling
        self.__attrs_init__(base.replace(**sampling_changes), grid_lat, grid_lon, top_modes, hybrid, hybrid_radius_km)

    samples = property(lambda self: self.sampling.samples)
    sampler = property(lambda self: self.sampling.sampler)
    steps = property(lambda self: self.sampling.steps)
    projection = property(lambda self: self.sampling.projection)
    reducer = property(lambda self: self.sampling.reducer)
    seed = property(lambda self: self.sampling.seed)
