"""Use case: predict thousands of inputs at once (``predict RUN FOLDER|FILE|- --out FILE``, :func:`locdiff.load`).

Batched end to end: each chunk of inputs is embedded in one embedder call, sampled in one diffusion call
(``chunk × K`` rows per network step), decoded in one call and summarised by the vectorised
:mod:`locdiff.core.summaries`. Every input is seeded from a hash of its content (:func:`input_seed`: a text, a photo's
bytes), and every step computes each row by the same operations whatever else the chunk holds, so an input's answer
does not depend on the batch (tests check batched == one at a time, bit for bit). Bad inputs become rows with an
``error``; they never stop the batch. While a chunk is embedded and sampled, worker threads summarise the chunks before
it (:meth:`BatchPredictor._pipelined`: the same operations, so the same answers, on both cores). Rows go to a
:class:`~locdiff.ports.PredictionSink` chunk by chunk, in input order (flushed to disk); a rerun skips the inputs the
sink already holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import torch

from locdiff.core import geo
from locdiff.core.decoding import credible_area_km2
from locdiff.core.results import Prediction
from locdiff.core.sampling import PredictSettings
from locdiff.core.summaries import predictions
from locdiff.ports import BatchInput, ExperimentStore, Geocoder, ItemFailure, PredictionSink, ProgressFactory
from locdiff.services.prediction import PredictionService, _file_bytes
from locdiff.services.progress import NullProgress
from locdiff.services.sampling import input_seed, per_input_noise, sample_coefficients


@attrs.frozen
class _Staged:
    """A chunk between its two halves: embedded and sampled (``e`` [B, K, D], None for calibrated maps), not summarised."""

    items: list[BatchInput]
    results: list
    where: list[int]
    keys: list[bytes]
    cond: torch.Tensor
    e: torch.Tensor | None
    settings: PredictSettings


@attrs.frozen
class BatchReport:
    """What a batch run did: rows written now, inputs skipped (already in the output), rows with an error."""

    written: int
    skipped: int
    failed: int


class BatchPredictor:
    """Batched prediction with one trained model (the model, embedder and device of a :class:`PredictionService`)."""

    def __init__(self, service: PredictionService, geocoder: Geocoder | None = None, chunk: int = 64, workers: int = 2):
        if chunk < 1 or workers < 1:
            raise ValueError(f"chunk and workers must be >= 1, got {chunk} and {workers}")
        self.service, self.geocoder, self.chunk, self.workers = service, geocoder, chunk, workers

    @property
    def reads(self) -> tuple[str, ...]:
        return self.service.reads

    # ------------------------------------------------------------------ predictions as values (the Python API)
    def predict(self, inputs: Sequence[BatchInput], settings: PredictSettings) -> list[Prediction | ItemFailure]:
        """One :class:`Prediction` (or :class:`ItemFailure`) per input, in order, ``self.chunk`` inputs per model call."""
        chunks = (list(inputs[start : start + self.chunk]) for start in range(0, len(inputs), self.chunk))
        return [r for _, results in self._pipelined(chunks, settings) for r in results]

    def _pipelined(self, chunks: Iterable[list[BatchInput]], settings: PredictSettings
                   ) -> Iterator[tuple[list[BatchInput], list[Prediction | ItemFailure]]]:
        """Each chunk with its results, in order. Chunks are embedded and sampled on this thread while the ``workers``
        threads summarise the chunks before them (the summaries are most of a chunk's work on a CPU); every operation
        is the one ``_summarise(_stage(chunk))`` runs in sequence, so the answers are the same. Stopped early, chunks not yet delivered
        are dropped (never half delivered) and the workers are stopped."""
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="locdiff-summaries")
        pending: deque[tuple[list[BatchInput], Future]] = deque()
        try:
            for items in chunks:
                staged = self._stage(items, settings)
                while len(pending) >= self.workers:
                    done, future = pending.popleft()
                    yield done, future.result()
                pending.append((items, pool.submit(self._summarise, staged)))
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stage(self, items: list[BatchInput], settings: PredictSettings) -> _Staged:
        """Embed the chunk and draw its K SHDD samples per usable input (the network's part of the work)."""
        results: list[Prediction | ItemFailure | None] = [None] * len(items)
        cond, keys, where = self._embed(items, results)
        e = self._sample(cond, keys, settings) if where and self.service.calibrator is None else None
        return _Staged(items, results, where, keys, cond, e, settings)

    def _summarise(self, staged: _Staged) -> list[Prediction | ItemFailure]:
        """Decode and summarise a staged chunk (:func:`~locdiff.core.summaries.predictions`); failures kept in place."""
        items, results, where, settings = staged.items, staged.results, staged.where, staged.settings
        if where:
            usable = [items[p] for p in where]
            if staged.e is None:  # calibrated maps: the single-input path, one input at a time
                preds = [self.service._predict(staged.cond[i : i + 1], usable[i].value, settings, key=staged.keys[i])
                         for i in range(len(usable))]
            else:
                preds = predictions(staged.e, [it.value for it in usable], reducer=settings.reducer, grid_lat=settings.grid_lat,
                                    grid_lon=settings.grid_lon, top_modes=settings.top_modes)
            for pos, pred in zip(where, preds):
                results[pos] = pred
        return [r if r is not None else ItemFailure(items[i].value, "no result") for i, r in enumerate(results)]

    def _embed(self, items: list[BatchInput], results: list) -> tuple[torch.Tensor, list[bytes], list[int]]:
        """Condition vectors of the usable inputs (texts in one call, images in one call); failures into ``results``."""
        rows: dict[int, torch.Tensor] = {}
        for kind in ("text", "image"):
            todo = [i for i, it in enumerate(items) if it.kind == kind and it.problem is None]
            for i, it in enumerate(items):
                if it.kind == kind and it.problem is not None:
                    results[i] = ItemFailure(it.value, it.problem)
            if not todo:
                continue
            if kind not in self.reads:
                for i in todo:
                    results[i] = ItemFailure(items[i].value, f"this model reads {', '.join(self.reads)} ({self.service.bundle.embedder_id}), "
                                                            f"not {kind}s")
                continue
            values = [items[i].value for i in todo]
            emb = (self.service.embedder.embed_texts(values) if kind == "text"
                   else self.service.embedder.embed_images([Path(v) for v in values]))
            for row, j in enumerate(emb.index):
                rows[todo[j]] = emb.vectors[row]
            missing = [todo[j] for j in range(len(todo)) if j not in set(emb.index)]
            reasons = [f.reason for f in emb.failures]
            for n, i in enumerate(missing):
                results[i] = ItemFailure(items[i].value, reasons[n] if n < len(reasons) else "could not be embedded")
        where = sorted(rows)
        keys = [_file_bytes(Path(items[i].value)) if items[i].kind == "image" else items[i].value.encode("utf-8") for i in where]
        cond = torch.stack([rows[i] for i in where]) if where else torch.empty(0)
        return cond, keys, where

    @torch.no_grad()
    def _sample(self, cond: torch.Tensor, keys: list[bytes], settings: PredictSettings) -> torch.Tensor:
        """``[B, K, D]`` samples, each input's noise seeded from a hash of its content (:func:`input_seed`)."""
        service = self.service
        seed = settings.seed if settings.seed is not None else int(torch.randint(0, 2**62, ()).item())
        noise = per_input_noise([input_seed(key, seed) for key in keys], settings.samples)
        return sample_coefficients(service.bundle, cond.to(service.device), samples=settings.samples, sampler=settings.sampler,
                                   steps=settings.steps, projection=settings.projection, noise=noise).float().cpu()

    # ------------------------------------------------------------------ the batch command: rows to a sink
    def run(self, inputs: Iterable[BatchInput], sink: PredictionSink, settings: PredictSettings, *, total: int | None = None,
            save_samples: bool = False, progress: ProgressFactory | None = None, store: ExperimentStore | None = None,
            run_id: int | None = None, source: str = "") -> BatchReport:
        """Predict every input not yet in ``sink`` and append its row; one ``sink.write`` (and store write) per chunk."""
        done = sink.done()
        written = failed = 0
        counts = {"skipped": 0}
        bar = (progress or NullProgress)(total=total, desc="predict", initial=0)
        try:
            with closing(self._pipelined(self._todo(inputs, done, bar, counts), settings)) as stream:
                for items, results in stream:
                    rows = [self._row(item, r, save_samples) for item, r in zip(items, results)]
                    sink.write(rows)
                    if store is not None:
                        store.add_predictions(run_id, [_store_row(r, source) for r in rows if r["error"] is None])
                    written += len(rows)
                    failed += sum(r["error"] is not None for r in rows)
                    bar.update(len(items))
        finally:
            bar.close()
        sink.close()
        return BatchReport(written, counts["skipped"], failed)

    def _todo(self, inputs: Iterable[BatchInput], done: dict[int, str], bar, counts: dict[str, int]) -> Iterator[list[BatchInput]]:
        """Chunks of the inputs not yet in the output (a written row must be for the same input); skips counted."""
        for chunk in _chunks(inputs, self.chunk):
            todo = []
            for item in chunk:
                if item.index in done:
                    _check_same_input(done[item.index], item)
                    counts["skipped"] += 1
                else:
                    todo.append(item)
            bar.update(len(chunk) - len(todo))
            if todo:
                yield todo

    def _row(self, item: BatchInput, result: Prediction | ItemFailure, save_samples: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"index": item.index, "input": item.value, "kind": item.kind, "lat": None, "lon": None,
                               "place": None, "modes": [], "credible_km2": {}, "truth": None, "error_km": None, "error": None}
        if item.truth is not None:
            row["truth"] = {"lat": item.truth[0], "lon": item.truth[1]}
        if isinstance(result, ItemFailure):
            row["error"] = result.reason
            return row
        row["lat"], row["lon"] = result.point
        names = self.geocoder.names([result.point] + [(m.lat, m.lon) for m in result.modes]) if self.geocoder else None
        row["place"] = names[0] if names else None
        row["modes"] = [{"lat": m.lat, "lon": m.lon, "probability": m.mass, "place": names[j + 1] if names else None}
                        for j, m in enumerate(result.modes)]
        if result.grid is not None:
            row["credible_km2"] = {f"{round(100 * a)}": credible_area_km2(result.grid, t) for a, t in sorted(result.credible.items())}
        if item.truth is not None:
            row["error_km"] = float(geo.great_circle_km(torch.tensor(result.point, dtype=torch.float64),
                                                        torch.tensor(item.truth, dtype=torch.float64)))
        if save_samples:
            row["samples"] = [[float(a), float(b)] for a, b in result.samples.tolist()]
        return row


def _chunks(items: Iterable[BatchInput], size: int) -> Iterator[list[BatchInput]]:
    chunk: list[BatchInput] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_same_input(written: str, item: BatchInput) -> None:
    """An output row for this position must be for this input: else the file belongs to other inputs."""
    if written not in (item.value, one_line(item.value)):
        raise ValueError(f"the output already holds row {item.index} for {written[:60]!r}, but input {item.index} is "
                         f"{item.value[:60]!r}: it was written for other inputs; choose another --out")


def one_line(text: str) -> str:
    """``text`` on one line (line breaks as spaces), as line-based outputs (CSV) record an input."""
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def _store_row(row: dict[str, Any], source: str) -> dict[str, Any]:
    best = row["modes"][0]["probability"] if row["modes"] else None
    payload = {k: v for k, v in row.items() if k not in ("samples",)}
    payload["checkpoint"] = source
    return {"item": row["input"], "lat": row["lat"], "lon": row["lon"], "probability": best, "payload": payload}
