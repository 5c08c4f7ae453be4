"""Use case: predict thousands of inputs at once (``predict RUN FOLDER|FILE|- --out FILE``, :func:`locdiff.load`).

Batched end to end: each chunk of inputs is embedded in one embedder call, sampled in one diffusion call
(``chunk × K`` rows per network step), decoded in one call and summarised by the vectorised
:mod:`locdiff.core.summaries`. Every input is seeded from a hash of its content (:func:`input_seed`: a text, a photo's
bytes), and every step computes each row by the same operations whatever else the chunk holds, so an input's answer
does not depend on the batch (tests check batched == one at a time, bit for bit). Bad inputs become rows with an
``error``; they never stop the batch. Rows go to a :class:`~locdiff.ports.PredictionSink` chunk by chunk (flushed to
disk); a rerun skips the inputs the sink already holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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
class BatchReport:
    """What a batch run did: rows written now, inputs skipped (already in the output), rows with an error."""

    written: int
    skipped: int
    failed: int


class BatchPredictor:
    """Batched prediction with one trained model (the model, embedder and device of a :class:`PredictionService`)."""

    def __init__(self, service: PredictionService, geocoder: Geocoder | None = None, chunk: int = 64):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.service, self.geocoder, self.chunk = service, geocoder, chunk

    @property
    def reads(self) -> tuple[str, ...]:
        return self.service.reads

    # ------------------------------------------------------------------ predictions as values (the Python API)
    def predict(self, inputs: Sequence[BatchInput], settings: PredictSettings) -> list[Prediction | ItemFailure]:
        """One :class:`Prediction` (or :class:`ItemFailure`) per input, in order, ``self.chunk`` inputs per model call."""
        out: list[Prediction | ItemFailure] = []
        for start in range(0, len(inputs), self.chunk):
            out.extend(self._predict_chunk(list(inputs[start : start + self.chunk]), settings))
        return out

    def _predict_chunk(self, items: list[BatchInput], settings: PredictSettings) -> list[Prediction | ItemFailure]:
        results: list[Prediction | ItemFailure | None] = [None] * len(items)
        cond, keys, where = self._embed(items, results)
        if where:
            for pos, pred in zip(where, self._sample_and_summarise(cond, [items[p] for p in where], keys, settings)):
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
    def _sample_and_summarise(self, cond: torch.Tensor, items: list[BatchInput], keys: list[bytes],
                              settings: PredictSettings) -> list[Prediction]:
        service, bundle = self.service, self.service.bundle
        if service.calibrator is not None:  # calibrated maps: the single-input path, one input at a time
            return [service._predict(cond[i : i + 1], items[i].value, settings, key=keys[i]) for i in range(len(items))]
        seed = settings.seed if settings.seed is not None else int(torch.randint(0, 2**62, ()).item())
        k = settings.samples
        noise = per_input_noise([input_seed(key, seed) for key in keys], k)
        e = sample_coefficients(bundle, cond.to(service.device), samples=k, sampler=settings.sampler, steps=settings.steps,
                                projection=settings.projection, noise=noise).float().cpu()
        return predictions(e, [it.value for it in items], reducer=settings.reducer, grid_lat=settings.grid_lat,
                           grid_lon=settings.grid_lon, top_modes=settings.top_modes)

    # ------------------------------------------------------------------ the batch command: rows to a sink
    def run(self, inputs: Iterable[BatchInput], sink: PredictionSink, settings: PredictSettings, *, total: int | None = None,
            save_samples: bool = False, progress: ProgressFactory | None = None, store: ExperimentStore | None = None,
            run_id: int | None = None, source: str = "") -> BatchReport:
        """Predict every input not yet in ``sink`` and append its row; one ``sink.write`` (and store write) per chunk."""
        done = sink.done()
        written = skipped = failed = 0
        bar = (progress or NullProgress)(total=total, desc="predict", initial=0)
        try:
            for chunk in _chunks(inputs, self.chunk):
                todo = []
                for item in chunk:
                    if item.index in done:
                        _check_same_input(done[item.index], item)
                        skipped += 1
                    else:
                        todo.append(item)
                bar.update(len(chunk) - len(todo))
                if not todo:
                    continue
                rows = [self._row(item, r, save_samples) for item, r in zip(todo, self._predict_chunk(todo, settings))]
                sink.write(rows)
                if store is not None:
                    store.add_predictions(run_id, [_store_row(r, source) for r in rows if r["error"] is None])
                written += len(rows)
                failed += sum(r["error"] is not None for r in rows)
                bar.update(len(todo))
        finally:
            bar.close()
        sink.close()
        return BatchReport(written, skipped, failed)

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
