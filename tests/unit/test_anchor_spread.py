"""The anchor-draw spread of the SHDD KL (issue #11): shrinks with more anchors; importance anchors steady a sharp target."""

from __future__ import annotations

import math

import pytest
import torch

from locdiff.core import anchors as A
from locdiff.core import shdd
from locdiff.core.anchor_spread import kl_spread

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _batch(degree: int, seed: int, batch: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and predictions peaking two e-fold radii north of them (a late-chain prediction)."""
    g = torch.Generator().manual_seed(seed)
    targets = A.uniform_random(batch, g, dtype=torch.float64).clamp(-80, 80)
    shift = torch.tensor([2 * math.degrees(A.efold_radius(degree)), 0.0], dtype=torch.float64)
    return targets, shdd.encode(targets + shift, degree)


def test_more_anchors_give_a_smaller_spread():
    targets, e = _batch(15, 0)
    g = torch.Generator().manual_seed(1)
    few, many = (kl_spread(e, targets, "uniform", n, 12, g) for n in (128, 2048))
    assert (few.count, few.draws, many.count) == (128, 12, 2048)
    assert few.mean > 0 and many.mean > 0
    assert many.rel_spread < 0.6 * few.rel_spread
    assert many.item_rel_spread < 0.6 * few.item_rel_spread
    # one item's estimate is noisier than the batch mean of 12 items' estimates
    assert many.item_rel_spread > many.rel_spread


def test_importance_anchors_spread_less_than_uniform_for_a_sharp_target_at_high_degree():
    targets, e = _batch(47, 2, batch=8)
    g = torch.Generator().manual_seed(3)
    uniform = kl_spread(e, targets, "uniform", 1024, 8, g)
    imp = kl_spread(e, targets, "importance", 1024, 8, g, uniform_share=0.5)
    assert imp.rel_spread < 0.5 * uniform.rel_spread
    assert imp.item_rel_spread < 0.5 * uniform.item_rel_spread
    # uniform anchors mostly miss a ≈ 28 km peak: the self-normalised estimate falls far below the importance one
    assert uniform.mean < 0.8 * imp.mean


def test_the_spread_is_zero_when_the_prediction_is_the_target_everywhere_alike():
    """A prediction equal to the target's code gives KL 0 whatever the anchors: no spread, no division by zero."""
    targets, _ = _batch(7, 4, batch=5)
    e = shdd.encode(targets, 7)
    out = kl_spread(e, targets, "importance", 256, 3, torch.Generator().manual_seed(0))
    assert out.mean == pytest.approx(0.0, abs=1e-9) and out.rel_spread == pytest.approx(0.0, abs=1e-3)


def test_bad_input_is_refused_in_one_line():
    targets, e = _batch(7, 5, batch=3)
    with pytest.raises(ValueError, match="at least 2 anchor draws"):
        kl_spread(e, targets, "uniform", 64, 1)
    with pytest.raises(ValueError, match="unknown anchor sampling 'grid'"):
        kl_spread(e, targets, "grid", 64, 2)
    with pytest.raises(ValueError, match=r"targets \[B, 2\]"):
        kl_spread(e, targets[:2], "uniform", 64, 2)
