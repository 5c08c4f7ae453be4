"""The batch prediction use case: batched == one at a time, bad inputs in their rows, resume skips rows.

A random degree-5 model and a hashing embedder (no adapters): these properties do not depend on training.
Batched and one-at-a-time answers agree to float32 rounding here (this tiny network's matrix products round
differently for 28 rows than for 4: ~1e-5 degrees, a metre); with the default model's widths they agree bit for bit
(``benchmarks/bench_predict.py`` checks), and the summary stage is bit-for-bit batch independent
(``tests/unit/test_summaries.py``).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch

from locdiff.config import RunConfig
from locdiff.core.bundle import ModelBundle
from locdiff.core.results import Prediction
from locdiff.core.sampling import PredictSettings
from locdiff.ports import BatchInput, Embedded, ItemFailure, PredictionSink
from locdiff.services.batch_prediction import BatchPredictor
from locdiff.services.prediction import PredictionService
from tests.support.fakes import FakeStore

DEFAULT = Path(__file__).resolve().parents[2] / "locdiff" / "default.toml"
DIM = 8
SETTINGS = PredictSettings(samples=4, steps=3, grid_lat=18, grid_lon=36, projection="degree", seed=0, top_modes=3)


class HashEmbedder:
    """Text or file bytes → a fixed pseudo-random vector; the text ``"bad"`` fails like an unreadable file."""

    id = "hash-8"
    dim = DIM

    def __init__(self) -> None:
        self.calls: list[int] = []

    @staticmethod
    def _vec(data: bytes) -> torch.Tensor:
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(data).digest()[:6], "little"))
        return torch.randn(DIM, generator=g)

    def embed_texts(self, texts):
        self.calls.append(len(texts))
        ok = [i for i, t in enumerate(texts) if t != "bad"]
        vecs = torch.stack([self._vec(texts[i].encode()) for i in ok]) if ok else torch.empty(0, DIM)
        return Embedded(vecs, tuple(ok), tuple(ItemFailure(t, "unreadable") for t in texts if t == "bad"))

    def embed_images(self, paths):
        self.calls.append(len(paths))
        return Embedded(torch.stack([self._vec(Path(p).read_bytes()) for p in paths]), tuple(range(len(paths))))


class ListSink:
    """A ``PredictionSink`` in a list (resume: ``done`` from rows given at construction)."""

    def __init__(self, rows=()) -> None:
        self.rows, self.chunks, self.closed = list(rows), [], False

    def done(self):
        return {r["index"]: r["input"] for r in self.rows}

    def write(self, rows):
        self.chunks.append(len(rows))
        self.rows += rows

    def close(self):
        self.closed = True


def predictor(kind: str = "minilm", chunk: int = 64) -> BatchPredictor:
    cfg = RunConfig.load(DEFAULT, {"model.degree": 5, "model.widths": [32, 16], "data.embedder": kind, "diffusion.steps": 20})
    torch.manual_seed(0)
    bundle = ModelBundle.create(cfg, DIM, HashEmbedder.id, torch.device("cpu"))
    return BatchPredictor(PredictionService(bundle, HashEmbedder(), torch.device("cpu"), source="test"), chunk=chunk)


def texts(n: int) -> list[BatchInput]:
    return [BatchInput(i, "text", f"place number {i}") for i in range(n)]


def _same(a: Prediction, b: Prediction, tol: float = 1e-4) -> bool:
    """The same answer up to float32 rounding in the network (degrees, mode masses, grid masses)."""
    return (max(abs(x - y) for x, y in zip(a.point, b.point)) < tol and torch.allclose(a.samples, b.samples, atol=tol, rtol=0)
            and len(a.modes) == len(b.modes)
            and all(abs(m.lat - n.lat) < tol and abs(m.lon - n.lon) < tol and abs(m.mass - n.mass) < tol for m, n in zip(a.modes, b.modes))
            and torch.allclose(a.grid.mass, b.grid.mass, atol=tol * 1e-2, rtol=0))


def _same_rows(a: dict, b: dict) -> bool:
    keys = ("index", "input", "kind", "error", "truth")
    return all(a[k] == b[k] for k in keys) and abs(a["lat"] - b["lat"]) < 1e-4 and abs(a["lon"] - b["lon"]) < 1e-4 and \
        len(a["modes"]) == len(b["modes"])


def test_batched_answers_equal_one_at_a_time(one_thread):
    items = texts(7)
    batched = predictor(chunk=7)
    together = batched.predict(items, SETTINGS)
    alone = predictor(chunk=1).predict(items, SETTINGS)
    assert batched.service.embedder.calls == [7]  # one embedder call for the chunk
    assert all(isinstance(p, Prediction) for p in together)
    assert all(_same(a, b) for a, b in zip(together, alone))
    assert not _same(together[0], together[1], tol=1.0)  # different inputs, different answers
    shuffled = predictor(chunk=3).predict(items[::-1], SETTINGS)[::-1]  # other neighbours, same answers
    assert all(_same(a, b) for a, b in zip(together, shuffled))


def test_the_single_input_service_gives_the_same_answer_bit_for_bit(one_thread):
    """The app's / ``predict --text``'s path shares the batch's summary: samples, point, modes, map and regions equal."""
    p = predictor()
    batched = p.predict([BatchInput(i, "text", t) for i, t in enumerate(["Springfield", "Paris", "Lima"])], SETTINGS)
    for row in batched:
        single = p.service.predict_text(row.item, SETTINGS)
        assert torch.equal(row.samples, single.samples) and row.point == single.point
        assert row.modes == single.modes and len(single.modes) >= 1
        assert torch.equal(row.grid.mass, single.grid.mass) and row.credible == single.credible
    assert batched[0].point != batched[1].point


def test_bad_inputs_are_reported_in_their_rows_and_the_batch_goes_on():
    items = [BatchInput(0, "text", "ok one"), BatchInput(1, "text", "bad"), BatchInput(2, "text", "", problem="no 'text' value"),
             BatchInput(3, "image", "/nowhere.jpg"), BatchInput(4, "text", "ok two", truth=(10.0, 20.0))]
    sink, store = ListSink(), FakeStore()
    report = predictor("minilm", chunk=2).run(items, sink, SETTINGS, store=store, source="ckpt")
    assert (report.written, report.failed, report.skipped) == (5, 3, 0) and sink.closed
    rows = {r["index"]: r for r in sink.rows}
    assert rows[1]["error"] == "unreadable" and rows[2]["error"] == "no 'text' value"
    assert "reads text" in rows[3]["error"] and rows[3]["lat"] is None
    assert rows[0]["error"] is None and -90 <= rows[0]["lat"] <= 90 and len(rows[0]["modes"]) >= 1
    assert set(rows[0]["credible_km2"]) == {"50", "90", "95"}
    assert rows[0]["credible_km2"]["50"] < rows[0]["credible_km2"]["95"]
    assert rows[4]["truth"] == {"lat": 10.0, "lon": 20.0} and rows[4]["error_km"] > 0
    assert [r["item"] for r in store.predictions_rows] == ["ok one", "ok two"]
    assert store.predictions_rows[0]["payload"]["checkpoint"] == "ckpt"
    assert sink.chunks == [2, 2, 1]


def test_a_rerun_skips_the_rows_already_written():
    items = texts(5)
    first = ListSink()
    predictor(chunk=2).run(items[:3], first, SETTINGS)
    resumed = ListSink(first.rows)
    report = predictor(chunk=2).run(items, resumed, SETTINGS)
    assert (report.written, report.skipped) == (2, 3)
    assert sorted(r["index"] for r in resumed.rows) == [0, 1, 2, 3, 4]
    whole = ListSink()
    predictor(chunk=5).run(items, whole, SETTINGS)
    assert all(_same_rows(a, b) for a, b in zip(resumed.rows, whole.rows))  # as an uninterrupted run


def test_an_output_written_for_other_inputs_is_refused():
    sink = ListSink([{"index": 0, "input": "somewhere else"}])
    with pytest.raises(ValueError, match="other inputs"):
        predictor().run(texts(2), sink, SETTINGS)


def test_samples_are_written_when_asked_and_images_are_seeded_by_their_bytes(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "copy.jpg"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    sink = ListSink()
    predictor("clip").run([BatchInput(0, "image", str(a)), BatchInput(1, "image", str(b))], sink, SETTINGS, save_samples=True)
    r0, r1 = sink.rows
    assert len(r0["samples"]) == SETTINGS.samples and r0["samples"] == r1["samples"]  # a renamed copy: the same answer
    assert isinstance(ListSink(), PredictionSink)


def test_the_pipeline_summarises_on_its_worker_and_equals_chunk_by_chunk(one_thread, monkeypatch):
    """Summaries run on the worker thread while the next chunk is sampled; the answers equal the plain sequence."""
    items = texts(7)
    p = predictor(chunk=3)
    plain = [r for start in range(0, 7, 3) for r in p._summarise(p._stage(items[start : start + 3], SETTINGS))]
    threads, summarise = [], BatchPredictor._summarise

    def spy(self, staged):
        threads.append(threading.current_thread().name)
        return summarise(self, staged)

    monkeypatch.setattr(BatchPredictor, "_summarise", spy)
    piped = p.predict(items, SETTINGS)
    assert len(threads) == 3 and all(name.startswith("locdiff-summaries") for name in threads)
    for a, b in zip(plain, piped):
        assert torch.equal(a.samples, b.samples) and a.point == b.point and a.modes == b.modes
        assert torch.equal(a.grid.mass, b.grid.mass)


def test_a_failing_write_stops_the_batch_and_its_worker(one_thread):
    class Broken(ListSink):
        def write(self, rows):
            if self.chunks:
                raise OSError("disk full")
            super().write(rows)

    sink = Broken()
    with pytest.raises(OSError, match="disk full"):
        predictor(chunk=2).run(texts(7), sink, SETTINGS)
    assert sink.chunks == [2] and len(sink.rows) == 2  # the rows before the failure, whole
    assert not any(t.name.startswith("locdiff-summaries") for t in threading.enumerate())
