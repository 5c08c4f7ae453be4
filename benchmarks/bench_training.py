"""Benchmark: training throughput and peak memory of LocDiffusion, and the anchor-chunked SHDD KL.

1. Training steps/s and peak memory at L = 15, 31, 47 (batch 512, 2048 fresh anchors, the default
   CS-UNet widths 512/256/128, 384-d conditions like MiniLM), through the real training use case.
2. Peak memory of one KL step (forward + backward, batch 512) against the anchor count, for the
   chunked ``locdiff.core.shdd.kl`` and for the named baseline "unchunked": ``e @ real_sh(anchors).T``
   with the whole ``[N, (L+1)^2]`` harmonics block in memory. The ``[B, N]`` logits must grow with
   N; the harmonics of the chunked KL must stay one block of ``DEFAULT_CHUNK`` anchors.

Every configuration runs in a fresh subprocess. Peak memory is ``torch.cuda.max_memory_allocated``
on CUDA; on CPU it is the peak resident set size above the pre-measurement baseline (the kernel's
``VmHWM`` after resetting it through ``/proc/self/clear_refs``, with glibc told to mmap large
blocks so that freed tensors leave the RSS), which sees torch's allocations, unlike tracemalloc.

    python3 benchmarks/bench_training.py [--device auto|cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 2**20


# --------------------------------------------------------------------------- memory probes
class PeakMemory:
    """Peak memory above a baseline, from ``reset()`` to ``peak()`` (bytes)."""

    def __init__(self, device):
        self.device = device
        self.base = 0
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else "RSS high-water mark"

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{field} not in /proc/self/status")

    def reset(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.base = self._status("VmRSS")
        except OSError:  # not Linux: ru_maxrss can only grow; the delta is a lower bound
            self.method = "ru_maxrss delta (lower bound)"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    def peak(self) -> int:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        try:
            return self._status("VmHWM") - self.base
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) - self.base


# --------------------------------------------------------------------------- workers (one per subprocess)
class _DiscardCheckpoints:
    """A CheckpointStore that writes nothing (the benchmark measures training, not disks)."""

    def save(self, directory, tensors, meta):
        return Path(directory) / "discarded"

    def load(self, path):
        raise NotImplementedError

    def latest(self, directory):
        return None

    def sha256(self, path):
        return "0" * 64

    def clean(self, directory):
        return []  # nothing was written, so no leftovers of a killed save


def worker_train(degree: int, batch: int, anchors: int, steps: int, warmup: int, device: str, threads: int) -> dict:
    import torch

    from adapters.compute import TorchCompute
    from locdiff.core.bundle import ModelBundle
    from locdiff.config import RunConfig
    from locdiff.services.data import PreparedData
    from locdiff.services.training import train

    if threads:
        torch.set_num_threads(threads)
    compute = TorchCompute(device)
    g = torch.Generator().manual_seed(0)
    n = 8192
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    latlon = torch.stack((torch.rad2deg(torch.asin(2 * u[:, 0] - 1)), 360 * u[:, 1] - 180), -1)
    cond = torch.nn.functional.normalize(torch.randn(n, 384, generator=g), dim=1)
    ids = tuple(str(i) for i in range(n))
    data = PreparedData("bench", cond, latlon, ids, ids, {"train": torch.arange(n)}, "bench:random")
    config = RunConfig.from_dict(
        {
            "diffusion": {"anchors_per_batch": anchors},
            "model": {"degree": degree},
            "train": {"batch_size": batch, "steps": warmup + steps, "checkpoint_every": 10**9, "log_every": 10**9},
        }
    )
    torch.manual_seed(0)
    bundle = ModelBundle.create(config, data.cond_dim, data.embedder_id, compute.device)
    probe = PeakMemory(compute.device)
    stamps: dict[int, float] = {}

    def on_step(step: int, loss: float) -> None:  # float(loss) has synchronised the device
        stamps[step] = time.perf_counter()
        if step == warmup:
            probe.reset()

    train(bundle, data, compute=compute, checkpoints=_DiscardCheckpoints(), checkpoint_dir=Path("unused"), on_step=on_step)
    seconds = stamps[warmup + steps] - stamps[warmup]
    return {
        "degree": degree, "dims": (degree + 1) ** 2, "batch": batch, "anchors": anchors, "steps": steps,
        "steps_per_s": steps / seconds, "peak_bytes": probe.peak(), "memory": probe.method, "device": compute.describe(),
        "params": sum(p.numel() for p in bundle.net.parameters()),
    }


def worker_kl(variant: str, degree: int, batch: int, anchors: int, device: str, threads: int) -> dict:
    import torch

    from adapters.compute import TorchCompute
    from locdiff.core import anchors as anchor_sets
    from locdiff.core import shdd
    from locdiff.core.harmonics import DEFAULT_CHUNK, real_sh

    if threads:
        torch.set_num_threads(threads)
    dev = TorchCompute(device).device
    g = torch.Generator().manual_seed(0)
    d = (degree + 1) ** 2
    target = anchor_sets.uniform_random(batch, g).to(dev)
    points = anchor_sets.uniform_random(anchors, g).to(dev)
    e = (0.1 * torch.randn(batch, d, generator=g)).to(dev).requires_grad_(True)

    def unchunked(e, target, points):
        y = real_sh(points, degree)  # the whole [N, D] harmonics block
        f_q, f_p = e @ y.T, real_sh(target, degree) @ y.T
        log_q, log_p = torch.log_softmax(f_q, -1), torch.log_softmax(f_p, -1)
        return (log_q.exp() * (log_q - log_p)).sum(-1).clamp_min(0.0)

    step = shdd.kl if variant == "chunked" else unchunked
    step(e, target, points[:64]).mean().backward()  # builds the harmonics tables outside the measurement
    e.grad = None
    probe = PeakMemory(dev)
    probe.reset()
    t0 = time.perf_counter()
    loss = step(e, target, points).mean()
    loss.backward()
    value = float(loss)
    seconds = time.perf_counter() - t0
    peak = probe.peak()
    return {
        "variant": variant, "degree": degree, "dims": d, "batch": batch, "anchors": anchors, "peak_bytes": peak,
        "seconds": seconds, "loss": value, "logits_bytes": batch * anchors * 4, "harmonics_bytes": anchors * d * 4,
        "chunk_bytes": min(anchors, DEFAULT_CHUNK) * d * 4, "chunk": DEFAULT_CHUNK, "memory": probe.method,
    }


def _spawn(kind: str, **kwargs) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker {kwargs} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="fewer steps and anchor counts (a smoke run)")
    parser.add_argument("--degrees", default="15,31,47")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--anchors", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per degree (default 10, quick 3)")
    parser.add_argument("--kl-degree", type=int, default=47, help="degree of the KL memory comparison")
    parser.add_argument("--kl-anchors", default=None, help="anchor counts (default 2048,16384,65536; quick 2048,16384)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, kwargs = args.worker[0], json.loads(args.worker[1])
        print(json.dumps(worker_train(**kwargs) if kind == "train" else worker_kl(**kwargs)))
        return 0

    steps = args.steps or (3 if args.quick else 10)
    kl_anchors = [int(x) for x in (args.kl_anchors or ("2048,16384" if args.quick else "2048,16384,65536")).split(",")]
    degrees = [int(x) for x in args.degrees.split(",")]

    print(f"# LocDiff training benchmark ({'quick' if args.quick else 'full'}; each row a fresh process)")
    rows = []
    for degree in degrees:
        r = _spawn("train", degree=degree, batch=args.batch, anchors=args.anchors, steps=steps, warmup=1 if args.quick else 2,
                   device=args.device, threads=args.threads)
        rows.append(r)
        if len(rows) == 1:
            print(f"device: {r['device']}; peak memory: {r['memory']}")
            print(f"\n## Training step (batch {args.batch}, {args.anchors} anchors, KL loss, Adam), {steps} timed steps")
            print("| L | dims | params | steps/s | s/step | peak MiB |")
            print("|---|---|---|---|---|---|")
        print(f"| {degree} | {r['dims']} | {r['params'] / 1e6:.2f} M | {r['steps_per_s']:.2f} | {1 / r['steps_per_s']:.3f} | {r['peak_bytes'] / MiB:.0f} |",
              flush=True)

    print(f"\n## KL step (forward + backward) vs anchor count: L={args.kl_degree}, batch {args.batch}")
    print("baseline 'unchunked': e @ real_sh(anchors).T with the whole [N, (L+1)^2] block; 'chunked': locdiff.core.shdd.kl")
    print("| anchors | [B,N] logits MiB | full harmonics MiB | one chunk MiB | chunked peak MiB | unchunked peak MiB | chunked/unchunked | chunked s | unchunked s |")
    print("|---|---|---|---|---|---|---|---|---|")
    kl = {}
    for n in kl_anchors:
        c = _spawn("kl", variant="chunked", degree=args.kl_degree, batch=args.batch, anchors=n, device=args.device, threads=args.threads)
        u = _spawn("kl", variant="unchunked", degree=args.kl_degree, batch=args.batch, anchors=n, device=args.device, threads=args.threads)
        assert math.isclose(c["loss"], u["loss"], rel_tol=1e-3, abs_tol=1e-5), (c["loss"], u["loss"])
        kl[n] = (c, u)
        print(f"| {n} | {c['logits_bytes'] / MiB:.0f} | {c['harmonics_bytes'] / MiB:.0f} | {c['chunk_bytes'] / MiB:.0f} | "
              f"{c['peak_bytes'] / MiB:.0f} | {u['peak_bytes'] / MiB:.0f} | {c['peak_bytes'] / u['peak_bytes']:.2f} | "
              f"{c['seconds']:.2f} | {u['seconds']:.2f} |", flush=True)
    if len(kl_anchors) >= 2:
        lo, hi = kl_anchors[0], kl_anchors[-1]
        per_anchor = {v: (kl[hi][i]["peak_bytes"] - kl[lo][i]["peak_bytes"]) / (hi - lo) for i, v in enumerate(("chunked", "unchunked"))}
        column = 4 * args.batch  # one float32 logits column [B]
        d = (args.kl_degree + 1) ** 2
        print(f"\nmemory per extra anchor ({lo} -> {hi}): chunked {per_anchor['chunked'] / 1024:.1f} KiB "
              f"= {per_anchor['chunked'] / column:.1f} logits columns of [B] float32; unchunked {per_anchor['unchunked'] / 1024:.1f} KiB "
              f"= {per_anchor['unchunked'] / column:.1f} columns (a harmonics row adds {4 * d / column:.1f} columns)")
        extra = per_anchor["unchunked"] - per_anchor["chunked"]
        print(f"harmonics held per anchor: unchunked - chunked = {extra / 1024:.1f} KiB (one [(L+1)^2] float32 row is {4 * d / 1024:.1f} KiB): "
              f"the chunked KL keeps no per-anchor harmonics, only the [B, N] logits grow")
        print(f"peak memory at {hi} anchors: unchunked / chunked = {kl[hi][1]['peak_bytes'] / kl[hi][0]['peak_bytes']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
