"""Batch prediction throughput (issue #15): items/s batched vs one at a time in the same run, and peak memory.

* texts: ``--texts`` queries through :class:`BatchPredictor` in chunks of ``--chunk`` (embedding, sampling, decoding and
  summaries batched; ``--workers`` threads summarise while the next chunk is sampled) vs the same pipeline one input per call (``chunk=1``) and vs the single-input
  ``PredictionService.predict_text`` loop that ``predict --text`` runs (the app's path; the same 90×180 map), on ``--one-at-a-time`` of the
  queries, with ``--threads`` torch threads and again with one per core (its best on this CPU; not bit-identical). Each mode starts from an empty embedding cache (embedding cost included; the model loaded before timing).
  Identical answers: the batched rows of those queries, recomputed from the one-at-a-time run's cached embeddings,
  are compared with the one-at-a-time rows field by field (bit for bit).
* images: ``--images`` generated 256×256 PNGs through a random model over the tiny local CLIP (tests/support: no
  download), batched vs one at a time.
* memory: peak RSS of a child process predicting ``--memory`` text counts from a CSV (lazy reading, chunked writing),
  with ``--memory-samples`` samples and ``--memory-steps`` steps (the memory does not depend on them; the time does).

    python3 benchmarks/bench_predict.py --run runs/run-0001 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._timing import status  # noqa: E402
from locdiff.core.diffusion import DEFAULT_PROJECTION, DEFAULT_SAMPLER, DEFAULT_SAMPLER_STEPS  # noqa: E402

WORDS = ("Springfield", "Riverside", "Fairview", "Georgetown", "Salem", "Kyoto", "Lagos", "Cusco", "Tromsø", "Perth",
         "Valparaíso", "Hanoi", "Tbilisi", "Aarhus", "Nagpur", "Tucson", "Bergen", "Mendoza", "Zanzibar", "Lviv")
REGIONS = ("Illinois, United States", "Ontario, Canada", "Bavaria, Germany", "Kansai, Japan", "Lagos, Nigeria", "Cusco, Peru",
           "Troms, Norway", "Western Australia, Australia", "Valparaíso, Chile", "Hanoi, Vietnam")


def queries(n: int, offset: int = 0) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]} {i // len(WORDS) + 1}, {REGIONS[(i * 7) % len(REGIONS)]}" for i in range(offset, offset + n)]


def settings(sampler: str, steps: int, projection: str, samples: int = 16):
    """What every mode predicts with (seeded: the answers are comparable across modes)."""
    from locdiff.core.sampling import PredictSettings, SamplingSettings

    return PredictSettings(SamplingSettings(samples=samples, sampler=sampler, steps=steps, projection=projection, seed=0),
                           top_modes=5, grid_lat=90, grid_lon=180)


class Rows:
    """A PredictionSink in memory (the benchmark times the model, not the disk)."""

    def __init__(self):
        self.rows = []

    def done(self):
        return {}

    def write(self, rows):
        self.rows += rows

    def close(self):
        pass


def predictor(run: Path, workdir: Path, chunk: int, workers: int):
    from locdiff.container import build_batch_predictor

    return build_batch_predictor(run, device="cpu", workdir=str(workdir), places=False, chunk=chunk, workers=workers)


def timed_run(pred, items, s) -> tuple[float, list[dict]]:
    sink = Rows()
    start = time.perf_counter()
    pred.run(items, sink, s)
    return time.perf_counter() - start, sink.rows


def text_inputs(texts):
    from locdiff.ports import BatchInput

    return [BatchInput(i, "text", t) for i, t in enumerate(texts)]


def bench_texts(run: Path, tmp: Path, n: int, n_one: int, chunk: int, workers: int, s) -> dict:
    texts = queries(n)
    out = {}
    batched = predictor(run, tmp / "batched", chunk, workers)
    batched.predict(text_inputs(["warm-up query"]), s)  # the embedder's model loads outside the timing
    out["batched_s"], rows_b = timed_run(batched, text_inputs(texts), s)
    single = predictor(run, tmp / "single", 1, workers)
    single.predict(text_inputs(["warm-up query"]), s)
    out["single_s"], rows_1 = timed_run(single, text_inputs(texts[:n_one]), s)
    from locdiff.container import build_prediction_service

    legacy = build_prediction_service(run, device="cpu", workdir=str(tmp / "legacy"))
    legacy.predict_text("warm-up query", s)
    start = time.perf_counter()
    answers = [legacy.predict_text(t, s) for t in texts[:n_one]]
    out["legacy_s"] = time.perf_counter() - start
    # the same loop given both cores (torch's threads inside each call): the one-at-a-time path's best on this CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    both = build_prediction_service(run, device="cpu", workdir=str(tmp / "legacy-all-cores"))
    both.predict_text("warm-up query", s)
    start = time.perf_counter()
    for t in texts[:n_one]:
        both.predict_text(t, s)
    out["legacy_all_cores_s"] = time.perf_counter() - start
    torch.set_num_threads(threads)
    # the same texts batched on that loop's cached embeddings: the app's answers must equal the batch's, bit for bit
    again = predictor(run, tmp / "legacy", chunk, workers).predict(text_inputs(texts[:n_one]), s)
    out["identical_predict_text"] = sum(
        a.point == b.point and a.modes == b.modes and bool((a.samples == b.samples).all()) and bool((a.grid.mass == b.grid.mass).all())
        for a, b in zip(answers, again))
    # identical answers: the batched pipeline on the one-at-a-time run's cached embeddings, in chunks of `chunk`
    rechunked = predictor(run, tmp / "single", chunk, workers)
    _, rows_same = timed_run(rechunked, text_inputs(texts[:n_one]), s)
    out["identical_rows"] = sum(a == b for a, b in zip(rows_same, rows_1))
    out["max_point_diff_deg_fresh_embeddings"] = max(
        max(abs(a["lat"] - b["lat"]), abs(a["lon"] - b["lon"])) for a, b in zip(rows_b[:n_one], rows_1))
    out.update(n=n, n_one=n_one)
    return out


def bench_images(tmp: Path, n: int, n_one: int, chunk: int, workers: int, s) -> dict:
    from locdiff.ports import BatchInput
    from tests.support.tiny_run import make_photos, make_tiny_run

    run = make_tiny_run(tmp / "clip")
    paths = make_photos(tmp / "photos", n, size=256)
    items = [BatchInput(i, "image", str(p)) for i, p in enumerate(paths)]
    batched = predictor(run, tmp / "img-batched", chunk, workers)
    batched.predict(text_inputs(["warm-up"]), s)
    t_b, rows_b = timed_run(batched, items, s)
    single = predictor(run, tmp / "img-single", 1, workers)
    single.predict(text_inputs(["warm-up"]), s)
    t_1, rows_1 = timed_run(single, items[:n_one], s)
    return {"n": n, "n_one": n_one, "batched_s": t_b, "single_s": t_1, "errors": sum(r["error"] is not None for r in rows_b)}


def memory_child(run: Path, n: int, chunk: int, workers: int, s) -> None:
    from locdiff.container import batch_inputs, prediction_sink

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "q.csv"
        src.write_text("text\n" + "".join(f'"{t}"\n' for t in queries(n, offset=10_000)))
        pred = predictor(run, Path(d), chunk, workers)
        sink = prediction_sink(Path(d) / "out.jsonl")
        start = time.perf_counter()
        report = pred.run(batch_inputs(str(src)), sink, s)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    print(json.dumps({"n": n, "written": report.written, "seconds": seconds, "peak_rss_mib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/run-0001", help="a text (MiniLM) run folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--texts", type=int, default=2000)
    p.add_argument("--one-at-a-time", type=int, default=200, help="how many of the queries the one-at-a-time modes time")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="summary threads of the batched path (default %(default)s)")
    p.add_argument("--memory", default="1000,10000", help="text counts for the peak-memory children ('' to skip)")
    p.add_argument("--memory-samples", type=int, default=4)
    p.add_argument("--memory-steps", type=int, default=5)
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help="the diffusion sampler timed (default %(default)s)")
    p.add_argument("--steps", type=int, default=DEFAULT_SAMPLER_STEPS, help="its network calls (default %(default)s)")
    p.add_argument("--projection", default=DEFAULT_PROJECTION, help="x0 projection between steps (default %(default)s)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    s = settings(args.sampler, args.steps, args.projection)
    torch.set_num_threads(args.threads)
    os.environ.pop("LOCDIFF_CACHE", None)  # each mode embeds from scratch in its own cache
    run = Path(args.run)
    if args.child:
        memory_child(run, args.child, args.chunk, args.workers, settings(args.sampler, args.memory_steps, args.projection, args.memory_samples))
        return
    print(f"bench_predict: {status()} chunk={args.chunk} workers={args.workers} K=16 {args.sampler}-{args.steps} projection={args.projection} grid 90x180", flush=True)
    with tempfile.TemporaryDirectory() as d:
        if args.texts:
            t = bench_texts(run, Path(d), args.texts, args.one_at_a_time, args.chunk, args.workers, s)
            b, one, leg = t["n"] / t["batched_s"], t["n_one"] / t["single_s"], t["n_one"] / t["legacy_s"]
            leg_all = t["n_one"] / t["legacy_all_cores_s"]
            print(f"texts  batched     {t['n']:5d} items {t['batched_s']:7.1f} s  {b:6.2f} items/s")
            print(f"texts  one-at-a-time {t['n_one']:3d} items {t['single_s']:7.1f} s  {one:6.2f} items/s  (same pipeline, chunk 1)")
            print(f"texts  predict_text  {t['n_one']:3d} items {t['legacy_s']:7.1f} s  {leg:6.2f} items/s  (single-input service)")
            print(f"texts  predict_text  {t['n_one']:3d} items {t['legacy_all_cores_s']:7.1f} s  {leg_all:6.2f} items/s  "
                  f"(single-input service, {os.cpu_count()} torch threads)")
            print(f"texts  ratio batched / one-at-a-time = {b / one:.2f}x; batched / predict_text = {b / leg:.2f}x; "
                  f"batched / the faster predict_text = {b / max(leg, leg_all):.2f}x")
            print(f"texts  identical rows (batched on the same embeddings vs one at a time): {t['identical_rows']} / {t['n_one']}; "
                  f"max point difference with freshly batched embeddings {t['max_point_diff_deg_fresh_embeddings']:.2e} deg; "
                  f"predict_text answers equal to the batch's (samples, point, modes, map): {t['identical_predict_text']} / {t['n_one']}",
                  flush=True)
        if args.images:
            im = bench_images(Path(d), args.images, min(args.images, args.one_at_a_time), args.chunk, args.workers, s)
            b, one = im["n"] / im["batched_s"], im["n_one"] / im["single_s"]
            print(f"images batched {im['n']} {b:.2f} items/s; one-at-a-time {im['n_one']} {one:.2f} items/s; ratio {b / one:.2f}x "
                  f"(tiny CLIP, 256x256 PNGs, {im['errors']} errors)", flush=True)
    for n in [int(x) for x in args.memory.split(",") if x.strip()]:
        cmd = [sys.executable, __file__, "--run", str(run), "--threads", str(args.threads), "--chunk", str(args.chunk), "--child", str(n),
               "--workers", str(args.workers),
               "--sampler", args.sampler, "--projection", args.projection,
               "--memory-samples", str(args.memory_samples), "--memory-steps", str(args.memory_steps)]
        res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        print(f"memory {res['n']:6d} texts: peak RSS {res['peak_rss_mib']:.0f} MiB, {res['seconds']:.0f} s "
              f"(K={args.memory_samples}, {args.memory_steps} steps)", flush=True)


if __name__ == "__main__":
    main()
