"""LocDiff-H refinement: retrieval results replace the point, failures keep it."""

from __future__ import annotations

import math

import torch

from locdiff.services.hybrid import refine_with_retrieval


class FakeRetriever:
    """Returns the first candidate shifted 0.1° north, or NaN for images named 'bad'."""

    id = "fake"

    def retrieve(self, images, candidates, radius_km, top_k=5):
        out = candidates[:, :1, :].clone().double()
        out[..., 0] += 0.1
        for i, p in enumerate(images):
            if p.name == "bad":
                out[i] = math.nan
        return out, torch.ones(out.shape[:2])


def test_refinement_uses_retrieval_and_keeps_fallback_on_failure(tmp_path):
    samples = torch.tensor([[[10.0, 20.0], [11.0, 21.0]], [[-5.0, 100.0], [-6.0, 101.0]], [[0.0, 0.0], [1.0, 1.0]]])
    fallback = torch.tensor([[10.5, 20.5], [-5.5, 100.5], [0.5, 0.5]], dtype=torch.float64)
    images = [tmp_path / "a.jpg", tmp_path / "bad", tmp_path / "c.jpg"]
    out = refine_with_retrieval(FakeRetriever(), images, samples, fallback, batch=2)
    assert torch.allclose(out[0], torch.tensor([10.1, 20.0], dtype=torch.float64))
    assert torch.equal(out[1], fallback[1])
    assert torch.allclose(out[2], torch.tensor([0.1, 0.0], dtype=torch.float64))
