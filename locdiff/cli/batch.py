"""``predict RUN FOLDER|FILE.csv|FILE.jsonl|- --out OUT.csv|.jsonl|.geojson``: batch prediction (issue #15).

One row per input, written in chunks (resumable: a rerun with the same ``--out`` skips the inputs already written);
a progress bar with items/s on stderr; rows also stored as predictions in the ``--workdir`` experiment store.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from locdiff.cli import flags

TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def add_flags(p) -> None:
    p.add_argument("--out", help="batch mode: write one row per input to this .csv, .jsonl or .geojson file (resumable)")
    from locdiff.container import prediction_formats

    p.add_argument("--format", dest="out_format", choices=prediction_formats(), help="output format (default: from --out's suffix)")
    p.add_argument("--save-samples", action="store_true", help="batch mode: also write each input's K decoded samples")
    p.add_argument("--chunk", type=flags.count, default=64, help="batch mode: inputs per model call (default 64)")
    p.add_argument("--no-places", action="store_true", help="batch mode: no place names (skips loading the geocoder)")
    p.add_argument("--workers", type=int, default=2, help="batch mode: processes decoding photos (CLIP models; 0: none)")
    p.add_argument("--summary-threads", type=flags.count, default=2,
                   help="batch mode: threads summarising chunks (maps, modes) while the next chunk is sampled (default 2)")


def wanted(args) -> bool:
    """Batch mode: ``--out`` given, or the input is a folder, a CSV/JSONL file or ``-`` (stdin)."""
    if args.out is not None:
        return True
    return any(s == "-" or Path(s).is_dir() or Path(s).suffix.lower() in TABLE_SUFFIXES for s in args.images)


def cmd_batch(args) -> int:
    from locdiff.container import batch_inputs, build_batch_predictor, history_store, prediction_sink
    from locdiff.core.sampling import PredictSettings, SamplingSettings

    if args.text or len(args.images) != 1:
        raise ValueError("batch predict takes one input: a folder, a .csv/.jsonl file or '-' (stdin), and no --text")
    if args.out is None:
        raise ValueError("batch predict needs --out FILE (.csv, .jsonl or .geojson)")
    if args.hybrid:
        raise ValueError("--hybrid is not available in batch mode; predict single photos with --hybrid")
    inputs = batch_inputs(args.images[0], sys.stdin)
    predictor = build_batch_predictor(Path(args.run), device=args.device, workdir=args.workdir, places=not args.no_places,
                                      chunk=args.chunk, image_workers=max(0, args.workers), workers=args.summary_threads)
    flags.run_sampling(args, predictor.service.bundle.config.eval)
    sampling = SamplingSettings(sampler=args.sampler, steps=args.sampler_steps, projection=args.projection, samples=args.samples,
                                reducer=args.reducer, seed=args.seed)
    settings = PredictSettings(sampling, top_modes=args.top, grid_lat=90, grid_lon=180)
    sink = prediction_sink(Path(args.out), args.out_format, top=args.top, samples=args.save_samples)
    start = time.perf_counter()
    report = predictor.run(inputs, sink, settings, total=inputs.count(), save_samples=args.save_samples,
                           progress=functools.partial(flags.progress, unit="item"), store=history_store(args.workdir),
                           source=predictor.service.source)
    seconds = time.perf_counter() - start
    rate = report.written / seconds if seconds > 0 else 0.0
    print(f"wrote {report.written} row(s) to {args.out} ({report.failed} with an error; {report.skipped} already there) "
          f"in {seconds:.1f} s, {rate:.1f} items/s")
    return 0
