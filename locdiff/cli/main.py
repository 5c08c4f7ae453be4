"""``python -m locdiff.cli`` — train, eval, predict, embed, runs, dataset, gui.

An entry point of the hexagon: it parses flags, builds the container, calls use cases and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from locdiff.config import RunConfig, apply_overrides
from locdiff.core.diffusion import DEFAULT_PROJECTION, PROJECTIONS
from locdiff.core.metrics import format_table, random_guess_accuracy

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "default.toml"


# --------------------------------------------------------------------------- helpers
def _progress(**kwargs):
    from tqdm import tqdm

    return tqdm(mininterval=1.0, dynamic_ncols=True, file=sys.stderr, **kwargs)


def _code_version() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from locdiff import __version__

    return __version__


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _config_from_args(args) -> RunConfig:
    overrides = {
        "model.degree": args.degree,
        "train.steps": args.steps,
        "train.batch_size": args.batch_size,
        "train.seed": args.seed,
        "diffusion.loss": args.loss,
        "data.places_limit": args.places,
        "data.all_places": True if args.all_places else None,
        "data.source": args.data,
        "data.embedder": args.embedder,
        "data.clip_pretrained": args.clip_pretrained,
        "data.holdout_groups": args.holdout_groups.split(",") if args.holdout_groups else None,
        "eval.max_items": args.eval_items,
        "device": args.device,
        "workdir": args.workdir,
        "store_url": args.store,
    }
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    return RunConfig.load(path, overrides)


def _print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(format_table(rows))


# --------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    import threading

    import attrs

    from adapters.compute import init_distributed
    from locdiff.core.bundle import ModelBundle
    from locdiff.container import build_container, load_model
    from locdiff.services.data import prepare
    from locdiff.services.evaluation import evaluate
    from locdiff.services.training import check_trainable, train

    class PeerFailed(Exception):
        """Another rank failed (and reports it); this one stops quietly."""

    resume, ckpt = None, None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "run.json").is_file():
            raise ValueError(f"{run_dir}: not a run folder (no run.json); --resume takes the folder a run was created in")
        bundle_loaded, ckpt = load_model(run_dir, torch.device("cpu"))
        config = bundle_loaded.config
        if args.steps:
            config = RunConfig.from_dict(apply_overrides(config.to_dict(), {"train.steps": args.steps}))
    else:
        config = _config_from_args(args)
    # torchrun: each process drives the GPU of its LOCAL_RANK ("auto" already does)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device_config = attrs.evolve(config, device=f"cuda:{local_rank}") if launched and config.device == "cuda" else config
    container = build_container(device_config)
    compute, checkpoints = container.compute(), container.checkpoints()
    if compute.device.type == "cuda":
        torch.cuda.set_device(compute.device)
    rank, world = init_distributed(compute.device) or (0, 1)
    lead = rank == 0
    say = print if lead else (lambda *a, **k: None)

    def together(fn, on_this_rank: bool = True):
        """Run ``fn`` (here, if ``on_this_rank``); if it fails on any rank, every rank stops."""
        out, err = None, None
        if on_this_rank:
            try:
                out = fn()
            except Exception as exc:  # re-raised below, after the other ranks have heard of it
                err = exc
        if world > 1:
            import torch.distributed as dist

            flag = torch.tensor([float(err is not None)], device=compute.device if compute.device.type == "cuda" else "cpu")
            dist.all_reduce(flag)
            if err is None and float(flag) > 0:
                raise PeerFailed
        if err is not None:
            raise err
        return out

    try:
        store = together(container.store, lead)
        embedder, source = container.embedder(), container.dataset()
        dev_text = compute.describe() + (f", {world} processes" if world > 1 else "")
        say(f"LocDiff train: L={config.model.degree}, data={config.data.source}, embedder={config.data.embedder}, device={dev_text}")
        t0 = time.perf_counter()
        # rank 0 embeds first (filling the embedding cache), then the others read it
        data = together(lambda: prepare(source, embedder, config.data), lead)
        data = together(lambda: prepare(source, embedder, config.data), not lead) or data
        if data.failures:
            say(f"skipped {len(data.failures)} item(s) that could not be embedded, e.g. {data.failures[0].item}: {data.failures[0].reason}")
        sizes = {k: int(v.numel()) for k, v in data.splits.items()}
        say(f"data: {data.name}, {len(data.ids)} samples {sizes}, embedder {data.embedder_id} ({time.perf_counter() - t0:.0f} s)")

        def make_bundle():
            if args.resume:
                tensors, meta = checkpoints.load(ckpt)
                loaded = ModelBundle.from_checkpoint(tensors, meta, compute.device, where=str(ckpt), expect_embedder=data.embedder_id)
                loaded = attrs.evolve(loaded, config=config)  # e.g. a larger train.steps given with --resume
                check_trainable(loaded, data, world=world)
                return loaded, (tensors, meta)
            torch.manual_seed(config.train.seed)  # the initial weights depend on the seed alone
            created = ModelBundle.create(config, data.cond_dim, data.embedder_id, compute.device)
            check_trainable(created, data, world=world)  # before a run is recorded: bad input leaves nothing behind
            return created, None

        bundle, resume = together(make_bundle)

        def open_run():
            if args.resume:
                meta_run = json.loads((run_dir / "run.json").read_text())
                resumed = int(meta_run["run_id"])
                if store.get_run(resumed).status != "running":
                    store.reopen_run(resumed)  # interrupted or failed before: running again
                return resumed, run_dir
            run_id = store.start_run(config.name, config.to_dict(), _code_version())
            new_dir = Path(config.workdir) / f"run-{run_id:04d}"
            _write_json_atomic(new_dir / "config.json", config.to_dict())
            _write_json_atomic(new_dir / "run.json", {"run_id": run_id, "store": config.store_url})
            return run_id, new_dir

        run_id, run_dir = together(open_run, lead) or (None, None)
        if world > 1:
            import torch.distributed as dist

            shared = [run_id, None if run_dir is None else str(run_dir)]
            dist.broadcast_object_list(shared, src=0)
            run_id, run_dir = shared[0], Path(shared[1])
        if args.resume:
            say(f"resuming run {run_id} from {ckpt} (step {resume[1]['step']})")
        else:
            say(f"run {run_id}: {run_dir}")

        # Ctrl-C / SIGTERM: finish the current step, save a checkpoint of it, stop (twice: stop at once)
        requests: list[int] = []

        def request_stop(signum, frame):
            if requests:
                raise KeyboardInterrupt
            requests.append(signum)
            if lead:
                print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, request_stop) for s in handled}
        try:
            result = train(
                bundle, data, compute=compute, checkpoints=checkpoints, checkpoint_dir=run_dir / "checkpoints",
                store=store, run_id=run_id if lead else None, resume=resume, progress=_progress if lead else None,
                should_stop=lambda: bool(requests), rank=rank, world=world,
            )
        except BaseException as exc:
            if lead:
                store.finish_run(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

        def finish(status: str) -> None:
            store.finish_run(run_id, status)

        if not lead:
            return 130 if result.interrupted else 0
        if result.interrupted:
            finish("interrupted")
            print(f"\ninterrupted at step {result.step}; checkpoint {result.checkpoint}\nresume with: python -m locdiff.cli train --resume {run_dir}")
            return 130
        print(f"trained {result.step} steps in {result.seconds:.0f} s; final loss {result.final_loss:.4f}; checkpoint {result.checkpoint}")
        if not args.no_eval:
            rows = {}
            try:
                for split in ("test", "holdout"):
                    if data.splits.get(split, torch.empty(0)).numel() == 0:
                        continue
                    ev = evaluate(bundle, data, split, config.eval, device=compute.device, store=store, run_id=run_id, progress=_progress)
                    rows[f"LocDiffusion ({split}, {config.eval.reducer})"] = ev.metrics
            except BaseException as exc:  # the weights are saved; record why the run did not finish
                finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
                raise
            rows["random guess"] = random_guess_accuracy() | {"median_km": float("nan"), "geoscore": float("nan")}
            _print_table(f"Held-out accuracy (%), run {run_id}, {config.eval.samples} samples, {config.eval.sampler} {config.eval.sampler_steps} steps:", rows)
        finish("finished")
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
        return 0
    except PeerFailed:
        return 2
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# --------------------------------------------------------------------------- eval
def _compare_argv(args) -> list[str]:
    """``eval RUN --compare …`` as the equivalent ``compare RUN …`` command line (one code path for the table)."""
    if args.split != "test":
        raise ValueError(f"--compare evaluates the test split (or --data); got --split {args.split}")
    samplers = _sampler_list(args)
    if len(samplers) != 1 or samplers[0][0] != "ddim":
        raise ValueError(f"--compare samples with DDIM like the studies; give --sampler ddim:STEPS, not {args.sampler!r}")
    argv = ["compare", args.run, "--samples", str(args.samples), "--sampler-steps", str(samplers[0][1]),
            "--projection", args.projection, "--seed", str(args.seed)]
    if args.max_items is not None:
        argv += ["--eval-items", str(args.max_items)]
    if args.data:
        argv += ["--eval-data", args.data]
    return argv


def cmd_eval(args) -> int:
    if args.compare:  # the baselines table of `compare` (kNN, grid classification, regression) for this run
        return main(_compare_argv(args))
    from locdiff.config import EvalConfig
    from locdiff.container import build_container, load_model
    from locdiff.services.data import prepare
    from locdiff.services.evaluation import evaluate

    bundle, ckpt = load_model(Path(args.run))
    config = bundle.config
    if args.data:
        config = RunConfig.from_dict(apply_overrides(config.to_dict(), {"data.source": args.data}))
    container = build_container(config)
    compute, store = container.compute(), container.store()
    bundle.net.to(compute.device)
    data = prepare(container.dataset(), container.embedder(), config.data)
    if data.embedder_id != bundle.embedder_id:
        raise ValueError(f"{ckpt}: trained on {bundle.embedder_id!r} embeddings, data embedded with {data.embedder_id!r}")
    run_id = _run_id_of(Path(args.run))
    rows = {}
    for sampler, steps in _sampler_list(args):
        settings = EvalConfig(samples=args.samples, sampler=sampler, sampler_steps=steps, reducer=args.reducer,
                              projection=args.projection, max_items=args.max_items)
        ev = evaluate(bundle, data, args.split, settings, device=compute.device, seed=args.seed, store=store, run_id=run_id, progress=_progress)
        if args.hybrid:
            rows[f"LocDiff-H {sampler}-{steps} (+GeoCLIP {args.hybrid_radius:g} km)"] = _hybrid_metrics(
                container, data, args, ev, store, run_id
            )
        if args.all_reducers:
            rows.update({f"{sampler}-{steps} {r}": m for r, m in ev.by_reducer.items()})
        else:
            rows[f"LocDiffusion {sampler}-{steps} ({args.reducer})"] = ev.metrics
    rows["random guess"] = random_guess_accuracy() | {"median_km": float("nan"), "geoscore": float("nan")}
    _print_table(f"{data.name} / {args.split} ({int(data.splits[args.split].numel() if args.max_items is None else min(args.max_items, data.splits[args.split].numel()))} items), {args.samples} samples:", rows)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _hybrid_metrics(container, data, args, ev, store, run_id) -> dict[str, float]:
    from locdiff.core.metrics import summarize
    from locdiff.services.hybrid import refine_with_retrieval

    index = data.splits[args.split][: ev.truth.shape[0]]
    images = [Path(data.items[i]) for i in index.tolist()]
    if not all(p.suffix for p in images):
        raise ValueError("--hybrid needs an image dataset (GeoCLIP retrieves with image features)")
    refined = refine_with_retrieval(container.retriever(), images, ev.samples, ev.predictions, radius_km=args.hybrid_radius)
    metrics = summarize(refined, ev.truth)
    if store is not None and run_id is not None:
        store.add_evaluation(run_id, f"{data.name}:{args.split}:hybrid{args.hybrid_radius:g}km", metrics)
    return metrics


def _sampler_list(args) -> list[tuple[str, int]]:
    out = []
    for spec in args.sampler.split(","):
        name, _, steps = spec.partition(":")
        out.append((name, int(steps) if steps else (100 if name == "ddpm" else 20)))
    return out


def _run_id_of(path: Path) -> int | None:
    for p in (path, *path.parents):
        if (p / "run.json").exists():
            return int(json.loads((p / "run.json").read_text())["run_id"])
    return None


# --------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from locdiff.container import build_prediction_service
    from locdiff.core.decoding import credible_area_km2
    from locdiff.core.sampling import PredictSettings
    from locdiff.ports import ItemFailure

    service = build_prediction_service(Path(args.run), device=args.device, hybrid=args.hybrid, workdir=args.workdir)
    settings = PredictSettings(samples=args.samples, sampler=args.sampler, steps=args.sampler_steps, reducer=args.reducer,
                               projection=args.projection, top_modes=args.top, hybrid=args.hybrid, seed=args.seed, grid_lat=90, grid_lon=180)
    results = [service.predict_text(t, settings) for t in args.text] if args.text else []
    if args.images:
        results += service.predict_images([Path(p) for p in args.images], settings)
    if not results:
        raise ValueError("nothing to predict: give image paths or --text QUERY")
    payload = []
    for r in results:
        if isinstance(r, ItemFailure):
            payload.append({"item": r.item, "error": r.reason})
            continue
        payload.append({
            "item": r.item,
            "point": {"lat": r.point[0], "lon": r.point[1], "reducer": r.reducer},
            "modes": [{"lat": m.lat, "lon": m.lon, "probability": m.mass, "radius_km": m.radius_km} for m in r.modes],
            "hybrid": None if r.refined is None else {"lat": r.refined[0], "lon": r.refined[1]},
            "credible_regions": [{"level": a, "area_km2": credible_area_km2(r.grid, t)} for a, t in sorted(r.credible.items())]
            if r.grid is not None else [],
            "calibration": r.calibration or "raw",
        })
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    for p in payload:
        if "error" in p:
            print(f"{p['item']}: ERROR {p['error']}")
            continue
        print(f"{p['item']}: point {p['point']['lat']:.3f}, {p['point']['lon']:.3f}")
        for i, m in enumerate(p["modes"], 1):
            print(f"  {i}. {m['lat']:8.3f} {m['lon']:9.3f}  p={m['probability']:.3f} (within {m['radius_km']:.0f} km)")
        if p["credible_regions"]:
            areas = ", ".join(f"{100 * c['level']:.0f} % {c['area_km2'] / 1e6:.2f}" for c in p["credible_regions"])
            print(f"  credible regions (Mkm²): {areas}  [{p['calibration']}]")
    return 0 if all("error" not in p for p in payload) else 1


# --------------------------------------------------------------------------- embed / runs / dataset / gui
def cmd_embed(args) -> int:
    from locdiff.container import build_container
    from locdiff.services.data import prepare

    config = _config_from_args(args)
    container = build_container(config)
    data = prepare(container.dataset(), container.embedder(), config.data)
    print(f"{data.name}: {len(data.ids)} embeddings cached ({data.embedder_id}); {len(data.failures)} failed")
    for f in data.failures[:20]:
        print(f"  {f.item}: {f.reason}")
    return 0


def cmd_runs(args) -> int:
    from locdiff.container import build_container

    store = build_container(_config_from_args(args)).store()
    runs = store.list_runs()
    if not runs:
        print("no runs yet")
        return 0
    for r in runs:
        keys = [k for k in sorted(r.metrics) if k.endswith(("acc@750km", "median_km", "loss_ema"))]
        shown = ", ".join(f"{k}={r.metrics[k]:.3g}" for k in keys[:6])
        print(f"run {r.run_id:4d}  {r.status:11s} {r.created_at:%Y-%m-%d %H:%M}  {r.code_version:14s} L={r.config['model']['degree']}  {shown}")
    return 0


def cmd_dataset(args) -> int:
    from adapters.photos import photos_to_csv

    scan = photos_to_csv(Path(args.directory), Path(args.out))
    print(f"wrote {scan.rows} photo(s) with GPS to {scan.csv_path}")
    for file, reason in scan.skipped:
        print(f"  skipped {file}: {reason}")
    return 0


def cmd_gui(args) -> int:
    from functools import partial

    from gui.app import run
    from locdiff.container import build_container, build_prediction_service, gps_reader

    config = _config_from_args(args)
    store = build_container(config).store()
    factory = partial(build_prediction_service, device=config.device, workdir=config.workdir)
    from gui.app import parse_size

    return run(factory, store, gps_reader(), Path(args.run) if args.run else None, inputs=[Path(p) for p in args.images],
               text=args.text, view=args.view, screenshot=Path(args.screenshot) if args.screenshot else None,
               size=parse_size(args.size))


# --------------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: locdiff/default.toml)")
    p.add_argument("--degree", type=int, help="SHDD degree L")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--loss", choices=["kl", "l1", "l2", "cosine"])
    p.add_argument("--places", type=int, help="number of places (most populous first)")
    p.add_argument("--all-places", action="store_true", help="every place the package ships")
    p.add_argument("--data", help="a CSV (lat,lon,image|text) instead of the places")
    p.add_argument("--embedder", choices=["minilm", "clip"])
    p.add_argument("--clip-pretrained", help="open_clip pretrained tag (online) or a local checkpoint path")
    p.add_argument("--holdout-groups", help="comma-separated groups (country codes) held out entirely")
    p.add_argument("--eval-items", type=int, help="evaluate on at most this many items")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--workdir", help="where runs, the SQLite store and caches live (default: runs)")
    p.add_argument("--store", help="SQLAlchemy URL of the experiment store")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m locdiff.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (and evaluate) LocDiffusion; defaults to the embedded places")
    _common(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--no-eval", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run or checkpoint; stores results")
    p.add_argument("run", help="run folder or checkpoint folder")
    p.add_argument("--split", default="test", choices=["test", "val", "holdout", "train"])
    p.add_argument("--data", help="evaluate on another CSV embedded with the model's embedder")
    p.add_argument("--sampler", default="ddim:20", help="comma-separated samplers, e.g. ddpm:100,ddim:20")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--reducer", default="mode", choices=["centre", "medoid", "mode"])
    p.add_argument("--projection", default=DEFAULT_PROJECTION, choices=list(PROJECTIONS),
                   help="what happens to each step's x0 prediction while sampling (see README)")
    p.add_argument("--all-reducers", action="store_true", help="one row per reducer")
    p.add_argument("--compare", action="store_true",
                   help="one table: this run vs kNN (k=1, weighted k), grid classification and regression (as `compare RUN`)")
    p.add_argument("--hybrid", action="store_true", help="also evaluate LocDiff-H (GeoCLIP retrieval near the samples)")
    p.add_argument("--hybrid-radius", type=float, default=200.0, help="retrieval radius around the samples (km)")
    p.add_argument("--max-items", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="locations with probabilities for images or --text queries")
    p.add_argument("run", help="run folder or checkpoint folder")
    p.add_argument("images", nargs="*")
    p.add_argument("--text", action="append", help="a text / place query (repeatable)")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim"])
    p.add_argument("--sampler-steps", type=int, default=20)
    p.add_argument("--reducer", default="mode", choices=["centre", "medoid", "mode"])
    p.add_argument("--projection", default=DEFAULT_PROJECTION, choices=list(PROJECTIONS),
                   help="what happens to each step's x0 prediction while sampling (see README)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--hybrid", action="store_true", help="refine with GeoCLIP retrieval within 200 km of the samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("embed", help="precompute and cache the embeddings of a dataset")
    _common(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("runs", help="list stored runs and their latest metrics")
    _common(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("dataset", help="dataset tools")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    q = dsub.add_parser("from-photos", help="write image,lat,lon CSV from the EXIF GPS of a photo folder")
    q.add_argument("directory")
    q.add_argument("--out", default=None, help="CSV path (default: DIRECTORY/locations.csv)")
    q.set_defaults(func=cmd_dataset)

    from locdiff.cli import studies as cli_studies

    cli_studies.register(sub)

    p = sub.add_parser("gui", help="open the desktop app")
    _common(p)
    p.add_argument("--run", "--checkpoint", dest="run", help="run or checkpoint folder to load at start")
    p.add_argument("--text", default=None, help="a place query to answer at start")
    p.add_argument("--view", choices=("globe", "flat"), default=None)
    p.add_argument("--screenshot", default=None, help="answer the photos / --text, draw, save this PNG and exit")
    p.add_argument("--size", default=None, help="window size WxH, e.g. 1600x1000")
    p.add_argument("images", nargs="*")
    p.set_defaults(func=cmd_gui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "dataset" and args.out is None:
        args.out = str(Path(args.directory) / "locations.csv")
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
