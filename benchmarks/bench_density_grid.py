"""Benchmark: ``locdiff.core.density.density_grid`` on a 360x720 (0.5°) grid at L=47.

Baseline (named, same run): *direct evaluation* — ``real_sh`` at all 259,200 cell centres, one
matmul ``e @ Y.T`` for the logits, then the normalised point-sampled density (mass of a cell =
exp(f - max f) × cell area, normalised; a K-sample mixture averages the K normalised masses).
``density_grid`` instead evaluates ``f_e`` separably (O(L²·n_lat + L·n_lat·n_lon) per vector) and
integrates the cells near the peaks on 6×6 sub-grids with exact harmonics.

Cases: one vector (a noisy L=47 encoding) and a 16-sample mixture (noisy encodings of 16 points
in a few clusters, like diffusion samples). ``density_grid``'s separable tables are cached per grid
size: the first call (cold) builds them and is reported separately; "warm" is best of repeats.
Agreement: total-variation distance (TV) of the mass grids against (a) the direct baseline — which
*point-samples* exp(f): an L=47 peak of exp(f) is ~10 km wide, far narrower than a 0.5° cell, so
this TV is mostly the baseline's own error — and (b) ``density_grid`` with 16×16 instead of 6×6
sub-grids (an estimate of the integration error); plus whether the most massive cell agrees.

    python3 benchmarks/bench_density_grid.py [--quick] [--lat 360 --lon 720]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

# idle OpenMP threads sleep instead of spinning (shared, oversubscribed CPUs); same for every method
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import locdiff  # noqa: E402
from locdiff.core import anchors, density  # noqa: E402
from locdiff.core.density import density_grid  # noqa: E402
from locdiff.core.harmonics import real_sh  # noqa: E402
from _timing import status, timed  # noqa: E402

GOAL_MS = 100.0


def direct_mass(e: torch.Tensor, n_lat: int, n_lon: int, chunk: int = 65_536) -> torch.Tensor:
    """Baseline: harmonics at every cell centre, one matmul, point-sampled normalised mass [n_lat, n_lon]."""
    e2 = e.reshape(-1, e.shape[-1])
    degree = math.isqrt(e2.shape[-1]) - 1
    lat, lon, area = anchors.equiangular(n_lat, n_lon, dtype=torch.float64)
    cells = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2).to(e2.dtype)
    f = torch.empty(e2.shape[0], cells.shape[0], dtype=e2.dtype)
    with torch.no_grad():
        for start in range(0, cells.shape[0], chunk):  # chunked so Y never holds 2.4 GB at once
            f[:, start : start + chunk] = e2 @ real_sh(cells[start : start + chunk], degree, validate=False).T
    f = f.double().reshape(-1, n_lat, n_lon)
    mass = torch.exp(f - f.amax(dim=(1, 2), keepdim=True)) * area[None, :, None]
    mass = mass / mass.sum(dim=(1, 2), keepdim=True)
    return mass.mean(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small version: 180x360 grid, 1 baseline repeat")
    parser.add_argument("--degree", type=int, default=47)
    parser.add_argument("--lat", type=int, default=None, help="grid rows (default 360; quick 180)")
    parser.add_argument("--lon", type=int, default=None, help="grid columns (default 2*lat)")
    parser.add_argument("--samples", type=int, default=16, help="vectors in the mixture case")
    parser.add_argument("--repeats", type=int, default=None, help="warm timings of density_grid, best kept (default 5; quick 3)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_lat = args.lat or (180 if args.quick else 360)
    n_lon = args.lon or 2 * n_lat
    repeats = args.repeats or (3 if args.quick else 5)
    base_repeats = 1 if args.quick else 2
    degree = args.degree

    g = torch.Generator().manual_seed(0)
    single_pt = torch.tensor([[48.85, 2.35]])
    centres = torch.tensor([[48.85, 2.35], [40.7, -74.0], [-33.9, 151.2], [35.7, 139.7]])
    mix_pts = centres[torch.arange(args.samples) % len(centres)] + 2.0 * torch.randn(args.samples, 2, generator=g)
    mix_pts[:, 0] = mix_pts[:, 0].clamp(-90, 90)
    single = locdiff.encode(single_pt, degree)[0] + 0.1 * torch.randn((degree + 1) ** 2, generator=g)
    mixture = locdiff.encode(mix_pts, degree) + 0.1 * torch.randn(args.samples, (degree + 1) ** 2, generator=g)
    print(f"bench_density_grid: L={degree} grid {n_lat}x{n_lon} ({n_lat * n_lon:,} cells) torch {torch.__version__} "
          f"{status()} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")

    real_sh(torch.zeros(8, 2), degree)  # warm the harmonics' tables for the baseline
    rows, ratios = [], []
    for name, e in (("1 vector", single), (f"{args.samples}-sample mixture", mixture)):
        density._separable_tables.cache_clear()
        cold_wall, cold_cpu, _ = timed(lambda e=e: density_grid(e, n_lat, n_lon))
        warm_wall, warm_cpu, grid = math.inf, math.inf, None
        base_wall, base_cpu, base = math.inf, math.inf, None
        for rep in range(max(repeats, base_repeats)):
            if rep < repeats:
                w, c, grid = timed(lambda e=e: density_grid(e, n_lat, n_lon))
                warm_wall, warm_cpu = min(warm_wall, w), min(warm_cpu, c)
            if rep < base_repeats:
                w, c, base = timed(lambda e=e: direct_mass(e, n_lat, n_lon))
                base_wall, base_cpu = min(base_wall, w), min(base_cpu, c)
        load = status()
        fine = density_grid(e, n_lat, n_lon, sub=16).mass

        def agreement(mass: torch.Tensor, ref: torch.Tensor) -> str:
            same = int(mass.flatten().argmax()) == int(ref.flatten().argmax())
            return f"TV {0.5 * float((mass - ref).abs().sum()):.1e}, argmax {'same' if same else 'differs'}"

        rows.append((name, "density_grid (warm)", warm_wall, warm_cpu, agreement(grid.mass, base), agreement(grid.mass, fine), load))
        rows.append((name, "density_grid (cold: builds tables)", cold_wall, cold_cpu, "", "", load))
        rows.append((name, "direct: real_sh all cells + matmul", base_wall, base_cpu, "-", agreement(base, fine), load))
        ratios.append((f"density_grid/direct speedup ({name}, warm)", base_wall / warm_wall))
        ratios.append((f"density_grid/direct speedup ({name}, cold)", base_wall / cold_wall))
        ratios.append((f"GOAL density_grid {n_lat}x{n_lon} ({name}, warm) < {GOAL_MS:g} ms", "MET" if 1e3 * warm_wall < GOAL_MS else "NOT MET"))

    print()
    print(f"{'case':<20} {'method':<36} {'wall ms':>10} {'CPU ms':>10}  {'vs direct (point-sampled)':<30} {'vs density_grid sub=16':<30} conditions")
    for name, method, wall, cpu, agree, agree_fine, load in rows:
        print(f"{name:<20} {method:<36} {1e3 * wall:>10.1f} {1e3 * cpu:>10.1f}  {agree:<30} {agree_fine:<30} {load}")
    print()
    for label, value in ratios:
        print(f"RATIO {label}: {value:.1f}x" if isinstance(value, float) else f"{label}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
