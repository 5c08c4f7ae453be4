"""Benchmark: GeoCLIP retrieval with the gallery encoded (cold) vs read from the disk cache (warm).

GeoCLIP itself re-encodes its whole 100K gallery on every ``predict``; the adapter caches the
gallery features on disk. Prints the cold and warm query times and their ratio (target >= 20x).

    python3 benchmarks/bench_geoclip_cache.py [--device cuda] [--gallery-size 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.geoclip_retriever import GeoClipRetriever  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _query(retriever: GeoClipRetriever, feats: torch.Tensor, cands: torch.Tensor, radius_km: float) -> float:
    _sync(retriever.device)
    start = time.perf_counter()
    retriever.retrieve_features(feats, cands, radius_km, top_k=5)
    _sync(retriever.device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gallery-size", type=int, default=None, help="first N gallery points (default: all)")
    parser.add_argument("--queries", type=int, default=8, help="images per query batch")
    parser.add_argument("--candidates", type=int, default=16, help="candidates per image")
    parser.add_argument("--radius-km", type=float, default=750.0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as cache:
        cold = GeoClipRetriever(device=device, cache_dir=cache, progress=False)
        gallery = cold.gallery if args.gallery_size is None else cold.gallery[: args.gallery_size]
        if args.gallery_size is not None:
            cold = GeoClipRetriever(device=device, cache_dir=cache, gallery=gallery, progress=False)
        feats = torch.randn(args.queries, 768) * 2
        picks = torch.randint(len(gallery), (args.queries, args.candidates))
        cands = gallery[picks].double()
        warmup = GeoClipRetriever(device=device, cache_dir=cache, gallery=gallery[:64], progress=False)
        _query(warmup, feats, cands, args.radius_km)  # load kernels / allocator outside the timings

        t_cold = _query(cold, feats, cands, args.radius_km)
        assert cold.cache_hit is False
        warm = GeoClipRetriever(device=device, cache_dir=cache, gallery=gallery, progress=False)
        t_warm = _query(warm, feats, cands, args.radius_km)
        assert warm.cache_hit is True
        t_hot = _query(warm, feats, cands, args.radius_km)
    print(f"device={device} gallery={len(gallery)} queries={args.queries} candidates={args.candidates} "
          f"radius_km={args.radius_km:g} threads={torch.get_num_threads()}")
    print(f"cold query (gallery encoded + cached): {t_cold:9.3f} s")
    print(f"warm query (disk cache hit)          : {t_warm:9.3f} s")
    print(f"hot query (features in memory)       : {t_hot:9.3f} s")
    print(f"cold / warm speed-up                 : {t_cold / t_warm:9.1f} x  (target >= 20x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
