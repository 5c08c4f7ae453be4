"""A study's sizes (:class:`StudySettings`, per-study defaults), the ports it uses (:class:`StudyEnv`) and the
run config of the models it trains (:func:`study_config`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from locdiff.config import RunConfig, apply_overrides
from locdiff.core.diffusion import DEFAULT_PROJECTION, DEFAULT_SAMPLER, DEFAULT_SAMPLER_STEPS, LOSSES, PROJECTIONS, SAMPLERS
from locdiff.core.sampling import SamplingSettings
from locdiff.ports import CheckpointStore, Compute, ExperimentStore, GalleryProvider, MemoryProbe, ProgressFactory

STUDIES = ("compare", "anchors", "losses", "spatial", "calibration", "degrees", "anchor-sampling")
#: six countries on six continents, ~6 % of the default 16,000 places
DEFAULT_HOLDOUT = ("ES", "PL", "NG", "TH", "CO", "AU")
#: the loss study compares the paper's Table 8 losses (any of ``LOSSES`` may be given with --losses)
TABLE8_LOSSES = ("kl", "l1", "l2", "cosine")


# --------------------------------------------------------------------------- settings and environment
def _tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


@attrs.frozen
class StudySettings:
    """Sizes of a study; the defaults of :func:`default_settings` fit a 2-core CPU in ≤ 60 min each."""

    steps: int = 1200  # training steps of each model a study trains
    batch_size: int | None = None  # None: the run config's batch size (512 in default.toml)
    eval_items: int = 500  # test (or hold-out) items evaluated
    val_items: int = 250  # validation items (calibration fitting)
    samples: int = 16  # K diffusion samples per item
    sampler: str = attrs.field(default=DEFAULT_SAMPLER, validator=attrs.validators.in_(SAMPLERS))
    sampler_steps: int = DEFAULT_SAMPLER_STEPS
    projection: str = attrs.field(default=DEFAULT_PROJECTION, validator=attrs.validators.in_(PROJECTIONS))  # x0 between steps
    baseline_steps: int = 1500
    baseline_cells: tuple[int, ...] = attrs.field(default=(256, 1024), converter=_tuple)
    seed: int = 0
    anchor_sizes: tuple[int, ...] = attrs.field(default=(21_000, 100_000, 500_000, 1_000_000), converter=_tuple)
    losses: tuple[str, ...] = attrs.field(default=TABLE8_LOSSES, converter=_tuple,
                                          validator=attrs.validators.deep_iterable(attrs.validators.in_(LOSSES)))
    degrees: tuple[int, ...] = attrs.field(default=(15, 23, 31, 47), converter=_tuple)
    holdout_groups: tuple[str, ...] = attrs.field(default=DEFAULT_HOLDOUT, converter=_tuple)
    holdout_lat_band: tuple[float, float] | None = attrs.field(default=None, converter=attrs.converters.optional(_tuple))
    calibration_grid: tuple[int, int, int] = attrs.field(default=(180, 360, 1), converter=_tuple)  # n_lat, n_lon, sub
    hybrid: bool = True  # compare / spatial: a LocDiff-H row (training-split gallery, rule chosen on val_items validation items)
    spread_draws: int = attrs.field(default=20, validator=attrs.validators.ge(2))  # anchor-sampling: fresh anchor sets per KL
    spread_levels: tuple[float, ...] = attrs.field(default=(0.1, 0.5, 0.9), converter=_tuple)  # ... at these t / (T − 1)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, value_serializer=lambda inst, field, value: list(value) if isinstance(value, tuple) else value)

    def replace(self, **changes: Any) -> "StudySettings":
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})

    def sampling(self, reducer: str = "mode") -> SamplingSettings:
        """How the study samples: the one :class:`SamplingSettings` value (seeded with the study's seed)."""
        return SamplingSettings(self.sampler, self.sampler_steps, self.projection, self.samples, reducer, self.seed)


#: Default sizes per study. Measured on the shared 2-core CPU with one torch thread: a batch-512
#: L=23 step takes ~0.27 s (KL), so 2500 steps ≈ 12 min; sampling + decoding 500 items × 16
#: samples ≈ 3 min. Studies that reuse a trained model (--run) skip the training.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "compare": dict(steps=2500, eval_items=500),
    "anchors": dict(steps=2500, eval_items=250),
    "losses": dict(steps=1000, eval_items=300),
    "spatial": dict(steps=2500, eval_items=500),
    "calibration": dict(steps=2500, eval_items=500, val_items=250),
    "degrees": dict(steps=800, eval_items=300),
    "anchor-sampling": dict(steps=800, eval_items=300, val_items=256, degrees=(15, 31, 47)),
}
_QUICK = dict(
    steps=30, batch_size=64, eval_items=24, val_items=24, samples=4, sampler_steps=5, baseline_steps=60,
    baseline_cells=(16,), anchor_sizes=(2_000, 10_000), degrees=(7, 11), calibration_grid=(36, 72, 1),
)


def default_settings(study: str, *, quick: bool = False, **changes: Any) -> StudySettings:
    """The default sizes of ``study`` (``quick``: a smoke run of a few minutes), with ``changes`` applied."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {STUDIES}")
    base = StudySettings(**_DEFAULTS[study])
    if quick:
        base = attrs.evolve(base, **_QUICK)
    return base.replace(**changes)


@attrs.frozen
class StudyEnv:
    """The ports a study uses. ``memory`` measures peak host memory (CUDA uses torch's own counter)."""

    compute: Compute
    checkpoints: CheckpointStore
    store: ExperimentStore | None = None
    workdir: Path = attrs.field(default=Path("runs"), converter=Path)
    progress: ProgressFactory | None = None
    code_version: str = "unknown"
    memory: MemoryProbe | None = None
    log: Callable[[str], None] | None = None
    reuse_models: bool = True  # a finished study model with the same training config is loaded, not retrained
    gallery: GalleryProvider | None = None  # LocDiff-H's training-split gallery (None: no LocDiff-H rows)

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)



def study_config(config: RunConfig, settings: StudySettings, **overrides: Any) -> RunConfig:
    """The run config of a model a study trains: ``config`` with the study's sizes and ``overrides``."""
    o: dict[str, Any] = {
        "train.steps": settings.steps,
        "train.seed": settings.seed,
        "train.checkpoint_every": settings.steps,
        "train.batch_size": settings.batch_size,
        "eval.samples": settings.samples,
        "eval.sampler": settings.sampler,
        "eval.sampler_steps": settings.sampler_steps,
        "eval.max_items": settings.eval_items,
    }
    o.update(overrides)
    return RunConfig.from_dict(apply_overrides(config.to_dict(), o))

