"""Objectives against an exact denoiser (issue #10): how far does a network trained by each loss land from E[x0|x_t]?

A synthetic conditional task: 48 finite priors (1-4 sites within ~12° of a random centre, Gamma(1)
weights), each selected by a condition row [index, 31-d random embedding]; its exact E[x0|x_t] comes from
locdiff.core.oracle. A small CS-UNet (widths 256/128/64, L=15) is trained by each objective for STEPS
steps (batch 256, 2048 fresh anchors, AdamW 1e-3) and scored two ways:
  gap   — relative error |pred − E[x0|x_t]| / |E[x0|x_t]| over degrees l ≥ 1 (and per degree), the l=0
          entry and the norm ratio, on 3,000 fresh (x_t, t) draws, by noise level;
  chain — DDPM-100 with no projection, 16 samples per prior: NLL of 40 site draws per prior under the
          16-sample mixture (core/scores), energy score (km), share of samples within 300 km of a site,
          total variation of site frequencies, mean code norm (a valid code has 4.51).
Usage: python3 benchmarks/objective_synthetic.py [STEPS] [kind:head:weight[:weighting[:anchors[:param]]],...]   (single thread)
  weighting: uniform | snr-clamp (cap 5); anchors: uniform | importance (half in caps around the batch's targets);
  param: x0 | v (what the network's output means, model.parameterization)
"""
import json, math, sys, time
import torch
torch.set_num_threads(1)
from locdiff.core.oracle import FinitePriors, ExactDenoiser
from locdiff.core.diffusion import Diffusion, Schedule
from locdiff.core.network import CSUNet
from locdiff.core import shdd, scores, geo
from locdiff.core.decoding import decode
from locdiff.core.anchors import importance as importance_anchors

L = 15; D = (L + 1) ** 2; P = 48; STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 600
g = torch.Generator().manual_seed(0)
def rand_pts(n):
    z = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    return torch.stack((torch.rad2deg(torch.asin(z)), torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180), -1)
priors = []
for p in range(P):
    m = 1 + p % 4
    centre = rand_pts(1)
    # sites within ~1500 km of a centre (a country-sized ambiguity), weights Dirichlet
    pts = centre + 12 * torch.randn(m, 2, generator=g, dtype=torch.float64)
    pts[:, 0] = pts[:, 0].clamp(-89, 89)
    w = torch.distributions.Gamma(torch.ones(m), torch.ones(m)).sample()
    priors.append((pts, w))
fp = FinitePriors.stack(priors)
emb = torch.randn(P, 31, generator=g)
def cond_of(idx):
    return torch.cat((idx.float()[:, None], emb[idx]), 1)
sched = Schedule.make("cosine", 100)
diff = Diffusion(sched, projection="none")
oracle = ExactDenoiser(fp, sched, L)
anchors_g = torch.Generator().manual_seed(1)

def draw_batch(b, gen):
    idx = torch.randint(0, P, (b,), generator=gen)
    site = torch.multinomial(fp.weights[idx], 1, generator=gen)[:, 0]
    return idx, fp.latlon[idx, site].float()

def owner():
    ls = torch.arange(L + 1)
    return torch.repeat_interleave(ls, 2 * ls + 1)
OWN = owner()

def per_degree(x):  # [B, D] -> [B, L+1] block norms
    out = torch.zeros(x.shape[0], L + 1, dtype=torch.float64)
    out.index_add_(1, OWN, x.double().square())
    return out.sqrt()

def run(kind, fix_l0, w=1.0, weighting="uniform", anchor_sampling="uniform", param="x0", steps=STEPS, seed=0):
    torch.manual_seed(seed)
    net = CSUNet(D, 32, (256, 128, 64), 64, 0.0, 1.0)
    dif = Diffusion(sched, projection="none", parameterization=param, l0=1.0 if fix_l0 else None)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed + 10)
    t0 = time.time()
    for s in range(steps):
        idx, ll = draw_batch(256, gen)
        z = torch.randn(2048, generator=gen, dtype=torch.float64) * 2 - 1
        a = torch.stack((torch.rad2deg(torch.asin(z.clamp(-1, 1))), torch.rand(2048, generator=gen, dtype=torch.float64) * 360 - 180), -1).float()
        lw = None
        if anchor_sampling == "importance":
            a, lw = importance_anchors(ll, 2048, gen, degree=L)
        loss = dif.loss(net, ll, cond_of(idx), a, kind=kind, degree=L, generator=gen, l2_weight=w, weighting=weighting, anchor_log_weights=lw)
        opt.zero_grad(); loss.backward(); opt.step()
    net.eval()
    return net, time.time() - t0, dif

@torch.no_grad()
def gap(net, dif):
    gen = torch.Generator().manual_seed(99)
    idx, ll = draw_batch(3000, gen)
    t = torch.randint(0, 100, (3000,), generator=gen)
    x0 = shdd.encode(ll, L).float() * math.sqrt(4 * math.pi)
    xt = diff.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    c = cond_of(idx)
    pred, ex = dif.predict_x0(net, xt, t, c).double(), oracle(xt.double(), t, c).double()
    err = per_degree(pred - ex); ref = per_degree(ex)
    out = {}
    for name, sel in (("t<30", t < 30), ("30-70", (t >= 30) & (t < 70)), ("t>=70", t >= 70)):
        out[name] = {
            "rel_err_l>=1": float(err[sel, 1:].square().sum(1).sqrt().mean() / ref[sel, 1:].square().sum(1).sqrt().mean()),
            "l0_pred": float(pred[sel, 0].mean()), "l0_err": float((pred[sel, 0] - ex[sel, 0]).abs().mean()),
            "norm_ratio": float((pred[sel].norm(dim=1) / ex[sel].norm(dim=1)).mean()),
            "rel_err_by_l": [round(float(err[sel, l].mean() / ref[sel, l].mean()), 3) for l in (1, 3, 7, 11, 15)],
        }
    return out

@torch.no_grad()
def chain(model, k=16, dif=diff):
    gen = torch.Generator().manual_seed(5)
    idx = torch.arange(P).repeat_interleave(k)
    e = dif.sample(model, cond_of(idx), dim=D, sampler="ddpm", generator=gen, projection="none").reshape(P, k, D)
    norms = e.double().norm(dim=-1).mean()
    tg = torch.Generator().manual_seed(7)
    site = torch.multinomial(fp.weights, 40, replacement=True, generator=tg)  # [P, 40]
    truths = fp.latlon[torch.arange(P)[:, None], site]  # [P, 40, 2]
    nll = -scores.mixture_log_density(e.double(), truths)
    truths_i, truths = torch.arange(P).repeat_interleave(40), truths.reshape(-1, 2)
    locs = decode(e.reshape(-1, D).float()).reshape(P, k, 2).double()
    es = scores.energy_score(locs[truths_i], truths.double())
    # share of decoded samples within 300 km of one of their prior's sites
    d = geo.great_circle_km(locs[:, :, None, :], fp.latlon[:, None, :, :])  # [P,k,M]
    d = torch.where(fp.weights[:, None, :] > 0, d, torch.full_like(d, 1e9))
    on = float((d.min(-1).values < 300).double().mean())
    # frequency per site vs weight (TV)
    near = d.argmin(-1)
    freq = torch.zeros_like(fp.weights).scatter_add_(1, near, torch.ones_like(near, dtype=torch.float64)) / k
    tv = float(0.5 * (freq - fp.weights).abs().sum(1).mean())
    return {"nll": float(nll.mean()), "energy_km": float(es.mean()), "on_site@300km": on, "tv": tv, "code_norm(unit)": float(norms)}

if __name__ == "__main__":
    configs = [("kl", False, 1.0), ("kl", True, 1.0), ("l2", False, 1.0), ("kl+l2", True, 0.5), ("kl+l2", True, 0.1)]
    if len(sys.argv) > 2:  # kind:head:weight[:weighting[:anchors[:param]]]
        configs = []
        for spec in sys.argv[2].split(","):
            kind, head, w, *rest = spec.split(":")
            configs.append((kind, bool(int(head)), float(w), *rest))
    res = {"oracle": chain(oracle)}
    print("oracle", res["oracle"], flush=True)
    for kind, fix, w, *rest in configs:
        net, secs, dif = run(kind, fix, w, *rest)
        name = f"{kind}{'+head' if fix else ''}{'' if kind != 'kl+l2' else f'(w={w})'}{''.join('+' + r for r in rest if r != 'uniform')}"
        res[name] = {"train_s": secs, "gap": gap(net, dif), "chain": chain(net, dif=dif)}
        print(name, json.dumps(res[name]), flush=True)
    print(json.dumps(res))
