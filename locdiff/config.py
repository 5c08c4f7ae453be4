"""Typed, validated run configuration (attrs), loadable from TOML plus overrides, saved with every run.

Defaults follow the paper's Table 3 where they apply (d_T = 200, dropout 0.3, Adam lr 1e-4,
betas (0.9, 0.99), weight decay 5e-4, batch 512, 2048 fresh random anchors per batch).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from locdiff.core.anchors import ANCHOR_SAMPLINGS
from locdiff.core.diffusion import DEFAULT_PROJECTION, DEFAULT_SAMPLER, DEFAULT_SAMPLER_STEPS, LOSSES, PARAMETERIZATIONS, PROJECTIONS, SAMPLERS, SCHEDULES, WEIGHTINGS
from locdiff.core.reduction import REDUCERS
from locdiff.core.sampling import SamplingSettings


EMBEDDERS = ("minilm", "clip")  # what the container can build for data.embedder
VIEWS = ("globe", "flat")  # the app's map views (OpenGL globe, 2D map): --view of locdiff-gui and `locdiff.cli gui`


def _positive_tuple(instance, attribute, value):
    if not value or len(value) > 32 or any((not isinstance(x, int)) or not 1 <= x <= 65_536 for x in value):
        raise ValueError(f"{attribute.name} must be a list of 1 to 32 integers in [1, 65536], got {value!r}")


def _tuple_of_ints(value):
    return tuple(int(x) for x in value) if isinstance(value, (list, tuple)) else value


@attrs.frozen
class ModelConfig:
    degree: int = attrs.field(default=23, validator=[v.instance_of(int), v.ge(1), v.le(255)])
    widths: tuple[int, ...] = attrs.field(default=(512, 256, 128), converter=_tuple_of_ints, validator=_positive_tuple)
    time_dim: int = attrs.field(default=200, validator=[v.instance_of(int), v.ge(2), v.le(65_536)])
    dropout: float = attrs.field(default=0.3, converter=float, validator=[v.ge(0.0), v.lt(1.0)])
    siren_w0: float = attrs.field(default=1.0, converter=float, validator=v.gt(0.0))
    fix_l0: bool = attrs.field(default=False, validator=v.instance_of(bool))  # output head: l = 0 held at a code's constant
    parameterization: str = attrs.field(default="x0", validator=v.in_(PARAMETERIZATIONS))  # the output means x0 or v


@attrs.frozen
class DiffusionConfig:
    steps: int = attrs.field(default=100, validator=[v.instance_of(int), v.ge(2), v.le(100_000)])
    schedule: str = attrs.field(default="cosine", validator=v.in_(SCHEDULES))
    loss: str = attrs.field(default="kl", validator=v.in_(LOSSES))
    l2_weight: float = attrs.field(default=1.0, converter=float, validator=v.ge(0.0))  # "kl+l2": weight of the L2 term
    weighting: str = attrs.field(default="uniform", validator=v.in_(WEIGHTINGS))  # per-timestep loss weight
    snr_max: float = attrs.field(default=5.0, converter=float, validator=v.ge(1.0))  # "snr-clamp": the cap
    anchors_per_batch: int = attrs.field(default=2048, validator=[v.instance_of(int), v.ge(16)])
    anchor_sampling: str = attrs.field(default="uniform", validator=v.in_(ANCHOR_SAMPLINGS))  # "importance": caps around targets
    uniform_share: float = attrs.field(default=0.5, converter=float, validator=[v.gt(0.0), v.lt(1.0)])  # of importance anchors


@attrs.frozen
class TrainConfig:
    batch_size: int = attrs.field(default=512, validator=[v.instance_of(int), v.ge(1)])
    steps: int = attrs.field(default=3000, validator=[v.instance_of(int), v.ge(1)])
    lr: float = attrs.field(default=1e-4, converter=float, validator=v.gt(0.0))
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.99), converter=lambda b: tuple(float(x) for x in b))
    weight_decay: float = attrs.field(default=5e-4, converter=float, validator=v.ge(0.0))
    seed: int = attrs.field(default=0, validator=v.instance_of(int))
    checkpoint_every: int = attrs.field(default=500, validator=[v.instance_of(int), v.ge(1)])
    log_every: int = attrs.field(default=50, validator=[v.instance_of(int), v.ge(1)])
    keep_checkpoints: int = attrs.field(default=3, validator=[v.instance_of(int), v.ge(1)])

    @betas.validator
    def _betas(self, attribute, value):
        if len(value) != 2 or not all(0 <= b < 1 for b in value):
            raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")


@attrs.frozen
class DataConfig:
    source: str = attrs.field(default="places", validator=v.instance_of(str))  # "places" or a CSV path
    places_limit: int = attrs.field(default=16_000, validator=[v.instance_of(int), v.ge(10)])
    all_places: bool = False
    template: str = "{name}, {admin1}, {country}"
    val_fraction: float = attrs.field(default=0.05, converter=float, validator=[v.ge(0.0), v.lt(0.5)])
    test_fraction: float = attrs.field(default=0.1, converter=float, validator=[v.gt(0.0), v.lt(0.5)])
    holdout_groups: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    holdout_lat_band: tuple[float, float] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    embedder: str = attrs.field(default="minilm", validator=v.in_(EMBEDDERS))
    clip_model: str = "ViT-L-14"
    clip_pretrained: str = "openai"


@attrs.frozen
class EvalConfig:
    samples: int = attrs.field(default=16, validator=[v.instance_of(int), v.ge(1)])
    sampler: str = attrs.field(default=DEFAULT_SAMPLER, validator=v.in_(SAMPLERS))
    sampler_steps: int = attrs.field(default=DEFAULT_SAMPLER_STEPS, validator=[v.instance_of(int), v.ge(1)])
    reducer: str = attrs.field(default="mode", validator=v.in_(REDUCERS))
    projection: str = attrs.field(default=DEFAULT_PROJECTION, validator=v.in_(PROJECTIONS))  # x0 between sampling steps
    max_items: int | None = attrs.field(default=None, validator=v.optional([v.instance_of(int), v.ge(1)]))
    scores: bool = attrs.field(default=True, validator=v.instance_of(bool))  # proper scores and the one-step row
    one_step: bool = attrs.field(default=True, validator=v.instance_of(bool))  # also score the one-step x0 prediction

    def sampling(self, seed: int | None = 0) -> SamplingSettings:
        """This section's sampling choices as the one :class:`SamplingSettings` value (the TOML keeps its flat keys)."""
        return SamplingSettings(self.sampler, self.sampler_steps, self.projection, self.samples, self.reducer, seed)


@attrs.frozen
class RunConfig:
    name: str = "locdiff"
    model: ModelConfig = attrs.field(factory=ModelConfig)
    diffusion: DiffusionConfig = attrs.field(factory=DiffusionConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    data: DataConfig = attrs.field(factory=DataConfig)
    eval: EvalConfig = attrs.field(factory=EvalConfig)
    device: str = "auto"
    workdir: str = "runs"
    store_url: str | None = None  # default: sqlite file under workdir

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, value_serializer=lambda inst, field, value: list(value) if isinstance(value, tuple) else value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "config") -> "RunConfig":
        """Build and validate from nested mappings with strict types (:func:`structure`);
        errors name the offending ``section.field``."""
        return structure(cls, data, where=where)

    @classmethod
    def load(cls, path: Path | str, overrides: Mapping[str, Any] | None = None,
             flags: Mapping[str, str] | None = None) -> "RunConfig":
        """Read a TOML file, apply ``{"section.field": value}`` overrides, validate.

        A bad value from an override is blamed on the override, not on the file: on the flag that
        ``flags`` maps its ``section.field`` to (e.g. ``{"model.degree": "--degree"}``), else "override".
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"config file {path} cannot be read ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        try:
            return cls.from_dict(apply_overrides(data, given), where=str(path))
        except ConfigError as exc:
            if exc.field not in given:
                raise
            flag = (flags or {}).get(exc.field)
            raise ValueError(f"{flag or 'override'} ({exc.field}): {exc.detail}") from None


_SECTIONS = {"model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig, "data": DataConfig, "eval": EvalConfig}


# --------------------------------------------------------------------------- strict structuring
def _strict_converter():
    """A cattrs converter that never coerces: no bool for an int, no string for a bool, no string for a list.

    The hooks follow the attrs field types, so every field of every config class (including ones
    added later) is checked by its declared type; the classes' own validators then check ranges.
    """
    import math
    import typing

    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def integer(value: Any, _type: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value

    def number(value: Any, _type: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return float(value)

    def text(value: Any, _type: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value

    def boolean(value: Any, _type: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value

    conv.register_structure_hook(int, integer)
    conv.register_structure_hook(float, number)
    conv.register_structure_hook(str, text)
    conv.register_structure_hook(bool, boolean)

    def is_tuple(t: Any) -> bool:
        return typing.get_origin(t) is tuple

    def tuple_hook(t: Any):
        args = typing.get_args(t)
        variadic = len(args) == 2 and args[1] is Ellipsis

        def hook(value: Any, _type: Any) -> tuple:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"expected a list, got {value!r}")
            if not variadic and len(value) != len(args):
                raise ValueError(f"expected a list of {len(args)} values, got {len(value)}")
            kinds = [args[0]] * len(value) if variadic else list(args)
            return tuple(conv.structure(x, k) for x, k in zip(value, kinds))

        return hook

    conv.register_structure_hook_factory(is_tuple, tuple_hook)

    def is_attrs_class(t: Any) -> bool:
        return isinstance(t, type) and attrs.has(t)

    def mapping_first(t: Any):
        from cattrs.gen import make_dict_structure_fn

        made = make_dict_structure_fn(t, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True)

        def hook(value: Any, _type: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a table, got {value!r}")
            return made(value, t)

        return hook

    conv.register_structure_hook_factory(is_attrs_class, mapping_first)
    return conv


_CONVERTER = None


def _problem(exc: BaseException, path: str = "") -> tuple[str, BaseException]:
    """The first leaf error of a cattrs exception tree and the dotted field path to it."""
    from cattrs.errors import ForbiddenExtraKeysError

    if isinstance(exc, ForbiddenExtraKeysError):
        known = sorted(f.name for f in attrs.fields(exc.cl))
        where = f"{path}." if path else ""
        return "", ValueError(f"unknown setting(s) {', '.join(where + n for n in sorted(exc.extra_fields))}; expected one of {known}")
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            step = path
            for note in getattr(sub, "__notes__", []):
                name = getattr(note, "name", None)
                if name is not None:
                    step = f"{path}.{name}" if path else str(name)
                    if isinstance(name, int):
                        step = f"{path}[{name}]"
                    break
            return _problem(sub, step)
    return path, exc


class ConfigError(ValueError):
    """A setting of the wrong type or out of range: ``where`` (file), ``field`` (``section.name``), ``detail``."""

    def __init__(self, where: str, field: str, detail: str) -> None:
        self.where, self.field, self.detail = where, field, detail
        super().__init__(f"{where}: {field + ': ' if field else ''}{detail}")


def _resolve(cls: type) -> None:
    """Turn the string annotations of ``cls`` and its nested attrs classes into types (once)."""
    import typing

    attrs.resolve_types(cls)
    for f in attrs.fields(cls):
        for t in (f.type, *typing.get_args(f.type)):
            if isinstance(t, type) and attrs.has(t):
                _resolve(t)


def structure(cls: type, data: Any, *, where: str = "config") -> Any:
    """``data`` (nested mappings, e.g. parsed TOML or JSON) as an instance of the attrs class ``cls``.

    Types are strict (no bool for an int, no truthy strings, no string for a list) and unknown keys
    are refused; raises ``ValueError('<where>: <section.field>: <what is wrong>')``.
    """
    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = _strict_converter()
    _resolve(cls)
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a table of settings, got {type(data).__name__}")
    try:
        return _CONVERTER.structure(data, cls)
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - cattrs groups every field error; report the first
        field, leaf = _problem(exc)
        args = leaf.args if isinstance(leaf, ValueError) else ()
        # attrs' in_ validator raises ValueError(message, attribute, options, value): keep the message only
        text = args[0] if len(args) > 1 and isinstance(args[0], str) else str(leaf)
        message = text.strip() or type(leaf).__name__
        message = message.splitlines()[0][:300]
        named = re.match(r"'(\w+)' must ", message)  # an attrs validator names its field: "'degree' must be >= 1: 0"
        if named and field and "." not in field:
            field = f"{field}.{named.group(1)}"
        raise ConfigError(where, field, message) from None


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge dotted overrides (``{"train.steps": 100}``) into a nested config mapping."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        if len(parts) == 1:
            out[parts[0]] = value
        elif len(parts) == 2:
            out.setdefault(parts[0], {})[parts[1]] = value
        else:
            raise ValueError(f"override {dotted!r} must be 'field' or 'section.field'")
    return out
