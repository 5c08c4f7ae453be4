"""Where a trained denoiser's chain goes wrong: on-trajectory x0 quality vs the chain's own drift (issues #10, #11).

1. **On the forward trajectory**: for items of a split, ``x_t`` is the true code noised to ``t`` (as in training);
   the network's x0 prediction is decoded on a grid (accuracy at 200 / 750 / 2500 km) and its length compared with a
   valid code's, ``sqrt((L+1)²/4π)``. ``E[x0|x_t]`` is a mixture of codes, so an exact denoiser's ratio is ≤ 1.
2. **On the chain's own trajectory**: a deterministic DDIM chain (about one step per 3 timesteps) started from the
   true code noised to ``t0`` and run to 0; the final code's accuracy and the x0 length along the chain. A denoiser
   whose x0 overshoots in length feeds the excess back through ``x_s`` and the next prediction grows again.

    python3 benchmarks/chain_drift.py RUN [--split val] [--items 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._timing import status  # noqa: E402


def accuracies(coeffs: torch.Tensor, truth: torch.Tensor, degree: int) -> str:
    from locdiff.core import geo
    from locdiff.core.decoding import grid_argmax

    d = geo.great_circle_km(grid_argmax(coeffs.double(), 4 * (degree + 1)), truth)
    return " ".join(f"acc@{r}={100 * float((d < r).double().mean()):5.1f}" for r in (200, 750, 2500))


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--split", default="val")
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from locdiff.container import build_container, load_model
    from locdiff.core import shdd
    from locdiff.services.data import prepare

    bundle, _ = load_model(Path(args.run))
    container = build_container(bundle.config)
    data = prepare(container.dataset(), container.embedder(), bundle.config.data)
    index = data.splits[args.split][: args.items]
    cond, truth = data.cond[index].float(), data.latlon[index].double()
    diff, net, degree, n = bundle.diffusion, bundle.net.eval(), bundle.degree, len(index)
    x0 = shdd.encode(truth, degree).float() * diff.data_scale
    valid = math.sqrt((degree + 1) ** 2 / (4 * math.pi)) * diff.data_scale
    g = torch.Generator().manual_seed(args.seed)
    abar = diff.schedule.alphas_cumprod.float()
    print(f"chain_drift: {args.run} L={degree} {args.split} {n} items, {status()}")
    print("on the forward trajectory (x_t from the true code):")
    for t in (2, 10, 25, 50, 70, 85, 95):
        tt = torch.full((n,), t, dtype=torch.long)
        e = diff.predict_x0(net, diff.q_sample(x0, tt, torch.randn(x0.shape, generator=g)), tt, cond)
        print(f"  t={t:3d} abar={float(abar[t]):.3g}  {accuracies(e / diff.data_scale, truth, degree)}  "
              f"|x0|/valid={float(e.norm(dim=-1).mean()) / valid:.2f}")
    print("a DDIM chain from the true code noised to t0:")
    for t0 in (99, 95, 90, 85, 70, 50):
        x = diff.q_sample(x0, torch.full((n,), t0, dtype=torch.long), torch.randn(x0.shape, generator=g))
        times = sorted({round(v) for v in torch.linspace(t0, 0, max(2, t0 // 3)).tolist()}, reverse=True)
        norms = []
        for i, t in enumerate(times):
            e = diff.predict_x0(net, x, torch.full((n,), t, dtype=torch.long), cond)
            norms.append(float(e.norm(dim=-1).mean()) / valid)
            if i + 1 == len(times):
                x = e
                break
            s = times[i + 1]
            eps = (x - abar[t].sqrt() * e) / (1 - abar[t]).sqrt()
            x = abar[s].sqrt() * e + (1 - abar[s]).sqrt() * eps
        shown = " ".join(f"{v:.2f}" for v in norms[:: max(1, len(norms) // 6)])
        print(f"  t0={t0:3d}  {accuracies(x / diff.data_scale, truth, degree)}  |x0|/valid along the chain: {shown} … {norms[-1]:.2f}")


if __name__ == "__main__":
    main()
