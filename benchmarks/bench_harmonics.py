"""Benchmark: real spherical harmonics ``locdiff.core.harmonics.real_sh`` against named baselines.

Baselines, all measured in the same run, interleaved, best of ``--repeats``:

* ``recurrence (in-place)`` — ``real_sh``'s other evaluator (normalised three-term recurrence in
  float64, in-place; the only one before the Fourier/GEMM path), forced by disabling that path;
* ``sphericart``   — ``sphericart.torch.SphericalHarmonics`` (same real orthonormal basis and
  ordering as ours) on xyz in float64 and float32, if installed;
* ``scipy``        — ``scipy.special.sph_harm_y`` converted to our real basis (the reference of
  ``tests/unit/test_harmonics.py``; vectorised over (l, m), float64 only), timed on a subset.

Throughput counts everything the call does, including allocating its output (``[N, (L+1)^2]``:
float32 output is half the bytes of float64; first-touch page faults of a fresh 922 MB output cost
~0.35 s here at L=47, N=100k). Reported as points per wall-clock second and per CPU second
(``time.process_time``, all threads, kernel time included: robust to other processes' load).
Inputs are each method's native form: (lat, lon) degrees for ours and scipy, unit xyz vectors for
sphericart.

Accuracy uses the addition theorem, which holds for any orthonormal real basis::

    Σ_lm Y_lm(p) Y_lm(q) = Σ_l (2l+1)/(4π) P_l(cos γ)      (peak (L+1)²/4π at γ = 0)

on pairs (p, q): neighbours, identical points and far pairs, including the poles and the
antimeridian. The right side uses ``legendre_kernel`` in float64 on the points each method actually
evaluated (so float32 rounding of the *inputs* is not counted as evaluation error). Reported: max
|error| / peak.

    python3 benchmarks/bench_harmonics.py [--quick] [--degrees 47 127] [--points 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared, oversubscribed CPU spinning threads of
# torch's and sphericart's (separate) OpenMP runtimes steal the cores the timed work needs.
# Applies to every method alike; override by setting OMP_WAIT_POLICY yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locdiff.core import harmonics  # noqa: E402
from locdiff.core.anchors import uniform_random  # noqa: E402
from locdiff.core.geo import to_xyz, validate_latlon  # noqa: E402
from locdiff.core.harmonics import legendre_kernel, real_sh  # noqa: E402
from _timing import status, timed  # noqa: E402

try:  # optional baseline
    import sphericart.torch as sphericart_torch
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    sphericart_torch = None

try:
    from scipy.special import sph_harm_y
except ImportError:  # pragma: no cover
    sph_harm_y = None

EDGES = torch.tensor(
    [[90.0, 0.0], [-90.0, 37.0], [89.9999, 179.9999], [-89.99, -179.99], [0.0, 180.0], [0.0, -180.0],
     [45.0, 179.9], [-45.0, -179.9], [89.0, 10.0], [-88.5, -100.0], [1e-6, 0.0], [0.0, -179.99]],
    dtype=torch.float64,
)
GOAL_SPEEDUP = 2.0
GOAL_ERROR = 1e-4


@contextlib.contextmanager
def recurrence_only():
    """Force the recurrence evaluator inside ``real_sh`` (the Fourier/GEMM path disabled)."""
    saved = harmonics._use_fourier
    harmonics._use_fourier = lambda *args: False
    try:
        yield
    finally:
        harmonics._use_fourier = saved


def scipy_real_sh(latlon: np.ndarray, degree: int) -> np.ndarray:
    """Reference: scipy's complex Y_l^m (Condon–Shortley phase) converted to our real basis, [N, D]."""
    theta = np.deg2rad(90.0 - latlon[:, 0])
    phi = np.deg2rad(latlon[:, 1])
    ls = np.concatenate([np.full(l + 1, l) for l in range(degree + 1)])
    ms = np.concatenate([np.arange(l + 1) for l in range(degree + 1)])
    c = sph_harm_y(ls[:, None], ms[:, None], theta[None, :], phi[None, :])  # [K, N], m >= 0
    sign = np.where(ms % 2 == 1, -1.0, 1.0)[:, None] * math.sqrt(2.0)
    out = np.empty(((degree + 1) ** 2, latlon.shape[0]))
    base = ls * ls + ls
    out[base + ms] = np.where(ms[:, None] == 0, c.real, sign * c.real)  # m >= 0
    neg = ms > 0
    out[(base - ms)[neg]] = (sign * c.imag)[neg]  # m < 0 uses sin(|m| φ)
    return out.T


def accuracy_pairs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, q) float64 pairs: edge points with neighbours, random neighbours, identical points, far pairs."""
    p = torch.cat([EDGES, uniform_random(n, generator, dtype=torch.float64)])
    jitter = torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.05
    near = p + jitter
    near[:, 0] = near[:, 0].clamp(-90.0, 90.0)
    far = uniform_random(p.shape[0], generator, dtype=torch.float64)
    return torch.cat([p, p, p]), torch.cat([near, p, far])


def kernel_error(y_p: torch.Tensor, y_q: torch.Tensor, xyz_p: torch.Tensor, xyz_q: torch.Tensor, degree: int) -> float:
    """max |Y(p)·Y(q) - K_L(p·q)| / ((L+1)²/4π), accumulated in float64."""
    dot = (y_p.double() * y_q.double()).sum(-1)
    xyz_p = torch.nn.functional.normalize(xyz_p.double(), dim=-1)
    xyz_q = torch.nn.functional.normalize(xyz_q.double(), dim=-1)
    kernel = legendre_kernel((xyz_p * xyz_q).sum(-1), degree)
    return float((dot - kernel).abs().max()) / ((degree + 1) ** 2 / (4 * math.pi))


def effective_latlon(latlon: torch.Tensor) -> torch.Tensor:
    """The points ``real_sh`` really evaluates for this input (after validation/wrapping), in float64."""
    return validate_latlon(latlon).double()


def _path(points: torch.Tensor, degree: int) -> str:
    return "Fourier/GEMM" if harmonics._use_fourier(points, degree) else "recurrence"


def bench_degree(degree: int, n_points: int, n_ref: int, n_pairs: int, repeats: int, rows: list, ratios: list) -> None:
    g = torch.Generator().manual_seed(degree)
    pts32 = uniform_random(n_points, g, dtype=torch.float32)
    pts64 = pts32.double()
    xyz64 = to_xyz(pts64)
    xyz32 = xyz64.float()
    ref_pts = pts64[:n_ref].numpy()

    def forced_recurrence(points):
        def run():
            with recurrence_only():
                return real_sh(points, degree)
        return run

    # key: (label, dtype) -> (points timed, callable)
    ours32, ours64 = ("real_sh [" + _path(pts32, degree) + "]", "float32"), ("real_sh [" + _path(pts64, degree) + "]", "float64")
    rec32 = ("recurrence (in-place)", "float32")
    sc64, sc32, ref = ("sphericart-torch", "float64"), ("sphericart-torch", "float32"), ("scipy sph_harm_y (ref)", "float64")
    methods = {ours32: (n_points, lambda: real_sh(pts32, degree)), ours64: (n_points, lambda: real_sh(pts64, degree))}
    if ours32[0] != "real_sh [recurrence]":
        methods[rec32] = (n_points, forced_recurrence(pts32))
    if sphericart_torch is not None:
        sph = sphericart_torch.SphericalHarmonics(degree)
        methods[sc64] = (n_points, lambda: sph.compute(xyz64))
        methods[sc32] = (n_points, lambda: sph.compute(xyz32))
    if sph_harm_y is not None and n_ref:
        methods[ref] = (n_ref, lambda: scipy_real_sh(ref_pts, degree))
    # not a method: the cost of allocating and first touching the output alone (page faults)
    width = (degree + 1) ** 2
    floor32, floor64 = ("alloc+touch only (floor)", "float32"), ("alloc+touch only (floor)", "float64")
    methods[floor32] = (n_points, lambda: torch.empty((width, n_points), dtype=torch.float32).fill_(0.0))
    methods[floor64] = (n_points, lambda: torch.empty((width, n_points), dtype=torch.float64).fill_(0.0))

    # warm-up: coefficient tables and thread pools, outside the timings
    for pts in (pts32[:64], pts64[:64]):
        real_sh(pts, degree)
        forced_recurrence(pts)()
    if sphericart_torch is not None:
        sph.compute(xyz64[:64])
        sph.compute(xyz32[:64])
    best = {key: math.inf for key in methods}
    best_cpu = {key: math.inf for key in methods}
    for rep in range(repeats):
        for key, (_, fn) in methods.items():
            if key == ref and rep > 0 and n_ref * degree > 200_000:
                continue  # the reference is slow: one timing is enough
            wall, cpu = timed(fn)[:2]  # the result is dropped at once
            best[key], best_cpu[key] = min(best[key], wall), min(best_cpu[key], cpu)
    load = status()

    # accuracy on (p, q) pairs, against the points each method really evaluated
    p64, q64 = accuracy_pairs(n_pairs, g)
    p32, q32 = p64.float(), q64.float()
    ep32, eq32 = to_xyz(effective_latlon(p32)), to_xyz(effective_latlon(q32))
    ep64, eq64 = to_xyz(effective_latlon(p64)), to_xyz(effective_latlon(q64))
    err = {
        ours32: kernel_error(real_sh(p32, degree), real_sh(q32, degree), ep32, eq32, degree),
        ours64: kernel_error(real_sh(p64, degree), real_sh(q64, degree), ep64, eq64, degree),
    }
    if rec32 in methods:
        err[rec32] = kernel_error(forced_recurrence(p32)(), forced_recurrence(q32)(), ep32, eq32, degree)
    if sphericart_torch is not None:
        xp64, xq64 = to_xyz(p64), to_xyz(q64)
        err[sc64] = kernel_error(sph.compute(xp64), sph.compute(xq64), xp64, xq64, degree)
        xp32, xq32 = xp64.float(), xq64.float()
        err[sc32] = kernel_error(sph.compute(xp32), sph.compute(xq32), xp32, xq32, degree)
    if ref in methods:
        m = min(p64.shape[0], max(n_ref, 64))
        sp, sq = scipy_real_sh(p64[:m].numpy(), degree), scipy_real_sh(q64[:m].numpy(), degree)
        err[ref] = kernel_error(torch.from_numpy(sp), torch.from_numpy(sq), to_xyz(p64[:m]), to_xyz(q64[:m]), degree)

    rate = {key: methods[key][0] / best[key] for key in methods}
    cpu_rate = {key: methods[key][0] / max(best_cpu[key], 1e-9) for key in methods}
    base = rate.get(sc64)
    for key, (n, _) in methods.items():
        rows.append((degree, key[0], key[1], n, rate[key], cpu_rate[key], err.get(key), rate[key] / base if base else math.nan, load))
    ours = rate[ours32]
    if base:
        ratios.append((f"real_sh-f32/sphericart-f64 throughput L={degree}", ours / base))
        ratios.append((f"real_sh-f32/sphericart-f64 CPU-time throughput L={degree}", cpu_rate[ours32] / cpu_rate[sc64]))
        ratios.append((f"real_sh-f32/sphericart-f32 throughput L={degree}", ours / rate[sc32]))
        ratios.append((f"real_sh-f64/sphericart-f64 throughput L={degree}", rate[ours64] / base))
    if rec32 in rate:
        ratios.append((f"real_sh-f32 Fourier/recurrence throughput L={degree}", ours / rate[rec32]))
        ratios.append((f"real_sh-f32 Fourier/recurrence CPU-time throughput L={degree}", cpu_rate[ours32] / cpu_rate[rec32]))
    if ref in rate:
        ratios.append((f"real_sh-f32/scipy throughput L={degree}", ours / rate[ref]))
    ratios.append((f"real_sh-f32 throughput / float32 alloc+touch floor L={degree}", ours / rate[floor32]))
    goal = base is not None and ours >= GOAL_SPEEDUP * base and err[ours32] <= GOAL_ERROR
    ratios.append((f"GOAL L={degree} (f32 >= {GOAL_SPEEDUP:g}x sphericart-f64 throughput, f32 error <= {GOAL_ERROR:g} peak)", "MET" if goal else "NOT MET"))
    del methods
    gc.collect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--degrees", type=int, nargs="+", default=[47, 127])
    parser.add_argument("--points", type=int, default=None, help="points timed (default 100k at L<=63, 20k above; quick: 10k / 2k)")
    parser.add_argument("--ref-points", type=int, default=None, help="points for the scipy reference (default 2000 / 500; quick 300)")
    parser.add_argument("--pairs", type=int, default=2000, help="random (p, q) pairs per accuracy check (plus edge points)")
    parser.add_argument("--repeats", type=int, default=None, help="timings per method, best kept (default 3; quick 2)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    print(f"bench_harmonics: torch {torch.__version__}, {status()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"sphericart={'yes' if sphericart_torch else 'no'}, scipy={'yes' if sph_harm_y else 'no'}, "
          f"repeats={repeats} (best kept, methods interleaved)")
    rows, ratios = [], []
    for degree in args.degrees:
        big = degree > 63
        n_points = args.points or ((2_000 if big else 10_000) if args.quick else (20_000 if big else 100_000))
        n_ref = args.ref_points if args.ref_points is not None else (300 if args.quick else (500 if big else 2_000))
        n_pairs = min(args.pairs, 300) if args.quick else args.pairs
        bench_degree(degree, n_points, n_ref, n_pairs, repeats, rows, ratios)

    print()
    print(f"{'L':>4} {'method':<24} {'dtype':<8} {'points':>8} {'points/s':>11} {'points/CPU-s':>13} {'kernel err/peak':>16} {'x sphericart-f64':>17}  conditions")
    for degree, name, dtype, n, rate, cpu_rate, err, rel, load in rows:
        err_text = f"{'n/a':>16}" if err is None else f"{err:16.2e}" if math.isfinite(err) else f"{'non-finite':>16}"
        print(f"{degree:>4} {name:<24} {dtype:<8} {n:>8} {rate:>11,.0f} {cpu_rate:>13,.0f} {err_text} {rel:>17.2f}  {load}")
    print()
    for name, value in ratios:
        print(f"RATIO {name}: {value:.2f}x" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
