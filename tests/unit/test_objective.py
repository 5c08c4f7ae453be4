"""The training objectives (issue #10): KL, KL + L2, and the output head that fixes l = 0."""

from __future__ import annotations

import math

import pytest
import torch

from locdiff.core import anchors as anchor_sets
from locdiff.core import shdd
from locdiff.core.diffusion import LOSSES, PARAMETERIZATIONS, WEIGHTINGS, Diffusion, Schedule
from locdiff.core.network import CSUNet

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SCALE = math.sqrt(4 * math.pi)


def test_head_fixes_l0_and_leaves_the_rest_trainable():
    torch.manual_seed(0)
    net = CSUNet(16, 8, (32, 16), 8, 0.0)
    head, free = Diffusion(Schedule.make("cosine", 10), l0=1.0), Diffusion(Schedule.make("cosine", 10))
    x, t, c = torch.randn(5, 16), torch.randint(0, 10, (5,)), torch.randn(5, 8)
    out = head.predict_x0(net, x, t, c)  # the head has no weights: checkpoints are interchangeable
    assert torch.equal(out[:, 0], torch.ones(5))
    assert torch.allclose(out[:, 1:], free.predict_x0(net, x, t, c)[:, 1:])
    out[:, 1:].square().sum().backward()
    assert net.out.weight.grad is not None and float(net.out.weight.grad[1:].abs().sum()) > 0


@torch.no_grad()
def test_kl_plus_l2_is_the_kl_plus_weighted_mean_squared_error():
    assert "kl+l2" in LOSSES
    torch.manual_seed(1)
    diff = Diffusion(Schedule.make("cosine", 50))
    net = CSUNet(16, 4, (32, 16), 8, 0.0)
    target = torch.tensor([[10.0, 20.0], [-40.0, 100.0], [60.0, -70.0]])
    cond, a = torch.randn(3, 4), anchor_sets.fibonacci(512).float()
    t, noise = torch.tensor([3, 20, 45]), torch.randn(3, 16)
    kw = dict(degree=3, t=t, noise=noise)
    kl = diff.loss(net, target, cond, a, kind="kl", **kw)
    l2 = diff.loss(net, target, cond, a, kind="l2", **kw)
    both = diff.loss(net, target, cond, a, kind="kl+l2", l2_weight=0.25, **kw)
    assert float(both) == pytest.approx(float(kl) + 0.25 * float(l2), rel=1e-5)
    assert float(diff.loss(net, target, cond, a, kind="kl+l2", l2_weight=0.0, **kw)) == pytest.approx(float(kl), rel=1e-6)


@torch.no_grad()
def test_snr_clamp_weights_each_item_by_its_clamped_signal_to_noise_ratio():
    assert WEIGHTINGS == ("uniform", "snr-clamp")
    torch.manual_seed(2)
    sched = Schedule.make("cosine", 50)
    diff = Diffusion(sched)
    net = CSUNet(16, 4, (32, 16), 8, 0.0)
    target = torch.tensor([[10.0, 20.0], [-40.0, 100.0], [60.0, -70.0]])
    cond, a = torch.randn(3, 4), anchor_sets.fibonacci(512).float()
    t, noise = torch.tensor([1, 20, 48]), torch.randn(3, 16)
    abar = sched.alphas_cumprod.double()[t]
    snr = abar / (1 - abar)
    assert snr[0] > 5 and 1 < snr[1] < 5 and snr[2] < 1  # one item in each regime of the clamp
    for kind in ("l2", "kl", "kl+l2"):
        per_item = torch.stack([diff.loss(net, target[i : i + 1], cond[i : i + 1], a, kind=kind, degree=3, t=t[i : i + 1], noise=noise[i : i + 1]) for i in range(3)])
        got = diff.loss(net, target, cond, a, kind=kind, degree=3, t=t, noise=noise, weighting="snr-clamp", snr_max=5.0)
        want = (per_item.double() * torch.tensor([5.0, float(snr[1]), 1.0], dtype=torch.float64)).mean()
        assert float(got) == pytest.approx(float(want), rel=1e-5)
        uniform = diff.loss(net, target, cond, a, kind=kind, degree=3, t=t, noise=noise)
        assert float(uniform) == pytest.approx(float(per_item.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="weighting"):
        diff.loss(net, target, cond, a, kind="l2", degree=3, t=t, noise=noise, weighting="snr")


def _expected_losses(pred: torch.Tensor, sites: torch.Tensor, weights: torch.Tensor, anchors: torch.Tensor, degree: int):
    """E_j[KL(q_pred || p_j)] and E_j[mean (pred − c_j)²] over targets j ~ weights (pred in latent units)."""
    codes = shdd.encode(sites, degree).double() * SCALE
    kls = shdd.kl((pred / SCALE).expand(len(sites), -1).contiguous(), sites, anchors)
    l2 = (pred - codes).square().mean(-1)
    return float((weights * kls).sum()), float((weights * l2).sum())


def test_posterior_mean_minimises_both_terms_but_the_kl_cannot_see_l0_or_pin_the_scale():
    """Why the paper's KL needed a projection: at the posterior mean ē its expectation is flat along l = 0
    and shallow in scale; the L2 term is minimised at the same ē and pins both."""
    degree = 7
    sites = torch.tensor([[48.0, 2.0], [41.0, 12.0], [52.0, 13.0]], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    anchors = anchor_sets.fibonacci(4000)
    mean = (weights[:, None] * shdd.encode(sites, degree).double() * SCALE).sum(0, keepdim=True)
    kl0, l20 = _expected_losses(mean, sites, weights, anchors, degree)
    shifted = mean.clone()
    shifted[0, 0] += 3.0
    for other in (0.7 * mean, 1.4 * mean, shifted):
        kl, l2 = _expected_losses(other, sites, weights, anchors, degree)
        assert kl >= kl0 - 1e-9 and l2 > l20
    kl_shift, l2_shift = _expected_losses(shifted, sites, weights, anchors, degree)
    assert kl_shift == pytest.approx(kl0, abs=1e-9)  # blind to l = 0
    assert l2_shift - l20 == pytest.approx(9.0 / mean.shape[1], rel=1e-6)  # pinned by L2


def _v_of(diff: Diffusion, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    abar = diff.schedule.alphas_cumprod.double()[t][:, None]
    return abar.sqrt() * noise - (1 - abar).sqrt() * x0


@torch.no_grad()
def test_v_parameterization_turns_the_true_velocity_into_the_clean_latent():
    assert PARAMETERIZATIONS == ("x0", "v")
    diff = Diffusion(Schedule.make("cosine", 100), parameterization="v")
    g = torch.Generator().manual_seed(3)
    x0 = shdd.encode(torch.tensor([[40.0, -3.0], [-33.9, 151.2], [35.7, 139.7], [0.0, 0.0]]), 4).double() * SCALE
    t, noise = torch.tensor([0, 30, 70, 99]), torch.randn(4, 25, generator=g, dtype=torch.float64)
    xt = diff.q_sample(x0, t, noise)
    truth_v = _v_of(diff, x0, t, noise)
    got = diff.predict_x0(lambda x, tt, c: truth_v, xt, t, None)
    assert torch.allclose(got, x0, atol=1e-9)
    # a wrong velocity moves x0 by sqrt(1 - ᾱ_t) times the error: little at low noise, fully at high noise
    err = diff.predict_x0(lambda x, tt, c: truth_v + 1.0, xt, t, None) - x0
    abar = diff.schedule.alphas_cumprod.double()[t]
    assert torch.allclose(err, -(1 - abar).sqrt()[:, None].expand_as(err), atol=1e-9)
    assert float(err[0].abs().max()) < 0.05 and float(err[3].abs().max()) > 0.99


@torch.no_grad()
def test_the_l0_head_holds_the_x0_prediction_for_either_parameterization():
    x, t = torch.randn(6, 16), torch.randint(0, 50, (6,))
    for kind in ("x0", "v"):
        diff = Diffusion(Schedule.make("cosine", 50), parameterization=kind, l0=1.0)
        free = Diffusion(Schedule.make("cosine", 50), parameterization=kind)
        net = lambda xx, tt, c: 3.0 * xx + 1.0  # noqa: E731
        held, plain = diff.predict_x0(net, x, t, None), free.predict_x0(net, x, t, None)
        assert torch.equal(held[:, 0], torch.ones(6)) and torch.equal(held[:, 1:], plain[:, 1:])
        assert not torch.allclose(plain[:, 0], torch.ones(6))


@torch.no_grad()
def test_v_and_x0_denoisers_of_the_same_oracle_sample_the_same_chain():
    """The exact E[x0|x_t] (core/oracle.py) written as a velocity gives the x0 chain, step for step."""
    from locdiff.core.oracle import ExactDenoiser, FinitePriors

    sched = Schedule.make("cosine", 100)
    prior = FinitePriors.single([[40.4, -3.7], [-33.9, 151.2], [35.7, 139.7]], [0.6, 0.3, 0.1])
    exact = ExactDenoiser(prior, sched, 5)
    abar = sched.alphas_cumprod

    def as_v(x, t, c):
        a = abar[t].to(x.dtype)[:, None]
        return (a.sqrt() * x - exact(x, t, c)) / (1 - a).sqrt()

    cond = torch.zeros(64, 1, dtype=torch.float64)
    for sampler, steps in (("ddpm", None), ("dpmpp2m", 15)):
        runs = []
        for kind, model in (("x0", exact), ("v", as_v)):
            g = torch.Generator().manual_seed(5)
            runs.append(Diffusion(sched, projection="none", parameterization=kind).sample(
                model, cond, dim=36, sampler=sampler, steps=steps, generator=g))
        assert torch.allclose(runs[0], runs[1], atol=1e-6)


def test_sampling_shortcuts_of_the_network_change_no_output():
    """One time row for a one-timestep batch and the condition projections kept across sampling steps give the
    plain forward's numbers; the kept projections follow in-place edits of the condition and of the weights."""
    torch.manual_seed(4)
    net = CSUNet(16, 8, (32, 16), 8, 0.0).eval()
    x, cond = torch.randn(6, 16), torch.randn(6, 8)

    def plain(x, t, c):  # the forward as it was: every block projects the condition and its own time rows
        t_emb, cn = net.time_embed(t), net.cond_norm(c)
        skips, h = [], x
        for blk in net.down:
            h = blk(h, t_emb, cn)
            skips.append(h)
        h = net.mid(h, t_emb, cn)
        for blk in net.up:
            h = blk(torch.cat((h, skips.pop()), dim=-1), t_emb, cn)
        return net.out(torch.cat((h, x), dim=-1))

    with torch.no_grad():
        for t in (torch.full((6,), 7), torch.tensor([0, 3, 3, 9, 1, 7])):
            assert torch.allclose(net(x, t, cond), plain(x, t, cond), atol=1e-6)
        first = net(x, torch.full((6,), 7), cond)
        assert net._cond_cache is not None and net._cond_cache[0]() is cond
        assert torch.equal(net(x, torch.full((6,), 7), cond), first)  # from the kept projections
        cond.mul_(2.0)  # in place: the projections are made again
        assert torch.allclose(net(x, torch.full((6,), 7), cond), plain(x, torch.full((6,), 7), cond), atol=1e-6)
        net.down[0].proj_c.weight.add_(0.5)  # a weight update (as an optimiser step does) is seen too
        assert torch.allclose(net(x, torch.full((6,), 2), cond), plain(x, torch.full((6,), 2), cond), atol=1e-6)
    out = net.train()(x, torch.full((6,), 7), cond)  # training: gradients reach the condition projections
    out.square().sum().backward()
    assert net._cond_cache is None and float(net.down[0].proj_c.weight.grad.abs().sum()) > 0
