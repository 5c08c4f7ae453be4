"""The prediction use case: each input seeded on its own, Cancel reaching the sampler, what a model reads.

A randomly initialised (untrained) degree-5 model and a hashing embedder: the properties tested here
(reproducibility, batch independence, cancellation, input checks) do not depend on training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from locdiff.config import RunConfig
from locdiff.core.bundle import ModelBundle
from locdiff.core.sampling import PredictSettings
from locdiff.ports import Embedded, PredictionService as PredictionPort
from locdiff.services.prediction import PredictionService
from locdiff.services.sampling import SamplingCancelled, input_seed, per_input_noise, sample_coefficients

DEFAULT = Path(__file__).resolve().parents[2] / "locdiff" / "default.toml"
DIM = 8


class HashEmbedder:
    """Text or file bytes → a fixed pseudo-random vector (no model)."""

    id = "hash-8"
    dim = DIM

    @staticmethod
    def _vec(data: bytes) -> torch.Tensor:
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(data).digest()[:6], "little"))
        return torch.randn(DIM, generator=g)

    def embed_texts(self, texts):
        return Embedded(torch.stack([self._vec(t.encode()) for t in texts]), tuple(range(len(texts))))

    def embed_images(self, paths):
        return Embedded(torch.stack([self._vec(Path(p).read_bytes()) for p in paths]), tuple(range(len(paths))))


def service(embedder_kind: str = "minilm") -> PredictionService:
    cfg = RunConfig.load(DEFAULT, {"model.degree": 5, "model.widths": [32, 16], "data.embedder": embedder_kind,
                                 "diffusion.steps": 20})
    torch.manual_seed(0)
    bundle = ModelBundle.create(cfg, DIM, HashEmbedder.id, torch.device("cpu"))
    return PredictionService(bundle, HashEmbedder(), torch.device("cpu"), source="test")


SMALL = dict(samples=4, steps=3, grid_lat=18, grid_lon=36, projection="degree")


def test_the_service_implements_the_port():
    assert isinstance(service(), PredictionPort)
    assert service().reads == ("text",) and service("clip").reads == ("image", "text")
    assert service().model_info["reads"] == ["text"]
    saved = service().bundle.config.eval  # the app starts from the run's own sampling
    assert {k: service().model_info[k] for k in ("sampler", "sampler_steps", "projection")} == {
        "sampler": saved.sampler, "sampler_steps": saved.sampler_steps, "projection": saved.projection}


def test_input_seed_depends_on_the_content_and_the_user_seed_only():
    assert input_seed("Springfield", 0) == input_seed(b"Springfield", 0)
    assert input_seed("Springfield", 0) != input_seed("Springfield", 1)
    assert input_seed("Springfield", 0) != input_seed("Springfield ", 0)
    assert 0 <= input_seed("x", 7) < 2**63


def test_an_inputs_noise_does_not_depend_on_its_batch():
    s = service()
    cond = torch.randn(3, DIM)
    seeds = [input_seed(f"item{i}", 0) for i in range(3)]
    kw = dict(samples=4, sampler="ddpm", steps=20, projection="degree")  # every step draws noise
    together = sample_coefficients(s.bundle, cond, noise=per_input_noise(seeds, 4), **kw)
    alone = sample_coefficients(s.bundle, cond[1:2], noise=per_input_noise(seeds[1:2], 4), **kw)
    assert torch.allclose(together[1], alone[0], atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_the_same_query_gives_the_same_answer_and_a_new_seed_a_new_draw():
    s = service()
    settings = PredictSettings(seed=0, **SMALL)
    a, b = s.predict_text("Springfield", settings), s.predict_text("Springfield", settings)
    assert torch.equal(a.samples, b.samples) and a.point == b.point
    assert [(m.lat, m.lon) for m in a.modes] == [(m.lat, m.lon) for m in b.modes]
    c = s.predict_text("Springfield", PredictSettings(seed=1, **SMALL))
    assert not torch.equal(a.samples, c.samples)
    # unseeded: a fresh draw each time
    u1, u2 = (s.predict_text("Springfield", PredictSettings(seed=None, **SMALL)) for _ in range(2))
    assert not torch.equal(u1.samples, u2.samples)


def test_a_photo_is_seeded_by_its_bytes_not_its_name(tmp_path):
    s = service("clip")
    a, b = tmp_path / "a.jpg", tmp_path / "renamed.jpg"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    pa, pb = s.predict_images([a, b], PredictSettings(seed=3, **SMALL))
    assert torch.equal(pa.samples, pb.samples)


def test_cancel_reaches_the_sampler_and_stops_the_chain():
    s = service()
    steps: list[int] = []
    flag = {"on": False}

    def progress(done, total):
        steps.append(done)
        flag["on"] = done >= 3  # the user presses Cancel during step 3

    settings = PredictSettings(seed=0, sampler="ddpm", steps=20, samples=16, grid_lat=18, grid_lon=36)
    with pytest.raises(SamplingCancelled):
        s.predict_text("Springfield", settings, cancelled=lambda: flag["on"], progress=progress)
    assert max(steps) == 3  # step 4 never ran (of 20)


def test_cancelled_photos_return_what_finished_before(tmp_path):
    s = service("clip")
    files = []
    for i in range(3):
        files.append(tmp_path / f"p{i}.jpg")
        files[-1].write_bytes(bytes([i]) * 10)
    done: list[int] = []
    out = s.predict_images(files, PredictSettings(seed=0, **SMALL), progress=lambda d, t: done.append(d),
                           cancelled=lambda: len(done) >= 1)
    assert len(out) == 1 and out[0].item == str(files[0])


def test_photos_on_a_text_model_are_refused_once_with_a_clear_reason(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"x")
    with pytest.raises(ValueError, match="reads text"):
        service("minilm").predict_images([p, p], PredictSettings(**SMALL))


def test_sampling_flushes_denormals_only_while_it_runs_and_gives_the_same_draws():
    """Denormal products (weights decayed to ~1e-26) slow the CPU's matrix kernels; sampling flushes them, then stops."""
    from locdiff.services.sampling import flush_denormals

    tiny = torch.tensor([1e-30], dtype=torch.float32)
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    assert float(tiny * 1e-10) != 0.0  # a denormal result survives by default
    with flush_denormals():
        assert float(tiny * 1e-10) == 0.0
    assert float(tiny * 1e-10) != 0.0  # switched off again afterwards
    s = service()
    cond = torch.randn(2, DIM, generator=torch.Generator().manual_seed(3))
    kw = dict(samples=3, sampler="ddim", steps=3, projection="degree")
    a = sample_coefficients(s.bundle, cond, noise=per_input_noise([1, 2], 3), **kw)
    with torch.no_grad():  # the same chain without flushing: the same numbers (nothing here is denormal)
        rep = cond.repeat_interleave(3, 0)
        b = s.bundle.diffusion.sample(s.bundle.net.eval(), rep, dim=s.bundle.dim, sampler="ddim", steps=3,
                                      projection="degree", noise=per_input_noise([1, 2], 3)).reshape(2, 3, -1)
    assert torch.equal(a, b)
    assert float(tiny * 1e-10) != 0.0
