"""CLI: the name-only benchmark (``python -m locdiff.cli names RUN``).

Bare names ("Springfield", "Córdoba", ...) from the packaged list ``locdiff/data/names.csv``; the
truth of each is every GeoNames place of the model's default places that carries it (uniform and
population-weighted). LocDiffusion (the run), kNN as a vMF mixture and the grid classifier (both
fitted on the run's training split, selected on its validation split) are scored by total
variation over merged sites + elsewhere, site recall, NLL and HPD coverage
(:mod:`locdiff.services.name_benchmark`). Writes ``<workdir>/studies/names.json`` and ``names.md``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from locdiff.config import RunConfig, apply_overrides
from locdiff.core.multimodal import TRUTHS


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _write(path: Path, text: str) -> None:
    """Atomic write: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def cmd_names(args) -> int:
    from locdiff.container import build_container, load_model, name_benchmark
    from locdiff.services.data import prepare
    from locdiff.services.name_benchmark import NameBenchmarkSettings, format_per_name, format_summary, run_name_benchmark

    if args.from_results:  # re-render the tables of a finished run
        from locdiff.services.name_benchmark import NameBenchmarkResult

        result = NameBenchmarkResult.from_dict(json.loads(Path(args.from_results).read_text(encoding="utf-8")))
        print(format_summary(result))
        if args.per_name:
            print("\n\n".join(f"### per name, {truth} truth\n\n{format_per_name(result, truth)}" for truth in TRUTHS))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.run:
        raise ValueError("names: give a run folder (or --from-results names.json)")
    bundle, ckpt = load_model(Path(args.run), torch.device("cpu"))
    data = bundle.config.to_dict()
    data["store_url"] = None
    config = RunConfig.from_dict(apply_overrides(data, {"workdir": args.workdir, "device": args.device}))
    container = build_container(config)
    device = container.compute().device
    saved = bundle.config.eval  # the run is sampled as it was selected (its sampler, steps and x0 projection)
    sizes = {"sampler_steps": saved.sampler_steps} | ({"baseline_steps": 60, "baseline_cells": (16,), "sampler_steps": 5, "n_lat": 45,
                                                      "bootstrap": 200} if args.quick else {})
    settings = NameBenchmarkSettings(samples=args.samples, seed=args.seed, max_names=args.max_names, sampler=saved.sampler,
                                     projection=saved.projection, **sizes)
    source = name_benchmark(Path(args.names) if args.names else None)
    queries = source.load()
    embedder = container.embedder()
    _log(f"model {ckpt} (L={bundle.degree}, {bundle.config.train.steps} steps); {len(queries)} names from {source.name}")
    prepared = prepare(container.dataset(), embedder, config.data)
    emb = embedder.embed_texts([q.query for q in queries])
    if len(emb.index) != len(queries):
        bad = emb.failures[0] if emb.failures else None
        raise ValueError(f"could not embed every name ({len(emb.index)}/{len(queries)})" + (f": {bad.item}: {bad.reason}" if bad else ""))
    t0 = time.perf_counter()
    result = run_name_benchmark(bundle, queries, emb.vectors, prepared, settings, device=device,
                                model=f"{ckpt} (L={bundle.degree}, {bundle.config.train.steps} steps)", log=_log)
    summary = format_summary(result)
    per_name = "\n\n".join(f"### per name, {truth} truth\n\n{format_per_name(result, truth)}" for truth in TRUTHS)
    out = Path(args.workdir) / "studies"
    _write(out / "names.json", json.dumps(result.to_dict(), indent=1, default=float))
    _write(out / "names.md", f"# Name-only benchmark\n\n{summary}\n\n{per_name}\n")
    print(f"\n## name-only benchmark ({time.perf_counter() - t0:.0f} s)\n\n{summary}")
    if args.per_name:
        print(per_name)
    print(f"\nresults: {out / 'names.json'}\nreport:  {out / 'names.md'}")
    return 0


def register(subparsers) -> None:
    """Add ``names`` to the ``python -m locdiff.cli`` sub-commands."""
    p = subparsers.add_parser("names", help="name-only benchmark: bare place names vs every place carrying them")
    p.add_argument("run", nargs="?", help="run folder or checkpoint folder of the LocDiffusion model")
    p.add_argument("--from-results", metavar="JSON", help="print the tables of a finished run's names.json (no model needed)")
    p.add_argument("--names", help="a name list CSV (query,kind[,places]; default: the packaged locdiff/data/names.csv)")
    p.add_argument("--samples", type=int, default=64, help="K diffusion samples per name (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-names", type=int, help="only the first N names of the list")
    p.add_argument("--per-name", action="store_true", help="also print the per-name tables")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:1 | mps (default cpu)")
    p.add_argument("--workdir", default="runs", help="where results (studies/names.*) and caches go (default: runs)")
    p.set_defaults(func=cmd_names)
