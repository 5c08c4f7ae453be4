"""``python -m locdiff.cli`` — train, eval, predict, embed, runs, dataset, gui (and the studies of :mod:`.studies`).

A driving adapter of the hexagon: each command parses its own flags, gets a use case and its ports
from :mod:`locdiff.container`, calls it and prints. It names no adapter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from locdiff.cli import batch as batch_flags
from locdiff.cli import flags
from locdiff.cli import hybrid as cli_hybrid
from locdiff.config import VIEWS, RunConfig, apply_overrides
from locdiff.core.diffusion import DEFAULT_SAMPLER, DEFAULT_SAMPLER_STEPS, SAMPLERS
from locdiff.core.scores import random_row
from locdiff.core.splits import EVAL_SPLITS


# --------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from locdiff.container import read_resume, training_ports
    from locdiff.services.training_run import PeerFailed, run_training

    resume = read_resume(Path(args.resume), args.steps) if args.resume else None
    config = resume.config if resume is not None else flags.config_from_args(args)
    try:
        outcome = run_training(config, training_ports(config), resume=resume, evaluate_after=not args.no_eval,
                               say=print, progress=flags.progress)
    except PeerFailed:
        return 2
    result = outcome.result
    if not outcome.lead:
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"\ninterrupted at step {result.step}; checkpoint {result.checkpoint}\n"
              f"resume with: python -m locdiff.cli train --resume {outcome.run_dir}")
        return 130
    print(f"trained {result.step} steps in {result.seconds:.0f} s; final loss {result.final_loss:.4f}; checkpoint {result.checkpoint}")
    if outcome.evaluations:
        rows = {}
        for split, ev in outcome.evaluations.items():
            rows[f"LocDiffusion ({split}, {config.eval.reducer})"] = ev.metrics
            if ev.one_step is not None:  # the chain must beat it (issue #10)
                rows[f"one-step x0 ({split}, {config.eval.reducer})"] = ev.one_step
        rows["random guess"] = random_row()
        e = config.eval
        flags.print_table(f"Held-out accuracy (%), run {outcome.run_id}, {e.samples} samples, {e.sampler} {e.sampler_steps} steps:", rows)
    print(f"\ntotal {outcome.seconds:.0f} s")
    return 0


# --------------------------------------------------------------------------- eval
def _compare_options(args):
    """``eval RUN --compare …`` as the options of ``compare RUN …`` (one code path for the baselines table)."""
    from locdiff.cli import studies as cli_studies
    from locdiff.core.sampling import parse_samplers

    if args.split != "test":
        raise ValueError(f"--compare evaluates the test split (or --data); got --split {args.split}")
    samplers = parse_samplers(args.sampler or f"{DEFAULT_SAMPLER}:{DEFAULT_SAMPLER_STEPS}")
    if len(samplers) != 1 or samplers[0][0] != DEFAULT_SAMPLER:
        raise ValueError(f"--compare samples like the studies ({DEFAULT_SAMPLER}); give --sampler {DEFAULT_SAMPLER}:STEPS, not {args.sampler!r}")
    every = 2**31 - 1  # every item of the split (a cap only with --max-items)
    data = {"eval_data": args.data}
    if args.data and _trained_on(args.run, args.data):  # the run's own training CSV: its test split, as for a places run
        data = {"data": args.data}
    return cli_studies.study_options(run=args.run, samples=args.samples, sampler_steps=samplers[0][1], projection=args.projection,
                                     seed=args.seed, eval_items=args.max_items or every, **data, **cli_hybrid.compare_options(args, every))


def _trained_on(run: str, csv: str) -> bool:
    """Was the model of ``run`` trained on the file ``csv``?"""
    from locdiff.container import load_model

    import torch

    try:
        source = load_model(Path(run), torch.device("cpu"))[0].config.data.source
    except (OSError, ValueError):  # no such run: `compare` reports it
        return False
    return cli_hybrid.is_training_file(source, csv)


def cmd_eval(args) -> int:
    if args.compare:  # the baselines table of `compare` (kNN, grid classification, regression) for this run
        from locdiff.cli import studies as cli_studies

        return cli_studies.cmd_compare(_compare_options(args))
    from locdiff.config import EvalConfig
    from locdiff.container import build_container, load_model, run_id_of
    from locdiff.core.sampling import parse_samplers
    from locdiff.services.data import prepare
    from locdiff.services.evaluation import evaluate

    bundle, ckpt = load_model(Path(args.run))
    config = bundle.config
    flags.run_sampling(args, config.eval)
    if args.data:
        config = RunConfig.from_dict(apply_overrides(config.to_dict(), {"data.source": args.data}))
    elif config.data.source != "places":  # a checkpoint never chooses the files read
        raise ValueError(f"{ckpt} was trained on {config.data.source!r}; give --data CSV to choose the data to evaluate on")
    from locdiff.container import run_location

    where = run_location(Path(args.run))  # the store beside the run folders (or its run.json's), from any directory
    if where is not None:
        config = RunConfig.from_dict(apply_overrides(config.to_dict(), {"workdir": where[0], "store_url": where[1]}))
    container = build_container(config)
    compute, store = container.compute(), container.store()
    bundle.net.to(compute.device)
    data = prepare(container.dataset(), container.embedder(), config.data)
    if data.embedder_id != bundle.embedder_id:
        raise ValueError(f"{ckpt}: trained on {bundle.embedder_id!r} embeddings, data embedded with {data.embedder_id!r}")
    run_id = run_id_of(Path(args.run))
    if run_id is not None and not _store_has_run(store, run_id, Path(args.run)):  # a run folder copied away from its store
        print(f"note: run {run_id} of {args.run} is not in the experiment store {getattr(store, 'where', '')}: results are "
              f"printed, not stored", file=sys.stderr)
        run_id = None
    rows = {}
    for sampler, steps in parse_samplers(args.sampler):
        settings = EvalConfig(samples=args.samples, sampler=sampler, sampler_steps=steps, reducer=args.reducer,
                              projection=args.projection, max_items=args.max_items)
        ev = evaluate(bundle, data, args.split, settings, device=compute.device, seed=args.seed, store=store, run_id=run_id, progress=flags.progress)
        rows.update(_sampler_rows(ev, f"{sampler}-{steps}", args.reducer, args.all_reducers))
        if args.hybrid:
            rows.update(cli_hybrid.eval_rows(args, container, bundle, ckpt, data, ev, settings, store=store, run_id=run_id,
                                             progress=flags.progress))
        if ev.one_step is not None:
            rows.setdefault(f"one-step x0 ({args.reducer})", ev.one_step)  # the chain must beat it (issue #10)
    rows["random guess"] = random_row()
    n = data.splits[args.split].numel()
    flags.print_table(f"{data.name} / {args.split} ({int(n if args.max_items is None else min(args.max_items, n))} items), {args.samples} samples:", rows)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


# --------------------------------------------------------------------------- predict
def _prediction_payload(r) -> dict:
    from locdiff.core.decoding import credible_area_km2
    from locdiff.ports import ItemFailure

    if isinstance(r, ItemFailure):
        return {"item": r.item, "error": r.reason}
    return {
        "item": r.item,
        "point": {"lat": r.point[0], "lon": r.point[1], "reducer": r.reducer},
        "modes": [{"lat": m.lat, "lon": m.lon, "probability": m.mass, "radius_km": m.radius_km} for m in r.modes],
        "hybrid": None if r.refined is None else {"lat": r.refined[0], "lon": r.refined[1]},
        "credible_regions": [{"level": a, "area_km2": credible_area_km2(r.grid, t)} for a, t in sorted(r.credible.items())]
        if r.grid is not None else [],
        "calibration": r.calibration or "raw",
    }


def _print_prediction(p: dict) -> None:
    if "error" in p:
        print(f"{p['item']}: ERROR {p['error']}")
        return
    print(f"{p['item']}: point {p['point']['lat']:.3f}, {p['point']['lon']:.3f}")
    if p.get("hybrid"):
        print(f"  LocDiff-H (retrieved near the samples): {p['hybrid']['lat']:.3f}, {p['hybrid']['lon']:.3f}")
    for i, m in enumerate(p["modes"], 1):
        print(f"  {i}. {m['lat']:8.3f} {m['lon']:9.3f}  p={m['probability']:.3f} (within {m['radius_km']:.0f} km)")
    if p["credible_regions"]:
        areas = ", ".join(f"{100 * c['level']:.0f} % {c['area_km2'] / 1e6:.2f}" for c in p["credible_regions"])
        print(f"  credible regions (Mkm²): {areas}  [{p['calibration']}]")


def cmd_predict(args) -> int:
    from locdiff.cli import batch
    from locdiff.container import build_prediction_service
    from locdiff.core.sampling import PredictSettings, SamplingSettings

    if batch.wanted(args):  # a folder, a CSV/JSONL file, stdin or --out: one row per input in a file
        return batch.cmd_batch(args)

    service = build_prediction_service(Path(args.run), device=args.device, hybrid=args.hybrid, workdir=args.workdir)
    flags.run_sampling(args, service.bundle.config.eval)
    sampling = SamplingSettings(sampler=args.sampler, steps=args.sampler_steps, projection=args.projection, samples=args.samples,
                                reducer=args.reducer, seed=args.seed)
    settings = PredictSettings(sampling, top_modes=args.top, hybrid=bool(args.hybrid), grid_lat=90, grid_lon=180)
    results = [service.predict_text(t, settings) for t in args.text] if args.text else []
    if args.images:
        results += service.predict_images([Path(p) for p in args.images], settings)
    if not results:
        raise ValueError("nothing to predict: give image paths or --text QUERY")
    payload = [_prediction_payload(r) for r in results]
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    for p in payload:
        _print_prediction(p)
    return 0 if all("error" not in p for p in payload) else 1


# --------------------------------------------------------------------------- embed / runs / dataset / gui
def cmd_embed(args) -> int:
    from locdiff.container import build_container
    from locdiff.services.data import prepare

    config = flags.config_from_args(args)
    container = build_container(config)
    data = prepare(container.dataset(), container.embedder(), config.data)
    print(f"{data.name}: {len(data.ids)} embeddings cached ({data.embedder_id}); {len(data.failures)} failed")
    for f in data.failures[:20]:
        print(f"  {f.item}: {f.reason}")
    return 0


def cmd_runs(args) -> int:
    from locdiff.container import build_container

    runs = build_container(flags.config_from_args(args)).store().list_runs()
    if not runs:
        print("no runs yet")
        return 0
    for r in runs:
        keys = [k for k in sorted(r.metrics) if k.endswith(("acc@750km", "median_km", "loss_ema"))]
        shown = ", ".join(f"{k}={r.metrics[k]:.3g}" for k in keys[:6])
        model = r.config.get("model") if isinstance(r.config, dict) else None
        degree = model.get("degree", "-") if isinstance(model, dict) else "-"  # a study run stores no model config
        status = "stale" if getattr(r, "stale", False) else r.status  # running, but its process is gone: resume it
        print(f"run {r.run_id:4d}  {status:11s} {r.created_at:%Y-%m-%d %H:%M}  {r.code_version:14s} L={degree}  {shown}")
    return 0


def cmd_dataset(args) -> int:
    from locdiff.container import photos_to_csv

    scan = photos_to_csv(Path(args.directory), Path(args.out or Path(args.directory) / "locations.csv"))
    print(f"wrote {scan.rows} photo(s) with GPS to {scan.csv_path}")
    for file, reason in scan.skipped:
        print(f"  skipped {file}: {reason}")
    return 0


def cmd_gui(args) -> int:
    from functools import partial

    from gui.app import parse_size, run
    from locdiff.container import build_container, build_prediction_service, gps_reader

    config = flags.config_from_args(args)
    store = build_container(config).store()
    factory = partial(build_prediction_service, device=config.device, workdir=config.workdir)
    return run(factory, store, gps_reader(), Path(args.run) if args.run else None, inputs=[Path(p) for p in args.images],
               text=args.text, view=args.view, screenshot=Path(args.screenshot) if args.screenshot else None,
               size=parse_size(args.size))


# --------------------------------------------------------------------------- parser
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train (and evaluate) LocDiffusion; defaults to the embedded places")
    flags.where_flags(p)
    flags.data_flags(p)
    flags.training_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--no-eval", action="store_true")
    p.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run or checkpoint; stores results")
    p.add_argument("run", help="run folder or checkpoint folder")
    p.add_argument("--split", default="test", choices=EVAL_SPLITS)
    p.add_argument("--data", help="evaluate on another CSV embedded with the model's embedder")
    p.add_argument("--sampler", help=f"comma-separated samplers of {SAMPLERS}, e.g. ddpm:100,dpmpp2m:15 (default: the run's own)")
    flags.sampling_flags(p)
    p.add_argument("--all-reducers", action="store_true", help="one row per reducer")
    p.add_argument("--compare", action="store_true",
                   help="one table: this run vs kNN (k=1, weighted k), grid classification and regression (as `compare RUN`)")
    cli_hybrid.hybrid_flags(p, evaluation=True)
    p.add_argument("--max-items", type=flags.count)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="locations with probabilities for images or --text queries")
    p.add_argument("run", help="run folder or checkpoint folder")
    p.add_argument("images", nargs="*")
    p.add_argument("--text", action="append", help="a text / place query (repeatable)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the run's own (its config's eval.sampler)")
    p.add_argument("--sampler-steps", type=flags.count, help="default: the run's own (eval.sampler_steps)")
    flags.sampling_flags(p)
    p.add_argument("--top", type=flags.count, default=5)
    cli_hybrid.hybrid_flags(p, evaluation=False)
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--json", action="store_true")
    batch_flags.add_flags(p)
    p.set_defaults(func=cmd_predict)


def _add_tools(sub) -> None:
    p = sub.add_parser("embed", help="precompute and cache the embeddings of a dataset")
    flags.where_flags(p)
    flags.data_flags(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("runs", help="list stored runs and their latest metrics")
    flags.where_flags(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("dataset", help="dataset tools")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    q = dsub.add_parser("from-photos", help="write image,lat,lon CSV from the EXIF GPS of a photo folder")
    q.add_argument("directory")
    q.add_argument("--out", default=None, help="CSV path (default: DIRECTORY/locations.csv)")
    q.set_defaults(func=cmd_dataset)


def _add_gui(sub) -> None:
    p = sub.add_parser("gui", help="open the desktop app")
    flags.where_flags(p)
    p.add_argument("--run", "--checkpoint", dest="run", help="run or checkpoint folder to load at start")
    p.add_argument("--text", default=None, help="a place query to answer at start")
    p.add_argument("--view", choices=VIEWS, default=None)
    p.add_argument("--screenshot", default=None, help="answer the photos / --text, draw, save this PNG and exit")
    p.add_argument("--size", default=None, help="window size WxH, e.g. 1600x1000")
    p.add_argument("images", nargs="*")
    p.set_defaults(func=cmd_gui)


def build_parser() -> argparse.ArgumentParser:
    from locdiff.cli import names as cli_names
    from locdiff.cli import studies as cli_studies

    parser = flags.Parser(prog="python -m locdiff.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_predict, _add_tools):
        add(sub)
    cli_studies.register(sub)
    cli_names.register(sub)
    _add_gui(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _sampler_rows(ev, sampler: str, reducer: str, all_reducers: bool) -> dict[str, dict[str, float]]:
    """``eval``'s rows of one sampler: its chosen reducer, or every reducer (``--all-reducers``) — the proper scores
    belong to the sampler's distribution, not to a reducer, so they are shown once, on the chosen reducer's row."""
    if not all_reducers:
        return {f"LocDiffusion {sampler} ({reducer})": ev.metrics}
    rows = {f"{sampler} {r}": dict(m) for r, m in ev.by_reducer.items()}
    rows[f"{sampler} {reducer}"].update({k: v for k, v in ev.metrics.items() if k not in rows[f"{sampler} {reducer}"]})
    return rows


def _store_has_run(store, run_id: int, path: Path) -> bool:
    """Does the store hold *this* run: its id, and (where its ``run.json`` records it) its record's creation time?"""
    from locdiff.container import run_created

    try:
        record = store.get_run(run_id)
    except KeyError:
        return False
    created = run_created(path)
    return created is None or created == record.created_at.isoformat()


if __name__ == "__main__":
    sys.exit(main())
