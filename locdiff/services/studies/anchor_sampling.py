"""Study ``anchor-sampling`` (issue #11): uniform vs importance KL anchors (eq. 16) at equal count, per SHDD degree.

One model per degree × anchor sampling (same data, steps, batch, seed): test accuracy, train step time, and
the loss variance — the spread of the trained model's KL estimate over fresh anchor draws, with both
estimators, on fixed validation items, timesteps and noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from locdiff.config import RunConfig, apply_overrides
from locdiff.core import shdd
from locdiff.core.anchor_spread import KLSpread, kl_spread
from locdiff.core.anchors import ANCHOR_SAMPLINGS
from locdiff.core.bundle import ModelBundle
from locdiff.core.tables import StudyResult
from locdiff.ports import DatasetSource, Embedder
from locdiff.services.data import PreparedData, prepare
from locdiff.services.studies.models import TrainedModel
from locdiff.services.studies.recording import close_study, open_study, recording
from locdiff.services.studies.settings import StudyEnv, StudySettings, default_settings
from locdiff.services.studies.steps import split_items, sweep

TRAINING_MIX = "t ~ U"  # each item its own timestep, drawn once (as a training batch)


def spread_times(bundle: ModelBundle, levels: Sequence[float]) -> dict[str, int | None]:
    """Noise levels of the spread table: ``t = round(level · (T − 1))`` each, and the training mix (``None``)."""
    last = bundle.diffusion.schedule.steps - 1
    times: dict[str, int | None] = {TRAINING_MIX: None}
    for level in levels:
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"spread_levels: {level} is not a fraction of the diffusion steps in [0, 1]")
        t = int(round(level * last))
        times[f"t={t}"] = t
    return times


@torch.no_grad()
def loss_spread(bundle: ModelBundle, cond: torch.Tensor, latlon: torch.Tensor, *, levels: Sequence[float], draws: int,
                seed: int, device: torch.device, samplings: Sequence[str] = ANCHOR_SAMPLINGS) -> dict[tuple[str, str], KLSpread]:
    """``(noise level, sampling) → KLSpread`` of the model's KL loss on items ``cond``/``latlon`` (one batch).

    Timesteps and noise are drawn once from ``seed`` and the network's x0 predictions fixed; only the
    ``anchors_per_batch`` anchors are redrawn, ``draws`` times per estimator (the same anchor seed for each).
    """
    cfg = bundle.config
    net = bundle.net.eval()
    cond = cond.to(device)
    x0 = shdd.encode(latlon.double(), bundle.degree).to(cond.dtype) * bundle.diffusion.data_scale
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype).to(device)
    mixed = torch.randint(0, bundle.diffusion.schedule.steps, (x0.shape[0],), generator=g)
    x0 = x0.to(device)
    out: dict[tuple[str, str], KLSpread] = {}
    for name, t in spread_times(bundle, levels).items():
        tt = (mixed if t is None else torch.full((x0.shape[0],), t, dtype=torch.long)).to(device)
        pred = bundle.diffusion.predict_x0(net, bundle.diffusion.q_sample(x0, tt, noise), tt, cond)
        e = (pred / bundle.diffusion.data_scale).cpu()
        for sampling in samplings:
            out[(name, sampling)] = kl_spread(e, latlon.to(e.dtype), sampling, cfg.diffusion.anchors_per_batch, draws,
                                              torch.Generator().manual_seed(seed + 1), uniform_share=cfg.diffusion.uniform_share)
    return out


def anchor_sampling_study(source: DatasetSource, embedder: Embedder, config: RunConfig, env: StudyEnv,
                          settings: StudySettings | None = None, *, data: PreparedData | None = None) -> StudyResult:
    """Issue #11: uniform vs importance anchors at equal count, for each degree of ``settings.degrees``."""
    settings = settings or default_settings("anchor-sampling")
    data = data or prepare(source, embedder, config.data)
    result = StudyResult("anchor-sampling", settings=settings.to_dict())
    result.run_id = open_study(env, "anchor-sampling", config, settings)
    val = split_items(data, "val", min(settings.val_items, settings.batch_size or config.train.batch_size))
    spread_table = f"relative spread (%) of the batch-mean KL over {settings.spread_draws} anchor draws ({val.numel()} validation items)"
    item_table = f"relative spread (%) of one item's KL over {settings.spread_draws} anchor draws (mean item std / mean KL)"
    kl_table = "mean KL estimate by noise level (nats; uniform anchors under-read a sharp peak they miss)"
    detail: dict[str, dict[str, dict[str, float]]] = {spread_table: {}, item_table: {}, kl_table: {}}

    def extra(degree: int, sampling: str, trained: TrainedModel) -> dict[str, float]:
        env.say(f"L={degree}, {sampling} anchors: KL spread over {settings.spread_draws} anchor draws on {val.numel()} validation items")
        spreads = loss_spread(trained.bundle, data.cond[val], data.latlon[val], levels=settings.spread_levels,
                              draws=settings.spread_draws, seed=settings.seed, device=env.compute.device)
        for (level, estimator), s in spreads.items():
            row = f"L={degree}, trained {sampling}; {estimator} anchors"
            detail[spread_table].setdefault(row, {})[level] = 100.0 * s.rel_spread
            detail[item_table].setdefault(row, {})[level] = 100.0 * s.item_rel_spread
            detail[kl_table].setdefault(row, {})[level] = s.mean
        mix = {estimator: spreads[(TRAINING_MIX, estimator)] for estimator in ANCHOR_SAMPLINGS}
        return ({"s_per_step": trained.seconds / max(trained.steps, 1), "train_s": trained.seconds}
                | {f"spread {k} (%)": 100.0 * s.rel_spread for k, s in mix.items()}
                | {f"KL {k}": s.mean for k, s in mix.items()})

    with recording(env, result):
        for degree in settings.degrees:
            at_degree = RunConfig.from_dict(apply_overrides(config.to_dict(), {"model.degree": degree}))
            sweep(result, data, at_degree, env, settings, "diffusion.anchor_sampling", ANCHOR_SAMPLINGS, "SHDD degree and anchor sampling",
                  "study-anchor-sampling-model", label=lambda s, degree=degree: f"L={degree}, {s} anchors", key=lambda s, degree=degree: f"L{degree}-{s}",
                  extra=lambda s, trained, sampled, degree=degree: extra(degree, s, trained))
        for table, rows in detail.items():  # after the accuracy tables
            for row, values in rows.items():
                result.add_row(table, row, values)
        count = config.diffusion.anchors_per_batch
        result.notes.append(
            f"Every model uses {count} anchors per batch (importance: a share {config.diffusion.uniform_share:g} uniform, the rest in caps of "
            "1/4/16 e-fold radii around the batch's targets, weighted by their areas). 'spread X (%)' is the std / mean of the batch-mean KL "
            f"over {settings.spread_draws} fresh draws of X anchors, the model's x0 predictions held fixed at one timestep per item drawn "
            f"uniformly ({TRAINING_MIX}), the same items, timesteps and noise for every model and estimator; 'KL X' its mean. "
            "s_per_step: wall time of training / steps on this machine (anchors, KL, network and optimiser).")
    return close_study(env, result)
