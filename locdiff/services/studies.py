"""Use cases: the evidence — LocDiffusion beside baselines, and the paper's ablations reproduced.

Every study works on the same embeddings, hash-stable splits and metrics as training
(:mod:`locdiff.services.data`, :mod:`locdiff.core.metrics`); anything chosen (baseline temperatures,
cells, steps, calibration parameters) is chosen on the validation split, never on test.

* :func:`compare` — LocDiffusion vs kNN retrieval (k = 1 and weighted k = 10), grid
  classification and unit-vector regression (paper Table 1's rows, on our data).
* :func:`anchor_study` — Table 2: the *same* diffusion samples decoded with the training gallery
  and Fibonacci grids of 21k … 1M anchors (eq. 17), and with the continuous decoder; kNN
  retrieval restricted to the same galleries; relative change vs the training gallery.
* :func:`loss_study` — Table 8: SHDD-KL vs L1 vs L2 vs cosine with the same budget.
* :func:`spatial_study` — whole regions held out of training; LocDiffusion vs the baselines there.
* :func:`degree_study` — Fig. 4(a): L = 15, 23, 31, 47: accuracy, training time, peak memory.
* :func:`calibration_study` — coverage of credible regions, raw and calibrated on validation.

Results are :class:`StudyResult` values (tables of plain floats, curves, notes); with an
``ExperimentStore`` each study is one run (experiment ``study-<name>``, its settings and the run
config as the run's config) whose evaluations hold every table cell, so a report can be rebuilt
from the store alone (:meth:`StudyResult.from_run`). Models a study trains are runs of their own.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import torch

from locdiff.core import anchors as anchor_sets
from locdiff.core.baselines import KNNRetrieval, baseline_fitters, nearest_points
from locdiff.core.bundle import ModelBundle
from locdiff.core.calibration import RAW, Calibrator, evaluate_calibrator, fit_calibration
from locdiff.config import RunConfig, apply_overrides
from locdiff.core.decoding import anchor_decode, decode, default_radius_km
from locdiff.core.diffusion import DEFAULT_PROJECTION, LOSSES, PROJECTIONS
from locdiff.core.metrics import SCALES_KM, format_table, random_guess_accuracy, summarize
from locdiff.ports import CheckpointStore, Compute, DatasetSource, Embedder, ExperimentStore, RunRecord
from locdiff.core.reduction import reduce_samples
from locdiff.services.data import PreparedData, prepare
from locdiff.services.progress import NullProgress, ProgressFactory
from locdiff.services.sampling import predict_locations
from locdiff.services.training import train

STUDIES = ("compare", "anchors", "losses", "spatial", "calibration", "degrees")
#: six countries on six continents, ~6 % of the default 16,000 places
DEFAULT_HOLDOUT = ("ES", "PL", "NG", "TH", "CO", "AU")
ACC_KEYS = tuple(f"acc@{s:g}km" for s in SCALES_KM)
_SEP = "::"  # evaluation dataset names: "<table>::<row>" and "curve::<name>"


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
    sampler: str = "ddim"
    sampler_steps: int = 20
    projection: str = attrs.field(default=DEFAULT_PROJECTION, validator=attrs.validators.in_(PROJECTIONS))  # x0 between steps
    baseline_steps: int = 1500
    baseline_cells: tuple[int, ...] = attrs.field(default=(256, 1024), converter=_tuple)
    seed: int = 0
    anchor_sizes: tuple[int, ...] = attrs.field(default=(21_000, 100_000, 500_000, 1_000_000), converter=_tuple)
    losses: tuple[str, ...] = attrs.field(default=LOSSES, converter=_tuple)
    degrees: tuple[int, ...] = attrs.field(default=(15, 23, 31, 47), converter=_tuple)
    holdout_groups: tuple[str, ...] = attrs.field(default=DEFAULT_HOLDOUT, converter=_tuple)
    holdout_lat_band: tuple[float, float] | None = attrs.field(default=None, converter=attrs.converters.optional(_tuple))
    calibration_grid: tuple[int, int, int] = attrs.field(default=(180, 360, 1), converter=_tuple)  # n_lat, n_lon, sub

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, value_serializer=lambda inst, field, value: list(value) if isinstance(value, tuple) else value)

    def replace(self, **changes: Any) -> "StudySettings":
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})


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


class MemoryProbe(Protocol):
    """Measures peak memory while a block runs: ``with probe() as m: ...; m.peak_bytes``."""

    def __call__(self) -> contextlib.AbstractContextManager[Any]: ...


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

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


# --------------------------------------------------------------------------- results
@attrs.define
class StudyResult:
    """Tables (title → row → column → value), curves (name → (x, y)), notes, settings."""

    name: str
    tables: dict[str, dict[str, dict[str, float]]] = attrs.field(factory=dict)
    curves: dict[str, tuple[list[float], list[float]]] = attrs.field(factory=dict)
    notes: list[str] = attrs.field(factory=list)
    settings: dict[str, Any] = attrs.field(factory=dict)
    run_id: int | None = None
    model_runs: dict[str, int] = attrs.field(factory=dict)

    def add_row(self, table: str, row: str, values: Mapping[str, float]) -> None:
        self.tables.setdefault(table, {})[row] = {k: float(v) for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "run_id": self.run_id, "model_runs": dict(self.model_runs), "settings": self.settings,
            "notes": list(self.notes), "tables": self.tables, "curves": {k: [list(x), list(y)] for k, (x, y) in self.curves.items()},
        }

    def records(self) -> list[tuple[str, dict[str, float]]]:
        """(evaluation dataset name, figures) pairs that hold the whole result in an ``ExperimentStore``."""
        out = []
        order = 0
        for table, rows in self.tables.items():
            for row, values in rows.items():
                out.append((f"{table}{_SEP}{row}", dict(values) | {"_order": float(order)}))
                order += 1
        for name, (x, y) in self.curves.items():
            out.append((f"curve{_SEP}{name}", {f"x={a:.6g}": float(b) for a, b in zip(x, y)} | {"_order": float(order)}))
            order += 1
        return out

    @classmethod
    def from_run(cls, record: RunRecord) -> "StudyResult":
        """Rebuild a study's tables and curves from its run in the experiment store."""
        config = dict(record.config)
        result = cls(name=str(config.get("study", record.experiment.removeprefix("study-"))), run_id=record.run_id,
                     settings=dict(config.get("settings", {})), notes=list(config.get("notes", [])))
        cells: dict[str, dict[str, float]] = {}
        for key, value in record.metrics.items():
            dataset, _, metric = key.rpartition("/")
            if _SEP in dataset:
                cells.setdefault(dataset, {})[metric] = value
        for dataset in sorted(cells, key=lambda d: cells[d].get("_order", 0.0)):
            values = {k: v for k, v in cells[dataset].items() if k != "_order"}
            table, _, row = dataset.partition(_SEP)
            if table == "curve":
                pts = sorted((float(k.removeprefix("x=")), v) for k, v in values.items())
                result.curves[row] = ([p[0] for p in pts], [p[1] for p in pts])
            elif table == "models":
                result.model_runs = {k: int(v) for k, v in values.items() if not math.isnan(v)}
            else:
                result.tables.setdefault(table, {})[row] = values
        return result


def format_generic_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str] | None = None, *, digits: int = 1) -> str:
    """Markdown table of any figures (NaN shown as '–')."""
    if columns is None:
        columns = []
        for values in rows.values():
            columns += [c for c in values if c not in columns]
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, values in rows.items():
        cells = []
        for c in columns:
            v = values.get(c, math.nan)
            cells.append("–" if v is None or math.isnan(v) else (f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.3g}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_result(result: StudyResult) -> str:
    """All tables of a study as Markdown (accuracy tables in the paper's layout)."""
    parts = []
    for title, rows in result.tables.items():
        parts.append(f"### {title}\n")
        if rows and all(all(k in v for k in ACC_KEYS + ("median_km", "geoscore")) for v in rows.values()):
            parts.append(format_table(rows))
            extra = sorted({k for v in rows.values() for k in v} - set(ACC_KEYS) - {"median_km", "geoscore", "mean_km", "n"})
            if extra:
                parts.append("\n" + format_generic_table(rows, extra, digits=2))
        else:
            parts.append(format_generic_table(rows))
        parts.append("")
    if result.notes:
        parts.append("\n".join(f"* {n}" for n in result.notes))
    return "\n".join(parts)


# --------------------------------------------------------------------------- shared steps
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


def _start(env: StudyEnv, name: str, config: RunConfig, settings: StudySettings, extra: Mapping[str, Any] | None = None) -> int | None:
    if env.store is None:
        return None
    payload = {"study": name, "settings": settings.to_dict(), "run_config": config.to_dict()} | dict(extra or {})
    return env.store.start_run(f"study-{name}", payload, env.code_version)


def _finish(env: StudyEnv, result: StudyResult, status: str = "finished") -> StudyResult:
    if env.store is not None and result.run_id is not None:
        for dataset, figures in result.records():
            env.store.add_evaluation(result.run_id, dataset, figures)
        env.store.add_evaluation(result.run_id, f"models{_SEP}runs", {k: float(v) for k, v in result.model_runs.items()} | {"_order": -1.0})
        env.store.finish_run(result.run_id, status)
    return result


@contextlib.contextmanager
def _recording(env: StudyEnv, result: StudyResult) -> Iterator[StudyResult]:
    """Finish the study run as 'failed' / 'interrupted' if the body raises."""
    try:
        yield result
    except KeyboardInterrupt:
        if env.store is not None and result.run_id is not None:
            env.store.finish_run(result.run_id, "interrupted")
        raise
    except Exception:
        if env.store is not None and result.run_id is not None:
            env.store.finish_run(result.run_id, "failed")
        raise


@attrs.frozen
class TrainedModel:
    bundle: ModelBundle
    run_id: int | None
    seconds: float
    steps: int
    peak_memory_mb: float
    final_loss: float


@contextlib.contextmanager
def _peak_memory(env: StudyEnv) -> Iterator[dict[str, float]]:
    out = {"mb": math.nan}
    device = env.compute.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    elif env.memory is not None:
        with env.memory() as probe:
            yield out
        out["mb"] = float(probe.peak_bytes) / 2**20
    else:
        yield out


def _training_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """What determines the trained weights: the model, diffusion, train and data sections (not eval, paths, device)."""
    full = RunConfig.from_dict(config).to_dict()
    return {k: full[k] for k in ("model", "diffusion", "train", "data")}


def reusable_model(config: RunConfig, env: StudyEnv, *, experiment: str) -> TrainedModel | None:
    """The newest finished study model (any ``study-*-model`` experiment) with the same training config as ``config``.

    Its final checkpoint must exist under ``<workdir>/studies/<experiment>-<run>/checkpoints``.
    Training time comes from the run's logged ``steps_per_s`` and the peak memory from its
    ``peak_mem_MB`` metric (NaN for runs that did not log it).
    """
    if env.store is None or not env.reuse_models:
        return None
    key = _training_key(config.to_dict())
    for record in sorted(env.store.list_runs(), key=lambda r: -r.run_id):
        if not (record.experiment.startswith("study-") and record.experiment.endswith("-model")) or record.status != "finished":
            continue
        try:
            if _training_key(record.config) != key:
                continue
        except (ValueError, TypeError, KeyError):
            continue
        target = env.checkpoints.latest(env.workdir / "studies" / f"{record.experiment}-{record.run_id}" / "checkpoints")
        if target is None:
            continue
        tensors, meta = env.checkpoints.load(target)
        if int(meta.get("step", -1)) != config.train.steps:
            continue
        bundle = ModelBundle.from_checkpoint(tensors, meta, env.compute.device, where=str(target))
        m = record.metrics
        rate = m.get("steps_per_s", math.nan)
        env.say(f"{experiment}: reusing run {record.run_id} ({target}), trained with the same config")
        return TrainedModel(bundle, record.run_id, config.train.steps / rate if rate > 0 else math.nan, config.train.steps,
                            m.get("peak_mem_MB", math.nan), m.get("loss_ema", math.nan))
    return None


def train_model(config: RunConfig, data: PreparedData, env: StudyEnv, *, experiment: str) -> TrainedModel:
    """Train one LocDiffusion model with :func:`locdiff.services.training.train` (a run of its own), or reuse one."""
    reused = reusable_model(config, env, experiment=experiment)
    if reused is not None:
        if reused.bundle.embedder_id != data.embedder_id:
            raise ValueError(f"run {reused.run_id}: trained on {reused.bundle.embedder_id!r}, data embedded with {data.embedder_id!r}")
        return reused  # from_checkpoint leaves the net in eval mode
    run_id = env.store.start_run(experiment, config.to_dict(), env.code_version) if env.store is not None else None
    torch.manual_seed(config.train.seed)  # the initial weights depend on the seed alone (as `train`)
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, env.compute.device)
    folder = env.workdir / "studies" / f"{experiment}-{run_id if run_id is not None else int(time.time())}"
    env.say(f"training {experiment}: L={config.model.degree}, loss={config.diffusion.loss}, {config.train.steps} steps, batch {config.train.batch_size}")
    try:
        with _peak_memory(env) as mem:
            result = train(bundle, data, compute=env.compute, checkpoints=env.checkpoints, checkpoint_dir=folder / "checkpoints",
                           store=env.store, run_id=run_id, progress=env.progress)
    except BaseException:
        if env.store is not None and run_id is not None:
            env.store.finish_run(run_id, "failed")
        raise
    if env.store is not None and run_id is not None:
        env.store.log_metrics(run_id, result.step, {"peak_mem_MB": mem["mb"], "train_s": result.seconds})
        env.store.finish_run(run_id, "interrupted" if result.interrupted else "finished")
    if result.interrupted:
        raise KeyboardInterrupt
    bundle.net.eval()
    return TrainedModel(bundle, run_id, result.seconds, result.step, mem["mb"], result.final_loss)


def _items(data: PreparedData, split: str, limit: int) -> torch.Tensor:
    if split not in data.splits or data.splits[split].numel() == 0:
        raise ValueError(f"dataset {data.name!r} has no {split!r} items")
    return data.splits[split][:limit]


@attrs.frozen
class Sampled:
    """K diffusion samples per item: decoded locations [N, K, 2] and SHDD vectors [N, K, D]."""

    samples: torch.Tensor
    coeffs: torch.Tensor
    truth: torch.Tensor
    seconds: float


def sample_items(bundle: ModelBundle, data: PreparedData, index: torch.Tensor, settings: StudySettings, env: StudyEnv) -> Sampled:
    t0 = time.perf_counter()
    _, samples, coeffs = predict_locations(
        bundle, data.cond[index], samples=settings.samples, sampler=settings.sampler, steps=settings.sampler_steps,
        projection=settings.projection, seed=settings.seed, device=env.compute.device, progress=env.progress,
        keep_coefficients=True,
    )
    return Sampled(samples, coeffs.float(), data.latlon[index].double(), time.perf_counter() - t0)


def locdiff_metrics(bundle: ModelBundle, sampled: Sampled, reducer: str) -> dict[str, float]:
    point = reduce_samples(sampled.samples, reducer, radius_km=2 * default_radius_km(bundle.degree))
    return summarize(point, sampled.truth)


@torch.no_grad()
def one_step_points(bundle: ModelBundle, cond: torch.Tensor, *, device: torch.device, seed: int = 0, batch: int = 512) -> torch.Tensor:
    """Diagnostic: the denoiser's x0 prediction from pure noise at t = T−1 (≈ E[x0 | c]), decoded, ``[N, 2]``.

    It shows what the network learned independently of the sampling chain: if it is much better
    than the sampled predictions, the chain (not the conditional model) is what loses accuracy.
    """
    bundle.net.eval()
    g = torch.Generator().manual_seed(seed)
    last = bundle.diffusion.schedule.steps - 1
    out = []
    for start in range(0, cond.shape[0], batch):
        c = cond[start : start + batch].to(device)
        x = torch.randn(c.shape[0], bundle.dim, generator=g).to(device=device, dtype=c.dtype)
        x0 = bundle.net(x, torch.full((c.shape[0],), last, dtype=torch.long, device=device), c) / bundle.diffusion.data_scale
        out.append(decode(x0.float()).double().cpu())
    return torch.cat(out)


def _locdiff_rows(result: StudyResult, table: str, model: ModelBundle, sampled: Sampled, cond: torch.Tensor, env: StudyEnv,
                  settings: StudySettings, reducers: Sequence[str] = ("mode", "centre"), extra: Mapping[str, float] | None = None) -> None:
    for reducer in reducers:
        result.add_row(table, f"{_describe(model)}, {reducer}", locdiff_metrics(model, sampled, reducer) | dict(extra or {}))
    one = one_step_points(model, cond, device=env.compute.device, seed=settings.seed)
    result.add_row(table, "↳ its denoiser, one step from noise (diagnostic)", summarize(one, sampled.truth))


def _random_row() -> dict[str, float]:
    return random_guess_accuracy() | {"median_km": math.nan, "geoscore": math.nan}


def _fit_baselines(data: PreparedData, settings: StudySettings, env: StudyEnv) -> dict[str, tuple[Any, float]]:
    """Each baseline of :func:`locdiff.core.baselines.baseline_fitters` fitted on train (selection on val), with its fit time."""
    tr, va = data.splits["train"], data.splits.get("val", torch.empty(0, dtype=torch.long))
    args = (data.cond[tr], data.latlon[tr], data.cond[va], data.latlon[va])
    fitters = baseline_fitters(device=env.compute.device, seed=settings.seed, steps=settings.baseline_steps, cells=settings.baseline_cells)
    out: dict[str, tuple[Any, float]] = {}
    for name, fit in fitters.items():
        env.say(f"fitting baseline {name}")
        t0 = time.perf_counter()
        out[name] = (fit(*args), time.perf_counter() - t0)
    return out


def _baseline_rows(result: StudyResult, table: str, fitted, cond: torch.Tensor, truth: torch.Tensor) -> None:
    for model, seconds in fitted.values():
        result.add_row(table, model.name, summarize(model.predict(cond), truth) | {"fit_s": seconds})


def _model_for(config: RunConfig, data: PreparedData, env: StudyEnv, settings: StudySettings, study: str,
               bundle: ModelBundle | None, result: StudyResult) -> ModelBundle:
    if bundle is not None:
        if bundle.embedder_id != data.embedder_id:
            raise ValueError(f"the model was trained on {bundle.embedder_id!r} embeddings, the data is embedded with {data.embedder_id!r}")
        bundle.net.to(env.compute.device).eval()
        return bundle
    trained = train_model(study_config(config, settings), data, env, experiment=f"study-{study}-model")
    if trained.run_id is not None:
        result.model_runs["locdiff"] = trained.run_id
    return trained.bundle


def _describe(bundle: ModelBundle) -> str:
    c = bundle.config
    return f"LocDiffusion (L={bundle.degree}, {c.diffusion.loss}, {c.train.steps} steps)"


# --------------------------------------------------------------------------- compare
def compare(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
            *, bundle: ModelBundle | None = None, data: PreparedData | None = None,
            eval_source: DatasetSource | None = None) -> StudyResult:
    """LocDiffusion (given, or trained with ``settings.steps``) vs the four baselines on the test split.

    With ``eval_source`` (e.g. Im2GPS3k after training on MP16) every model is fitted on
    ``source`` as usual and evaluated on the first ``eval_items`` items of ``eval_source``, all splits.
    """
    settings = settings or default_settings("compare")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("compare", settings=settings.to_dict())
    extra = {"model_given": bundle is not None, "eval_data": getattr(eval_source, "name", None)}
    result.run_id = _start(env, "compare", config, settings, extra)
    with _recording(env, result):
        model = _model_for(config, data, env, settings, "compare", bundle, result)
        if eval_source is None:
            target, index = data, _items(data, "test", settings.eval_items)
            table = f"test accuracy (%), {data.name}, {index.numel()} items"
        else:
            target = prepare(eval_source, embedder, config.data)
            index = torch.arange(len(target.ids))[: settings.eval_items]
            table = f"{target.name}: accuracy (%), {index.numel()} items (all splits; models fitted on {data.name})"
        sampled = sample_items(model, target, index, settings, env)
        _locdiff_rows(result, table, model, sampled, target.cond[index], env, settings, extra={"predict_s": sampled.seconds})
        _baseline_rows(result, table, _fit_baselines(data, settings, env), target.cond[index], target.latlon[index])
        result.add_row(table, "random guess", _random_row())
        result.notes.append(
            f"{settings.samples} samples per item ({settings.sampler}-{settings.sampler_steps}); kNN k=10 returns the "
            "best-weighted neighbour (softmax weights, temperature and cluster radius chosen on validation); the grid "
            "classifier predicts its cell's training centroid (cells: spherical k-means on training locations, count "
            "chosen on validation); all selection on validation only."
        )
    return _finish(env, result)


# --------------------------------------------------------------------------- anchors (Table 2)
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
    result.run_id = _start(env, "anchors", config, settings, {"model_given": bundle is not None})
    with _recording(env, result):
        model = _model_for(config, data, env, settings, "anchors", bundle, result)
        test = _items(data, "test", settings.eval_items)
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
        t_ours = f"{_describe(model)}: decoding anchors ({test.numel()} test items, {reducer} of {settings.samples} samples)"
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
    return _finish(env, result)


def _sweep(result: StudyResult, data: PreparedData, config: RunConfig, env: StudyEnv, settings: StudySettings, override: str,
           values: Sequence[Any], what: str, experiment: str, *, label: Callable[[Any], str], key: Callable[[Any], str],
           extra: Callable[[Any, TrainedModel, Sampled], Mapping[str, float]]) -> None:
    """One model per value of config field ``override`` (same data, steps, batch, seed): test accuracy + extra
    columns per model, and each denoiser's one-step-from-noise accuracy as a diagnostic table."""
    test = _items(data, "test", settings.eval_items)
    table = f"test accuracy (%) by {what} ({settings.steps} steps each, {test.numel()} items)"
    for value in values:
        trained = train_model(study_config(config, settings, **{override: value}), data, env, experiment=experiment)
        if trained.run_id is not None:
            result.model_runs[key(value)] = trained.run_id
        sampled = sample_items(trained.bundle, data, test, settings, env)
        metrics = locdiff_metrics(trained.bundle, sampled, trained.bundle.config.eval.reducer)
        result.add_row(table, label(value), metrics | dict(extra(value, trained, sampled)))
        one = one_step_points(trained.bundle, data.cond[test], device=env.compute.device, seed=settings.seed)
        result.add_row(f"diagnostic: each model's denoiser, one step from noise ({test.numel()} items)", label(value),
                       summarize(one, sampled.truth))


# --------------------------------------------------------------------------- losses (Table 8)
def loss_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
               *, data: PreparedData | None = None) -> StudyResult:
    """Table 8 analogue: one model per training loss, same data, steps, batch and seed."""
    settings = settings or default_settings("losses")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("losses", settings=settings.to_dict())
    result.run_id = _start(env, "losses", config, settings)
    names = {"kl": "SHDD KL-divergence", "l1": "L1", "l2": "L2", "cosine": "cosine"}
    with _recording(env, result):
        _sweep(result, data, config, env, settings, "diffusion.loss", settings.losses, "training loss", "study-losses-model",
               label=lambda loss: names.get(loss, loss), key=str,
               extra=lambda loss, trained, sampled: {"train_s": trained.seconds, "final_loss": trained.final_loss})
        result.notes.append(f"L={config.model.degree}; reducer '{config.eval.reducer}'; the final_loss column is each loss in its own units.")
    return _finish(env, result)


# --------------------------------------------------------------------------- spatial hold-out
def spatial_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None) -> StudyResult:
    """Train without whole regions (countries or a latitude band) and evaluate there: LocDiffusion vs the baselines."""
    settings = settings or default_settings("spatial")
    over: dict[str, Any] = {}
    if settings.holdout_lat_band is not None:
        over["data.holdout_lat_band"] = list(settings.holdout_lat_band)
        over["data.holdout_groups"] = []
        region = f"latitudes {settings.holdout_lat_band[0]:g}..{settings.holdout_lat_band[1]:g}"
    else:
        over["data.holdout_groups"] = list(settings.holdout_groups)
        region = "countries " + ",".join(settings.holdout_groups)
    config = RunConfig.from_dict(apply_overrides(config.to_dict(), over))
    data = prepare(source, embedder, config.data)
    result = StudyResult("spatial", settings=settings.to_dict())
    result.run_id = _start(env, "spatial", config, settings, {"region": region})
    with _recording(env, result):
        held = _items(data, "holdout", settings.eval_items)
        test = _items(data, "test", settings.eval_items)
        model = _model_for(config, data, env, settings, "spatial", None, result)
        fitted = _fit_baselines(data, settings, env)
        for split, index in (("held-out region", held), ("in-distribution test", test)):
            table = f"{split}: accuracy (%), {index.numel()} items (training excluded {region})"
            sampled = sample_items(model, data, index, settings, env)
            _locdiff_rows(result, table, model, sampled, data.cond[index], env, settings)
            _baseline_rows(result, table, fitted, data.cond[index], data.latlon[index])
            result.add_row(table, "random guess", _random_row())
        result.notes.append(f"Held out: {region} ({int(data.splits['holdout'].numel())} places) — absent from train, val and test.")
    return _finish(env, result)


# --------------------------------------------------------------------------- degrees (Fig. 4a)
def degree_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
                 *, data: PreparedData | None = None) -> StudyResult:
    """Fig. 4(a) analogue: accuracy per scale, training time and peak memory for each SHDD degree L."""
    settings = settings or default_settings("degrees")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("degrees", settings=settings.to_dict())
    result.run_id = _start(env, "degrees", config, settings)
    def extra(degree: int, trained: TrainedModel, sampled: Sampled) -> dict[str, float]:
        return {
            "degree": float(degree), "dims": float((degree + 1) ** 2),
            "params_M": sum(p.numel() for p in trained.bundle.net.parameters()) / 1e6,
            "train_s": trained.seconds, "steps_per_s": trained.steps / max(trained.seconds, 1e-9),
            "peak_mem_MB": trained.peak_memory_mb, "sample_s": sampled.seconds,
        }

    with _recording(env, result):
        _sweep(result, data, config, env, settings, "model.degree", settings.degrees, "SHDD degree", "study-degrees-model",
               label=lambda degree: f"L={degree}", key=lambda degree: f"L{degree}", extra=extra)
        result.notes.append("peak_mem_MB: peak allocated CUDA memory on a GPU; on CPU the peak resident-set growth during training (if a probe is given).")
    return _finish(env, result)


# --------------------------------------------------------------------------- calibration
def calibration_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv, settings: StudySettings | None = None,
                      *, bundle: ModelBundle | None = None, data: PreparedData | None = None,
                      on_fit: Callable[[Calibrator], None] | None = None) -> StudyResult:
    """Coverage of 50/90/95 % credible regions on test, raw and after calibrating on validation.

    ``on_fit`` receives the fitted calibrator (the CLI saves it beside a given model for predictions).
    """
    settings = settings or default_settings("calibration")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("calibration", settings=settings.to_dict())
    result.run_id = _start(env, "calibration", config, settings, {"model_given": bundle is not None})
    n_lat, n_lon, sub = settings.calibration_grid
    shape = dict(n_lat=n_lat, n_lon=n_lon, sub=sub)
    with _recording(env, result):
        model = _model_for(config, data, env, settings, "calibration", bundle, result)
        val = _items(data, "val", settings.val_items)
        test = _items(data, "test", settings.eval_items)
        s_val = sample_items(model, data, val, settings, env)
        s_test = sample_items(model, data, test, settings, env)
        env.say(f"fitting calibration on {val.numel()} validation items")
        bar = (env.progress or NullProgress)(total=val.numel() * 3, desc="calibrate (val)")
        fit = fit_calibration(s_val.coeffs, s_val.samples, s_val.truth, on_item=lambda _: bar.update(1), **shape)
        bar.close()
        if on_fit is not None:
            on_fit(fit.calibrator)
        raw = attrs.evolve(RAW, **shape)
        rows = {}
        reshaped = attrs.evolve(fit.calibrator, scores=())
        candidates = [("raw (τ=1)", raw), (f"calibrated: {reshaped.describe()}", reshaped)]
        if fit.calibrator.scores:
            candidates.append((f"calibrated: {fit.calibrator.describe()}", fit.calibrator))
        for label, cal in candidates:
            bar = (env.progress or NullProgress)(total=test.numel(), desc=f"coverage {label}")
            ev = evaluate_calibrator(cal, s_test.coeffs, s_test.samples, s_test.truth, on_item=lambda _: bar.update(1))
            bar.close()
            rows[label] = ev
            result.curves[f"test {label}"] = ev["curve"]
            row = {"calibration error (pp)": 100.0 * ev["calibration_error"]}
            for pct in (50, 90, 95):
                row[f"coverage@{pct} (%)"] = ev[f"coverage@{pct}"]
            for pct in (50, 90, 95):
                row[f"median area@{pct} (Mkm²)"] = ev[f"median_area_km2@{pct}"] / 1e6
            result.add_row(f"test coverage of HPD regions, {test.numel()} items", label, row)
        for family, tried in fit.search.items():
            p, err = min(tried, key=lambda pe: pe[1])
            result.add_row("validation search: best of each family", family, {"param (τ or km)": p, "val calibration error (pp)": 100 * err})
        result.add_row("validation search: best of each family", "raw (τ=1)", {"param (τ or km)": 1.0, "val calibration error (pp)": 100 * fit.raw_val_error})
        result.add_row(f"point accuracy (%), {test.numel()} test items", _describe(model), locdiff_metrics(model, s_test, model.config.eval.reducer))
        result.notes.append(
            f"Maps: mixture of the {settings.samples} samples' densities on a {n_lat}×{n_lon} grid; the truth is covered when "
            "its cell is in the HPD region. Calibration family and parameter chosen on validation items only "
            f"(mean |coverage − nominal| over 5 %…95 %); chosen: {fit.calibrator.describe()} (val error "
            f"{fit.val_error:.3f}, raw {fit.raw_val_error:.3f}). Conformal levels: the α-region is the HPD region at the "
            "⌈(n+1)α⌉-th smallest validation HPD level (split conformal; ≥ α coverage for exchangeable items)."
        )
    return _finish(env, result)


RUNNERS: dict[str, Callable[..., StudyResult]] = {
    "compare": compare,
    "anchors": anchor_study,
    "losses": loss_study,
    "spatial": spatial_study,
    "calibration": calibration_study,
    "degrees": degree_study,
}
