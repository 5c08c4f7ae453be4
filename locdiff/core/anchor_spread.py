"""How much the anchor-sampled SHDD KL (eq. 12 estimated by eq. 16) moves from one anchor draw to the next.

The predictions and targets are held fixed; only the anchors are drawn afresh, so the spread measured
here is the estimator's own noise in the training loss (issue #11: uniform vs importance anchors).
"""

from __future__ import annotations

import attrs
import torch

from locdiff.core import anchors, shdd


@attrs.frozen
class KLSpread:
    """The KL of one batch over ``draws`` fresh anchor sets of ``count`` anchors each."""

    sampling: str
    count: int
    draws: int
    mean: float  # the batch-mean KL, averaged over the draws
    rel_spread: float  # std over draws of the batch-mean KL / its mean (what the optimiser sees)
    item_rel_spread: float  # the items' std over draws, averaged, / the mean KL (one item's estimate)


@torch.no_grad()
def kl_spread(
    e: torch.Tensor,
    targets: torch.Tensor,
    sampling: str,
    count: int,
    draws: int,
    generator: torch.Generator | None = None,
    *,
    uniform_share: float = 0.5,
) -> KLSpread:
    """Spread of ``shdd.kl(e, targets, anchors)`` over ``draws`` anchor sets drawn by :func:`anchors.draw`.

    ``e`` [B, D]: predicted codes (``x0 / data_scale``); ``targets`` [B, 2]. Every draw shares one
    anchor set across the batch (as a training step does), so importance caps are spread over the
    batch's targets.
    """
    degree = shdd.check_coeffs(e)
    if draws < 2:
        raise ValueError(f"the spread needs at least 2 anchor draws, got {draws}")
    if e.ndim != 2 or targets.shape != (e.shape[0], 2):
        raise ValueError(f"kl_spread needs e [B, D] and targets [B, 2]; got {tuple(e.shape)} and {tuple(targets.shape)}")
    est = []
    for _ in range(draws):
        a, log_area = anchors.draw(sampling, count, generator, targets=targets, degree=degree, uniform_share=uniform_share, dtype=e.dtype)
        est.append(shdd.kl(e, targets, a, log_area))
    x = torch.stack(est).double()  # [draws, B]
    batch = x.mean(1)
    mean = float(batch.mean())
    scale = max(mean, 1e-12)
    return KLSpread(sampling, count, draws, mean, float(batch.std()) / scale, float(x.std(0).mean()) / scale)
