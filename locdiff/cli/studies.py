"""CLI entry points for the evidence: ``compare``, ``study NAME`` and ``report``.

Registered on ``python -m locdiff.cli`` by ``cli_studies.register(sub)``::

    python -m locdiff.cli compare RUN_DIR                      # LocDiffusion vs kNN / grid / regression on test
    python -m locdiff.cli study anchors|losses|spatial|calibration|degrees|compare [--run RUN_DIR] [--quick]
    python -m locdiff.cli study anchor-sampling [--degrees 15,31,47] [--spread-draws 20]   # uniform vs importance anchors
    python -m locdiff.cli report RUN_ID [RUN_ID ...] [--out reports/]
    python -m locdiff.cli convert mp16|im2gps3k|yfcc4k|yfcc26k|osv5m META.csv --out data.csv   # for train --data

``--data CSV --format FORMAT`` reads a benchmark's published layout directly in the studies;
``compare RUN_DIR --eval-data CSV --eval-format FORMAT`` evaluates on another benchmark (all items).

A study stores itself as one run of experiment ``study-<name>`` in the experiment store (its
settings and run config as the config, every table cell as an evaluation) and writes
``<workdir>/studies/<name>-<run_id>.json``; ``report`` rebuilds Markdown + PNG plots from the store.
Like ``locdiff/cli/main.py`` this is a driving adapter: it parses, calls a use case through the container, prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from locdiff.cli.flags import DEFAULT_CONFIG
from locdiff.config import EMBEDDERS, RunConfig, apply_overrides
from locdiff.container import benchmark_formats
from locdiff.core.diffusion import PROJECTIONS


# --------------------------------------------------------------------------- helpers
def _progress(**kwargs):
    from tqdm import tqdm

    return tqdm(mininterval=2.0, dynamic_ncols=True, file=sys.stderr, **kwargs)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _config(args, model_config: RunConfig | None = None) -> RunConfig:
    """The study's run config: ``--config``/defaults plus flags, or (``--run``) the given model's config."""
    overrides = {
        "model.degree": getattr(args, "degree", None),
        "data.places_limit": args.places,
        "data.source": args.data,
        "data.embedder": args.embedder,
        "device": args.device,
        "workdir": args.workdir,
        "store_url": args.store,
    }
    if model_config is not None:
        # keep the model's data settings (same places, same splits); use this session's workdir/store/device
        keep = {k: v for k, v in overrides.items() if k in ("device", "workdir", "store_url", "data.source") and v is not None}
        if model_config.data.source != "places" and "data.source" not in keep:  # a checkpoint never chooses the files read
            raise ValueError(f"{args.run} was trained on {model_config.data.source!r}; give --data CSV to choose the data")
        from locdiff.container import run_location

        where = run_location(Path(args.run)) if keep.get("workdir", "runs") == "runs" and "store_url" not in keep else None
        if where is not None:  # the store beside the run folders (or its run.json's), from any directory
            keep["workdir"] = where[0]
            if where[1]:
                keep["store_url"] = where[1]
        keep.setdefault("workdir", "runs")
        keep.setdefault("store_url", None)
        data = model_config.to_dict()
        data["store_url"] = None
        return RunConfig.from_dict(apply_overrides(data, keep))
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    return RunConfig.load(path, overrides)


def _source(container, args):
    from locdiff.container import benchmark_source

    if args.format:
        if not args.data:
            raise ValueError(f"--format {args.format} needs --data CSV (the benchmark's metadata file)")
        return benchmark_source(args.data, args.format, args.image_root, args.skip_missing_images)
    return container.dataset()


def _settings(args, study: str):
    from locdiff.services.studies import default_settings

    def ints(text):
        return tuple(int(float(x)) for x in text.split(",")) if text else None

    band = tuple(float(x) for x in args.holdout_lat_band.split(",")) if args.holdout_lat_band else None
    return default_settings(
        study, quick=args.quick, steps=args.steps, batch_size=args.batch_size, eval_items=args.eval_items,
        val_items=args.val_items, samples=args.samples, sampler_steps=args.sampler_steps,
        projection=args.projection, baseline_steps=args.baseline_steps,
        seed=args.seed, anchor_sizes=ints(args.anchor_sizes), degrees=ints(args.degrees),
        losses=tuple(args.losses.split(",")) if args.losses else None,
        holdout_groups=tuple(args.holdout_groups.split(",")) if args.holdout_groups else None,
        holdout_lat_band=band, hybrid=False if getattr(args, "no_hybrid", False) else None,
        spread_draws=getattr(args, "spread_draws", None),
    )


def _given_model(study: str, args, kwargs: dict[str, Any]):
    """``--run``: the model, loaded once on the CPU (the study moves it to its device); calibration saves its fit beside it."""
    from locdiff.container import load_model, save_calibration, save_hybrid_rule

    if not args.run:
        return None
    if study in ("losses", "spatial", "degrees", "anchor-sampling"):
        raise ValueError(f"study {study!r} trains its own models; --run is only for compare, anchors and calibration")
    bundle, ckpt = load_model(Path(args.run), torch.device("cpu"))
    kwargs["bundle"] = bundle
    _log(f"model {ckpt} (L={bundle.degree}, {bundle.config.diffusion.loss}, {bundle.config.train.steps} steps)")
    if study == "calibration":
        def save(calibrator, ckpt=ckpt):
            path = save_calibration(ckpt, calibrator)
            _log(f"calibration saved for predictions with this model: {path} ({calibrator.describe()})")
        kwargs["on_fit"] = save
    if study == "compare":
        def keep_rule(selection, ckpt=ckpt):
            try:
                _log(f"LocDiff-H rule saved for `predict --hybrid`: {save_hybrid_rule(ckpt, selection.to_dict())}")
            except OSError as exc:
                _log(f"(could not save the LocDiff-H rule beside the checkpoint: {exc})")
        kwargs["on_hybrid"] = keep_rule
    return bundle


def _run_study(study: str, args) -> int:
    from locdiff.container import benchmark_source, build_container, study_env, write_json
    from locdiff.services.studies import RUNNERS, format_result

    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs: dict[str, Any] = {}
    bundle = _given_model(study, args, kwargs)
    config = _config(args, bundle.config if bundle is not None else None)
    settings = _settings(args, study)
    if bundle is not None and args.projection is None:  # a given run keeps the x0 projection it was selected with
        settings = settings.replace(projection=bundle.config.eval.projection)
    container = build_container(config)
    env = study_env(container, config, progress=_progress, log=_log, reuse_models=not args.retrain)
    _log(f"study {study}: {json.dumps(settings.to_dict())}")
    t0 = time.perf_counter()
    if study == "compare" and args.eval_data:
        kwargs["eval_source"] = benchmark_source(args.eval_data, args.eval_format, args.eval_image_root, args.skip_missing_images)
    result = RUNNERS[study](_source(container, args), container.embedder(), config, env, settings, **kwargs)
    out = Path(config.workdir) / "studies" / f"{study}-{result.run_id if result.run_id is not None else 'x'}.json"
    write_json(out, result.to_dict())
    print(f"\n## study {study} (run {result.run_id}, {time.perf_counter() - t0:.0f} s)\n")
    print(format_result(result))
    print(f"\nresults: {out}\nreport:  python -m locdiff.cli report {result.run_id} --out reports/")
    return 0


def cmd_compare(args) -> int:
    return _run_study("compare", args)


def cmd_study(args) -> int:
    if args.name == "sampler":
        return _sampler_study(args)
    return _run_study(args.name, args)


def _sampler_study(args) -> int:
    """``study sampler``: samplers × steps × projections against the exact oracle (no data, no model)."""
    from locdiff.core.sampling import parse_samplers
    from locdiff.services.studies.sampler import DEFAULT_PRIOR, SamplerStudySettings, format_table, parse_prior, run_sampler_study

    if args.threads:
        torch.set_num_threads(args.threads)
    fields = {"prior": parse_prior(args.prior or DEFAULT_PRIOR)}
    if args.samplers:
        fields["runs"] = tuple(parse_samplers(args.samplers))
    if args.projections:
        fields["projections"] = tuple(p.strip() for p in args.projections.split(","))
    for key, value in (("degree", args.degree), ("samples", args.samples), ("seed", args.seed), ("radius_km", args.radius_km)):
        if value is not None:
            fields[key] = value
    settings = SamplerStudySettings(**fields)
    t0 = time.perf_counter()
    rows = run_sampler_study(settings, on_row=lambda r: _log(f"{r.sampler}-{r.steps} {r.projection}: max err {r.max_error:.3f}"))
    print(f"\n## study sampler ({time.perf_counter() - t0:.0f} s)\n")
    print(format_table(rows, settings))
    return 0


def cmd_convert(args) -> int:
    """Write a benchmark's metadata as the generic ``id,lat,lon,image,group`` CSV that ``train --data`` reads."""
    from locdiff.container import benchmark_source, write_dataset_csv

    src = benchmark_source(args.csv, args.format, args.image_root, args.skip_missing_images)
    samples = src.load()
    write_dataset_csv(samples, Path(args.out))
    print(f"wrote {len(samples)} {args.format} samples to {args.out}" + (f"; skipped {len(src.skipped)} with missing images" if src.skipped else ""))
    return 0


def cmd_report(args) -> int:
    from locdiff.container import build_container, render_report
    from locdiff.core.tables import StudyResult

    config = RunConfig.load(DEFAULT_CONFIG, {"workdir": args.workdir, "store_url": args.store})
    store = build_container(config).store()
    results = []
    for run_id in args.run_ids:
        record = store.get_run(run_id)
        if not record.experiment.startswith("study-") or "study" not in record.config:
            raise ValueError(f"run {run_id} is not a study run (experiment {record.experiment!r}); see `python -m locdiff.cli runs`")
        results.append(StudyResult.from_run(record))
    name = args.name or "-".join(f"{r.name}-{r.run_id}" for r in results)
    path = render_report(results, Path(args.out), name)
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- parser
def _study_options(p: argparse.ArgumentParser) -> None:
    formats = benchmark_formats()
    p.add_argument("--config", help="TOML run config of the models a study trains (default: locdiff/default.toml)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few minutes")
    p.add_argument("--steps", type=int, help="training steps of each model the study trains")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--degree", type=int, help="SHDD degree L of the models trained (not the degree study)")
    p.add_argument("--eval-items", type=int, help="test / hold-out items evaluated")
    p.add_argument("--val-items", type=int, help="validation items (calibration fitting)")
    p.add_argument("--samples", type=int, help="K diffusion samples per item")
    p.add_argument("--sampler-steps", type=int, help="network calls of the studies' sampler (default 15)")
    p.add_argument("--projection", choices=list(PROJECTIONS),
                   help="x0 projection between sampling steps (default none)")
    p.add_argument("--baseline-steps", type=int, help="training steps of the grid classifier and regression")
    p.add_argument("--anchor-sizes", help="Fibonacci grid sizes for the anchor study, e.g. 21000,100000,500000,1000000")
    p.add_argument("--degrees", help="degrees for the degree and anchor-sampling studies, e.g. 15,23,31,47")
    p.add_argument("--spread-draws", type=int, help="anchor-sampling study: fresh anchor sets per KL spread (default 20)")
    p.add_argument("--losses", help="losses for the loss study, e.g. kl,l1,l2,cosine")
    p.add_argument("--holdout-groups", help="spatial study: comma-separated country codes held out")
    p.add_argument("--holdout-lat-band", help="spatial study: hold out latitudes LO,HI instead of countries")
    p.add_argument("--places", type=int, help="number of places (most populous first)")
    p.add_argument("--data", help="a dataset CSV instead of the places (generic lat,lon,image|text or a --format layout)")
    p.add_argument("--format", choices=formats, help="the benchmark layout of --data")
    p.add_argument("--image-root", help="folder of the benchmark's images (default: next to the CSV)")
    p.add_argument("--skip-missing-images", action="store_true", help="drop rows whose image file is missing (default: error)")
    p.add_argument("--eval-data", help="compare: evaluate on this dataset (all its items) instead of the test split")
    p.add_argument("--eval-format", choices=formats, help="the benchmark layout of --eval-data")
    p.add_argument("--eval-image-root", help="folder of --eval-data's images")
    p.add_argument("--embedder", choices=EMBEDDERS)
    p.add_argument("--seed", type=int)
    p.add_argument("--retrain", action="store_true",
                   help="train every model afresh (default: reuse a finished study model with the same training config)")
    p.add_argument("--no-hybrid", action="store_true", help="compare / spatial: leave out the LocDiff-H row (gallery retrieval near the samples)")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy shared CPU)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--workdir", default="runs", help="where the store, study models and results live (default: runs)")
    p.add_argument("--store", help="SQLAlchemy URL of the experiment store")


def study_options(**given: Any) -> argparse.Namespace:
    """The options of ``compare`` / ``study`` with their defaults, and ``given`` (``eval --compare`` uses it)."""
    parser = argparse.ArgumentParser(add_help=False)
    _study_options(parser)
    args = parser.parse_args([])
    args.run = None
    for key, value in given.items():
        if not hasattr(args, key):
            raise TypeError(f"no study option {key!r}")
        setattr(args, key, value)
    return args


def register(subparsers) -> None:
    """Add ``compare``, ``study`` and ``report`` to the ``python -m locdiff.cli`` sub-commands."""
    from locdiff.services.studies import STUDIES

    p = subparsers.add_parser("compare", help="LocDiffusion (a trained run) vs kNN, grid classification and regression on test")
    p.add_argument("run", help="run folder or checkpoint folder of the LocDiffusion model")
    _study_options(p)
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("study", help="run an ablation / evidence study and store its tables")
    p.add_argument("name", choices=(*STUDIES, "sampler"))
    p.add_argument("--run", help="a trained model for compare / anchors / calibration (otherwise one is trained)")
    p.add_argument("--prior", help='sampler study: the finite prior, "lat,lon,w;lat,lon,w;..." (default Madrid/Sydney/Tokyo 0.6/0.3/0.1)')
    p.add_argument("--samplers", help="sampler study: runs, e.g. ddpm:100,ddim:20,dpmpp2m:15 (default: a spread of all samplers)")
    p.add_argument("--projections", help="sampler study: comma-separated x0 projections (default: all)")
    p.add_argument("--radius-km", type=float, help="sampler study: a sample counts for a site within this distance (default 300)")
    _study_options(p)
    p.set_defaults(func=cmd_study, run=None)

    p = subparsers.add_parser("convert", help="benchmark metadata (MP16, Im2GPS3k, YFCC4k/26k, OSV-5M) → generic dataset CSV")
    p.add_argument("format", choices=benchmark_formats())
    p.add_argument("csv", help="the benchmark's metadata CSV as published")
    p.add_argument("--image-root", help="folder of its images (default: the layout's folder next to the CSV)")
    p.add_argument("--out", required=True, help="generic CSV to write (id,lat,lon,image,group)")
    p.add_argument("--skip-missing-images", action="store_true", help="drop rows whose image file is missing (default: error)")
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser("report", help="Markdown + PNG report of stored study runs")
    p.add_argument("run_ids", nargs="+", type=int, metavar="RUN_ID")
    p.add_argument("--out", default="reports", help="output folder (default: reports/)")
    p.add_argument("--name", help="file name without .md (default: from the studies and run ids)")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--store", help="SQLAlchemy URL of the experiment store")
    p.set_defaults(func=cmd_report)
