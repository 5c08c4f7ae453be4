"""Importance-sampled vs uniform anchors for the SHDD KL (issue #11, part 2), at equal anchor count.

For each degree, a batch of targets and predictions that a trained model produces late in the chain
(the code of a point a few e-fold radii from the target, and a two-site mixture), the KL of eq. 16 is
estimated with N uniform anchors and with N importance anchors (half uniform, half in caps around
the targets, weighted by their areas). Reference: importance sampling with 65,536 anchors (consistent;
a lattice fine enough for a 28 km peak would need ~10M points); the 65,536-point uniform estimate is printed beside it.
Prints bias and spread of the per-item estimates, relative to the reference, and the cost ratio.

    python3 benchmarks/anchor_variance.py [--anchors 2048] [--draws 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from locdiff.core import anchors as A
from locdiff.core import shdd


def _moved(latlon: torch.Tensor, km: float, g: torch.Generator) -> torch.Tensor:
    """Each point moved ``km`` along a random bearing (great circle)."""
    lat, lon = torch.deg2rad(latlon[:, 0]), torch.deg2rad(latlon[:, 1])
    d = km / 6371.0
    brg = 2 * math.pi * torch.rand(latlon.shape[0], generator=g, dtype=torch.float64)
    lat2 = torch.asin(torch.sin(lat) * math.cos(d) + torch.cos(lat) * math.sin(d) * torch.cos(brg))
    lon2 = lon + torch.atan2(torch.sin(brg) * math.sin(d) * torch.cos(lat), math.cos(d) - torch.sin(lat) * torch.sin(lat2))
    return torch.stack((torch.rad2deg(lat2), torch.remainder(torch.rad2deg(lon2) + 180, 360) - 180), -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=int, default=2048)
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--degrees", default="15,31,47")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"anchors per batch {args.anchors}, {args.draws} draws, batch {args.batch}, {args.threads} thread(s); reference: 65,536 importance anchors")
    print("| L | e-fold km | prediction | reference KL (uniform 65k) | uniform: bias / rel. spread | importance: bias / rel. spread | spread ratio | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for degree in (int(x) for x in args.degrees.split(",")):
        g = torch.Generator().manual_seed(degree)
        targets = A.uniform_random(args.batch, g, dtype=torch.float64)
        r_km = A.efold_radius(degree) * 6371.0
        cases = {
            f"peak {2 * r_km:.0f} km off": shdd.encode(_moved(targets, 2 * r_km, g), degree),
            f"peak {8 * r_km:.0f} km off": shdd.encode(_moved(targets, 8 * r_km, g), degree),
            "0.7 near + 0.3 far site": 0.7 * shdd.encode(_moved(targets, r_km, g), degree) + 0.3 * shdd.encode(A.uniform_random(args.batch, g, dtype=torch.float64), degree),
        }
        for name, e in cases.items():
            a, lw = A.importance(targets, 65_536, g, degree=degree, dtype=torch.float64)
            ref = shdd.kl(e, targets, a, lw)
            ref_uniform = float(shdd.kl(e, targets, A.uniform_random(65_536, g, dtype=torch.float64)).mean())
            est = {"uniform": [], "importance": []}
            spent = {"uniform": 0.0, "importance": 0.0}
            for _ in range(args.draws):
                t0 = time.perf_counter()
                a = A.uniform_random(args.anchors, g, dtype=torch.float64)
                est["uniform"].append(shdd.kl(e, targets, a))
                spent["uniform"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                a, lw = A.importance(targets, args.anchors, g, degree=degree, dtype=torch.float64)
                est["importance"].append(shdd.kl(e, targets, a, lw))
                spent["importance"] += time.perf_counter() - t0
            cells = []
            spreads = {}
            for kind in A.ANCHOR_SAMPLINGS:
                x = torch.stack(est[kind])  # [draws, B]
                bias = float(((x.mean(0) - ref) / ref).mean())
                spread = float((x.std(0) / ref).mean())
                spreads[kind] = spread
                cells.append(f"{100 * bias:+.1f} % / {100 * spread:.1f} %")
            print(f"| {degree} | {r_km:.0f} | {name} | {float(ref.mean()):.3f} ({ref_uniform:.3f}) | {cells[0]} | {cells[1]} | {spreads['uniform'] / spreads['importance']:.1f}× | {spent['importance'] / spent['uniform']:.2f} |")


if __name__ == "__main__":
    main()
